use ringkernel::prelude::*;

#[derive(RingMessage, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[message(type_id = 0x8000000000000001)]
struct Msg {
    x: u8,
}

fn main() {}
