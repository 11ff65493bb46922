//! Kernel groups on a C-family device: the host↔device layout of a group and the device runtime
//! that runs its instances (`group.h`, emitted into every C-family kernel next to the
//! single-kernel loop, with its own entry point [`GROUP_ENTRY_POINT`]).
//!
//! # Model: actors as records, claimed by workers
//!
//! A group of `n` instances is a set of arrays in device memory, indexed by instance: state
//! (`state_stride` bytes each, naturally aligned), a mailbox (the slot-ring protocol of
//! `ringkernel_core::queue::Mailboxes`: per-mailbox head/tail, `mb_cap` slot metas and slots),
//! a ready mark (`ringkernel_core::ready`: QUEUED | NOTIFIED), a status word (failed) and the
//! instance's last HLC. A fixed set of `workers` (one thread each today: a block of one thread
//! on the GPU, a host thread in the emulation) runs every instance:
//!
//! 1. Ingress: worker 0 moves envelopes from the host's ingress ring (mapped memory, the cell's
//!    input queue) into the mailbox of the instance their `destination` names, then marks the
//!    instance ready; a mark that finds the instance idle pushes its index onto the ready queue
//!    of worker `index % workers` (a Vyukov ring of instance indices in device memory, capacity
//!    ≥ that worker's instance count: an instance is in it at most once). A full mailbox stops
//!    ingress until it drains (head-of-line blocking; the host sees the ingress ring fill up:
//!    backpressure, per group rather than per instance).
//! 2. Claim: a worker pops an index from its ready queue; it owns that instance (its state,
//!    its mailbox's head) until it gives it up. An instance always runs on the same worker, so
//!    everything it writes for the host is in that worker's output ring, in order (a shared
//!    ready queue let an instance's outputs overtake each other across two rings). It clears NOTIFIED, handles up to `budget`
//!    messages in mailbox order, then tries to go idle (compare-and-swap QUEUED → 0, failing
//!    when NOTIFIED was set again) and pushes the index back onto the ready queue if that fails
//!    or messages remain: per-instance FIFO, exclusive state, no lost wake-up.
//! 3. Sends: `rk_send_instance_<T>(ctx, index, &m)` claims a slot in the target instance's
//!    mailbox directly (device memory) and marks it; a full mailbox does not block the handler:
//!    the message leaves through the worker's output ring with the instance as destination and
//!    the host puts it back into the ingress ring. (A later send from the same sender may find
//!    room and arrive first: per-sender order holds only while the target's mailbox has room.) Replies, emits and sends to other kernels go
//!    to the worker's own output ring (one producer per ring; the host drains every ring).
//! 4. Termination: `pending` (device memory) counts messages in mailboxes or being handled
//!    (incremented before a message is published, decremented after its handler's own sends).
//!    Once `ctl` says terminate (the host closed the admission gate first), worker 0 publishes
//!    `quiescent` when the ingress ring is empty and `pending` is 0; the host then drains the
//!    output rings and sets exit.
//!
//! Failures: a handler that calls `rk_fail` restarts its instance from the initial state while
//! the group's shared restart budget lasts (`max_restarts`), else fails that instance alone: its
//! later requests get a kernel-failed error reply and its other messages come back to the host
//! flagged [`FLAG_RETURNED`].

/// The group's entry point: `rk_group_main(rk_group_desc*)`, one worker per block.
pub const GROUP_ENTRY_POINT: &str = "rk_group_main";

/// Envelope flag of a message a failed instance hands back to the host (never on the wire to a
/// kernel: the host clears it and keeps the message for the terminate report).
pub const FLAG_RETURNED: u16 = 1 << 4;

/// Bytes of the ready queue's header (head and tail on separate 128-byte lines); the slots
/// (`{seq: u32, value: u32}` each) follow.
pub const READY_HEADER_BYTES: usize = 256;

