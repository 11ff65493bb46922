//! A kernel group of 1,000,000 instances on the CPU backend and on the CUDA backend's host
//! emulation (the device protocol of `ringkernel_codegen::c_family::group` on host threads):
//! 4-slot mailboxes of 64-byte payloads, 16 bytes of state each. Every instance receives one
//! message and replies; the group terminates; resident memory stays within 2 GiB.

use ringkernel::prelude::*;
use ringkernel::runtime::{KernelDef, KernelGroup};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// 64 bytes of payload.
#[derive(RingMessage, IntoBytes, FromBytes, Immutable, KnownLayout, Clone, Copy, Debug)]
#[message(pod, type_id = 0x5101)]
#[repr(C)]
struct Ping {
    words: [u64; 8],
}

/// 16 bytes of state.
#[derive(Default)]
struct Acc {
    count: u64,
    sum: u64,
}

const _: () = assert!(core::mem::size_of::<Acc>() == 16 && core::mem::size_of::<Ping>() == 64);

/// 64 bytes of payload in the GPU word layout (for the CUDA program).
#[derive(RingMessage, ringkernel::GpuType, Clone, Copy, Debug, Default)]
#[message(gpu, type_id = 0x5102)]
struct GpuPing {
    value: u64,
    instance: u64,
    count: u64,
    w3: u64,
    w4: u64,
    w5: u64,
    w6: u64,
    w7: u64,
}

/// 16 bytes of state (GPU word layout).
#[derive(Default, ringkernel::GpuType)]
struct GpuAcc {
    count: u64,
    sum: u64,
}

