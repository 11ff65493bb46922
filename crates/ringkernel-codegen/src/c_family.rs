//! The C-family emission core: everything a persistent kernel's C source holds that does not
//! depend on the compiler it is for. That is the per-kernel parameter block shared by the host
//! and the device, and the complete source of one kernel (layouts, device runtime, message
//! types, send/reply helpers, dispatch and the persistent loop) around the user's handlers. What
//! differs between C-family targets is one [`CDialect`]: the device primitives (qualifiers,
//! system-scope atomics, fence, clock, idle back-off) the runtime is written against. The
//! targets are zero-sized types in their own modules: [`crate::cuda::CudaC`] (NVRTC, the GPU) and
//! [`crate::host_c::HostC`] (the host C compiler, for the CUDA backend's host emulation); a
//! further C-family target (MSL) is one more such module.
//!
//! The user writes one function per handled message type,
//! `RK_DEVICE uint32_t on_<Msg>(rk_ctx* ctx, <State>* state, const <Msg>* m)`, returning 0 or
//! an error code (answered to the sender as an error reply). A handler can call, for every
//! message type `T` the kernel declares:
//!
//! * `rk_reply_T(ctx, &t)`: answer the message being handled (a `call` gets it as its reply);
//! * `rk_emit_T(ctx, &t)`: put `t` in the kernel's output for the host (`receive`);
//! * `rk_send_T(ctx, route, &t)`: K2K to the kernel named by route `route`; written straight
//!   into the target's inbox in device memory when the target runs on the same device, through
//!   the host otherwise;
//! * `rk_error(ctx, code)` / `rk_fail(ctx, code)`: fail this request / the whole kernel;
//! * `ctx->scratch` (`ctx->scratch_bytes` bytes of device memory) for building `Vec` fields.
//!
//! # Queues and who touches what ([`KernelParams`] holds the pointers)
//!
//! | queue | memory | producers | consumer |
//! | --- | --- | --- | --- |
//! | input (`h2d`) | pinned host memory mapped into the device | host threads (CAS on `tail`) | the kernel |
//! | inbox | device memory | other kernels on the device (CAS on `tail`, `.sys`/`.gpu` atomics) | the kernel |
//! | output (`d2h`) | pinned host memory mapped into the device | the kernel | the host agent thread |
//!
//! Every index crosses PCIe with one writer: the host never pops the input while the kernel
//! runs and the kernel never pushes into the host side's `tail`, so no atomic
//! read-modify-write ever has to be atomic between the CPU and the GPU (plain PCIe does not
//! promise that). Each publish is a release store of the slot's `seq` at system scope, each
//! check an acquire load at system scope: the slot bytes written before the release are visible
//! to whoever observes the new `seq`, on either side of the bus.

use crate::err;
use crate::types::{CodegenError, KernelTypes};
use std::fmt::Write;

pub mod c_types;
pub mod group;

/// What differs between C-family targets (see the module docs); implemented by zero-sized
/// target types.
pub trait CDialect {
    /// Definitions of `RK_DEVICE`, `RK_KERNEL`, `RK_IS_LEADER()`, the system-scope loads,
    /// stores, compare-and-swap and fence, `rk_now_us` and `rk_pause`, which the device runtime
    /// (`c_family/runtime.h`) is written against. Emitted after the layout header.
    const PRIMITIVES: &'static str;
}

/// The device runtime every C-family kernel shares (see the module docs).
const RUNTIME: &str = include_str!("c_family/runtime.h");

/// Most K2K routes a C-family kernel can have.
pub const MAX_ROUTES: usize = 16;

/// `destination` of an envelope a kernel sends through the host to route `r`:
/// `ROUTE_BASE + r` (kernel ids never come near it); the host resolves the route's name.
pub const ROUTE_BASE: u32 = 0xFFFF_FF00;

/// Bits of [`KernelParams::ctl`], the one word the host writes and the kernel reads on every
/// loop iteration (one PCIe read for every lifecycle flag).
pub mod ctl {
    /// Take input (the cell is `Active`).
    pub const ACTIVE: u32 = 1 << 0;
    /// Termination requested: drain the queues, then exit once `EXIT` is set too.
    pub const TERMINATE: u32 = 1 << 1;
    /// The kernel may exit: no other kernel can still write into its inbox.
    pub const EXIT: u32 = 1 << 2;
    /// Restart generation (12 bits): bumped after the host rewrote the state of a kernel that
    /// failed; the kernel takes input again when it changes.
    pub const RESTART_SHIFT: u32 = 8;
    /// Snapshot request generation (12 bits): the kernel copies its state into the snapshot
    /// buffer between two messages and stores the generation in `snapshot_done`.
    pub const SNAPSHOT_SHIFT: u32 = 20;
    /// Width mask of a generation field.
    pub const GEN_MASK: u32 = 0xFFF;
}

