//! The device-agent skeleton: the host side of a GPU backend, written once.
//!
//! A GPU backend (wgpu, CUDA) runs its kernels' handlers on the device, and one host thread per
//! runtime, the *agent*, does everything else: it moves messages between the host's queues and
//! the device, routes what the kernels write, and carries out the lifecycle (failures, restarts,
//! termination, device loss, shutdown). This module holds every part of that which does not
//! depend on the device:
//!
//! * [`Agent`] (`thread.rs`): the thread (spawned with a name, the loop, the `pending` wake flag,
//!   shutdown and join, a panic guard around every round), the hand-off of newly attached kernels,
//!   and the idle waiting, through the backend's [`Backoff`](crate::backoff::Backoff) policies.
//! * The doorbell (`doorbell.rs`): marks a kernel's record dirty, runs the backend's optional
//!   [`BellHook`] (CUDA mirrors lifecycle flags into the device's `ctl` word synchronously), and
//!   wakes the thread.
//! * [`Record`] and [`Kernels`] (`record.rs`): one kernel as the agent sees it, with its lifecycle
//!   [`Phase`], and the set of them in launch order.
//! * Routing (`route.rs`): one output envelope a device kernel wrote, to the waiting call, the
//!   host output queue or another kernel, through the record's cached targets.
//! * Failures and endings (`lifecycle.rs`): handler failure and the restart policy, device loss,
//!   the two-strike rule for a panicking agent, terminate completion, and what comes back to the
//!   host from a kernel that will not handle it.
//!
//! A backend implements [`DeviceStep`] (`step.rs`) with its device step only: the wgpu backend's
//! upload/dispatch/read-back rounds, the CUDA backend's counter and output polling and its route
//! linking protocol.

mod doorbell;
mod lifecycle;
mod record;
mod route;
mod step;
mod thread;

pub use doorbell::BellHook;
pub use record::{Kernels, Phase, Record};
pub use step::{Busy, DeviceStep, Ending};
pub use thread::Agent;

#[cfg(all(test, not(ringkernel_loom)))]
mod tests;
