//! The CUDA backend as the runtime sees it: its [`Backend`] implementation and the provider of
//! `Backend::Cuda`.

use crate::backend::{CudaBackend, CudaConfig};
use crate::program::CudaProgram;
use ringkernel_core::backend::{Backend, BackendKind, BackendProvider, Directory, KernelCell, OpenRequest};
use ringkernel_core::queue::SlotRing;
use ringkernel_core::runtime::{KernelDef, LaunchOptions};
use ringkernel_core::Result;
use std::sync::Arc;

/// The provider of `Backend::Cuda` (the facade lists it under the `cuda` feature).
#[derive(Debug, Clone, Copy, Default)]
pub struct CudaProvider;

/// The `Backend::Cuda` provider.
pub static PROVIDER: CudaProvider = CudaProvider;

impl BackendProvider for CudaProvider {
    fn kind(&self) -> BackendKind {
        BackendKind::Cuda
    }

    fn probe(&self) -> core::result::Result<(), String> {
        crate::probe()
    }

    fn open(&self, request: &OpenRequest<'_>) -> core::result::Result<Arc<dyn Backend>, String> {
        // Without a configuration, an explicit Backend::Cuda may ask for the host emulation
        // through RINGKERNEL_CUDA_EMULATE=1; Backend::Auto never picks the emulation.
        let config = match request.config::<CudaConfig>() {
            Some(c) => c,
            None if request.explicit => CudaConfig::from_env(),
            None => CudaConfig::default(),
        };
        Ok(Arc::new(CudaBackend::new(config)?))
    }
}

impl Backend for CudaBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Cuda
    }

    fn device(&self) -> String {
        CudaBackend::device(self)
    }

    fn can_run(&self, def: Option<&KernelDef>) -> bool {
        def.is_some_and(|d| d.gpu_program::<CudaProgram>().is_some())
    }

    fn input_ring(&self, options: &LaunchOptions) -> Result<Option<SlotRing>> {
        CudaBackend::input_ring(self, options).map(Some)
    }

    fn runs_groups(&self) -> bool {
        true
    }

    fn group_ingress(&self, options: &LaunchOptions, _instances: u32) -> Result<Option<SlotRing>> {
        CudaBackend::group_ingress(self, options).map(Some)
    }

    fn attach(
        &self,
        cell: &Arc<KernelCell>,
        def: Option<&Arc<KernelDef>>,
        dir: &Arc<Directory>,
    ) -> Result<()> {
        CudaBackend::attach(self, cell, def, dir)
    }

    fn state_snapshot(&self, cell: &KernelCell) -> Result<Vec<u32>> {
        self.state_words(cell.id())
    }

    fn shutdown(&self) {
        CudaBackend::shutdown(self);
    }

    fn as_any(&self) -> &dyn core::any::Any {
        self
    }
}
