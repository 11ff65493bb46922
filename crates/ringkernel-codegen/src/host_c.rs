//! The host C target, for the CUDA backend's host emulation: [`HostC`], the C-family dialect
//! whose device primitives are GCC/Clang atomics on host memory, `clock_gettime` and a
//! yield-then-sleep back-off, so [`c_family::emit_kernel::<HostC>`] compiles as C11 with the
//! host compiler and each kernel runs on a host thread. Everything but the primitives is the
//! text [`crate::cuda::CudaC`] generates for the GPU.
//!
//! [`c_family::emit_kernel::<HostC>`]: crate::c_family::emit_kernel

use crate::c_family::CDialect;
use crate::cuda::CudaTarget;
use crate::program::Program;

/// The host C dialect (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostC;

impl CDialect for HostC {
    const PRIMITIVES: &'static str = include_str!("host_c/primitives.h");
}

impl Program<CudaTarget> {
    /// The complete generated source for the CUDA backend's host emulation: the same kernel as
    /// [`Program::cuda_source`], as host C (cached).
    pub fn host_c_source(&self) -> Result<&str, String> {
        self.target
            .host_c
            .get_or_init(|| CudaTarget::generate::<HostC>(self))
            .as_deref()
            .map_err(Clone::clone)
    }
}
