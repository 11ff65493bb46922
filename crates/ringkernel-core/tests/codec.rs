//! Envelope and payload codec tests: round trips on both payload paths, and every malformed
//! input gives a typed error (never a panic), including random bytes (proptest).

use proptest::prelude::*;
use ringkernel_core::hlc::HlcTimestamp;
use ringkernel_core::message::{
    decode, decode_header, encode, DecodeError, EncodeError, EnvelopeMeta, MessageRegistry, RegistryError,
    RingMessage, ENVELOPE_HEADER_SIZE, FLAG_CHECKSUM,
};
use ringkernel_derive::RingMessage;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

#[derive(RingMessage, IntoBytes, FromBytes, Immutable, KnownLayout, Clone, Copy, Debug, PartialEq)]
#[message(pod, type_id = 0x10, crate = "ringkernel_core")]
#[repr(C)]
struct Pod64 {
    words: [u64; 8],
}

#[derive(RingMessage, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
#[message(type_id = 0x1001, crate = "ringkernel_core")]
struct AddRequest {
    a: Vec<f32>,
    b: Vec<f32>,
}

#[derive(RingMessage, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
#[message(crate = "ringkernel_core")]
struct Hashed {
    name: String,
}

#[derive(RingMessage, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
#[message(type_id = 0x1001, crate = "ringkernel_core")]
struct Impostor {
    x: u32,
}

/// Slot-like buffer: 16-byte aligned, as queue slots are.
#[repr(C, align(16))]
struct Slot([u8; 4096]);

fn meta() -> EnvelopeMeta {
    EnvelopeMeta {
        correlation_id: 7,
        source: 1,
        destination: 2,
        hlc: HlcTimestamp::new(1000, 3, 1),
        flags: 0,
    }
}

#[test]
fn pod_round_trip() {
    let mut slot = Slot([0; 4096]);
    let m = Pod64 { words: [1, 2, 3, 4, 5, 6, 7, 8] };
    let n = encode(&m, &meta(), &mut slot.0).unwrap();
    assert_eq!(n, ENVELOPE_HEADER_SIZE + 64);
    let (h, back) = decode::<Pod64>(&slot.0[..n]).unwrap();
    assert_eq!(back, m);
    assert_eq!((h.correlation_id, h.source, h.destination), (7, 1, 2));
    assert_eq!(HlcTimestamp::from_packed(h.hlc, h.hlc_node), HlcTimestamp::new(1000, 3, 1));
}

#[test]
fn rkyv_round_trip_add_request() {
    let mut slot = Slot([0; 4096]);
    let m = AddRequest { a: (0..256).map(|i| i as f32).collect(), b: vec![0.5; 256] };
    let n = encode(&m, &meta(), &mut slot.0).unwrap();
    let (_, back) = decode::<AddRequest>(&slot.0[..n]).unwrap();
    assert_eq!(back, m);
}

#[test]
fn oversized_payload_is_typed_error() {
    let mut slot = Slot([0; 4096]);
    let m = AddRequest { a: vec![1.0; 1000], b: vec![2.0; 1000] };
    match encode(&m, &meta(), &mut slot.0[..512]) {
        Err(EncodeError::PayloadTooLarge { needed, capacity, .. }) => {
            assert!(needed >= 8000);
            assert_eq!(capacity, 512 - ENVELOPE_HEADER_SIZE);
        }
        other => panic!("{other:?}"),
    }
    let p = Pod64 { words: [0; 8] };
    assert!(matches!(
        encode(&p, &meta(), &mut slot.0[..100]),
        Err(EncodeError::PayloadTooLarge { needed: 64, .. })
    ));
}

