//! The per-kernel shared structure every backend builds on, and the runtime's kernel directory.
//!
//! A [`KernelCell`] holds what both the host and the kernel's executor touch: the control block,
//! the input and output slot rings, the reply table, and the wake-up plumbing. The backend
//! supplies a [`Doorbell`] that gets the kernel running when work arrives (the CPU backend
//! schedules it on a worker; a GPU backend may do nothing, since its kernel polls).

use super::accepts::AcceptedTypes;
use super::envelope::{error_reply_envelope, RawMessage};
use super::options::{LaunchOptions, Placement};
use super::reply::ReplyTable;
use super::state::KernelState;
use crate::admission::AdmissionGate;
use crate::control_block::ControlBlock;
use crate::hlc::HlcClock;
use crate::message::KernelId;
use crate::queue::{Mailboxes, SlotRing};
use crate::{Error, Result};
use core::sync::atomic::{fence, AtomicU32, Ordering};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use tokio::sync::Notify;

/// Something that gets a kernel processing its input.
pub trait Doorbell: Send + Sync {
    /// Called after new input (or a lifecycle request) is published for the kernel.
    fn ring(&self);

    /// Called after a message was pushed into instance `index`'s mailbox of a kernel group
    /// ([`KernelCell::new_group`]). The default rings the whole kernel.
    fn ring_instance(&self, index: u32) {
        let _ = index;
        self.ring();
    }
}

/// Byte offset of `destination` in an encoded envelope header (little-endian `u32`).
const DESTINATION: usize = core::mem::offset_of!(crate::message::EnvelopeHeader, destination);

const FAULT_NEXT_RUN: u8 = 1;
const FAULT_NEXT_MESSAGE: u8 = 2;

/// What happened to a push into a kernel's input queue ([`KernelCell::try_push_input`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputPush {
    /// In the queue; the kernel will handle it or hand it back.
    Pushed,
    /// The queue is full: nothing was written (backpressure).
    Full,
    /// The kernel stopped taking messages (terminating or terminated): nothing was written.
    Closed,
    /// The bytes are larger than a slot of this queue: nothing was written.
    TooLarge,
    /// The destination names no instance of this kernel (a group has fewer instances, or the
    /// envelope is for another kernel): nothing was written.
    NoSuchInstance,
}

/// Async wake-up for host tasks waiting on a condition that kernels change (output available,
/// input space, lifecycle). Cheap for the notifier when nobody waits: one fence and one load.
#[derive(Default)]
pub struct Waiters {
    count: AtomicU32,
    notify: Notify,
}

impl Waiters {
    /// Wakes every waiting task (call after making the condition true).
    #[inline]
    pub fn notify(&self) {
        // SeqCst fence: pairs with the fence in `wait_until`; either the waiter's count increment
        // is visible here, or the waiter's re-check sees what was published before this fence.
        fence(Ordering::SeqCst);
        if self.count.load(Ordering::Relaxed) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// Waits until `cond` returns `Some`.
    pub async fn wait_until<T>(&self, mut cond: impl FnMut() -> Option<T>) -> T {
        loop {
            if let Some(v) = cond() {
                return v;
            }
            // Created before the count increment: tokio guarantees a `Notified` receives every
            // `notify_waiters` issued after its creation, even before it is first polled.
            let notified = self.notify.notified();
            self.count.fetch_add(1, Ordering::SeqCst);
            // Decrements the count even if this future is dropped while waiting (timeouts).
            let _registered = Registered(&self.count);
            fence(Ordering::SeqCst);
            if let Some(v) = cond() {
                return v;
            }
            notified.await;
        }
    }
}

struct Registered<'a>(&'a AtomicU32);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl core::fmt::Debug for Waiters {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Waiters").field("count", &self.count.load(Ordering::Relaxed)).finish()
    }
}

