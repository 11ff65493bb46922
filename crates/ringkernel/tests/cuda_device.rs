//! CUDA-specific checks, run on the host emulation (the same generated kernels as C on host
//! threads; needs a C compiler, required in CI by `RINGKERNEL_REQUIRE_CUDA_EMULATION=1`) and on a
//! GPU when there is one (skipped without, or failed under `RINGKERNEL_REQUIRE_CUDA=1`): every field kind of the GPU word layout round-trips through the
//! generated C readers and writers, K2K between CUDA kernels stays on the device, CUDA and CPU
//! kernels message each other, persistent state is readable as a snapshot, and bad CUDA C,
//! handler errors and the kernel limit are typed errors while other kernels keep serving.
#![cfg(feature = "cuda")]

use ringkernel::cuda::{CudaConfig, CudaProgram};
use ringkernel::prelude::*;
use ringkernel::runtime::KernelDef;
use ringkernel::GpuType;

#[path = "common/every.rs"]
mod every;
use every::{sample, Every};

#[derive(RingMessage, GpuType, Debug, Clone, Copy, PartialEq)]
#[message(gpu, type_id = 0x6102)]
struct Hop {
    n: u64,
    trail: u64,
}

#[derive(Default, GpuType, Debug, PartialEq)]
struct Tally {
    seen: u64,
    last: u64,
}

#[derive(Default, GpuType)]
struct Empty {}

/// Runs `f` on the host emulation, then on the GPU if there is one.
async fn each_device<F, Fut>(defs: impl Fn() -> Vec<KernelDef>, config: CudaConfig, f: F)
where
    F: Fn(RingKernel) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for emulate in [true, false] {
        let mut b = RingKernel::builder()
            .backend(Backend::Cuda)
            .backend_config(CudaConfig { emulate, ..config.clone() });
        for d in defs() {
            b = b.kernel(d);
        }
        match b.build().await {
            Ok(rt) => {
                eprintln!("running on {}", rt.adapter().unwrap());
                f(rt).await
            }
            Err(e) if emulate => {
                if std::env::var("RINGKERNEL_REQUIRE_CUDA_EMULATION").as_deref() == Ok("1") {
                    panic!("RINGKERNEL_REQUIRE_CUDA_EMULATION=1 but the host emulation cannot start: {e}");
                }
                eprintln!("SKIP (emulated part): {e}");
            }
            Err(e) => {
                if std::env::var("RINGKERNEL_REQUIRE_CUDA").as_deref() == Ok("1") {
                    panic!("RINGKERNEL_REQUIRE_CUDA=1 but the CUDA backend is unavailable: {e}");
                }
                eprintln!("SKIP (GPU part): CUDA backend unavailable: {e}");
            }
        }
    }
}

