//! Loom models of the queue and control-block protocols. Run with
//! `RUSTFLAGS="--cfg ringkernel_loom" cargo test -p ringkernel-core --test loom_protocols --release`
//! (`.ci/run` does, in its own target directory). Loom explores every interleaving and every
//! weak-memory outcome the orderings allow.
#![cfg(ringkernel_loom)]

use loom::sync::atomic::{AtomicU32, Ordering};
use loom::thread;
use ringkernel_core::admission::AdmissionGate;
use ringkernel_core::control_block::ControlBlock;
use ringkernel_core::queue::{spsc, Mailboxes, SlotRing};
use ringkernel_core::ready::ReadyMark;
use std::sync::Arc;

fn push(ring: &SlotRing, v: u64) -> bool {
    ring.try_push_with(|s| {
        s[..8].copy_from_slice(&v.to_le_bytes());
        Ok::<_, ()>(8)
    })
    .unwrap()
    .is_some()
}

fn pop(ring: &SlotRing) -> Option<u64> {
    ring.try_pop_with(|b| u64::from_le_bytes(b.try_into().unwrap()))
}

#[test]
fn spsc_push_pop_in_order() {
    loom::model(|| {
        let (mut p, mut c) = spsc::channel::<u64>(2).unwrap();
        let t = thread::spawn(move || {
            for v in [10, 20, 30] {
                while p.push(v).is_err() {
                    thread::yield_now();
                }
            }
        });
        let mut got = Vec::new();
        while got.len() < 3 {
            match c.pop() {
                Ok(v) => got.push(v),
                Err(_) => thread::yield_now(),
            }
        }
        t.join().unwrap();
        assert_eq!(got, vec![10, 20, 30]);
    });
}

#[test]
fn slot_ring_two_producers_one_consumer() {
    loom::model(|| {
        let ring = Arc::new(SlotRing::new(2, 16).unwrap());
        let producers: Vec<_> = [1u64, 2]
            .into_iter()
            .map(|v| {
                let r = ring.clone();
                thread::spawn(move || {
                    while !push(&r, v) {
                        thread::yield_now();
                    }
                })
            })
            .collect();
        let mut got = Vec::new();
        while got.len() < 2 {
            match pop(&ring) {
                Some(v) => got.push(v),
                None => thread::yield_now(),
            }
        }
        for p in producers {
            p.join().unwrap();
        }
        got.sort_unstable();
        assert_eq!(got, vec![1, 2], "each message exactly once");
        assert_eq!(pop(&ring), None);
    });
}

#[test]
fn slot_ring_wraps_under_contention() {
    loom::model(|| {
        // Capacity 2, three messages: the producer must reuse a slot the consumer frees.
        let ring = Arc::new(SlotRing::new(2, 16).unwrap());
        let r = ring.clone();
        let t = thread::spawn(move || {
            for v in 1..=3u64 {
                while !push(&r, v) {
                    thread::yield_now();
                }
            }
        });
        let mut got = Vec::new();
        while got.len() < 3 {
            let n = ring.pop_batch_with(2, |b| got.push(u64::from_le_bytes(b.try_into().unwrap())));
            if n == 0 {
                thread::yield_now();
            }
        }
        t.join().unwrap();
        assert_eq!(got, vec![1, 2, 3]);
    });
}

#[test]
fn slot_ring_two_consumers_split_exactly_once() {
    loom::model(|| {
        let ring = Arc::new(SlotRing::new(2, 16).unwrap());
        assert!(push(&ring, 7));
        assert!(push(&ring, 8));
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let r = ring.clone();
                thread::spawn(move || pop(&r))
            })
            .collect();
        let mut got: Vec<u64> = consumers.into_iter().filter_map(|c| c.join().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, vec![7, 8]);
    });
}

#[test]
fn control_block_terminate_handshake() {
    loom::model(|| {
        let cb = Arc::new(ControlBlock::with_capacities(4, 4));
        cb.set_active(true);
        let k = cb.clone();
        let kernel = thread::spawn(move || {
            // Kernel loop: process until terminate is requested, then publish the final count.
            while !k.terminate_requested() {
                thread::yield_now();
            }
            k.add_processed(5);
            k.set_hlc_packed(42);
            k.mark_terminated();
        });
        cb.request_terminate();
        while !cb.is_terminated() {
            thread::yield_now();
        }
        // Everything the kernel wrote before `terminated` is visible after it.
        assert_eq!(cb.messages_processed(), 5);
        assert_eq!(cb.hlc_packed(), 42);
        kernel.join().unwrap();
    });
}

/// The executor's terminate check (`HostExecutor::run`, the GPU agents alike): read the
/// request, drain, and finish only if the request was seen and the queue is empty.
fn kernel_until_terminated(ring: &SlotRing, cb: &ControlBlock) -> u32 {
    let mut popped = 0;
    loop {
        let terminating = cb.terminate_requested();
        while pop(ring).is_some() {
            popped += 1;
        }
        if terminating && ring.is_empty() {
            return popped;
        }
        thread::yield_now();
    }
}

/// Send ↔ terminate through the admission gate: a message whose push was admitted is always
/// handled before the kernel finishes terminating (see `ringkernel_core::admission`).
#[test]
fn admission_gate_send_vs_terminate() {
    loom::model(|| {
        let ring = Arc::new(SlotRing::new(2, 16).unwrap());
        let gate = Arc::new(AdmissionGate::new());
        let cb = Arc::new(ControlBlock::with_capacities(2, 2));
        let sender = {
            let (ring, gate) = (ring.clone(), gate.clone());
            thread::spawn(move || match gate.enter() {
                Some(_admitted) => push(&ring, 1),
                None => false,
            })
        };
        let kernel = {
            let (ring, cb) = (ring.clone(), cb.clone());
            thread::spawn(move || kernel_until_terminated(&ring, &cb))
        };
        // terminate(): close the gate (waits for the admitted sender), then ask the kernel.
        gate.close();
        cb.request_terminate();
        let accepted = u32::from(sender.join().unwrap());
        assert_eq!(kernel.join().unwrap(), accepted, "an accepted message was not handled");
    });
}

