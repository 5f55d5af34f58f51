//! CPU reducers: combine two byte buffers element-wise under a [`ReduceOp`].
//!
//! The executor works on raw bytes; these functions cast them to typed slices
//! (`bytemuck`, which panics on misalignment — callers guarantee alignment)
//! and run one monomorphized loop per (dtype, op). Every loop is a plain zip
//! over slices with no bounds checks and no unsafe code, so LLVM
//! autovectorizes it at the baseline target.
//!
//! Semantics:
//! * `Avg` reduces as `Sum`; `finalize` divides by the world size
//!   (integers truncate toward zero, as NCCL does; floats use a true
//!   division, not a multiplication by `1 / world`).
//! * Integer `Sum`/`Prod` wrap (two's complement).
//! * Float `Min`/`Max` follow `f32::min`/`f32::max` (IEEE 754 minNum/maxNum):
//!   if exactly one operand is NaN the other one is returned, so a NaN is
//!   only propagated when both inputs are NaN. Which zero `min(-0.0, +0.0)`
//!   returns is unspecified.
//! * `f16`/`bf16` are widened to `f32` in chunks of 256 elements (stack
//!   arrays, converted by `half`'s slice routines, which use F16C / FP16
//!   instructions when the CPU has them at run time), combined in `f32` and
//!   rounded back to nearest-even. For sums (and `Avg`'s division) this is a
//!   double rounding, so a result may rarely be one ulp off the correctly
//!   rounded one.

use crate::dtype::{DType, ReduceOp};
use bytemuck::Pod;
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// `dst[i] = a[i] ⊕ b[i]`; all three hold whole elements of `dtype`, same length.
///
/// # Panics
/// If the lengths differ, are not a multiple of the element size, or a
/// buffer is not aligned for `dtype`.
pub fn reduce(dtype: DType, op: ReduceOp, dst: &mut [u8], a: &[u8], b: &[u8]) {
    check_len(dtype, "reduce", dst.len(), a.len());
    check_len(dtype, "reduce", dst.len(), b.len());
    macro_rules! native {
        ($t:ty) => {
            binary::<$t>(op, cast_mut(dst), cast(a), cast(b))
        };
    }
    match dtype {
        DType::I8 => native!(i8),
        DType::U8 => native!(u8),
        DType::I32 => native!(i32),
        DType::U32 => native!(u32),
        DType::I64 => native!(i64),
        DType::U64 => native!(u64),
        DType::F32 => native!(f32),
        DType::F64 => native!(f64),
        DType::F16 => half_binary::<f16>(op, cast_mut(dst), Some(cast(a)), cast(b)),
        DType::BF16 => half_binary::<bf16>(op, cast_mut(dst), Some(cast(a)), cast(b)),
    }
}

/// `acc[i] = acc[i] ⊕ b[i]`
///
/// # Panics
/// As [`reduce`].
pub fn reduce_in_place(dtype: DType, op: ReduceOp, acc: &mut [u8], b: &[u8]) {
    check_len(dtype, "reduce_in_place", acc.len(), b.len());
    macro_rules! native {
        ($t:ty) => {
            in_place::<$t>(op, cast_mut(acc), cast(b))
        };
    }
    match dtype {
        DType::I8 => native!(i8),
        DType::U8 => native!(u8),
        DType::I32 => native!(i32),
        DType::U32 => native!(u32),
        DType::I64 => native!(i64),
        DType::U64 => native!(u64),
        DType::F32 => native!(f32),
        DType::F64 => native!(f64),
        DType::F16 => half_binary::<f16>(op, cast_mut(acc), None, cast(b)),
        DType::BF16 => half_binary::<bf16>(op, cast_mut(acc), None, cast(b)),
    }
}

