//! Prints the generated CUDA C source of the `adder` test kernel (used by
//! `scripts/cuda_compile_check.py`, which compiles it with NVRTC and ptxas).
//!
//! `cargo run -q -p ringkernel-codegen --example emit_cuda > adder.cu`

use ringkernel_codegen::{emit_cuda_kernel, KernelSource};

fn main() {
    let src =
        emit_cuda_kernel(&KernelSource { name: "adder", handler: include_str!("../tests/kernels/adder.c") });
    print!("{src}");
}
