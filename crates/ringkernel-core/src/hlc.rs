//! Hybrid logical clocks (Kulkarni et al., "Logical Physical Clocks", 2014).
//!
//! An HLC timestamp pairs a physical time with a logical counter so that it (a) stays close to wall
//! time and (b) respects causality: if event `e` happened before `f`, then `ts(e) < ts(f)`.
//!
//! # Packed form
//!
//! The physical and logical parts are packed into one `u64` so that device code (CUDA, WGSL via two
//! `u32` halves, MSL) can compare and advance a clock with plain integer operations:
//!
//! ```text
//!  63                                              12 11          0
//! +--------------------------------------------------+-------------+
//! |      physical time, microseconds since Unix epoch |   logical   |
//! |                 (52 bits, until year 2112)        |  (12 bits)  |
//! +--------------------------------------------------+-------------+
//! ```
//!
//! [`PHYSICAL_SHIFT`], [`PHYSICAL_MASK`] and [`LOGICAL_MASK`] name the fields. Because the physical
//! part sits in the high bits, comparing two packed values compares (physical, logical) lexically.
//! The node id is kept beside the packed word (it is the tie-breaker, not part of the clock state),
//! so the total order of [`HlcTimestamp`] is (physical, logical, node_id).
//!
//! # Algorithm
//!
//! The whole clock state is the packed `u64` in one `AtomicU64`; `tick` and `update` are a single
//! compare-and-swap loop, with no lock:
//!
//! * `tick`: `new = max(old + 1, now << 12)`. Adding one to the packed word increments the logical
//!   counter; when the counter overflows its 12 bits the carry moves into the physical field, so the
//!   clock "borrows" one microsecond from the future instead of wrapping. The clock therefore stays
//!   strictly monotonic even when the wall clock steps backwards or stalls.
//! * `update(remote)`: `new = max(old + 1, remote + 1, now << 12)`, after checking that `remote` is
//!   not further ahead of the local wall clock than the configured maximum drift. A rejected remote
//!   timestamp leaves the local clock untouched and returns [`HlcError::DriftExceeded`], carrying
//!   both timestamps.

use crate::sync::{AtomicU64, Ordering};
use core::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Number of bits the physical time is shifted left in the packed form.
pub const PHYSICAL_SHIFT: u32 = 12;
/// Mask of the logical counter in the packed form (low 12 bits).
pub const LOGICAL_MASK: u64 = (1 << PHYSICAL_SHIFT) - 1;
/// Mask of the physical time in the packed form (high 52 bits).
pub const PHYSICAL_MASK: u64 = !LOGICAL_MASK;
/// Largest representable physical time, in microseconds since the Unix epoch.
pub const MAX_PHYSICAL: u64 = (1 << (64 - PHYSICAL_SHIFT)) - 1;
/// Largest representable logical counter.
pub const MAX_LOGICAL: u32 = LOGICAL_MASK as u32;
/// Default maximum distance a remote timestamp may be ahead of the local wall clock.
pub const DEFAULT_MAX_DRIFT: Duration = Duration::from_millis(500);

/// A hybrid logical clock timestamp: physical microseconds, logical counter, node id.
///
/// Ordered by (physical, logical, node_id).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(C)]
pub struct HlcTimestamp {
    packed: u64,
    node_id: u32,
}

/// Errors from HLC operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HlcError {
    /// The remote timestamp is further ahead of the local wall clock than the allowed drift.
    #[error("remote HLC timestamp {remote} is {drift_us} us ahead of local time {local} (max drift {max_drift_us} us)")]
    DriftExceeded {
        /// The timestamp that was rejected.
        remote: HlcTimestamp,
        /// The local clock's reading when it was rejected (the clock was left unchanged).
        local: HlcTimestamp,
        /// How far `remote` is ahead of the local wall clock, in microseconds.
        drift_us: u64,
        /// The configured maximum, in microseconds.
        max_drift_us: u64,
    },
    /// A field does not fit its width in the packed form.
    #[error("HLC field out of range: physical {physical} (max {MAX_PHYSICAL}), logical {logical} (max {MAX_LOGICAL})")]
    OutOfRange {
        /// Requested physical time.
        physical: u64,
        /// Requested logical counter.
        logical: u32,
    },
    /// The clock has reached the largest representable time.
    #[error("HLC clock exhausted at {0}")]
    Exhausted(HlcTimestamp),
}

