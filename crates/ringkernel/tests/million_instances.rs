//! A kernel group of 1,000,000 instances on the CPU backend: 4-slot mailboxes of 64-byte
//! payloads, 16 bytes of state each. Every instance receives one message and replies; the group
//! terminates; resident memory stays within 2 GiB.

use ringkernel::prelude::*;
use ringkernel::runtime::KernelDef;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// 64 bytes of payload.
#[derive(RingMessage, IntoBytes, FromBytes, Immutable, KnownLayout, Clone, Copy, Debug)]
#[message(pod, type_id = 0x5101)]
#[repr(C)]
struct Ping {
    words: [u64; 8],
}

/// 16 bytes of state.
#[derive(Default)]
struct Acc {
    count: u64,
    sum: u64,
}

const _: () = assert!(core::mem::size_of::<Acc>() == 16 && core::mem::size_of::<Ping>() == 64);

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_instances_each_receive_and_reply() {
    const N: u32 = 1_000_000;
    let def = KernelDef::new::<Acc>("million").on(|s: &mut Acc, p: Ping, ctx: &mut Context<'_>| {
        s.count += 1;
        s.sum += p.words[0];
        let mut words = p.words;
        words[1] = u64::from(ctx.instance());
        words[2] = s.count;
        Ping { words }
    });
    let rt = RingKernel::builder().backend(Backend::Cpu).kernel(def).build().await.unwrap();
    let before = rss_bytes();
    // 64-byte envelope header + 64-byte payload per slot.
    let opts = LaunchOptions {
        input_capacity: 4,
        output_capacity: 1 << 12,
        max_message_bytes: 128,
        ..LaunchOptions::default()
    };
    let g = rt.launch_group("million", N, opts).await.unwrap();
    assert_eq!(g.len(), N);
    let reader = {
        let g = g.clone();
        tokio::spawn(async move {
            let mut seen = vec![false; N as usize];
            for _ in 0..N {
                let r: Received<Ping> = g.receive_envelope().await.unwrap();
                let i = g.source_index(&r.meta).expect("a reply from an instance");
                assert_eq!(r.message.words[1], u64::from(i), "the instance that handled it replied");
                assert_eq!(r.message.words[0], u64::from(i) * 3, "the message sent to that instance");
                assert_eq!(r.message.words[2], 1, "instance {i} had its own fresh state");
                assert!(!std::mem::replace(&mut seen[i as usize], true), "instance {i} replied twice");
            }
            seen.iter().all(|s| *s)
        })
    };
    for i in 0..N {
        let mut words = [0u64; 8];
        words[0] = u64::from(i) * 3;
        g.instance(i).unwrap().send(Ping { words }).await.unwrap();
    }
    assert!(reader.await.unwrap(), "every instance replied");
    let peak = rss_bytes();
    let report = g.terminate().await.unwrap();
    assert_eq!(report.messages_processed, u64::from(N));
    assert!(report.returned.is_empty());
    if let (Some(before), Some(peak)) = (before, peak) {
        let grown = peak.saturating_sub(before);
        eprintln!("1,000,000 instances: resident memory grew by {} MiB", grown >> 20);
        assert!(grown <= 2 << 30, "resident memory grew by {grown} bytes");
    }
    rt.shutdown().await.unwrap();
}
