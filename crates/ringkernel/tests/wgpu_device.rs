//! wgpu-specific checks on a real adapter (lavapipe in CI): the device reads and writes every
//! field kind of the GPU word layout exactly as the Rust codec does, the envelopes it writes carry
//! the documented header, bad WGSL and bad input become typed errors, and wgpu and CPU kernels
//! message each other. Skips (or fails, with `RINGKERNEL_REQUIRE_WGPU=1`) without an adapter.
#![cfg(feature = "wgpu")]

use ringkernel::message::{decode_header, FLAG_REPLY};
use ringkernel::prelude::*;
use ringkernel::runtime::KernelDef;
use ringkernel::wgpu::WgslProgram;
use ringkernel::GpuType;
use std::time::Duration;

#[path = "common/every.rs"]
mod every;
use every::{sample, Every};

#[derive(RingMessage, GpuType, Debug, Clone, Copy, PartialEq)]
#[message(gpu, type_id = 0x6002)]
struct Ping {
    n: u32,
}

#[derive(Default, GpuType)]
struct Empty {}

async fn runtime(defs: Vec<KernelDef>) -> Option<RingKernel> {
    let mut b = RingKernel::builder().backend(Backend::Wgpu);
    for d in defs {
        b = b.kernel(d);
    }
    match b.build().await {
        Ok(rt) => Some(rt),
        Err(e) => {
            if std::env::var("RINGKERNEL_REQUIRE_WGPU").as_deref() == Ok("1") {
                panic!("RINGKERNEL_REQUIRE_WGPU=1 but the wgpu backend is unavailable: {e}");
            }
            eprintln!("SKIP: wgpu backend unavailable: {e}");
            None
        }
    }
}

