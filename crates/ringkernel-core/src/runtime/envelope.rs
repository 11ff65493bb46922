//! Envelope-level values of the runtime, shared by the host handle, the executors and the device
//! agents: a message taken off a queue undecoded ([`RawMessage`]), the error reply's payload
//! ([`ErrorReply`]), and the one builder of error-reply envelopes ([`error_reply_envelope`]).
//!
//! They depend on the message layer only, so every runtime module can use them without importing
//! the handle or the cell.

use crate::hlc::HlcTimestamp;
use crate::message::{
    decode_header, encode, DecodeError, EncodeError, EnvelopeHeader, EnvelopeMeta, RingMessage,
    ENVELOPE_HEADER_SIZE, FLAG_ERROR_REPLY, FLAG_KERNEL_FAILED, FLAG_REPLY,
};

/// A message taken off a queue without decoding its payload (handed back, never dropped, when it
/// was not what the caller expected or could not be processed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    /// Its envelope.
    pub header: EnvelopeHeader,
    /// Its payload bytes.
    pub payload: Vec<u8>,
}

impl RawMessage {
    /// Copies a validated envelope out of a slot.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (header, payload) = decode_header(bytes)?;
        Ok(Self { header, payload: payload.to_vec() })
    }

    /// Decodes the payload as `M` (checking the type id).
    pub fn decode<M: RingMessage>(&self) -> Result<M, DecodeError> {
        if self.header.type_id != M::message_type() {
            return Err(DecodeError::TypeMismatch {
                expected: M::message_type(),
                expected_name: M::type_name(),
                found: self.header.type_id,
            });
        }
        M::decode_payload(&self.payload)
    }

    /// The sender's timestamp.
    pub fn timestamp(&self) -> HlcTimestamp {
        HlcTimestamp::from_packed(self.header.hlc, self.header.hlc_node)
    }
}

/// Payload of an error reply: UTF-8 text (type id reserved by the runtime).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply(pub String);

impl RingMessage for ErrorReply {
    fn message_type() -> u64 {
        0x7FFF_FFFF_FFFF_FF01
    }
    fn encode_payload(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let b = self.0.as_bytes();
        let capacity = out.len();
        let dst = out.get_mut(..b.len()).ok_or(EncodeError::PayloadTooLarge {
            type_name: Self::type_name(),
            needed: b.len(),
            capacity,
        })?;
        dst.copy_from_slice(b);
        Ok(b.len())
    }
    fn decode_payload(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(Self(String::from_utf8_lossy(bytes).into_owned()))
    }
}

/// The error reply kernel `source` sends for the request `correlation_id` of `destination`:
/// `FLAG_REPLY | FLAG_ERROR_REPLY` (plus `FLAG_KERNEL_FAILED` with `kernel_failed`, which the
/// caller reports as `Error::KernelFailed`), stamped `hlc`, the payload `text` cut at a character
/// boundary so that the envelope fits `slot_size` bytes.
///
/// Every error reply the runtime writes is built here: a failed request (`fail_request`), and the
/// calls still waiting when a kernel is aborted.
pub(crate) fn error_reply_envelope(
    source: u32,
    hlc: HlcTimestamp,
    correlation_id: u64,
    destination: u32,
    text: &str,
    kernel_failed: bool,
    slot_size: usize,
) -> Vec<u8> {
    let meta = EnvelopeMeta {
        correlation_id,
        source,
        destination,
        hlc,
        flags: FLAG_REPLY | FLAG_ERROR_REPLY | if kernel_failed { FLAG_KERNEL_FAILED } else { 0 },
    };
    let mut buf = vec![0u8; slot_size.max(ENVELOPE_HEADER_SIZE)];
    let text = truncate_to_char_boundary(text, buf.len() - ENVELOPE_HEADER_SIZE);
    let n = encode(&ErrorReply(text.to_string()), &meta, &mut buf).expect("truncated to fit");
    buf.truncate(n);
    buf
}

/// The longest prefix of `text` that is at most `max` bytes and ends on a character boundary
/// (an error reply's text must fit the output slot; cutting inside a multi-byte character would
/// panic in `String::truncate`).
fn truncate_to_char_boundary(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(all(test, not(ringkernel_loom)))]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        // "é" is two bytes: a limit of 2 falls inside it.
        assert_eq!(truncate_to_char_boundary("aé", 2), "a");
        assert_eq!(truncate_to_char_boundary("aé", 3), "aé");
        assert_eq!(truncate_to_char_boundary("€€", 4), "€");
        assert_eq!(truncate_to_char_boundary("€", 0), "");
        assert_eq!(truncate_to_char_boundary("abc", 10), "abc");
    }

    #[test]
    fn error_replies_fit_their_slot() {
        let text = "é".repeat(100);
        let b = error_reply_envelope(7, HlcTimestamp::from_packed(5 << 12, 7), 9, 0, &text, true, 64 + 11);
        assert_eq!(b.len(), 64 + 10, "cut before the character the 11th byte falls in");
        let (h, payload) = decode_header(&b).unwrap();
        assert_eq!((h.source, h.correlation_id, h.destination, h.hlc), (7, 9, 0, 5 << 12));
        assert_eq!(h.flags, FLAG_REPLY | FLAG_ERROR_REPLY | FLAG_KERNEL_FAILED);
        assert_eq!(h.type_id, ErrorReply::message_type());
        assert_eq!(ErrorReply::decode_payload(payload).unwrap().0, "é".repeat(5));
    }
}
