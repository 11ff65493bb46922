//! Prints the generated CUDA C source of the `adder` test kernel (used by
//! `scripts/cuda_compile_check.py`, which compiles it with NVRTC and ptxas).
//!
//! `cargo run -q -p ringkernel-codegen --example emit_cuda > adder.cu`

#[path = "../tests/kernels/adder_types.rs"]
mod adder_types;

fn main() {
    print!("{}", adder_types::adder_source::<ringkernel_codegen::cuda::CudaC>());
}
