//! RingKernel's CPU backend: the embedded default on every machine, and the reference the GPU
//! backends are compared with.
//!
//! # Scheduling design
//!
//! Kernels are persistent actors, not threads. A fixed pool of worker threads (one per core by
//! default) runs whichever kernels have work:
//!
//! * Each kernel has a ready mark ([`ringkernel_core::ready::ReadyMark`]): two bits, `QUEUED`
//!   (in the run queue or being run) and `NOTIFIED` (work arrived since its run started). Every
//!   producer that publishes input for a kernel rings its doorbell, which sets both bits with one
//!   `fetch_or`; only the producer that found `QUEUED` clear pushes the kernel onto the run queue,
//!   so a kernel is queued at most once however many messages arrive.
//! * A worker that takes a kernel clears `NOTIFIED`, runs up to a budget of messages, and then
//!   tries to clear `QUEUED` with a compare-and-swap that succeeds only if `NOTIFIED` is still
//!   clear. If new work raced in, the CAS fails and the kernel runs again; no wake-up is lost.
//! * A kernel with nothing to do costs nothing: it is in no queue and no thread polls it. Ten
//!   thousand idle kernels are ten thousand small heap objects.
//! * Workers with an empty run queue spin for a short while (so that a hot request/reply pair is
//!   answered without a futex round trip), then park. After the first couple of microseconds the
//!   spin yields the core on every turn (`sched_yield`), so that on a machine with few cores a
//!   spinning worker never keeps the thread it waits for (a caller, the worker running the
//!   kernel) off a shared core; a waiting `call` does the same (policies `Backoff::WORKER_IDLE`
//!   and `Backoff::CALL_WAIT` of `ringkernel_core::backoff`). A producer that queues a kernel
//!   unparks one parked worker, if any. The sleep protocol is a Dekker pair (`sleeping` flag vs
//!   run-queue push), both sides separated by SeqCst fences.
//!
//! The message path (queue push, doorbell, queue pop) takes no lock: the run queue is
//! crossbeam's lock-free injector and the kernel queues are `ringkernel-core`'s slot rings.
//! A kernel whose outbox is blocked on a full K2K target yields and is re-queued behind others.
//!
//! Kernel groups ([`ringkernel_core::runtime::KernelGroup`]) are scheduled per instance: each
//! instance has its own ready mark ([`ringkernel_core::ready`], the same two-bit protocol), and
//! the run queue holds `(group, index)` items next to single kernels, so a million-instance
//! group costs a mark, a record and a mailbox per instance and its busy instances run on every
//! worker at once ([`GroupExecutor`]).
//!
//! A worker survives a panic in the runtime's own code while it runs a kernel (handler panics are
//! already caught by the executor): it fails that kernel only
//! ([`HostExecutor::runtime_panicked`]) and goes on serving the others.

use crossbeam_deque::{Injector, Steal};
use ringkernel_core::backoff::Backoff;
use ringkernel_core::ready::ReadyMark;
use ringkernel_core::runtime::{
    Directory, Doorbell, GroupExecutor, HostExecutor, KernelCell, KernelDef, RunOutcome,
};
use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle, Thread};
use std::time::Duration;

mod provider;

pub use provider::{CpuProvider, PROVIDER};

/// Tuning of the worker pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuConfig {
    /// Worker threads (default: available parallelism).
    pub workers: usize,
    /// How long an idle worker spins before parking.
    pub spin: Duration,
    /// Messages a kernel may process before it yields its worker to other kernels.
    pub budget: usize,
    /// Worker thread names are `{thread_name}-{index}` (Linux shows the first 15 bytes).
    pub thread_name: String,
}

impl Default for CpuConfig {
    fn default() -> Self {
        Self {
            workers: thread::available_parallelism().map_or(2, |n| n.get()),
            spin: Duration::from_micros(50),
            budget: 256,
            thread_name: "ringkernel-cpu".to_string(),
        }
    }
}

/// One kernel as the scheduler sees it.
struct Task {
    sched: ReadyMark,
    exec: UnsafeCell<HostExecutor>,
    pool: Weak<Pool>,
    /// The task itself (set by `Arc::new_cyclic`), so a doorbell rung through `&self` can queue
    /// an owning reference.
    this: Weak<Task>,
}

// SAFETY: `exec` is only accessed by the worker that popped the kernel from the run queue while
// its ready mark says queued; the mark's protocol guarantees at most one such worker at a time,
// and its AcqRel RMWs order one worker's accesses before the next one's.
unsafe impl Sync for Task {}
// SAFETY: HostExecutor is Send (it only holds Arcs and owned data); see above for Sync.
unsafe impl Send for Task {}

