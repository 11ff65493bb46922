//! A backend the facade has never heard of, written here against `ringkernel::backend` only: one
//! thread that serves every kernel placed on it with the core's host executor. It proves that
//! the runtime works with any `Backend` + `BackendProvider` (selection, placement, launch,
//! messaging, K2K, lifecycle, snapshots' default answer, shutdown), without a line of the
//! facade knowing it.

use ringkernel::backend::{
    Backend as BackendImpl, BackendKind, BackendProvider, Directory, Doorbell, HostExecutor, KernelCell,
    OpenRequest, RunOutcome,
};
use ringkernel::prelude::*;
use ringkernel::runtime::KernelDef as Def;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

const SOLO: BackendKind = BackendKind::Custom("solo");

/// Settings of the solo backend, handed over through `RuntimeBuilder::backend_config`.
#[derive(Clone, Debug)]
struct SoloConfig {
    /// Kernels whose name starts with this run on it; the others go to the CPU pool.
    prefix: &'static str,
    /// `open` fails with this text.
    refuse: Option<&'static str>,
}

struct SoloProvider;

impl BackendProvider for SoloProvider {
    fn kind(&self) -> BackendKind {
        SOLO
    }
    fn probe(&self) -> Result<(), String> {
        Ok(())
    }
    fn open(&self, request: &OpenRequest<'_>) -> Result<Arc<dyn BackendImpl>, String> {
        let config = request.config::<SoloConfig>().unwrap_or(SoloConfig { prefix: "", refuse: None });
        if let Some(why) = config.refuse {
            return Err(why.to_string());
        }
        Ok(Arc::new(Solo::start(config.prefix)))
    }
}

/// Kernels ready to run, by doorbell.
struct Bell {
    tx: Mutex<Sender<Job>>,
    cell: std::sync::Weak<KernelCell>,
}

enum Job {
    Attach(Arc<KernelCell>, Option<Arc<Def>>, Arc<Directory>),
    Run(u32),
    Stop,
}

impl Doorbell for Bell {
    fn ring(&self) {
        if let Some(c) = self.cell.upgrade() {
            let _ = self.tx.lock().unwrap().send(Job::Run(c.id().0));
        }
    }
}

struct Solo {
    prefix: &'static str,
    tx: Mutex<Sender<Job>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    attached: AtomicUsize,
    stopped: AtomicBool,
}

impl Solo {
    fn start(prefix: &'static str) -> Self {
        let (tx, rx) = channel();
        let again = tx.clone();
        let thread = std::thread::spawn(move || serve(rx, again));
        Self {
            prefix,
            tx: Mutex::new(tx),
            thread: Mutex::new(Some(thread)),
            attached: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
        }
    }
}

/// The backend's one thread: runs each kernel whose doorbell rang until it has nothing to do; a
/// kernel that yields (its budget is spent, or a K2K target is full) goes behind the others.
fn serve(rx: Receiver<Job>, again: Sender<Job>) {
    let mut execs: std::collections::HashMap<u32, HostExecutor> = Default::default();
    while let Ok(job) = rx.recv() {
        match job {
            Job::Attach(cell, def, dir) => {
                execs.insert(cell.id().0, HostExecutor::new(&cell, def.as_ref(), &dir));
            }
            Job::Run(id) => {
                let Some(exec) = execs.get_mut(&id) else { continue };
                match exec.run(64) {
                    RunOutcome::Yield => {
                        let _ = again.send(Job::Run(id));
                    }
                    RunOutcome::Idle => {}
                    RunOutcome::Terminated => {
                        execs.remove(&id);
                    }
                }
            }
            Job::Stop => return,
        }
    }
}

