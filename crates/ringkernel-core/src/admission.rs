//! The admission gate of a kernel's input queue: the send ↔ terminate handshake.
//!
//! # The problem it solves
//!
//! A sender checks that the kernel accepts messages and then pushes into its input queue; the
//! kernel's executor finishes terminating when it sees "terminate requested" and an empty queue.
//! Without a handshake a push can land between the executor's last look at the queue and its
//! exit: the sender was told `Ok`, and the message is never handled nor handed back.
//!
//! # The protocol
//!
//! One `AtomicU64` per kernel: bit 63 is `CLOSED`, the low 32 bits count the senders that are
//! between admission and the end of their push.
//!
//! * **Sender** ([`AdmissionGate::enter`]): `fetch_add(1)`. If the old value had `CLOSED`, it
//!   undoes the increment and refuses; otherwise it pushes (or finds the queue full) and leaves
//!   with `fetch_sub(1, Release)` ([`Admitted`]'s drop). A sender never waits while admitted.
//! * **Terminator** ([`AdmissionGate::close`]): `fetch_or(CLOSED)`, then waits until the count is
//!   zero (acquire loads). Only then does it publish "terminate requested" to the executor.
//!
//! Both sides update the same word with read-modify-writes, so the word's modification order
//! decides each race: a sender whose increment comes after the `fetch_or` sees `CLOSED`; one whose
//! increment comes before is counted, and the terminator waits for its decrement. The decrement
//! is a release after the push; the terminator's acquire load of zero reads from it (or from a
//! later RMW in its release sequence), and the terminate request is released after that load; the
//! executor acquires the terminate request before it looks at the queue. So every push that was
//! admitted happens-before the executor's final emptiness check: it is handled, or handed back in
//! the terminate report. `tests/loom_protocols.rs` model-checks this, and shows that the old
//! check-then-push protocol loses a message.

use crate::sync::{AtomicU64, Ordering};

const CLOSED: u64 = 1 << 63;
const COUNT: u64 = u32::MAX as u64;

/// See the [module docs](self).
#[derive(Debug, Default)]
pub struct AdmissionGate {
    word: AtomicU64,
}

/// Proof that a sender was admitted; leaving (drop) lets a waiting [`AdmissionGate::close`] go on.
#[derive(Debug)]
#[must_use = "the push must happen while the sender is admitted"]
pub struct Admitted<'a> {
    gate: &'a AdmissionGate,
}

impl Drop for Admitted<'_> {
    #[inline]
    fn drop(&mut self) {
        // Release: the push made while admitted is visible to the closer whose acquire load
        // reads this decrement (see the module docs).
        self.gate.word.fetch_sub(1, Ordering::Release);
    }
}

impl AdmissionGate {
    /// An open gate with nobody inside.
    #[must_use]
    pub fn new() -> Self {
        Self { word: AtomicU64::new(0) }
    }

    /// Admits a sender, or `None` once the gate is closed.
    #[inline]
    pub fn enter(&self) -> Option<Admitted<'_>> {
        // AcqRel: the modification order of this word decides the race with `close`; the acquire
        // half makes a sender that sees CLOSED also see what the closer published before closing.
        let prev = self.word.fetch_add(1, Ordering::AcqRel);
        if prev & CLOSED != 0 {
            // Relaxed: a refused sender published nothing the closer needs.
            self.word.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Admitted { gate: self })
    }

    /// Closes the gate and waits until every admitted sender has left. Afterwards no sender is
    /// admitted again, and every admitted push happens-before whatever the caller does next.
    pub fn close(&self) {
        // AcqRel: ordered in the word's modification order against every `enter` (see above).
        self.word.fetch_or(CLOSED, Ordering::AcqRel);
        // An admitted sender only pushes (no waiting), so this is short; the policy yields the
        // thread after a few turns in case the sender was preempted while admitted.
        let mut wait = crate::backoff::Backoff::SHORT_WRITE.waiter();
        // Acquire: pairs with the Release decrement in `Admitted::drop`.
        while self.word.load(Ordering::Acquire) & COUNT != 0 {
            let _never_parks = wait.snooze();
        }
    }

    /// Whether the gate is closed.
    #[inline]
    pub fn is_closed(&self) -> bool {
        self.word.load(Ordering::Acquire) & CLOSED != 0
    }
}

#[cfg(all(test, not(ringkernel_loom)))]
mod tests {
    use super::*;

    #[test]
    fn closed_gate_refuses_and_close_waits_for_the_admitted() {
        let g = std::sync::Arc::new(AdmissionGate::new());
        let a = g.enter().expect("open");
        let closer = {
            let g = g.clone();
            std::thread::spawn(move || g.close())
        };
        while !g.is_closed() {
            std::thread::yield_now();
        }
        assert!(g.enter().is_none(), "no admission once closed");
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!closer.is_finished(), "close waits for the admitted sender");
        drop(a);
        closer.join().unwrap();
        assert!(g.enter().is_none());
    }
}
