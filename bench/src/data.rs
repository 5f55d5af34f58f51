//! Inputs with closed-form results, and the count of wrong output elements.
//!
//! Every input element is a small integer given by a pattern of (rank, index),
//! so each expected output element has a closed form, independent of the
//! order in which an algorithm combines contributions:
//!
//! * reductions (sum, min, max, avg): `(7·rank + 3·index) mod 11`, shifted to
//!   −5..5 for signed and float types. Partial sums stay exact integers in
//!   every float type up to 25 ranks (bf16: 8 significant bits); integer sums
//!   wrap, and the expected value wraps the same way.
//! * prod: 2 where `(rank + index) mod 3 = 0`, else 1, so products are powers
//!   of two: exact in floats, wrapping in integers.
//! * avg: the sum divided by the world size; integers truncate toward zero.
//! * data movement (all_gather, broadcast, alltoall): `(37·rank + index) mod
//!   251`, so a block in the wrong place or shifted by one shows.
//!
//! Floats compare with a relative tolerance of a few units in the last place
//! per rank (f16/bf16 reducers round through f32; avg divides), integers
//! exactly. Outputs are poisoned (integers: the type's maximum, floats: NaN)
//! before the checked run, so an element never written counts as wrong.

use half::{bf16, f16};
use oxccl::{Collective, Element, ReduceOp};

/// An element type the harness can fill and check.
pub trait Value: Element {
    /// The value of a small integer (wrapping for integer types).
    fn of(x: i64) -> Self;
    /// True for signed integers and floats (patterns may go negative).
    const SIGNED: bool;
    /// A value no pattern produces, written where output is expected.
    const POISON: Self;
    /// The expected result of combining `xs` (one per rank, in rank order).
    fn combine(op: ReduceOp, xs: &mut dyn Iterator<Item = i64>, world: usize) -> Self;
    /// Whether `got` is acceptably close to `want`.
    fn matches(got: Self, want: Self, world: usize) -> bool;
}

macro_rules! int_value {
    ($($t:ty: $signed:expr),* $(,)?) => {$(
        impl Value for $t {
            fn of(x: i64) -> Self {
                x as $t
            }
            const SIGNED: bool = $signed;
            const POISON: Self = <$t>::MAX;
            fn combine(op: ReduceOp, xs: &mut dyn Iterator<Item = i64>, world: usize) -> Self {
                let first = xs.next().map_or(0, |x| x as $t);
                let r = xs.fold(first, |acc, x| {
                    let x = x as $t;
                    match op {
                        ReduceOp::Sum | ReduceOp::Avg => acc.wrapping_add(x),
                        ReduceOp::Prod => acc.wrapping_mul(x),
                        ReduceOp::Min => acc.min(x),
                        ReduceOp::Max => acc.max(x),
                    }
                });
                if op == ReduceOp::Avg {
                    // Truncating division of the (wrapped) sum.
                    (r as i128 / world.max(1) as i128) as $t
                } else {
                    r
                }
            }
            fn matches(got: Self, want: Self, _world: usize) -> bool {
                got == want
            }
        }
    )*};
}
int_value!(i8: true, u8: false, i32: true, u32: false, i64: true, u64: false);

macro_rules! float_value {
    ($($t:ty: $from:expr, $to:expr, $eps:expr, $nan:expr),* $(,)?) => {$(
        impl Value for $t {
            fn of(x: i64) -> Self {
                $from(x as f64)
            }
            const SIGNED: bool = true;
            const POISON: Self = $nan;
            fn combine(op: ReduceOp, xs: &mut dyn Iterator<Item = i64>, world: usize) -> Self {
                // Exact in f64 for every pattern; rounded once to the type.
                let first = xs.next().map_or(0.0, |x| x as f64);
                let r = xs.fold(first, |acc, x| {
                    let x = x as f64;
                    match op {
                        ReduceOp::Sum | ReduceOp::Avg => acc + x,
                        ReduceOp::Prod => acc * x,
                        ReduceOp::Min => acc.min(x),
                        ReduceOp::Max => acc.max(x),
                    }
                });
                let r = if op == ReduceOp::Avg { r / world.max(1) as f64 } else { r };
                $from(r)
            }
            fn matches(got: Self, want: Self, world: usize) -> bool {
                let (g, w): (f64, f64) = ($to(got), $to(want));
                if g == w {
                    return true; // also equal infinities
                }
                let tol = $eps * (world as f64 + 2.0);
                (g - w).abs() <= tol * w.abs().max(1.0)
            }
        }
    )*};
}
float_value!(
    f32: |x: f64| x as f32, |v: f32| v as f64, f32::EPSILON as f64, f32::NAN,
    f64: |x: f64| x, |v: f64| v, f64::EPSILON, f64::NAN,
    f16: f16::from_f64, f16::to_f64, f16::EPSILON.to_f64_const(), f16::NAN,
    bf16: bf16::from_f64, bf16::to_f64, bf16::EPSILON.to_f64_const(), bf16::NAN,
);

