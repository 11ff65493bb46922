//! RingKernel: a GPU-native persistent actor framework.
//!
//! Kernels are long-lived actors: each keeps its state resident (on the device, or on the CPU
//! backend in host memory), takes messages from a lock-free input queue, answers the host through
//! an output queue or request/reply, and messages other kernels directly (K2K). Every message
//! carries a hybrid logical clock timestamp, so causal order holds across kernels.
//!
//! ```
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
//! Hybrid logical clocks give a total order that respects causality:
//!
//! ```
//! use ringkernel::prelude::*;
//!
//! let clock = HlcClock::new(1); // Node ID = 1
//!
//! // Generate timestamps
//! let ts1 = clock.tick();
//! let ts2 = clock.tick();
//! assert!(ts1 < ts2); // Total ordering guaranteed
//!
//! // Update from received message
//! let remote_ts = HlcTimestamp::new(100, 5, 2);
//! let updated = clock.update(&remote_ts)?;
//! assert!(updated > remote_ts); // Causality preserved
//! # Ok::<(), ringkernel::Error>(())
//! ```
//!
//! Each kernel has a 128-byte control block, the same bytes on the host and on a device:
//!
//! ```
//! use ringkernel::prelude::*;
//!
//! let control = ControlBlock::with_capacities(1024, 1024);
//! assert!(!control.is_active());
//! assert!(control.input_queue_empty());
//! ```
//!
//! This crate is the facade: it re-exports `ringkernel-core` (types, queues, HLC, runtime pieces),
//! `ringkernel-derive` (macros) and places kernels on backends. Backends are Cargo features
//! (`cuda`, `wgpu`, `metal`); the CPU backend is always present.

mod builder;

pub use builder::{RingKernel, RuntimeBuilder};
pub use ringkernel_core::{control_block, gpu, hlc, message, queue};
pub use ringkernel_core::{
    ControlBlock, DeviceError, DeviceErrorKind, Error, HlcClock, HlcTimestamp, KernelId, MessageId, Result,
    RingMessage,
};
pub use ringkernel_derive::{ring_kernel, GpuType, RingMessage};

/// The runtime: [`RingKernel`], and the kernel definitions, handles, lifecycle and options users
/// work with. What backends need (kernel cells, executors, doorbells) is in [`backend`].
pub mod runtime {
    pub use crate::builder::{RingKernel, RuntimeBuilder};
    #[doc(hidden)]
    pub use ringkernel_core::runtime::inventory;
    pub use ringkernel_core::runtime::{
        payload_check, Backend, Context, DispatchError, ErrorReply, GpuProgram, HandlerError, HandlerOutput,
        InstanceHandle, KernelCatalog, KernelDef, KernelGroup, KernelHandle, KernelRegistration, KernelState,
        KernelStatus, LaunchOptions, PayloadCheck, Placement, RawMessage, Received, ReceivedMeta,
        RestartPolicy, Target, TerminateReport, TrySendError, DEFAULT_QUEUE_CAPACITY, MAX_MESSAGE_BYTES,
        MAX_PENDING_CALLS,
    };
}

/// For backend authors: the [`backend::Backend`] and [`backend::BackendProvider`] traits and the
/// shared pieces a backend serves kernels with. Add a backend to a runtime with
/// [`RuntimeBuilder::provider`]; docs/02-crate-structure.md shows the steps.
pub mod backend {
    pub use ringkernel_core::backend::*;
}

/// The CPU backend's tuning knobs.
pub use ringkernel_cpu::CpuConfig;
/// The CUDA backend's public types ([`cuda::CudaProgram`], [`cuda::CudaConfig`]).
#[cfg(feature = "cuda")]
pub use ringkernel_cuda as cuda;
/// The Metal backend ([`metal::translate_msl`]; kernels carry a `WgslProgram`).
#[cfg(feature = "metal")]
pub use ringkernel_metal as metal;
/// The wgpu backend's public types ([`wgpu::WgslProgram`], [`wgpu::WgpuConfig`]).
#[cfg(feature = "wgpu")]
pub use ringkernel_wgpu as wgpu;

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
        Backend, Context, InstanceHandle, KernelDef, KernelGroup, KernelHandle, KernelState, KernelStatus,
        LaunchOptions, RawMessage, Received, RestartPolicy, Target, TerminateReport, TrySendError,
    };
    pub use ringkernel_core::{Error, Result};
    pub use ringkernel_derive::{ring_kernel, GpuType, RingMessage};
}
