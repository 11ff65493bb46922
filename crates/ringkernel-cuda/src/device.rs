//! What the backend needs from "a device": mapped and device memory, compiling a generated
//! source, launching a persistent kernel and asking whether it ended. Two implementations:
//! [`crate::driver`] (the CUDA driver through cudarc) and [`crate::emulator`] (host threads
//! running the same generated kernel as host C, for machines without a GPU).

use crate::program::CudaProgram;
use ringkernel_core::{DeviceError, DeviceErrorKind};

/// Pinned host memory mapped into the device: one allocation, two addresses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mapped {
    /// Host address (128-byte aligned).
    pub host: *mut u8,
    /// The same memory's device address.
    pub dev: u64,
    /// Bytes.
    pub len: usize,
}

// SAFETY: a Mapped is an address range; who may touch which bytes is the queue protocol's
// business (see ringkernel_codegen::cuda), and the allocation is freed only by the backend.
unsafe impl Send for Mapped {}
// SAFETY: as above.
unsafe impl Sync for Mapped {}

/// A compiled module (index into the device's own table).
pub(crate) type ModuleId = usize;
/// A running kernel (index into the device's own table).
pub(crate) type LaunchId = usize;

/// A device the backend can run generated kernels on (see the module docs). Every method
/// returns the failed call as a [`DeviceError`] (with the driver's code where there is one);
/// the backend carries it as the source of `Error::Gpu`.
pub(crate) trait Device: Send + Sync + 'static {
    /// Human-readable description (device name, driver, or "host emulation").
    fn describe(&self) -> String;
    /// Whether this is the host emulation.
    fn emulated(&self) -> bool;
    /// Allocates `len` bytes of zeroed, mapped, pinned host memory.
    fn alloc_mapped(&self, len: usize) -> Result<Mapped, DeviceError>;
    /// Frees what `alloc_mapped` returned. Only called when no kernel can touch it any more.
    fn free_mapped(&self, m: Mapped);
    /// The device address of host memory inside an `alloc_mapped` allocation.
    fn device_address(&self, host: *mut u8) -> Result<u64, DeviceError>;
    /// Allocates `len` bytes of device memory.
    fn alloc_device(&self, len: usize) -> Result<u64, DeviceError>;
    /// Frees what `alloc_device` returned. Only called when no kernel can touch it any more.
    fn free_device(&self, ptr: u64, len: usize);
    /// Copies host bytes into device memory.
    fn write_device(&self, dst: u64, data: &[u8]) -> Result<(), DeviceError>;
    /// Copies device memory into host bytes.
    fn read_device(&self, src: u64, out: &mut [u8]) -> Result<(), DeviceError>;
    /// The program's generated source for this device's compiler (CUDA C for the driver, host C
    /// for the emulation); `Err` is a generation error of the program, not a device failure.
    fn source<'p>(&self, program: &'p CudaProgram) -> Result<&'p str, String>;
    /// Compiles a generated kernel source; `kernel` names it in errors.
    fn compile(&self, kernel: &str, source: &str) -> Result<ModuleId, DeviceError>;
    /// Launches the module's persistent entry point with the parameter block at `params`.
    fn launch(&self, module: ModuleId, params: u64) -> Result<LaunchId, DeviceError>;
    /// Launches the module's kernel-group entry point (`rk_group_main`) with `workers` workers
    /// and the group descriptor at `desc`: on a GPU one cooperative grid of `workers` blocks
    /// (all resident at once, as the workers wait for each other's messages), in the emulation
    /// one host thread per worker. One launch id for the whole grid.
    fn launch_workers(&self, module: ModuleId, desc: u64, workers: u32) -> Result<LaunchId, DeviceError>;
    /// `Ok(true)` once the launch has returned; `Err` if it failed (a device fault).
    fn finished(&self, launch: LaunchId) -> Result<bool, DeviceError>;
}

/// A module or launch id the device never handed out: a backend bug, reported as the failure of
/// `call` rather than a panic.
pub(crate) fn unknown_id(call: &'static str, what: &str) -> DeviceError {
    DeviceError::new(DeviceErrorKind::Other, call, format!("no such {what}"))
}

/// Why a launch step failed: a text, or a failed device call (kept as the source of the
/// `Error::Gpu` it becomes), so both convert with `?`.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A reason the backend found itself.
    Text(String),
    /// A device call failed.
    Device(DeviceError),
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}

impl From<&str> for Failure {
    fn from(s: &str) -> Self {
        Self::Text(s.to_string())
    }
}

impl From<DeviceError> for Failure {
    fn from(e: DeviceError) -> Self {
        Self::Device(e)
    }
}

impl Failure {
    /// The `Error::Gpu` of kernel `kernel`.
    pub(crate) fn into_error(self, kernel: String) -> ringkernel_core::Error {
        match self {
            Self::Text(detail) => ringkernel_core::Error::gpu("cuda", kernel, detail),
            Self::Device(e) => ringkernel_core::Error::gpu_device("cuda", kernel, "", e),
        }
    }
}