/// Calls `$body` with `$T` the Rust type of a [`oxccl::DType`].
#[macro_export]
macro_rules! with_dtype {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            oxccl::DType::I8 => {
                type $T = i8;
                $body
            }
            oxccl::DType::U8 => {
                type $T = u8;
                $body
            }
            oxccl::DType::I32 => {
                type $T = i32;
                $body
            }
            oxccl::DType::U32 => {
                type $T = u32;
                $body
            }
            oxccl::DType::I64 => {
                type $T = i64;
                $body
            }
            oxccl::DType::U64 => {
                type $T = u64;
                $body
            }
            oxccl::DType::F16 => {
                type $T = half::f16;
                $body
            }
            oxccl::DType::BF16 => {
                type $T = half::bf16;
                $body
            }
            oxccl::DType::F32 => {
                type $T = f32;
                $body
            }
            oxccl::DType::F64 => {
                type $T = f64;
                $body
            }
        }
    };
}

/// Reduction patterns repeat every 11 (sum, min, max, avg) or 3 (prod)
/// elements.
const REDUCTION_PERIOD: usize = 33;

/// What a rank's data depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    pub collective: Collective,
    pub op: ReduceOp,
    pub world: usize,
    /// Per-rank count, NCCL's convention.
    pub count: usize,
    pub root: usize,
}

impl Case {
    /// Input element `index` of `rank`, as a small integer.
    pub fn input(&self, signed: bool, rank: usize, index: usize) -> i64 {
        if !self.collective.reduces() {
            return ((37 * rank + index) % 251) as i64;
        }
        if self.op == ReduceOp::Prod {
            return match (rank + index) % 3 {
                0 => 2,
                _ => 1,
            };
        }
        let v = ((7 * rank + 3 * index) % 11) as i64;
        if signed {
            v - 5
        } else {
            v
        }
    }

    /// Fills `rank`'s input buffer.
    pub fn fill_input<T: Value>(&self, rank: usize, input: &mut [T]) {
        for (i, x) in input.iter_mut().enumerate() {
            *x = T::of(self.input(T::SIGNED, rank, i));
        }
    }

    /// True when `rank` has a defined output (reduce: only the root).
    pub fn has_output(&self, rank: usize) -> bool {
        match self.collective {
            Collective::Reduce => rank == self.root,
            Collective::Barrier => false,
            _ => true,
        }
    }

    /// The reduction over all ranks of input element `index`.
    fn reduced<T: Value>(&self, index: usize) -> T {
        let mut xs = (0..self.world).map(|q| self.input(T::SIGNED, q, index));
        T::combine(self.op, &mut xs, self.world)
    }

    /// Expected output element `j` of `rank` (which [`Case::has_output`]).
    pub fn expected<T: Value>(&self, rank: usize, j: usize) -> T {
        let c = self.count;
        let pick = |q: usize, index: usize| T::of(self.input(T::SIGNED, q, index));
        match self.collective {
            Collective::AllReduce | Collective::Reduce => self.reduced(j),
            Collective::ReduceScatter => self.reduced(rank * c + j),
            Collective::AllGather => pick(j / c, j % c),
            Collective::Broadcast => pick(self.root, j),
            Collective::AllToAll => pick(j / c, rank * c + j % c),
            Collective::Barrier => T::of(0),
        }
    }