impl Doorbell for Task {
    #[inline]
    fn ring(&self) {
        if self.sched.mark() {
            if let (Some(pool), Some(task)) = (self.pool.upgrade(), self.this.upgrade()) {
                pool.enqueue(Work::Kernel(task));
            }
        }
    }
}

/// A kernel group as the scheduler sees it: one ready mark per instance.
struct GroupTask {
    marks: Box<[ReadyMark]>,
    exec: GroupExecutor,
    pool: Weak<Pool>,
    this: Weak<GroupTask>,
}

impl Doorbell for GroupTask {
    /// A lifecycle change of the group: instances parked by `deactivate` run again, and a
    /// terminating group with nothing left ends here.
    fn ring(&self) {
        for i in self.exec.unpark() {
            self.ring_instance(i);
        }
        self.exec.try_finish();
    }

    #[inline]
    fn ring_instance(&self, index: u32) {
        if self.marks[index as usize].mark() {
            if let (Some(pool), Some(task)) = (self.pool.upgrade(), self.this.upgrade()) {
                pool.enqueue(Work::Instance(task, index));
            }
        }
    }
}

/// A run-queue item: a kernel, or one instance of a kernel group.
enum Work {
    Kernel(Arc<Task>),
    Instance(Arc<GroupTask>, u32),
}

struct Worker {
    sleeping: AtomicBool,
    thread: std::sync::OnceLock<Thread>,
}

struct Pool {
    queue: Injector<Work>,
    workers: Vec<Worker>,
    shutdown: AtomicBool,
    config: CpuConfig,
}

impl Pool {
    fn enqueue(&self, work: Work) {
        self.queue.push(work);
        // SeqCst fence: pairs with the fence in `park`; either the worker sees the pushed task in
        // its re-check, or we see its `sleeping` flag and unpark it.
        fence(Ordering::SeqCst);
        for w in &self.workers {
            if w.sleeping.load(Ordering::Relaxed)
                && w.sleeping.compare_exchange(true, false, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            {
                if let Some(t) = w.thread.get() {
                    t.unpark();
                }
                return;
            }
        }
    }

    fn steal(&self) -> Option<Work> {
        loop {
            match self.queue.steal() {
                Steal::Success(t) => return Some(t),
                Steal::Empty => return None,
                Steal::Retry => std::hint::spin_loop(),
            }
        }
    }

    fn run(&self, work: Work) {
        match work {
            Work::Kernel(task) => self.run_task(task),
            Work::Instance(group, index) => self.run_instance(group, index),
        }
    }

    fn run_instance(&self, group: Arc<GroupTask>, index: u32) {
        let mark = &group.marks[index as usize];
        loop {
            mark.begin();
            // SAFETY: we popped this instance while its mark says queued: we are its only runner
            // (see ringkernel_core::ready), and `index` came from `ring_instance`, in range.
            let run = catch_unwind(AssertUnwindSafe(|| unsafe { group.exec.run(index, self.config.budget) }));
            let outcome = run.unwrap_or_else(|payload| {
                // SAFETY: as above.
                let _ = catch_unwind(AssertUnwindSafe(|| unsafe {
                    group.exec.runtime_panicked(index, &*payload)
                }));
                RunOutcome::Yield
            });
            match outcome {
                RunOutcome::Terminated => {
                    mark.retire();
                    return;
                }
                RunOutcome::Yield => {
                    self.queue.push(Work::Instance(group, index));
                    return;
                }
                RunOutcome::Idle if mark.try_idle() => return,
                RunOutcome::Idle => {} // new work raced in: run again right away
            }
        }
    }

    fn run_task(&self, task: Arc<Task>) {
        loop {
            task.sched.begin();
            // SAFETY: we popped the task while its mark says queued: we are its only runner (see Task).
            let exec = unsafe { &mut *task.exec.get() };
            // A panic in the runtime's own code (handler panics are caught inside `run`) fails
            // this kernel only; the worker goes on. The recovery itself is guarded too: should
            // it panic, the kernel is left idle (its scheduling bit is cleared below, so a later
            // doorbell, such as terminate's, runs it again).
            let outcome =
                catch_unwind(AssertUnwindSafe(|| exec.run(self.config.budget))).unwrap_or_else(|payload| {
                    catch_unwind(AssertUnwindSafe(|| exec.runtime_panicked(&*payload)))
                        .unwrap_or(RunOutcome::Idle)
                });
            match outcome {
                RunOutcome::Terminated => {
                    // Later doorbells never queue it again.
                    task.sched.retire();
                    return;
                }
                RunOutcome::Yield => {
                    self.queue.push(Work::Kernel(task));
                    return;
                }
                RunOutcome::Idle if task.sched.try_idle() => return,
                RunOutcome::Idle => {} // new work raced in: run again right away
            }
        }
    }

    fn worker_loop(self: Arc<Self>, index: usize) {
        let me = &self.workers[index];
        loop {
            if let Some(w) = self.steal() {
                self.run(w);
                continue;
            }
            if self.shutdown.load(Ordering::Acquire) {
                return;
            }
            // Spin briefly: a hot kernel's next message usually arrives within microseconds.
            // Past the first microseconds the wait yields the core on each turn: a spinning
            // worker must not keep a thread that shares its core (the caller waiting for a reply,
            // the worker running the kernel) off it.
            let mut wait = Backoff::WORKER_IDLE.with_yield_until(self.config.spin).waiter();
            let mut found = None;
            let park = loop {
                if !self.queue.is_empty() {
                    found = self.steal();
                    if found.is_some() {
                        break None;
                    }
                }
                if let Some(park) = wait.snooze() {
                    break Some(park);
                }
            };
            let Some(park) = park else {
                if let Some(w) = found {
                    self.run(w);
                }
                continue;
            };
            // Park.
            me.sleeping.store(true, Ordering::Relaxed);
            // SeqCst fence: pairs with the fence in `enqueue`.
            fence(Ordering::SeqCst);
            if !self.queue.is_empty() || self.shutdown.load(Ordering::Acquire) {
                me.sleeping.store(false, Ordering::Relaxed);
                continue;
            }
            // The timeout is a safety net only; wake-ups come from `enqueue`.
            thread::park_timeout(park);
            me.sleeping.store(false, Ordering::Relaxed);
        }
    }
}

/// The CPU backend: a worker pool shared by all kernels of a runtime.
pub struct CpuBackend {
    pool: Arc<Pool>,
    threads: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl core::fmt::Debug for CpuBackend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CpuBackend").field("config", &self.pool.config).finish()
    }
}

