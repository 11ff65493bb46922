//! The CUDA backend next to what a user would write instead, in the same run:
//!
//! * **round trip, 64-byte payload**: `call` through a persistent kernel (send into mapped
//!   memory, the kernel replies, the agent completes the call), and `try_send` + spinning
//!   `try_receive` (no async wake-up); next to **launch + sync** (write the input into mapped
//!   memory, `cuLaunchKernel`, `cuStreamSynchronize`, read the output) and **CUDA Graph replay**
//!   of the same kernel (`cuGraphLaunch` + synchronize). Besides criterion's estimates, each
//!   prints p50 and p99 over 20,000 round trips.
//! * **throughput**: 4,096 one-way messages into one persistent kernel (batched by the queue),
//!   next to 4,096 launch + sync.
//! * **K2K hop**: two resident kernels bounce a message 1,000 times through each other's device
//!   inbox, next to one launch + sync per hop.
//!
//! `cargo bench -p ringkernel --features cuda --bench cuda`. Needs an NVIDIA GPU with its driver
//! and NVRTC; with `RINGKERNEL_CUDA_EMULATE=1` the RingKernel parts run on the host emulation
//! (not GPU figures) and the driver baselines are skipped; with neither the bench prints why and
//! measures nothing.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use cudarc::driver::{result, sys};
use ringkernel::cuda::{CudaConfig, CudaProgram};
use ringkernel::prelude::*;
use ringkernel::runtime::KernelDef;
use std::ffi::c_void;
use std::time::{Duration, Instant};

/// 64 bytes of payload.
#[derive(RingMessage, GpuType, Clone, Copy, Debug, PartialEq)]
#[message(gpu, type_id = 0x7201)]
struct Payload64 {
    words: [u32; 16],
}

/// One-way: counted into the kernel state.
#[derive(RingMessage, GpuType, Clone, Copy, Debug, PartialEq)]
#[message(gpu, type_id = 0x7202)]
struct Count {
    value: u32,
}

/// Bounced between two kernels `left` more times, then emitted.
#[derive(RingMessage, GpuType, Clone, Copy, Debug, PartialEq)]
#[message(gpu, type_id = 0x7203)]
struct Bounce {
    left: u32,
}

#[derive(Default, GpuType)]
struct Stats {
    count: u64,
    sum: u64,
}

const KERNEL_CUDA: &str = r#"
RK_DEVICE uint32_t on_Payload64(rk_ctx* ctx, Stats* s, const Payload64* m) {
    s->count += 1u;
    return rk_reply_Payload64(ctx, m);
}
RK_DEVICE uint32_t on_Count(rk_ctx* ctx, Stats* s, const Count* m) {
    (void)ctx;
    s->count += 1u;
    s->sum += m->value;
    return 0u;
}
RK_DEVICE uint32_t on_Bounce(rk_ctx* ctx, Stats* s, const Bounce* m) {
    s->count += 1u;
    if (m->left == 0u) return rk_emit_Bounce(ctx, m);
    Bounce b;
    b.left = m->left - 1u;
    return rk_send_Bounce(ctx, 0u, &b);
}
"#;

fn def(name: &str, peer: &str) -> KernelDef {
    KernelDef::new::<Stats>(name).gpu(
        CudaProgram::new::<Stats>(KERNEL_CUDA)
            .handles::<Payload64>()
            .handles::<Count>()
            .handles::<Bounce>()
            .route(peer),
    )
}

struct Setup {
    tokio: tokio::runtime::Runtime,
    rt: RingKernel,
    emulated: bool,
}

fn setup() -> Option<Setup> {
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    let built = tokio.block_on(
        RingKernel::builder()
            .backend(Backend::Cuda)
            .backend_config(CudaConfig::from_env())
            .kernel(def("ping", "pong"))
            .kernel(def("pong", "ping"))
            .build(),
    );
    match built {
        Ok(rt) => {
            let emulated =
                rt.backend_impl::<ringkernel::cuda::CudaBackend>().is_some_and(|c| c.is_emulated());
            println!("CUDA backend on: {}", rt.adapter().unwrap_or_default());
            Some(Setup { tokio, rt, emulated })
        }
        Err(e) => {
            println!("SKIP: the CUDA backend is unavailable ({e}); set RINGKERNEL_CUDA_EMULATE=1 for the host emulation");
            None
        }
    }
}

fn percentiles(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "{name}: p50 {:.2} µs, p99 {:.2} µs over {} round trips",
        at(0.5).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
        samples.len()
    );
}

fn sample(n: usize, mut f: impl FnMut()) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect()
}

/// The launch-per-message pattern: an echo kernel reading and writing mapped pinned memory.
struct Baseline {
    func: sys::CUfunction,
    stream: sys::CUstream,
    graph: sys::CUgraphExec,
    input: *mut u32,
    output: *mut u32,
    args: [u64; 3],
}

