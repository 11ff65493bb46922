//! Many small bounded mailboxes in one allocation: the inputs of a kernel group's instances.
//!
//! A kernel group ([`crate::runtime::KernelGroup`]) may have a million instances, each with its
//! own input. A [`SlotRing`](super::SlotRing) per instance would cost a 384-byte header (head
//! and tail on their own cache lines) and an allocation each; here every mailbox is the same
//! Vyukov ring as the slot ring (one sequence number per slot, the claim step shared through
//! [`super::slot_ring::claim_positions`]), but the parts live in three arrays indexed by instance:
//!
//! ```text
//! ends:  [ {head: u32, tail: u32} x count ]                         8 B per mailbox
//! meta:  [ SlotMeta {seq, len} x capacity ] x count                  8 B per slot
//! data:  [ slot_size bytes x capacity ] x count                      zero pages until touched
//! ```
//!
//! A mailbox of 4 slots of 128 bytes (a 64-byte envelope header and 64 bytes of payload) costs
//! 552 bytes. Head and tail share a cache line (and neighbouring mailboxes share lines): a
//! mailbox has one consumer at a time and few producers, so the padding the slot ring spends on
//! separating them would multiply the footprint by three for little gain.
//!
//! The protocol and its invariants are the slot ring's (see [`super::slot_ring`]), per mailbox:
//! slot `p & mask` has `seq == p` when free for the producer of position `p`, `seq == p + 1` when
//! it holds that producer's item, and `seq == p + capacity` once consumed. Producers and consumers
//! claim positions with a compare-and-swap on the mailbox's tail or head; a panicking closure
//! leaves the slot published void (push) or freed (pop). Loom model: `mailbox_*` in
//! `tests/loom_protocols.rs`.

use super::slot_ring::{claim_positions, Publish, SlotMeta, VOID_LEN};
use super::{round_capacity, QueueConfigError};
use crate::sync::{AtomicU32, Ordering};
use core::ptr::NonNull;

/// Head and tail of one mailbox.
#[repr(C)]
struct Ends {
    head: AtomicU32,
    tail: AtomicU32,
}

/// `count` bounded multi-producer mailboxes of `capacity` slots of `slot_size` bytes each (see
/// the module docs).
pub struct Mailboxes {
    ends: Box<[Ends]>,
    meta: Box<[SlotMeta]>,
    data: NonNull<u8>,
    layout: std::alloc::Layout,
    count: u32,
    capacity: u32,
    mask: u32,
    slot_size: u32,
}

// SAFETY: all shared state is reached through atomics, and slot bytes are accessed only by the
// thread that claimed the slot (the slot ring's protocol, per mailbox).
unsafe impl Send for Mailboxes {}
// SAFETY: as above.
unsafe impl Sync for Mailboxes {}