/// The operator's final step on a complete reduction over `world` ranks:
/// `Avg` divides by `world` (integers truncate toward zero, as NCCL); the
/// other operators do nothing.
///
/// # Panics
/// If `world` is 0 (for `Avg`), or `acc` is not whole aligned elements.
pub fn finalize(dtype: DType, op: ReduceOp, world: usize, acc: &mut [u8]) {
    if op != ReduceOp::Avg {
        return;
    }
    assert!(world > 0, "finalize: world size must be positive");
    check_len(dtype, "finalize", acc.len(), acc.len());
    match dtype {
        DType::I8 => div_world::<i8>(cast_mut(acc), world),
        DType::U8 => div_world::<u8>(cast_mut(acc), world),
        DType::I32 => div_world::<i32>(cast_mut(acc), world),
        DType::U32 => div_world::<u32>(cast_mut(acc), world),
        DType::I64 => div_world::<i64>(cast_mut(acc), world),
        DType::U64 => div_world::<u64>(cast_mut(acc), world),
        DType::F32 => div_world::<f32>(cast_mut(acc), world),
        DType::F64 => div_world::<f64>(cast_mut(acc), world),
        DType::F16 => half_div_world::<f16>(cast_mut(acc), world),
        DType::BF16 => half_div_world::<bf16>(cast_mut(acc), world),
    }
}

/// Panics unless `x` and `y` are equal lengths of whole `dtype` elements.
/// Inlined to two compares (element sizes are powers of two: a mask, not a
/// division); the message is built off the hot path.
#[inline(always)]
fn check_len(dtype: DType, what: &'static str, x: usize, y: usize) {
    if x != y || x & (dtype.size() - 1) != 0 {
        bad_len(dtype, what, x, y);
    }
}

#[cold]
#[inline(never)]
fn bad_len(dtype: DType, what: &str, x: usize, y: usize) -> ! {
    assert!(x == y, "{what}: buffer lengths differ ({x} vs {y} bytes, dtype {dtype})");
    panic!("{what}: buffer length {x} is not a multiple of the {dtype} element size {}", dtype.size())
}

fn cast<T: Pod>(b: &[u8]) -> &[T] {
    bytemuck::cast_slice(b)
}

fn cast_mut<T: Pod>(b: &mut [u8]) -> &mut [T] {
    bytemuck::cast_slice_mut(b)
}

/// The element-wise operations of a native (directly computable) type.
trait Lane: Pod {
    fn sum(a: Self, b: Self) -> Self;
    fn prod(a: Self, b: Self) -> Self;
    fn min(a: Self, b: Self) -> Self;
    fn max(a: Self, b: Self) -> Self;
    /// Divides every element by `world` (> 0).
    fn div_all(acc: &mut [Self], world: usize);
}

macro_rules! int_lane {
    ($($t:ty),*) => {$(
        impl Lane for $t {
            #[inline(always)]
            fn sum(a: Self, b: Self) -> Self { a.wrapping_add(b) }
            #[inline(always)]
            fn prod(a: Self, b: Self) -> Self { a.wrapping_mul(b) }
            #[inline(always)]
            fn min(a: Self, b: Self) -> Self { Ord::min(a, b) }
            #[inline(always)]
            fn max(a: Self, b: Self) -> Self { Ord::max(a, b) }
            fn div_all(acc: &mut [Self], world: usize) {
                // `/` truncates toward zero. A world that does not fit in
                // the type (e.g. i8 with 128 ranks) is divided in i128.
                match <$t>::try_from(world) {
                    Ok(w) => acc.iter_mut().for_each(|x| *x /= w),
                    Err(_) => acc
                        .iter_mut()
                        .for_each(|x| *x = (*x as i128 / world as i128) as $t),
                }
            }
        }
    )*};
}
int_lane!(i8, u8, i32, u32, i64, u64);

macro_rules! float_lane {
    ($($t:ty),*) => {$(
        impl Lane for $t {
            #[inline(always)]
            fn sum(a: Self, b: Self) -> Self { a + b }
            #[inline(always)]
            fn prod(a: Self, b: Self) -> Self { a * b }
            #[inline(always)]
            fn min(a: Self, b: Self) -> Self { <$t>::min(a, b) }
            #[inline(always)]
            fn max(a: Self, b: Self) -> Self { <$t>::max(a, b) }
            fn div_all(acc: &mut [Self], world: usize) {
                let w = world as $t;
                acc.iter_mut().for_each(|x| *x /= w);
            }
        }
    )*};
}
float_lane!(f32, f64);

