//! The CUDA backend of one runtime: a [`Device`] (the CUDA driver, or the host emulation), the
//! per-kernel memory, and the host agent thread.
//!
//! # Memory per kernel (the host↔device contract)
//!
//! ```text
//! mapped (pinned host memory, device-visible)        device memory
//! [params 128 B][routes 16 x 16 B][control block 128 B][output ring][snapshot]   [inbox][state][scratch]
//! + the input ring: the kernel cell's own input queue, allocated mapped by `input_ring`
//! ```
//!
//! * Input ring: host threads push (any `KernelHandle::send`, and K2K from CPU kernels push
//!   straight into it); the kernel is its only consumer. The host never pops it while the
//!   kernel can run (only after a failure stopped it, or after it exited).
//! * Output ring: the kernel is its only producer; the agent thread its only consumer. It
//!   routes each envelope: replies complete `call`s, emits go to the cell's output queue,
//!   K2K to kernels off the device go to their input queues, error replies fail requests.
//! * Inbox (device memory): other kernels on the device push with compare-and-swap, the
//!   kernel pops. The agent links routes (`RouteEntry.inbox`) to live targets and unlinks them
//!   when a target fails or terminates; a target only exits after every other kernel's `epoch`
//!   moved twice past the unlink, so no send can still be writing into it.
//! * Lifecycle: one word, `ctl` in the parameter block (`ringkernel_codegen::cuda::ctl`: active,
//!   terminate, exit allowed, restart and snapshot generations), written only by the host (the
//!   doorbell synchronously in `activate`/`deactivate`/`terminate`, and the agent) with SeqCst
//!   read-modify-writes, read by the kernel once per loop iteration with an acquire load at
//!   system scope: one PCIe read for every flag. The kernel's copy of the control block carries
//!   `hlc_packed` (after each message) and `terminated` (release, when it returns).
//! * Failures: the kernel stores the failure record, then `failures + 1` (release); it takes
//!   no input until the restart generation in `ctl` changes (the agent rewrote the state first).
//! * Snapshots: the host bumps the snapshot generation in `ctl`; between two messages the kernel
//!   copies its state into the mapped snapshot buffer and releases `snapshot_done`.
//! * Counters: the kernel counts handled messages per queue (`h2d_done`, `inbox_done`); the
//!   agent turns the deltas into `messages_processed` and `messages_in_flight` on the cell.
//!
//! Memory is never freed while any kernel of the device may run: `cuMemFree*` can wait for the
//! device to go idle, which persistent kernels never do. Ended kernels' memory goes to free
//! lists (one per block size) that later launches take from before they allocate, so launching
//! and terminating kernels keeps the memory flat; everything is freed once every launch has
//! returned at shutdown. A block is reused only after the kernel that used it has returned from
//! its launch (an input queue also only after its cell is dropped), and a reused mapped block is
//! zeroed first.

use crate::device::{Device, Failure, LaunchId, Mapped};
use crate::program::CudaProgram;
use core::mem::offset_of;
use ringkernel_codegen::cuda::{ctl, KernelParams, RouteEntry, MAX_ROUTES, ROUTE_BASE};
use ringkernel_core::agent::{Agent, BellHook, Busy, DeviceStep, Ending, Kernels, Record};
use ringkernel_core::backoff::Backoff;
use ringkernel_core::control_block::ControlBlock;
use ringkernel_core::message::KernelId;
use ringkernel_core::queue::{RawSlotRing, RingMemory, SlotRing};
use ringkernel_core::runtime::{Directory, KernelCell, KernelDef, KernelState, LaunchOptions};
use ringkernel_core::{DeviceError, Error, Result};
use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

/// Tuning of the CUDA backend.
#[derive(Debug, Clone)]
pub struct CudaConfig {
    /// Run generated kernels as C on host threads instead of on a GPU (tests and CI; see
    /// `emulator`). Never chosen by `Backend::Auto`.
    pub emulate: bool,
    /// Most CUDA kernels alive at once. Each persistent kernel occupies one block for its whole
    /// life on its own stream; the default (120) stays under the 128 kernels a device runs
    /// concurrently, so every launched kernel is resident.
    pub max_kernels: usize,
    /// How long `launch` waits for a new kernel to report that it runs on the device.
    pub start_timeout: Duration,
    /// Workers of each kernel group's launch (`RingKernel::launch_group`): one block of one
    /// thread each on a GPU (launched cooperatively, so they must all fit on the device at
    /// once), one host thread each in the emulation. Default 4.
    pub group_workers: u32,
    /// Host emulation only: a generated kernel yields its thread at random (one time in four)
    /// before every atomic access of the device protocol, so tests explore far more
    /// interleavings of workers, kernels and the host than the scheduler alone gives. Slow; for
    /// tests. Default off.
    pub emulate_chaos: bool,
}

impl Default for CudaConfig {
    fn default() -> Self {
        Self {
            emulate: false,
            max_kernels: 120,
            start_timeout: Duration::from_secs(20),
            group_workers: 4,
            emulate_chaos: false,
        }
    }
}

impl CudaConfig {
    /// The host emulation (see [`CudaConfig::emulate`]).
    #[must_use]
    pub fn host_emulation() -> Self {
        Self { emulate: true, ..Self::default() }
    }

    /// `RINGKERNEL_CUDA_EMULATE=1` selects the host emulation; `RINGKERNEL_CUDA_GROUP_WORKERS=N`
    /// sets [`CudaConfig::group_workers`].
    #[must_use]
    pub fn from_env() -> Self {
        let mut config = if std::env::var("RINGKERNEL_CUDA_EMULATE").as_deref() == Ok("1") {
            Self::host_emulation()
        } else {
            Self::default()
        };
        if let Some(w) = std::env::var("RINGKERNEL_CUDA_GROUP_WORKERS").ok().and_then(|v| v.parse().ok()) {
            config.group_workers = w;
        }
        config
    }
}

const ROUTES_OFF: usize = 128;
const CB_OFF: usize = ROUTES_OFF + MAX_ROUTES * 16;
const D2H_OFF: usize = CB_OFF + 128;
const _: () = assert!(CB_OFF.is_multiple_of(128) && D2H_OFF.is_multiple_of(128));
const _: () = assert!(core::mem::size_of::<ControlBlock>() == 128);

const fn align128(n: usize) -> usize {
    (n + 127) & !127
}

