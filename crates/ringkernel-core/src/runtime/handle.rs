//! The host's handle on a kernel: lifecycle, send/receive, request/reply.
//!
//! The handle works on the shared [`KernelCell`] only, so it is the same for every backend.

use super::cell::{Directory, InputPush, KernelCell};
use super::envelope::RawMessage;
use super::reply::Ticket;
use super::state::KernelState;
use crate::backoff::Backoff;
use crate::control_block::{ControlBlock, ErrorCode};
use crate::hlc::HlcTimestamp;
use crate::message::{
    decode_header, encode, EnvelopeHeader, EnvelopeMeta, KernelId, RingMessage, ENVELOPE_HEADER_SIZE,
    FLAG_ERROR_REPLY, FLAG_KERNEL_FAILED,
};
use crate::{Error, Result};
use core::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

/// What the host learns about a received message besides its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedMeta {
    /// The sending kernel's timestamp (the host clock has merged it).
    pub timestamp: HlcTimestamp,
    /// The kernel that wrote the message.
    pub source: KernelId,
    /// The request it answers (0: not a reply to a `call`).
    pub correlation_id: u64,
    /// The message's id (0 where the sender did not number it).
    pub message_id: u64,
}

impl ReceivedMeta {
    fn of(h: &EnvelopeHeader) -> Self {
        Self {
            timestamp: HlcTimestamp::from_packed(h.hlc, h.hlc_node),
            source: KernelId(h.source),
            correlation_id: h.correlation_id,
            message_id: h.message_id,
        }
    }
}

/// A message taken off a kernel's output, with its envelope's metadata
/// ([`KernelHandle::receive_envelope`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Received<M> {
    /// The message.
    pub message: M,
    /// Its envelope's metadata.
    pub meta: ReceivedMeta,
}

/// A non-blocking send that did not happen; the message is handed back either way.
#[derive(Debug, thiserror::Error)]
pub enum TrySendError<M> {
    /// The input queue is full.
    #[error("input queue of kernel {kernel:?} is full")]
    Full {
        /// The kernel's name.
        kernel: Arc<str>,
        /// The message.
        message: M,
    },
    /// The kernel refused the message (state, type, encoding).
    #[error("{error}")]
    Rejected {
        /// Why.
        error: Error,
        /// The message.
        message: M,
    },
}

impl<M> TrySendError<M> {
    /// The message that was not sent.
    pub fn into_message(self) -> M {
        match self {
            Self::Full { message, .. } | Self::Rejected { message, .. } => message,
        }
    }
}

impl<M> From<TrySendError<M>> for Error {
    fn from(e: TrySendError<M>) -> Self {
        match e {
            TrySendError::Full { kernel, .. } => Error::QueueFull(kernel.to_string()),
            TrySendError::Rejected { error, .. } => error,
        }
    }
}

/// A snapshot of a kernel's status.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelStatus {
    /// Kernel id.
    pub id: KernelId,
    /// Kernel name.
    pub name: String,
    /// Lifecycle state.
    pub state: KernelState,
    /// Messages handled so far.
    pub messages_processed: u64,
    /// Messages accepted but not yet handled.
    pub messages_in_flight: u64,
    /// Messages waiting in the input queue.
    pub input_queue_depth: u32,
    /// Messages waiting in the output queue.
    pub output_queue_depth: u32,
    /// Last error text, if any.
    pub last_error: Option<String>,
    /// Last error code.
    pub last_error_code: ErrorCode,
    /// Errors recorded since launch.
    pub error_count: u64,
    /// Restarts after handler panics.
    pub restarts: u32,
    /// The kernel's clock as last published.
    pub clock: HlcTimestamp,
    /// The backend and device running the kernel (a kernel without a program for a GPU runtime's
    /// backend runs on its CPU pool, and says so here).
    pub placement: Option<super::options::Placement>,
    /// Instances: 1 for a single kernel, the group's size for a kernel group (whose counters and
    /// queue depths are summed over its instances).
    pub instances: u32,
}

/// What `terminate` hands back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TerminateReport {
    /// Messages the kernel handled over its life.
    pub messages_processed: u64,
    /// Messages it could not handle (it had failed, or a K2K target had stopped), returned here
    /// rather than dropped.
    pub returned: Vec<RawMessage>,
}

/// The host's handle on a launched kernel. Cheap to clone.
#[derive(Clone)]
pub struct KernelHandle {
    cell: Arc<KernelCell>,
    dir: Arc<Directory>,
    /// Where sends go: the kernel's own id, or an instance of a kernel group (`None` on a group's
    /// own handle, which sends nowhere).
    dest: Option<KernelId>,
}

