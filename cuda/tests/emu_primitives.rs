//! The emulator's own primitives against their definitions: warp shuffles
//! and the f16/bf16 conversions (against the `half` crate, exhaustively for
//! f16 → f32). The fragment layouts of ldmatrix and mma are checked through
//! matmul_bf16 in emu_kernels.rs.

use half::{bf16, f16};
use oxccl_cuda::emu::selftest;
use oxccl_cuda::rng::Rng;

#[test]
fn warp_shuffles_follow_cuda_semantics() {
    let threads = 96;
    let out = selftest::shuffles(threads).unwrap();
    for t in 0..threads {
        let (warp, lane) = (t / 32, t % 32);
        let value = |l: u32| 1000 * warp + l;
        let got = &out[4 * t as usize..4 * t as usize + 4];
        let down = if lane + 3 < 32 { value(lane + 3) } else { value(lane) };
        assert_eq!(got, [value(lane ^ 1), value(lane ^ 16), down, value(5)], "thread {t}");
    }
    assert!(selftest::shuffles(33).is_err());
}

#[test]
fn conversions_match_ieee_round_to_nearest_even() {
    let mut rng = Rng::new(Rng::seed_from_env());
    let mut input: Vec<f32> = (0..200_000).map(|_| f32::from_bits(rng.next_u64() as u32)).collect();
    input.extend([
        0.0,
        -0.0,
        65504.0,
        65519.99,
        65520.0,
        5.96e-8,
        2.98e-8,
        2.99e-8,
        6.1e-5,
        f32::INFINITY,
        1.0 + f32::EPSILON,
    ]);
    // Values halfway between neighbours, to pin ties-to-even.
    input.extend((0..1000u16).map(|h| ((f16::from_bits(h).to_f64() + f16::from_bits(h + 1).to_f64()) / 2.0) as f32));
    input.extend((0..1000u32).map(|i| f32::from_bits(0x3f80_8000 + (i << 16))));
    let (widened, to_f16, to_bf16) = selftest::conversions(&input);
    for (h, &w) in widened.iter().enumerate() {
        let want = f16::from_bits(h as u16).to_f32();
        assert!(w.to_bits() == want.to_bits() || (w.is_nan() && want.is_nan()), "f16 {h:#06x}: {w} vs {want}");
    }
    for (i, &x) in input.iter().enumerate() {
        let (want_h, want_b) = (f16::from_f32(x), bf16::from_f32(x));
        let (got_h, got_b) = (f16::from_bits(to_f16[i]), bf16::from_bits(to_bf16[i]));
        assert!(
            got_h.to_bits() == want_h.to_bits() || (got_h.is_nan() && want_h.is_nan()),
            "f32 {x:e} → f16: {got_h} vs {want_h}"
        );
        assert!(
            got_b.to_bits() == want_b.to_bits() || (got_b.is_nan() && want_b.is_nan()),
            "f32 {x:e} → bf16: {got_b} vs {want_b}"
        );
    }
}
