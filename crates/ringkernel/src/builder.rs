//! The runtime object users hold ([`RingKernel`]) and its builder: backend selection, kernel
//! catalog, launch, shutdown.

use ringkernel_core::message::KernelId;
use ringkernel_core::runtime::{
    Backend, Directory, KernelCatalog, KernelCell, KernelDef, KernelHandle, KernelState, LaunchOptions,
};
use ringkernel_core::{Error, Result};
use ringkernel_cpu::{CpuBackend, CpuConfig};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// Configures and starts a [`RingKernel`] runtime.
#[derive(Default)]
pub struct RuntimeBuilder {
    backend: Backend,
    cpu: CpuConfig,
    defs: Vec<KernelDef>,
    #[cfg(feature = "wgpu")]
    wgpu: Option<ringkernel_wgpu::WgpuConfig>,
    #[cfg(feature = "cuda")]
    cuda: Option<ringkernel_cuda::CudaConfig>,
}

impl core::fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RuntimeBuilder").field("backend", &self.backend).field("cpu", &self.cpu).finish()
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
        self.cpu.workers = n.max(1);
        self
    }

    /// Full CPU backend tuning.
    #[must_use]
    pub fn cpu_config(mut self, config: CpuConfig) -> Self {
        self.cpu = config;
        self
    }

    /// Tuning of the wgpu backend (device memory, kernel count, software adapters).
    #[cfg(feature = "wgpu")]
    #[must_use]
    pub fn wgpu_config(mut self, config: ringkernel_wgpu::WgpuConfig) -> Self {
        self.wgpu = Some(config);
        self
    }

    /// Tuning of the CUDA backend (kernel limit, start timeout, host emulation). Without it,
    /// `RINGKERNEL_CUDA_EMULATE=1` selects the host emulation for an explicit `Backend::Cuda`.
    #[cfg(feature = "cuda")]
    #[must_use]
    pub fn cuda_config(mut self, config: ringkernel_cuda::CudaConfig) -> Self {
        self.cuda = Some(config);
        self
    }

    /// Adds a kernel defined at run time (in addition to `#[ring_kernel]` functions).
    #[must_use]
    pub fn kernel(mut self, def: KernelDef) -> Self {
        self.defs.push(def);
        self
    }

    /// Starts the runtime.
    pub async fn build(self) -> Result<RingKernel> {
        #[cfg(feature = "wgpu")]
        let (backend, wgpu) = {
            let explicit = self.backend == Backend::Wgpu;
            let mut config = self.wgpu.clone().unwrap_or_default();
            config.allow_software = explicit || ringkernel_wgpu::allow_software_from_env();
            let mut backend = select_backend(self.backend)?;
            let mut wgpu = None;
            if backend == Backend::Wgpu {
                match ringkernel_wgpu::WgpuBackend::new(config) {
                    Ok(b) => wgpu = Some(b),
                    Err(reason) if explicit => {
                        return Err(Error::BackendUnavailable { backend: "wgpu", reason })
                    }
                    Err(reason) => {
                        tracing::info!("backend wgpu: {reason}; Backend::Auto chose the CPU backend");
                        backend = Backend::Cpu;
                    }
                }
            }
            (backend, wgpu)
        };
        #[cfg(not(feature = "wgpu"))]
        let backend = select_backend(self.backend)?;
        #[cfg(feature = "cuda")]
        let (backend, cuda) = {
            let explicit = self.backend == Backend::Cuda;
            let config = match self.cuda.clone() {
                Some(c) => c,
                None if explicit => ringkernel_cuda::CudaConfig::from_env(),
                None => ringkernel_cuda::CudaConfig::default(),
            };
            let mut backend = backend;
            let mut cuda = None;
            if backend == Backend::Cuda {
                match ringkernel_cuda::CudaBackend::new(config) {
                    Ok(b) => cuda = Some(b),
                    Err(reason) if explicit => {
                        return Err(Error::BackendUnavailable { backend: "cuda", reason })
                    }
                    Err(reason) => {
                        tracing::info!("backend cuda: {reason}; Backend::Auto chose the CPU backend");
                        backend = Backend::Cpu;
                    }
                }
            }
            (backend, cuda)
        };
        let mut catalog = KernelCatalog::from_registrations()?;
        for d in self.defs {
            catalog.add(d)?;
        }
        let cpu = CpuBackend::new(self.cpu).map_err(|e| Error::BackendUnavailable {
            backend: "cpu",
            reason: format!("cannot start worker threads: {e}"),
        })?;
        Ok(RingKernel {
            inner: Arc::new(Inner {
                backend,
                dir: Arc::new(Directory::default()),
                catalog: Mutex::new(catalog),
                cpu,
                #[cfg(feature = "wgpu")]
                wgpu,
                #[cfg(feature = "cuda")]
                cuda,
                next_id: AtomicU32::new(1),
                shut_down: AtomicBool::new(false),
            }),
        })
    }
}

