//! Multi-producer/multi-consumer ring of fixed-size byte slots (Vyukov's bounded queue).
//!
//! # Layout (one contiguous region, 128-byte aligned)
//!
//! ```text
//! [QueueHeader: 384 B][SlotMeta x capacity, padded to 128 B][slot data: capacity x slot_size]
//! ```
//!
//! [`SlotMeta`] is `{ seq: u32, len: u32 }`. `len` is the number of bytes the producer wrote
//! into the slot, or [`VOID_LEN`] for a claimed slot whose producer failed to fill it (consumers
//! skip it). [`ring_region_size`] gives the byte size of a region for a geometry, so a backend can
//! place the ring in pinned host memory or a GPU buffer and wrap it with [`RawSlotRing::init`].
//!
//! # Protocol and invariants
//!
//! For the slot at position `p` (index `p & mask`):
//!
//! 1. `seq == p`: free for the producer that claims position `p`.
//! 2. `seq == p + 1`: full; holds the item for position `p`, ready for the consumer at `p`.
//! 3. `seq == p + capacity`: consumed; free for the producer at `p + capacity` (rule 1, next lap).
//!
//! * A producer reads `tail = p`, loads `seq` (`Acquire`, pairs with the consumer's `Release` in
//!   step 3 so the previous lap's reads are done), and claims `p` by a compare-and-swap of `tail`
//!   from `p` to `p + 1`. It then owns the slot exclusively, writes the bytes and `len`, and
//!   publishes with `seq = p + 1` (`Release`).
//! * A consumer reads `head = p`, loads `seq` (`Acquire`, pairs with the producer's publish), and
//!   claims `p` by a compare-and-swap of `head`. It reads the bytes and frees the slot with
//!   `seq = p + capacity` (`Release`).
//! * `seq - p < 0` (as a wrapping `i32`) at the producer means the slot still holds the item from
//!   the previous lap: the ring is full, and the push fails, handing control back to the caller.
//!   At the consumer it means nothing has been published at `p`: the ring is empty.
//!
//! The capacity is at least 2 (a requested capacity of 1 is raised to 2): with a single slot the
//! "full at `p`" and "free at `p + 1`" sequence values would coincide.
//!
//! Batches claim `k` consecutive positions with one compare-and-swap after checking each slot's
//! `seq`; a slot found free (or full) stays so until the tail (or head) moves past it, so the
//! check remains valid if the compare-and-swap succeeds.
//!
//! A closure that panics while it fills or reads a claimed slot leaves no slot behind: a drop
//! guard publishes the slot it was filling, and every later slot its batch claimed, as void
//! (push), or frees them (pop; those items are dropped). The ring stays fully usable.
//!
//! No operation takes a lock. A producer preempted between its claim and its publish delays
//! consumers of that one position (the usual property of this design); it never blocks other
//! producers.

use super::header::{QueueHeader, KIND_SLOT_RING, QUEUE_HEADER_SIZE};
use super::{round_capacity, QueueConfigError};
use crate::sync::{AtomicU32, Ordering};
use core::ptr::NonNull;

/// `len` value of a slot that was claimed but not filled; consumers skip it.
pub const VOID_LEN: u32 = u32::MAX;

/// Per-slot sequence number and filled length.
#[repr(C)]
pub struct SlotMeta {
    pub(crate) seq: AtomicU32,
    pub(crate) len: AtomicU32,
}

#[cfg(not(ringkernel_loom))]
const _: () = assert!(core::mem::size_of::<SlotMeta>() == 8);

const fn align128(n: usize) -> usize {
    (n + 127) & !127
}

/// Byte offset of the slot-meta array in a ring region.
pub const fn meta_offset() -> usize {
    QUEUE_HEADER_SIZE
}

/// Byte offset of the slot data in a ring region of `capacity` slots.
pub const fn data_offset(capacity: u32) -> usize {
    align128(QUEUE_HEADER_SIZE + capacity as usize * core::mem::size_of::<SlotMeta>())
}

/// Bytes needed for a ring region of `capacity` slots of `slot_size` bytes.
pub const fn ring_region_size(capacity: u32, slot_size: u32) -> usize {
    data_offset(capacity) + capacity as usize * slot_size as usize
}

