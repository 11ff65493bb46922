//! Kernel definitions: a name, a state factory and one handler per message type.
//!
//! Definitions come from two places that end up in one [`KernelCatalog`]:
//! `#[ring_kernel]` functions (collected at link time through `inventory`), and
//! [`KernelDef`] values built at run time and passed to the runtime builder.

use super::accepts::{payload_check, AcceptedTypes, PayloadCheck};
use super::context::Context;
use super::options::Backend;
use crate::message::{decode_header, DecodeError, EnvelopeHeader, MessageRegistry, RingMessage};
use crate::Error;
use core::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

/// A handler's failure, reported to the caller and recorded on the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError(pub String);

impl core::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a handler may return. The value (if any) is sent back to the message's sender: to the
/// waiting `call` when the message was a request, otherwise to the sender's queue (the host's
/// output queue, or the sending kernel's input queue).
pub trait HandlerOutput {
    /// Delivers the output through `ctx`.
    fn deliver(self, ctx: &mut Context<'_>) -> Result<(), HandlerError>;
}

impl HandlerOutput for () {
    fn deliver(self, _: &mut Context<'_>) -> Result<(), HandlerError> {
        Ok(())
    }
}

impl<T: RingMessage> HandlerOutput for T {
    fn deliver(self, ctx: &mut Context<'_>) -> Result<(), HandlerError> {
        ctx.reply(self).map_err(|e| HandlerError(e.to_string()))
    }
}

impl<T: HandlerOutput> HandlerOutput for Option<T> {
    fn deliver(self, ctx: &mut Context<'_>) -> Result<(), HandlerError> {
        match self {
            Some(v) => v.deliver(ctx),
            None => Ok(()),
        }
    }
}

impl<T: HandlerOutput, E: core::fmt::Display> HandlerOutput for Result<T, E> {
    fn deliver(self, ctx: &mut Context<'_>) -> Result<(), HandlerError> {
        match self {
            Ok(v) => v.deliver(ctx),
            Err(e) => Err(HandlerError(e.to_string())),
        }
    }
}

/// Kernel state as the runtime stores it.
pub type BoxedState = Box<dyn Any + Send>;

type ErasedHandler = dyn Fn(&mut BoxedState, &EnvelopeHeader, &[u8], &mut Context<'_>) -> Result<(), HandlerError>
    + Send
    + Sync;

/// One message type a kernel handles.
pub struct HandlerEntry {
    /// Message type name.
    pub type_name: &'static str,
    /// Rust type of the message.
    pub rust_type: TypeId,
    pub(crate) check: PayloadCheck,
    pub(crate) call: Box<ErasedHandler>,
}

/// A kernel definition: name, state type and factory, handlers by message type id.
pub struct KernelDef {
    name: String,
    state_type: TypeId,
    state_name: &'static str,
    make_state: Arc<dyn Fn() -> BoxedState + Send + Sync>,
    pub(crate) handlers: HashMap<u64, HandlerEntry>,
    gpu: Vec<Arc<dyn GpuProgram>>,
    /// Type ids (and names) the GPU programs handle, kept so `handles` allocates nothing per send.
    gpu_types: HashMap<u64, &'static str>,
}

/// A kernel's implementation for one GPU backend (for example `ringkernel_wgpu::WgslProgram`),
/// carried by the [`KernelDef`] next to its CPU handlers.
///
/// A definition may hold CPU handlers and one program per GPU backend side by side; the backend a
/// runtime runs on picks its own program and falls back to the CPU handlers when there is none.
/// A program is plain data (source text and declarations), so a later code generator can produce
/// it from Rust handlers without changing this interface.
pub trait GpuProgram: Any + Send + Sync {
    /// The backend this program is written for ([`Backend::Wgpu`] for WGSL, which the Metal
    /// backend runs too; [`Backend::Cuda`] for CUDA C). A definition holds at most one program
    /// per concrete program type.
    fn backend(&self) -> Backend;
    /// Message types the program handles: type id, Rust type and name.
    fn handled_types(&self) -> Vec<(u64, TypeId, &'static str)>;
    /// The payload check of a handled type ([`payload_check`] of its Rust type); `None` if the
    /// program does not handle `type_id`.
    fn payload_check(&self, type_id: u64) -> Option<PayloadCheck>;
    /// Upcast for downcasting to the concrete program type.
    fn as_any(&self) -> &dyn Any;
}

impl KernelDef {
    /// A kernel whose state starts as `S::default()`.
    #[must_use]
    pub fn new<S: Default + Send + 'static>(name: impl Into<String>) -> Self {
        Self::with_state(name, S::default)
    }

    /// A kernel whose state is built (and rebuilt on restart) by `factory`.
    pub fn with_state<S: Send + 'static>(
        name: impl Into<String>,
        factory: impl Fn() -> S + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            state_type: TypeId::of::<S>(),
            state_name: core::any::type_name::<S>(),
            make_state: Arc::new(move || Box::new(factory()) as BoxedState),
            handlers: HashMap::new(),
            gpu: Vec::new(),
            gpu_types: HashMap::new(),
        }
    }

