//! The GPU word layout: how message payloads and kernel state look to GPU code.
//!
//! Shading languages without byte addressing (WGSL) read memory as 32-bit words, and have no
//! 64-bit integers. A type that derives `GpuType` is therefore laid out as a flat sequence of
//! little-endian 32-bit words, independent of Rust's own layout:
//!
//! | Rust field          | words in the fixed part          | WGSL type          |
//! |---------------------|----------------------------------|--------------------|
//! | `u32`, `i32`, `f32` | 1                                | `u32`, `i32`, `f32`|
//! | `u64`, `i64`        | 2 (low word first)               | `vec2<u32>` (x = low) |
//! | `[T; N]`            | `N` × words of `T`               | `array<T, N>`      |
//! | `Vec<T>`            | 2: word offset of the elements (from the payload start), length | `RkSlice` |
//!
//! The fixed part comes first, fields in declaration order; the elements of `Vec` fields follow
//! it, in field order. `ringkernel-codegen` reads [`GpuType::GPU_FIELDS`] to emit the matching
//! GPU structs and their load/store functions, so the two sides are never written twice by hand;
//! the codec here and the generated code are tested against each other.

use crate::message::{DecodeError, EncodeError};

/// A scalar as GPU code sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuScalar {
    /// `u32`.
    U32,
    /// `i32`.
    I32,
    /// `f32`.
    F32,
    /// `u64`, two words.
    U64,
    /// `i64`, two words (two's complement).
    I64,
}

impl GpuScalar {
    /// Words one value takes.
    #[must_use]
    pub const fn words(self) -> u32 {
        match self {
            Self::U32 | Self::I32 | Self::F32 => 1,
            Self::U64 | Self::I64 => 2,
        }
    }

    /// Its WGSL type.
    #[must_use]
    pub const fn wgsl(self) -> &'static str {
        match self {
            Self::U32 => "u32",
            Self::I32 => "i32",
            Self::F32 => "f32",
            Self::U64 | Self::I64 => "vec2<u32>",
        }
    }
}

/// The shape of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuFieldKind {
    /// One scalar.
    Scalar(GpuScalar),
    /// A fixed-length array.
    Array(GpuScalar, u32),
    /// A variable-length array (`Vec<T>`), stored after the fixed part.
    Slice(GpuScalar),
}

impl GpuFieldKind {
    /// Words the field takes in the fixed part.
    #[must_use]
    pub const fn fixed_words(self) -> u32 {
        match self {
            Self::Scalar(s) => s.words(),
            Self::Array(s, n) => s.words() * n,
            Self::Slice(_) => 2,
        }
    }
}

/// One field of a [`GpuType`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuField {
    /// Field name (the same in Rust and in generated GPU code).
    pub name: &'static str,
    /// Its shape.
    pub kind: GpuFieldKind,
}

/// A type with a GPU word layout (see the module docs). Derive it with `#[derive(GpuType)]`.
pub trait GpuType: Sized {
    /// Name of the generated GPU struct.
    const GPU_NAME: &'static str;
    /// Fields in declaration order.
    const GPU_FIELDS: &'static [GpuField];
    /// Writes the fields (fixed part, then slices) through `w`.
    fn gpu_write(&self, w: &mut GpuWriter<'_>) -> Result<(), EncodeError>;
    /// Reads the fields back, validating lengths and bounds.
    fn gpu_read(r: &mut GpuReader<'_>) -> Result<Self, DecodeError>;

    /// Words of the fixed part.
    #[must_use]
    fn fixed_words() -> u32 {
        Self::GPU_FIELDS.iter().map(|f| f.kind.fixed_words()).sum()
    }
}

/// Encodes `value` into `out`; returns the bytes written.
pub fn encode<T: GpuType>(value: &T, type_name: &'static str, out: &mut [u8]) -> Result<usize, EncodeError> {
    let fixed = T::fixed_words() as usize * 4;
    if out.len() < fixed {
        return Err(EncodeError::PayloadTooLarge { type_name, needed: fixed, capacity: out.len() });
    }
    let mut w = GpuWriter { out, type_name, fixed_pos: 0, var_pos: fixed };
    value.gpu_write(&mut w)?;
    Ok(w.var_pos)
}

/// Decodes a payload written by [`encode`] (or by generated GPU code).
pub fn decode<T: GpuType>(bytes: &[u8], type_name: &'static str) -> Result<T, DecodeError> {
    let fixed = T::fixed_words() as usize * 4;
    if bytes.len() < fixed || !bytes.len().is_multiple_of(4) {
        return Err(DecodeError::Payload {
            type_name,
            detail: format!(
                "payload of {} bytes: the fixed part needs {fixed} and the length must be whole words",
                bytes.len()
            ),
        });
    }
    let mut r = GpuReader { bytes, type_name, pos: 0, fixed };
    let v = T::gpu_read(&mut r)?;
    Ok(v)
}

/// Writes a [`GpuType`]'s fields in order (see the module docs).
#[derive(Debug)]
pub struct GpuWriter<'a> {
    out: &'a mut [u8],
    type_name: &'static str,
    fixed_pos: usize,
    var_pos: usize,
}

impl GpuWriter<'_> {
    fn put_word(&mut self, w: u32) {
        self.out[self.fixed_pos..self.fixed_pos + 4].copy_from_slice(&w.to_le_bytes());
        self.fixed_pos += 4;
    }