impl HlcTimestamp {
    /// Builds a timestamp from its parts.
    ///
    /// # Panics
    /// If `physical > MAX_PHYSICAL` or `logical > MAX_LOGICAL`; use [`HlcTimestamp::try_new`] for
    /// values that come from outside the program.
    #[must_use]
    pub const fn new(physical: u64, logical: u32, node_id: u32) -> Self {
        assert!(physical <= MAX_PHYSICAL, "HLC physical time exceeds 52 bits");
        assert!(logical <= MAX_LOGICAL, "HLC logical counter exceeds 12 bits");
        Self { packed: (physical << PHYSICAL_SHIFT) | logical as u64, node_id }
    }

    /// Builds a timestamp, rejecting fields that do not fit.
    pub const fn try_new(physical: u64, logical: u32, node_id: u32) -> Result<Self, HlcError> {
        if physical > MAX_PHYSICAL || logical > MAX_LOGICAL {
            return Err(HlcError::OutOfRange { physical, logical });
        }
        Ok(Self { packed: (physical << PHYSICAL_SHIFT) | logical as u64, node_id })
    }

    /// Rebuilds a timestamp from its packed clock word and a node id (any `u64` is valid).
    #[inline]
    #[must_use]
    pub const fn from_packed(packed: u64, node_id: u32) -> Self {
        Self { packed, node_id }
    }

    /// The packed (physical, logical) word.
    #[inline]
    #[must_use]
    pub const fn packed(&self) -> u64 {
        self.packed
    }

    /// Physical time in microseconds since the Unix epoch.
    #[inline]
    #[must_use]
    pub const fn physical(&self) -> u64 {
        self.packed >> PHYSICAL_SHIFT
    }

    /// Logical counter.
    #[inline]
    #[must_use]
    pub const fn logical(&self) -> u32 {
        (self.packed & LOGICAL_MASK) as u32
    }

    /// Id of the node (kernel) whose clock produced this timestamp.
    #[inline]
    #[must_use]
    pub const fn node_id(&self) -> u32 {
        self.node_id
    }
}

impl fmt::Debug for HlcTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hlc({}.{}@{})", self.physical(), self.logical(), self.node_id)
    }
}

impl fmt::Display for HlcTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A source of physical time for an [`HlcClock`], in microseconds since the Unix epoch.
///
/// Inject a manual source in tests to simulate skew, jumps and stalls.
pub trait PhysicalClock: Send + Sync {
    /// Current physical time in microseconds since the Unix epoch.
    fn now_us(&self) -> u64;
}

/// The system wall clock (`SystemTime`), microsecond precision (about 30 ns a read on Linux).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

/// The kernel's coarse wall clock (`CLOCK_REALTIME_COARSE` on Linux, about 5 ns a read), whose
/// resolution is the kernel tick (1 to 4 ms). Elsewhere it reads [`SystemClock`].
///
/// This is [`HlcClock`]'s default source: the logical counter orders every event inside one
/// coarse tick, so causality is unaffected; what the coarser source changes is how closely the
/// physical part tracks wall time (within one kernel tick, plus whatever the counter carried into
/// the microsecond field under extreme tick rates). Use [`SystemClock`] with
/// [`HlcClock::with_source`] when timestamps should track wall time to the microsecond.
#[derive(Debug, Default, Clone, Copy)]
pub struct CoarseClock;

impl PhysicalClock for CoarseClock {
    #[inline]
    fn now_us(&self) -> u64 {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: `ts` is a valid, writable timespec; CLOCK_REALTIME_COARSE exists on every
            // Linux since 2.6.32 and the call has no other preconditions.
            let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
            if rc == 0 && ts.tv_sec >= 0 {
                return ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000;
            }
        }
        SystemClock.now_us()
    }
}

impl PhysicalClock for SystemClock {
    #[inline]
    fn now_us(&self) -> u64 {
        // A wall clock before 1970 reads as 0; the HLC stays monotonic regardless.
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
    }
}

impl<C: PhysicalClock + ?Sized> PhysicalClock for std::sync::Arc<C> {
    #[inline]
    fn now_us(&self) -> u64 {
        (**self).now_us()
    }
}

/// A manually driven clock for tests and simulations.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: core::sync::atomic::AtomicU64,
}

impl ManualClock {
    /// A manual clock reading `start_us`.
    #[must_use]
    pub fn new(start_us: u64) -> Self {
        Self { now: core::sync::atomic::AtomicU64::new(start_us) }
    }
    /// Sets the reading (may go backwards, to simulate a wall-clock step).
    pub fn set(&self, us: u64) {
        self.now.store(us, core::sync::atomic::Ordering::Relaxed);
    }
    /// Moves the reading forward by `us`.
    pub fn advance(&self, us: u64) {
        self.now.fetch_add(us, core::sync::atomic::Ordering::Relaxed);
    }
}