    /// Adds the handler for messages of type `M` (see [`KernelDef::try_on`]).
    ///
    /// # Panics
    /// If the state type differs or `M` is already handled; use `try_on` to get an error.
    #[must_use]
    pub fn on<S, M, O, F>(self, handler: F) -> Self
    where
        S: Send + 'static,
        M: RingMessage,
        O: HandlerOutput,
        F: Fn(&mut S, M, &mut Context<'_>) -> O + Send + Sync + 'static,
    {
        match self.try_on(handler) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        }
    }

    /// Adds the handler for messages of type `M`; errors if `S` is not this kernel's state type,
    /// if `M` is already handled, or if `M`'s type id collides with another handled type.
    pub fn try_on<S, M, O, F>(mut self, handler: F) -> Result<Self, Error>
    where
        S: Send + 'static,
        M: RingMessage,
        O: HandlerOutput,
        F: Fn(&mut S, M, &mut Context<'_>) -> O + Send + Sync + 'static,
    {
        if TypeId::of::<S>() != self.state_type {
            return Err(Error::KernelDefinition {
                kernel: self.name.clone(),
                detail: format!(
                    "handler for {} takes state {}, but the kernel's state is {}",
                    M::type_name(),
                    core::any::type_name::<S>(),
                    self.state_name
                ),
            });
        }
        if let Some(existing) = self.handlers.get(&M::message_type()) {
            return Err(duplicate(
                &self.name,
                M::message_type(),
                existing,
                M::type_name(),
                TypeId::of::<M>(),
            ));
        }
        let call =
            move |state: &mut BoxedState, _h: &EnvelopeHeader, payload: &[u8], ctx: &mut Context<'_>| {
                let msg = M::decode_payload(payload).map_err(|e| HandlerError(e.to_string()))?;
                let s = state.downcast_mut::<S>().expect("state type checked at registration");
                handler(s, msg, ctx).deliver(ctx)
            };
        self.handlers.insert(
            M::message_type(),
            HandlerEntry {
                type_name: M::type_name(),
                rust_type: TypeId::of::<M>(),
                check: payload_check::<M>,
                call: Box::new(call),
            },
        );
        Ok(self)
    }

    /// Adds the kernel's program for one GPU backend (replacing an earlier one of the same type).
    #[must_use]
    pub fn gpu<P: GpuProgram>(mut self, program: P) -> Self {
        self.gpu.retain(|p| p.as_any().type_id() != TypeId::of::<P>());
        self.gpu.push(Arc::new(program));
        self.refresh_gpu_types();
        self
    }

    /// The kernel's program of type `P` (a backend asks for its own program type).
    #[must_use]
    pub fn gpu_program<P: GpuProgram>(&self) -> Option<&P> {
        self.gpu.iter().find_map(|p| p.as_any().downcast_ref::<P>())
    }

