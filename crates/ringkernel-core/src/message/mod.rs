//! Messages: the fixed envelope header, identifiers, the [`RingMessage`] trait, the two payload
//! codecs (plain data via `zerocopy`, variable-size via `rkyv` with `bytecheck` validation) and the
//! registry that rejects two types claiming the same type id.
//!
//! A message in a queue slot is `[EnvelopeHeader: 64 B][payload: payload_len B]`.

mod codec;
mod envelope;
mod id;
mod registry;

pub use codec::{decode, decode_header, encode, pod, rkyv_codec, DecodeError, EncodeError, RingMessage};
pub use envelope::{
    payload_checksum, EnvelopeHeader, EnvelopeMeta, ENVELOPE_FIELDS, ENVELOPE_HEADER_SIZE, ENVELOPE_MAGIC,
    ENVELOPE_VERSION, FLAG_CHECKSUM, FLAG_ERROR_REPLY, FLAG_KERNEL_FAILED, FLAG_REPLY,
};
pub use id::{type_id_from_path, KernelId, MessageId, HASHED_TYPE_ID_BIT};
pub use registry::{MessageRegistry, RegistryError};
