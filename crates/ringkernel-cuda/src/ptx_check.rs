//! Every generated CUDA program, checked the way a GPU would take it, on machines without one.
//!
//! With `RINGKERNEL_CHECK_PTX=1`, each distinct CUDA C program the backend launches (on the host
//! emulation too, which itself runs the host-C text) is also compiled by NVRTC for
//! `compute_80` and `compute_90` and its PTX assembled by `ptxas -Werror` for `sm_80` and
//! `sm_90`; a program that fails either is refused at launch with the tool's diagnostics. CI sets
//! it, with `RINGKERNEL_PTXAS` naming the `ptxas` of the `nvidia-cuda-nvcc` wheel, so every CUDA
//! program the tests launch passes the same gate as `scripts/cuda_compile_check.py` gives the
//! example kernel.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Architectures every program is compiled and assembled for (Ampere, Hopper).
const ARCHS: [(i32, i32); 2] = [(8, 0), (9, 0)];

/// Programs that passed, by the hash of their CUDA C text (each is checked once per process).
static PASSED: Mutex<Option<HashSet<u64>>> = Mutex::new(None);
/// Programs checked since the process started.
static CHECKED: AtomicU64 = AtomicU64::new(0);

/// Whether `RINGKERNEL_CHECK_PTX=1` asks for the check.
pub(crate) fn enabled() -> bool {
    std::env::var("RINGKERNEL_CHECK_PTX").as_deref() == Ok("1")
}

/// Compiles `cuda_source` with NVRTC and assembles it with `ptxas -Werror` for every
/// architecture in [`ARCHS`] (once per distinct source).
pub(crate) fn check(kernel: &str, cuda_source: &str) -> Result<(), String> {
    let hash = crate::program::fnv1a(cuda_source.as_bytes());
    if PASSED.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(HashSet::new).contains(&hash) {
        return Ok(());
    }
    let ptxas = std::env::var_os("RINGKERNEL_PTXAS")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from("ptxas"), PathBuf::from);
    // A folder per call: launches of one program may race here, and must not read each other's
    // half-written files.
    static CALLS: AtomicU64 = AtomicU64::new(0);
    // Relaxed: only makes the folder name unique.
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ringkernel-ptx-{}-{call}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let assembled = (|| {
        for arch in ARCHS {
            let ptx = crate::nvrtc::compile_ptx(kernel, cuda_source, arch)
                .map_err(|e| format!("NVRTC for compute_{}{}: {e}", arch.0, arch.1))?;
            let file = dir.join(format!("k{hash:016x}.sm_{}{}.ptx", arch.0, arch.1));
            std::fs::write(&file, &ptx).map_err(|e| format!("{}: {e}", file.display()))?;
            let out = Command::new(&ptxas)
                .arg(format!("-arch=sm_{}{}", arch.0, arch.1))
                .arg("-Werror")
                .arg(&file)
                .arg("-o")
                .arg(file.with_extension("cubin"))
                .output()
                .map_err(|e| format!("cannot run {} (RINGKERNEL_PTXAS): {e}", ptxas.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "ptxas -Werror for sm_{}{} refused the PTX:\n{}{}",
                    arch.0,
                    arch.1,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        Ok::<(), String>(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    assembled?;
    PASSED.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(HashSet::new).insert(hash);
    // Relaxed: a statistic for tests.
    CHECKED.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// How many distinct CUDA programs the `RINGKERNEL_CHECK_PTX=1` check has passed in this process.
#[must_use]
pub fn ptx_checked() -> u64 {
    CHECKED.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_nvrtc_refuses_fails_the_gate_and_is_not_counted() {
        let before = ptx_checked();
        let e = check("bad", "this is not CUDA C").unwrap_err();
        assert!(e.contains("NVRTC"), "{e}");
        assert_eq!(ptx_checked(), before);
    }
}