/// The group descriptor: written by the host before launch (mapped memory), read by every
/// worker; `quiescent` and `ingress_done` are written by worker 0. Pointers are device
/// addresses.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct GroupDesc {
    /// The group's `rk_kernel_params` block (mapped): `ctl`, `h2d` (the ingress ring), `cb`,
    /// `routes`, `scratch`.
    pub params: u64,
    /// Instance states, `state_stride` bytes each (device).
    pub states: u64,
    /// Mailbox head/tail pairs, 8 bytes each (device).
    pub mb_ends: u64,
    /// Mailbox slot metas, `mb_cap` per instance (device).
    pub mb_meta: u64,
    /// Mailbox slots, `mb_cap × slot_size` bytes per instance (device).
    pub mb_data: u64,
    /// Ready marks, a `u32` per instance (device).
    pub marks: u64,
    /// Status words (1 = failed), a `u32` per instance (device).
    pub status: u64,
    /// Last HLC of each instance, a `u64` per instance (device).
    pub clocks: u64,
    /// The ready queues, one per worker: [`READY_HEADER_BYTES`] then `ready_cap` slots each
    /// (device).
    pub ready: u64,
    /// Worker 0's output ring (mapped); worker `w`'s is `d2h + w × d2h_stride`.
    pub d2h: u64,
    /// Bytes between two workers' output rings.
    pub d2h_stride: u64,
    /// Per-worker counters, [`WORKER_INFO_SIZE`] bytes each (mapped).
    pub worker_info: u64,
    /// The initial state, `state_stride` bytes (device): restarts copy it.
    pub init_state: u64,
    /// `pending` (u32 at 0) and the restart count (u32 at 4) (device).
    pub shared: u64,
    /// Instances.
    pub instances: u32,
    /// Workers.
    pub workers: u32,
    /// Slots per mailbox (a power of two).
    pub mb_cap: u32,
    /// Bytes per mailbox slot.
    pub slot_size: u32,
    /// Bytes between two instances' states (a multiple of 8).
    pub state_stride: u32,
    /// Slots of each ready queue (a power of two, at least a worker's instance count).
    pub ready_cap: u32,
    /// Messages an instance handles before its worker moves on.
    pub budget: u32,
    /// Kernel id of instance 0 (instance `i` is `base_id + i`).
    pub base_id: u32,
    /// Restarts the whole group may use (`RestartPolicy`).
    pub max_restarts: u32,
    /// Scratch bytes per worker (the params block's `scratch` holds `workers` of them).
    pub scratch_bytes: u32,
    /// Set by worker 0 (release) once terminating and drained (see the module docs).
    pub quiescent: u32,
    /// Zero.
    pub reserved0: u32,
    /// Messages worker 0 moved from the ingress ring into mailboxes.
    pub ingress_done: u64,
    /// Zero.
    pub reserved: [u64; 11],
}

/// Size of [`GroupDesc`].
pub const GROUP_DESC_SIZE: usize = 256;
const _: () = assert!(core::mem::size_of::<GroupDesc>() == GROUP_DESC_SIZE);

/// Per-worker counters (mapped, written by the worker): messages handled (u64 at 0), and
/// `exited` (u32 at 8, release, when the worker returns).
pub const WORKER_INFO_SIZE: usize = 64;

/// `(field, offset, size)` of [`GroupDesc`], for the generated C header.
pub const GROUP_DESC_FIELDS: &[(&str, usize, usize)] = &{
    macro_rules! f {
        ($($n:ident: $s:expr),* $(,)?) => { [$((stringify!($n), core::mem::offset_of!(GroupDesc, $n), $s)),*] };
    }
    f!(params: 8, states: 8, mb_ends: 8, mb_meta: 8, mb_data: 8, marks: 8, status: 8, clocks: 8, ready: 8,
       d2h: 8, d2h_stride: 8, worker_info: 8, init_state: 8, shared: 8, instances: 4, workers: 4, mb_cap: 4,
       slot_size: 4, state_stride: 4, ready_cap: 4, budget: 4, base_id: 4, max_restarts: 4, scratch_bytes: 4,
       quiescent: 4, reserved0: 4, ingress_done: 8)
};

/// `(field, offset, size)` of a worker's counters.
pub const WORKER_INFO_FIELDS: &[(&str, usize, usize)] = &[("handled", 0, 8), ("exited", 8, 4)];

/// The device runtime of groups (see the module docs).
pub(crate) const GROUP_RUNTIME: &str = include_str!("group.h");
