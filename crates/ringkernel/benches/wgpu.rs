//! The wgpu backend next to the pattern a user would otherwise write, in the same run:
//!
//! * **batched**: N messages sent to one WGSL kernel, N replies received. The runtime drains the
//!   whole burst into one dispatch (one submission, two read-backs per round).
//! * **naive**: the same handler as a plain wgpu compute shader, one `write_buffer` + dispatch +
//!   copy + submit + map + wait per message, state kept in a storage buffer.
//! * **round trip**: one `call` (send, dispatch, reply) through the runtime, next to one naive
//!   dispatch-and-read-back.
//!
//! `cargo bench -p ringkernel --features wgpu --bench wgpu`. Uses whatever adapter
//! `Backend::Wgpu` picks (software adapters included) and prints its name; with no adapter the
//! bench prints why and measures nothing.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringkernel::prelude::*;
use ringkernel::runtime::KernelDef;
use ringkernel::wgpu::{wgpu, WgslProgram};
use std::time::{Duration, Instant};

#[derive(RingMessage, GpuType, Clone, Copy, Debug, PartialEq)]
#[message(gpu, type_id = 0x7101)]
struct Sample {
    seq: u64,
    value: u64,
}

#[derive(RingMessage, GpuType, Clone, Copy, Debug, PartialEq)]
#[message(gpu, type_id = 0x7102)]
struct Tally {
    count: u64,
    sum: u64,
}

#[derive(Default, GpuType)]
struct TallyState {
    count: u64,
    sum: u64,
}

const TALLY_WGSL: &str = r#"
fn on_Sample(m: Sample) {
    rk_state.count = rk_add64(rk_state.count, rk_u64(1u));
    rk_state.sum = rk_add64(rk_state.sum, m.value);
    rk_reply_Tally(Tally(rk_state.count, rk_state.sum));
}
"#;

const NAIVE_WGSL: &str = r#"
@group(0) @binding(0) var<storage, read_write> state: array<u32, 4>;
@group(0) @binding(1) var<storage, read> input: array<u32, 4>;
@group(0) @binding(2) var<storage, read_write> output: array<u32, 4>;

fn add64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let lo = a.x + b.x;
    return vec2<u32>(lo, a.y + b.y + select(0u, 1u, lo < a.x));
}

@compute @workgroup_size(1)
fn main() {
    let count = add64(vec2<u32>(state[0], state[1]), vec2<u32>(1u, 0u));
    let sum = add64(vec2<u32>(state[2], state[3]), vec2<u32>(input[2], input[3]));
    state[0] = count.x; state[1] = count.y; state[2] = sum.x; state[3] = sum.y;
    output[0] = count.x; output[1] = count.y; output[2] = sum.x; output[3] = sum.y;
}
"#;

/// What a user without RingKernel writes: one dispatch and one read-back per message.
struct Naive {
    device: wgpu::Device,
    queue: wgpu::Queue,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    input: wgpu::Buffer,
    output: wgpu::Buffer,
    readback: wgpu::Buffer,
}

impl Naive {
    fn new() -> Option<Self> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
        let instance = wgpu::Instance::new(desc);
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))
        .ok()?;
        let (device, queue) = pollster::block_on(adapter.request_device(&Default::default())).ok()?;
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("naive"),
            source: wgpu::ShaderSource::Wgsl(NAIVE_WGSL.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("naive"),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let buf = |usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: 16,
                usage,
                mapped_at_creation: false,
            })
        };
        let state = buf(wgpu::BufferUsages::STORAGE);
        let input = buf(wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST);
        let output = buf(wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC);
        let readback = buf(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: state.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: input.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 2, resource: output.as_entire_binding() },
            ],
        });
        Some(Self { device, queue, pipeline, bind_group, input, output, readback })
    }

    /// One message: upload, dispatch, copy back, wait, read.
    fn handle(&self, s: Sample) -> Tally {
        let words = [s.seq as u32, (s.seq >> 32) as u32, s.value as u32, (s.value >> 32) as u32];
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.queue.write_buffer(&self.input, 0, &bytes);
        let mut enc = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &self.bind_group, &[]);
            pass.dispatch_workgroups(1, 1, 1);
        }
        enc.copy_buffer_to_buffer(&self.output, 0, &self.readback, 0, 16);
        self.queue.submit([enc.finish()]);
        let slice = self.readback.slice(..);
        slice.map_async(wgpu::MapMode::Read, |r| r.expect("map"));
        self.device.poll(wgpu::PollType::wait_indefinitely()).expect("poll");
        let w: Vec<u32> = {
            let view = slice.get_mapped_range().expect("mapped");
            view.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect()
        };
        self.readback.unmap();
        Tally {
            count: u64::from(w[0]) | (u64::from(w[1]) << 32),
            sum: u64::from(w[2]) | (u64::from(w[3]) << 32),
        }
    }
}

fn tally_def() -> KernelDef {
    KernelDef::new::<TallyState>("tally")
        .gpu(WgslProgram::new::<TallyState>(TALLY_WGSL).handles::<Sample>().sends::<Tally>())
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let runtime = match rt.block_on(RingKernel::builder().backend(Backend::Wgpu).kernel(tally_def()).build())
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("SKIP wgpu benches: {e}");
            return;
        }
    };
    let Some(naive) = Naive::new() else {
        eprintln!("SKIP wgpu benches: no adapter for the naive baseline");
        return;
    };
    eprintln!("wgpu adapter: {}", runtime.adapter().unwrap_or_default());
    let batch = 1024usize;
    let k =
        rt.block_on(runtime.launch(
            "tally",
            LaunchOptions::default().with_queue_capacity(batch).with_max_message_bytes(128),
        ))
        .unwrap();

    let mut g = c.benchmark_group("wgpu_throughput");
    g.sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(batch as u64));
    g.bench_function(BenchmarkId::new("ringkernel_batched", batch), |b| {
        b.to_async(&rt).iter(|| async {
            for i in 0..batch as u64 {
                k.send(Sample { seq: i, value: 1 }).await.unwrap();
            }
            for _ in 0..batch {
                let _: Tally = k.receive().await.unwrap();
            }
        })
    });
    // The naive pattern is far slower per message; measure it over fewer messages per iteration
    // and let criterion report messages per second for both.
    let naive_n = 64usize;
    g.throughput(Throughput::Elements(naive_n as u64));
    g.bench_function(BenchmarkId::new("naive_dispatch_per_message", naive_n), |b| {
        b.iter(|| {
            for i in 0..naive_n as u64 {
                std::hint::black_box(naive.handle(Sample { seq: i, value: 1 }));
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("wgpu_round_trip");
    g.sample_size(20).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    g.bench_function("ringkernel_call", |b| {
        b.to_async(&rt).iter(|| async {
            std::hint::black_box(k.call::<_, Tally>(Sample { seq: 0, value: 1 }).await.unwrap())
        })
    });
    g.bench_function("naive_dispatch_and_readback", |b| {
        b.iter(|| std::hint::black_box(naive.handle(Sample { seq: 0, value: 1 })))
    });
    g.finish();

    // Correctness of what was measured: the naive kernel and the runtime agree.
    let started = Instant::now();
    let t: Tally = rt.block_on(k.call(Sample { seq: 0, value: 0 })).unwrap();
    assert!(t.count > batch as u64, "{t:?}");
    eprintln!("final tally {t:?} ({:?} for the last call)", started.elapsed());
    rt.block_on(runtime.shutdown()).unwrap();
}

criterion_group!(wgpu_benches, benches);
criterion_main!(wgpu_benches);
