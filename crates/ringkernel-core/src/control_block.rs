//! The 128-byte control block through which the host and a kernel coordinate its lifecycle.
//!
//! One control block exists per kernel. It is `#[repr(C, align(128))]` and made only of atomics and
//! plain integers, so the same bytes work in host memory, in pinned host memory mapped into a GPU,
//! or in a GPU buffer. Device code addresses fields by the byte offsets below, which are asserted
//! at compile time (and exported in [`CONTROL_BLOCK_FIELDS`] for generated device code to check).
//!
//! | offset | size | field                 | written by        | meaning                                   |
//! |-------:|-----:|-----------------------|-------------------|-------------------------------------------|
//! |      0 |    4 | `active`              | host              | 1 = process input, 0 = hold it            |
//! |      4 |    4 | `terminate_requested` | host              | 1 = drain and stop                        |
//! |      8 |    4 | `terminated`          | kernel            | 1 = kernel loop has exited                |
//! |     12 |    4 | `state`               | host and kernel   | [`crate::runtime::KernelState`] code      |
//! |     16 |    8 | `messages_processed`  | kernel            | messages handed to a handler              |
//! |     24 |    8 | `messages_in_flight`  | host and kernel   | accepted into input, not yet processed    |
//! |     32 |    4 | `input_head`          | kernel            | input read index (mirror, see below)      |
//! |     36 |    4 | `input_tail`          | kernel            | input write index (mirror)                |
//! |     40 |    4 | `output_head`         | kernel            | output read index (mirror)                |
//! |     44 |    4 | `output_tail`         | kernel            | output write index (mirror)               |
//! |     48 |    4 | `input_capacity`      | host, at creation | slots in the input queue                  |
//! |     52 |    4 | `output_capacity`     | host, at creation | slots in the output queue                 |
//! |     56 |    8 | `hlc_packed`          | kernel            | kernel clock, packed (see [`crate::hlc`]) |
//! |     64 |    4 | `kernel_id`           | host, at creation | id of the kernel owning this block        |
//! |     68 |    4 | `last_error`          | kernel            | last [`ErrorCode`], 0 = none              |
//! |     72 |    8 | `error_count`         | kernel            | errors recorded since launch              |
//! |     80 |    4 | `restarts`            | kernel            | restarts after handler failures           |
//! |     84 |    4 | `generation`          | host              | bumped on each activate/deactivate        |
//! |     88 |   40 | reserved              | -                 | zero                                      |
//!
//! The queue headers themselves (see [`crate::queue`]) are the authority on queue positions; the
//! four index fields here are mirrors the kernel refreshes once per processed batch, so that a host
//! can watch a device-resident kernel by reading this one 128-byte block.
//!
//! # Memory ordering contract
//!
//! * The host requests changes by storing `active` / `terminate_requested` with `Release`; the
//!   kernel reads them with `Acquire` before it takes the next batch of input, so anything the host
//!   wrote before the request (for example, messages in the input queue) is visible to the kernel.
//! * The kernel publishes `terminated = 1` with `Release` after its last write to the output queue
//!   and to this block; the host reads it with `Acquire`, after which every output is visible.
//! * Counters (`messages_processed`, `error_count`, mirrors, `hlc_packed`) are statistics: written
//!   with `Relaxed`, read with `Relaxed`, never used to publish other data.
//!
//! On a GPU the same rules are implemented with system-scope release/acquire (or
//! `__threadfence_system()` around plain stores); each backend documents its fences next to its code.

use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// Error codes recorded in [`ControlBlock`]'s `last_error` field.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No error.
    None = 0,
    /// A handler panicked (CPU) or trapped (GPU).
    HandlerPanic = 1,
    /// A handler returned an error.
    HandlerError = 2,
    /// A message could not be decoded.
    Decode = 3,
    /// A message type had no handler on this kernel.
    UnknownMessageType = 4,
    /// An output or K2K target queue stayed full.
    QueueFull = 5,
    /// Any other error.
    Other = 255,
}

impl ErrorCode {
    /// Decodes a raw code; unknown values map to [`ErrorCode::Other`].
    #[must_use]
    pub fn from_u32(v: u32) -> Self {
        match v {
            0 => Self::None,
            1 => Self::HandlerPanic,
            2 => Self::HandlerError,
            3 => Self::Decode,
            4 => Self::UnknownMessageType,
            5 => Self::QueueFull,
            _ => Self::Other,
        }
    }
}

