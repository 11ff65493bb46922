//! The target-neutral description of a GPU program and the one program type every backend uses.
//!
//! * [`ProgramSpec`]: what a program is, whatever language its handlers are in: the Rust types
//!   its device code uses (its state, the messages it handles and sends), its K2K routes by
//!   name, and the texts of its error codes.
//! * [`Program<T>`]: a [`ProgramSpec`] plus the user's handler source for target `T`, with the
//!   builder users write (`new::<S>(src).handles::<M>().sends::<M>().route(..).error_text(..)`)
//!   and the [`GpuProgram`] implementation the runtime reads. A target ([`ProgramTarget`]) adds
//!   only what differs: its backend's name, its error texts, its options and its generated
//!   source (`WgslProgram` = `Program<`[`WgslTarget`]`>` in `ringkernel-wgpu`, `CudaProgram` =
//!   `Program<`[`CudaTarget`]`>` in `ringkernel-cuda`).
//!
//! [`WgslTarget`]: crate::wgsl::WgslTarget
//! [`CudaTarget`]: crate::cuda::CudaTarget

use crate::err;
use crate::types::{GpuTypeDesc, KernelTypes};
use ringkernel_core::gpu::GpuType;
use ringkernel_core::message::RingMessage;
use ringkernel_core::runtime::{payload_check, GpuProgram, PayloadCheck};
use std::any::{Any, TypeId};
use std::collections::HashMap;

/// Types, routes and error texts of a GPU program (see the module docs).
#[derive(Debug, Clone)]
pub struct ProgramSpec {
    state: GpuTypeDesc,
    init_state: Vec<u32>,
    messages: Vec<GpuTypeDesc>,
    /// The Rust type and its name, per entry of `messages`.
    rust_types: Vec<(TypeId, &'static str)>,
    handled: Vec<u64>,
    /// The payload check of each handled type.
    checks: Vec<(u64, PayloadCheck)>,
    routes: Vec<String>,
    error_texts: HashMap<u32, String>,
}

impl ProgramSpec {
    /// A program whose state is `S`, starting as `initial` (and reset to it on restart).
    pub fn new<S: GpuType>(initial: S) -> Self {
        let words = S::fixed_words() as usize;
        let mut bytes = vec![0u8; words * 4];
        let init_state = match ringkernel_core::gpu::encode(&initial, S::GPU_NAME, &mut bytes) {
            Ok(_) => bytes.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4"))).collect(),
            // A state with Vec fields: reported by the generators (StateHasSlice).
            Err(_) => vec![0; words],
        };
        Self {
            state: GpuTypeDesc::of::<S>(),
            init_state,
            messages: Vec::new(),
            rust_types: Vec::new(),
            handled: Vec::new(),
            checks: Vec::new(),
            routes: Vec::new(),
            error_texts: HashMap::new(),
        }
    }

    /// Declares a message type the program reads or writes.
    pub fn add_message<M: GpuType + RingMessage>(&mut self) {
        if !self.messages.iter().any(|m| m.type_id == Some(M::message_type())) {
            self.messages.push(GpuTypeDesc::message::<M>());
            self.rust_types.push((TypeId::of::<M>(), M::type_name()));
        }
    }

    /// Declares a handler for `M`.
    pub fn add_handler<M: GpuType + RingMessage>(&mut self) {
        self.add_message::<M>();
        if !self.handled.contains(&M::message_type()) {
            self.handled.push(M::message_type());
            self.checks.push((M::message_type(), payload_check::<M>));
        }
    }

    /// The payload check of a handled type (see `GpuProgram::payload_check`).
    #[must_use]
    pub fn payload_check(&self, type_id: u64) -> Option<PayloadCheck> {
        self.checks.iter().find(|c| c.0 == type_id).map(|c| c.1)
    }

    /// Adds a K2K route to the kernel named `target` (its index is the number of routes before).
    pub fn add_route(&mut self, target: String) {
        self.routes.push(target);
    }

    /// Sets the text of error code `code`.
    pub fn set_error_text(&mut self, code: u32, text: String) {
        self.error_texts.insert(code, text);
    }

    /// The kernel's types, as the generators take them.
    #[must_use]
    pub fn types(&self) -> KernelTypes<'_> {
        KernelTypes { state: self.state, messages: &self.messages, handled: &self.handled }
    }

    /// Words of the state, as initialised.
    #[must_use]
    pub fn init_state(&self) -> &[u32] {
        &self.init_state
    }

    /// Whether the program has a handler for `type_id`.
    #[must_use]
    pub fn handles_type(&self, type_id: u64) -> bool {
        self.handled.contains(&type_id)
    }

    /// `(type id, Rust type, name)` of every handled type (for `GpuProgram::handled_types`).
    #[must_use]
    pub fn handled_types(&self) -> Vec<(u64, TypeId, &'static str)> {
        self.messages
            .iter()
            .zip(&self.rust_types)
            .filter_map(|(m, r)| m.type_id.filter(|id| self.handled.contains(id)).map(|id| (id, r.0, r.1)))
            .collect()
    }

    /// The route names, by index.
    #[must_use]
    pub fn routes(&self) -> &[String] {
        &self.routes
    }

