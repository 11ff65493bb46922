//! The CUDA C target, for the CUDA backend: [`CudaC`], the C-family dialect whose device
//! primitives are CUDA's (system-scope PTX loads and stores, `atomicCAS_system`,
//! `%globaltimer`, `__nanosleep`), so [`c_family::emit_kernel::<CudaC>`] is the source NVRTC
//! compiles; and [`CudaTarget`], what a `CudaProgram` (`Program<CudaTarget>`) adds to the shared
//! program: its error texts and its generated sources (this one for the GPU, the host C one of
//! [`crate::host_c`] for the host emulation).
//!
//! The parameter block, lifecycle bits and routes of a CUDA kernel are the C-family protocol's
//! ([`crate::c_family`]), re-exported here for the CUDA backend.
//!
//! [`c_family::emit_kernel::<CudaC>`]: crate::c_family::emit_kernel

use crate::c_family::{self, CDialect, CKernelSpec};
pub use crate::c_family::{ctl, KernelParams, RouteEntry, MAX_ROUTES, ROUTE_BASE};
use crate::err;
use crate::program::{Program, ProgramTarget};
use std::sync::OnceLock;

/// The CUDA C dialect (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct CudaC;

impl CDialect for CudaC {
    const PRIMITIVES: &'static str = include_str!("cuda/primitives.cuh");
}

/// The CUDA target of a program (`CudaProgram` = `Program<CudaTarget>`): its generated sources.
#[derive(Debug, Default)]
pub struct CudaTarget {
    cuda: OnceLock<Result<String, String>>,
    pub(crate) host_c: OnceLock<Result<String, String>>,
}

impl CudaTarget {
    /// Generates the program's kernel for C-family dialect `D`.
    pub(crate) fn generate<D: CDialect>(program: &Program<Self>) -> Result<String, String> {
        let routes = program.spec.routes().len();
        if routes > MAX_ROUTES {
            return Err(format!("{routes} routes; a CUDA kernel has at most {MAX_ROUTES}"));
        }
        let spec = CKernelSpec { types: program.spec.types(), user_source: &program.source };
        c_family::emit_kernel::<D>(&spec).map_err(|e| e.to_string())
    }
}

impl ProgramTarget for CudaTarget {
    const BACKEND: ringkernel_core::runtime::Backend = ringkernel_core::runtime::Backend::Cuda;
    const PROGRAM: &'static str = "CudaProgram";
    const LANGUAGE: &'static str = "CUDA";

    fn describe_error(&self, code: u32) -> String {
        match code {
            err::MALFORMED => {
                "malformed message (not a valid envelope, or a slice lies outside the payload)".into()
            }
            err::TOO_MANY_SENDS => "rk_send_* was given a route index the program does not declare".into(),
            err::EXITING => "a send waited for room while the host told the kernel to exit".into(),
            c => format!("CUDA handler error code {c}"),
        }
    }
}

impl Program<CudaTarget> {
    /// The initial state as the device holds it: the C state struct's natural layout
    /// ([`crate::types::GpuTypeDesc::natural_layout`]), as little-endian words.
    #[must_use]
    pub fn device_state(&self) -> Vec<u32> {
        self.spec.types().state.words_to_natural(self.init_state())
    }

    /// The GPU word layout of state words read from the device (a snapshot).
    #[must_use]
    pub fn state_from_device(&self, natural: &[u32]) -> Vec<u32> {
        self.spec.types().state.natural_to_words(natural)
    }

    /// The complete generated CUDA C source, as NVRTC compiles it (cached).
    pub fn cuda_source(&self) -> Result<&str, String> {
        self.target.cuda.get_or_init(|| CudaTarget::generate::<CudaC>(self)).as_deref().map_err(Clone::clone)
    }
}
