//! The host's handles on a kernel group: [`KernelGroup`] (the group: lifecycle, status, its one
//! output queue) and [`InstanceHandle`] (one instance: send, call).
//!
//! A group is `n` instances of one kernel definition launched in one call
//! (`RingKernel::launch_group`). Each instance has its own state and mailbox and its own id
//! (the group's first id plus its index); handlers address it as `("name", index)` or by id, and
//! learn their own index from `Context::instance`. What the instances emit goes to the group's
//! single output queue; [`ReceivedMeta::source`] says which instance wrote it
//! ([`KernelGroup::index_of`] turns it into an index). `call` replies go straight to the caller.

use super::handle::{KernelHandle, KernelStatus, Received, TerminateReport, TrySendError};
use super::ReceivedMeta;
use crate::message::{KernelId, RingMessage};
use crate::Result;
use std::time::Duration;

/// The host's handle on a kernel group (see the [module docs](self)). Cheap to clone.
#[derive(Clone, Debug)]
pub struct KernelGroup {
    handle: KernelHandle,
}

impl KernelGroup {
    /// Wraps the handle of a group's cell (used by runtimes).
    pub fn new(handle: KernelHandle) -> Self {
        Self { handle }
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        self.handle.name()
    }

    /// Number of instances.
    pub fn len(&self) -> u32 {
        self.handle.cell().instances()
    }

    /// Whether the group has no instance (never: a group has at least one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id of instance `index` (instance ids are consecutive from the group's first id).
    pub fn id_of(&self, index: u32) -> Option<KernelId> {
        (index < self.len()).then(|| self.handle.cell().instance_id(index))
    }

    /// The index of the instance with id `id` (for example a received message's source).
    pub fn index_of(&self, id: KernelId) -> Option<u32> {
        self.handle.cell().instance_of(id)
    }

    /// A handle on instance `index`; [`crate::Error::NoSuchInstance`] past the last one.
    pub fn instance(&self, index: u32) -> Result<InstanceHandle> {
        Ok(InstanceHandle { handle: self.handle.for_instance(index)?, index })
    }

    /// The group's status: lifecycle, counters summed over its instances, the output queue.
    pub fn status(&self) -> KernelStatus {
        self.handle.status()
    }

    /// Starts (or resumes) every instance.
    pub async fn activate(&self) -> Result<()> {
        self.handle.activate().await
    }

    /// Stops every instance from taking input; queued messages stay in their mailboxes.
    pub async fn deactivate(&self) -> Result<()> {
        self.handle.deactivate().await
    }

    /// Drains every instance's mailbox and stops the group (see `KernelHandle::terminate`).
    pub async fn terminate(&self) -> Result<TerminateReport> {
        self.handle.terminate().await
    }

    /// Takes the next message any instance emitted, if there is one.
    pub fn try_receive<M: RingMessage>(&self) -> Result<Option<M>> {
        self.handle.try_receive()
    }

    /// Like [`KernelGroup::try_receive`], with the envelope's metadata (its `source` names the
    /// instance).
    pub fn try_receive_envelope<M: RingMessage>(&self) -> Result<Option<Received<M>>> {
        self.handle.try_receive_envelope()
    }

    /// Takes the next message any instance emitted, waiting for one.
    pub async fn receive<M: RingMessage>(&self) -> Result<M> {
        self.handle.receive().await
    }

    /// Like [`KernelGroup::receive`], with the envelope's metadata.
    pub async fn receive_envelope<M: RingMessage>(&self) -> Result<Received<M>> {
        self.handle.receive_envelope().await
    }

    /// The index of the instance that wrote a received message.
    pub fn source_index(&self, meta: &ReceivedMeta) -> Option<u32> {
        self.index_of(meta.source)
    }

    /// The handle of the group's cell (for backends and tests).
    #[doc(hidden)]
    pub fn handle(&self) -> &KernelHandle {
        &self.handle
    }
}

/// The host's handle on one instance of a kernel group: sends and calls go to its mailbox.
#[derive(Clone, Debug)]
pub struct InstanceHandle {
    handle: KernelHandle,
    index: u32,
}

impl InstanceHandle {
    /// The instance's index in its group.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The instance's id.
    pub fn id(&self) -> KernelId {
        self.handle.cell().instance_id(self.index)
    }

    /// Sends `msg`, waiting while the instance's mailbox is full (backpressure).
    pub async fn send<M: RingMessage>(&self, msg: M) -> Result<()> {
        self.handle.send(msg).await
    }

    /// Sends `msg` without waiting; a full mailbox or a refusal hands the message back.
    pub fn try_send<M: RingMessage>(&self, msg: M) -> Result<(), TrySendError<M>> {
        self.handle.try_send(msg)
    }

    /// Sends a request to this instance and waits for its reply.
    pub async fn call<Req: RingMessage, Resp: RingMessage>(&self, req: Req) -> Result<Resp> {
        self.handle.call(req).await
    }

    /// [`InstanceHandle::call`] with an explicit timeout.
    pub async fn call_timeout<Req: RingMessage, Resp: RingMessage>(
        &self,
        req: Req,
        timeout: Duration,
    ) -> Result<Resp> {
        self.handle.call_timeout(req, timeout).await
    }

    /// Queues raw envelope bytes for this instance after the ingress rules (see
    /// `KernelHandle::try_send_bytes`; the destination must be 0 or this instance's id).
    pub fn try_send_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.handle.try_send_bytes(bytes)
    }

    /// [`InstanceHandle::try_send_bytes`], waiting while the mailbox is full.
    pub async fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.handle.send_bytes(bytes).await
    }
}