/// The per-kernel block the host writes before launch and both sides update while it runs
/// (pinned host memory, mapped into the device). Pointers are device addresses.
///
/// Written by the host before launch: the pointers, `n_routes`, `scratch_bytes`, `state_words`.
/// At run time:
///
/// * `ctl` (host → kernel; host stores with release, the kernel loads with acquire once per
///   loop iteration): the [`ctl`] bits. Only the host writes it.
/// * `epoch` (kernel → host, release/acquire): incremented at the top of every loop iteration;
///   the host waits for it to move twice to know a sender finished any send that began before a
///   route was unlinked.
/// * `failures`, `fail_*` (kernel → host, release of `failures` after the `fail_*` stores): a
///   handler called `rk_fail`; the kernel takes no input until the restart generation in `ctl`
///   changes (the host rewrote the state) or it is told to exit.
/// * `h2d_done`, `inbox_done` (kernel → host): messages handled from each queue.
/// * `snapshot_done` (kernel → host, release after copying the state to `snapshot`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelParams {
    /// Device address of the kernel's control block (mapped).
    pub cb: u64,
    /// Device address of the input ring (mapped).
    pub h2d: u64,
    /// Device address of the output ring (mapped).
    pub d2h: u64,
    /// Device address of the K2K inbox ring (device memory).
    pub inbox: u64,
    /// Device address of the state words (device memory).
    pub state: u64,
    /// Device address of the scratch area (device memory).
    pub scratch: u64,
    /// Device address of the route table (`[RouteEntry; MAX_ROUTES]`, mapped).
    pub routes: u64,
    /// Device address of the snapshot buffer (`state_words` words, mapped).
    pub snapshot: u64,
    /// Routes in use.
    pub n_routes: u32,
    /// Bytes of scratch.
    pub scratch_bytes: u32,
    /// See the type docs.
    pub ctl: u32,
    /// See the type docs.
    pub epoch: u32,
    /// See the type docs.
    pub failures: u32,
    /// Code given to `rk_fail`.
    pub fail_code: u32,
    /// Correlation id of the message whose handler failed.
    pub fail_corr: u64,
    /// Source of the message whose handler failed.
    pub fail_source: u32,
    /// Words of state.
    pub state_words: u32,
    /// See the type docs.
    pub h2d_done: u64,
    /// See the type docs.
    pub inbox_done: u64,
    /// See the type docs.
    pub snapshot_done: u32,
    /// Zero.
    pub reserved: u32,
}

/// One K2K route: the target's inbox (device address; 0 = go through the host) and its id.
/// Written by the host agent (release), read by the kernel on every send (acquire).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct RouteEntry {
    /// Device address of the target's inbox ring, or 0.
    pub inbox: u64,
    /// Target kernel id (meaningful when `inbox != 0`).
    pub kernel_id: u32,
    /// Zero.
    pub reserved: u32,
}

/// Size of [`KernelParams`].
pub const KERNEL_PARAMS_SIZE: usize = 128;
/// Size of [`RouteEntry`].
pub const ROUTE_ENTRY_SIZE: usize = 16;
const _: () = assert!(core::mem::size_of::<KernelParams>() == KERNEL_PARAMS_SIZE);
const _: () = assert!(core::mem::size_of::<RouteEntry>() == ROUTE_ENTRY_SIZE);

macro_rules! fields {
    ($t:ty: $($f:ident : $n:expr),* $(,)?) => {
        &[$((stringify!($f), core::mem::offset_of!($t, $f), $n)),*]
    };
}

/// `(field, offset, size)` of [`KernelParams`], for the generated C header.
pub const KERNEL_PARAMS_FIELDS: &[(&str, usize, usize)] = fields!(KernelParams:
    cb: 8, h2d: 8, d2h: 8, inbox: 8, state: 8, scratch: 8, routes: 8, snapshot: 8, n_routes: 4,
    scratch_bytes: 4, ctl: 4, epoch: 4, failures: 4, fail_code: 4, fail_corr: 8, fail_source: 4,
    state_words: 4, h2d_done: 8, inbox_done: 8, snapshot_done: 4, reserved: 4);