    /// Kernel name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Builds a fresh state.
    #[must_use]
    pub fn make_state(&self) -> BoxedState {
        (self.make_state)()
    }

    /// Whether the kernel handles type id `id` (with a CPU handler or in a GPU program).
    #[must_use]
    pub fn handles(&self, id: u64) -> bool {
        self.handlers.contains_key(&id) || self.gpu_types.contains_key(&id)
    }

    /// Checks a payload of type `type_id` the way the kernel's handler will decode it: `None` if
    /// the kernel does not handle the type.
    #[must_use]
    pub fn check_payload(&self, type_id: u64, payload: &[u8]) -> Option<Result<(), DecodeError>> {
        let check = match self.handlers.get(&type_id) {
            Some(h) => h.check,
            None => self.gpu.iter().find_map(|p| p.payload_check(type_id))?,
        };
        Some(check(payload))
    }

    /// Whether the kernel has CPU handlers (it can run on the CPU backend).
    #[must_use]
    pub fn has_cpu_handlers(&self) -> bool {
        !self.handlers.is_empty()
    }

    /// Backends this kernel has GPU programs for.
    #[must_use]
    pub fn gpu_backends(&self) -> Vec<Backend> {
        self.gpu.iter().map(|p| p.backend()).collect()
    }

    /// The table of handled types a [`super::KernelCell`] keeps (CPU handlers first, then GPU
    /// programs, as [`KernelDef::check_payload`] looks them up).
    #[must_use]
    pub fn accepted_types(&self) -> AcceptedTypes {
        let cpu = self.handlers.iter().map(|(&id, h)| (id, h.type_name, Some(h.check)));
        let gpu = self.gpu.iter().flat_map(|p| {
            p.handled_types().into_iter().map(move |(id, _, name)| (id, name, p.payload_check(id)))
        });
        AcceptedTypes::new(cpu.chain(gpu))
    }

    /// Names of the handled message types (CPU handlers and GPU programs).
    #[must_use]
    pub fn accepted(&self) -> Vec<String> {
        let mut v: Vec<_> = self.handlers.values().map(|h| h.type_name.to_string()).collect();
        v.extend(self.gpu_types.values().map(|n| n.to_string()));
        v.sort();
        v.dedup();
        v
    }

    /// Runs the handler for an encoded envelope (used by CPU executors).
    pub fn dispatch(
        &self,
        state: &mut BoxedState,
        bytes: &[u8],
        ctx: &mut Context<'_>,
    ) -> Result<(), DispatchError> {
        let (header, payload) = decode_header(bytes).map_err(|e| DispatchError::Decode(e.to_string()))?;
        self.dispatch_decoded(state, &header, payload, ctx)
    }

    /// Runs the handler for an envelope whose header was already validated.
    pub fn dispatch_decoded(
        &self,
        state: &mut BoxedState,
        header: &EnvelopeHeader,
        payload: &[u8],
        ctx: &mut Context<'_>,
    ) -> Result<(), DispatchError> {
        let Some(h) = self.handlers.get(&header.type_id) else {
            return Err(DispatchError::UnknownType(header.type_id));
        };
        (h.call)(state, header, payload, ctx).map_err(DispatchError::Handler)
    }

    fn refresh_gpu_types(&mut self) {
        self.gpu_types =
            self.gpu.iter().flat_map(|p| p.handled_types()).map(|(id, _, name)| (id, name)).collect();
    }

    fn merge(&mut self, other: KernelDef) -> Result<(), Error> {
        if other.state_type != self.state_type {
            return Err(Error::KernelDefinition {
                kernel: self.name.clone(),
                detail: format!(
                    "handlers disagree on the state type: {} vs {}",
                    self.state_name, other.state_name
                ),
            });
        }
        for p in other.gpu {
            if self.gpu.iter().any(|q| q.as_any().type_id() == p.as_any().type_id()) {
                return Err(Error::KernelDefinition {
                    kernel: self.name.clone(),
                    detail: format!("two {} programs for one kernel", p.backend().name()),
                });
            }
            self.gpu.push(p);
        }
        self.refresh_gpu_types();
        for (id, h) in other.handlers {
            if let Some(existing) = self.handlers.get(&id) {
                return Err(duplicate(&self.name, id, existing, h.type_name, h.rust_type));
            }
            self.handlers.insert(id, h);
        }
        Ok(())
    }
}

