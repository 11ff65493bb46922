//! The CPU backend as the runtime sees it: its [`Backend`] implementation and its provider. The
//! runtime always opens it and places on it every kernel no GPU backend can run.

use crate::{CpuBackend, CpuConfig};
use ringkernel_core::backend::{Backend, BackendKind, BackendProvider, Directory, KernelCell, OpenRequest};
use ringkernel_core::runtime::KernelDef;
use ringkernel_core::Result;
use std::sync::Arc;

/// The provider of `Backend::Cpu` (always present).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuProvider;

/// The `Backend::Cpu` provider.
pub static PROVIDER: CpuProvider = CpuProvider;

impl BackendProvider for CpuProvider {
    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }

    fn probe(&self) -> core::result::Result<(), String> {
        Ok(())
    }

    fn open(&self, request: &OpenRequest<'_>) -> core::result::Result<Arc<dyn Backend>, String> {
        let config = request.config::<CpuConfig>().unwrap_or_default();
        CpuBackend::new(config)
            .map(|b| Arc::new(b) as Arc<dyn Backend>)
            .map_err(|e| format!("cannot start worker threads: {e}"))
    }
}

impl Backend for CpuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }

    fn runs_groups(&self) -> bool {
        true
    }

    fn device(&self) -> String {
        format!("{} CPU worker threads", self.workers())
    }

    /// Kernels with CPU handlers, and kernels with neither handlers nor programs (mailboxes).
    fn can_run(&self, def: Option<&KernelDef>) -> bool {
        def.is_none_or(|d| d.has_cpu_handlers() || d.gpu_backends().is_empty())
    }

    fn attach(
        &self,
        cell: &Arc<KernelCell>,
        def: Option<&Arc<KernelDef>>,
        dir: &Arc<Directory>,
    ) -> Result<()> {
        CpuBackend::attach(self, cell, def, dir);
        Ok(())
    }

    fn shutdown(&self) {
        CpuBackend::shutdown(self);
    }

    fn as_any(&self) -> &dyn core::any::Any {
        self
    }
}