/// Memory of ended kernels: never freed while kernels may run (see the module docs), but reused
/// by later launches that need a block of the same size (a free list per size), so that launching
/// and terminating kernels keeps the memory flat.
#[derive(Default)]
pub(crate) struct Retired {
    /// Mapped blocks no kernel uses any more: free for reuse.
    pub(crate) mapped: Vec<Mapped>,
    /// Device blocks no kernel uses any more: free for reuse.
    pub(crate) device: Vec<(u64, usize)>,
    /// Input queues whose cell was dropped while the kernel that reads them may still run; they
    /// join `mapped` once no kernel the agent knows reads them (see `Agent::sweep_inputs`).
    inputs: Vec<Mapped>,
    /// Blocks allocated from the device and not freed (in use, free for reuse, or waiting).
    allocated: usize,
}

impl Retired {
    /// A free mapped block of exactly `len` bytes, zeroed, or a new one.
    pub(crate) fn take_mapped(
        &mut self,
        dev: &dyn Device,
        len: usize,
    ) -> core::result::Result<Mapped, DeviceError> {
        if let Some(i) = self.mapped.iter().position(|m| m.len == len) {
            let m = self.mapped.swap_remove(i);
            // SAFETY: `m` is `len` bytes of mapped memory that no kernel and no host code uses
            // any more (its kernel's launch returned, and its cell is gone or terminated); we own
            // it until it is handed out.
            unsafe { core::ptr::write_bytes(m.host, 0, m.len) };
            return Ok(m);
        }
        let m = dev.alloc_mapped(len)?;
        self.allocated += 1;
        Ok(m)
    }

    /// A free device block of exactly `len` bytes (contents undefined, as from `cuMemAlloc`), or
    /// a new one.
    pub(crate) fn take_device(
        &mut self,
        dev: &dyn Device,
        len: usize,
    ) -> core::result::Result<u64, DeviceError> {
        if let Some(i) = self.device.iter().position(|&(_, l)| l == len) {
            return Ok(self.device.swap_remove(i).0);
        }
        let d = dev.alloc_device(len)?;
        self.allocated += 1;
        Ok(d)
    }
}

/// Blocks of device and mapped memory the CUDA backend holds (for tests: launching and
/// terminating kernels must keep `allocated` flat).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBlocks {
    /// Allocated from the device and not freed.
    pub allocated: usize,
    /// Free for the next launch to reuse.
    pub free: usize,
    /// Input queues of dropped cells whose kernel may still run.
    pub awaiting_exit: usize,
}

/// Where a kernel's snapshot protocol lives.
#[derive(Clone, Copy)]
struct StateInfo {
    params: *mut KernelParams,
    snapshot: *const u32,
    words: usize,
    /// The state type: snapshots are in its natural C layout, callers get its word layout.
    ty: ringkernel_codegen::types::GpuTypeDesc,
}

// SAFETY: pointers into a kernel's mapped block, which is neither freed nor reused while its
// entry is in `states` (removed when the kernel ends, before the block joins a free list, and
// cleared by shutdown before freeing); the shared words are accessed atomically.
unsafe impl Send for StateInfo {}

pub(crate) struct Shared {
    pub(crate) dev: Arc<dyn Device>,
    pub(crate) retired: Arc<Mutex<Retired>>,
    states: Mutex<HashMap<u32, StateInfo>>,
    pub(crate) live: AtomicUsize,
    pub(crate) config: CudaConfig,
    fault: Mutex<Option<String>>,
    /// Set once every launch has returned (memory dropped afterwards can be freed at once).
    all_done: Arc<AtomicBool>,
    /// K2K messages kernels of this device sent through the host (target not linked).
    via_host: AtomicU64,
    /// Held (read) while a doorbell writes into a kernel's mapped control block, (write) while
    /// shutdown frees that memory.
    mem_lock: RwLock<()>,
}

/// A kernel's doorbell hook: copies the cell's lifecycle flags into the kernel's `ctl` word at
/// once (so a message sent after `deactivate` returns is never taken by the kernel), before the
/// doorbell wakes the agent.
struct CtlMirror {
    shared: Weak<Shared>,
    cell: Weak<KernelCell>,
    /// Host address of the kernel's `ctl` word (mapped; lives until the backend shuts down).
    ctl: usize,
    /// `(generation << 1) | terminate_requested` of the cell's control block when this bell last
    /// mirrored it (`u64::MAX`: never). Every `set_active` bumps the generation, so an unchanged
    /// value means `ctl` already matches, and a plain `send` skips the lock and the mirror.
    mirrored: AtomicU64,
    /// Set by the agent once it has linked this kernel's routes (shared with its `Kern`).
    routed: Arc<AtomicBool>,
}