    /// Writes one field.
    pub fn field<F: GpuFieldType>(&mut self, f: &F) -> Result<(), EncodeError> {
        f.write(self)
    }

    fn scalar<S: GpuScalarType>(&mut self, s: S) {
        let (lo, hi) = s.to_words();
        self.put_word(lo);
        if S::SCALAR.words() == 2 {
            self.put_word(hi);
        }
    }

    fn slice<S: GpuScalarType>(&mut self, items: &[S]) -> Result<(), EncodeError> {
        let bytes = items.len() * S::SCALAR.words() as usize * 4;
        let needed = self.var_pos + bytes;
        if needed > self.out.len() {
            return Err(EncodeError::PayloadTooLarge {
                type_name: self.type_name,
                needed,
                capacity: self.out.len(),
            });
        }
        self.put_word((self.var_pos / 4) as u32);
        self.put_word(items.len() as u32);
        for s in items {
            let (lo, hi) = s.to_words();
            self.out[self.var_pos..self.var_pos + 4].copy_from_slice(&lo.to_le_bytes());
            self.var_pos += 4;
            if S::SCALAR.words() == 2 {
                self.out[self.var_pos..self.var_pos + 4].copy_from_slice(&hi.to_le_bytes());
                self.var_pos += 4;
            }
        }
        Ok(())
    }
}

/// Reads a [`GpuType`]'s fields in order, checking every slice against the payload bounds.
#[derive(Debug)]
pub struct GpuReader<'a> {
    bytes: &'a [u8],
    type_name: &'static str,
    pos: usize,
    fixed: usize,
}

impl GpuReader<'_> {
    fn word_at(&self, byte: usize) -> u32 {
        u32::from_le_bytes(self.bytes[byte..byte + 4].try_into().expect("4 bytes"))
    }

    fn get_word(&mut self) -> u32 {
        let w = self.word_at(self.pos);
        self.pos += 4;
        w
    }

    /// Reads one field.
    pub fn field<F: GpuFieldType>(&mut self) -> Result<F, DecodeError> {
        F::read(self)
    }

    fn scalar<S: GpuScalarType>(&mut self) -> S {
        let lo = self.get_word();
        let hi = if S::SCALAR.words() == 2 { self.get_word() } else { 0 };
        S::from_words(lo, hi)
    }

    fn slice<S: GpuScalarType>(&mut self) -> Result<Vec<S>, DecodeError> {
        let offset = self.get_word() as usize * 4;
        let len = self.get_word() as usize;
        let words = S::SCALAR.words() as usize;
        let end = len.checked_mul(words * 4).and_then(|b| b.checked_add(offset));
        match end {
            Some(end) if offset >= self.fixed && end <= self.bytes.len() => {}
            _ => {
                return Err(DecodeError::Payload {
                    type_name: self.type_name,
                    detail: format!(
                        "slice of {len} elements at byte {offset} lies outside the {}-byte payload",
                        self.bytes.len()
                    ),
                })
            }
        }
        Ok((0..len)
            .map(|i| {
                let at = offset + i * words * 4;
                let lo = self.word_at(at);
                let hi = if words == 2 { self.word_at(at + 4) } else { 0 };
                S::from_words(lo, hi)
            })
            .collect())
    }
}

