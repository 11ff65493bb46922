//! Running a kernel's handlers on a host thread: the message loop every CPU-side executor uses.
//!
//! [`HostExecutor::run`] processes up to a budget of messages and reports whether the kernel has
//! more work, is idle, or has terminated. The caller (the CPU backend's scheduler) guarantees that
//! at most one thread runs a given executor at a time.
//!
//! Failure handling: a panicking handler is caught (`catch_unwind`); the kernel records the panic
//! text, answers the request (if any) with an error, and then either rebuilds its state (restart
//! policy) or becomes `Failed`. A failed kernel answers every queued request with an error and
//! keeps every other queued message for `terminate` to hand back.
//!
//! A panic in this loop itself (outside a handler) unwinds out of [`HostExecutor::run`]; the
//! backend catches it and calls [`HostExecutor::runtime_panicked`], which fails this kernel the
//! same way as a device agent does (see [`crate::agent`]).

use super::cell::{Directory, KernelCell};
use super::context::{fail_request, flush_outbox, Context, ExecLocal};
use super::definition::{BoxedState, DispatchError, KernelDef};
use super::envelope::RawMessage;
use super::failure;
use super::state::KernelState;
use crate::control_block::ErrorCode;
use crate::hlc::HlcClock;
use crate::message::decode_header;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Weak};

/// Result of one [`HostExecutor::run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Nothing left to do until the doorbell rings again.
    Idle,
    /// More input is queued, or the outbox waits for room: run again soon.
    Yield,
    /// The kernel has terminated; never run it again.
    Terminated,
}

/// Messages popped per queue claim.
const BATCH: usize = 32;

/// Executor-side state of one kernel: its user state, clock and outbox.
///
/// It holds its kernel and the directory weakly: the backend's scheduler owns the executor, the
/// kernel cell owns the scheduler's task through its doorbell, and the directory owns the cell, so
/// strong references here would form a cycle.
pub struct HostExecutor {
    cell: Weak<KernelCell>,
    dir: Weak<Directory>,
    name: String,
    /// The kernel's handlers (`None`: launched without a registered handler).
    def: Option<Arc<KernelDef>>,
    state: Option<BoxedState>,
    clock: HlcClock,
    local: ExecLocal,
    failed: bool,
    /// Panics in the runtime's own code while running this kernel (see `runtime_panicked`).
    runtime_panics: u32,
    /// Messages popped after a concurrent `deactivate` took effect, kept in order for the next
    /// active run (see `run`).
    held: std::collections::VecDeque<Vec<u8>>,
}

impl HostExecutor {
    /// An executor for `cell`, running `def`'s handlers; builds the kernel's initial state.
    pub fn new(cell: &Arc<KernelCell>, def: Option<&Arc<KernelDef>>, dir: &Arc<Directory>) -> Self {
        let state = def.map(|d| d.make_state());
        let clock = HlcClock::new(cell.id().0);
        Self {
            cell: Arc::downgrade(cell),
            dir: Arc::downgrade(dir),
            name: cell.name().to_string(),
            def: def.cloned(),
            state,
            clock,
            local: ExecLocal::default(),
            failed: false,
            runtime_panics: 0,
            held: std::collections::VecDeque::new(),
        }
    }

