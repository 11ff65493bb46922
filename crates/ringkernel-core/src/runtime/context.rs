//! What a handler sees: its kernel, the message's origin, its clock, and K2K sends.
//!
//! K2K sends write straight into the target kernel's input queue (no broker in between). A send
//! that finds the target's queue full is kept in the sending kernel's outbox, in order, and the
//! sending kernel takes no further input until the outbox drains: backpressure travels upstream,
//! and nothing is dropped.

use super::cell::{Directory, InputPush, KernelCell};
use super::envelope::{error_reply_envelope, RawMessage};
use super::reply::Delivery;
use super::state::KernelState;
use crate::hlc::{HlcClock, HlcTimestamp};
use crate::message::{encode, EnvelopeHeader, EnvelopeMeta, KernelId, RingMessage, FLAG_REPLY};
use crate::{Error, Result};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};

/// Where a K2K message goes: a kernel by name, an instance of a kernel group by name and index,
/// or either by id.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A single kernel by name (a kernel group is addressed per instance).
    Name(&'a str),
    /// Instance `index` of the kernel group `name` (also written `("name", index)`).
    Instance(&'a str, u32),
    /// A kernel or a group's instance by id (for example a message's source).
    Id(KernelId),
}

impl<'a> From<(&'a str, u32)> for Target<'a> {
    fn from((name, index): (&'a str, u32)) -> Self {
        Target::Instance(name, index)
    }
}

impl core::fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Target::Name(n) => f.write_str(n),
            Target::Instance(n, i) => write!(f, "{n}[{i}]"),
            Target::Id(id) => write!(f, "{id}"),
        }
    }
}

impl<'a> From<&'a str> for Target<'a> {
    fn from(s: &'a str) -> Self {
        Target::Name(s)
    }
}
impl<'a> From<&'a String> for Target<'a> {
    fn from(s: &'a String) -> Self {
        Target::Name(s)
    }
}
impl From<KernelId> for Target<'_> {
    fn from(id: KernelId) -> Self {
        Target::Id(id)
    }
}

pub(crate) enum Route {
    Kernel(Arc<KernelCell>),
    HostOutput,
}

pub(crate) struct Outgoing {
    pub(crate) route: Route,
    pub(crate) bytes: Vec<u8>,
}

/// Per-kernel executor-local data the context uses: the outbox and the K2K lookup caches.
///
/// The caches hold their targets weakly: a target that terminates and is forgotten by the
/// directory is freed even while this kernel lives on, and entries whose target is gone or
/// terminated are swept out whenever a cache has doubled since its last sweep.
#[derive(Default)]
pub struct ExecLocal {
    pub(crate) outbox: VecDeque<Outgoing>,
    names: Cache<String>,
    ids: Cache<u32>,
}

/// A K2K lookup cache (see [`ExecLocal`]).
struct Cache<K> {
    map: HashMap<K, Weak<KernelCell>>,
    sweep_at: usize,
}

impl<K> Default for Cache<K> {
    fn default() -> Self {
        Self { map: HashMap::new(), sweep_at: 0 }
    }
}

impl<K: std::hash::Hash + Eq> Cache<K> {
    fn get<Q: std::hash::Hash + Eq + ?Sized>(&self, k: &Q) -> Option<Arc<KernelCell>>
    where
        K: std::borrow::Borrow<Q>,
    {
        self.map.get(k)?.upgrade()
    }

    fn insert(&mut self, k: K, cell: &Arc<KernelCell>) {
        if self.map.len() >= self.sweep_at {
            self.map.retain(|_, c| c.upgrade().is_some_and(|c| c.state() != KernelState::Terminated));
            self.sweep_at = (self.map.len() * 2).max(16);
        }
        self.map.insert(k, Arc::downgrade(cell));
    }
}

