//! The Quick Start: build a runtime, launch a kernel, look at it, stop it.
//!
//! `cargo run --example hello_kernel` (backend from `RINGKERNEL_BACKEND`, default `auto`).

use ringkernel::prelude::*;

/// A greeting for the kernel.
#[derive(RingMessage, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
struct Hello {
    name: String,
}

/// The kernel's answer.
#[derive(RingMessage, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
struct Greeting {
    text: String,
    count: u64,
}

/// Persistent state: how many greetings this kernel has given.
#[derive(Default)]
struct Greeter {
    greeted: u64,
}

#[ring_kernel(name = "my_kernel")]
fn greet(state: &mut Greeter, msg: Hello) -> Greeting {
    state.greeted += 1;
    Greeting { text: format!("hello, {}!", msg.name), count: state.greeted }
}

#[tokio::main]
async fn main() -> Result<()> {
    // Create runtime with auto-detected backend
    let runtime = RingKernel::builder().backend(Backend::from_env()?).build().await?;
    println!("Backend: {:?}", runtime.backend());

    // Launch a kernel
    let kernel = runtime.launch("my_kernel", LaunchOptions::default()).await?;

    // Kernel is automatically activated
    println!("Kernel state: {:?}", kernel.status().state);

    for name in ["GPU", "world"] {
        let reply: Greeting = kernel.call(Hello { name: name.into() }).await?;
        println!("{} (greeting #{})", reply.text, reply.count);
    }

    // Terminate when done
    kernel.terminate().await?;
    println!("Kernel state: {:?}", kernel.status().state);
    runtime.shutdown().await?;

    Ok(())
}
