// The "every field kind" message and its sample values, shared by the GPU device tests
// (included with `#[path]`): each backend round-trips them through its generated readers and
// writers and compares bit for bit with the Rust codec.

use ringkernel::prelude::*;

#[derive(RingMessage, GpuType, Debug, Clone, PartialEq)]
#[message(gpu, type_id = 0x6001)]
pub struct Every {
    pub a: u32,
    pub b: i32,
    pub c: f32,
    pub d: u64,
    pub e: i64,
    pub f: [f32; 3],
    pub g: [u64; 2],
    pub h: Vec<f32>,
    pub i: Vec<u64>,
    pub j: Vec<i32>,
}

/// A value with every field kind filled, varied by `seed` (Vec lengths included).
pub fn sample(seed: u32) -> Every {
    let s = seed as u64;
    Every {
        a: seed.wrapping_mul(2_654_435_761),
        b: -(seed as i32) * 7,
        c: seed as f32 * 0.25 - 3.5,
        d: u64::MAX - s,
        e: i64::MIN + s as i64,
        f: [1.5, -0.0, f32::MAX],
        g: [s << 33, u64::MAX / 3],
        h: (0..seed % 17).map(|i| i as f32 / 3.0).collect(),
        i: (0..s % 5).map(|i| (i << 40) | s).collect(),
        j: (0..seed % 9).map(|i| i as i32 - 4).collect(),
    }
}
