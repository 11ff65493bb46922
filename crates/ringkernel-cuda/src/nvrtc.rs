//! NVRTC: generated CUDA C → PTX, loaded at run time. Usable without a GPU (CI compiles every
//! generated kernel with the NVRTC of the `nvidia-cuda-nvrtc` wheel this way).

use cudarc::nvrtc::result as nvrtc;
use ringkernel_core::{DeviceError, DeviceErrorKind};
use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Whether the NVRTC library can be loaded.
#[must_use]
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to open the library by its candidate names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// The version of the NVRTC library that would compile kernels, `(major, minor)`; `None` when
/// it cannot be loaded or asked. Never panics.
#[must_use]
pub fn nvrtc_version() -> Option<(i32, i32)> {
    if !nvrtc_present() {
        return None;
    }
    catch_unwind(AssertUnwindSafe(|| {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: the library is present; nvrtcVersion only writes the two ints it is given.
        let rc = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
        (rc == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS).then_some((major, minor))
    }))
    .ok()
    .flatten()
}

/// Compiles `source` to PTX for `compute_<major><minor>` (the text NVRTC returns, NUL
/// excluded), or returns the failed NVRTC call (`nvrtcCompileProgram` with NVRTC's log when the
/// source does not compile); `kernel` names the source in errors. Never panics: a missing
/// library or symbol is an error.
pub fn compile_ptx(kernel: &str, source: &str, arch: (i32, i32)) -> Result<Vec<u8>, DeviceError> {
    if !nvrtc_present() {
        return Err(DeviceError::new(DeviceErrorKind::Other, "libnvrtc", "NVRTC (libnvrtc) was not found"));
    }
    catch_unwind(AssertUnwindSafe(|| compile(kernel, source, arch))).unwrap_or_else(|_| {
        Err(DeviceError::new(
            DeviceErrorKind::Other,
            "libnvrtc",
            "cudarc panicked inside NVRTC (a missing symbol?)",
        ))
    })
}

/// The failed NVRTC call `call`, with its `nvrtcResult` (code and name).
fn nvrtc_err(kind: DeviceErrorKind, call: &'static str, e: nvrtc::NvrtcError, detail: String) -> DeviceError {
    DeviceError::with_code(kind, call, e.0 as i64, format!("{:?}", e.0), detail)
}

fn compile(kernel: &str, source: &str, arch: (i32, i32)) -> Result<Vec<u8>, DeviceError> {
    let src = CString::new(source).map_err(|_| {
        DeviceError::new(
            DeviceErrorKind::Other,
            "nvrtcCreateProgram",
            "the kernel source contains a NUL byte",
        )
    })?;
    let name = CString::new(format!("{kernel}.cu")).unwrap_or_default();
    let prog = nvrtc::create_program(&src, Some(&name))
        .map_err(|e| nvrtc_err(DeviceErrorKind::Other, "nvrtcCreateProgram", e, String::new()))?;
    let opts = [
        format!("--gpu-architecture=compute_{}{}", arch.0, arch.1),
        "--std=c++17".into(),
        "-default-device".into(),
    ];
    // SAFETY: `prog` is a live program; the options are valid strings.
    let compiled = unsafe { nvrtc::compile_program(prog, &opts) };
    let out = match compiled {
        // SAFETY: compiled successfully, so the PTX is available.
        Ok(()) => unsafe { nvrtc::get_ptx(prog) }
            .map(|p| p.into_iter().map(|c| c as u8).take_while(|&c| c != 0).collect::<Vec<u8>>())
            .map_err(|e| nvrtc_err(DeviceErrorKind::Other, "nvrtcGetPTX", e, String::new())),
        Err(e) => {
            // SAFETY: the log exists after a failed compile.
            let log = unsafe { nvrtc::get_program_log(prog) }
                .map(|l| l.into_iter().map(|c| c as u8).take_while(|&c| c != 0).collect::<Vec<u8>>())
                .unwrap_or_default();
            let log = String::from_utf8_lossy(&log);
            Err(nvrtc_err(
                DeviceErrorKind::Compile,
                "nvrtcCompileProgram",
                e,
                format!("kernel {kernel:?}:\n{log}"),
            ))
        }
    };
    // SAFETY: destroyed once, after its last use.
    let _ = unsafe { nvrtc::destroy_program(prog) };
    out
}
