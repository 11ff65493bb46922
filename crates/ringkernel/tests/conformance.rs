//! Backend-neutral conformance suite: every backend must pass these. The `conformance!` macro at
//! the bottom instantiates the suite for each backend; a GPU backend that finds no device skips
//! with a message (or fails, when `RINGKERNEL_REQUIRE_<BACKEND>=1`).

use ringkernel::backend::InputPush;
use ringkernel::prelude::*;
use ringkernel::runtime::KernelDef;
use ringkernel::GpuType;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

#[path = "conformance/clock.rs"]
mod clock;
#[path = "conformance/groups.rs"]
mod groups;
#[path = "conformance/hostile.rs"]
mod hostile;
#[path = "conformance/panics.rs"]
mod panics;
#[path = "conformance/races.rs"]
mod races;

/// A number to add up, or to pass along a K2K chain (GPU word layout, so WGSL handlers read it).
#[derive(RingMessage, GpuType, Clone, Copy, Debug, PartialEq)]
#[message(gpu, type_id = 0x5001)]
struct Num {
    seq: u64,
    value: u64,
}

#[derive(RingMessage, GpuType, Clone, Copy, Debug, PartialEq)]
#[message(gpu, type_id = 0x5002)]
struct Total {
    count: u64,
    sum: u64,
}

/// A variable-length payload; the kernel answers with the words reversed.
#[derive(RingMessage, GpuType, Debug, Clone, PartialEq)]
#[message(gpu, type_id = 0x5003)]
struct Words {
    data: Vec<u32>,
}

/// Makes the handler fail (a panic on the CPU, `rk_fail` in WGSL).
#[derive(RingMessage, GpuType, Clone, Copy, Debug)]
#[message(gpu, type_id = 0x5004)]
struct Boom {
    code: u32,
}

#[derive(RingMessage, IntoBytes, FromBytes, Immutable, KnownLayout, Clone, Copy, Debug)]
#[message(pod, type_id = 0x5005)]
#[repr(C)]
struct Unhandled {
    x: u64,
}

/// Variable-size rkyv payload (CPU backend only).
#[derive(RingMessage, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
#[message(type_id = 0x5006)]
struct Blob {
    data: Vec<u8>,
}

#[derive(Default, GpuType)]
struct Counter {
    count: u64,
    sum: u64,
}

#[cfg(feature = "wgpu")]
const COUNTER_WGSL: &str = r#"
fn on_Num(m: Num) {
    rk_state.count = rk_add64(rk_state.count, rk_u64(1u));
    rk_state.sum = rk_add64(rk_state.sum, m.value);
    rk_reply_Total(Total(rk_state.count, rk_state.sum));
}
fn on_Words(m: Words) {
    rk_state.count = rk_add64(rk_state.count, rk_u64(1u));
    for (var i = 0u; i < m.data.len; i++) {
        rk_scratch_set_u32(i, rk_get_u32(m.data, m.data.len - 1u - i));
    }
    rk_reply_Words(Words(rk_scratch_slice(0u, m.data.len, 1u)));
}
fn on_Boom(m: Boom) {
    rk_fail(m.code);
}
"#;

#[cfg(feature = "cuda")]
const COUNTER_CUDA: &str = r#"
RK_DEVICE uint32_t on_Num(rk_ctx* ctx, Counter* s, const Num* m) {
    s->count += 1u;
    s->sum += m->value;
    Total t;
    t.count = s->count;
    t.sum = s->sum;
    return rk_reply_Total(ctx, &t);
}
RK_DEVICE uint32_t on_Words(rk_ctx* ctx, Counter* s, const Words* m) {
    s->count += 1u;
    uint32_t n = m->data.len;
    if (n * 4u > ctx->scratch_bytes) return rk_error(ctx, RK_ERR_TOO_LARGE);
    uint32_t* out = (uint32_t*)ctx->scratch;
    for (uint32_t i = 0; i < n; i++) out[i] = rk_slice_u32(m->data, n - 1u - i);
    Words r;
    r.data.ptr = out;
    r.data.len = n;
    return rk_reply_Words(ctx, &r);
}
RK_DEVICE uint32_t on_Boom(rk_ctx* ctx, Counter* s, const Boom* m) {
    (void)s;
    return rk_fail(ctx, m->code);
}
"#;

/// A kernel that accumulates, echoes, answers totals, and fails on `Boom`; it carries CPU
/// handlers and (with the `wgpu` and `cuda` features) the same kernel in WGSL and CUDA C.
fn counter_def(name: &str) -> KernelDef {
    let def = KernelDef::new::<Counter>(name)
        .on(|s: &mut Counter, n: Num, _ctx: &mut Context<'_>| {
            // Wrapping, as the WGSL and CUDA versions: random payloads must not fail the kernel.
            s.count += 1;
            s.sum = s.sum.wrapping_add(n.value);
            Total { count: s.count, sum: s.sum }
        })
        .on(|s: &mut Counter, w: Words, _ctx: &mut Context<'_>| {
            s.count += 1;
            Words { data: w.data.iter().rev().copied().collect() }
        })
        .on(|_s: &mut Counter, b: Boom, _ctx: &mut Context<'_>| -> Total {
            panic!("boom {}", b.code);
        })
        .on(|s: &mut Counter, b: Blob, _ctx: &mut Context<'_>| {
            s.count += 1;
            Blob { data: b.data.iter().rev().copied().collect() }
        });
    #[cfg(feature = "wgpu")]
    let def = def.gpu(
        ringkernel::wgpu::WgslProgram::new::<Counter>(COUNTER_WGSL)
            .handles::<Num>()
            .handles::<Words>()
            .handles::<Boom>()
            .sends::<Total>()
            .error_text(1, "boom 1")
            .error_text(2, "boom 2")
            .error_text(7, "boom 7"),
    );
    #[cfg(feature = "cuda")]
    let def = def.gpu(
        ringkernel::cuda::CudaProgram::new::<Counter>(COUNTER_CUDA)
            .handles::<Num>()
            .handles::<Words>()
            .handles::<Boom>()
            .sends::<Total>()
            .error_text(1, "boom 1")
            .error_text(2, "boom 2")
            .error_text(7, "boom 7"),
    );
    def
}