const BASELINE_CUDA: &str = r#"
extern "C" __global__ void echo(const unsigned int* in, unsigned int* out, unsigned long long* state) {
    unsigned int i = threadIdx.x;
    if (i < 16u) out[i] = in[i];
    if (i == 0u) state[0] += in[0];
}
"#;

impl Baseline {
    fn new() -> Result<Self, String> {
        let info = ringkernel::cuda::probe_device().map_err(|e| e.to_string())?;
        let ptx = ringkernel::cuda::compile_ptx("echo", BASELINE_CUDA, info.compute_capability)
            .map_err(|e| e.to_string())?;
        let mut ptx = ptx;
        ptx.push(0);
        let e = |what: &str, e: result::DriverError| format!("{what}: {e:?}");
        // SAFETY: the driver is present (probe_device); every handle below is used only while
        // valid, on this thread, with the primary context current; the mapped buffers are 64 +
        // 64 + 8 bytes that live for the rest of the process.
        unsafe {
            result::init().map_err(|x| e("cuInit", x))?;
            let dev = result::device::get(0).map_err(|x| e("cuDeviceGet", x))?;
            let ctx = result::primary_ctx::retain(dev).map_err(|x| e("retain", x))?;
            result::ctx::set_current(ctx).map_err(|x| e("set_current", x))?;
            let module =
                result::module::load_data(ptx.as_ptr() as *const c_void).map_err(|x| e("load", x))?;
            let func = result::module::get_function(module, c"echo".into()).map_err(|x| e("function", x))?;
            let stream = result::stream::create(result::stream::StreamKind::NonBlocking)
                .map_err(|x| e("stream", x))?;
            let flags = sys::CU_MEMHOSTALLOC_DEVICEMAP | sys::CU_MEMHOSTALLOC_PORTABLE;
            let host = result::malloc_host(256, flags).map_err(|x| e("cuMemHostAlloc", x))? as *mut u8;
            std::ptr::write_bytes(host, 0, 256);
            let mut dev_ptr: sys::CUdeviceptr = 0;
            let rc = sys::cuMemHostGetDevicePointer_v2(&mut dev_ptr, host as *mut c_void, 0);
            if rc != sys::CUresult::CUDA_SUCCESS {
                return Err(format!("cuMemHostGetDevicePointer: {rc:?}"));
            }
            let mut b = Self {
                func,
                stream,
                graph: std::ptr::null_mut(),
                input: host as *mut u32,
                output: host.add(64) as *mut u32,
                args: [dev_ptr, dev_ptr + 64, dev_ptr + 128],
            };
            // The graph: the same launch, captured once.
            result::stream::begin_capture(stream, sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
                .map_err(|x| e("begin_capture", x))?;
            b.launch()?;
            let graph = result::stream::end_capture(stream).map_err(|x| e("end_capture", x))?;
            b.graph = result::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0))
                .map_err(|x| e("instantiate", x))?;
            Ok(b)
        }
    }

    fn launch(&mut self) -> Result<(), String> {
        let mut ptrs: Vec<*mut c_void> = self.args.iter_mut().map(|a| a as *mut u64 as *mut c_void).collect();
        // SAFETY: `echo` takes three pointers, given by value through `ptrs`; they point into
        // the mapped buffers allocated in `new`.
        unsafe { result::launch_kernel(self.func, (1, 1, 1), (32, 1, 1), 0, self.stream, &mut ptrs) }
            .map_err(|e| format!("cuLaunchKernel: {e:?}"))
    }

    /// One message: write the input, run the kernel (a launch or the graph), wait, read.
    fn round_trip(&mut self, seq: u32, graph: bool) -> u32 {
        // SAFETY: the mapped buffers are ours and the kernel is not running (previous call
        // synchronized); volatile so each access really goes to the shared memory.
        unsafe { self.input.write_volatile(seq) };
        if graph {
            // SAFETY: `graph` was instantiated from a capture of `launch` on this stream.
            unsafe { result::graph::launch(self.graph, self.stream) }.expect("cuGraphLaunch");
        } else {
            self.launch().expect("launch");
        }
        // SAFETY: a live stream.
        unsafe { result::stream::synchronize(self.stream) }.expect("synchronize");
        // SAFETY: as above; the kernel finished.
        unsafe { self.output.read_volatile() }
    }
}