/// A scalar type with a GPU representation.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no GPU word layout",
    label = "not a GPU scalar",
    note = "GPU fields are u32, i32, f32, u64, i64, or [T; N] / Vec<T> of those (WGSL has no f64, u8 or bool)"
)]
pub trait GpuScalarType: Copy + Default {
    /// Which scalar.
    const SCALAR: GpuScalar;
    /// Low and high word (high is 0 for one-word scalars).
    fn to_words(self) -> (u32, u32);
    /// Back from words.
    fn from_words(lo: u32, hi: u32) -> Self;
}

macro_rules! scalar {
    ($t:ty, $s:ident, |$v:ident| $to:expr, |$lo:ident, $hi:ident| $from:expr) => {
        impl GpuScalarType for $t {
            const SCALAR: GpuScalar = GpuScalar::$s;
            #[inline]
            fn to_words(self) -> (u32, u32) {
                let $v = self;
                $to
            }
            #[inline]
            fn from_words($lo: u32, $hi: u32) -> Self {
                $from
            }
        }
    };
}

scalar!(u32, U32, |v| (v, 0), |lo, _hi| lo);
scalar!(i32, I32, |v| (v as u32, 0), |lo, _hi| lo as i32);
scalar!(f32, F32, |v| (v.to_bits(), 0), |lo, _hi| f32::from_bits(lo));
scalar!(u64, U64, |v| (v as u32, (v >> 32) as u32), |lo, hi| u64::from(lo) | (u64::from(hi) << 32));
scalar!(
    i64,
    I64,
    |v| (v as u32, ((v as u64) >> 32) as u32),
    |lo, hi| (u64::from(lo) | (u64::from(hi) << 32)) as i64
);

/// A field type allowed in a [`GpuType`]: a scalar, `[scalar; N]` or `Vec<scalar>`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a field of a GpuType",
    label = "no GPU word layout",
    note = "GPU fields are u32, i32, f32, u64, i64, or [T; N] / Vec<T> of those (WGSL has no f64, u8 or bool)"
)]
pub trait GpuFieldType: Sized {
    /// Its shape.
    const KIND: GpuFieldKind;
    /// Writes it.
    fn write(&self, w: &mut GpuWriter<'_>) -> Result<(), EncodeError>;
    /// Reads it.
    fn read(r: &mut GpuReader<'_>) -> Result<Self, DecodeError>;
}

impl<S: GpuScalarType> GpuFieldType for S {
    const KIND: GpuFieldKind = GpuFieldKind::Scalar(S::SCALAR);
    fn write(&self, w: &mut GpuWriter<'_>) -> Result<(), EncodeError> {
        w.scalar(*self);
        Ok(())
    }
    fn read(r: &mut GpuReader<'_>) -> Result<Self, DecodeError> {
        Ok(r.scalar())
    }
}

impl<S: GpuScalarType, const N: usize> GpuFieldType for [S; N] {
    const KIND: GpuFieldKind = GpuFieldKind::Array(S::SCALAR, N as u32);
    fn write(&self, w: &mut GpuWriter<'_>) -> Result<(), EncodeError> {
        for s in self {
            w.scalar(*s);
        }
        Ok(())
    }
    fn read(r: &mut GpuReader<'_>) -> Result<Self, DecodeError> {
        let mut a = [S::default(); N];
        for s in &mut a {
            *s = r.scalar();
        }
        Ok(a)
    }
}

impl<S: GpuScalarType> GpuFieldType for Vec<S> {
    const KIND: GpuFieldKind = GpuFieldKind::Slice(S::SCALAR);
    fn write(&self, w: &mut GpuWriter<'_>) -> Result<(), EncodeError> {
        w.slice(self)
    }
    fn read(r: &mut GpuReader<'_>) -> Result<Self, DecodeError> {
        r.slice()
    }
}

/// Error codes GPU kernels report in error replies and failure records (a handler's own codes,
/// passed to `rk_error`/`rk_fail`, must be below [`err::ERR_RESERVED`]).
pub mod err {
    /// Codes from here up are the runtime's.
    pub const ERR_RESERVED: u32 = 0xFFFF_FF00;
    /// A request's handler returned without replying.
    pub const NO_REPLY: u32 = 0xFFFF_FFF0;
    /// No handler for the message's type.
    pub const UNKNOWN_TYPE: u32 = 0xFFFF_FFF1;
    /// Not a valid envelope, or the payload's slices lie outside the payload.
    pub const MALFORMED: u32 = 0xFFFF_FFF2;
    /// An output did not fit its slot.
    pub const TOO_LARGE: u32 = 0xFFFF_FFF3;
    /// WGSL: a handler sent more messages than the program's `max_sends` allows; CUDA: a send
    /// named a route the program does not declare.
    pub const TOO_MANY_SENDS: u32 = 0xFFFF_FFF4;
    /// CUDA: a send found no room and the host told the kernel to exit while it waited (the
    /// runtime was dropped, or gave up on the kernel): nothing was sent, and the handler should
    /// return.
    pub const EXITING: u32 = 0xFFFF_FFF5;
    /// CUDA kernel groups: the request reached an instance that failed earlier.
    pub const INSTANCE_FAILED: u32 = 0xFFFF_FFF6;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Default)]
    struct Sample {
        a: u32,
        b: u64,
        c: [f32; 2],
        d: Vec<i32>,
        e: Vec<u64>,
    }

