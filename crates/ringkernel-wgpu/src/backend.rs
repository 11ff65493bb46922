//! The wgpu backend's runtime: device memory, kernel attachment, and the dispatcher thread.
//!
//! # Event-driven dispatch
//!
//! WebGPU gives no forward-progress guarantee to a shader that never ends, so kernels are not
//! resident loops: each kernel's queues and state stay in device memory (`rk_mem`, see
//! `ringkernel_codegen::wgsl`), and one dispatcher thread runs *rounds*. A round:
//!
//! 1. moves everything queued in each active kernel's host input ring (where `send`, `call` and
//!    CPU kernels put messages) into its device input queue, with one `write_buffer` per
//!    contiguous run of slots;
//! 2. encodes one compute pass with one single-invocation dispatch per kernel that has input,
//!    plus, transitively, the wgpu kernels its routes point at, in launch order, so a K2K message
//!    produced early in the pass is handled by its target later in the same submission;
//! 3. copies the control blocks back, then the new output slots, and routes each output: replies
//!    complete waiting `call`s, emits go to the host output ring, sends to non-wgpu kernels go to
//!    their input rings.
//!
//! A burst of N messages therefore costs one submission and two read-backs, not N. The host
//! writes `rk_mem` only between submissions (it waits for each to complete), which is the whole
//! host↔device synchronisation contract; dispatches within a pass are ordered by WebGPU.
//!
//! Failures: a WGSL shader that does not compile, or a pipeline that does not validate, fails the
//! launch with `Error::Gpu` and the compiler's diagnostics. `rk_fail` in a handler fails only its
//! kernel (restart policy as on the CPU). A lost device or a failed read-back fails every kernel
//! of the device with the reason; CPU kernels keep running.

use crate::device::{self, Opened};
use crate::program::WgslProgram;
use ringkernel_codegen::wgsl::{
    ctrl, CTRL_WORDS, DESC_SIZE, DESC_STRIDE, GLOBAL_WORDS, MAX_ROUTES, ROUTE_VIA_HOST,
};
use ringkernel_core::agent::{Agent, Busy, DeviceStep, Ending, Kernels, Phase, Record};
use ringkernel_core::backoff::Backoff;
use ringkernel_core::control_block::ErrorCode;
use ringkernel_core::message::{decode_header, EnvelopeHeader};
use ringkernel_core::runtime::{Directory, KernelCell, KernelDef, KernelState};
use ringkernel_core::{Error, Result};
use std::collections::HashMap;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Tuning of the wgpu backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgpuConfig {
    /// Accept a software adapter (llvmpipe). `Backend::Wgpu` sets it; `Backend::Auto` sets it
    /// only when `RINGKERNEL_WGPU_ALLOW_SOFTWARE=1`.
    pub allow_software: bool,
    /// Bytes of device memory for all kernels' queues and state (capped by the adapter's
    /// storage-binding limit).
    pub arena_bytes: u64,
    /// Most wgpu kernels alive at once.
    pub max_kernels: u32,
    /// How many times one submission runs the round's dispatch list. Each sweep carries a K2K
    /// message one more hop (a ping-pong pair completes one round trip per sweep); a kernel with
    /// nothing queued returns at once, so extra sweeps cost little. Default 4, or
    /// `RINGKERNEL_WGPU_SWEEPS`.
    pub sweeps: u32,
    /// The graphics APIs to look for adapters on (default: Vulkan, Metal and DX12; the Metal
    /// backend sets Metal only).
    pub apis: wgpu::Backends,
}

impl Default for WgpuConfig {
    fn default() -> Self {
        let sweeps = std::env::var("RINGKERNEL_WGPU_SWEEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(4);
        Self {
            allow_software: true,
            arena_bytes: 128 << 20,
            max_kernels: 16_384,
            sweeps,
            apis: device::NATIVE_APIS,
        }
    }
}

/// Whether a usable adapter exists; `Err` says why not.
pub fn probe_adapter(allow_software: bool, apis: wgpu::Backends) -> core::result::Result<String, String> {
    device::probe(allow_software, apis).map(|i| format!("{} ({:?}, {:?})", i.name, i.device_type, i.backend))
}

/// First-fit allocator over word ranges of `rk_mem`.
struct Alloc {
    free: Vec<(u32, u32)>,
    free_slots: Vec<u32>,
    /// Words available to kernels (the arena after the control blocks).
    capacity_words: u32,
    /// Control blocks in all.
    slots: usize,
}

impl Alloc {
    fn take(&mut self, words: u32) -> Option<u32> {
        let words = words.div_ceil(64) * 64;
        let i = self.free.iter().position(|&(_, len)| len >= words)?;
        let (start, len) = self.free[i];
        if len == words {
            self.free.remove(i);
        } else {
            self.free[i] = (start + words, len - words);
        }
        Some(start)
    }

