//! [`BackendProvider`]: how the runtime finds, probes and opens a backend, and the typed
//! configuration map ([`BackendConfigs`]) the runtime builder hands to it.

use super::{Backend, BackendKind};
use core::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

/// Finds and opens one kind of backend. The facade lists one provider per Cargo feature, in the
/// order `Backend::Auto` tries them; a program may add its own with
/// `RuntimeBuilder::provider` (tried first).
pub trait BackendProvider: Send + Sync + 'static {
    /// The backend it opens.
    fn kind(&self) -> BackendKind;

    /// Whether the backend can be used on this machine, cheaply and without panicking; `Err`
    /// says why not (no driver, no adapter, wrong operating system). `Backend::Auto` skips a
    /// provider whose probe fails.
    fn probe(&self) -> Result<(), String>;

    /// Opens the backend. `Err` says why it cannot run here; for an explicitly requested backend
    /// the runtime turns it into `Error::BackendUnavailable`, for `Backend::Auto` it tries the
    /// next provider.
    fn open(&self, request: &OpenRequest<'_>) -> Result<Arc<dyn Backend>, String>;
}

/// What the runtime builder passes to [`BackendProvider::open`].
#[derive(Debug)]
pub struct OpenRequest<'a> {
    /// The user asked for this backend by name (not `Backend::Auto`): a provider may accept more
    /// (a software adapter, a host emulation chosen through the environment).
    pub explicit: bool,
    /// The configurations given to the builder.
    pub configs: &'a BackendConfigs,
}

impl OpenRequest<'_> {
    /// The configuration of type `C` given to the builder, if any.
    #[must_use]
    pub fn config<C: Any + Clone>(&self) -> Option<C> {
        self.configs.get::<C>()
    }
}

/// Backend configurations by type (`CpuConfig`, `WgpuConfig`, `CudaConfig`, …): the builder holds
/// one of each without knowing the backends.
#[derive(Default)]
pub struct BackendConfigs {
    by_type: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
}

impl BackendConfigs {
    /// Sets the configuration of type `C` (replacing an earlier one).
    pub fn set<C: Any + Send + Sync>(&mut self, config: C) {
        self.by_type.insert(TypeId::of::<C>(), Box::new(config));
    }

    /// The configuration of type `C`, if set.
    #[must_use]
    pub fn get<C: Any + Clone>(&self) -> Option<C> {
        self.by_type.get(&TypeId::of::<C>()).and_then(|b| b.downcast_ref::<C>()).cloned()
    }

    /// The configuration of type `C`, set to `C::default()` first if missing.
    pub fn get_mut<C: Any + Send + Sync + Default>(&mut self) -> &mut C {
        self.by_type
            .entry(TypeId::of::<C>())
            .or_insert_with(|| Box::new(C::default()))
            .downcast_mut::<C>()
            .expect("stored under its own TypeId")
    }
}

impl core::fmt::Debug for BackendConfigs {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BackendConfigs").field("configs", &self.by_type.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, Default, PartialEq)]
    struct A(u32);
    #[derive(Clone, Debug, Default, PartialEq)]
    struct B(&'static str);

    #[test]
    fn configs_are_kept_by_type() {
        let mut c = BackendConfigs::default();
        assert_eq!(c.get::<A>(), None);
        c.set(A(1));
        c.set(B("x"));
        c.set(A(2));
        assert_eq!(c.get::<A>(), Some(A(2)));
        assert_eq!(c.get::<B>(), Some(B("x")));
        c.get_mut::<A>().0 += 1;
        assert_eq!(c.get::<A>(), Some(A(3)));
        let req = OpenRequest { explicit: false, configs: &c };
        assert_eq!(req.config::<B>(), Some(B("x")));
    }
}
