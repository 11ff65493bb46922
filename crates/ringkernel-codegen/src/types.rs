//! The target-neutral description every generator works from: a GPU-visible type
//! ([`GpuTypeDesc`]: name, fields in the GPU word layout, message type id), a kernel's types
//! ([`KernelTypes`]: its state, the messages it reads or writes, the ones it handles), and the one
//! check of those types ([`KernelTypes::check`]) that the WGSL and C-family emitters share, so
//! every target refuses the same programs with the same [`CodegenError`].

use ringkernel_core::gpu::{GpuField, GpuFieldKind, GpuType};
use ringkernel_core::message::RingMessage;

/// A GPU-visible type: name, fields and, for messages, the type id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuTypeDesc {
    /// Struct name.
    pub name: &'static str,
    /// Fields in word-layout order.
    pub fields: &'static [GpuField],
    /// Message type id (`None` for state types).
    pub type_id: Option<u64>,
}

impl GpuTypeDesc {
    /// A state (non-message) type.
    #[must_use]
    pub fn of<T: GpuType>() -> Self {
        Self { name: T::GPU_NAME, fields: T::GPU_FIELDS, type_id: None }
    }

    /// A message type.
    #[must_use]
    pub fn message<T: GpuType + RingMessage>() -> Self {
        Self { name: T::GPU_NAME, fields: T::GPU_FIELDS, type_id: Some(T::message_type()) }
    }

    /// Words of the fixed part.
    #[must_use]
    pub fn fixed_words(&self) -> u32 {
        self.fields.iter().map(|f| f.kind.fixed_words()).sum()
    }

    /// The type's C layout with natural alignment (how a C-family device holds a kernel's
    /// state): each field at the next multiple of its scalar's size (4 or 8 bytes), the size
    /// rounded up to the largest alignment. Returns `(word offset in the GPU word layout, byte
    /// offset in the C layout, words)` per field and the C size in bytes. A `u64` field of the
    /// word layout may sit at a 4-byte offset; in the C layout it is 8-byte aligned, so a pointer
    /// to it is a valid 64-bit access on a GPU. Slices have no C state layout (states have none).
    #[must_use]
    pub fn natural_layout(&self) -> (Vec<(usize, usize, usize)>, usize) {
        let (mut word, mut byte, mut align) = (0usize, 0usize, 4usize);
        let mut fields = Vec::with_capacity(self.fields.len());
        for f in self.fields {
            let (scalar, count) = match f.kind {
                GpuFieldKind::Scalar(s) => (s, 1),
                GpuFieldKind::Array(s, n) => (s, n as usize),
                GpuFieldKind::Slice(s) => (s, 0),
            };
            let size = 4 * scalar.words() as usize;
            align = align.max(size);
            byte = byte.next_multiple_of(size);
            let words = f.kind.fixed_words() as usize;
            fields.push((word, byte, words));
            word += words;
            byte += size * count;
        }
        (fields, byte.max(4).next_multiple_of(align))
    }

    /// GPU-word-layout words of a value of this type (its fixed part) in the natural C layout
    /// ([`GpuTypeDesc::natural_layout`]), as little-endian words; padding is zero.
    #[must_use]
    pub fn words_to_natural(&self, words: &[u32]) -> Vec<u32> {
        let (fields, size) = self.natural_layout();
        let mut out = vec![0u32; size / 4];
        for (w, b, n) in fields {
            out[b / 4..b / 4 + n].copy_from_slice(&words[w..w + n]);
        }
        out
    }

    /// The inverse of [`GpuTypeDesc::words_to_natural`]: the GPU word layout of a value held in
    /// the natural C layout.
    #[must_use]
    pub fn natural_to_words(&self, natural: &[u32]) -> Vec<u32> {
        let (fields, _) = self.natural_layout();
        let mut out = vec![0u32; self.fixed_words() as usize];
        for (w, b, n) in fields {
            out[w..w + n].copy_from_slice(&natural[b / 4..b / 4 + n]);
        }
        out
    }
}

/// The types of one kernel: what every target's generator needs besides the handlers' source.
#[derive(Debug, Clone, Copy)]
pub struct KernelTypes<'a> {
    /// The state struct (no `Vec` fields).
    pub state: GpuTypeDesc,
    /// Every message type the kernel reads or writes.
    pub messages: &'a [GpuTypeDesc],
    /// Type ids with a handler `on_<Name>` in the user's source.
    pub handled: &'a [u64],
}

impl<'a> KernelTypes<'a> {
    /// Checks what every kernel generator needs of its types: a fixed-size state, messages with
    /// type ids and names distinct from each other and from the state, handlers only for them.
    pub fn check(&self) -> Result<(), CodegenError> {
        let state = self.state;
        if state.fields.iter().any(|f| matches!(f.kind, GpuFieldKind::Slice(_))) {
            return Err(CodegenError::StateHasSlice(state.name));
        }
        for (i, m) in self.messages.iter().enumerate() {
            if m.type_id.is_none() {
                return Err(CodegenError::NotAMessage(m.name));
            }
            if self.messages[..i].iter().any(|o| o.name == m.name) || m.name == state.name {
                return Err(CodegenError::DuplicateName(m.name));
            }
        }
        match self.handled.iter().find(|&&id| !self.messages.iter().any(|m| m.type_id == Some(id))) {
            Some(&id) => Err(CodegenError::UnknownHandled(id)),
            None => Ok(()),
        }
    }

    /// The message types with a handler, in declaration order (the dispatch order).
    pub fn handled_messages(&self) -> impl Iterator<Item = &'a GpuTypeDesc> + 'a {
        let handled = self.handled;
        self.messages.iter().filter(move |m| m.type_id.is_some_and(|id| handled.contains(&id)))
    }
}

/// Why a kernel cannot be generated (for any target).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodegenError {
    /// The state type has a `Vec` field.
    #[error("state type {0} has a Vec field; kernel state must have a fixed size")]
    StateHasSlice(&'static str),
    /// A handled type is not among the messages.
    #[error("handled type id {0:#x} is not among the kernel's message types")]
    UnknownHandled(u64),
    /// Two message types share a name.
    #[error("two message types are named {0}")]
    DuplicateName(&'static str),
    /// A message type has no type id.
    #[error("type {0} is listed as a message but has no type id")]
    NotAMessage(&'static str),
}