fn bench_round_trip(c: &mut Criterion) {
    let Some(s) = setup() else { return };
    let k = s.tokio.block_on(s.rt.launch("ping", LaunchOptions::default())).expect("launch");
    let p = Payload64 { words: [7; 16] };
    let mut g = c.benchmark_group("cuda_round_trip_64B");
    g.bench_function("ringkernel_call", |b| {
        b.iter(|| s.tokio.block_on(k.call::<_, Payload64>(p)).expect("call"))
    });
    let spin = || {
        k.try_send(p).expect("room");
        loop {
            if let Some(r) = k.try_receive::<Payload64>().expect("decode") {
                break r;
            }
            std::hint::spin_loop();
        }
    };
    // The reply to a one-way message goes to the output queue (receive), not to a call.
    g.bench_function("ringkernel_send_try_receive", |b| b.iter(spin));
    percentiles(
        "ringkernel call",
        sample(20_000, || {
            s.tokio.block_on(k.call::<_, Payload64>(p)).expect("call");
        }),
    );
    percentiles(
        "ringkernel send + try_receive",
        sample(20_000, || {
            spin();
        }),
    );
    if s.emulated {
        println!("host emulation: driver baselines skipped");
    } else {
        match Baseline::new() {
            Ok(mut base) => {
                let mut i = 0u32;
                g.bench_function("launch_sync", |b| {
                    b.iter(|| {
                        i += 1;
                        base.round_trip(i, false)
                    })
                });
                g.bench_function("graph_replay_sync", |b| {
                    b.iter(|| {
                        i += 1;
                        base.round_trip(i, true)
                    })
                });
                percentiles(
                    "launch + sync",
                    sample(20_000, || {
                        i += 1;
                        base.round_trip(i, false);
                    }),
                );
                percentiles(
                    "graph replay + sync",
                    sample(20_000, || {
                        i += 1;
                        base.round_trip(i, true);
                    }),
                );
            }
            Err(e) => println!("baseline unavailable: {e}"),
        }
    }
    g.finish();
    s.tokio.block_on(k.terminate()).expect("terminate");
    s.tokio.block_on(s.rt.shutdown()).expect("shutdown");
}

fn bench_throughput(c: &mut Criterion) {
    let Some(s) = setup() else { return };
    const N: u64 = 4096;
    let k = s
        .tokio
        .block_on(s.rt.launch("ping", LaunchOptions::default().with_queue_capacity(4096)))
        .expect("launch");
    let mut g = c.benchmark_group("cuda_throughput");
    g.throughput(Throughput::Elements(N));
    g.sample_size(20);
    let mut target = 0u64;
    g.bench_function("ringkernel_one_way", |b| {
        b.iter(|| {
            for i in 0..N {
                let mut m = Count { value: i as u32 };
                loop {
                    match k.try_send(m) {
                        Ok(()) => break,
                        Err(TrySendError::Full { message: back, .. }) => {
                            m = back;
                            std::hint::spin_loop();
                        }
                        Err(e) => panic!("{e:?}"),
                    }
                }
            }
            target += N;
            while k.status().messages_processed < target {
                std::hint::spin_loop();
            }
        })
    });
    if !s.emulated {
        if let Ok(mut base) = Baseline::new() {
            g.bench_function("launch_sync_per_message", |b| {
                b.iter(|| {
                    for i in 0..N {
                        base.round_trip(i as u32, false);
                    }
                })
            });
        }
    }
    g.finish();
    s.tokio.block_on(s.rt.shutdown()).expect("shutdown");
}

fn bench_k2k(c: &mut Criterion) {
    let Some(s) = setup() else { return };
    const HOPS: u32 = 1000;
    let ping = s.tokio.block_on(s.rt.launch("ping", LaunchOptions::default())).expect("launch");
    let _pong = s.tokio.block_on(s.rt.launch("pong", LaunchOptions::default())).expect("launch");
    let mut g = c.benchmark_group("cuda_k2k_hop");
    g.throughput(Throughput::Elements(u64::from(HOPS)));
    g.bench_function("ringkernel_device_inbox", |b| {
        b.iter(|| {
            ping.try_send(Bounce { left: HOPS }).expect("room");
            s.tokio.block_on(ping.receive::<Bounce>()).expect("bounced back")
        })
    });
    let t = Instant::now();
    for _ in 0..20 {
        ping.try_send(Bounce { left: HOPS }).expect("room");
        s.tokio.block_on(ping.receive::<Bounce>()).expect("bounced back");
    }
    println!(
        "K2K hop: {:.3} µs per hop (20 x {HOPS} hops); via host: {}",
        t.elapsed().as_secs_f64() * 1e6 / f64::from(20 * (HOPS + 1)),
        s.rt.backend_impl::<ringkernel::cuda::CudaBackend>().map_or(0, |c| c.k2k_via_host())
    );
    if !s.emulated {
        if let Ok(mut base) = Baseline::new() {
            g.bench_function("launch_sync_per_hop", |b| {
                b.iter(|| {
                    for i in 0..HOPS {
                        base.round_trip(i, false);
                    }
                })
            });
        }
    }
    g.finish();
    s.tokio.block_on(s.rt.shutdown()).expect("shutdown");
}

criterion_group!(benches, bench_round_trip, bench_throughput, bench_k2k);
criterion_main!(benches);
