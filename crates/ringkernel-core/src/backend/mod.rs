//! The interface between the runtime and a backend, for people who write backends.
//!
//! Users never need this module: they pick a backend with [`crate::runtime::Backend`] and talk to
//! kernels through handles. A backend author implements two traits:
//!
//! * [`BackendProvider`]: a zero-sized value the facade lists, one line per Cargo feature, in
//!   priority order. It says which [`BackendKind`] it provides, whether it can be used on this
//!   machine ([`BackendProvider::probe`], cheap, never panics) and opens the backend
//!   ([`BackendProvider::open`]) with the configuration the user gave the runtime builder.
//! * [`Backend`]: the opened backend. The runtime asks it whether it can run a kernel definition,
//!   where the kernel's input queue must live, attaches and detaches kernels, takes state
//!   snapshots, and shuts it down. It is object-safe: the runtime holds `Arc<dyn Backend>`s and
//!   places each kernel on the first one that can run it, the CPU backend last.
//!
//! Everything a backend needs to serve a kernel is re-exported here: the shared per-kernel
//! [`KernelCell`] (queues, control block, reply table, lifecycle), the [`Directory`] of live
//! kernels, the [`Doorbell`] a backend installs to be woken, the CPU executors ([`HostExecutor`],
//! [`ExecLocal`]; [`GroupExecutor`] and the [`ready`] mark for kernel groups), the device-agent skeleton a GPU backend implements its device step in
//! ([`agent`]: thread, doorbell, per-kernel records, output routing, failures, terminate), and
//! the waiting policies ([`backoff`]).
//! docs/02-crate-structure.md shows, step by step, how to add a backend.

mod interface;
mod provider;

pub use crate::runtime::Backend as BackendKind;
pub use crate::runtime::{
    AcceptedTypes, Directory, Doorbell, ExecLocal, GroupExecutor, HostExecutor, InputPush, KernelCell,
    RunOutcome, Waiters,
};
pub use crate::{agent, backoff, ready};
pub use interface::Backend;
pub use provider::{BackendConfigs, BackendProvider, OpenRequest};
