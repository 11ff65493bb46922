// Message types of the "adder" test kernel, shared by tests/host_shim.rs and
// examples/emit_cuda.rs (included with `#[path]`). The CUDA C structs, readers and writers the
// handler (adder.c) uses are generated from these.

use ringkernel_derive::{GpuType, RingMessage};

/// `a + b + sum(terms)` is added to the running total.
#[derive(RingMessage, GpuType, Clone, Debug, PartialEq)]
#[message(gpu, type_id = 0xA001, crate = "ringkernel_core")]
pub struct AdderRequest {
    pub a: u64,
    pub b: u64,
    pub terms: Vec<u32>,
}

/// The sum, the running total, and the request's terms echoed back.
#[derive(RingMessage, GpuType, Clone, Debug, PartialEq)]
#[message(gpu, type_id = 0xA002, crate = "ringkernel_core")]
pub struct AdderReply {
    pub sum: u64,
    pub running_total: u64,
    pub echo: Vec<u32>,
}

/// The generated declarations the handler is written against.
pub fn adder_types() -> Vec<ringkernel_codegen::wgsl::WgslType> {
    use ringkernel_codegen::wgsl::WgslType;
    vec![WgslType::message::<AdderRequest>(), WgslType::message::<AdderReply>()]
}
