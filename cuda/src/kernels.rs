//! Every kernel the Rust side launches: its `.entry` name, its PTX module,
//! and its launch shape. GPU launches and emulated launches take their
//! shapes from here, so both run the kernel exactly alike.

use oxccl::{DType, ReduceOp};

use crate::error::{Error, Result};

/// Threads per block of the 1-D elementwise kernels (activations, Adam, reducer).
pub const ELEMENTWISE_BLOCK: u32 = 256;
/// Most blocks an elementwise launch uses; the kernels are grid-stride loops.
pub const ELEMENTWISE_MAX_GRID: u32 = 8192;
/// Output tile of both matmul kernels (rows × columns of C per block).
pub const MATMUL_TILE: u32 = 128;
/// Threads per block of both matmul kernels.
pub const MATMUL_BLOCK: u32 = 256;

/// Grid and block of a launch (the kernels use x and y only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub grid: (u32, u32),
    pub block: u32,
}

/// Shape for an elementwise kernel over `n` elements, `per_thread` per vector step.
pub fn elementwise_shape(n: usize, per_thread: usize) -> Shape {
    elementwise_shape_capped(n, per_thread, ELEMENTWISE_MAX_GRID)
}

/// As [`elementwise_shape`] with at most `max_grid` blocks (≥ 1).
pub fn elementwise_shape_capped(n: usize, per_thread: usize, max_grid: u32) -> Shape {
    let work = n.div_ceil(per_thread).max(1);
    let blocks = work.div_ceil(ELEMENTWISE_BLOCK as usize).min(max_grid.max(1) as usize);
    Shape { grid: (blocks as u32, 1), block: ELEMENTWISE_BLOCK }
}

/// Shape for either matmul kernel producing an `m × n` C.
pub fn matmul_shape(m: usize, n: usize) -> Shape {
    let t = MATMUL_TILE as usize;
    Shape { grid: (n.div_ceil(t) as u32, m.div_ceil(t) as u32), block: MATMUL_BLOCK }
}

/// Threads per block of `bias_grad_f32` (8 row groups of 32 columns).
pub const BIAS_GRAD_BLOCK: u32 = 256;
/// Columns of dY per `bias_grad_f32` block.
pub const BIAS_GRAD_COLS: u32 = 32;
/// Most blocks (so most partial sums) of one `mse_f32` launch.
pub const MSE_MAX_GRID: u32 = 1024;

/// Shape of `gemm_f32` producing an `m × n` C (the matmul tiling).
pub fn gemm_shape(m: usize, n: usize) -> Shape {
    matmul_shape(m, n)
}

/// Shape of `bias_grad_f32` over `cols` columns: ⌈cols/32⌉ blocks (≥ 1).
pub fn bias_grad_shape(cols: usize) -> Shape {
    let blocks = cols.div_ceil(BIAS_GRAD_COLS as usize).max(1);
    Shape { grid: (blocks as u32, 1), block: BIAS_GRAD_BLOCK }
}

/// Shape of `mse_f32` over `n` elements: min(⌈n/256⌉, [`MSE_MAX_GRID`])
/// blocks, at least 1. Each block writes one partial sum, so this is also
/// the length of the `partial` buffer ([`mse_partials`]).
pub fn mse_shape(n: usize) -> Shape {
    elementwise_shape_capped(n, 1, MSE_MAX_GRID)
}

/// How many partial sums `mse_f32` writes for `n` elements (≥ 1, ≤ [`MSE_MAX_GRID`]).
pub fn mse_partials(n: usize) -> usize {
    mse_shape(n).grid.0 as usize
}

/// The activation functions with kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Relu,
    /// GELU, tanh approximation.
    Gelu,
}

impl Activation {
    pub const ALL: [Activation; 2] = [Activation::Relu, Activation::Gelu];

    pub fn fwd_kernel(self) -> &'static str {
        match self {
            Activation::Relu => "relu_fwd_f32",
            Activation::Gelu => "gelu_fwd_f32",
        }
    }

    pub fn bwd_kernel(self) -> &'static str {
        match self {
            Activation::Relu => "relu_bwd_f32",
            Activation::Gelu => "gelu_bwd_f32",
        }
    }
}

