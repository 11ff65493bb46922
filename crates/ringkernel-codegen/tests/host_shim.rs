//! Runs the generated persistent-kernel code (the host C target: the text NVRTC compiles for the
//! GPU but for the device primitives) on a host thread against the Rust host side: the control
//! block and slot rings are `ringkernel-core`'s, messages are encoded and decoded by
//! `ringkernel-core`'s codec.
//! This is how CI exercises the device-side queue protocol without a GPU.

use ringkernel_codegen::c_family::{ctl, KernelParams, RouteEntry, MAX_ROUTES};
use ringkernel_codegen::err;
use ringkernel_codegen::host_c::HostC;
use ringkernel_core::control_block::ControlBlock;
use ringkernel_core::hlc::{HlcClock, HlcTimestamp};
use ringkernel_core::message::{decode, decode_header, encode, EnvelopeMeta, FLAG_ERROR_REPLY, FLAG_REPLY};
use ringkernel_core::queue::SlotRing;
use std::ffi::CString;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

#[path = "kernels/adder_types.rs"]
mod adder_types;
use adder_types::{adder_source, AdderReply, AdderRequest};

type KernelFn = unsafe extern "C" fn(*mut KernelParams);

/// Compiles the generated source as a shared library and returns (library handle, entry point).
fn build_kernel() -> Option<(*mut libc::c_void, KernelFn)> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    if Command::new(&cc).arg("--version").output().is_err() {
        eprintln!("SKIP: no C compiler ({cc}) to build the host shim with");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("ringkernel-shim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("adder.c"), adder_source::<HostC>()).unwrap();
    let lib = dir.join("libadder.so");
    let out = Command::new(&cc)
        .args(["-std=gnu11", "-O2", "-Wall", "-Werror", "-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(dir.join("adder.c"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "generated kernel does not compile as C:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = CString::new(lib.to_str().unwrap()).unwrap();
    // SAFETY: dlopen/dlsym with valid NUL-terminated strings; the library was just built from our
    // generated source, and the symbol has the C signature `KernelFn` declares.
    unsafe {
        let handle = libc::dlopen(path.as_ptr(), libc::RTLD_NOW);
        assert!(!handle.is_null(), "dlopen failed");
        let sym = libc::dlsym(handle, c"rk_kernel_main".as_ptr());
        assert!(!sym.is_null(), "rk_kernel_main not exported");
        Some((handle, std::mem::transmute::<*mut libc::c_void, KernelFn>(sym)))
    }
}

/// A `u32` field of the live parameter block, as the atomic both sides use.
fn word<'a>(field: *mut u32) -> &'a AtomicU32 {
    // SAFETY: `field` points into a live KernelParams (boxed, outliving every use here) that the
    // kernel thread accesses atomically; no reference to the field is held elsewhere.
    unsafe { AtomicU32::from_ptr(field) }
}

#[test]
fn generated_kernel_serves_the_rust_host_side() {
    let Some((_lib, kernel)) = build_kernel() else { return };
    let mut cb = Box::new(ControlBlock::for_kernel(7, 64, 64));
    let input = SlotRing::new(64, 128).unwrap();
    let output = SlotRing::new(64, 128).unwrap();
    let inbox = SlotRing::new(16, 128).unwrap();
    let mut state = vec![0u32; 4];
    let mut scratch = vec![0u8; 128];
    let mut routes = vec![RouteEntry::default(); MAX_ROUTES];
    let mut snapshot = vec![0u32; 4];
    let mut params = Box::new(KernelParams {
        cb: &mut *cb as *mut ControlBlock as u64,
        h2d: input.region().0.as_ptr() as u64,
        d2h: output.region().0.as_ptr() as u64,
        inbox: inbox.region().0.as_ptr() as u64,
        state: state.as_mut_ptr() as u64,
        scratch: scratch.as_mut_ptr() as u64,
        routes: routes.as_mut_ptr() as u64,
        scratch_bytes: 128,
        state_words: 3,
        snapshot: snapshot.as_mut_ptr() as u64,
        ctl: ctl::ACTIVE,
        ..KernelParams::default()
    });
    let pp = &mut *params as *mut KernelParams as usize;
    let device = std::thread::spawn(move || {
        // SAFETY: the parameter block and everything it points to outlive this thread (joined
        // below before they are dropped); the kernel follows the shared protocol, and only atomics
        // are touched concurrently from both sides.
        unsafe { kernel(pp as *mut KernelParams) }
    });

    let host = HlcClock::new(0);
    const N: u64 = 20_000;
    let (mut sent, mut received) = (0u64, 0u64);
    let mut total = 0u64;
    let mut last_hlc = HlcTimestamp::default();
    let mut slot = [0u8; 128];
    while received < N {
        if sent < N {
            let meta = EnvelopeMeta {
                correlation_id: sent + 1,
                source: 0,
                destination: 7,
                hlc: host.tick(),
                flags: 0,
            };
            // Terms of 0..3 elements exercise the generated slice reader and writer.
            let terms: Vec<u32> = (0..(sent % 4) as u32).map(|t| t * 10 + 1).collect();
            let req = AdderRequest { a: sent, b: 2 * sent, terms };
            let pushed = input.try_push_with(|s| encode(&req, &meta, s)).unwrap();
            if pushed.is_some() {
                sent += 1;
            }
        }
        let got = output.try_pop_with(|b| {
            slot[..b.len()].copy_from_slice(b);
            b.len()
        });
        if let Some(len) = got {
            let (h, rep) = decode::<AdderReply>(&slot[..len]).expect("valid reply envelope");
            let i = received;
            assert_eq!(h.correlation_id, i + 1, "replies in request order");
            assert_eq!(h.flags & FLAG_REPLY, FLAG_REPLY);
            assert_eq!((h.source, h.destination), (7, 0));
            let terms: Vec<u32> = (0..(i % 4) as u32).map(|t| t * 10 + 1).collect();
            let sum = 3 * i + terms.iter().map(|&t| u64::from(t)).sum::<u64>();
            total += sum;
            assert_eq!(
                rep,
                AdderReply { sum, running_total: total, echo: terms },
                "state persists across messages; generated C reader/writer agree with the Rust codec"
            );
            let ts = HlcTimestamp::from_packed(h.hlc, h.hlc_node);
            assert!(ts > last_hlc, "kernel HLC strictly increases");
            host.update(&ts).unwrap();
            last_hlc = ts;
            received += 1;
        }
    }
    // A malformed request and an unknown type are answered with typed error replies; the kernel
    // goes on.
    input
        .try_push_with(|s| {
            s[..8].copy_from_slice(b"garbage!");
            Ok::<_, ()>(8)
        })
        .unwrap()
        .unwrap();
    let meta = EnvelopeMeta { correlation_id: 99, source: 0, destination: 7, hlc: host.tick(), flags: 0 };
    input
        .try_push_with(|s| encode(&AdderReply { sum: 0, running_total: 0, echo: vec![] }, &meta, s))
        .unwrap()
        .unwrap();
    for expected in [(0u64, err::MALFORMED), (99, err::UNKNOWN_TYPE)] {
        let reply = loop {
            if let Some(b) = output.try_pop_with(|b| b.to_vec()) {
                break b;
            }
            std::thread::yield_now();
        };
        let (h, payload) = decode_header(&reply).unwrap();
        assert_eq!(h.flags & FLAG_ERROR_REPLY, FLAG_ERROR_REPLY);
        assert_eq!(h.correlation_id, expected.0);
        assert_eq!(u32::from_le_bytes(payload[..4].try_into().unwrap()), expected.1);
    }
    // A snapshot between two messages: the kernel copies its state into the mapped buffer.
    word(core::ptr::addr_of_mut!(params.ctl)).fetch_add(1 << ctl::SNAPSHOT_SHIFT, Ordering::Release);
    while word(core::ptr::addr_of_mut!(params.snapshot_done)).load(Ordering::Acquire) != 1 {
        std::thread::yield_now();
    }
    assert_eq!(u64::from(snapshot[0]) | (u64::from(snapshot[1]) << 32), total, "snapshot of the state");
    word(core::ptr::addr_of_mut!(params.ctl)).fetch_or(ctl::TERMINATE, Ordering::Release);
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert!(!cb.is_terminated(), "the kernel waits for EXIT before it ends");
    word(core::ptr::addr_of_mut!(params.ctl)).fetch_or(ctl::EXIT, Ordering::Release);
    device.join().unwrap();
    assert!(cb.is_terminated());
    assert_eq!(params.h2d_done, N + 2);
    assert_eq!(word(core::ptr::addr_of_mut!(params.failures)).load(Ordering::Acquire), 0);
    assert!(output.try_pop_with(|_| ()).is_none(), "nothing else left");
    assert_eq!(u64::from(state[0]) | (u64::from(state[1]) << 32), total, "state persists in device memory");
    assert_eq!(u64::from(state[2]), N, "second state field");
}

/// The host C kernel this test runs is the GPU's CUDA C kernel with only the device primitives
/// swapped, so what runs here is what NVRTC compiles.
#[test]
fn host_c_differs_from_cuda_c_only_in_the_primitives() {
    use ringkernel_codegen::c_family::CDialect;
    use ringkernel_codegen::cuda::CudaC;
    let host = adder_source::<HostC>();
    assert_eq!(host.matches(HostC::PRIMITIVES).count(), 1);
    assert_eq!(host.replace(HostC::PRIMITIVES, CudaC::PRIMITIVES), adder_source::<CudaC>());
    assert!(!host.contains("__nanosleep") && !host.contains("asm volatile"));
}