impl BellHook for CtlMirror {
    fn ring(&self) {
        let Some(s) = self.shared.upgrade() else { return };
        if let Some(cell) = self.cell.upgrade() {
            // Read before mirroring: a change after this read makes the next ring mirror again.
            let seen =
                (u64::from(cell.control.generation()) << 1) | u64::from(cell.control.terminate_requested());
            if self.mirrored.load(Ordering::Relaxed) == seen {
                return;
            }
            let _mem = s.mem_lock.read().unwrap_or_else(|e| e.into_inner());
            // A terminated kernel's block may be handed to a later launch (under the write
            // lock, after the cell was marked terminated): leave it alone.
            if !s.all_done.load(Ordering::Acquire) && cell.state() != KernelState::Terminated {
                // SAFETY: the word lives in mapped memory freed only by `stop`, under the write
                // lock, which also sets `all_done` (checked under the read lock), and reused only
                // under the write lock after the cell became terminated (checked under the read
                // lock); it is only accessed atomically.
                let ctl = unsafe { AtomicU32::from_ptr(self.ctl as *mut u32) };
                // Acquire: pairs with the agent's release after linking the routes.
                let routed = self.routed.load(Ordering::Acquire);
                mirror_lifecycle(&cell.control, ctl, routed);
                // Until then the activation is left to the agent: mirror again next time.
                if routed || !cell.control.is_active() {
                    self.mirrored.store(seen, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Copies `active` and `terminate_requested` from the cell's control block into the kernel's
/// `ctl` word. Release: pairs with the kernel's acquire load of `ctl`; anything the host
/// published before (a message, a rewritten state) is visible with the new flags.
///
/// `routed`: the agent has linked the kernel's routes. A kernel is not activated on the device
/// before that: its first sends would go through the host, later ones straight into the target's
/// inbox, and the target could take a later message before an earlier one (per-sender order).
fn mirror_lifecycle(host: &ControlBlock, ctl_word: &AtomicU32, routed: bool) {
    let now = ctl_word.load(Ordering::Relaxed);
    if host.is_active() && routed && now & ctl::ACTIVE == 0 {
        ctl_word.fetch_or(ctl::ACTIVE, Ordering::SeqCst);
    } else if !host.is_active() && now & ctl::ACTIVE != 0 {
        // SeqCst (a full fence on x86): the cleared bit is visible before any message this
        // thread publishes afterwards (deactivate, then send).
        ctl_word.fetch_and(!ctl::ACTIVE, Ordering::SeqCst);
    }
    if host.terminate_requested() && now & ctl::TERMINATE == 0 {
        ctl_word.fetch_or(ctl::TERMINATE, Ordering::SeqCst);
    }
}

/// Adds one to the generation field at `shift` of `ctl`, leaving the other bits alone; returns
/// the new generation.
fn bump_generation(ctl_word: &AtomicU32, shift: u32) -> u32 {
    let mut new_gen = 0;
    let _ = ctl_word.fetch_update(Ordering::SeqCst, Ordering::Relaxed, |c| {
        new_gen = ((c >> shift) + 1) & ctl::GEN_MASK;
        Some((c & !(ctl::GEN_MASK << shift)) | (new_gen << shift))
    });
    new_gen
}

/// The input ring's memory: mapped; when the cell drops it waits for its kernel to return, then
/// joins the free list (see [`Retired`]).
struct InputMemory {
    m: Mapped,
    dev: Arc<dyn Device>,
    retired: Arc<Mutex<Retired>>,
    all_done: Arc<AtomicBool>,
}

impl RingMemory for InputMemory {
    fn region(&self) -> (NonNull<u8>, usize) {
        (NonNull::new(self.m.host).expect("mapped memory is not null"), self.m.len)
    }
}

impl Drop for InputMemory {
    fn drop(&mut self) {
        // Acquire: pairs with the release in `stop` after every launch returned.
        let mut r = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        if self.all_done.load(Ordering::Acquire) {
            self.dev.free_mapped(self.m);
            r.allocated -= 1;
        } else {
            // The kernel reading it may still run: reusable once the agent has seen it exit.
            r.inputs.push(self.m);
        }
    }
}

/// Where a terminating kernel is in the unlink protocol (see the module docs).
#[derive(Debug, PartialEq, Eq)]
enum Unlink {
    /// Not terminating.
    No,
    /// Routes to it are unlinked at the end of this round.
    Pending,
    /// Unlinked; waiting for these kernels' epochs to move twice.
    Waiting(Vec<(u32, u32)>),
}

/// One CUDA kernel's device bookkeeping, kept in its agent [`Record`].
struct Kern {
    /// Its routes have been linked once (see `mirror_lifecycle`); shared with its doorbell.
    routed: Arc<AtomicBool>,
    /// Host address of its input queue (the cell's), which it reads until its launch returns.
    h2d_host: usize,
    block: Mapped,
    devmem: (u64, usize),
    inbox: (u64, usize),
    state_dev: u64,
    d2h: RawSlotRing,
    launch: LaunchId,
    seen_h2d: u64,
    seen_inbox: u64,
    /// Terminating: routes to it are being unlinked, then the (id, epoch) of every other kernel
    /// at that moment.
    unlink: Unlink,
    exit_allowed: bool,
    failures_seen: u32,
    /// Its launch has returned (or the device faulted): its memory may be reused once it is gone.
    exited: bool,
}

impl Kern {
    fn params(&self) -> *mut KernelParams {
        self.block.host.cast()
    }
    /// The `u32` field at byte `off` of the parameter block, as an atomic.
    fn a32(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off + 4 <= core::mem::size_of::<KernelParams>() && off.is_multiple_of(4));
        // SAFETY: a field of this kernel's parameter block (mapped memory neither freed nor
        // reused while this `Kern` exists: it joins a free list when the agent drops the `Kern`),
        // aligned (offset_of a u32 field of a repr(C) struct at a 128-aligned address), and only
        // accessed atomically by both sides while the kernel runs.
        unsafe { AtomicU32::from_ptr(self.block.host.wrapping_add(off).cast()) }
    }
    /// The `u64` field at byte `off` of the parameter block, as an atomic.
    fn a64(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off + 8 <= core::mem::size_of::<KernelParams>() && off.is_multiple_of(8));
        // SAFETY: as in a32.
        unsafe { AtomicU64::from_ptr(self.block.host.wrapping_add(off).cast()) }
    }
    fn ctl(&self) -> &AtomicU32 {
        self.a32(offset_of!(KernelParams, ctl))
    }
    fn cb(&self) -> &ControlBlock {
        // SAFETY: initialised with ptr::write in attach; lives as long as this `Kern` (see a32).
        unsafe { &*(self.block.host.add(CB_OFF) as *const ControlBlock) }
    }
    fn route(&self, r: usize) -> (&AtomicU64, &AtomicU32) {
        // SAFETY: r < MAX_ROUTES, inside the mapped route table; fields accessed atomically.
        unsafe {
            let e = (self.block.host.add(ROUTES_OFF) as *mut RouteEntry).add(r);
            (
                AtomicU64::from_ptr(core::ptr::addr_of_mut!((*e).inbox)),
                AtomicU32::from_ptr(core::ptr::addr_of_mut!((*e).kernel_id)),
            )
        }
    }
}

/// The CUDA backend of one runtime (see the module docs).
pub struct CudaBackend {
    pub(crate) shared: Arc<Shared>,
    agent: Agent<Poller>,
    /// Kernel groups' runner threads (`crate::group`), joined at shutdown.
    pub(crate) groups: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Tells every group runner to stop its workers (shutdown).
    pub(crate) groups_stop: Arc<AtomicBool>,
}

impl core::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CudaBackend").field("device", &self.shared.dev.describe()).finish_non_exhaustive()
    }
}

impl CudaBackend {
    /// Opens device 0 (or the host emulation) and starts the agent thread. The error says why
    /// CUDA cannot be used (no driver, no device, old driver, no NVRTC, no C compiler for the
    /// emulation); it never panics.
    pub fn new(config: CudaConfig) -> core::result::Result<Self, String> {
        let dev: Arc<dyn Device> = if config.emulate {
            Arc::new(crate::emulator::Emulator::with_chaos(config.emulate_chaos)?)
        } else {
            let info = crate::probe_device().map_err(|e| e.to_string())?;
            Arc::new(crate::driver::Driver::open(&info).map_err(|e| e.to_string())?)
        };
        Self::with_device(config, dev)
    }

    /// The backend on a given device (tests wrap the emulation in a recording device).
    pub(crate) fn with_device(
        config: CudaConfig,
        dev: Arc<dyn Device>,
    ) -> core::result::Result<Self, String> {
        let shared = Arc::new(Shared {
            dev,
            retired: Arc::new(Mutex::new(Retired::default())),
            states: Mutex::new(HashMap::new()),
            live: AtomicUsize::new(0),
            config,
            fault: Mutex::new(None),
            all_done: Arc::new(AtomicBool::new(false)),
            via_host: AtomicU64::new(0),
            mem_lock: RwLock::new(()),
        });
        let poller = Poller {
            shared: shared.clone(),
            relink: false,
            buf: Vec::new(),
            lens: Vec::new(),
            last_check: None,
        };
        let agent = Agent::spawn("ringkernel-cuda", poller)
            .map_err(|e| format!("cannot start the CUDA agent thread: {e}"))?;
        tracing::info!("cuda backend on {}", shared.dev.describe());
        Ok(Self { shared, agent, groups: Mutex::default(), groups_stop: Arc::default() })
    }

    /// The device in use, e.g. `CUDA driver 13.0, 1 device(s), device 0 NVIDIA H100 (sm_90), …`.
    #[must_use]
    pub fn device(&self) -> String {
        self.shared.dev.describe()
    }

    /// K2K messages this device's kernels sent through the host because their target was not
    /// linked on the device (another backend, not launched yet, terminating or failed).
    #[must_use]
    pub fn k2k_via_host(&self) -> u64 {
        self.shared.via_host.load(Ordering::Relaxed)
    }

    /// Memory blocks this backend holds (see [`MemoryBlocks`]).
    #[doc(hidden)]
    #[must_use]
    pub fn memory_blocks(&self) -> MemoryBlocks {
        let r = self.shared.retired.lock().unwrap_or_else(|e| e.into_inner());
        MemoryBlocks {
            allocated: r.allocated,
            free: r.mapped.len() + r.device.len(),
            awaiting_exit: r.inputs.len(),
        }
    }

    /// Whether kernels run in the host emulation rather than on a GPU.
    #[must_use]
    pub fn is_emulated(&self) -> bool {
        self.shared.dev.emulated()
    }

    /// Whether `def` can run on this backend (it carries a `CudaProgram`).
    #[must_use]
    pub fn can_run(def: &KernelDef) -> bool {
        def.gpu_program::<CudaProgram>().is_some()
    }

    /// An input ring for a kernel of this backend, in mapped memory the kernel reads directly.
    pub fn input_ring(&self, options: &LaunchOptions) -> Result<SlotRing> {
        let bytes = SlotRing::region_size(options.input_capacity, options.slot_size())?;
        let m = self
            .shared
            .retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_mapped(&*self.shared.dev, bytes);
        let m = m.map_err(|e| Error::gpu_device("cuda", "", "cannot allocate the input queue", e))?;
        let mem = InputMemory {
            m,
            dev: self.shared.dev.clone(),
            retired: self.shared.retired.clone(),
            all_done: self.shared.all_done.clone(),
        };
        Ok(SlotRing::with_memory(options.input_capacity, options.slot_size(), Box::new(mem))?)
    }

    /// Compiles (or reuses) the kernel's module from `def`'s program, allocates and initialises
    /// its memory, launches it, waits until it runs, and hands it to the agent. The cell's input
    /// queue must come from [`CudaBackend::input_ring`].
    pub fn attach(
        &self,
        cell: &Arc<KernelCell>,
        def: Option<&Arc<KernelDef>>,
        dir: &Arc<Directory>,
    ) -> Result<()> {
        let name = cell.name().to_string();
        let gpu_err = |detail: String| Error::gpu("cuda", name.clone(), detail);
        if let Some(f) = self.shared.fault.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Err(gpu_err(format!("the device failed earlier: {f}")));
        }
        let def = def.cloned().ok_or_else(|| gpu_err("no kernel definition".into()))?;
        let program = def
            .gpu_program::<CudaProgram>()
            .ok_or_else(|| gpu_err("the kernel definition carries no CudaProgram".into()))?;
        let source = self.shared.dev.source(program).map_err(&gpu_err)?;
        if crate::ptx_check::enabled() {
            let cuda = program.cuda_source().map_err(&gpu_err)?;
            crate::ptx_check::check(cell.name(), cuda)
                .map_err(|e| gpu_err(format!("the generated CUDA C fails the PTX check: {e}")))?;
        }
        let sh = &*self.shared;
        if sh.live.fetch_add(1, Ordering::AcqRel) >= sh.config.max_kernels {
            sh.live.fetch_sub(1, Ordering::AcqRel);
            return Err(gpu_err(format!(
                "{} CUDA kernels are alive, the most CudaConfig::max_kernels allows (each persistent kernel \
                 holds a block and a stream for its whole life)",
                sh.config.max_kernels
            )));
        }
        let r = if cell.is_group() {
            self.attach_group(cell, &def, program, source, dir)
        } else {
            self.attach_inner(cell, dir, &def, program, source)
        };
        if r.is_err() {
            sh.live.fetch_sub(1, Ordering::AcqRel);
        }
        r.map_err(|f| f.into_error(name))
    }

    fn attach_inner(
        &self,
        cell: &Arc<KernelCell>,
        dir: &Arc<Directory>,
        def: &Arc<KernelDef>,
        program: &CudaProgram,
        source: &str,
    ) -> core::result::Result<(), Failure> {
        let sh = &*self.shared;
        let dev = &sh.dev;
        let module = dev.compile(cell.name(), source)?;
        let opts = cell.options();
        let slot = opts.slot_size();
        let d2h_len = SlotRing::region_size(opts.output_capacity, slot).map_err(|e| e.to_string())?;
        let inbox_len = SlotRing::region_size(opts.input_capacity, slot).map_err(|e| e.to_string())?;
        // The device's natural layout of the state (a `u64` member 8-byte aligned).
        let state = program.device_state();
        let state_off = align128(inbox_len);
        let scratch_off = state_off + align128(state.len() * 4);
        let dev_len = scratch_off + slot;
        let h2d_dev = dev.device_address(cell.input().region().0.as_ptr()).map_err(|e| {
            format!(
                "the kernel's input queue is not in mapped memory (made by CudaBackend::input_ring?): {e}"
            )
        })?;
        let snap_off = align128(D2H_OFF + d2h_len);
        let block = sh
            .retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_mapped(&**dev, snap_off + state.len().max(1) * 4)?;
        let retire = |block: Mapped, devmem: Option<u64>| {
            let mut r = sh.retired.lock().unwrap_or_else(|e| e.into_inner());
            r.mapped.push(block);
            if let Some(d) = devmem {
                r.device.push((d, dev_len));
            }
        };
        let devmem = sh.retired.lock().unwrap_or_else(|e| e.into_inner()).take_device(&**dev, dev_len);
        let devmem = match devmem {
            Ok(d) => d,
            Err(e) => {
                retire(block, None);
                return Err(e.into());
            }
        };
        let init = || -> core::result::Result<RawSlotRing, Failure> {
            // SAFETY: `block` is D2H_OFF + d2h_len fresh mapped bytes, 128-aligned at D2H_OFF; no
            // kernel uses it yet.
            let d2h = unsafe {
                RawSlotRing::init(
                    NonNull::new(block.host.add(D2H_OFF)).expect("non-null"),
                    d2h_len,
                    opts.output_capacity,
                    slot,
                )
            }
            .map_err(|e| e.to_string())?;
            let staging = SlotRing::new(opts.input_capacity, slot).map_err(|e| e.to_string())?;
            let (p, n) = staging.region();
            // SAFETY: the staging ring owns `n` initialised bytes at `p`.
            dev.write_device(devmem, unsafe { core::slice::from_raw_parts(p.as_ptr(), n) })?;
            let bytes: Vec<u8> = state.iter().flat_map(|w| w.to_le_bytes()).collect();
            if !bytes.is_empty() {
                dev.write_device(devmem + state_off as u64, &bytes)?;
            }
            let cb = ControlBlock::for_kernel(cell.id().0, cell.input().capacity(), d2h.capacity());
            cb.set_hlc_packed(cell.control.hlc_packed());
            // SAFETY: CB_OFF..CB_OFF+128 lies in the fresh block, 128-aligned.
            unsafe { (block.host.add(CB_OFF) as *mut ControlBlock).write(cb) };
            let params = KernelParams {
                cb: block.dev + CB_OFF as u64,
                h2d: h2d_dev,
                d2h: block.dev + D2H_OFF as u64,
                inbox: devmem,
                state: devmem + state_off as u64,
                scratch: devmem + scratch_off as u64,
                routes: block.dev + ROUTES_OFF as u64,
                snapshot: block.dev + snap_off as u64,
                ctl: if cell.control.is_active() { ctl::ACTIVE } else { 0 },
                n_routes: program.routes().len() as u32,
                scratch_bytes: slot as u32,
                state_words: state.len() as u32,
                ..KernelParams::default()
            };
            // SAFETY: offset 0 of the fresh block; the route table after it is already zero.
            unsafe { (block.host as *mut KernelParams).write(params) };
            Ok(d2h)
        };
        let d2h = match init() {
            Ok(r) => r,
            Err(e) => {
                retire(block, Some(devmem));
                return Err(e);
            }
        };
        // Release: the parameter block, rings and state are complete before the launch (the
        // launch itself orders host writes before the kernel starts).
        fence(Ordering::SeqCst);
        let launch = match dev.launch(module, block.dev) {
            Ok(l) => l,
            Err(e) => {
                retire(block, Some(devmem));
                return Err(e.into());
            }
        };
        let routed = Arc::new(AtomicBool::new(false));
        let k = Kern {
            routed: routed.clone(),
            h2d_host: cell.input().region().0.as_ptr() as usize,
            block,
            devmem: (devmem, dev_len),
            inbox: (devmem, inbox_len),
            state_dev: devmem + state_off as u64,
            d2h,
            launch,
            seen_h2d: 0,
            seen_inbox: 0,
            unlink: Unlink::No,
            exit_allowed: false,
            failures_seen: 0,
            exited: false,
        };
        // Wait until the kernel runs (its first loop iteration bumps `epoch`): a kernel that
        // cannot become resident is an error here, not a silent hang later.
        let started = Instant::now();
        let mut wait = Backoff::YIELD_POLL.waiter();
        // Relaxed: only "has the kernel run at all" is asked; nothing is read on the strength of it.
        while k.a32(offset_of!(KernelParams, epoch)).load(Ordering::Relaxed) == 0 {
            match dev.finished(launch) {
                Ok(false) => {}
                Ok(true) => return Err("the kernel returned right after its launch".into()),
                Err(e) => {
                    self.fault(&e.to_string());
                    return Err(e.into());
                }
            }
            if started.elapsed() > sh.config.start_timeout {
                // Leave it a way out should it start later; its memory is reused only once the
                // agent has seen its launch return.
                // SeqCst, as every host write of `ctl` (pairs with the kernel's acquire load).
                k.ctl().fetch_or(ctl::TERMINATE | ctl::EXIT, Ordering::SeqCst);
                self.agent.attach_gone(cell, def, dir, k);
                return Err(format!(
                    "the kernel did not start within {:?} (is the device full? CudaConfig::max_kernels)",
                    sh.config.start_timeout
                )
                .into());
            }
            wait.wait();
        }
        sh.states.lock().unwrap_or_else(|e| e.into_inner()).insert(
            cell.id().0,
            StateInfo {
                params: k.params(),
                snapshot: k.block.host.wrapping_add(snap_off) as *const u32,
                words: state.len(),
                ty: program.state_type(),
            },
        );
        let mirror = CtlMirror {
            shared: Arc::downgrade(&self.shared),
            cell: Arc::downgrade(cell),
            ctl: k.block.host as usize + offset_of!(KernelParams, ctl),
            mirrored: AtomicU64::new(u64::MAX),
            routed,
        };
        self.agent.attach(cell, def, dir, k, Some(Box::new(mirror)));
        Ok(())
    }

    fn fault(&self, reason: &str) {
        *self.shared.fault.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_string());
        self.agent.wake();
    }

