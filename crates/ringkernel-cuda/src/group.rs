//! Kernel groups on the CUDA backend: one launch of `workers` workers runs every instance of a
//! group (the device protocol is `ringkernel_codegen::c_family::group`), and one host thread per
//! group, the group runner, routes what the workers write.
//!
//! # Memory of a group (the host↔device contract)
//!
//! ```text
//! mapped: [params 128 B][control block 128 B][routes 16 x 16 B][group descriptor 256 B]
//!         [worker counters workers x 64 B][output ring of worker 0] ... [output ring of worker W-1]
//!         + the ingress ring: the cell's input queue (`CudaBackend::group_ingress`)
//! device: [states][mailbox ends][mailbox metas][mailbox slots][marks][status][clocks]
//!         [ready queue, per worker][initial state][shared counters][scratch, per worker]
//! ```
//!
//! * Ingress ring: host threads push (`InstanceHandle::send`, K2K from CPU kernels, the runner
//!   putting back a message that found its mailbox full); worker 0 is its only consumer.
//! * Output rings: worker `w` is the only producer of ring `w`; the runner its only consumer.
//!   It routes each envelope: replies complete calls, emits go to the cell's output queue,
//!   messages to an instance of the group go back into the ingress ring, sends to other
//!   kernels go to their input, error replies fail requests (and name the instance), returned
//!   messages are kept for the terminate report.
//! * `ctl` in the params block: written by the host only (the doorbell, synchronously in
//!   `activate`/`deactivate`/`terminate`, and the runner for exit) with SeqCst read-modify-writes;
//!   each worker loads it with acquire once per loop iteration.
//! * Worker counters (handled messages, `exited`) and the descriptor's `quiescent` and
//!   `ingress_done`: written by the workers (release for `quiescent` and `exited`), read by the
//!   runner (acquire).
//!
//! Everything is allocated (or taken from the backend's free lists) and initialised before the
//! launch; nothing is allocated, freed or loaded while the workers run. The memory joins the
//! free lists once the launch has returned.

use crate::backend::{CudaBackend, Shared};
use crate::device::{Failure, LaunchId, Mapped};
use crate::program::CudaProgram;
use core::mem::offset_of;
use ringkernel_codegen::c_family::group::{
    GroupDesc, FLAG_RETURNED, GROUP_DESC_SIZE, READY_HEADER_BYTES, WORKER_INFO_SIZE,
};
use ringkernel_codegen::cuda::{ctl, KernelParams, MAX_ROUTES, ROUTE_BASE};
use ringkernel_core::backend::{Doorbell, ExecLocal};
use ringkernel_core::backoff::Backoff;
use ringkernel_core::control_block::{ControlBlock, ErrorCode};
use ringkernel_core::gpu::err;
use ringkernel_core::message::{
    decode_header, EnvelopeHeader, KernelId, FLAG_ERROR_REPLY, FLAG_KERNEL_FAILED,
};
use ringkernel_core::queue::{RawSlotRing, SlotRing};
use ringkernel_core::runtime::{
    Directory, KernelCell, KernelDef, KernelState, LaunchOptions, RawMessage, RestartPolicy,
};
use ringkernel_core::Result;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// Slots of a group's ingress ring (the host's queue into the device for every instance).
pub const INGRESS_CAPACITY: usize = 4096;

/// Messages an instance handles before its worker moves on to another.
const BUDGET: u32 = 16;

const PARAMS_OFF: usize = 0;
const CB_OFF: usize = 128;
const ROUTES_OFF: usize = 256;
const DESC_OFF: usize = ROUTES_OFF + MAX_ROUTES * 16;
const INFO_OFF: usize = DESC_OFF + GROUP_DESC_SIZE;
const _: () = assert!(DESC_OFF.is_multiple_of(128) && core::mem::size_of::<KernelParams>() == 128);

const fn align128(n: usize) -> usize {
    (n + 127) & !127
}

/// Byte offsets of the device sections of a group (see the module docs).
struct DeviceLayout {
    states: usize,
    mb_ends: usize,
    mb_meta: usize,
    mb_data: usize,
    marks: usize,
    status: usize,
    clocks: usize,
    ready: usize,
    init_state: usize,
    shared: usize,
    scratch: usize,
    len: usize,
}

