//! RingKernel's NVIDIA CUDA backend: persistent kernels with device-side queues and K2K.
//!
//! A kernel carries a [`CudaProgram`]: handlers written in CUDA C against declarations that
//! `ringkernel-codegen` generates from the Rust message types. At launch the backend compiles
//! the generated source with NVRTC (the PTX is cached), allocates the kernel's queues (pinned
//! host memory mapped into the device for host traffic, device memory for the K2K inbox) and
//! launches it once; the kernel then loops on the device until it is told to terminate. A host
//! agent thread routes what kernels write to the host (replies, emits, K2K to kernels elsewhere)
//! and mirrors lifecycle flags; see [`backend`] for the memory contract.
//!
//! The driver and NVRTC are loaded at run time (cudarc, dynamic loading): the crate builds
//! anywhere, and [`probe`] says why CUDA cannot be used without ever panicking. cudarc panics
//! when a library or symbol it needs is missing, so every driver call happens only after the
//! library was found, behind `catch_unwind`, and an old driver is refused before any newer entry
//! point is touched.
//!
//! Without a GPU, [`CudaConfig::host_emulation`] runs the very same generated source as C on host
//! threads (the shim in the device runtime maps CUDA's atomics and sleeps to the host's): CI
//! runs the backend's whole host side and the device-side protocol that way.

mod backend;
mod device;
mod driver;
mod emulator;
mod group;
mod nvrtc;
mod program;
mod provider;
mod ptx_check;

pub use backend::{CudaBackend, CudaConfig};
pub use nvrtc::{compile_ptx, nvrtc_present, nvrtc_version};
pub use program::CudaProgram;
pub use provider::{CudaProvider, PROVIDER};
pub use ptx_check::ptx_checked;

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
    /// NVRTC's version, when it was found and answered.
    pub nvrtc_version: Option<(i32, i32)>,
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
            match (self.nvrtc, self.nvrtc_version) {
                (_, Some((major, minor))) => format!("{major}.{minor}"),
                (true, None) => "found".to_string(),
                (false, _) => "not found".to_string(),
            }
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
    /// The driver is older than the NVRTC that would compile kernels: the PTX NVRTC emits is
    /// of NVRTC's CUDA version, and a driver only JIT-compiles PTX of its own version or older.
    DriverOlderThanNvrtc {
        /// Driver API version found (e.g. 12080 for 12.8).
        driver: i32,
        /// NVRTC's version `(major, minor)`.
        nvrtc: (i32, i32),
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
            Self::DriverOlderThanNvrtc { driver, nvrtc } => write!(
                f,
                "the CUDA driver ({}.{}) is older than NVRTC ({}.{}): the driver cannot load the PTX this \
                 NVRTC emits; install a driver for CUDA {}.{} or newer, or put an NVRTC no newer than {}.{} \
                 first on the library path",
                driver / 1000,
                (driver % 1000) / 10,
                nvrtc.0,
                nvrtc.1,
                nvrtc.0,
                nvrtc.1,
                driver / 1000,
                (driver % 1000) / 10
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
    let nvrtc = nvrtc_present();
    let nvrtc_version = nvrtc_version();
    if let Some(v) = nvrtc_version {
        driver_loads_ptx_of(version, v)?;
    }
    Ok(CudaInfo {
        driver_version: version,
        devices,
        name,
        compute_capability: (major, minor),
        nvrtc,
        nvrtc_version,
    })
}

/// Whether a driver of API version `driver` can load the PTX that NVRTC `nvrtc` emits: PTX
/// carries the ISA version of the toolkit that wrote it, and a driver JIT-compiles PTX of its own
/// CUDA version or older (`CUDA_ERROR_UNSUPPORTED_PTX_VERSION` otherwise).
fn driver_loads_ptx_of(driver: i32, nvrtc: (i32, i32)) -> Result<(), ProbeError> {
    if driver < nvrtc.0 * 1000 + nvrtc.1 * 10 {
        return Err(ProbeError::DriverOlderThanNvrtc { driver, nvrtc });
    }
    Ok(())
}

/// Whether `Backend::Cuda` can run kernels on a GPU here: a driver, a device and NVRTC; the
/// error says what is missing.
pub fn probe() -> Result<(), String> {
    match probe_device() {
        Ok(info) if !info.nvrtc => Err(format!(
            "found {info}, but NVRTC (libnvrtc) is missing; the CUDA backend compiles kernels with it at launch"
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_driver_older_than_nvrtc_is_refused_with_both_versions() {
        assert!(driver_loads_ptx_of(13_000, (13, 0)).is_ok());
        assert!(driver_loads_ptx_of(13_010, (13, 0)).is_ok());
        assert!(driver_loads_ptx_of(12_080, (12, 8)).is_ok());
        for (driver, nvrtc) in [(12_080, (13, 0)), (12_040, (12, 8)), (12_000, (12, 1))] {
            let e = driver_loads_ptx_of(driver, nvrtc).unwrap_err();
            assert_eq!(e, ProbeError::DriverOlderThanNvrtc { driver, nvrtc });
            let text = e.to_string();
            let (d, n) =
                (format!("{}.{}", driver / 1000, (driver % 1000) / 10), format!("{}.{}", nvrtc.0, nvrtc.1));
            assert!(
                text.contains(&format!("driver ({d})")) && text.contains(&format!("NVRTC ({n})")),
                "{text}"
            );
        }
    }

    #[test]
    fn nvrtc_version_is_known_when_nvrtc_loads() {
        match (nvrtc_present(), nvrtc_version()) {
            (true, Some((major, _))) => assert!(major >= 12, "NVRTC {major}"),
            (true, None) => panic!("NVRTC loads but does not say its version"),
            (false, v) => assert_eq!(v, None),
        }
    }

    #[test]
    fn probe_never_panics_and_says_why() {
        match (probe_device(), probe()) {
            (Err(ProbeError::NoDriver), Err(why)) => assert!(why.contains("no NVIDIA driver"), "{why}"),
            (Err(e), Err(why)) => assert_eq!(why, e.to_string()),
            (Ok(info), r) => {
                eprintln!("CUDA found: {info}");
                assert!(info.devices > 0 && info.driver_version >= MIN_DRIVER_VERSION);
                assert_eq!(r.is_ok(), info.nvrtc, "{r:?}");
            }
            (Err(e), Ok(())) => panic!("probe() is Ok but probe_device() says {e}"),
        }
    }
}