    /// Processes up to `budget` messages.
    pub fn run(&mut self, budget: usize) -> RunOutcome {
        let (Some(cell), Some(dir)) = (self.cell.upgrade(), self.dir.upgrade()) else {
            return RunOutcome::Terminated;
        };
        match cell.state() {
            KernelState::Terminated => return RunOutcome::Terminated,
            KernelState::Failed => self.failed = true,
            _ => {}
        }
        if !flush_outbox(&cell, &mut self.local) {
            return RunOutcome::Yield;
        }
        let terminating = cell.control.terminate_requested();
        cell.check_injected_fault();
        let mut processed = 0usize;
        if self.failed {
            self.drain_failed(&cell);
        } else if cell.control.is_active() || terminating {
            // Messages held back by an earlier deactivate come first, in order.
            while processed < budget && self.local.outbox.is_empty() && !self.failed {
                let Some(bytes) = self.held.pop_front() else { break };
                // Counted first: a panic inside `handle` leaves the count exact.
                cell.control.add_in_flight(-1);
                self.handle(&cell, &dir, &bytes);
                processed += 1;
            }
            // Re-checked per batch, and per message below: a message pushed after `deactivate`
            // returned is popped after the active flag was cleared (the slot's release/acquire
            // orders the two), so it is held, not handled.
            while processed < budget && (terminating || cell.control.is_active()) {
                if !self.local.outbox.is_empty() || self.failed {
                    break;
                }
                let mut handled = 0u64;
                let mut held = core::mem::take(&mut self.held);
                let mut panicked = None;
                let n = cell.input().pop_batch_with(BATCH.min(budget - processed), |bytes| {
                    // After a panic in the runtime's own code, the rest of the claimed batch is
                    // kept (and handed back below), not consumed.
                    if panicked.is_some() || (!terminating && !cell.control.is_active()) {
                        held.push_back(bytes.to_vec());
                        return;
                    }
                    handled += 1;
                    let r = catch_unwind(AssertUnwindSafe(|| self.handle(&cell, &dir, bytes)));
                    panicked = r.err();
                });
                self.held = held;
                cell.control.add_in_flight(-(handled as i64));
                if let Some(p) = panicked {
                    // The message being handled is consumed; the held rest of the batch and the
                    // queue are handed back, the waiting calls answered.
                    return self.runtime_panicked(&*p);
                }
                if n == 0 {
                    break;
                }
                processed += n;
                if !self.local.outbox.is_empty() || self.failed {
                    break;
                }
            }
            if processed > 0 {
                cell.control.set_hlc_packed(self.clock.now().packed());
                cell.input_waiters.notify();
            }
            if self.failed {
                self.drain_failed(&cell);
            }
        }
        cell.control.mirror_queues(cell.input().indices(), cell.output().indices());
        if terminating && cell.input().is_empty() && self.held.is_empty() && self.local.outbox.is_empty() {
            self.finish_terminate(&cell);
            dir.forget(&cell);
            return RunOutcome::Terminated;
        }
        if !self.local.outbox.is_empty() || (processed >= budget && !self.failed) {
            RunOutcome::Yield
        } else {
            RunOutcome::Idle
        }
    }

    /// Called by the backend after `run` panicked (the runtime's own code, not a handler: those
    /// panics are caught inside `run`). Fails this kernel only: it becomes `Failed` with the panic
    /// text as its last error, its queued input (and any message held back by `deactivate`) is
    /// handed back, and every call still waiting fails with `KernelFailed`. The messages of the
    /// batch the panic interrupted were consumed; their callers are among those failed.
    ///
    /// Returns what the scheduler should do next: run the kernel once more after a first panic
    /// (`Yield`: it flushes its outbox and, if terminating, ends), and after a panic in an
    /// already failed kernel give up on it (`Terminated` when termination was requested, so
    /// `terminate` completes, else `Idle` until the next doorbell).
    pub fn runtime_panicked(&mut self, payload: &(dyn std::any::Any + Send)) -> RunOutcome {
        let Some(cell) = self.cell.upgrade() else { return RunOutcome::Terminated };
        let text = format!(
            "the runtime panicked while running kernel {:?}: {}",
            self.name,
            failure::panic_message(payload)
        );
        tracing::error!(kernel = cell.name(), "{text}; kernel failed");
        // A handler panic may have failed the kernel already; "again" counts the runtime's own.
        let again = self.runtime_panics > 0;
        self.runtime_panics += 1;
        self.failed = true;
        failure::mark_failed(&cell, &text);
        if again {
            // The failed-kernel path itself panicked: give up on running more of it, but hand
            // back what is queued as it is (no decoding, no replies) so nothing accepted is lost.
            self.give_back_raw(&cell);
            failure::fail_waiting_calls(&mut self.local, &cell, &text);
            if cell.control.terminate_requested() {
                self.finish_terminate(&cell);
                return RunOutcome::Terminated;
            }
            return RunOutcome::Idle;
        }
        self.drain_failed(&cell);
        failure::fail_waiting_calls(&mut self.local, &cell, &text);
        RunOutcome::Yield
    }

    /// Hands back everything held, queued or waiting in the outbox without running the kernel's
    /// code: inputs and K2K messages into the terminate report, outputs for the host into its
    /// output queue (its overflow, once terminating).
    fn give_back_raw(&mut self, cell: &KernelCell) {
        let keep = |b: &[u8]| {
            if let Ok(m) = RawMessage::from_bytes(b) {
                cell.return_message(m);
            }
        };
        for b in core::mem::take(&mut self.held) {
            cell.control.add_in_flight(-1);
            keep(&b);
        }
        while cell.input().pop_batch_with(BATCH, |b| {
            cell.control.add_in_flight(-1);
            keep(b);
        }) > 0
        {}
        for o in core::mem::take(&mut self.local.outbox) {
            match o.route {
                super::context::Route::HostOutput if cell.push_output_bytes(&o.bytes) => {}
                _ => keep(&o.bytes),
            }
        }
        cell.input_waiters.notify();
    }

