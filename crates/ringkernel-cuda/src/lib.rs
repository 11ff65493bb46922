//! RingKernel's NVIDIA CUDA backend.
//!
//! **Status: discovery only.** This crate finds the CUDA driver and NVRTC at run time (cudarc with
//! dynamic loading, so it builds and runs on machines without CUDA) and reports what it found, but
//! it does not launch kernels yet: [`probe`] always ends in an error, so `Backend::Cuda` is a clear
//! error and `Backend::Auto` falls back. The generated persistent-kernel source it will launch
//! exists in `ringkernel-codegen` and is compiled with NVRTC and run through a host shim in CI;
//! see `docs/05-gpu-backends.md`.
//!
//! cudarc panics when a library or symbol it needs is missing, so every driver call here happens
//! only after the library was found, behind `catch_unwind`, and an old driver is refused before
//! any newer entry point is touched.

use cudarc::driver::{result, sys};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Oldest driver API version accepted (12.0): the generated code needs system-scope atomics and
/// `%globaltimer`, and NVRTC output must not be newer than the driver.
pub const MIN_DRIVER_VERSION: i32 = 12_000;

/// What the probe found on a machine with a usable driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaInfo {
    /// Driver API version, e.g. 13000 for CUDA 13.0.
    pub driver_version: i32,
    /// Number of CUDA devices.
    pub devices: i32,
    /// Name of device 0.
    pub name: String,
    /// Compute capability of device 0.
    pub compute_capability: (i32, i32),
    /// Whether NVRTC (needed to compile kernels at launch) was found.
    pub nvrtc: bool,
}

impl core::fmt::Display for CudaInfo {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "CUDA driver {}.{}, {} device(s), device 0 {} (sm_{}{}), NVRTC {}",
            self.driver_version / 1000,
            (self.driver_version % 1000) / 10,
            self.devices,
            self.name,
            self.compute_capability.0,
            self.compute_capability.1,
            if self.nvrtc { "found" } else { "not found" }
        )
    }
}

/// Why CUDA cannot be used on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeError {
    /// `libcuda.so` / `nvcuda.dll` could not be loaded: no NVIDIA driver.
    NoDriver,
    /// The driver is older than [`MIN_DRIVER_VERSION`].
    DriverTooOld {
        /// Version found.
        found: i32,
    },
    /// The driver loaded but reports no device.
    NoDevice,
    /// A driver call failed.
    Driver(String),
}

impl core::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoDriver => f.write_str(
                "the CUDA driver library (libcuda.so / nvcuda.dll) was not found: no NVIDIA driver is installed",
            ),
            Self::DriverTooOld { found } => write!(
                f,
                "the CUDA driver is too old: version {}.{}, RingKernel needs {}.{} or newer",
                found / 1000,
                (found % 1000) / 10,
                MIN_DRIVER_VERSION / 1000,
                (MIN_DRIVER_VERSION % 1000) / 10
            ),
            Self::NoDevice => f.write_str("the CUDA driver found no device"),
            Self::Driver(e) => write!(f, "CUDA driver error: {e}"),
        }
    }
}

impl std::error::Error for ProbeError {}

/// Looks for the driver, a device and NVRTC without ever panicking.
pub fn probe_device() -> Result<CudaInfo, ProbeError> {
    // SAFETY: only tries to open the library by its candidate names (libloading); no symbol is
    // called.
    if !unsafe { sys::is_culib_present() } {
        return Err(ProbeError::NoDriver);
    }
    match catch_unwind(AssertUnwindSafe(query)) {
        Ok(r) => r,
        Err(p) => Err(ProbeError::Driver(format!(
            "cudarc panicked while querying the driver (a missing symbol?): {}",
            p.downcast_ref::<String>()
                .map(String::as_str)
                .or(p.downcast_ref::<&str>().copied())
                .unwrap_or("?")
        ))),
    }
}

fn query() -> Result<CudaInfo, ProbeError> {
    let mut version = 0;
    // SAFETY: the library is present (checked by the caller); cuDriverGetVersion exists in every
    // driver and only writes the int it is given.
    let rc = unsafe { sys::cuDriverGetVersion(&mut version) };
    if rc != sys::CUresult::CUDA_SUCCESS {
        return Err(ProbeError::Driver(format!("cuDriverGetVersion: {rc:?}")));
    }
    if version < MIN_DRIVER_VERSION {
        return Err(ProbeError::DriverTooOld { found: version });
    }
    result::init().map_err(|e| ProbeError::Driver(format!("cuInit: {e}")))?;
    let devices =
        result::device::get_count().map_err(|e| ProbeError::Driver(format!("device count: {e}")))?;
    if devices == 0 {
        return Err(ProbeError::NoDevice);
    }
    let dev = result::device::get(0).map_err(|e| ProbeError::Driver(format!("device 0: {e}")))?;
    let name = result::device::get_name(dev).map_err(|e| ProbeError::Driver(format!("device name: {e}")))?;
    let attr = |a| {
        // SAFETY: `dev` was returned by cuDeviceGet above.
        unsafe { result::device::get_attribute(dev, a) }
            .map_err(|e| ProbeError::Driver(format!("{a:?}: {e}")))
    };
    let major = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    // SAFETY: only tries to open the NVRTC library by name.
    let nvrtc = unsafe { cudarc::nvrtc::sys::is_culib_present() };
    Ok(CudaInfo { driver_version: version, devices, name, compute_capability: (major, minor), nvrtc })
}

/// Whether `Backend::Cuda` can run kernels here. Always `Err` in this build: with a driver and a
/// device present the error says what was found and that the launch path is not implemented.
pub fn probe() -> Result<(), String> {
    match probe_device() {
        Ok(info) => Err(format!(
            "found {info}, but this build of RingKernel cannot launch CUDA kernels yet (the CUDA runtime is not implemented)"
        )),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_never_panics_and_says_why() {
        let why = probe().unwrap_err();
        assert!(!why.is_empty());
        match probe_device() {
            Err(ProbeError::NoDriver) => assert!(why.contains("no NVIDIA driver"), "{why}"),
            Err(e) => assert_eq!(why, e.to_string()),
            Ok(info) => {
                eprintln!("CUDA found: {info}");
                assert!(info.devices > 0 && info.driver_version >= MIN_DRIVER_VERSION);
                assert!(why.contains("not implemented"), "{why}");
            }
        }
    }
}
