//! Fuzz the raw-byte ingress (`KernelHandle::try_send_bytes`) of a running kernel: any bytes are
//! queued or refused with a typed error, never a panic, and the kernel keeps serving. The backend
//! is `RINGKERNEL_BACKEND` (cpu by default; build with `--features wgpu` or `--features cuda`,
//! and `RINGKERNEL_CUDA_EMULATE=1` for the CUDA host emulation).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkernel::prelude::*;
use std::sync::OnceLock;

#[derive(RingMessage, GpuType, Clone, Copy, Debug)]
#[message(gpu, type_id = 0x6001)]
struct Num {
    seq: u64,
    value: u64,
}

#[derive(RingMessage, GpuType, Clone, Debug)]
#[message(gpu, type_id = 0x6002)]
struct Words {
    data: Vec<u32>,
}

#[derive(Default, GpuType)]
struct Sum {
    total: u64,
}

fn def() -> KernelDef {
    let def = KernelDef::new::<Sum>("fuzzed")
        .on(|s: &mut Sum, n: Num, _: &mut Context<'_>| {
            s.total = s.total.wrapping_add(n.value);
            Num { seq: n.seq, value: s.total }
        })
        .on(|s: &mut Sum, w: Words, _: &mut Context<'_>| {
            s.total = s.total.wrapping_add(w.data.len() as u64);
            Num { seq: 0, value: s.total }
        });
    #[cfg(feature = "wgpu")]
    let def = def.gpu(
        ringkernel::wgpu::WgslProgram::new::<Sum>(
            "fn on_Num(m: Num) { rk_state.total = rk_add64(rk_state.total, m.value); rk_reply_Num(Num(m.seq, rk_state.total)); }\n\
             fn on_Words(m: Words) { rk_state.total = rk_add64(rk_state.total, rk_u64(m.data.len)); rk_reply_Num(Num(rk_u64(0u), rk_state.total)); }",
        )
        .handles::<Num>()
        .handles::<Words>(),
    );
    #[cfg(feature = "cuda")]
    let def = def.gpu(
        ringkernel::cuda::CudaProgram::new::<Sum>(
            "RK_DEVICE uint32_t on_Num(rk_ctx* ctx, Sum* s, const Num* m) { s->total += m->value; Num r; r.seq = m->seq; r.value = s->total; return rk_reply_Num(ctx, &r); }\n\
             RK_DEVICE uint32_t on_Words(rk_ctx* ctx, Sum* s, const Words* m) { s->total += m->data.len; Num r; r.seq = 0; r.value = s->total; return rk_reply_Num(ctx, &r); }",
        )
        .handles::<Num>()
        .handles::<Words>(),
    );
    def
}

struct Fixture {
    _tokio: tokio::runtime::Runtime,
    _rt: RingKernel,
    kernel: KernelHandle,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let backend = Backend::from_env().expect("RINGKERNEL_BACKEND");
        let (rt, kernel) = tokio.block_on(async {
            let rt = RingKernel::builder().backend(backend).kernel(def()).build().await.expect("runtime");
            let k = rt.launch("fuzzed", LaunchOptions::default().with_max_message_bytes(512)).await.expect("launch");
            (rt, k)
        });
        Fixture { _tokio: tokio, _rt: rt, kernel }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    match f.kernel.try_send_bytes(data) {
        Ok(()) | Err(Error::QueueFull(_)) => {}
        Err(Error::Decode(_) | Error::Oversized { .. } | Error::UnknownMessageType { .. } | Error::Hlc(_)) => {}
        Err(e) => panic!("unexpected ingress error: {e}"),
    }
    // Outputs are read as they come, so the kernel never stalls on a full output queue.
    while let Ok(Some(_)) = f.kernel.try_receive::<Num>() {}
    assert_eq!(f.kernel.status().state, KernelState::Active, "the kernel keeps serving");
});
