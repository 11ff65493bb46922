//! Kernel groups: `n` instances of one definition, each with its own state and mailbox, addressed
//! by (name, index). Run per backend: on a GPU runtime a group runs on the runtime's CPU pool
//! today (the GPU backends run single kernels only), and `placement` says so.

use super::*;
use std::collections::HashMap;

/// The hop kernel in CUDA C: K2K by index on the device (`rk_send_instance_*`).
#[cfg(feature = "cuda")]
const HOP_CUDA: &str = r#"
RK_DEVICE uint32_t on_Num(rk_ctx* ctx, Seen* s, const Num* m) {
    s->count += 1u;
    Num r = *m;
    if (m->value == 0u) {
        r.value = rk_instance(ctx);
        return rk_emit_Num(ctx, &r);
    }
    r.value = m->value - 1u;
    return rk_send_instance_Num(ctx, (rk_instance(ctx) + 1u) % rk_group_size(ctx), &r);
}
"#;

/// An instance that forwards a token `value` more hops round the group, then emits it (CPU
/// handlers, and the same in CUDA C).
fn hop_def(name: &str) -> KernelDef {
    let def = KernelDef::new::<Seen>(name).on(|s: &mut Seen, n: Num, ctx: &mut Context<'_>| -> Result<()> {
        s.count += 1;
        if n.value == 0 {
            return ctx.emit(Num { seq: n.seq, value: u64::from(ctx.instance()) });
        }
        let next = (ctx.instance() + 1) % ctx.group_size();
        let name = ctx.kernel_name().to_string();
        ctx.send_to((name.as_str(), next), Num { seq: n.seq, value: n.value - 1 })
    });
    #[cfg(feature = "cuda")]
    let def = def.gpu(ringkernel::cuda::CudaProgram::new::<Seen>(HOP_CUDA).handles::<Num>().sends::<Num>());
    def
}

/// The backend a group of a kernel with CPU handlers and a program for the runtime's backend
/// runs on: the CUDA backend runs groups; the wgpu and Metal backends do not yet, so their
/// runtimes run groups on the CPU pool.
fn group_backend(rt: &RingKernel) -> Backend {
    if rt.backend() == Backend::Cuda {
        Backend::Cuda
    } else {
        Backend::Cpu
    }
}

async fn group_runtime(backend: Setup, defs: Vec<KernelDef>) -> Option<RingKernel> {
    runtime_with(backend, defs).await
}