impl DeviceLayout {
    fn new(n: usize, cap: usize, slot: usize, stride: usize, ready_cap: usize, workers: usize) -> Self {
        let ready_queue = READY_HEADER_BYTES + ready_cap * 8;
        let mut at = 0usize;
        let mut take = |bytes: usize| {
            let off = at;
            at = align128(at + bytes);
            off
        };
        Self {
            states: take(n * stride),
            mb_ends: take(n * 8),
            mb_meta: take(n * cap * 8),
            mb_data: take(n * cap * slot),
            marks: take(n * 4),
            status: take(n * 4),
            clocks: take(n * 8),
            ready: take(workers * ready_queue),
            init_state: take(stride),
            shared: take(128),
            scratch: take(workers * slot),
            len: at,
        }
    }
}

/// Writes the group's lifecycle flags into the device's `ctl` word at once (so a message sent
/// after `deactivate` returns is not taken), and wakes the runner.
struct GroupBell {
    cell: Weak<KernelCell>,
    /// Host address of `ctl` in the mapped params block (lives until the memory is retired,
    /// after the runner, which holds the only other user, ended).
    ctl: usize,
    runner: std::sync::OnceLock<Thread>,
    retired: Arc<AtomicBool>,
}

impl GroupBell {
    fn ctl(&self) -> &AtomicU32 {
        // SAFETY: `ctl` is the address of the aligned `ctl` word of the params block, which stays
        // mapped while `retired` is false (checked by the callers); accessed atomically by both
        // sides.
        unsafe { AtomicU32::from_ptr(self.ctl as *mut u32) }
    }
}

impl Doorbell for GroupBell {
    fn ring(&self) {
        if let Some(cell) = self.cell.upgrade() {
            if !self.retired.load(Ordering::Acquire) {
                let c = &cell.control;
                // SeqCst, as every host write of `ctl` (pairs with the workers' acquire loads);
                // the exit bit is the runner's and stays as it is. The flags are read inside the
                // update, after its load of `ctl`: of two racing doorbells (a lifecycle change
                // and an older one), the one that read the older flags loses its
                // compare-and-swap and reads them again (computed before, they overwrote a
                // `terminate` with "active": the terminate_conserves hang).
                let _ = self.ctl().fetch_update(Ordering::SeqCst, Ordering::SeqCst, |old| {
                    let bits = if c.is_active() { ctl::ACTIVE } else { 0 }
                        | if c.terminate_requested() { ctl::TERMINATE } else { 0 };
                    Some((old & ctl::EXIT) | bits)
                });
            }
        }
        if let Some(t) = self.runner.get() {
            t.unpark();
        }
    }

    fn ring_instance(&self, _index: u32) {
        // The device polls its ingress ring; the runner is woken to route the answer promptly.
        if let Some(t) = self.runner.get() {
            t.unpark();
        }
    }
}

/// The host side of one running group (see the module docs).
struct Runner {
    shared: Arc<Shared>,
    cell: Weak<KernelCell>,
    dir: Weak<Directory>,
    def: Arc<KernelDef>,
    stop: Arc<AtomicBool>,
    block: Mapped,
    devmem: (u64, usize),
    d2h: Vec<RawSlotRing>,
    launch: LaunchId,
    base: u32,
    workers: u32,
    local: ExecLocal,
    /// What `drain` took off the output rings, back to back, and where each envelope ends.
    taken: Vec<u8>,
    ends: Vec<usize>,
    handled_seen: u64,
    ingress_seen: u64,
}

// SAFETY: the runner owns its mapped block and rings (raw views of it) and is moved once, into
// its thread.
unsafe impl Send for Runner {}

impl CudaBackend {
    /// A group's ingress ring: [`INGRESS_CAPACITY`] slots of the options' slot size, mapped.
    pub(crate) fn group_ingress(&self, options: &LaunchOptions) -> Result<SlotRing> {
        let opts = LaunchOptions { input_capacity: INGRESS_CAPACITY, ..options.clone() };
        self.input_ring(&opts)
    }

