//! Panics inside the runtime: a handler error text that cannot be cut anywhere, and a panic in
//! the backend's own host code (injected through a test-only hook). Either way only the kernel
//! concerned is affected and the backend's thread keeps serving the others.

use super::*;

/// Makes the handler fail the current request (not the kernel) with error `code`.
#[derive(RingMessage, GpuType, Clone, Copy, Debug)]
#[message(gpu, type_id = 0x5010)]
pub(crate) struct Oops {
    code: u32,
}

/// Error texts (codes 1 to 3) longer than any reply slot, made of three-byte characters after 0,
/// 1 and 2 ASCII bytes: whatever the room for the text, one of them has a character across the
/// cut. (Code 0 is not an error code on the GPU backends.)
fn oops_text(code: u32) -> String {
    format!("{}{}", "a".repeat(code as usize - 1), "€".repeat(400))
}

#[cfg(feature = "wgpu")]
const OOPS_WGSL: &str = r#"
fn on_Num(m: Num) {
    rk_state.count = rk_add64(rk_state.count, rk_u64(1u));
    rk_state.sum = rk_add64(rk_state.sum, m.value);
    rk_reply_Total(Total(rk_state.count, rk_state.sum));
}
fn on_Oops(m: Oops) {
    rk_error(m.code);
}
"#;

#[cfg(feature = "cuda")]
const OOPS_CUDA: &str = r#"
RK_DEVICE uint32_t on_Num(rk_ctx* ctx, Counter* s, const Num* m) {
    s->count += 1u;
    s->sum += m->value;
    Total t;
    t.count = s->count;
    t.sum = s->sum;
    return rk_reply_Total(ctx, &t);
}
RK_DEVICE uint32_t on_Oops(rk_ctx* ctx, Counter* s, const Oops* m) {
    (void)s;
    return rk_error(ctx, m->code);
}
"#;

/// A counter that answers `Oops { code }` with the error text `oops_text(code)` (codes 1 to 3).
fn oops_def(name: &str) -> KernelDef {
    let def = KernelDef::new::<Counter>(name)
        .on(|s: &mut Counter, n: Num, _ctx: &mut Context<'_>| {
            s.count += 1;
            s.sum += n.value;
            Total { count: s.count, sum: s.sum }
        })
        .on(|_s: &mut Counter, o: Oops, _ctx: &mut Context<'_>| -> core::result::Result<Total, String> {
            Err(oops_text(o.code))
        });
    #[cfg(feature = "wgpu")]
    let def = def.gpu(
        ringkernel::wgpu::WgslProgram::new::<Counter>(OOPS_WGSL)
            .handles::<Num>()
            .handles::<Oops>()
            .sends::<Total>()
            .error_text(1, oops_text(1))
            .error_text(2, oops_text(2))
            .error_text(3, oops_text(3)),
    );
    #[cfg(feature = "cuda")]
    let def = def.gpu(
        ringkernel::cuda::CudaProgram::new::<Counter>(OOPS_CUDA)
            .handles::<Num>()
            .handles::<Oops>()
            .sends::<Total>()
            .error_text(1, oops_text(1))
            .error_text(2, oops_text(2))
            .error_text(3, oops_text(3)),
    );
    def
}

/// A handler error whose text has a multi-byte character at the truncation point: the call gets
/// a typed error with a prefix of the text cut at a character boundary, and the kernel (and its
/// backend thread) keeps serving.
pub(crate) async fn multibyte_error_text(backend: Setup) {
    let Some(rt) = runtime_with(backend, vec![oops_def("oops")]).await else { return };
    let k = rt.launch("oops", LaunchOptions::default()).await.unwrap();
    let room = LaunchOptions::default().slot_size() - ringkernel::message::ENVELOPE_HEADER_SIZE;
    for code in 1..=3u32 {
        match k.call::<_, Total>(Oops { code }).await {
            Err(Error::Handler { detail, .. }) => {
                assert!(detail.len() <= room, "{} bytes > {room}", detail.len());
                assert!(detail.len() + 3 > room, "cut at the last boundary: {} of {room}", detail.len());
                let body = detail.rsplit_once("error: ").map_or(detail.as_str(), |(_, b)| b);
                assert!(oops_text(code).starts_with(body), "a prefix of the text: {detail:?}");
            }
            other => panic!("code {code}: expected Error::Handler, got {other:?}"),
        }
        let t: Total = k.call(Num { seq: u64::from(code), value: 1 }).await.unwrap();
        assert_eq!(t.count, u64::from(code), "the kernel keeps serving");
    }
    assert_eq!(k.status().state, KernelState::Active);
    rt.shutdown().await.unwrap();
}

