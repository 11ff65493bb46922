//! The fixed 64-byte envelope header that precedes every payload in a queue slot.
//!
//! | offset | size | field            | meaning                                              |
//! |-------:|-----:|------------------|------------------------------------------------------|
//! |      0 |    4 | `magic`          | [`ENVELOPE_MAGIC`] (`"RKM1"` little-endian)          |
//! |      4 |    2 | `version`        | [`ENVELOPE_VERSION`]                                 |
//! |      6 |    2 | `flags`          | `FLAG_*` bits                                        |
//! |      8 |    8 | `type_id`        | [`crate::message::RingMessage::message_type`]       |
//! |     16 |    8 | `message_id`     | process-unique id                                    |
//! |     24 |    8 | `correlation_id` | request/reply pairing, 0 = none                      |
//! |     32 |    8 | `hlc`            | sender's HLC, packed (see [`crate::hlc`])            |
//! |     40 |    4 | `source`         | sending kernel id (0 = host)                         |
//! |     44 |    4 | `destination`    | receiving kernel id (0 = host)                       |
//! |     48 |    4 | `payload_len`    | payload bytes following the header                   |
//! |     52 |    4 | `hlc_node`       | node id of the `hlc` timestamp                       |
//! |     56 |    4 | `checksum`       | payload checksum when `FLAG_CHECKSUM` is set, else 0 |
//! |     60 |    4 | `reserved`       | zero                                                 |
//!
//! All fields are little-endian, naturally aligned, with no padding, so GPU code can read the
//! header as a struct. The checksum is off on the in-process path (the bytes never leave the
//! process's own memory) and meant for bytes that cross a trust or transport boundary.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of [`EnvelopeHeader`] in bytes.
pub const ENVELOPE_HEADER_SIZE: usize = 64;
/// `"RKM1"` as a little-endian `u32`.
pub const ENVELOPE_MAGIC: u32 = u32::from_le_bytes(*b"RKM1");
/// Current envelope version.
pub const ENVELOPE_VERSION: u16 = 1;
/// The message answers a request (its `correlation_id` names the request).
pub const FLAG_REPLY: u16 = 1 << 0;
/// The reply reports a failure; the payload is a UTF-8 error text.
pub const FLAG_ERROR_REPLY: u16 = 1 << 1;
/// `checksum` holds [`payload_checksum`] of the payload.
pub const FLAG_CHECKSUM: u16 = 1 << 2;
/// With `FLAG_ERROR_REPLY`: the kernel has failed (as opposed to one handler call failing).
pub const FLAG_KERNEL_FAILED: u16 = 1 << 3;

/// The envelope header (layout in the [module docs](self)).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct EnvelopeHeader {
    /// [`ENVELOPE_MAGIC`].
    pub magic: u32,
    /// [`ENVELOPE_VERSION`].
    pub version: u16,
    /// `FLAG_*` bits.
    pub flags: u16,
    /// Message type id.
    pub type_id: u64,
    /// Message id.
    pub message_id: u64,
    /// Correlation id (0 = none).
    pub correlation_id: u64,
    /// Packed HLC of the sender.
    pub hlc: u64,
    /// Source kernel id (0 = host).
    pub source: u32,
    /// Destination kernel id (0 = host).
    pub destination: u32,
    /// Payload length in bytes.
    pub payload_len: u32,
    /// Node id of the HLC timestamp.
    pub hlc_node: u32,
    /// Payload checksum (with `FLAG_CHECKSUM`).
    pub checksum: u32,
    /// Zero.
    pub reserved: u32,
}

/// Field name, byte offset and byte size of every [`EnvelopeHeader`] field, for device-side checks.
pub const ENVELOPE_FIELDS: &[(&str, usize, usize)] = &[
    ("magic", 0, 4),
    ("version", 4, 2),
    ("flags", 6, 2),
    ("type_id", 8, 8),
    ("message_id", 16, 8),
    ("correlation_id", 24, 8),
    ("hlc", 32, 8),
    ("source", 40, 4),
    ("destination", 44, 4),
    ("payload_len", 48, 4),
    ("hlc_node", 52, 4),
    ("checksum", 56, 4),
    ("reserved", 60, 4),
];

const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<EnvelopeHeader>() == ENVELOPE_HEADER_SIZE);
    assert!(align_of::<EnvelopeHeader>() == 8);
    assert!(offset_of!(EnvelopeHeader, magic) == 0);
    assert!(offset_of!(EnvelopeHeader, version) == 4);
    assert!(offset_of!(EnvelopeHeader, flags) == 6);
    assert!(offset_of!(EnvelopeHeader, type_id) == 8);
    assert!(offset_of!(EnvelopeHeader, message_id) == 16);
    assert!(offset_of!(EnvelopeHeader, correlation_id) == 24);
    assert!(offset_of!(EnvelopeHeader, hlc) == 32);
    assert!(offset_of!(EnvelopeHeader, source) == 40);
    assert!(offset_of!(EnvelopeHeader, destination) == 44);
    assert!(offset_of!(EnvelopeHeader, payload_len) == 48);
    assert!(offset_of!(EnvelopeHeader, hlc_node) == 52);
    assert!(offset_of!(EnvelopeHeader, checksum) == 56);
    assert!(offset_of!(EnvelopeHeader, reserved) == 60);
};

/// The per-send fields of an envelope (everything but the type, id and length).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnvelopeMeta {
    /// Correlation id (0 = none).
    pub correlation_id: u64,
    /// Source kernel id.
    pub source: u32,
    /// Destination kernel id.
    pub destination: u32,
    /// Sender's HLC timestamp.
    pub hlc: crate::hlc::HlcTimestamp,
    /// `FLAG_*` bits.
    pub flags: u16,
}

/// 32-bit payload checksum: a multiply-xor hash over 8-byte little-endian words (fast, not
/// cryptographic; it catches torn or corrupted transfers).
#[must_use]
pub fn payload_checksum(bytes: &[u8]) -> u32 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = bytes.len() as u64 ^ K;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(K).rotate_left(29);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h ^ u64::from_le_bytes(tail)).wrapping_mul(K);
    (h ^ (h >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of_val};

    #[test]
    fn field_table_is_exact() {
        let h = <EnvelopeHeader as zerocopy::FromZeros>::new_zeroed();
        macro_rules! row {
            ($f:ident) => {
                (stringify!($f), offset_of!(EnvelopeHeader, $f), size_of_val(&h.$f))
            };
        }
        let actual = [
            row!(magic),
            row!(version),
            row!(flags),
            row!(type_id),
            row!(message_id),
            row!(correlation_id),
            row!(hlc),
            row!(source),
            row!(destination),
            row!(payload_len),
            row!(hlc_node),
            row!(checksum),
            row!(reserved),
        ];
        assert_eq!(ENVELOPE_FIELDS, &actual[..]);
    }
}
