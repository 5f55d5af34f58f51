//! CPU references for every kernel, in f64 (or exactly, for the reducer),
//! each returning the value and the magnitude its error is measured
//! against. That magnitude is |value| where no cancellation can occur and
//! the sum of the absolute values of the terms where it can (matmul's
//! Σ|a·b|, the moments' β·|m| + (1−β)·|g|, GELU′'s two terms), the usual
//! condition-aware bound: near a root of the exact result no f32 kernel can
//! be accurate relative to |value| itself.

use half::{bf16, f16};
use oxccl::{DType, ReduceOp};

use crate::kernels::{Activation, AdamParams, Gemm, MatDims};

/// A reference value and the magnitude that scales its tolerance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ref {
    pub value: f64,
    pub scale: f64,
}

const GELU_C: f64 = 0.797_884_560_802_865_4; // √(2/π)
const GELU_A: f64 = 0.044_715;

/// act(x).
pub fn activation_fwd(act: Activation, x: f32) -> Ref {
    let x = f64::from(x);
    let value = match act {
        Activation::Relu => x.max(0.0),
        Activation::Gelu => 0.5 * x * (1.0 + (GELU_C * (x + GELU_A * x * x * x)).tanh()),
    };
    Ref { value, scale: value.abs() }
}

/// dy · act′(x).
pub fn activation_bwd(act: Activation, x: f32, dy: f32) -> Ref {
    let (x, dy) = (f64::from(x), f64::from(dy));
    match act {
        Activation::Relu => {
            let value = if x > 0.0 { dy } else { 0.0 };
            Ref { value, scale: value.abs() }
        }
        Activation::Gelu => {
            let t = (GELU_C * (x + GELU_A * x * x * x)).tanh();
            let du = GELU_C * (1.0 + 3.0 * GELU_A * x * x);
            let (t1, t2) = (0.5 * (1.0 + t), 0.5 * x * (1.0 - t * t) * du);
            Ref { value: dy * (t1 + t2), scale: dy.abs() * (t1.abs() + t2.abs()) }
        }
    }
}

/// One AdamW step of one element: new (p, m, v).
pub fn adam(p: f32, g: f32, m: f32, v: f32, h: &AdamParams) -> [Ref; 3] {
    let (p, g, m, v) = (f64::from(p), f64::from(g), f64::from(m), f64::from(v));
    let (b1, b2) = (f64::from(h.beta1), f64::from(h.beta2));
    let (bc1, bc2) = h.bias_corrections();
    let (bc1, bc2) = (f64::from(bc1), f64::from(bc2));
    let (lr, wd, eps) = (f64::from(h.lr), f64::from(h.weight_decay), f64::from(h.eps));
    let m1 = b1 * m + (1.0 - b1) * g;
    let v1 = b2 * v + (1.0 - b2) * g * g;
    let denom = (v1 / bc2).sqrt() + eps;
    let p1 = p - lr * (m1 / bc1 / denom + wd * p);
    let m_scale = b1 * m.abs() + (1.0 - b1) * g.abs();
    [
        Ref { value: p1, scale: p.abs() * (1.0 + lr * wd) + lr * m_scale / bc1 / denom },
        Ref { value: m1, scale: m_scale },
        Ref { value: v1, scale: v1.abs() },
    ]
}

/// C = A·B for row-major f64 views of the operands.
pub fn matmul(a: &[f64], b: &[f64], dims: MatDims) -> Vec<Ref> {
    let MatDims { m, n, k } = dims;
    let mut out = vec![Ref { value: 0.0, scale: 0.0 }; m * n];
    for i in 0..m {
        for p in 0..k {
            let x = a[i * k + p];
            for j in 0..n {
                let y = b[p * n + j];
                let r = &mut out[i * n + j];
                r.value += x * y;
                r.scale += (x * y).abs();
            }
        }
    }
    out
}

