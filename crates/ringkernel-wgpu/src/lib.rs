//! RingKernel's WebGPU backend (wgpu): the crate that will hold event-driven GPU-resident kernels
//! whose state and queues live in storage buffers between dispatches, with WGSL handlers written
//! against generated declarations.
//!
//! **Status: not implemented.** [`probe`] says so, so `Backend::Wgpu` is a clear error and
//! `Backend::Auto` falls back to the CPU.

/// Why this backend cannot be used in this build.
pub fn probe() -> Result<(), String> {
    Err("the wgpu backend is not implemented in this build of RingKernel".to_string())
}
