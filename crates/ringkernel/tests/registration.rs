//! Kernel registration: `#[ring_kernel]` functions are found by name, several functions form one
//! kernel, conflicting definitions and duplicate message type ids are clear errors.

use ringkernel::prelude::*;

#[derive(RingMessage, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
#[message(type_id = 0x9001)]
struct Inc(u32);

#[derive(RingMessage, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
#[message(type_id = 0x9002)]
struct Get;

#[derive(RingMessage, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
#[message(type_id = 0x9001)]
struct SameIdAsInc(u8);

#[derive(Default)]
struct Acc(u64);

#[ring_kernel(name = "acc")]
fn inc(state: &mut Acc, m: Inc) -> Inc {
    state.0 += u64::from(m.0);
    Inc(state.0 as u32)
}

#[ring_kernel(name = "acc")]
fn get(state: &mut Acc, _m: Get, ctx: &mut Context<'_>) -> Inc {
    assert_eq!(ctx.kernel_name(), "acc");
    Inc(state.0 as u32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribute_kernels_are_launched_by_name() {
    let rt = RingKernel::builder().backend(Backend::Cpu).build().await.unwrap();
    assert!(rt.registered_kernels().contains(&"acc".to_string()));
    let k = rt.launch("acc", LaunchOptions::default()).await.unwrap();
    let _: Inc = k.call(Inc(3)).await.unwrap();
    let _: Inc = k.call(Inc(4)).await.unwrap();
    assert_eq!(k.call::<_, Inc>(Get).await.unwrap(), Inc(7));
    assert!(matches!(rt.launch("acc", LaunchOptions::default()).await, Err(Error::AlreadyLaunched(_))));
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn duplicate_type_ids_are_rejected() {
    let def = KernelDef::new::<u8>("other").on(|_: &mut u8, _m: SameIdAsInc, _: &mut Context<'_>| {});
    let err = RingKernel::builder().backend(Backend::Cpu).kernel(def).build().await.unwrap_err();
    match err {
        Error::Registry(e) => {
            let text = e.to_string();
            assert!(
                text.contains("0x9001") && text.contains("SameIdAsInc") && text.contains("Inc"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn conflicting_state_types_are_rejected() {
    let def = KernelDef::new::<String>("acc").on(|_: &mut String, _m: Get, _: &mut Context<'_>| {});
    let err = RingKernel::builder().backend(Backend::Cpu).kernel(def).build().await.unwrap_err();
    assert!(matches!(err, Error::KernelDefinition { .. }), "{err:?}");
}

#[tokio::test]
async fn unavailable_backends_are_clear_errors() {
    for b in [Backend::Cuda, Backend::Wgpu, Backend::Metal] {
        match RingKernel::builder().backend(b).build().await {
            Err(Error::BackendUnavailable { backend, reason }) => {
                assert_eq!(backend, b.name());
                assert!(!reason.is_empty());
            }
            // With the `wgpu` feature and an adapter (lavapipe in CI), wgpu is available.
            Ok(rt) if b == Backend::Wgpu && cfg!(feature = "wgpu") => {
                assert_eq!(rt.backend(), Backend::Wgpu);
                assert!(rt.adapter().is_some());
                rt.shutdown().await.unwrap();
            }
            // With the `cuda` feature on a machine with a GPU (or RINGKERNEL_CUDA_EMULATE=1).
            Ok(rt) if b == Backend::Cuda && cfg!(feature = "cuda") => {
                assert_eq!(rt.backend(), Backend::Cuda);
                assert!(rt.adapter().is_some());
                rt.shutdown().await.unwrap();
            }
            other => panic!("{b:?}: {other:?}"),
        }
    }
    let rt = RingKernel::builder().backend(Backend::Auto).build().await.unwrap();
    #[cfg(feature = "wgpu")]
    let hardware = ringkernel::wgpu::probe().is_ok();
    #[cfg(not(feature = "wgpu"))]
    let hardware = false;
    #[cfg(feature = "cuda")]
    let hardware = hardware || ringkernel::cuda::probe().is_ok();
    if !hardware {
        assert_eq!(rt.backend(), Backend::Cpu, "Auto falls back to the CPU");
    }
    rt.shutdown().await.unwrap();
}
