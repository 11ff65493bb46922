//! Lifecycle changes racing many senders and callers: nothing accepted is lost, no call hangs.
//!
//! Each round launches a kernel with a small queue (so senders hit backpressure), starts senders
//! (`send`, `try_send`) and callers (`call`) that loop until the kernel refuses them, and races
//! a lifecycle storm (deactivate/activate) ending in `terminate`, `shutdown()` or dropping the
//! runtime. It then checks conservation: every message whose send returned `Ok` was handled or
//! came back in the terminate report, and every call ended within a bound.

use super::*;
use std::sync::atomic::AtomicU64;

/// How a round ends.
#[derive(Clone, Copy, Debug)]
enum End {
    Terminate,
    Shutdown,
    Drop,
}

/// A small deterministic generator (rounds are reproducible from their number).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Longest a call may take in these tests before it counts as hung.
const CALL_BOUND: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Counts {
    accepted: AtomicU64,
    replies: AtomicU64,
}

fn is_refusal(e: &Error) -> bool {
    matches!(e, Error::NotAccepting { .. } | Error::ShutDown)
}

async fn sender(k: KernelHandle, counts: Arc<Counts>, try_send: bool) {
    let mut seq = 0u64;
    loop {
        let msg = Num { seq, value: 1 };
        let r = if try_send {
            match k.try_send(msg) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full { .. }) => {
                    tokio::task::yield_now().await;
                    continue;
                }
                Err(TrySendError::Rejected { error, .. }) => Err(error),
            }
        } else {
            k.send(msg).await
        };
        match r {
            Ok(()) => {
                counts.accepted.fetch_add(1, Ordering::SeqCst);
                seq += 1;
            }
            Err(e) if is_refusal(&e) => return,
            Err(e) => panic!("send failed with an unexpected error: {e}"),
        }
        if seq.is_multiple_of(8) {
            tokio::task::yield_now().await;
        }
    }
}

async fn caller(k: KernelHandle, counts: Arc<Counts>) {
    loop {
        match tokio::time::timeout(CALL_BOUND, k.call::<_, Total>(Num { seq: 0, value: 1 })).await {
            Err(_) => panic!("a call to {} hung for {CALL_BOUND:?}", k.name()),
            Ok(Ok(_)) => {
                counts.accepted.fetch_add(1, Ordering::SeqCst);
                counts.replies.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Err(e)) if is_refusal(&e) => return,
            // The runtime was dropped under the call: a typed error, not silence.
            Ok(Err(Error::KernelFailed { .. })) => return,
            Ok(Err(e)) => panic!("call failed with an unexpected error: {e}"),
        }
    }
}

async fn storm(k: &KernelHandle, rng: &mut Rng) {
    for _ in 0..rng.next() % 16 {
        tokio::time::sleep(Duration::from_micros(rng.next() % 1500)).await;
        // Either may be refused when the state already is the requested one.
        if rng.next().is_multiple_of(2) {
            let _ = k.deactivate().await;
        } else {
            let _ = k.activate().await;
        }
    }
    tokio::time::sleep(Duration::from_micros(rng.next() % 3000)).await;
}

/// Reads the kernel's outputs (the replies to one-way sends) until it has stopped.
async fn reader(k: KernelHandle) -> u64 {
    let mut n = 0;
    while k.receive::<Total>().await.is_ok() {
        n += 1;
    }
    n
}

async fn bounded<T>(round: u64, what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(CALL_BOUND, f)
        .await
        .unwrap_or_else(|_| panic!("round {round}: {what} hung for {CALL_BOUND:?}"))
}

pub(super) async fn lifecycle_races(backend: Setup, rounds: u64) {
    for round in 0..rounds {
        let end = match round % 5 {
            3 => End::Shutdown,
            4 => End::Drop,
            _ => End::Terminate,
        };
        let Some(rt) = runtime_with(backend, vec![counter_def("racer")]).await else { return };
        let opts = LaunchOptions::default().with_queue_capacity(8);
        let opts = if round % 2 == 0 { opts } else { opts.inactive() };
        let k = rt.launch("racer", opts).await.unwrap();
        let counts = Arc::new(Counts::default());
        let mut tasks = Vec::new();
        for s in 0..3 {
            tasks.push(tokio::spawn(sender(k.clone(), counts.clone(), s == 2)));
        }
        for _ in 0..2 {
            tasks.push(tokio::spawn(caller(k.clone(), counts.clone())));
        }
        // Half of the rounds read the outputs as they come; the others leave them unread, so
        // the kernel ends with its output queue full (terminate must finish all the same).
        let outputs = (round % 4 < 2).then(|| tokio::spawn(reader(k.clone())));
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (round + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
        storm(&k, &mut rng).await;
        let report = match end {
            End::Terminate => {
                let report = match tokio::time::timeout(CALL_BOUND, k.terminate()).await {
                    Ok(r) => r.unwrap(),
                    Err(_) => panic!(
                        "round {round}: terminate hung for {CALL_BOUND:?}: {:?} {:?}",
                        k.status(),
                        k.control_block()
                    ),
                };
                bounded(round, "shutdown", rt.shutdown()).await.unwrap();
                Some(report)
            }
            End::Shutdown => {
                bounded(round, "shutdown", rt.shutdown()).await.unwrap();
                Some(k.terminate().await.unwrap())
            }
            End::Drop => {
                drop(rt);
                None
            }
        };
        for t in tasks {
            tokio::time::timeout(CALL_BOUND * 2, t)
                .await
                .unwrap_or_else(|_| panic!("round {round} ({end:?}): a sender or caller never finished"))
                .unwrap();
        }
        let accepted = counts.accepted.load(Ordering::SeqCst);
        let mut read = 0;
        if let Some(o) = outputs {
            read = bounded(round, "the output reader", o).await.unwrap();
        }
        if let Some(report) = report {
            let returned = report.returned.len() as u64;
            assert_eq!(
                report.messages_processed + returned,
                accepted,
                "round {round} ({end:?}): {} handled + {returned} returned != {accepted} accepted \
                 ({} left in the input queue)",
                report.messages_processed,
                k.status().input_queue_depth,
            );
            assert_eq!(k.status().input_queue_depth, 0, "round {round}: input left behind");
            assert_eq!(k.status().messages_in_flight, 0, "round {round}: in-flight count");
            assert_eq!(k.status().state, KernelState::Terminated);
            // Every one-way message handled produced one output, and none was lost.
            let replies = counts.replies.load(Ordering::SeqCst);
            let unread = u64::from(k.status().output_queue_depth);
            assert_eq!(
                read + unread + replies,
                report.messages_processed,
                "round {round}: outputs read {read} + unread {unread} + call replies {replies}"
            );
        }
        // Dropped: the runtime stopped at once; what matters is that every sender and caller
        // above ended (a call answered with a typed error, not left waiting).
    }
}
