use ringkernel::prelude::*;

// WGSL has no f64: a GpuType field must be u32, i32, f32, u64, i64, an array or a Vec of those.
#[derive(GpuType)]
struct Stats {
    total: f64,
}

fn main() {}
