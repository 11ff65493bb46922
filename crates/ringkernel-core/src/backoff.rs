//! One back-off type for every waiting loop of the runtime: spin, then yield the core, then park.
//!
//! A [`Backoff`] is a policy (plain `const` data: how long each phase lasts, how long a park is
//! and how it grows); a [`Waiter`] walks one wait through it. Each waiting loop of the runtime
//! names its policy here, so its timing is stated once and can be compared with the others:
//!
//! | policy | used by | spin | yield | park |
//! |---|---|---|---|---|
//! | [`Backoff::CALL_WAIT`] | a `call` waiting for its reply | 2 µs | until 20 µs | the task awaits the reply's waker |
//! | [`Backoff::WORKER_IDLE`] | an idle CPU worker | 2 µs (16 hints a turn) | until `CpuConfig::spin` (50 µs) | 100 ms (safety net; woken by `unpark`) |
//! | [`Backoff::AGENT_IDLE`] | the CUDA agent with nothing to route | 255 turns | until turn 2047 | 20 µs, doubling every 64 turns, at most 1 ms |
//! | [`Backoff::DISPATCHER_BLOCKED`] | the wgpu dispatcher waiting for the host to make room | – | – | 200 µs |
//! | [`Backoff::DISPATCHER_IDLE`] | the wgpu dispatcher with no work | – | – | 1 s (safety net; woken by doorbells) |
//! | [`Backoff::SHORT_WRITE`] | `terminate` waiting for admitted senders to finish their push | 63 turns | forever | – |
//! | [`Backoff::YIELD_POLL`] | a word another thread or the device is about to write (kernel start, snapshot, a reply slot being filled) | – | forever | – |
//! | [`Backoff::DEVICE_EXIT`] | shutdown waiting for persistent kernels to return | – | – | 200 µs |
//!
//! The spin and yield phases of the CPU worker and of `call` were tuned against p99 round-trip
//! tails on machines with few cores (docs/10): past [`SPIN_BEFORE_YIELD`] a waiter gives its core
//! away on every turn, so that it never keeps the thread it waits for off a shared core.
//!
//! Under `--cfg ringkernel_loom` the spin and yield steps are loom's, so the protocols that wait
//! through a [`Waiter`] (the admission gate) are model-checked as they ship.

use std::time::{Duration, Instant};

/// How long a waiting `call` (and an idle CPU worker) spins before it yields the core on each
/// turn of its wait loop.
pub const SPIN_BEFORE_YIELD: Duration = Duration::from_micros(2);

/// Where a phase of a wait ends, counted from the start of the wait (the last
/// [`Waiter::reset`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// After this many turns in all.
    Turns(u32),
    /// Once this long has passed.
    Elapsed(Duration),
    /// Never: the wait stays in this phase.
    Never,
}

impl Until {
    /// Whether a wait at `turn`, `elapsed` into it, is still before this limit.
    const fn before(self, turn: u32, elapsed: Duration) -> bool {
        match self {
            Until::Turns(n) => turn < n,
            Until::Elapsed(d) => elapsed.as_nanos() < d.as_nanos(),
            Until::Never => true,
        }
    }

    const fn needs_clock(self) -> bool {
        matches!(self, Until::Elapsed(_))
    }
}

/// A back-off policy (see the [module docs](self)).
///
/// A wait spins while [`Backoff::spin`] has not been reached, then yields the thread while
/// [`Backoff::yields`] has not been reached (both counted from the start of the wait), then parks:
/// the `n`-th park (from 0) lasts `park_min × 2^(n / double_every)`, at most `park_max`
/// (`double_every == 0`: always `park_min`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// End of the spin phase.
    pub spin: Until,
    /// Spin-loop hints per spinning turn.
    pub spins_per_turn: u32,
    /// End of the yield phase.
    pub yields: Until,
    /// First park.
    pub park_min: Duration,
    /// Longest park.
    pub park_max: Duration,
    /// Parks per doubling of the park time (0: the park time never grows).
    pub double_every: u32,
}

/// What a wait does on one turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Spin (this many spin-loop hints).
    Spin(u32),
    /// Give the core away once.
    Yield,
    /// Park (or sleep) this long; what wakes the thread earlier is the caller's protocol.
    Park(Duration),
}

impl Backoff {
    /// A `call` waiting for its reply: spin [`SPIN_BEFORE_YIELD`], yield until 20 µs, then the
    /// task parks on the reply's waker (the park time is unused).
    pub const CALL_WAIT: Backoff = Backoff {
        spin: Until::Elapsed(SPIN_BEFORE_YIELD),
        spins_per_turn: 1,
        yields: Until::Elapsed(Duration::from_micros(20)),
        park_min: Duration::ZERO,
        park_max: Duration::ZERO,
        double_every: 0,
    };