#[derive(Default, GpuType)]
struct Seen {
    count: u64,
}

/// A pipeline stage: forwards to `next`, or emits to the host when `next` is empty.
fn stage_def(name: &str, next: Option<String>) -> KernelDef {
    #[cfg(feature = "wgpu")]
    let program = {
        let body = if next.is_some() { "rk_send_Num(0u, m);" } else { "rk_emit_Num(m);" };
        let src =
            format!("fn on_Num(m: Num) {{ rk_state.count = rk_add64(rk_state.count, rk_u64(1u)); {body} }}");
        let p = ringkernel::wgpu::WgslProgram::new::<Seen>(src).handles::<Num>();
        match &next {
            Some(t) => p.route(t.clone()),
            None => p,
        }
    };
    #[cfg(feature = "cuda")]
    let cuda = {
        let body = if next.is_some() { "rk_send_Num(ctx, 0u, m)" } else { "rk_emit_Num(ctx, m)" };
        let src = format!(
            "RK_DEVICE uint32_t on_Num(rk_ctx* ctx, Seen* s, const Num* m) {{ s->count += 1u; return {body}; }}"
        );
        let p = ringkernel::cuda::CudaProgram::new::<Seen>(src).handles::<Num>();
        match &next {
            Some(t) => p.route(t.clone()),
            None => p,
        }
    };
    let def = KernelDef::new::<Seen>(name).on(
        move |seen: &mut Seen, n: Num, ctx: &mut Context<'_>| -> Result<()> {
            seen.count += 1;
            match &next {
                Some(t) => ctx.send_to(t, n),
                None => ctx.emit(n),
            }
        },
    );
    #[cfg(feature = "wgpu")]
    let def = def.gpu(program);
    #[cfg(feature = "cuda")]
    let def = def.gpu(cuda);
    def
}

/// Which backend a suite instance runs on; `emulate` selects the CUDA backend's host emulation,
/// `chaos` its chaos mode (random yields before every atomic of the device protocol).
#[derive(Clone, Copy, Debug)]
struct Setup {
    backend: Backend,
    emulate: bool,
    chaos: bool,
}

impl From<Backend> for Setup {
    fn from(backend: Backend) -> Self {
        Self { backend, emulate: false, chaos: false }
    }
}

async fn runtime_with(backend: Setup, defs: Vec<KernelDef>) -> Option<RingKernel> {
    runtime_named(backend, defs, "ringkernel-cpu").await
}

async fn runtime_named(backend: Setup, defs: Vec<KernelDef>, threads: &str) -> Option<RingKernel> {
    let cpu = ringkernel::CpuConfig { thread_name: threads.to_string(), ..Default::default() };
    let setup = backend;
    let backend = setup.backend;
    let mut b = RingKernel::builder().backend(backend).cpu_config(cpu);
    #[cfg(feature = "cuda")]
    if setup.emulate {
        let config = ringkernel::cuda::CudaConfig {
            emulate_chaos: setup.chaos,
            ..ringkernel::cuda::CudaConfig::host_emulation()
        };
        b = b.backend_config(config);
    }
    for d in defs {
        b = b.kernel(d);
    }
    match b.build().await {
        Ok(rt) => Some(rt),
        Err(e) => {
            let var = if setup.emulate {
                "RINGKERNEL_REQUIRE_CUDA_EMULATION".to_string()
            } else {
                format!("RINGKERNEL_REQUIRE_{}", backend.name().to_uppercase())
            };
            if std::env::var(&var).as_deref() == Ok("1") {
                panic!("{var}=1 but backend {} is unavailable: {e}", backend.name());
            }
            eprintln!("SKIP: backend {} unavailable: {e}", backend.name());
            None
        }
    }
}