/// Per-kernel control block, exactly 128 bytes (layout in the [module docs](self)).
#[repr(C, align(128))]
pub struct ControlBlock {
    active: AtomicU32,
    terminate_requested: AtomicU32,
    terminated: AtomicU32,
    state: AtomicU32,
    messages_processed: AtomicU64,
    messages_in_flight: AtomicU64,
    input_head: AtomicU32,
    input_tail: AtomicU32,
    output_head: AtomicU32,
    output_tail: AtomicU32,
    input_capacity: u32,
    output_capacity: u32,
    hlc_packed: AtomicU64,
    kernel_id: u32,
    last_error: AtomicU32,
    error_count: AtomicU64,
    restarts: AtomicU32,
    generation: AtomicU32,
    _reserved: [u64; 5],
}

/// Size of [`ControlBlock`] in bytes.
pub const CONTROL_BLOCK_SIZE: usize = 128;

/// Field name, byte offset and byte size of every [`ControlBlock`] field, for device-side checks.
pub const CONTROL_BLOCK_FIELDS: &[(&str, usize, usize)] = &[
    ("active", 0, 4),
    ("terminate_requested", 4, 4),
    ("terminated", 8, 4),
    ("state", 12, 4),
    ("messages_processed", 16, 8),
    ("messages_in_flight", 24, 8),
    ("input_head", 32, 4),
    ("input_tail", 36, 4),
    ("output_head", 40, 4),
    ("output_tail", 44, 4),
    ("input_capacity", 48, 4),
    ("output_capacity", 52, 4),
    ("hlc_packed", 56, 8),
    ("kernel_id", 64, 4),
    ("last_error", 68, 4),
    ("error_count", 72, 8),
    ("restarts", 80, 4),
    ("generation", 84, 4),
];

#[cfg(not(ringkernel_loom))]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<ControlBlock>() == CONTROL_BLOCK_SIZE);
    assert!(align_of::<ControlBlock>() == 128);
    assert!(offset_of!(ControlBlock, active) == 0);
    assert!(offset_of!(ControlBlock, terminate_requested) == 4);
    assert!(offset_of!(ControlBlock, terminated) == 8);
    assert!(offset_of!(ControlBlock, state) == 12);
    assert!(offset_of!(ControlBlock, messages_processed) == 16);
    assert!(offset_of!(ControlBlock, messages_in_flight) == 24);
    assert!(offset_of!(ControlBlock, input_head) == 32);
    assert!(offset_of!(ControlBlock, input_tail) == 36);
    assert!(offset_of!(ControlBlock, output_head) == 40);
    assert!(offset_of!(ControlBlock, output_tail) == 44);
    assert!(offset_of!(ControlBlock, input_capacity) == 48);
    assert!(offset_of!(ControlBlock, output_capacity) == 52);
    assert!(offset_of!(ControlBlock, hlc_packed) == 56);
    assert!(offset_of!(ControlBlock, kernel_id) == 64);
    assert!(offset_of!(ControlBlock, last_error) == 68);
    assert!(offset_of!(ControlBlock, error_count) == 72);
    assert!(offset_of!(ControlBlock, restarts) == 80);
    assert!(offset_of!(ControlBlock, generation) == 84);
    assert!(offset_of!(ControlBlock, _reserved) == 88);
};

impl ControlBlock {
    /// A control block for a kernel with the given queue capacities, inactive and empty.
    #[must_use]
    pub fn with_capacities(input_capacity: u32, output_capacity: u32) -> Self {
        Self::for_kernel(0, input_capacity, output_capacity)
    }

    /// Like [`ControlBlock::with_capacities`], recording the owning kernel's id.
    #[must_use]
    pub fn for_kernel(kernel_id: u32, input_capacity: u32, output_capacity: u32) -> Self {
        Self {
            active: AtomicU32::new(0),
            terminate_requested: AtomicU32::new(0),
            terminated: AtomicU32::new(0),
            state: AtomicU32::new(0),
            messages_processed: AtomicU64::new(0),
            messages_in_flight: AtomicU64::new(0),
            input_head: AtomicU32::new(0),
            input_tail: AtomicU32::new(0),
            output_head: AtomicU32::new(0),
            output_tail: AtomicU32::new(0),
            input_capacity,
            output_capacity,
            hlc_packed: AtomicU64::new(0),
            kernel_id,
            last_error: AtomicU32::new(0),
            error_count: AtomicU64::new(0),
            restarts: AtomicU32::new(0),
            generation: AtomicU32::new(0),
            _reserved: [0; 5],
        }
    }

    /// Whether the kernel is asked to process input.
    #[inline]
    pub fn is_active(&self) -> bool {
        // Acquire: pairs with the Release in `set_active` (see module docs).
        self.active.load(Ordering::Acquire) != 0
    }

