use ringkernel::prelude::*;

struct NotAMessage;

#[ring_kernel(name = "k")]
fn handler(state: &mut u32, msg: NotAMessage) {}

fn main() {}