    /// The text of an error code: the user's, else the runtime's own for the codes every backend
    /// shares (`language` names the handlers, e.g. "WGSL"); `None` for a backend-specific code
    /// without a user text.
    #[must_use]
    pub fn describe_error(&self, code: u32, language: &str) -> Option<String> {
        if let Some(t) = self.error_texts.get(&code) {
            return Some(t.clone());
        }
        match code {
            err::NO_REPLY => Some("the handler returned no reply to this request".into()),
            err::UNKNOWN_TYPE => Some(format!("no {language} handler for this message type")),
            err::TOO_LARGE => {
                Some("an output message does not fit its queue slot (raise max_message_bytes)".into())
            }
            c if c < err::ERR_RESERVED => Some(format!("{language} handler error code {c}")),
            _ => None,
        }
    }
}

/// What a program's target adds to the shared [`Program`]: its backend, its handlers' language,
/// the texts of its own error codes, and (in the target value) its options and generated source.
pub trait ProgramTarget: Default + Send + Sync + 'static {
    /// The backend programs for this target are written for (`GpuProgram::backend`).
    const BACKEND: ringkernel_core::runtime::Backend;
    /// The program type's name users know it by (in `Debug` output).
    const PROGRAM: &'static str;
    /// The language handlers are written in, for error texts ("WGSL", "CUDA").
    const LANGUAGE: &'static str;

    /// The text of an error code that neither the user nor [`ProgramSpec::describe_error`]
    /// describes (the target's own codes).
    fn describe_error(&self, code: u32) -> String;
}

/// A kernel's GPU program for target `T`: the shared description and the handlers' source (see
/// the module docs; the target's module documents what a handler can call).
pub struct Program<T: ProgramTarget> {
    pub(crate) source: String,
    pub(crate) spec: ProgramSpec,
    pub(crate) target: T,
}

impl<T: ProgramTarget> Program<T> {
    /// A program whose state is `S` (starting as `S::default()`, and reset to it on restart) and
    /// whose handlers are in `source`.
    #[must_use]
    pub fn new<S: GpuType + Default>(source: impl Into<String>) -> Self {
        Self::with_state(source, S::default())
    }

    /// Like [`Program::new`], with an explicit initial state.
    pub fn with_state<S: GpuType>(source: impl Into<String>, initial: S) -> Self {
        Self { source: source.into(), spec: ProgramSpec::new(initial), target: T::default() }
    }

    /// Declares a handler `on_<M>` in the source. `M` must use the GPU word layout
    /// (`#[message(gpu)]`).
    #[must_use]
    pub fn handles<M: GpuType + RingMessage>(mut self) -> Self {
        self.spec.add_handler::<M>();
        self
    }

    /// Declares a message type the handlers send (`rk_reply_M`, `rk_emit_M`, `rk_send_M`).
    #[must_use]
    pub fn sends<M: GpuType + RingMessage>(mut self) -> Self {
        self.spec.add_message::<M>();
        self
    }

    /// Adds a K2K route: `rk_send_M` with route index `i` sends to the kernel named `target`,
    /// where `i` is the route's index (0 for the first route added). A target running on the
    /// same device is written into on the device; any other target is reached through the host.
    #[must_use]
    pub fn route(mut self, target: impl Into<String>) -> Self {
        self.spec.add_route(target.into());
        self
    }

    /// The text of error code `code` (from `rk_error` / `rk_fail`, or a CUDA handler's return
    /// value) in error replies and kernel status.
    #[must_use]
    pub fn error_text(mut self, code: u32, text: impl Into<String>) -> Self {
        self.spec.set_error_text(code, text.into());
        self
    }

    /// The route names, by index.
    #[must_use]
    pub fn routes(&self) -> &[String] {
        self.spec.routes()
    }

    /// Words of the kernel state, as initialised.
    #[must_use]
    pub fn init_state(&self) -> &[u32] {
        self.spec.init_state()
    }

    /// The kernel state's type.
    #[must_use]
    pub fn state_type(&self) -> GpuTypeDesc {
        self.spec.types().state
    }

    /// Whether the program has a handler for `type_id`.
    #[must_use]
    pub fn handles_type(&self, type_id: u64) -> bool {
        self.spec.handles_type(type_id)
    }

    /// The text for an error code (user-declared, or one of the runtime's).
    #[must_use]
    pub fn describe_error(&self, code: u32) -> String {
        self.spec.describe_error(code, T::LANGUAGE).unwrap_or_else(|| self.target.describe_error(code))
    }
}

impl<T: ProgramTarget> GpuProgram for Program<T> {
    fn backend(&self) -> ringkernel_core::runtime::Backend {
        T::BACKEND
    }
    fn handled_types(&self) -> Vec<(u64, TypeId, &'static str)> {
        self.spec.handled_types()
    }
    fn payload_check(&self, type_id: u64) -> Option<PayloadCheck> {
        self.spec.payload_check(type_id)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl<T: ProgramTarget> core::fmt::Debug for Program<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let types = self.spec.types();
        f.debug_struct(T::PROGRAM)
            .field("state", &types.state.name)
            .field("messages", &types.messages.iter().map(|m| m.name).collect::<Vec<_>>())
            .field("routes", &self.spec.routes())
            .finish_non_exhaustive()
    }
}