    /// Asks the kernel to process (`true`) or hold (`false`) its input.
    #[inline]
    pub fn set_active(&self, active: bool) {
        // Release: pairs with the Acquire in `is_active`.
        self.active.store(u32::from(active), Ordering::Release);
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether termination has been requested.
    #[inline]
    pub fn terminate_requested(&self) -> bool {
        // Acquire: pairs with the Release in `request_terminate`.
        self.terminate_requested.load(Ordering::Acquire) != 0
    }

    /// Asks the kernel to drain its input and stop.
    pub fn request_terminate(&self) {
        // Release: pairs with the Acquire in `terminate_requested`.
        self.terminate_requested.store(1, Ordering::Release);
    }

    /// Whether the kernel loop has exited.
    #[inline]
    pub fn is_terminated(&self) -> bool {
        // Acquire: pairs with the Release in `mark_terminated`; outputs written before are visible.
        self.terminated.load(Ordering::Acquire) != 0
    }

    /// Kernel side: records that the loop has exited, after its last output.
    pub fn mark_terminated(&self) {
        // Release: pairs with the Acquire in `is_terminated`.
        self.terminated.store(1, Ordering::Release);
    }

    /// Raw lifecycle state code.
    #[inline]
    pub fn state_code(&self) -> u32 {
        // Acquire: pairs with the Release in `set_state_code`/`transition`.
        self.state.load(Ordering::Acquire)
    }

    /// Sets the raw lifecycle state code.
    #[inline]
    pub fn set_state_code(&self, code: u32) {
        // Release: a reader that sees the new state also sees what led to it (e.g. last_error).
        self.state.store(code, Ordering::Release);
    }

    /// Moves the state from `from` to `to` atomically; returns the actual state on failure.
    #[inline]
    pub fn transition(&self, from: u32, to: u32) -> Result<(), u32> {
        // AcqRel: the winner of a concurrent transition sees everything its predecessor published.
        self.state.compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire).map(|_| ())
    }

    /// Whether the input queue is empty according to the mirrored indices.
    #[inline]
    pub fn input_queue_empty(&self) -> bool {
        self.input_head.load(Ordering::Relaxed) == self.input_tail.load(Ordering::Relaxed)
    }

    /// Whether the output queue is empty according to the mirrored indices.
    #[inline]
    pub fn output_queue_empty(&self) -> bool {
        self.output_head.load(Ordering::Relaxed) == self.output_tail.load(Ordering::Relaxed)
    }

    /// Kernel side: refreshes the mirrored queue indices.
    #[inline]
    pub fn mirror_queues(&self, input: (u32, u32), output: (u32, u32)) {
        self.input_head.store(input.0, Ordering::Relaxed);
        self.input_tail.store(input.1, Ordering::Relaxed);
        self.output_head.store(output.0, Ordering::Relaxed);
        self.output_tail.store(output.1, Ordering::Relaxed);
    }

    /// Mirrored (head, tail) of the input queue.
    pub fn input_indices(&self) -> (u32, u32) {
        (self.input_head.load(Ordering::Relaxed), self.input_tail.load(Ordering::Relaxed))
    }

    /// Mirrored (head, tail) of the output queue.
    pub fn output_indices(&self) -> (u32, u32) {
        (self.output_head.load(Ordering::Relaxed), self.output_tail.load(Ordering::Relaxed))
    }

    /// Input queue capacity in slots.
    pub fn input_capacity(&self) -> u32 {
        self.input_capacity
    }

    /// Output queue capacity in slots.
    pub fn output_capacity(&self) -> u32 {
        self.output_capacity
    }

    /// Id of the owning kernel.
    pub fn kernel_id(&self) -> u32 {
        self.kernel_id
    }

    /// Messages processed so far.
    pub fn messages_processed(&self) -> u64 {
        self.messages_processed.load(Ordering::Relaxed)
    }

    /// Kernel side: adds `n` processed messages.
    #[inline]
    pub fn add_processed(&self, n: u64) {
        self.messages_processed.fetch_add(n, Ordering::Relaxed);
    }

    /// Messages accepted into the input queue and not yet processed.
    pub fn messages_in_flight(&self) -> u64 {
        self.messages_in_flight.load(Ordering::Relaxed)
    }

    /// Adjusts the in-flight count by `delta` (wrapping arithmetic, so `-n` works).
    #[inline]
    pub fn add_in_flight(&self, delta: i64) {
        self.messages_in_flight.fetch_add(delta as u64, Ordering::Relaxed);
    }

