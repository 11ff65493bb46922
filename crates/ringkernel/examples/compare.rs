//! Side-by-side comparison of RingKernel with the peers a user would pick instead, measured in one
//! process, interleaved, after a warm-up, reported as medians.
//!
//! `cargo run --release -p ringkernel --example compare`
//!
//! Prints a table and writes `target/ringkernel-compare.json`:
//! `{"machine": "...", "results": [{"metric", "ours", "peer", "peer_value", "ratio", "better"}],
//! "skipped": [{"metric", "reason"}]}` with times in nanoseconds, throughputs in operations per
//! second and `ratio = ours / peer`. Each comparison alternates rounds of ours and the peer's and
//! takes the median per-operation figure over rounds, so slow drifts of the machine hit both.

use ringkernel::hlc::{HlcClock, HlcTimestamp};
use ringkernel::message::{decode, encode, EnvelopeMeta};
use ringkernel::prelude::*;
use ringkernel::queue::spsc;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

#[derive(RingMessage, IntoBytes, FromBytes, Immutable, KnownLayout, Clone, Copy, Debug)]
#[message(pod, type_id = 0xC001)]
#[repr(C)]
struct Pod64 {
    words: [u64; 8],
}

#[derive(RingMessage, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
#[message(type_id = 0xC002)]
struct AddRequest {
    a: Vec<f32>,
    b: Vec<f32>,
}

#[derive(RingMessage, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
#[message(type_id = 0xC003)]
struct Blob {
    data: Vec<u8>,
}

#[derive(RingMessage, IntoBytes, FromBytes, Immutable, KnownLayout, Clone, Copy, Debug)]
#[message(pod, type_id = 0xC004)]
#[repr(C)]
struct Ball {
    remaining: u64,
}

#[ring_kernel(name = "cmp_echo")]
fn cmp_echo(count: &mut u64, r: Pod64) -> Pod64 {
    *count += 1;
    r
}

#[ring_kernel(name = "cmp_blob")]
fn cmp_blob(_s: &mut (), b: Blob) -> Blob {
    b
}

#[ring_kernel(name = "cmp_ping")]
fn cmp_ping(_s: &mut (), mut b: Ball, ctx: &mut Context<'_>) -> Result<()> {
    if b.remaining == 0 {
        return ctx.emit(b);
    }
    b.remaining -= 1;
    ctx.send_to("cmp_pong", b)
}

#[ring_kernel(name = "cmp_pong")]
fn cmp_pong(_s: &mut (), b: Ball, ctx: &mut Context<'_>) -> Result<()> {
    ctx.send_to("cmp_ping", b)
}

/// One row of the report.
struct Row {
    metric: String,
    ours: f64,
    peer: Option<String>,
    peer_value: Option<f64>,
    better: &'static str,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    skipped: Vec<(String, String)>,
}

impl Report {
    fn add(&mut self, metric: &str, ours: f64, peer: Option<(&str, f64)>, better: &'static str) {
        let (p, v) = match peer {
            Some((n, v)) => (Some(n.to_string()), Some(v)),
            None => (None, None),
        };
        let row = Row { metric: metric.to_string(), ours, peer: p, peer_value: v, better };
        print_row(&row);
        self.rows.push(row);
    }

    fn skip(&mut self, metric: &str, reason: String) {
        println!("{metric:<34} skipped: {reason}");
        self.skipped.push((metric.to_string(), reason));
    }

