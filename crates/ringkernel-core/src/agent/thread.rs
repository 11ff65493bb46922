//! The agent thread of a GPU backend: spawned with a name, it runs the device step's rounds until
//! shutdown, takes newly attached kernels over, and waits between rounds through the step's
//! back-off policies. [`Agent`] is the backend's handle on it: attaching a kernel installs the
//! doorbell protocol of [`super::doorbell`]; dropping the handle shuts the thread down and joins
//! it.
//!
//! One turn of the loop: clear `pending` (a doorbell rung during the turn sets it again), take
//! the attached kernels over, stop if shutdown was asked, fail every kernel if the device
//! faulted, run one round behind a panic guard (a panic in a round fails every kernel of the
//! device, with the panic text, and the thread goes on, so shutdown still joins it), then wait:
//! not at all after work or when a doorbell rang meanwhile, else one step of the idle (or
//! blocked) back-off.

use super::doorbell::{Bell, BellHook, Wake};
use super::record::{Kernels, Phase, Record};
use super::step::{Busy, DeviceStep};
use crate::runtime::failure::panic_message;
use crate::runtime::{Directory, KernelCell, KernelDef};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A backend's handle on its agent thread (see the [module docs](self)).
pub struct Agent<S: DeviceStep> {
    wake: Arc<Wake>,
    /// Records attached since the agent's last turn.
    incoming: Arc<Mutex<Vec<Record<S::Kernel>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<S: DeviceStep> core::fmt::Debug for Agent<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Agent").field("step", &S::THREAD).finish_non_exhaustive()
    }
}

impl<S: DeviceStep> Agent<S> {
    /// Starts the agent thread, named `name`, running `step`.
    pub fn spawn(name: &str, mut step: S) -> std::io::Result<Self> {
        let wake = Arc::new(Wake::default());
        let incoming: Arc<Mutex<Vec<Record<S::Kernel>>>> = Arc::default();
        let handle = {
            let (wake, incoming) = (wake.clone(), incoming.clone());
            std::thread::Builder::new().name(name.into()).spawn(move || run(&mut step, &wake, &incoming))?
        };
        wake.set_thread(handle.thread().clone());
        Ok(Self { wake, incoming, thread: Mutex::new(Some(handle)) })
    }

    /// Hands a kernel to the agent: installs its doorbell (with the backend's `hook`, if any),
    /// and the agent's next turn takes its record over (in [`Phase::Starting`]) and serves it.
    pub fn attach(
        &self,
        cell: &Arc<KernelCell>,
        def: &Arc<KernelDef>,
        dir: &Arc<Directory>,
        dev: S::Kernel,
        hook: Option<Box<dyn BellHook>>,
    ) {
        let dirty = self.hand_over(Record::new(cell, def, dir, Phase::Starting, dev));
        cell.set_doorbell(Arc::new(Bell { wake: self.wake.clone(), dirty, hook }));
        cell.ring();
    }

    /// Hands the agent a kernel that will never run (it did not start), whose device resources
    /// the agent must still reclaim once the device is done with them: its record is
    /// [`Phase::Gone`] from the start, and no doorbell is installed.
    pub fn attach_gone(
        &self,
        cell: &Arc<KernelCell>,
        def: &Arc<KernelDef>,
        dir: &Arc<Directory>,
        dev: S::Kernel,
    ) {
        self.hand_over(Record::new(cell, def, dir, Phase::Gone, dev));
        self.wake.wake();
    }

    /// Queues `rec` for the agent's next turn; returns its doorbell flag.
    fn hand_over(&self, rec: Record<S::Kernel>) -> Arc<AtomicBool> {
        let dirty = rec.dirty.clone();
        self.incoming.lock().unwrap_or_else(|e| e.into_inner()).push(rec);
        dirty
    }

    /// Makes the agent run a round soon.
    pub fn wake(&self) {
        self.wake.wake();
    }

    /// Stops the agent: the device step's [`DeviceStep::stop`] runs on the agent thread, kernels
    /// still alive are aborted, and the thread is joined (unless this is the agent thread).
    /// Kernels should have been terminated first. Idempotent.
    pub fn shutdown(&self) {
        self.wake.request_shutdown();
        if let Some(h) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

impl<S: DeviceStep> Drop for Agent<S> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The agent thread's loop (see the [module docs](self)).
fn run<S: DeviceStep>(step: &mut S, wake: &Wake, incoming: &Mutex<Vec<Record<S::Kernel>>>) {
    let mut kernels = Kernels::default();
    let mut idle = S::IDLE.waiter();
    let mut blocked = S::BLOCKED.waiter();
    loop {
        // Cleared before the scan: a doorbell rung during the round sets it again (see Bell).
        wake.clear();
        {
            let mut new = incoming.lock().unwrap_or_else(|e| e.into_inner());
            let arrived = !new.is_empty();
            if arrived {
                kernels.extend(new.drain(..));
            }
            // Under the hand-off lock: a kernel attached from a resource (CUDA: an input queue)
            // is in `kernels` or in `incoming` before the resource can be given back.
            step.admitted(&mut kernels, arrived);
        }
        if wake.shutdown_requested() {
            step.stop(&mut kernels);
            kernels.abort_all::<S>();
            return;
        }
        if let Some(reason) = step.device_fault() {
            kernels.fail_all(step, &reason);
        }
        // A bug in a round must not leave callers waiting forever: fail this device's kernels
        // with the panic text (CPU kernels are unaffected) and keep the thread alive.
        let busy = match catch_unwind(AssertUnwindSafe(|| step.round(&mut kernels))) {
            Ok(b) => b,
            Err(p) => {
                let text = panic_message(&*p);
                tracing::error!("{} panicked: {text}", S::THREAD);
                kernels.fail_all(step, &format!("the {} panicked: {text}", S::THREAD));
                Busy::Idle
            }
        };
        let pending = wake.pending();
        let wait = match busy {
            Busy::Work => {
                idle.reset();
                blocked.reset();
                continue;
            }
            Busy::Blocked => {
                idle.reset();
                &mut blocked
            }
            Busy::Idle => {
                blocked.reset();
                &mut idle
            }
        };
        // Spin and yield turns run whatever `pending` says; a park is skipped when a doorbell
        // rang since the round began (its work is there now).
        if let Some(d) = wait.snooze() {
            if !pending {
                std::thread::park_timeout(d);
            }
        }
    }
}