    /// An idle CPU worker: spin [`SPIN_BEFORE_YIELD`] (16 hints a turn, between looks at the run
    /// queue), yield until `CpuConfig::spin` (50 µs by default, see
    /// [`Backoff::with_yield_until`]), then park; the 100 ms timeout only bounds a missed
    /// wake-up (producers unpark a sleeping worker).
    pub const WORKER_IDLE: Backoff = Backoff {
        spin: Until::Elapsed(SPIN_BEFORE_YIELD),
        spins_per_turn: 16,
        yields: Until::Elapsed(Duration::from_micros(50)),
        park_min: Duration::from_millis(100),
        park_max: Duration::from_millis(100),
        double_every: 0,
    };

    /// The CUDA agent with nothing to route: kernels produce output without a doorbell (device
    /// K2K chains, slow handlers), so it polls: 255 spinning turns, yields up to turn 2047, then
    /// parks 20 µs, doubling every 64 turns, at most 1 ms.
    pub const AGENT_IDLE: Backoff = Backoff {
        spin: Until::Turns(255),
        spins_per_turn: 1,
        yields: Until::Turns(2047),
        park_min: Duration::from_micros(20),
        park_max: Duration::from_millis(1),
        double_every: 64,
    };

    /// The wgpu dispatcher waiting for the host to drain an output ring or a full CPU kernel's
    /// input: retried every 200 µs instead of spinning the GPU.
    pub const DISPATCHER_BLOCKED: Backoff = Backoff::park_only(Duration::from_micros(200));

    /// The wgpu dispatcher with nothing to do: doorbells wake it; the 1 s timeout only bounds a
    /// missed wake-up.
    pub const DISPATCHER_IDLE: Backoff = Backoff::park_only(Duration::from_secs(1));

    /// A wait for other threads to finish a short, non-blocking write (senders admitted before
    /// `terminate` closed the input): 63 spinning turns, then yield (a writer may have been
    /// preempted), never park.
    pub const SHORT_WRITE: Backoff = Backoff {
        spin: Until::Turns(63),
        spins_per_turn: 1,
        yields: Until::Never,
        park_min: Duration::ZERO,
        park_max: Duration::ZERO,
        double_every: 0,
    };

    /// A wait for a word another thread or the device is about to write (a new kernel's first
    /// loop iteration, a state snapshot, a reply slot being filled): yield on every turn, never
    /// park; the caller bounds the wait with its own deadline where it can fail.
    pub const YIELD_POLL: Backoff = Backoff {
        spin: Until::Turns(0),
        spins_per_turn: 0,
        yields: Until::Never,
        park_min: Duration::ZERO,
        park_max: Duration::ZERO,
        double_every: 0,
    };

    /// Shutdown waiting for a persistent kernel's launch to return: poll every 200 µs.
    pub const DEVICE_EXIT: Backoff = Backoff::park_only(Duration::from_micros(200));

    /// A policy that parks `d` on every turn.
    #[must_use]
    pub const fn park_only(d: Duration) -> Backoff {
        Backoff {
            spin: Until::Turns(0),
            spins_per_turn: 0,
            yields: Until::Turns(0),
            park_min: d,
            park_max: d,
            double_every: 0,
        }
    }

    /// This policy with the yield phase ending `d` into the wait.
    #[must_use]
    pub const fn with_yield_until(self, d: Duration) -> Backoff {
        Backoff { yields: Until::Elapsed(d), ..self }
    }

    /// What turn `turn` of a wait (`elapsed` into it, `parked` parks before it) does.
    #[must_use]
    pub fn step(&self, turn: u32, elapsed: Duration, parked: u32) -> Step {
        if self.spin.before(turn, elapsed) {
            return Step::Spin(self.spins_per_turn);
        }
        if self.yields.before(turn, elapsed) {
            return Step::Yield;
        }
        let doublings = parked.checked_div(self.double_every).unwrap_or(0).min(31);
        Step::Park(self.park_min.saturating_mul(1 << doublings).min(self.park_max))
    }

    /// A wait through this policy, starting now.
    #[must_use]
    pub fn waiter(self) -> Waiter {
        Waiter { policy: self, turn: 0, parked: 0, start: None }
    }

    fn needs_clock(&self) -> bool {
        self.spin.needs_clock() || self.yields.needs_clock()
    }
}

/// One wait walked through a [`Backoff`] policy.
#[derive(Debug, Clone)]
pub struct Waiter {
    policy: Backoff,
    turn: u32,
    parked: u32,
    /// Read on the first turn, and only when a phase ends by time.
    start: Option<Instant>,
}

impl Waiter {
    /// The policy.
    #[must_use]
    pub fn policy(&self) -> &Backoff {
        &self.policy
    }

    /// Starts the wait over (the awaited thing happened; the next wait begins at turn 0).
    pub fn reset(&mut self) {
        self.turn = 0;
        self.parked = 0;
        self.start = None;
    }

