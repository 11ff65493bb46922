//! RingKernel's NVIDIA CUDA backend: the crate that will hold true persistent kernels (launched
//! once, polling device-side queues in mapped pinned memory, K2K between resident kernels, HLC on
//! `%globaltimer`), loaded through cudarc with dynamic loading.
//!
//! **Status: not implemented.** Nothing in this crate launches GPU code yet. [`probe`] reports
//! that honestly, so `Backend::Cuda` is a clear error and `Backend::Auto` falls back to the CPU.

/// Why this backend cannot be used in this build.
pub fn probe() -> Result<(), String> {
    Err("the CUDA backend is not implemented in this build of RingKernel".to_string())
}
