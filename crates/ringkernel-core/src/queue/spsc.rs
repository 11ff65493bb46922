//! Single-producer/single-consumer ring of typed values (Lamport's ring, cached indices).
//!
//! # Invariants
//!
//! 1. Only the [`Producer`] writes `tail`; only the [`Consumer`] writes `head`.
//! 2. `head <= tail <= head + capacity` at all times (wrapping arithmetic on `u32`).
//! 3. Slots at positions `head..tail` hold initialised values owned by the ring; all others are
//!    uninitialised and owned by the producer.
//! 4. The producer publishes a slot by storing `tail` with `Release` after writing it; the consumer
//!    reads `tail` with `Acquire` before reading the slot (pair A). The consumer returns a slot by
//!    storing `head` with `Release` after moving the value out; the producer reads `head` with
//!    `Acquire` before overwriting it (pair B).
//! 5. Each side caches the other side's index and re-reads it only when the cache says full
//!    (producer) or empty (consumer). The cached value is never ahead of the real one, so a stale
//!    cache can only under-report free space or available items, never over-report.

use super::header::{QueueHeader, KIND_SPSC};
use super::{round_capacity, PopError, PushError, QueueConfigError};
use crate::sync::Ordering;
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use std::collections::VecDeque;
use std::sync::Arc;

struct Ring<T> {
    header: QueueHeader,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
}

// SAFETY: the ring moves `T` values between exactly two threads (producer and consumer) and
// never shares a `&T` between them, so `T: Send` suffices.
unsafe impl<T: Send> Sync for Ring<T> {}
// SAFETY: as above; the ring owns its `T`s.
unsafe impl<T: Send> Send for Ring<T> {}

impl<T> Ring<T> {
    #[inline]
    fn slot(&self, pos: u32) -> *mut MaybeUninit<T> {
        let i = (pos & self.header.mask) as usize;
        debug_assert!(i < self.slots.len());
        // SAFETY: mask = capacity - 1 and slots.len() == capacity, so i is in bounds.
        unsafe { self.slots.get_unchecked(i) }.get()
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // Both handles are gone (we hold the last Arc), so plain loads see final indices.
        let head = self.header.head.load(Ordering::Relaxed);
        let tail = self.header.tail.load(Ordering::Relaxed);
        let mut pos = head;
        while pos != tail {
            // SAFETY: invariant 3: positions head..tail are initialised and owned by the ring,
            // and nothing else can access them any more.
            unsafe { (*self.slot(pos)).assume_init_drop() };
            pos = pos.wrapping_add(1);
        }
    }
}

/// Creates a ring with room for at least `capacity` values (rounded up to a power of two).
pub fn channel<T>(capacity: usize) -> Result<(Producer<T>, Consumer<T>), QueueConfigError> {
    let capacity = round_capacity(capacity)?;
    let slots = (0..capacity).map(|_| UnsafeCell::new(MaybeUninit::uninit())).collect();
    let ring = Arc::new(Ring {
        header: QueueHeader::new(capacity, core::mem::size_of::<T>() as u32, KIND_SPSC),
        slots,
    });
    Ok((Producer { ring: ring.clone(), tail: 0, cached_head: 0 }, Consumer { ring, head: 0, cached_tail: 0 }))
}

/// The sending half of an SPSC ring.
pub struct Producer<T> {
    ring: Arc<Ring<T>>,
    tail: u32,
    cached_head: u32,
}

/// The receiving half of an SPSC ring.
pub struct Consumer<T> {
    ring: Arc<Ring<T>>,
    head: u32,
    cached_tail: u32,
}

impl<T> Producer<T> {
    /// Free slots, refreshing the cached head if the cache says fewer than `want` are free.
    #[inline]
    fn free(&mut self, want: u32) -> u32 {
        let cap = self.ring.header.capacity;
        let mut free = cap - self.tail.wrapping_sub(self.cached_head);
        if free < want {
            // Acquire: pair B; the consumer has finished with slots before `head`.
            self.cached_head = self.ring.header.head.load(Ordering::Acquire);
            free = cap - self.tail.wrapping_sub(self.cached_head);
        }
        free
    }