#[test]
fn malformed_envelopes_are_typed_errors() {
    let mut slot = Slot([0; 4096]);
    let n = encode(&Pod64 { words: [9; 8] }, &meta(), &mut slot.0).unwrap();
    let good = slot.0[..n].to_vec();

    assert!(matches!(decode_header(&good[..10]), Err(DecodeError::Truncated { len: 10 })));
    let mut bad = good.clone();
    bad[0] ^= 0xFF;
    assert!(matches!(decode_header(&bad), Err(DecodeError::BadMagic(_))));
    let mut bad = good.clone();
    bad[4] = 9;
    assert!(matches!(decode_header(&bad), Err(DecodeError::UnsupportedVersion(9))));
    assert!(matches!(decode_header(&good[..n - 1]), Err(DecodeError::PayloadLength { payload_len: 64, .. })));
    assert!(matches!(decode::<AddRequest>(&good), Err(DecodeError::TypeMismatch { found: 0x10, .. })));
    // A payload shorter than the plain-data type.
    let mut short = good.clone();
    short[48..52].copy_from_slice(&10u32.to_le_bytes());
    assert!(matches!(decode::<Pod64>(&short), Err(DecodeError::Payload { .. })));
    // Corrupted rkyv archive: bytecheck rejects it.
    let n = encode(&AddRequest { a: vec![1.0; 4], b: vec![2.0; 4] }, &meta(), &mut slot.0).unwrap();
    let mut corrupt = slot.0[..n].to_vec();
    let last = corrupt.len() - 4;
    corrupt[last..].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    assert!(matches!(decode::<AddRequest>(&corrupt), Err(DecodeError::Payload { .. })));
}

#[test]
fn checksum_detects_corruption() {
    let mut slot = Slot([0; 4096]);
    let m = EnvelopeMeta { flags: FLAG_CHECKSUM, ..meta() };
    let n = encode(&Pod64 { words: [3; 8] }, &m, &mut slot.0).unwrap();
    assert!(decode::<Pod64>(&slot.0[..n]).is_ok());
    slot.0[ENVELOPE_HEADER_SIZE + 5] ^= 1;
    assert!(matches!(decode::<Pod64>(&slot.0[..n]), Err(DecodeError::Checksum { .. })));
}

#[test]
fn derived_ids_and_duplicates() {
    assert_eq!(AddRequest::message_type(), 0x1001);
    assert!(Hashed::message_type() & (1 << 63) != 0, "path-derived ids set bit 63");
    assert_eq!(
        Hashed::message_type(),
        ringkernel_core::message::type_id_from_path(concat!(module_path!(), "::Hashed"))
    );
    let mut reg = MessageRegistry::new();
    reg.register::<AddRequest>().unwrap();
    reg.register::<AddRequest>().unwrap();
    match reg.register::<Impostor>() {
        Err(RegistryError::DuplicateTypeId { id: 0x1001, first, second }) => {
            assert!(first.ends_with("AddRequest") && second.ends_with("Impostor"));
        }
        other => panic!("{other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random bytes never panic the decoder, whichever type is asked for.
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode_header(&bytes);
        let _ = decode::<Pod64>(&bytes);
        let _ = decode::<AddRequest>(&bytes);
        let _ = decode::<Hashed>(&bytes);
    }

    /// Random payloads behind a valid header (the realistic attack) never panic either.
    #[test]
    fn valid_header_random_payload_never_panics(payload in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut slot = Slot([0; 4096]);
        let n = encode(&Hashed { name: String::new() }, &meta(), &mut slot.0).unwrap();
        slot.0[48..52].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        slot.0[ENVELOPE_HEADER_SIZE..ENVELOPE_HEADER_SIZE + payload.len()].copy_from_slice(&payload);
        let _ = n;
        let _ = decode::<Hashed>(&slot.0[..ENVELOPE_HEADER_SIZE + payload.len()]);
        let _ = decode::<AddRequest>(&slot.0[..ENVELOPE_HEADER_SIZE + payload.len()]);
    }

    #[test]
    fn rkyv_round_trip_any(a in prop::collection::vec(any::<f32>().prop_filter("no NaN", |f| !f.is_nan()), 0..200),
                            b in prop::collection::vec(any::<f32>().prop_filter("no NaN", |f| !f.is_nan()), 0..200)) {
        let mut slot = Slot([0; 4096]);
        let m = AddRequest { a, b };
        let n = encode(&m, &meta(), &mut slot.0).unwrap();
        prop_assert_eq!(decode::<AddRequest>(&slot.0[..n]).unwrap().1, m);
    }
}
