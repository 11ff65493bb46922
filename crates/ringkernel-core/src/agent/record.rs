//! One device kernel as the agent sees it ([`Record`]), with its lifecycle [`Phase`], and the
//! agent's set of them in launch order ([`Kernels`]).
//!
//! The record's phase is the agent's view of the kernel: whether the device runs it, or the host
//! now answers for everything queued to it. The kernel's lifecycle *state* (what the host sees)
//! stays in its [`KernelCell`], which is its only writer; the record only asks the cell to move.

use crate::runtime::{Directory, ExecLocal, KernelCell, KernelDef};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

/// Where a record is in its life (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Attached; the agent has not served it yet (not a route target, not dispatched).
    Starting,
    /// The device runs it.
    Running,
    /// The device no longer runs it (a handler failed it with no restart left, the device was
    /// lost, or the agent panicked while serving it and took its input over): the host hands
    /// back whatever is queued to it.
    Failed,
    /// It left the agent (terminated, or abandoned); its device resources are released.
    Gone,
}

/// One device kernel as the agent sees it: the skeleton's part, and the backend's
/// [`DeviceStep::Kernel`](super::DeviceStep::Kernel) in [`Record::dev`].
pub struct Record<K> {
    cell: Weak<KernelCell>,
    pub(super) dir: Weak<Directory>,
    pub(super) def: Arc<KernelDef>,
    id: u32,
    phase: Phase,
    /// Set by the doorbell; taken when a round looks at the kernel.
    pub(crate) dirty: Arc<AtomicBool>,
    /// Panics caught while serving the kernel (the two-strike rule).
    pub(crate) strikes: u32,
    /// The outbox (outputs waiting for room in a full queue) and the cached K2K targets.
    pub local: ExecLocal,
    /// A destination-patched copy of the envelope being routed (reused, so routing by route
    /// index allocates nothing per message).
    pub(crate) patched: Vec<u8>,
    /// The backend's device bookkeeping.
    pub dev: K,
}

impl<K> Record<K> {
    pub(crate) fn new(
        cell: &Arc<KernelCell>,
        def: &Arc<KernelDef>,
        dir: &Arc<Directory>,
        phase: Phase,
        dev: K,
    ) -> Self {
        Self {
            cell: Arc::downgrade(cell),
            dir: Arc::downgrade(dir),
            def: def.clone(),
            id: cell.id().0,
            phase,
            dirty: Arc::new(AtomicBool::new(true)),
            strikes: 0,
            local: ExecLocal::default(),
            patched: Vec::new(),
            dev,
        }
    }

    /// The kernel's id.
    #[inline]
    #[must_use]
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The kernel's cell, while anybody holds it.
    #[inline]
    #[must_use]
    pub fn cell(&self) -> Option<Arc<KernelCell>> {
        self.cell.upgrade()
    }

    /// The runtime's directory, while the runtime lives.
    #[inline]
    #[must_use]
    pub fn dir(&self) -> Option<Arc<Directory>> {
        self.dir.upgrade()
    }

    /// The kernel's definition (its GPU programs).
    #[inline]
    #[must_use]
    pub fn def(&self) -> &Arc<KernelDef> {
        &self.def
    }

    /// The definition, the device bookkeeping and the executor-local data, borrowed apart (a
    /// device step reads its program while it updates the rest).
    #[inline]
    pub fn parts(&mut self) -> (&KernelDef, &mut K, &mut ExecLocal) {
        (&self.def, &mut self.dev, &mut self.local)
    }

    /// Where the record is in its life.
    #[inline]
    #[must_use]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether the device no longer runs the kernel ([`Phase::Failed`]).
    #[inline]
    #[must_use]
    pub fn is_failed(&self) -> bool {
        self.phase == Phase::Failed
    }

    /// Whether the record left the agent ([`Phase::Gone`]).
    #[inline]
    #[must_use]
    pub fn is_gone(&self) -> bool {
        self.phase == Phase::Gone
    }

