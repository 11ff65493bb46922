//! The backend-neutral half of a GPU program: the Rust types a kernel's device code uses (its
//! state, the messages it handles and sends), its K2K routes by name, and the texts of its error
//! codes. `WgslProgram` (wgpu) and `CudaProgram` (CUDA) each wrap one [`ProgramSpec`] and add
//! their source language and generator.

use crate::wgsl::{err, WgslType};
use ringkernel_core::gpu::GpuType;
use ringkernel_core::message::RingMessage;
use ringkernel_core::runtime::{payload_check, PayloadCheck};
use std::any::TypeId;
use std::collections::HashMap;

/// Types, routes and error texts of a GPU program (see the module docs).
#[derive(Debug, Clone)]
pub struct ProgramSpec {
    state: WgslType,
    init_state: Vec<u32>,
    messages: Vec<(WgslType, TypeId, &'static str)>,
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
            state: WgslType::of::<S>(),
            init_state,
            messages: Vec::new(),
            handled: Vec::new(),
            checks: Vec::new(),
            routes: Vec::new(),
            error_texts: HashMap::new(),
        }
    }

    /// Declares a message type the program reads or writes.
    pub fn add_message<M: GpuType + RingMessage>(&mut self) {
        if !self.messages.iter().any(|m| m.0.type_id == Some(M::message_type())) {
            self.messages.push((WgslType::message::<M>(), TypeId::of::<M>(), M::type_name()));
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

    /// The state type.
    #[must_use]
    pub fn state(&self) -> WgslType {
        self.state
    }

    /// Words of the state, as initialised.
    #[must_use]
    pub fn init_state(&self) -> &[u32] {
        &self.init_state
    }

    /// Every declared message type.
    #[must_use]
    pub fn messages(&self) -> Vec<WgslType> {
        self.messages.iter().map(|m| m.0).collect()
    }

    /// Type ids with a handler.
    #[must_use]
    pub fn handled(&self) -> &[u64] {
        &self.handled
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
            .filter(|m| m.0.type_id.is_some_and(|id| self.handled.contains(&id)))
            .map(|m| (m.0.type_id.unwrap_or_default(), m.1, m.2))
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
