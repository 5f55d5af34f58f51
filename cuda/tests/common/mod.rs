//! What the device-collective tests share: inputs whose sums are exact,
//! device buffers to and from the host, and the expected outputs of every
//! collective (a sequential reduction on the host).

#![allow(dead_code)]

use std::sync::Arc;

use oxccl::{Call, Collective, DType, ReduceOp};
use oxccl_cuda::{EmuBuffer, EmuDevice};

/// Rank `r`'s input element `i`: small integers, so every sum is exact.
pub fn value(r: usize, i: usize) -> f32 {
    ((r * 7 + i * 3) % 11) as f32 - 5.0
}

pub fn upload(dev: &Arc<EmuDevice>, data: &[f32]) -> EmuBuffer {
    let buf = dev.alloc(data.len() * 4).unwrap();
    buf.upload(bytemuck::cast_slice(data)).unwrap();
    buf
}

pub fn floats(buf: &EmuBuffer) -> Vec<f32> {
    buf.download().chunks_exact(4).map(|b| f32::from_ne_bytes(b.try_into().unwrap())).collect()
}

/// A float sum all-reduce of `count` elements, algorithm left to the communicator.
pub fn sum_f32(count: usize) -> Call {
    Call { collective: Collective::AllReduce, dtype: DType::F32, op: ReduceOp::Sum, count, root: 0, algorithm: None }
}

/// The terms combined under `op` (avg: their sum over their number; the
/// inputs are small integers, so every order of summing gives the same).
pub fn combine(op: ReduceOp, terms: impl Iterator<Item = f32>) -> f32 {
    let terms: Vec<f32> = terms.collect();
    let folded = terms
        .iter()
        .copied()
        .reduce(|a, b| match op {
            ReduceOp::Sum | ReduceOp::Avg => a + b,
            ReduceOp::Prod => a * b,
            ReduceOp::Max => a.max(b),
            ReduceOp::Min => a.min(b),
        })
        .expect("at least one rank");
    match op {
        ReduceOp::Avg => folded / terms.len() as f32,
        _ => folded,
    }
}

/// What rank `r` of `n` must hold after `c` of `count` (NCCL's counts),
/// with inputs from [`value`]; `None` where the output is not written
/// (reduce on a rank other than the root).
pub fn expected(c: Collective, op: ReduceOp, n: usize, r: usize, count: usize, root: usize) -> Option<Vec<f32>> {
    let all = |i: usize| combine(op, (0..n).map(|p| value(p, i)));
    Some(match c {
        Collective::AllReduce => (0..count).map(all).collect(),
        Collective::Reduce if r != root => return None,
        Collective::Reduce => (0..count).map(all).collect(),
        Collective::ReduceScatter => (0..count).map(|i| all(r * count + i)).collect(),
        Collective::AllGather => (0..n * count).map(|j| value(j / count, j % count)).collect(),
        Collective::Broadcast => (0..count).map(|i| value(root, i)).collect(),
        Collective::AllToAll => (0..n * count).map(|j| value(j / count, r * count + j % count)).collect(),
        other => panic!("{other} is not checked here"),
    })
}
