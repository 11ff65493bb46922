//! Adapter selection and device creation.
//!
//! Hardware adapters (discrete, then integrated, then virtual GPUs) are preferred. A software
//! rasteriser such as Mesa's llvmpipe/lavapipe is only taken when the caller allows it: it runs
//! shaders on the CPU and is slower than RingKernel's CPU backend, so `Backend::Auto` never
//! picks it unless `RINGKERNEL_WGPU_ALLOW_SOFTWARE=1`; `Backend::Wgpu` accepts it.

use ringkernel_core::{DeviceError, DeviceErrorKind};
use std::time::Duration;

/// An adapter that can run RingKernel's kernels.
pub(crate) struct Opened {
    pub info: wgpu::AdapterInfo,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub max_binding: u64,
}

/// The native graphics APIs the wgpu backend looks for adapters on (the browser and GL backends
/// are not used).
pub const NATIVE_APIS: wgpu::Backends =
    wgpu::Backends::VULKAN.union(wgpu::Backends::METAL).union(wgpu::Backends::DX12);

fn instance(apis: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = apis;
    wgpu::Instance::new(desc)
}

fn rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn choose(allow_software: bool, apis: wgpu::Backends) -> Result<wgpu::Adapter, String> {
    let adapters = pollster::block_on(instance(apis).enumerate_adapters(apis));
    if adapters.is_empty() {
        return Err(format!(
            "no {apis:?} adapter found (is a GPU driver, or Mesa's mesa-vulkan-drivers for a \
             software adapter, installed?)"
        ));
    }
    let names: Vec<String> =
        adapters.iter().map(|a| format!("{} ({:?})", a.get_info().name, a.get_info().device_type)).collect();
    adapters
        .into_iter()
        .filter(|a| {
            let info = a.get_info();
            let compute =
                a.get_downlevel_capabilities().flags.contains(wgpu::DownlevelFlags::COMPUTE_SHADERS);
            compute && (allow_software || info.device_type != wgpu::DeviceType::Cpu)
        })
        .min_by_key(|a| rank(a.get_info().device_type))
        .ok_or_else(|| {
            format!(
                "only software adapters found ({}); set RINGKERNEL_WGPU_ALLOW_SOFTWARE=1 or choose \
                 Backend::Wgpu explicitly to use one",
                names.join(", ")
            )
        })
}

/// Whether a usable adapter exists (no device is created).
pub(crate) fn probe(allow_software: bool, apis: wgpu::Backends) -> Result<wgpu::AdapterInfo, String> {
    choose(allow_software, apis).map(|a| a.get_info())
}

/// Opens the best adapter's device with the limits RingKernel needs.
pub(crate) fn open(allow_software: bool, apis: wgpu::Backends) -> Result<Opened, String> {
    let adapter = choose(allow_software, apis)?;
    let info = adapter.get_info();
    let limits = adapter.limits();
    let max_binding = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
    let desc =
        wgpu::DeviceDescriptor { label: Some("ringkernel"), required_limits: limits, ..Default::default() };
    let (device, queue) = pollster::block_on(adapter.request_device(&desc))
        .map_err(|e| format!("adapter {} refused a device: {e}", info.name))?;
    Ok(Opened { info, device, queue, max_binding })
}

/// Waits for the queue to go idle (bounded, so a hung device becomes an error: the failed
/// `wgpu::Device::poll`, a fault of the device).
pub(crate) fn wait_idle(device: &wgpu::Device) -> Result<(), DeviceError> {
    device
        .poll(wgpu::PollType::Wait { submission_index: None, timeout: Some(Duration::from_secs(30)) })
        .map(|_| ())
        .map_err(|e| {
            DeviceError::new(
                DeviceErrorKind::Fault,
                "wgpu::Device::poll",
                format!("waiting for the GPU failed: {e}"),
            )
        })
}
