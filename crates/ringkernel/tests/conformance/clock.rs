//! Causal order through the host: whatever the host sends after receiving a message is stamped
//! later than that message, on every receive path (`receive`, `call` replies).

use super::*;

#[cfg(feature = "wgpu")]
const STAMP_WGSL: &str = "fn on_Num(m: Num) { rk_reply_Total(Total(rk_msg_hlc(), rk_u64(0u))); }";

#[cfg(feature = "cuda")]
const STAMP_CUDA: &str = r#"
RK_DEVICE uint32_t on_Num(rk_ctx* ctx, Seen* s, const Num* m) {
    (void)s; (void)m;
    Total t;
    t.count = ctx->msg->hlc;
    t.sum = 0u;
    return rk_reply_Total(ctx, &t);
}
"#;

/// Answers each `Num` with the packed HLC timestamp the message arrived with (in `count`).
fn stamp_def(name: &str) -> KernelDef {
    let def = KernelDef::new::<Seen>(name).on(|_s: &mut Seen, _n: Num, ctx: &mut Context<'_>| Total {
        count: ctx.message_timestamp().packed(),
        sum: 0,
    });
    #[cfg(feature = "wgpu")]
    let def =
        def.gpu(ringkernel::wgpu::WgslProgram::new::<Seen>(STAMP_WGSL).handles::<Num>().sends::<Total>());
    #[cfg(feature = "cuda")]
    let def =
        def.gpu(ringkernel::cuda::CudaProgram::new::<Seen>(STAMP_CUDA).handles::<Num>().sends::<Total>());
    def
}

pub(super) async fn causal_through_host(backend: Setup) {
    let defs = vec![counter_def("source"), stamp_def("stamp")];
    let Some(rt) = runtime_with(backend, defs).await else { return };
    let source = rt.launch("source", LaunchOptions::default()).await.unwrap();
    let stamp = rt.launch("stamp", LaunchOptions::default()).await.unwrap();
    for i in 0..300u64 {
        // An output taken with `receive`: the next message the host sends is later.
        source.send(Num { seq: i, value: 1 }).await.unwrap();
        let out = source.receive_envelope::<Total>().await.unwrap();
        assert_eq!(out.meta.source, source.id(), "the envelope names its kernel");
        assert_eq!(out.meta.correlation_id, 0, "an emitted output answers no call");
        assert_eq!(out.message.count, i + 1);
        let seen: Total = stamp.call(Num { seq: i, value: 0 }).await.unwrap();
        let t_out = out.meta.timestamp.packed();
        assert!(
            seen.count > t_out,
            "round {i}: a message sent after receiving an output stamped {t_out:#x} was stamped {:#x}",
            seen.count
        );
    }
    rt.shutdown().await.unwrap();
}