/// The reducer's dtypes: every oxccl dtype (NCCL's).
pub const REDUCE_DTYPES: [DType; 10] = [
    DType::F32,
    DType::F64,
    DType::F16,
    DType::BF16,
    DType::I8,
    DType::U8,
    DType::I32,
    DType::U32,
    DType::I64,
    DType::U64,
];
/// The reducer's operations (`Avg` is `Sum` followed by the host's finalize).
pub const REDUCE_OPS: [ReduceOp; 4] = [ReduceOp::Sum, ReduceOp::Prod, ReduceOp::Min, ReduceOp::Max];

/// `[[prefix{op}_{dtype}; ops]; dtypes]` for [`REDUCE_OPS`] and the
/// dtypes' suffixes in [`REDUCE_DTYPES`] order (a unit test checks both).
macro_rules! op_names {
    ($prefix:literal) => {
        op_names!($prefix; "f32", "f64", "f16", "bf16", "i8", "u8", "i32", "u32", "i64", "u64")
    };
    ($prefix:literal; $($ty:literal),*) => {
        [$([
            concat!($prefix, "sum_", $ty),
            concat!($prefix, "prod_", $ty),
            concat!($prefix, "min_", $ty),
            concat!($prefix, "max_", $ty),
        ]),*]
    };
}

/// `reduce_{op}_{dtype}`, or an error for a pair without a kernel.
pub fn reduce_kernel(op: ReduceOp, dtype: DType) -> Result<&'static str> {
    const NAMES: [[&str; 4]; REDUCE_DTYPES.len()] = op_names!("reduce_");
    let d = REDUCE_DTYPES.iter().position(|&d| d == dtype);
    let o = REDUCE_OPS.iter().position(|&o| o == op);
    match (d, o) {
        (Some(d), Some(o)) => Ok(NAMES[d][o]),
        _ => Err(Error::invalid("reduce", format!("no reducer kernel for {op} on {dtype}"))),
    }
}

/// Most sources, and most destinations, of one multi-reducer launch.
pub const MULTI_MAX: usize = 8;

/// The multi-reducer's parameter: up to [`MULTI_MAX`] source and
/// destination addresses (device pointers), passed by value as
/// `OxkMultiPtrs` in `ptx/kernels/reduce.cu`; unused entries are 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MultiPtrs {
    pub src: [u64; MULTI_MAX],
    pub dst: [u64; MULTI_MAX],
}

// SAFETY: plain old data of the kernel parameter's C layout (16 64-bit
// addresses, no padding), passed by value.
unsafe impl cudarc::driver::DeviceRepr for MultiPtrs {}

/// Checks a multi-reducer call on regions (device memory named by
/// address): 1 ..= [`MULTI_MAX`] sources, at most as many destinations,
/// all of one length in whole `dtype` elements. The element count.
pub fn check_multi_regions(
    kernel: &'static str,
    dtype: DType,
    srcs: &[oxccl::mem::Region],
    dsts: &[oxccl::mem::Region],
) -> Result<usize> {
    let len = srcs.first().map_or(0, |r| r.len());
    if srcs.is_empty() || srcs.len() > MULTI_MAX || dsts.len() > MULTI_MAX {
        return Err(Error::invalid(kernel, format!("{} sources and {} destinations", srcs.len(), dsts.len())));
    }
    if srcs.iter().chain(dsts).any(|r| r.len() != len) || len % dtype.size() != 0 {
        return Err(Error::invalid(kernel, "regions of unequal lengths or not whole elements"));
    }
    Ok(len / dtype.size())
}

