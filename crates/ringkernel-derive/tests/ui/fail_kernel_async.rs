use ringkernel::prelude::*;

#[derive(RingMessage, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Msg {
    x: u8,
}

#[ring_kernel]
async fn handler(state: &mut u32, msg: Msg) {}

fn main() {}