/// `(field, offset, size)` of [`RouteEntry`].
pub const ROUTE_ENTRY_FIELDS: &[(&str, usize, usize)] =
    fields!(RouteEntry: inbox: 8, kernel_id: 4, reserved: 4);

/// The name of every generated kernel's entry point (one kernel per module).
pub const ENTRY_POINT: &str = "rk_kernel_main";

/// Everything needed to generate one C-family kernel.
#[derive(Debug, Clone)]
pub struct CKernelSpec<'a> {
    /// The kernel's state and message types.
    pub types: KernelTypes<'a>,
    /// The user's C: handler functions and whatever helpers they need.
    pub user_source: &'a str,
}

/// Emits the complete source of one persistent kernel for C-family target `D` (see the module
/// docs): `emit_kernel::<CudaC>` compiles with NVRTC for the GPU, `emit_kernel::<HostC>` as C11
/// for the host emulation; the two differ only in `D::PRIMITIVES`.
pub fn emit_kernel<D: CDialect>(spec: &CKernelSpec<'_>) -> Result<String, CodegenError> {
    spec.types.check()?;
    let mut out = crate::emit_c_header();
    let _ = writeln!(
        out,
        "#define RK_MAX_ROUTES {MAX_ROUTES}u\n#define RK_ROUTE_BASE {ROUTE_BASE:#x}u\n\
         #define RK_ERR_NO_REPLY {:#x}u\n#define RK_ERR_UNKNOWN_TYPE {:#x}u\n#define RK_ERR_MALFORMED {:#x}u\n\
         #define RK_ERR_TOO_LARGE {:#x}u\n#define RK_ERR_BAD_ROUTE {:#x}u\n#define RK_ERR_EXITING {:#x}u\n\
         #define RK_ERR_INSTANCE_FAILED {:#x}u\n\
         #define RK_CTL_ACTIVE {}u\n#define RK_CTL_TERMINATE {}u\n#define RK_CTL_EXIT {}u\n\
         #define RK_CTL_RESTART_SHIFT {}u\n#define RK_CTL_SNAPSHOT_SHIFT {}u\n#define RK_CTL_GEN_MASK {:#x}u",
        err::NO_REPLY,
        err::UNKNOWN_TYPE,
        err::MALFORMED,
        err::TOO_LARGE,
        err::TOO_MANY_SENDS,
        err::EXITING,
        err::INSTANCE_FAILED,
        ctl::ACTIVE,
        ctl::TERMINATE,
        ctl::EXIT,
        ctl::RESTART_SHIFT,
        ctl::SNAPSHOT_SHIFT,
        ctl::GEN_MASK
    );
    out.push_str(D::PRIMITIVES);
    out.push_str(RUNTIME);
    out.push_str("\n// ---- message and state types (generated from the Rust GpuType descriptions) ----\n");
    out.push_str(&c_types::emit_c_types(spec.types.messages));
    out.push_str(&c_types::emit_c_state_type(&spec.types.state));
    out.push_str(CONTEXT);
    let (group_helpers, group_loop) =
        group::GROUP_RUNTIME.split_once("// ---- group loop ----").expect("group.h has its two parts");
    out.push_str(group_helpers);
    for m in spec.types.messages {
        let n = m.name;
        let _ = write!(
            out,
            "RK_DEVICE uint32_t rk_reply_{n}(rk_ctx* ctx, const {n}* m) {{\n    \
             rk_out o;\n    if (!rk_out_begin(ctx, -1, &o)) return rk_error(ctx, RK_ERR_EXITING);\n    \
             int32_t w = rk_write_{n}((uint32_t*)(o.slot + RK_HDR), o.cap_words, m);\n    \
             uint64_t corr = ctx->msg ? ctx->msg->correlation_id : 0u;\n    \
             ctx->replied = 1u;\n    \
             return rk_out_end(ctx, &o, w, RK_TYPE_{n}, corr ? RK_FLAG_REPLY : 0u, corr, ctx->msg ? ctx->msg->source : 0u);\n}}\n\
             RK_DEVICE uint32_t rk_emit_{n}(rk_ctx* ctx, const {n}* m) {{\n    \
             rk_out o;\n    if (!rk_out_begin(ctx, -1, &o)) return rk_error(ctx, RK_ERR_EXITING);\n    \
             int32_t w = rk_write_{n}((uint32_t*)(o.slot + RK_HDR), o.cap_words, m);\n    \
             return rk_out_end(ctx, &o, w, RK_TYPE_{n}, 0u, 0u, 0u);\n}}\n\
             RK_DEVICE uint32_t rk_send_{n}(rk_ctx* ctx, uint32_t route, const {n}* m) {{\n    \
             rk_out o;\n    if (route >= ctx->p->n_routes) return rk_error(ctx, RK_ERR_BAD_ROUTE);\n    \
             if (!rk_out_begin(ctx, (int32_t)route, &o)) return rk_error(ctx, RK_ERR_EXITING);\n    \
             int32_t w = rk_write_{n}((uint32_t*)(o.slot + RK_HDR), o.cap_words, m);\n    \
             return rk_out_end(ctx, &o, w, RK_TYPE_{n}, 0u, 0u, o.device ? o.target : RK_ROUTE_BASE + route);\n}}\n\
             RK_DEVICE uint32_t rk_send_instance_{n}(rk_ctx* ctx, uint32_t index, const {n}* m) {{\n    \
             rk_out o;\n    if (!ctx->group || index >= ctx->group->instances) return rk_error(ctx, RK_ERR_BAD_ROUTE);\n    \
             if (!rk_group_out_begin(ctx, index, &o)) return rk_error(ctx, RK_ERR_EXITING);\n    \
             int32_t w = rk_write_{n}((uint32_t*)(o.slot + RK_HDR), o.cap_words, m);\n    \
             uint32_t r = rk_out_end(ctx, &o, w, RK_TYPE_{n}, 0u, 0u, ctx->group->base_id + index);\n    \
             if (o.device) rk_group_wake(ctx->group, index);\n    \
             return r;\n}}\n"
        );
    }
    let s = spec.types.state.name;
    out.push_str("\n// ---- handlers ----\n");
    for m in spec.types.handled_messages() {
        let _ = writeln!(out, "RK_DEVICE uint32_t on_{0}(rk_ctx* ctx, {s}* state, const {0}* m);", m.name);
    }
    out.push_str(spec.user_source);
    let _ = write!(
        out,
        "\n// ---- dispatch ----\n\
         RK_DEVICE uint32_t rk_dispatch(rk_ctx* ctx, {s}* st, const rk_envelope_header* msg, const uint8_t* payload) {{\n    \
         if ((msg->payload_len & 3u) != 0u) return RK_ERR_MALFORMED;\n    \
         const uint32_t* w = (const uint32_t*)payload;\n    \
         uint32_t n = msg->payload_len / 4u;\n    (void)w; (void)n; (void)st;\n    \
         switch (msg->type_id) {{\n"
    );
    for m in spec.types.handled_messages() {
        let _ = writeln!(
            out,
            "    case RK_TYPE_{0}: {{ {0} m; if (rk_read_{0}(w, n, &m) != 0) return RK_ERR_MALFORMED; return on_{0}(ctx, st, &m); }}",
            m.name
        );
    }
    out.push_str("    default: return RK_ERR_UNKNOWN_TYPE;\n    }\n}\n");
    out.push_str(&PERSISTENT_LOOP.replace("STATE", s));
    out.push_str(&group_loop.replace("STATE", s));
    Ok(out)
}

