//! RingKernel's Apple Metal backend: the crate that will hold event-driven GPU-resident kernels on
//! macOS and iOS, sharing the core crate's queue and envelope layout through MSL declarations.
//!
//! **Status: not implemented.** [`probe`] says so, so `Backend::Metal` is a clear error and
//! `Backend::Auto` falls back to the CPU.

/// Why this backend cannot be used in this build.
pub fn probe() -> Result<(), String> {
    Err("the Metal backend is not implemented in this build of RingKernel".to_string())
}