    /// Starts a kernel group (see the module docs): memory, launch of the workers, the runner.
    pub(crate) fn attach_group(
        &self,
        cell: &Arc<KernelCell>,
        def: &Arc<KernelDef>,
        program: &CudaProgram,
        source: &str,
        dir: &Arc<Directory>,
    ) -> core::result::Result<(), Failure> {
        let sh = &self.shared;
        let dev = &sh.dev;
        let module = dev.compile(cell.name(), source)?;
        let opts = cell.options();
        let n = cell.instances() as usize;
        let slot = opts.slot_size();
        let cap = (opts.input_capacity.max(2)).next_power_of_two();
        let workers = sh.config.group_workers.max(1);
        // The device's natural layout of the state; every instance's starts on a 16-byte boundary.
        let state = program.device_state();
        let stride = (state.len() * 4).max(4).div_ceil(16) * 16;
        let ready_cap = n.div_ceil(workers as usize).next_power_of_two().max(2);
        let layout = DeviceLayout::new(n, cap, slot, stride, ready_cap, workers as usize);
        let d2h_len = SlotRing::region_size(opts.output_capacity, slot).map_err(|e| e.to_string())?;
        let rings_off = align128(INFO_OFF + workers as usize * WORKER_INFO_SIZE);
        let d2h_stride = align128(d2h_len);
        let mapped_len = rings_off + workers as usize * d2h_stride;
        let h2d_dev = dev.device_address(cell.input().region().0.as_ptr()).map_err(|e| {
            format!(
                "the group's ingress ring is not in mapped memory (made by CudaBackend::group_ingress?): {e}"
            )
        })?;
        let block = sh.retired.lock().unwrap_or_else(|e| e.into_inner()).take_mapped(&**dev, mapped_len)?;
        let devmem = sh.retired.lock().unwrap_or_else(|e| e.into_inner()).take_device(&**dev, layout.len);
        let devmem = match devmem {
            Ok(d) => d,
            Err(e) => {
                sh.retired.lock().unwrap_or_else(|e| e.into_inner()).mapped.push(block);
                return Err(e.into());
            }
        };
        let retire = || {
            let mut r = sh.retired.lock().unwrap_or_else(|e| e.into_inner());
            r.mapped.push(block);
            r.device.push((devmem, layout.len));
        };
        let init = || -> core::result::Result<Vec<RawSlotRing>, Failure> {
            let mut d2h = Vec::with_capacity(workers as usize);
            for w in 0..workers as usize {
                // SAFETY: each ring region lies inside the fresh mapped block, 128-aligned, and
                // no worker runs yet.
                let ring = unsafe {
                    RawSlotRing::init(
                        NonNull::new(block.host.add(rings_off + w * d2h_stride)).expect("non-null"),
                        d2h_len,
                        opts.output_capacity,
                        slot,
                    )
                }
                .map_err(|e| e.to_string())?;
                d2h.push(ring);
            }
            // Device memory: initial states, mailbox metas (slot `k` of each mailbox free for
            // position `k`), ready-queue slots (slot `k` free for position `k`), zeroes elsewhere.
            let image: Vec<u8> = state.iter().flat_map(|w| w.to_le_bytes()).collect();
            let mut one = vec![0u8; stride];
            one[..image.len()].copy_from_slice(&image);
            dev.write_device(devmem + layout.states as u64, &one.repeat(n))?;
            dev.write_device(devmem + layout.init_state as u64, &one)?;
            dev.write_device(devmem + layout.mb_ends as u64, &vec![0u8; n * 8])?;
            let metas: Vec<u8> =
                (0..n * cap).flat_map(|k| [((k % cap) as u32).to_le_bytes(), [0; 4]]).flatten().collect();
            dev.write_device(devmem + layout.mb_meta as u64, &metas)?;
            dev.write_device(devmem + layout.marks as u64, &vec![0u8; n * 4])?;
            dev.write_device(devmem + layout.status as u64, &vec![0u8; n * 4])?;
            dev.write_device(devmem + layout.clocks as u64, &vec![0u8; n * 8])?;
            let mut ready = vec![0u8; READY_HEADER_BYTES];
            ready.extend((0..ready_cap).flat_map(|k| [(k as u32).to_le_bytes(), [0; 4]]).flatten());
            dev.write_device(devmem + layout.ready as u64, &ready.repeat(workers as usize))?;
            dev.write_device(devmem + layout.shared as u64, &[0u8; 128])?;
            let cb =
                ControlBlock::for_kernel(cell.id().0, cell.input().capacity(), opts.output_capacity as u32);
            // SAFETY: CB_OFF..CB_OFF+128 lies in the fresh block, 128-aligned.
            unsafe { (block.host.add(CB_OFF) as *mut ControlBlock).write(cb) };
            let params = KernelParams {
                cb: block.dev + CB_OFF as u64,
                h2d: h2d_dev,
                routes: block.dev + ROUTES_OFF as u64,
                scratch: devmem + layout.scratch as u64,
                ctl: if cell.control.is_active() { ctl::ACTIVE } else { 0 },
                n_routes: program.routes().len() as u32,
                scratch_bytes: slot as u32,
                state_words: state.len() as u32,
                ..KernelParams::default()
            };
            // SAFETY: offset 0 of the fresh block (the route table after it is zero: every route
            // goes through the host).
            unsafe { (block.host.add(PARAMS_OFF) as *mut KernelParams).write(params) };
            let at = |off: usize| devmem + off as u64;
            let desc = GroupDesc {
                params: block.dev + PARAMS_OFF as u64,
                states: at(layout.states),
                mb_ends: at(layout.mb_ends),
                mb_meta: at(layout.mb_meta),
                mb_data: at(layout.mb_data),
                marks: at(layout.marks),
                status: at(layout.status),
                clocks: at(layout.clocks),
                ready: at(layout.ready),
                d2h: block.dev + rings_off as u64,
                d2h_stride: d2h_stride as u64,
                worker_info: block.dev + INFO_OFF as u64,
                init_state: at(layout.init_state),
                shared: at(layout.shared),
                instances: n as u32,
                workers,
                mb_cap: cap as u32,
                slot_size: slot as u32,
                state_stride: stride as u32,
                ready_cap: ready_cap as u32,
                budget: BUDGET,
                base_id: cell.id().0,
                max_restarts: match opts.restart {
                    RestartPolicy::Never => 0,
                    RestartPolicy::Restart { max_restarts } => max_restarts,
                },
                scratch_bytes: slot as u32,
                ..GroupDesc::default()
            };
            // SAFETY: DESC_OFF..+256 lies in the fresh block, 8-aligned.
            unsafe { (block.host.add(DESC_OFF) as *mut GroupDesc).write(desc) };
            Ok(d2h)
        };
        let d2h = match init() {
            Ok(r) => r,
            Err(e) => {
                retire();
                return Err(e);
            }
        };
        // The descriptor, params, rings and device memory are complete before the launch (which
        // orders host writes before the workers start).
        fence(Ordering::SeqCst);
        let launch = match dev.launch_workers(module, block.dev + DESC_OFF as u64, workers) {
            Ok(l) => l,
            Err(e) => {
                // Workers the emulation did start leave at once.
                // SAFETY: the params block is live (retired only below, after they returned).
                let c =
                    unsafe { AtomicU32::from_ptr(block.host.add(offset_of!(KernelParams, ctl)) as *mut u32) };
                c.fetch_or(ctl::EXIT, Ordering::SeqCst);
                return Err(e.into());
            }
        };
        let retired = Arc::new(AtomicBool::new(false));
        let bell = Arc::new(GroupBell {
            cell: Arc::downgrade(cell),
            ctl: block.host as usize + PARAMS_OFF + offset_of!(KernelParams, ctl),
            runner: std::sync::OnceLock::new(),
            retired: retired.clone(),
        });
        let runner = Runner {
            shared: sh.clone(),
            cell: Arc::downgrade(cell),
            dir: Arc::downgrade(dir),
            def: def.clone(),
            stop: self.groups_stop.clone(),
            block,
            devmem: (devmem, layout.len),
            d2h,
            launch,
            base: cell.id().0,
            workers,
            local: ExecLocal::default(),
            taken: Vec::new(),
            ends: Vec::new(),
            handled_seen: 0,
            ingress_seen: 0,
        };
        let thread = std::thread::Builder::new()
            .name("ringkernel-cuda-group".into())
            .spawn(move || runner.run(retired))
            .map_err(|e| format!("cannot start the group runner thread: {e}"))?;
        let _ = bell.runner.set(thread.thread().clone());
        self.groups.lock().unwrap_or_else(|e| e.into_inner()).push(thread);
        cell.set_doorbell(bell.clone());
        // The lifecycle as it is now (the cell may have been activated meanwhile).
        bell.ring();
        Ok(())
    }
}