/// The two tests measure the process's resident memory: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Sends every instance of `g` one message (`make(i)`) and reads every reply, checking with
/// `fields(reply) = (replying instance, value it was sent, its message count)` that each instance
/// replied once, to its own message, from fresh state; then terminates the group and checks the
/// growth of resident memory since `before`.
async fn each_receives_and_replies<M: RingMessage + Send + 'static>(
    g: &KernelGroup,
    make: impl Fn(u32) -> M,
    fields: fn(&M) -> (u64, u64, u64),
    before: Option<u64>,
    label: &str,
) {
    let n = g.len();
    let reader = {
        let g = g.clone();
        tokio::spawn(async move {
            let mut seen = vec![false; n as usize];
            for _ in 0..n {
                let r: Received<M> = g.receive_envelope().await.unwrap();
                let i = g.source_index(&r.meta).expect("a reply from an instance");
                let (instance, value, count) = fields(&r.message);
                assert_eq!(instance, u64::from(i), "the instance that handled it replied");
                assert_eq!(value, u64::from(i) * 3, "the message sent to that instance");
                assert_eq!(count, 1, "instance {i} had its own fresh state");
                assert!(!std::mem::replace(&mut seen[i as usize], true), "instance {i} replied twice");
            }
            seen.iter().all(|s| *s)
        })
    };
    for i in 0..n {
        g.instance(i).unwrap().send(make(i)).await.unwrap();
    }
    assert!(reader.await.unwrap(), "every instance replied");
    let peak = rss_bytes();
    let report = g.terminate().await.unwrap();
    assert_eq!(report.messages_processed, u64::from(n));
    assert!(report.returned.is_empty());
    if let (Some(before), Some(peak)) = (before, peak) {
        let grown = peak.saturating_sub(before);
        eprintln!("1,000,000 instances ({label}): resident memory grew by {} MiB", grown >> 20);
        assert!(grown <= 2 << 30, "resident memory grew by {grown} bytes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_instances_each_receive_and_reply() {
    const N: u32 = 1_000_000;
    let def = KernelDef::new::<Acc>("million").on(|s: &mut Acc, p: Ping, ctx: &mut Context<'_>| {
        s.count += 1;
        s.sum += p.words[0];
        let mut words = p.words;
        words[1] = u64::from(ctx.instance());
        words[2] = s.count;
        Ping { words }
    });
    let _serial = SERIAL.lock().await;
    let rt = RingKernel::builder().backend(Backend::Cpu).kernel(def).build().await.unwrap();
    let before = rss_bytes();
    // 64-byte envelope header + 64-byte payload per slot.
    let opts = LaunchOptions {
        input_capacity: 4,
        output_capacity: 1 << 12,
        max_message_bytes: 128,
        ..LaunchOptions::default()
    };
    let g = rt.launch_group("million", N, opts).await.unwrap();
    assert_eq!(g.len(), N);
    let make = |i: u32| {
        let mut words = [0u64; 8];
        words[0] = u64::from(i) * 3;
        Ping { words }
    };
    let fields = |p: &Ping| (p.words[1], p.words[0], p.words[2]);
    each_receives_and_replies(&g, make, fields, before, "CPU backend").await;
    rt.shutdown().await.unwrap();
}

#[cfg(feature = "cuda")]
const GPU_PING_CUDA: &str = r#"
RK_DEVICE uint32_t on_GpuPing(rk_ctx* ctx, GpuAcc* s, const GpuPing* m) {
    s->count += 1u;
    s->sum += m->value;
    GpuPing r = *m;
    r.instance = rk_instance(ctx);
    r.count = s->count;
    return rk_reply_GpuPing(ctx, &r);
}
"#;

/// The same million on the CUDA backend (`config`: the host emulation, or a GPU): the group's
/// mailboxes, marks, ready queues and states are device memory, run by the group's workers.
#[cfg(feature = "cuda")]
async fn a_million_instances_on_cuda(config: ringkernel::cuda::CudaConfig, require: &str) {
    const N: u32 = 1_000_000;
    let _serial = SERIAL.lock().await;
    let def = KernelDef::new::<GpuAcc>("million_cuda")
        .gpu(ringkernel::cuda::CudaProgram::new::<GpuAcc>(GPU_PING_CUDA).handles::<GpuPing>());
    let built = RingKernel::builder().backend(Backend::Cuda).backend_config(config).kernel(def).build().await;
    let rt = match built {
        Ok(rt) => rt,
        Err(e) if std::env::var(require).as_deref() != Ok("1") => {
            eprintln!("SKIP: the CUDA backend is unavailable: {e}");
            return;
        }
        Err(e) => panic!("{require}=1 but the CUDA backend is unavailable: {e}"),
    };
    let before = rss_bytes();
    let opts = LaunchOptions {
        input_capacity: 4,
        output_capacity: 1 << 12,
        max_message_bytes: 128,
        ..LaunchOptions::default()
    };
    let g = rt.launch_group("million_cuda", N, opts).await.unwrap();
    assert_eq!(g.status().placement.unwrap().backend, Backend::Cuda);
    let make = |i: u32| GpuPing { value: u64::from(i) * 3, ..GpuPing::default() };
    let fields = |p: &GpuPing| (p.instance, p.value, p.count);
    let label = format!("CUDA, {}", rt.adapter().unwrap_or_default());
    each_receives_and_replies(&g, make, fields, before, &label).await;
    rt.shutdown().await.unwrap();
}

/// On the host emulation, which CI always runs.
#[cfg(feature = "cuda")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_instances_on_the_cuda_emulation() {
    a_million_instances_on_cuda(
        ringkernel::cuda::CudaConfig::host_emulation(),
        "RINGKERNEL_REQUIRE_CUDA_EMULATION",
    )
    .await;
}

/// On a GPU (skips without one; fails under `RINGKERNEL_REQUIRE_CUDA=1`, as `gpu-bin/run.sh`
/// sets). `RINGKERNEL_CUDA_GROUP_WORKERS` sets the workers.
#[cfg(feature = "cuda")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_instances_on_a_gpu() {
    let config = ringkernel::cuda::CudaConfig { emulate: false, ..ringkernel::cuda::CudaConfig::from_env() };
    a_million_instances_on_cuda(config, "RINGKERNEL_REQUIRE_CUDA").await;
}