    /// A copy of a running kernel's state in the GPU word layout, taken by the kernel itself
    /// between two messages
    /// (it sees the request in its `ctl` word and copies the state into a mapped buffer).
    /// `Error::Gpu` when the kernel does not answer within 200 ms (a handler still running, for
    /// example one waiting for room in a full K2K target) or is not running.
    pub fn state_words(&self, kernel: KernelId) -> Result<Vec<u32>> {
        let gpu_err = |detail: String| Error::gpu("cuda", format!("#{}", kernel.0), detail);
        let states = self.shared.states.lock().unwrap_or_else(|e| e.into_inner());
        let info =
            *states.get(&kernel.0).ok_or_else(|| gpu_err("no running CUDA kernel with this id".into()))?;
        // SAFETY: the parameter block is neither freed nor reused while its entry is in `states`
        // (the agent removes the entry, under this lock, before the block can join a free list;
        // shutdown clears it before freeing), and we hold the lock; both words are accessed
        // atomically by host and kernel.
        let (ctl_word, done) = unsafe {
            (
                AtomicU32::from_ptr(core::ptr::addr_of_mut!((*info.params).ctl)),
                AtomicU32::from_ptr(core::ptr::addr_of_mut!((*info.params).snapshot_done)),
            )
        };
        let generation = bump_generation(ctl_word, ctl::SNAPSHOT_SHIFT);
        let deadline = Instant::now() + Duration::from_millis(200);
        let mut wait = Backoff::YIELD_POLL.waiter();
        // Acquire: pairs with the kernel's release of `snapshot_done` after its copy.
        while done.load(Ordering::Acquire) != generation {
            if Instant::now() > deadline {
                return Err(gpu_err(
                    "the kernel did not take a snapshot within 200 ms: a handler is still running (for \
                     example one waiting for room in a full K2K target)"
                        .into(),
                ));
            }
            wait.wait();
        }
        // SAFETY: `words` words of the mapped snapshot buffer, written by the kernel before the
        // release we acquired; it writes them again only on the next request, which needs `states`.
        let natural = unsafe { core::slice::from_raw_parts(info.snapshot, info.words) };
        Ok(info.ty.natural_to_words(natural))
    }

