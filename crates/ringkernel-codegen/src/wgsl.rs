//! The WGSL target, for the wgpu backend: the declarations a WGSL handler is written against and
//! the dispatch wrapper around it, produced from the neutral type description
//! ([`crate::types`]) and the envelope layout table, so that nothing is written twice by hand;
//! and [`WgslTarget`], what a `WgslProgram` (`Program<WgslTarget>`) adds to the shared program.
//!
//! # Memory model (the 32-bit variant of the core layout)
//!
//! WGSL has no 64-bit integers and no byte addressing, so the wgpu backend keeps every kernel's
//! queues, state and control words in one storage buffer of 32-bit words, `rk_mem`:
//!
//! * Words `0..GLOBAL_WORDS`: globals written by the host before each submission (the host's
//!   clock in µs, low and high word).
//! * One control block of [`CTRL_WORDS`] words per kernel ([`ctrl`] names each word).
//! * Each kernel's input and output queue: `capacity` (a power of two) slots of `slot_words`
//!   words. A slot holds the 64-byte envelope of the core crate, word for word (its `u64` fields
//!   as low/high word pairs), then the payload in the [`ringkernel_core::gpu`] word layout.
//!   Head and tail are free-running `u32` counters in the control block; slot = counter &
//!   (capacity − 1).
//! * The kernel's state (its [`GpuType`](ringkernel_core::gpu::GpuType) words) and a scratch area for building outputs.
//!
//! A kernel runs as one dispatch of one invocation that handles, in order, every message queued
//! when it starts (`[head, tail)` at entry), so messages of one kernel are handled sequentially,
//! as on the CPU. Within a submission the dispatches run one after another, and WebGPU makes each
//! dispatch's storage writes visible to the next one (each dispatch is its own usage scope), so a
//! K2K send is a plain store into the target's input slot followed by a store of its tail: no
//! atomics are needed because no two dispatches of one queue ever overlap. The host only writes
//! `rk_mem` between submissions (it waits for each one to finish), which is what makes its
//! `in_tail` / `out_head` updates race-free.

use crate::err;
use crate::program::{Program, ProgramTarget};
use crate::types::{CodegenError, GpuTypeDesc, KernelTypes};
use ringkernel_core::gpu::{GpuFieldKind, GpuScalar};
use ringkernel_core::message::{RingMessage, ENVELOPE_FIELDS, ENVELOPE_MAGIC, ENVELOPE_VERSION};
use std::fmt::Write;
use std::sync::OnceLock;

/// Words at the start of `rk_mem` reserved for globals.
pub const GLOBAL_WORDS: u32 = 32;
/// Global word: host clock, µs since the Unix epoch, low word.
pub const G_NOW_LO: u32 = 0;
/// Global word: host clock, high word.
pub const G_NOW_HI: u32 = 1;
/// Words per control block.
pub const CTRL_WORDS: u32 = 32;
/// Words of an envelope header.
pub const ENVELOPE_WORDS: u32 = 16;
/// Routes (K2K targets) one kernel may declare.
pub const MAX_ROUTES: u32 = 16;
/// Bytes of one kernel descriptor in the uniform buffer (dynamic-offset aligned).
pub const DESC_STRIDE: u64 = 256;
/// Bytes of a descriptor the shader reads.
pub const DESC_SIZE: u64 = 16 + 2 * 16 * (MAX_ROUTES as u64 / 4);
/// Route value meaning "not a kernel on this device": the message goes through the host.
pub const ROUTE_VIA_HOST: u32 = 0;