impl Runner {
    fn program(&self) -> &CudaProgram {
        self.def.gpu_program::<CudaProgram>().expect("checked at attach")
    }

    fn params(&self) -> *mut KernelParams {
        self.block.host.wrapping_add(PARAMS_OFF) as *mut KernelParams
    }

    fn ctl(&self) -> &AtomicU32 {
        // SAFETY: the aligned `ctl` word of the runner's own mapped params block, live while the
        // runner is; accessed atomically by both sides.
        unsafe { AtomicU32::from_ptr(core::ptr::addr_of_mut!((*self.params()).ctl)) }
    }

    fn desc_u32(&self, off: usize) -> &AtomicU32 {
        // SAFETY: a 4-aligned word of the descriptor in the runner's live mapped block.
        unsafe { AtomicU32::from_ptr(self.block.host.add(DESC_OFF + off) as *mut u32) }
    }

    fn info_u64(&self, w: u32, off: usize) -> &AtomicU64 {
        // SAFETY: an 8-aligned word of worker `w`'s counters in the runner's live mapped block.
        unsafe {
            AtomicU64::from_ptr(
                self.block.host.add(INFO_OFF + w as usize * WORKER_INFO_SIZE + off) as *mut u64
            )
        }
    }

    fn run(mut self, retired: Arc<AtomicBool>) {
        let mut wait = Backoff::AGENT_IDLE.waiter();
        loop {
            let Some(cell) = self.cell.upgrade() else {
                self.ctl().fetch_or(ctl::EXIT, Ordering::SeqCst);
                break;
            };
            let moved = self.drain(&cell, 4096);
            self.sync_counts(&cell);
            if cell.state() == KernelState::Terminated || self.stop.load(Ordering::Acquire) {
                // Aborted (runtime dropped, launch failed) or the backend shuts down.
                self.ctl().fetch_or(ctl::EXIT, Ordering::SeqCst);
                break;
            }
            // Acquire: pairs with worker 0's release of `quiescent`; every output published
            // before it is visible to the drain below.
            if cell.control.terminate_requested()
                && self.desc_u32(offset_of!(GroupDesc, quiescent)).load(Ordering::Acquire) != 0
            {
                let deadline = Instant::now() + Duration::from_secs(10);
                while (self.drain(&cell, usize::MAX) > 0 || !self.local.flush(&cell))
                    && Instant::now() < deadline
                {
                    std::thread::yield_now();
                }
                self.sync_counts(&cell);
                self.ctl().fetch_or(ctl::EXIT, Ordering::SeqCst);
                break;
            }
            if moved > 0 {
                wait.reset();
            } else if let Some(park) = wait.snooze() {
                std::thread::park_timeout(park);
            }
        }
        self.finish(retired);
    }