impl ExecLocal {
    /// Messages waiting for room in a full target queue.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Delivers an envelope that `cell`'s kernel produced outside a CPU handler (a GPU kernel's
    /// output read back by its backend): a reply to a waiting host `call` completes the call;
    /// `target: None` is the host output queue; otherwise it goes to `target`'s input queue.
    /// When the queue is full the envelope waits in the outbox, in order (see [`Self::flush`]).
    pub fn deliver(&mut self, cell: &KernelCell, target: Option<Arc<KernelCell>>, bytes: &[u8]) {
        let Ok((header, _)) = crate::message::decode_header(bytes) else {
            cell.record_error(
                crate::control_block::ErrorCode::Decode,
                "the kernel produced a malformed envelope".to_string(),
            );
            return;
        };
        match target {
            None if header.flags & FLAG_REPLY != 0 && header.correlation_id != 0 => {
                deliver_reply(cell, self, header.correlation_id, bytes)
            }
            None => {
                if !(self.outbox.is_empty() && cell.push_output_bytes(bytes)) {
                    self.outbox.push_back(Outgoing { route: Route::HostOutput, bytes: bytes.to_vec() });
                }
            }
            Some(t) => {
                let pushed = if self.outbox.is_empty() { t.push_input_bytes(bytes) } else { InputPush::Full };
                match pushed {
                    InputPush::Pushed => {}
                    InputPush::Full => {
                        self.outbox.push_back(Outgoing { route: Route::Kernel(t), bytes: bytes.to_vec() })
                    }
                    InputPush::Closed | InputPush::TooLarge | InputPush::NoSuchInstance => {
                        keep_undeliverable(cell, &t, bytes, pushed)
                    }
                }
            }
        }
    }

    /// Answers a failed host request with an error reply (no-op for one-way messages); see
    /// [`HostExecutor`](super::HostExecutor) for when `kernel_failed` is set.
    pub fn fail_request(
        &mut self,
        cell: &KernelCell,
        header: &EnvelopeHeader,
        text: &str,
        kernel_failed: bool,
    ) {
        fail_request(cell, self, header, text, kernel_failed);
    }

    /// Finds a K2K target through this kernel's caches, asking the directory only on a miss
    /// (handler sends, and the device agents routing a device kernel's output by id).
    pub(crate) fn resolve(&mut self, dir: &Directory, target: Target<'_>) -> Option<Arc<KernelCell>> {
        match target {
            // A cached kernel that has terminated may have been replaced by a new launch under
            // the same name: look the name up again.
            Target::Name(n) | Target::Instance(n, _) => {
                match self.names.get(n).filter(|c| c.state() != KernelState::Terminated) {
                    Some(c) => Some(c),
                    None => {
                        let c = dir.by_name(n);
                        if let Some(c) = &c {
                            self.names.insert(n.to_string(), c);
                        }
                        c
                    }
                }
            }
            Target::Id(id) => match self.ids.get(&id.0) {
                Some(c) => Some(c),
                None => {
                    let c = dir.by_id(id);
                    if let Some(c) = &c {
                        self.ids.insert(id.0, c);
                    }
                    c
                }
            },
        }
    }

    /// Moves outbox entries into their queues; `true` once the outbox is empty.
    pub fn flush(&mut self, cell: &KernelCell) -> bool {
        flush_outbox(cell, self)
    }
}

/// Handler context (see the module docs).
pub struct Context<'a> {
    pub(crate) cell: &'a KernelCell,
    /// This kernel's id: the cell's, or the instance's in a kernel group.
    pub(crate) me: KernelId,
    pub(crate) dir: &'a Directory,
    pub(crate) clock: &'a HlcClock,
    pub(crate) header: &'a EnvelopeHeader,
    pub(crate) local: &'a mut ExecLocal,
    pub(crate) replied: bool,
}

impl<'a> Context<'a> {
    /// This kernel's id (in a kernel group: this instance's id).
    pub fn kernel_id(&self) -> KernelId {
        self.me
    }

    /// This instance's index in its kernel group (0 for a single kernel).
    pub fn instance(&self) -> u32 {
        self.me.0 - self.cell.id().0
    }

    /// Instances of this kernel's group (1 for a single kernel).
    pub fn group_size(&self) -> u32 {
        self.cell.instances()
    }

    /// This kernel's name.
    pub fn kernel_name(&self) -> &str {
        self.cell.name()
    }

    /// Who sent the message being handled (`KernelId::HOST` for the host).
    pub fn source(&self) -> KernelId {
        KernelId(self.header.source)
    }

    /// The sender's HLC timestamp on the message being handled.
    pub fn message_timestamp(&self) -> HlcTimestamp {
        HlcTimestamp::from_packed(self.header.hlc, self.header.hlc_node)
    }

    /// The envelope of the message being handled.
    pub fn envelope(&self) -> &EnvelopeHeader {
        self.header
    }

    /// A new timestamp from this kernel's clock (already merged with the message's timestamp).
    pub fn now(&self) -> HlcTimestamp {
        self.clock.tick()
    }

    /// Whether the handler already replied to the current message.
    pub fn has_replied(&self) -> bool {
        self.replied
    }