/// Shared per-kernel structure (see the module docs).
pub struct KernelCell {
    id: KernelId,
    name: Arc<str>,
    /// Lifecycle flags and counters.
    pub control: ControlBlock,
    /// Input queue: host and K2K senders push (through the admission gate), the kernel pops.
    input: SlotRing,
    /// Output queue: the kernel pushes, the host pops.
    output: SlotRing,
    /// Pending `call`s.
    pub replies: ReplyTable,
    /// Woken when the output queue gets a message.
    pub output_waiters: Waiters,
    /// Woken when the input queue frees space.
    pub input_waiters: Waiters,
    /// Woken on lifecycle changes (terminated, failed).
    pub lifecycle_waiters: Waiters,
    /// The send ↔ terminate handshake: every push into `input` is admitted here, and
    /// `terminate` closes it before the executor may finish (see [`crate::admission`]).
    admission: AdmissionGate,
    /// Outputs written after `terminate` found the output queue full (see `try_push_output`).
    overflow: Mutex<std::collections::VecDeque<Vec<u8>>>,
    overflowing: core::sync::atomic::AtomicBool,
    /// The message types the kernel handles (`None`: launched without a registered handler).
    accepts: Option<AcceptedTypes>,
    options: LaunchOptions,
    doorbell: OnceLock<Arc<dyn Doorbell>>,
    placement: OnceLock<Placement>,
    last_error: Mutex<Option<String>>,
    returned: Mutex<Vec<RawMessage>>,
    known_kernels: Vec<String>,
    /// Test-only fault injection (see [`KernelCell::inject_runtime_fault`]).
    fault: core::sync::atomic::AtomicU8,
    /// A kernel group's inputs ([`KernelCell::new_group`]); `None` for a single kernel.
    group: Option<GroupInput>,
}

/// Where a kernel group's instances take their input from.
enum GroupInput {
    /// One mailbox per instance in host memory (the CPU backend's groups).
    Mailboxes(Mailboxes),
    /// One ingress queue for the whole group, the cell's input ring: every envelope names its
    /// instance in `destination`, and the device moves it into that instance's mailbox in device
    /// memory (the CUDA backend's groups).
    Ingress { count: u32 },
}

impl KernelCell {
    /// Allocates the queues and control block for a kernel.
    ///
    /// `accepts` is the kernel definition's [`KernelDef::accepted_types`](super::KernelDef::accepted_types)
    /// (`None`: no registered handler); `known_kernels` (the names that do have handlers) is only
    /// used in the error message when it is `None`.
    pub fn new(
        id: KernelId,
        name: &str,
        accepts: Option<AcceptedTypes>,
        options: LaunchOptions,
        known_kernels: Vec<String>,
    ) -> Result<Self> {
        options.validate()?;
        let input = SlotRing::new(options.input_capacity, options.slot_size())?;
        Self::with_input(id, name, accepts, options, known_kernels, input)
    }

    /// Like [`KernelCell::new`], with an input ring the backend placed (for example in pinned
    /// host memory its device reads directly). `input` must have the options' geometry.
    pub fn with_input(
        id: KernelId,
        name: &str,
        accepts: Option<AcceptedTypes>,
        options: LaunchOptions,
        known_kernels: Vec<String>,
        input: SlotRing,
    ) -> Result<Self> {
        options.validate()?;
        let slot = options.slot_size();
        let output = SlotRing::new(options.output_capacity, slot)?;
        Ok(Self {
            id,
            name: Arc::from(name),
            control: ControlBlock::for_kernel(id.0, input.capacity(), output.capacity()),
            input,
            output,
            replies: ReplyTable::new(options.max_pending_calls),
            output_waiters: Waiters::default(),
            input_waiters: Waiters::default(),
            lifecycle_waiters: Waiters::default(),
            admission: AdmissionGate::new(),
            overflow: Mutex::default(),
            overflowing: core::sync::atomic::AtomicBool::new(false),
            accepts,
            options,
            doorbell: OnceLock::new(),
            placement: OnceLock::new(),
            last_error: Mutex::new(None),
            returned: Mutex::new(Vec::new()),
            known_kernels,
            fault: core::sync::atomic::AtomicU8::new(0),
            group: None,
        })
    }

    /// The cell of a kernel group: `count` instances of one definition, with ids `id ..
    /// id + count`; lifecycle, output queue, pending calls and counters are the group's.
    ///
    /// `ingress: None`: one mailbox of `options.input_capacity` slots per instance, in host memory
    /// (the cell's own input queue is not used). `Some(ring)`: the backend keeps the mailboxes
    /// (in device memory) and takes every instance's input through `ring`, which becomes the
    /// cell's input queue; an envelope's `destination` names its instance.
    pub fn new_group(
        id: KernelId,
        name: &str,
        accepts: Option<AcceptedTypes>,
        options: LaunchOptions,
        known_kernels: Vec<String>,
        count: u32,
        ingress: Option<SlotRing>,
    ) -> Result<Self> {
        options.validate()?;
        if count == 0 || id.0.checked_add(count).is_none() {
            return Err(Error::InvalidOptions(format!(
                "a kernel group needs between 1 and {} instances, not {count}",
                u32::MAX - id.0
            )));
        }
        let slot = options.slot_size();
        let cell = match ingress {
            Some(ring) => {
                let mut cell = Self::with_input(id, name, accepts, options, known_kernels, ring)?;
                cell.group = Some(GroupInput::Ingress { count });
                cell
            }
            None => {
                let mailboxes = Mailboxes::new(count, options.input_capacity, slot)?;
                let mut cell =
                    Self::with_input(id, name, accepts, options, known_kernels, SlotRing::new(2, slot)?)?;
                cell.group = Some(GroupInput::Mailboxes(mailboxes));
                cell
            }
        };
        Ok(cell)
    }