    /// Stops the agent; kernels should have been terminated first (any still running are told to
    /// exit). Frees the device memory once every launch has returned.
    pub fn shutdown(&self) {
        // Groups first: their runners stop their workers and retire their memory, which the
        // agent frees once every launch has returned.
        self.groups_stop.store(true, Ordering::Release);
        let groups = core::mem::take(&mut *self.groups.lock().unwrap_or_else(|e| e.into_inner()));
        for g in groups {
            g.thread().unpark();
            let _ = g.join();
        }
        self.agent.shutdown();
    }
}

/// The CUDA backend's device step, run by the agent thread: polls every kernel's counters,
/// failure record and output queue, links routes, runs the unlink protocol, and recycles the
/// memory of ended kernels.
struct Poller {
    shared: Arc<Shared>,
    relink: bool,
    buf: Vec<u8>,
    lens: Vec<usize>,
    last_check: Option<Instant>,
}

type Rec = Record<Kern>;

/// The kernel's CUDA program (checked at attach).
fn program(def: &KernelDef) -> &CudaProgram {
    def.gpu_program::<CudaProgram>().expect("checked at attach")
}

impl DeviceStep for Poller {
    type Kernel = Kern;
    const NAME: &'static str = "CUDA";
    const THREAD: &'static str = "CUDA agent";
    // Kernels can produce output without a doorbell (device K2K chains, slow handlers), so the
    // agent polls, backing off to 1 ms when nothing happens. Its rounds are never `Blocked`.
    const IDLE: Backoff = Backoff::AGENT_IDLE;
    const ROUTE_BASE: Option<u32> = Some(ROUTE_BASE);