fn check_geometry(capacity: usize, slot_size: usize) -> Result<(u32, u32), QueueConfigError> {
    // At least two slots: with one, "full at position p" (seq = p + 1) would read as "free at
    // position p + 1" (seq = p + 1), so the sequence protocol needs capacity >= 2.
    let capacity = round_capacity(capacity)?.max(2);
    if slot_size == 0 || !slot_size.is_multiple_of(16) || slot_size > (1 << 30) {
        return Err(QueueConfigError::SlotSize(slot_size as u64));
    }
    Ok((capacity, slot_size as u32))
}

/// A view of a slot ring living in memory it does not own (host heap, mapped pinned memory, a GPU
/// buffer). All operations take `&self`: any number of producers and consumers may share it.
pub struct RawSlotRing {
    header: NonNull<QueueHeader>,
    meta: NonNull<SlotMeta>,
    data: NonNull<u8>,
    mask: u32,
    capacity: u32,
    slot_size: u32,
}

// SAFETY: all shared state is reached through atomics, and slot bytes are accessed only by the
// thread that claimed the slot (see the protocol in the module docs).
unsafe impl Send for RawSlotRing {}
// SAFETY: as above.
unsafe impl Sync for RawSlotRing {}

/// Releases a claimed slot when dropped, so a panicking closure cannot wedge the ring.
pub(crate) struct Publish<'a> {
    pub(crate) meta: &'a SlotMeta,
    pub(crate) seq: u32,
    pub(crate) len: u32,
}

impl Drop for Publish<'_> {
    #[inline]
    fn drop(&mut self) {
        self.meta.len.store(self.len, Ordering::Relaxed);
        // Release: publishes the slot bytes and `len` (producer) or the end of our reads
        // (consumer); pairs with the Acquire load of `seq` on the other side.
        self.meta.seq.store(self.seq, Ordering::Release);
    }
}

/// Releases the claimed positions `next..end` of a batch that a panicking closure left behind:
/// each is published the way a [`Publish`] guard would (`seq = pos + seq_add`, `len = len`), in
/// order. A batch moves `next` past each position before it hands that position to the closure
/// (whose own `Publish` guard covers it), so on the normal path `next == end` and this does nothing.
struct BatchRelease<'a> {
    ring: &'a RawSlotRing,
    next: u32,
    end: u32,
    /// `1` for a push batch (the slot becomes full but void), `capacity` for a pop batch (free).
    seq_add: u32,
    /// [`VOID_LEN`] for a push batch (consumers skip the slot), `0` for a pop batch.
    len: u32,
}

impl Drop for BatchRelease<'_> {
    fn drop(&mut self) {
        while self.next != self.end {
            let pos = self.next;
            self.next = pos.wrapping_add(1);
            drop(Publish { meta: self.ring.meta(pos), seq: pos.wrapping_add(self.seq_add), len: self.len });
        }
    }
}

/// The claim step of the protocol, for producers and consumers alike: claims up to `want`
/// consecutive positions starting at `end` (the tail for producers, with `ready = 0`: slots whose
/// `seq == pos`; the head for consumers, with `ready = 1`: slots whose `seq == pos + 1`) with one
/// compare-and-swap, and returns (first position, count); `None` when the slot at `end` is not
/// ready (full for producers, empty for consumers). `meta(pos)` is the slot of position `pos`.
/// [`crate::queue::Mailboxes`] uses it too, one ring per mailbox.
#[inline]
pub(crate) fn claim_positions<'m>(
    end: &AtomicU32,
    ready: u32,
    want: u32,
    meta: impl Fn(u32) -> &'m SlotMeta,
) -> Option<(u32, u32)> {
    // Relaxed: the end index is only a hint for where to look; the seq load below (Acquire, pairs
    // with the other side's Release store of seq) is what establishes ownership, and the CAS
    // re-validates the position.
    let mut pos = end.load(Ordering::Relaxed);
    loop {
        let seq = meta(pos).seq.load(Ordering::Acquire);
        let diff = seq.wrapping_sub(pos.wrapping_add(ready)) as i32;
        if diff == 0 {
            let mut n = 1;
            while n < want
                && meta(pos.wrapping_add(n)).seq.load(Ordering::Acquire) == pos.wrapping_add(n + ready)
            {
                n += 1;
            }
            match end.compare_exchange_weak(pos, pos.wrapping_add(n), Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some((pos, n)),
                Err(cur) => pos = cur,
            }
        } else if diff < 0 {
            return None;
        } else {
            // Another thread claimed `pos` already; catch up.
            pos = end.load(Ordering::Relaxed);
            crate::sync::spin_hint();
        }
    }
}