/// Control-block words (offsets from the block's first word). `H` = written by the host between
/// submissions, `D` = written by the device, `K` = written by other kernels' dispatches (K2K).
pub mod ctrl {
    /// D: input queue head (next message to handle).
    pub const IN_HEAD: u32 = 0;
    /// H, K: input queue tail (next free slot).
    pub const IN_TAIL: u32 = 1;
    /// H: input capacity (power of two).
    pub const IN_CAP: u32 = 2;
    /// H: words per input slot.
    pub const IN_SLOT: u32 = 3;
    /// H: first word of the input slots.
    pub const IN_DATA: u32 = 4;
    /// H: output queue head (the host has read up to here).
    pub const OUT_HEAD: u32 = 5;
    /// D: output queue tail.
    pub const OUT_TAIL: u32 = 6;
    /// H: output capacity (power of two).
    pub const OUT_CAP: u32 = 7;
    /// H: words per output slot.
    pub const OUT_SLOT: u32 = 8;
    /// H: first word of the output slots.
    pub const OUT_DATA: u32 = 9;
    /// H: first word of the state.
    pub const STATE: u32 = 10;
    /// H: first word of the scratch area.
    pub const SCRATCH: u32 = 11;
    /// H: words of scratch.
    pub const SCRATCH_WORDS: u32 = 12;
    /// D: messages handled (free-running).
    pub const PROCESSED: u32 = 13;
    /// D (H clears): 0 = running, 1 = failed (`rk_fail`).
    pub const STATUS: u32 = 14;
    /// D: failure code passed to `rk_fail`.
    pub const FAIL_CODE: u32 = 15;
    /// D: correlation id (low word) of the message whose handler failed.
    pub const FAIL_CORR_LO: u32 = 16;
    /// D: correlation id (high word).
    pub const FAIL_CORR_HI: u32 = 17;
    /// D: source kernel id of that message.
    pub const FAIL_SOURCE: u32 = 18;
    /// D: the kernel's HLC, packed, low word.
    pub const HLC_LO: u32 = 19;
    /// D: HLC high word.
    pub const HLC_HI: u32 = 20;
    /// H: the kernel's id.
    pub const KERNEL_ID: u32 = 21;
    /// D: counter for the ids of messages the kernel creates.
    pub const MSG_SEQ: u32 = 22;
    /// D: 1 when the last dispatch stopped early for lack of room in an output or target queue.
    pub const BLOCKED: u32 = 23;
}

/// Everything needed to generate one kernel's WGSL module.
#[derive(Debug, Clone)]
pub struct WgslKernelSpec<'a> {
    /// The kernel's state and message types.
    pub types: KernelTypes<'a>,
    /// Most messages one handler call sends to any one destination (own output, or one route).
    pub max_sends: u32,
    /// The user's WGSL: handler functions and whatever helpers they need.
    pub user_source: &'a str,
}

fn field_wgsl(kind: GpuFieldKind) -> String {
    match kind {
        GpuFieldKind::Scalar(s) => s.wgsl().to_string(),
        GpuFieldKind::Array(s, n) => format!("array<{}, {n}>", s.wgsl()),
        GpuFieldKind::Slice(_) => "RkSlice".to_string(),
    }
}

fn read_scalar(s: GpuScalar, at: &str) -> String {
    match s {
        GpuScalar::U32 => format!("rk_mem[{at}]"),
        GpuScalar::I32 => format!("bitcast<i32>(rk_mem[{at}])"),
        GpuScalar::F32 => format!("bitcast<f32>(rk_mem[{at}])"),
        GpuScalar::U64 | GpuScalar::I64 => format!("vec2<u32>(rk_mem[{at}], rk_mem[({at}) + 1u])"),
    }
}

fn write_scalar(s: GpuScalar, at: &str, v: &str) -> String {
    match s {
        GpuScalar::U32 => format!("rk_mem[{at}] = {v};"),
        GpuScalar::I32 | GpuScalar::F32 => format!("rk_mem[{at}] = bitcast<u32>({v});"),
        GpuScalar::U64 | GpuScalar::I64 => {
            format!("rk_mem[{at}] = ({v}).x; rk_mem[({at}) + 1u] = ({v}).y;")
        }
    }
}