/// Expands `$body` once per op with `$f` bound to that op's function, so each
/// loop is monomorphized with the operation inlined (not an indirect call).
macro_rules! per_op {
    ($op:expr, $t:ty, |$f:ident| $body:expr) => {
        match $op {
            ReduceOp::Sum | ReduceOp::Avg => {
                let $f = <$t as Lane>::sum;
                $body
            }
            ReduceOp::Prod => {
                let $f = <$t as Lane>::prod;
                $body
            }
            ReduceOp::Min => {
                let $f = <$t as Lane>::min;
                $body
            }
            ReduceOp::Max => {
                let $f = <$t as Lane>::max;
                $body
            }
        }
    };
}

fn binary<T: Lane>(op: ReduceOp, dst: &mut [T], a: &[T], b: &[T]) {
    per_op!(op, T, |f| zip3(dst, a, b, f))
}

fn in_place<T: Lane>(op: ReduceOp, acc: &mut [T], b: &[T]) {
    per_op!(op, T, |f| zip2(acc, b, f))
}

#[inline(always)]
fn zip3<T: Copy>(dst: &mut [T], a: &[T], b: &[T], f: impl Fn(T, T) -> T) {
    for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
        *d = f(x, y);
    }
}

#[inline(always)]
fn zip2<T: Copy>(acc: &mut [T], b: &[T], f: impl Fn(T, T) -> T) {
    for (d, &y) in acc.iter_mut().zip(b) {
        *d = f(*d, y);
    }
}

fn div_world<T: Lane>(acc: &mut [T], world: usize) {
    T::div_all(acc, world);
}

/// Elements of `f16`/`bf16` widened to `f32` per step (two 1 KiB stack arrays).
const HALF_CHUNK: usize = 256;

/// `dst = a ⊕ b` for half types, or `dst = dst ⊕ b` when `a` is `None`.
fn half_binary<H: Pod>(op: ReduceOp, dst: &mut [H], a: Option<&[H]>, b: &[H])
where
    [H]: HalfFloatSliceExt,
{
    per_op!(op, f32, |f| half_chunks(dst, a, b, f))
}

#[inline(always)]
fn half_chunks<H: Pod>(dst: &mut [H], a: Option<&[H]>, b: &[H], f: impl Fn(f32, f32) -> f32)
where
    [H]: HalfFloatSliceExt,
{
    let mut fa = [0f32; HALF_CHUNK];
    let mut fb = [0f32; HALF_CHUNK];
    for (i, (d, y)) in dst.chunks_mut(HALF_CHUNK).zip(b.chunks(HALF_CHUNK)).enumerate() {
        let n = d.len();
        let (fa, fb) = (&mut fa[..n], &mut fb[..n]);
        match a {
            Some(a) => a[i * HALF_CHUNK..][..n].convert_to_f32_slice(fa),
            None => d.convert_to_f32_slice(fa),
        }
        y.convert_to_f32_slice(fb);
        zip2(fa, fb, &f);
        d.convert_from_f32_slice(fa);
    }
}

