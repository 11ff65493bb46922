//! Kernel groups: aggregate messages per second with 1, 100, 10,000 and 100,000 actors of one
//! type, next to the pattern a user would write instead, in the same run: one tokio task per
//! actor, each with its own `mpsc` inbox, replying on one shared `mpsc`.
//!
//! Each iteration sends one 64-byte message to every actor (round-robin over the actors until
//! 100,000 messages are out) and waits for every reply, so the figure is the group's throughput
//! with that many actors, not the cost of one message. The CPU backend by default;
//! `RINGKERNEL_BACKEND=cuda` runs the groups on the CUDA backend (add `RINGKERNEL_CUDA_EMULATE=1`
//! for its host emulation).
//!
//! `cargo bench -p ringkernel --bench groups` (`--features cuda` for the CUDA backend).
#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringkernel::prelude::*;
use ringkernel::GpuType;
use std::time::{Duration, Instant};

/// 64 bytes of payload, in the GPU word layout so the CUDA program can take it.
#[derive(RingMessage, GpuType, Clone, Copy, Debug, Default)]
#[message(gpu, type_id = 0x7201)]
struct Work {
    value: u64,
    w1: u64,
    w2: u64,
    w3: u64,
    w4: u64,
    w5: u64,
    w6: u64,
    w7: u64,
}

#[derive(Default, GpuType)]
struct Tally {
    count: u64,
    sum: u64,
}

#[cfg(feature = "cuda")]
const TALLY_CUDA: &str = r#"
RK_DEVICE uint32_t on_Work(rk_ctx* ctx, Tally* s, const Work* m) {
    s->count += 1u;
    s->sum += m->value;
    return rk_reply_Work(ctx, m);
}
"#;

fn tally_def() -> KernelDef {
    let def = KernelDef::new::<Tally>("tally").on(|s: &mut Tally, w: Work, _ctx: &mut Context<'_>| {
        s.count += 1;
        s.sum += w.value;
        w
    });
    #[cfg(feature = "cuda")]
    let def = def.gpu(ringkernel::cuda::CudaProgram::new::<Tally>(TALLY_CUDA).handles::<Work>());
    def
}

const MESSAGES: u64 = 100_000;
const ACTORS: [u32; 4] = [1, 100, 10_000, 100_000];

fn backend() -> Backend {
    match Backend::from_env() {
        Ok(Backend::Auto) | Err(_) => Backend::Cpu,
        Ok(b) => b,
    }
}

async fn runtime() -> RingKernel {
    let b = RingKernel::builder().backend(backend()).kernel(tally_def());
    #[cfg(feature = "cuda")]
    let b = b.backend_config(ringkernel::cuda::CudaConfig::from_env());
    b.build().await.expect("runtime")
}

fn groups(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let runtime = rt.block_on(runtime());
    let mut g = c.benchmark_group("group_throughput");
    g.throughput(Throughput::Elements(MESSAGES));
    g.sample_size(10);
    for n in ACTORS {
        let opts = LaunchOptions { input_capacity: 4, output_capacity: 4096, ..LaunchOptions::default() };
        let group = rt.block_on(runtime.launch_group("tally", n, opts)).expect("launch_group");
        let instances: Vec<_> = (0..n).map(|i| group.instance(i).unwrap()).collect();
        g.bench_function(format!("ringkernel_{}_{n}_actors", runtime.backend().name()), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (group, instances) = (group.clone(), instances.clone());
                async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let reader = {
                            let group = group.clone();
                            tokio::spawn(async move {
                                for _ in 0..MESSAGES {
                                    let _: Work = group.receive().await.unwrap();
                                }
                            })
                        };
                        for k in 0..MESSAGES {
                            let w = Work { value: k, ..Work::default() };
                            instances[(k % u64::from(n)) as usize].send(w).await.unwrap();
                        }
                        reader.await.unwrap();
                    }
                    start.elapsed()
                }
            })
        });
        rt.block_on(group.terminate()).unwrap();

        // The peer: one tokio task per actor with its own inbox, replies on one shared channel.
        let (reply_tx, reply_rx) = tokio::sync::mpsc::channel::<Work>(4096);
        let reply_rx = std::sync::Arc::new(tokio::sync::Mutex::new(reply_rx));
        let inboxes: Vec<_> = (0..n)
            .map(|_| {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<Work>(4);
                let reply = reply_tx.clone();
                rt.spawn(async move {
                    let mut tally = Tally::default();
                    while let Some(w) = rx.recv().await {
                        tally.count += 1;
                        tally.sum += w.value;
                        if reply.send(w).await.is_err() {
                            break;
                        }
                    }
                    tally.count
                });
                tx
            })
            .collect();
        g.bench_function(format!("tokio_tasks_{n}_actors"), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (inboxes, reply_rx) = (inboxes.clone(), reply_rx.clone());
                async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let reader = {
                            let reply_rx = reply_rx.clone();
                            tokio::spawn(async move {
                                let mut rx = reply_rx.lock().await;
                                for _ in 0..MESSAGES {
                                    rx.recv().await.unwrap();
                                }
                            })
                        };
                        for k in 0..MESSAGES {
                            let w = Work { value: k, ..Work::default() };
                            inboxes[(k % u64::from(n)) as usize].send(w).await.unwrap();
                        }
                        reader.await.unwrap();
                    }
                    start.elapsed()
                }
            })
        });
    }
    g.finish();
    rt.block_on(runtime.shutdown()).unwrap();
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(4))
}

criterion_group! { name = benches; config = config(); targets = groups }
criterion_main!(benches);
