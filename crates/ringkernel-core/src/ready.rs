//! The ready mark: how an actor with work gets onto exactly one run queue, and off it without
//! losing a wake-up.
//!
//! Every schedulable actor (a CPU kernel, each instance of a kernel group) has one [`ReadyMark`],
//! a word with two bits:
//!
//! * `QUEUED`: the actor is in a run queue or a worker is running it;
//! * `NOTIFIED`: work arrived since the running worker last looked.
//!
//! The protocol (the same on the CPU backend's workers and, as device code, on a GPU's):
//!
//! 1. A producer publishes work (pushes into the actor's mailbox), then calls [`ReadyMark::mark`]:
//!    one `fetch_or` of both bits. Only the producer that saw `QUEUED` clear pushes the actor onto
//!    a run queue, so an actor is queued at most once however many messages arrive.
//! 2. The worker that takes the actor off the run queue owns it (its state is exclusive to that
//!    worker). Before it looks for work it calls [`ReadyMark::begin`], clearing `NOTIFIED`.
//! 3. It handles up to a budget of messages, then calls [`ReadyMark::try_idle`]: a
//!    compare-and-swap from `QUEUED` to 0 that fails when `NOTIFIED` is set again. On failure new
//!    work raced in after step 2 and the worker goes back to step 2 (or re-queues the actor);
//!    on success the actor is off every queue, and the next producer queues it again.
//!
//! No wake-up is lost: a producer's push happens before its `fetch_or` (Release); if that
//! `fetch_or` comes before the worker's `begin` (Acquire), the worker's look for work sees the
//! push; if after, `NOTIFIED` is set when `try_idle` runs, and the compare-and-swap fails.
//! Loom model: `ready_mark_*` in `tests/loom_protocols.rs` (fails when `try_idle` ignores
//! `NOTIFIED`).

use crate::sync::{AtomicU32, Ordering};

const QUEUED: u32 = 1;
const NOTIFIED: u32 = 2;
/// Set by [`ReadyMark::retire`]: the actor ended; no producer queues it again.
const RETIRED: u32 = 4;

/// One actor's scheduling word (see the module docs).
#[derive(Debug)]
#[repr(transparent)]
pub struct ReadyMark(AtomicU32);

impl Default for ReadyMark {
    fn default() -> Self {
        Self::new()
    }
}

impl ReadyMark {
    /// An idle actor's mark.
    pub fn new() -> Self {
        Self(AtomicU32::new(0))
    }

    /// Step 1: work was published for the actor. Returns `true` when the caller must put the
    /// actor on a run queue (nobody else has, or will).
    #[inline]
    pub fn mark(&self) -> bool {
        // AcqRel: the Release half publishes the work the caller just pushed to the worker whose
        // `begin` (Acquire) follows; the Acquire half orders this producer after the last
        // `try_idle` (so the queue it pushes onto sees the worker's writes).
        self.0.fetch_or(QUEUED | NOTIFIED, Ordering::AcqRel) & (QUEUED | RETIRED) == 0
    }

    /// Step 2: the worker that took the actor off a run queue starts looking for work.
    #[inline]
    pub fn begin(&self) {
        // AcqRel: Acquire pairs with the producers' `mark` (their pushes are visible to the look
        // for work that follows).
        self.0.fetch_and(!NOTIFIED, Ordering::AcqRel);
    }

    /// Step 3: the worker found no more work. `true`: the actor is idle and off every queue.
    /// `false`: work arrived since `begin`; call `begin` and look again (the actor stays owned).
    #[inline]
    pub fn try_idle(&self) -> bool {
        // Release: this worker's writes (the actor's state) are visible to the next owner, whose
        // `mark` or `begin` acquires. Fails, keeping ownership, if NOTIFIED was set.
        self.0.compare_exchange(QUEUED, 0, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// The actor ended: later `mark`s never queue it again. Called by its owner.
    #[inline]
    pub fn retire(&self) {
        self.0.fetch_or(RETIRED | QUEUED, Ordering::AcqRel);
    }

    /// Whether the actor is queued or owned by a worker (snapshot).
    #[inline]
    pub fn is_queued(&self) -> bool {
        self.0.load(Ordering::Relaxed) & QUEUED != 0
    }
}

#[cfg(all(test, not(ringkernel_loom)))]
mod tests {
    use super::*;

    #[test]
    fn one_producer_queues_and_a_racing_notification_keeps_the_owner() {
        let m = ReadyMark::new();
        assert!(m.mark(), "the first mark queues");
        assert!(!m.mark(), "a queued actor is not queued twice");
        m.begin();
        assert!(m.is_queued());
        assert!(!m.mark(), "still owned: not queued again");
        assert!(!m.try_idle(), "work arrived after begin: the owner must look again");
        m.begin();
        assert!(m.try_idle());
        assert!(!m.is_queued());
        assert!(m.mark(), "idle again: the next mark queues");
        m.begin();
        m.retire();
        assert!(!m.mark(), "a retired actor is never queued again");
    }
}