/// The handler context and the output helpers every kernel shares.
const CONTEXT: &str = r#"
// ---- handler context ----
#define RK_HDR ((uint32_t)sizeof(rk_envelope_header))
typedef struct {
    rk_kernel_params* p;
    rk_control_block* cb;
    rk_ring out;
    const rk_envelope_header* msg;
    uint64_t clock;
    uint64_t sent;
    uint32_t replied;
    uint32_t error;
    uint32_t failed;
    uint32_t fail_code;
    uint32_t failures;
    /// Device memory the handler may use freely (for example to build a Vec field).
    uint8_t* scratch;
    uint32_t scratch_bytes;
    /// This kernel's id (in a kernel group: the instance's, `group->base_id + instance`).
    uint32_t self_id;
    /// In a kernel group: the instance being run (0 otherwise).
    uint32_t instance;
    /// The kernel group's descriptor (0 for a single kernel).
    rk_group_desc* group;
} rk_ctx;

/// This instance's index in its kernel group (0 for a single kernel).
RK_DEVICE uint32_t rk_instance(const rk_ctx* ctx) { return ctx->instance; }
/// Instances of this kernel's group (1 for a single kernel).
RK_DEVICE uint32_t rk_group_size(const rk_ctx* ctx) { return ctx->group ? ctx->group->instances : 1u; }