    /// Pushes `value`, or hands it back if the ring is full.
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), PushError<T>> {
        if self.free(1) == 0 {
            return Err(PushError::Full(value));
        }
        // SAFETY: free >= 1, so slot `tail` is outside head..tail and owned by the producer
        // (invariant 3); only this producer writes it.
        unsafe { (*self.ring.slot(self.tail)).write(value) };
        self.tail = self.tail.wrapping_add(1);
        // Release: pair A; publishes the slot written above.
        self.ring.header.tail.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// Pushes values from the front of `items` while there is room, publishing them with one
    /// index update. Returns how many were pushed; the rest stay in `items`.
    pub fn push_batch(&mut self, items: &mut VecDeque<T>) -> usize {
        let n = self.free(items.len().min(u32::MAX as usize) as u32).min(items.len() as u32);
        for i in 0..n {
            let v = items.pop_front().expect("counted above");
            // SAFETY: i < free, so slot tail+i is producer-owned (invariant 3).
            unsafe { (*self.ring.slot(self.tail.wrapping_add(i))).write(v) };
        }
        if n > 0 {
            self.tail = self.tail.wrapping_add(n);
            // Release: pair A, for all n slots at once.
            self.ring.header.tail.store(self.tail, Ordering::Release);
        }
        n as usize
    }

    /// Free slots right now.
    pub fn slots(&mut self) -> usize {
        self.free(self.ring.header.capacity) as usize
    }

    /// Capacity in values.
    pub fn capacity(&self) -> usize {
        self.ring.header.capacity as usize
    }

    /// Whether the consumer has been dropped.
    pub fn is_abandoned(&self) -> bool {
        Arc::strong_count(&self.ring) < 2
    }
}

impl<T> Consumer<T> {
    #[inline]
    fn available(&mut self, want: u32) -> u32 {
        let mut avail = self.cached_tail.wrapping_sub(self.head);
        if avail < want {
            // Acquire: pair A; slots before `tail` are fully written.
            self.cached_tail = self.ring.header.tail.load(Ordering::Acquire);
            avail = self.cached_tail.wrapping_sub(self.head);
        }
        avail
    }

    /// Pops the oldest value.
    #[inline]
    pub fn pop(&mut self) -> Result<T, PopError> {
        if self.available(1) == 0 {
            return Err(PopError::Empty);
        }
        // SAFETY: available >= 1, so slot `head` is initialised (invariant 3) and only this
        // consumer reads it; it becomes producer-owned again after the store below.
        let v = unsafe { (*self.ring.slot(self.head)).assume_init_read() };
        self.head = self.head.wrapping_add(1);
        // Release: pair B; the value has been moved out.
        self.ring.header.head.store(self.head, Ordering::Release);
        Ok(v)
    }

    /// Pops up to `max` values into `out` with one index update. Returns how many.
    pub fn pop_batch(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        let n = self.available(max.min(u32::MAX as usize) as u32).min(max as u32);
        out.reserve(n as usize);
        for i in 0..n {
            // SAFETY: i < available, so slot head+i is initialised (invariant 3).
            out.push(unsafe { (*self.ring.slot(self.head.wrapping_add(i))).assume_init_read() });
        }
        if n > 0 {
            self.head = self.head.wrapping_add(n);
            // Release: pair B, for all n slots.
            self.ring.header.head.store(self.head, Ordering::Release);
        }
        n as usize
    }

    /// Values available right now.
    pub fn slots(&mut self) -> usize {
        self.available(self.ring.header.capacity) as usize
    }

    /// Whether nothing is available right now.
    pub fn is_empty(&mut self) -> bool {
        self.available(1) == 0
    }

    /// Whether the producer has been dropped.
    pub fn is_abandoned(&self) -> bool {
        Arc::strong_count(&self.ring) < 2
    }
}

impl<T> core::fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("spsc::Producer").field("header", &self.ring.header).finish()
    }
}

impl<T> core::fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("spsc::Consumer").field("header", &self.ring.header).finish()
    }
}

#[cfg(all(test, not(ringkernel_loom)))]
mod tests {
    use super::*;

    #[test]
    fn full_hands_value_back() {
        let (mut p, mut c) = channel::<String>(2).unwrap();
        p.push("a".into()).unwrap();
        p.push("b".into()).unwrap();
        assert_eq!(p.push("c".into()), Err(PushError::Full("c".to_string())));
        assert_eq!(c.pop().unwrap(), "a");
        p.push("c".into()).unwrap();
        assert_eq!(c.pop().unwrap(), "b");
        assert_eq!(c.pop().unwrap(), "c");
        assert_eq!(c.pop(), Err(PopError::Empty));
    }

    #[test]
    fn batch_and_drop_of_remaining() {
        let (mut p, mut c) = channel::<Arc<u32>>(8).unwrap();
        let probe = Arc::new(7);
        let mut items: VecDeque<_> = (0..10).map(|_| probe.clone()).collect();
        assert_eq!(p.push_batch(&mut items), 8);
        assert_eq!(items.len(), 2);
        let mut out = Vec::new();
        assert_eq!(c.pop_batch(&mut out, 3), 3);
        drop(out);
        drop(items);
        drop(p);
        drop(c);
        assert_eq!(Arc::strong_count(&probe), 1, "ring dropped its remaining values");
    }

    #[test]
    fn capacity_rounds_up_and_rejects_zero() {
        assert_eq!(channel::<u8>(5).unwrap().0.capacity(), 8);
        assert!(channel::<u8>(0).is_err());
    }
}
