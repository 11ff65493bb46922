//! Core of RingKernel: the types that the host and every backend (CPU, CUDA, WebGPU, Metal) share
//! byte for byte, and the backend-neutral parts of the runtime.
//!
//! * [`hlc`]: hybrid logical clocks packed into a `u64` (lock-free `tick`/`update`).
//! * [`admission`]: the send ↔ terminate handshake of a kernel's input queue.
//! * [`control_block`]: the 128-byte per-kernel control block and its memory-ordering contract.
//! * [`queue`]: bounded lock-free ring queues (SPSC typed ring; MPMC byte-slot ring) with a layout
//!   that can live in host, pinned or device memory.
//! * [`message`]: the 64-byte envelope header, [`message::RingMessage`], and the plain-data and
//!   rkyv payload codecs.
//! * [`gpu`]: the 32-bit word layout that GPU code (WGSL) sees for messages and kernel state.
//! * [`backend`]: the interface a backend implements ([`backend::Backend`], [`backend::BackendProvider`]).
//! * [`ready`]: the ready mark that puts an actor with work on exactly one run queue.
//! * [`runtime`]: kernel definitions, lifecycle states, reply routing and the host-side kernel
//!   handle that every backend shares.
//! * [`agent`]: the device-agent skeleton GPU backends run their kernels' host side on (thread,
//!   doorbell, per-kernel records, routing, failures, termination).
//! * [`backoff`]: the one spin/yield/park policy type every waiting loop uses.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod admission;
pub mod agent;
pub mod backend;
pub mod backoff;
pub mod control_block;
pub mod error;
pub mod gpu;
pub mod hlc;
pub mod message;
pub mod queue;
pub mod ready;
pub mod runtime;
mod sync;

pub use control_block::ControlBlock;
pub use error::{DeviceError, DeviceErrorKind, Error, Result};
pub use hlc::{HlcClock, HlcTimestamp};
pub use message::{KernelId, MessageId, RingMessage};

#[doc(hidden)]
pub mod __private {
    pub use rkyv;
    pub use zerocopy;
}
