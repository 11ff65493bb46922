//! Message, kernel and type identifiers.

use core::cell::Cell;
use core::sync::atomic::{AtomicU64, Ordering};

/// Process-unique message identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct MessageId(pub u64);

static NEXT_BLOCK: AtomicU64 = AtomicU64::new(1);
const BLOCK: u64 = 1 << 12;

thread_local! {
    /// (next id, end of this thread's block).
    static LOCAL: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

impl MessageId {
    /// A new id, unique within the process. Each thread reserves blocks of 4096 ids with one
    /// atomic add, so the common case touches no shared memory.
    #[inline]
    pub fn generate() -> Self {
        LOCAL.with(|c| {
            let (mut next, mut end) = c.get();
            if next == end {
                // Relaxed: uniqueness needs only the atomicity of fetch_add.
                next = NEXT_BLOCK.fetch_add(1, Ordering::Relaxed) * BLOCK;
                end = next + BLOCK;
            }
            c.set((next + 1, end));
            MessageId(next)
        })
    }

    /// The raw value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl core::fmt::Display for MessageId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "msg#{}", self.0)
    }
}

/// Identifier of a kernel within a runtime. `KernelId::HOST` (0) names the host side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct KernelId(pub u32);

impl KernelId {
    /// The host (not a kernel).
    pub const HOST: KernelId = KernelId(0);

    /// The raw value.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl core::fmt::Display for KernelId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if *self == Self::HOST {
            f.write_str("host")
        } else {
            write!(f, "kernel#{}", self.0)
        }
    }
}

/// Bit set in every type id derived from a type path, so that explicit ids below 2^63 never
/// collide with derived ones.
pub const HASHED_TYPE_ID_BIT: u64 = 1 << 63;

/// Stable type id for a type path: 64-bit FNV-1a of the UTF-8 path, with [`HASHED_TYPE_ID_BIT`]
/// set. Stable across compilations and platforms (it depends only on the path text).
#[must_use]
pub const fn type_id_from_path(path: &str) -> u64 {
    let bytes = path.as_bytes();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash | HASHED_TYPE_ID_BIT
}

#[cfg(all(test, not(ringkernel_loom)))]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_unique_across_threads() {
        let hs: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..20_000).map(|_| MessageId::generate()).collect::<Vec<_>>()))
            .collect();
        let mut seen = HashSet::new();
        for h in hs {
            for id in h.join().unwrap() {
                assert!(seen.insert(id), "duplicate {id}");
            }
        }
    }

    #[test]
    fn path_hash_is_stable() {
        // FNV-1a("a") = 0xaf63dc4c8601ec8c
        assert_eq!(type_id_from_path("a"), 0xaf63_dc4c_8601_ec8c | HASHED_TYPE_ID_BIT);
        assert_ne!(type_id_from_path("x::A"), type_id_from_path("x::B"));
    }
}