    fn routes(def: &KernelDef) -> &[String] {
        program(def).routes()
    }

    fn describe_error(def: &KernelDef, code: u32) -> String {
        program(def).describe_error(code)
    }

    fn admitted(&mut self, kernels: &mut Kernels<Kern>, arrived: bool) {
        self.relink |= arrived;
        self.sweep_inputs(kernels);
    }

    fn device_fault(&mut self) -> Option<String> {
        self.shared.fault.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn round(&mut self, kernels: &mut Kernels<Kern>) -> Busy {
        if self.round(kernels) {
            Busy::Work
        } else {
            Busy::Idle
        }
    }

    /// Its memory joins the free lists once its launch has returned (`round`).
    fn release(&mut self, rec: &mut Rec, ending: Ending) {
        if ending == Ending::Abandoned {
            // SeqCst, as every host write of `ctl` (pairs with the kernel's acquire load).
            rec.dev.ctl().fetch_or(ctl::TERMINATE | ctl::EXIT, Ordering::SeqCst);
        }
        self.shared.live.fetch_sub(1, Ordering::AcqRel);
        self.shared.states.lock().unwrap_or_else(|e| e.into_inner()).remove(&rec.id());
        self.relink = true;
    }

    /// The device kernel is told to stop taking input; it stays the only consumer of its queues,
    /// so the host does not drain them: what is queued is handled or handed back when it
    /// terminates, as for any kernel.
    fn stop_taking_input(&mut self, rec: &mut Rec, cell: &KernelCell) -> bool {
        self.relink = true;
        cell.control.set_active(false);
        mirror_lifecycle(&cell.control, rec.dev.ctl(), false);
        false
    }

    /// A faulted device runs nothing any more: the kernel counts as exited.
    fn device_lost(&mut self, rec: &mut Rec) -> bool {
        rec.dev.exited = true;
        true
    }

    /// Shutdown: tell every kernel still running to exit, wait for the launches, free memory.
    fn stop(&mut self, kernels: &mut Kernels<Kern>) {
        let sh = &*self.shared;
        for rec in kernels.iter() {
            rec.dev.ctl().fetch_or(ctl::TERMINATE | ctl::EXIT, Ordering::SeqCst);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut all = true;
        for rec in kernels.iter_mut() {
            let k = &mut rec.dev;
            let mut wait = Backoff::DEVICE_EXIT.waiter();
            while !k.exited && Instant::now() < deadline {
                match sh.dev.finished(k.launch) {
                    Ok(true) => k.exited = true,
                    Ok(false) => wait.wait(),
                    Err(_) => break,
                }
            }
            all &= k.exited;
        }
        if !all || sh.fault.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
            tracing::warn!(
                "CUDA kernels still running (or the device faulted) at shutdown; their memory is not freed"
            );
            return;
        }
        let _mem = sh.mem_lock.write().unwrap_or_else(|e| e.into_inner());
        sh.states.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let mut r = sh.retired.lock().unwrap_or_else(|e| e.into_inner());
        // The records stay (the agent aborts their cells after this) but are never served again.
        for rec in kernels.iter() {
            r.mapped.push(rec.dev.block);
            r.device.push(rec.dev.devmem);
        }
        let inputs = core::mem::take(&mut r.inputs);
        for m in core::mem::take(&mut r.mapped).into_iter().chain(inputs) {
            sh.dev.free_mapped(m);
            r.allocated -= 1;
        }
        for (d, len) in core::mem::take(&mut r.device) {
            sh.dev.free_device(d, len);
            r.allocated -= 1;
        }
        // Release: pairs with the acquire in the doorbell and in InputMemory's drop.
        sh.all_done.store(true, Ordering::Release);
    }
}

impl Poller {
    /// One pass over every kernel; `true` if anything moved.
    fn round(&mut self, kernels: &mut Kernels<Kern>) -> bool {
        let sh = self.shared.clone();
        let mut work = false;
        let check = self.last_check.is_none_or(|t| t.elapsed() > Duration::from_millis(5));
        if check {
            self.last_check = Some(Instant::now());
        }
        for i in 0..kernels.len() {
            let rec = &mut kernels[i];
            if rec.is_gone() {
                if !rec.dev.exited && sh.dev.finished(rec.dev.launch).unwrap_or(true) {
                    rec.dev.exited = true;
                }
                continue;
            }
            // A panic in the agent's own code while it serves one kernel fails that kernel only;
            // routing for every other kernel goes on.
            work |= kernels.serve(i, self, |p, ks| p.step(&sh, ks, i, check)).unwrap_or(true);
        }
        if self.relink {
            self.relink = false;
            Self::link_routes(kernels);
        }
        if kernels.iter().any(|r| r.is_gone() && r.dev.exited) {
            // Ended kernels: their memory goes to the free lists, for later launches to reuse
            // (freed at shutdown). The write lock waits for doorbells still mirroring into a
            // parameter block; later ones see the cell terminated and leave the block alone.
            let _mem = sh.mem_lock.write().unwrap_or_else(|e| e.into_inner());
            let mut r = sh.retired.lock().unwrap_or_else(|e| e.into_inner());
            kernels.retain(|rec| {
                if rec.is_gone() && rec.dev.exited {
                    r.mapped.push(rec.dev.block);
                    r.device.push(rec.dev.devmem);
                    false
                } else {
                    true
                }
            });
            work = true;
        }
        work
    }

