//! Host-side handling every GPU backend shares: what to do with an envelope a device kernel wrote
//! (an error reply, or a message for the host or another kernel), with a message a failed kernel
//! will never handle, with a handler that failed the kernel, with a device that failed, and with a
//! panic in the backend's own host code ([`runtime_panicked`], which the CPU backend uses too).
//! The wgpu dispatcher and the CUDA agent call these, so the semantics (which error a caller sees,
//! what comes back in a terminate report) are the CPU backend's on every device.

use super::cell::KernelCell;
use super::context::ExecLocal;
use super::handle::RawMessage;
use super::options::RestartPolicy;
use super::state::KernelState;
use crate::control_block::ErrorCode;
use crate::gpu::err;
use crate::message::{EnvelopeHeader, ENVELOPE_HEADER_SIZE};
use std::sync::Arc;

/// An error reply a kernel wrote (`FLAG_ERROR_REPLY`, payload = the code): recorded on the kernel
/// and, for a request, answered to the caller with `describe(code)`.
pub fn error_reply(
    local: &mut ExecLocal,
    cell: &KernelCell,
    header: &EnvelopeHeader,
    payload: &[u8],
    describe: impl FnOnce(u32) -> String,
) {
    let code = payload.get(..4).map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
    let text = format!("handler error: {}", describe(code));
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

/// A K2K envelope from `cell`'s kernel for `target`: delivered when the target takes messages,
/// else recorded and kept (returned through `cell`'s terminate report), never dropped.
pub fn deliver_or_keep(
    local: &mut ExecLocal,
    cell: &KernelCell,
    target: Option<Arc<KernelCell>>,
    bytes: &[u8],
) {
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

/// A message `cell`'s kernel will never handle (it failed, or ended with the message queued): a
/// waiting `call` fails with `KernelFailed`, a one-way message comes back in the terminate
/// report. `counted`: the message was counted in `messages_in_flight` when it was sent.
pub fn return_or_fail(local: &mut ExecLocal, cell: &KernelCell, bytes: &[u8], counted: bool) {
    let Ok((h, payload)) = crate::message::decode_header(bytes) else { return };
    let bytes = &bytes[..ENVELOPE_HEADER_SIZE + payload.len()];
    if counted {
        cell.control.add_in_flight(-1);
    }
    if h.correlation_id != 0 && h.source == 0 {
        let text = format!(
            "kernel {:?} failed before handling this request: {}",
            cell.name(),
            cell.last_error().unwrap_or_default()
        );
        local.fail_request(cell, &h, &text, true);
    } else if let Ok(raw) = RawMessage::from_bytes(bytes) {
        cell.return_message(raw);
    }
}

/// Hands back everything queued in `cell`'s host input queue (the kernel will not take it).
/// Only for a kernel that cannot be consuming the queue.
pub fn drain_input(local: &mut ExecLocal, cell: &KernelCell) {
    let mut taken: Vec<Vec<u8>> = Vec::new();
    while cell.input.pop_batch_with(64, |b| taken.push(b.to_vec())) > 0 {}
    for b in taken {
        return_or_fail(local, cell, &b, true);
    }
    cell.input_waiters.notify();
}

/// A handler failed the kernel (`rk_fail`) while handling the request `(corr, source)`. Returns
/// `true` when the restart policy restarts it: the caller then resets the device state and lets
/// the kernel go on. Otherwise the kernel is `Failed`. Either way the request is answered.
pub fn handler_failed(local: &mut ExecLocal, cell: &KernelCell, text: &str, corr: u64, source: u32) -> bool {
    cell.record_error(ErrorCode::HandlerPanic, text.to_string());
    let restart = match cell.options().restart {
        RestartPolicy::Never => false,
        RestartPolicy::Restart { max_restarts } => cell.control.restarts() < max_restarts,
    };
    let request = EnvelopeHeader { correlation_id: corr, source, ..EnvelopeHeader::default() };
    if restart {
        cell.control.record_restart();
        tracing::warn!(kernel = cell.name(), "{text}; restarted with fresh state");
        local.fail_request(cell, &request, text, false);
    } else {
        tracing::error!(kernel = cell.name(), "{text}; kernel failed");
        let _ = cell.transition(KernelState::Failed);
        local.fail_request(cell, &request, text, true);
        cell.lifecycle_waiters.notify();
        cell.output_waiters.notify();
    }
    restart
}

/// The device under `cell`'s kernel failed: the kernel is `Failed` (even an inactive one), every
/// waiting `call` gets `KernelFailed` with `text`.
pub fn device_failed(local: &mut ExecLocal, cell: &KernelCell, text: &str) {
    cell.record_error(ErrorCode::HandlerPanic, text.to_string());
    // Device loss happens outside the lifecycle table (an inactive kernel fails too); a
    // terminating kernel finishes terminating.
    cell.force_failed();
    for corr in cell.replies.waiting() {
        let h = EnvelopeHeader { correlation_id: corr, ..EnvelopeHeader::default() };
        local.fail_request(cell, &h, text, true);
    }
    cell.lifecycle_waiters.notify();
    cell.output_waiters.notify();
}

/// The text of a caught panic's payload (`panic!` with a literal or with format arguments).
pub fn panic_message(payload: &(dyn core::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}

/// Makes `cell`'s kernel `Failed` after a panic in runtime code (not a handler) with `text` as
/// its last error. A launched, active or inactive kernel becomes `Failed` (set directly where the
/// lifecycle table has no edge, as for a lost device); a terminating one stays `Terminating` and
/// finishes; an ended one is left alone.
pub(crate) fn mark_panicked(cell: &KernelCell, text: &str) {
    cell.record_error(ErrorCode::HandlerPanic, text.to_string());
    cell.force_failed();
}

/// Fails every `call` still waiting on `cell`'s kernel with `KernelFailed` and `text`, and wakes
/// the host's waiters.
pub(crate) fn fail_waiting_calls(local: &mut ExecLocal, cell: &KernelCell, text: &str) {
    for corr in cell.replies.waiting() {
        let h = EnvelopeHeader { correlation_id: corr, ..EnvelopeHeader::default() };
        local.fail_request(cell, &h, text, true);
    }
    cell.lifecycle_waiters.notify();
    cell.output_waiters.notify();
    cell.input_waiters.notify();
}

/// A backend's host code (CPU worker, device agent, dispatcher) panicked while it served `cell`'s
/// kernel: only this kernel fails, the thread goes on serving the others.
///
/// The kernel becomes `Failed` with `text` as its last error (see [`mark_panicked`] for a
/// terminating kernel). With `drain_input`, its queued host input is handed back first, as for
/// any failed kernel (a request fails with `KernelFailed`, a one-way message waits for the
/// terminate report); pass `false` where something else may still be consuming that queue (a
/// device kernel). Then every call still waiting (its request was being handled, or was lost
/// with the batch the panic interrupted) fails with `KernelFailed`.
pub fn runtime_panicked(local: &mut ExecLocal, cell: &KernelCell, text: &str, drain: bool) {
    tracing::error!(kernel = cell.name(), "{text}; kernel failed");
    mark_panicked(cell, text);
    if drain {
        drain_input(local, cell);
    }
    fail_waiting_calls(local, cell, text);
}