async fn lifecycle(backend: Setup) {
    let Some(rt) = runtime_with(backend, vec![counter_def("life")]).await else { return };
    let k = rt.launch("life", LaunchOptions::default()).await.unwrap();
    assert_eq!(k.status().state, KernelState::Active);
    let t: Total = k.call(Num { seq: 0, value: 5 }).await.unwrap();
    assert_eq!(t, Total { count: 1, sum: 5 });

    k.deactivate().await.unwrap();
    assert_eq!(k.status().state, KernelState::Inactive);
    k.send(Num { seq: 1, value: 7 }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(k.status().messages_processed, 1, "inactive kernel holds its input");
    assert_eq!(k.status().input_queue_depth, 1);
    assert!(matches!(k.deactivate().await, Err(Error::InvalidTransition { .. })));

    k.activate().await.unwrap();
    let t: Total = k.receive().await.unwrap();
    assert_eq!(t, Total { count: 2, sum: 12 }, "state persisted across deactivate/activate");

    let report = k.terminate().await.unwrap();
    assert_eq!(report.messages_processed, 2);
    assert!(report.returned.is_empty());
    assert_eq!(k.status().state, KernelState::Terminated);
    assert!(matches!(k.activate().await, Err(Error::InvalidTransition { .. })));
    assert!(matches!(k.send(Num { seq: 9, value: 9 }).await, Err(Error::NotAccepting { .. })));
    k.terminate().await.unwrap(); // idempotent
    rt.shutdown().await.unwrap();
    assert!(matches!(rt.launch("life", LaunchOptions::default()).await, Err(Error::ShutDown)));
}

/// Where a kernel runs is in its status: a kernel with a program for the runtime's backend runs
/// on it, on the device `adapter()` names; a kernel with CPU handlers only runs on the CPU pool
/// (and answers the same way).
async fn placement(backend: Setup) {
    let cpu_only = KernelDef::new::<Seen>("cpu_only").on(|s: &mut Seen, n: Num, _ctx: &mut Context<'_>| {
        s.count += 1;
        Total { count: s.count, sum: n.value }
    });
    let Some(rt) = runtime_with(backend, vec![counter_def("placed"), cpu_only]).await else { return };
    let k = rt.launch("placed", LaunchOptions::default()).await.unwrap();
    let c = rt.launch("cpu_only", LaunchOptions::default()).await.unwrap();
    let (kp, cp) = (k.status().placement.expect("placed"), c.status().placement.expect("placed"));
    assert_eq!(kp.backend, rt.backend(), "a kernel with a program for the backend runs on it");
    assert_eq!(cp.backend, Backend::Cpu, "a kernel with CPU handlers only runs on the CPU pool");
    match rt.adapter() {
        Some(adapter) => assert_eq!(&*kp.device, adapter.as_str()),
        None => assert_eq!(rt.backend(), Backend::Cpu),
    }
    assert!(cp.device.contains("CPU worker threads"), "{}", cp.device);
    assert_eq!(k.call::<_, Total>(Num { seq: 0, value: 3 }).await.unwrap().sum, 3);
    assert_eq!(c.call::<_, Total>(Num { seq: 0, value: 4 }).await.unwrap(), Total { count: 1, sum: 4 });
    rt.shutdown().await.unwrap();
}

async fn ordering(backend: Setup) {
    let Some(rt) = runtime_with(backend, vec![counter_def("order")]).await else { return };
    let k = rt.launch("order", LaunchOptions::default().with_queue_capacity(64)).await.unwrap();
    let n = 20_000u64;
    let sender = {
        let k = k.clone();
        tokio::spawn(async move {
            for i in 0..n {
                k.send(Num { seq: i, value: i }).await.unwrap();
            }
        })
    };
    for i in 0..n {
        let t: Total = k.receive().await.unwrap();
        assert_eq!(t.count, i + 1, "outputs in input order");
        assert_eq!(t.sum, i * (i + 1) / 2);
    }
    sender.await.unwrap();
    rt.shutdown().await.unwrap();
}