    /// Moves input queues of dropped cells whose kernel has returned (or never ran) to the free
    /// list. The caller holds the hand-off lock and has moved the attached kernels into `kernels`.
    fn sweep_inputs(&self, kernels: &Kernels<Kern>) {
        let mut r = self.shared.retired.lock().unwrap_or_else(|e| e.into_inner());
        if r.inputs.is_empty() {
            return;
        }
        let read: std::collections::HashSet<usize> = kernels.iter().map(|k| k.dev.h2d_host).collect();
        let (still, free): (Vec<Mapped>, Vec<Mapped>) =
            r.inputs.drain(..).partition(|m| read.contains(&(m.host as usize)));
        r.inputs = still;
        r.mapped.extend(free);
    }

    fn step(&mut self, sh: &Shared, kernels: &mut Kernels<Kern>, i: usize, check: bool) -> bool {
        let mut work = false;
        // Asking the driver costs a call per kernel: only when the kernel says it has ended, or
        // every few milliseconds to notice a fault.
        if check || kernels[i].dev.cb().is_terminated() {
            match sh.dev.finished(kernels[i].dev.launch) {
                Ok(done) => kernels[i].dev.exited |= done,
                Err(e) => {
                    let e = e.to_string();
                    *sh.fault.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.clone());
                    kernels.fail_all(self, &e);
                    return true;
                }
            }
        }
        // The cell was dropped or aborted: the kernel is told to exit, and forgotten once it has.
        let Some(cell) = kernels.live_cell(i, self) else { return false };
        cell.check_injected_fault();
        let rec = &mut kernels[i];
        rec.start();
        // 1. Lifecycle into the kernel's `ctl` word (the doorbell does it too).
        mirror_lifecycle(&cell.control, rec.dev.ctl(), rec.dev.routed.load(Ordering::Relaxed));
        let terminating = cell.control.terminate_requested();
        // 2. Counters and clock.
        work |= Self::sync_counts(&mut rec.dev, &cell);
        // 3. A handler called rk_fail.
        // Acquire: pairs with the kernel's release of `failures` after the fail_* stores.
        let failures = rec.dev.a32(offset_of!(KernelParams, failures)).load(Ordering::Acquire);
        if !rec.is_failed() && failures != rec.dev.failures_seen {
            rec.dev.failures_seen = failures;
            Self::on_fail(sh, rec, &cell);
            if rec.is_failed() {
                self.relink = true;
            }
            work = true;
        }
        // 4. Outputs, in order.
        self.buf.clear();
        self.lens.clear();
        let (buf, lens) = (&mut self.buf, &mut self.lens);
        let n = rec.dev.d2h.pop_batch_with(1024, |b| {
            buf.extend_from_slice(b);
            lens.push(b.len());
        });
        if n > 0 {
            let mut at = 0;
            for &len in &self.lens {
                if rec.route_output::<Poller>(&cell, &self.buf[at..at + len]) {
                    sh.via_host.fetch_add(1, Ordering::Relaxed);
                }
                at += len;
            }
            work = true;
        }
        if !rec.local.flush(&cell) {
            work = true;
        }
        // 5. A failed kernel takes no input: hand its queued messages back.
        if rec.is_failed() && !cell.input().is_empty() {
            rec.drain_input(&cell);
            work = true;
        }
        // 6. Termination: unlink, let it exit, collect what is left.
        if terminating && rec.dev.unlink == Unlink::No {
            rec.dev.unlink = Unlink::Pending;
            self.relink = true;
            return true;
        }
        if let Unlink::Waiting(epochs) = &kernels[i].dev.unlink {
            if !kernels[i].dev.exit_allowed {
                let moved = epochs.iter().all(|&(id, e)| {
                    let Some(j) = kernels.find(id) else { return true };
                    let o = &kernels[j];
                    o.dev.exited
                        || o.is_gone()
                        // Acquire: pairs with the kernel's release of `epoch`: its sends of earlier
                        // iterations happen-before the exit_allowed release below.
                        || o.dev.a32(offset_of!(KernelParams, epoch)).load(Ordering::Acquire).wrapping_sub(e) >= 2
                });
                if moved {
                    let k = &mut kernels[i].dev;
                    k.exit_allowed = true;
                    // Release: pairs with the kernel's acquire load of `ctl`.
                    k.ctl().fetch_or(ctl::EXIT, Ordering::SeqCst);
                }
            }
        }
        let rec = &mut kernels[i];
        if (rec.dev.cb().is_terminated() || rec.dev.exited)
            && rec.dev.d2h.is_empty()
            && rec.local.outbox_len() == 0
        {
            Self::collect_leftovers(sh, rec, &cell);
            kernels.finish_terminate(i, self, &cell);
            work = true;
        }
        work
    }

