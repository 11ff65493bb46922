//! Encoding messages into queue slots and decoding them back, with validation.
//!
//! Two payload paths:
//!
//! * [`pod`]: `#[repr(C)]` plain-data types (`zerocopy`'s `IntoBytes`/`FromBytes`). The payload is
//!   the value's bytes, readable by GPU code as-is; encode and decode are one copy each.
//! * [`rkyv_codec`]: any `rkyv` 0.8 type (`Vec<f32>`, `String`, nested structs). Encoding
//!   serialises straight into the slot (no allocation); decoding validates the archive with
//!   `bytecheck` before touching it, so malformed bytes are an error, never undefined behaviour.
//!
//! [`decode_header`] validates everything about the envelope that does not depend on the payload
//! type (magic, version, length bounds, checksum); [`decode`] adds the type-id check.

use super::envelope::{
    payload_checksum, EnvelopeHeader, EnvelopeMeta, ENVELOPE_HEADER_SIZE, ENVELOPE_MAGIC, ENVELOPE_VERSION,
    FLAG_CHECKSUM,
};
use super::id::MessageId;
use zerocopy::FromBytes;

/// A message type that can travel through RingKernel queues.
///
/// Implement it with `#[derive(RingMessage)]` (from `ringkernel-derive`), or by hand using the
/// [`pod`] or [`rkyv_codec`] helpers for the two payload methods.
pub trait RingMessage: Sized + Send + 'static {
    /// The type id written into every envelope of this type. Must be unique in the program;
    /// [`super::MessageRegistry`] rejects duplicates.
    fn message_type() -> u64;

    /// The id of this message instance. The default draws a fresh process-unique id.
    fn message_id(&self) -> MessageId {
        MessageId::generate()
    }

    /// Human-readable type name for errors.
    fn type_name() -> &'static str {
        core::any::type_name::<Self>()
    }

    /// Writes the payload into `out` and returns its length, or [`EncodeError::PayloadTooLarge`]
    /// if it does not fit.
    fn encode_payload(&self, out: &mut [u8]) -> Result<usize, EncodeError>;

    /// Reads a payload written by [`RingMessage::encode_payload`], validating it.
    fn decode_payload(bytes: &[u8]) -> Result<Self, DecodeError>;
}

/// Failure to encode a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The payload does not fit the slot.
    #[error("payload of {type_name} needs {needed} bytes but the slot holds {capacity} (raise LaunchOptions::max_message_bytes)")]
    PayloadTooLarge {
        /// Message type name.
        type_name: &'static str,
        /// Bytes needed for the payload.
        needed: usize,
        /// Payload bytes available in the slot.
        capacity: usize,
    },
    /// The serialiser failed for another reason.
    #[error("cannot serialise {type_name}: {detail}")]
    Serialize {
        /// Message type name.
        type_name: &'static str,
        /// Serialiser diagnostic.
        detail: String,
    },
}

/// Failure to decode a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than an envelope header.
    #[error("message truncated: {len} bytes, an envelope header needs {ENVELOPE_HEADER_SIZE}")]
    Truncated {
        /// Bytes available.
        len: usize,
    },
    /// Not an envelope.
    #[error("bad envelope magic {0:#010x}")]
    BadMagic(u32),
    /// Envelope from a newer or older format.
    #[error("unsupported envelope version {0} (this build reads {ENVELOPE_VERSION})")]
    UnsupportedVersion(u16),
    /// `payload_len` points past the end of the bytes.
    #[error("payload length {payload_len} exceeds the {available} bytes after the header")]
    PayloadLength {
        /// Declared length.
        payload_len: u32,
        /// Bytes available.
        available: usize,
    },
    /// The checksum does not match the payload.
    #[error("payload checksum mismatch: header says {expected:#010x}, payload hashes to {actual:#010x}")]
    Checksum {
        /// Checksum in the header.
        expected: u32,
        /// Checksum of the bytes.
        actual: u32,
    },
    /// The envelope carries a different message type.
    #[error("expected message type {expected_name} ({expected:#x}), found type id {found:#x}")]
    TypeMismatch {
        /// Expected type id.
        expected: u64,
        /// Expected type name.
        expected_name: &'static str,
        /// Type id in the envelope.
        found: u64,
    },
    /// The payload bytes are not a valid value of the type.
    #[error("invalid {type_name} payload: {detail}")]
    Payload {
        /// Message type name.
        type_name: &'static str,
        /// Validator diagnostic.
        detail: String,
    },
}