async fn request_reply(backend: Setup) {
    let Some(rt) = runtime_with(backend, vec![counter_def("rr")]).await else { return };
    let k = rt.launch("rr", LaunchOptions::default().with_max_message_bytes(1024)).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..8u8 {
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..200u8 {
                let data = vec![u32::from(t), u32::from(i), 1, 2, 3];
                let r: Words = k.call(Words { data: data.clone() }).await.unwrap();
                assert_eq!(r.data, data.iter().rev().copied().collect::<Vec<_>>(), "reply matches request");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(k.status().messages_processed, 1600);
    // Timeout: the late reply goes to the output queue instead of being lost.
    k.deactivate().await.unwrap();
    let r: Result<Total> = k.call_timeout(Num { seq: 0, value: 100 }, Duration::from_millis(10)).await;
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    k.activate().await.unwrap();
    let late: Total = k.receive().await.unwrap();
    assert_eq!(late.sum, 100);
    // An empty variable-length payload is fine too.
    let r: Words = k.call(Words { data: vec![] }).await.unwrap();
    assert!(r.data.is_empty());
    rt.shutdown().await.unwrap();
}

async fn k2k_chain(backend: Setup, messages: u64) {
    let names: Vec<String> = (0..4).map(|i| format!("stage{i}")).collect();
    let defs = (0..4).map(|i| stage_def(&names[i], names.get(i + 1).cloned())).collect();
    let Some(rt) = runtime_with(backend, defs).await else { return };
    let opts = LaunchOptions::default().with_queue_capacity(256);
    let mut handles = Vec::new();
    for n in &names {
        handles.push(rt.launch(n, opts.clone()).await.unwrap());
    }
    let first = handles[0].clone();
    let producer = tokio::spawn(async move {
        for i in 0..messages {
            first.send(Num { seq: i, value: i * 3 }).await.unwrap();
        }
    });
    let last = handles.last().unwrap();
    for i in 0..messages {
        let n: Num = last.receive().await.unwrap();
        assert_eq!(n, Num { seq: i, value: i * 3 }, "message {i} lost, duplicated or reordered");
    }
    producer.await.unwrap();
    for h in &handles {
        let report = h.terminate().await.unwrap();
        assert_eq!(report.messages_processed, messages);
        assert!(report.returned.is_empty());
    }
    assert!(last.try_receive::<Num>().unwrap().is_none(), "no duplicates after the last one");
    rt.shutdown().await.unwrap();
}

async fn backpressure(backend: Setup) {
    let Some(rt) = runtime_with(backend, vec![counter_def("bp")]).await else { return };
    let k = rt.launch("bp", LaunchOptions::default().with_queue_capacity(4).inactive()).await.unwrap();
    for i in 0..4 {
        k.try_send(Num { seq: i, value: 1 }).unwrap();
    }
    match k.try_send(Num { seq: 99, value: 42 }) {
        Err(e @ TrySendError::Full { .. }) => {
            assert!(e.to_string().contains("\"bp\""), "the error names the kernel: {e}");
            assert_eq!(e.into_message(), Num { seq: 99, value: 42 }, "full queue hands the message back")
        }
        other => panic!("expected Full, got {other:?}"),
    }
    let e: Error = k.try_send(Num { seq: 99, value: 42 }).unwrap_err().into();
    assert!(matches!(&e, Error::QueueFull(name) if name == "bp"), "{e}");
    // A blocking send waits until there is room.
    let k2 = k.clone();
    let waiter = tokio::spawn(async move { k2.send(Num { seq: 4, value: 1 }).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiter.is_finished(), "send waits while the queue is full");
    k.activate().await.unwrap();
    waiter.await.unwrap().unwrap();
    for i in 0..5 {
        let t: Total = k.receive().await.unwrap();
        assert_eq!(t.count, i + 1);
    }
    rt.shutdown().await.unwrap();
}

async fn bad_input(backend: Setup) {
    let Some(rt) = runtime_with(backend, vec![counter_def("bad"), counter_def("bystander")]).await else {
        return;
    };
    let k = rt.launch("bad", LaunchOptions::default()).await.unwrap();
    let other = rt.launch("bystander", LaunchOptions::default()).await.unwrap();
    // Unknown message type: refused at send, with the accepted types named.
    match k.send(Unhandled { x: 1 }).await {
        Err(Error::UnknownMessageType { accepted, .. }) => {
            assert!(accepted.iter().any(|a| a.ends_with("Num")))
        }
        other => panic!("{other:?}"),
    }
    // Oversized payload: typed error, nothing enqueued.
    let big = Words { data: vec![7; 10_000] };
    match k.call::<_, Words>(big).await {
        Err(Error::Encode(ringkernel::message::EncodeError::PayloadTooLarge {
            needed, capacity, ..
        })) => {
            assert!(needed > capacity)
        }
        other => panic!("{other:?}"),
    }
    // Malformed bytes in the input queue: recorded, skipped, the kernel keeps serving.
    assert_eq!(k.cell().push_input_bytes(b"not an envelope!"), InputPush::Pushed);
    let t: Total = k.call(Num { seq: 0, value: 1 }).await.unwrap();
    assert_eq!(t.count, 1);
    assert!(k.status().last_error.unwrap().contains("malformed"));
    // Launching a name without handlers gives a kernel, but sending to it is a clear error.
    let ghost = rt.launch("ghost", LaunchOptions::default()).await.unwrap();
    match ghost.send(Num { seq: 0, value: 0 }).await {
        Err(Error::NoHandler { kernel, registered }) => {
            assert_eq!(kernel, "ghost");
            assert!(registered.contains(&"bad".to_string()));
        }
        other => panic!("{other:?}"),
    }
    // A panicking handler fails its own kernel only.
    let pending = {
        let k = k.clone();
        k.deactivate().await.unwrap();
        k.send(Boom { code: 7 }).await.unwrap();
        let k2 = k.clone();
        let queued_call = tokio::spawn(async move { k2.call::<_, Total>(Num { seq: 1, value: 1 }).await });
        // Queue order must be Boom, the call, then the one-way message.
        while k.status().input_queue_depth < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        k.send(Num { seq: 2, value: 2 }).await.unwrap();
        k.activate().await.unwrap();
        queued_call
    };
    let err = pending.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::KernelFailed { .. }), "{err:?}");
    let st = k.status();
    assert_eq!(st.state, KernelState::Failed);
    assert!(st.last_error.as_deref().unwrap_or("").contains("boom 7"), "{st:?}");
    assert!(matches!(k.send(Num { seq: 3, value: 3 }).await, Err(Error::NotAccepting { .. })));
    let t: Total = other.call(Num { seq: 0, value: 5 }).await.unwrap();
    assert_eq!(t.sum, 5, "the rest of the runtime keeps serving");
    let report = k.terminate().await.unwrap();
    assert_eq!(report.returned.len(), 1, "the queued one-way message is handed back, not dropped");
    assert_eq!(report.returned[0].decode::<Num>().unwrap(), Num { seq: 2, value: 2 });
    rt.shutdown().await.unwrap();
}

async fn restart_policy(backend: Setup) {
    let Some(rt) = runtime_with(backend, vec![counter_def("phoenix")]).await else { return };
    let opts = LaunchOptions::default().with_restart(RestartPolicy::Restart { max_restarts: 1 });
    let k = rt.launch("phoenix", opts).await.unwrap();
    let _: Total = k.call(Num { seq: 0, value: 10 }).await.unwrap();
    let e = k.call::<_, Total>(Boom { code: 1 }).await.unwrap_err();
    assert!(matches!(e, Error::Handler { .. }), "{e:?}");
    let t: Total = k.call(Num { seq: 1, value: 1 }).await.unwrap();
    assert_eq!(t, Total { count: 1, sum: 1 }, "restarted with fresh state");
    assert_eq!(k.status().restarts, 1);
    let _ = k.call::<_, Total>(Boom { code: 2 }).await.unwrap_err();
    assert_eq!(k.status().state, KernelState::Failed, "restart budget exhausted");
    rt.shutdown().await.unwrap();
}

async fn receive_type_mismatch(backend: Setup) {
    let Some(rt) = runtime_with(backend, vec![counter_def("mix")]).await else { return };
    let k = rt.launch("mix", LaunchOptions::default()).await.unwrap();
    k.send(Num { seq: 0, value: 3 }).await.unwrap();
    match k.receive::<Words>().await {
        Err(Error::UnexpectedMessage { message, .. }) => {
            assert_eq!(message.decode::<Total>().unwrap(), Total { count: 1, sum: 3 }, "handed back intact")
        }
        other => panic!("{other:?}"),
    }
    rt.shutdown().await.unwrap();
}

async fn many_kernels(backend: Setup, count: usize) {
    // Worker threads get a name of their own so that their CPU time can be told apart from the
    // other tests running in this process.
    let Some(rt) = runtime_named(backend, vec![counter_def("many")], "rk-idle-test").await else { return };
    // Each launch needs its own name; register one definition per kernel.
    for i in 0..count {
        rt.register(counter_def(&format!("many{i}"))).unwrap();
    }
    let opts = LaunchOptions::default().with_queue_capacity(4).with_max_message_bytes(128);
    let mut ks = Vec::with_capacity(count);
    for i in 0..count {
        ks.push(rt.launch(&format!("many{i}"), opts.clone()).await.unwrap());
    }
    for (i, k) in ks.iter().enumerate() {
        k.send(Num { seq: i as u64, value: i as u64 }).await.unwrap();
    }
    for (i, k) in ks.iter().enumerate() {
        let t: Total = k.receive().await.unwrap();
        assert_eq!(t, Total { count: 1, sum: i as u64 });
    }
    // Idle kernels cost no CPU: measure the runtime's worker threads over an idle window.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = worker_cpu_time("rk-idle-test");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = worker_cpu_time("rk-idle-test");
    if let (Some(before), Some(after)) = (before, after) {
        let used = after.saturating_sub(before);
        assert!(
            used < Duration::from_millis(50),
            "workers of {count} idle kernels used {used:?} of CPU in 500 ms"
        );
    } else {
        eprintln!("SKIP idle-CPU check: /proc/self/task not readable on this platform");
    }
    rt.shutdown().await.unwrap();
}

/// User + system CPU time of this process's threads whose name starts with `prefix` (Linux).
fn worker_cpu_time(prefix: &str) -> Option<Duration> {
    let mut ticks = 0u64;
    let mut found = false;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let path = entry.ok()?.path();
        let stat = std::fs::read_to_string(path.join("stat")).ok()?;
        let name = &stat[stat.find('(')? + 1..stat.rfind(')')?];
        if !name.starts_with(prefix) {
            continue;
        }
        found = true;
        let f: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
        ticks += f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    }
    found.then(|| Duration::from_millis(ticks * 10)) // USER_HZ = 100 on Linux
}