    /// Waits for the workers to return, takes what they wrote last, ends the cell and retires
    /// the memory.
    fn finish(mut self, retired: Arc<AtomicBool>) {
        let dev = self.shared.dev.clone();
        let started = Instant::now();
        let mut wait = Backoff::DEVICE_EXIT.waiter();
        let returned = loop {
            match dev.finished(self.launch) {
                Ok(true) => break true,
                Ok(false) if started.elapsed() < Duration::from_secs(10) => wait.wait(),
                Ok(false) => break false,
                Err(e) => {
                    tracing::error!("kernel group workers failed: {e}");
                    break false;
                }
            }
        };
        if let Some(cell) = self.cell.upgrade() {
            self.drain(&cell, usize::MAX);
            let _ = self.local.flush(&cell);
            self.sync_counts(&cell);
            if cell.state() != KernelState::Terminated {
                cell.finish_terminate();
            }
            if let Some(dir) = self.dir.upgrade() {
                dir.forget(&cell);
            }
        }
        self.shared.live.fetch_sub(1, Ordering::AcqRel);
        if returned {
            retired.store(true, Ordering::Release);
            let mut r = self.shared.retired.lock().unwrap_or_else(|e| e.into_inner());
            r.mapped.push(self.block);
            r.device.push(self.devmem);
        } else {
            // Never reused while workers might still touch it; freed with the backend.
            tracing::error!("kernel group workers did not return within 10 s; their memory is kept");
        }
    }

    /// Routes up to `max` envelopes from the workers' output rings; returns how many.
    fn drain(&mut self, cell: &Arc<KernelCell>, max: usize) -> usize {
        if !self.local.flush(cell) {
            return 0;
        }
        // The envelopes are copied into one buffer the runner keeps (no allocation per message).
        let (mut bytes, mut ends) = (core::mem::take(&mut self.taken), core::mem::take(&mut self.ends));
        bytes.clear();
        ends.clear();
        for ring in &self.d2h {
            while ends.len() < max {
                if ring.try_pop_with(|b| bytes.extend_from_slice(b)).is_none() {
                    break;
                }
                ends.push(bytes.len());
            }
        }
        // Counted before the outputs are routed: whoever gets a reply also sees its message in
        // `messages_processed` (the workers publish their counts before each handler runs).
        self.sync_counts(cell);
        let mut start = 0;
        for &end in &ends {
            self.route(cell, &bytes[start..end]);
            start = end;
        }
        let moved = ends.len();
        (self.taken, self.ends) = (bytes, ends);
        moved
    }

