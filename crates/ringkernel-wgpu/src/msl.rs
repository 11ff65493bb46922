//! The Metal Shading Language that naga makes from a kernel's WGSL: what wgpu's Metal backend
//! hands the Metal driver. It lets the MSL path be checked where there is no Apple GPU: with
//! `RINGKERNEL_CHECK_MSL=1` the backend translates every pipeline's WGSL when it creates the
//! pipeline and refuses a kernel whose MSL cannot be generated (CI runs the test suite so).

use crate::program::WgslProgram;
use std::sync::atomic::{AtomicU64, Ordering};

/// Programs translated by the `RINGKERNEL_CHECK_MSL=1` check since the process started.
static CHECKED: AtomicU64 = AtomicU64::new(0);

/// The MSL naga generates from `program`'s complete WGSL (the generated declarations, queues and
/// dispatch loop, plus its handlers), validated first as wgpu would. `Err` carries naga's
/// diagnostics.
pub fn translate_msl(program: &WgslProgram) -> Result<String, String> {
    translate_source(program.wgsl()?)
}

fn translate_source(wgsl: &str) -> Result<String, String> {
    let module =
        naga::front::wgsl::parse_str(wgsl).map_err(|e| format!("WGSL parse: {}", e.emit_to_string(wgsl)))?;
    let info =
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .map_err(|e| format!("WGSL validation: {}", e.emit_to_string(wgsl)))?;
    // Metal 2.1 (macOS 10.14) is the oldest version wgpu's Metal backend runs compute on; binding
    // slots are left to naga (wgpu assigns them from the pipeline layout on a real device).
    let options = naga::back::msl::Options { lang_version: (2, 1), ..Default::default() };
    let (msl, _) = naga::back::msl::write_string(&module, &info, &options, &Default::default())
        .map_err(|e| format!("MSL generation: {e}"))?;
    Ok(msl)
}

/// Whether `RINGKERNEL_CHECK_MSL=1` asks for every pipeline's MSL to be generated.
pub(crate) fn check_enabled() -> bool {
    std::env::var("RINGKERNEL_CHECK_MSL").as_deref() == Ok("1")
}

/// The `RINGKERNEL_CHECK_MSL` check for one pipeline's WGSL.
pub(crate) fn check(wgsl: &str) -> Result<(), String> {
    translate_source(wgsl)
        .map_err(|e| format!("the MSL naga generates from this program (for Metal) fails: {e}"))?;
    // Relaxed: a statistic for tests.
    CHECKED.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// How many pipelines the `RINGKERNEL_CHECK_MSL=1` check has translated in this process.
#[must_use]
pub fn msl_checked() -> u64 {
    CHECKED.load(Ordering::Relaxed)
}
