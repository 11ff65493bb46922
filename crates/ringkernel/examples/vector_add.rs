//! Vector addition by a persistent kernel that keeps statistics across requests.
//!
//! `cargo run --example vector_add` (backend from `RINGKERNEL_BACKEND`, default `auto`).
//! On the GPU: `RINGKERNEL_BACKEND=wgpu cargo run --features wgpu --example vector_add`; the
//! kernel then runs its WGSL handlers below, with its statistics kept in device memory, and
//! prints the same results. `RINGKERNEL_BACKEND=cuda cargo run --features cuda --example
//! vector_add` runs the CUDA C handlers as a persistent kernel on an NVIDIA GPU (or, with
//! `RINGKERNEL_CUDA_EMULATE=1`, on the host emulation).

use ringkernel::prelude::*;

/// Two vectors to add (the spec's `AddRequest`). The GPU word layout (`gpu`) lets WGSL handlers
/// read the variable-length arrays in place.
#[derive(RingMessage, GpuType, Debug, Clone)]
#[message(gpu, type_id = 0x1001)]
struct AddRequest {
    a: Vec<f32>,
    b: Vec<f32>,
}

/// Their element-wise sum.
#[derive(RingMessage, GpuType, Debug)]
#[message(gpu, type_id = 0x1002)]
struct AddResponse {
    sum: Vec<f32>,
}

/// Asks the kernel for its statistics.
#[derive(RingMessage, GpuType, Debug)]
#[message(gpu, type_id = 0x1003)]
struct StatsRequest;

/// The kernel's persistent statistics.
#[derive(RingMessage, GpuType, Debug)]
#[message(gpu, type_id = 0x1004)]
struct Stats {
    requests_served: u64,
    elements_added: u64,
    running_total: f32,
}

/// Kernel state, resident across messages (in device memory on a GPU backend).
#[derive(Default, GpuType)]
struct Adder {
    requests_served: u64,
    elements_added: u64,
    running_total: f32,
}

/// The same kernel for the wgpu backend: WGSL handlers written against the declarations that
/// `ringkernel-codegen` generates from the Rust types above.
#[cfg(feature = "wgpu")]
const ADDER_WGSL: &str = r#"
fn on_AddRequest(m: AddRequest) {
    if (m.a.len != m.b.len) {
        rk_error(1u);
        return;
    }
    var total = 0.0;
    for (var i = 0u; i < m.a.len; i++) {
        let s = rk_get_f32(m.a, i) + rk_get_f32(m.b, i);
        rk_scratch_set_f32(i, s);
        total += s;
    }
    rk_state.requests_served = rk_add64(rk_state.requests_served, rk_u64(1u));
    rk_state.elements_added = rk_add64(rk_state.elements_added, rk_u64(m.a.len));
    rk_state.running_total += total;
    rk_reply_AddResponse(AddResponse(rk_scratch_slice(0u, m.a.len, 1u)));
}
fn on_StatsRequest(m: StatsRequest) {
    rk_reply_Stats(Stats(rk_state.requests_served, rk_state.elements_added, rk_state.running_total));
}
"#;

/// The same kernel for the CUDA backend: CUDA C handlers against the generated declarations.
#[cfg(feature = "cuda")]
const ADDER_CUDA: &str = r#"
RK_DEVICE uint32_t on_AddRequest(rk_ctx* ctx, Adder* s, const AddRequest* m) {
    if (m->a.len != m->b.len) return rk_error(ctx, 1u);
    if (m->a.len * 4u > ctx->scratch_bytes) return rk_error(ctx, RK_ERR_TOO_LARGE);
    float* out = (float*)ctx->scratch;
    float total = 0.0f;
    for (uint32_t i = 0; i < m->a.len; i++) {
        out[i] = rk_slice_f32(m->a, i) + rk_slice_f32(m->b, i);
        total += out[i];
    }
    s->requests_served += 1u;
    s->elements_added += m->a.len;
    s->running_total += total;
    AddResponse r;
    r.sum.ptr = (const uint32_t*)out;
    r.sum.len = m->a.len;
    return rk_reply_AddResponse(ctx, &r);
}
RK_DEVICE uint32_t on_StatsRequest(rk_ctx* ctx, Adder* s, const StatsRequest* m) {
    (void)m;
    Stats r;
    r.requests_served = s->requests_served;
    r.elements_added = s->elements_added;
    r.running_total = s->running_total;
    return rk_reply_Stats(ctx, &r);
}
"#;