async fn fan_in(backend: Setup) {
    // Several kernels send K2K into one inbox; every message arrives exactly once.
    let producers = 4usize;
    let per = 5_000u64;
    let mut defs: Vec<KernelDef> =
        (0..producers).map(|i| stage_def(&format!("src{i}"), Some("sink".into()))).collect();
    defs.push(stage_def("sink", None));
    let Some(rt) = runtime_with(backend, defs).await else { return };
    let opts = LaunchOptions::default().with_queue_capacity(128);
    let sink = rt.launch("sink", opts.clone()).await.unwrap();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let h = rt.launch(&format!("src{p}"), opts.clone()).await.unwrap();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                h.send(Num { seq: i, value: p as u64 }).await.unwrap();
            }
        }));
    }
    let mut next = vec![0u64; producers];
    let mut seen = HashSet::new();
    for _ in 0..producers as u64 * per {
        let n: Num = sink.receive().await.unwrap();
        assert!(seen.insert((n.value, n.seq)), "duplicate {n:?}");
        assert_eq!(n.seq, next[n.value as usize], "per-producer order");
        next[n.value as usize] += 1;
    }
    for t in tasks {
        t.await.unwrap();
    }
    // The sink was launched before the sources: every hop on the CUDA backend goes straight into
    // its device inbox. (A source that started sending through the host and switched to the
    // inbox once its route was linked could overtake its own earlier messages.)
    #[cfg(feature = "cuda")]
    if let Some(c) = rt.backend_impl::<ringkernel::cuda::CudaBackend>() {
        assert_eq!(c.k2k_via_host(), 0, "K2K to a kernel launched earlier never goes through the host");
    }
    rt.shutdown().await.unwrap();
}

