use ringkernel::prelude::*;

#[derive(RingMessage, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Wrapper<T> {
    inner: T,
}

fn main() {}