    /// Instances of this kernel: 1 for a single kernel.
    #[inline]
    pub fn instances(&self) -> u32 {
        match &self.group {
            None => 1,
            Some(GroupInput::Mailboxes(m)) => m.count(),
            Some(GroupInput::Ingress { count }) => *count,
        }
    }

    /// Whether this is a kernel group's cell.
    #[inline]
    pub fn is_group(&self) -> bool {
        self.group.is_some()
    }

    /// A kernel group's mailboxes (for backends; `None` for a single kernel).
    #[doc(hidden)]
    #[inline]
    pub fn mailboxes(&self) -> Option<&Mailboxes> {
        match &self.group {
            Some(GroupInput::Mailboxes(m)) => Some(m),
            _ => None,
        }
    }

    /// The instance index `id` names in this kernel (0 for a single kernel's own id).
    #[inline]
    pub fn instance_of(&self, id: KernelId) -> Option<u32> {
        id.0.checked_sub(self.id.0).filter(|i| *i < self.instances())
    }

    /// The id of instance `index` (the kernel's id for index 0).
    #[inline]
    pub fn instance_id(&self, index: u32) -> KernelId {
        KernelId(self.id.0 + index)
    }

    /// Whether the input that `dest` names has a free slot (snapshot, for waiting senders).
    pub fn input_has_room(&self, dest: KernelId) -> bool {
        match (self.mailboxes(), self.instance_of(dest)) {
            (Some(m), Some(i)) => m.len(i) < m.capacity(),
            (Some(_), None) => true,
            (None, _) => self.input.len() < self.input.capacity(),
        }
    }
    /// Test-only fault injection: the next time the backend's host thread (CPU worker, CUDA
    /// agent, wgpu dispatcher) serves this kernel, its runtime code panics, outside any handler.
    /// The conformance tests use it to check that such a panic fails this kernel only. Not for
    /// production use.
    #[doc(hidden)]
    pub fn inject_runtime_fault(&self) {
        // Relaxed: the hook is only observed by the backend thread's next run, which a doorbell
        // (its own release/acquire) or a later poll orders after this store well enough for tests.
        self.fault.store(FAULT_NEXT_RUN, Ordering::Relaxed);
        self.ring();
    }

    /// Test-only fault injection: the runtime code panics while the CPU executor handles the
    /// next message (in the middle of a batch), outside the handler. Not for production use.
    #[doc(hidden)]
    pub fn inject_message_fault(&self) {
        // Relaxed: as in `inject_runtime_fault`.
        self.fault.store(FAULT_NEXT_MESSAGE, Ordering::Relaxed);
        self.ring();
    }

    /// Panics once after [`KernelCell::inject_runtime_fault`]: called by backends where their
    /// runtime code serves the kernel (one relaxed load when no fault is injected).
    #[doc(hidden)]
    #[inline]
    pub fn check_injected_fault(&self) {
        self.fire_fault(FAULT_NEXT_RUN);
    }

    /// Panics once after [`KernelCell::inject_message_fault`]: called per message handled.
    #[doc(hidden)]
    #[inline]
    pub fn check_injected_message_fault(&self) {
        self.fire_fault(FAULT_NEXT_MESSAGE);
    }

    #[inline]
    fn fire_fault(&self, kind: u8) {
        // Relaxed: a test hook; see `inject_runtime_fault`.
        if self.fault.load(Ordering::Relaxed) == kind
            && self.fault.compare_exchange(kind, 0, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            panic!("injected runtime fault in kernel {:?} (test hook)", self.name);
        }
    }

    /// Kernel id.
    #[inline]
    pub fn id(&self) -> KernelId {
        self.id
    }

