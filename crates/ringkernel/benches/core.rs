//! Core benchmarks, each next to the peer a user would pick instead, in the same run:
//! HLC vs uhlc, envelope codec vs a plain zerocopy copy and vs rkyv used directly, SPSC ring vs
//! rtrb and crossbeam's ArrayQueue (throughput and one-way latency).
//!
//! `cargo bench -p ringkernel --bench core`
#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringkernel::hlc::{HlcClock, HlcTimestamp};
use ringkernel::message::{decode, encode, EnvelopeMeta};
use ringkernel::queue::{spsc, SlotRing};
use ringkernel::RingMessage;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

#[derive(RingMessage, IntoBytes, FromBytes, Immutable, KnownLayout, Clone, Copy, Debug, PartialEq)]
#[message(pod, type_id = 0x10)]
#[repr(C)]
struct Pod64 {
    words: [u64; 8],
}

#[derive(RingMessage, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
#[message(type_id = 0x1001)]
struct AddRequest {
    a: Vec<f32>,
    b: Vec<f32>,
}

#[repr(C, align(128))]
struct Slot([u8; 4096]);

fn hlc(c: &mut Criterion) {
    let mut g = c.benchmark_group("hlc");
    let ours = HlcClock::new(1);
    let peer = uhlc::HLCBuilder::new().build();
    g.bench_function("tick/ringkernel", |b| b.iter(|| black_box(ours.tick())));
    g.bench_function("tick/uhlc", |b| b.iter(|| black_box(peer.new_timestamp())));
    let precise = HlcClock::with_source(1, ringkernel::hlc::SystemClock);
    g.bench_function("tick/ringkernel_system_clock", |b| b.iter(|| black_box(precise.tick())));
    let remote = ours.tick();
    let remote_peer = peer.new_timestamp();
    g.bench_function("update/ringkernel", |b| b.iter(|| black_box(ours.update(black_box(&remote)).unwrap())));
    g.bench_function("update/uhlc", |b| {
        b.iter(|| peer.update_with_timestamp(black_box(&remote_peer)).unwrap())
    });
    g.finish();
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    let mut slot = Slot([0; 4096]);
    let meta = EnvelopeMeta { hlc: HlcTimestamp::new(1, 0, 1), ..Default::default() };
    let m = Pod64 { words: [1, 2, 3, 4, 5, 6, 7, 8] };
    g.bench_function("pod64_encode_decode/ringkernel", |b| {
        b.iter(|| {
            let n = encode(black_box(&m), &meta, &mut slot.0).unwrap();
            black_box(decode::<Pod64>(&slot.0[..n]).unwrap())
        })
    });
    g.bench_function("pod64_encode_decode/zerocopy_copy", |b| {
        b.iter(|| {
            let bytes = black_box(&m).as_bytes();
            slot.0[..64].copy_from_slice(bytes);
            black_box(Pod64::read_from_bytes(&slot.0[..64]).unwrap())
        })
    });
    let req = AddRequest { a: (0..256).map(|i| i as f32).collect(), b: vec![0.5; 256] };
    g.bench_function("add_request_256_encode_decode/ringkernel", |b| {
        b.iter(|| {
            let n = encode(black_box(&req), &meta, &mut slot.0).unwrap();
            black_box(decode::<AddRequest>(&slot.0[..n]).unwrap())
        })
    });
    g.bench_function("add_request_256_encode_decode/rkyv", |b| {
        b.iter(|| {
            let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(black_box(&req)).unwrap();
            black_box(rkyv::from_bytes::<AddRequest, rkyv::rancor::Error>(&bytes).unwrap())
        })
    });
    let _ = Pod64::message_type();
    g.finish();
}

/// The queue operations each implementation provides, for one generic harness.
trait Queue: Send + 'static {
    type P: Send + 'static;
    type C: Send + 'static;
    fn make(cap: usize) -> (Self::P, Self::C);
    fn push(p: &mut Self::P, v: u64) -> bool;
    fn pop(c: &mut Self::C) -> Option<u64>;
}

struct Ours;
impl Queue for Ours {
    type P = spsc::Producer<u64>;
    type C = spsc::Consumer<u64>;
    fn make(cap: usize) -> (Self::P, Self::C) {
        spsc::channel(cap).unwrap()
    }
    #[inline]
    fn push(p: &mut Self::P, v: u64) -> bool {
        p.push(v).is_ok()
    }
    #[inline]
    fn pop(c: &mut Self::C) -> Option<u64> {
        c.pop().ok()
    }
}

