
// ---- Device runtime of the wgpu backend (see ringkernel-codegen's wgsl.rs for the memory model) ----

struct RkDesc {
    ctrl: u32,
    nroutes: u32,
    kernel_id: u32,
    _pad: u32,
    // Control-block word offset of each route's target (0: deliver through the host).
    route_ctrl: array<vec4<u32>, 4>,
    // Kernel id of each route's target (0xffffffff: no such kernel).
    route_kid: array<vec4<u32>, 4>,
}

@group(0) @binding(0) var<storage, read_write> rk_mem: array<u32>;
@group(0) @binding(1) var<uniform> rk_desc: RkDesc;

/// A variable-length array inside a message: absolute word offset in rk_mem and element count.
struct RkSlice {
    off: u32,
    len: u32,
}

const RK_NONE: u32 = 0xffffffffu;

var<private> rk_c: u32;
var<private> rk_hlc: vec2<u32>;
var<private> rk_seq: u32;
var<private> rk_cur_type: vec2<u32>;
var<private> rk_cur_corr: vec2<u32>;
var<private> rk_cur_hlc: vec2<u32>;
var<private> rk_cur_source: u32;
var<private> rk_replied: bool;
var<private> rk_failed: bool;
var<private> rk_bad: bool;
var<private> rk_oversize: bool;

// ---- 64-bit helpers (x = low word, y = high word) ----
fn rk_u64(lo: u32) -> vec2<u32> { return vec2<u32>(lo, 0u); }
fn rk_add64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let lo = a.x + b.x;
    return vec2<u32>(lo, a.y + b.y + select(0u, 1u, lo < a.x));
}
fn rk_sub64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    return vec2<u32>(a.x - b.x, a.y - b.y - select(0u, 1u, a.x < b.x));
}
fn rk_lt64(a: vec2<u32>, b: vec2<u32>) -> bool { return a.y < b.y || (a.y == b.y && a.x < b.x); }
fn rk_max64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> { return select(a, b, rk_lt64(a, b)); }

// ---- Slices ----
fn rk_checked_slice(b: u32, n: u32, fixed: u32, rel: u32, len: u32, words: u32) -> RkSlice {
    // Elements must lie after the fixed part and inside the payload (n words).
    if (rel < fixed || rel > n || len > (n - rel) / words) {
        rk_bad = true;
        return RkSlice(b, 0u);
    }
    return RkSlice(b + rel, len);
}
fn rk_get_u32(s: RkSlice, i: u32) -> u32 { return rk_mem[s.off + min(i, s.len - 1u)]; }
fn rk_get_i32(s: RkSlice, i: u32) -> i32 { return bitcast<i32>(rk_get_u32(s, i)); }
fn rk_get_f32(s: RkSlice, i: u32) -> f32 { return bitcast<f32>(rk_get_u32(s, i)); }
fn rk_get_u64(s: RkSlice, i: u32) -> vec2<u32> {
    let j = s.off + 2u * min(i, s.len - 1u);
    return vec2<u32>(rk_mem[j], rk_mem[j + 1u]);
}

// ---- Scratch: a per-kernel area for building variable-length outputs ----
fn rk_scratch_words() -> u32 { return rk_mem[rk_c + RK_C_SCRATCH_WORDS]; }
fn rk_scratch_set_u32(i: u32, v: u32) {
    if (i < rk_scratch_words()) { rk_mem[rk_mem[rk_c + RK_C_SCRATCH] + i] = v; }
}
fn rk_scratch_set_f32(i: u32, v: f32) { rk_scratch_set_u32(i, bitcast<u32>(v)); }
fn rk_scratch_set_i32(i: u32, v: i32) { rk_scratch_set_u32(i, bitcast<u32>(v)); }
fn rk_scratch_set_u64(i: u32, v: vec2<u32>) { rk_scratch_set_u32(2u * i, v.x); rk_scratch_set_u32(2u * i + 1u, v.y); }
/// A slice of `len` elements of `words` words each, starting at scratch word `first`.
fn rk_scratch_slice(first: u32, len: u32, words: u32) -> RkSlice {
    let avail = rk_scratch_words() - min(first, rk_scratch_words());
    return RkSlice(rk_mem[rk_c + RK_C_SCRATCH] + first, min(len, avail / words));
}

