//! Every kernel, compiled from the same source as its PTX, run on the host
//! emulator against the CPU reference (see oxccl_cuda::verify for the
//! sizes, poisoning and tolerances). Seeds are fresh each run and printed;
//! OXCCL_SEED=<seed> replays one.

use oxccl_cuda::rng::Rng;
use oxccl_cuda::verify::{self, Outcome};
use oxccl_cuda::{Activation, Emu};

fn assert_all_pass(what: &str, outcomes: &[Outcome]) {
    assert!(!outcomes.is_empty(), "{what}: no cases ran");
    let failed: Vec<String> = outcomes.iter().filter(|o| !o.passed()).map(|o| o.to_string()).collect();
    let worst = outcomes.iter().map(|o| o.worst).fold(0.0, f64::max);
    eprintln!(
        "{what}: {} cases, {} elements, worst rel err {worst:.2e}",
        outcomes.len(),
        outcomes.iter().map(|o| o.checked).sum::<usize>()
    );
    assert!(failed.is_empty(), "{what}: {} of {} cases failed:\n{}", failed.len(), outcomes.len(), failed.join("\n"));
}

fn seed() -> u64 {
    let s = Rng::seed_from_env();
    eprintln!("seed {s} (OXCCL_SEED={s} replays)");
    s
}

#[test]
fn relu_forward_and_backward_match_reference() {
    assert_all_pass("relu", &verify::activation(&mut Emu::default(), Activation::Relu, seed()).unwrap());
}

#[test]
fn gelu_forward_and_backward_match_reference() {
    assert_all_pass("gelu", &verify::activation(&mut Emu::default(), Activation::Gelu, seed()).unwrap());
}

#[test]
fn adam_matches_reference() {
    assert_all_pass("adam", &verify::adam(&mut Emu::default(), seed()).unwrap());
}

#[test]
fn reducer_matches_reference_for_every_op_and_dtype() {
    let outcomes = verify::reduce(&mut Emu::default(), seed()).unwrap();
    for (op, dtype) in verify::reduce_pairs() {
        let name = oxccl_cuda::kernels::reduce_kernel(op, dtype).unwrap();
        assert!(outcomes.iter().any(|o| o.kernel == name), "{name} never ran");
    }
    for dtype in oxccl_cuda::kernels::REDUCE_DTYPES {
        let name = oxccl_cuda::kernels::avg_kernel(dtype).unwrap();
        assert!(outcomes.iter().any(|o| o.kernel == name), "{name} never ran");
    }
    assert_all_pass("reduce", &outcomes);
}

/// The direct step's reducer: every op and dtype, many sources and
/// destinations, avg fused, bit for bit.
#[test]
fn multi_reducer_matches_reference() {
    let outcomes = verify::reduce_multi_at(&mut Emu::default(), seed(), &verify::MULTI_SIZES).unwrap();
    for (op, dtype) in verify::reduce_pairs() {
        let name = oxccl_cuda::kernels::reduce_multi_kernel(op, dtype).unwrap();
        assert!(outcomes.iter().any(|o| o.kernel == name && o.checked > 0), "{name} never ran");
    }
    assert_all_pass("reduce_multi", &outcomes);
}

#[test]
fn matmul_f32_matches_reference() {
    assert_all_pass("matmul_f32", &verify::matmul_f32(&mut Emu::default(), seed()).unwrap());
}

#[test]
fn matmul_bf16_matches_reference() {
    assert_all_pass("matmul_bf16", &verify::matmul_bf16(&mut Emu::default(), seed()).unwrap());
}

/// C = α·op(A)·op(B) + β·C for every transpose pair; β = 0 over a C of NaNs.
#[test]
fn gemm_f32_matches_reference() {
    assert_all_pass("gemm_f32", &verify::gemm(&mut Emu::default(), seed()).unwrap());
}

#[test]
fn bias_add_and_grad_match_reference() {
    assert_all_pass("bias", &verify::bias(&mut Emu::default(), seed()).unwrap());
}

#[test]
fn mse_matches_reference() {
    assert_all_pass("mse_f32", &verify::mse(&mut Emu::default(), seed()).unwrap());
}

/// A grid of two blocks: every thread goes round the grid-stride loops
/// several times, vector part and scalar tail.
#[test]
fn grid_stride_loops_cover_every_element_with_a_small_grid() {
    let mut emu = Emu::with_max_grid(2);
    let s = seed();
    let sizes = [5_003, 20_011];
    let mut outcomes = verify::activation_at(&mut emu, Activation::Gelu, s, &sizes).unwrap();
    outcomes.extend(verify::adam_at(&mut emu, s, &sizes).unwrap());
    outcomes.extend(verify::reduce_at(&mut emu, s, &sizes[..1]).unwrap());
    assert_all_pass("grid-stride", &outcomes);
}