fn echo_def(name: &str, emit: bool) -> KernelDef {
    let body = if emit { "rk_emit_Every(m);" } else { "rk_reply_Every(m);" };
    KernelDef::new::<Empty>(name)
        .gpu(WgslProgram::new::<Empty>(format!("fn on_Every(m: Every) {{ {body} }}")).handles::<Every>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_round_trips_every_field_kind() {
    let Some(rt) = runtime(vec![echo_def("echo", false)]).await else { return };
    let k = rt.launch("echo", LaunchOptions::default().with_max_message_bytes(1024)).await.unwrap();
    for seed in 0..200 {
        let m = sample(seed);
        let back: Every = k.call(m.clone()).await.unwrap();
        assert_eq!(back, m, "seed {seed}: the WGSL reader/writer and the Rust codec disagree");
    }
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_envelopes_follow_the_layout() {
    let Some(rt) = runtime(vec![echo_def("emitter", true)]).await else { return };
    let k = rt.launch("emitter", LaunchOptions::default().with_max_message_bytes(1024)).await.unwrap();
    let before = rt.kernel("emitter").unwrap().status().clock;
    let host_now = HlcClock::new(0).now();
    k.send(sample(11)).await.unwrap();
    // Read the raw envelope the device wrote, straight from the output ring.
    let raw = loop {
        if let Some(b) = k.cell().pop_output(|b| b.to_vec()) {
            break b;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let (h, payload) = decode_header(&raw).unwrap();
    assert_eq!(h.type_id, 0x6001);
    assert_eq!(h.source, k.id().0);
    assert_eq!(h.hlc_node, k.id().0);
    assert_eq!(h.destination, 0);
    assert_eq!(h.flags & FLAG_REPLY, 0, "an emit is not a reply");
    assert_eq!(h.correlation_id, 0);
    assert_eq!(h.message_id >> 32, 0x4000_0000 | u64::from(k.id().0), "device message ids name the kernel");
    assert_eq!(h.payload_len as usize, payload.len());
    assert_eq!(ringkernel::gpu::decode::<Every>(payload, "Every").unwrap(), sample(11));
    let ts = HlcTimestamp::from_packed(h.hlc, h.hlc_node);
    assert!(
        ts.packed() > host_now.packed(),
        "the device clock advanced past the sender's: {ts:?} vs {host_now:?}"
    );
    assert!(k.status().clock.packed() >= ts.packed());
    assert!(k.status().clock > before);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_wgsl_is_a_launch_error_and_others_keep_serving() {
    let bad = KernelDef::new::<Empty>("bad").gpu(
        WgslProgram::new::<Empty>("fn on_Ping(m: Ping) { rk_reply_Ping(undefined_thing); }")
            .handles::<Ping>(),
    );
    let Some(rt) = runtime(vec![bad, echo_def("good", false)]).await else { return };
    match rt.launch("bad", LaunchOptions::default()).await {
        Err(Error::Gpu { backend: "wgpu", kernel, detail, .. }) => {
            assert_eq!(kernel, "bad");
            assert!(detail.contains("undefined_thing"), "diagnostics name the problem: {detail}");
        }
        other => panic!("expected a wgpu error, got {other:?}"),
    }
    let good = rt.launch("good", LaunchOptions::default().with_max_message_bytes(1024)).await.unwrap();
    assert_eq!(good.call::<_, Every>(sample(3)).await.unwrap(), sample(3));
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payloads_and_handler_errors_are_typed() {
    let src = r#"
fn on_Ping(m: Ping) {
    if (m.n == 13u) { rk_error(13u); return; }
    if (m.n == 99u) { rk_emit_Ping(m); rk_emit_Ping(m); rk_emit_Ping(m); return; }
    rk_reply_Ping(Ping(m.n + 1u));
}
fn on_Every(m: Every) { rk_reply_Every(m); }
"#;
    let def = KernelDef::new::<Empty>("picky").gpu(
        WgslProgram::new::<Empty>(src).handles::<Ping>().handles::<Every>().error_text(13, "unlucky number"),
    );
    let Some(rt) = runtime(vec![def]).await else { return };
    let k = rt
        .launch("picky", LaunchOptions::default().with_queue_capacity(2).with_max_message_bytes(512))
        .await
        .unwrap();
    // A user error code comes back as the call's error, with the declared text.
    match k.call::<_, Ping>(Ping { n: 13 }).await {
        Err(Error::Handler { detail, .. }) => assert!(detail.contains("unlucky number"), "{detail}"),
        other => panic!("{other:?}"),
    }
    // A slice pointing outside its payload: the device refuses it and says so.
    let mut bytes = vec![0u8; 512];
    let meta = ringkernel::message::EnvelopeMeta {
        correlation_id: 0,
        source: 0,
        destination: k.id().0,
        hlc: HlcClock::new(0).now(),
        flags: 0,
    };
    let n = ringkernel::message::encode(&sample(20), &meta, &mut bytes).unwrap();
    let h_len_word = 64 + 4 * (1 + 1 + 1 + 2 + 2 + 3 + 4 + 1); // Every.h's length word
    bytes[h_len_word..h_len_word + 4].copy_from_slice(&1_000_000u32.to_le_bytes());
    assert_eq!(k.cell().push_input_bytes(&bytes[..n]), ringkernel::backend::InputPush::Pushed);
    assert_eq!(k.call::<_, Ping>(Ping { n: 1 }).await.unwrap(), Ping { n: 2 }, "the kernel keeps serving");
    let st = k.status();
    assert!(st.last_error.as_deref().unwrap_or("").contains("malformed"), "{st:?}");
    // More sends than max_sends (1) into a 2-slot output queue: the kernel fails with a typed
    // reason instead of dropping a message.
    k.send(Ping { n: 99 }).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while k.status().state != KernelState::Failed {
        assert!(std::time::Instant::now() < deadline, "{:?}", k.status());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(k.status().last_error.unwrap().contains("max_sends"));
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wgpu_and_cpu_kernels_message_each_other() {
    // gpu_fwd (WGSL) -> cpu_mid (CPU handlers only) -> gpu_sink (WGSL) -> host.
    let fwd = KernelDef::new::<Empty>("gpu_fwd").gpu(
        WgslProgram::new::<Empty>("fn on_Ping(m: Ping) { rk_send_Ping(0u, Ping(m.n * 2u)); }")
            .handles::<Ping>()
            .route("cpu_mid"),
    );
    let mid =
        KernelDef::new::<()>("cpu_mid").on(|_: &mut (), p: Ping, ctx: &mut Context<'_>| -> Result<()> {
            ctx.send_to("gpu_sink", Ping { n: p.n + 1 })
        });
    let sink = KernelDef::new::<Empty>("gpu_sink")
        .gpu(WgslProgram::new::<Empty>("fn on_Ping(m: Ping) { rk_emit_Ping(m); }").handles::<Ping>());
    let Some(rt) = runtime(vec![fwd, mid, sink]).await else { return };
    let opts = LaunchOptions::default().with_queue_capacity(64);
    let f = rt.launch("gpu_fwd", opts.clone()).await.unwrap();
    let _m = rt.launch("cpu_mid", opts.clone()).await.unwrap();
    let s = rt.launch("gpu_sink", opts).await.unwrap();
    let sender = {
        let f = f.clone();
        tokio::spawn(async move {
            for i in 0..500u32 {
                f.send(Ping { n: i }).await.unwrap();
            }
        })
    };
    for i in 0..500u32 {
        let got = match tokio::time::timeout(Duration::from_secs(20), s.receive::<Ping>()).await {
            Ok(r) => r.unwrap(),
            Err(_) => panic!(
                "message {i} never arrived: {:?}\n{:?}\n{:?}",
                f.status(),
                rt.kernel("cpu_mid").unwrap().status(),
                s.status()
            ),
        };
        assert_eq!(got, Ping { n: i * 2 + 1 }, "in order, none lost");
    }
    sender.await.unwrap();
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_only_kernel_on_the_cpu_backend_is_a_clear_error() {
    let def = echo_def("gpu_only", false);
    let rt = RingKernel::builder().backend(Backend::Cpu).kernel(def).build().await.unwrap();
    match rt.launch("gpu_only", LaunchOptions::default()).await {
        Err(Error::KernelDefinition { detail, .. }) => assert!(detail.contains("wgpu"), "{detail}"),
        other => panic!("{other:?}"),
    }
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_does_not_pick_a_software_adapter_unless_asked() {
    let software_only = ringkernel::wgpu::probe_adapter(false, ringkernel::wgpu::NATIVE_APIS).is_err()
        && ringkernel::wgpu::probe_adapter(true, ringkernel::wgpu::NATIVE_APIS).is_ok();
    if !software_only || std::env::var("RINGKERNEL_WGPU_ALLOW_SOFTWARE").as_deref() == Ok("1") {
        eprintln!("SKIP: this check needs a machine whose only adapter is a software one");
        return;
    }
    let rt = RingKernel::builder().backend(Backend::Auto).build().await.unwrap();
    assert_eq!(rt.backend(), Backend::Cpu);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_device_memory_is_a_launch_error() {
    let config = ringkernel::wgpu::WgpuConfig { arena_bytes: 4 << 20, max_kernels: 64, ..Default::default() };
    let b = RingKernel::builder().backend(Backend::Wgpu).backend_config(config);
    let rt = match b.kernel(echo_def("huge", false)).kernel(echo_def("small", false)).build().await {
        Ok(rt) => rt,
        Err(e) => {
            assert!(std::env::var("RINGKERNEL_REQUIRE_WGPU").as_deref() != Ok("1"), "{e}");
            eprintln!("SKIP: wgpu backend unavailable: {e}");
            return;
        }
    };
    // 16,384 slots x 1 KiB each way does not fit a 4 MiB arena.
    let big = LaunchOptions::default().with_queue_capacity(16_384).with_max_message_bytes(1024);
    match rt.launch("huge", big).await {
        Err(Error::Gpu { detail, .. }) => assert!(detail.contains("out of device memory"), "{detail}"),
        other => panic!("{other:?}"),
    }
    let small = rt.launch("small", LaunchOptions::default().with_max_message_bytes(1024)).await.unwrap();
    assert_eq!(small.call::<_, Every>(sample(5)).await.unwrap(), sample(5), "the runtime keeps serving");
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_loss_fails_gpu_kernels_and_spares_cpu_ones() {
    let cpu_def = KernelDef::new::<()>("cpu_echo").on(|_: &mut (), p: Ping, _: &mut Context<'_>| p);
    let Some(rt) = runtime(vec![echo_def("doomed", false), cpu_def]).await else { return };
    let gpu = rt.launch("doomed", LaunchOptions::default().with_max_message_bytes(1024)).await.unwrap();
    let cpu = rt.launch("cpu_echo", LaunchOptions::default()).await.unwrap();
    assert_eq!(gpu.call::<_, Every>(sample(1)).await.unwrap(), sample(1));
    gpu.deactivate().await.unwrap();
    let pending = {
        let g = gpu.clone();
        tokio::spawn(async move { g.call::<_, Every>(sample(2)).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    rt.backend_impl::<ringkernel::wgpu::WgpuBackend>().unwrap().simulate_device_loss();
    let r = tokio::time::timeout(Duration::from_secs(10), pending).await.expect("caller not left hanging");
    match r.unwrap() {
        Err(Error::KernelFailed { detail, .. }) => assert!(detail.contains("device"), "{detail}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(gpu.status().state, KernelState::Failed);
    assert!(gpu.status().last_error.unwrap().contains("device"));
    assert_eq!(cpu.call::<_, Ping>(Ping { n: 4 }).await.unwrap(), Ping { n: 4 }, "CPU kernels keep serving");
    match rt.launch("doomed", LaunchOptions::default()).await {
        Err(Error::AlreadyLaunched(_)) | Err(Error::Gpu { .. }) => {}
        other => panic!("{other:?}"),
    }
    tokio::time::timeout(Duration::from_secs(10), rt.shutdown())
        .await
        .expect("shutdown after device loss")
        .unwrap();
}

/// With `RINGKERNEL_CHECK_MSL=1` (CI), creating a pipeline also generates the MSL wgpu's Metal
/// backend would hand the Metal driver; this checks that the check really ran, and that the MSL
/// of a program is a Metal compute kernel. Without the `metal` feature there is no MSL writer.
#[cfg(feature = "metal")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pipeline_gets_its_msl_generated_when_asked() {
    let program =
        WgslProgram::new::<Empty>("fn on_Ping(m: Ping) { rk_reply_Ping(Ping(m.n + 1u)); }").handles::<Ping>();
    let msl = ringkernel::metal::translate_msl(&program).expect("MSL of a valid program");
    assert!(msl.contains("kernel void"), "a Metal compute entry point:\n{msl}");
    let broken = WgslProgram::new::<Empty>("fn on_Ping(m: Ping) { rk_reply_Ping(nope); }").handles::<Ping>();
    assert!(ringkernel::metal::translate_msl(&broken).is_err());
    if std::env::var("RINGKERNEL_CHECK_MSL").as_deref() != Ok("1") {
        eprintln!("SKIP: RINGKERNEL_CHECK_MSL is not 1: pipelines are not translated to MSL in this run");
        return;
    }
    let Some(rt) = runtime(vec![KernelDef::new::<Empty>("msl_echo").gpu(program)]).await else { return };
    let before = ringkernel::wgpu::msl_checked();
    let k = rt.launch("msl_echo", LaunchOptions::default()).await.unwrap();
    assert_eq!(k.call::<_, Ping>(Ping { n: 1 }).await.unwrap(), Ping { n: 2 });
    assert!(ringkernel::wgpu::msl_checked() > before, "the launch generated the program's MSL");
    rt.shutdown().await.unwrap();
}
