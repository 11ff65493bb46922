//! The runtime object users hold ([`RingKernel`]) and its builder: backend selection, kernel
//! catalog, placement of kernels on backends, launch, shutdown.
//!
//! The runtime knows backends only through `ringkernel_core::backend`: it opens one GPU backend
//! (the one asked for, or the first that `Backend::Auto` finds usable) and always the CPU
//! backend, and places each kernel on the first of them that can run its definition.

use ringkernel_core::backend::{Backend as BackendImpl, BackendConfigs, BackendProvider, OpenRequest};
use ringkernel_core::message::KernelId;
use ringkernel_core::runtime::{
    Backend, Directory, KernelCatalog, KernelCell, KernelDef, KernelGroup, KernelHandle, KernelState,
    LaunchOptions, Placement,
};
use ringkernel_core::{Error, Result};
use ringkernel_cpu::CpuConfig;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// The GPU backends compiled in, in the order `Backend::Auto` tries them. Adding a backend is one
/// line here (and a Cargo feature); see docs/02-crate-structure.md.
fn builtin_providers() -> Vec<Arc<dyn BackendProvider>> {
    vec![
        #[cfg(feature = "cuda")]
        Arc::new(ringkernel_cuda::CudaProvider),
        #[cfg(feature = "metal")]
        Arc::new(ringkernel_metal::MetalProvider),
        #[cfg(feature = "wgpu")]
        Arc::new(ringkernel_wgpu::WgpuProvider),
    ]
}

/// Configures and starts a [`RingKernel`] runtime.
#[derive(Default)]
pub struct RuntimeBuilder {
    backend: Backend,
    configs: BackendConfigs,
    providers: Vec<Arc<dyn BackendProvider>>,
    defs: Vec<KernelDef>,
}

