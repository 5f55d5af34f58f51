//! Seeded inputs: every rank (thread or process) can compute every rank's
//! input of a call from the call alone, so each checks its own output
//! against the reference without seeing the others' data.

use oxccl::{DType, ReduceOp};

use crate::num::Num;

/// splitmix64
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Input of `rank`: small values so integer sums stay exact and products
/// stay finite; floats are multiples of 1/8 in (-21, 21) (in {-1, 1/2, 1,
/// 2} plus up to 7/8 for products), unsigned types non-negative.
pub fn input<T: Num>(rank: usize, len: usize, seed: u64, op: ReduceOp) -> Vec<T> {
    let mut rng = Rng(seed ^ (rank as u64 + 1).wrapping_mul(0x1234_5678_9ABC));
    (0..len)
        .map(|_| {
            let r = rng.next_u64();
            let v = match op {
                ReduceOp::Prod => [1.0, 2.0, 1.0, 0.5, 1.0, -1.0][(r % 6) as usize],
                _ => (r % 41) as f64 - 20.0,
            };
            let v = if T::DTYPE.is_float() { v + ((r >> 20) % 8) as f64 * 0.125 } else { v };
            let unsigned = matches!(T::DTYPE, DType::U8 | DType::U32 | DType::U64);
            T::from_f64(if unsigned { v.abs().round() } else { v })
        })
        .collect()
}
