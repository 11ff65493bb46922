//! Two kernels bounce a ball kernel-to-kernel (K2K) N times; the host only starts the rally and
//! reads the final ball. Prints the mean round-trip time and checks that HLC timestamps strictly
//! increase along the whole chain.
//!
//! `cargo run --release --example ping_pong [ROUNDS]` (backend from `RINGKERNEL_BACKEND`).
//! On the GPU: `RINGKERNEL_BACKEND=wgpu cargo run --release --features wgpu --example ping_pong`;
//! the ball then never leaves the device between the first send and the final emit. With CUDA:
//! `RINGKERNEL_BACKEND=cuda cargo run --release --features cuda --example ping_pong` (two
//! persistent kernels writing into each other's inbox in device memory).

use ringkernel::prelude::*;
use ringkernel::runtime::KernelDef;
use std::time::Instant;

/// The ball (GPU word layout, so the WGSL kernels read and write it too).
#[derive(RingMessage, GpuType, Clone, Copy, Debug)]
#[message(gpu, type_id = 0x2001)]
struct Ball {
    remaining: u64,
    round_trips: u64,
    last_hlc: u64,
    last_node: u32,
    hlc_violations: u32,
}

/// Checks the causal order of this hop, (timestamp, node) strictly increasing, and records it.
fn stamp(ball: &mut Ball, ctx: &Context<'_>) {
    let ts = ctx.message_timestamp();
    let prev = HlcTimestamp::from_packed(ball.last_hlc, ball.last_node);
    if ts <= prev {
        ball.hlc_violations += 1;
    }
    ball.last_hlc = ts.packed();
    ball.last_node = ts.node_id();
}

fn ping(_: &mut (), mut ball: Ball, ctx: &mut Context<'_>) -> Result<()> {
    stamp(&mut ball, ctx);
    if ball.remaining == 0 {
        return ctx.emit(ball);
    }
    ball.remaining -= 1;
    ball.round_trips += 1;
    ctx.send_to("pong", ball)
}

fn pong(_: &mut (), mut ball: Ball, ctx: &mut Context<'_>) -> Result<()> {
    stamp(&mut ball, ctx);
    ctx.send_to("ping", ball)
}

/// The same two kernels in WGSL (`rk_msg_hlc` is the sender's timestamp, `rk_msg_source` its id).
#[cfg(feature = "wgpu")]
const STAMP_WGSL: &str = r#"
fn stamp(b: ptr<function, Ball>) {
    let ts = rk_msg_hlc();
    let node = rk_msg_source();
    let later = rk_lt64((*b).last_hlc, ts) || (all(ts == (*b).last_hlc) && node > (*b).last_node);
    if (!later) { (*b).hlc_violations += 1u; }
    (*b).last_hlc = ts;
    (*b).last_node = node;
}
"#;

/// The same two kernels in CUDA C (`ctx->msg` is the envelope being handled).
#[cfg(feature = "cuda")]
const STAMP_CUDA: &str = r#"
RK_DEVICE void stamp(rk_ctx* ctx, Ball* b) {
    uint64_t ts = ctx->msg->hlc;
    uint32_t node = ctx->msg->source;
    if (!(b->last_hlc < ts || (b->last_hlc == ts && node > b->last_node))) b->hlc_violations += 1u;
    b->last_hlc = ts;
    b->last_node = node;
}
"#;

#[derive(Default, GpuType)]
struct Nothing {}

fn kernels() -> Vec<KernelDef> {
    let ping_def = KernelDef::new::<()>("ping").on(ping);
    let pong_def = KernelDef::new::<()>("pong").on(pong);
    #[cfg(feature = "wgpu")]
    let (ping_def, pong_def) = {
        use ringkernel::wgpu::WgslProgram;
        let ping_src = format!(
            "{STAMP_WGSL}
fn on_Ball(m: Ball) {{
    var b = m;
    stamp(&b);
    if (all(b.remaining == vec2<u32>(0u, 0u))) {{ rk_emit_Ball(b); return; }}
    b.remaining = rk_sub64(b.remaining, rk_u64(1u));
    b.round_trips = rk_add64(b.round_trips, rk_u64(1u));
    rk_send_Ball(0u, b);
}}"
        );
        let pong_src =
            format!("{STAMP_WGSL}\nfn on_Ball(m: Ball) {{ var b = m; stamp(&b); rk_send_Ball(0u, b); }}");
        (
            ping_def.gpu(WgslProgram::new::<Nothing>(ping_src).handles::<Ball>().route("pong")),
            pong_def.gpu(WgslProgram::new::<Nothing>(pong_src).handles::<Ball>().route("ping")),
        )
    };
    #[cfg(feature = "cuda")]
    let (ping_def, pong_def) = {
        use ringkernel::cuda::CudaProgram;
        let ping_src = format!(
            "{STAMP_CUDA}
RK_DEVICE uint32_t on_Ball(rk_ctx* ctx, Nothing* s, const Ball* m) {{
    (void)s;
    Ball b = *m;
    stamp(ctx, &b);
    if (b.remaining == 0u) return rk_emit_Ball(ctx, &b);
    b.remaining -= 1u;
    b.round_trips += 1u;
    return rk_send_Ball(ctx, 0u, &b);
}}"
        );
        let pong_src = format!(
            "{STAMP_CUDA}
RK_DEVICE uint32_t on_Ball(rk_ctx* ctx, Nothing* s, const Ball* m) {{
    (void)s;
    Ball b = *m;
    stamp(ctx, &b);
    return rk_send_Ball(ctx, 0u, &b);
}}"
        );
        (
            ping_def.gpu(CudaProgram::new::<Nothing>(ping_src).handles::<Ball>().route("pong")),
            pong_def.gpu(CudaProgram::new::<Nothing>(pong_src).handles::<Ball>().route("ping")),
        )
    };
    vec![ping_def, pong_def]
}

#[tokio::main]
async fn main() -> Result<()> {
    let rounds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let mut builder = RingKernel::builder().backend(Backend::from_env()?);
    for k in kernels() {
        builder = builder.kernel(k);
    }
    let runtime = builder.build().await?;
    println!("Backend: {:?}, {rounds} round trips", runtime.backend());
    if let Some(adapter) = runtime.adapter() {
        println!("Adapter: {adapter}");
    }
    let ping = runtime.launch("ping", LaunchOptions::default()).await?;
    let _pong = runtime.launch("pong", LaunchOptions::default()).await?;

    let started = Instant::now();
    ping.send(Ball { remaining: rounds, round_trips: 0, last_hlc: 0, last_node: 0, hlc_violations: 0 })
        .await?;
    let ball: Ball = ping.receive().await?;
    let elapsed = started.elapsed();

    println!("round trips completed: {}", ball.round_trips);
    println!(
        "K2K round trip (ping -> pong -> ping): mean {:.2} us ({:.3} s in all)",
        elapsed.as_secs_f64() * 1e6 / rounds.max(1) as f64,
        elapsed.as_secs_f64()
    );
    let last = HlcTimestamp::from_packed(ball.last_hlc, ball.last_node);
    println!(
        "HLC along the chain: {} hops, {} ordering violations, final timestamp {}.{} from node {}",
        2 * rounds + 1,
        ball.hlc_violations,
        last.physical(),
        last.logical(),
        last.node_id()
    );
    assert_eq!(ball.round_trips, rounds);
    assert_eq!(ball.hlc_violations, 0, "HLC timestamps must strictly increase along the chain");
    println!("HLC timestamps strictly increased along the chain.");
    runtime.shutdown().await?;
    Ok(())
}
