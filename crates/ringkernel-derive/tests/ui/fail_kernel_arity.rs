use ringkernel::prelude::*;

#[ring_kernel(name = "k")]
fn handler(state: &mut u32) {}

fn main() {}