impl Mailboxes {
    /// `count` empty mailboxes of at least `capacity` slots (rounded up to a power of two, at
    /// least 2, as for the slot ring) of `slot_size` bytes (a positive multiple of 16).
    pub fn new(count: u32, capacity: usize, slot_size: usize) -> Result<Self, QueueConfigError> {
        let capacity = round_capacity(capacity)?.max(2);
        if slot_size == 0 || !slot_size.is_multiple_of(16) || slot_size > (1 << 20) {
            return Err(QueueConfigError::SlotSize(slot_size as u64));
        }
        let slots = count as usize * capacity as usize;
        let bytes = slots
            .checked_mul(slot_size)
            .filter(|b| *b <= isize::MAX as usize / 2)
            .ok_or(QueueConfigError::Capacity(slots as u64))?;
        // At least one byte, so that an empty group still has a valid allocation to free.
        let layout = std::alloc::Layout::from_size_align(bytes.max(16), 16)
            .map_err(|_| QueueConfigError::Capacity(slots as u64))?;
        // SAFETY: the layout has a non-zero size. Zeroed memory from the allocator comes as
        // untouched zero pages for large sizes, so mailboxes nobody writes cost no resident memory.
        let data = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })
            .ok_or(QueueConfigError::OutOfMemory(layout.size()))?;
        let ends = (0..count).map(|_| Ends { head: AtomicU32::new(0), tail: AtomicU32::new(0) }).collect();
        let meta = (0..slots)
            .map(|i| SlotMeta { seq: AtomicU32::new(i as u32 & (capacity - 1)), len: AtomicU32::new(0) })
            .collect();
        Ok(Self {
            ends,
            meta,
            data,
            layout,
            count,
            capacity,
            mask: capacity - 1,
            slot_size: slot_size as u32,
        })
    }

    /// Number of mailboxes.
    #[inline]
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Slots per mailbox.
    #[inline]
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Slot size in bytes.
    #[inline]
    pub fn slot_size(&self) -> u32 {
        self.slot_size
    }

    /// Bytes of memory the mailboxes occupy once every slot was written.
    pub fn footprint(&self) -> usize {
        self.layout.size()
            + self.ends.len() * core::mem::size_of::<Ends>()
            + self.meta.len() * core::mem::size_of::<SlotMeta>()
    }

    #[inline]
    fn meta(&self, mailbox: u32, pos: u32) -> &SlotMeta {
        &self.meta[(mailbox as usize) * self.capacity as usize + (pos & self.mask) as usize]
    }

    #[inline]
    fn slot_ptr(&self, mailbox: u32, pos: u32) -> *mut u8 {
        let slot = (mailbox as usize) * self.capacity as usize + (pos & self.mask) as usize;
        // SAFETY: `mailbox < count` (checked by the callers' indexing of `ends`) and
        // `pos & mask < capacity`, so the offset is inside the `count * capacity * slot_size`
        // bytes allocated in `new`.
        unsafe { self.data.as_ptr().add(slot * self.slot_size as usize) }
    }

    /// Messages waiting in `mailbox` (snapshot). Panics if `mailbox >= count`.
    #[inline]
    pub fn len(&self, mailbox: u32) -> u32 {
        let e = &self.ends[mailbox as usize];
        // Relaxed: a snapshot for status and for waiting senders, who re-check with a real push.
        e.tail.load(Ordering::Relaxed).wrapping_sub(e.head.load(Ordering::Relaxed)).min(self.capacity)
    }

    /// Whether `mailbox` looks empty (snapshot).
    #[inline]
    pub fn is_empty(&self, mailbox: u32) -> bool {
        self.len(mailbox) == 0
    }

    /// Claims a slot of `mailbox` and lets `fill` write it in place (see
    /// [`RawSlotRing::try_push_with`](super::RawSlotRing::try_push_with)): `Ok(None)` when the
    /// mailbox is full (`fill` was not called). Panics if `mailbox >= count`.
    #[inline]
    pub fn try_push_with<E>(
        &self,
        mailbox: u32,
        fill: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<Option<()>, E> {
        let ends = &self.ends[mailbox as usize];
        let Some((pos, _)) = claim_positions(&ends.tail, 0, 1, |p| self.meta(mailbox, p)) else {
            return Ok(None);
        };
        let mut publish = Publish { meta: self.meta(mailbox, pos), seq: pos.wrapping_add(1), len: VOID_LEN };
        // SAFETY: the successful claim gives this thread exclusive access to the slot's bytes
        // until `publish` stores the new seq.
        let slot =
            unsafe { core::slice::from_raw_parts_mut(self.slot_ptr(mailbox, pos), self.slot_size as usize) };
        let n = fill(slot)?;
        publish.len = n.min(self.slot_size as usize) as u32;
        Ok(Some(()))
    }

    /// Takes the oldest message of `mailbox`, passing its bytes to `read`; void slots are
    /// skipped. `None` if empty. Panics if `mailbox >= count`.
    #[inline]
    pub fn try_pop_with<R>(&self, mailbox: u32, mut read: impl FnMut(&[u8]) -> R) -> Option<R> {
        let ends = &self.ends[mailbox as usize];
        loop {
            let (pos, _) = claim_positions(&ends.head, 1, 1, |p| self.meta(mailbox, p))?;
            let meta = self.meta(mailbox, pos);
            // Relaxed: ordered after the producer's write by the Acquire load of seq in the claim.
            let len = meta.len.load(Ordering::Relaxed);
            let _free = Publish { meta, seq: pos.wrapping_add(self.capacity), len: 0 };
            if len == VOID_LEN {
                continue;
            }
            // SAFETY: the claim gives exclusive access to the slot until `_free` is dropped; the
            // producer wrote `len <= slot_size` bytes before publishing.
            let bytes = unsafe { core::slice::from_raw_parts(self.slot_ptr(mailbox, pos), len as usize) };
            return Some(read(bytes));
        }
    }
}