    /// Kernel name.
    #[inline]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Kernel name, shared (for errors that hand it out without allocating).
    pub fn name_arc(&self) -> Arc<str> {
        self.name.clone()
    }

    /// The input queue, for backends only (executors and device agents pop it, or place it in
    /// device-visible memory). Senders use [`KernelCell::try_push_input`]: a push into the ring
    /// itself would skip the admission gate and the in-flight count.
    #[doc(hidden)]
    #[inline]
    pub fn input(&self) -> &SlotRing {
        &self.input
    }

    /// The output queue, for backends only. Outputs go through [`KernelCell::try_push_output`]
    /// (which overflows behind the ring once terminating) and are read with
    /// [`KernelCell::pop_output`].
    #[doc(hidden)]
    #[inline]
    pub fn output(&self) -> &SlotRing {
        &self.output
    }

    /// Launch options.
    pub fn options(&self) -> &LaunchOptions {
        &self.options
    }

    /// Installs the backend's doorbell (once).
    pub fn set_doorbell(&self, d: Arc<dyn Doorbell>) {
        let _ = self.doorbell.set(d);
    }

    /// Records where the kernel runs (once, by the runtime, when it places the kernel).
    pub fn set_placement(&self, placement: Placement) {
        let _ = self.placement.set(placement);
    }

    /// Where the kernel runs (`None` before it was placed).
    pub fn placement(&self) -> Option<&Placement> {
        self.placement.get()
    }

    /// Rings the doorbell: the kernel has new input or a lifecycle request.
    #[inline]
    pub fn ring(&self) {
        if let Some(d) = self.doorbell.get() {
            d.ring();
        }
    }

    /// Current lifecycle state.
    #[inline]
    pub fn state(&self) -> KernelState {
        KernelState::from_code(self.control.state_code())
    }

    /// Moves to `to` if allowed from the current state.
    pub fn transition(&self, to: KernelState) -> Result<KernelState> {
        loop {
            let from = self.state();
            if !from.can_go_to(to) {
                return Err(Error::InvalidTransition { kernel: self.name.to_string(), from, to });
            }
            if self.control.transition(from.code(), to.code()).is_ok() {
                return Ok(from);
            }
        }
    }

    /// A handler failed the kernel and no restart is left: `Active` → `Failed` (through the
    /// transition table; a kernel that is no longer active keeps its state), and the host's
    /// waiters are woken.
    pub fn fail(&self) {
        let _ = self.transition(KernelState::Failed);
        self.lifecycle_waiters.notify();
        self.output_waiters.notify();
    }

    /// The kernel finished terminating (its input drained, handled or handed back): `Terminating`
    /// → `Terminated` through the transition table, `terminated` set in the control block (what
    /// `terminate` waits for), and every waiter woken. The executor or device agent calls this
    /// once, after its last output is queued.
    pub fn finish_terminate(&self) {
        let _ = self.transition(KernelState::Terminated);
        self.control.mark_terminated();
        self.lifecycle_waiters.notify();
        self.output_waiters.notify();
        self.input_waiters.notify();
    }

    /// Moves a launched, active or inactive kernel to `Failed` outside the transition table
    /// (a lost device, a panic in the runtime's own code); a terminating or ended kernel is left
    /// as it is, so a racing `terminate` still completes. Compare-and-swap from the state it
    /// observed, so it never overwrites a concurrent transition. Returns whether it moved.
    pub fn force_failed(&self) -> bool {
        loop {
            let from = self.state();
            if !matches!(from, KernelState::Launched | KernelState::Active | KernelState::Inactive) {
                return false;
            }
            if self.control.transition(from.code(), KernelState::Failed.code()).is_ok() {
                return true;
            }
        }
    }

    /// Records a failure text (and code) on the kernel.
    pub fn record_error(&self, code: crate::control_block::ErrorCode, text: String) {
        self.control.record_error(code);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
    }

    /// Last failure text.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Keeps a message that could not be processed (failed kernel) for `terminate` to return.
    pub fn return_message(&self, m: RawMessage) {
        self.returned.lock().unwrap_or_else(|e| e.into_inner()).push(m);
    }