    /// The kernel clock, packed.
    pub fn hlc_packed(&self) -> u64 {
        self.hlc_packed.load(Ordering::Relaxed)
    }

    /// Kernel side: publishes the kernel clock.
    #[inline]
    pub fn set_hlc_packed(&self, packed: u64) {
        self.hlc_packed.store(packed, Ordering::Relaxed);
    }

    /// Records an error: sets `last_error`, bumps `error_count`.
    pub fn record_error(&self, code: ErrorCode) {
        self.last_error.store(code as u32, Ordering::Relaxed);
        self.error_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Last recorded error code.
    pub fn last_error(&self) -> ErrorCode {
        ErrorCode::from_u32(self.last_error.load(Ordering::Relaxed))
    }

    /// Errors recorded since launch.
    pub fn error_count(&self) -> u64 {
        self.error_count.load(Ordering::Relaxed)
    }

    /// Records a restart and returns the new restart count.
    pub fn record_restart(&self) -> u32 {
        self.restarts.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Restarts so far.
    pub fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Activation generation (bumped on each activate/deactivate).
    pub fn generation(&self) -> u32 {
        self.generation.load(Ordering::Relaxed)
    }
}

impl core::fmt::Debug for ControlBlock {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ControlBlock")
            .field("kernel_id", &self.kernel_id)
            .field("active", &self.is_active())
            .field("terminate_requested", &self.terminate_requested())
            .field("terminated", &self.is_terminated())
            .field("state", &self.state_code())
            .field("messages_processed", &self.messages_processed())
            .field("input", &self.input_indices())
            .field("output", &self.output_indices())
            .finish()
    }
}

#[cfg(all(test, not(ringkernel_loom)))]
mod tests {
    use super::*;

    #[test]
    fn spec_snippet_holds() {
        let control = ControlBlock::with_capacities(1024, 1024);
        assert!(!control.is_active());
        assert!(control.input_queue_empty());
        assert_eq!(core::mem::size_of_val(&control), 128);
    }

    #[test]
    fn field_table_matches_struct() {
        let cb = ControlBlock::with_capacities(8, 16);
        let base = &cb as *const ControlBlock as usize;
        let actual = [
            ("active", &cb.active as *const _ as usize - base),
            ("messages_processed", &cb.messages_processed as *const _ as usize - base),
            ("hlc_packed", &cb.hlc_packed as *const _ as usize - base),
            ("generation", &cb.generation as *const _ as usize - base),
        ];
        for (name, off) in actual {
            let (_, table_off, _) = CONTROL_BLOCK_FIELDS.iter().find(|f| f.0 == name).unwrap();
            assert_eq!(*table_off, off, "{name}");
        }
        // The table is contiguous and ends where the reserved tail begins.
        let mut end = 0;
        for (name, off, size) in CONTROL_BLOCK_FIELDS {
            assert!(*off >= end, "{name} overlaps");
            end = off + size;
        }
        assert_eq!(end, 88);
    }

    #[test]
    fn field_table_is_exact() {
        use core::mem::{offset_of, size_of_val};
        let cb = ControlBlock::with_capacities(1, 1);
        macro_rules! row {
            ($f:ident) => {
                (stringify!($f), offset_of!(ControlBlock, $f), size_of_val(&cb.$f))
            };
        }
        let actual = [
            row!(active),
            row!(terminate_requested),
            row!(terminated),
            row!(state),
            row!(messages_processed),
            row!(messages_in_flight),
            row!(input_head),
            row!(input_tail),
            row!(output_head),
            row!(output_tail),
            row!(input_capacity),
            row!(output_capacity),
            row!(hlc_packed),
            row!(kernel_id),
            row!(last_error),
            row!(error_count),
            row!(restarts),
            row!(generation),
        ];
        assert_eq!(CONTROL_BLOCK_FIELDS, &actual[..]);
    }

    #[test]
    fn lifecycle_flags() {
        let cb = ControlBlock::for_kernel(3, 4, 4);
        cb.set_active(true);
        assert!(cb.is_active());
        cb.request_terminate();
        assert!(cb.terminate_requested());
        cb.mark_terminated();
        assert!(cb.is_terminated());
        assert_eq!(cb.transition(0, 2), Ok(()));
        assert_eq!(cb.transition(0, 3), Err(2));
        cb.record_error(ErrorCode::HandlerPanic);
        assert_eq!(cb.last_error(), ErrorCode::HandlerPanic);
        assert_eq!(cb.error_count(), 1);
        assert_eq!(cb.generation(), 1);
    }
}
