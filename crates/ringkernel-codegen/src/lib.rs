//! RingKernel's GPU code generation: the crate that will emit, from the Rust message, state,
//! control-block and queue types, the matching CUDA C, WGSL and MSL declarations (one C-family
//! emitter, one zero-sized type per target), so device code never restates a layout by hand.
//!
//! **Status: not implemented.** What exists today is the layout data it will consume:
//! [`ringkernel_core::control_block::CONTROL_BLOCK_FIELDS`] and
//! [`ringkernel_core::message::ENVELOPE_FIELDS`], re-exported here.

pub use ringkernel_core::control_block::CONTROL_BLOCK_FIELDS;
pub use ringkernel_core::message::ENVELOPE_FIELDS;