async fn drop_without_shutdown(backend: Setup) {
    let Some(rt) = runtime_with(backend, vec![counter_def("dropme")]).await else { return };
    let k = rt.launch("dropme", LaunchOptions::default()).await.unwrap();
    let k2 = k.clone();
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    k.deactivate().await.unwrap();
    let pending = tokio::spawn(async move {
        let r = k2.call::<_, Total>(Num { seq: 0, value: 1 }).await;
        c2.fetch_add(1, Ordering::SeqCst);
        r
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = std::time::Instant::now();
    drop(rt);
    assert!(started.elapsed() < Duration::from_secs(2), "drop does not hang");
    let r = tokio::time::timeout(Duration::from_secs(5), pending).await.expect("caller not left hanging");
    assert!(r.unwrap().is_err(), "the pending call gets an error, not silence");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

async fn relaunch_under_same_name(backend: Setup) {
    let defs = vec![stage_def("fwd", Some("dst".into())), stage_def("dst", None)];
    let Some(rt) = runtime_with(backend, defs).await else { return };
    let fwd = rt.launch("fwd", LaunchOptions::default()).await.unwrap();
    let dst = rt.launch("dst", LaunchOptions::default()).await.unwrap();
    fwd.send(Num { seq: 1, value: 1 }).await.unwrap();
    assert_eq!(dst.receive::<Num>().await.unwrap().seq, 1);
    dst.terminate().await.unwrap();
    let dst2 = rt.launch("dst", LaunchOptions::default()).await.unwrap();
    assert_ne!(dst2.id(), dst.id());
    fwd.send(Num { seq: 2, value: 2 }).await.unwrap();
    assert_eq!(dst2.receive::<Num>().await.unwrap().seq, 2, "K2K reaches the relaunched kernel");
    assert_eq!(fwd.status().error_count, 0);
    rt.shutdown().await.unwrap();
}

/// Launching and terminating kernels keeps memory flat: the runtime forgets a terminated kernel
/// (only the user's handles keep it), a K2K cache does not pin it, and the backend releases or
/// reuses its memory (wgpu arena, CUDA blocks).
async fn terminated_kernels_are_released(backend: Setup, cycles: usize) {
    let defs = vec![stage_def("src", Some("cyc".into())), stage_def("cyc", None)];
    let Some(rt) = runtime_with(backend, defs).await else { return };
    let src = rt.launch("src", LaunchOptions::default()).await.unwrap();
    assert_eq!(rt.kernels().len(), 1);
    let memory = BackendMemory::of(&rt);
    let mut cells = Vec::with_capacity(cycles);
    let mut cuda_allocated = None;
    for i in 0..cycles {
        let k = rt.launch("cyc", LaunchOptions::default()).await.unwrap();
        // Traffic through `src`'s K2K route to the new kernel now and then, and on the last cycle
        // (so a cache entry for the last one exists when the test looks).
        if i % 16 == 0 || i == cycles - 1 {
            src.send(Num { seq: i as u64, value: 1 }).await.unwrap();
            assert_eq!(k.receive::<Num>().await.unwrap().seq, i as u64);
        }
        k.terminate().await.unwrap();
        cells.push(Arc::downgrade(k.cell()));
        drop(k);
        assert_eq!(rt.kernels().len(), 1, "cycle {i}: the runtime still lists a terminated kernel");
        memory.settle(&rt, i);
        if i == 0 {
            cuda_allocated = memory.cuda_allocated(&rt);
        }
    }
    assert_eq!(memory.cuda_allocated(&rt), cuda_allocated, "CUDA blocks were allocated instead of reused");
    // The executor that finished a kernel may still hold it for a moment after `terminate`
    // returned (it notifies before its run returns).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while cells.iter().any(|c| c.strong_count() > 0) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let alive = cells.iter().filter(|c| c.strong_count() > 0).count();
    assert_eq!(
        alive, 0,
        "{alive} of {cycles} terminated kernels are still held after their handles were dropped"
    );
    assert_eq!(src.status().error_count, 0, "{:?}", src.status().last_error);
    rt.shutdown().await.unwrap();
}

/// What a GPU backend holds for kernels, taken after the long-lived kernels launched.
struct BackendMemory {
    #[cfg(feature = "wgpu")]
    wgpu: Option<(u64, usize)>,
    #[cfg(feature = "cuda")]
    cuda_in_use: Option<usize>,
}

impl BackendMemory {
    fn of(_rt: &RingKernel) -> Self {
        Self {
            #[cfg(feature = "wgpu")]
            wgpu: _rt.backend_impl::<ringkernel::wgpu::WgpuBackend>().map(|w| w.arena_in_use()),
            #[cfg(feature = "cuda")]
            cuda_in_use: _rt.backend_impl::<ringkernel::cuda::CudaBackend>().map(|c| {
                let m = c.memory_blocks();
                m.allocated - m.free
            }),
        }
    }

    /// After a kernel terminated: its device memory is back (wgpu: before `terminate` returned;
    /// CUDA: once its launch returned, which the agent notices on its own).
    fn settle(&self, _rt: &RingKernel, _cycle: usize) {
        #[cfg(feature = "wgpu")]
        if let (Some(base), Some(w)) = (self.wgpu, _rt.backend_impl::<ringkernel::wgpu::WgpuBackend>()) {
            assert_eq!(w.arena_in_use(), base, "cycle {_cycle}: the wgpu arena was not given back");
        }
        #[cfg(feature = "cuda")]
        if let (Some(base), Some(c)) = (self.cuda_in_use, _rt.backend_impl::<ringkernel::cuda::CudaBackend>())
        {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let m = c.memory_blocks();
                if m.awaiting_exit == 0 && m.allocated - m.free == base {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "cycle {_cycle}: CUDA blocks never came back: {m:?}"
                );
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    fn cuda_allocated(&self, _rt: &RingKernel) -> Option<usize> {
        #[cfg(feature = "cuda")]
        if let Some(c) = _rt.backend_impl::<ringkernel::cuda::CudaBackend>() {
            return Some(c.memory_blocks().allocated);
        }
        None
    }
}

/// Runs a group test with a time limit: a lost wake-up in a device protocol shows up as a hang,
/// which must fail the test rather than stall the suite.
async fn within(test: impl core::future::Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(120), test).await.expect("the test hung for 120 s");
}

/// The kernel-group tests of the suite (`conformance/groups.rs`), also instantiated on their own
/// for the CUDA emulation's chaos mode.
macro_rules! group_conformance {
    (@tests $backend:expr, $races:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn group_request_reply() {
            within(super::groups::group_request_reply($backend.into())).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn group_addressing() {
            within(super::groups::group_addressing($backend.into())).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn group_ordering() {
            within(super::groups::group_ordering($backend.into())).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn group_backpressure() {
            within(super::groups::group_backpressure($backend.into())).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn group_panic_fails_one_instance() {
            within(super::groups::group_panic_fails_one_instance($backend.into())).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn group_terminate_conserves() {
            within(super::groups::group_terminate_conserves($backend.into(), $races / 3)).await
        }
    };
}

macro_rules! conformance {
    ($mod_name:ident, $backend:expr) => {
        conformance!($mod_name, $backend, 10_000, 1_000_000, 60, 10_000);
    };
    ($mod_name:ident, $backend:expr, $many:expr, $chain:expr, $races:expr, $cycles:expr) => {
        mod $mod_name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn lifecycle() {
                super::lifecycle($backend.into()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn placement() {
                super::placement($backend.into()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ordering() {
                super::ordering($backend.into()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn request_reply() {
                super::request_reply($backend.into()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn k2k_chain_one_million() {
                super::k2k_chain($backend.into(), $chain).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn backpressure() {
                super::backpressure($backend.into()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn bad_input() {
                super::bad_input($backend.into()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn restart_policy() {
                super::restart_policy($backend.into()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn receive_type_mismatch() {
                super::receive_type_mismatch($backend.into()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn many_kernels() {
                super::many_kernels($backend.into(), $many).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn k2k_fan_in() {
                super::fan_in($backend.into()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn relaunch_under_same_name() {
                super::relaunch_under_same_name($backend.into()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn drop_without_shutdown() {
                super::drop_without_shutdown($backend.into()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn causal_through_host() {
                super::clock::causal_through_host($backend.into()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn hostile_bytes() {
                super::hostile::hostile_bytes($backend.into()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn hostile_bytes_random() {
                super::hostile::hostile_bytes_random($backend.into()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn launch_options_out_of_range() {
                super::hostile::launch_options_out_of_range($backend.into()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn multibyte_error_text() {
                super::panics::multibyte_error_text($backend.into()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn runtime_panic_fails_one_kernel() {
                super::panics::runtime_panic_fails_one_kernel($backend.into()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn lifecycle_races() {
                super::races::lifecycle_races($backend.into(), $races).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn terminated_kernels_are_released() {
                super::terminated_kernels_are_released($backend.into(), $cycles).await
            }
            group_conformance!(@tests $backend, $races);
        }
    };
}

conformance!(cpu, Backend::Cpu);
#[cfg(feature = "wgpu")]
conformance!(wgpu, Backend::Wgpu, 10_000, 1_000_000, 20, 500);
// Metal: the wgpu backend's kernels on wgpu's Metal API (skips off Apple systems, fails under
// RINGKERNEL_REQUIRE_METAL=1).
#[cfg(feature = "metal")]
conformance!(metal, Backend::Metal, 10_000, 1_000_000, 20, 500);
// The CUDA backend on a GPU (skips without one, fails under RINGKERNEL_REQUIRE_CUDA=1), and its
// host emulation: the same generated kernels as C on host threads, which CI always runs. A
// persistent kernel holds a block and a stream for its life: 100 kernels, not 10,000.
#[cfg(feature = "cuda")]
conformance!(cuda, Backend::Cuda, 100, 1_000_000, 20, 200);
#[cfg(feature = "cuda")]
conformance!(
    cuda_emulated,
    Setup { backend: Backend::Cuda, emulate: true, chaos: false },
    100,
    1_000_000,
    20,
    200
);
// The kernel-group tests once more on the emulation in chaos mode: every atomic access of the
// device protocol may yield the worker thread first, so the workers, the runner and the host
// interleave in many more ways than the scheduler alone gives.
#[cfg(feature = "cuda")]
mod cuda_emulated_chaos {
    use super::*;
    group_conformance!(@tests Setup { backend: Backend::Cuda, emulate: true, chaos: true }, 20);
}

/// An idle kernel with the default options is small on the CPU backend (issue 11: at most
/// 16 KiB), computed from its layout: both ring regions plus the kernel cell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_kernel_footprint_is_small() {
    use ringkernel::queue::slot_ring::ring_region_size;
    let opts = LaunchOptions::default();
    let slot = opts.slot_size() as u32;
    let cell = core::mem::size_of::<ringkernel::backend::KernelCell>();
    let layout = ring_region_size((opts.input_capacity as u32).next_power_of_two(), slot)
        + ring_region_size((opts.output_capacity as u32).next_power_of_two(), slot)
        + cell;
    assert!(layout <= 16 * 1024, "a default kernel's layout is {layout} bytes");
    // The rings a launch actually allocates have that size.
    let Some(rt) = runtime_with(Backend::Cpu.into(), vec![counter_def("small")]).await else { return };
    let k = rt.launch("small", LaunchOptions::default()).await.unwrap();
    let rings = k.cell().input().region().1 + k.cell().output().region().1;
    assert_eq!(rings + cell, layout);
    rt.shutdown().await.unwrap();
}

/// 10,000 kernels with the default options fit the default wgpu arena (measured with the
/// backend's own allocator: the bytes one default kernel takes).
#[cfg(feature = "wgpu")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wgpu_default_arena_holds_ten_thousand_default_kernels() {
    let Some(rt) = runtime_with(Backend::Wgpu.into(), vec![counter_def("fit")]).await else { return };
    let w = rt.backend_impl::<ringkernel::wgpu::WgpuBackend>().expect("wgpu backend");
    let (before, _) = w.arena_in_use();
    let k = rt.launch("fit", LaunchOptions::default()).await.unwrap();
    let (after, _) = w.arena_in_use();
    let per_kernel = after - before;
    let config = ringkernel::wgpu::WgpuConfig::default();
    let ctrl = u64::from(config.max_kernels) * 128;
    assert!(
        ctrl + 10_000 * per_kernel <= config.arena_bytes,
        "{per_kernel} bytes per default kernel: 10,000 need {} of {} bytes",
        ctrl + 10_000 * per_kernel,
        config.arena_bytes
    );
    k.terminate().await.unwrap();
    rt.shutdown().await.unwrap();
}

/// rkyv payloads through request/reply (CPU handlers only: WGSL reads the GPU word layout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_rkyv_request_reply() {
    let Some(rt) = runtime_with(Backend::Cpu.into(), vec![counter_def("rkyv")]).await else { return };
    let k = rt.launch("rkyv", LaunchOptions::default().with_max_message_bytes(1024)).await.unwrap();
    for i in 0..100u8 {
        let data = vec![i, 1, 2, 3];
        let r: Blob = k.call(Blob { data: data.clone() }).await.unwrap();
        assert_eq!(r.data, data.iter().rev().copied().collect::<Vec<_>>());
    }
    rt.shutdown().await.unwrap();
}

/// Every CUDA program of this suite compiles with NVRTC for sm_80 and sm_90, without a GPU (CI
/// points `LD_LIBRARY_PATH` at the `nvidia-cuda-nvrtc` wheel and sets
/// `RINGKERNEL_REQUIRE_NVRTC=1`; elsewhere a missing NVRTC skips with a message).
#[cfg(feature = "cuda")]
#[test]
fn cuda_programs_compile_with_nvrtc() {
    use ringkernel::cuda::CudaProgram;
    if !ringkernel::cuda::nvrtc_present() {
        if std::env::var("RINGKERNEL_REQUIRE_NVRTC").as_deref() == Ok("1") {
            panic!("RINGKERNEL_REQUIRE_NVRTC=1 but libnvrtc cannot be loaded (LD_LIBRARY_PATH?)");
        }
        eprintln!("SKIP: NVRTC (libnvrtc) not found; the generated CUDA C is not compiled here");
        return;
    }
    let defs = [counter_def("c"), stage_def("s0", Some("s1".into())), stage_def("s1", None)];
    for def in &defs {
        let program = def.gpu_program::<CudaProgram>().expect("CUDA program");
        let source = program.cuda_source().unwrap();
        for arch in [(8, 0), (9, 0)] {
            let ptx = ringkernel::cuda::compile_ptx(def.name(), source, arch)
                .unwrap_or_else(|e| panic!("{} for compute_{}{}: {e}", def.name(), arch.0, arch.1));
            let ptx = String::from_utf8(ptx).unwrap();
            assert!(ptx.contains(".entry rk_kernel_main("), "{}: no entry point", def.name());
        }
    }
    // A handler that does not compile is a clear error naming the problem.
    let bad = CudaProgram::new::<Seen>(
        "RK_DEVICE uint32_t on_Num(rk_ctx* ctx, Seen* s, const Num* m) { return nope; }",
    )
    .handles::<Num>();
    let e = ringkernel::cuda::compile_ptx("bad", bad.cuda_source().unwrap(), (9, 0)).unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    // The failed call and NVRTC's code are kept, typed.
    assert_eq!(e.call(), "nvrtcCompileProgram");
    assert_eq!(e.kind(), ringkernel::DeviceErrorKind::Compile);
    assert_eq!(e.code().map(|c| c.1), Some("NVRTC_ERROR_COMPILATION"), "{e:?}");
}