/// A panic in the backend's own host code while it serves one kernel (the test-only
/// `inject_runtime_fault` hook): that kernel fails with the panic
/// text, its waiting call gets `KernelFailed`, its queued one-way messages come back from
/// terminate, and a kernel on the same backend keeps serving.
pub(crate) async fn runtime_panic_fails_one_kernel(backend: Setup) {
    let Some(rt) = runtime_with(backend, vec![counter_def("victim"), counter_def("bystander")]).await else {
        return;
    };
    let k = rt.launch("victim", LaunchOptions::default().inactive()).await.unwrap();
    let other = rt.launch("bystander", LaunchOptions::default()).await.unwrap();
    let t: Total = other.call(Num { seq: 0, value: 1 }).await.unwrap();
    assert_eq!(t.count, 1);
    // Two one-way messages and a call wait in the inactive kernel's queue; then the backend's
    // code panics while serving it.
    k.send(Num { seq: 1, value: 1 }).await.unwrap();
    k.send(Num { seq: 2, value: 2 }).await.unwrap();
    let call = {
        let k = k.clone();
        tokio::spawn(async move { k.call::<_, Total>(Num { seq: 3, value: 3 }).await })
    };
    while k.status().input_queue_depth < 3 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    k.cell().inject_runtime_fault();
    let err = call.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::KernelFailed { .. }), "{err:?}");
    let st = k.status();
    assert_eq!(st.state, KernelState::Failed);
    let last = st.last_error.unwrap_or_default();
    assert!(last.contains("panicked") && last.contains("injected runtime fault"), "{last}");
    assert!(matches!(k.send(Num { seq: 4, value: 4 }).await, Err(Error::NotAccepting { .. })));
    // The backend's thread survived: the other kernel keeps serving.
    for i in 2..10u64 {
        let t: Total = other.call(Num { seq: i, value: 1 }).await.unwrap();
        assert_eq!(t.count, i);
    }
    let report = k.terminate().await.unwrap();
    assert_eq!(k.status().state, KernelState::Terminated);
    if matches!(backend.backend, Backend::Cpu | Backend::Wgpu) {
        // The host side still held them (an inactive wgpu kernel's input stays on the host).
        let mut returned: Vec<Num> = report.returned.iter().map(|m| m.decode::<Num>().unwrap()).collect();
        returned.sort_by_key(|n| n.seq);
        assert_eq!(returned, vec![Num { seq: 1, value: 1 }, Num { seq: 2, value: 2 }]);
    } else {
        // A device kernel is the only consumer of its queue: what was queued is handled when it
        // terminates (answers in the output queue) or handed back, never lost.
        let mut outputs = 0;
        while let Ok(Some(_)) = k.try_receive::<Total>() {
            outputs += 1;
        }
        assert!(report.returned.len() + outputs >= 2, "{report:?}, {outputs} outputs");
    }
    let report = other.terminate().await.unwrap();
    assert_eq!(report.messages_processed, 9);
    rt.shutdown().await.unwrap();
}

/// A panic in the CPU executor's own code in the middle of a batch (test hook: right after the
/// first message was handled), the rest of the claimed batch is not lost but handed back with the queue,
/// the waiting call fails with `KernelFailed`, and the in-flight count returns to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_runtime_panic_mid_batch_loses_nothing() {
    let Some(rt) = runtime_with(Backend::Cpu.into(), vec![counter_def("victim")]).await else { return };
    let k = rt.launch("victim", LaunchOptions::default().inactive()).await.unwrap();
    for seq in 1..=3 {
        k.send(Num { seq, value: seq }).await.unwrap();
    }
    let call = {
        let k = k.clone();
        tokio::spawn(async move { k.call::<_, Total>(Num { seq: 4, value: 4 }).await })
    };
    while k.status().input_queue_depth < 4 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    k.cell().inject_message_fault();
    k.activate().await.unwrap();
    let err = call.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::KernelFailed { .. }), "{err:?}");
    let report = k.terminate().await.unwrap();
    let mut returned: Vec<u64> = report.returned.iter().map(|m| m.decode::<Num>().unwrap().seq).collect();
    returned.sort_unstable();
    assert_eq!(returned, vec![2, 3], "the batch after the panicking message is handed back");
    assert_eq!(k.status().messages_in_flight, 0);
    assert_eq!(report.messages_processed, 1, "the first message was handled before the panic");
    rt.shutdown().await.unwrap();
}

/// A runtime panic in a kernel that a handler panic already failed is its first runtime panic,
/// not a second one: the rest of the batch is still handed back (before, the "second panic" path
/// dropped it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_runtime_panic_after_handler_panic_loses_nothing() {
    let Some(rt) = runtime_with(Backend::Cpu.into(), vec![counter_def("victim")]).await else { return };
    let k = rt.launch("victim", LaunchOptions::default().inactive()).await.unwrap();
    k.send(Boom { code: 1 }).await.unwrap();
    for seq in 1..=3 {
        k.send(Num { seq, value: seq }).await.unwrap();
    }
    k.cell().inject_message_fault();
    // Boom's handler panics (the kernel fails), then the runtime panics right after it.
    k.activate().await.unwrap();
    let report = k.terminate().await.unwrap();
    let mut returned: Vec<u64> =
        report.returned.iter().filter_map(|m| m.decode::<Num>().ok()).map(|n| n.seq).collect();
    returned.sort_unstable();
    assert_eq!(returned, vec![1, 2, 3], "the batch after the failing message is handed back");
    assert_eq!(k.status().messages_in_flight, 0);
    rt.shutdown().await.unwrap();
}