    fn give(&mut self, start: u32, words: u32) {
        let words = words.div_ceil(64) * 64;
        self.free.push((start, words));
        self.free.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(self.free.len());
        for (s, l) in self.free.drain(..) {
            match merged.last_mut() {
                Some((ps, pl)) if *ps + *pl == s => *pl += l,
                _ => merged.push((s, l)),
            }
        }
        self.free = merged;
    }
}

struct Shared {
    info: wgpu::AdapterInfo,
    device: wgpu::Device,
    queue: wgpu::Queue,
    mem: wgpu::Buffer,
    descs: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
    layout: wgpu::PipelineLayout,
    pipelines: Mutex<HashMap<String, wgpu::ComputePipeline>>,
    alloc: Mutex<Alloc>,
    lost: Arc<Mutex<Option<String>>>,
    sweeps: u32,
}

/// One wgpu kernel's device bookkeeping (host mirrors of its device control words), kept in its
/// agent [`Record`].
struct GpuKernel {
    pipeline: wgpu::ComputePipeline,
    slot: u32,
    region: (u32, u32),
    in_cap: u32,
    in_slot: u32,
    in_data: u32,
    out_cap: u32,
    out_slot: u32,
    out_data: u32,
    state_off: u32,
    in_head: u32,
    in_tail: u32,
    out_head: u32,
    out_tail: u32,
    processed: u32,
    blocked: bool,
    /// Nothing queued anywhere and nothing pending: rounds skip the kernel until its doorbell
    /// rings.
    quiet: bool,
}

type Rec = Record<GpuKernel>;

impl GpuKernel {
    fn ctrl(&self) -> u32 {
        GLOBAL_WORDS + self.slot * CTRL_WORDS
    }
}

/// The kernel's WGSL program (checked at attach).
fn program(def: &KernelDef) -> &WgslProgram {
    def.gpu_program::<WgslProgram>().expect("checked at attach")
}

/// The wgpu backend of one runtime: a device, its memory, and the dispatcher (the agent thread).
pub struct WgpuBackend {
    shared: Arc<Shared>,
    agent: Agent<Dispatcher>,
}

impl core::fmt::Debug for WgpuBackend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WgpuBackend").field("adapter", &self.shared.info.name).finish_non_exhaustive()
    }
}