    fn route(&mut self, cell: &Arc<KernelCell>, bytes: &[u8]) {
        let Ok((h, payload)) = decode_header(bytes) else {
            cell.record_error(
                ErrorCode::Decode,
                "a kernel group worker produced a malformed envelope".into(),
            );
            return;
        };
        let index = h.source.wrapping_sub(self.base);
        if h.flags & FLAG_RETURNED != 0 {
            let mut v = bytes.to_vec();
            let flags = (h.flags & !FLAG_RETURNED).to_le_bytes();
            v[offset_of!(EnvelopeHeader, flags)..offset_of!(EnvelopeHeader, flags) + 2]
                .copy_from_slice(&flags);
            if let Ok(raw) = RawMessage::from_bytes(&v) {
                cell.return_message(raw);
            }
            return;
        }
        if h.flags & FLAG_ERROR_REPLY != 0 {
            let code = payload.get(..4).map_or(0, |c| u32::from_le_bytes(c.try_into().unwrap_or_default()));
            let failed = h.flags & FLAG_KERNEL_FAILED != 0;
            let text = if code == err::INSTANCE_FAILED {
                format!(
                    "instance {index} of kernel {:?} failed before handling this request: {}",
                    cell.name(),
                    cell.last_error().unwrap_or_default()
                )
            } else {
                format!("instance {index}: {}", self.program().describe_error(code))
            };
            if code != err::INSTANCE_FAILED {
                let kind = if failed { ErrorCode::HandlerPanic } else { ErrorCode::HandlerError };
                if failed {
                    tracing::error!(kernel = cell.name(), instance = index, "{text}; instance failed");
                }
                cell.record_error(kind, text.clone());
            }
            if h.correlation_id != 0 && h.destination == KernelId::HOST.0 {
                let request =
                    EnvelopeHeader { correlation_id: h.correlation_id, ..EnvelopeHeader::default() };
                self.local.fail_request(cell, &request, &text, failed);
            }
            return;
        }
        let dest = h.destination;
        if dest == KernelId::HOST.0 {
            self.local.deliver(cell, None, bytes);
        } else if cell.instance_of(KernelId(dest)).is_some() {
            // A send that found its mailbox full: back into the ingress ring.
            self.local.deliver(cell, Some(cell.clone()), bytes);
        } else {
            let Some(dir) = self.dir.upgrade() else { return };
            let target = if dest >= ROUTE_BASE {
                let name = self.program().routes().get((dest - ROUTE_BASE) as usize).cloned();
                name.and_then(|n| dir.by_name(&n)).filter(|t| !t.is_group())
            } else {
                dir.by_id(KernelId(dest))
            };
            let Some(target) = target else {
                cell.record_error(
                    ErrorCode::QueueFull,
                    format!(
                        "instance {index} of {} sent to a kernel that is not running; the message is kept",
                        cell.name()
                    ),
                );
                if let Ok(raw) = RawMessage::from_bytes(bytes) {
                    cell.return_message(raw);
                }
                return;
            };
            let mut v = bytes.to_vec();
            if dest >= ROUTE_BASE {
                let at = offset_of!(EnvelopeHeader, destination);
                v[at..at + 4].copy_from_slice(&target.id().0.to_le_bytes());
            }
            self.local.deliver(cell, Some(target), &v);
        }
    }

    /// Turns the workers' counters into the cell's `messages_processed` and in-flight count, and
    /// wakes senders when the ingress ring freed room.
    fn sync_counts(&mut self, cell: &KernelCell) {
        // Relaxed: statistics; the terminate protocol does not rely on them.
        let handled: u64 = (0..self.workers).map(|w| self.info_u64(w, 0).load(Ordering::Relaxed)).sum();
        if handled > self.handled_seen {
            cell.control.add_processed(handled - self.handled_seen);
            self.handled_seen = handled;
        }
        // SAFETY: the descriptor's `ingress_done` word, 8-aligned, in the live mapped block.
        let ingress = unsafe {
            AtomicU64::from_ptr(
                self.block.host.add(DESC_OFF + offset_of!(GroupDesc, ingress_done)) as *mut u64
            )
        }
        .load(Ordering::Relaxed);
        if ingress > self.ingress_seen {
            cell.control.add_in_flight(-((ingress - self.ingress_seen) as i64));
            self.ingress_seen = ingress;
            // Senders waiting for room in the ingress ring (`send`) look again.
            cell.input_waiters.notify();
        }
    }
}