impl core::fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("backend", &self.backend)
            .field("configs", &self.configs)
            .field("providers", &self.providers.iter().map(|p| p.kind()).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl RuntimeBuilder {
    /// Chooses the backend (default `Auto`).
    #[must_use]
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Chooses the backend from `RINGKERNEL_BACKEND` (`auto|cpu|cuda|wgpu|metal`).
    pub fn backend_from_env(mut self) -> Result<Self> {
        self.backend = Backend::from_env()?;
        Ok(self)
    }

    /// Number of CPU worker threads (default: one per core).
    #[must_use]
    pub fn workers(mut self, n: usize) -> Self {
        self.configs.get_mut::<CpuConfig>().workers = n.max(1);
        self
    }

    /// Full CPU backend tuning.
    #[must_use]
    pub fn cpu_config(self, config: CpuConfig) -> Self {
        self.backend_config(config)
    }

    /// Tuning of a backend, by its configuration type: `ringkernel::wgpu::WgpuConfig` (device
    /// memory, kernel count, software adapters), `ringkernel::cuda::CudaConfig` (kernel limit,
    /// start timeout, host emulation), [`CpuConfig`]. A backend that is not opened ignores its
    /// configuration. Without a `CudaConfig`, `RINGKERNEL_CUDA_EMULATE=1` selects the CUDA host
    /// emulation for an explicit `Backend::Cuda`.
    #[must_use]
    pub fn backend_config<C: core::any::Any + Send + Sync>(mut self, config: C) -> Self {
        self.configs.set(config);
        self
    }

    /// Adds a backend provider from outside RingKernel. `Backend::Auto` tries it before the
    /// built-in GPU backends; `Backend::Custom(name)` (its kind) asks for it explicitly.
    #[must_use]
    pub fn provider(mut self, provider: Arc<dyn BackendProvider>) -> Self {
        self.providers.push(provider);
        self
    }

    /// Adds a kernel defined at run time (in addition to `#[ring_kernel]` functions).
    #[must_use]
    pub fn kernel(mut self, def: KernelDef) -> Self {
        self.defs.push(def);
        self
    }

    /// Starts the runtime: opens the chosen backend (or, for `Backend::Auto`, the first usable
    /// one) and the CPU backend.
    pub async fn build(self) -> Result<RingKernel> {
        let providers: Vec<Arc<dyn BackendProvider>> =
            self.providers.into_iter().chain(builtin_providers()).collect();
        let primary = open_primary(self.backend, &providers, &self.configs)?;
        let mut catalog = KernelCatalog::from_registrations()?;
        for d in self.defs {
            catalog.add(d)?;
        }
        let cpu = ringkernel_cpu::PROVIDER
            .open(&OpenRequest { explicit: true, configs: &self.configs })
            .map_err(|reason| Error::BackendUnavailable { backend: "cpu", reason })?;
        let backends: Vec<Arc<dyn BackendImpl>> = primary.into_iter().chain([cpu]).collect();
        let devices = backends.iter().map(|b| Arc::<str>::from(b.device())).collect();
        Ok(RingKernel {
            inner: Arc::new(Inner {
                kind: backends[0].kind(),
                backends,
                devices,
                dir: Arc::new(Directory::default()),
                catalog: Mutex::new(catalog),
                next_id: AtomicU32::new(1),
                shut_down: AtomicBool::new(false),
            }),
        })
    }
}

/// Opens the backend `requested` names (`None`: the CPU backend alone). An explicit request that
/// cannot be met is an error naming why; `Auto` tries each provider whose probe succeeds, in
/// order, and settles for the CPU backend.
fn open_primary(
    requested: Backend,
    providers: &[Arc<dyn BackendProvider>],
    configs: &BackendConfigs,
) -> Result<Option<Arc<dyn BackendImpl>>> {
    match requested {
        Backend::Cpu => Ok(None),
        Backend::Auto => {
            let request = OpenRequest { explicit: false, configs };
            for p in providers.iter().filter(|p| p.kind() != Backend::Cpu) {
                let name = p.kind().name();
                let opened = p.probe().and_then(|()| p.open(&request));
                match opened {
                    Ok(b) => return Ok(Some(b)),
                    Err(why) => tracing::info!("backend {name}: {why}"),
                }
            }
            tracing::info!("Backend::Auto chose the CPU backend");
            Ok(None)
        }
        kind => {
            let provider =
                providers.iter().find(|p| p.kind() == kind).ok_or_else(|| Error::BackendUnavailable {
                    backend: kind.name(),
                    reason: match kind {
                        Backend::Custom(_) => {
                            "no provider of this backend was added (RuntimeBuilder::provider)".into()
                        }
                        _ => format!("RingKernel was built without the `{}` feature", kind.name()),
                    },
                })?;
            provider
                .open(&OpenRequest { explicit: true, configs })
                .map(Some)
                .map_err(|reason| Error::BackendUnavailable { backend: kind.name(), reason })
        }
    }
}

struct Inner {
    /// The backend the runtime was built for (`Cpu` when no GPU backend was opened).
    kind: Backend,
    /// In placement order: the GPU backend if one was opened, then the CPU backend.
    backends: Vec<Arc<dyn BackendImpl>>,
    /// `backends[i].device()`, kept for kernels' placements.
    devices: Vec<Arc<str>>,
    dir: Arc<Directory>,
    catalog: Mutex<KernelCatalog>,
    next_id: AtomicU32,
    shut_down: AtomicBool,
}

impl Inner {
    /// The backend serving `cell`'s kernel.
    fn backend_of(&self, cell: &KernelCell) -> Option<&Arc<dyn BackendImpl>> {
        let placement = cell.placement()?;
        self.backends.iter().find(|b| b.kind() == placement.backend)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.shut_down.load(Ordering::Acquire) {
            // Dropped without shutdown(): stop at once rather than hang. Waiting callers get an
            // error; nothing runs afterwards.
            for cell in self.dir.all() {
                if cell.state() != KernelState::Terminated {
                    let reason = "the runtime was dropped without shutdown()";
                    match self.backend_of(&cell) {
                        Some(b) => b.detach(&cell, reason),
                        None => cell.abort(reason),
                    }
                }
            }
        }
        for b in &self.backends {
            b.shutdown();
        }
    }
}

/// A RingKernel runtime: launches kernels by name and owns the backends.
#[derive(Clone)]
pub struct RingKernel {
    inner: Arc<Inner>,
}

impl core::fmt::Debug for RingKernel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RingKernel").field("backend", &self.inner.kind).finish()
    }
}