impl core::fmt::Debug for KernelDef {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KernelDef")
            .field("name", &self.name)
            .field("state", &self.state_name)
            .field("handlers", &self.accepted())
            .finish()
    }
}

fn duplicate(kernel: &str, id: u64, existing: &HandlerEntry, name: &'static str, ty: TypeId) -> Error {
    if existing.rust_type == ty {
        Error::KernelDefinition {
            kernel: kernel.to_string(),
            detail: format!("two handlers for message type {name}"),
        }
    } else {
        Error::Registry(crate::message::RegistryError::DuplicateTypeId {
            id,
            first: existing.type_name,
            second: name,
        })
    }
}

/// Why a message could not be handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DispatchError {
    /// Malformed envelope.
    Decode(String),
    /// No handler for this type id.
    UnknownType(u64),
    /// The handler failed.
    Handler(HandlerError),
}

impl core::fmt::Display for DispatchError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Decode(e) => write!(f, "malformed message: {e}"),
            Self::UnknownType(id) => write!(f, "no handler for message type id {id:#x}"),
            Self::Handler(e) => write!(f, "handler error: {e}"),
        }
    }
}

/// A link-time kernel registration emitted by `#[ring_kernel]`.
pub struct KernelRegistration {
    /// Kernel name.
    pub kernel: &'static str,
    /// Builds the single-handler definition.
    pub build: fn() -> Result<KernelDef, Error>,
}

inventory::collect!(KernelRegistration);

/// All kernel definitions known to a runtime, by name.
#[derive(Default)]
pub struct KernelCatalog {
    defs: HashMap<String, Arc<KernelDef>>,
    pending: HashMap<String, KernelDef>,
    messages: MessageRegistry,
}

impl KernelCatalog {
    /// A catalog holding every `#[ring_kernel]` registration linked into the program.
    pub fn from_registrations() -> Result<Self, Error> {
        let mut c = Self::default();
        for r in inventory::iter::<KernelRegistration> {
            c.add((r.build)()?)?;
        }
        Ok(c)
    }

    /// Adds a definition, merging handlers into an existing kernel of the same name.
    pub fn add(&mut self, def: KernelDef) -> Result<(), Error> {
        if self.defs.contains_key(&def.name) {
            return Err(Error::KernelDefinition {
                kernel: def.name.clone(),
                detail: "kernel already in use; register kernels before launching them".into(),
            });
        }
        for (id, h) in &def.handlers {
            self.messages.register_raw(*id, h.rust_type, h.type_name)?;
        }
        for p in &def.gpu {
            for (id, ty, name) in p.handled_types() {
                self.messages.register_raw(id, ty, name)?;
            }
        }
        match self.pending.get_mut(&def.name) {
            Some(existing) => existing.merge(def),
            None => {
                self.pending.insert(def.name.clone(), def);
                Ok(())
            }
        }
    }

    /// The definition for `name`, frozen on first use.
    pub fn get(&mut self, name: &str) -> Option<Arc<KernelDef>> {
        if let Some(d) = self.pending.remove(name) {
            self.defs.insert(name.to_string(), Arc::new(d));
        }
        self.defs.get(name).cloned()
    }

    /// Every message type handled by some kernel (type ids are unique program-wide).
    #[must_use]
    pub fn messages(&self) -> &MessageRegistry {
        &self.messages
    }

    /// Registered kernel names, sorted.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<_> = self.defs.keys().chain(self.pending.keys()).cloned().collect();
        v.sort();
        v
    }
}

/// Re-export for the `#[ring_kernel]` macro.
#[doc(hidden)]
pub use inventory;
