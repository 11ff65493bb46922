//! Property tests of the hybrid logical clock: simulated nodes with skewed, jumping physical
//! clocks exchange messages; every happened-before pair must be ordered by timestamp, and each
//! clock's timestamps must strictly increase.

use proptest::prelude::*;
use ringkernel_core::hlc::{HlcClock, HlcTimestamp, ManualClock, PhysicalClock};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
enum Step {
    /// Node ticks (local or send event).
    Local(usize),
    /// Node `from` sends to node `to` (send tick on `from`, update on `to`).
    Send(usize, usize),
    /// Node's wall clock moves by `delta_us` (may be negative: a step backwards).
    Jump(usize, i64),
}

fn step(nodes: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..nodes).prop_map(Step::Local),
        (0..nodes, 0..nodes).prop_map(|(a, b)| Step::Send(a, b)),
        (0..nodes, -5_000_000i64..5_000_000).prop_map(|(n, d)| Step::Jump(n, d)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn happened_before_implies_smaller_timestamp(
        skews in prop::collection::vec(0u64..10_000_000, 2..6),
        steps in prop::collection::vec(step(6), 1..300),
    ) {
        let n = skews.len();
        let wall: Vec<Arc<ManualClock>> =
            skews.iter().map(|s| Arc::new(ManualClock::new(1_700_000_000_000_000 + s))).collect();
        // Large max drift: skew and jumps are the point here; drift rejection is tested elsewhere.
        let clocks: Vec<_> = (0..n)
            .map(|i| HlcClock::with_source(i as u32, wall[i].clone()).with_max_drift(Duration::from_secs(3600)))
            .collect();
        // Events per node in order, and happened-before edges (event ids).
        let mut events: Vec<HlcTimestamp> = Vec::new();
        let mut last_on_node: Vec<Option<usize>> = vec![None; n];
        let mut edges: Vec<(usize, usize)> = Vec::new();
        let mut record = |node: usize, ts: HlcTimestamp, events: &mut Vec<HlcTimestamp>, extra: Option<usize>| {
            let id = events.len();
            events.push(ts);
            if let Some(prev) = last_on_node[node] {
                edges.push((prev, id));
            }
            if let Some(src) = extra {
                edges.push((src, id));
            }
            last_on_node[node] = Some(id);
            id
        };
        for s in steps {
            match s {
                Step::Local(a) => {
                    let a = a % n;
                    let ts = clocks[a].tick();
                    record(a, ts, &mut events, None);
                }
                Step::Send(a, b) => {
                    let (a, b) = (a % n, b % n);
                    let sent = clocks[a].tick();
                    let send_id = record(a, sent, &mut events, None);
                    let recv = clocks[b].update(&sent).expect("within drift");
                    record(b, recv, &mut events, Some(send_id));
                }
                Step::Jump(a, d) => {
                    let a = a % n;
                    let now = wall[a].now_us() as i64;
                    wall[a].set((now + d).max(0) as u64);
                }
            }
        }
        for (x, y) in edges {
            prop_assert!(events[x] < events[y], "{:?} -> {:?} not ordered", events[x], events[y]);
        }
    }

    #[test]
    fn one_clock_strictly_increases(jumps in prop::collection::vec(-1_000_000i64..1_000_000, 1..500)) {
        let wall = Arc::new(ManualClock::new(1_000_000_000));
        let clock = HlcClock::with_source(1, wall.clone());
        let mut prev = clock.tick();
        for j in jumps {
            wall.set((wall.now_us() as i64 + j).max(0) as u64);
            let t = clock.tick();
            prop_assert!(t > prev);
            prev = t;
        }
    }

    #[test]
    fn packed_round_trip(physical in 0u64..(1 << 52), logical in 0u32..4096, node in any::<u32>()) {
        let t = HlcTimestamp::new(physical, logical, node);
        prop_assert_eq!((t.physical(), t.logical(), t.node_id()), (physical, logical, node));
        prop_assert_eq!(HlcTimestamp::from_packed(t.packed(), node), t);
    }
}
