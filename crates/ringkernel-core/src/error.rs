//! The runtime's error type, split by the phase that failed.

use crate::hlc::HlcError;
use crate::message::{DecodeError, EncodeError, KernelId, RegistryError};
use crate::queue::QueueConfigError;
use crate::runtime::KernelState;

/// Result alias used across RingKernel.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// Everything that can go wrong in RingKernel, by phase: setup (backend, registration, launch),
/// messaging (encode, decode, delivery), and kernel execution (handler failures, lifecycle).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The requested backend is not compiled in or not usable here.
    #[error("backend {backend} is unavailable: {reason}")]
    BackendUnavailable {
        /// Backend name.
        backend: &'static str,
        /// What is missing (feature, driver, device).
        reason: String,
    },
    /// Registering kernels or message types failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Two registrations for one kernel disagree.
    #[error("kernel {kernel:?}: {detail}")]
    KernelDefinition {
        /// Kernel name.
        kernel: String,
        /// What disagrees.
        detail: String,
    },
    /// Invalid queue geometry in launch options.
    #[error("invalid queue configuration: {0}")]
    QueueConfig(#[from] QueueConfigError),
    /// A kernel with this name is already running.
    #[error("a kernel named {0:?} is already launched")]
    AlreadyLaunched(String),
    /// No kernel with that name or id in this runtime.
    #[error("no kernel {0} in this runtime")]
    KernelNotFound(String),
    /// The kernel was launched without any registered handler.
    #[error("kernel {kernel:?} has no registered handler (registered kernels: {registered:?})")]
    NoHandler {
        /// Kernel name.
        kernel: String,
        /// Names that do have handlers.
        registered: Vec<String>,
    },
    /// The kernel has no handler for this message type.
    #[error("kernel {kernel:?} has no handler for message type {type_name} ({type_id:#x}); it accepts {accepted:?}")]
    UnknownMessageType {
        /// Kernel name.
        kernel: String,
        /// Message type id.
        type_id: u64,
        /// Message type name, if known.
        type_name: String,
        /// Types the kernel handles.
        accepted: Vec<String>,
    },
    /// Encoding a message failed.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// Decoding a message failed.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A message of another type is next in the output queue; it is handed back.
    #[error("expected {expected} from kernel output, found type id {:#x}", .message.header.type_id)]
    UnexpectedMessage {
        /// Expected type name.
        expected: &'static str,
        /// The message that was there instead (not lost: the caller owns it now).
        message: Box<crate::runtime::RawMessage>,
    },
    /// The input queue is full (non-blocking send).
    #[error("input queue of kernel {0:?} is full")]
    QueueFull(String),
    /// An envelope is larger than the kernel's input slots (`LaunchOptions::max_message_bytes`).
    #[error("a {len}-byte envelope does not fit kernel {kernel:?}'s input slots of {max} bytes")]
    Oversized {
        /// Kernel name.
        kernel: String,
        /// Envelope length.
        len: usize,
        /// Slot size.
        max: usize,
    },
    /// A launch option is out of range.
    #[error("invalid launch options: {0}")]
    InvalidOptions(String),
    /// The kernel does not accept messages in its current state.
    #[error("kernel {kernel:?} does not accept messages while {state:?}")]
    NotAccepting {
        /// Kernel name.
        kernel: String,
        /// Its state.
        state: KernelState,
    },
    /// A lifecycle operation is not allowed from the current state.
    #[error("kernel {kernel:?} cannot go from {from:?} to {to:?}")]
    InvalidTransition {
        /// Kernel name.
        kernel: String,
        /// Current state.
        from: KernelState,
        /// Requested state.
        to: KernelState,
    },
    /// The handler returned an error or panicked while processing a request.
    #[error("kernel {kernel:?} failed to handle the request: {detail}")]
    Handler {
        /// Kernel name.
        kernel: String,
        /// Handler error or panic message.
        detail: String,
    },
    /// The kernel failed (handler panic without restart).
    #[error("kernel {kernel:?} failed: {detail}")]
    KernelFailed {
        /// Kernel name.
        kernel: String,
        /// Panic message.
        detail: String,
    },
    /// A request got no reply in time (a late reply goes to the output queue).
    #[error("request to kernel {kernel:?} timed out after {after:?}")]
    Timeout {
        /// Kernel name.
        kernel: String,
        /// Timeout.
        after: std::time::Duration,
    },
    /// K2K target kernel.
    #[error("K2K send from {from} to {to} failed: {detail}")]
    K2k {
        /// Sender.
        from: KernelId,
        /// Target.
        to: String,
        /// Why.
        detail: String,
    },
    /// HLC failure (drift or exhaustion).
    #[error(transparent)]
    Hlc(#[from] HlcError),
    /// A GPU backend refused or lost a kernel: shader diagnostics, validation or out-of-memory
    /// errors, device loss.
    #[error("{backend} backend, kernel {kernel:?}: {detail}")]
    Gpu {
        /// Backend name.
        backend: &'static str,
        /// Kernel name.
        kernel: String,
        /// What went wrong (with the shader compiler's diagnostics where there are some).
        detail: String,
    },
    /// The backend running a kernel does not offer an operation (for example state snapshots).
    #[error("{backend} backend, kernel {kernel:?}: {what} are not supported by this backend")]
    Unsupported {
        /// Backend name.
        backend: &'static str,
        /// Kernel name.
        kernel: String,
        /// The operation, in the plural ("state snapshots").
        what: &'static str,
    },
    /// The runtime has been shut down.
    #[error("the runtime has been shut down")]
    ShutDown,
}
