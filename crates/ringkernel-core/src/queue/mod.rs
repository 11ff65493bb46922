//! Bounded lock-free ring queues whose memory layout every backend shares.
//!
//! Two forms, one header layout ([`QueueHeader`]):
//!
//! * [`spsc`]: single-producer/single-consumer ring of typed values (Lamport's ring with cached
//!   indices, as in rtrb). Each side keeps a private copy of the other side's index and re-reads
//!   the shared one only when the cached copy says the ring is full (producer) or empty
//!   (consumer), so the common case touches no shared cache line but its own.
//! * [`slot_ring`]: multi-producer/multi-consumer ring of fixed-size byte slots (Vyukov's bounded
//!   queue: a sequence number per slot). Producers claim a slot with one compare-and-swap on the
//!   tail, fill it in place, and publish it by storing the slot's sequence; consumers do the mirror
//!   image on the head. It serves as a kernel's input queue (host and K2K senders push into it) and
//!   output queue, and it can be laid out in any memory region ([`RawSlotRing`]).
//!
//! Both are bounded, with power-of-two capacity, and never overwrite: a full queue hands the value
//! back ([`PushError::Full`]). Neither takes a lock; the only waiting is a retry of a failed
//! compare-and-swap when producers (or consumers) race for the same position.
//!
//! Indices are `u32` and wrap; with capacity at most 2^30 the wrapping difference of two indices
//! is unambiguous. 32-bit indices keep the layout usable from WGSL, which has no 64-bit atomics.

mod header;
pub mod mailboxes;
pub mod slot_ring;
pub mod spsc;

pub use header::{QueueHeader, QUEUE_HEADER_FIELDS, QUEUE_HEADER_SIZE, SLOT_META_FIELDS};
pub use mailboxes::Mailboxes;
pub use slot_ring::{RawSlotRing, RingMemory, SlotMeta, SlotRing};

/// Largest supported capacity (slots).
pub const MAX_CAPACITY: u32 = 1 << 30;

/// A push that did not happen; the value comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError<T> {
    /// The queue is full; the value is handed back untouched.
    #[error("queue is full")]
    Full(T),
}

impl<T> PushError<T> {
    /// The value that was not pushed.
    pub fn into_inner(self) -> T {
        match self {
            Self::Full(v) => v,
        }
    }
}

/// A pop that found nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PopError {
    /// The queue is empty.
    #[error("queue is empty")]
    Empty,
}

/// Invalid queue geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueConfigError {
    /// Capacity is zero or above [`MAX_CAPACITY`].
    #[error("queue capacity {0} is out of range 1..={MAX_CAPACITY}")]
    Capacity(u64),
    /// Slot size is not a positive multiple of 16 bytes.
    #[error("slot size {0} is not a positive multiple of 16 bytes")]
    SlotSize(u64),
    /// The allocator could not provide the ring's memory.
    #[error("cannot allocate {0} bytes for a queue")]
    OutOfMemory(usize),
    /// The memory region is too small or misaligned for the requested geometry.
    #[error("memory region of {len} bytes at alignment {align} cannot hold {needed} bytes aligned to 128")]
    Region {
        /// Region length.
        len: usize,
        /// Region address alignment (largest power of two dividing it).
        align: usize,
        /// Bytes needed.
        needed: usize,
    },
}

/// Rounds a requested capacity up to the next power of two, checking the range.
pub fn round_capacity(requested: usize) -> Result<u32, QueueConfigError> {
    if requested == 0 || requested > MAX_CAPACITY as usize {
        return Err(QueueConfigError::Capacity(requested as u64));
    }
    Ok(requested.next_power_of_two() as u32)
}