    fn handle(&mut self, cell: &KernelCell, dir: &Directory, bytes: &[u8]) {
        let (header, payload) = match decode_header(bytes) {
            Ok(hp) => hp,
            Err(e) => {
                cell.record_error(ErrorCode::Decode, format!("dropped malformed input message: {e}"));
                return;
            }
        };
        self.clock.observe_trusted(header.hlc);
        if self.failed {
            failure::return_or_fail(&mut self.local, cell, &header, bytes);
            return;
        }
        let (Some(def), Some(state)) = (&self.def, &mut self.state) else {
            let text = format!("kernel {:?} has no registered handler", cell.name());
            cell.record_error(ErrorCode::UnknownMessageType, text.clone());
            fail_request(cell, &mut self.local, &header, &text, false);
            return;
        };
        let panicked =
            dispatch_one(cell, dir, &self.clock, &mut self.local, cell.id(), def, state, &header, payload);
        if let Some(text) = panicked {
            let state = &mut self.state;
            let reset = || *state = Some(def.make_state());
            if !failure::handler_failed(&mut self.local, cell, &text, &header, reset, || cell.fail()) {
                self.failed = true;
            }
        }
        // Test hook: the runtime's own code panics after this message was handled.
        cell.check_injected_message_fault();
    }

    fn drain_failed(&mut self, cell: &KernelCell) {
        for bytes in core::mem::take(&mut self.held) {
            cell.control.add_in_flight(-1);
            if let Ok((h, _)) = decode_header(&bytes) {
                failure::return_or_fail(&mut self.local, cell, &h, &bytes);
            }
        }
        loop {
            let mut handled = 0i64;
            let n = cell.input().pop_batch_with(BATCH, |bytes| {
                handled += 1;
                if let Ok((h, _)) = decode_header(bytes) {
                    failure::return_or_fail(&mut self.local, cell, &h, bytes);
                }
            });
            cell.control.add_in_flight(-handled);
            if n == 0 {
                break;
            }
        }
        cell.input_waiters.notify();
    }

    fn finish_terminate(&mut self, cell: &KernelCell) {
        cell.control.set_hlc_packed(self.clock.now().packed());
        // Nothing runs any more: drop the user state and the K2K caches now rather than with the
        // cell (handles may keep the cell for long; a cached target must not be kept with it).
        self.state = None;
        self.local = ExecLocal::default();
        cell.finish_terminate();
    }
}

/// Runs `def`'s handler on one decoded message with `state`, as kernel (or group instance) `me`
/// of `cell`: counts the message processed, and answers a request the handler left unanswered or
/// failed with an error reply. A handler panic is caught and its text returned: the caller
/// applies the restart policy ([`failure::handler_failed`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn dispatch_one(
    cell: &KernelCell,
    dir: &Directory,
    clock: &HlcClock,
    local: &mut ExecLocal,
    me: crate::message::KernelId,
    def: &KernelDef,
    state: &mut BoxedState,
    header: &crate::message::EnvelopeHeader,
    payload: &[u8],
) -> Option<String> {
    let mut ctx = Context { cell, me, dir, clock, header, local, replied: false };
    // Counted before the handler runs: anyone who sees the handler's reply or K2K output also
    // sees this message in `messages_processed`.
    cell.control.add_processed(1);
    let result = catch_unwind(AssertUnwindSafe(|| def.dispatch_decoded(state, header, payload, &mut ctx)));
    let replied = ctx.replied;
    match result {
        Ok(Ok(())) => {
            if header.correlation_id != 0 && !replied {
                fail_request(cell, local, header, "the handler returned no reply to this request", false);
            }
            None
        }
        Ok(Err(e)) => {
            let code = match e {
                DispatchError::Decode(_) => ErrorCode::Decode,
                DispatchError::UnknownType(_) => ErrorCode::UnknownMessageType,
                DispatchError::Handler(_) => ErrorCode::HandlerError,
            };
            let text = e.to_string();
            cell.record_error(code, text.clone());
            fail_request(cell, local, header, &text, false);
            None
        }
        Err(panic) => Some(format!("handler panicked: {}", failure::panic_message(&*panic))),
    }
}

impl core::fmt::Debug for HostExecutor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HostExecutor").field("kernel", &self.name).field("failed", &self.failed).finish()
    }
}
