//! The one validation rule set for envelopes that come from outside the runtime's own kernels:
//! raw bytes handed to [`KernelHandle::try_send_bytes`](super::KernelHandle::try_send_bytes) (and
//! later the network). Every backend's kernels are fed only through it or through the runtime's
//! own encoder, so a kernel on any backend sees the same, valid envelopes.
//!
//! The rules, in order, each a typed [`Error`] (nothing is queued when one fails):
//! 1. the kernel takes messages ([`Error::NotAccepting`]);
//! 2. the bytes fit one input slot ([`Error::Oversized`]);
//! 3. the header: length, magic, version, payload length, and the checksum when
//!    `FLAG_CHECKSUM` is set ([`Error::Decode`]);
//! 4. a one-way message from the host: no reply flags, no correlation id (only `call` makes
//!    those, so raw bytes can never complete somebody else's call), source 0 (the host: raw
//!    bytes cannot pose as a kernel, whose replies would be routed to it), destination 0 or this
//!    kernel (the instance, for a kernel group) ([`Error::Decode`] with [`DecodeError::Payload`]);
//! 5. a message type the kernel handles ([`Error::UnknownMessageType`]);
//! 6. the payload decodes as that type: fixed fields present, slices inside the payload
//!    ([`Error::Decode`]; the same decoder the CPU handler runs, for GPU kernels too);
//! 7. the timestamp is not further ahead of the host's wall clock than the drift bound; it is
//!    merged into the host clock, so the host's later messages are later than it
//!    ([`Error::Hlc`] with [`HlcError::DriftExceeded`](crate::hlc::HlcError), naming both
//!    timestamps; the host clock is unchanged).

use super::cell::KernelCell;
use crate::hlc::{HlcClock, HlcTimestamp};
use crate::message::{decode_header, DecodeError, EnvelopeHeader, KernelId, FLAG_ERROR_REPLY, FLAG_REPLY};
use crate::{Error, Result};

/// Applies the rules of the [module docs](self) to `bytes` for `cell`'s kernel, sent to `dest`
/// (the kernel's id, or one of its group's instance ids).
pub(crate) fn validate(
    cell: &KernelCell,
    dest: KernelId,
    host_clock: &HlcClock,
    bytes: &[u8],
) -> Result<EnvelopeHeader> {
    let state = cell.state();
    if !state.accepts_messages() {
        return Err(cell.not_accepting());
    }
    let slot = cell.input().slot_size() as usize;
    if bytes.len() > slot {
        return Err(Error::Oversized { kernel: cell.name().to_string(), len: bytes.len(), max: slot });
    }
    let (header, payload) = decode_header(bytes)?;
    let refuse = |detail: String| Err(Error::Decode(DecodeError::Payload { type_name: "envelope", detail }));
    if header.flags & (FLAG_REPLY | FLAG_ERROR_REPLY) != 0 {
        return refuse(format!(
            "flags {:#x} mark a reply; raw bytes may only be one-way messages",
            header.flags
        ));
    }
    if header.correlation_id != 0 {
        return refuse(format!(
            "correlation id {:#x}: raw bytes may only be one-way messages (use call for requests)",
            header.correlation_id
        ));
    }
    if header.source != KernelId::HOST.0 {
        return refuse(format!("source {}: raw bytes come from the host (source 0)", header.source));
    }
    if header.destination != 0 && header.destination != dest.0 {
        return refuse(format!("destination {} is not kernel {dest}", header.destination));
    }
    cell.check_payload(header.type_id, payload)?;
    host_clock.update(&HlcTimestamp::from_packed(header.hlc, header.hlc_node))?;
    Ok(header)
}