impl Drop for Mailboxes {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.data.as_ptr(), self.layout) };
    }
}

impl core::fmt::Debug for Mailboxes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Mailboxes")
            .field("count", &self.count)
            .field("capacity", &self.capacity)
            .field("slot_size", &self.slot_size)
            .finish()
    }
}

#[cfg(all(test, not(ringkernel_loom)))]
mod tests {
    use super::*;

    fn push(m: &Mailboxes, i: u32, v: u64) -> bool {
        m.try_push_with(i, |s| {
            s[..8].copy_from_slice(&v.to_le_bytes());
            Ok::<_, ()>(8)
        })
        .unwrap()
        .is_some()
    }

    fn pop(m: &Mailboxes, i: u32) -> Option<u64> {
        m.try_pop_with(i, |b| u64::from_le_bytes(b.try_into().unwrap()))
    }

    #[test]
    fn mailboxes_are_independent_fifo_rings() {
        let m = Mailboxes::new(3, 4, 16).unwrap();
        for v in 0..4 {
            assert!(push(&m, 1, v));
        }
        assert!(!push(&m, 1, 99), "a full mailbox refuses");
        assert!(push(&m, 0, 7) && push(&m, 2, 8));
        assert_eq!((m.len(0), m.len(1), m.len(2)), (1, 4, 1));
        for lap in 0..10u64 {
            assert_eq!(pop(&m, 1), Some(lap));
            assert!(push(&m, 1, lap + 4));
        }
        assert_eq!((pop(&m, 0), pop(&m, 0), pop(&m, 2)), (Some(7), None, Some(8)));
    }

    #[test]
    fn a_failed_or_panicking_fill_leaves_the_mailbox_usable() {
        let m = Mailboxes::new(1, 2, 16).unwrap();
        assert_eq!(m.try_push_with(0, |_| Err::<usize, _>("no")), Err("no"));
        let r = std::panic::catch_unwind(|| m.try_push_with(0, |_| -> Result<usize, ()> { panic!("fill") }));
        assert!(r.is_err());
        assert_eq!(pop(&m, 0), None, "void slots are skipped");
        assert!(push(&m, 0, 5) && push(&m, 0, 6));
        assert_eq!((pop(&m, 0), pop(&m, 0)), (Some(5), Some(6)));
    }

    #[test]
    fn a_million_small_mailboxes_are_small() {
        let m = Mailboxes::new(1_000_000, 4, 128).unwrap();
        assert_eq!(m.footprint(), 1_000_000 * (8 + 4 * 8 + 4 * 128));
        assert!(push(&m, 999_999, 1));
        assert_eq!(pop(&m, 999_999), Some(1));
    }

    #[test]
    fn geometry_is_checked() {
        assert!(matches!(Mailboxes::new(1, 4, 20), Err(QueueConfigError::SlotSize(20))));
        assert!(Mailboxes::new(1, 0, 16).is_err());
        assert!(Mailboxes::new(u32::MAX, 1 << 20, 1 << 20).is_err());
        let empty = Mailboxes::new(0, 4, 16).unwrap();
        assert_eq!(empty.count(), 0);
    }
}
