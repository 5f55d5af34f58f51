//! The CPU backend: buffers are `Vec<f32>`, matmul is `matrixmultiply`'s
//! sgemm through `ndarray`'s safe `general_mat_mul`, and large kernels are
//! split over rayon's pool.
//!
//! Why `ndarray` + `matrixmultiply`: `matrixmultiply` is the small,
//! long-maintained packed GEMM behind ndarray (BLIS-style micro-kernels with
//! run-time AVX/FMA detection, arbitrary row and column strides, so a
//! transposed operand is just a view, no copy). Its own entry points are
//! `unsafe fn`s on raw pointers, and this crate forbids `unsafe`; ndarray's
//! `general_mat_mul` is the safe wrapper that passes strided views straight
//! to it. `gemm`/`faer` are faster on very large matrices but also expose
//! raw-pointer APIs (gemm) or cost minutes of compile time on two cores
//! (faer); the engine's matrices are small to medium.
//!
//! Threads: a backend made with `threads > 1` splits a matmul's output into
//! that many blocks of rows (or of columns, whichever dimension is longer)
//! and runs one single-threaded sgemm per block on rayon's pool, once the
//! product has at least `PAR_MIN_FLOPS`; element-wise kernels split the same
//! way above `PAR_MIN_ELEMS`. Below those sizes everything runs on the
//! calling thread: the seed model's matrices (batch × 32 × 10) are far too
//! small to pay for a fork-join. Mirrored replicas are threads already, so
//! each replica gets `cores / replicas` threads.

use ndarray::{linalg::general_mat_mul, ArrayView2, ArrayViewMut2, Axis, Slice};
use rayon::prelude::*;

use super::{check_span, Activation, AdamStep, Backend, Dst, Gemm, Src};
use crate::error::Result;

/// Products smaller than this many flops run on the calling thread.
const PAR_MIN_FLOPS: u64 = 1 << 22;
/// Element-wise kernels on fewer elements run on the calling thread.
const PAR_MIN_ELEMS: usize = 1 << 16;

const GELU_C: f32 = 0.797_884_6; // √(2/π)
const GELU_A: f32 = 0.044_715;

/// The CPU backend; `threads` is how many blocks a large kernel is split into.
#[derive(Clone, Debug)]
pub struct CpuBackend {
    threads: usize,
}

impl CpuBackend {
    /// A backend that splits large kernels `threads` ways (at least 1).
    pub fn new(threads: usize) -> Self {
        CpuBackend { threads: threads.max(1) }
    }