    fn json(&self, machine: &str) -> String {
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let num = |v: f64| if v.is_finite() { format!("{v:.3}") } else { "null".into() };
        let rows: Vec<String> = self
            .rows
            .iter()
            .map(|r| {
                let ratio = r.peer_value.map(|p| num(r.ours / p)).unwrap_or_else(|| "null".into());
                format!(
                    "    {{\"metric\": \"{}\", \"ours\": {}, \"peer\": {}, \"peer_value\": {}, \"ratio\": {}, \"better\": \"{}\"}}",
                    esc(&r.metric),
                    num(r.ours),
                    r.peer.as_deref().map(|p| format!("\"{}\"", esc(p))).unwrap_or_else(|| "null".into()),
                    r.peer_value.map(num).unwrap_or_else(|| "null".into()),
                    ratio,
                    r.better
                )
            })
            .collect();
        let skipped: Vec<String> = self
            .skipped
            .iter()
            .map(|(m, r)| format!("    {{\"metric\": \"{}\", \"reason\": \"{}\"}}", esc(m), esc(r)))
            .collect();
        format!(
            "{{\n  \"machine\": \"{}\",\n  \"results\": [\n{}\n  ],\n  \"skipped\": [\n{}\n  ]\n}}\n",
            esc(machine),
            rows.join(",\n"),
            skipped.join(",\n")
        )
    }
}