    impl GpuType for Sample {
        const GPU_NAME: &'static str = "Sample";
        const GPU_FIELDS: &'static [GpuField] = &[
            GpuField { name: "a", kind: <u32 as GpuFieldType>::KIND },
            GpuField { name: "b", kind: <u64 as GpuFieldType>::KIND },
            GpuField { name: "c", kind: <[f32; 2] as GpuFieldType>::KIND },
            GpuField { name: "d", kind: <Vec<i32> as GpuFieldType>::KIND },
            GpuField { name: "e", kind: <Vec<u64> as GpuFieldType>::KIND },
        ];
        fn gpu_write(&self, w: &mut GpuWriter<'_>) -> Result<(), EncodeError> {
            w.field(&self.a)?;
            w.field(&self.b)?;
            w.field(&self.c)?;
            w.field(&self.d)?;
            w.field(&self.e)
        }
        fn gpu_read(r: &mut GpuReader<'_>) -> Result<Self, DecodeError> {
            Ok(Self { a: r.field()?, b: r.field()?, c: r.field()?, d: r.field()?, e: r.field()? })
        }
    }

    #[test]
    fn word_layout_is_the_documented_one() {
        let s = Sample { a: 7, b: 0x1_0000_0002, c: [1.5, -2.0], d: vec![-1, 3], e: vec![u64::MAX] };
        let mut buf = [0u8; 128];
        let n = encode(&s, "Sample", &mut buf).unwrap();
        let words: Vec<u32> = buf[..n].chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(Sample::fixed_words(), 1 + 2 + 2 + 2 + 2);
        assert_eq!(
            words,
            vec![
                7,
                2,
                1,
                1.5f32.to_bits(),
                (-2.0f32).to_bits(),
                9,
                2,
                11,
                1,
                u32::MAX,
                3,
                u32::MAX,
                u32::MAX
            ]
        );
        assert_eq!(decode::<Sample>(&buf[..n], "Sample").unwrap(), s);
    }

    #[test]
    fn out_of_bounds_slices_are_errors() {
        let s = Sample { d: vec![1, 2, 3], ..Default::default() };
        let mut buf = [0u8; 128];
        let n = encode(&s, "Sample", &mut buf).unwrap();
        // Claim more elements than the payload holds.
        buf[6 * 4..7 * 4].copy_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(decode::<Sample>(&buf[..n], "Sample"), Err(DecodeError::Payload { .. })));
        // Point a slice into the fixed part.
        let n = encode(&s, "Sample", &mut buf).unwrap();
        buf[5 * 4..6 * 4].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(decode::<Sample>(&buf[..n], "Sample"), Err(DecodeError::Payload { .. })));
        assert!(matches!(encode(&s, "Sample", &mut buf[..40]), Err(EncodeError::PayloadTooLarge { .. })));
    }
}
