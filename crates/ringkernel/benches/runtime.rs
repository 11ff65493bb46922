//! Runtime benchmarks on the CPU backend, each next to the pattern a user would write instead,
//! in the same run:
//!
//! * request/reply round trip through one kernel (`KernelHandle::call`) vs a tokio actor (an
//!   `mpsc` channel carrying a `oneshot` reply sender);
//! * K2K hop between two kernels (ping-pong inside the runtime, host not involved);
//! * start-up: build a runtime, launch one kernel, get the first reply.
//!
//! `cargo bench -p ringkernel --bench runtime` (backend from `RINGKERNEL_BACKEND`, default `cpu`).
#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{criterion_group, criterion_main, Criterion};
use ringkernel::prelude::*;
use std::time::{Duration, Instant};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

#[derive(RingMessage, IntoBytes, FromBytes, Immutable, KnownLayout, Clone, Copy, Debug)]
#[message(pod, type_id = 0x7001)]
#[repr(C)]
struct Req {
    words: [u64; 8],
}

#[derive(RingMessage, IntoBytes, FromBytes, Immutable, KnownLayout, Clone, Copy, Debug)]
#[message(pod, type_id = 0x7002)]
#[repr(C)]
struct Ball {
    remaining: u64,
}

#[ring_kernel(name = "echo")]
fn echo(count: &mut u64, r: Req) -> Req {
    *count += 1;
    r
}

#[ring_kernel(name = "bench_ping")]
fn bench_ping(_s: &mut (), mut b: Ball, ctx: &mut Context<'_>) -> Result<()> {
    if b.remaining == 0 {
        return ctx.emit(b);
    }
    b.remaining -= 1;
    ctx.send_to("bench_pong", b)
}

#[ring_kernel(name = "bench_pong")]
fn bench_pong(_s: &mut (), b: Ball, ctx: &mut Context<'_>) -> Result<()> {
    ctx.send_to("bench_ping", b)
}

fn backend() -> Backend {
    match Backend::from_env() {
        Ok(Backend::Auto) | Err(_) => Backend::Cpu,
        Ok(b) => b,
    }
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

fn round_trip(c: &mut Criterion) {
    let rt = tokio_rt();
    let mut g = c.benchmark_group("cpu_round_trip_64B");
    let (runtime, kernel) = rt.block_on(async {
        let runtime = RingKernel::builder().backend(backend()).build().await.unwrap();
        let k = runtime.launch("echo", LaunchOptions::default()).await.unwrap();
        (runtime, k)
    });
    let req = Req { words: [7; 8] };
    g.bench_function("ringkernel_call", |b| {
        b.to_async(&rt).iter(|| async { kernel.call::<_, Req>(req).await.unwrap() })
    });

    // The tokio actor a user would write instead: mpsc in, oneshot out, state in the task.
    // Measured twice: actor on a worker thread of a multi-thread runtime (requests from another
    // thread, as with the kernel), and everything on one current-thread runtime (no thread hop).
    let rt_single = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for (name, rt) in
        [("tokio_mpsc_oneshot_multi_thread", &rt), ("tokio_mpsc_oneshot_current_thread", &rt_single)]
    {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Req, tokio::sync::oneshot::Sender<Req>)>(1024);
        rt.spawn(async move {
            let mut count = 0u64;
            while let Some((r, reply)) = rx.recv().await {
                count += 1;
                let _ = reply.send(r);
            }
            count
        });
        g.bench_function(name, |b| {
            b.to_async(rt).iter(|| async {
                let (otx, orx) = tokio::sync::oneshot::channel();
                tx.send((req, otx)).await.unwrap();
                orx.await.unwrap()
            })
        });
    }
    g.finish();
    rt.block_on(runtime.shutdown()).unwrap();
}

fn k2k_hop(c: &mut Criterion) {
    let rt = tokio_rt();
    let (runtime, ping) = rt.block_on(async {
        let runtime = RingKernel::builder().backend(backend()).build().await.unwrap();
        let ping = runtime.launch("bench_ping", LaunchOptions::default()).await.unwrap();
        runtime.launch("bench_pong", LaunchOptions::default()).await.unwrap();
        (runtime, ping)
    });
    let mut g = c.benchmark_group("k2k");
    // Each iteration is one hop; a rally of `iters / 2` round trips is timed as a whole.
    g.bench_function("hop", |b| {
        b.iter_custom(|iters| {
            let round_trips = (iters / 2).max(1);
            rt.block_on(async {
                let start = Instant::now();
                ping.send(Ball { remaining: round_trips }).await.unwrap();
                let _: Ball = ping.receive().await.unwrap();
                start.elapsed() * (iters as u32) / (2 * round_trips as u32).max(1)
            })
        })
    });
    g.finish();
    rt.block_on(runtime.shutdown()).unwrap();
}

fn startup(c: &mut Criterion) {
    let rt = tokio_rt();
    let mut g = c.benchmark_group("startup");
    g.sample_size(20);
    g.bench_function("build_launch_first_reply", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let runtime = RingKernel::builder().backend(backend()).build().await.unwrap();
                let k = runtime.launch("echo", LaunchOptions::default()).await.unwrap();
                let _: Req = k.call(Req { words: [1; 8] }).await.unwrap();
                total += start.elapsed();
                runtime.shutdown().await.unwrap();
            }
            total
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3))
}

criterion_group! { name = benches; config = config(); targets = round_trip, k2k_hop, startup }
criterion_main!(benches);