impl BackendImpl for Solo {
    fn kind(&self) -> BackendKind {
        SOLO
    }
    fn device(&self) -> String {
        "one test thread".into()
    }
    fn can_run(&self, def: Option<&Def>) -> bool {
        def.is_some_and(|d| d.name().starts_with(self.prefix) && d.has_cpu_handlers())
    }
    fn attach(&self, cell: &Arc<KernelCell>, def: Option<&Arc<Def>>, dir: &Arc<Directory>) -> Result<()> {
        let tx = self.tx.lock().unwrap().clone();
        tx.send(Job::Attach(cell.clone(), def.cloned(), dir.clone())).map_err(|_| Error::ShutDown)?;
        cell.set_doorbell(Arc::new(Bell { tx: Mutex::new(tx), cell: Arc::downgrade(cell) }));
        self.attached.fetch_add(1, Ordering::Relaxed);
        cell.ring();
        Ok(())
    }
    fn shutdown(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.tx.lock().unwrap().send(Job::Stop);
        if let Some(t) = self.thread.lock().unwrap().take() {
            let _ = t.join();
        }
    }
    fn as_any(&self) -> &dyn core::any::Any {
        self
    }
}

#[derive(RingMessage, IntoBytes, FromBytes, Immutable, KnownLayout, Clone, Copy, Debug, PartialEq)]
#[message(pod, type_id = 0x5010)]
#[repr(C)]
struct Add {
    n: u64,
}

#[derive(RingMessage, IntoBytes, FromBytes, Immutable, KnownLayout, Clone, Copy, Debug, PartialEq)]
#[message(pod, type_id = 0x5011)]
#[repr(C)]
struct Sum {
    total: u64,
}

/// A kernel that emits its running sum to the host for every `Add`.
fn sink(name: &str) -> KernelDef {
    KernelDef::new::<u64>(name).on(|total: &mut u64, a: Add, ctx: &mut Context<'_>| -> Result<()> {
        *total += a.n;
        ctx.emit(Sum { total: *total })
    })
}

/// A summing kernel that answers its running sum; with `next`, it forwards each `Add` there by
/// K2K instead.
fn summer(name: &str, next: Option<&'static str>) -> KernelDef {
    KernelDef::new::<u64>(name).on(
        move |total: &mut u64, a: Add, ctx: &mut Context<'_>| -> Result<Option<Sum>> {
            *total += a.n;
            match next {
                Some(t) => ctx.send_to(t, Add { n: a.n }).map(|()| None),
                None => Ok(Some(Sum { total: *total })),
            }
        },
    )
}