// ---- Message context ----
fn rk_kernel_id() -> u32 { return rk_mem[rk_c + RK_C_KERNEL_ID]; }
fn rk_msg_source() -> u32 { return rk_cur_source; }
fn rk_msg_hlc() -> vec2<u32> { return rk_cur_hlc; }
fn rk_msg_correlation() -> vec2<u32> { return rk_cur_corr; }
/// The kernel's clock after handling the current message's arrival.
fn rk_now() -> vec2<u32> { return rk_hlc; }

// ---- Hybrid logical clock: packed (physical µs << 12 | logical), as in ringkernel-core ----
fn rk_wall_packed() -> vec2<u32> {
    let lo = rk_mem[RK_G_NOW_LO];
    let hi = rk_mem[RK_G_NOW_HI];
    return vec2<u32>(lo << 12u, (hi << 12u) | (lo >> 20u));
}
// One logical step, saturating at the largest packed value (as ringkernel-core's HlcClock does):
// a clock never wraps and runs backwards.
fn rk_tick() -> vec2<u32> {
    let top = all(rk_hlc == vec2<u32>(0xFFFFFFFFu, 0xFFFFFFFFu));
    rk_hlc = rk_max64(select(rk_add64(rk_hlc, vec2<u32>(1u, 0u)), rk_hlc, top), rk_wall_packed());
    return rk_hlc;
}
fn rk_observe(remote: vec2<u32>) {
    rk_hlc = rk_max64(rk_hlc, remote);
    let _t = rk_tick();
}

// ---- Queues ----
fn rk_in_free(c: u32) -> u32 {
    return rk_mem[c + RK_C_IN_CAP] - (rk_mem[c + RK_C_IN_TAIL] - rk_mem[c + RK_C_IN_HEAD]);
}
fn rk_out_free() -> u32 {
    return rk_mem[rk_c + RK_C_OUT_CAP] - (rk_mem[rk_c + RK_C_OUT_TAIL] - rk_mem[rk_c + RK_C_OUT_HEAD]);
}
fn rk_route_ctrl(r: u32) -> u32 { return rk_desc.route_ctrl[r / 4u][r % 4u]; }
fn rk_route_kid(r: u32) -> u32 { return rk_desc.route_kid[r / 4u][r % 4u]; }

/// Whether every destination has room for what one handler call may send.
fn rk_room() -> bool {
    // Own output: the reply/emits plus every send that goes through the host.
    var own = RK_MAX_SENDS;
    for (var r = 0u; r < rk_desc.nroutes; r++) {
        let t = rk_route_ctrl(r);
        if (t == 0u) {
            own += RK_MAX_SENDS;
        } else if (rk_in_free(t) < RK_MAX_SENDS) {
            return false;
        }
    }
    return rk_out_free() >= own;
}

fn rk_write_envelope(s: u32, ty: vec2<u32>, flags: u32, corr: vec2<u32>, dest: u32) {
    let h = rk_tick();
    rk_seq += 1u;
    rk_mem[s + RK_ENV_MAGIC] = RK_ENVELOPE_MAGIC;
    rk_mem[s + RK_ENV_VERSION] = (RK_ENVELOPE_VERSION << RK_ENV_VERSION_SHIFT) | (flags << RK_ENV_FLAGS_SHIFT);
    rk_mem[s + RK_ENV_TYPE_ID] = ty.x;
    rk_mem[s + RK_ENV_TYPE_ID + 1u] = ty.y;
    // Device-made message ids: high word 0x4000_0000 | kernel id, low word a per-kernel counter.
    rk_mem[s + RK_ENV_MESSAGE_ID] = rk_seq;
    rk_mem[s + RK_ENV_MESSAGE_ID + 1u] = 0x40000000u | rk_kernel_id();
    rk_mem[s + RK_ENV_CORRELATION_ID] = corr.x;
    rk_mem[s + RK_ENV_CORRELATION_ID + 1u] = corr.y;
    rk_mem[s + RK_ENV_HLC] = h.x;
    rk_mem[s + RK_ENV_HLC + 1u] = h.y;
    rk_mem[s + RK_ENV_SOURCE] = rk_kernel_id();
    rk_mem[s + RK_ENV_DESTINATION] = dest;
    rk_mem[s + RK_ENV_PAYLOAD_LEN] = 0u;
    rk_mem[s + RK_ENV_HLC_NODE] = rk_kernel_id();
    rk_mem[s + RK_ENV_CHECKSUM] = 0u;
    rk_mem[s + RK_ENV_RESERVED] = 0u;
}

