//! Registry of message types: maps type ids to names and rejects two types with one id.

use super::codec::RingMessage;
use core::any::TypeId;
use std::collections::HashMap;

/// Two different Rust types claim the same message type id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Duplicate type id.
    #[error("message type id {id:#x} is used by both {first} and {second}; give one of them a distinct #[message(type_id = ...)]")]
    DuplicateTypeId {
        /// The id.
        id: u64,
        /// The type registered first.
        first: &'static str,
        /// The type that collided.
        second: &'static str,
    },
}

/// Type id → (Rust type, name) table. Registration happens at setup, never on the message path.
#[derive(Debug, Default, Clone)]
pub struct MessageRegistry {
    by_id: HashMap<u64, (TypeId, &'static str)>,
}

impl MessageRegistry {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `M`; registering the same type twice is fine, a different type with the same id
    /// is an error.
    pub fn register<M: RingMessage>(&mut self) -> Result<(), RegistryError> {
        self.register_raw(M::message_type(), TypeId::of::<M>(), M::type_name())
    }

    /// Registers by parts (for code that builds kernels at run time).
    pub fn register_raw(&mut self, id: u64, ty: TypeId, name: &'static str) -> Result<(), RegistryError> {
        match self.by_id.get(&id) {
            Some((t, _)) if *t == ty => Ok(()),
            Some((_, first)) => Err(RegistryError::DuplicateTypeId { id, first, second: name }),
            None => {
                self.by_id.insert(id, (ty, name));
                Ok(())
            }
        }
    }

    /// Name of the type registered under `id`.
    #[must_use]
    pub fn name_of(&self, id: u64) -> Option<&'static str> {
        self.by_id.get(&id).map(|(_, n)| *n)
    }

    /// Whether `id` is registered.
    #[must_use]
    pub fn contains(&self, id: u64) -> bool {
        self.by_id.contains_key(&id)
    }

    /// Number of registered types.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether nothing is registered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}
