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

    /// A message addressed a kernel group as a whole, or an instance it does not have.
    #[error("kernel {kernel:?} is a group of {instances} instances: {detail}")]
    NoSuchInstance {
        /// The group's name.
        kernel: String,
        /// Its instance count.
        instances: u32,
        /// What was asked (an index out of range, a send to the group as a whole).
        detail: String,
    },
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
        /// What went wrong (with the shader compiler's diagnostics where there are some, and the
        /// text of `source` when there is one).
        detail: String,
        /// The failed device call behind it, when a device call failed.
        #[source]
        source: Option<DeviceError>,
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

impl Error {
    /// `Error::Gpu` without a failed device call behind it.
    pub fn gpu(backend: &'static str, kernel: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Gpu { backend, kernel: kernel.into(), detail: detail.into(), source: None }
    }

    /// `Error::Gpu` for a failed device call: its text is the detail, after `context` if that is
    /// not empty, and the call is the source.
    pub fn gpu_device(
        backend: &'static str,
        kernel: impl Into<String>,
        context: &str,
        source: DeviceError,
    ) -> Self {
        let detail = if context.is_empty() { source.to_string() } else { format!("{context}: {source}") };
        Self::Gpu { backend, kernel: kernel.into(), detail, source: Some(source) }
    }
}

/// What kind of failure a [`DeviceError`] is, as far as the caller can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceErrorKind {
    /// The device (or the host memory it maps) has no room for the allocation.
    OutOfMemory,
    /// A kernel source did not compile.
    Compile,
    /// A running kernel faulted, or the device was lost.
    Fault,
    /// Anything else.
    Other,
}

/// A failed call into a device API (CUDA driver, NVRTC, wgpu, the host compiler of the CUDA
/// emulation): which call, the code it returned where the API has one, and what else is known.
/// Carried as the `source` of [`Error::Gpu`]. (Boxed inside, so `Error` stays small.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}{}{}", self.0.call, self.summary(), self.code_text(), self.detail_text())]
pub struct DeviceError(Box<DeviceErrorInfo>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct DeviceErrorInfo {
    kind: DeviceErrorKind,
    call: &'static str,
    code: Option<(i64, String)>,
    detail: String,
}

impl DeviceError {
    /// A failure without a code: its `kind`, the failed `call` (e.g. `"cuMemAlloc"`,
    /// `"wgpu::Device::poll"`), and what else is known (sizes, the compiler's log).
    pub fn new(kind: DeviceErrorKind, call: &'static str, detail: impl Into<String>) -> Self {
        Self(Box::new(DeviceErrorInfo { kind, call, code: None, detail: detail.into() }))
    }

    /// A failure with the call's numeric code and its symbolic name (e.g. `2`,
    /// `"CUDA_ERROR_OUT_OF_MEMORY"`).
    pub fn with_code(
        kind: DeviceErrorKind,
        call: &'static str,
        code: i64,
        name: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self(Box::new(DeviceErrorInfo { kind, call, code: Some((code, name.into())), detail: detail.into() }))
    }

    /// What kind of failure it is.
    #[must_use]
    pub fn kind(&self) -> DeviceErrorKind {
        self.0.kind
    }

    /// The call that failed.
    #[must_use]
    pub fn call(&self) -> &'static str {
        self.0.call
    }

    /// The numeric code the call returned and its symbolic name, where the API has codes.
    #[must_use]
    pub fn code(&self) -> Option<(i64, &str)> {
        self.0.code.as_ref().map(|(c, n)| (*c, n.as_str()))
    }

    /// What else is known: sizes, the compiler's log, the API's message.
    #[must_use]
    pub fn detail(&self) -> &str {
        &self.0.detail
    }

    /// Whether the device ran out of memory (only then does the text say so).
    #[must_use]
    pub fn is_out_of_memory(&self) -> bool {
        self.0.kind == DeviceErrorKind::OutOfMemory
    }

    fn summary(&self) -> &'static str {
        match self.0.kind {
            DeviceErrorKind::OutOfMemory => "out of device memory",
            DeviceErrorKind::Compile => "the kernel does not compile",
            DeviceErrorKind::Fault => "the kernel or device faulted",
            DeviceErrorKind::Other => "failed",
        }
    }

    fn code_text(&self) -> String {
        self.code().map(|(c, n)| format!(" ({n} = {c})")).unwrap_or_default()
    }

    fn detail_text(&self) -> String {
        if self.0.detail.is_empty() {
            String::new()
        } else {
            format!(": {}", self.0.detail)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn device_error_names_the_call_and_code_and_is_the_source() {
        let oom = DeviceError::with_code(
            DeviceErrorKind::OutOfMemory,
            "cuMemAlloc",
            2,
            "CUDA_ERROR_OUT_OF_MEMORY",
            "4096 bytes",
        );
        assert_eq!(
            oom.to_string(),
            "cuMemAlloc: out of device memory (CUDA_ERROR_OUT_OF_MEMORY = 2): 4096 bytes"
        );
        let e = Error::gpu_device("cuda", "k", "", oom.clone());
        assert!(e.to_string().contains("cuMemAlloc: out of device memory"), "{e}");
        let source =
            e.source().and_then(|s| s.downcast_ref::<DeviceError>()).expect("the device error is the source");
        assert_eq!(source, &oom);
        let other =
            DeviceError::with_code(DeviceErrorKind::Other, "cuMemAlloc", 1, "CUDA_ERROR_INVALID_VALUE", "");
        assert_eq!(other.to_string(), "cuMemAlloc: failed (CUDA_ERROR_INVALID_VALUE = 1)");
        assert!(!other.is_out_of_memory());
        assert!(Error::gpu("wgpu", "k", "text").source().is_none());
    }
}
