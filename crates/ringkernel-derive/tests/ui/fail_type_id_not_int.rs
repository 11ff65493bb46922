use ringkernel::prelude::*;

#[derive(RingMessage, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[message(type_id = "0x10")]
struct Msg {
    x: u8,
}

fn main() {}