fn half_div_world<H: Pod>(acc: &mut [H], world: usize)
where
    [H]: HalfFloatSliceExt,
{
    let mut buf = [0f32; HALF_CHUNK];
    for d in acc.chunks_mut(HALF_CHUNK) {
        let buf = &mut buf[..d.len()];
        d.convert_to_f32_slice(buf);
        f32::div_all(buf, world);
        d.convert_from_f32_slice(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64: tiny seeded generator for test data.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        /// Uniform in [-r, r), with a sprinkle of exact zeros and tiny values.
        fn float(&mut self, r: f64) -> f64 {
            let u = self.next();
            let x = (u >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            match u & 15 {
                0 => 0.0,
                1 => x * 1e-3,
                _ => x * r,
            }
        }
    }

    const LENS: [usize; 6] = [0, 1, 7, 31, 257, 1000];

    /// A test view of one dtype: generate random elements, convert both ways
    /// through a wide reference value, compare with a tolerance.
    trait Ref: Pod + std::fmt::Debug {
        /// Reference value: f64 for floats, i128 for integers.
        type Wide: Copy + std::fmt::Debug;
        fn random(rng: &mut Rng) -> Self;
        fn wide(self) -> Self::Wide;
        /// Reference `a ⊕ b` computed wide, then rounded/wrapped to `Self`.
        fn op(op: ReduceOp, a: Self::Wide, b: Self::Wide) -> Self;
        /// Reference `Avg` finalize of `x` over `world` ranks.
        fn avg(x: Self::Wide, world: usize) -> Self;
        /// Within tolerance (exact for integers, 1 ulp for floats).
        fn close(got: Self, want: Self) -> bool;
    }

    macro_rules! int_ref {
        ($($t:ty),*) => {$(
            impl Ref for $t {
                type Wide = i128;
                fn random(rng: &mut Rng) -> Self {
                    // Mostly full-range (to exercise wrapping), sometimes small.
                    let r = rng.next();
                    if r & 3 == 0 { ((r >> 60) as i64 - 8) as $t } else { (r >> 8) as $t }
                }
                fn wide(self) -> i128 { self as i128 }
                fn op(op: ReduceOp, a: i128, b: i128) -> Self {
                    (match op {
                        ReduceOp::Sum | ReduceOp::Avg => a + b,
                        ReduceOp::Prod => a.wrapping_mul(b),
                        ReduceOp::Min => a.min(b),
                        ReduceOp::Max => a.max(b),
                    }) as $t
                }
                fn avg(x: i128, world: usize) -> Self {
                    (x / world as i128) as $t
                }
                fn close(got: Self, want: Self) -> bool { got == want }
            }
        )*};
    }
    int_ref!(i8, u8, i32, u32, i64, u64);

    /// Monotone integer key of a float bit pattern (so ulp distance is a
    /// difference of keys; +0 and -0 share key 0).
    fn key(bits: u64, width: u32) -> i64 {
        let sign = 1u64 << (width - 1);
        let mag = (bits & (sign - 1)) as i64;
        if bits & sign != 0 {
            -mag
        } else {
            mag
        }
    }

    macro_rules! float_ref {
        ($($t:ty: $width:expr, $bits:ty, $from:expr, $to:expr);* $(;)?) => {$(
            impl Ref for $t {
                type Wide = f64;
                fn random(rng: &mut Rng) -> Self {
                    ($from)(rng.float(8.0))
                }
                fn wide(self) -> f64 { ($to)(self) }
                fn op(op: ReduceOp, a: f64, b: f64) -> Self {
                    ($from)(match op {
                        ReduceOp::Sum | ReduceOp::Avg => a + b,
                        ReduceOp::Prod => a * b,
                        ReduceOp::Min => a.min(b),
                        ReduceOp::Max => a.max(b),
                    })
                }
                fn avg(x: f64, world: usize) -> Self {
                    ($from)(x / world as f64)
                }
                fn close(got: Self, want: Self) -> bool {
                    let g: $bits = bytemuck::cast(got);
                    let w: $bits = bytemuck::cast(want);
                    (key(g as u64, $width) - key(w as u64, $width)).abs() <= 1
                }
            }
        )*};
    }
    float_ref! {
        f32: 32, u32, |x: f64| x as f32, |x: f32| x as f64;
        f64: 64, u64, |x: f64| x, |x: f64| x;
        f16: 16, u16, f16::from_f64, f16::to_f64;
        bf16: 16, u16, bf16::from_f64, bf16::to_f64;
    }

    fn random_vec<T: Ref>(rng: &mut Rng, n: usize) -> Vec<T> {
        (0..n).map(|_| T::random(rng)).collect()
    }

    fn check_dtype<T: Ref>(dtype: DType, seed: u64) {
        assert_eq!(dtype.size(), size_of::<T>());
        let mut rng = Rng(seed);
        for op in ReduceOp::ALL {
            for n in LENS {
                let a = random_vec::<T>(&mut rng, n);
                let b = random_vec::<T>(&mut rng, n);
                let want: Vec<T> = a.iter().zip(&b).map(|(&x, &y)| T::op(op, x.wide(), y.wide())).collect();
                let ok = |got: &[T], what: &str| {
                    for i in 0..n {
                        assert!(
                            T::close(got[i], want[i]),
                            "{what} {dtype} {op} n={n} i={i}: {:?} ⊕ {:?} = {:?}, want {:?}",
                            a[i],
                            b[i],
                            got[i],
                            want[i]
                        );
                    }
                };

                let mut dst = vec![T::zeroed(); n];
                reduce(
                    dtype,
                    op,
                    bytemuck::cast_slice_mut(&mut dst),
                    bytemuck::cast_slice(&a),
                    bytemuck::cast_slice(&b),
                );
                ok(&dst, "reduce");

                let mut acc = a.clone();
                reduce_in_place(dtype, op, bytemuck::cast_slice_mut(&mut acc), bytemuck::cast_slice(&b));
                ok(&acc, "reduce_in_place");

                // finalize is a no-op for everything but Avg.
                if op != ReduceOp::Avg {
                    finalize(dtype, op, 3, bytemuck::cast_slice_mut(&mut acc));
                    ok(&acc, "finalize(no-op)");
                }
            }
        }
        // finalize(Avg) on random values, including world sizes that do not
        // fit in the type (i8/u8).
        for world in [1usize, 2, 3, 7, 200, 1000] {
            for n in LENS {
                let x = random_vec::<T>(&mut rng, n);
                let mut acc = x.clone();
                finalize(dtype, ReduceOp::Avg, world, bytemuck::cast_slice_mut(&mut acc));
                for i in 0..n {
                    let want = T::avg(x[i].wide(), world);
                    assert!(
                        T::close(acc[i], want),
                        "finalize avg {dtype} world={world} i={i}: {:?} -> {:?}, want {:?}",
                        x[i],
                        acc[i],
                        want
                    );
                }
            }
        }
    }

    #[test]
    fn all_dtypes_and_ops_match_reference() {
        check_dtype::<i8>(DType::I8, 1);
        check_dtype::<u8>(DType::U8, 2);
        check_dtype::<i32>(DType::I32, 3);
        check_dtype::<u32>(DType::U32, 4);
        check_dtype::<i64>(DType::I64, 5);
        check_dtype::<u64>(DType::U64, 6);
        check_dtype::<f16>(DType::F16, 7);
        check_dtype::<bf16>(DType::BF16, 8);
        check_dtype::<f32>(DType::F32, 9);
        check_dtype::<f64>(DType::F64, 10);
    }

    #[test]
    fn avg_end_to_end_truncates_toward_zero() {
        // Three ranks contribute -5, -1, -1: sum -7, avg -7/3 = -2 (not -3).
        let ranks: [[i32; 2]; 3] = [[-5, 5], [-1, 1], [-1, 1]];
        let mut acc = ranks[0];
        for r in &ranks[1..] {
            reduce_in_place(DType::I32, ReduceOp::Avg, bytemuck::cast_slice_mut(&mut acc), bytemuck::cast_slice(r));
        }
        finalize(DType::I32, ReduceOp::Avg, 3, bytemuck::cast_slice_mut(&mut acc));
        assert_eq!(acc, [-2, 2]);

        // i8: world 200 does not fit; -128 / 200 truncates to 0, and
        // -128 / 128 (world 128 > i8::MAX) is -1.
        let mut v: [i8; 2] = [-128, 127];
        finalize(DType::I8, ReduceOp::Avg, 128, bytemuck::cast_slice_mut(&mut v));
        assert_eq!(v, [-1, 0]);

        let mut f = [1.0f32, -7.0, 0.5];
        finalize(DType::F32, ReduceOp::Avg, 4, bytemuck::cast_slice_mut(&mut f));
        assert_eq!(f, [0.25, -1.75, 0.125]);

        let mut h = [f16::from_f32(-3.0), f16::from_f32(6.0)];
        finalize(DType::F16, ReduceOp::Avg, 2, bytemuck::cast_slice_mut(&mut h));
        assert_eq!(h, [f16::from_f32(-1.5), f16::from_f32(3.0)]);
    }

    #[test]
    fn float_min_max_ignore_a_single_nan() {
        let a = [f32::NAN, 1.0, f32::NAN];
        let b = [2.0f32, f32::NAN, f32::NAN];
        let mut d = [0f32; 3];
        reduce(
            DType::F32,
            ReduceOp::Min,
            bytemuck::cast_slice_mut(&mut d),
            bytemuck::cast_slice(&a),
            bytemuck::cast_slice(&b),
        );
        assert_eq!(&d[..2], &[2.0, 1.0]);
        assert!(d[2].is_nan());
        // Sum propagates NaN as usual.
        reduce(
            DType::F32,
            ReduceOp::Sum,
            bytemuck::cast_slice_mut(&mut d),
            bytemuck::cast_slice(&a),
            bytemuck::cast_slice(&b),
        );
        assert!(d.iter().all(|x| x.is_nan()));
    }

    #[test]
    fn half_types_overflow_and_nan() {
        let a = [f16::from_f32(60000.0), f16::NAN, f16::ONE];
        let b = [f16::from_f32(60000.0), f16::ONE, f16::NAN];
        let mut d = [f16::ZERO; 3];
        let (dst, x, y) = (bytemuck::cast_slice_mut(&mut d), bytemuck::cast_slice(&a), bytemuck::cast_slice(&b));
        reduce(DType::F16, ReduceOp::Sum, dst, x, y);
        assert_eq!(d[0], f16::INFINITY);
        assert!(d[1].is_nan() && d[2].is_nan());
        let dst = bytemuck::cast_slice_mut(&mut d);
        reduce(DType::F16, ReduceOp::Max, dst, x, y);
        assert_eq!(d, [f16::from_f32(60000.0), f16::ONE, f16::ONE]);

        let mut acc = [bf16::MAX, bf16::NAN];
        let b = [bf16::MAX, bf16::ONE];
        let acc_bytes = bytemuck::cast_slice_mut(&mut acc);
        reduce_in_place(DType::BF16, ReduceOp::Sum, acc_bytes, bytemuck::cast_slice(&b));
        assert_eq!(acc[0], bf16::INFINITY);
        assert!(acc[1].is_nan());
    }

    #[test]
    fn half_chunk_boundaries_in_place() {
        // Lengths around HALF_CHUNK multiples, in place and out of place.
        for n in [HALF_CHUNK - 1, HALF_CHUNK, HALF_CHUNK + 1, 3 * HALF_CHUNK + 5] {
            // Values below 256 are exact in bf16.
            let a: Vec<bf16> = (0..n).map(|i| bf16::from_f32((i % 128) as f32)).collect();
            let b: Vec<bf16> = (0..n).map(|i| bf16::from_f32(1.0 - (i % 128) as f32)).collect();
            let mut acc = a.clone();
            reduce_in_place(DType::BF16, ReduceOp::Sum, bytemuck::cast_slice_mut(&mut acc), bytemuck::cast_slice(&b));
            assert!(acc.iter().all(|&x| x == bf16::ONE), "n={n}");
        }
    }

    #[test]
    #[should_panic(expected = "buffer lengths differ")]
    fn length_mismatch_panics() {
        let mut d = [0u8; 8];
        reduce(DType::I32, ReduceOp::Sum, &mut d, &[0u8; 8], &[0u8; 4]);
    }

    #[test]
    #[should_panic(expected = "not a multiple")]
    fn partial_element_panics() {
        let mut d = [0u8; 6];
        reduce_in_place(DType::I32, ReduceOp::Sum, &mut d, &[0u8; 6]);
    }
}
