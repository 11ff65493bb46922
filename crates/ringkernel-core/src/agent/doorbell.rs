//! A device kernel's doorbell and the agent thread's wake-up flag.
//!
//! Protocol (a Dekker pair on each side, SeqCst stores and loads): a producer publishes work (a
//! message in the kernel's input queue, a lifecycle request), then the doorbell sets the kernel's
//! `dirty` flag and the agent's `pending` flag and unparks the thread. The agent clears `pending`
//! before it scans, and clears a kernel's `dirty` before it looks at that kernel. Either the look
//! sees the published work, or the flag stays set and the next round (which the agent does not
//! park before, since `pending` is set) looks again. No wake-up is lost.

use crate::runtime::Doorbell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;

/// What a backend adds to its kernels' doorbells, run synchronously in `ring` before the agent
/// is woken (CUDA copies the cell's lifecycle flags into the device's `ctl` word, so that a
/// message sent after `deactivate` returned is never taken by the kernel).
pub trait BellHook: Send + Sync + 'static {
    /// Called on every ring of the kernel's doorbell.
    fn ring(&self);
}

/// The agent thread's wake-up: set by doorbells, cleared by the agent before each round.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    pending: AtomicBool,
    shutdown: AtomicBool,
    thread: OnceLock<Thread>,
}

impl Wake {
    pub(crate) fn set_thread(&self, t: Thread) {
        let _ = self.thread.set(t);
    }

    /// Makes the agent run a round soon (and not park before it).
    pub(crate) fn wake(&self) {
        // SeqCst: pairs with the agent's clear-then-scan; either the scan sees what was
        // published before this store, or the agent sees `pending` and runs again.
        self.pending.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    /// Clears `pending` before a round (a doorbell rung during the round sets it again).
    pub(crate) fn clear(&self) {
        // SeqCst: see `wake`.
        self.pending.store(false, Ordering::SeqCst);
    }

    /// Whether a doorbell rang since the last `clear`.
    pub(crate) fn pending(&self) -> bool {
        // SeqCst: see `wake`.
        self.pending.load(Ordering::SeqCst)
    }

    /// Asks the agent to stop.
    pub(crate) fn request_shutdown(&self) {
        // SeqCst: the agent's next turn (woken below) sees it.
        self.shutdown.store(true, Ordering::SeqCst);
        self.wake();
    }

    pub(crate) fn shutdown_requested(&self) -> bool {
        // SeqCst: see `request_shutdown`.
        self.shutdown.load(Ordering::SeqCst)
    }
}

/// A device kernel's doorbell (see the [module docs](self)).
pub(crate) struct Bell {
    pub(crate) wake: Arc<Wake>,
    /// Shared with the kernel's record.
    pub(crate) dirty: Arc<AtomicBool>,
    pub(crate) hook: Option<Box<dyn BellHook>>,
}

impl Doorbell for Bell {
    fn ring(&self) {
        // SeqCst: pairs with the agent's `swap(false)` before it looks at the kernel; either
        // that look sees the input published before this store, or the flag stays set for the
        // next round.
        self.dirty.store(true, Ordering::SeqCst);
        if let Some(h) = &self.hook {
            h.ring();
        }
        self.wake.wake();
    }
}
