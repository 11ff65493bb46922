//! Routing one envelope a device kernel wrote into its output queue (the host side of
//! `rk_reply_*`, `rk_emit_*`, `rk_send_*` and `rk_error`), the same way for every GPU backend:
//!
//! * an error reply (`FLAG_ERROR_REPLY`, payload = the handler's error code) is recorded on the
//!   kernel and, for a request, answered to the caller with the program's text for the code;
//! * a reply to a waiting `call` completes it; anything else for the host goes to the kernel's
//!   output queue;
//! * a K2K message goes into its target's input queue when the target takes messages, and is
//!   otherwise recorded and kept for the sender's terminate report (never dropped). A full target
//!   queue keeps it in the sender's outbox, in order.
//!
//! Targets come from the record's caches ([`ExecLocal`](crate::runtime::ExecLocal)'s, the same a
//! CPU handler's sends use): no directory lookup and no allocation per message once a target was
//! seen. A target cached by name that terminated is looked up again (a new kernel may have been
//! launched under the name); one cached by id stays (ids are not reused), and what is sent to it
//! is kept as for any target that stopped. A destination the device addressed by route index
//! ([`DeviceStep::ROUTE_BASE`]) is resolved by the route's name and patched into a reused copy
//! of the envelope at the destination field's fixed offset.

use super::record::Record;
use super::step::DeviceStep;
use crate::control_block::ErrorCode;
use crate::gpu::err;
use crate::message::{decode_header, EnvelopeHeader, KernelId, ENVELOPE_HEADER_SIZE, FLAG_ERROR_REPLY};
use crate::runtime::{ExecLocal, KernelCell, RawMessage, Target};
use std::sync::Arc;

/// Byte offset of the destination id in an encoded envelope.
const DESTINATION: usize = core::mem::offset_of!(EnvelopeHeader, destination);

impl<K> Record<K> {
    /// Routes one envelope `cell`'s kernel wrote (see the [module docs](self)). Returns `true`
    /// when it was a K2K message the device addressed by route index (it went through the host).
    pub fn route_output<S: DeviceStep<Kernel = K>>(&mut self, cell: &KernelCell, slot: &[u8]) -> bool {
        let (header, payload) = match decode_header(slot) {
            Ok(hp) => hp,
            Err(e) => {
                cell.record_error(
                    ErrorCode::Decode,
                    format!("a {} kernel wrote a malformed envelope: {e}", S::NAME),
                );
                return false;
            }
        };
        let bytes = &slot[..ENVELOPE_HEADER_SIZE + payload.len()];
        if header.flags & FLAG_ERROR_REPLY != 0 {
            let code = payload.get(..4).map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
            error_reply(&mut self.local, cell, &header, code, &S::describe_error(&self.def, code));
            return false;
        }
        if header.destination == KernelId::HOST.0 {
            self.local.deliver(cell, None, bytes);
            return false;
        }
        let route = S::ROUTE_BASE.and_then(|base| header.destination.checked_sub(base));
        let Some(dir) = self.dir.upgrade() else {
            deliver_or_keep(&mut self.local, cell, None, bytes);
            return route.is_some();
        };
        let Some(r) = route else {
            let target = self.local.resolve(&dir, Target::Id(KernelId(header.destination)));
            deliver_or_keep(&mut self.local, cell, target, bytes);
            return false;
        };
        let name = S::routes(&self.def).get(r as usize);
        match name.and_then(|n| self.local.resolve(&dir, Target::Name(n))) {
            Some(t) => {
                // The kernel wrote the route index; the envelope gets the target's id.
                self.patched.clear();
                self.patched.extend_from_slice(bytes);
                self.patched[DESTINATION..DESTINATION + 4].copy_from_slice(&t.id().0.to_le_bytes());
                deliver_or_keep(&mut self.local, cell, Some(t), &self.patched);
            }
            None => deliver_or_keep(&mut self.local, cell, None, bytes),
        }
        true
    }
}

/// An error reply the kernel wrote (its payload is `code`): recorded on the kernel and, for a
/// request, answered to the caller with `described`.
fn error_reply(
    local: &mut ExecLocal,
    cell: &KernelCell,
    header: &EnvelopeHeader,
    code: u32,
    described: &str,
) {
    let text = format!("handler error: {described}");
    let ec = match code {
        err::UNKNOWN_TYPE => ErrorCode::UnknownMessageType,
        err::MALFORMED => ErrorCode::Decode,
        _ => ErrorCode::HandlerError,
    };
    cell.record_error(ec, text.clone());
    let request =
        EnvelopeHeader { correlation_id: header.correlation_id, source: header.destination, ..*header };
    local.fail_request(cell, &request, &text, false);
}

/// A K2K envelope for `target`: delivered when the target takes messages, else recorded and kept
/// (returned through `cell`'s terminate report), never dropped.
fn deliver_or_keep(local: &mut ExecLocal, cell: &KernelCell, target: Option<Arc<KernelCell>>, bytes: &[u8]) {
    match target {
        Some(t) if t.state().accepts_messages() => local.deliver(cell, Some(t), bytes),
        _ => {
            cell.record_error(
                ErrorCode::QueueFull,
                format!("K2K target of {} is not running; message kept", cell.name()),
            );
            if let Ok(raw) = RawMessage::from_bytes(bytes) {
                cell.return_message(raw);
            }
        }
    }
}