/// Emits the struct, reader, writer and size function of one type.
fn emit_type(out: &mut String, t: &GpuTypeDesc) {
    let n = t.name;
    let _ = writeln!(out, "struct {n} {{");
    if t.fields.is_empty() {
        let _ = writeln!(out, "    _empty: u32,");
    }
    for f in t.fields {
        let _ = writeln!(out, "    {}: {},", f.name, field_wgsl(f.kind));
    }
    let _ = writeln!(out, "}}\nconst RK_FIXED_{n}: u32 = {}u;", t.fixed_words());
    if let Some(id) = t.type_id {
        let _ = writeln!(
            out,
            "const RK_TYPE_{n}: vec2<u32> = vec2<u32>({:#x}u, {:#x}u);",
            id as u32,
            (id >> 32) as u32
        );
    }
    // Reader: `b` = first payload word, `n` = payload words (bounds for slices).
    let _ = writeln!(out, "fn rk_read_{n}(b: u32, n: u32) -> {n} {{\n    var m: {n};");
    let mut w = 0u32;
    for f in t.fields {
        match f.kind {
            GpuFieldKind::Scalar(s) => {
                let _ = writeln!(out, "    m.{} = {};", f.name, read_scalar(s, &format!("b + {w}u")));
            }
            GpuFieldKind::Array(s, len) => {
                let _ = writeln!(
                    out,
                    "    for (var i = 0u; i < {len}u; i++) {{ m.{}[i] = {}; }}",
                    f.name,
                    read_scalar(s, &format!("b + {w}u + i * {}u", s.words()))
                );
            }
            GpuFieldKind::Slice(s) => {
                let _ = writeln!(
                    out,
                    "    m.{f} = rk_checked_slice(b, n, RK_FIXED_{n}, rk_mem[b + {w}u], rk_mem[b + {w}u + 1u], {sw}u);",
                    f = f.name,
                    sw = s.words()
                );
            }
        }
        w += f.kind.fixed_words();
    }
    let _ = writeln!(out, "    return m;\n}}");
    // Size in payload words.
    let _ = writeln!(out, "fn rk_size_{n}(m: {n}) -> u32 {{\n    var w = RK_FIXED_{n};");
    for f in t.fields {
        if let GpuFieldKind::Slice(s) = f.kind {
            let _ = writeln!(out, "    w += m.{}.len * {}u;", f.name, s.words());
        }
    }
    let _ = writeln!(out, "    return w;\n}}");
    // Writer: returns payload words written.
    let _ = writeln!(out, "fn rk_write_{n}(b: u32, m: {n}) -> u32 {{\n    var v = RK_FIXED_{n};");
    let mut w = 0u32;
    for f in t.fields {
        match f.kind {
            GpuFieldKind::Scalar(s) => {
                let _ =
                    writeln!(out, "    {}", write_scalar(s, &format!("b + {w}u"), &format!("m.{}", f.name)));
            }
            GpuFieldKind::Array(s, len) => {
                let _ = writeln!(
                    out,
                    "    for (var i = 0u; i < {len}u; i++) {{ {} }}",
                    write_scalar(s, &format!("b + {w}u + i * {}u", s.words()), &format!("m.{}[i]", f.name))
                );
            }
            GpuFieldKind::Slice(s) => {
                let _ = writeln!(
                    out,
                    "    rk_mem[b + {w}u] = v; rk_mem[b + {w}u + 1u] = m.{f}.len;\n    \
                     for (var i = 0u; i < m.{f}.len * {sw}u; i++) {{ rk_mem[b + v + i] = rk_mem[m.{f}.off + i]; }}\n    \
                     v += m.{f}.len * {sw}u;",
                    f = f.name,
                    sw = s.words()
                );
            }
        }
        w += f.kind.fixed_words();
    }
    let _ = writeln!(out, "    return v;\n}}");
}

/// Emits the send/reply/emit helpers of one message type.
fn emit_send_helpers(out: &mut String, t: &GpuTypeDesc) {
    let n = t.name;
    let _ = writeln!(
        out,
        "fn rk_reply_{n}(m: {n}) {{\n    rk_replied = true;\n    \
         let p = rk_push_own(rk_cur_source, RK_TYPE_{n}, rk_reply_flags(), rk_cur_corr, rk_size_{n}(m));\n    \
         if (p != RK_NONE) {{ rk_finish(p, rk_write_{n}(p, m)); }}\n}}"
    );
    let _ = writeln!(
        out,
        "fn rk_emit_{n}(m: {n}) {{\n    \
         let p = rk_push_own(0u, RK_TYPE_{n}, 0u, vec2<u32>(0u, 0u), rk_size_{n}(m));\n    \
         if (p != RK_NONE) {{ rk_finish(p, rk_write_{n}(p, m)); }}\n}}"
    );
    let _ = writeln!(
        out,
        "fn rk_send_{n}(route: u32, m: {n}) {{\n    \
         let p = rk_push_route(route, RK_TYPE_{n}, rk_size_{n}(m));\n    \
         if (p != RK_NONE) {{ rk_finish(p, rk_write_{n}(p, m)); }}\n}}"
    );
}

