//! What a GPU backend implements to run on the [agent skeleton](super): its device step.
//!
//! The skeleton calls [`DeviceStep::round`] once per turn of the agent thread and the hooks at
//! the points of the lifecycle where the device has its own work (a record ends, the device is
//! lost, the agent panicked while serving a kernel, shutdown). Everything else (routing,
//! failures, termination, waiting) is the skeleton's.

use super::record::{Kernels, Record};
use crate::backoff::Backoff;
use crate::runtime::{KernelCell, KernelDef};

/// What a round found, deciding how the agent waits before the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Busy {
    /// Nothing to do: wait through [`DeviceStep::IDLE`].
    Idle,
    /// Work is waiting for the host (room in a full queue): wait through [`DeviceStep::BLOCKED`].
    Blocked,
    /// Something moved: run again at once.
    Work,
}

/// Why a record leaves the agent ([`DeviceStep::release`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Its kernel finished terminating.
    Terminated,
    /// The agent gave up on it: its cell was dropped or aborted, or serving it panicked twice.
    /// A kernel still resident on the device must be told to stop.
    Abandoned,
}

/// A GPU backend's device step (see the [module docs](self)).
pub trait DeviceStep: Send + 'static {
    /// The backend's per-kernel device bookkeeping (device addresses, queue mirrors, protocol
    /// state), kept in each kernel's [`Record`].
    type Kernel: Send + 'static;
    /// The backend's name in texts ("the {NAME} device failed: ...").
    const NAME: &'static str;
    /// The agent thread's name in texts ("the {THREAD} panicked ...").
    const THREAD: &'static str;
    /// How the agent waits after a round that found nothing to do.
    const IDLE: Backoff;
    /// How the agent waits after a round whose work waits for the host (by default as when
    /// idle).
    const BLOCKED: Backoff = Self::IDLE;
    /// Output destinations at or above this are route indices (`destination - ROUTE_BASE`) the
    /// device could not resolve: the agent resolves the route's name and patches the envelope's
    /// destination with the target's id. `None`: destinations are always kernel ids.
    const ROUTE_BASE: Option<u32> = None;

    /// The kernel's route names, from its program: route `r` of `rk_send_*(r, ..)` goes to the
    /// kernel launched as `routes(def)[r]`.
    fn routes(def: &KernelDef) -> &[String];

    /// The text of error code `code` of a handler (`rk_error`, `rk_fail`), from its program.
    fn describe_error(def: &KernelDef, code: u32) -> String;

    /// Called under the hand-off lock after newly attached kernels (if `arrived`) joined
    /// `kernels`, once per turn.
    fn admitted(&mut self, _kernels: &mut Kernels<Self::Kernel>, _arrived: bool) {}

    /// A fault of the whole device, if one happened (asked once per turn). The agent then fails
    /// every kernel of the device.
    fn device_fault(&mut self) -> Option<String>;

    /// One round of device work over `kernels`.
    fn round(&mut self, kernels: &mut Kernels<Self::Kernel>) -> Busy;

    /// `rec` leaves the agent: return its device resources (before anybody sees the kernel
    /// terminated, so a launch right after `terminate` can reuse them), and with
    /// [`Ending::Abandoned`] tell a resident kernel to stop.
    fn release(&mut self, rec: &mut Record<Self::Kernel>, ending: Ending);

    /// The agent panicked once while serving `rec`: stop the kernel taking input. Returns `true`
    /// when the host now owns the kernel's queued input (it is handed back at once and the record
    /// is [`Phase::Failed`](super::Phase::Failed)); `false` when the device stays its only
    /// consumer (what is queued is handled or handed back when it terminates).
    fn stop_taking_input(&mut self, rec: &mut Record<Self::Kernel>, cell: &KernelCell) -> bool;

    /// The device failed under `rec` (already [`Phase::Failed`](super::Phase::Failed)). Returns
    /// `true` when the device can no longer finish the kernel's termination: a terminating kernel
    /// then ends at once.
    fn device_lost(&mut self, _rec: &mut Record<Self::Kernel>) -> bool {
        false
    }

    /// The backend shuts down: stop what still runs on the device and free its memory. Leave the
    /// records in `kernels`: afterwards the agent aborts the cells of the kernels still alive.
    fn stop(&mut self, _kernels: &mut Kernels<Self::Kernel>) {}
}
