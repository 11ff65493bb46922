//! The wgpu backend as the runtime sees it: its [`Backend`] implementation, and the provider of
//! `Backend::Wgpu`. The Metal backend (`ringkernel-metal`) is this same backend on wgpu's Metal
//! API, opened through [`open_backend`] with its own [`BackendKind`].

use crate::backend::{WgpuBackend, WgpuConfig};
use crate::program::WgslProgram;
use ringkernel_core::backend::{Backend, BackendKind, BackendProvider, Directory, KernelCell, OpenRequest};
use ringkernel_core::runtime::KernelDef;
use ringkernel_core::Result;
use std::sync::Arc;

/// The provider of `Backend::Wgpu` (the facade lists it under the `wgpu` feature).
#[derive(Debug, Clone, Copy, Default)]
pub struct WgpuProvider;

/// The `Backend::Wgpu` provider.
pub static PROVIDER: WgpuProvider = WgpuProvider;

impl BackendProvider for WgpuProvider {
    fn kind(&self) -> BackendKind {
        BackendKind::Wgpu
    }

    fn probe(&self) -> core::result::Result<(), String> {
        crate::probe()
    }

    fn open(&self, request: &OpenRequest<'_>) -> core::result::Result<Arc<dyn Backend>, String> {
        let mut config = request.config::<WgpuConfig>().unwrap_or_default();
        // An explicit Backend::Wgpu accepts a software adapter (lavapipe in CI); Auto only when
        // the environment allows it, since a software adapter is slower than the CPU backend.
        config.allow_software = request.explicit || crate::allow_software_from_env();
        open_backend(BackendKind::Wgpu, config)
    }
}

/// Opens a wgpu backend that reports itself as `kind` (`Wgpu`, or `Metal` for the Metal
/// backend, which restricts `config.apis` to Metal).
pub fn open_backend(kind: BackendKind, config: WgpuConfig) -> core::result::Result<Arc<dyn Backend>, String> {
    Ok(Arc::new(Opened { kind, backend: WgpuBackend::new(config)? }))
}

/// An opened wgpu backend and the kind it reports.
struct Opened {
    kind: BackendKind,
    backend: WgpuBackend,
}

impl Backend for Opened {
    fn kind(&self) -> BackendKind {
        self.kind
    }

    fn device(&self) -> String {
        self.backend.adapter()
    }

    fn can_run(&self, def: Option<&KernelDef>) -> bool {
        def.is_some_and(|d| d.gpu_program::<WgslProgram>().is_some())
    }

    fn attach(
        &self,
        cell: &Arc<KernelCell>,
        def: Option<&Arc<KernelDef>>,
        dir: &Arc<Directory>,
    ) -> Result<()> {
        self.backend.attach(cell, def, dir)
    }

    fn shutdown(&self) {
        self.backend.shutdown();
    }

    fn as_any(&self) -> &dyn core::any::Any {
        &self.backend
    }
}