/// Claims a slot in this kernel's output queue and writes its envelope; returns the payload's
/// first word, or RK_NONE: `rk_oversize` is set when the payload cannot fit a slot, and the kernel
/// fails when the queue is full (the pre-check in rk_room makes that a handler sending more than
/// RK_MAX_SENDS messages).
fn rk_claim_own(dest: u32, ty: vec2<u32>, flags: u32, corr: vec2<u32>, words: u32) -> u32 {
    if (rk_failed) { return RK_NONE; }
    let slot_words = rk_mem[rk_c + RK_C_OUT_SLOT];
    if (words + RK_ENVELOPE_WORDS > slot_words) { rk_oversize = true; return RK_NONE; }
    if (rk_out_free() == 0u) { rk_fail(RK_ERR_TOO_MANY_SENDS); return RK_NONE; }
    let tail = rk_mem[rk_c + RK_C_OUT_TAIL];
    let s = rk_mem[rk_c + RK_C_OUT_DATA] + (tail & (rk_mem[rk_c + RK_C_OUT_CAP] - 1u)) * slot_words;
    rk_write_envelope(s, ty, flags, corr, dest);
    rk_mem[rk_c + RK_C_OUT_TAIL] = tail + 1u;
    return s + RK_ENVELOPE_WORDS;
}

/// The current message fails with `code` (its request gets an error reply naming the code); the
/// kernel keeps running. Codes at or above 0xffffff00 are the runtime's.
fn rk_error(code: u32) {
    rk_replied = true;
    let flags = rk_reply_flags() | RK_FLAG_ERROR_REPLY;
    let p = rk_claim_own(rk_cur_source, RK_TYPE_ERROR, flags, rk_cur_corr, 1u);
    if (p != RK_NONE) {
        rk_mem[p] = code;
        rk_finish(p, 1u);
    }
}

/// rk_claim_own, reporting an oversized payload as an error of the current message.
fn rk_push_own(dest: u32, ty: vec2<u32>, flags: u32, corr: vec2<u32>, words: u32) -> u32 {
    let p = rk_claim_own(dest, ty, flags, corr, words);
    if (p == RK_NONE && rk_oversize) {
        rk_oversize = false;
        rk_error(RK_ERR_TOO_LARGE);
    }
    return p;
}

/// K2K: claims a slot in route `r`'s input queue on the device (or, for a route through the host,
/// in this kernel's output queue) and writes the envelope.
fn rk_push_route(r: u32, ty: vec2<u32>, words: u32) -> u32 {
    if (rk_failed) { return RK_NONE; }
    if (r >= rk_desc.nroutes) { rk_fail(RK_ERR_TOO_MANY_SENDS); return RK_NONE; }
    let t = rk_route_ctrl(r);
    if (t == 0u) {
        return rk_push_own(rk_route_kid(r), ty, 0u, vec2<u32>(0u, 0u), words);
    }
    let slot_words = rk_mem[t + RK_C_IN_SLOT];
    if (words + RK_ENVELOPE_WORDS > slot_words) { rk_error(RK_ERR_TOO_LARGE); return RK_NONE; }
    if (rk_in_free(t) == 0u) { rk_fail(RK_ERR_TOO_MANY_SENDS); return RK_NONE; }
    let tail = rk_mem[t + RK_C_IN_TAIL];
    let s = rk_mem[t + RK_C_IN_DATA] + (tail & (rk_mem[t + RK_C_IN_CAP] - 1u)) * slot_words;
    rk_write_envelope(s, ty, 0u, vec2<u32>(0u, 0u), rk_route_kid(r));
    rk_mem[t + RK_C_IN_TAIL] = tail + 1u;
    return s + RK_ENVELOPE_WORDS;
}