struct OursSlotRing;
impl Queue for OursSlotRing {
    type P = Arc<SlotRing>;
    type C = Arc<SlotRing>;
    fn make(cap: usize) -> (Self::P, Self::C) {
        let r = Arc::new(SlotRing::new(cap, 16).unwrap());
        (r.clone(), r)
    }
    #[inline]
    fn push(p: &mut Self::P, v: u64) -> bool {
        p.try_push_with(|s| {
            s[..8].copy_from_slice(&v.to_le_bytes());
            Ok::<_, ()>(8)
        })
        .unwrap()
        .is_some()
    }
    #[inline]
    fn pop(c: &mut Self::C) -> Option<u64> {
        c.try_pop_with(|b| u64::from_le_bytes(b[..8].try_into().unwrap()))
    }
}

struct Rtrb;
impl Queue for Rtrb {
    type P = rtrb::Producer<u64>;
    type C = rtrb::Consumer<u64>;
    fn make(cap: usize) -> (Self::P, Self::C) {
        rtrb::RingBuffer::new(cap)
    }
    #[inline]
    fn push(p: &mut Self::P, v: u64) -> bool {
        p.push(v).is_ok()
    }
    #[inline]
    fn pop(c: &mut Self::C) -> Option<u64> {
        c.pop().ok()
    }
}

struct Crossbeam;
impl Queue for Crossbeam {
    type P = Arc<crossbeam_queue::ArrayQueue<u64>>;
    type C = Arc<crossbeam_queue::ArrayQueue<u64>>;
    fn make(cap: usize) -> (Self::P, Self::C) {
        let q = Arc::new(crossbeam_queue::ArrayQueue::new(cap));
        (q.clone(), q)
    }
    #[inline]
    fn push(p: &mut Self::P, v: u64) -> bool {
        p.push(v).is_ok()
    }
    #[inline]
    fn pop(c: &mut Self::C) -> Option<u64> {
        c.pop()
    }
}

/// Moves `n` values from one thread to another; returns the elapsed time.
fn throughput<Q: Queue>(n: u64) -> Duration {
    let (mut p, mut c) = Q::make(4096);
    let start = Instant::now();
    let t = std::thread::spawn(move || {
        for i in 0..n {
            while !Q::push(&mut p, i) {
                std::hint::spin_loop();
            }
        }
    });
    let mut expect = 0;
    while expect < n {
        match Q::pop(&mut c) {
            Some(v) => {
                debug_assert_eq!(v, expect);
                expect += 1;
            }
            None => std::hint::spin_loop(),
        }
    }
    t.join().unwrap();
    start.elapsed()
}

/// Ping-pong over two queues between two threads; returns total time for `n` round trips.
fn round_trips<Q: Queue>(n: u64) -> Duration {
    let (mut p1, mut c1) = Q::make(64);
    let (mut p2, mut c2) = Q::make(64);
    let t = std::thread::spawn(move || {
        for _ in 0..n {
            let v = loop {
                if let Some(v) = Q::pop(&mut c1) {
                    break v;
                }
                std::hint::spin_loop();
            };
            while !Q::push(&mut p2, v) {
                std::hint::spin_loop();
            }
        }
    });
    let start = Instant::now();
    for i in 0..n {
        while !Q::push(&mut p1, i) {
            std::hint::spin_loop();
        }
        loop {
            if Q::pop(&mut c2).is_some() {
                break;
            }
            std::hint::spin_loop();
        }
    }
    let e = start.elapsed();
    t.join().unwrap();
    e
}

fn queues(c: &mut Criterion) {
    const N: u64 = 1_000_000;
    let mut g = c.benchmark_group("spsc_throughput");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    g.bench_function(BenchmarkId::new("ringkernel_spsc", N), |b| {
        b.iter_custom(|it| (0..it).map(|_| throughput::<Ours>(N)).sum())
    });
    g.bench_function(BenchmarkId::new("ringkernel_slot_ring", N), |b| {
        b.iter_custom(|it| (0..it).map(|_| throughput::<OursSlotRing>(N)).sum())
    });
    g.bench_function(BenchmarkId::new("rtrb", N), |b| {
        b.iter_custom(|it| (0..it).map(|_| throughput::<Rtrb>(N)).sum())
    });
    g.bench_function(BenchmarkId::new("crossbeam_array_queue", N), |b| {
        b.iter_custom(|it| (0..it).map(|_| throughput::<Crossbeam>(N)).sum())
    });
    g.finish();

    // One-way latency = round trip / 2; criterion reports per round trip.
    let mut g = c.benchmark_group("spsc_round_trip");
    g.sample_size(10);
    let rt = |it: u64, f: fn(u64) -> Duration| f(it);
    g.bench_function("ringkernel_spsc", |b| b.iter_custom(|it| rt(it, round_trips::<Ours>)));
    g.bench_function("rtrb", |b| b.iter_custom(|it| rt(it, round_trips::<Rtrb>)));
    g.bench_function("crossbeam_array_queue", |b| b.iter_custom(|it| rt(it, round_trips::<Crossbeam>)));
    g.finish();
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = hlc, codec, queues }
criterion_main!(benches);