    /// Everything on the calling thread.
    pub fn serial() -> Self {
        CpuBackend::new(1)
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` over `len`-element chunks of `data` in parallel when worth it.
    fn elementwise(&self, data: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync) {
        if self.threads > 1 && data.len() >= PAR_MIN_ELEMS {
            let chunk = data.len().div_ceil(self.threads);
            data.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i * chunk, c));
        } else {
            f(0, data);
        }
    }
}

/// The number of logical cores (1 if unknown).
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn span<'a>(op: &'static str, what: &str, buf: &'a [f32], offset: usize, len: usize) -> Result<&'a [f32]> {
    check_span(op, what, offset, len, buf.len())?;
    Ok(&buf[offset..offset + len])
}

fn span_mut<'a>(op: &'static str, what: &str, buf: &'a mut [f32], offset: usize, len: usize) -> Result<&'a mut [f32]> {
    check_span(op, what, offset, len, buf.len())?;
    Ok(&mut buf[offset..offset + len])
}

/// A stored row-major rows×cols matrix viewed as op(M).
fn view(data: &[f32], rows: usize, cols: usize, trans: bool) -> ArrayView2<'_, f32> {
    let v = ArrayView2::from_shape((rows, cols), data).expect("span checked");
    if trans {
        v.reversed_axes()
    } else {
        v
    }
}

fn gelu(z: f32) -> f32 {
    0.5 * z * (1.0 + (GELU_C * (z + GELU_A * z * z * z)).tanh())
}

fn gelu_grad(z: f32) -> f32 {
    let t = (GELU_C * (z + GELU_A * z * z * z)).tanh();
    0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * GELU_A * z * z)
}

impl Backend for CpuBackend {
    type Buf = Vec<f32>;

    fn name(&self) -> String {
        format!("cpu ({} thread{})", self.threads, if self.threads == 1 { "" } else { "s" })
    }

    fn alloc(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }

    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }

    fn upload(&self, dst: &mut Vec<f32>, offset: usize, src: &[f32]) -> Result<()> {
        span_mut("upload", "destination", dst, offset, src.len())?.copy_from_slice(src);
        Ok(())
    }

    fn download(&self, src: &Vec<f32>, offset: usize, dst: &mut [f32]) -> Result<()> {
        dst.copy_from_slice(span("download", "source", src, offset, dst.len())?);
        Ok(())
    }

    fn host<'a>(&self, buf: &'a Vec<f32>) -> Option<&'a [f32]> {
        Some(buf)
    }

    fn host_mut<'a>(&self, buf: &'a mut Vec<f32>) -> Option<&'a mut [f32]> {
        Some(buf)
    }

    fn matmul(&self, g: &Gemm, a: Src<'_, Vec<f32>>, b: Src<'_, Vec<f32>>, c: Dst<'_, Vec<f32>>) -> Result<()> {
        let Gemm { m, n, k, trans_a, trans_b, alpha, beta } = *g;
        let a = span("matmul", "A", a.buf, a.offset, m * k)?;
        let b = span("matmul", "B", b.buf, b.offset, k * n)?;
        let c = span_mut("matmul", "C", c.buf, c.offset, m * n)?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            // An empty sum: C = β·C (and C = 0 for β = 0, whatever C held).
            c.iter_mut().for_each(|v| *v = if beta == 0.0 { 0.0 } else { beta * *v });
            return Ok(());
        }
        let (ar, ac) = if trans_a { (k, m) } else { (m, k) };
        let (br, bc) = if trans_b { (n, k) } else { (k, n) };
        let a = view(a, ar, ac, trans_a);
        let b = view(b, br, bc, trans_b);
        let mut c = ArrayViewMut2::from_shape((m, n), c).expect("span checked");
        if self.threads == 1 || g.flops() < PAR_MIN_FLOPS {
            general_mat_mul(alpha, &a, &b, beta, &mut c);
            return Ok(());
        }
        // Split the longer output dimension into one block per thread.
        let axis = if m >= n { Axis(0) } else { Axis(1) };
        let block = c.len_of(axis).div_ceil(self.threads);
        let parts: Vec<_> = c.axis_chunks_iter_mut(axis, block).enumerate().collect();
        parts.into_par_iter().for_each(|(i, mut part)| {
            let range = i * block..i * block + part.len_of(axis);
            if axis == Axis(0) {
                general_mat_mul(alpha, &a.slice_axis(Axis(0), Slice::from(range)), &b, beta, &mut part);
            } else {
                general_mat_mul(alpha, &a, &b.slice_axis(Axis(1), Slice::from(range)), beta, &mut part);
            }
        });
        Ok(())
    }

    fn add_bias(&self, y: Dst<'_, Vec<f32>>, rows: usize, cols: usize, bias: Src<'_, Vec<f32>>) -> Result<()> {
        let y = span_mut("add_bias", "Y", y.buf, y.offset, rows * cols)?;
        let b = span("add_bias", "bias", bias.buf, bias.offset, cols)?;
        if cols == 0 {
            return Ok(());
        }
        let add_rows = |part: &mut [f32]| {
            for row in part.chunks_exact_mut(cols) {
                row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
            }
        };
        if self.threads > 1 && y.len() >= PAR_MIN_ELEMS {
            // Blocks of whole rows.
            let block = rows.div_ceil(self.threads) * cols;
            y.par_chunks_mut(block).for_each(add_rows);
        } else {
            add_rows(y);
        }
        Ok(())
    }

    fn bias_grad(&self, dy: Src<'_, Vec<f32>>, rows: usize, cols: usize, db: Dst<'_, Vec<f32>>) -> Result<()> {
        let dy = span("bias_grad", "dY", dy.buf, dy.offset, rows * cols)?;
        let db = span_mut("bias_grad", "db", db.buf, db.offset, cols)?;
        db.fill(0.0);
        if cols == 0 {
            return Ok(());
        }
        for row in dy.chunks_exact(cols) {
            for (d, v) in db.iter_mut().zip(row) {
                *d += v;
            }
        }
        Ok(())
    }

    fn activation(&self, f: Activation, z: Src<'_, Vec<f32>>, a: Dst<'_, Vec<f32>>, len: usize) -> Result<()> {
        let z = span("activation", "Z", z.buf, z.offset, len)?;
        let a = span_mut("activation", "A", a.buf, a.offset, len)?;
        self.elementwise(a, |start, out| {
            let z = &z[start..start + out.len()];
            match f {
                Activation::Linear => out.copy_from_slice(z),
                Activation::Relu => out.iter_mut().zip(z).for_each(|(o, &z)| *o = z.max(0.0)),
                Activation::Gelu => out.iter_mut().zip(z).for_each(|(o, &z)| *o = gelu(z)),
            }
        });
        Ok(())
    }

    fn activation_backward(&self, f: Activation, z: Src<'_, Vec<f32>>, g: Dst<'_, Vec<f32>>, len: usize) -> Result<()> {
        let z = span("activation_backward", "Z", z.buf, z.offset, len)?;
        let g = span_mut("activation_backward", "G", g.buf, g.offset, len)?;
        self.elementwise(g, |start, out| {
            let z = &z[start..start + out.len()];
            match f {
                Activation::Linear => {}
                // A mask, not a branch (signs of z are random), which vectorises.
                Activation::Relu => out.iter_mut().zip(z).for_each(|(g, &z)| {
                    *g = f32::from_bits(g.to_bits() & u32::from(z > 0.0).wrapping_neg());
                }),
                Activation::Gelu => out.iter_mut().zip(z).for_each(|(g, &z)| *g *= gelu_grad(z)),
            }
        });
        Ok(())
    }

    fn mse(
        &self,
        pred: Src<'_, Vec<f32>>,
        target: Src<'_, Vec<f32>>,
        dpred: Dst<'_, Vec<f32>>,
        loss: Dst<'_, Vec<f32>>,
        len: usize,
        scale: f32,
    ) -> Result<()> {
        let p = span("mse", "predictions", pred.buf, pred.offset, len)?;
        let t = span("mse", "targets", target.buf, target.offset, len)?;
        let d = span_mut("mse", "dP", dpred.buf, dpred.offset, len)?;
        let l = span_mut("mse", "loss", loss.buf, loss.offset, 1)?;
        let mut sum = 0f64;
        for ((d, &p), &t) in d.iter_mut().zip(p).zip(t) {
            let e = p - t;
            sum += f64::from(e) * f64::from(e);
            *d = 2.0 * scale * e;
        }
        l[0] = (sum * f64::from(scale)) as f32;
        Ok(())
    }

    fn adam(
        &self,
        step: &AdamStep,
        params: Dst<'_, Vec<f32>>,
        grads: Src<'_, Vec<f32>>,
        m: Dst<'_, Vec<f32>>,
        v: Dst<'_, Vec<f32>>,
        len: usize,
    ) -> Result<()> {
        let p = span_mut("adam", "parameters", params.buf, params.offset, len)?;
        let g = span("adam", "gradients", grads.buf, grads.offset, len)?;
        let m = span_mut("adam", "first moments", m.buf, m.offset, len)?;
        let v = span_mut("adam", "second moments", v.buf, v.offset, len)?;
        let alpha = step.alpha();
        let (b1, b2, eps) = (step.beta1, step.beta2, step.eps);
        let decay = step.lr * step.weight_decay;
        let update = |p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
            for i in 0..p.len() {
                if decay > 0.0 {
                    p[i] -= decay * p[i];
                }
                m[i] += (1.0 - b1) * (g[i] - m[i]);
                v[i] += (1.0 - b2) * (g[i] * g[i] - v[i]);
                p[i] -= alpha * m[i] / (v[i].sqrt() + eps);
            }
        };
        if self.threads > 1 && len >= PAR_MIN_ELEMS {
            let chunk = len.div_ceil(self.threads);
            p.par_chunks_mut(chunk)
                .zip(g.par_chunks(chunk))
                .zip(m.par_chunks_mut(chunk))
                .zip(v.par_chunks_mut(chunk))
                .for_each(|(((p, g), m), v)| update(p, g, m, v));
        } else {
            update(p, g, m, v);
        }
        Ok(())
    }
}