impl RawSlotRing {
    /// Initialises an empty ring in `region` and returns a view of it.
    ///
    /// # Safety
    /// `region` must be valid for reads and writes of `len` bytes for as long as the returned view
    /// (or any copy made with [`RawSlotRing::attach`]) is used, and nothing else may write it
    /// except through such views (or a device following the same protocol).
    pub unsafe fn init(
        region: NonNull<u8>,
        len: usize,
        capacity: usize,
        slot_size: usize,
    ) -> Result<Self, QueueConfigError> {
        let (capacity, slot_size) = check_geometry(capacity, slot_size)?;
        let needed = ring_region_size(capacity, slot_size);
        let addr = region.as_ptr() as usize;
        if len < needed || !addr.is_multiple_of(128) {
            return Err(QueueConfigError::Region { len, align: 1 << addr.trailing_zeros().min(63), needed });
        }
        let header = region.cast::<QueueHeader>();
        // SAFETY: the caller guarantees `len >= needed` writable bytes; the header fits at offset
        // 0 and the address is 128-aligned as QueueHeader requires.
        unsafe { header.as_ptr().write(QueueHeader::new(capacity, slot_size, KIND_SLOT_RING)) };
        // SAFETY: meta_offset() + capacity * 8 <= data_offset <= needed; 8-byte alignment holds
        // because the offset is a multiple of 128.
        let meta = unsafe { region.add(meta_offset()) }.cast::<SlotMeta>();
        for i in 0..capacity {
            // SAFETY: i < capacity, inside the meta array just described.
            unsafe {
                meta.as_ptr()
                    .add(i as usize)
                    .write(SlotMeta { seq: AtomicU32::new(i), len: AtomicU32::new(0) })
            };
        }
        // SAFETY: data_offset(capacity) <= needed <= len.
        let data = unsafe { region.add(data_offset(capacity)) };
        Ok(Self { header, meta, data, mask: capacity - 1, capacity, slot_size })
    }

    /// A second view of a ring that [`RawSlotRing::init`] already initialised.
    ///
    /// # Safety
    /// `region` must hold a ring initialised by [`RawSlotRing::init`] and satisfy that function's
    /// validity requirement for as long as the view is used.
    pub unsafe fn attach(region: NonNull<u8>) -> Self {
        let header = region.cast::<QueueHeader>();
        // SAFETY: the caller guarantees an initialised header at the start of the region.
        let (capacity, slot_size) = unsafe { (header.as_ref().capacity, header.as_ref().slot_size) };
        // SAFETY: offsets within the initialised region, as in `init`.
        let meta = unsafe { region.add(meta_offset()) }.cast::<SlotMeta>();
        // SAFETY: as above.
        let data = unsafe { region.add(data_offset(capacity)) };
        Self { header, meta, data, mask: capacity - 1, capacity, slot_size }
    }

    #[inline]
    fn header(&self) -> &QueueHeader {
        // SAFETY: the header was initialised by `init` and the region outlives `self`.
        unsafe { self.header.as_ref() }
    }

    #[inline]
    fn meta(&self, pos: u32) -> &SlotMeta {
        // SAFETY: (pos & mask) < capacity, inside the initialised meta array.
        unsafe { &*self.meta.as_ptr().add((pos & self.mask) as usize) }
    }

    #[inline]
    fn slot_ptr(&self, pos: u32) -> *mut u8 {
        // SAFETY: (pos & mask) * slot_size < capacity * slot_size, inside the data area.
        unsafe { self.data.as_ptr().add((pos & self.mask) as usize * self.slot_size as usize) }
    }

    /// Capacity in slots.
    #[inline]
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Slot size in bytes.
    #[inline]
    pub fn slot_size(&self) -> u32 {
        self.slot_size
    }

    /// Occupied slots (snapshot).
    #[inline]
    pub fn len(&self) -> u32 {
        self.header().len()
    }

