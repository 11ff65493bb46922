use ringkernel::prelude::*;

#[derive(RingMessage, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[message(typeid = 3)]
struct Msg {
    x: u8,
}

fn main() {}
