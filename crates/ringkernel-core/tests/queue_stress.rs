//! Multi-thread stress tests: every message arrives exactly once, in order per producer.

use ringkernel_core::queue::{spsc, SlotRing};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[test]
fn spsc_one_million_in_order() {
    let (mut p, mut c) = spsc::channel::<u64>(256).unwrap();
    const N: u64 = 1_000_000;
    let prod = std::thread::spawn(move || {
        let mut i = 0;
        while i < N {
            if p.push(i).is_ok() {
                i += 1;
            } else {
                std::hint::spin_loop();
            }
        }
    });
    let mut expect = 0;
    let mut buf = Vec::new();
    while expect < N {
        buf.clear();
        if c.pop_batch(&mut buf, 64) == 0 {
            std::hint::spin_loop();
        }
        for v in &buf {
            assert_eq!(*v, expect);
            expect += 1;
        }
    }
    prod.join().unwrap();
}

#[test]
fn slot_ring_many_producers_many_consumers_exactly_once() {
    const PRODUCERS: u64 = 4;
    const CONSUMERS: usize = 2;
    const PER: u64 = 100_000;
    let ring = Arc::new(SlotRing::new(64, 16).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let ring = ring.clone();
            std::thread::spawn(move || {
                for i in 0..PER {
                    loop {
                        let pushed = ring
                            .try_push_with(|s| {
                                s[..8].copy_from_slice(&p.to_le_bytes());
                                s[8..16].copy_from_slice(&i.to_le_bytes());
                                Ok::<_, ()>(16)
                            })
                            .unwrap();
                        if pushed.is_some() {
                            break;
                        }
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let ring = ring.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut got: Vec<(u64, u64)> = Vec::new();
                loop {
                    let n = ring.pop_batch_with(16, |b| {
                        got.push((
                            u64::from_le_bytes(b[..8].try_into().unwrap()),
                            u64::from_le_bytes(b[8..16].try_into().unwrap()),
                        ))
                    });
                    if n == 0 {
                        if done.load(Ordering::Acquire) && ring.is_empty() {
                            break;
                        }
                        std::thread::yield_now();
                    }
                }
                got
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    done.store(true, Ordering::Release);
    let mut seen = vec![vec![false; PER as usize]; PRODUCERS as usize];
    for c in consumers {
        let got = c.join().unwrap();
        // Within one consumer, each producer's messages appear in increasing order.
        let mut last = vec![None::<u64>; PRODUCERS as usize];
        for (p, i) in got {
            assert!(!seen[p as usize][i as usize], "duplicate ({p},{i})");
            seen[p as usize][i as usize] = true;
            if let Some(l) = last[p as usize] {
                assert!(i > l, "producer {p} reordered: {i} after {l}");
            }
            last[p as usize] = Some(i);
        }
    }
    assert!(seen.iter().all(|v| v.iter().all(|&b| b)), "a message was lost");
}

#[test]
fn slot_ring_single_consumer_strict_per_producer_order() {
    const PRODUCERS: u64 = 3;
    const PER: u64 = 200_000;
    let ring = Arc::new(SlotRing::new(128, 16).unwrap());
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let ring = ring.clone();
            std::thread::spawn(move || {
                let mut i = 0;
                while i < PER {
                    let n = ring
                        .try_push_batch_with((PER - i).min(8) as usize, |k, s| {
                            s[..8].copy_from_slice(&p.to_le_bytes());
                            s[8..16].copy_from_slice(&(i + k as u64).to_le_bytes());
                            Ok::<_, ()>(16)
                        })
                        .unwrap();
                    i += n as u64;
                    if n == 0 {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    let mut next = vec![0u64; PRODUCERS as usize];
    let mut total = 0;
    while total < PRODUCERS * PER {
        if let Some((p, i)) = ring.try_pop_with(|b| {
            (u64::from_le_bytes(b[..8].try_into().unwrap()), u64::from_le_bytes(b[8..16].try_into().unwrap()))
        }) {
            assert_eq!(i, next[p as usize], "producer {p}");
            next[p as usize] += 1;
            total += 1;
        } else {
            std::thread::yield_now();
        }
    }
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(ring.try_pop_with(|_| ()), None);
}