    /// Output elements of `rank` that differ from the expected values (0 when
    /// the rank has no defined output). `output` holds exactly the output.
    pub fn count_wrong<T: Value>(&self, rank: usize, output: &[T]) -> usize {
        if !self.has_output(rank) {
            return 0;
        }
        let wrong = |(_, &got): (usize, &T), want: T| usize::from(!T::matches(got, want, self.world));
        let elems = output.iter().enumerate();
        if self.collective.reduces() {
            // A reduction of input element `index` depends only on `index mod
            // REDUCTION_PERIOD`: reduce each residue once.
            let table: Vec<T> = (0..REDUCTION_PERIOD).map(|i| self.reduced(i)).collect();
            let base = if self.collective == Collective::ReduceScatter { rank * self.count } else { 0 };
            elems.map(|e| wrong(e, table[(base + e.0) % REDUCTION_PERIOD])).sum()
        } else {
            elems.map(|e| wrong(e, self.expected::<T>(rank, e.0))).sum()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxccl::DType;
    use Collective::*;

    fn case(collective: Collective, op: ReduceOp, world: usize, count: usize) -> Case {
        Case { collective, op, world, count, root: 1 % world }
    }

    /// Simulates each collective directly from its definition.
    fn simulate<T: Value>(cs: &Case) -> Vec<Vec<T>> {
        let (n, c) = (cs.world, cs.count);
        let inputs: Vec<Vec<T>> = (0..n)
            .map(|r| {
                let mut v = vec![T::POISON; cs.collective.input_len(n, c)];
                cs.fill_input(r, &mut v);
                v
            })
            .collect();
        let red = |a: T, b: T| -> T {
            // Only used for exact cases in these tests: combine pairs via i64.
            let to = |x: T| -> i64 {
                let w: f64 = with_f64(x);
                w as i64
            };
            let xs = [to(a), to(b)];
            let op = if cs.op == ReduceOp::Avg { ReduceOp::Sum } else { cs.op };
            T::combine(op, &mut xs.into_iter(), n)
        };
        (0..n)
            .map(|r| {
                let len = cs.collective.output_len(n, c);
                (0..len)
                    .map(|j| match cs.collective {
                        AllReduce | Reduce => (1..n).fold(inputs[0][j], |acc, q| red(acc, inputs[q][j])),
                        ReduceScatter => (1..n).fold(inputs[0][r * c + j], |acc, q| red(acc, inputs[q][r * c + j])),
                        AllGather => inputs[j / c][j % c],
                        Broadcast => inputs[cs.root][j],
                        AllToAll => inputs[j / c][r * c + j % c],
                        Barrier => T::POISON,
                    })
                    .collect()
            })
            .collect()
    }

    fn with_f64<T: Value>(x: T) -> f64 {
        // All test types here are small integers; go through bytes.
        let b = bytemuck::bytes_of(&x);
        match T::DTYPE {
            DType::I8 => b[0] as i8 as f64,
            DType::U8 => b[0] as f64,
            DType::I32 => i32::from_ne_bytes(b.try_into().unwrap()) as f64,
            DType::F32 => f32::from_ne_bytes(b.try_into().unwrap()) as f64,
            DType::F64 => f64::from_ne_bytes(b.try_into().unwrap()),
            d => unreachable!("{d}"),
        }
    }

    fn check_against_simulation<T: Value>() {
        for collective in [AllReduce, ReduceScatter, AllGather, Broadcast, Reduce, AllToAll] {
            for op in [ReduceOp::Sum, ReduceOp::Prod, ReduceOp::Min, ReduceOp::Max] {
                for world in [1, 2, 3, 5] {
                    let cs = case(collective, op, world, 13);
                    let outs = simulate::<T>(&cs);
                    for (r, out) in outs.iter().enumerate() {
                        assert_eq!(cs.count_wrong(r, out), 0, "{cs:?} rank {r}");
                        if cs.has_output(r) && !out.is_empty() {
                            // Poison is always wrong; so is a shifted output.
                            let mut bad = out.clone();
                            bad[3] = T::POISON;
                            assert_eq!(cs.count_wrong(r, &bad), 1, "{cs:?} rank {r}");
                            let shifted: Vec<T> = out[1..].iter().copied().chain([out[0]]).collect();
                            if !collective.reduces() || op == ReduceOp::Sum {
                                assert!(cs.count_wrong(r, &shifted) > 0, "{cs:?} rank {r}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn expected_values_match_a_direct_simulation() {
        check_against_simulation::<i8>();
        check_against_simulation::<u8>();
        check_against_simulation::<i32>();
        check_against_simulation::<f32>();
        check_against_simulation::<f64>();
    }

    #[test]
    fn closed_forms() {
        // Sum over 4 ranks of (7r + 3j) mod 11 - 5 at j = 0: (0 + 7 + 3 + 10) - 20.
        let cs = case(AllReduce, ReduceOp::Sum, 4, 8);
        assert_eq!(cs.expected::<i32>(0, 0), 0);
        assert_eq!(cs.expected::<u32>(0, 0), 20);
        assert_eq!(cs.expected::<f32>(2, 0), 0.0);
        // Avg truncates on integers: (7 + 3 + 10 + 0 + ...) at j=1.
        let avg = case(AllReduce, ReduceOp::Avg, 3, 8);
        // j = 1: inputs 3, 10, 6 (unsigned) → 19 / 3 = 6.
        assert_eq!(avg.expected::<u8>(0, 1), 6);
        assert!((avg.expected::<f64>(0, 1) - (19.0 - 15.0) / 3.0).abs() < 1e-15);
        // Prod: powers of two.
        let p = case(AllReduce, ReduceOp::Prod, 6, 8);
        assert_eq!(p.expected::<f32>(0, 0), 4.0);
        assert_eq!(p.expected::<i8>(0, 0), 4);
        // Wrapping products: 2^9 over 27 ranks wraps to 0 in u8.
        let p = case(AllReduce, ReduceOp::Prod, 27, 1);
        assert_eq!(p.expected::<u8>(0, 0), 0);
        assert_eq!(p.expected::<i32>(0, 0), 512);
    }

    #[test]
    fn half_types() {
        let cs = case(AllReduce, ReduceOp::Sum, 4, 8);
        assert_eq!(cs.expected::<f16>(0, 0), f16::from_f32(0.0));
        assert_eq!(cs.expected::<bf16>(0, 2), bf16::from_f32(cs.expected::<f32>(0, 2)));
        let avg = case(AllReduce, ReduceOp::Avg, 3, 8);
        let want = avg.expected::<f16>(0, 1);
        let off_by_one_ulp = f16::from_bits(want.to_bits() + 1);
        assert!(f16::matches(off_by_one_ulp, want, 3));
        assert!(!f16::matches(f16::from_f32(want.to_f32() + 1.0), want, 3));
        assert!(!bf16::matches(bf16::NAN, bf16::from_f32(1.0), 3));
        assert!(f32::matches(f32::INFINITY, f32::INFINITY, 3));
        assert!(!f32::matches(f32::NAN, f32::NAN, 3));
    }

    #[test]
    fn periodic_table_matches_the_closed_form() {
        for collective in [AllReduce, ReduceScatter, Reduce] {
            for op in ReduceOp::ALL {
                let cs = Case { collective, op, world: 5, count: 100, root: 2 };
                let len = collective.output_len(5, 100);
                let want: Vec<i32> = (0..len).map(|j| cs.expected(2, j)).collect();
                assert_eq!(cs.count_wrong(2, &want), 0, "{cs:?}");
                let mut bad = want.clone();
                bad[len - 1] = bad[len - 1].wrapping_add(1);
                assert_eq!(cs.count_wrong(2, &bad), 1, "{cs:?}");
            }
        }
    }

    #[test]
    fn reduce_checks_only_the_root() {
        let cs = case(Reduce, ReduceOp::Sum, 3, 4);
        assert_eq!(cs.root, 1);
        assert_eq!(cs.count_wrong::<i32>(0, &[i32::MAX; 4]), 0);
        assert_eq!(cs.count_wrong::<i32>(1, &[i32::MAX; 4]), 4);
    }

    #[test]
    fn dispatch_macro() {
        for d in DType::ALL {
            let size = with_dtype!(d, T => std::mem::size_of::<T>());
            assert_eq!(size, d.size());
            let dt = with_dtype!(d, T => <T as Element>::DTYPE);
            assert_eq!(dt, d);
        }
    }
}