#[ring_kernel(name = "vector_add")]
fn add(state: &mut Adder, req: AddRequest) -> Result<AddResponse, String> {
    if req.a.len() != req.b.len() {
        return Err("length mismatch between a and b".to_string());
    }
    let sum: Vec<f32> = req.a.iter().zip(&req.b).map(|(x, y)| x + y).collect();
    state.requests_served += 1;
    state.elements_added += sum.len() as u64;
    state.running_total += sum.iter().sum::<f32>();
    Ok(AddResponse { sum })
}

#[ring_kernel(name = "vector_add")]
fn stats(state: &mut Adder, _req: StatsRequest) -> Stats {
    Stats {
        requests_served: state.requests_served,
        elements_added: state.elements_added,
        running_total: state.running_total,
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let runtime = RingKernel::builder().backend(Backend::from_env()?).build().await?;
    println!("Backend: {:?}", runtime.backend());
    // The GPU programs join the `#[ring_kernel]` handlers in one definition; the backend picks.
    #[allow(unused_mut)]
    let mut gpu = ringkernel::runtime::KernelDef::new::<Adder>("vector_add");
    #[cfg(feature = "wgpu")]
    {
        gpu = gpu.gpu(
            ringkernel::wgpu::WgslProgram::new::<Adder>(ADDER_WGSL)
                .handles::<AddRequest>()
                .handles::<StatsRequest>()
                .sends::<AddResponse>()
                .sends::<Stats>()
                .error_text(1, "length mismatch between a and b"),
        );
    }
    #[cfg(feature = "cuda")]
    {
        gpu = gpu.gpu(
            ringkernel::cuda::CudaProgram::new::<Adder>(ADDER_CUDA)
                .handles::<AddRequest>()
                .handles::<StatsRequest>()
                .sends::<AddResponse>()
                .sends::<Stats>()
                .error_text(1, "length mismatch between a and b"),
        );
    }
    if !gpu.gpu_backends().is_empty() {
        runtime.register(gpu)?;
    }
    // 256 floats per vector need about 2 KiB per message; give slots room.
    let kernel = runtime.launch("vector_add", LaunchOptions::default().with_max_message_bytes(8192)).await?;

    for round in 0..4u32 {
        let n = 256;
        let a: Vec<f32> = (0..n).map(|i| (i as f32) * 0.5 + round as f32).collect();
        let b: Vec<f32> = (0..n).map(|i| 1.0 - i as f32).collect();
        let resp: AddResponse = kernel.call(AddRequest { a: a.clone(), b: b.clone() }).await?;
        assert!(resp.sum.iter().zip(a.iter().zip(&b)).all(|(s, (x, y))| *s == x + y));
        println!("round {round}: sum[0..4] = {:?}", &resp.sum[..4]);
    }

    // A malformed request is an error for this call only; the kernel keeps serving.
    let bad: Result<AddResponse> = kernel.call(AddRequest { a: vec![1.0], b: vec![] }).await;
    println!("mismatched lengths -> {}", bad.unwrap_err());

    let stats: Stats = kernel.call(StatsRequest).await?;
    println!(
        "persistent state: {} requests served, {} elements added, running total {:.1}",
        stats.requests_served, stats.elements_added, stats.running_total
    );

    kernel.terminate().await?;
    runtime.shutdown().await?;
    Ok(())
}