    /// [`Phase::Starting`] → [`Phase::Running`] (the agent serves it for the first time).
    pub fn start(&mut self) {
        if self.phase == Phase::Starting {
            self.phase = Phase::Running;
        }
    }

    /// → [`Phase::Failed`] (a record that is gone stays gone).
    pub fn fail(&mut self) {
        if self.phase != Phase::Gone {
            self.phase = Phase::Failed;
        }
    }

    /// → [`Phase::Gone`]; `false` if it already was (see [`Kernels::end`]).
    pub(crate) fn leave(&mut self) -> bool {
        if self.phase == Phase::Gone {
            return false;
        }
        self.phase = Phase::Gone;
        // Its K2K caches and outbox (empty once terminated) go now, not with the record.
        self.local = ExecLocal::default();
        true
    }

    /// Takes the doorbell's mark: `true` if it rang since the last call.
    #[inline]
    pub fn take_dirty(&self) -> bool {
        // SeqCst: pairs with the doorbell's store (see the doorbell module).
        self.dirty.swap(false, Ordering::SeqCst)
    }
}

/// The agent's records in launch (id) order, so that ids are found by binary search and device
/// work follows launch order. Records that left stay ([`Phase::Gone`]) until the backend
/// compacts the set ([`Kernels::retain`]).
pub struct Kernels<K> {
    recs: Vec<Record<K>>,
    gone: usize,
}

impl<K> Default for Kernels<K> {
    fn default() -> Self {
        Self { recs: Vec::new(), gone: 0 }
    }
}

impl<K> Kernels<K> {
    /// How many records (gone ones included).
    #[inline]
    #[must_use]
    pub fn len(&self) -> usize {
        self.recs.len()
    }

    /// Whether there is no record.
    #[inline]
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    /// How many records are gone and not yet compacted away.
    #[inline]
    #[must_use]
    pub fn gone(&self) -> usize {
        self.gone
    }

    /// Index of the record of kernel `id`, gone or not.
    #[must_use]
    pub fn find(&self, id: u32) -> Option<usize> {
        self.recs.binary_search_by_key(&id, |r| r.id).ok()
    }

    /// Index of the live (not gone) record of kernel `id`.
    #[must_use]
    pub fn index_of(&self, id: u32) -> Option<usize> {
        self.find(id).filter(|&i| !self.recs[i].is_gone())
    }

    /// All records.
    #[inline]
    pub fn iter(&self) -> core::slice::Iter<'_, Record<K>> {
        self.recs.iter()
    }

    /// All records, mutably.
    #[inline]
    pub fn iter_mut(&mut self) -> core::slice::IterMut<'_, Record<K>> {
        self.recs.iter_mut()
    }

    /// Keeps the records `keep` says to keep (backends drop gone records once their device
    /// resources are safe to reuse).
    pub fn retain(&mut self, mut keep: impl FnMut(&Record<K>) -> bool) {
        self.recs.retain(|r| keep(r));
        self.gone = self.recs.iter().filter(|r| r.is_gone()).count();
    }

    /// Adds newly attached records, keeping launch order.
    pub(crate) fn extend(&mut self, new: impl IntoIterator<Item = Record<K>>) {
        let before = self.recs.len();
        self.recs.extend(new);
        self.gone += self.recs[before..].iter().filter(|r| r.is_gone()).count();
        self.recs.sort_by_key(|r| r.id);
    }

    pub(crate) fn count_gone(&mut self) {
        self.gone += 1;
    }
}

impl<K> core::ops::Index<usize> for Kernels<K> {
    type Output = Record<K>;
    fn index(&self, i: usize) -> &Record<K> {
        &self.recs[i]
    }
}

impl<K> core::ops::IndexMut<usize> for Kernels<K> {
    fn index_mut(&mut self, i: usize) -> &mut Record<K> {
        &mut self.recs[i]
    }
}