#[cfg(test)]
mod tests {
    //! A recording device around the emulation checks the rule the group relies on: once its
    //! workers are launched, nothing allocates, frees, writes device memory, compiles or launches
    //! until they have returned (on a GPU each of those can synchronise the context, and a
    //! persistent grid never lets it).
    use super::*;
    use crate::device::{Device, ModuleId};
    use crate::emulator::Emulator;
    use crate::CudaConfig;
    use ringkernel_core::message::{encode, EnvelopeMeta};
    use ringkernel_core::runtime::KernelState;
    use ringkernel_derive::{GpuType, RingMessage};
    use std::sync::Mutex;

    #[derive(RingMessage, GpuType, Debug, Default, Clone, Copy)]
    #[message(gpu, type_id = 0x7301, crate = "ringkernel_core")]
    struct Bump {
        value: u64,
        count: u64,
    }

    #[derive(GpuType, Default)]
    #[message(crate = "ringkernel_core")]
    struct Counter {
        count: u64,
        sum: u64,
    }

    const SRC: &str = "
        RK_DEVICE uint32_t on_Bump(rk_ctx* ctx, Counter* s, const Bump* m) {
            if (m->value == 1000000000u) return rk_fail(ctx, 9u);
            s->count += 1u;
            s->sum += m->value;
            Bump r; r.value = m->value + m->value % 2u; r.count = s->count;
            /* An odd value hops to the next instance as the next even value, which emits it. */
            if (m->value % 2u == 1u) return rk_send_instance_Bump(ctx, (rk_instance(ctx) + 1u) % rk_group_size(ctx), &r);
            return rk_emit_Bump(ctx, &r);
        }";

    /// The emulation, recording every call that allocates, frees, writes, compiles or launches
    /// while a group's workers run.
    struct Recording {
        inner: Emulator,
        running: Mutex<Option<LaunchId>>,
        during: Mutex<Vec<&'static str>>,
        launches: Mutex<u32>,
    }

    impl Recording {
        fn note(&self, call: &'static str) {
            if self.running.lock().unwrap().is_some() {
                self.during.lock().unwrap().push(call);
            }
        }
    }