/// Encodes `msg` with `meta` into `slot`; returns the bytes used (header + payload).
#[inline]
pub fn encode<M: RingMessage>(msg: &M, meta: &EnvelopeMeta, slot: &mut [u8]) -> Result<usize, EncodeError> {
    if slot.len() < ENVELOPE_HEADER_SIZE {
        return Err(EncodeError::PayloadTooLarge { type_name: M::type_name(), needed: 0, capacity: 0 });
    }
    let (head, body) = slot.split_at_mut(ENVELOPE_HEADER_SIZE);
    let len = msg.encode_payload(body)?;
    debug_assert!(len <= body.len());
    let (flags, checksum) = if meta.flags & FLAG_CHECKSUM != 0 {
        (meta.flags, payload_checksum(&body[..len]))
    } else {
        (meta.flags, 0)
    };
    // Written as eight 64-bit little-endian words (the layout of `EnvelopeHeader`): a reader that
    // loads the header right after (same thread) then gets store-to-load forwarding instead of a
    // stall on a wide load spanning narrow stores.
    let words: [u64; 8] = [
        u64::from(ENVELOPE_MAGIC) | u64::from(ENVELOPE_VERSION) << 32 | u64::from(flags) << 48,
        M::message_type(),
        msg.message_id().0,
        meta.correlation_id,
        meta.hlc.packed(),
        u64::from(meta.source) | u64::from(meta.destination) << 32,
        len as u64 | u64::from(meta.hlc.node_id()) << 32,
        u64::from(checksum),
    ];
    for (dst, w) in head.chunks_exact_mut(8).zip(words) {
        dst.copy_from_slice(&w.to_le_bytes());
    }
    Ok(ENVELOPE_HEADER_SIZE + len)
}

/// Validates an envelope and returns its header and payload.
#[inline]
pub fn decode_header(bytes: &[u8]) -> Result<(EnvelopeHeader, &[u8]), DecodeError> {
    let Ok((header, rest)) = EnvelopeHeader::read_from_prefix(bytes) else {
        return Err(DecodeError::Truncated { len: bytes.len() });
    };
    if header.magic != ENVELOPE_MAGIC {
        return Err(DecodeError::BadMagic(header.magic));
    }
    if header.version != ENVELOPE_VERSION {
        return Err(DecodeError::UnsupportedVersion(header.version));
    }
    let Some(payload) = rest.get(..header.payload_len as usize) else {
        return Err(DecodeError::PayloadLength { payload_len: header.payload_len, available: rest.len() });
    };
    if header.flags & FLAG_CHECKSUM != 0 {
        let actual = payload_checksum(payload);
        if actual != header.checksum {
            return Err(DecodeError::Checksum { expected: header.checksum, actual });
        }
    }
    Ok((header, payload))
}

/// Validates an envelope of type `M` and decodes it.
#[inline]
pub fn decode<M: RingMessage>(bytes: &[u8]) -> Result<(EnvelopeHeader, M), DecodeError> {
    let (header, payload) = decode_header(bytes)?;
    if header.type_id != M::message_type() {
        return Err(DecodeError::TypeMismatch {
            expected: M::message_type(),
            expected_name: M::type_name(),
            found: header.type_id,
        });
    }
    Ok((header, M::decode_payload(payload)?))
}