impl WgpuBackend {
    /// Opens the best adapter and starts the dispatcher.
    pub fn new(config: WgpuConfig) -> core::result::Result<Self, String> {
        let Opened { info, device, queue, max_binding } = device::open(config.allow_software, config.apis)?;
        let lost = Arc::new(Mutex::new(None::<String>));
        {
            let lost = lost.clone();
            device.set_device_lost_callback(move |reason, msg| {
                *lost.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(format!("device lost ({reason:?}): {msg}"));
            });
        }
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| {
            tracing::error!("wgpu error outside any kernel launch: {e}");
        }));
        let ctrl_words = GLOBAL_WORDS + config.max_kernels * CTRL_WORDS;
        let arena = config.arena_bytes.min(max_binding) / 4 * 4;
        if arena / 4 <= u64::from(ctrl_words) + 4096 {
            return Err(format!("the adapter's storage binding limit ({max_binding} bytes) is too small"));
        }
        let mem = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("ringkernel rk_mem"),
            size: arena,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let descs = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("ringkernel kernel descriptors"),
            size: u64::from(config.max_kernels) * DESC_STRIDE,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("ringkernel"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only: false },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                },
                wgpu::BindGroupLayoutEntry {
                    binding: 1,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: true,
                        min_binding_size: wgpu::BufferSize::new(DESC_SIZE),
                    },
                    count: None,
                },
            ],
        });
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("ringkernel"),
            layout: &bgl,
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: mem.as_entire_binding() },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &descs,
                        offset: 0,
                        size: wgpu::BufferSize::new(DESC_SIZE),
                    }),
                },
            ],
        });
        let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("ringkernel"),
            bind_group_layouts: &[Some(&bgl)],
            immediate_size: 0,
        });
        let arena_words = (arena / 4) as u32;
        let shared = Arc::new(Shared {
            info,
            device,
            queue,
            mem,
            descs,
            bind_group,
            layout,
            pipelines: Mutex::new(HashMap::new()),
            alloc: Mutex::new(Alloc {
                free: vec![(ctrl_words.div_ceil(64) * 64, arena_words - ctrl_words.div_ceil(64) * 64)],
                free_slots: (0..config.max_kernels).rev().collect(),
                capacity_words: arena_words - ctrl_words.div_ceil(64) * 64,
                slots: config.max_kernels as usize,
            }),
            lost,
            sweeps: config.sweeps.max(1),
        });
        let dispatcher = Dispatcher { shared: shared.clone(), ctrl_rb: None, data_rb: None };
        let agent = Agent::spawn("ringkernel-wgpu", dispatcher)
            .map_err(|e| format!("cannot start the dispatcher thread: {e}"))?;
        tracing::info!(
            "wgpu backend on {} ({:?}, {:?})",
            shared.info.name,
            shared.info.device_type,
            shared.info.backend
        );
        Ok(Self { shared, agent })
    }

    /// The adapter in use, e.g. `llvmpipe (LLVM 15.0.6, 256 bits) (Cpu, Vulkan)`.
    #[must_use]
    pub fn adapter(&self) -> String {
        format!(
            "{} ({:?}, {:?})",
            self.shared.info.name, self.shared.info.device_type, self.shared.info.backend
        )
    }

    /// Whether `def` can run on this backend (it carries a `WgslProgram`).
    #[must_use]
    pub fn can_run(def: &KernelDef) -> bool {
        def.gpu_program::<WgslProgram>().is_some()
    }

    fn pipeline(&self, kernel: &str, program: &WgslProgram) -> Result<wgpu::ComputePipeline> {
        let gpu_err = |detail: String| Error::gpu("wgpu", kernel, detail);
        let source = program.wgsl().map_err(gpu_err)?;
        let mut cache = self.shared.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cache.get(source) {
            return Ok(p.clone());
        }
        let device = &self.shared.device;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(kernel),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(kernel),
            layout: Some(&self.shared.layout),
            module: &module,
            entry_point: Some("rk_main"),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(gpu_err(format!("the WGSL program does not compile:\n{e}")));
        }
        // After wgpu accepted the WGSL, so that a WGSL error is reported as one.
        #[cfg(feature = "msl")]
        if crate::msl::check_enabled() {
            crate::msl::check(source).map_err(gpu_err)?;
        }
        cache.insert(source.to_string(), pipeline.clone());
        Ok(pipeline)
    }

    /// Places `cell`'s kernel, defined by `def`, on the device: compiles (or reuses) its
    /// pipeline, allocates its queues and state, and hands it to the dispatcher.
    pub fn attach(
        &self,
        cell: &Arc<KernelCell>,
        def: Option<&Arc<KernelDef>>,
        dir: &Arc<Directory>,
    ) -> Result<()> {
        let name = cell.name().to_string();
        let gpu_err = |detail: String| Error::gpu("wgpu", name.clone(), detail);
        let def = def.cloned().ok_or_else(|| gpu_err("no kernel definition".into()))?;
        let program = def
            .gpu_program::<WgslProgram>()
            .ok_or_else(|| gpu_err("the kernel definition carries no WgslProgram".into()))?;
        if program.routes().len() > MAX_ROUTES as usize {
            return Err(gpu_err(format!("{} routes; at most {MAX_ROUTES}", program.routes().len())));
        }
        if let Some(reason) = self.shared.lost.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Err(gpu_err(reason));
        }
        let pipeline = self.pipeline(&name, program)?;
        let opts = cell.options();
        let slot_words = (opts.slot_size() as u32).div_ceil(4);
        let in_cap = (opts.input_capacity.max(2) as u32).next_power_of_two();
        let out_cap = (opts.output_capacity.max(2) as u32).next_power_of_two();
        let state_words = program.init_state().len() as u32;
        let scratch_words = slot_words;
        let words = (in_cap + out_cap) * slot_words + state_words.div_ceil(4) * 4 + scratch_words;
        let (slot, start) = {
            let mut a = self.shared.alloc.lock().unwrap_or_else(|e| e.into_inner());
            let Some(slot) = a.free_slots.pop() else {
                return Err(gpu_err("too many wgpu kernels alive (WgpuConfig::max_kernels)".into()));
            };
            let Some(start) = a.take(words) else {
                a.free_slots.push(slot);
                return Err(gpu_err(format!(
                    "out of device memory: {} bytes needed for the queues and state, the arena has no such \
                     free range (lower the queue capacity or max_message_bytes, or raise WgpuConfig::arena_bytes)",
                    u64::from(words) * 4
                )));
            };
            (slot, start)
        };
        let in_data = start;
        let out_data = in_data + in_cap * slot_words;
        let state_off = out_data + out_cap * slot_words;
        let scratch = state_off + state_words.div_ceil(4) * 4;
        let k = GpuKernel {
            pipeline,
            slot,
            region: (start, words),
            in_cap,
            in_slot: slot_words,
            in_data,
            out_cap,
            out_slot: slot_words,
            out_data,
            state_off,
            in_head: 0,
            in_tail: 0,
            out_head: 0,
            out_tail: 0,
            processed: 0,
            blocked: false,
            quiet: false,
        };
        // Control block and initial state, written before the kernel's first dispatch.
        let mut c = vec![0u32; CTRL_WORDS as usize];
        c[ctrl::IN_CAP as usize] = in_cap;
        c[ctrl::IN_SLOT as usize] = slot_words;
        c[ctrl::IN_DATA as usize] = in_data;
        c[ctrl::OUT_CAP as usize] = out_cap;
        c[ctrl::OUT_SLOT as usize] = slot_words;
        c[ctrl::OUT_DATA as usize] = out_data;
        c[ctrl::STATE as usize] = state_off;
        c[ctrl::SCRATCH as usize] = scratch;
        c[ctrl::SCRATCH_WORDS as usize] = scratch_words;
        c[ctrl::KERNEL_ID as usize] = cell.id().0;
        let q = &self.shared.queue;
        q.write_buffer(&self.shared.mem, u64::from(k.ctrl()) * 4, &words_to_bytes(&c));
        if !program.init_state().is_empty() {
            q.write_buffer(&self.shared.mem, u64::from(state_off) * 4, &words_to_bytes(program.init_state()));
        }
        self.agent.attach(cell, &def, dir, k, None);
        Ok(())
    }

    /// Device memory in use: (bytes of `rk_mem` allocated to kernels, control blocks in use).
    /// Terminated kernels' memory is returned before their `terminate` returns.
    #[doc(hidden)]
    #[must_use]
    pub fn arena_in_use(&self) -> (u64, usize) {
        let a = self.shared.alloc.lock().unwrap_or_else(|e| e.into_inner());
        let free: u64 = a.free.iter().map(|&(_, len)| u64::from(len)).sum();
        (u64::from(a.capacity_words) * 4 - free * 4, a.slots - a.free_slots.len())
    }

    /// Destroys the device as a driver reset would (for tests of device loss): every kernel on
    /// it fails with the reason, waiting calls get an error, launches are refused.
    #[doc(hidden)]
    pub fn simulate_device_loss(&self) {
        self.shared.device.destroy();
        self.agent.wake();
    }

    /// Stops the dispatcher (kernels should have been terminated first).
    pub fn shutdown(&self) {
        self.agent.shutdown();
    }
}

