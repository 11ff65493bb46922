//! The queue header: geometry on one cache line, the producer index on a second, the consumer
//! index on a third, so producer and consumer never write the same line.
//!
//! | offset | size | field       | written by          |
//! |-------:|-----:|-------------|---------------------|
//! |      0 |    4 | `capacity`  | creator, once       |
//! |      4 |    4 | `mask`      | creator, once       |
//! |      8 |    4 | `slot_size` | creator, once       |
//! |     12 |    4 | `kind`      | creator, once       |
//! |    128 |    4 | `tail`      | producer(s)         |
//! |    256 |    4 | `head`      | consumer(s)         |
//!
//! 128-byte spacing (not 64) because adjacent-line prefetchers on x86 and Apple silicon's 128-byte
//! lines would otherwise still couple the two indices.

use crate::sync::{AtomicU32, Ordering};

/// Size of [`QueueHeader`] in bytes.
pub const QUEUE_HEADER_SIZE: usize = 384;

/// Field name, byte offset and byte size of every [`QueueHeader`] field (padding omitted), for
/// device-side checks.
pub const QUEUE_HEADER_FIELDS: &[(&str, usize, usize)] = &[
    ("capacity", 0, 4),
    ("mask", 4, 4),
    ("slot_size", 8, 4),
    ("kind", 12, 4),
    ("tail", 128, 4),
    ("head", 256, 4),
];

/// Field name, byte offset and byte size of [`crate::queue::SlotMeta`].
pub const SLOT_META_FIELDS: &[(&str, usize, usize)] = &[("seq", 0, 4), ("len", 4, 4)];

/// Shared header of a ring queue (see the module docs for the layout).
#[repr(C, align(128))]
pub struct QueueHeader {
    pub(crate) capacity: u32,
    pub(crate) mask: u32,
    pub(crate) slot_size: u32,
    pub(crate) kind: u32,
    _pad0: [u8; 112],
    pub(crate) tail: AtomicU32,
    _pad1: [u8; 124],
    pub(crate) head: AtomicU32,
    _pad2: [u8; 124],
}

#[cfg(not(ringkernel_loom))]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<QueueHeader>() == QUEUE_HEADER_SIZE);
    assert!(align_of::<QueueHeader>() == 128);
    assert!(offset_of!(QueueHeader, capacity) == 0);
    assert!(offset_of!(QueueHeader, mask) == 4);
    assert!(offset_of!(QueueHeader, slot_size) == 8);
    assert!(offset_of!(QueueHeader, kind) == 12);
    assert!(offset_of!(QueueHeader, tail) == 128);
    assert!(offset_of!(QueueHeader, head) == 256);
};

/// `kind` value of a single-producer/single-consumer ring.
pub const KIND_SPSC: u32 = 1;
/// `kind` value of a multi-producer/multi-consumer slot ring.
pub const KIND_SLOT_RING: u32 = 2;

impl QueueHeader {
    /// A header for an empty ring. `capacity` must be a power of two (checked by callers).
    pub(crate) fn new(capacity: u32, slot_size: u32, kind: u32) -> Self {
        debug_assert!(capacity.is_power_of_two());
        Self {
            capacity,
            mask: capacity - 1,
            slot_size,
            kind,
            _pad0: [0; 112],
            tail: AtomicU32::new(0),
            _pad1: [0; 124],
            head: AtomicU32::new(0),
            _pad2: [0; 124],
        }
    }

    /// Capacity in slots.
    #[inline]
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Slot size in bytes (size of the element type for typed rings).
    #[inline]
    pub fn slot_size(&self) -> u32 {
        self.slot_size
    }

    /// Producer index (wrapping).
    #[inline]
    pub fn tail(&self) -> u32 {
        self.tail.load(Ordering::Acquire)
    }

    /// Consumer index (wrapping).
    #[inline]
    pub fn head(&self) -> u32 {
        self.head.load(Ordering::Acquire)
    }

    /// Number of occupied slots (a snapshot; exact when neither side is moving).
    #[inline]
    pub fn len(&self) -> u32 {
        // Read head first: the tail only grows past it, so the difference never underflows
        // by more than a concurrent consumer's progress, which `min` clamps.
        let head = self.head.load(Ordering::Acquire);
        let tail = self.tail.load(Ordering::Acquire);
        tail.wrapping_sub(head).min(self.capacity)
    }

    /// Whether the queue holds nothing (snapshot).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl core::fmt::Debug for QueueHeader {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("QueueHeader")
            .field("capacity", &self.capacity)
            .field("slot_size", &self.slot_size)
            .field("head", &self.head())
            .field("tail", &self.tail())
            .finish()
    }
}

#[cfg(all(test, not(ringkernel_loom)))]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of_val};

    #[test]
    fn field_tables_are_exact() {
        let h = QueueHeader::new(4, 16, KIND_SLOT_RING);
        macro_rules! row {
            ($f:ident) => {
                (stringify!($f), offset_of!(QueueHeader, $f), size_of_val(&h.$f))
            };
        }
        let actual = [row!(capacity), row!(mask), row!(slot_size), row!(kind), row!(tail), row!(head)];
        assert_eq!(QUEUE_HEADER_FIELDS, &actual[..]);
        use crate::queue::SlotMeta;
        assert_eq!(SLOT_META_FIELDS[0].1, offset_of!(SlotMeta, seq));
        assert_eq!(SLOT_META_FIELDS[1].1, offset_of!(SlotMeta, len));
        assert_eq!(core::mem::size_of::<SlotMeta>(), 8);
    }
}