/// Fails the request being handled with `code` (an error reply to its sender); returns `code`.
RK_DEVICE uint32_t rk_error(rk_ctx* ctx, uint32_t code) {
    if (ctx->error == 0u) ctx->error = code;
    return code;
}

/// Fails the kernel (restart or Failed, per its restart policy); returns `code`.
RK_DEVICE uint32_t rk_fail(rk_ctx* ctx, uint32_t code) {
    ctx->failed = 1u;
    ctx->fail_code = code;
    return code;
}

/// An output slot being written: in the D2H ring, or in another kernel's inbox.
typedef struct {
    uint8_t* slot;
    rk_ring ring;
    uint32_t pos;
    uint32_t cap_words;
    uint32_t device;
    uint32_t target;
} rk_out;

// Whether the host told this kernel to exit (it gave up on the kernel, or the runtime is going
// away): every wait of the device observes it, so a kernel never outlives its host. Acquire, as
// every load of `ctl` (pairs with the host's SeqCst read-modify-writes).
RK_DEVICE uint32_t rk_exit_requested(rk_ctx* ctx) {
    return rk_load_acquire(&ctx->p->ctl) & RK_CTL_EXIT;
}

// Claims a slot: in the inbox of route `route`'s target while it is linked on the device
// (waiting for room if it is full: backpressure, as a full queue means anywhere else, and the
// only way to keep one sender's messages to one target in order), else in the kernel's own
// output ring (which the host agent drains, so waiting for room there ends while the host
// serves the kernel). A target that fails or terminates is unlinked by the host, which ends any
// wait for its inbox. Both waits observe the exit flag: told to exit, a kernel waiting for an
// inbox sends through its output ring instead (the host keeps or delivers the message), and a
// kernel waiting for output room gives up: returns 0 with nothing claimed (the send fails with
// RK_ERR_EXITING). Returns 1 with a slot claimed.
RK_DEVICE uint32_t rk_out_begin(rk_ctx* ctx, int32_t route, rk_out* o) {
    o->device = 0u;
    o->target = 0u;
    if (route >= 0) {
        rk_route_entry* r = &((rk_route_entry*)ctx->p->routes)[route];
        // Pairs with the host's fence between unlinking a route and reading `epoch`: either the
        // host saw this iteration's epoch (and waits for the next one), or this load sees the
        // unlink (store-buffering, both sides fenced).
        rk_fence_system();
        for (uint32_t tries = 0u;; tries++) {
            uint64_t inbox = rk_load_u64_acquire(&r->inbox);
            if (inbox == 0u) break;
            o->ring = rk_ring_attach((uint8_t*)inbox);
            o->slot = rk_ring_claim_push(&o->ring, &o->pos);
            if (o->slot) {
                o->device = 1u;
                o->target = rk_load_relaxed(&r->kernel_id);
                break;
            }
            if (rk_exit_requested(ctx)) break;
            rk_pause(tries);
        }
    }
    if (!o->device) {
        uint32_t idle = 0u;
        while (!(o->slot = rk_ring_push_single(&ctx->out, &o->pos))) {
            if (rk_exit_requested(ctx)) return 0u;
            rk_pause(idle++);
        }
        o->ring = ctx->out;
    }
    o->cap_words = (o->ring.slot_size - RK_HDR) / 4u;
    return 1u;
}