fn echo_def(name: &str) -> KernelDef {
    KernelDef::new::<Empty>(name).gpu(
        CudaProgram::new::<Empty>(
            "RK_DEVICE uint32_t on_Every(rk_ctx* ctx, Empty* s, const Every* m) { (void)s; return rk_reply_Every(ctx, m); }",
        )
        .handles::<Every>(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_round_trips_every_field_kind() {
    each_device(
        || vec![echo_def("echo")],
        CudaConfig::default(),
        |rt| async move {
            let k = rt.launch("echo", LaunchOptions::default().with_max_message_bytes(1024)).await.unwrap();
            for seed in 0..64 {
                let m = sample(seed);
                let back: Every = k.call(m.clone()).await.unwrap();
                assert_eq!(back, m, "seed {seed}");
            }
            rt.shutdown().await.unwrap();
        },
    )
    .await;
}

/// hop: adds its mark to the trail and forwards to `next` (a CUDA or CPU kernel), or emits.
fn hop_def(name: &str, mark: u64, next: Option<&str>, cuda: bool) -> KernelDef {
    let def = KernelDef::new::<Tally>(name);
    if cuda {
        let send = if next.is_some() { "rk_send_Hop(ctx, 0u, &h)" } else { "rk_emit_Hop(ctx, &h)" };
        let src = format!(
            "RK_DEVICE uint32_t on_Hop(rk_ctx* ctx, Tally* s, const Hop* m) {{
                 s->seen += 1u; s->last = m->n;
                 Hop h = *m; h.trail = h.trail * 10u + {mark}u;
                 return {send};
             }}"
        );
        let p = CudaProgram::new::<Tally>(src).handles::<Hop>();
        def.gpu(match next {
            Some(n) => p.route(n),
            None => p,
        })
    } else {
        let next = next.map(str::to_string);
        def.on(move |s: &mut Tally, m: Hop, ctx: &mut Context<'_>| -> Result<()> {
            s.seen += 1;
            s.last = m.n;
            let h = Hop { n: m.n, trail: m.trail * 10 + mark };
            match &next {
                Some(t) => ctx.send_to(t, h),
                None => ctx.emit(h),
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k2k_between_cuda_kernels_stays_on_the_device() {
    let defs = || {
        vec![hop_def("a", 1, Some("b"), true), hop_def("b", 2, Some("c"), true), hop_def("c", 3, None, true)]
    };
    each_device(defs, CudaConfig::default(), |rt| async move {
        let opts = LaunchOptions::default().with_queue_capacity(64);
        let a = rt.launch("a", opts.clone()).await.unwrap();
        let b = rt.launch("b", opts.clone()).await.unwrap();
        let c = rt.launch("c", opts).await.unwrap();
        let n = 5_000u64;
        let sender = {
            let a = a.clone();
            tokio::spawn(async move {
                for i in 0..n {
                    a.send(Hop { n: i, trail: 0 }).await.unwrap();
                }
            })
        };
        for i in 0..n {
            let h: Hop = c.receive().await.unwrap();
            assert_eq!(h, Hop { n: i, trail: 123 }, "in order, through a, b and c");
        }
        sender.await.unwrap();
        assert_eq!(
            rt.backend_impl::<ringkernel::cuda::CudaBackend>().unwrap().k2k_via_host(),
            0,
            "every hop went into a device inbox"
        );
        assert_eq!(rt.state_snapshot::<Tally>(&b).unwrap(), Tally { seen: n, last: n - 1 });
        for k in [&a, &b, &c] {
            let r = k.terminate().await.unwrap();
            assert_eq!(r.messages_processed, n);
            assert!(r.returned.is_empty());
        }
        rt.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuda_and_cpu_kernels_message_each_other() {
    // cuda a -> cpu b -> cuda c -> host
    let defs = || {
        vec![hop_def("a", 1, Some("b"), true), hop_def("b", 2, Some("c"), false), hop_def("c", 3, None, true)]
    };
    each_device(defs, CudaConfig::default(), |rt| async move {
        let a = rt.launch("a", LaunchOptions::default()).await.unwrap();
        let _b = rt.launch("b", LaunchOptions::default()).await.unwrap();
        let c = rt.launch("c", LaunchOptions::default()).await.unwrap();
        for i in 0..500 {
            a.send(Hop { n: i, trail: 0 }).await.unwrap();
            let h: Hop = c.receive().await.unwrap();
            assert_eq!(h, Hop { n: i, trail: 123 });
        }
        assert_eq!(
            rt.backend_impl::<ringkernel::cuda::CudaBackend>().unwrap().k2k_via_host(),
            500,
            "a's route to the CPU kernel b goes through the host"
        );
        rt.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cuda_c_and_handler_errors_are_typed() {
    let defs = || {
        let fails = KernelDef::new::<Empty>("fails").gpu(
            CudaProgram::new::<Empty>(
                "RK_DEVICE uint32_t on_Hop(rk_ctx* ctx, Empty* s, const Hop* m) { (void)s; \
                 if (m->n == 13u) return rk_error(ctx, 13u); return m->n == 7u ? 0u : rk_emit_Hop(ctx, m); }",
            )
            .handles::<Hop>()
            .error_text(13, "unlucky number"),
        );
        let broken = KernelDef::new::<Empty>("broken").gpu(
            CudaProgram::new::<Empty>(
                "RK_DEVICE uint32_t on_Hop(rk_ctx* ctx, Empty* s, const Hop* m) { return oops; }",
            )
            .handles::<Hop>(),
        );
        vec![fails, broken, echo_def("bystander")]
    };
    each_device(defs, CudaConfig { max_kernels: 2, ..CudaConfig::default() }, |rt| async move {
        match rt.launch("broken", LaunchOptions::default()).await {
            Err(Error::Gpu { backend: "cuda", kernel, detail, .. }) => {
                assert_eq!(kernel, "broken");
                assert!(detail.contains("oops"), "the compiler's message is passed on: {detail}");
            }
            other => panic!("{other:?}"),
        }
        let k = rt.launch("fails", LaunchOptions::default()).await.unwrap();
        match k.call::<_, Hop>(Hop { n: 13, trail: 0 }).await {
            Err(Error::Handler { detail, .. }) => assert!(detail.contains("unlucky number"), "{detail}"),
            other => panic!("{other:?}"),
        }
        match k.call::<_, Hop>(Hop { n: 7, trail: 0 }).await {
            Err(Error::Handler { detail, .. }) => assert!(detail.contains("no reply"), "{detail}"),
            other => panic!("{other:?}"),
        }
        k.send(Hop { n: 1, trail: 0 }).await.unwrap();
        assert_eq!(k.receive::<Hop>().await.unwrap().n, 1, "the kernel keeps serving after handler errors");
        let bystander = rt.launch("bystander", LaunchOptions::default()).await.unwrap();
        assert_eq!(bystander.call::<_, Every>(sample(3)).await.unwrap(), sample(3));
        rt.register(echo_def("third")).unwrap();
        match rt.launch("third", LaunchOptions::default()).await {
            Err(Error::Gpu { detail, .. }) => assert!(detail.contains("max_kernels"), "{detail}"),
            other => panic!("the kernel limit is an error: {other:?}"),
        }
        assert_eq!(bystander.call::<_, Every>(sample(4)).await.unwrap(), sample(4), "others keep serving");
        rt.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_only_kernel_on_the_cpu_backend_is_an_error() {
    let rt = RingKernel::builder().backend(Backend::Cpu).kernel(echo_def("echo")).build().await.unwrap();
    match rt.launch("echo", LaunchOptions::default()).await {
        Err(Error::KernelDefinition { detail, .. }) => assert!(detail.contains("cuda"), "{detail}"),
        other => panic!("{other:?}"),
    }
    rt.shutdown().await.unwrap();
}

#[derive(RingMessage, GpuType, Debug, Clone, Copy, PartialEq)]
#[message(gpu, type_id = 0x6104)]
struct Flood {
    n: u64,
}

/// Every device wait observes the exit flag (issue 13). A handler that keeps emitting while the
/// host gives up on its kernel (nobody drains the output ring any more) waits for room; told to
/// exit, its send fails with `RK_ERR_EXITING`, the handler returns and the kernel ends, so its
/// memory goes back to the free list. Before, the send waited for room forever and the kernel
/// never returned (its memory was never reused, and shutdown released the device under it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_waiting_for_room_observes_exit() {
    let src = "RK_DEVICE uint32_t on_Flood(rk_ctx* ctx, Empty* s, const Flood* m) {
                   Flood f = *m;
                   while (rk_emit_Flood(ctx, &f) == 0u) f.n += 1u;
                   return 0u;
               }";
    let defs =
        || vec![KernelDef::new::<Empty>("flood").gpu(CudaProgram::new::<Empty>(src).handles::<Flood>())];
    each_device(defs, CudaConfig::default(), |rt| async move {
        let cuda = rt.backend_impl::<ringkernel::cuda::CudaBackend>().expect("the CUDA backend");
        let k = rt.launch("flood", LaunchOptions::default()).await.unwrap();
        k.send(Flood { n: 0 }).await.unwrap();
        let first: Flood = k.receive().await.unwrap();
        assert_eq!(first, Flood { n: 0 }, "the handler is emitting");
        let free = cuda.memory_blocks().free;
        // The host gives up on the kernel (as when the runtime is dropped without shutdown).
        k.cell().abort("test: the host gave up on the kernel");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while cuda.memory_blocks().free == free {
            assert!(
                std::time::Instant::now() < deadline,
                "the kernel never returned: its send waited for output room past the exit request"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        rt.shutdown().await.unwrap();
    })
    .await;
}

/// With `RINGKERNEL_CHECK_PTX=1` (CI), a launch also compiles the program's CUDA C with NVRTC and
/// assembles it with `ptxas -Werror` for sm_80 and sm_90 (the gate `scripts/cuda_compile_check.py`
/// gives the example kernel): this checks that the gate ran for a program no other test launches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launches_pass_the_ptx_gate_when_asked() {
    if std::env::var("RINGKERNEL_CHECK_PTX").as_deref() != Ok("1") {
        eprintln!("SKIP: RINGKERNEL_CHECK_PTX is not 1: launched programs are not assembled with ptxas");
        return;
    }
    let src = "// only this test launches this program
               RK_DEVICE uint32_t on_Flood(rk_ctx* ctx, Empty* s, const Flood* m) { return rk_reply_Flood(ctx, m); }";
    let defs =
        || vec![KernelDef::new::<Empty>("ptx_gate").gpu(CudaProgram::new::<Empty>(src).handles::<Flood>())];
    each_device(defs, CudaConfig::default(), |rt| async move {
        let before = ringkernel::cuda::ptx_checked();
        let k = rt.launch("ptx_gate", LaunchOptions::default()).await.unwrap();
        assert_eq!(k.call::<_, Flood>(Flood { n: 7 }).await.unwrap(), Flood { n: 7 });
        assert!(ringkernel::cuda::ptx_checked() > before, "the launch passed its program through ptxas");
        rt.shutdown().await.unwrap();
    })
    .await;
}

/// Every kernel starts from its program's initial state, not from zeroed memory: the device
/// memory is zeroed on the stream its initial contents are then written on. (On a GPU, a zeroing
/// on the legacy stream could land after the write; the emulation has no streams, so there this
/// only checks the snapshot path. Many kernels, to give a reordering room to show.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernels_start_from_their_initial_state() {
    let initial = || Tally { seen: 0x1234_5678_9abc_def0, last: 42 };
    let defs = move || {
        (0..32)
            .map(|i| {
                let p = CudaProgram::with_state(
                    "RK_DEVICE uint32_t on_Hop(rk_ctx* ctx, Tally* s, const Hop* m) { return rk_reply_Hop(ctx, m); }",
                    initial(),
                )
                .handles::<Hop>();
                KernelDef::new::<Tally>(format!("initial{i}")).gpu(p)
            })
            .collect()
    };
    each_device(defs, CudaConfig::default(), |rt| async move {
        let mut ks = Vec::new();
        for i in 0..32 {
            ks.push(rt.launch(&format!("initial{i}"), LaunchOptions::default()).await.unwrap());
        }
        for k in &ks {
            assert_eq!(rt.state_snapshot::<Tally>(k).unwrap(), initial(), "kernel {}", k.name());
        }
        rt.shutdown().await.unwrap();
    })
    .await;
}

/// A state whose `u64` members sit at 4-byte offsets in the GPU word layout.
#[derive(GpuType, Debug, Clone, Copy, PartialEq, Default)]
struct Mixed {
    tag: u32,
    total: u64,
    hist: [u32; 3],
    last: i64,
}

/// The state lives on the device in its natural C layout (every `u64` 8-byte aligned: a pointer
/// to one is a valid 64-bit access on a GPU; the packed word layout made it a misaligned one),
/// and the host converts: the initial state goes in, handlers update members through pointers,
/// and the snapshot comes back in the word layout with every field where it belongs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_with_u64_members_is_naturally_aligned_on_the_device() {
    let initial = || Mixed { tag: 7, total: 0x0102_0304_0506_0708, hist: [1, 2, 3], last: -5 };
    let defs = move || {
        let p = CudaProgram::with_state(
            "RK_DEVICE uint32_t on_Hop(rk_ctx* ctx, Mixed* s, const Hop* m) {
                 uint64_t* t = &s->total;
                 if (((uint64_t)t & 7u) != 0u) return rk_error(ctx, 77u);
                 *t += m->n;
                 s->last = -(int64_t)m->n;
                 s->tag += 1u;
                 s->hist[m->n % 3u] += 1u;
                 return rk_reply_Hop(ctx, m);
             }",
            initial(),
        )
        .handles::<Hop>()
        .error_text(77, "misaligned u64 member");
        vec![KernelDef::new::<Mixed>("mixed").gpu(p)]
    };
    each_device(defs, CudaConfig::default(), |rt| async move {
        let k = rt.launch("mixed", LaunchOptions::default()).await.unwrap();
        assert_eq!(rt.state_snapshot::<Mixed>(&k).unwrap(), initial(), "the initial state, field by field");
        for n in [10u64, 20, 31] {
            let _: Hop = k.call(Hop { n, trail: 0 }).await.unwrap();
        }
        let want = Mixed { tag: 10, total: 0x0102_0304_0506_0708 + 61, hist: [1, 4, 4], last: -31 };
        assert_eq!(rt.state_snapshot::<Mixed>(&k).unwrap(), want);
        rt.shutdown().await.unwrap();
    })
    .await;
}