/// Why a GPU backend cannot be used: missing feature, or the backend's own probe.
fn gpu_unavailable(backend: Backend) -> Option<String> {
    let probe: Option<fn() -> core::result::Result<(), String>> = match backend {
        #[cfg(feature = "cuda")]
        Backend::Cuda => Some(ringkernel_cuda::probe),
        #[cfg(feature = "wgpu")]
        Backend::Wgpu => Some(ringkernel_wgpu::probe),
        #[cfg(feature = "metal")]
        Backend::Metal => Some(ringkernel_metal::probe),
        _ => None,
    };
    match probe {
        Some(p) => p().err(),
        None => Some(format!("RingKernel was built without the `{}` feature", backend.name())),
    }
}

fn select_backend(requested: Backend) -> Result<Backend> {
    match requested {
        Backend::Cpu => Ok(Backend::Cpu),
        Backend::Auto => {
            for b in [Backend::Cuda, Backend::Metal, Backend::Wgpu] {
                match gpu_unavailable(b) {
                    None => return Ok(b),
                    Some(why) => tracing::info!("backend {}: {why}", b.name()),
                }
            }
            tracing::info!("Backend::Auto chose the CPU backend");
            Ok(Backend::Cpu)
        }
        // An explicit Backend::Cuda may ask for the host emulation; CudaBackend::new checks.
        #[cfg(feature = "cuda")]
        Backend::Cuda => Ok(Backend::Cuda),
        // An explicit Backend::Wgpu accepts a software adapter; WgpuBackend::new checks.
        #[cfg(feature = "wgpu")]
        Backend::Wgpu => Ok(Backend::Wgpu),
        gpu => match gpu_unavailable(gpu) {
            None => Ok(gpu),
            Some(reason) => Err(Error::BackendUnavailable { backend: gpu.name(), reason }),
        },
    }
}

struct Inner {
    backend: Backend,
    dir: Arc<Directory>,
    catalog: Mutex<KernelCatalog>,
    cpu: CpuBackend,
    #[cfg(feature = "wgpu")]
    wgpu: Option<ringkernel_wgpu::WgpuBackend>,
    #[cfg(feature = "cuda")]
    cuda: Option<ringkernel_cuda::CudaBackend>,
    next_id: AtomicU32,
    shut_down: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.shut_down.load(Ordering::Acquire) {
            // Dropped without shutdown(): stop at once rather than hang. Waiting callers get an
            // error; nothing runs afterwards.
            for cell in self.dir.all() {
                if cell.state() != KernelState::Terminated {
                    cell.abort("the runtime was dropped without shutdown()");
                }
            }
        }
        self.cpu.shutdown();
        #[cfg(feature = "wgpu")]
        if let Some(w) = &self.wgpu {
            w.shutdown();
        }
        #[cfg(feature = "cuda")]
        if let Some(c) = &self.cuda {
            c.shutdown();
        }
    }
}

/// A RingKernel runtime: launches kernels by name and owns the backend.
#[derive(Clone)]
pub struct RingKernel {
    inner: Arc<Inner>,
}

impl core::fmt::Debug for RingKernel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RingKernel").field("backend", &self.inner.backend).finish()
    }
}

impl RingKernel {
    /// A builder (backend `Auto`, one CPU worker per core).
    #[must_use]
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// The backend in use.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.inner.backend
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
    pub async fn launch(&self, name: &str, options: LaunchOptions) -> Result<KernelHandle> {
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
        let id = KernelId(inner.next_id.fetch_add(1, Ordering::Relaxed));
        let auto = options.auto_activate;
        // A CUDA kernel's input queue lives in pinned memory its device reads directly.
        #[cfg(feature = "cuda")]
        let cell = match (&inner.cuda, &def) {
            (Some(c), Some(d)) if ringkernel_cuda::CudaBackend::can_run(d) => {
                let input = c.input_ring(&options).map_err(|e| match e {
                    Error::Gpu { backend, detail, source, .. } => {
                        Error::Gpu { backend, kernel: name.to_string(), detail, source }
                    }
                    e => e,
                })?;
                Arc::new(KernelCell::with_input(id, name, def, options, known, input)?)
            }
            _ => Arc::new(KernelCell::new(id, name, def, options, known)?),
        };
        #[cfg(not(feature = "cuda"))]
        let cell = Arc::new(KernelCell::new(id, name, def, options, known)?);
        inner.dir.insert(cell.clone())?;
        if let Err(e) = self.place(&cell) {
            cell.abort(&e.to_string());
            return Err(e);
        }
        if auto {
            cell.transition(KernelState::Active)?;
            cell.control.set_active(true);
        } else {
            cell.transition(KernelState::Inactive)?;
        }
        Ok(KernelHandle::new(cell, inner.dir.clone()))
    }