// Writes the envelope header and publishes the slot; `words` < 0 (the payload did not fit)
// publishes a void slot instead and fails the request with RK_ERR_TOO_LARGE.
RK_DEVICE uint32_t rk_out_end(rk_ctx* ctx, rk_out* o, int32_t words, uint64_t type_id, uint32_t flags,
                              uint64_t corr, uint32_t dest) {
    if (words < 0) {
        rk_ring_publish(&o->ring, o->pos, RK_VOID_LEN);
        return rk_error(ctx, RK_ERR_TOO_LARGE);
    }
    ctx->clock = rk_hlc_merge(ctx->clock, 0u);
    rk_envelope_header* h = (rk_envelope_header*)o->slot;
    uint32_t id = ctx->self_id;
    h->magic = RK_ENVELOPE_MAGIC;
    h->version = (uint16_t)RK_ENVELOPE_VERSION;
    h->flags = (uint16_t)flags;
    h->type_id = type_id;
    h->message_id = ((uint64_t)id << 40) | ++ctx->sent;
    h->correlation_id = corr;
    h->hlc = ctx->clock;
    h->source = id;
    h->destination = dest;
    h->payload_len = (uint32_t)words * 4u;
    h->hlc_node = id;
    h->checksum = 0u;
    h->reserved = 0u;
    rk_ring_publish(&o->ring, o->pos, RK_HDR + (uint32_t)words * 4u);
    return 0u;
}

// An error reply (FLAG_ERROR_REPLY and `extra`, payload = the code) to the sender of the current
// message.
RK_DEVICE void rk_error_reply_flags(rk_ctx* ctx, uint32_t code, uint32_t extra) {
    rk_out o;
    // Told to exit while waiting for room: the error reply is not sent (the host fails the
    // kernel's waiting calls when it gives up on it).
    if (!rk_out_begin(ctx, -1, &o)) return;
    ((uint32_t*)(o.slot + RK_HDR))[0] = code;
    uint64_t corr = ctx->msg ? ctx->msg->correlation_id : 0u;
    rk_out_end(ctx, &o, 1, 0u, RK_FLAG_ERROR_REPLY | extra | (corr ? RK_FLAG_REPLY : 0u), corr,
               ctx->msg ? ctx->msg->source : 0u);
}

RK_DEVICE void rk_error_reply(rk_ctx* ctx, uint32_t code) { rk_error_reply_flags(ctx, code, 0u); }
"#;

const PERSISTENT_LOOP: &str = r#"
// ---- persistent loop ----
// Starts handling the message in `slot`: resets the per-message context, checks the envelope
// (a malformed one gets an error reply and 0 back), and merges its clock.
RK_DEVICE const rk_envelope_header* rk_begin_message(rk_ctx* ctx, uint8_t* slot, uint32_t len) {
    const rk_envelope_header* msg = (const rk_envelope_header*)slot;
    ctx->replied = 0u;
    ctx->error = 0u;
    ctx->failed = 0u;
    if (len < RK_HDR || msg->magic != RK_ENVELOPE_MAGIC || msg->version != RK_ENVELOPE_VERSION ||
        msg->payload_len > len - RK_HDR) {
        ctx->msg = 0;
        rk_error_reply(ctx, RK_ERR_MALFORMED);
        return 0;
    }
    ctx->msg = msg;
    ctx->clock = rk_hlc_merge(ctx->clock, msg->hlc);
    return msg;
}

RK_DEVICE void rk_process(rk_ctx* ctx, STATE* st, uint8_t* slot, uint32_t len) {
    const rk_envelope_header* msg = rk_begin_message(ctx, slot, len);
    if (!msg) return;
    // The handler works on the state in device memory, in place.
    uint32_t code = rk_dispatch(ctx, st, msg, slot + RK_HDR);
    if (ctx->failed) {
        rk_kernel_params* p = ctx->p;
        rk_store_relaxed(&p->fail_code, ctx->fail_code);
        rk_store_u64_relaxed(&p->fail_corr, msg->correlation_id);
        rk_store_relaxed(&p->fail_source, msg->source);
        // Release: the fail_* stores above are visible to a host that sees the new count.
        rk_store_release(&p->failures, ++ctx->failures);
        return;
    }
    if (code == 0u) code = ctx->error;
    if (code == 0u && msg->correlation_id != 0u && !ctx->replied) code = RK_ERR_NO_REPLY;
    if (code != 0u) rk_error_reply(ctx, code);
}

