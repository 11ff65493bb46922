//! Loom models of the CUDA backend's device-side protocols, transcribed from the generated CUDA C
//! (`ringkernel-codegen/src/c_family.rs`, `c_family/runtime.h`) and the host agent
//! (`ringkernel-cuda/src/backend.rs`): the kernel is one loom thread, the host another, and each
//! atomic access uses the ordering the code uses (`.sys` acquire/release ↔ Acquire/Release).
//! Run with `RUSTFLAGS="--cfg ringkernel_loom" cargo test -p ringkernel-core --test
//! loom_device_protocols --release` (`.ci/run` does).
#![cfg(ringkernel_loom)]

use loom::sync::atomic::{fence, AtomicU32, Ordering};
use loom::sync::Arc;
use loom::thread;

/// `deactivate` then `send`: the kernel never handles the message sent after `deactivate`
/// returned. Host: `active = 0` (release, mirrored by the doorbell), then the publish of the
/// slot's `seq` (release). Kernel: check `active`, pop (acquire of `seq`, plain head store),
/// re-check `active` and put the message back when it went inactive.
#[test]
fn message_sent_after_deactivate_is_not_taken() {
    loom::model(|| {
        let active = Arc::new(AtomicU32::new(1));
        let seq = Arc::new(AtomicU32::new(0)); // slot 0 of the input ring: 1 = published
        let head = Arc::new(AtomicU32::new(0));
        let host = {
            let (active, seq) = (active.clone(), seq.clone());
            thread::spawn(move || {
                active.store(0, Ordering::Release);
                seq.store(1, Ordering::Release);
            })
        };
        // One iteration of the kernel loop, at any point of the host's progress.
        let mut handled = false;
        if active.load(Ordering::Acquire) != 0 {
            let pos = head.load(Ordering::Relaxed);
            if seq.load(Ordering::Acquire) == pos + 1 {
                head.store(pos + 1, Ordering::Relaxed);
                if active.load(Ordering::Acquire) == 0 {
                    head.store(pos, Ordering::Relaxed); // put it back
                } else {
                    handled = true;
                }
            }
        }
        host.join().unwrap();
        assert!(!handled, "a message published after deactivate was handled");
        if !handled {
            assert_eq!(head.load(Ordering::Relaxed), 0, "the message is still queued");
        }
    });
}

/// The unlink protocol: the host unlinks a route (store 0, SeqCst fence), records the sender's
/// epoch, and waits until it moved twice (or the sender ended) before it allows the target to
/// exit; the sender stores its epoch (release) and fences before it loads a route. Property: when
/// the host allows the exit, every message the sender put into the target's inbox is visible to
/// it (and so, through the release of `exit_allowed`, to the target's last look at its queues).
/// The model fails when the sender's fence is removed.
#[test]
fn no_k2k_message_is_lost_when_a_target_exits() {
    loom::model(|| {
        let route = Arc::new(AtomicU32::new(1)); // 1 = linked to the target's inbox
        let epoch = Arc::new(AtomicU32::new(0));
        let sender_done = Arc::new(AtomicU32::new(0));
        let inbox = Arc::new(AtomicU32::new(0)); // messages published in the target's inbox
        let sender = {
            let (route, epoch, done, inbox) =
                (route.clone(), epoch.clone(), sender_done.clone(), inbox.clone());
            thread::spawn(move || {
                let mut into_inbox = 0;
                for e in 1..=2u32 {
                    epoch.store(e, Ordering::Release);
                    // rk_out_begin: a system fence before loading the route (the sender's half
                    // of the store-buffering pair with the host's fence).
                    fence(Ordering::SeqCst);
                    if route.load(Ordering::Acquire) != 0 {
                        inbox.fetch_add(1, Ordering::Release); // claim + publish
                        into_inbox += 1;
                    }
                }
                done.store(1, Ordering::Release);
                into_inbox
            })
        };
        // The host agent.
        route.store(0, Ordering::Release);
        fence(Ordering::SeqCst);
        let e0 = epoch.load(Ordering::Acquire);
        loop {
            let moved = epoch.load(Ordering::Acquire).wrapping_sub(e0) >= 2;
            if moved || sender_done.load(Ordering::Acquire) != 0 {
                break;
            }
            thread::yield_now();
        }
        // exit_allowed would be released here; what the host sees now is what the target sees.
        let visible = inbox.load(Ordering::Acquire);
        let sent = sender.join().unwrap();
        assert_eq!(visible, sent, "a message reached the inbox after its kernel was allowed to exit");
    });
}

/// A kernel group's termination (`c_family/group.h`): `pending` counts messages in mailboxes or
/// being handled. A worker handling message 1 sends message 2 to another instance (`pending`
/// incremented before the publish) and only then decrements for message 1; worker 0, told to
/// terminate, publishes `quiescent` once `pending` reads 0. Whenever that happens, every message
/// the group will ever handle was handled already. `decrement_first` is the order without the
/// safeguard (message 1 uncounted before its send is counted), which the model must reject.
fn group_quiescence(decrement_first: bool) {
    loom::model(move || {
        let pending = Arc::new(AtomicU32::new(1)); // message 1, counted at ingress
        let done = Arc::new(AtomicU32::new(0));
        let mailbox_b = Arc::new(AtomicU32::new(0)); // message 2's slot `seq`: 1 = published
        let worker = {
            let (pending, done, mailbox_b) = (pending.clone(), done.clone(), mailbox_b.clone());
            thread::spawn(move || {
                // Message 1's handler sends message 2, then message 1 is done.
                if decrement_first {
                    done.fetch_add(1, Ordering::Relaxed);
                    pending.fetch_sub(1, Ordering::AcqRel);
                }
                pending.fetch_add(1, Ordering::AcqRel);
                mailbox_b.store(1, Ordering::Release);
                if !decrement_first {
                    done.fetch_add(1, Ordering::Relaxed);
                    pending.fetch_sub(1, Ordering::AcqRel);
                }
                // Message 2 (the same worker owns its instance here; any owner orders the same).
                while mailbox_b.load(Ordering::Acquire) != 1 {
                    thread::yield_now();
                }
                done.fetch_add(1, Ordering::Relaxed);
                pending.fetch_sub(1, Ordering::AcqRel);
            })
        };
        // Worker 0's quiescence check (the ingress ring is empty: everything was admitted).
        let seen =
            if pending.load(Ordering::Acquire) == 0 { Some(done.load(Ordering::Relaxed)) } else { None };
        worker.join().unwrap();
        if let Some(done_then) = seen {
            assert_eq!(done_then, 2, "quiescent with a message still to be handled");
        }
    });
}

#[test]
fn group_quiescence_waits_for_sends_made_by_handlers() {
    group_quiescence(false);
}

#[test]
#[should_panic(expected = "quiescent with a message still to be handled")]
fn group_quiescence_without_the_safeguard_ends_early() {
    group_quiescence(true);
}
