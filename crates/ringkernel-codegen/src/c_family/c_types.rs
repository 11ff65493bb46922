//! C declarations of GPU-layout message types for every C-family target: the counterpart of the
//! WGSL structs in [`crate::wgsl`], generated from the same neutral description
//! ([`crate::types::GpuTypeDesc`], from [`GpuType::GPU_FIELDS`]), so a C handler reads and writes
//! payloads exactly as the Rust codec (`ringkernel_core::gpu`) does.
//!
//! For a type `T` this emits `typedef struct { .. } T;` (scalars as `uint32_t`, `int32_t`,
//! `float`, `uint64_t`, `int64_t`; fixed arrays; `Vec` fields as `rk_slice`), `RK_TYPE_T` (its
//! type id), `RK_FIXED_T` (fixed-part words), `rk_read_T(payload, words, &t)` (0, or -1 when a
//! slice lies outside the payload), `rk_size_T(&t)` and `rk_write_T(out, capacity_words, &t)`
//! (words written, or -1 when it does not fit).
//!
//! [`GpuType::GPU_FIELDS`]: ringkernel_core::gpu::GpuType::GPU_FIELDS

use crate::types::GpuTypeDesc;
use ringkernel_core::gpu::{GpuFieldKind, GpuScalar};
use std::fmt::Write;

fn c_scalar(s: GpuScalar) -> &'static str {
    match s {
        GpuScalar::U32 => "uint32_t",
        GpuScalar::I32 => "int32_t",
        GpuScalar::F32 => "float",
        GpuScalar::U64 => "uint64_t",
        GpuScalar::I64 => "int64_t",
    }
}

fn read(s: GpuScalar, at: &str) -> String {
    match s {
        GpuScalar::U32 => format!("p[{at}]"),
        GpuScalar::I32 => format!("(int32_t)p[{at}]"),
        GpuScalar::F32 => format!("rk_bits_f32(p[{at}])"),
        GpuScalar::U64 => format!("rk_words_u64(p + ({at}))"),
        GpuScalar::I64 => format!("(int64_t)rk_words_u64(p + ({at}))"),
    }
}

fn write(s: GpuScalar, at: &str, v: &str) -> String {
    match s {
        GpuScalar::U32 | GpuScalar::I32 => format!("p[{at}] = (uint32_t)({v});"),
        GpuScalar::F32 => format!("p[{at}] = rk_f32_bits({v});"),
        GpuScalar::U64 | GpuScalar::I64 => format!("rk_u64_words(p + ({at}), (uint64_t)({v}));"),
    }
}

const PRELUDE: &str = r#"
// ---- GPU word layout helpers (ringkernel_core::gpu) ----
/// A variable-length array inside a payload: `len` elements starting at `ptr` (32-bit words).
typedef struct { const uint32_t* ptr; uint32_t len; } rk_slice;
RK_DEVICE uint64_t rk_words_u64(const uint32_t* p) { return (uint64_t)p[0] | ((uint64_t)p[1] << 32); }
RK_DEVICE void rk_u64_words(uint32_t* p, uint64_t v) { p[0] = (uint32_t)v; p[1] = (uint32_t)(v >> 32); }
RK_DEVICE float rk_bits_f32(uint32_t w) { union { uint32_t u; float f; } x; x.u = w; return x.f; }
RK_DEVICE uint32_t rk_f32_bits(float f) { union { uint32_t u; float f; } x; x.f = f; return x.u; }
RK_DEVICE uint32_t rk_slice_u32(rk_slice s, uint32_t i) { return s.ptr[i]; }
RK_DEVICE int32_t rk_slice_i32(rk_slice s, uint32_t i) { return (int32_t)s.ptr[i]; }
RK_DEVICE float rk_slice_f32(rk_slice s, uint32_t i) { return rk_bits_f32(s.ptr[i]); }
RK_DEVICE uint64_t rk_slice_u64(rk_slice s, uint32_t i) { return rk_words_u64(s.ptr + 2u * i); }
RK_DEVICE int64_t rk_slice_i64(rk_slice s, uint32_t i) { return (int64_t)rk_words_u64(s.ptr + 2u * i); }
/// Checks a slice header against the payload bounds (see ringkernel_core::gpu::decode).
RK_DEVICE int rk_check_slice(const uint32_t* p, uint32_t n, uint32_t fixed, uint32_t rel, uint32_t len,
                             uint32_t words, rk_slice* out) {
    if (rel < fixed || rel > n || len > (n - rel) / words) return -1;
    out->ptr = p + rel;
    out->len = len;
    return 0;
}
"#;

/// `typedef struct <attrs>{ fields } T;` and `RK_FIXED_T`.
fn emit_struct(out: &mut String, t: &GpuTypeDesc, attrs: &str) {
    let n = t.name;
    let _ = writeln!(out, "\ntypedef struct {attrs}{{");
    if t.fields.is_empty() {
        out.push_str("    uint32_t _empty;\n");
    }
    for f in t.fields {
        let _ = match f.kind {
            GpuFieldKind::Scalar(s) => writeln!(out, "    {} {};", c_scalar(s), f.name),
            GpuFieldKind::Array(s, len) => writeln!(out, "    {} {}[{len}];", c_scalar(s), f.name),
            GpuFieldKind::Slice(_) => writeln!(out, "    rk_slice {};", f.name),
        };
    }
    let _ = writeln!(out, "}} {n};\n#define RK_FIXED_{n} {}u", t.fixed_words());
}