    /// Puts the kernel on the runtime's backend: a GPU backend runs kernels that carry a program
    /// for it; every other kernel runs on the CPU pool, which needs CPU handlers.
    fn place(&self, cell: &Arc<KernelCell>) -> Result<()> {
        let inner = &*self.inner;
        #[cfg(feature = "cuda")]
        if let (Some(c), Some(def)) = (&inner.cuda, cell.def()) {
            if ringkernel_cuda::CudaBackend::can_run(def) {
                return c.attach(cell, &inner.dir);
            }
        }
        #[cfg(feature = "wgpu")]
        if let (Some(w), Some(def)) = (&inner.wgpu, cell.def()) {
            if ringkernel_wgpu::WgpuBackend::can_run(def) {
                return w.attach(cell, &inner.dir);
            }
        }
        if let Some(def) = cell.def() {
            if !def.has_cpu_handlers() && !def.gpu_backends().is_empty() {
                return Err(Error::KernelDefinition {
                    kernel: cell.name().to_string(),
                    detail: format!(
                        "the kernel has only {:?} programs and no CPU handlers, and the runtime runs on {}",
                        def.gpu_backends(),
                        inner.backend.name()
                    ),
                });
            }
        }
        inner.cpu.attach(cell, &inner.dir);
        Ok(())
    }

    /// The wgpu backend, when the runtime runs on it (for tests that need its internals).
    #[cfg(feature = "wgpu")]
    #[doc(hidden)]
    #[must_use]
    pub fn wgpu_backend(&self) -> Option<&ringkernel_wgpu::WgpuBackend> {
        self.inner.wgpu.as_ref()
    }

    /// The CUDA backend, when the runtime runs on it (for tests that need its internals).
    #[cfg(feature = "cuda")]
    #[doc(hidden)]
    #[must_use]
    pub fn cuda_backend(&self) -> Option<&ringkernel_cuda::CudaBackend> {
        self.inner.cuda.as_ref()
    }

    /// A snapshot of a GPU kernel's persistent state, as its last handled message left it
    /// (CUDA kernels; the state type must be the one its program declares).
    pub fn state_snapshot<S: ringkernel_core::gpu::GpuType>(&self, kernel: &KernelHandle) -> Result<S> {
        #[cfg(feature = "cuda")]
        if let Some(c) = &self.inner.cuda {
            let words = c.state_words(kernel.id())?;
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            return ringkernel_core::gpu::decode::<S>(&bytes, S::GPU_NAME).map_err(Error::from);
        }
        Err(Error::gpu(
            self.inner.backend.name(),
            kernel.name(),
            "state snapshots are available for kernels on the CUDA backend",
        ))
    }

    /// The GPU adapter in use, if the runtime runs on a GPU backend.
    #[must_use]
    pub fn adapter(&self) -> Option<String> {
        #[cfg(feature = "cuda")]
        if let Some(c) = &self.inner.cuda {
            return Some(c.device());
        }
        #[cfg(feature = "wgpu")]
        if let Some(w) = &self.inner.wgpu {
            return Some(w.adapter());
        }
        None
    }

    /// A handle on a launched kernel, by name.
    #[must_use]
    pub fn kernel(&self, name: &str) -> Option<KernelHandle> {
        self.inner.dir.by_name(name).map(|c| KernelHandle::new(c, self.inner.dir.clone()))
    }

    /// Handles on every launched kernel.
    #[must_use]
    pub fn kernels(&self) -> Vec<KernelHandle> {
        self.inner.dir.all().into_iter().map(|c| KernelHandle::new(c, self.inner.dir.clone())).collect()
    }

    /// Terminates every kernel gracefully (each drains its input) and stops the backend.
    /// Further launches fail with [`Error::ShutDown`].
    pub async fn shutdown(&self) -> Result<()> {
        if self.inner.shut_down.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        for k in self.kernels() {
            k.terminate().await?;
        }
        self.inner.cpu.shutdown();
        #[cfg(feature = "wgpu")]
        if let Some(w) = &self.inner.wgpu {
            w.shutdown();
        }
        #[cfg(feature = "cuda")]
        if let Some(c) = &self.inner.cuda {
            c.shutdown();
        }
        Ok(())
    }
}