fn builder(prefix: &'static str) -> RuntimeBuilder {
    RingKernel::builder()
        .provider(Arc::new(SoloProvider))
        .backend_config(SoloConfig { prefix, refuse: None })
        .workers(2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_runs_kernels_on_a_backend_it_never_heard_of() {
    let rt = builder("solo_")
        .backend(SOLO)
        .kernel(summer("solo_a", Some("solo_b")))
        .kernel(sink("solo_b"))
        .kernel(summer("solo_echo", None))
        .kernel(summer("pool_c", None))
        .build()
        .await
        .unwrap();
    assert_eq!(rt.backend(), SOLO);
    assert_eq!(rt.adapter().as_deref(), Some("one test thread"));
    let a = rt.launch("solo_a", LaunchOptions::default()).await.unwrap();
    let b = rt.launch("solo_b", LaunchOptions::default()).await.unwrap();
    let echo = rt.launch("solo_echo", LaunchOptions::default()).await.unwrap();
    // No program or handler the solo backend takes: placed on the CPU pool, and the status says so.
    let c = rt.launch("pool_c", LaunchOptions::default()).await.unwrap();
    let placed = |k: &KernelHandle| k.status().placement.expect("placed").backend;
    assert_eq!((placed(&a), placed(&b), placed(&c)), (SOLO, SOLO, Backend::Cpu));
    assert!(c.status().placement.unwrap().device.contains("CPU worker"));

    // Request/reply, one-way + receive, and K2K between two kernels of the custom backend.
    assert_eq!(echo.call::<_, Sum>(Add { n: 2 }).await.unwrap(), Sum { total: 2 });
    b.send(Add { n: 2 }).await.unwrap();
    // Sent from another task: b's output queue holds 16, so the sends wait for the receives.
    let sender = {
        let a = a.clone();
        tokio::spawn(async move {
            for n in 1..=100 {
                a.send(Add { n }).await.unwrap();
            }
        })
    };
    let mut last = Sum { total: 0 };
    for _ in 0..=100 {
        last = b.receive().await.unwrap();
    }
    sender.await.unwrap();
    assert_eq!(last, Sum { total: 2 + 5050 });
    assert_eq!(c.call::<_, Sum>(Add { n: 7 }).await.unwrap(), Sum { total: 7 });

    // Lifecycle through the cell the backend serves.
    a.deactivate().await.unwrap();
    a.activate().await.unwrap();
    let report = a.terminate().await.unwrap();
    assert_eq!(report.messages_processed, 100);
    assert_eq!(rt.backend_impl::<Solo>().expect("the solo backend").attached.load(Ordering::Relaxed), 3);
    // The default snapshot answer of a backend without snapshots is a typed error.
    #[derive(ringkernel::GpuType, Default, Debug)]
    struct Words {
        total: u64,
    }
    assert!(matches!(rt.state_snapshot::<Words>(&b), Err(Error::Unsupported { backend: "solo", .. })));
    rt.shutdown().await.unwrap();
    assert!(rt.backend_impl::<Solo>().unwrap().stopped.load(Ordering::Relaxed));
}

#[tokio::test]
async fn auto_tries_an_added_provider_first_and_moves_on_when_it_refuses() {
    let rt = builder("").kernel(summer("any", None)).build().await.unwrap();
    assert_eq!(rt.backend(), SOLO, "Backend::Auto opened the added provider");
    let k = rt.launch("any", LaunchOptions::default()).await.unwrap();
    assert_eq!(k.status().placement.unwrap().backend, SOLO);
    rt.shutdown().await.unwrap();

    let refused = SoloConfig { prefix: "", refuse: Some("no test device today") };
    let rt = builder("").backend_config(refused.clone()).backend(Backend::Auto).build().await.unwrap();
    assert_ne!(rt.backend(), SOLO, "Auto moved on to the next backend");
    rt.shutdown().await.unwrap();
    match builder("").backend_config(refused).backend(SOLO).build().await {
        Err(Error::BackendUnavailable { backend: "solo", reason }) => {
            assert_eq!(reason, "no test device today")
        }
        other => panic!("expected BackendUnavailable, got {other:?}"),
    }
    match RingKernel::builder().backend(BackendKind::Custom("nobody")).build().await {
        Err(Error::BackendUnavailable { backend: "nobody", reason }) => {
            assert!(reason.contains("RuntimeBuilder::provider"), "{reason}")
        }
        other => panic!("expected BackendUnavailable, got {other:?}"),
    }
}

/// A program for a backend this runtime does not have.
struct Elsewhere;

impl ringkernel::runtime::GpuProgram for Elsewhere {
    fn backend(&self) -> Backend {
        BackendKind::Custom("elsewhere")
    }
    fn handled_types(&self) -> Vec<(u64, core::any::TypeId, &'static str)> {
        vec![(<Add as RingMessage>::message_type(), core::any::TypeId::of::<Add>(), "Add")]
    }
    fn payload_check(&self, _type_id: u64) -> Option<ringkernel::runtime::PayloadCheck> {
        None
    }
    fn as_any(&self) -> &dyn core::any::Any {
        self
    }
}

#[tokio::test]
async fn a_kernel_no_backend_can_run_is_refused_with_the_reason() {
    let rt = builder("solo_")
        .backend(SOLO)
        .kernel(KernelDef::new::<u64>("solo_gpu_only").gpu(Elsewhere))
        .kernel(KernelDef::new::<u64>("mailbox"))
        .build()
        .await
        .unwrap();
    match rt.launch("solo_gpu_only", LaunchOptions::default()).await {
        Err(Error::KernelDefinition { kernel, detail }) => {
            assert_eq!(kernel, "solo_gpu_only");
            assert!(detail.contains("elsewhere") && detail.contains("solo and cpu"), "{detail}");
        }
        other => panic!("expected KernelDefinition, got {other:?}"),
    }
    // Neither handlers nor programs: a mailbox only the host reads, which the CPU pool hosts.
    let k = rt.launch("mailbox", LaunchOptions::default()).await.unwrap();
    assert_eq!(k.status().placement.unwrap().backend, Backend::Cpu);
    rt.shutdown().await.unwrap();
}