/// Emits a kernel's state type as a C struct with natural alignment: a `u64` field is 8-byte
/// aligned (a pointer to it is a valid 64-bit access on a GPU; in the GPU word layout it may sit
/// at a 4-byte offset, which as a packed C struct compiled to a misaligned access, a sticky
/// error that ends a CUDA context). The host converts between this layout and the word layout
/// ([`GpuTypeDesc::words_to_natural`], [`GpuTypeDesc::natural_to_words`]) when it writes the
/// initial state and reads snapshots; the size and every offset are asserted here against the
/// host's computation. State types have no `Vec` fields (checked by the kernel generator).
#[must_use]
pub fn emit_c_state_type(t: &GpuTypeDesc) -> String {
    let n = t.name;
    let mut out = String::new();
    emit_struct(&mut out, t, "");
    if !t.fields.is_empty() {
        let (fields, size) = t.natural_layout();
        let _ = writeln!(
            out,
            "RK_STATIC_ASSERT(sizeof({n}) == {size}u, \"state {n} must have the host's natural layout\");"
        );
        for (f, (_, byte, _)) in t.fields.iter().zip(fields) {
            let _ = writeln!(out, "RK_ASSERT_OFFSET({n}, {}, {byte});", f.name);
        }
    }
    out
}

/// Emits the helpers and the declarations of `types` (see the module docs).
#[must_use]
pub fn emit_c_types(types: &[GpuTypeDesc]) -> String {
    let mut out = String::from(PRELUDE);
    for t in types {
        let n = t.name;
        emit_struct(&mut out, t, "");
        if let Some(id) = t.type_id {
            let _ = writeln!(out, "#define RK_TYPE_{n} {id:#x}ull");
        }
        // Reader.
        let _ = writeln!(out, "RK_DEVICE int rk_read_{n}(const uint32_t* p, uint32_t n, {n}* m) {{");
        let _ = writeln!(out, "    if (n < RK_FIXED_{n}) return -1;");
        let mut w = 0u32;
        for f in t.fields {
            match f.kind {
                GpuFieldKind::Scalar(s) => {
                    let _ = writeln!(out, "    m->{} = {};", f.name, read(s, &format!("{w}u")));
                }
                GpuFieldKind::Array(s, len) => {
                    let _ = writeln!(
                        out,
                        "    for (uint32_t i = 0; i < {len}u; i++) m->{}[i] = {};",
                        f.name,
                        read(s, &format!("{w}u + i * {}u", s.words()))
                    );
                }
                GpuFieldKind::Slice(s) => {
                    let _ = writeln!(
                        out,
                        "    if (rk_check_slice(p, n, RK_FIXED_{n}, p[{w}u], p[{w}u + 1u], {}u, &m->{}) != 0) return -1;",
                        s.words(),
                        f.name
                    );
                }
            }
            w += f.kind.fixed_words();
        }
        out.push_str("    return 0;\n}\n");
        // Size.
        let _ =
            writeln!(out, "RK_DEVICE uint32_t rk_size_{n}(const {n}* m) {{\n    uint32_t w = RK_FIXED_{n};");
        for f in t.fields {
            if let GpuFieldKind::Slice(s) = f.kind {
                let _ = writeln!(out, "    w += m->{}.len * {}u;", f.name, s.words());
            }
        }
        out.push_str("    (void)m;\n    return w;\n}\n");
        // Writer.
        let _ = writeln!(out, "RK_DEVICE int32_t rk_write_{n}(uint32_t* p, uint32_t cap, const {n}* m) {{");
        let _ = writeln!(out, "    if (rk_size_{n}(m) > cap) return -1;\n    uint32_t v = RK_FIXED_{n};");
        let mut w = 0u32;
        for f in t.fields {
            match f.kind {
                GpuFieldKind::Scalar(s) => {
                    let _ = writeln!(out, "    {}", write(s, &format!("{w}u"), &format!("m->{}", f.name)));
                }
                GpuFieldKind::Array(s, len) => {
                    let _ = writeln!(
                        out,
                        "    for (uint32_t i = 0; i < {len}u; i++) {{ {} }}",
                        write(s, &format!("{w}u + i * {}u", s.words()), &format!("m->{}[i]", f.name))
                    );
                }
                GpuFieldKind::Slice(s) => {
                    let _ = writeln!(
                        out,
                        "    p[{w}u] = v; p[{w}u + 1u] = m->{f}.len;\n    \
                         for (uint32_t i = 0; i < m->{f}.len * {sw}u; i++) p[v + i] = m->{f}.ptr[i];\n    \
                         v += m->{f}.len * {sw}u;",
                        f = f.name,
                        sw = s.words()
                    );
                }
            }
            w += f.kind.fixed_words();
        }
        out.push_str("    return (int32_t)v;\n}\n");
    }
    out
}