    /// The messages kept by [`KernelCell::return_message`] (every terminate report lists them).
    pub fn returned(&self) -> Vec<RawMessage> {
        self.returned.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Checks that this kernel can take a message of type `type_id` right now.
    pub fn check_accepts(&self, type_id: u64, type_name: &str) -> Result<()> {
        let state = self.state();
        if !state.accepts_messages() {
            return Err(Error::NotAccepting { kernel: self.name.to_string(), state });
        }
        match &self.accepts {
            None => Err(self.no_handler()),
            Some(a) if !a.handles(type_id) => Err(self.unknown_type(a, type_id, type_name)),
            Some(_) => Ok(()),
        }
    }

    /// Checks a payload of type `type_id` the way the kernel's handler will decode it (raw-byte
    /// ingress): a kernel without handlers or a type it does not handle is the typed error
    /// [`KernelCell::check_accepts`] gives.
    pub(crate) fn check_payload(&self, type_id: u64, payload: &[u8]) -> Result<()> {
        let Some(a) = &self.accepts else { return Err(self.no_handler()) };
        match a.check_payload(type_id, payload) {
            None => Err(self.unknown_type(a, type_id, "(raw bytes)")),
            Some(r) => Ok(r?),
        }
    }

    fn no_handler(&self) -> Error {
        Error::NoHandler { kernel: self.name.to_string(), registered: self.known_kernels.clone() }
    }

    fn unknown_type(&self, accepts: &AcceptedTypes, type_id: u64, type_name: &str) -> Error {
        Error::UnknownMessageType {
            kernel: self.name.to_string(),
            type_id,
            type_name: type_name.to_string(),
            accepted: accepts.names().to_vec(),
        }
    }

    /// Pushes a message into the input queue through the admission gate: `write` encodes it into
    /// the claimed slot. On success the message counts as in flight and the doorbell rings.
    ///
    /// This is the only way senders (host handles, K2K from executors, GPU agents routing a
    /// device kernel's output) put messages into a kernel's input queue: once
    /// [`KernelCell::close_input`] has returned, it answers [`InputPush::Closed`], so a message
    /// that was pushed is always handled or handed back by the kernel's terminate.
    #[inline]
    pub fn try_push_input<E>(
        &self,
        write: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> core::result::Result<InputPush, E> {
        let Some(admitted) = self.admission.enter() else {
            return Ok(InputPush::Closed);
        };
        if self.input.try_push_with(write)?.is_none() {
            return Ok(InputPush::Full);
        }
        // Counted while admitted: once `close_input` returns, the in-flight count is final.
        self.control.add_in_flight(1);
        drop(admitted);
        self.ring();
        Ok(InputPush::Pushed)
    }

    /// [`KernelCell::try_push_input`] for the input that `dest` names: a kernel group's instance
    /// mailbox, or a single kernel's input queue (`dest` is then its id). A destination that is
    /// no instance of this kernel is [`InputPush::NoSuchInstance`].
    #[inline]
    pub fn try_push_to<E>(
        &self,
        dest: KernelId,
        write: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> core::result::Result<InputPush, E> {
        let Some(group) = &self.group else {
            if dest != self.id {
                return Ok(InputPush::NoSuchInstance);
            }
            return self.try_push_input(write);
        };
        let Some(index) = self.instance_of(dest) else { return Ok(InputPush::NoSuchInstance) };
        let Some(admitted) = self.admission.enter() else {
            return Ok(InputPush::Closed);
        };
        let pushed = match group {
            GroupInput::Mailboxes(mailboxes) => mailboxes.try_push_with(index, write)?,
            // The device moves it into the instance's mailbox; the envelope names the instance.
            GroupInput::Ingress { .. } => self.input.try_push_with(write)?,
        };
        if pushed.is_none() {
            return Ok(InputPush::Full);
        }
        // Counted while admitted, as in `try_push_input`.
        self.control.add_in_flight(1);
        drop(admitted);
        if let Some(d) = self.doorbell.get() {
            d.ring_instance(index);
        }
        Ok(InputPush::Pushed)
    }

    /// Pushes an envelope the runtime itself encoded (K2K, a GPU kernel's output routed by its
    /// backend) into the input queue (see [`KernelCell::try_push_input`]). It does not validate:
    /// bytes from anywhere else go through
    /// [`KernelHandle::try_send_bytes`](super::KernelHandle::try_send_bytes). Bytes that do not
    /// fit a slot are refused with [`InputPush::TooLarge`], never truncated.
    #[inline]
    pub fn push_input_bytes(&self, bytes: &[u8]) -> InputPush {
        if bytes.len() > self.input.slot_size() as usize {
            return InputPush::TooLarge;
        }
        let write = |slot: &mut [u8]| {
            slot[..bytes.len()].copy_from_slice(bytes);
            Ok::<_, core::convert::Infallible>(bytes.len())
        };
        let pushed = if self.group.is_some() {
            // A group's instance is the envelope's destination.
            match bytes.get(DESTINATION..DESTINATION + 4) {
                Some(d) => {
                    self.try_push_to(KernelId(u32::from_le_bytes(d.try_into().unwrap_or_default())), write)
                }
                None => Ok(InputPush::NoSuchInstance),
            }
        } else {
            self.try_push_input(write)
        };
        pushed.unwrap_or_else(|never| match never {})
    }

    /// Closes the input queue for good and waits until every sender already admitted has
    /// pushed: afterwards nothing new enters the queue. `terminate` calls this before it asks the
    /// kernel to finish, which is what makes "drained" final.
    pub fn close_input(&self) {
        self.admission.close();
    }

    /// Whether [`KernelCell::close_input`] has been called.
    pub fn input_closed(&self) -> bool {
        self.admission.is_closed()
    }

    /// The error a sender gets when the kernel stopped taking messages.
    pub fn not_accepting(&self) -> Error {
        Error::NotAccepting { kernel: self.name.to_string(), state: self.state() }
    }

    /// Pushes an encoded envelope into the output queue; `false` if full (see
    /// [`KernelCell::try_push_output`]).
    #[inline]
    pub fn push_output_bytes(&self, bytes: &[u8]) -> bool {
        if bytes.len() > self.output.slot_size() as usize {
            return false;
        }
        self.try_push_output(|slot| {
            slot[..bytes.len()].copy_from_slice(bytes);
            Ok::<_, core::convert::Infallible>(bytes.len())
        })
        .unwrap_or_else(|never| match never {})
    }

    /// Writes an output message (`write` encodes it); `Ok(false)` if the output queue is full.
    ///
    /// Once the kernel is asked to terminate, a full output queue no longer holds the kernel up:
    /// further outputs wait, in order, in an overflow list behind the queue that
    /// [`KernelCell::pop_output`] reads after it. So `terminate` finishes whether or not anybody
    /// reads the outputs, and none is lost.
    pub fn try_push_output<E>(
        &self,
        mut write: impl FnMut(&mut [u8]) -> core::result::Result<usize, E>,
    ) -> core::result::Result<bool, E> {
        // Acquire: pairs with the Release below (a producer that sees overflow in use appends).
        if !self.overflowing.load(Ordering::Acquire) {
            if self.output.try_push_with(&mut write)?.is_some() {
                self.output_waiters.notify();
                return Ok(true);
            }
            if !self.control.terminate_requested() {
                return Ok(false);
            }
        }
        let mut buf = vec![0u8; self.output.slot_size() as usize];
        let n = write(&mut buf)?;
        buf.truncate(n);
        let mut overflow = self.overflow.lock().unwrap_or_else(|e| e.into_inner());
        overflow.push_back(buf);
        // Release: every earlier push into the ring is visible to a reader that sees the flag.
        self.overflowing.store(true, Ordering::Release);
        drop(overflow);
        self.output_waiters.notify();
        Ok(true)
    }

    /// Takes the next output message (the queue first, then the overflow behind it).
    pub fn pop_output<R>(&self, mut read: impl FnMut(&[u8]) -> R) -> Option<R> {
        // Acquire, and loaded before the ring is looked at: pairs with the Release in
        // `try_push_output`, so ring items older than the overflow are seen first.
        let overflowing = self.overflowing.load(Ordering::Acquire);
        if let Some(r) = self.output.try_pop_with(&mut read) {
            return Some(r);
        }
        if !overflowing {
            return None;
        }
        let bytes = self.overflow.lock().unwrap_or_else(|e| e.into_inner()).pop_front()?;
        Some(read(&bytes))
    }

    /// Output messages waiting for the host (queue and overflow).
    pub fn output_len(&self) -> u32 {
        let extra = if self.overflowing.load(Ordering::Acquire) {
            self.overflow.lock().unwrap_or_else(|e| e.into_inner()).len() as u32
        } else {
            0
        };
        self.output.len() + extra
    }
}

impl KernelCell {
    /// Stops the kernel at once without draining (runtime dropped without `shutdown`, a backend
    /// that gave up on the kernel): waiting calls get an error reply (`KernelFailed`), the state
    /// goes through `Terminating` to `Terminated`, and every waiter is woken.
    pub fn abort(&self, reason: &str) {
        // No sender gets in after this, so no request is pushed after its call was failed below.
        self.close_input();
        let hlc = crate::hlc::HlcTimestamp::from_packed(self.control.hlc_packed(), self.id.0);
        let slot = self.output.slot_size() as usize;
        for corr in self.replies.waiting() {
            let bytes = error_reply_envelope(self.id.0, hlc, corr, KernelId::HOST.0, reason, true, slot);
            let _ = self.replies.complete(corr, &bytes);
        }
        // Every state but `Terminated` may go to `Terminating`; an ended kernel stays ended.
        let _ = self.transition(KernelState::Terminating);
        self.control.request_terminate();
        self.finish_terminate();
    }
}

impl core::fmt::Debug for KernelCell {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KernelCell")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("state", &self.state())
            .finish()
    }
}

/// The runtime's kernels by name and id, plus the host's clock. Read on K2K cache misses only.
///
/// It holds live kernels only: a kernel that terminates is forgotten
/// ([`Directory::forget`], called by `KernelHandle::terminate` and by every backend when it marks
/// a kernel terminated), so a terminated kernel's queues and state are freed as soon as the last
/// `KernelHandle` on it is dropped. As a safety net, an insert also sweeps out terminated kernels
/// once the maps have doubled since the last sweep (amortised O(1) per launch).
pub struct Directory {
    maps: RwLock<Maps>,
    /// The host's HLC (node id 0), stamping messages the host sends.
    pub host_clock: HlcClock,
}

#[derive(Default)]
struct Maps {
    by_name: HashMap<String, Arc<KernelCell>>,
    by_id: HashMap<u32, Arc<KernelCell>>,
    /// Kernel groups by first id (a group's instance ids follow it): the range lookup of `by_id`.
    groups: std::collections::BTreeMap<u32, Arc<KernelCell>>,
    /// Size of `by_id` at which the next insert sweeps out terminated kernels.
    sweep_at: usize,
}

impl Default for Directory {
    fn default() -> Self {
        Self { maps: RwLock::default(), host_clock: HlcClock::new(0) }
    }
}

impl Directory {
    /// Adds a kernel; a live kernel with the same name is an error.
    pub fn insert(&self, cell: Arc<KernelCell>) -> Result<()> {
        let mut maps = self.maps.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = maps.by_name.get(cell.name()) {
            if old.state() != KernelState::Terminated {
                return Err(Error::AlreadyLaunched(cell.name().to_string()));
            }
        }
        if maps.by_id.len() >= maps.sweep_at {
            maps.by_name.retain(|_, c| c.state() != KernelState::Terminated);
            maps.by_id.retain(|_, c| c.state() != KernelState::Terminated);
            maps.groups.retain(|_, c| c.state() != KernelState::Terminated);
            maps.sweep_at = (maps.by_id.len() * 2).max(64);
        }
        maps.by_name.insert(cell.name().to_string(), cell.clone());
        if cell.is_group() {
            maps.groups.insert(cell.id().0, cell.clone());
        }
        maps.by_id.insert(cell.id().0, cell);
        Ok(())
    }

    /// Forgets a kernel (it terminated). A newer kernel launched under the same name stays.
    pub fn forget(&self, cell: &KernelCell) {
        let mut maps = self.maps.write().unwrap_or_else(|e| e.into_inner());
        if maps.by_name.get(cell.name()).is_some_and(|c| core::ptr::eq(&**c, cell)) {
            maps.by_name.remove(cell.name());
        }
        if maps.by_id.get(&cell.id().0).is_some_and(|c| core::ptr::eq(&**c, cell)) {
            maps.by_id.remove(&cell.id().0);
        }
        if maps.groups.get(&cell.id().0).is_some_and(|c| core::ptr::eq(&**c, cell)) {
            maps.groups.remove(&cell.id().0);
        }
    }

    /// Looks a kernel up by name.
    pub fn by_name(&self, name: &str) -> Option<Arc<KernelCell>> {
        self.maps.read().unwrap_or_else(|e| e.into_inner()).by_name.get(name).cloned()
    }

    /// Looks a kernel up by id; an instance id of a kernel group finds the group
    /// ([`KernelCell::instance_of`] gives the index).
    pub fn by_id(&self, id: KernelId) -> Option<Arc<KernelCell>> {
        let maps = self.maps.read().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = maps.by_id.get(&id.0) {
            return Some(c.clone());
        }
        let (_, group) = maps.groups.range(..=id.0).next_back()?;
        group.instance_of(id).map(|_| group.clone())
    }

    /// All kernels the directory holds (snapshot): every kernel not yet terminated.
    pub fn all(&self) -> Vec<Arc<KernelCell>> {
        self.maps.read().unwrap_or_else(|e| e.into_inner()).by_id.values().cloned().collect()
    }

    /// How many kernels the directory holds.
    pub fn len(&self) -> usize {
        self.maps.read().unwrap_or_else(|e| e.into_inner()).by_id.len()
    }

    /// Whether the directory holds no kernel.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl core::fmt::Debug for Directory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Directory").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(id: u32, name: &str) -> Arc<KernelCell> {
        Arc::new(KernelCell::new(KernelId(id), name, None, LaunchOptions::default(), Vec::new()).unwrap())
    }

    fn terminate(c: &KernelCell) {
        c.transition(KernelState::Terminating).unwrap();
        c.finish_terminate();
    }

    #[test]
    fn lifecycle_goes_through_the_table() {
        let c = cell(1, "k");
        c.transition(KernelState::Active).unwrap();
        c.fail();
        assert_eq!(c.state(), KernelState::Failed);
        // `fail` only moves an active kernel; `force_failed` leaves a terminating one alone.
        c.transition(KernelState::Terminating).unwrap();
        c.fail();
        assert!(!c.force_failed());
        assert_eq!(c.state(), KernelState::Terminating);
        assert!(!c.control.is_terminated());
        c.finish_terminate();
        assert_eq!(c.state(), KernelState::Terminated);
        assert!(c.control.is_terminated());
        // An inactive kernel fails only outside the table.
        let d = cell(2, "d");
        d.transition(KernelState::Inactive).unwrap();
        d.fail();
        assert_eq!(d.state(), KernelState::Inactive);
        assert!(d.force_failed());
        assert_eq!(d.state(), KernelState::Failed);
    }

    #[test]
    fn abort_answers_waiting_calls_and_ends_the_kernel() {
        let c = cell(3, "a");
        c.transition(KernelState::Active).unwrap();
        let t = c.replies.claim().unwrap();
        c.abort("gone");
        assert_eq!(c.state(), KernelState::Terminated);
        assert!(c.control.is_terminated() && c.control.terminate_requested() && c.input_closed());
        let core::task::Poll::Ready(bytes) = c.replies.poll_take(t, None) else { panic!("no reply") };
        let (h, payload) = crate::message::decode_header(&bytes).unwrap();
        assert_ne!(h.flags & crate::message::FLAG_KERNEL_FAILED, 0);
        assert_eq!((h.source, h.correlation_id, payload), (3, t.correlation_id(), &b"gone"[..]));
        // Aborting an ended kernel changes nothing.
        c.abort("again");
        assert_eq!(c.state(), KernelState::Terminated);
    }

    #[test]
    fn forget_keeps_a_newer_kernel_of_the_same_name() {
        let dir = Directory::default();
        let old = cell(1, "k");
        dir.insert(old.clone()).unwrap();
        assert!(matches!(dir.insert(cell(2, "k")), Err(Error::AlreadyLaunched(_))));
        terminate(&old);
        let new = cell(3, "k");
        dir.insert(new.clone()).unwrap();
        // A late forget of the old kernel (its backend marking it terminated) leaves the new one.
        dir.forget(&old);
        assert!(Arc::ptr_eq(&dir.by_name("k").unwrap(), &new));
        assert!(dir.by_id(KernelId(1)).is_none());
        assert_eq!(dir.len(), 1);
        terminate(&new);
        dir.forget(&new);
        assert!(dir.is_empty());
        assert_eq!(Arc::strong_count(&old), 1);
        assert_eq!(Arc::strong_count(&new), 1);
    }

    #[test]
    fn inserts_sweep_out_terminated_kernels_nobody_forgot() {
        let dir = Directory::default();
        let mut weak = Vec::new();
        for i in 0..1000 {
            let c = cell(i, &format!("k{i}"));
            dir.insert(c.clone()).unwrap();
            terminate(&c);
            weak.push(Arc::downgrade(&c));
        }
        // Never forgotten explicitly: the sweep on insert keeps the directory bounded.
        assert!(dir.len() <= 128, "{} kernels held", dir.len());
        assert!(weak.iter().filter(|w| w.strong_count() > 0).count() <= 128);
    }
}
