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

/// The kernel's persistent state.
#[derive(GpuType, Default, Clone, Debug, PartialEq)]
#[message(crate = "ringkernel_core")]
pub struct AdderState {
    pub total: u64,
    pub handled: u32,
}

/// The complete generated source of the adder kernel for C-family dialect `D`.
pub fn adder_source<D: ringkernel_codegen::c_family::CDialect>() -> String {
    use ringkernel_codegen::c_family::{emit_kernel, CKernelSpec};
    use ringkernel_codegen::types::{GpuTypeDesc, KernelTypes};
    use ringkernel_core::message::RingMessage;
    let messages = [GpuTypeDesc::message::<AdderRequest>(), GpuTypeDesc::message::<AdderReply>()];
    emit_kernel::<D>(&CKernelSpec {
        types: KernelTypes {
            state: GpuTypeDesc::of::<AdderState>(),
            messages: &messages,
            handled: &[AdderRequest::message_type()],
        },
        user_source: include_str!("adder.c"),
    })
    .expect("adder kernel generates")
}
