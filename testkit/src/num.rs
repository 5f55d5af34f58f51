//! The element types as numbers: converted to and from f64 for the
//! reference, the value output buffers hold before a call, and how far a
//! result may be from the reference.

use half::{bf16, f16};
use oxccl::{DType, Element, ReduceOp};

/// An element type the suites compute with in f64.
pub trait Num: Element + Copy {
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    /// What output buffers hold before a call: out of the range of every
    /// input and result of [`crate::data::input`] (the 8-bit types aside,
    /// whose sums may wrap onto any value), so an element left unwritten
    /// cannot pass for a result.
    fn poison() -> Self;
}

macro_rules! num_int {
    ($($t:ty => $poison:expr),*) => {$(impl Num for $t {
        fn from_f64(v: f64) -> Self { v as $t }
        fn to_f64(self) -> f64 { self as f64 }
        fn poison() -> Self { $poison }
    })*};
}
num_int!(i8 => i8::MIN + 7, u8 => u8::MAX - 7, i32 => i32::MIN + 7, u32 => u32::MAX - 7, i64 => i64::MIN + 7, u64 => u64::MAX - 7);

/// Far from every input and result of [`crate::data::input`].
const FLOAT_POISON: f64 = -12345.5;

impl Num for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn poison() -> Self {
        FLOAT_POISON as f32
    }
}
impl Num for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn poison() -> Self {
        FLOAT_POISON
    }
}
impl Num for f16 {
    fn from_f64(v: f64) -> Self {
        f16::from_f64(v)
    }
    fn to_f64(self) -> f64 {
        f16::to_f64(self)
    }
    fn poison() -> Self {
        f16::from_f64(FLOAT_POISON)
    }
}
impl Num for bf16 {
    fn from_f64(v: f64) -> Self {
        bf16::from_f64(v)
    }
    fn to_f64(self) -> f64 {
        bf16::to_f64(self)
    }
    fn poison() -> Self {
        bf16::from_f64(FLOAT_POISON)
    }
}

/// Relative tolerance of `op` over `world` ranks in `dtype`, for inputs from
/// [`crate::data::input`]. Zero where every order of evaluation gives the
/// reference exactly: integers, min and max, and sums in f32 and f64 (the
/// inputs are multiples of 1/8 below 21 in magnitude, so every partial sum
/// of up to 2^16 ranks is exact in 24 bits of mantissa). Products, averages
/// (a division) and the 16-bit floats round, by an amount that grows with
/// the number of ranks.
pub fn tolerance(dtype: DType, op: ReduceOp, world: usize) -> f64 {
    let n = world as f64;
    match (dtype, op) {
        _ if !dtype.is_float() => 0.0,
        (_, ReduceOp::Min | ReduceOp::Max) => 0.0,
        (DType::F32 | DType::F64, ReduceOp::Sum) => 0.0,
        (DType::F32, _) => 2e-7 * n,
        (DType::F64, _) => 1e-15 * n,
        (DType::F16, _) => 1e-3 * n,
        _ => 8e-3 * n,
    }
}
