//! Prints the generated CUDA C source of the `adder` test kernel (used by
//! `scripts/cuda_compile_check.py`, which compiles it with NVRTC and ptxas).
//!
//! `cargo run -q -p ringkernel-codegen --example emit_cuda > adder.cu`

#[path = "../tests/kernels/adder_types.rs"]
mod adder_types;

use ringkernel_codegen::{emit_cuda_kernel, KernelSource};

fn main() {
    let types = adder_types::adder_types();
    let src = emit_cuda_kernel(&KernelSource {
        name: "adder",
        handler: include_str!("../tests/kernels/adder.c"),
        types: &types,
    });
    print!("{src}");
}