fn print_row(r: &Row) {
    let fmt = |v: f64| {
        if v >= 1e6 {
            format!("{:.2e}", v)
        } else {
            format!("{v:.1}")
        }
    };
    match (&r.peer, r.peer_value) {
        (Some(p), Some(v)) => println!(
            "{:<34} ours {:>10}  {:<30} {:>10}  ratio {:>6.2} ({} is better)",
            r.metric,
            fmt(r.ours),
            p,
            fmt(v),
            r.ours / v,
            r.better
        ),
        _ => println!("{:<34} ours {:>10}", r.metric, fmt(r.ours)),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs `ours` and `peer` alternately for `rounds` rounds (after one warm-up round each); each
/// returns a per-operation figure. Returns the two medians.
fn interleave(rounds: usize, mut ours: impl FnMut() -> f64, mut peer: impl FnMut() -> f64) -> (f64, f64) {
    ours();
    peer();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        a.push(ours());
        b.push(peer());
    }
    (median(a), median(b))
}

/// Nanoseconds per call of `f`, over `n` calls.
fn per_op(n: u64, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn hlc(report: &mut Report) {
    let ours = HlcClock::new(1);
    let peer = uhlc::HLCBuilder::new().build();
    let (o, p) = interleave(
        15,
        || {
            per_op(100_000, || {
                let _ = black_box(ours.tick());
            })
        },
        || {
            per_op(100_000, || {
                let _ = black_box(peer.new_timestamp());
            })
        },
    );
    report.add("hlc_tick_ns", o, Some(("uhlc 0.9", p)), "lower");
    let remote = ours.tick();
    let remote_peer = peer.new_timestamp();
    let (o, p) = interleave(
        15,
        || {
            per_op(100_000, || {
                let _ = black_box(ours.update(black_box(&remote)).unwrap());
            })
        },
        || per_op(100_000, || peer.update_with_timestamp(black_box(&remote_peer)).unwrap()),
    );
    report.add("hlc_update_ns", o, Some(("uhlc 0.9", p)), "lower");
}

#[repr(C, align(128))]
struct Slot([u8; 8192]);

fn codec(report: &mut Report) {
    let mut slot = Box::new(Slot([0; 8192]));
    let mut floor = Box::new(Slot([0; 8192]));
    let meta = EnvelopeMeta { hlc: HlcTimestamp::new(1, 0, 1), ..Default::default() };
    let m = Pod64 { words: [1, 2, 3, 4, 5, 6, 7, 8] };
    let (o, p) = interleave(
        15,
        || {
            per_op(100_000, || {
                let n = encode(black_box(&m), &meta, &mut slot.0).unwrap();
                black_box(decode::<Pod64>(&slot.0[..n]).unwrap());
            })
        },
        || {
            per_op(100_000, || {
                floor.0[..64].copy_from_slice(black_box(&m).as_bytes());
                black_box(Pod64::read_from_bytes(&floor.0[..64]).unwrap());
            })
        },
    );
    report.add("encode_decode_pod64_ns", o, Some(("zerocopy copy (floor)", p)), "lower");
    let req = AddRequest { a: (0..256).map(|i| i as f32).collect(), b: vec![0.5; 256] };
    let (o, p) = interleave(
        15,
        || {
            per_op(20_000, || {
                let n = encode(black_box(&req), &meta, &mut slot.0).unwrap();
                black_box(decode::<AddRequest>(&slot.0[..n]).unwrap());
            })
        },
        || {
            per_op(20_000, || {
                let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(black_box(&req)).unwrap();
                black_box(rkyv::from_bytes::<AddRequest, rkyv::rancor::Error>(&bytes).unwrap());
            })
        },
    );
    report.add("encode_decode_add_request_ns", o, Some(("rkyv 0.8 to_bytes/from_bytes", p)), "lower");
}

/// Items per second moved from a producer thread to this thread through a queue.
fn spsc_throughput<P: Send + 'static, C>(
    make: impl Fn() -> (P, C),
    push: fn(&mut P, u64) -> bool,
    mut pop: impl FnMut(&mut C) -> Option<u64>,
) -> f64 {
    const N: u64 = 1_000_000;
    let (mut p, mut c) = make();
    let start = Instant::now();
    let t = std::thread::spawn(move || {
        for i in 0..N {
            while !push(&mut p, i) {
                std::hint::spin_loop();
            }
        }
    });
    let mut got = 0;
    while got < N {
        if pop(&mut c).is_some() {
            got += 1;
        } else {
            std::hint::spin_loop();
        }
    }
    t.join().unwrap();
    N as f64 / start.elapsed().as_secs_f64()
}

/// One-way latency (half a round trip) between two threads over two queues, in ns.
fn spsc_latency<P: Send + 'static, C: Send + 'static>(
    make: impl Fn() -> (P, C),
    push: fn(&mut P, u64) -> bool,
    pop: fn(&mut C) -> Option<u64>,
) -> f64 {
    const N: u64 = 50_000;
    let (mut p1, mut c1) = make();
    let (mut p2, mut c2) = make();
    let t = std::thread::spawn(move || {
        for _ in 0..N {
            let v = loop {
                if let Some(v) = pop(&mut c1) {
                    break v;
                }
                std::hint::spin_loop();
            };
            while !push(&mut p2, v) {
                std::hint::spin_loop();
            }
        }
    });
    let start = Instant::now();
    for i in 0..N {
        while !push(&mut p1, i) {
            std::hint::spin_loop();
        }
        while pop(&mut c2).is_none() {
            std::hint::spin_loop();
        }
    }
    let e = start.elapsed();
    t.join().unwrap();
    e.as_nanos() as f64 / N as f64 / 2.0
}

type Cb = Arc<crossbeam_queue::ArrayQueue<u64>>;

fn queues(report: &mut Report) {
    let ours_make = || spsc::channel::<u64>(4096).unwrap();
    let ours_push = |p: &mut spsc::Producer<u64>, v| p.push(v).is_ok();
    let ours_pop = |c: &mut spsc::Consumer<u64>| c.pop().ok();
    let rtrb_make = || rtrb::RingBuffer::<u64>::new(4096);
    let rtrb_push = |p: &mut rtrb::Producer<u64>, v| p.push(v).is_ok();
    let rtrb_pop = |c: &mut rtrb::Consumer<u64>| c.pop().ok();
    let cb_make = || {
        let q = Arc::new(crossbeam_queue::ArrayQueue::new(4096));
        (q.clone(), q)
    };
    let cb_push = |p: &mut Cb, v| p.push(v).is_ok();
    let cb_pop = |c: &mut Cb| c.pop();

    let (o, p) = interleave(
        7,
        || spsc_throughput(ours_make, ours_push, ours_pop),
        || spsc_throughput(rtrb_make, rtrb_push, rtrb_pop),
    );
    report.add("spsc_throughput_ops", o, Some(("rtrb 0.3", p)), "higher");
    let (o, p) = interleave(
        7,
        || spsc_throughput(ours_make, ours_push, ours_pop),
        || spsc_throughput(cb_make, cb_push, cb_pop),
    );
    report.add("spsc_throughput_ops", o, Some(("crossbeam ArrayQueue", p)), "higher");
    let (o, p) = interleave(
        7,
        || spsc_latency(ours_make, ours_push, ours_pop),
        || spsc_latency(rtrb_make, rtrb_push, rtrb_pop),
    );
    report.add("spsc_latency_ns", o, Some(("rtrb 0.3", p)), "lower");
    let (o, p) = interleave(
        7,
        || spsc_latency(ours_make, ours_push, ours_pop),
        || spsc_latency(cb_make, cb_push, cb_pop),
    );
    report.add("spsc_latency_ns", o, Some(("crossbeam ArrayQueue", p)), "lower");
}

enum EchoMsg {
    Req(Pod64, ractor::RpcReplyPort<Pod64>),
}

struct RactorEcho;

impl ractor::Actor for RactorEcho {
    type Msg = EchoMsg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ractor::ActorRef<Self::Msg>,
        _args: (),
    ) -> std::result::Result<u64, ractor::ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _myself: ractor::ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut u64,
    ) -> std::result::Result<(), ractor::ActorProcessingErr> {
        let EchoMsg::Req(r, reply) = msg;
        *state += 1;
        let _ = reply.send(r);
        Ok(())
    }
}

