//! Running a kernel group's instances on host threads: actors as records, claimed by workers.
//!
//! A kernel group ([`KernelCell::new_group`]) is `n` instances of one definition. Each instance
//! is a record here (its user state, whether it failed, its blocked outbox) plus a mailbox in the
//! cell ([`crate::queue::Mailboxes`]); nothing per instance is a thread, a task object or a queue
//! of its own. A backend schedules instances with one [`ReadyMark`](crate::ready::ReadyMark)
//! each: a push into instance `i`'s mailbox rings `Doorbell::ring_instance(i)`, the backend queues
//! `i` once, and the worker that takes it calls [`GroupExecutor::run`] with exclusive access to
//! the instance: it handles up to a budget of messages, in mailbox order, with the instance's own
//! state. Different instances run on different workers at the same time.
//!
//! * State is built lazily, on an instance's first message (an instance nobody writes to costs
//!   its record and its mailbox only).
//! * A handler panic applies the group's restart policy to that instance (its state is rebuilt,
//!   sharing one restart budget across the group); without a restart left the instance fails
//!   alone: its requests are answered with `KernelFailed`, its one-way messages come back in the
//!   terminate report, and the other instances go on.
//! * All instances share one HLC (node id = the group's first id), so their timestamps are
//!   ordered among themselves as well as causally.
//! * `deactivate`: an instance that finds the group inactive leaves its messages in its mailbox
//!   and parks; `activate` rings every parked instance again.
//! * `terminate`: the cell's admission gate closed (nothing new enters), each instance drains its
//!   mailbox, and the group ends when no message is in flight and no outbox is blocked
//!   ([`GroupExecutor::try_finish`], called after every run and on every lifecycle doorbell).

use super::cell::{Directory, KernelCell};
use super::context::{fail_request, ExecLocal};
use super::definition::{BoxedState, KernelDef};
use super::exec::{dispatch_one, RunOutcome};
use super::failure;
use crate::control_block::ErrorCode;
use crate::hlc::HlcClock;
use crate::message::decode_header;
use core::cell::UnsafeCell;
use core::sync::atomic::{fence, AtomicBool, AtomicU32, Ordering};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, Weak};

/// One instance's record (see the module docs).
#[derive(Default)]
struct Slot {
    /// Built on the first message; dropped (and rebuilt lazily) on a restart.
    state: Option<BoxedState>,
    failed: bool,
    /// Messages waiting for room in a full queue, in order (the instance takes no input meanwhile).
    outbox: Option<Box<ExecLocal>>,
}

/// The host-side executor of a kernel group (see the module docs).
pub struct GroupExecutor {
    cell: Weak<KernelCell>,
    dir: Weak<Directory>,
    def: Option<Arc<KernelDef>>,
    clock: HlcClock,
    slots: Box<[UnsafeCell<Slot>]>,
    /// Outbox and K2K caches lent to runs whose outbox drained (one per concurrent worker).
    scratch: Mutex<Vec<ExecLocal>>,
    /// Instances that found the group inactive with messages queued.
    parked: Mutex<Vec<u32>>,
    /// Instances whose outbox is blocked (the group cannot finish terminating before they drain).
    blocked: AtomicU32,
    finished: AtomicBool,
}

// SAFETY: a slot is accessed only through `run` (and `runtime_panicked`), whose contract gives
// the caller exclusive access to that instance; the backend's ready mark hands the instance from
// one worker to the next with release/acquire RMWs, ordering their accesses. Everything else is
// behind atomics or mutexes.
unsafe impl Sync for GroupExecutor {}
// SAFETY: the slots hold `Send` data (user state is `Send`), so the executor may move threads.
unsafe impl Send for GroupExecutor {}

