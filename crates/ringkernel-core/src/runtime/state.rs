//! Kernel lifecycle states and the transitions allowed between them.
//!
//! ```text
//!              launch                 deactivate
//!   Launched ---------> Active <-------------------> Inactive
//!       |                 | \        activate          |
//!       |                 |  \ handler panic           |
//!       |                 |   v (no restart left)      |
//!       |                 |  Failed                    |
//!       |      terminate  |    | terminate             | terminate
//!       +-----------------+----+-----------------------+
//!                         v
//!                    Terminating --(input drained)--> Terminated
//! ```
//!
//! Any other request (activating a terminated kernel, deactivating a failed one, ...) is an
//! [`crate::Error::InvalidTransition`], never a panic.

/// Lifecycle state of a kernel (stored as a `u32` code in the control block).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelState {
    /// Created, not yet processing.
    Launched = 0,
    /// Processing messages.
    Active = 1,
    /// Holding its input (queued messages are kept).
    Inactive = 2,
    /// Draining its input before stopping.
    Terminating = 3,
    /// Stopped; outputs remain readable.
    Terminated = 4,
    /// A handler panicked and no restart was allowed.
    Failed = 5,
}

impl KernelState {
    /// Decodes a control-block code.
    #[must_use]
    pub fn from_code(code: u32) -> Self {
        match code {
            0 => Self::Launched,
            1 => Self::Active,
            2 => Self::Inactive,
            3 => Self::Terminating,
            4 => Self::Terminated,
            _ => Self::Failed,
        }
    }

    /// The control-block code.
    #[must_use]
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// Whether `self -> to` is an allowed transition.
    #[must_use]
    pub fn can_go_to(self, to: KernelState) -> bool {
        use KernelState::*;
        matches!(
            (self, to),
            (Launched, Active)
                | (Launched, Inactive)
                | (Active, Inactive)
                | (Inactive, Active)
                | (Active, Failed)
                | (Launched | Active | Inactive | Failed, Terminating)
                | (Terminating, Terminated)
        )
    }

    /// Whether a kernel in this state accepts new messages.
    #[must_use]
    pub fn accepts_messages(self) -> bool {
        matches!(self, Self::Launched | Self::Active | Self::Inactive)
    }
}

#[cfg(all(test, not(ringkernel_loom)))]
mod tests {
    use super::KernelState::*;
    use super::*;

    #[test]
    fn transition_table() {
        let all = [Launched, Active, Inactive, Terminating, Terminated, Failed];
        let allowed: Vec<_> = all
            .iter()
            .flat_map(|a| all.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a.can_go_to(*b))
            .collect();
        assert_eq!(allowed.len(), 10);
        assert!(!Terminated.can_go_to(Active));
        assert!(!Failed.can_go_to(Active));
        for s in all {
            assert_eq!(KernelState::from_code(s.code()), s);
        }
    }
}