/// The `.entry` of the direct step's reducer (many sources, many
/// destinations, avg fused) for `op` on `dtype`.
pub fn reduce_multi_kernel(op: ReduceOp, dtype: DType) -> Result<&'static str> {
    const NAMES: [[&str; 4]; REDUCE_DTYPES.len()] = op_names!("reduce_multi_");
    let d = REDUCE_DTYPES.iter().position(|&d| d == dtype);
    let o = REDUCE_OPS.iter().position(|&o| o == op);
    match (d, o) {
        (Some(d), Some(o)) => Ok(NAMES[d][o]),
        _ => Err(Error::invalid("reduce_multi", format!("no reducer kernel for {op} on {dtype}"))),
    }
}

/// The `.entry` of avg's final step (`d = d / world`) on `dtype`.
pub fn avg_kernel(dtype: DType) -> Result<&'static str> {
    const NAMES: [&str; REDUCE_DTYPES.len()] = [
        "avg_div_f32",
        "avg_div_f64",
        "avg_div_f16",
        "avg_div_bf16",
        "avg_div_i8",
        "avg_div_u8",
        "avg_div_i32",
        "avg_div_u32",
        "avg_div_i64",
        "avg_div_u64",
    ];
    match REDUCE_DTYPES.iter().position(|&d| d == dtype) {
        Some(d) => Ok(NAMES[d]),
        None => Err(Error::invalid("avg", format!("no division kernel for {dtype}"))),
    }
}

/// The signal kernels of the stream-ordered collectives (ptx/kernels/signal.cu),
/// each launched as one block of one thread.
pub const SIG_WRITE: &str = "sig_write";
pub const SIG_WAIT: &str = "sig_wait";
pub const SIG_ADVANCE: &str = "sig_advance";

/// Every kernel name with the module (ptx/kernels file) that holds it.
pub fn all_kernels() -> Vec<(&'static str, &'static str)> {
    let mut v = vec![
        ("relu_fwd_f32", "activation"),
        ("relu_bwd_f32", "activation"),
        ("gelu_fwd_f32", "activation"),
        ("gelu_bwd_f32", "activation"),
        ("adam_f32", "adam"),
        ("matmul_f32", "matmul_f32"),
        ("matmul_bf16", "matmul_bf16"),
        ("gemm_f32", "dense"),
        ("bias_add_f32", "dense"),
        ("bias_grad_f32", "dense"),
        ("mse_f32", "dense"),
        (SIG_WRITE, "signal"),
        (SIG_WAIT, "signal"),
        (SIG_ADVANCE, "signal"),
    ];
    for d in REDUCE_DTYPES {
        for o in REDUCE_OPS {
            v.push((reduce_kernel(o, d).expect("every listed pair has a kernel"), "reduce"));
        }
        v.push((avg_kernel(d).expect("every reducer dtype has one"), "reduce"));
        for o in REDUCE_OPS {
            v.push((reduce_multi_kernel(o, d).expect("every listed pair has a kernel"), "reduce"));
        }
    }
    v
}

/// Module of a kernel name.
pub fn module_of(kernel: &str) -> Option<&'static str> {
    all_kernels().into_iter().find(|(k, _)| *k == kernel).map(|(_, m)| m)
}

/// Hyper-parameters of one AdamW step (see ptx/kernels/adam.cu).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamParams {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Step number, from 1.
    pub step: u32,
}

impl AdamParams {
    /// Bias corrections (1 − β1^t, 1 − β2^t), computed in f64.
    pub fn bias_corrections(&self) -> (f32, f32) {
        let t = i32::try_from(self.step).unwrap_or(i32::MAX);
        ((1.0 - f64::from(self.beta1).powi(t)) as f32, (1.0 - f64::from(self.beta2).powi(t)) as f32)
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.step == 0 {
            return Err(Error::invalid("adam_f32", "step counts from 1"));
        }
        Ok(())
    }
}

/// Sizes of C = A·B: A is m×k, B is k×n, C is m×n, all row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatDims {
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