    /// The kernel cell a target names and the destination id its envelope carries.
    fn resolve(&mut self, target: Target<'_>) -> Result<(Arc<KernelCell>, KernelId)> {
        let k2k = |detail: String| Error::K2k { from: self.me, to: target.to_string(), detail };
        let Some(cell) = self.local.resolve(self.dir, target) else {
            return Err(k2k("no such kernel in this runtime".into()));
        };
        let dest = match target {
            Target::Name(_) if cell.is_group() => {
                return Err(k2k(format!(
                    "it is a kernel group of {} instances: address one as (name, index)",
                    cell.instances()
                )))
            }
            Target::Name(_) => cell.id(),
            Target::Instance(_, index) if index < cell.instances() => cell.instance_id(index),
            Target::Instance(_, index) => {
                return Err(k2k(format!("instance {index} is out of range: it has {}", cell.instances())))
            }
            Target::Id(id) => id,
        };
        Ok((cell, dest))
    }

    /// Sends `msg` to another kernel's input queue (K2K), stamped with this kernel's clock.
    ///
    /// If the target queue is full the message waits in this kernel's outbox (see module docs).
    pub fn send_to<'t, M: RingMessage>(&mut self, target: impl Into<Target<'t>>, msg: M) -> Result<()> {
        let (target, dest) = self.resolve(target.into())?;
        let meta = EnvelopeMeta {
            correlation_id: 0,
            source: self.me.0,
            destination: dest.0,
            hlc: self.clock.tick(),
            flags: 0,
        };
        self.check_target(&target, &msg, &meta)?;
        self.push_or_queue(Route::Kernel(target), &msg, &meta)
    }

    /// Sends `msg` to the host's output queue of this kernel (read with `receive`).
    pub fn emit<M: RingMessage>(&mut self, msg: M) -> Result<()> {
        let meta = EnvelopeMeta {
            correlation_id: 0,
            source: self.me.0,
            destination: KernelId::HOST.0,
            hlc: self.clock.tick(),
            flags: 0,
        };
        self.push_or_queue(Route::HostOutput, &msg, &meta)
    }

    /// Answers the message being handled: to the waiting `call` if it was a request from the host,
    /// otherwise to the sender (host output queue or the sending kernel's input queue).
    pub fn reply<M: RingMessage>(&mut self, msg: M) -> Result<()> {
        self.replied = true;
        let meta = EnvelopeMeta {
            correlation_id: self.header.correlation_id,
            source: self.me.0,
            destination: self.header.source,
            hlc: self.clock.tick(),
            flags: FLAG_REPLY,
        };
        if self.header.source == KernelId::HOST.0 {
            if self.header.correlation_id != 0 {
                // Encoded once, straight into the waiting caller's reply slot. If nobody waits
                // (the call timed out), the reply goes to the output queue instead.
                let slot_size = self.cell.output().slot_size() as usize;
                let delivered =
                    self.cell.replies.complete_with(self.header.correlation_id, slot_size, |buf| {
                        encode(&msg, &meta, buf)
                    })?;
                if delivered == Delivery::Delivered {
                    return Ok(());
                }
            }
            self.push_or_queue(Route::HostOutput, &msg, &meta)
        } else {
            let (target, _) = self.resolve(Target::Id(KernelId(self.header.source)))?;
            self.check_target(&target, &msg, &meta)?;
            self.push_or_queue(Route::Kernel(target), &msg, &meta)
        }
    }

    /// Checks that `target` takes `msg` now. One that stopped taking messages (terminating,
    /// terminated, failed) is an error for the handler, and the message is kept for this
    /// kernel's terminate report, as when the stop is found at the push.
    fn check_target<M: RingMessage>(
        &mut self,
        target: &KernelCell,
        msg: &M,
        meta: &EnvelopeMeta,
    ) -> Result<()> {
        let checked = target.check_accepts(M::message_type(), M::type_name());
        if let Err(Error::NotAccepting { .. }) = &checked {
            let mut bytes = vec![0u8; target.input().slot_size() as usize];
            if let Ok(n) = encode(msg, meta, &mut bytes) {
                keep_undeliverable(self.cell, target, &bytes[..n], InputPush::Closed);
            }
        }
        checked
    }

    fn push_or_queue<M: RingMessage>(&mut self, route: Route, msg: &M, meta: &EnvelopeMeta) -> Result<()> {
        let slot_size = match &route {
            Route::Kernel(c) => c.input().slot_size(),
            Route::HostOutput => self.cell.output().slot_size(),
        };
        if self.local.outbox.is_empty() {
            match &route {
                Route::Kernel(c) => {
                    match c.try_push_to(KernelId(meta.destination), |slot| encode(msg, meta, slot))? {
                        InputPush::Pushed => return Ok(()),
                        InputPush::Full => {}
                        why @ (InputPush::Closed | InputPush::TooLarge | InputPush::NoSuchInstance) => {
                            // The handler hears about it, and the message is kept for this kernel's
                            // terminate report rather than dropped.
                            let mut bytes = vec![0u8; slot_size as usize];
                            let n = encode(msg, meta, &mut bytes)?;
                            keep_undeliverable(self.cell, c, &bytes[..n], why);
                            return Err(c.not_accepting());
                        }
                    }
                }
                Route::HostOutput => {
                    if self.cell.try_push_output(|slot| encode(msg, meta, slot))? {
                        return Ok(());
                    }
                }
            }
        }
        let mut bytes = vec![0u8; slot_size as usize];
        let n = encode(msg, meta, &mut bytes)?;
        bytes.truncate(n);
        self.local.outbox.push_back(Outgoing { route, bytes });
        Ok(())
    }
}

