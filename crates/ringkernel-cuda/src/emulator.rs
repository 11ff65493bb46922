//! Host emulation of a CUDA device: the generated kernel for the host C target (the text NVRTC
//! compiles for the GPU, but for the device primitives: `ringkernel_codegen::host_c` maps the
//! device atomics to C11 atomics and `__nanosleep` to a yield/sleep back-off) is compiled as C11
//! by the host C compiler, and each persistent kernel runs on its own host thread. "Mapped" and "device" memory are both plain
//! host memory. This is how CI runs the CUDA backend's whole host side and the device-side
//! protocol without a GPU; it is never chosen by `Backend::Auto`.

use crate::device::{unknown_id, Device, LaunchId, Mapped, ModuleId};
use crate::program::CudaProgram;
use ringkernel_core::{DeviceError, DeviceErrorKind};
use std::collections::HashMap;
use std::ffi::CString;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::thread::JoinHandle;

type Entry = unsafe extern "C" fn(*mut u8);
/// `rk_group_main(rk_group_desc*, uint32_t worker)` of the host C target.
type GroupEntry = unsafe extern "C" fn(*mut u8, u32);

#[derive(Default)]
struct Tables {
    /// Compiled libraries: (dlopen handle, entry point, group entry point) by module id.
    modules: Vec<(usize, Entry, GroupEntry)>,
    by_source: HashMap<u64, ModuleId>,
    /// The threads of each launch (one, or one per group worker).
    launches: Vec<Vec<JoinHandle<()>>>,
}

/// The host emulation device (see the module docs).
pub(crate) struct Emulator {
    cc: String,
    /// Compile with `-DRK_CHAOS`: random yields before every atomic (`CudaConfig::emulate_chaos`).
    chaos: bool,
    dir: PathBuf,
    tables: Mutex<Tables>,
}

impl Emulator {
    /// Checks for a C compiler (`$CC`, else `cc`).
    #[cfg(test)]
    pub(crate) fn new() -> Result<Self, String> {
        Self::with_chaos(false)
    }

    /// [`Emulator::new`]; with `chaos`, kernels are compiled in chaos mode (see
    /// `CudaConfig::emulate_chaos`).
    pub(crate) fn with_chaos(chaos: bool) -> Result<Self, String> {
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        if Command::new(&cc).arg("--version").output().is_err() {
            return Err(format!("the CUDA host emulation needs a C compiler, and `{cc}` was not found"));
        }
        // One directory per emulator: runtimes in one process must not share (or delete) files.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ringkernel-cuda-emu-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(Self { cc, chaos, dir, tables: Mutex::new(Tables::default()) })
    }

    fn layout(len: usize) -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(len.max(128), 128).expect("valid layout")
    }
}

fn other(call: &'static str, detail: impl Into<String>) -> DeviceError {
    DeviceError::new(DeviceErrorKind::Other, call, detail)
}

