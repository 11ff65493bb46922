use ringkernel::prelude::*;

#[derive(RingMessage, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Msg {
    x: u8,
}

#[ring_kernel(name = "k")]
fn handler(state: u32, msg: Msg) {}

fn main() {}
