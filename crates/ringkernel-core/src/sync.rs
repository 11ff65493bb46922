//! Atomic and cell primitives, switched to `loom`'s model-checked versions under `--cfg ringkernel_loom`.
//!
//! Every protocol in this crate (ring queues, control block) imports its atomics from here, so
//! the loom models in `tests/loom_*.rs` exercise exactly the code that ships.

#[cfg(ringkernel_loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[cfg(not(ringkernel_loom))]
pub(crate) use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Spin-loop hint that yields to the loom scheduler when model checking.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(ringkernel_loom)]
    loom::thread::yield_now();
    #[cfg(not(ringkernel_loom))]
    core::hint::spin_loop();
}

/// Yields the thread (to the loom scheduler when model checking).
#[inline]
pub(crate) fn yield_hint() {
    #[cfg(ringkernel_loom)]
    loom::thread::yield_now();
    #[cfg(not(ringkernel_loom))]
    std::thread::yield_now();
}