impl PhysicalClock for ManualClock {
    fn now_us(&self) -> u64 {
        self.now.load(core::sync::atomic::Ordering::Relaxed)
    }
}

/// A lock-free hybrid logical clock, shareable across threads (`&self` methods).
///
/// The default physical source is [`CoarseClock`]; see there for the trade-off.
pub struct HlcClock<C: PhysicalClock = CoarseClock> {
    state: AtomicU64,
    node_id: u32,
    max_drift_us: u64,
    source: C,
}

impl HlcClock<CoarseClock> {
    /// A clock for `node_id` reading the coarse system wall clock, with [`DEFAULT_MAX_DRIFT`].
    #[must_use]
    pub fn new(node_id: u32) -> Self {
        Self::with_source(node_id, CoarseClock)
    }
}

impl<C: PhysicalClock> HlcClock<C> {
    /// A clock for `node_id` reading physical time from `source`.
    pub fn with_source(node_id: u32, source: C) -> Self {
        Self { state: AtomicU64::new(0), node_id, max_drift_us: DEFAULT_MAX_DRIFT.as_micros() as u64, source }
    }

    /// Sets the maximum distance a remote timestamp may be ahead of local wall time.
    #[must_use]
    pub fn with_max_drift(mut self, max_drift: Duration) -> Self {
        self.max_drift_us = max_drift.as_micros().min(u64::MAX as u128) as u64;
        self
    }

    /// This clock's node id.
    #[must_use]
    pub fn node_id(&self) -> u32 {
        self.node_id
    }

    /// The physical clock source.
    pub fn source(&self) -> &C {
        &self.source
    }

    #[inline]
    fn wall_packed(&self) -> u64 {
        self.source.now_us().min(MAX_PHYSICAL) << PHYSICAL_SHIFT
    }

    /// The latest timestamp issued, without advancing the clock.
    #[must_use]
    pub fn now(&self) -> HlcTimestamp {
        // Relaxed: a snapshot of a single word; nothing else is published through it.
        HlcTimestamp::from_packed(self.state.load(Ordering::Relaxed), self.node_id)
    }

    /// Issues a new timestamp for a local or send event; strictly greater than every timestamp
    /// this clock issued before.
    ///
    /// Saturates at the largest representable time (year 2112); use [`HlcClock::try_tick`] to see
    /// that as an error.
    #[inline]
    pub fn tick(&self) -> HlcTimestamp {
        self.try_tick().unwrap_or_else(|e| match e {
            HlcError::Exhausted(ts) => ts,
            _ => unreachable!("tick only fails with Exhausted"),
        })
    }

    /// Like [`HlcClock::tick`] but reports a clock that reached the largest representable time.
    #[inline]
    pub fn try_tick(&self) -> Result<HlcTimestamp, HlcError> {
        let wall = self.wall_packed();
        // Relaxed is enough for the clock word: it only orders against itself (the CAS is a total
        // order on this one location); timestamps publish nothing else.
        let mut old = self.state.load(Ordering::Relaxed);
        loop {
            let next = old.checked_add(1).ok_or(HlcError::Exhausted(self.now()))?.max(wall);
            match self.state.compare_exchange_weak(old, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(HlcTimestamp::from_packed(next, self.node_id)),
                Err(cur) => old = cur,
            }
        }
    }

    /// Merges a timestamp received from another node; the result is greater than both `remote` and
    /// every timestamp this clock issued before.
    ///
    /// Fails with [`HlcError::DriftExceeded`] (clock unchanged) when `remote` is more than the
    /// maximum drift ahead of the local wall clock.
    #[inline]
    pub fn update(&self, remote: &HlcTimestamp) -> Result<HlcTimestamp, HlcError> {
        let now_us = self.source.now_us().min(MAX_PHYSICAL);
        let remote_us = remote.physical();
        if remote_us > now_us && remote_us - now_us > self.max_drift_us {
            return Err(HlcError::DriftExceeded {
                remote: *remote,
                local: self.now(),
                drift_us: remote_us - now_us,
                max_drift_us: self.max_drift_us,
            });
        }
        let wall = now_us << PHYSICAL_SHIFT;
        let mut old = self.state.load(Ordering::Relaxed);
        loop {
            let floor = old.max(remote.packed);
            let next = floor.checked_add(1).ok_or(HlcError::Exhausted(self.now()))?.max(wall);
            match self.state.compare_exchange_weak(old, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(HlcTimestamp::from_packed(next, self.node_id)),
                Err(cur) => old = cur,
            }
        }
    }

