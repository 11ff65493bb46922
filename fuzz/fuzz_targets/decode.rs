//! Fuzz the envelope and payload decoders: any bytes must give a value or a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkernel_core::message::{decode, decode_header, RingMessage};
use ringkernel_derive::RingMessage;

#[derive(RingMessage, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
#[message(type_id = 0x1001, crate = "ringkernel_core")]
struct AddRequest {
    a: Vec<f32>,
    b: Vec<f32>,
}

#[derive(RingMessage, zerocopy::IntoBytes, zerocopy::FromBytes, zerocopy::Immutable, Debug)]
#[message(pod, type_id = 0x10, crate = "ringkernel_core")]
#[repr(C)]
struct Pod64 {
    words: [u64; 8],
}

fuzz_target!(|data: &[u8]| {
    let _ = decode_header(data);
    let _ = decode::<AddRequest>(data);
    let _ = decode::<Pod64>(data);
    // Payload decoders directly, so the fuzzer need not first find a valid envelope header.
    let _ = AddRequest::decode_payload(data);
    let _ = Pod64::decode_payload(data);
});
