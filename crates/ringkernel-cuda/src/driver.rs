//! The CUDA driver as a [`Device`]: cudarc's `result` layer (every call returns `Result`), with
//! the driver and NVRTC loaded at run time.
//!
//! * Memory: mapped queues come from `cuMemHostAlloc(DEVICEMAP | PORTABLE)` (cached, not
//!   write-combined: the host reads the output ring) and `cuMemHostGetDevicePointer`; inboxes,
//!   state and scratch from `cuMemAlloc`. Frees are deferred by the backend to shutdown:
//!   `cuMemFree*` may wait for the device to go idle, which persistent kernels never do.
//! * Compilation: NVRTC, for `compute_XY` of device 0, with the PTX cached in memory and on disk
//!   (`$RINGKERNEL_PTX_CACHE`, else `$XDG_CACHE_HOME/ringkernel/ptx`, else
//!   `~/.cache/ringkernel/ptx`), keyed by an FNV-1a hash of the source, the architecture and the
//!   NVRTC version.
//! * Launch: each kernel on its own non-blocking stream, one block of one thread (every kernel
//!   is resident while fewer than [`crate::CudaConfig::max_kernels`] run, under the device's
//!   limit of concurrent kernels); `cuStreamQuery` says when it has returned, or that it faulted.

use crate::device::{unknown_id, Device, LaunchId, Mapped, ModuleId};
use crate::program::CudaProgram;
use cudarc::driver::{result, sys};
use ringkernel_core::{DeviceError, DeviceErrorKind};
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::path::PathBuf;
use std::sync::Mutex;

struct Tables {
    /// (single-kernel entry, kernel-group entry) by module id.
    modules: Vec<(sys::CUfunction, sys::CUfunction)>,
    by_source: HashMap<u64, ModuleId>,
    launches: Vec<sys::CUstream>,
}

/// A CUDA device through the driver API (see the module docs).
pub(crate) struct Driver {
    ctx: sys::CUcontext,
    dev: sys::CUdevice,
    copy_stream: sys::CUstream,
    arch: (i32, i32),
    info: String,
    tables: Mutex<Tables>,
}

// SAFETY: the context and stream handles are usable from any thread once the context is made
// current there (every method does so first); the tables are behind a mutex.
unsafe impl Send for Driver {}
// SAFETY: as above.
unsafe impl Sync for Driver {}

/// The failed driver call `call`, with its `CUresult` (code and name); only
/// `CUDA_ERROR_OUT_OF_MEMORY` is out of memory.
fn driver_err(call: &'static str, rc: sys::CUresult, detail: impl Into<String>) -> DeviceError {
    let kind = match rc {
        sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => DeviceErrorKind::OutOfMemory,
        _ => DeviceErrorKind::Other,
    };
    DeviceError::with_code(kind, call, rc as i64, format!("{rc:?}"), detail)
}

impl Driver {
    /// Opens device 0 (after `probe_device` succeeded).
    pub(crate) fn open(info: &crate::CudaInfo) -> Result<Self, DeviceError> {
        if !info.nvrtc {
            return Err(DeviceError::new(
                DeviceErrorKind::Other,
                "libnvrtc",
                "NVRTC (libnvrtc) was not found; the CUDA backend compiles kernels with it at launch",
            ));
        }
        result::init().map_err(|e| driver_err("cuInit", e.0, ""))?;
        let dev = result::device::get(0).map_err(|e| driver_err("cuDeviceGet", e.0, ""))?;
        // SAFETY: `dev` is a valid device ordinal's handle; the primary context is released in Drop.
        let ctx = unsafe { result::primary_ctx::retain(dev) }
            .map_err(|e| driver_err("cuDevicePrimaryCtxRetain", e.0, ""))?;
        // SAFETY: `ctx` was just retained.
        unsafe { result::ctx::set_current(ctx) }.map_err(|e| driver_err("cuCtxSetCurrent", e.0, ""))?;
        let copy_stream = result::stream::create(result::stream::StreamKind::NonBlocking)
            .map_err(|e| driver_err("cuStreamCreate", e.0, ""))?;
        Ok(Self {
            ctx,
            dev,
            copy_stream,
            arch: info.compute_capability,
            info: info.to_string(),
            tables: Mutex::new(Tables {
                modules: Vec::new(),
                by_source: HashMap::new(),
                launches: Vec::new(),
            }),
        })
    }