impl core::fmt::Debug for KernelHandle {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KernelHandle").field("id", &self.cell.id()).field("name", &self.cell.name()).finish()
    }
}

struct CallGuard<'a> {
    cell: &'a KernelCell,
    ticket: Ticket,
    done: bool,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            // The call was abandoned (timeout or dropped future): a reply that already arrived is
            // moved to the output queue so it is not lost; a later one is routed there by the
            // kernel (ReplyTable::complete reports it NotPending).
            if let Some(bytes) = self.cell.replies.cancel(self.ticket) {
                if !self.cell.push_output_bytes(&bytes) {
                    if let Ok(raw) = RawMessage::from_bytes(&bytes) {
                        self.cell.return_message(raw);
                    }
                }
            }
        }
    }
}

impl KernelHandle {
    /// Wraps a kernel cell (used by runtimes).
    pub fn new(cell: Arc<KernelCell>, dir: Arc<Directory>) -> Self {
        let dest = (!cell.is_group()).then(|| cell.id());
        Self { cell, dir, dest }
    }

    /// A handle whose sends go to instance `index` of the kernel group `cell`.
    pub(crate) fn for_instance(&self, index: u32) -> Result<Self> {
        if index >= self.cell.instances() {
            return Err(Error::NoSuchInstance {
                kernel: self.cell.name().to_string(),
                instances: self.cell.instances(),
                detail: format!("it has no instance {index}"),
            });
        }
        Ok(Self { cell: self.cell.clone(), dir: self.dir.clone(), dest: Some(self.cell.instance_id(index)) })
    }

    /// The id sends go to; a group's own handle has none.
    fn dest(&self) -> Result<KernelId> {
        self.dest.ok_or_else(|| Error::NoSuchInstance {
            kernel: self.cell.name().to_string(),
            instances: self.cell.instances(),
            detail: "send to one instance (KernelGroup::instance)".to_string(),
        })
    }

    /// The shared cell (for backends, the runtime and tests; not part of the user API: a cell's
    /// queues bypass the handle's checks).
    #[doc(hidden)]
    pub fn cell(&self) -> &Arc<KernelCell> {
        &self.cell
    }

    /// Kernel id.
    pub fn id(&self) -> KernelId {
        self.cell.id()
    }

    /// Kernel name.
    pub fn name(&self) -> &str {
        self.cell.name()
    }

    /// The kernel's control block.
    pub fn control_block(&self) -> &ControlBlock {
        &self.cell.control
    }

    /// A status snapshot.
    pub fn status(&self) -> KernelStatus {
        let c = &self.cell.control;
        KernelStatus {
            id: self.cell.id(),
            name: self.cell.name().to_string(),
            state: self.cell.state(),
            messages_processed: c.messages_processed(),
            messages_in_flight: c.messages_in_flight(),
            input_queue_depth: match self.cell.mailboxes() {
                Some(m) => (0..m.count()).map(|i| m.len(i)).sum(),
                None => self.cell.input().len(),
            },
            output_queue_depth: self.cell.output_len(),
            last_error: self.cell.last_error(),
            last_error_code: c.last_error(),
            error_count: c.error_count(),
            restarts: c.restarts(),
            clock: HlcTimestamp::from_packed(c.hlc_packed(), self.cell.id().0),
            placement: self.cell.placement().cloned(),
            instances: self.cell.instances(),
        }
    }

    /// Starts (or resumes) processing input.
    pub async fn activate(&self) -> Result<()> {
        self.cell.transition(KernelState::Active)?;
        self.cell.control.set_active(true);
        self.cell.ring();
        Ok(())
    }

    /// Stops processing input; queued messages stay queued.
    pub async fn deactivate(&self) -> Result<()> {
        self.cell.transition(KernelState::Inactive)?;
        self.cell.control.set_active(false);
        // A backend whose kernel reads its own copy of the flag updates it here.
        self.cell.ring();
        Ok(())
    }

    /// Drains the input (processing it, or handing it back if the kernel failed) and stops the
    /// kernel. Idempotent. Outputs stay readable afterwards.
    pub async fn terminate(&self) -> Result<TerminateReport> {
        match self.cell.transition(KernelState::Terminating) {
            Ok(_) => {}
            Err(Error::InvalidTransition {
                from: KernelState::Terminating | KernelState::Terminated,
                ..
            }) => {}
            Err(e) => return Err(e),
        }
        // Every sender already admitted finishes its push before the kernel is asked to finish,
        // and none is admitted afterwards: what was accepted is handled or handed back.
        self.cell.close_input();
        self.cell.control.request_terminate();
        self.cell.ring();
        let c = &self.cell.control;
        self.cell.lifecycle_waiters.wait_until(|| c.is_terminated().then_some(())).await;
        // The backend forgets it too when it marks it terminated; this makes it certain by the
        // time terminate returns.
        self.dir.forget(&self.cell);
        Ok(TerminateReport { messages_processed: c.messages_processed(), returned: self.cell.returned() })
    }

