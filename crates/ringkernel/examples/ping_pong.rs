//! Two kernels bounce a ball kernel-to-kernel (K2K) N times; the host only starts the rally and
//! reads the summary. Prints round-trip latency (median, p99) and checks that HLC timestamps
//! strictly increase along the whole chain.
//!
//! `cargo run --release --example ping_pong [ROUNDS]` (backend from `RINGKERNEL_BACKEND`).

use ringkernel::prelude::*;
use std::sync::OnceLock;
use std::time::Instant;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

static EPOCH: OnceLock<Instant> = OnceLock::new();

fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The ball: plain data, read in place.
#[derive(RingMessage, IntoBytes, FromBytes, Immutable, KnownLayout, Clone, Copy, Debug)]
#[message(pod, type_id = 0x2001)]
#[repr(C)]
struct Ball {
    remaining: u64,
    ping_sent_ns: u64,
    last_hlc: u64,
    last_node: u32,
    hlc_violations: u32,
}

/// Sent by `ping` to the host when the rally ends.
#[derive(RingMessage, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
#[message(type_id = 0x2002)]
struct Summary {
    round_trips: u64,
    median_ns: u64,
    p99_ns: u64,
    min_ns: u64,
    hlc_violations: u32,
    final_hlc_physical_us: u64,
    final_hlc_logical: u32,
}

#[derive(Default)]
struct PingState {
    rtts: Vec<u64>,
}

/// Checks the causal order of this hop and records it in the ball.
fn stamp(ball: &mut Ball, ctx: &Context<'_>) {
    let ts = ctx.message_timestamp();
    let prev = HlcTimestamp::from_packed(ball.last_hlc, ball.last_node);
    if ts <= prev {
        ball.hlc_violations += 1;
    }
    ball.last_hlc = ts.packed();
    ball.last_node = ts.node_id();
}

#[ring_kernel(name = "ping")]
fn ping(state: &mut PingState, mut ball: Ball, ctx: &mut Context<'_>) -> Result<()> {
    let now = now_ns();
    stamp(&mut ball, ctx);
    if ball.ping_sent_ns != 0 {
        state.rtts.push(now - ball.ping_sent_ns);
    }
    if ball.remaining == 0 {
        let ts = ctx.now();
        let mut rtts = std::mem::take(&mut state.rtts);
        rtts.sort_unstable();
        return ctx.emit(Summary {
            round_trips: rtts.len() as u64,
            median_ns: percentile(&rtts, 0.5),
            p99_ns: percentile(&rtts, 0.99),
            min_ns: rtts.first().copied().unwrap_or(0),
            hlc_violations: ball.hlc_violations,
            final_hlc_physical_us: ts.physical(),
            final_hlc_logical: ts.logical(),
        });
    }
    ball.remaining -= 1;
    ball.ping_sent_ns = now_ns();
    ctx.send_to("pong", ball)
}

#[ring_kernel(name = "pong")]
fn pong(_state: &mut (), mut ball: Ball, ctx: &mut Context<'_>) -> Result<()> {
    stamp(&mut ball, ctx);
    ctx.send_to("ping", ball)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> Result<()> {
    let rounds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let runtime = RingKernel::builder().backend(Backend::from_env()?).build().await?;
    println!("Backend: {:?}, {rounds} round trips", runtime.backend());
    let ping = runtime.launch("ping", LaunchOptions::default()).await?;
    let _pong = runtime.launch("pong", LaunchOptions::default()).await?;

    now_ns();
    ping.send(Ball { remaining: rounds, ping_sent_ns: 0, last_hlc: 0, last_node: 0, hlc_violations: 0 })
        .await?;
    let summary: Summary = ping.receive().await?;

    println!(
        "K2K round trip (ping -> pong -> ping): median {:.2} us, p99 {:.2} us, min {:.2} us over {} round trips",
        summary.median_ns as f64 / 1e3,
        summary.p99_ns as f64 / 1e3,
        summary.min_ns as f64 / 1e3,
        summary.round_trips
    );
    println!(
        "HLC along the chain: {} hops, {} ordering violations, final timestamp {}.{}",
        2 * rounds,
        summary.hlc_violations,
        summary.final_hlc_physical_us,
        summary.final_hlc_logical
    );
    assert_eq!(summary.hlc_violations, 0, "HLC timestamps must strictly increase along the chain");
    println!("HLC timestamps strictly increased along the chain.");
    runtime.shutdown().await?;
    Ok(())
}
