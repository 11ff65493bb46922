//! Reply routing for request/reply (`call`): a fixed table of reply slots per kernel.
//!
//! A caller claims a free slot; the slot index and a generation number form the request's
//! correlation id. Whoever produces the reply (the CPU executor directly, or a GPU backend's host
//! poller draining the device output queue) calls [`ReplyTable::complete`], which copies the reply
//! into the slot and wakes the caller. No map, no lock.
//!
//! Each slot has one `AtomicU64` word `(generation << 32) | state`. Packing the generation with the
//! state makes every transition a compare-and-swap on both, so a late reply for an old generation
//! can never fill a slot that was freed and claimed again (no ABA).
//!
//! ```text
//!  FREE --claim (gen+1)--> WAITING --complete--> FILLING --> READY --take--> FREE
//!                             |  ^                    |
//!                             |  +---- fill failed ---+
//!                             +--cancel--> CANCELLED --complete (late reply)--> FREE
//! ```
//!
//! A reply that arrives for a cancelled (timed-out) call is not dropped: `complete` reports it as
//! not pending and the caller of `complete` delivers it to the kernel's output queue instead.

use atomic_waker::AtomicWaker;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use core::task::{Context, Poll};
use std::sync::OnceLock;

const FREE: u64 = 0;
const WAITING: u64 = 1;
const FILLING: u64 = 2;
const READY: u64 = 3;
const CANCELLED: u64 = 4;
const STATE_MASK: u64 = 0xFFFF_FFFF;

struct Slot {
    word: AtomicU64,
    waker: AtomicWaker,
    buf: UnsafeCell<Vec<u8>>,
}

/// A claimed reply slot (its correlation id identifies it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    index: u32,
    generation: u32,
}

impl Ticket {
    /// The correlation id to put in the request envelope (never 0).
    #[must_use]
    pub fn correlation_id(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    fn from_correlation(id: u64) -> Self {
        Self { index: id as u32, generation: (id >> 32) as u32 }
    }
}

/// Per-kernel table of reply slots, allocated on first use.
pub struct ReplyTable {
    slots: OnceLock<Box<[Slot]>>,
    size: usize,
    hint: AtomicUsize,
}

// SAFETY: `buf` is accessed only by the thread that moved the slot into FILLING (writer) or that
// observed READY for its own ticket (reader); the state word orders those accesses.
unsafe impl Sync for ReplyTable {}
// SAFETY: as above.
unsafe impl Send for ReplyTable {}

/// Outcome of delivering a reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The waiting caller has it.
    Delivered,
    /// Nobody waits for this correlation id (unknown, or the call was cancelled): route the reply
    /// to the output queue.
    NotPending,
}

impl ReplyTable {
    /// A table with room for `size` concurrent calls (allocated lazily).
    #[must_use]
    pub fn new(size: usize) -> Self {
        Self { slots: OnceLock::new(), size: size.clamp(1, u32::MAX as usize), hint: AtomicUsize::new(0) }
    }

    fn slots(&self) -> &[Slot] {
        self.slots.get_or_init(|| {
            (0..self.size)
                .map(|_| Slot {
                    word: AtomicU64::new((1u64 << 32) | FREE),
                    waker: AtomicWaker::new(),
                    buf: UnsafeCell::new(Vec::new()),
                })
                .collect()
        })
    }

    /// Claims a free slot, or `None` if all are in use (the caller waits and retries).
    pub fn claim(&self) -> Option<Ticket> {
        let slots = self.slots();
        let start = self.hint.load(Ordering::Relaxed);
        for k in 0..slots.len() {
            let i = (start + k) % slots.len();
            let w = slots[i].word.load(Ordering::Relaxed);
            if w & STATE_MASK != FREE {
                continue;
            }
            let mut gen = ((w >> 32) as u32).wrapping_add(1);
            if gen == 0 {
                gen = 1;
            }
            let next = (u64::from(gen) << 32) | WAITING;
            // Acquire: the previous owner's reads of `buf` happen before we reuse the slot.
            if slots[i].word.compare_exchange(w, next, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                self.hint.store(i + 1, Ordering::Relaxed);
                return Some(Ticket { index: i as u32, generation: gen });
            }
        }
        None
    }

    /// Delivers `reply` (an encoded envelope) to the caller waiting on `correlation_id`.
    pub fn complete(&self, correlation_id: u64, reply: &[u8]) -> Delivery {
        let r = self.complete_with(correlation_id, reply.len(), |buf| {
            buf.copy_from_slice(reply);
            Ok::<_, core::convert::Infallible>(reply.len())
        });
        match r {
            Ok(d) => d,
            Err(never) => match never {},
        }
    }

