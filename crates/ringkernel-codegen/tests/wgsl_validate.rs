//! Every generated WGSL module must parse and validate with naga (the shader compiler wgpu uses),
//! and its constants must equal the Rust layout tables.

use ringkernel_codegen::types::{CodegenError, GpuTypeDesc, KernelTypes};
use ringkernel_codegen::wgsl::{emit_wgsl_kernel, WgslKernelSpec};
use ringkernel_core::gpu::GpuType;
use ringkernel_core::message::ENVELOPE_FIELDS;
use ringkernel_derive::{GpuType, RingMessage};

#[derive(RingMessage, GpuType, Debug, Clone, PartialEq, Default)]
#[message(gpu, type_id = 0x9001, crate = "ringkernel_core")]
struct Every {
    a: u32,
    b: i32,
    c: f32,
    d: u64,
    e: i64,
    f: [f32; 3],
    g: [u64; 2],
    h: Vec<f32>,
    i: Vec<u64>,
}

#[derive(RingMessage, GpuType, Debug, Clone, Default)]
#[message(gpu, type_id = 0x9002, crate = "ringkernel_core")]
struct Done {
    count: u64,
}

#[derive(GpuType, Default)]
#[message(crate = "ringkernel_core")]
struct State {
    seen: u64,
    last: [f32; 4],
}

#[derive(GpuType, Default)]
#[message(crate = "ringkernel_core")]
struct BadState {
    v: Vec<u32>,
}

const HANDLERS: &str = r#"
fn on_Every(m: Every) {
    rk_state.seen = rk_add64(rk_state.seen, rk_u64(1u));
    for (var i = 0u; i < 4u; i++) { rk_state.last[i] = rk_get_f32(m.h, i); }
    for (var i = 0u; i < m.h.len; i++) { rk_scratch_set_f32(i, rk_get_f32(m.h, i) * 2.0); }
    var out = m;
    out.h = rk_scratch_slice(0u, m.h.len, 1u);
    rk_reply_Every(out);
    rk_send_Done(0u, Done(rk_state.seen));
}
"#;

fn validate(src: &str) {
    let module = match naga::front::wgsl::parse_str(src) {
        Ok(m) => m,
        Err(e) => panic!("WGSL parse error:\n{}\n--- source ---\n{src}", e.emit_to_string(src)),
    };
    let mut v =
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::empty());
    if let Err(e) = v.validate(&module) {
        panic!("WGSL validation error:\n{}\n--- source ---\n{src}", e.emit_to_string(src));
    }
}

#[test]
fn generated_kernel_validates() {
    let messages = [GpuTypeDesc::message::<Every>(), GpuTypeDesc::message::<Done>()];
    let spec = WgslKernelSpec {
        types: KernelTypes { state: GpuTypeDesc::of::<State>(), messages: &messages, handled: &[0x9001] },
        max_sends: 1,
        user_source: HANDLERS,
    };
    validate(&emit_wgsl_kernel(&spec).unwrap());
    assert_eq!(Every::fixed_words(), 1 + 1 + 1 + 2 + 2 + 3 + 4 + 2 + 2);
}

#[test]
fn envelope_constants_match_the_rust_table() {
    let messages = [GpuTypeDesc::message::<Done>()];
    let spec = WgslKernelSpec {
        types: KernelTypes { state: GpuTypeDesc::of::<State>(), messages: &messages, handled: &[] },
        max_sends: 1,
        user_source: "",
    };
    let src = emit_wgsl_kernel(&spec).unwrap();
    let module = naga::front::wgsl::parse_str(&src).unwrap();
    for (name, off, size) in ENVELOPE_FIELDS {
        let word = find_const(&module, &format!("RK_ENV_{}", name.to_uppercase()));
        let shift = find_const(&module, &format!("RK_ENV_{}_SHIFT", name.to_uppercase()));
        assert_eq!(word as usize * 4 + shift as usize / 8, *off, "{name}");
        assert!(*size <= 4 || shift == 0, "{name}: 8-byte fields are word-aligned");
    }
}

fn find_const(module: &naga::Module, name: &str) -> u32 {
    let (_, c) = module
        .constants
        .iter()
        .find(|(_, c)| c.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{name}"));
    match module.global_expressions[c.init] {
        naga::Expression::Literal(naga::Literal::U32(v)) => v,
        ref e => panic!("{name}: {e:?}"),
    }
}

#[test]
fn bad_specs_are_errors() {
    let messages = [GpuTypeDesc::message::<Done>()];
    let spec = WgslKernelSpec {
        types: KernelTypes { state: GpuTypeDesc::of::<BadState>(), messages: &messages, handled: &[] },
        max_sends: 1,
        user_source: "",
    };
    assert_eq!(emit_wgsl_kernel(&spec).unwrap_err(), CodegenError::StateHasSlice("BadState"));
    let types = KernelTypes { state: GpuTypeDesc::of::<State>(), handled: &[0x1234], ..spec.types };
    let spec = WgslKernelSpec { types, ..spec };
    assert_eq!(emit_wgsl_kernel(&spec).unwrap_err(), CodegenError::UnknownHandled(0x1234));
}

#[test]
fn rust_codec_round_trips_every_field_kind() {
    let v = Every {
        a: 1,
        b: -2,
        c: 3.5,
        d: u64::MAX - 5,
        e: -7,
        f: [1.0, 2.0, 3.0],
        g: [9, 1 << 40],
        h: vec![0.25; 5],
        i: vec![u64::MAX, 3],
    };
    let mut buf = vec![0u8; 512];
    let n = ringkernel_core::gpu::encode(&v, "Every", &mut buf).unwrap();
    assert_eq!(ringkernel_core::gpu::decode::<Every>(&buf[..n], "Every").unwrap(), v);
}