/// Host write of one control-block word (between submissions; see the module docs).
fn write_ctrl(shared: &Shared, ctrl_offset: u32, word: u32, value: u32) {
    shared.queue.write_buffer(&shared.mem, u64::from(ctrl_offset + word) * 4, &value.to_le_bytes());
}

fn words_to_bytes(w: &[u32]) -> Vec<u8> {
    w.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn word(bytes: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(bytes[i * 4..i * 4 + 4].try_into().expect("4 bytes"))
}

/// The wgpu backend's device step: rounds of upload, one compute pass, read-back and routing
/// (see the module docs), run by the agent thread.
struct Dispatcher {
    shared: Arc<Shared>,
    ctrl_rb: Option<wgpu::Buffer>,
    data_rb: Option<wgpu::Buffer>,
}

impl DeviceStep for Dispatcher {
    type Kernel = GpuKernel;
    const NAME: &'static str = "wgpu";
    const THREAD: &'static str = "wgpu dispatcher";
    const IDLE: Backoff = Backoff::DISPATCHER_IDLE;
    const BLOCKED: Backoff = Backoff::DISPATCHER_BLOCKED;

    fn routes(def: &KernelDef) -> &[String] {
        program(def).routes()
    }

    fn describe_error(def: &KernelDef, code: u32) -> String {
        program(def).describe_error(code)
    }

    fn device_fault(&mut self) -> Option<String> {
        // Drives wgpu's callbacks (device loss among them) even in rounds that submit nothing.
        let _ = self.shared.device.poll(wgpu::PollType::Poll);
        self.shared.lost.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn round(&mut self, kernels: &mut Kernels<GpuKernel>) -> Busy {
        self.round(kernels)
    }

    /// Returns the kernel's device memory and control block.
    fn release(&mut self, rec: &mut Rec, _: Ending) {
        let k = &mut rec.dev;
        k.quiet = true;
        let mut a = self.shared.alloc.lock().unwrap_or_else(|e| e.into_inner());
        a.give(k.region.0, k.region.1);
        a.free_slots.push(k.slot);
    }

    /// The host input ring is the dispatcher's to upload: it takes it over. Input already
    /// uploaded to the device is read back only when the kernel takes part in a later round (as
    /// a route target); otherwise it stays unaccounted (docs/08).
    fn stop_taking_input(&mut self, _: &mut Rec, _: &KernelCell) -> bool {
        true
    }
}

impl Dispatcher {
    fn readback(shared: &Shared, buf: &wgpu::Buffer, size: u64) -> core::result::Result<Vec<u8>, String> {
        let slice = buf.slice(..size);
        let (tx, rx) = mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        device::wait_idle(&shared.device).map_err(|e| e.to_string())?;
        rx.recv_timeout(Duration::from_secs(30))
            .map_err(|_| "the read-back never completed".to_string())?
            .map_err(|e| format!("mapping the read-back buffer failed: {e}"))?;
        let data = slice.get_mapped_range().map_err(|e| format!("read-back range: {e}"))?.to_vec();
        buf.unmap();
        Ok(data)
    }

    fn rb_buffer(shared: &Shared, slot: &mut Option<wgpu::Buffer>, size: u64) -> wgpu::Buffer {
        if let Some(b) = slot.as_ref().filter(|b| b.size() >= size) {
            return b.clone();
        }
        let b = shared.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("ringkernel read-back"),
            size: size.next_power_of_two().max(4096),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        *slot = Some(b.clone());
        b
    }

    fn round(&mut self, kernels: &mut Kernels<GpuKernel>) -> Busy {
        let mut busy = Busy::Idle;
        // Records of terminated kernels stay until they are half the set, so that a removal
        // costs O(1) amortised rather than a shift of every later kernel.
        if kernels.gone() * 2 > kernels.len() {
            kernels.retain(|r| !r.is_gone());
        }
        // 1. Host side: lifecycle, outboxes, uploads, for every kernel that is dirty (its doorbell
        //    rang) or not quiet; a quiet kernel costs one atomic swap per round.
        for i in 0..kernels.len() {
            if kernels[i].is_gone() {
                continue;
            }
            if !kernels[i].take_dirty() && kernels[i].dev.quiet {
                continue;
            }
            // A panic in this kernel's host-side work fails this kernel only; the round goes on
            // for the others.
            if let Some(b) = kernels.serve(i, self, |d, ks| d.prepare(ks, i)) {
                busy = busy.max(b);
            }
        }
        let shared = self.shared.clone();
        let shared = &*shared;
        // 2. Which kernels to dispatch: those with device input, and what their routes reach.
        let mut routes: HashMap<usize, Vec<(u32, u32)>> = HashMap::new();
        let runnable = |r: &Rec| {
            r.phase() == Phase::Running
                && r.local.outbox_len() == 0
                && r.cell().is_some_and(|c| c.control.is_active() || c.control.terminate_requested())
        };
        let mut dispatch = vec![false; kernels.len()];
        let mut stack: Vec<usize> = (0..kernels.len())
            .filter(|&i| kernels[i].dev.in_tail != kernels[i].dev.in_head && runnable(&kernels[i]))
            .collect();
        let mut watch = vec![false; kernels.len()];
        while let Some(i) = stack.pop() {
            if dispatch[i] {
                continue;
            }
            dispatch[i] = true;
            watch[i] = true;
            let r = Self::resolve_routes(kernels, &kernels[i]);
            for &(tctrl, tid) in &r {
                if tctrl == ROUTE_VIA_HOST {
                    continue;
                }
                if let Some(t) = kernels.index_of(tid) {
                    watch[t] = true;
                    if runnable(&kernels[t]) {
                        stack.push(t);
                    }
                }
            }
            routes.insert(i, r);
        }
        if !dispatch.iter().any(|&d| d) {
            return busy;
        }
        // 3. Encode: globals, descriptors, the pass (a few sweeps when K2K can chain on the
        //    device), the control-block copy, and a speculative copy of the output slots the
        //    round is expected to fill, so a plain request/reply needs one read-back.
        let now_us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        shared.queue.write_buffer(&shared.mem, 0, &words_to_bytes(&[now_us as u32, (now_us >> 32) as u32]));
        let mut device_routes = false;
        let mut spec: Vec<SlotRange> = Vec::new();
        for (i, r) in kernels.iter().enumerate().filter(|(i, _)| dispatch[*i]) {
            let k = &r.dev;
            let mut d = vec![0u32; (DESC_SIZE / 4) as usize];
            d[0] = k.ctrl();
            d[1] = routes[&i].len() as u32;
            d[2] = r.id();
            let mut via_host = 0u32;
            for (n, &(tctrl, tid)) in routes[&i].iter().enumerate() {
                d[4 + n] = tctrl;
                d[4 + MAX_ROUTES as usize + n] = tid;
                if tctrl == ROUTE_VIA_HOST {
                    via_host += 1;
                } else {
                    device_routes = true;
                }
            }
            shared.queue.write_buffer(&shared.descs, u64::from(k.slot) * DESC_STRIDE, &words_to_bytes(&d));
            let queued = k.in_tail.wrapping_sub(k.in_head);
            let expected =
                queued.saturating_mul(program(r.def()).max_sends_value() * (1 + via_host)).min(k.out_cap);
            if expected > 0 {
                spec.push(SlotRange { kernel: i, input: false, first: k.out_head, count: expected });
            }
        }
        let watched: Vec<usize> = (0..kernels.len()).filter(|&i| watch[i]).collect();
        let lo = watched.iter().map(|&i| kernels[i].dev.slot).min().unwrap_or(0);
        let hi = watched.iter().map(|&i| kernels[i].dev.slot).max().unwrap_or(0);
        let ctrl_bytes = u64::from(hi - lo + 1) * u64::from(CTRL_WORDS) * 4;
        let spec_bytes: u64 = spec.iter().map(|r| r.bytes(kernels)).sum();
        let rb = Self::rb_buffer(shared, &mut self.ctrl_rb, ctrl_bytes + spec_bytes);
        let mut enc = shared.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("ringkernel round"),
                timestamp_writes: None,
            });
            let sweeps = if device_routes { shared.sweeps } else { 1 };
            for _ in 0..sweeps {
                for (_, r) in kernels.iter().enumerate().filter(|(i, _)| dispatch[*i]) {
                    pass.set_pipeline(&r.dev.pipeline);
                    pass.set_bind_group(
                        0,
                        &shared.bind_group,
                        &[(u64::from(r.dev.slot) * DESC_STRIDE) as u32],
                    );
                    pass.dispatch_workgroups(1, 1, 1);
                }
            }
        }
        let ctrl_base = u64::from(GLOBAL_WORDS + lo * CTRL_WORDS) * 4;
        enc.copy_buffer_to_buffer(&shared.mem, ctrl_base, &rb, 0, ctrl_bytes);
        let mut at = ctrl_bytes;
        for r in &spec {
            at = r.encode_copy(&mut enc, &shared.mem, &rb, at, kernels);
        }
        shared.queue.submit([enc.finish()]);
        let data = match Self::readback(shared, &rb, ctrl_bytes + spec_bytes) {
            Ok(d) => d,
            Err(e) => {
                kernels.fail_all(self, &e);
                return Busy::Idle;
            }
        };
        let (ctrl_data, spec_data) = data.split_at(ctrl_bytes as usize);
        // 4. Mirror the control words; find what the speculative copy did not cover.
        let mut more: Vec<SlotRange> = Vec::new();
        for &i in &watched {
            let rec = &mut kernels[i];
            let base = ((rec.dev.slot - lo) * CTRL_WORDS) as usize;
            let c = |w: u32| word(ctrl_data, base + w as usize);
            let k = &mut rec.dev;
            let (old_in_tail, old_processed) = (k.in_tail, k.processed);
            let progressed = c(ctrl::PROCESSED) != old_processed || c(ctrl::IN_TAIL) != old_in_tail;
            k.in_head = c(ctrl::IN_HEAD);
            k.in_tail = c(ctrl::IN_TAIL);
            k.out_tail = c(ctrl::OUT_TAIL);
            k.processed = c(ctrl::PROCESSED);
            k.blocked = c(ctrl::BLOCKED) != 0;
            if let Some(cell) = rec.cell() {
                let k = &rec.dev;
                // Device K2K deliveries count as accepted; handled messages leave the count.
                let arrived = k.in_tail.wrapping_sub(old_in_tail);
                let handled = k.processed.wrapping_sub(old_processed);
                if arrived > 0 {
                    cell.control.add_in_flight(i64::from(arrived));
                }
                if handled > 0 {
                    cell.control.add_processed(u64::from(handled));
                    cell.control.add_in_flight(-i64::from(handled));
                }
                let hlc = u64::from(c(ctrl::HLC_LO)) | (u64::from(c(ctrl::HLC_HI)) << 32);
                if hlc != 0 {
                    cell.control.set_hlc_packed(hlc);
                }
                if c(ctrl::STATUS) != 0 && !rec.is_failed() {
                    let corr = u64::from(c(ctrl::FAIL_CORR_LO)) | (u64::from(c(ctrl::FAIL_CORR_HI)) << 32);
                    Self::on_fail(shared, rec, &cell, (c(ctrl::FAIL_CODE), corr, c(ctrl::FAIL_SOURCE)));
                }
            }
            let failed = rec.is_failed();
            let k = &mut rec.dev;
            let produced = k.out_tail.wrapping_sub(k.out_head).min(k.out_cap);
            let covered = spec.iter().find(|r| r.kernel == i).map_or(0, |r| r.count).min(produced);
            if produced > covered {
                more.push(SlotRange {
                    kernel: i,
                    input: false,
                    first: k.out_head.wrapping_add(covered),
                    count: produced - covered,
                });
            }
            if failed && k.in_tail != k.in_head {
                more.push(SlotRange {
                    kernel: i,
                    input: true,
                    first: k.in_head,
                    count: k.in_tail.wrapping_sub(k.in_head).min(k.in_cap),
                });
            }
            if k.in_tail != k.in_head || k.out_tail != k.out_head || k.blocked || failed {
                // Device work left, or arrived by device K2K: look at it next round.
                k.quiet = false;
            }
            if (k.in_tail != k.in_head && !failed) || k.blocked {
                // Input left over: run again at once if this round moved anything; a kernel stuck
                // behind a full target (say, an inactive one) is retried with a back-off instead
                // of spinning the GPU.
                busy = busy.max(if progressed { Busy::Work } else { Busy::Blocked });
            }
        }
        // 5. Read back what is still missing, then route everything in queue order.
        let more_bytes: u64 = more.iter().map(|r| r.bytes(kernels)).sum();
        let more_data = if more.is_empty() {
            Vec::new()
        } else {
            let rb = Self::rb_buffer(shared, &mut self.data_rb, more_bytes);
            let mut enc = shared.device.create_command_encoder(&Default::default());
            let mut at = 0;
            for r in &more {
                at = r.encode_copy(&mut enc, &shared.mem, &rb, at, kernels);
            }
            shared.queue.submit([enc.finish()]);
            match Self::readback(shared, &rb, more_bytes) {
                Ok(d) => d,
                Err(e) => {
                    kernels.fail_all(self, &e);
                    return Busy::Idle;
                }
            }
        };
        let mut spec_at = 0usize;
        let mut spec_slices: HashMap<usize, &[u8]> = HashMap::new();
        for r in &spec {
            let n = r.bytes(kernels) as usize;
            spec_slices.insert(r.kernel, &spec_data[spec_at..spec_at + n]);
            spec_at += n;
        }
        let mut more_at = 0usize;
        let mut more_slices: Vec<(SlotRange, &[u8])> = Vec::new();
        for r in &more {
            let n = r.bytes(kernels) as usize;
            more_slices.push((*r, &more_data[more_at..more_at + n]));
            more_at += n;
        }
        for &i in &watched {
            let routed = kernels.serve(i, self, |d, ks| {
                Self::collect_kernel(&d.shared, &mut ks[i], i, &spec_slices, &more_slices)
            });
            match routed {
                Some(true) => busy = Busy::Work,
                Some(false) => {}
                None => {
                    // Its outputs of this round are not routed twice.
                    let k = &mut kernels[i].dev;
                    k.out_head = k.out_tail;
                    write_ctrl(shared, k.ctrl(), ctrl::OUT_HEAD, k.out_head);
                }
            }
        }
        for &i in &watched {
            if let Some(cell) = kernels[i].cell() {
                cell.input_waiters.notify();
            }
        }
        busy
    }

    /// Routes what one kernel wrote in this round (its outputs, and the input read back from a
    /// failed kernel); `true` if it produced outputs.
    fn collect_kernel(
        shared: &Shared,
        rec: &mut Rec,
        i: usize,
        spec_slices: &HashMap<usize, &[u8]>,
        more_slices: &[(SlotRange, &[u8])],
    ) -> bool {
        let mut produced_any = false;
        let cell = rec.cell();
        let route = |rec: &mut Rec, slot: &[u8]| {
            if let Some(cell) = &cell {
                rec.route_output::<Dispatcher>(cell, slot);
            }
        };
        let slot_bytes = rec.dev.out_slot as usize * 4;
        let produced = rec.dev.out_tail.wrapping_sub(rec.dev.out_head).min(rec.dev.out_cap) as usize;
        if produced > 0 {
            let spec_part = spec_slices.get(&i).copied().unwrap_or(&[]);
            let from_spec = (spec_part.len() / slot_bytes).min(produced);
            for slot in spec_part.chunks_exact(slot_bytes).take(from_spec) {
                route(rec, slot);
            }
            if let Some((_, bytes)) = more_slices.iter().find(|(r, _)| r.kernel == i && !r.input) {
                for slot in bytes.chunks_exact(slot_bytes) {
                    route(rec, slot);
                }
            }
            let k = &mut rec.dev;
            k.out_head = k.out_tail;
            write_ctrl(shared, k.ctrl(), ctrl::OUT_HEAD, k.out_head);
            produced_any = true;
        }
        if let Some((_, bytes)) = more_slices.iter().find(|(r, _)| r.kernel == i && r.input) {
            for slot in bytes.chunks_exact(rec.dev.in_slot as usize * 4) {
                if let Some(cell) = &cell {
                    rec.return_or_fail(cell, slot, true);
                }
            }
            let k = &mut rec.dev;
            k.in_head = k.in_tail;
            write_ctrl(shared, k.ctrl(), ctrl::IN_HEAD, k.in_head);
        }
        produced_any
    }

    /// Host-side work for one kernel before the pass.
    fn prepare(&mut self, kernels: &mut Kernels<GpuKernel>, i: usize) -> Busy {
        let Some(cell) = kernels.live_cell(i, self) else { return Busy::Idle };
        cell.check_injected_fault();
        let rec = &mut kernels[i];
        rec.start();
        let mut busy = Busy::Idle;
        if !rec.local.flush(&cell) {
            busy = Busy::Blocked;
        }
        if cell.state() == KernelState::Failed {
            rec.fail();
        }
        if rec.is_failed() {
            rec.drain_input(&cell);
        } else if busy == Busy::Idle && (cell.control.is_active() || cell.control.terminate_requested()) {
            // A kernel whose outbox waits for room takes no new input (backpressure upstream).
            if Self::upload(&self.shared, rec, &cell) {
                busy = Busy::Work;
            }
        }
        let k = &rec.dev;
        let device_empty = k.in_head == k.in_tail || rec.is_failed();
        if cell.control.terminate_requested()
            && cell.input().is_empty()
            && device_empty
            && k.out_head == k.out_tail
            && rec.local.outbox_len() == 0
        {
            kernels.finish_terminate(i, self, &cell);
            return Busy::Idle;
        }
        let quiet = busy == Busy::Idle
            && cell.input().is_empty()
            && k.in_head == k.in_tail
            && k.out_head == k.out_tail
            && rec.local.outbox_len() == 0
            && !cell.control.terminate_requested();
        rec.dev.quiet = quiet;
        busy
    }

    /// Moves the host input ring into the device input queue; `true` if anything moved.
    fn upload(shared: &Shared, rec: &mut Rec, cell: &KernelCell) -> bool {
        let (def, k, local) = rec.parts();
        let free = k.in_cap - k.in_tail.wrapping_sub(k.in_head);
        if free == 0 || cell.input().is_empty() {
            return false;
        }
        let slot_bytes = k.in_slot as usize * 4;
        let mut run: Vec<u8> = Vec::new();
        let mut run_start = k.in_tail;
        let mut tail = k.in_tail;
        let mut rejected = 0i64;
        let mut moved = false;
        let flush_run = |run: &mut Vec<u8>, start: u32, k: &GpuKernel| {
            if !run.is_empty() {
                let at = k.in_data + (start & (k.in_cap - 1)) * k.in_slot;
                shared.queue.write_buffer(&shared.mem, u64::from(at) * 4, run);
                run.clear();
            }
        };
        let program_accepts = |id: u64| program(def).handles_type(id);
        let mut failures: Vec<(EnvelopeHeader, String, ErrorCode)> = Vec::new();
        let mut budget = free;
        while budget > 0 {
            let n = cell.input().pop_batch_with(budget.min(64) as usize, |bytes| {
                moved = true;
                match decode_header(bytes) {
                    Err(e) => {
                        rejected += 1;
                        failures.push((
                            EnvelopeHeader::default(),
                            format!("dropped malformed input message: {e}"),
                            ErrorCode::Decode,
                        ));
                    }
                    Ok((h, _)) if !program_accepts(h.type_id) => {
                        rejected += 1;
                        failures.push((
                            h,
                            format!(
                                "kernel {:?} has no WGSL handler for message type {:#x}",
                                cell.name(),
                                h.type_id
                            ),
                            ErrorCode::UnknownMessageType,
                        ));
                    }
                    Ok(_) => {
                        if tail & (k.in_cap - 1) == 0 && tail != run_start {
                            // Wrapped: the next slot is not contiguous with the run.
                            flush_run(&mut run, run_start, k);
                            run_start = tail;
                        }
                        let at = run.len();
                        run.resize(at + slot_bytes, 0);
                        run[at..at + bytes.len()].copy_from_slice(bytes);
                        tail = tail.wrapping_add(1);
                    }
                }
            });
            if n == 0 {
                break;
            }
            budget = k.in_cap - tail.wrapping_sub(k.in_head);
        }
        flush_run(&mut run, run_start, k);
        if tail != k.in_tail {
            k.in_tail = tail;
            write_ctrl(shared, k.ctrl(), ctrl::IN_TAIL, tail);
        }
        if rejected > 0 {
            cell.control.add_in_flight(-rejected);
        }
        for (h, text, code) in failures {
            cell.record_error(code, text.clone());
            local.fail_request(cell, &h, &text, false);
        }
        if moved {
            cell.input_waiters.notify();
        }
        moved
    }

    /// Each route's (target control block, target id) for the device: the target's control
    /// block when it is a running wgpu kernel, else `ROUTE_VIA_HOST` (the host routes it).
    fn resolve_routes(kernels: &Kernels<GpuKernel>, rec: &Rec) -> Vec<(u32, u32)> {
        let Some(dir) = rec.dir() else { return Vec::new() };
        program(rec.def())
            .routes()
            .iter()
            .map(|name| match dir.by_name(name) {
                Some(t) if t.state() != KernelState::Terminated => match kernels.index_of(t.id().0) {
                    Some(ti) if kernels[ti].phase() == Phase::Running => (kernels[ti].dev.ctrl(), t.id().0),
                    _ => (ROUTE_VIA_HOST, t.id().0),
                },
                _ => (ROUTE_VIA_HOST, u32::MAX),
            })
            .collect()
    }

    fn on_fail(shared: &Shared, rec: &mut Rec, cell: &KernelCell, (code, corr, source): (u32, u64, u32)) {
        let text = format!("WGSL handler failed: {}", program(rec.def()).describe_error(code));
        if rec.handler_failed(cell, &text, corr, source) {
            let init = program(rec.def()).init_state();
            if !init.is_empty() {
                shared.queue.write_buffer(
                    &shared.mem,
                    u64::from(rec.dev.state_off) * 4,
                    &words_to_bytes(init),
                );
            }
            write_ctrl(shared, rec.dev.ctrl(), ctrl::STATUS, 0);
        }
    }
}