/// The protocol the gate replaced (check the state, then push) loses a message: the sender
/// checks before the request, the kernel finishes, the push lands afterwards. Loom finds it.
#[test]
#[should_panic(expected = "an accepted message was not handled")]
fn check_then_push_loses_a_message() {
    loom::model(|| {
        let ring = Arc::new(SlotRing::new(2, 16).unwrap());
        let cb = Arc::new(ControlBlock::with_capacities(2, 2));
        let sender = {
            let (ring, cb) = (ring.clone(), cb.clone());
            thread::spawn(move || !cb.terminate_requested() && push(&ring, 1))
        };
        let kernel = {
            let (ring, cb) = (ring.clone(), cb.clone());
            thread::spawn(move || kernel_until_terminated(&ring, &cb))
        };
        cb.request_terminate();
        let accepted = u32::from(sender.join().unwrap());
        assert_eq!(kernel.join().unwrap(), accepted, "an accepted message was not handled");
    });
}

fn mailbox_push(m: &Mailboxes, i: u32, v: u64) -> bool {
    m.try_push_with(i, |s| {
        s[..8].copy_from_slice(&v.to_le_bytes());
        Ok::<_, ()>(8)
    })
    .unwrap()
    .is_some()
}

fn mailbox_pop(m: &Mailboxes, i: u32) -> Option<u64> {
    m.try_pop_with(i, |b| u64::from_le_bytes(b.try_into().unwrap()))
}

/// A group's mailboxes: two producers race into one mailbox while its consumer drains; each
/// message arrives once, and the neighbouring mailbox sees nothing.
#[test]
fn mailbox_two_producers_one_consumer() {
    loom::model(|| {
        let m = Arc::new(Mailboxes::new(2, 2, 16).unwrap());
        let producers: Vec<_> = [1u64, 2]
            .into_iter()
            .map(|v| {
                let m = m.clone();
                thread::spawn(move || {
                    while !mailbox_push(&m, 1, v) {
                        thread::yield_now();
                    }
                })
            })
            .collect();
        let mut got = Vec::new();
        while got.len() < 2 {
            match mailbox_pop(&m, 1) {
                Some(v) => got.push(v),
                None => thread::yield_now(),
            }
        }
        for p in producers {
            p.join().unwrap();
        }
        got.sort_unstable();
        assert_eq!(got, vec![1, 2], "each message exactly once");
        assert_eq!((mailbox_pop(&m, 0), mailbox_pop(&m, 1)), (None, None));
    });
}

/// A 2-slot mailbox takes three messages: the producer reuses a slot the consumer frees, and
/// the order holds across the wrap.
#[test]
fn mailbox_wraps_in_order() {
    loom::model(|| {
        let m = Arc::new(Mailboxes::new(2, 2, 16).unwrap());
        let producer = {
            let m = m.clone();
            thread::spawn(move || {
                for v in 1..=3u64 {
                    while !mailbox_push(&m, 0, v) {
                        thread::yield_now();
                    }
                }
            })
        };
        let mut got = Vec::new();
        while got.len() < 3 {
            match mailbox_pop(&m, 0) {
                Some(v) => got.push(v),
                None => thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert_eq!(got, vec![1, 2, 3]);
    });
}

/// One owner session of an actor (`ringkernel_core::ready`): begin, drain the mailbox, try to go
/// idle, and look again when work raced in. Returns the messages it handled.
fn owner_session(mark: &ReadyMark, m: &Mailboxes) -> usize {
    let mut handled = 0;
    loop {
        mark.begin();
        while mailbox_pop(m, 0).is_some() {
            handled += 1;
        }
        if mark.try_idle() {
            return handled;
        }
    }
}

/// The ready mark loses no wake-up: a producer pushes and marks while the actor's owner drains
/// and goes idle. Afterwards every message was handled, or the actor is queued again (exactly
/// once) so that the next owner handles it. Fails if `try_idle` ignores `NOTIFIED`.
#[test]
fn ready_mark_loses_no_wake_up() {
    loom::model(|| {
        let m = Arc::new(Mailboxes::new(1, 2, 16).unwrap());
        let mark = Arc::new(ReadyMark::new());
        // The first message queued the actor; the owner below took it off the run queue.
        assert!(mailbox_push(&m, 0, 1));
        assert!(mark.mark());
        let queued = Arc::new(AtomicU32::new(0));
        let producer = {
            let (m, mark, queued) = (m.clone(), mark.clone(), queued.clone());
            thread::spawn(move || {
                assert!(mailbox_push(&m, 0, 2));
                if mark.mark() {
                    queued.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let mut handled = owner_session(&mark, &m);
        producer.join().unwrap();
        let queued = queued.load(Ordering::Relaxed);
        assert!(queued <= 1, "queued twice");
        if handled < 2 {
            assert_eq!(queued, 1, "a message is left with the actor idle and on no run queue");
        }
        if queued == 1 {
            // The next owner (its run may find the message already handled: a spurious run).
            handled += owner_session(&mark, &m);
        }
        assert_eq!(handled, 2);
        assert!(!mark.is_queued());
    });
}