RK_KERNEL rk_kernel_main(rk_kernel_params* p) {
    if (!RK_IS_LEADER()) return;
    rk_control_block* cb = (rk_control_block*)p->cb;
    rk_ring in = rk_ring_attach((uint8_t*)p->h2d);
    rk_ring inbox = rk_ring_attach((uint8_t*)p->inbox);
    rk_ctx ctx;
    ctx.p = p;
    ctx.cb = cb;
    ctx.out = rk_ring_attach((uint8_t*)p->d2h);
    ctx.msg = 0;
    ctx.clock = cb->hlc_packed;
    ctx.sent = 0u;
    ctx.scratch = (uint8_t*)p->scratch;
    ctx.scratch_bytes = p->scratch_bytes;
    ctx.failures = 0u;
    ctx.self_id = cb->kernel_id;
    ctx.instance = 0u;
    ctx.group = 0;
    STATE* st = (STATE*)p->state;
    // Kernel-local copies: the kernel is the only writer of these, so it never reads them back
    // over PCIe.
    uint64_t h2d_done = 0u, inbox_done = 0u;
    uint32_t idle = 0u, epoch = 0u, last_look = 0u, failed = 0u, fail_gen = 0u, snap_seen = 0u;
    for (;;) {
        // Release: a send made in the previous iteration happens-before the host's acquire of
        // the new epoch (the unlink protocol, see ringkernel-cuda's backend docs).
        rk_store_release(&p->epoch, ++epoch);
        // One PCIe read for every lifecycle flag; acquire pairs with the host's release.
        uint32_t c = rk_load_acquire(&p->ctl);
        uint32_t terminating = c & RK_CTL_TERMINATE;
        uint32_t snap = (c >> RK_CTL_SNAPSHOT_SHIFT) & RK_CTL_GEN_MASK;
        if (snap != snap_seen) {
            // Between two messages: the state is consistent. Release: the copy is complete
            // before the host sees `snapshot_done`.
            uint32_t* from = (uint32_t*)p->state;
            uint32_t* to = (uint32_t*)p->snapshot;
            for (uint32_t i = 0u; i < p->state_words; i++) to[i] = from[i];
            rk_store_release(&p->snapshot_done, snap);
            snap_seen = snap;
        }
        if (failed) {
            if (((c >> RK_CTL_RESTART_SHIFT) & RK_CTL_GEN_MASK) != fail_gen) {
                // Restarted: the host rewrote the state before it changed the generation (the
                // acquire above pairs with that release).
                failed = 0u;
            } else {
                if (terminating && (c & RK_CTL_EXIT)) {
                    if (last_look) break;
                    last_look = 1u;
                }
                rk_pause(idle++);
                continue;
            }
        }
        if (!terminating && !(c & RK_CTL_ACTIVE)) {
            rk_pause(idle++);
            continue;
        }
        uint32_t pos, len, from_host = 1u;
        rk_ring* src = &in;
        uint8_t* slot = rk_ring_pop_single(&in, &pos, &len);
        if (!slot) {
            src = &inbox;
            from_host = 0u;
            slot = rk_ring_pop_single(&inbox, &pos, &len);
        }
        if (!slot) {
            if (terminating && (c & RK_CTL_EXIT)) {
                // One more look at both queues after the acquire: a message sent before the
                // host allowed the exit is visible now, and is handled before the kernel ends.
                if (last_look) break;
                last_look = 1u;
                continue;
            }
            rk_pause(idle++);
            continue;
        }
        last_look = 0u;
        uint32_t c2 = rk_load_acquire(&p->ctl);
        if (!(c2 & RK_CTL_TERMINATE) && !(c2 & RK_CTL_ACTIVE)) {
            // Deactivated between the check above and the pop: put the message back (this
            // kernel is the queue's only consumer, so undoing the head store is enough). The
            // host clears ACTIVE before any message sent after `deactivate` is published, so the
            // acquire of that message's `seq` in the pop makes this load see it.
            rk_ring_unpop_single(src, pos);
            continue;
        }
        idle = 0u;
        uint32_t failures_before = ctx.failures;
        if (len != RK_VOID_LEN) rk_process(&ctx, st, slot, len);
        rk_ring_release(src, pos);
        if (len != RK_VOID_LEN) {
            if (from_host) rk_store_u64_relaxed(&p->h2d_done, ++h2d_done);
            else rk_store_u64_relaxed(&p->inbox_done, ++inbox_done);
        }
        if (ctx.failures != failures_before) {
            failed = 1u;
            fail_gen = (c2 >> RK_CTL_RESTART_SHIFT) & RK_CTL_GEN_MASK;
        }
        rk_store_u64_relaxed(&cb->hlc_packed, ctx.clock);
    }
    rk_store_release(&cb->terminated, 1u);
}
"#;
