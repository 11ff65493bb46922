//! The lifecycle decisions of a device kernel, made once for every GPU backend: a handler that
//! failed its kernel (restart policy), messages a kernel will never handle, device loss, a panic
//! in the agent's own code (the two-strike rule), and the end of a record (terminate completion,
//! or the agent giving up on it). The kernel's lifecycle *state* moves only through its
//! [`KernelCell`]'s methods; here the agent decides when.
//!
//! The two-strike rule: a panic in the agent's code while it serves a kernel fails that kernel
//! only (last error = the panic text, waiting calls get `KernelFailed`) and the agent goes on
//! serving the others. If serving it panics again, the agent gives up on it: the record ends
//! ([`Ending::Abandoned`]) and the kernel is aborted, so `terminate` never waits on a step that
//! keeps failing.

use super::record::{Kernels, Record};
use super::step::{DeviceStep, Ending};
use crate::control_block::ErrorCode;
use crate::message::{decode_header, EnvelopeHeader, ENVELOPE_HEADER_SIZE};
use crate::runtime::failure;
use crate::runtime::{KernelCell, KernelState};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

impl<K> Record<K> {
    /// A handler failed the kernel (`rk_fail`) while handling the request `(corr, source)`.
    /// Returns `true` when the restart policy restarts it: the caller then resets the device
    /// state and lets the kernel go on. Otherwise the kernel is `Failed` and the record
    /// [`Phase::Failed`](super::Phase::Failed). Either way the request is answered.
    pub fn handler_failed(&mut self, cell: &KernelCell, text: &str, corr: u64, source: u32) -> bool {
        let request = EnvelopeHeader { correlation_id: corr, source, ..EnvelopeHeader::default() };
        let restarted = failure::handler_failed(&mut self.local, cell, text, &request, || {}, || cell.fail());
        if !restarted {
            self.fail();
        }
        restarted
    }

    /// A message the kernel will never handle (it failed, or ended with the message queued): a
    /// waiting `call` fails with `KernelFailed`, a one-way message comes back in the terminate
    /// report. `counted`: the message was counted in `messages_in_flight` when it was sent.
    pub fn return_or_fail(&mut self, cell: &KernelCell, bytes: &[u8], counted: bool) {
        let Ok((h, payload)) = decode_header(bytes) else { return };
        let bytes = &bytes[..ENVELOPE_HEADER_SIZE + payload.len()];
        if counted {
            cell.control.add_in_flight(-1);
        }
        failure::return_or_fail(&mut self.local, cell, &h, bytes);
    }

    /// Hands back everything queued in `cell`'s host input queue (the kernel will not take it).
    /// Only for a kernel that cannot be consuming the queue.
    pub fn drain_input(&mut self, cell: &KernelCell) {
        let mut taken: Vec<Vec<u8>> = Vec::new();
        while cell.input().pop_batch_with(64, |b| taken.push(b.to_vec())) > 0 {}
        for b in taken {
            self.return_or_fail(cell, &b, true);
        }
        cell.input_waiters.notify();
    }
}

impl<K> Kernels<K> {
    /// The cell of record `i`, if the agent still serves it. A record whose cell was dropped or
    /// aborted (or whose runtime is gone) ends here ([`Ending::Abandoned`]).
    pub fn live_cell<S: DeviceStep<Kernel = K>>(
        &mut self,
        i: usize,
        step: &mut S,
    ) -> Option<Arc<KernelCell>> {
        let rec = &self[i];
        if let Some(cell) = rec.cell().filter(|c| c.state() != KernelState::Terminated) {
            if rec.dir.strong_count() > 0 {
                return Some(cell);
            }
        }
        self.end(i, step, Ending::Abandoned);
        None
    }