    /// Links every route to its target's inbox when the target runs on this device and takes
    /// messages; unlinks the others (they go through the host). Kernels that just started
    /// terminating get the epochs the unlink protocol waits for.
    fn link_routes(kernels: &mut Kernels<Kern>) {
        let ids: Vec<u32> = kernels.iter().map(|r| r.id()).collect();
        let linkable: Vec<bool> = kernels
            .iter()
            .map(|r| {
                !r.is_gone()
                    && !r.is_failed()
                    && r.dev.unlink == Unlink::No
                    && !r.dev.exited
                    && r.cell().is_some_and(|c| c.state().accepts_messages())
            })
            .collect();
        for i in 0..kernels.len() {
            let r = &kernels[i];
            if r.is_gone() || r.dev.exited {
                continue;
            }
            let Some(dir) = r.dir() else { continue };
            for (n, name) in program(r.def()).routes().iter().enumerate() {
                let target = dir.by_name(name).and_then(|c| ids.binary_search(&c.id().0).ok());
                let (inbox, id) = match target {
                    Some(t) if linkable[t] => (kernels[t].dev.inbox.0, kernels[t].id()),
                    _ => (0, 0),
                };
                let (e_inbox, e_id) = r.dev.route(n);
                if e_inbox.load(Ordering::Relaxed) != inbox {
                    e_id.store(id, Ordering::Relaxed);
                    // Release: pairs with the kernel's acquire load of `inbox` in rk_out_begin; the
                    // id stored above is visible with it.
                    e_inbox.store(inbox, Ordering::Release);
                }
            }
        }
        // Every kernel's routes are linked now: the agent (its next step) and the doorbells may
        // activate it on the device. Release: pairs with the doorbell's acquire.
        for r in kernels.iter() {
            r.dev.routed.store(true, Ordering::Release);
        }
        // SeqCst: the unlinks above are visible before the epochs below are read, so an epoch
        // that moves twice past these values belongs to an iteration that saw the unlink.
        fence(Ordering::SeqCst);
        for i in 0..kernels.len() {
            if kernels[i].dev.unlink == Unlink::Pending {
                let epochs: Vec<(u32, u32)> = (0..kernels.len())
                    .filter(|&j| j != i && !kernels[j].dev.exited && !kernels[j].is_gone())
                    .map(|j| {
                        let o = &kernels[j];
                        (o.id(), o.dev.a32(offset_of!(KernelParams, epoch)).load(Ordering::Acquire))
                    })
                    .collect();
                kernels[i].dev.unlink = Unlink::Waiting(epochs);
            }
        }
    }

    fn on_fail(sh: &Shared, rec: &mut Rec, cell: &KernelCell) {
        let k = &rec.dev;
        // Relaxed: ordered by the acquire of `failures` that led here.
        let code = k.a32(offset_of!(KernelParams, fail_code)).load(Ordering::Relaxed);
        let corr = k.a64(offset_of!(KernelParams, fail_corr)).load(Ordering::Relaxed);
        let source = k.a32(offset_of!(KernelParams, fail_source)).load(Ordering::Relaxed);
        let text = format!("CUDA handler failed: {}", program(rec.def()).describe_error(code));
        // The failed message was consumed (counted by the kernel in h2d_done/inbox_done).
        if rec.handler_failed(cell, &text, corr, source) {
            let bytes: Vec<u8> =
                program(rec.def()).device_state().iter().flat_map(|w| w.to_le_bytes()).collect();
            if !bytes.is_empty() {
                if let Err(e) = sh.dev.write_device(rec.dev.state_dev, &bytes) {
                    tracing::error!(kernel = cell.name(), "cannot reset the state: {e}");
                }
            }
            // Release: the fresh state is written before the kernel sees the new restart
            // generation and goes on.
            bump_generation(rec.dev.ctl(), ctl::RESTART_SHIFT);
        }
    }

    /// Turns the kernel's handled-message counts into the cell's counters, and mirrors its clock;
    /// `true` if anything moved.
    fn sync_counts(k: &mut Kern, cell: &KernelCell) -> bool {
        // Relaxed: counts only (the kernel stores them relaxed); the outputs they refer to are
        // read through their own `seq` acquire. After the acquire of `terminated` (before
        // `collect_leftovers`) they are final.
        let h2d = k.a64(offset_of!(KernelParams, h2d_done)).load(Ordering::Relaxed);
        let inbox = k.a64(offset_of!(KernelParams, inbox_done)).load(Ordering::Relaxed);
        let (dh, di) = (h2d - k.seen_h2d, inbox - k.seen_inbox);
        let hlc = k.cb().hlc_packed();
        if hlc > cell.control.hlc_packed() {
            cell.control.set_hlc_packed(hlc);
        }
        if dh + di == 0 {
            return false;
        }
        (k.seen_h2d, k.seen_inbox) = (h2d, inbox);
        cell.control.add_processed(dh + di);
        cell.control.add_in_flight(-(dh as i64));
        cell.input_waiters.notify();
        true
    }

    /// The kernel has returned: collect what is left in its queues (the host input and the
    /// inbox, read back from the device) before its termination completes.
    fn collect_leftovers(sh: &Shared, rec: &mut Rec, cell: &KernelCell) {
        // The kernel has stored `terminated` (acquired by the caller): its counts are final.
        Self::sync_counts(&mut rec.dev, cell);
        rec.drain_input(cell);
        let inbox = rec.dev.inbox;
        let mut copy = vec![0u8; inbox.1 + 128];
        let start = copy.as_ptr().align_offset(128);
        match sh.dev.read_device(inbox.0, &mut copy[start..start + inbox.1]) {
            Ok(()) => {
                // SAFETY: a private, 128-aligned copy of an initialised ring region.
                let ring = unsafe {
                    RawSlotRing::attach(NonNull::new(copy.as_mut_ptr().add(start)).expect("non-null"))
                };
                let mut taken: Vec<Vec<u8>> = Vec::new();
                while ring.pop_batch_with(64, |b| taken.push(b.to_vec())) > 0 {}
                for b in taken {
                    rec.return_or_fail(cell, &b, false);
                }
            }
            Err(e) => tracing::error!(kernel = cell.name(), "cannot read the inbox back: {e}"),
        }
    }
}