    /// Whether the ring looks empty (snapshot).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.header().is_empty()
    }

    /// Current (head, tail) indices (snapshot).
    #[inline]
    pub fn indices(&self) -> (u32, u32) {
        (self.header().head(), self.header().tail())
    }

    /// The shared header.
    pub fn queue_header(&self) -> &QueueHeader {
        self.header()
    }

    /// Claims up to `want` consecutive free positions starting at the tail; returns (first, n).
    #[inline]
    fn claim_push(&self, want: u32) -> Option<(u32, u32)> {
        claim_positions(&self.header().tail, 0, want, |p| self.meta(p))
    }

    /// Claims up to `want` consecutive published positions starting at the head.
    #[inline]
    fn claim_pop(&self, want: u32) -> Option<(u32, u32)> {
        claim_positions(&self.header().head, 1, want, |p| self.meta(p))
    }

    /// Claims one slot and lets `fill` write it in place. `fill` returns the number of bytes it
    /// wrote (at most the slot size) or an error, in which case the slot is published as void and
    /// skipped by consumers.
    ///
    /// Returns `Ok(None)` if the ring is full (`fill` was not called), `Ok(Some(()))` on success,
    /// and `Err(e)` if `fill` failed.
    #[inline]
    pub fn try_push_with<E>(
        &self,
        fill: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<Option<()>, E> {
        let Some((pos, _)) = self.claim_push(1) else {
            return Ok(None);
        };
        self.fill_claimed(pos, fill).map(Some)
    }

    #[inline]
    fn fill_claimed<E>(&self, pos: u32, fill: impl FnOnce(&mut [u8]) -> Result<usize, E>) -> Result<(), E> {
        let mut publish = Publish { meta: self.meta(pos), seq: pos.wrapping_add(1), len: VOID_LEN };
        // SAFETY: the successful claim gives this thread exclusive access to the slot's bytes
        // until `publish` stores the new seq (protocol step "producer").
        let slot = unsafe { core::slice::from_raw_parts_mut(self.slot_ptr(pos), self.slot_size as usize) };
        let n = fill(slot)?;
        publish.len = n.min(self.slot_size as usize) as u32;
        Ok(())
    }

    /// Claims up to `n` slots with one compare-and-swap and fills them in order with `fill(i, slot)`.
    /// Returns how many were claimed (0 if full). Slots whose `fill` fails are published void; the
    /// first error is returned after all claimed slots are published.
    pub fn try_push_batch_with<E>(
        &self,
        n: usize,
        mut fill: impl FnMut(usize, &mut [u8]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        if n == 0 {
            return Ok(0);
        }
        let Some((pos, k)) = self.claim_push(n.min(self.capacity as usize) as u32) else {
            return Ok(0);
        };
        // Should `fill` panic, the positions after the one it was filling are published void, so
        // consumers skip them and the ring stays usable.
        let mut rest =
            BatchRelease { ring: self, next: pos, end: pos.wrapping_add(k), seq_add: 1, len: VOID_LEN };
        let mut first_err = None;
        for i in 0..k {
            let p = pos.wrapping_add(i);
            rest.next = p.wrapping_add(1);
            if let Err(e) = self.fill_claimed(p, |s| fill(i as usize, s)) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(k as usize), Err)
    }

    /// Pops one item, passing its bytes to `read`. Void slots are skipped. `None` if empty.
    #[inline]
    pub fn try_pop_with<R>(&self, mut read: impl FnMut(&[u8]) -> R) -> Option<R> {
        loop {
            let (pos, _) = self.claim_pop(1)?;
            if let Some(r) = self.read_claimed(pos, &mut read) {
                return Some(r);
            }
        }
    }

    #[inline]
    fn read_claimed<R>(&self, pos: u32, read: &mut impl FnMut(&[u8]) -> R) -> Option<R> {
        let meta = self.meta(pos);
        // Relaxed: ordered after the producer's write by the Acquire load of seq in claim_pop.
        let len = meta.len.load(Ordering::Relaxed);
        let _free = Publish { meta, seq: pos.wrapping_add(self.capacity), len: 0 };
        if len == VOID_LEN {
            return None;
        }
        // SAFETY: the claim gives exclusive access to the slot until `_free` is dropped; the
        // producer wrote `len <= slot_size` bytes before publishing.
        let bytes = unsafe { core::slice::from_raw_parts(self.slot_ptr(pos), len as usize) };
        Some(read(bytes))
    }

    /// Pops up to `max` items with one compare-and-swap, passing each to `read` in order.
    /// Returns how many positions were consumed (void slots included).
    pub fn pop_batch_with(&self, max: usize, mut read: impl FnMut(&[u8])) -> usize {
        if max == 0 {
            return 0;
        }
        let Some((pos, k)) = self.claim_pop(max.min(self.capacity as usize) as u32) else {
            return 0;
        };
        // Should `read` panic, the positions after the one it was reading are freed (their items
        // are dropped), so producers can use them again.
        let mut rest =
            BatchRelease { ring: self, next: pos, end: pos.wrapping_add(k), seq_add: self.capacity, len: 0 };
        for i in 0..k {
            let p = pos.wrapping_add(i);
            rest.next = p.wrapping_add(1);
            let _ = self.read_claimed(p, &mut read);
        }
        k as usize
    }
}

impl core::fmt::Debug for RawSlotRing {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RawSlotRing").field("header", self.header()).finish()
    }
}