    impl Device for Recording {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn emulated(&self) -> bool {
            true
        }
        fn alloc_mapped(&self, len: usize) -> core::result::Result<Mapped, ringkernel_core::DeviceError> {
            self.note("alloc_mapped");
            self.inner.alloc_mapped(len)
        }
        fn free_mapped(&self, m: Mapped) {
            self.note("free_mapped");
            self.inner.free_mapped(m);
        }
        fn device_address(&self, host: *mut u8) -> core::result::Result<u64, ringkernel_core::DeviceError> {
            self.inner.device_address(host)
        }
        fn alloc_device(&self, len: usize) -> core::result::Result<u64, ringkernel_core::DeviceError> {
            self.note("alloc_device");
            self.inner.alloc_device(len)
        }
        fn free_device(&self, ptr: u64, len: usize) {
            self.note("free_device");
            self.inner.free_device(ptr, len);
        }
        fn write_device(
            &self,
            dst: u64,
            data: &[u8],
        ) -> core::result::Result<(), ringkernel_core::DeviceError> {
            self.note("write_device");
            self.inner.write_device(dst, data)
        }
        fn read_device(
            &self,
            src: u64,
            out: &mut [u8],
        ) -> core::result::Result<(), ringkernel_core::DeviceError> {
            self.inner.read_device(src, out)
        }
        fn source<'p>(&self, program: &'p CudaProgram) -> core::result::Result<&'p str, String> {
            self.inner.source(program)
        }
        fn compile(
            &self,
            kernel: &str,
            source: &str,
        ) -> core::result::Result<ModuleId, ringkernel_core::DeviceError> {
            self.note("compile");
            self.inner.compile(kernel, source)
        }
        fn launch(
            &self,
            module: ModuleId,
            params: u64,
        ) -> core::result::Result<LaunchId, ringkernel_core::DeviceError> {
            self.note("launch");
            self.inner.launch(module, params)
        }
        fn launch_workers(
            &self,
            module: ModuleId,
            desc: u64,
            workers: u32,
        ) -> core::result::Result<LaunchId, ringkernel_core::DeviceError> {
            self.note("launch_workers");
            let l = self.inner.launch_workers(module, desc, workers)?;
            *self.running.lock().unwrap() = Some(l);
            *self.launches.lock().unwrap() += 1;
            Ok(l)
        }
        fn finished(&self, launch: LaunchId) -> core::result::Result<bool, ringkernel_core::DeviceError> {
            let done = self.inner.finished(launch)?;
            let mut running = self.running.lock().unwrap();
            if done && *running == Some(launch) {
                *running = None;
            }
            Ok(done)
        }
    }

    /// The value that makes the handler call `rk_fail`.
    const FAIL: u64 = 1_000_000_000;

    fn push(cell: &KernelCell, index: u32, value: u64, corr: u64) {
        let meta = EnvelopeMeta {
            correlation_id: corr,
            source: 0,
            destination: cell.instance_id(index).0,
            hlc: ringkernel_core::hlc::HlcClock::new(0).tick(),
            flags: 0,
        };
        let msg = Bump { value, count: 0 };
        loop {
            let pushed =
                cell.try_push_to(cell.instance_id(index), |slot| encode(&msg, &meta, slot)).expect("encodes");
            match pushed {
                ringkernel_core::backend::InputPush::Pushed => return,
                ringkernel_core::backend::InputPush::Full => std::thread::yield_now(),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn nothing_is_allocated_freed_written_or_loaded_while_the_workers_run() {
        let inner = match Emulator::new() {
            Ok(e) => e,
            Err(e) => {
                eprintln!("SKIP: {e}");
                return;
            }
        };
        let rec = Arc::new(Recording {
            inner,
            running: Mutex::new(None),
            during: Mutex::new(Vec::new()),
            launches: Mutex::new(0),
        });
        let backend = CudaBackend::with_device(CudaConfig::host_emulation(), rec.clone()).unwrap();
        let def = Arc::new(
            KernelDef::new::<()>("recorded")
                .gpu(CudaProgram::new::<Counter>(SRC).handles::<Bump>().sends::<Bump>()),
        );
        let opts = LaunchOptions {
            input_capacity: 4,
            output_capacity: 256,
            max_message_bytes: 128,
            restart: RestartPolicy::Restart { max_restarts: 1 },
            ..LaunchOptions::default()
        };
        let n = 1000u32;
        let dir = Arc::new(Directory::default());
        let ingress = backend.group_ingress(&opts).unwrap();
        let cell = Arc::new(
            KernelCell::new_group(
                KernelId(1),
                "recorded",
                Some(def.accepted_types()),
                opts,
                vec![],
                n,
                Some(ingress),
            )
            .unwrap(),
        );
        dir.insert(cell.clone()).unwrap();
        cell.transition(KernelState::Active).unwrap();
        cell.control.set_active(true);
        backend.attach(&cell, Some(&def), &dir).unwrap();
        cell.ring();
        assert!(rec.running.lock().unwrap().is_some(), "the workers run");
        // Replies, K2K between instances, a restart and a failed instance: everything the
        // workers do, and none of it asks the device for anything.
        for i in 0..n {
            push(&cell, i, 2 * u64::from(i) + u64::from(i % 2), 0);
        }
        let mut outputs = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while outputs < n && Instant::now() < deadline {
            if cell.pop_output(|_| ()).is_some() {
                outputs += 1;
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(outputs, n, "every message was emitted once (odd ones after a hop)");
        push(&cell, 5, FAIL, 0); // rk_fail: restarts instance 5 (the budget is one restart)
        while !cell.last_error().unwrap_or_default().contains("instance 5") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        push(&cell, 6, FAIL, 0); // rk_fail again: instance 6 fails for good
        push(&cell, 6, 2, 0); // handed back by the failed instance
        cell.transition(KernelState::Terminating).unwrap();
        cell.close_input();
        cell.control.request_terminate();
        cell.ring();
        while !cell.control.is_terminated() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(cell.control.is_terminated(), "the group ended");
        assert_eq!(cell.returned().len(), 1, "the failed instance's message came back");
        assert!(cell.last_error().unwrap_or_default().contains("instance 6"), "{:?}", cell.last_error());
        assert_eq!(*rec.launches.lock().unwrap(), 1);
        assert!(rec.running.lock().unwrap().is_none(), "the workers returned");
        assert_eq!(*rec.during.lock().unwrap(), Vec::<&str>::new(), "device calls while the workers ran");
        backend.shutdown();
    }
}