/// C = α·op(A)·op(B) + β·C for row-major f64 views of the operands (A
/// stored k×m when `trans_a`, B stored n×k when `trans_b`) and of the old
/// C (ignored when β = 0, as the kernel does not read it). The scale is
/// |α|·Σ|a·b| + |β·c|.
pub fn gemm(a: &[f64], b: &[f64], c: &[f64], g: &Gemm) -> Vec<Ref> {
    let Gemm { m, n, k, trans_a, trans_b, .. } = *g;
    let (alpha, beta) = (f64::from(g.alpha), f64::from(g.beta));
    let at = |i: usize, p: usize| if trans_a { a[p * m + i] } else { a[i * k + p] };
    let bt = |p: usize, j: usize| if trans_b { b[j * k + p] } else { b[p * n + j] };
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let (mut sum, mut abs) = (0.0, 0.0);
            for p in 0..k {
                let t = at(i, p) * bt(p, j);
                sum += t;
                abs += t.abs();
            }
            let (old, old_abs) =
                if beta == 0.0 { (0.0, 0.0) } else { (beta * c[i * n + j], (beta * c[i * n + j]).abs()) };
            out.push(Ref { value: alpha * sum + old, scale: alpha.abs() * abs + old_abs });
        }
    }
    out
}

/// `Y[r,c] + b[c]` rounded to f32: the kernel's one f32 addition is
/// correctly rounded, and so is this (rounding through f64, which has more
/// than 2·24+2 bits, is innocuous), so the two agree exactly.
pub fn bias_add(y: &[f32], b: &[f32], cols: usize) -> Vec<Ref> {
    y.iter()
        .enumerate()
        .map(|(i, &v)| {
            let value = f64::from((f64::from(v) + f64::from(b[i % cols])) as f32);
            Ref { value, scale: value.abs() }
        })
        .collect()
}

/// `db[c] = Σ_r dY[r,c]` in f64; scale `Σ_r |dY[r,c]|` (terms of both signs cancel).
pub fn bias_grad(dy: &[f32], rows: usize, cols: usize) -> Vec<Ref> {
    (0..cols)
        .map(|c| {
            let (mut value, mut scale) = (0.0, 0.0);
            for r in 0..rows {
                let x = f64::from(dy[r * cols + c]);
                value += x;
                scale += x.abs();
            }
            Ref { value, scale }
        })
        .collect()
}

/// MSE of one launch: `dP[i] = 2·scale·(P[i] − T[i])` (scale |value|: the
/// difference of two f32 is computed exactly here), and scale·Σ(P − T)²
/// over each block's elements for a grid-stride launch of `blocks` blocks
/// of `block` threads (element i belongs to block ⌊(i mod blocks·block) /
/// block⌋), then the total. Squares are non-negative, so the scale is |value|.
pub fn mse(p: &[f32], t: &[f32], scale: f32, blocks: usize, block: usize) -> (Vec<Ref>, Vec<Ref>, Ref) {
    let s = f64::from(scale);
    let mut dp = Vec::with_capacity(p.len());
    let mut partial = vec![0.0f64; blocks];
    for (i, (&x, &y)) in p.iter().zip(t).enumerate() {
        let e = f64::from(x) - f64::from(y);
        dp.push(Ref { value: 2.0 * s * e, scale: (2.0 * s * e).abs() });
        partial[(i % (blocks * block)) / block] += s * e * e;
    }
    let total: f64 = partial.iter().sum();
    let refs = partial.into_iter().map(|v| Ref { value: v, scale: v.abs() }).collect();
    (dp, refs, Ref { value: total, scale: total.abs() })
}