impl RingKernel {
    /// A builder (backend `Auto`, one CPU worker per core).
    #[must_use]
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// The backend in use (`Cpu` when no GPU backend was opened).
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.inner.kind
    }

    /// Adds a kernel definition after start-up.
    pub fn register(&self, def: KernelDef) -> Result<()> {
        self.inner.catalog.lock().unwrap_or_else(|e| e.into_inner()).add(def)
    }

    /// Names of the kernels that have handlers.
    #[must_use]
    pub fn registered_kernels(&self) -> Vec<String> {
        self.inner.catalog.lock().unwrap_or_else(|e| e.into_inner()).names()
    }

    /// Launches the kernel registered under `name`.
    ///
    /// A name without a registered handler still gives a kernel (so that a handler-less mailbox
    /// can be watched), with a warning listing the registered names; sending to it is an error.
    ///
    /// The kernel runs on the first of the runtime's backends that can run its definition: the
    /// GPU backend when the kernel carries a program for it, else the CPU pool (its
    /// [`KernelStatus::placement`](ringkernel_core::runtime::KernelStatus) says which, and a
    /// `tracing` event says so when a GPU runtime runs a kernel on the CPU).
    pub async fn launch(&self, name: &str, options: LaunchOptions) -> Result<KernelHandle> {
        self.launch_cell(name, options, None).await
    }

    /// Launches `instances` instances of the kernel registered under `name`, as one kernel group:
    /// each instance has its own state (built on its first message) and a mailbox of
    /// `options`' input capacity, and is addressed as `(name, index)` from handlers
    /// ([`Target::Instance`](ringkernel_core::runtime::Target)) and through
    /// [`KernelGroup::instance`] from the host. Lifecycle, the output queue and the counters are
    /// the group's.
    ///
    /// The group runs on the first of the runtime's backends that runs groups and can run the
    /// definition; today that is the CPU pool on every runtime (the GPU backends run single
    /// kernels only, so a GPU runtime's group runs on its CPU pool, and
    /// [`KernelStatus::placement`](ringkernel_core::runtime::KernelStatus) says so).
    pub async fn launch_group(
        &self,
        name: &str,
        instances: u32,
        options: LaunchOptions,
    ) -> Result<KernelGroup> {
        self.launch_cell(name, options, Some(instances)).await.map(KernelGroup::new)
    }

    async fn launch_cell(
        &self,
        name: &str,
        options: LaunchOptions,
        group: Option<u32>,
    ) -> Result<KernelHandle> {
        let inner = &*self.inner;
        if inner.shut_down.load(Ordering::Acquire) {
            return Err(Error::ShutDown);
        }
        options.validate()?;
        let (def, known) = {
            let mut cat = inner.catalog.lock().unwrap_or_else(|e| e.into_inner());
            let def = cat.get(name);
            let known = if def.is_none() { cat.names() } else { Vec::new() };
            (def, known)
        };
        if def.is_none() {
            tracing::warn!("kernel {name:?} has no registered handler; registered kernels: {known:?}");
        }
        let at = self.place(name, def.as_deref(), group.is_some())?;
        let backend = &inner.backends[at];
        let accepts = def.as_deref().map(KernelDef::accepted_types);
        // A backend's allocation error names no kernel yet: this one.
        let name_kernel = |e| match e {
            Error::Gpu { backend, detail, source, .. } => {
                Error::Gpu { backend, kernel: name.to_string(), detail, source }
            }
            e => e,
        };
        let cell = Arc::new(match group {
            Some(n) => {
                // A group takes `n` consecutive ids: its instances' ids.
                let id = inner.next_id.fetch_add(n, Ordering::Relaxed);
                if id.checked_add(n).is_none() {
                    return Err(Error::InvalidOptions(format!("no {n} kernel ids left in this runtime")));
                }
                let ingress = backend.group_ingress(&options, n).map_err(name_kernel)?;
                KernelCell::new_group(KernelId(id), name, accepts, options, known, n, ingress)?
            }
            None => {
                let id = KernelId(inner.next_id.fetch_add(1, Ordering::Relaxed));
                let input = backend.input_ring(&options).map_err(name_kernel)?;
                match input {
                    Some(ring) => KernelCell::with_input(id, name, accepts, options, known, ring)?,
                    None => KernelCell::new(id, name, accepts, options, known)?,
                }
            }
        });
        let auto = cell.options().auto_activate;
        cell.set_placement(Placement { backend: backend.kind(), device: inner.devices[at].clone() });
        inner.dir.insert(cell.clone())?;
        if let Err(e) = backend.attach(&cell, def.as_ref(), &inner.dir) {
            cell.abort(&e.to_string());
            return Err(e);
        }
        if auto {
            cell.transition(KernelState::Active)?;
            cell.control.set_active(true);
        } else {
            cell.transition(KernelState::Inactive)?;
        }
        // A lifecycle change, as `activate` makes one: a backend that mirrors the flags into
        // device memory (CUDA groups' `ctl` word) sees the kernel active before its first message.
        cell.ring();
        Ok(KernelHandle::new(cell, inner.dir.clone()))
    }

    /// The index of the first backend that can run `def`; an error naming the programs the
    /// kernel has and the backends the runtime runs when there is none.
    fn place(&self, name: &str, def: Option<&KernelDef>, group: bool) -> Result<usize> {
        let inner = &*self.inner;
        let Some(at) = inner.backends.iter().position(|b| b.can_run(def) && (!group || b.runs_groups()))
        else {
            let have: Vec<&str> =
                def.map(|d| d.gpu_backends().iter().map(|b| b.name()).collect()).unwrap_or_default();
            let backends: Vec<&str> = inner.backends.iter().map(|b| b.kind().name()).collect();
            return Err(Error::KernelDefinition {
                kernel: name.to_string(),
                detail: if group {
                    format!(
                        "of the runtime's backends ({}) only {:?} run kernel groups, and the kernel has no handlers for them (it has {have:?} programs)",
                        backends.join(" and "),
                        inner.backends.iter().filter(|b| b.runs_groups()).map(|b| b.kind().name()).collect::<Vec<_>>()
                    )
                } else {
                    format!(
                        "the kernel has only {have:?} programs and no CPU handlers, and the runtime runs on {}",
                        backends.join(" and ")
                    )
                },
            });
        };
        if at > 0 && group {
            tracing::info!(
                kernel = name,
                backend = inner.backends[at].kind().name(),
                "the {} backend runs no kernel groups; group {name:?} runs on the {} backend ({})",
                inner.kind.name(),
                inner.backends[at].kind().name(),
                inner.devices[at]
            );
        } else if at > 0 {
            tracing::info!(
                kernel = name,
                backend = inner.backends[at].kind().name(),
                "kernel {name:?} has no {} program; it runs on the {} backend ({})",
                inner.kind.name(),
                inner.backends[at].kind().name(),
                inner.devices[at]
            );
        }
        Ok(at)
    }

    /// The backend implementation of type `T` the runtime holds (for example
    /// `ringkernel::wgpu::WgpuBackend`), for tests and tools that need its own methods.
    #[must_use]
    pub fn backend_impl<T: 'static>(&self) -> Option<&T> {
        self.inner.backends.iter().find_map(|b| b.as_any().downcast_ref::<T>())
    }

    /// A snapshot of a kernel's persistent state, as its last handled message left it, from the
    /// backend that runs it (CUDA kernels today; `Error::Unsupported` elsewhere). `S` must be the
    /// state type its program declares.
    pub fn state_snapshot<S: ringkernel_core::gpu::GpuType>(&self, kernel: &KernelHandle) -> Result<S> {
        let cell = kernel.cell();
        let backend = self.inner.backend_of(cell).ok_or_else(|| Error::Unsupported {
            backend: self.inner.kind.name(),
            kernel: kernel.name().to_string(),
            what: "state snapshots of kernels of another runtime",
        })?;
        let words = backend.state_snapshot(cell)?;
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        ringkernel_core::gpu::decode::<S>(&bytes, S::GPU_NAME).map_err(Error::from)
    }

    /// The GPU device in use (an adapter name, a CUDA device), if the runtime runs on a GPU
    /// backend.
    #[must_use]
    pub fn adapter(&self) -> Option<String> {
        (self.inner.kind != Backend::Cpu).then(|| self.inner.devices[0].to_string())
    }

    /// A handle on a launched kernel, by name.
    #[must_use]
    pub fn kernel(&self, name: &str) -> Option<KernelHandle> {
        self.inner.dir.by_name(name).map(|c| KernelHandle::new(c, self.inner.dir.clone()))
    }

    /// A handle on a launched kernel group, by name (`None` if `name` is no group).
    #[must_use]
    pub fn group(&self, name: &str) -> Option<KernelGroup> {
        let cell = self.inner.dir.by_name(name).filter(|c| c.is_group())?;
        Some(KernelGroup::new(KernelHandle::new(cell, self.inner.dir.clone())))
    }

    /// Handles on every launched kernel (a kernel group's handle is its group's; see
    /// [`RingKernel::group`]).
    #[must_use]
    pub fn kernels(&self) -> Vec<KernelHandle> {
        self.inner.dir.all().into_iter().map(|c| KernelHandle::new(c, self.inner.dir.clone())).collect()
    }

    /// Terminates every kernel gracefully (each drains its input) and stops the backends.
    /// Further launches fail with [`Error::ShutDown`].
    pub async fn shutdown(&self) -> Result<()> {
        if self.inner.shut_down.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        for k in self.kernels() {
            k.terminate().await?;
        }
        for b in &self.inner.backends {
            b.shutdown();
        }
        Ok(())
    }
}