/// Individual call latencies in ns.
async fn latencies<F: std::future::Future<Output = ()>>(n: usize, mut call: impl FnMut() -> F) -> Vec<f64> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        call().await;
        v.push(start.elapsed().as_nanos() as f64);
    }
    v
}

async fn runtime_comparisons(report: &mut Report) -> Result<()> {
    let runtime = RingKernel::builder().backend(Backend::Cpu).build().await?;
    let echo = runtime.launch("cmp_echo", LaunchOptions::default()).await?;
    let req = Pod64 { words: [7; 8] };

    // Peer 1: tokio actor (mpsc in, oneshot out) on this multi-thread runtime's worker.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Pod64, tokio::sync::oneshot::Sender<Pod64>)>(1024);
    tokio::spawn(async move {
        while let Some((r, reply)) = rx.recv().await {
            let _ = reply.send(r);
        }
    });
    // Peer 2: ractor actor.
    let (actor, actor_handle) = ractor::Actor::spawn(None, RactorEcho, ())
        .await
        .map_err(|e| Error::BackendUnavailable { backend: "ractor", reason: e.to_string() })?;

    let (mut ours, mut tok, mut rac) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..11 {
        let o = latencies(2_000, || async {
            {
                let _ = echo.call::<_, Pod64>(req).await.unwrap();
            }
        })
        .await;
        let t = latencies(2_000, || async {
            let (otx, orx) = tokio::sync::oneshot::channel();
            tx.send((req, otx)).await.unwrap();
            let _ = orx.await.unwrap();
        })
        .await;
        let r = latencies(2_000, || async {
            {
                let _ = ractor::call!(actor, EchoMsg::Req, req).unwrap();
            }
        })
        .await;
        if round > 0 {
            ours.extend(o);
            tok.extend(t);
            rac.extend(r);
        }
    }
    for v in [&mut ours, &mut tok, &mut rac] {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    let med = |v: &Vec<f64>| percentile(v, 0.5);
    let p99 = |v: &Vec<f64>| percentile(v, 0.99);
    report.add(
        "cpu_roundtrip_ns",
        med(&ours),
        Some(("tokio mpsc+oneshot (multi-thread)", med(&tok))),
        "lower",
    );
    report.add("cpu_roundtrip_ns", med(&ours), Some(("ractor 0.16", med(&rac))), "lower");
    report.add(
        "cpu_roundtrip_p99_ns",
        p99(&ours),
        Some(("tokio mpsc+oneshot (multi-thread)", p99(&tok))),
        "lower",
    );
    report.add("cpu_roundtrip_p99_ns", p99(&ours), Some(("ractor 0.16", p99(&rac))), "lower");
    actor.stop(None);
    let _ = actor_handle.await;

    // K2K hop.
    let ping = runtime.launch("cmp_ping", LaunchOptions::default()).await?;
    runtime.launch("cmp_pong", LaunchOptions::default()).await?;
    let mut hops = Vec::new();
    for _ in 0..7 {
        let n = 20_000u64;
        let start = Instant::now();
        ping.send(Ball { remaining: n }).await?;
        let _: Ball = ping.receive().await?;
        hops.push(start.elapsed().as_nanos() as f64 / (2 * n) as f64);
    }
    report.add("k2k_hop_ns", median(hops), None, "lower");

    // Payload scaling (request/reply of Blob with N bytes).
    let blob = runtime
        .launch(
            "cmp_blob",
            LaunchOptions::default().with_queue_capacity(64).with_max_message_bytes(66 * 1024),
        )
        .await?;
    let mut base = 0.0;
    for size in [64usize, 1024, 16 * 1024, 64 * 1024] {
        let data = vec![0xA5u8; size];
        let mut v = latencies(2_000, || {
            let b = Blob { data: data.clone() };
            let k = &blob;
            async move {
                {
                    let _ = k.call::<_, Blob>(b).await.unwrap();
                }
            }
        })
        .await;
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let m = percentile(&v, 0.5);
        if size == 64 {
            base = m;
        }
        report.add(&format!("cpu_roundtrip_payload_{size}B_ns"), m, None, "lower");
        println!("{:<34} {:.2}x the 64 B round trip", "", m / base);
    }
    runtime.shutdown().await?;

    // Start-up: build, launch, first reply.
    let mut s = Vec::new();
    for _ in 0..21 {
        let start = Instant::now();
        let rt = RingKernel::builder().backend(Backend::Cpu).build().await?;
        let k = rt.launch("cmp_echo", LaunchOptions::default()).await?;
        let _: Pod64 = k.call(req).await?;
        s.push(start.elapsed().as_nanos() as f64);
        rt.shutdown().await?;
    }
    report.add("startup_ns", median(s), Some(("spec target 1 ms", 1e6)), "lower");

    // Throughput against the number of kernels.
    let mut single = 0.0;
    for kernels in [1usize, 10, 100, 1_000, 10_000] {
        let rt = RingKernel::builder()
            .backend(Backend::Cpu)
            .kernel(
                KernelDef::new::<u64>("cmp_sink_0").on(|c: &mut u64, _m: Pod64, _: &mut Context<'_>| *c += 1),
            )
            .build()
            .await?;
        for i in 1..kernels {
            rt.register(
                KernelDef::new::<u64>(format!("cmp_sink_{i}"))
                    .on(|c: &mut u64, _m: Pod64, _: &mut Context<'_>| *c += 1),
            )?;
        }
        let opts = LaunchOptions::default()
            .with_queue_capacity(if kernels >= 1000 { 16 } else { 256 })
            .with_max_message_bytes(128);
        let mut hs = Vec::with_capacity(kernels);
        for i in 0..kernels {
            hs.push(rt.launch(&format!("cmp_sink_{i}"), opts.clone()).await?);
        }
        let total = 200_000usize;
        let start = Instant::now();
        for i in 0..total {
            hs[i % kernels].send(req).await?;
        }
        loop {
            let done: u64 = hs.iter().map(|h| h.status().messages_processed).sum();
            if done as usize >= total {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let ops = total as f64 / start.elapsed().as_secs_f64();
        if kernels == 1 {
            single = ops;
        }
        report.add(&format!("throughput_{kernels}_kernels_ops"), ops, None, "higher");
        println!("{:<34} {:.2}x the 1-kernel throughput", "", ops / single);
        rt.shutdown().await?;
    }
    Ok(())
}

/// Resident set size of this process in bytes (`/proc/self/statm`; `None` off Linux).
fn rss_bytes() -> Option<u64> {
    statm_bytes(1)
}

/// Field `field` of `/proc/self/statm` (0: virtual size, 1: resident) in bytes.
fn statm_bytes(field: usize) -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(field)?.parse().ok()?;
    // Linux page size on every platform this runs on in CI; statm counts pages.
    Some(pages * 4096)
}

const FOOTPRINT_ENV: &str = "RINGKERNEL_COMPARE_FOOTPRINT";

/// The child process of [`footprint`]: launches 10,000 idle default kernels on a fresh heap and
/// prints `FOOTPRINT <launch ns> <resident bytes per kernel> <virtual bytes per kernel>` (-1 where
/// `/proc/self/statm` is not readable).
async fn footprint_child() -> Result<()> {
    let n = 10_000usize;
    let rt = RingKernel::builder().backend(Backend::Cpu).build().await?;
    let names: Vec<String> = (0..n).map(|j| format!("cmp_idle_{j}")).collect();
    for name in &names {
        rt.register(
            KernelDef::new::<u64>(name.clone()).on(|c: &mut u64, _m: Pod64, _: &mut Context<'_>| *c += 1),
        )?;
    }
    let opts = LaunchOptions::default();
    let (rss0, virt0) = (rss_bytes(), statm_bytes(0));
    let start = Instant::now();
    let mut hs = Vec::with_capacity(n);
    for name in &names {
        hs.push(rt.launch(name, opts.clone()).await?);
    }
    let ns = start.elapsed().as_nanos() as f64;
    let per = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / n as f64,
        _ => -1.0,
    };
    println!("FOOTPRINT {ns} {} {}", per(rss0, rss_bytes()), per(virt0, statm_bytes(0)));
    drop(hs);
    rt.shutdown().await
}

/// What an idle kernel costs: launch 10,000 default kernels and divide the growth of the
/// resident set by 10,000 (the layout figure, ring regions plus the cell, is printed next to it);
/// then launch and terminate kernels one after the other and report how much the resident set
/// grew over the cycles (flat when terminated kernels' memory is released or reused).
async fn footprint(report: &mut Report) -> Result<()> {
    use ringkernel::queue::slot_ring::ring_region_size;
    let idle = || KernelDef::new::<u64>("cmp_idle").on(|c: &mut u64, _m: Pod64, _: &mut Context<'_>| *c += 1);
    let opts = LaunchOptions::default();
    let slot = opts.slot_size() as u32;
    let layout = ring_region_size((opts.input_capacity as u32).next_power_of_two(), slot)
        + ring_region_size((opts.output_capacity as u32).next_power_of_two(), slot)
        + core::mem::size_of::<ringkernel::backend::KernelCell>();
    println!(
        "{:<34} {layout} B per default kernel from the layout ({} + {} slots of {slot} B, cell {} B)",
        "default kernel layout",
        opts.input_capacity,
        opts.output_capacity,
        core::mem::size_of::<ringkernel::backend::KernelCell>()
    );
    // Each round in a fresh process (this program again, with RINGKERNEL_COMPARE_FOOTPRINT=1):
    // in this one, memory freed by earlier comparisons would be reused and hide the growth.
    let mut launch = Vec::new();
    let mut per_kernel = Vec::new();
    let mut virt_per_kernel = Vec::new();
    for _ in 0..3 {
        let out = std::env::current_exe()
            .and_then(|exe| std::process::Command::new(exe).env(FOOTPRINT_ENV, "1").output());
        let line = out.ok().and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("FOOTPRINT ").map(str::to_string))
        });
        let Some(line) = line else { continue };
        let v: Vec<f64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        if let [ns, rss, virt] = v[..] {
            launch.push(ns);
            if rss >= 0.0 {
                per_kernel.push(rss);
                virt_per_kernel.push(virt);
            }
        }
    }
    if launch.is_empty() {
        report.skip("launch_10k_kernels_ns", "the footprint child process failed".into());
        return Ok(());
    }
    report.add("launch_10k_kernels_ns", median(launch), None, "lower");
    if per_kernel.is_empty() {
        report.skip("kernel_footprint_bytes", "/proc/self/statm is not readable".into());
    } else {
        report.add(
            "kernel_footprint_bytes",
            median(per_kernel),
            Some(("layout (rings + cell)", layout as f64)),
            "lower",
        );
        // Untouched pages of a ring are not resident; the address space a kernel takes is the
        // other half of the story.
        report.add("kernel_footprint_virtual_bytes", median(virt_per_kernel), None, "lower");
    }
    // Launch/terminate cycles; stops early (and says so) if the resident set grows past 2 GiB.
    let cycles = 100_000usize;
    let rt = RingKernel::builder().backend(Backend::Cpu).kernel(idle()).build().await?;
    let warm = rt.launch("cmp_idle", opts.clone()).await?;
    warm.terminate().await?;
    drop(warm);
    let base = rss_bytes();
    let start = Instant::now();
    let mut done = 0usize;
    for i in 0..cycles {
        let k = rt.launch("cmp_idle", opts.clone()).await?;
        k.terminate().await?;
        drop(k);
        done = i + 1;
        if i % 1000 == 999 && matches!((base, rss_bytes()), (Some(a), Some(b)) if b > a + (2 << 30)) {
            break;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    match (base, rss_bytes()) {
        (Some(a), Some(b)) => {
            let metric = format!("rss_growth_{done}_launch_terminate_cycles_bytes");
            report.add(&metric, b as f64 - a as f64, None, "lower");
            println!("{:<34} {done} cycles in {elapsed:.1} s", "");
        }
        _ => {
            report.skip("rss_growth_launch_terminate_cycles_bytes", "/proc/self/statm is not readable".into())
        }
    }
    rt.shutdown().await?;
    Ok(())
}

fn binary_size(report: &mut Report) {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let bin = std::path::Path::new(&target).join("release/examples/hello_kernel");
    let built = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-q", "-p", "ringkernel", "--example", "hello_kernel"])
        .status();
    if !matches!(built, Ok(s) if s.success()) || !bin.exists() {
        report.skip("hello_kernel_stripped_bytes", format!("could not build {}", bin.display()));
        return;
    }
    let out = std::env::temp_dir().join("ringkernel-hello-stripped");
    match std::process::Command::new("strip").arg("-o").arg(&out).arg(&bin).status() {
        Ok(s) if s.success() => {
            let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            report.add("hello_kernel_stripped_bytes", bytes as f64, Some(("spec target 2 MB", 2e6)), "lower");
        }
        _ => report.skip("hello_kernel_stripped_bytes", "`strip` is not available".into()),
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores, {} {}", std::env::consts::OS, std::env::consts::ARCH)
}

fn main() -> Result<()> {
    if std::env::var_os(FOOTPRINT_ENV).is_some() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        return rt.block_on(footprint_child());
    }
    let started = Instant::now();
    let machine = machine();
    println!("RingKernel comparison on {machine}\n");
    let mut report = Report::default();
    hlc(&mut report);
    codec(&mut report);
    queues(&mut report);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    rt.block_on(runtime_comparisons(&mut report))?;
    rt.block_on(footprint(&mut report))?;
    binary_size(&mut report);
    for b in [Backend::Cuda, Backend::Wgpu, Backend::Metal] {
        let why = match rt.block_on(RingKernel::builder().backend(b).build()) {
            Err(e) => e.to_string(),
            Ok(_) => "backend available but its comparisons are not written yet".into(),
        };
        report.skip(&format!("{}_backend", b.name()), why);
    }
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let path = std::path::Path::new(&target).join("ringkernel-compare.json");
    std::fs::create_dir_all(&target).ok();
    std::fs::write(&path, report.json(&machine)).expect("write report");
    println!("\nwrote {} in {:.0} s", path.display(), started.elapsed().as_secs_f64());
    Ok(())
}