/// Each instance keeps its own state; calls reach the instance they name; the group's status
/// sums its instances.
pub async fn group_request_reply(backend: Setup) {
    let Some(rt) = group_runtime(backend, vec![counter_def("counters")]).await else { return };
    let n = 64u32;
    let g = rt.launch_group("counters", n, LaunchOptions::default()).await.unwrap();
    let status = g.status();
    assert_eq!((status.instances, g.len()), (n, n));
    assert_eq!(status.placement.expect("placed").backend, group_backend(&rt));
    let mut tasks = Vec::new();
    for i in 0..n {
        let inst = g.instance(i).unwrap();
        tasks.push(tokio::spawn(async move {
            for k in 1..=u64::from(i % 5) + 1 {
                let t: Total = inst.call(Num { seq: k, value: u64::from(i) }).await.unwrap();
                assert_eq!(t, Total { count: k, sum: k * u64::from(i) }, "instance {i} has its own state");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let expected: u64 = (0..u64::from(n)).map(|i| i % 5 + 1).sum();
    assert_eq!(g.status().messages_processed, expected);
    let report = g.terminate().await.unwrap();
    assert_eq!(report.messages_processed, expected);
    assert!(report.returned.is_empty());
    rt.shutdown().await.unwrap();
}

/// K2K by (name, index), `Context::instance`/`group_size`, the output's source naming the
/// instance, and the typed errors for addressing a group wrongly.
pub async fn group_addressing(backend: Setup) {
    let singleton = KernelDef::new::<Seen>("poker").on(|_s: &mut Seen, n: Num, ctx: &mut Context<'_>| {
        // A group is addressed per instance: by name alone it is an error, out of range too.
        let by_name = ctx.send_to("ring", n).unwrap_err().to_string();
        let out_of_range = ctx.send_to(("ring", 1_000), n).unwrap_err().to_string();
        ctx.send_to(("ring", 2), Num { seq: n.seq, value: 0 }).unwrap();
        Words {
            data: vec![
                u32::from(by_name.contains("(name, index)")),
                u32::from(out_of_range.contains("1000")),
            ],
        }
    });
    let Some(rt) = group_runtime(backend, vec![hop_def("ring"), singleton]).await else { return };
    let n = 7u32;
    let opts = LaunchOptions::default().with_queue_capacity(64);
    let g = rt.launch_group("ring", n, opts.clone()).await.unwrap();
    let poker = rt.launch("poker", LaunchOptions::default()).await.unwrap();
    assert!(rt.group("ring").is_some() && rt.group("poker").is_none());
    assert!(matches!(g.instance(n), Err(Error::NoSuchInstance { instances: 7, .. })));
    assert_eq!(g.id_of(n), None);
    let whole = rt.kernel("ring").unwrap();
    assert!(
        matches!(whole.send(Num { seq: 0, value: 0 }).await, Err(Error::NoSuchInstance { .. })),
        "a group's own handle sends nowhere"
    );
    // Tokens start at instance `start` and travel `hops`: they end at (start + hops) % n.
    let mut expected = HashMap::new();
    for seq in 0..100u64 {
        let (start, hops) = ((seq % u64::from(n)) as u32, seq * 3 % 40);
        expected.insert(seq, ((u64::from(start) + hops) % u64::from(n)) as u32);
        g.instance(start).unwrap().send(Num { seq, value: hops }).await.unwrap();
    }
    for _ in 0..100 {
        let r: Received<Num> = g.receive_envelope().await.unwrap();
        let at = g.source_index(&r.meta).expect("the source is an instance of the group");
        assert_eq!(at, expected[&r.message.seq], "token {} ended at the wrong instance", r.message.seq);
        assert_eq!(r.message.value, u64::from(at), "the handler's own index");
        assert_eq!(g.id_of(at), Some(r.meta.source));
    }
    let w: Words = poker.call(Num { seq: 500, value: 9 }).await.unwrap();
    assert_eq!(w.data, vec![1, 1], "typed K2K errors for a group addressed by name or out of range");
    let r: Received<Num> = g.receive_envelope().await.unwrap();
    assert_eq!((r.message.seq, g.source_index(&r.meta)), (500, Some(2)), "a singleton reaches an instance");
    rt.shutdown().await.unwrap();
}

/// Per-instance FIFO under concurrent senders to many instances.
pub async fn group_ordering(backend: Setup) {
    let Some(rt) = group_runtime(backend, vec![stage_def("sink", None)]).await else { return };
    let n = 16u32;
    let g = rt.launch_group("sink", n, LaunchOptions::default().with_queue_capacity(8)).await.unwrap();
    let per = 500u64;
    let mut senders = Vec::new();
    for i in 0..n {
        let inst = g.instance(i).unwrap();
        senders.push(tokio::spawn(async move {
            for seq in 0..per {
                inst.send(Num { seq, value: u64::from(i) }).await.unwrap();
            }
        }));
    }
    let mut next = vec![0u64; n as usize];
    for _ in 0..per * u64::from(n) {
        let r: Received<Num> = g.receive_envelope().await.unwrap();
        let i = g.source_index(&r.meta).unwrap();
        assert_eq!(r.message.value, u64::from(i), "emitted by the instance it was sent to");
        assert_eq!(r.message.seq, next[i as usize], "instance {i}: out of order");
        next[i as usize] += 1;
    }
    for s in senders {
        s.await.unwrap();
    }
    rt.shutdown().await.unwrap();
}

/// A full mailbox is backpressure for that instance only; deactivate holds every mailbox.
pub async fn group_backpressure(backend: Setup) {
    let Some(rt) = group_runtime(backend, vec![counter_def("bpg")]).await else { return };
    let opts =
        LaunchOptions { input_capacity: 2, output_capacity: 64, ..LaunchOptions::default() }.inactive();
    let g = rt.launch_group("bpg", 4, opts).await.unwrap();
    let one = g.instance(1).unwrap();
    one.try_send(Num { seq: 0, value: 1 }).unwrap();
    one.try_send(Num { seq: 1, value: 1 }).unwrap();
    let waiter = if group_backend(&rt) == Backend::Cpu {
        match one.try_send(Num { seq: 2, value: 42 }) {
            Err(e @ TrySendError::Full { .. }) => assert_eq!(e.into_message(), Num { seq: 2, value: 42 }),
            other => panic!("expected Full, got {other:?}"),
        }
        g.instance(2).unwrap().try_send(Num { seq: 0, value: 5 }).expect("another instance has room");
        let waiter = tokio::spawn(async move { one.send(Num { seq: 2, value: 1 }).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "send waits while the instance's mailbox is full");
        waiter
    } else {
        // CUDA: host sends share the group's ingress ring (backpressure is per group there); the
        // third message waits in it behind the full mailbox until the group is activated.
        g.instance(2).unwrap().try_send(Num { seq: 0, value: 5 }).expect("the ingress ring has room");
        tokio::spawn(async move { one.send(Num { seq: 2, value: 1 }).await })
    };
    assert_eq!(g.status().messages_processed, 0, "an inactive group handles nothing");
    g.activate().await.unwrap();
    waiter.await.unwrap().unwrap();
    let mut totals = Vec::new();
    for _ in 0..4 {
        let r: Received<Total> = g.receive_envelope().await.unwrap();
        totals.push((g.source_index(&r.meta).unwrap(), r.message));
    }
    totals.sort_by_key(|(i, t)| (*i, t.count));
    let want = [(1, 1, 1), (1, 2, 2), (1, 3, 3), (2, 1, 5)];
    let got: Vec<_> = totals.iter().map(|(i, t)| (*i, t.count, t.sum)).collect();
    assert_eq!(got, want);
    rt.shutdown().await.unwrap();
}

/// A handler panic fails its instance only: its calls get `KernelFailed`, its one-way messages
/// come back in the terminate report, and the other instances go on.
pub async fn group_panic_fails_one_instance(backend: Setup) {
    let Some(rt) = group_runtime(backend, vec![counter_def("fragile")]).await else { return };
    let g = rt.launch_group("fragile", 8, LaunchOptions::default()).await.unwrap();
    let three = g.instance(3).unwrap();
    let r: Result<Total> = three.call(Boom { code: 7 }).await;
    assert!(matches!(&r, Err(Error::KernelFailed { detail, .. }) if detail.contains("boom 7")), "{r:?}");
    let r: Result<Total> = three.call(Num { seq: 0, value: 1 }).await;
    assert!(
        matches!(r, Err(Error::KernelFailed { .. })),
        "a failed instance answers with KernelFailed: {r:?}"
    );
    three.send(Num { seq: 1, value: 2 }).await.unwrap();
    for i in [0, 4, 7] {
        let t: Total = g.instance(i).unwrap().call(Num { seq: 0, value: 10 }).await.unwrap();
        assert_eq!(t, Total { count: 1, sum: 10 }, "instance {i} still serves");
    }
    assert_eq!(g.status().state, KernelState::Active, "the group stays active");
    assert!(g.status().last_error.unwrap().contains("instance 3"));
    let report = g.terminate().await.unwrap();
    assert_eq!(report.returned.len(), 1, "the failed instance's one-way message comes back");
    assert_eq!(report.returned[0].decode::<Num>().unwrap(), Num { seq: 1, value: 2 });
    rt.shutdown().await.unwrap();
}

/// Senders to every instance race `terminate`: every accepted message is handled or handed
/// back, and `terminate` returns.
pub async fn group_terminate_conserves(backend: Setup, rounds: usize) {
    let Some(rt) = group_runtime(backend, vec![hop_def("drain")]).await else { return };
    for round in 0..rounds {
        let n = 32u32;
        let opts = LaunchOptions { input_capacity: 4, output_capacity: 1 << 14, ..LaunchOptions::default() };
        let g = rt.launch_group("drain", n, opts).await.unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let mut senders = Vec::new();
        for t in 0..4u32 {
            let (g, accepted) = (g.clone(), accepted.clone());
            senders.push(tokio::spawn(async move {
                for k in 0..2_000u64 {
                    let inst = g.instance((t * 7 + k as u32) % n).unwrap();
                    // Hops across instances, so instance-to-instance K2K races the close too.
                    match inst.try_send(Num { seq: k, value: k % 3 }) {
                        Ok(()) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(TrySendError::Full { .. }) => tokio::task::yield_now().await,
                        Err(TrySendError::Rejected { error: Error::NotAccepting { .. }, .. }) => return,
                        Err(e) => panic!("{e}"),
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_micros(200 * (round as u64 % 5))).await;
        let report = tokio::time::timeout(Duration::from_secs(20), g.terminate())
            .await
            .expect("terminate hangs")
            .unwrap();
        for s in senders {
            s.await.unwrap();
        }
        let mut emitted = 0;
        while g.try_receive::<Num>().unwrap().is_some() {
            emitted += 1;
        }
        // Each accepted token ends as one output, or comes back (refused mid-way after close).
        assert_eq!(
            emitted + report.returned.len(),
            accepted.load(Ordering::Relaxed),
            "round {round}: accepted tokens lost or duplicated"
        );
    }
    rt.shutdown().await.unwrap();
}