impl MatDims {
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        MatDims { m, n, k }
    }

    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }

    /// Checks the three lengths and that every size fits the kernels' `int`s.
    pub(crate) fn check(&self, kernel: &'static str, a: usize, b: usize, c: usize) -> Result<(i32, i32, i32)> {
        let MatDims { m, n, k } = *self;
        let fit = |v: usize| i32::try_from(v).ok();
        let (Some(mi), Some(ni), Some(ki)) = (fit(m), fit(n), fit(k)) else {
            return Err(Error::invalid(kernel, format!("{m}×{n}×{k} exceeds the kernel's 32-bit sizes")));
        };
        for (what, got, need) in [("A", a, m * k), ("B", b, k * n), ("C", c, m * n)] {
            if got != need {
                return Err(Error::invalid(kernel, format!("{what} has {got} elements, {m}×{n}×{k} needs {need}")));
            }
        }
        Ok((mi, ni, ki))
    }
}

/// C = α·op(A)·op(B) + β·C, row-major (see ptx/kernels/dense.cu): op(A)
/// is m×k (A is k×m when `trans_a`), op(B) is k×n (B is n×k when
/// `trans_b`), C is m×n. β = 0 overwrites C without reading it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f32,
    pub beta: f32,
}

impl Gemm {
    pub fn dims(&self) -> MatDims {
        MatDims::new(self.m, self.n, self.k)
    }

    /// The kernel's integer arguments (M, N, K, trans_a, trans_b), after
    /// checking the lengths of A, B, C (A and B hold m·k and k·n elements
    /// whether transposed or not).
    pub(crate) fn check(&self, a: usize, b: usize, c: usize) -> Result<[i32; 5]> {
        let (m, n, k) = self.dims().check("gemm_f32", a, b, c)?;
        Ok([m, n, k, i32::from(self.trans_a), i32::from(self.trans_b)])
    }
}

/// Checks `rows × cols` Y (or dY) against a `cols` vector; `rows·cols`.
pub(crate) fn check_bias(kernel: &'static str, y: usize, b: usize, rows: usize, cols: usize) -> Result<usize> {
    let Some(elems) = rows.checked_mul(cols) else {
        return Err(Error::invalid(kernel, format!("{rows}×{cols} overflows")));
    };
    if y != elems || b != cols {
        return Err(Error::invalid(
            kernel,
            format!("{y} and {b} elements for {rows}×{cols} (need {elems} and {cols})"),
        ));
    }
    Ok(elems)
}

/// Checks `mse_f32`'s lengths: P, T, dP of one length n, `partial` of
/// [`mse_partials`]\(n). Returns n.
pub(crate) fn check_mse(p: usize, t: usize, dp: usize, partial: usize) -> Result<usize> {
    let n = same_len("mse_f32", &[("P", p), ("T", t), ("dP", dp)])?;
    let want = mse_partials(n);
    if partial != want {
        return Err(Error::invalid("mse_f32", format!("partial has {partial} elements, {n} elements need {want}")));
    }
    Ok(n)
}

/// Checks that every slice length equals the first.
pub(crate) fn same_len(kernel: &'static str, lens: &[(&str, usize)]) -> Result<usize> {
    let n = lens.first().map(|l| l.1).unwrap_or(0);
    if let Some((name, len)) = lens.iter().find(|l| l.1 != n) {
        return Err(Error::invalid(kernel, format!("{name} has {len} elements, {} has {n}", lens[0].0)));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each name table row belongs to its dtype and op: `{prefix}{op}_{dtype}`.
    #[test]
    fn reducer_names_follow_dtype_and_op_order() {
        let suffix = |d: DType| match d {
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::I32 => "i32",
            DType::U32 => "u32",
            DType::I64 => "i64",
            DType::U64 => "u64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
            DType::F64 => "f64",
        };
        for d in REDUCE_DTYPES {
            let t = suffix(d);
            for o in REDUCE_OPS {
                assert_eq!(reduce_kernel(o, d).unwrap(), format!("reduce_{}_{t}", o.name()));
                assert_eq!(reduce_multi_kernel(o, d).unwrap(), format!("reduce_multi_{}_{t}", o.name()));
            }
            assert_eq!(avg_kernel(d).unwrap(), format!("avg_div_{t}"));
        }
        assert!(reduce_kernel(ReduceOp::Avg, DType::F32).is_err());
    }
}