    /// What this turn does; moves to the next turn.
    pub fn next_step(&mut self) -> Step {
        let elapsed = if self.policy.needs_clock() {
            self.start.get_or_insert_with(Instant::now).elapsed()
        } else {
            Duration::ZERO
        };
        let step = self.policy.step(self.turn, elapsed, self.parked);
        self.turn = self.turn.saturating_add(1);
        if let Step::Park(_) = step {
            self.parked = self.parked.saturating_add(1);
        }
        step
    }

    /// Spins or yields for this turn; returns the park time instead when the wait has reached
    /// its park phase (the caller parks with its own wake-up protocol, or stops polling).
    pub fn snooze(&mut self) -> Option<Duration> {
        match self.next_step() {
            Step::Spin(n) => {
                for _ in 0..n {
                    crate::sync::spin_hint();
                }
                None
            }
            Step::Yield => {
                crate::sync::yield_hint();
                None
            }
            Step::Park(d) => Some(d),
        }
    }

    /// One turn: spin, yield, or park the thread (`std::thread::park_timeout`: an `unpark`
    /// ends it early).
    pub fn wait(&mut self) {
        if let Some(d) = self.snooze() {
            std::thread::park_timeout(d);
        }
    }
}

#[cfg(all(test, not(ringkernel_loom)))]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn agent_idle_keeps_the_cuda_ladder() {
        // The former ladder: on the k-th idle turn (k from 1), spin if k < 256, yield if
        // k < 2048, else park min(20 µs << min((k - 2048) / 64, 6), 1 ms).
        let p = Backoff::AGENT_IDLE;
        let mut w = p.waiter();
        for k in 1u32..6000 {
            let expected = if k < 256 {
                Step::Spin(1)
            } else if k < 2048 {
                Step::Yield
            } else {
                Step::Park(us((20u64 << ((k - 2048) / 64).min(6)).min(1000)))
            };
            assert_eq!(w.next_step(), expected, "idle turn {k}");
        }
        w.reset();
        assert_eq!(w.next_step(), Step::Spin(1));
    }

    #[test]
    fn time_phases_follow_the_clock() {
        let p = Backoff::WORKER_IDLE.with_yield_until(us(50));
        assert_eq!(p.step(0, Duration::ZERO, 0), Step::Spin(16));
        assert_eq!(p.step(1000, us(1), 0), Step::Spin(16));
        assert_eq!(p.step(1, us(3), 0), Step::Yield);
        assert_eq!(p.step(1, us(49), 0), Step::Yield);
        assert_eq!(p.step(1, us(50), 0), Step::Park(Duration::from_millis(100)));
        let c = Backoff::CALL_WAIT;
        assert_eq!(c.step(0, us(1), 0), Step::Spin(1));
        assert_eq!(c.step(5, us(2), 0), Step::Yield);
        assert_eq!(c.step(5, us(19), 0), Step::Yield);
        assert!(matches!(c.step(5, us(21), 0), Step::Park(_)));
    }

    #[test]
    fn fixed_and_unbounded_policies() {
        for (p, d) in [
            (Backoff::DISPATCHER_BLOCKED, us(200)),
            (Backoff::DISPATCHER_IDLE, Duration::from_secs(1)),
            (Backoff::DEVICE_EXIT, us(200)),
        ] {
            for turn in [0, 1, 1000, u32::MAX] {
                assert_eq!(p.step(turn, Duration::ZERO, turn), Step::Park(d));
            }
        }
        for turn in [0, 62] {
            assert_eq!(Backoff::SHORT_WRITE.step(turn, Duration::ZERO, 0), Step::Spin(1));
        }
        for turn in [63, u32::MAX] {
            assert_eq!(Backoff::SHORT_WRITE.step(turn, Duration::ZERO, 0), Step::Yield);
            assert_eq!(Backoff::YIELD_POLL.step(turn, Duration::from_secs(9), 0), Step::Yield);
        }
        assert_eq!(Backoff::YIELD_POLL.step(0, Duration::ZERO, 0), Step::Yield);
    }

    #[test]
    fn park_growth_saturates() {
        let p = Backoff {
            spin: Until::Turns(0),
            spins_per_turn: 0,
            yields: Until::Turns(0),
            park_min: us(1),
            park_max: Duration::MAX,
            double_every: 1,
        };
        assert_eq!(p.step(0, Duration::ZERO, 0), Step::Park(us(1)));
        assert_eq!(p.step(0, Duration::ZERO, 3), Step::Park(us(8)));
        assert_eq!(p.step(0, Duration::ZERO, u32::MAX), Step::Park(us(1 << 31)));
        let mut w = p.waiter();
        assert_eq!(w.snooze(), Some(us(1)));
        assert_eq!(w.snooze(), Some(us(2)));
    }
}