    /// Runs `f` (the device step's work for record `i`) behind a panic guard: a panic fails this
    /// kernel only (the two-strike rule, see the [module docs](self)) and gives `None`.
    pub fn serve<S: DeviceStep<Kernel = K>, R>(
        &mut self,
        i: usize,
        step: &mut S,
        f: impl FnOnce(&mut S, &mut Self) -> R,
    ) -> Option<R> {
        match catch_unwind(AssertUnwindSafe(|| f(&mut *step, &mut *self))) {
            Ok(r) => Some(r),
            Err(payload) => {
                self.panicked(i, step, &*payload);
                None
            }
        }
    }

    fn panicked<S: DeviceStep<Kernel = K>>(
        &mut self,
        i: usize,
        step: &mut S,
        payload: &(dyn core::any::Any + Send),
    ) {
        let rec = &mut self[i];
        rec.strikes += 1;
        let Some(cell) = rec.cell() else { return };
        let text = format!(
            "the {} panicked while serving kernel {:?}: {}",
            S::THREAD,
            cell.name(),
            failure::panic_message(payload)
        );
        if rec.strikes == 1 {
            tracing::error!(kernel = cell.name(), "{text}; kernel failed");
            let host_owns_input = step.stop_taking_input(rec, &cell);
            failure::mark_failed(&cell, &text);
            if host_owns_input {
                rec.fail();
                rec.drain_input(&cell);
            }
            failure::fail_waiting_calls(&mut rec.local, &cell, &text);
            return;
        }
        tracing::error!(kernel = cell.name(), "{text}; giving up on the kernel");
        self.end(i, step, Ending::Abandoned);
        cell.record_error(ErrorCode::HandlerPanic, text.clone());
        cell.abort(&text);
    }

    /// Record `i`'s kernel finished terminating (its queues are empty, or what was left was
    /// handed back): its device resources are released first (so a launch right after
    /// `terminate` returns can reuse them), the directory forgets it, and the cell ends.
    pub fn finish_terminate<S: DeviceStep<Kernel = K>>(&mut self, i: usize, step: &mut S, cell: &KernelCell) {
        self.end(i, step, Ending::Terminated);
        cell.finish_terminate();
    }

    /// Record `i` leaves the agent (once): [`Phase::Gone`](super::Phase::Gone), its device
    /// resources released, and the directory forgets its kernel.
    pub(crate) fn end<S: DeviceStep<Kernel = K>>(&mut self, i: usize, step: &mut S, ending: Ending) {
        let rec = &mut self[i];
        if !rec.leave() {
            return;
        }
        step.release(rec, ending);
        if let (Some(dir), Some(cell)) = (rec.dir(), rec.cell()) {
            dir.forget(&cell);
        }
        self.count_gone();
    }

    /// The device failed: every kernel on it that still runs becomes `Failed` with the reason
    /// (even an inactive one; CPU kernels are not touched), and every waiting `call` gets
    /// `KernelFailed`. A terminating kernel whose termination the device can no longer finish
    /// ([`DeviceStep::device_lost`]) ends at once.
    pub fn fail_all<S: DeviceStep<Kernel = K>>(&mut self, step: &mut S, reason: &str) {
        let text = format!("the {} device failed: {reason}", S::NAME);
        for i in 0..self.len() {
            let rec = &mut self[i];
            if rec.is_failed() || rec.is_gone() {
                continue;
            }
            let Some(cell) = rec.cell() else { continue };
            rec.fail();
            // Device loss happens outside the lifecycle table (an inactive kernel fails too); a
            // terminating kernel finishes terminating.
            failure::mark_failed(&cell, &text);
            failure::fail_waiting_calls(&mut rec.local, &cell, &text);
            if step.device_lost(rec) && cell.control.terminate_requested() {
                self.finish_terminate(i, step, &cell);
            }
        }
    }

    /// Shutdown: after the device step stopped, a kernel still alive is aborted (waiting calls
    /// fail rather than hang).
    pub(crate) fn abort_all<S: DeviceStep<Kernel = K>>(&mut self) {
        for rec in self.iter() {
            if let Some(cell) = rec.cell() {
                if cell.state() != KernelState::Terminated {
                    cell.abort(&format!("the {} backend shut down", S::NAME));
                }
            }
        }
    }
}
