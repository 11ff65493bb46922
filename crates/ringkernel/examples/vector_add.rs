//! Vector addition by a persistent kernel that keeps statistics across requests.
//!
//! `cargo run --example vector_add` (backend from `RINGKERNEL_BACKEND`, default `auto`).

use ringkernel::prelude::*;

/// Two vectors to add (the spec's `AddRequest`).
#[derive(RingMessage, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
#[message(type_id = 0x1001)]
struct AddRequest {
    a: Vec<f32>,
    b: Vec<f32>,
}

/// Their element-wise sum.
#[derive(RingMessage, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
#[message(type_id = 0x1002)]
struct AddResponse {
    sum: Vec<f32>,
}

/// Asks the kernel for its statistics.
#[derive(RingMessage, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
#[message(type_id = 0x1003)]
struct StatsRequest;

/// The kernel's persistent statistics.
#[derive(RingMessage, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
#[message(type_id = 0x1004)]
struct Stats {
    requests_served: u64,
    elements_added: u64,
    running_total: f64,
}

/// Kernel state, resident across messages.
#[derive(Default)]
struct Adder {
    requests_served: u64,
    elements_added: u64,
    running_total: f64,
}

#[ring_kernel(name = "vector_add")]
fn add(state: &mut Adder, req: AddRequest) -> Result<AddResponse, String> {
    if req.a.len() != req.b.len() {
        return Err(format!("length mismatch: {} vs {}", req.a.len(), req.b.len()));
    }
    let sum: Vec<f32> = req.a.iter().zip(&req.b).map(|(x, y)| x + y).collect();
    state.requests_served += 1;
    state.elements_added += sum.len() as u64;
    state.running_total += sum.iter().map(|&v| f64::from(v)).sum::<f64>();
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