/// Plain-data payloads: the value's own bytes.
pub mod pod {
    use super::{DecodeError, EncodeError, RingMessage};
    use zerocopy::{FromBytes, Immutable, IntoBytes};

    /// Copies `value`'s bytes into `out`.
    #[inline]
    pub fn encode<T: IntoBytes + Immutable + RingMessage>(
        value: &T,
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let bytes = value.as_bytes();
        let Some(dst) = out.get_mut(..bytes.len()) else {
            return Err(EncodeError::PayloadTooLarge {
                type_name: T::type_name(),
                needed: bytes.len(),
                capacity: out.len(),
            });
        };
        dst.copy_from_slice(bytes);
        Ok(bytes.len())
    }

    /// Reads a `T` from exactly `size_of::<T>()` bytes (any alignment).
    #[inline]
    pub fn decode<T: FromBytes + RingMessage>(bytes: &[u8]) -> Result<T, DecodeError> {
        T::read_from_bytes(bytes).map_err(|_| DecodeError::Payload {
            type_name: T::type_name(),
            detail: format!("expected {} bytes, got {}", core::mem::size_of::<T>(), bytes.len()),
        })
    }
}

/// Variable-size payloads through rkyv 0.8, validated with bytecheck on decode.
pub mod rkyv_codec {
    use super::{DecodeError, EncodeError, RingMessage};
    use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
    use rkyv::bytecheck::CheckBytes;
    use rkyv::rancor::Error as RkyvError;
    use rkyv::ser::allocator::ArenaHandle;
    use rkyv::ser::writer::Buffer;
    use rkyv::util::AlignedVec;
    use rkyv::{Archive, Deserialize, Serialize};

    /// Alignment rkyv archives in slots rely on; slot payloads start 16-byte aligned.
    pub const ARCHIVE_ALIGN: usize = 16;

    /// Serialises `value` directly into `out` (no allocation unless it does not fit, in which case
    /// it is measured once to report the size needed).
    pub fn encode<T>(value: &T, out: &mut [u8]) -> Result<usize, EncodeError>
    where
        T: RingMessage + for<'a, 'b> Serialize<HighSerializer<Buffer<'b>, ArenaHandle<'a>, RkyvError>>,
        T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, RkyvError>>,
    {
        let capacity = out.len();
        match rkyv::api::high::to_bytes_in::<Buffer<'_>, RkyvError>(value, Buffer::from(out)) {
            Ok(buf) => Ok(buf.len()),
            Err(e) => match rkyv::to_bytes::<RkyvError>(value) {
                Ok(full) if full.len() > capacity => Err(EncodeError::PayloadTooLarge {
                    type_name: T::type_name(),
                    needed: full.len(),
                    capacity,
                }),
                _ => Err(EncodeError::Serialize { type_name: T::type_name(), detail: e.to_string() }),
            },
        }
    }

    /// Validates `bytes` as an archived `T` and deserialises it.
    pub fn decode<T>(bytes: &[u8]) -> Result<T, DecodeError>
    where
        T: RingMessage + Archive,
        T::Archived:
            for<'a> CheckBytes<HighValidator<'a, RkyvError>> + Deserialize<T, HighDeserializer<RkyvError>>,
    {
        let fail = |e: RkyvError| DecodeError::Payload { type_name: T::type_name(), detail: e.to_string() };
        if (bytes.as_ptr() as usize).is_multiple_of(ARCHIVE_ALIGN) {
            rkyv::from_bytes::<T, RkyvError>(bytes).map_err(fail)
        } else {
            // Bytes from outside a slot may be misaligned; realign (copy) rather than reject.
            let mut v = AlignedVec::<ARCHIVE_ALIGN>::with_capacity(bytes.len());
            v.extend_from_slice(bytes);
            rkyv::from_bytes::<T, RkyvError>(&v).map_err(fail)
        }
    }
}
