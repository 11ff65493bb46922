//! RingKernel: a GPU-native persistent actor framework.
//!
//! Kernels are long-lived actors: each keeps its state resident (on the device, or on the CPU
//! backend in host memory), takes messages from a lock-free input queue, answers the host through
//! an output queue or request/reply, and messages other kernels directly (K2K). Every message
//! carries a hybrid logical clock timestamp, so causal order holds across kernels.
//!
//! ```no_run
//! use ringkernel::prelude::*;
//!
//! #[tokio::main]
//! async fn main() -> Result<()> {
//!     let runtime = RingKernel::builder().backend(Backend::Auto).build().await?;
//!     let kernel = runtime.launch("my_kernel", LaunchOptions::default()).await?;
//!     println!("Kernel state: {:?}", kernel.status().state);
//!     kernel.terminate().await?;
//!     runtime.shutdown().await?;
//!     Ok(())
//! }
//! ```
//!
//! This crate is the facade: it re-exports `ringkernel-core` (types, queues, HLC, runtime pieces),
//! `ringkernel-derive` (macros) and chooses a backend. Backends are Cargo features (`cuda`, `wgpu`,
//! `metal`); the CPU backend is always present.

mod builder;

pub use builder::{RingKernel, RuntimeBuilder};
pub use ringkernel_core::{control_block, hlc, message, queue};
pub use ringkernel_core::{
    ControlBlock, Error, HlcClock, HlcTimestamp, KernelId, MessageId, Result, RingMessage,
};
pub use ringkernel_derive::{ring_kernel, RingMessage};

/// The runtime: [`RingKernel`], and the kernel definitions, handles, lifecycle and options of
/// `ringkernel-core`.
pub mod runtime {
    pub use crate::builder::{RingKernel, RuntimeBuilder};
    pub use ringkernel_core::runtime::*;
}

/// The CPU backend's tuning knobs.
pub use ringkernel_cpu::CpuConfig;

#[doc(hidden)]
pub mod __private {
    pub use ringkernel_core::__private::*;
}

/// Everything a typical program needs: `use ringkernel::prelude::*;`.
pub mod prelude {
    pub use crate::builder::{RingKernel, RuntimeBuilder};
    pub use ringkernel_core::control_block::ControlBlock;
    pub use ringkernel_core::hlc::{HlcClock, HlcTimestamp};
    pub use ringkernel_core::message::{KernelId, MessageId, RingMessage};
    pub use ringkernel_core::runtime::{
        Backend, Context, KernelDef, KernelHandle, KernelState, KernelStatus, LaunchOptions, RawMessage,
        RestartPolicy, TerminateReport, TrySendError,
    };
    pub use ringkernel_core::{Error, Result};
    pub use ringkernel_derive::{ring_kernel, RingMessage};
}