/// A run of queue slots to copy back: `count` slots from counter `first` of a kernel's input or
/// output ring (split in two copies where it wraps).
#[derive(Clone, Copy, Debug)]
struct SlotRange {
    kernel: usize,
    input: bool,
    first: u32,
    count: u32,
}

impl SlotRange {
    fn geometry(&self, ks: &Kernels<GpuKernel>) -> (u32, u32, u32) {
        let k = &ks[self.kernel].dev;
        if self.input {
            (k.in_cap, k.in_slot, k.in_data)
        } else {
            (k.out_cap, k.out_slot, k.out_data)
        }
    }

    fn bytes(&self, ks: &Kernels<GpuKernel>) -> u64 {
        u64::from(self.count) * u64::from(self.geometry(ks).1) * 4
    }

    /// Encodes the copy into `rb` at byte `at`; returns the byte after it.
    fn encode_copy(
        &self,
        enc: &mut wgpu::CommandEncoder,
        mem: &wgpu::Buffer,
        rb: &wgpu::Buffer,
        at: u64,
        ks: &Kernels<GpuKernel>,
    ) -> u64 {
        let (cap, slot_words, data) = self.geometry(ks);
        let first = self.first & (cap - 1);
        let until_wrap = (cap - first).min(self.count);
        let slot_bytes = u64::from(slot_words) * 4;
        let src = u64::from(data + first * slot_words) * 4;
        enc.copy_buffer_to_buffer(mem, src, rb, at, u64::from(until_wrap) * slot_bytes);
        let mut at = at + u64::from(until_wrap) * slot_bytes;
        if self.count > until_wrap {
            let rest = u64::from(self.count - until_wrap) * slot_bytes;
            enc.copy_buffer_to_buffer(mem, u64::from(data) * 4, rb, at, rest);
            at += rest;
        }
        at
    }
}