/// Sets the payload length once the payload is written.
fn rk_finish(p: u32, words: u32) {
    rk_mem[p - RK_ENVELOPE_WORDS + RK_ENV_PAYLOAD_LEN] = words * 4u;
}

fn rk_reply_flags() -> u32 { return select(0u, RK_FLAG_REPLY, any(rk_cur_corr != vec2<u32>(0u, 0u))); }

/// The kernel fails (like a panicking CPU handler): it stops after this message and the host
/// applies the restart policy.
fn rk_fail(code: u32) {
    if (rk_failed) { return; }
    rk_failed = true;
    rk_mem[rk_c + RK_C_STATUS] = 1u;
    rk_mem[rk_c + RK_C_FAIL_CODE] = code;
    rk_mem[rk_c + RK_C_FAIL_CORR_LO] = rk_cur_corr.x;
    rk_mem[rk_c + RK_C_FAIL_CORR_HI] = rk_cur_corr.y;
    rk_mem[rk_c + RK_C_FAIL_SOURCE] = rk_cur_source;
}

fn rk_begin_dispatch() {
    rk_hlc = vec2<u32>(rk_mem[rk_c + RK_C_HLC_LO], rk_mem[rk_c + RK_C_HLC_HI]);
    rk_seq = rk_mem[rk_c + RK_C_MSG_SEQ];
    rk_failed = false;
    rk_mem[rk_c + RK_C_BLOCKED] = 0u;
}

fn rk_end_dispatch() {
    rk_mem[rk_c + RK_C_HLC_LO] = rk_hlc.x;
    rk_mem[rk_c + RK_C_HLC_HI] = rk_hlc.y;
    rk_mem[rk_c + RK_C_MSG_SEQ] = rk_seq;
}

fn rk_run_queue() {
    var head = rk_mem[rk_c + RK_C_IN_HEAD];
    // Only what was queued at entry: a kernel that sends to itself does not loop forever.
    let tail = rk_mem[rk_c + RK_C_IN_TAIL];
    let cap = rk_mem[rk_c + RK_C_IN_CAP];
    let slot_words = rk_mem[rk_c + RK_C_IN_SLOT];
    var processed = 0u;
    loop {
        if (head == tail) { break; }
        if (!rk_room()) { rk_mem[rk_c + RK_C_BLOCKED] = 1u; break; }
        let s = rk_mem[rk_c + RK_C_IN_DATA] + (head & (cap - 1u)) * slot_words;
        rk_cur_type = vec2<u32>(rk_mem[s + RK_ENV_TYPE_ID], rk_mem[s + RK_ENV_TYPE_ID + 1u]);
        rk_cur_corr = vec2<u32>(rk_mem[s + RK_ENV_CORRELATION_ID], rk_mem[s + RK_ENV_CORRELATION_ID + 1u]);
        rk_cur_hlc = vec2<u32>(rk_mem[s + RK_ENV_HLC], rk_mem[s + RK_ENV_HLC + 1u]);
        rk_cur_source = rk_mem[s + RK_ENV_SOURCE];
        rk_replied = false;
        rk_observe(rk_cur_hlc);
        let len = rk_mem[s + RK_ENV_PAYLOAD_LEN];
        let n = min(len / 4u, slot_words - RK_ENVELOPE_WORDS);
        // A payload of whole words that fits the slot, or the handler never sees it (rk_dispatch
        // also checks the message type's fixed part is there).
        rk_bad = (len & 3u) != 0u || len / 4u > slot_words - RK_ENVELOPE_WORDS;
        rk_dispatch(s + RK_ENVELOPE_WORDS, n);
        if (!rk_failed && !rk_replied && any(rk_cur_corr != vec2<u32>(0u, 0u))) {
            rk_error(RK_ERR_NO_REPLY);
        }
        head += 1u;
        processed += 1u;
        if (rk_failed) { break; }
    }
    rk_mem[rk_c + RK_C_IN_HEAD] = head;
    rk_mem[rk_c + RK_C_PROCESSED] += processed;
}