    /// Like [`ReplyTable::complete`], but lets `fill` write the reply straight into the slot's
    /// buffer (`capacity` bytes offered; `fill` returns how many it used), so the reply is encoded
    /// once instead of encoded and copied. If `fill` fails the call keeps waiting (the slot is
    /// returned to WAITING) and the error is handed back.
    pub fn complete_with<E>(
        &self,
        correlation_id: u64,
        capacity: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<Delivery, E> {
        let t = Ticket::from_correlation(correlation_id);
        let Some(slots) = self.slots.get() else {
            return Ok(Delivery::NotPending);
        };
        let Some(slot) = slots.get(t.index as usize) else {
            return Ok(Delivery::NotPending);
        };
        let gen = u64::from(t.generation) << 32;
        // Acquire on success: we take exclusive access to `buf` after the caller released it.
        match slot.word.compare_exchange(gen | WAITING, gen | FILLING, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => {
                // SAFETY: FILLING gives this thread exclusive access to `buf` (module docs).
                let buf = unsafe { &mut *slot.buf.get() };
                buf.resize(capacity, 0);
                match fill(buf) {
                    Ok(n) => {
                        buf.truncate(n);
                        // Release: pairs with the Acquire load in `poll_take`; publishes `buf`.
                        slot.word.store(gen | READY, Ordering::Release);
                        slot.waker.wake();
                        Ok(Delivery::Delivered)
                    }
                    Err(e) => {
                        // Nothing was delivered: the caller still waits (an error reply follows).
                        slot.word.store(gen | WAITING, Ordering::Release);
                        Err(e)
                    }
                }
            }
            Err(w) if w == gen | CANCELLED => {
                // The caller gave up; free the slot and let our caller route the reply elsewhere.
                let _ = slot.word.compare_exchange(w, gen | FREE, Ordering::Release, Ordering::Relaxed);
                Ok(Delivery::NotPending)
            }
            Err(_) => Ok(Delivery::NotPending),
        }
    }

    /// Polls for the reply to `ticket`; on `Ready` the slot is freed.
    pub fn poll_take(&self, ticket: Ticket, cx: Option<&mut Context<'_>>) -> Poll<Vec<u8>> {
        let slot = &self.slots()[ticket.index as usize];
        let gen = u64::from(ticket.generation) << 32;
        let ready = || slot.word.load(Ordering::Acquire) == gen | READY;
        if !ready() {
            let Some(cx) = cx else { return Poll::Pending };
            slot.waker.register(cx.waker());
            if !ready() {
                return Poll::Pending;
            }
        }
        // SAFETY: READY for our generation: the writer is done and nobody else reads `buf`.
        let bytes = core::mem::take(unsafe { &mut *slot.buf.get() });
        // Release: pairs with the Acquire in `claim`.
        slot.word.store(gen | FREE, Ordering::Release);
        Poll::Ready(bytes)
    }

    /// Gives up on `ticket`. Returns the reply if it already arrived (the call completed after
    /// all), otherwise `None`; a reply that arrives later is reported `NotPending` to its producer.
    pub fn cancel(&self, ticket: Ticket) -> Option<Vec<u8>> {
        let slot = &self.slots()[ticket.index as usize];
        let gen = u64::from(ticket.generation) << 32;
        // A producer is filling the slot (a copy, no waiting): yield until it is done.
        let mut filling = crate::backoff::Backoff::YIELD_POLL.waiter();
        loop {
            match slot.word.compare_exchange(
                gen | WAITING,
                gen | CANCELLED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return None,
                Err(w) if w == gen | FILLING => filling.wait(),
                Err(w) if w == gen | READY => {
                    return match self.poll_take(ticket, None) {
                        Poll::Ready(b) => Some(b),
                        Poll::Pending => None,
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Correlation ids of calls still waiting (for failing them when a kernel dies).
    pub fn waiting(&self) -> Vec<u64> {
        let Some(slots) = self.slots.get() else {
            return Vec::new();
        };
        slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let w = s.word.load(Ordering::Acquire);
                (w & STATE_MASK == WAITING).then_some((w & !STATE_MASK) | i as u64)
            })
            .collect()
    }
}

impl core::fmt::Debug for ReplyTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReplyTable").field("size", &self.size).finish()
    }
}

#[cfg(all(test, not(ringkernel_loom)))]
mod tests {
    use super::*;

    #[test]
    fn claim_complete_take() {
        let t = ReplyTable::new(2);
        let a = t.claim().unwrap();
        let b = t.claim().unwrap();
        assert!(t.claim().is_none(), "table exhausted");
        assert_ne!(a.correlation_id(), b.correlation_id());
        assert_eq!(t.complete(a.correlation_id(), b"hello"), Delivery::Delivered);
        assert_eq!(t.poll_take(a, None), Poll::Ready(b"hello".to_vec()));
        // A stale correlation id (old generation) is not delivered.
        assert_eq!(t.complete(a.correlation_id(), b"late"), Delivery::NotPending);
        let c = t.claim().unwrap();
        assert_eq!(c.index, a.index);
        assert_ne!(c.generation, a.generation);
    }

    #[test]
    fn failed_fill_keeps_the_call_waiting() {
        let t = ReplyTable::new(1);
        let a = t.claim().unwrap();
        assert_eq!(t.complete_with(a.correlation_id(), 8, |_| Err("too big")), Err("too big"));
        assert_eq!(t.poll_take(a, None), Poll::Pending, "nothing delivered");
        let r = t.complete_with(a.correlation_id(), 8, |b| {
            b[..3].copy_from_slice(b"err");
            Ok::<_, ()>(3)
        });
        assert_eq!(r, Ok(Delivery::Delivered));
        assert_eq!(t.poll_take(a, None), Poll::Ready(b"err".to_vec()));
    }

    #[test]
    fn cancelled_call_reroutes_late_reply() {
        let t = ReplyTable::new(1);
        let a = t.claim().unwrap();
        assert_eq!(t.cancel(a), None);
        assert_eq!(t.complete(a.correlation_id(), b"late"), Delivery::NotPending);
        assert!(t.claim().is_some(), "slot freed by the late reply");
    }

    #[test]
    fn cancel_after_reply_returns_it() {
        let t = ReplyTable::new(1);
        let a = t.claim().unwrap();
        t.complete(a.correlation_id(), b"x");
        assert_eq!(t.cancel(a), Some(b"x".to_vec()));
        assert!(t.claim().is_some());
    }
}