pub fn widen_f32(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

pub fn widen_bf16(v: &[bf16]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

/// An integer element of `dtype` (given as its bytes) exactly; `None` for
/// a float dtype.
fn int_of(dtype: DType, x: &[u8]) -> Option<i128> {
    Some(match dtype {
        DType::I8 => i128::from(i8::from_le_bytes([x[0]])),
        DType::U8 => i128::from(x[0]),
        DType::I32 => i128::from(i32::from_le_bytes(x[..4].try_into().unwrap())),
        DType::U32 => i128::from(u32::from_le_bytes(x[..4].try_into().unwrap())),
        DType::I64 => i128::from(i64::from_le_bytes(x[..8].try_into().unwrap())),
        DType::U64 => i128::from(u64::from_le_bytes(x[..8].try_into().unwrap())),
        DType::F16 | DType::BF16 | DType::F32 | DType::F64 => return None,
    })
}

/// `v` wrapped (two's complement) to an integer `dtype`, as its bytes.
fn int_bytes(dtype: DType, v: i128) -> Vec<u8> {
    match dtype {
        DType::I8 => (v as i8).to_le_bytes().to_vec(),
        DType::U8 => (v as u8).to_le_bytes().to_vec(),
        DType::I32 => (v as i32).to_le_bytes().to_vec(),
        DType::U32 => (v as u32).to_le_bytes().to_vec(),
        DType::I64 => (v as i64).to_le_bytes().to_vec(),
        DType::U64 => (v as u64).to_le_bytes().to_vec(),
        other => panic!("{other} is not an integer dtype"),
    }
}

/// `v` wrapped to an integer `dtype`, as that dtype's value.
fn int_wrap(dtype: DType, v: i128) -> i128 {
    int_of(dtype, &int_bytes(dtype, v)).expect("an integer dtype")
}

/// `x ⊕ y` on exact integers: sums exact (terms of ≤ 64 bits, a few of
/// them, never overflow i128), products modulo 2^128 (their low 64 bits
/// are exact), so wrapping the result to the dtype gives the dtype's
/// wrapping arithmetic.
fn int_op(op: ReduceOp, x: i128, y: i128) -> i128 {
    match op {
        ReduceOp::Sum | ReduceOp::Avg => x + y,
        ReduceOp::Prod => x.wrapping_mul(y),
        ReduceOp::Min => x.min(y),
        ReduceOp::Max => x.max(y),
    }
}

/// IEEE arithmetic of f32 and f64 (each operation correctly rounded;
/// min/max are minNum/maxNum: a NaN loses to a number).
trait Ieee: Copy + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self> {
    fn min_num(self, o: Self) -> Self;
    fn max_num(self, o: Self) -> Self;
}

macro_rules! ieee {
    ($($t:ty),*) => {$(
        impl Ieee for $t {
            fn min_num(self, o: Self) -> Self {
                <$t>::min(self, o)
            }
            fn max_num(self, o: Self) -> Self {
                <$t>::max(self, o)
            }
        }
    )*};
}
ieee!(f32, f64);

fn float_op<T: Ieee>(op: ReduceOp, a: T, b: T) -> T {
    match op {
        ReduceOp::Sum | ReduceOp::Avg => a + b,
        ReduceOp::Prod => a * b,
        ReduceOp::Min => a.min_num(b),
        ReduceOp::Max => a.max_num(b),
    }
}

/// The multi-reducer for one element: `terms` (each one element of
/// `dtype`, as bytes) combined in order in the compute type, divided by
/// `avg` when it is not 0, stored once. The compute type's arithmetic is
/// IEEE f32 for f32, f16 and bf16 (round to nearest at each operation, as
/// the kernel's), IEEE f64 for f64, so this is the kernel's result exactly:
/// a sum of many terms in f32 is not the exact sum, and the reference
/// must not pretend it is. Integers are combined exactly (see `int_op`),
/// wrapped to the dtype once — the same as wrapping at every step — and
/// that wrapped value divided by `avg` truncating toward zero.
pub fn reduce_multi(op: ReduceOp, dtype: DType, terms: &[&[u8]], avg: u32) -> Vec<u8> {
    fn fold<T: Ieee>(op: ReduceOp, xs: impl Iterator<Item = T>) -> T {
        xs.reduce(|a, b| float_op(op, a, b)).expect("at least one term")
    }
    let two = |t: &[u8]| -> [u8; 2] { t[..2].try_into().unwrap() };
    let f32_of = |r: f32| if avg > 0 { r / avg as f32 } else { r };
    match dtype {
        DType::F32 => {
            let xs = terms.iter().map(|t| f32::from_le_bytes(t[..4].try_into().unwrap()));
            f32_of(fold(op, xs)).to_le_bytes().to_vec()
        }
        DType::F64 => {
            let r = fold(op, terms.iter().map(|t| f64::from_le_bytes(t[..8].try_into().unwrap())));
            (if avg > 0 { r / f64::from(avg) } else { r }).to_le_bytes().to_vec()
        }
        DType::F16 => {
            let xs = terms.iter().map(|t| f16::from_le_bytes(two(t)).to_f32());
            f16::from_f32(f32_of(fold(op, xs))).to_le_bytes().to_vec()
        }
        DType::BF16 => {
            let xs = terms.iter().map(|t| bf16::from_le_bytes(two(t)).to_f32());
            bf16::from_f32(f32_of(fold(op, xs))).to_le_bytes().to_vec()
        }
        DType::I8 | DType::U8 | DType::I32 | DType::U32 | DType::I64 | DType::U64 => {
            let exact = terms
                .iter()
                .map(|t| int_of(dtype, t).expect("an integer dtype"))
                .reduce(|x, y| int_op(op, x, y))
                .expect("at least one term");
            let r = int_wrap(dtype, exact);
            int_bytes(dtype, if avg > 0 { r / i128::from(avg) } else { r })
        }
    }
}

/// `x / world` for one element of `dtype` given as its bytes: floats in
/// f64, rounded once (exact for f32: the quotient of two f32-exact values
/// rounded through f64 is correctly rounded, as is f16/bf16 through f32
/// then f64; f64's own division is correctly rounded); integers divided
/// exactly, truncating toward zero (for any world, also one the dtype
/// cannot hold).
pub fn avg_div(dtype: DType, x: &[u8], world: u32) -> Vec<u8> {
    let w = f64::from(world);
    match dtype {
        DType::F32 => ((f64::from(f32::from_le_bytes(x.try_into().unwrap())) / w) as f32).to_le_bytes().to_vec(),
        DType::F64 => (f64::from_le_bytes(x.try_into().unwrap()) / w).to_le_bytes().to_vec(),
        DType::F16 => f16::from_f64(f16::from_le_bytes(x.try_into().unwrap()).to_f64() / w).to_le_bytes().to_vec(),
        DType::BF16 => bf16::from_f64(bf16::from_le_bytes(x.try_into().unwrap()).to_f64() / w).to_le_bytes().to_vec(),
        DType::I8 | DType::U8 | DType::I32 | DType::U32 | DType::I64 | DType::U64 => {
            int_bytes(dtype, int_of(dtype, x).expect("an integer dtype") / i128::from(world))
        }
    }
}

/// `a ⊕ b` for one element of `dtype` given as its bytes, computed exactly
/// (in f64 for f32, f16 and bf16, rounded once; f64's own operations are
/// correctly rounded; integers exactly, then wrapped) and returned as bytes.
pub fn reduce(op: ReduceOp, dtype: DType, a: &[u8], b: &[u8]) -> Vec<u8> {
    match dtype {
        DType::F32 => {
            let (x, y) = (f32::from_le_bytes(a.try_into().unwrap()), f32::from_le_bytes(b.try_into().unwrap()));
            // f64 has more than 2·24+2 bits, so rounding through it to f32 is still correctly rounded.
            (float_op(op, f64::from(x), f64::from(y)) as f32).to_le_bytes().to_vec()
        }
        DType::F64 => {
            let (x, y) = (f64::from_le_bytes(a.try_into().unwrap()), f64::from_le_bytes(b.try_into().unwrap()));
            float_op(op, x, y).to_le_bytes().to_vec()
        }
        DType::F16 => {
            let (x, y) = (f16::from_le_bytes(a.try_into().unwrap()), f16::from_le_bytes(b.try_into().unwrap()));
            f16::from_f64(float_op(op, x.to_f64(), y.to_f64())).to_le_bytes().to_vec()
        }
        DType::BF16 => {
            let (x, y) = (bf16::from_le_bytes(a.try_into().unwrap()), bf16::from_le_bytes(b.try_into().unwrap()));
            bf16::from_f64(float_op(op, x.to_f64(), y.to_f64())).to_le_bytes().to_vec()
        }
        DType::I8 | DType::U8 | DType::I32 | DType::U32 | DType::I64 | DType::U64 => {
            let int = |x: &[u8]| int_of(dtype, x).expect("an integer dtype");
            int_bytes(dtype, int_op(op, int(a), int(b)))
        }
    }
}
