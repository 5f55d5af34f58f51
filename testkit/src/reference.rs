//! The expected output of every collective, computed sequentially in f64
//! from all ranks' inputs, and the comparison of an output with it.

use oxccl::{Collective, ReduceOp};

use crate::num::Num;

/// `a op b` in f64 (avg sums; [`reduced`] divides at the end).
pub fn combine(op: ReduceOp, a: f64, b: f64) -> f64 {
    match op {
        ReduceOp::Sum | ReduceOp::Avg => a + b,
        ReduceOp::Prod => a * b,
        ReduceOp::Min => a.min(b),
        ReduceOp::Max => a.max(b),
    }
}

/// Element `i` of the reduction of all ranks' inputs `ins`, rounded to `T`
/// (integers' averages truncated, as the reducers do).
pub fn reduced<T: Num>(op: ReduceOp, ins: &[Vec<T>], i: usize) -> f64 {
    let n = ins.len();
    let mut acc = ins[0][i].to_f64();
    for x in &ins[1..] {
        acc = combine(op, acc, x[i].to_f64());
    }
    if op == ReduceOp::Avg {
        acc /= n as f64;
        if !T::DTYPE.is_float() {
            acc = acc.trunc();
        }
    }
    T::from_f64(acc).to_f64()
}

/// The output of `rank` after `c` (per-rank `count`, `root`) from all ranks'
/// inputs `ins`, in f64. A reduce's non-root ranks keep what their output
/// held: in place their input, out of place [`Num::poison`].
pub fn expected<T: Num>(
    c: Collective,
    op: ReduceOp,
    ins: &[Vec<T>],
    rank: usize,
    count: usize,
    root: usize,
    in_place: bool,
) -> Vec<f64> {
    let n = ins.len();
    match c {
        Collective::AllReduce => (0..count).map(|i| reduced(op, ins, i)).collect(),
        Collective::ReduceScatter => (0..count).map(|j| reduced(op, ins, rank * count + j)).collect(),
        Collective::AllGather => (0..n * count).map(|j| ins[j / count][j % count].to_f64()).collect(),
        Collective::Broadcast => ins[root].iter().map(|v| v.to_f64()).collect(),
        Collective::Reduce if rank == root => (0..count).map(|i| reduced(op, ins, i)).collect(),
        Collective::Reduce if in_place => ins[rank].iter().map(|v| v.to_f64()).collect(),
        Collective::Reduce => vec![T::poison().to_f64(); count],
        Collective::AllToAll => (0..n * count).map(|j| ins[j / count][rank * count + j % count].to_f64()).collect(),
        Collective::Barrier => vec![],
    }
}

/// How `got` differs from `want` beyond the relative tolerance `tol`
/// (`None`: it does not): the number of wrong elements and the first.
pub fn compare<T: Num>(got: &[T], want: &[f64], tol: f64) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!("{} elements, expected {}", got.len(), want.len()));
    }
    let off = |j: usize| {
        let (g, w) = (got[j].to_f64(), want[j]);
        g.is_nan() || (g - w).abs() > tol * w.abs().max(1.0)
    };
    let bad: Vec<usize> = (0..got.len()).filter(|&j| off(j)).collect();
    let &first = bad.first()?;
    Some(format!(
        "{} of {} elements wrong; first at [{first}]: got {:?}, want {}",
        bad.len(),
        got.len(),
        got[first],
        want[first]
    ))
}