impl GroupExecutor {
    /// An executor for the group `cell` (a cell made by [`KernelCell::new_group`]), running
    /// `def`'s handlers (`None`: no registered handler; messages get a typed error).
    pub fn new(cell: &Arc<KernelCell>, def: Option<&Arc<KernelDef>>, dir: &Arc<Directory>) -> Self {
        Self {
            cell: Arc::downgrade(cell),
            dir: Arc::downgrade(dir),
            def: def.cloned(),
            clock: HlcClock::new(cell.id().0),
            slots: (0..cell.instances()).map(|_| UnsafeCell::new(Slot::default())).collect(),
            scratch: Mutex::default(),
            parked: Mutex::default(),
            blocked: AtomicU32::new(0),
            finished: AtomicBool::new(false),
        }
    }

    /// Number of instances.
    pub fn instances(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Handles up to `budget` messages of instance `index`. `Idle`: nothing left until its
    /// doorbell rings again; `Yield`: more is queued or its outbox is blocked; `Terminated`: the
    /// group ended, never run its instances again.
    ///
    /// # Safety
    /// The caller has exclusive access to instance `index` for the duration of the call (it owns
    /// the instance's ready mark), and `index < self.instances()`.
    pub unsafe fn run(&self, index: u32, budget: usize) -> RunOutcome {
        let (Some(cell), Some(dir)) = (self.cell.upgrade(), self.dir.upgrade()) else {
            return RunOutcome::Terminated;
        };
        if self.finished.load(Ordering::Acquire) {
            return RunOutcome::Terminated;
        }
        let Some(mailboxes) = cell.mailboxes() else { return RunOutcome::Terminated };
        // SAFETY: the caller guarantees exclusive access to this instance.
        let slot = unsafe { &mut *self.slots[index as usize].get() };
        let was_blocked = slot.outbox.is_some();
        let mut local = match slot.outbox.take() {
            Some(b) => *b,
            None => self.scratch.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default(),
        };
        if !local.flush(&cell) {
            slot.outbox = Some(Box::new(local));
            return RunOutcome::Yield;
        }
        if was_blocked {
            self.blocked.fetch_sub(1, Ordering::Relaxed);
        }
        let terminating = cell.control.terminate_requested();
        let me = cell.instance_id(index);
        let mut processed = 0;
        let mut outcome = RunOutcome::Idle;
        while processed < budget {
            if !terminating && !slot.failed && !cell.control.is_active() {
                // Checked under the lock `activate`'s doorbell drains the list with: either this
                // check sees the group active, or the drain sees this entry.
                let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
                if !cell.control.is_active() {
                    parked.push(index);
                    break;
                }
            }
            let popped = mailboxes.try_pop_with(index, |bytes| {
                let r =
                    catch_unwind(AssertUnwindSafe(|| self.handle(&cell, &dir, &mut local, slot, me, bytes)));
                if let Err(p) = r {
                    // The runtime's own code panicked (handlers are caught inside): this
                    // instance fails, the others go on.
                    let text = format!(
                        "the runtime panicked while running instance {index} of kernel {:?}: {}",
                        cell.name(),
                        failure::panic_message(&*p)
                    );
                    tracing::error!(kernel = cell.name(), instance = index, "{text}; instance failed");
                    cell.record_error(ErrorCode::HandlerPanic, text);
                    slot.failed = true;
                }
            });
            if popped.is_none() {
                break;
            }
            processed += 1;
            if !local.outbox.is_empty() {
                // Counted before the message leaves the in-flight count, so `try_finish` never
                // sees neither.
                self.blocked.fetch_add(1, Ordering::Relaxed);
                slot.outbox = Some(Box::new(core::mem::take(&mut local)));
                cell.control.add_in_flight(-1);
                outcome = RunOutcome::Yield;
                break;
            }
            cell.control.add_in_flight(-1);
        }
        if slot.outbox.is_none() {
            self.scratch.lock().unwrap_or_else(|e| e.into_inner()).push(local);
        }
        if processed > 0 {
            cell.control.set_hlc_packed(self.clock.now().packed());
            cell.input_waiters.notify();
        }
        if processed >= budget && !mailboxes.is_empty(index) {
            outcome = RunOutcome::Yield;
        }
        // Checked after every run, not only when `terminating` was seen at its start: a terminate
        // requested meanwhile may have found this run's message still in flight.
        if self.finish_if_done(&cell, &dir) {
            return RunOutcome::Terminated;
        }
        outcome
    }

    fn handle(
        &self,
        cell: &KernelCell,
        dir: &Directory,
        local: &mut ExecLocal,
        slot: &mut Slot,
        me: crate::message::KernelId,
        bytes: &[u8],
    ) {
        let (header, payload) = match decode_header(bytes) {
            Ok(hp) => hp,
            Err(e) => {
                cell.record_error(ErrorCode::Decode, format!("dropped malformed input message: {e}"));
                return;
            }
        };
        self.clock.observe_trusted(header.hlc);
        if slot.failed {
            failure::return_or_fail(local, cell, &header, bytes);
            return;
        }
        let Some(def) = &self.def else {
            let text = format!("kernel {:?} has no registered handler", cell.name());
            cell.record_error(ErrorCode::UnknownMessageType, text.clone());
            fail_request(cell, local, &header, &text, false);
            return;
        };
        let state: &mut BoxedState = slot.state.get_or_insert_with(|| def.make_state());
        if let Some(text) = dispatch_one(cell, dir, &self.clock, local, me, def, state, &header, payload) {
            let index = me.0 - cell.id().0;
            let text = format!("instance {index}: {text}");
            let Slot { state, failed, .. } = slot;
            failure::handler_failed(local, cell, &text, &header, || *state = None, || *failed = true);
        }
    }

    /// Called by the backend when [`GroupExecutor::run`] itself panicked outside the per-message
    /// guard: the instance fails (its queued messages are answered or handed back by later runs).
    ///
    /// # Safety
    /// As for [`GroupExecutor::run`].
    pub unsafe fn runtime_panicked(&self, index: u32, payload: &(dyn std::any::Any + Send)) {
        let Some(cell) = self.cell.upgrade() else { return };
        let text = format!(
            "the runtime panicked while running instance {index} of kernel {:?}: {}",
            cell.name(),
            failure::panic_message(payload)
        );
        tracing::error!(kernel = cell.name(), instance = index, "{text}; instance failed");
        cell.record_error(ErrorCode::HandlerPanic, text);
        // SAFETY: the caller guarantees exclusive access to this instance.
        unsafe { (*self.slots[index as usize].get()).failed = true };
    }

    /// Instances that parked while the group was inactive, to ring again (the backend calls this
    /// on the group's doorbell: `activate`, `terminate`).
    pub fn unpark(&self) -> Vec<u32> {
        core::mem::take(&mut *self.parked.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Ends the group if termination was requested and nothing is left: no message in flight, no
    /// blocked outbox. Returns whether the group has ended (by this call or an earlier one).
    pub fn try_finish(&self) -> bool {
        if self.finished.load(Ordering::Acquire) {
            return true;
        }
        let (Some(cell), Some(dir)) = (self.cell.upgrade(), self.dir.upgrade()) else { return false };
        self.finish_if_done(&cell, &dir)
    }

    fn finish_if_done(&self, cell: &Arc<KernelCell>, dir: &Directory) -> bool {
        if self.finished.load(Ordering::Acquire) {
            return true;
        }
        // SeqCst fence: a run decrements the in-flight count and then checks for termination,
        // `terminate` requests it and then rings the doorbell that checks the count; with a
        // fence between the write and the read on both sides, at least one of them sees the
        // other's write, so the last one to act finishes the group.
        fence(Ordering::SeqCst);
        if !cell.control.terminate_requested()
            || cell.control.messages_in_flight() != 0
            || self.blocked.load(Ordering::Relaxed) != 0
        {
            return false;
        }
        if self.finished.swap(true, Ordering::AcqRel) {
            return true;
        }
        cell.control.set_hlc_packed(self.clock.now().packed());
        cell.finish_terminate();
        dir.forget(cell);
        true
    }
}

impl core::fmt::Debug for GroupExecutor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GroupExecutor").field("instances", &self.slots.len()).finish_non_exhaustive()
    }
}