impl Device for Emulator {
    fn describe(&self) -> String {
        "CUDA host emulation (no GPU: generated kernels run as C on host threads)".into()
    }
    fn emulated(&self) -> bool {
        true
    }
    fn alloc_mapped(&self, len: usize) -> Result<Mapped, DeviceError> {
        // SAFETY: non-zero size (at least 128).
        let host = unsafe { std::alloc::alloc_zeroed(Self::layout(len)) };
        if host.is_null() {
            return Err(DeviceError::new(
                DeviceErrorKind::OutOfMemory,
                "alloc_zeroed",
                format!("{len} bytes"),
            ));
        }
        Ok(Mapped { host, dev: host as u64, len })
    }
    fn free_mapped(&self, m: Mapped) {
        // SAFETY: allocated in alloc_mapped with the same layout; the backend frees it once.
        unsafe { std::alloc::dealloc(m.host, Self::layout(m.len)) };
    }
    fn device_address(&self, host: *mut u8) -> Result<u64, DeviceError> {
        Ok(host as u64)
    }
    fn alloc_device(&self, len: usize) -> Result<u64, DeviceError> {
        self.alloc_mapped(len).map(|m| m.dev)
    }
    fn free_device(&self, ptr: u64, len: usize) {
        self.free_mapped(Mapped { host: ptr as *mut u8, dev: ptr, len });
    }
    fn write_device(&self, dst: u64, data: &[u8]) -> Result<(), DeviceError> {
        // SAFETY: `dst` came from alloc_device with room for the write (the backend's layout);
        // the running kernel does not touch these bytes while the host writes them (state is
        // rewritten only while a failed kernel waits for the restart generation to change).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst as *mut u8, data.len()) };
        Ok(())
    }
    fn read_device(&self, src: u64, out: &mut [u8]) -> Result<(), DeviceError> {
        // SAFETY: as in write_device, a range of a live allocation; a concurrent kernel write
        // could give a torn copy; the only caller reads an inbox after its kernel ended).
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, out.as_mut_ptr(), out.len()) };
        Ok(())
    }
    fn source<'p>(&self, program: &'p CudaProgram) -> Result<&'p str, String> {
        program.host_c_source()
    }
    fn compile(&self, kernel: &str, source: &str) -> Result<ModuleId, DeviceError> {
        let hash = crate::program::fnv1a(source.as_bytes()) ^ u64::from(self.chaos);
        let mut t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&m) = t.by_source.get(&hash) {
            return Ok(m);
        }
        let src = self.dir.join(format!("k{hash:016x}.c"));
        let lib = self.dir.join(format!("k{hash:016x}.so"));
        std::fs::write(&src, source)
            .map_err(|e| other("std::fs::write", format!("{}: {e}", src.display())))?;
        let out = Command::new(&self.cc)
            .args(if self.chaos { &["-DRK_CHAOS=1"][..] } else { &[][..] })
            .args(["-std=gnu11", "-O2", "-Wall", "-Wno-unused-function", "-shared", "-fPIC", "-o"])
            .arg(&lib)
            .arg(&src)
            .output()
            .map_err(|e| other("std::process::Command::output", format!("cannot run {}: {e}", self.cc)))?;
        if !out.status.success() {
            return Err(DeviceError::new(
                DeviceErrorKind::Compile,
                "cc",
                format!(
                    "the CUDA C of kernel {kernel:?} does not compile (host emulation, {}):\n{}",
                    self.cc,
                    String::from_utf8_lossy(&out.stderr)
                ),
            ));
        }
        let path =
            CString::new(lib.to_string_lossy().as_bytes()).map_err(|e| other("dlopen", e.to_string()))?;
        // SAFETY: dlopen/dlsym with NUL-terminated strings; the library was just built from a
        // generated source whose entry point has the `Entry` signature (one pointer argument).
        let entry = unsafe {
            let handle = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            if handle.is_null() {
                return Err(other("dlopen", lib.display().to_string()));
            }
            let sym = libc::dlsym(handle, c"rk_kernel_main".as_ptr());
            let group = libc::dlsym(handle, c"rk_group_main".as_ptr());
            if sym.is_null() || group.is_null() {
                return Err(other("dlsym", "the compiled kernel lacks rk_kernel_main or rk_group_main"));
            }
            (
                handle as usize,
                std::mem::transmute::<*mut libc::c_void, Entry>(sym),
                std::mem::transmute::<*mut libc::c_void, GroupEntry>(group),
            )
        };
        t.modules.push(entry);
        let id = t.modules.len() - 1;
        t.by_source.insert(hash, id);
        Ok(id)
    }
    fn launch(&self, module: ModuleId, params: u64) -> Result<LaunchId, DeviceError> {
        let mut t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let entry = t.modules.get(module).ok_or_else(|| unknown_id("std::thread::spawn", "module"))?.1;
        let handle = std::thread::Builder::new()
            .name("ringkernel-cuda-emu".into())
            .stack_size(1 << 20)
            .spawn(move || {
                // SAFETY: `params` is the device address (= host address here) of a parameter
                // block the backend keeps alive, with every pointer in it, until this launch
                // reports finished.
                unsafe { entry(params as *mut u8) }
            })
            .map_err(|e| {
                other("std::thread::spawn", format!("cannot start an emulated kernel thread: {e}"))
            })?;
        t.launches.push(vec![handle]);
        Ok(t.launches.len() - 1)
    }
    fn launch_workers(&self, module: ModuleId, desc: u64, workers: u32) -> Result<LaunchId, DeviceError> {
        let mut t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let entry = t.modules.get(module).ok_or_else(|| unknown_id("std::thread::spawn", "module"))?.2;
        let mut threads = Vec::with_capacity(workers as usize);
        for w in 0..workers {
            let handle = std::thread::Builder::new()
                .name(format!("ringkernel-cuda-emu-w{w}"))
                .stack_size(1 << 20)
                .spawn(move || {
                    // SAFETY: `desc` is the device address (= host address here) of a group
                    // descriptor the backend keeps alive, with every array it points to, until
                    // this launch reports finished; `w` < the descriptor's worker count.
                    unsafe { entry(desc as *mut u8, w) }
                })
                .map_err(|e| {
                    other("std::thread::spawn", format!("cannot start an emulated worker thread: {e}"))
                });
            match handle {
                Ok(h) => threads.push(h),
                Err(e) => {
                    // The started workers see no work and no exit flag yet: the caller sets the
                    // exit flag when the launch fails, and these return.
                    t.launches.push(threads);
                    return Err(e);
                }
            }
        }
        t.launches.push(threads);
        Ok(t.launches.len() - 1)
    }
    fn finished(&self, launch: LaunchId) -> Result<bool, DeviceError> {
        let mut t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let Some(threads) = t.launches.get_mut(launch) else {
            return Err(unknown_id("JoinHandle::is_finished", "launch"));
        };
        if !threads.iter().all(JoinHandle::is_finished) {
            return Ok(false);
        }
        let mut panicked = false;
        for h in threads.drain(..) {
            panicked |= h.join().is_err();
        }
        if panicked {
            return Err(DeviceError::new(
                DeviceErrorKind::Fault,
                "JoinHandle::join",
                "the emulated kernel thread panicked",
            ));
        }
        Ok(true)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allocation_the_host_cannot_make_is_out_of_memory_with_its_call() {
        let Ok(emu) = Emulator::new() else {
            eprintln!("SKIP: no C compiler for the CUDA host emulation");
            return;
        };
        let e = emu.alloc_device(1 << 62).expect_err("4 EiB do not fit");
        assert!(e.is_out_of_memory(), "{e:?}");
        assert_eq!(e.call(), "alloc_zeroed");
        assert!(e.to_string().contains("out of device memory"), "{e}");
    }
}