/// A K2K envelope whose target stopped taking messages (or whose slots are too small for it):
/// recorded on the sending kernel and kept for its terminate report, never dropped.
fn keep_undeliverable(cell: &KernelCell, target: &KernelCell, bytes: &[u8], why: InputPush) {
    let detail = match why {
        InputPush::TooLarge => "does not fit the target's input slots",
        InputPush::NoSuchInstance => "names no instance of the target",
        _ => "found the target stopped",
    };
    cell.record_error(
        crate::control_block::ErrorCode::QueueFull,
        format!("a K2K message from {} to {} {detail}; it is kept", cell.name(), target.name()),
    );
    if let Ok(raw) = RawMessage::from_bytes(bytes) {
        cell.return_message(raw);
    }
}

/// Hands an encoded reply to the waiting caller, or to the output queue if nobody waits.
pub(crate) fn deliver_reply(cell: &KernelCell, local: &mut ExecLocal, correlation_id: u64, bytes: &[u8]) {
    if cell.replies.complete(correlation_id, bytes) == Delivery::Delivered {
        return;
    }
    // A "kernel failed" answer nobody waits for carries no result: its caller already had one
    // (the kernel failed while the request was on its way in) or gave up. It is not put in the
    // output, where it would meet a `receive` expecting a message.
    if crate::message::decode_header(bytes)
        .is_ok_and(|(h, _)| h.flags & crate::message::FLAG_KERNEL_FAILED != 0)
    {
        return;
    }
    if local.outbox.is_empty() && cell.push_output_bytes(bytes) {
        return;
    }
    local.outbox.push_back(Outgoing { route: Route::HostOutput, bytes: bytes.to_vec() });
}

/// Sends an error reply for a failed request from the host (no-op for non-requests).
///
/// `kernel_failed` marks the reply so that the caller reports `Error::KernelFailed` rather than a
/// single failed call.
pub(crate) fn fail_request(
    cell: &KernelCell,
    local: &mut ExecLocal,
    header: &EnvelopeHeader,
    text: &str,
    kernel_failed: bool,
) {
    if header.correlation_id == 0 || header.source != KernelId::HOST.0 {
        return;
    }
    let bytes = error_reply_envelope(
        cell.id().0,
        HlcTimestamp::from_packed(cell.control.hlc_packed(), cell.id().0),
        header.correlation_id,
        header.source,
        text,
        kernel_failed,
        cell.output().slot_size() as usize,
    );
    deliver_reply(cell, local, header.correlation_id, &bytes);
}

/// Tries to move outbox entries into their target queues; returns `true` when it is empty.
pub(crate) fn flush_outbox(cell: &KernelCell, local: &mut ExecLocal) -> bool {
    while let Some(front) = local.outbox.front() {
        match &front.route {
            Route::Kernel(t) => match t.push_input_bytes(&front.bytes) {
                InputPush::Pushed => {}
                InputPush::Full => return false,
                why @ (InputPush::Closed | InputPush::TooLarge | InputPush::NoSuchInstance) => {
                    // The target stopped; keep the message for our own terminate() to return.
                    keep_undeliverable(cell, t, &front.bytes, why);
                }
            },
            Route::HostOutput => {
                if !cell.push_output_bytes(&front.bytes) {
                    return false;
                }
            }
        }
        local.outbox.pop_front();
    }
    true
}