/// Emits the declarations a handler is written against: constants from the envelope table, the
/// bindings, the runtime helpers, and every message and state type.
pub fn emit_wgsl_declarations(spec: &WgslKernelSpec<'_>) -> Result<String, CodegenError> {
    spec.types.check()?;
    let mut out = String::new();
    out.push_str(
        "// Generated by ringkernel-codegen from the Rust layout tables and types. Do not edit.\n\n",
    );
    out.push_str("// Envelope header: word index and bit shift of each field (from ENVELOPE_FIELDS).\n");
    for (name, off, _) in ENVELOPE_FIELDS {
        let up = name.to_uppercase();
        let _ = writeln!(out, "const RK_ENV_{up}: u32 = {}u;", off / 4);
        let _ = writeln!(out, "const RK_ENV_{up}_SHIFT: u32 = {}u;", (off % 4) * 8);
    }
    let _ = writeln!(out, "const RK_ENVELOPE_MAGIC: u32 = {ENVELOPE_MAGIC:#x}u;");
    let _ = writeln!(out, "const RK_ENVELOPE_VERSION: u32 = {ENVELOPE_VERSION}u;");
    let _ = writeln!(out, "const RK_ENVELOPE_WORDS: u32 = {ENVELOPE_WORDS}u;");
    let _ = writeln!(out, "const RK_FLAG_REPLY: u32 = {}u;", ringkernel_core::message::FLAG_REPLY);
    let _ =
        writeln!(out, "const RK_FLAG_ERROR_REPLY: u32 = {}u;", ringkernel_core::message::FLAG_ERROR_REPLY);
    let error_type = <ringkernel_core::runtime::ErrorReply as RingMessage>::message_type();
    let _ = writeln!(
        out,
        "const RK_TYPE_ERROR: vec2<u32> = vec2<u32>({:#x}u, {:#x}u);",
        error_type as u32,
        (error_type >> 32) as u32
    );
    out.push_str("\n// Control block words.\n");
    for (name, v) in [
        ("IN_HEAD", ctrl::IN_HEAD),
        ("IN_TAIL", ctrl::IN_TAIL),
        ("IN_CAP", ctrl::IN_CAP),
        ("IN_SLOT", ctrl::IN_SLOT),
        ("IN_DATA", ctrl::IN_DATA),
        ("OUT_HEAD", ctrl::OUT_HEAD),
        ("OUT_TAIL", ctrl::OUT_TAIL),
        ("OUT_CAP", ctrl::OUT_CAP),
        ("OUT_SLOT", ctrl::OUT_SLOT),
        ("OUT_DATA", ctrl::OUT_DATA),
        ("STATE", ctrl::STATE),
        ("SCRATCH", ctrl::SCRATCH),
        ("SCRATCH_WORDS", ctrl::SCRATCH_WORDS),
        ("PROCESSED", ctrl::PROCESSED),
        ("STATUS", ctrl::STATUS),
        ("FAIL_CODE", ctrl::FAIL_CODE),
        ("FAIL_CORR_LO", ctrl::FAIL_CORR_LO),
        ("FAIL_CORR_HI", ctrl::FAIL_CORR_HI),
        ("FAIL_SOURCE", ctrl::FAIL_SOURCE),
        ("HLC_LO", ctrl::HLC_LO),
        ("HLC_HI", ctrl::HLC_HI),
        ("KERNEL_ID", ctrl::KERNEL_ID),
        ("MSG_SEQ", ctrl::MSG_SEQ),
        ("BLOCKED", ctrl::BLOCKED),
    ] {
        let _ = writeln!(out, "const RK_C_{name}: u32 = {v}u;");
    }
    let _ = writeln!(out, "const RK_G_NOW_LO: u32 = {G_NOW_LO}u;\nconst RK_G_NOW_HI: u32 = {G_NOW_HI}u;");
    let _ = writeln!(out, "const RK_MAX_SENDS: u32 = {}u;", spec.max_sends.max(1));
    for (name, v) in [
        ("NO_REPLY", err::NO_REPLY),
        ("UNKNOWN_TYPE", err::UNKNOWN_TYPE),
        ("MALFORMED", err::MALFORMED),
        ("TOO_LARGE", err::TOO_LARGE),
        ("TOO_MANY_SENDS", err::TOO_MANY_SENDS),
    ] {
        let _ = writeln!(out, "const RK_ERR_{name}: u32 = {v:#x}u;");
    }
    out.push_str(include_str!("wgsl/runtime.wgsl"));
    out.push_str("\n// ---- State ----\n");
    emit_type(&mut out, &spec.types.state);
    let sname = spec.types.state.name;
    let _ = writeln!(out, "var<private> rk_state: {sname};");
    out.push_str("\n// ---- Messages ----\n");
    for m in spec.types.messages {
        emit_type(&mut out, m);
        emit_send_helpers(&mut out, m);
    }
    Ok(out)
}

