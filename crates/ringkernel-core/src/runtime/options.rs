//! Launch options and backend selection.

use std::time::Duration;

/// Which backend a runtime uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Backend {
    /// The best backend compiled in and usable here, falling back to CPU.
    #[default]
    Auto,
    /// CPU threads (always available).
    Cpu,
    /// NVIDIA CUDA (feature `cuda`).
    Cuda,
    /// WebGPU through wgpu (feature `wgpu`).
    Wgpu,
    /// Apple Metal (feature `metal`): wgpu's Metal backend on Apple GPUs.
    Metal,
    /// A backend from outside RingKernel, added with `RuntimeBuilder::provider`, by its name.
    Custom(&'static str),
}

impl Backend {
    /// Lower-case name, as accepted by `RINGKERNEL_BACKEND`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::Wgpu => "wgpu",
            Self::Metal => "metal",
            Self::Custom(name) => name,
        }
    }

    /// Parses a name (`auto|cpu|cuda|wgpu|metal`, case-insensitive).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Some(Self::Auto),
            "cpu" => Some(Self::Cpu),
            "cuda" => Some(Self::Cuda),
            "wgpu" | "webgpu" => Some(Self::Wgpu),
            "metal" => Some(Self::Metal),
            _ => None,
        }
    }

    /// The backend named by `RINGKERNEL_BACKEND`, or `Auto` if unset; an unknown name is an error.
    pub fn from_env() -> crate::Result<Self> {
        match std::env::var("RINGKERNEL_BACKEND") {
            Err(_) => Ok(Self::Auto),
            Ok(v) => Self::parse(&v).ok_or_else(|| crate::Error::BackendUnavailable {
                backend: "unknown",
                reason: format!("RINGKERNEL_BACKEND={v:?} is not one of auto|cpu|cuda|wgpu|metal"),
            }),
        }
    }
}

/// Where a kernel runs: the backend that serves it and that backend's device, in words. Set at
/// launch; [`KernelStatus::placement`](super::KernelStatus) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The backend serving the kernel.
    pub backend: Backend,
    /// Its device (an adapter name, a CUDA device, `N CPU worker threads`).
    pub device: std::sync::Arc<str>,
}

/// What happens when a handler panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// The kernel becomes `Failed`.
    #[default]
    Never,
    /// The kernel's state is rebuilt from its factory and processing continues, up to
    /// `max_restarts` times; after that it becomes `Failed`.
    Restart {
        /// Restarts allowed over the kernel's lifetime.
        max_restarts: u32,
    },
}

/// Largest `max_message_bytes` a kernel may be launched with (16 MiB).
pub const MAX_MESSAGE_BYTES: usize = 1 << 24;
/// Largest `max_pending_calls` a kernel may be launched with.
pub const MAX_PENDING_CALLS: usize = 1 << 16;
/// Default slots of each queue (input and output) of a kernel: small, so that idle kernels are
/// cheap (see [`LaunchOptions`]).
pub const DEFAULT_QUEUE_CAPACITY: usize = 16;

/// Options for [`launch`](crate::runtime) of one kernel.
///
/// # Defaults and footprint
///
/// The defaults are sized for many mostly idle kernels: 16 input and 16 output slots of 256 bytes
/// ([`DEFAULT_QUEUE_CAPACITY`], `max_message_bytes`), so an idle kernel on the CPU backend costs
/// about 11 KiB (two 4.5 KiB ring regions plus the kernel cell; the reply table is allocated on
/// the first `call`), and a wgpu kernel about 8.5 KiB of device memory. A full queue is
/// backpressure, never loss: `send` waits, `try_send` hands the message back, a K2K sender keeps
/// it in its outbox.
///
/// A kernel that receives bursts (thousands of messages sent before it runs) or emits many
/// outputs that are read later should get deeper queues, per kernel:
///
/// ```
/// # use ringkernel_core::runtime::LaunchOptions;
/// let busy = LaunchOptions::default().with_queue_capacity(4096); // both queues
/// let wide = LaunchOptions { input_capacity: 1024, output_capacity: 64, ..LaunchOptions::default() };
/// # let _ = (busy, wide);
/// ```
///
/// Memory per queue is `ring_region_size(capacity, slot_size)`
/// ([`crate::queue::slot_ring::ring_region_size`]): about `capacity × slot_size`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchOptions {
    /// Input queue slots (rounded up to a power of two).
    pub input_capacity: usize,
    /// Output queue slots (rounded up to a power of two).
    pub output_capacity: usize,
    /// Largest encoded message (envelope + payload) in bytes; sets the slot size.
    pub max_message_bytes: usize,
    /// Start processing immediately (`Active`) rather than `Inactive`.
    pub auto_activate: bool,
    /// Handler panic policy.
    pub restart: RestartPolicy,
    /// Concurrent `call`s awaiting replies from this kernel.
    pub max_pending_calls: usize,
    /// Default timeout of `call` (`None` = wait until the reply or a kernel failure).
    pub call_timeout: Option<Duration>,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        Self {
            input_capacity: DEFAULT_QUEUE_CAPACITY,
            output_capacity: DEFAULT_QUEUE_CAPACITY,
            max_message_bytes: 256,
            auto_activate: true,
            restart: RestartPolicy::Never,
            max_pending_calls: 256,
            call_timeout: None,
        }
    }
}

impl LaunchOptions {
    /// Sets both queue capacities.
    #[must_use]
    pub fn with_queue_capacity(mut self, slots: usize) -> Self {
        self.input_capacity = slots;
        self.output_capacity = slots;
        self
    }

    /// Sets the largest message size in bytes (rounded up to a multiple of 16).
    #[must_use]
    pub fn with_max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// Sets the restart policy.
    #[must_use]
    pub fn with_restart(mut self, restart: RestartPolicy) -> Self {
        self.restart = restart;
        self
    }

    /// Launch inactive (call `activate` to start processing).
    #[must_use]
    pub fn inactive(mut self) -> Self {
        self.auto_activate = false;
        self
    }

    /// Sets the default call timeout.
    #[must_use]
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = Some(timeout);
        self
    }

    /// Slot size in bytes derived from `max_message_bytes` (kept within
    /// [`MAX_MESSAGE_BYTES`]; [`LaunchOptions::validate`] refuses larger requests).
    #[must_use]
    pub fn slot_size(&self) -> usize {
        self.max_message_bytes
            .clamp(crate::message::ENVELOPE_HEADER_SIZE + 16, MAX_MESSAGE_BYTES)
            .div_ceil(16)
            * 16
    }

    /// Checks every size in the options; `launch` calls it before allocating anything, so a
    /// size out of range is an [`Error::InvalidOptions`](crate::Error::InvalidOptions) naming
    /// the field, never a panic or an allocation failure.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |detail: String| Err(crate::Error::InvalidOptions(detail));
        for (field, n) in [("input_capacity", self.input_capacity), ("output_capacity", self.output_capacity)]
        {
            if n == 0 || n > crate::queue::MAX_CAPACITY as usize {
                return bad(format!("{field} = {n} is out of range 1..={}", crate::queue::MAX_CAPACITY));
            }
        }
        if self.max_message_bytes > MAX_MESSAGE_BYTES {
            return bad(format!(
                "max_message_bytes = {} is above the largest message size, {MAX_MESSAGE_BYTES} bytes",
                self.max_message_bytes
            ));
        }
        if self.max_pending_calls == 0 || self.max_pending_calls > MAX_PENDING_CALLS {
            return bad(format!(
                "max_pending_calls = {} is out of range 1..={MAX_PENDING_CALLS}",
                self.max_pending_calls
            ));
        }
        Ok(())
    }
}