    /// Encodes into the input queue: Ok(true) pushed, Ok(false) full; a kernel that stopped
    /// taking messages meanwhile is [`Error::NotAccepting`].
    #[inline]
    fn push<M: RingMessage>(&self, msg: &M, correlation_id: u64) -> Result<bool> {
        let dest = self.dest()?;
        let meta = EnvelopeMeta {
            correlation_id,
            source: KernelId::HOST.0,
            destination: dest.0,
            hlc: self.dir.host_clock.tick(),
            flags: 0,
        };
        match self.cell.try_push_to(dest, |slot| encode(msg, &meta, slot))? {
            InputPush::Pushed => Ok(true),
            InputPush::Full => Ok(false),
            InputPush::Closed | InputPush::TooLarge | InputPush::NoSuchInstance => {
                Err(self.cell.not_accepting())
            }
        }
    }

    /// Waits until the input queue has room or the kernel stops taking messages.
    async fn input_room(&self) {
        let cell = &*self.cell;
        let dest = self.dest.unwrap_or(cell.id());
        cell.input_waiters
            .wait_until(|| (cell.input_has_room(dest) || !cell.state().accepts_messages()).then_some(()))
            .await;
    }

    async fn push_wait<M: RingMessage>(&self, msg: &M, correlation_id: u64) -> Result<()> {
        loop {
            if self.push(msg, correlation_id)? {
                return Ok(());
            }
            self.input_room().await;
            self.cell.check_accepts(M::message_type(), M::type_name())?;
        }
    }

    /// Sends `msg`, waiting while the input queue is full (backpressure).
    pub async fn send<M: RingMessage>(&self, msg: M) -> Result<()> {
        self.cell.check_accepts(M::message_type(), M::type_name())?;
        self.push_wait(&msg, 0).await
    }

    /// Sends `msg` without waiting; a full queue or a refusal hands the message back.
    pub fn try_send<M: RingMessage>(&self, msg: M) -> Result<(), TrySendError<M>> {
        if let Err(error) = self.cell.check_accepts(M::message_type(), M::type_name()) {
            return Err(TrySendError::Rejected { error, message: msg });
        }
        match self.push(&msg, 0) {
            Ok(true) => Ok(()),
            Ok(false) => Err(TrySendError::Full { kernel: self.cell.name_arc(), message: msg }),
            Err(error) => Err(TrySendError::Rejected { error, message: msg }),
        }
    }

    /// Queues an encoded envelope that came from outside the runtime (raw bytes: a file, a socket,
    /// another process), after the runtime's one validation rule set ([`super::ingress`]): a kernel
    /// on any backend only ever sees valid envelopes. Each violation is a typed error and nothing
    /// is queued; a full queue is [`Error::QueueFull`] (the bytes stay with the caller).
    pub fn try_send_bytes(&self, bytes: &[u8]) -> Result<()> {
        let dest = self.dest()?;
        super::ingress::validate(&self.cell, dest, &self.dir.host_clock, bytes)?;
        let copy = |slot: &mut [u8]| {
            slot[..bytes.len()].copy_from_slice(bytes);
            Ok::<_, core::convert::Infallible>(bytes.len())
        };
        match self.cell.try_push_to(dest, copy).unwrap_or_else(|never| match never {}) {
            InputPush::Pushed => Ok(()),
            InputPush::Full => Err(Error::QueueFull(self.cell.name().to_string())),
            InputPush::Closed | InputPush::TooLarge | InputPush::NoSuchInstance => {
                Err(self.cell.not_accepting())
            }
        }
    }

