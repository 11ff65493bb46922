//! Backend-neutral runtime pieces: kernel definitions, lifecycle, the shared per-kernel cell,
//! reply routing, the host-side handle, and the host-thread message loop.
//!
//! A backend provides two things on top of these: somewhere for the kernel's handlers to run
//! (CPU worker threads, a persistent GPU kernel, event-driven dispatches) and a [`Doorbell`] that
//! gets it running when work arrives. Everything the host does (send, receive, call, lifecycle)
//! goes through [`KernelHandle`] and the shared [`KernelCell`], so it is the same on every backend.

mod accepts;
mod cell;
mod context;
mod definition;
mod envelope;
mod exec;
pub(crate) mod failure;
mod group;
mod group_exec;
mod handle;
mod ingress;
mod options;
mod reply;
mod state;

pub use accepts::{payload_check, AcceptedTypes, PayloadCheck};
pub use cell::{Directory, Doorbell, InputPush, KernelCell, Waiters};
pub use context::{Context, ExecLocal, Target};
#[doc(hidden)]
pub use definition::inventory;
pub use definition::{
    BoxedState, DispatchError, GpuProgram, HandlerEntry, HandlerError, HandlerOutput, KernelCatalog,
    KernelDef, KernelRegistration,
};
pub use envelope::{ErrorReply, RawMessage};
pub use exec::{HostExecutor, RunOutcome};
pub use group::{InstanceHandle, KernelGroup};
pub use group_exec::GroupExecutor;
pub use handle::{KernelHandle, KernelStatus, Received, ReceivedMeta, TerminateReport, TrySendError};
pub use options::{
    Backend, LaunchOptions, Placement, RestartPolicy, DEFAULT_QUEUE_CAPACITY, MAX_MESSAGE_BYTES,
    MAX_PENDING_CALLS,
};
pub use reply::{Delivery, ReplyTable, Ticket};
pub use state::KernelState;

/// Re-exported from [`crate::backoff`], where the policies that use it are.
pub use crate::backoff::SPIN_BEFORE_YIELD;