    /// Merges a remote packed clock word without the drift check (for trusted, same-process
    /// sources such as another kernel of this runtime). Returns the new local timestamp.
    #[inline]
    pub fn observe_trusted(&self, remote_packed: u64) -> HlcTimestamp {
        let wall = self.wall_packed();
        let mut old = self.state.load(Ordering::Relaxed);
        loop {
            let next = old.max(remote_packed).saturating_add(1).max(wall);
            match self.state.compare_exchange_weak(old, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return HlcTimestamp::from_packed(next, self.node_id),
                Err(cur) => old = cur,
            }
        }
    }
}

impl<C: PhysicalClock> fmt::Debug for HlcClock<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HlcClock")
            .field("node_id", &self.node_id)
            .field("now", &self.now())
            .field("max_drift_us", &self.max_drift_us)
            .finish()
    }
}

#[cfg(all(test, not(ringkernel_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn spec_snippet_holds() {
        let clock = HlcClock::new(1);
        let ts1 = clock.tick();
        let ts2 = clock.tick();
        assert!(ts1 < ts2);
        let remote_ts = HlcTimestamp::new(100, 5, 2);
        let updated = clock.update(&remote_ts).unwrap();
        assert!(updated > remote_ts);
    }

    #[test]
    fn monotonic_when_wall_clock_steps_back() {
        let src = Arc::new(ManualClock::new(1_000_000));
        let clock = HlcClock::with_source(7, src.clone());
        let a = clock.tick();
        src.set(10); // wall clock jumps back
        let b = clock.tick();
        assert!(b > a);
        assert_eq!(b.physical(), a.physical());
        assert_eq!(b.logical(), a.logical() + 1);
    }

    #[test]
    fn logical_overflow_carries_into_physical() {
        let src = Arc::new(ManualClock::new(500));
        let clock = HlcClock::with_source(1, src);
        let mut prev = clock.tick();
        for _ in 0..(MAX_LOGICAL as usize + 10) {
            let t = clock.tick();
            assert!(t > prev);
            prev = t;
        }
        assert_eq!(prev.physical(), 501);
    }

    #[test]
    fn drift_rejected_and_clock_unchanged() {
        let src = Arc::new(ManualClock::new(1_000_000));
        let clock = HlcClock::with_source(1, src).with_max_drift(Duration::from_millis(1));
        let before = clock.tick();
        let remote = HlcTimestamp::new(1_000_000 + 5_000, 0, 2);
        let err = clock.update(&remote).unwrap_err();
        match err {
            HlcError::DriftExceeded { remote: r, local, drift_us, max_drift_us } => {
                assert_eq!(r, remote);
                assert_eq!(local, before);
                assert_eq!(drift_us, 5_000);
                assert_eq!(max_drift_us, 1_000);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(clock.now(), before);
        // Within the drift it is accepted.
        let ok = clock.update(&HlcTimestamp::new(1_000_500, 3, 2)).unwrap();
        assert!(ok > HlcTimestamp::new(1_000_500, 3, 2));
    }

    #[test]
    fn out_of_range_fields_rejected() {
        assert!(HlcTimestamp::try_new(MAX_PHYSICAL + 1, 0, 0).is_err());
        assert!(HlcTimestamp::try_new(0, MAX_LOGICAL + 1, 0).is_err());
        let t = HlcTimestamp::try_new(MAX_PHYSICAL, MAX_LOGICAL, 9).unwrap();
        assert_eq!((t.physical(), t.logical(), t.node_id()), (MAX_PHYSICAL, MAX_LOGICAL, 9));
    }

    #[test]
    fn exhausted_clock_saturates() {
        let src = Arc::new(ManualClock::new(MAX_PHYSICAL));
        let clock = HlcClock::with_source(1, src);
        let remote = HlcTimestamp::new(MAX_PHYSICAL, MAX_LOGICAL, 2);
        assert!(matches!(clock.update(&remote), Err(HlcError::Exhausted(_))));
    }

    #[test]
    fn concurrent_ticks_are_unique() {
        let clock = Arc::new(HlcClock::new(1));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let c = clock.clone();
                std::thread::spawn(move || (0..10_000).map(|_| c.tick()).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<_> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
