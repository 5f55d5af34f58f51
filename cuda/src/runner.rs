//! One interface to run every kernel on host slices, implemented by the
//! host emulation ([`crate::emu::Emu`]) and by a GPU
//! ([`crate::gpu_runner::GpuRunner`], which copies in, launches, copies
//! out). The verification suite in [`crate::verify`] is written once
//! against it and runs on both.

use oxccl::{DType, ReduceOp};

use crate::error::{Error, Result};
use crate::kernels::{Activation, AdamParams, Gemm, MatDims};

pub trait Runner {
    /// "emu" or the device's name.
    fn name(&self) -> String;

    /// `y = act(x)`.
    fn activation_fwd(&mut self, act: Activation, x: &[f32], y: &mut [f32]) -> Result<()>;

    /// `dx = dy · act′(x)`.
    fn activation_bwd(&mut self, act: Activation, x: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()>;

    /// One AdamW step on `p`, `m`, `v` with gradient `g`.
    fn adam(&mut self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: &AdamParams) -> Result<()>;

    /// `c = a · b` in f32 on the SIMT cores.
    fn matmul_f32(&mut self, a: &[f32], b: &[f32], c: &mut [f32], dims: MatDims) -> Result<()>;

    /// `c = a · b` with bf16 operands on the tensor cores, f32 result.
    fn matmul_bf16(&mut self, a: &[half::bf16], b: &[half::bf16], c: &mut [f32], dims: MatDims) -> Result<()>;

    /// `c = α·op(a)·op(b) + β·c` in f32 (`gemm_f32`); β = 0 does not read `c`.
    fn gemm_f32(&mut self, a: &[f32], b: &[f32], c: &mut [f32], g: &Gemm) -> Result<()>;

    /// `y[r·cols + c] += b[c]` for a `rows × cols` y.
    fn bias_add_f32(&mut self, y: &mut [f32], b: &[f32], rows: usize, cols: usize) -> Result<()>;

    /// `db[c] = Σ_r dy[r·cols + c]` for a `rows × cols` dy, in the kernel's fixed order.
    fn bias_grad_f32(&mut self, dy: &[f32], db: &mut [f32], rows: usize, cols: usize) -> Result<()>;

    /// `dp = 2·scale·(p − t)` and the per-block partial sums of
    /// `scale·(p − t)²` into `partial`, which holds
    /// [`crate::kernels::mse_partials`]`(p.len())` elements; the loss is
    /// their sum in index order.
    fn mse_f32(&mut self, p: &[f32], t: &[f32], dp: &mut [f32], partial: &mut [f32], scale: f32) -> Result<()>;

    /// `dst[i] = a[i] ⊕ b[i]` on whole elements of `dtype`, as bytes.
    fn reduce(&mut self, op: ReduceOp, dtype: DType, dst: &mut [u8], a: &[u8], b: &[u8]) -> Result<()>;

    /// `acc[i] = acc[i] ⊕ b[i]` (the kernel with dst = a).
    fn reduce_in_place(&mut self, op: ReduceOp, dtype: DType, acc: &mut [u8], b: &[u8]) -> Result<()>;

    /// The direct step's reducer: every `dsts[j][i]` = `srcs[0][i] ⊕ ...`
    /// combined in order in the compute type (f32 for f16 and bf16),
    /// divided by `avg` when it is not 0, stored once.
    fn reduce_multi(
        &mut self,
        op: ReduceOp,
        dtype: DType,
        srcs: &[&[u8]],
        dsts: &mut [&mut [u8]],
        avg: u32,
    ) -> Result<()>;

    /// `acc[i] = acc[i] / world`: avg's final step.
    fn avg_div(&mut self, dtype: DType, acc: &mut [u8], world: u32) -> Result<()>;

    /// One signal kernel of `ptx/kernels/signal.cu` on three words:
    /// `words = [word, epoch, fault]`.
    fn signal(&mut self, sig: Signal, words: &mut [u64; 3]) -> Result<()>;
}

/// A launch of one signal kernel (see [`Runner::signal`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// `sig_write`: word = (epoch << 32) + offset.
    Write { offset: u64 },
    /// `sig_wait`: until word ≥ (epoch << 32) + offset, or `code` into
    /// fault after `timeout_ns`.
    Wait { offset: u64, timeout_ns: u64, code: u64 },
    /// `sig_advance`: epoch += 1.
    Advance,
}

/// Checks byte buffers for the reducer: equal lengths, whole elements,
/// each aligned for `dtype`. Returns the element count.
pub(crate) fn check_reduce_bytes(kernel: &'static str, dtype: DType, bufs: &[(&str, &[u8])]) -> Result<usize> {
    let size = dtype.size();
    let len = bufs[0].1.len();
    for (name, b) in bufs {
        if b.len() != len {
            return Err(Error::invalid(kernel, format!("{name} has {} bytes, {} has {len}", b.len(), bufs[0].0)));
        }
        if b.len() % size != 0 {
            return Err(Error::invalid(kernel, format!("{name} has {} bytes, not whole {dtype} elements", b.len())));
        }
        if b.as_ptr() as usize % size != 0 {
            return Err(Error::invalid(kernel, format!("{name} is not aligned for {dtype}")));
        }
    }
    Ok(len / size)
}