    fn current(&self) -> Result<(), DeviceError> {
        // SAFETY: the context stays retained for the life of `self`.
        unsafe { result::ctx::set_current(self.ctx) }.map_err(|e| driver_err("cuCtxSetCurrent", e.0, ""))
    }

    fn cache_dir() -> Option<PathBuf> {
        if let Ok(d) = std::env::var("RINGKERNEL_PTX_CACHE") {
            return Some(PathBuf::from(d));
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("ringkernel").join("ptx"))
    }
}

impl Device for Driver {
    fn describe(&self) -> String {
        self.info.clone()
    }
    fn emulated(&self) -> bool {
        false
    }
    fn alloc_mapped(&self, len: usize) -> Result<Mapped, DeviceError> {
        self.current()?;
        let flags = sys::CU_MEMHOSTALLOC_DEVICEMAP | sys::CU_MEMHOSTALLOC_PORTABLE;
        // SAFETY: plain allocation; zeroed below before anyone reads it.
        let host = unsafe { result::malloc_host(len, flags) }
            .map_err(|e| driver_err("cuMemHostAlloc", e.0, format!("{len} bytes")))?
            as *mut u8;
        // SAFETY: `host` is `len` writable bytes just allocated.
        unsafe { std::ptr::write_bytes(host, 0, len) };
        let mut dev: sys::CUdeviceptr = 0;
        // SAFETY: `host` was allocated with DEVICEMAP, so it has a device address.
        let rc = unsafe { sys::cuMemHostGetDevicePointer_v2(&mut dev, host as *mut c_void, 0) };
        if rc != sys::CUresult::CUDA_SUCCESS {
            // SAFETY: allocated above, not shared with anyone yet.
            let _ = unsafe { result::free_host(host as *mut c_void) };
            return Err(driver_err("cuMemHostGetDevicePointer", rc, ""));
        }
        Ok(Mapped { host, dev, len })
    }
    fn free_mapped(&self, m: Mapped) {
        if self.current().is_ok() {
            // SAFETY: from alloc_mapped; the backend frees it once, when no kernel can use it.
            let _ = unsafe { result::free_host(m.host as *mut c_void) };
        }
    }
    fn device_address(&self, host: *mut u8) -> Result<u64, DeviceError> {
        self.current()?;
        let mut dev: sys::CUdeviceptr = 0;
        // SAFETY: only queries the mapping of `host`; fails cleanly for unmapped memory.
        let rc = unsafe { sys::cuMemHostGetDevicePointer_v2(&mut dev, host as *mut c_void, 0) };
        if rc == sys::CUresult::CUDA_SUCCESS {
            Ok(dev)
        } else {
            Err(driver_err("cuMemHostGetDevicePointer", rc, ""))
        }
    }
    fn alloc_device(&self, len: usize) -> Result<u64, DeviceError> {
        self.current()?;
        // SAFETY: plain allocation, zeroed right after.
        let ptr = unsafe { result::malloc_sync(len.max(16)) }
            .map_err(|e| driver_err("cuMemAlloc", e.0, format!("{len} bytes")))?;
        // Zeroed on the copy stream, the stream every later write of this memory (`write_device`)
        // uses: a plain cuMemsetD8 runs on the legacy stream, which a non-blocking stream does
        // not wait for, so it could land after the inbox header and initial state are written
        // and zero them. Stream order puts the memset first; the synchronize makes it complete
        // before the memory is handed out.
        // SAFETY: `ptr` is a fresh allocation of at least `len` bytes; `copy_stream` is live.
        unsafe {
            result::memset_d8_async(ptr, 0, len.max(16), self.copy_stream)
                .map_err(|e| driver_err("cuMemsetD8Async", e.0, ""))?;
            result::stream::synchronize(self.copy_stream)
                .map_err(|e| driver_err("cuStreamSynchronize", e.0, ""))?;
        }
        Ok(ptr)
    }
    fn free_device(&self, ptr: u64, _len: usize) {
        if self.current().is_ok() {
            // SAFETY: from alloc_device; freed once, when no kernel can use it.
            let _ = unsafe { result::free_sync(ptr) };
        }
    }
    fn write_device(&self, dst: u64, data: &[u8]) -> Result<(), DeviceError> {
        self.current()?;
        // SAFETY: `dst` has room for `data` (the backend's layout); the copy runs on the
        // backend's own non-blocking stream, so it never waits for the persistent kernels.
        unsafe {
            result::memcpy_htod_async(dst, data, self.copy_stream)
                .map_err(|e| driver_err("cuMemcpyHtoDAsync", e.0, ""))?;
            result::stream::synchronize(self.copy_stream)
                .map_err(|e| driver_err("cuStreamSynchronize", e.0, ""))
        }
    }
    fn read_device(&self, src: u64, out: &mut [u8]) -> Result<(), DeviceError> {
        self.current()?;
        // SAFETY: as in write_device, reading `out.len()` bytes of a live allocation.
        unsafe {
            result::memcpy_dtoh_async(out, src, self.copy_stream)
                .map_err(|e| driver_err("cuMemcpyDtoHAsync", e.0, ""))?;
            result::stream::synchronize(self.copy_stream)
                .map_err(|e| driver_err("cuStreamSynchronize", e.0, ""))
        }
    }
    fn source<'p>(&self, program: &'p CudaProgram) -> Result<&'p str, String> {
        program.cuda_source()
    }
    fn compile(&self, kernel: &str, source: &str) -> Result<ModuleId, DeviceError> {
        self.current()?;
        let mut key = source.as_bytes().to_vec();
        key.extend_from_slice(format!("compute_{}{}", self.arch.0, self.arch.1).as_bytes());
        let hash = crate::program::fnv1a(&key);
        let mut t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&m) = t.by_source.get(&hash) {
            return Ok(m);
        }
        let file = Self::cache_dir().map(|d| d.join(format!("{hash:016x}.ptx")));
        let cached = file.as_ref().and_then(|f| std::fs::read(f).ok());
        let mut ptx = match cached {
            Some(p) => p,
            None => {
                let p = crate::nvrtc::compile_ptx(kernel, source, self.arch)?;
                if let Some(f) = &file {
                    if let Some(dir) = f.parent() {
                        let _ = std::fs::create_dir_all(dir);
                    }
                    let _ = std::fs::write(f, &p);
                }
                p
            }
        };
        if ptx.last() != Some(&0) {
            ptx.push(0);
        }
        // SAFETY: `ptx` is a NUL-terminated PTX image.
        let module = unsafe { result::module::load_data(ptx.as_ptr() as *const c_void) }.map_err(|e| {
            driver_err(
                "cuModuleLoadData",
                e.0,
                "a PTX version newer than the driver means NVRTC is newer than the driver",
            )
        })?;
        // SAFETY: `module` was just loaded.
        let f = unsafe { result::module::get_function(module, CString::from(c"rk_kernel_main")) }
            .map_err(|e| driver_err("cuModuleGetFunction", e.0, "rk_kernel_main"))?;
        // SAFETY: as above.
        let g = unsafe { result::module::get_function(module, CString::from(c"rk_group_main")) }
            .map_err(|e| driver_err("cuModuleGetFunction", e.0, "rk_group_main"))?;
        t.modules.push((f, g));
        let id = t.modules.len() - 1;
        t.by_source.insert(hash, id);
        Ok(id)
    }
    fn launch(&self, module: ModuleId, params: u64) -> Result<LaunchId, DeviceError> {
        self.current()?;
        let mut t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let f = t.modules.get(module).ok_or_else(|| unknown_id("cuLaunchKernel", "module"))?.0;
        let stream = result::stream::create(result::stream::StreamKind::NonBlocking)
            .map_err(|e| driver_err("cuStreamCreate", e.0, ""))?;
        let mut arg = params;
        let mut args = [&mut arg as *mut u64 as *mut c_void];
        // SAFETY: `f` takes one pointer argument (rk_kernel_params*), given by value through
        // `args` (copied by the driver at launch); the parameter block outlives the launch.
        unsafe { result::launch_kernel(f, (1, 1, 1), (1, 1, 1), 0, stream, &mut args) }
            .map_err(|e| driver_err("cuLaunchKernel", e.0, ""))?;
        t.launches.push(stream);
        Ok(t.launches.len() - 1)
    }
    fn launch_workers(&self, module: ModuleId, desc: u64, workers: u32) -> Result<LaunchId, DeviceError> {
        self.current()?;
        let mut t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let g = t.modules.get(module).ok_or_else(|| unknown_id("cuLaunchCooperativeKernel", "module"))?.1;
        let stream = result::stream::create(result::stream::StreamKind::NonBlocking)
            .map_err(|e| driver_err("cuStreamCreate", e.0, ""))?;
        let mut arg = desc;
        let mut args = [&mut arg as *mut u64 as *mut c_void];
        // SAFETY: `g` takes one pointer argument (rk_group_desc*), given by value through `args`;
        // the descriptor and every array it points to outlive the launch. A cooperative launch
        // fails (CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE) rather than start workers that could
        // not all be resident, which the workers need (they wait on each other's messages).
        unsafe { result::launch_cooperative_kernel(g, (workers, 1, 1), (1, 1, 1), 0, stream, &mut args) }
            .map_err(|e| driver_err("cuLaunchCooperativeKernel", e.0, format!("{workers} workers")))?;
        t.launches.push(stream);
        Ok(t.launches.len() - 1)
    }
    fn finished(&self, launch: LaunchId) -> Result<bool, DeviceError> {
        self.current()?;
        let t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let stream = *t.launches.get(launch).ok_or_else(|| unknown_id("cuStreamQuery", "launch"))?;
        // SAFETY: `stream` is a live stream created in `launch`.
        match unsafe { sys::cuStreamQuery(stream) } {
            sys::CUresult::CUDA_SUCCESS => Ok(true),
            sys::CUresult::CUDA_ERROR_NOT_READY => Ok(false),
            rc => Err(DeviceError::with_code(
                DeviceErrorKind::Fault,
                "cuStreamQuery",
                rc as i64,
                format!("{rc:?}"),
                "",
            )),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if self.current().is_ok() {
            // SAFETY: the primary context retained in `open`, released once.
            let _ = unsafe { result::primary_ctx::release(self.dev) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Failure;
    use std::error::Error as _;

    #[test]
    fn driver_errors_keep_the_call_and_code_and_only_oom_is_out_of_memory() {
        let oom = driver_err("cuMemAlloc", sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY, "4096 bytes");
        assert!(oom.is_out_of_memory());
        assert_eq!(oom.code(), Some((2, "CUDA_ERROR_OUT_OF_MEMORY")));
        let e = Failure::from(oom.clone()).into_error("k".into());
        let text = e.to_string();
        assert!(text.contains("cuMemAlloc") && text.contains("CUDA_ERROR_OUT_OF_MEMORY"), "{text}");
        assert!(text.contains("out of device memory"), "{text}");
        assert_eq!(
            e.source().and_then(|s| s.downcast_ref::<DeviceError>()),
            Some(&oom),
            "the call is the source"
        );

        let bad = driver_err("cuMemHostAlloc", sys::CUresult::CUDA_ERROR_INVALID_VALUE, "64 bytes");
        assert_eq!(bad.kind(), DeviceErrorKind::Other);
        let text = Failure::from(bad).into_error("k".into()).to_string();
        assert!(text.contains("cuMemHostAlloc") && text.contains("CUDA_ERROR_INVALID_VALUE = 1"), "{text}");
        assert!(!text.contains("out of device memory"), "an invalid value is not out of memory: {text}");
    }
}