    /// [`KernelHandle::try_send_bytes`], waiting while the input queue is full.
    pub async fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        loop {
            match self.try_send_bytes(bytes) {
                Err(Error::QueueFull(_)) => {}
                r => return r,
            }
            self.input_room().await;
        }
    }

    /// Takes the next output message if there is one. A message of another type is handed back
    /// inside [`Error::UnexpectedMessage`].
    pub fn try_receive<M: RingMessage>(&self) -> Result<Option<M>> {
        Ok(self.try_receive_envelope::<M>()?.map(|r| r.message))
    }

    /// Like [`KernelHandle::try_receive`], with the envelope's metadata (timestamp, source,
    /// correlation id).
    ///
    /// Every message the host takes off a kernel's output (here, in `receive`, and the replies
    /// and error replies of `call`) is merged into the host's clock, so whatever the host sends
    /// afterwards is stamped later than everything it has seen.
    pub fn try_receive_envelope<M: RingMessage>(&self) -> Result<Option<Received<M>>> {
        let r = self.cell.pop_output(|bytes| -> Result<Received<M>> {
            let (header, payload) = decode_header(bytes)?;
            self.dir.host_clock.observe_trusted(header.hlc);
            if header.type_id != M::message_type() {
                return Err(Error::UnexpectedMessage {
                    expected: M::type_name(),
                    message: Box::new(RawMessage { header, payload: payload.to_vec() }),
                });
            }
            Ok(Received { message: M::decode_payload(payload)?, meta: ReceivedMeta::of(&header) })
        });
        r.transpose()
    }

    /// Takes the next output message, waiting for one. Fails once the kernel has stopped and its
    /// output is empty.
    pub async fn receive<M: RingMessage>(&self) -> Result<M> {
        Ok(self.receive_envelope::<M>().await?.message)
    }

    /// Like [`KernelHandle::receive`], with the envelope's metadata.
    pub async fn receive_envelope<M: RingMessage>(&self) -> Result<Received<M>> {
        let cell = &*self.cell;
        loop {
            if let Some(m) = self.try_receive_envelope::<M>()? {
                return Ok(m);
            }
            let state = cell.state();
            if matches!(state, KernelState::Terminated | KernelState::Failed) && cell.output_len() == 0 {
                return Err(Error::NotAccepting { kernel: cell.name().to_string(), state });
            }
            cell.output_waiters
                .wait_until(|| {
                    (cell.output_len() > 0
                        || matches!(cell.state(), KernelState::Terminated | KernelState::Failed))
                    .then_some(())
                })
                .await;
        }
    }

    /// Sends a request and waits for its reply (matched by correlation id). Uses the launch
    /// option's default timeout, if any.
    pub async fn call<Req: RingMessage, Resp: RingMessage>(&self, req: Req) -> Result<Resp> {
        match self.cell.options().call_timeout {
            Some(t) => self.call_timeout(req, t).await,
            None => self.call_inner(req).await,
        }
    }

    /// [`KernelHandle::call`] with an explicit timeout. A reply arriving after the timeout goes to
    /// the output queue.
    pub async fn call_timeout<Req: RingMessage, Resp: RingMessage>(
        &self,
        req: Req,
        timeout: Duration,
    ) -> Result<Resp> {
        match tokio::time::timeout(timeout, self.call_inner(req)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout { kernel: self.cell.name().to_string(), after: timeout }),
        }
    }

    async fn call_inner<Req: RingMessage, Resp: RingMessage>(&self, req: Req) -> Result<Resp> {
        let cell = &*self.cell;
        self.dest()?;
        cell.check_accepts(Req::message_type(), Req::type_name())?;
        let ticket = loop {
            if let Some(t) = cell.replies.claim() {
                break t;
            }
            tokio::task::yield_now().await;
        };
        let mut guard = CallGuard { cell, ticket, done: false };
        self.push_wait(&req, ticket.correlation_id()).await?;
        // After the first microseconds the wait gives the core away on each turn: on a small
        // machine the worker running the kernel may share this core, and a pure spin would keep
        // it off until this thread parks (docs/10: this was the round trip's p99 tail). Past the
        // yield phase the task parks on the reply's waker.
        let mut wait = Backoff::CALL_WAIT.waiter();
        let bytes = loop {
            if let core::task::Poll::Ready(b) = cell.replies.poll_take(ticket, None) {
                break b;
            }
            if wait.snooze().is_some() {
                break poll_fn(|cx| cell.replies.poll_take(ticket, Some(cx))).await;
            }
        };
        guard.done = true;
        let (header, payload) = decode_header(&bytes)?;
        // Replies and error replies alike: the host has now seen the kernel's clock.
        self.dir.host_clock.observe_trusted(header.hlc);
        if header.flags & FLAG_ERROR_REPLY != 0 {
            let detail = String::from_utf8_lossy(payload).into_owned();
            return Err(if header.flags & FLAG_KERNEL_FAILED != 0 {
                Error::KernelFailed { kernel: cell.name().to_string(), detail }
            } else {
                Error::Handler { kernel: cell.name().to_string(), detail }
            });
        }
        if header.type_id != Resp::message_type() {
            return Err(Error::UnexpectedMessage {
                expected: Resp::type_name(),
                message: Box::new(RawMessage { header, payload: payload.to_vec() }),
            });
        }
        debug_assert!(bytes.len() >= ENVELOPE_HEADER_SIZE);
        Ok(Resp::decode_payload(payload)?)
    }
}
