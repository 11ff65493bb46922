//! What the runtime does when a kernel fails, for every executor alike (the CPU executor and the
//! GPU backends' device agents): a handler that failed its kernel (restart policy), a message
//! a failed kernel will never handle, a panic in the runtime's own code, and the calls left
//! waiting. So the semantics (which error a caller sees, what comes back in a terminate report)
//! are the same on every backend.
//!
//! The device-only decisions built on these (routing a device kernel's output, device loss, the
//! two-strike rule for a panicking agent) are in [`crate::agent`].

use super::cell::KernelCell;
use super::context::ExecLocal;
use super::envelope::RawMessage;
use super::options::RestartPolicy;
use crate::control_block::ErrorCode;
use crate::message::{EnvelopeHeader, KernelId};

/// The text of a caught panic's payload (`panic!` with a literal or with format arguments).
pub(crate) fn panic_message(payload: &(dyn core::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}

/// A handler failed its kernel (a panic, `rk_fail`) while handling `request`. Applies the
/// restart policy: with a restart left, `reset` rebuilds the kernel's state and the kernel goes
/// on (returns `true`); otherwise `fail` fails it (a single kernel: the cell becomes `Failed`; a
/// kernel group: that instance only). The state changes before the request is answered, so a
/// caller that sees the error also sees the kernel restarted or failed. A kernel group's
/// instances share the group's restart budget.
pub(crate) fn handler_failed(
    local: &mut ExecLocal,
    cell: &KernelCell,
    text: &str,
    request: &EnvelopeHeader,
    reset: impl FnOnce(),
    fail: impl FnOnce(),
) -> bool {
    cell.record_error(ErrorCode::HandlerPanic, text.to_string());
    let restart = match cell.options().restart {
        RestartPolicy::Never => false,
        RestartPolicy::Restart { max_restarts } => cell.control.restarts() < max_restarts,
    };
    if restart {
        cell.control.record_restart();
        reset();
        tracing::warn!(kernel = cell.name(), "{text}; restarted with fresh state");
    } else {
        tracing::error!(kernel = cell.name(), "{text}; kernel failed");
        fail();
    }
    local.fail_request(cell, request, text, !restart);
    restart
}

/// A message `cell`'s kernel will never handle (it failed, or ended with the message queued): a
/// waiting `call` fails with `KernelFailed`, a one-way message comes back in the terminate
/// report.
pub(crate) fn return_or_fail(
    local: &mut ExecLocal,
    cell: &KernelCell,
    header: &EnvelopeHeader,
    bytes: &[u8],
) {
    if header.correlation_id != 0 && header.source == KernelId::HOST.0 {
        let text = format!(
            "kernel {:?} failed before handling this request: {}",
            cell.name(),
            cell.last_error().unwrap_or_default()
        );
        local.fail_request(cell, header, &text, true);
    } else if let Ok(raw) = RawMessage::from_bytes(bytes) {
        cell.return_message(raw);
    }
}

/// Makes `cell`'s kernel `Failed` after a panic in runtime code (not a handler), or a lost
/// device, with `text` as its last error (see [`KernelCell::force_failed`]: a terminating kernel
/// stays `Terminating` and finishes; an ended one is left alone).
pub(crate) fn mark_failed(cell: &KernelCell, text: &str) {
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
