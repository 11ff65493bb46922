//! RingKernel's WebGPU backend (wgpu): GPU-resident kernels whose handlers are WGSL, whose state
//! and queues stay in device memory between messages, and which message each other on the
//! device (K2K) with hybrid logical clocks advanced on the device.
//!
//! * [`WgslProgram`]: a kernel's WGSL handlers plus the Rust types they use; `ringkernel-codegen`
//!   generates everything else (structs, queue access, sends, the clock, the dispatch loop).
//! * [`WgpuBackend`]: the device, its memory and the dispatcher (event-driven rounds: one
//!   submission handles everything queued; see the `backend` module docs).
//! * [`probe`]: whether a usable adapter exists, without opening a device.
//!
//! The design, the memory layout and its limits are described in `docs/05-gpu-backends.md`.

mod backend;
mod device;
#[cfg(feature = "msl")]
mod msl;
mod program;
mod provider;

pub use backend::{probe_adapter, WgpuBackend, WgpuConfig};
pub use device::NATIVE_APIS;
#[cfg(feature = "msl")]
pub use msl::{msl_checked, translate_msl};
pub use program::WgslProgram;
pub use provider::{open_backend, WgpuProvider, PROVIDER};

/// Whether this machine has an adapter the backend can use; software adapters count only when
/// `RINGKERNEL_WGPU_ALLOW_SOFTWARE=1` (the rule `Backend::Auto` applies).
pub fn probe() -> Result<(), String> {
    probe_adapter(allow_software_from_env(), device::NATIVE_APIS).map(|_| ())
}

/// `RINGKERNEL_WGPU_ALLOW_SOFTWARE=1`.
#[must_use]
pub fn allow_software_from_env() -> bool {
    std::env::var("RINGKERNEL_WGPU_ALLOW_SOFTWARE").as_deref() == Ok("1")
}

/// The `wgpu` crate this backend is built on (for code that also uses wgpu directly, such as the
/// naive-dispatch baseline in RingKernel's benches).
pub use wgpu;
