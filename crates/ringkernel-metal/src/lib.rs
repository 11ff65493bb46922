//! RingKernel's Apple Metal backend: `Backend::Metal` runs the wgpu backend's kernels on Apple
//! GPUs through wgpu's Metal API.
//!
//! A kernel for Metal carries the same `WgslProgram` as for `Backend::Wgpu`: wgpu hands the
//! generated WGSL to naga, which translates it to the Metal Shading Language (MSL) when the
//! pipeline is created. Queues, state, dispatch rounds and K2K are the wgpu backend's (see
//! `ringkernel_wgpu`); this crate restricts adapter selection to Metal and reports the backend as
//! `Backend::Metal`, with `RingKernel::adapter()` naming the Metal device. Its tuning is
//! `ringkernel_wgpu::WgpuConfig` (the graphics APIs are forced to Metal).
//!
//! On systems other than macOS and iOS, [`MetalProvider`] answers that Metal is unavailable and
//! why, so an explicit `Backend::Metal` is `Error::BackendUnavailable` and `Backend::Auto` moves
//! on. What can be checked without Apple hardware is the translation: [`translate_msl`] produces
//! the MSL naga would give the Metal driver for a program, and with `RINGKERNEL_CHECK_MSL=1`
//! every pipeline the wgpu backend creates is translated too (CI does this for every test
//! kernel). The backend has not run on Apple hardware yet (docs/05-gpu-backends.md).

use ringkernel_core::backend::{Backend, BackendKind, BackendProvider, OpenRequest};
use ringkernel_wgpu::{wgpu, WgpuConfig};
use std::sync::Arc;

pub use ringkernel_wgpu::translate_msl;

/// Whether this build targets an Apple system, where Metal exists.
const APPLE: bool = cfg!(any(target_os = "macos", target_os = "ios"));

/// The provider of `Backend::Metal` (the facade lists it under the `metal` feature).
#[derive(Debug, Clone, Copy, Default)]
pub struct MetalProvider;

/// The `Backend::Metal` provider.
pub static PROVIDER: MetalProvider = MetalProvider;

impl BackendProvider for MetalProvider {
    fn kind(&self) -> BackendKind {
        BackendKind::Metal
    }

    fn probe(&self) -> Result<(), String> {
        probe()
    }

    fn open(&self, request: &OpenRequest<'_>) -> Result<Arc<dyn Backend>, String> {
        probe()?;
        let config = WgpuConfig {
            apis: wgpu::Backends::METAL,
            allow_software: false,
            ..request.config::<WgpuConfig>().unwrap_or_default()
        };
        ringkernel_wgpu::open_backend(BackendKind::Metal, config)
    }
}

/// Why Metal cannot be used here, or `Ok` when a Metal adapter that runs compute shaders exists.
pub fn probe() -> Result<(), String> {
    if !APPLE {
        return Err(format!(
            "Metal exists only on Apple systems (macOS, iOS); this is {} (use Backend::Wgpu for \
             Vulkan/DX12, or Backend::Cuda)",
            std::env::consts::OS
        ));
    }
    ringkernel_wgpu::probe_adapter(false, wgpu::Backends::METAL).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_says_why_not_off_apple() {
        match (probe(), APPLE) {
            (Ok(()), false) => panic!("a Metal adapter off Apple systems"),
            (Ok(()), true) => {}
            (Err(why), false) => {
                assert!(why.contains("Apple") && why.contains(std::env::consts::OS), "{why}")
            }
            (Err(why), true) => eprintln!("SKIP: no Metal adapter on this Apple system: {why}"),
        }
    }
}
