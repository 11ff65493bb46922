//! What a kernel accepts: the message types it handles, each with the check its decoder makes.
//!
//! The [`KernelCell`](super::KernelCell) holds this table (built from the kernel's definition at
//! launch) to answer "does this kernel take type T" on every send and to validate raw bytes
//! ([`super::ingress`]), so the cell never needs the definition itself.

use crate::message::{DecodeError, RingMessage};
use std::collections::HashMap;

/// Checks that a payload decodes as one message type (fixed fields present, slices inside the
/// payload, valid archive), without handling it: the raw-byte ingress runs it before a message is
/// queued (see [`super::ingress`]).
pub type PayloadCheck = fn(&[u8]) -> Result<(), DecodeError>;

/// The [`PayloadCheck`] of message type `M`: its own decoder, result dropped.
pub fn payload_check<M: RingMessage>(payload: &[u8]) -> Result<(), DecodeError> {
    M::decode_payload(payload).map(drop)
}

/// The message types a kernel handles (CPU handlers and GPU programs alike), by type id, with
/// their payload checks, and their names for error messages.
#[derive(Debug, Clone, Default)]
pub struct AcceptedTypes {
    /// Type id → the check of the handler that decodes it (`None`: a GPU program handles the type
    /// but gave no check).
    checks: HashMap<u64, Option<PayloadCheck>>,
    /// Names of the handled types, sorted, without duplicates.
    names: Vec<String>,
}

impl AcceptedTypes {
    /// A table of `(type id, type name, check)` entries; an id listed twice keeps its first check
    /// that is not `None`.
    pub fn new(entries: impl IntoIterator<Item = (u64, &'static str, Option<PayloadCheck>)>) -> Self {
        let mut checks: HashMap<u64, Option<PayloadCheck>> = HashMap::new();
        let mut names = Vec::new();
        for (id, name, check) in entries {
            let slot = checks.entry(id).or_insert(None);
            if slot.is_none() {
                *slot = check;
            }
            names.push(name.to_string());
        }
        names.sort();
        names.dedup();
        Self { checks, names }
    }

    /// Whether type id `id` is handled.
    #[must_use]
    pub fn handles(&self, id: u64) -> bool {
        self.checks.contains_key(&id)
    }

    /// Checks a payload of type `id` the way the kernel's handler will decode it: `None` if no
    /// handler of the type gave a check.
    #[must_use]
    pub fn check_payload(&self, id: u64, payload: &[u8]) -> Option<Result<(), DecodeError>> {
        self.checks.get(&id).copied().flatten().map(|check| check(payload))
    }

    /// Names of the handled types (for error messages).
    #[must_use]
    pub fn names(&self) -> &[String] {
        &self.names
    }
}
