//! The [`Backend`] trait: what the runtime asks of an opened backend.

use super::BackendKind;
use crate::queue::SlotRing;
use crate::runtime::{Directory, KernelCell, KernelDef, LaunchOptions};
use crate::{Error, Result};
use core::any::Any;
use std::sync::Arc;

/// An opened backend: somewhere kernels run (see the [module docs](super)).
///
/// The runtime calls, for each launch: [`Backend::can_run`] on its backends in priority order,
/// [`Backend::input_ring`] on the first that answers yes, then [`Backend::attach`] with the
/// kernel's cell. From then on the backend serves the kernel: it takes messages from the cell's
/// input queue (woken through the [`Doorbell`](super::Doorbell) it installed), runs the
/// handlers, writes outputs and replies through the cell, and completes `terminate` by moving the
/// cell to `Terminated`. Everything the host does with the kernel goes through the cell, so a
/// backend never sees a `KernelHandle`.
pub trait Backend: Send + Sync + 'static {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;

    /// The device it runs kernels on, in words (an adapter name, a CUDA device, a thread pool).
    fn device(&self) -> String;

    /// Whether this backend can run a kernel with this definition (`None`: a kernel launched
    /// under a name without a registered definition, a mailbox only the host reads).
    fn can_run(&self, def: Option<&KernelDef>) -> bool;

    /// Whether this backend runs kernel groups (cells made by
    /// [`KernelCell::new_group`](crate::runtime::KernelCell::new_group): one mailbox per
    /// instance, instances scheduled one by one). The default: no; the runtime then places a
    /// group on the next backend that does (the CPU backend always does).
    fn runs_groups(&self) -> bool {
        false
    }

    /// The ingress queue of a kernel group of `instances` instances this backend runs, when its
    /// device keeps the mailboxes itself (CUDA: a ring in pinned host memory mapped into the
    /// device, drained into mailboxes in device memory). `None`, the default: the group's
    /// mailboxes are in host memory (the CPU backend).
    fn group_ingress(&self, options: &LaunchOptions, instances: u32) -> Result<Option<SlotRing>> {
        let _ = (options, instances);
        Ok(None)
    }

    /// The memory the kernel's input queue must live in, when the backend's device reads it
    /// directly (CUDA: pinned host memory mapped into the device). `None`, the default: ordinary
    /// host memory, allocated by the cell.
    fn input_ring(&self, options: &LaunchOptions) -> Result<Option<SlotRing>> {
        let _ = options;
        Ok(None)
    }

    /// Starts serving `cell`'s kernel. `def` is the definition `can_run` accepted; `dir` is the
    /// runtime's directory (for K2K targets). On error nothing of the kernel stays behind.
    fn attach(
        &self,
        cell: &Arc<KernelCell>,
        def: Option<&Arc<KernelDef>>,
        dir: &Arc<Directory>,
    ) -> Result<()>;

    /// Stops serving `cell`'s kernel at once, without draining: the runtime is dropped without
    /// `shutdown`, or the launch failed after `attach`. Waiting calls get an error with `reason`.
    /// The default aborts the cell and rings its doorbell; a backend that keeps per-kernel records
    /// drops them when it next sees the terminated cell.
    fn detach(&self, cell: &Arc<KernelCell>, reason: &str) {
        cell.abort(reason);
        cell.ring();
    }

    /// The kernel's persistent state as 32-bit words, as its last handled message left it.
    /// The default answers that this backend takes no snapshots.
    fn state_snapshot(&self, cell: &KernelCell) -> Result<Vec<u32>> {
        Err(Error::Unsupported {
            backend: self.kind().name(),
            kernel: cell.name().to_string(),
            what: "state snapshots",
        })
    }

    /// Stops the backend's threads and frees its device. Kernels were terminated first (by
    /// `RingKernel::shutdown`) or detached (when the runtime is dropped). Called once; it must
    /// also be safe to call again from `Drop`.
    fn shutdown(&self);

    /// The concrete backend, for tests and tools that need its own methods
    /// (`RingKernel::backend_impl`).
    fn as_any(&self) -> &dyn Any;
}