/// Memory a [`SlotRing`] can live in when it is not the host heap: pinned host memory mapped into
/// a GPU, for instance. The memory is given back when the value is dropped.
pub trait RingMemory: Send + Sync {
    /// Start (128-byte aligned) and length of the region.
    fn region(&self) -> (NonNull<u8>, usize);
}

enum Backing {
    Heap(std::alloc::Layout),
    /// Kept only to be dropped (which releases the memory) after the ring.
    #[allow(dead_code)]
    External(Box<dyn RingMemory>),
}

/// A slot ring that owns its memory: 128-byte aligned host heap ([`SlotRing::new`]) or memory a
/// backend provides ([`SlotRing::with_memory`]).
pub struct SlotRing {
    raw: RawSlotRing,
    region: NonNull<u8>,
    len: usize,
    backing: Backing,
}

// SAFETY: see RawSlotRing; the owned region is freed only in Drop (and RingMemory is Send+Sync).
unsafe impl Send for SlotRing {}
// SAFETY: see RawSlotRing.
unsafe impl Sync for SlotRing {}

impl SlotRing {
    /// A ring of at least `capacity` slots (rounded up to a power of two) of `slot_size` bytes
    /// (a positive multiple of 16).
    pub fn new(capacity: usize, slot_size: usize) -> Result<Self, QueueConfigError> {
        let bytes = Self::region_size(capacity, slot_size)?;
        let layout = std::alloc::Layout::from_size_align(bytes, 128)
            .map_err(|_| QueueConfigError::Capacity(capacity as u64))?;
        // SAFETY: layout has non-zero size (the header alone is 384 bytes).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(region) = NonNull::new(ptr) else { return Err(QueueConfigError::OutOfMemory(bytes)) };
        // SAFETY: freshly allocated, exclusively owned, `bytes` long and 128-aligned; it lives
        // until Drop, which outlives `raw`.
        let raw = unsafe { RawSlotRing::init(region, bytes, capacity, slot_size) }?;
        Ok(Self { raw, region, len: bytes, backing: Backing::Heap(layout) })
    }

    /// Bytes of memory a ring of this geometry needs (after rounding the capacity up).
    pub fn region_size(capacity: usize, slot_size: usize) -> Result<usize, QueueConfigError> {
        let (cap, size) = check_geometry(capacity, slot_size)?;
        Ok(ring_region_size(cap, size))
    }

    /// A ring initialised in `memory` (at least [`SlotRing::region_size`] bytes, 128-aligned),
    /// which it owns from now on.
    pub fn with_memory(
        capacity: usize,
        slot_size: usize,
        memory: Box<dyn RingMemory>,
    ) -> Result<Self, QueueConfigError> {
        let (region, len) = memory.region();
        // SAFETY: `memory` guarantees `len` valid bytes at `region` until it is dropped, and we
        // own it (dropped in Drop, after the last use of `raw`).
        let raw = unsafe { RawSlotRing::init(region, len, capacity, slot_size) }?;
        Ok(Self { raw, region, len, backing: Backing::External(memory) })
    }

    /// Base address and length of the region (for backends that map it).
    pub fn region(&self) -> (NonNull<u8>, usize) {
        (self.region, self.len)
    }
}

impl core::ops::Deref for SlotRing {
    type Target = RawSlotRing;
    fn deref(&self) -> &RawSlotRing {
        &self.raw
    }
}

impl Drop for SlotRing {
    fn drop(&mut self) {
        if let Backing::Heap(layout) = self.backing {
            // SAFETY: the region was allocated in `new` with this layout and no view outlives self.
            unsafe { std::alloc::dealloc(self.region.as_ptr(), layout) };
        }
        // External memory is released when `backing` drops.
    }
}

impl core::fmt::Debug for SlotRing {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.raw.fmt(f)
    }
}

#[cfg(all(test, not(ringkernel_loom)))]
mod tests {
    use super::*;

    fn push_u64(r: &RawSlotRing, v: u64) -> bool {
        r.try_push_with(|s| {
            s[..8].copy_from_slice(&v.to_le_bytes());
            Ok::<_, ()>(8)
        })
        .unwrap()
        .is_some()
    }