impl CpuBackend {
    /// Starts the worker pool.
    pub fn new(config: CpuConfig) -> std::io::Result<Self> {
        let workers = config.workers.max(1);
        let pool = Arc::new(Pool {
            queue: Injector::new(),
            workers: (0..workers)
                .map(|_| Worker { sleeping: AtomicBool::new(false), thread: std::sync::OnceLock::new() })
                .collect(),
            shutdown: AtomicBool::new(false),
            config,
        });
        let mut threads = Vec::with_capacity(workers);
        for i in 0..workers {
            let p = pool.clone();
            let h = thread::Builder::new()
                .name(format!("{}-{i}", pool.config.thread_name))
                .spawn(move || p.worker_loop(i))?;
            let _ = pool.workers[i].thread.set(h.thread().clone());
            threads.push(h);
        }
        Ok(Self { pool, threads: std::sync::Mutex::new(threads) })
    }

    /// Gives a kernel an executor on this pool, running `def`'s handlers (`None`: a kernel
    /// without a registered handler, whose messages get a typed error), and installs its doorbell.
    pub fn attach(&self, cell: &Arc<KernelCell>, def: Option<&Arc<KernelDef>>, dir: &Arc<Directory>) {
        if cell.is_group() {
            let group = Arc::new_cyclic(|this| GroupTask {
                marks: (0..cell.instances()).map(|_| ReadyMark::new()).collect(),
                exec: GroupExecutor::new(cell, def, dir),
                pool: Arc::downgrade(&self.pool),
                this: this.clone(),
            });
            cell.set_doorbell(group);
            return;
        }
        let task = Arc::new_cyclic(|this| Task {
            sched: ReadyMark::new(),
            exec: UnsafeCell::new(HostExecutor::new(cell, def, dir)),
            pool: Arc::downgrade(&self.pool),
            this: this.clone(),
        });
        cell.set_doorbell(task);
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.pool.workers.len()
    }

    /// Stops the workers (kernels should be terminated first) and joins them.
    pub fn shutdown(&self) {
        self.pool.shutdown.store(true, Ordering::Release);
        for w in &self.pool.workers {
            if let Some(t) = w.thread.get() {
                t.unpark();
            }
        }
        let threads = core::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let me = thread::current().id();
        for h in threads {
            if h.thread().id() != me {
                let _ = h.join();
            }
        }
    }
}

impl Drop for CpuBackend {
    fn drop(&mut self) {
        self.shutdown();
    }
}