/// Emits the complete WGSL module of one kernel: declarations, the user's handlers and the
/// dispatch wrapper (entry point `rk_main`).
pub fn emit_wgsl_kernel(spec: &WgslKernelSpec<'_>) -> Result<String, CodegenError> {
    let mut out = emit_wgsl_declarations(spec)?;
    out.push_str("\n// ---- User handlers ----\n");
    out.push_str(spec.user_source);
    out.push_str("\n\n// ---- Dispatch wrapper ----\nfn rk_dispatch(p: u32, n: u32) {\n");
    for m in spec.types.handled_messages() {
        let name = m.name;
        let _ = writeln!(
            out,
            "    if (all(rk_cur_type == RK_TYPE_{name})) {{\n        \
             if (rk_bad || n < RK_FIXED_{name}) {{ rk_error(RK_ERR_MALFORMED); return; }}\n        \
             let m = rk_read_{name}(p, n);\n        \
             if (rk_bad) {{ rk_error(RK_ERR_MALFORMED); }} else {{ on_{name}(m); }}\n        \
             return;\n    }}"
        );
    }
    out.push_str("    rk_error(RK_ERR_UNKNOWN_TYPE);\n}\n\n");
    let sname = spec.types.state.name;
    let _ = writeln!(
        out,
        "@compute @workgroup_size(1)\nfn rk_main() {{\n    \
         rk_c = rk_desc.ctrl;\n    \
         if (rk_mem[rk_c + RK_C_STATUS] != 0u) {{ return; }}\n    \
         if (rk_mem[rk_c + RK_C_IN_HEAD] == rk_mem[rk_c + RK_C_IN_TAIL]) {{ return; }}\n    \
         rk_begin_dispatch();\n    \
         rk_state = rk_read_{sname}(rk_mem[rk_c + RK_C_STATE], RK_FIXED_{sname});\n    \
         rk_run_queue();\n    \
         rk_write_{sname}(rk_mem[rk_c + RK_C_STATE], rk_state);\n    \
         rk_end_dispatch();\n}}"
    );
    Ok(out)
}

/// The WGSL target of a program (`WgslProgram` = `Program<WgslTarget>`): its `max_sends` and
/// its generated module.
#[derive(Debug)]
pub struct WgslTarget {
    max_sends: u32,
    module: OnceLock<Result<String, String>>,
}

impl Default for WgslTarget {
    fn default() -> Self {
        Self { max_sends: 1, module: OnceLock::new() }
    }
}

impl ProgramTarget for WgslTarget {
    const BACKEND: ringkernel_core::runtime::Backend = ringkernel_core::runtime::Backend::Wgpu;
    const PROGRAM: &'static str = "WgslProgram";
    const LANGUAGE: &'static str = "WGSL";

    fn describe_error(&self, code: u32) -> String {
        match code {
            err::MALFORMED => {
                "malformed message (the payload is not whole words, misses fixed fields, or a slice lies outside it)"
                    .into()
            }
            err::TOO_MANY_SENDS => format!(
                "the handler sent more messages to one destination than max_sends ({}) allows",
                self.max_sends
            ),
            c => format!("WGSL handler error code {c}"),
        }
    }
}

impl Program<WgslTarget> {
    /// Most messages one handler call sends to one destination (default 1). The kernel handles a
    /// message only when every destination has this much room, so sends never fail for lack of
    /// space; a handler that sends more than declared fails its kernel.
    #[must_use]
    pub fn max_sends(mut self, n: u32) -> Self {
        self.target.max_sends = n.max(1);
        self
    }

    /// The declared `max_sends`.
    #[must_use]
    pub fn max_sends_value(&self) -> u32 {
        self.target.max_sends
    }

    /// The complete generated WGSL module (cached).
    pub fn wgsl(&self) -> Result<&str, String> {
        self.target
            .module
            .get_or_init(|| {
                let spec = WgslKernelSpec {
                    types: self.spec.types(),
                    max_sends: self.target.max_sends,
                    user_source: &self.source,
                };
                emit_wgsl_kernel(&spec).map_err(|e| e.to_string())
            })
            .as_deref()
            .map_err(Clone::clone)
    }
}