    fn pop_u64(r: &RawSlotRing) -> Option<u64> {
        r.try_pop_with(|b| u64::from_le_bytes(b.try_into().unwrap()))
    }

    #[test]
    fn fifo_and_full() {
        let r = SlotRing::new(4, 16).unwrap();
        for i in 0..4 {
            assert!(push_u64(&r, i));
        }
        assert!(!push_u64(&r, 99), "full ring refuses");
        assert_eq!(r.len(), 4);
        for i in 0..4 {
            assert_eq!(pop_u64(&r), Some(i));
        }
        assert_eq!(pop_u64(&r), None);
        // wrap around many laps
        for i in 0..1000 {
            assert!(push_u64(&r, i));
            assert_eq!(pop_u64(&r), Some(i));
        }
    }

    #[test]
    fn failed_fill_is_skipped() {
        let r = SlotRing::new(4, 16).unwrap();
        assert!(push_u64(&r, 1));
        assert_eq!(r.try_push_with(|_| Err::<usize, _>("boom")), Err("boom"));
        assert!(push_u64(&r, 2));
        assert_eq!(pop_u64(&r), Some(1));
        assert_eq!(pop_u64(&r), Some(2));
        assert_eq!(pop_u64(&r), None);
    }

    #[test]
    fn batches() {
        let r = SlotRing::new(8, 16).unwrap();
        let n = r
            .try_push_batch_with(10, |i, s| {
                s[..8].copy_from_slice(&(i as u64).to_le_bytes());
                Ok::<_, ()>(8)
            })
            .unwrap();
        assert_eq!(n, 8);
        let mut got = Vec::new();
        assert_eq!(r.pop_batch_with(5, |b| got.push(u64::from_le_bytes(b.try_into().unwrap()))), 5);
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    /// All `capacity` slots can be pushed and popped again, in order.
    fn assert_fully_usable(r: &RawSlotRing) {
        while pop_u64(r).is_some() {}
        for i in 0..u64::from(r.capacity()) {
            assert!(push_u64(r, 100 + i), "slot {i} of {} is lost", r.capacity());
        }
        assert!(!push_u64(r, 0), "full after capacity pushes");
        for i in 0..u64::from(r.capacity()) {
            assert_eq!(pop_u64(r), Some(100 + i));
        }
        assert_eq!(pop_u64(r), None);
    }

    #[test]
    fn panic_in_batch_push_loses_no_slot() {
        let r = SlotRing::new(4, 16).unwrap();
        let caught = std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| {
            r.try_push_batch_with(4, |i, s| {
                if i == 1 {
                    panic!("fill panics");
                }
                s[..8].copy_from_slice(&(i as u64).to_le_bytes());
                Ok::<_, ()>(8)
            })
        }));
        assert!(caught.is_err());
        // The item filled before the panic is there; the panicking one and the rest are void.
        assert_eq!(pop_u64(&r), Some(0));
        assert_eq!(pop_u64(&r), None);
        assert_fully_usable(&r);
    }

    #[test]
    fn panic_in_batch_pop_loses_no_slot() {
        let r = SlotRing::new(4, 16).unwrap();
        for i in 0..4 {
            assert!(push_u64(&r, i));
        }
        let mut seen = Vec::new();
        let caught = std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| {
            r.pop_batch_with(4, |b| {
                let v = u64::from_le_bytes(b.try_into().unwrap());
                seen.push(v);
                if v == 1 {
                    panic!("read panics");
                }
            })
        }));
        assert!(caught.is_err());
        assert_eq!(seen, vec![0, 1]);
        // The claimed items were consumed (dropped); every slot is free again.
        assert_eq!(pop_u64(&r), None);
        assert_fully_usable(&r);
    }

    #[test]
    fn bad_geometry() {
        assert!(matches!(SlotRing::new(0, 16), Err(QueueConfigError::Capacity(0))));
        assert!(matches!(SlotRing::new(4, 10), Err(QueueConfigError::SlotSize(10))));
    }

    #[test]
    fn region_layout_and_attach() {
        let r = SlotRing::new(4, 64).unwrap();
        let (base, len) = r.region();
        assert_eq!(len, ring_region_size(4, 64));
        assert_eq!(data_offset(4), 512);
        // SAFETY: the region is initialised by `r` and outlives `view`.
        let view = unsafe { RawSlotRing::attach(base) };
        assert!(push_u64(&view, 42));
        assert_eq!(pop_u64(&r), Some(42));
    }
}
