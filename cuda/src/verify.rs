//! The verification suite: every kernel against its CPU reference
//! ([`crate::reference`]) on fresh random inputs at awkward sizes (not
//! multiples of any tile or vector width, plus misaligned views that force
//! the scalar paths), outputs poisoned before each run, every element
//! checked. Written once against [`Runner`]: the tests run it on the host
//! emulation, `oxccl-gpu-check` on a GPU.

use half::bf16;
use oxccl::{DType, ReduceOp};

use crate::error::Result;
use crate::kernels::{Activation, AdamParams, Gemm, MatDims, REDUCE_DTYPES, REDUCE_OPS};
use crate::reference::{self, Ref};
use crate::rng::Rng;
use crate::runner::Runner;

/// Relative error bound for f32 kernels.
pub const TOL_F32: f64 = 1e-5;
/// Relative error bound for kernels with bf16 operands.
pub const TOL_BF16: f64 = 1e-2;

/// Element counts for the elementwise kernels.
pub const SIZES: [usize; 5] = [1, 3, 37, 1_003, 10_007];

/// (m, n, k) for the matmuls: edges in every dimension, both staging paths
/// (k and n multiples of 4 / 8 take the vector / cp.async path), and a
/// degenerate one.
pub const MATMUL_DIMS: [(usize, usize, usize); 4] = [(1, 1, 1), (131, 77, 67), (150, 132, 100), (200, 136, 264)];

/// The result of checking one kernel on one case.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub kernel: String,
    pub case: String,
    pub seed: u64,
    pub checked: usize,
    pub failures: usize,
    /// Largest error relative to the reference's scale (0 for exact kernels).
    pub worst: f64,
    pub tol: f64,
    /// The first failing element, described.
    pub first_bad: Option<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.failures == 0 && self.checked > 0
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} [{}] {}: {} checked, {} wrong, worst rel err {:.2e} (tol {:.0e}), seed {}",
            if self.passed() { "ok  " } else { "FAIL" },
            self.kernel,
            self.case,
            self.checked,
            self.failures,
            self.worst,
            self.tol,
            self.seed
        )?;
        if let Some(b) = &self.first_bad {
            write!(f, "; first bad: {b}")?;
        }
        Ok(())
    }
}

/// Compares f32 outputs with references: error = |got − value| / scale.
pub fn compare(kernel: &str, case: &str, seed: u64, got: &[f32], refs: &[Ref], tol: f64) -> Outcome {
    let mut o = Outcome {
        kernel: kernel.into(),
        case: case.into(),
        seed,
        checked: got.len(),
        failures: 0,
        worst: 0.0,
        tol,
        first_bad: None,
    };
    if got.len() != refs.len() {
        o.failures = got.len().max(refs.len());
        o.first_bad = Some(format!("{} outputs for {} references", got.len(), refs.len()));
        return o;
    }
    for (i, (&g, r)) in got.iter().zip(refs).enumerate() {
        let g = f64::from(g);
        let err = if g == r.value {
            0.0
        } else if r.scale > 0.0 && g.is_finite() {
            (g - r.value).abs() / r.scale
        } else {
            f64::INFINITY
        };
        if err > o.worst || err.is_nan() {
            o.worst = if err.is_nan() { f64::INFINITY } else { err };
        }
        if err.is_nan() || err > tol {
            o.failures += 1;
            if o.first_bad.is_none() {
                o.first_bad = Some(format!("[{i}] got {g:e}, want {:e} (scale {:e})", r.value, r.scale));
            }
        }
    }
    o
}

fn inputs(rng: &mut Rng, n: usize, lo: f32, hi: f32, specials: &[f32]) -> Vec<f32> {
    let mut v = rng.vec_f32(n, lo, hi);
    for (slot, &s) in v.iter_mut().zip(specials) {
        *slot = s;
    }
    v
}

/// Allocates `n + offset` f32 and returns the vector; callers view `[offset..]`
/// so an offset of 1 gives a base that is 4- but not 16-byte aligned.
fn views(n: usize, offset: usize) -> Vec<f32> {
    vec![f32::NAN; n + offset]
}

/// Activation forward and backward at every size, aligned and misaligned.
pub fn activation(r: &mut dyn Runner, act: Activation, seed: u64) -> Result<Vec<Outcome>> {
    activation_at(r, act, seed, &SIZES)
}

/// [`activation`] at the given sizes.
pub fn activation_at(r: &mut dyn Runner, act: Activation, seed: u64, sizes: &[usize]) -> Result<Vec<Outcome>> {
    let mut rng = Rng::new(seed);
    let specials = [0.0, -0.0, 1e-30, -1e-30, 6.0, -6.0, 0.5, -0.75];
    let mut out = Vec::new();
    for &n in sizes {
        for offset in [0, 1] {
            let case = format!("n={n}{}", if offset > 0 { " misaligned" } else { "" });
            let mut xs = views(n, offset);
            xs[offset..].copy_from_slice(&inputs(&mut rng, n, -6.0, 6.0, &specials));
            let x = &xs[offset..];
            let mut ys = views(n, offset);
            r.activation_fwd(act, x, &mut ys[offset..])?;
            let refs: Vec<Ref> = x.iter().map(|&v| reference::activation_fwd(act, v)).collect();
            out.push(compare(act.fwd_kernel(), &case, seed, &ys[offset..], &refs, TOL_F32));

            let mut dys = views(n, offset);
            dys[offset..].copy_from_slice(&rng.vec_f32(n, -2.0, 2.0));
            let mut dxs = views(n, offset);
            r.activation_bwd(act, x, &dys[offset..], &mut dxs[offset..])?;
            let refs: Vec<Ref> =
                x.iter().zip(&dys[offset..]).map(|(&v, &d)| reference::activation_bwd(act, v, d)).collect();
            out.push(compare(act.bwd_kernel(), &case, seed, &dxs[offset..], &refs, TOL_F32));
        }
    }
    Ok(out)
}

/// AdamW at every size, with and without weight decay, aligned and misaligned.
pub fn adam(r: &mut dyn Runner, seed: u64) -> Result<Vec<Outcome>> {
    adam_at(r, seed, &SIZES)
}

/// [`adam`] at the given sizes.
pub fn adam_at(r: &mut dyn Runner, seed: u64, sizes: &[usize]) -> Result<Vec<Outcome>> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for &n in sizes {
        for (offset, weight_decay) in [(0, 0.01), (1, 0.0)] {
            let h = AdamParams {
                lr: rng.f32_in(1e-4, 1e-2),
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay,
                step: 1 + rng.below(1000) as u32,
            };
            let case =
                format!("n={n} step={} wd={weight_decay}{}", h.step, if offset > 0 { " misaligned" } else { "" });
            let fill = |rng: &mut Rng, lo: f32, hi: f32| {
                let mut v = views(n, offset);
                v[offset..].copy_from_slice(&rng.vec_f32(n, lo, hi));
                v
            };
            let (mut p, g, mut m, mut v) = (
                fill(&mut rng, -1.0, 1.0),
                fill(&mut rng, -0.1, 0.1),
                fill(&mut rng, -0.1, 0.1),
                fill(&mut rng, 0.0, 0.01),
            );
            let refs: Vec<[Ref; 3]> =
                (offset..offset + n).map(|i| reference::adam(p[i], g[i], m[i], v[i], &h)).collect();
            r.adam(&mut p[offset..], &g[offset..], &mut m[offset..], &mut v[offset..], &h)?;
            for (slot, (name, got)) in [("p", &p), ("m", &m), ("v", &v)].into_iter().enumerate() {
                let want: Vec<Ref> = refs.iter().map(|r3| r3[slot]).collect();
                out.push(compare("adam_f32", &format!("{case} {name}"), seed, &got[offset..], &want, TOL_F32));
            }
        }
    }
    Ok(out)
}

/// f32 SIMT matmul at every shape.
pub fn matmul_f32(r: &mut dyn Runner, seed: u64) -> Result<Vec<Outcome>> {
    matmul_f32_at(r, seed, &MATMUL_DIMS)
}

/// [`matmul_f32`] at the given (m, n, k).
pub fn matmul_f32_at(r: &mut dyn Runner, seed: u64, shapes: &[(usize, usize, usize)]) -> Result<Vec<Outcome>> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for &(m, n, k) in shapes {
        let dims = MatDims::new(m, n, k);
        let a = rng.vec_f32(m * k, -1.0, 1.0);
        let b = rng.vec_f32(k * n, -1.0, 1.0);
        let mut c = vec![f32::NAN; m * n];
        r.matmul_f32(&a, &b, &mut c, dims)?;
        let refs = reference::matmul(&reference::widen_f32(&a), &reference::widen_f32(&b), dims);
        out.push(compare("matmul_f32", &format!("{m}x{n}x{k}"), seed, &c, &refs, TOL_F32));
    }
    Ok(out)
}

/// bf16 tensor-core matmul at every shape, plus one with k and n multiples
/// of 8 over several column tiles (the cp.async path).
pub fn matmul_bf16(r: &mut dyn Runner, seed: u64) -> Result<Vec<Outcome>> {
    let shapes: Vec<_> = MATMUL_DIMS.iter().copied().chain([(77, 264, 40)]).collect();
    matmul_bf16_at(r, seed, &shapes)
}

/// [`matmul_bf16`] at the given (m, n, k).
pub fn matmul_bf16_at(r: &mut dyn Runner, seed: u64, shapes: &[(usize, usize, usize)]) -> Result<Vec<Outcome>> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for &(m, n, k) in shapes {
        let dims = MatDims::new(m, n, k);
        let a: Vec<bf16> = rng.vec_f32(m * k, -1.0, 1.0).into_iter().map(bf16::from_f32).collect();
        let b: Vec<bf16> = rng.vec_f32(k * n, -1.0, 1.0).into_iter().map(bf16::from_f32).collect();
        let mut c = vec![f32::NAN; m * n];
        r.matmul_bf16(&a, &b, &mut c, dims)?;
        let refs = reference::matmul(&reference::widen_bf16(&a), &reference::widen_bf16(&b), dims);
        out.push(compare("matmul_bf16", &format!("{m}x{n}x{k}"), seed, &c, &refs, TOL_BF16));
    }
    Ok(out)
}

/// (m, n, k) for `gemm_f32` on the emulator: 1, K = 0 (C = β·C), primes
/// across one and two tiles in m and in n, and one with every extent a
/// multiple of 4 (the float4 loads of both loader roles).
pub const GEMM_DIMS: [(usize, usize, usize); 5] = [(1, 1, 1), (5, 3, 0), (131, 67, 37), (17, 133, 13), (64, 132, 40)];

/// `gemm_f32` at [`GEMM_DIMS`].
pub fn gemm(r: &mut dyn Runner, seed: u64) -> Result<Vec<Outcome>> {
    gemm_at(r, seed, &GEMM_DIMS, true)
}

/// `gemm_f32` at the given (m, n, k) for all four transpose pairs; with
/// `both`, each once with α = 1, β = 0 over a C of NaNs (β = 0 must not read
/// C) and once with α = −0.75, β = 0.5 over a random C with A and B views
/// one element off 16-byte alignment (the scalar loads); else alternating.
/// Tolerance [`TOL_F32`] of |α|·Σ|a·b| + |β·c|, as `matmul_f32` (the same
/// ascending-k f32 accumulation, then at most two more roundings).
pub fn gemm_at(r: &mut dyn Runner, seed: u64, shapes: &[(usize, usize, usize)], both: bool) -> Result<Vec<Outcome>> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for &(m, n, k) in shapes {
        for (t, (trans_a, trans_b)) in
            [(false, false), (true, false), (false, true), (true, true)].into_iter().enumerate()
        {
            let variants: &[(f32, f32, usize)] = if both {
                &[(1.0, 0.0, 0), (-0.75, 0.5, 1)]
            } else if t % 2 == 0 {
                &[(1.0, 0.0, 0)]
            } else {
                &[(-0.75, 0.5, 0)]
            };
            for &(alpha, beta, offset) in variants {
                let g = Gemm { m, n, k, trans_a, trans_b, alpha, beta };
                let mut a = views(m * k, offset);
                a[offset..].copy_from_slice(&rng.vec_f32(m * k, -1.0, 1.0));
                let mut b = views(k * n, offset);
                b[offset..].copy_from_slice(&rng.vec_f32(k * n, -1.0, 1.0));
                let mut c = if beta == 0.0 { vec![f32::NAN; m * n] } else { rng.vec_f32(m * n, -1.0, 1.0) };
                let refs = reference::gemm(
                    &reference::widen_f32(&a[offset..]),
                    &reference::widen_f32(&b[offset..]),
                    &reference::widen_f32(&c),
                    &g,
                );
                r.gemm_f32(&a[offset..], &b[offset..], &mut c, &g)?;
                let case = format!(
                    "{m}x{n}x{k} {}{} alpha={alpha} beta={beta}{}",
                    if trans_a { "T" } else { "N" },
                    if trans_b { "T" } else { "N" },
                    if offset > 0 { " misaligned" } else { "" }
                );
                out.push(compare("gemm_f32", &case, seed, &c, &refs, TOL_F32));
            }
        }
    }
    Ok(out)
}

/// (rows, cols) for the bias kernels on the emulator: 1×1, no rows (db = 0),
/// and primes / non-multiples of the 32-column block.
pub const BIAS_DIMS: [(usize, usize); 5] = [(1, 1), (0, 5), (3, 37), (67, 131), (150, 33)];

/// `bias_add_f32` and `bias_grad_f32` at [`BIAS_DIMS`].
pub fn bias(r: &mut dyn Runner, seed: u64) -> Result<Vec<Outcome>> {
    bias_at(r, seed, &BIAS_DIMS)
}

/// The bias kernels at the given (rows, cols), aligned and misaligned.
/// bias_add is one correctly rounded addition: exact (tolerance 0).
/// bias_grad sums ⌈rows/8⌉ terms per group, then 8 groups, in f32: at most
/// (⌈rows/8⌉ + 7)·2⁻²⁴ of Σ|dY| (≤ 2e-6 at the emulator's sizes; random
/// signs keep the GPU's larger sizes far below the bound); [`TOL_F32`].
pub fn bias_at(r: &mut dyn Runner, seed: u64, dims: &[(usize, usize)]) -> Result<Vec<Outcome>> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for &(rows, cols) in dims {
        for offset in [0, 1] {
            let case = format!("{rows}x{cols}{}", if offset > 0 { " misaligned" } else { "" });
            let mut y = views(rows * cols, offset);
            y[offset..].copy_from_slice(&rng.vec_f32(rows * cols, -2.0, 2.0));
            let mut b = views(cols, offset);
            b[offset..].copy_from_slice(&rng.vec_f32(cols, -2.0, 2.0));
            if rows * cols > 0 {
                let refs = reference::bias_add(&y[offset..], &b[offset..], cols);
                r.bias_add_f32(&mut y[offset..], &b[offset..], rows, cols)?;
                out.push(compare("bias_add_f32", &case, seed, &y[offset..], &refs, 0.0));
            }
            let refs = reference::bias_grad(&y[offset..], rows, cols);
            let mut db = views(cols, offset);
            r.bias_grad_f32(&y[offset..], &mut db[offset..], rows, cols)?;
            out.push(compare("bias_grad_f32", &case, seed, &db[offset..], &refs, TOL_F32));
        }
    }
    Ok(out)
}

/// Element counts for `mse_f32` on the emulator: none (one partial of 0),
/// 1, primes, and several blocks.
pub const MSE_SIZES: [usize; 5] = [0, 1, 37, 1_003, 10_007];

/// `mse_f32` at [`MSE_SIZES`].
pub fn mse(r: &mut dyn Runner, seed: u64) -> Result<Vec<Outcome>> {
    mse_at(r, seed, &MSE_SIZES)
}

/// `mse_f32` at the given sizes, aligned and misaligned: dP (two roundings),
/// every block's partial sum (non-negative terms, so at most (terms per
/// thread + 9)·2⁻²⁴ relative) and the loss — the partials added in index
/// order in f64 — all within [`TOL_F32`]; partials are checked against the
/// block each element belongs to, so a wrong split also fails.
pub fn mse_at(r: &mut dyn Runner, seed: u64, sizes: &[usize]) -> Result<Vec<Outcome>> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for &n in sizes {
        for (offset, scale) in [(0, 1.0 / n.max(1) as f32), (1, 0.5)] {
            let case = format!("n={n} scale={scale:e}{}", if offset > 0 { " misaligned" } else { "" });
            let mut p = views(n, offset);
            p[offset..].copy_from_slice(&rng.vec_f32(n, -1.0, 1.0));
            let mut t = views(n, offset);
            t[offset..].copy_from_slice(&rng.vec_f32(n, -1.0, 1.0));
            let mut dp = views(n, offset);
            let shape = crate::kernels::mse_shape(n);
            let mut partial = vec![f32::NAN; crate::kernels::mse_partials(n)];
            r.mse_f32(&p[offset..], &t[offset..], &mut dp[offset..], &mut partial, scale)?;
            let (want_dp, want_partial, want_loss) =
                reference::mse(&p[offset..], &t[offset..], scale, shape.grid.0 as usize, shape.block as usize);
            if n > 0 {
                out.push(compare("mse_f32", &format!("{case} dP"), seed, &dp[offset..], &want_dp, TOL_F32));
            }
            out.push(compare("mse_f32", &format!("{case} partials"), seed, &partial, &want_partial, TOL_F32));
            let loss = partial.iter().map(|&x| f64::from(x)).sum::<f64>() as f32;
            out.push(compare("mse_f32", &format!("{case} loss"), seed, &[loss], &[want_loss], TOL_F32));
        }
    }
    Ok(out)
}

/// 16-byte aligned byte buffer of `len` bytes starting `offset` bytes in.
struct Bytes {
    store: Vec<u128>,
    offset: usize,
    len: usize,
}

impl Bytes {
    fn new(len: usize, offset: usize, fill: u8) -> Self {
        let mut b = Bytes { store: vec![0; (len + offset).div_ceil(16)], offset, len };
        b.get_mut().fill(fill);
        b
    }
    fn get(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.store)[self.offset..self.offset + self.len]
    }
    fn get_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.store)[self.offset..self.offset + self.len]
    }
}

/// Random element bytes: half from the full bit space (infinities, NaNs,
/// subnormals, extremes; integers anywhere in their range, so sums and
/// products wrap), half moderate values (|x| < 100: f64 with all 53 bits
/// of significand, integers whose sums and short products stay in range,
/// unsigned ones non-negative).
fn random_elements(rng: &mut Rng, dtype: DType, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * dtype.size());
    for i in 0..n {
        let wild = i % 2 == 0;
        let bits = rng.next_u64();
        let moderate = rng.f32_in(-100.0, 100.0);
        let (int, uint) = (moderate as i64, moderate.abs() as u64);
        match dtype {
            DType::F32 => {
                out.extend_from_slice(&(if wild { f32::from_bits(bits as u32) } else { moderate }).to_le_bytes())
            }
            DType::F64 => out.extend_from_slice(
                &(if wild { f64::from_bits(bits) } else { -100.0 + 200.0 * rng.unit() }).to_le_bytes(),
            ),
            DType::F16 => out.extend_from_slice(
                &(if wild { half::f16::from_bits(bits as u16) } else { half::f16::from_f32(moderate) }).to_le_bytes(),
            ),
            DType::BF16 => out.extend_from_slice(
                &(if wild { bf16::from_bits(bits as u16) } else { bf16::from_f32(moderate) }).to_le_bytes(),
            ),
            DType::I8 => out.extend_from_slice(&(if wild { bits as i8 } else { int as i8 }).to_le_bytes()),
            DType::U8 => out.extend_from_slice(&(if wild { bits as u8 } else { uint as u8 }).to_le_bytes()),
            DType::I32 => out.extend_from_slice(&(if wild { bits as i32 } else { int as i32 }).to_le_bytes()),
            DType::U32 => out.extend_from_slice(&(if wild { bits as u32 } else { uint as u32 }).to_le_bytes()),
            DType::I64 => out.extend_from_slice(&(if wild { bits as i64 } else { int }).to_le_bytes()),
            DType::U64 => out.extend_from_slice(&(if wild { bits } else { uint }).to_le_bytes()),
        }
    }
    out
}

/// Equal bit patterns, or both NaN, or equal values (±0) for floats.
fn same_element(dtype: DType, a: &[u8], b: &[u8]) -> bool {
    if a == b {
        return true;
    }
    let f = |x: &[u8]| -> f64 {
        match dtype {
            DType::F32 => f64::from(f32::from_le_bytes(x.try_into().unwrap())),
            DType::F64 => f64::from_le_bytes(x.try_into().unwrap()),
            DType::F16 => half::f16::from_le_bytes(x.try_into().unwrap()).to_f64(),
            DType::BF16 => bf16::from_le_bytes(x.try_into().unwrap()).to_f64(),
            _ => f64::NAN,
        }
    };
    let (x, y) = (f(a), f(b));
    dtype.is_float() && ((x.is_nan() && y.is_nan()) || x == y)
}

fn compare_bytes(kernel: &str, case: &str, seed: u64, dtype: DType, got: &[u8], want: &[u8]) -> Outcome {
    let size = dtype.size();
    let mut o = Outcome {
        kernel: kernel.into(),
        case: case.into(),
        seed,
        checked: got.len() / size,
        failures: 0,
        worst: 0.0,
        tol: 0.0,
        first_bad: None,
    };
    for (i, (g, w)) in got.chunks(size).zip(want.chunks(size)).enumerate() {
        if !same_element(dtype, g, w) {
            o.failures += 1;
            o.worst = f64::INFINITY;
            if o.first_bad.is_none() {
                o.first_bad = Some(format!("[{i}] got bytes {g:02x?}, want {w:02x?}"));
            }
        }
    }
    o
}

/// Sizes of the multi-reducer's cases on the emulator: one element,
/// a vector's worth plus a tail, and a prime.
pub const MULTI_SIZES: [usize; 3] = [1, 9, 1021];

/// The dtypes whose reducer runs at every one of [`SIZES`] in [`reduce`];
/// the others stop at 1 003. The largest size adds blocks, not paths (the
/// vector part, the tail and misalignment are all at 1 003 already), and
/// every emulated block costs milliseconds.
pub const REDUCE_FULL_SIZE_DTYPES: [DType; 4] = [DType::F32, DType::F16, DType::BF16, DType::I32];

/// Every reducer kernel at every size, out of place (twice, with two
/// different poisons) and in place, aligned and misaligned; avg's division
/// over several worlds; exact results. Sizes as [`REDUCE_FULL_SIZE_DTYPES`] says.
pub fn reduce(r: &mut dyn Runner, seed: u64) -> Result<Vec<Outcome>> {
    let smaller: Vec<usize> = SIZES.iter().copied().filter(|&n| n <= 1_003).collect();
    let plan: Vec<(DType, &[usize])> = REDUCE_DTYPES
        .iter()
        .map(|&d| (d, if REDUCE_FULL_SIZE_DTYPES.contains(&d) { &SIZES[..] } else { &smaller[..] }))
        .collect();
    reduce_plan(r, seed, &plan)
}

/// [`reduce`] at the given sizes, for every dtype.
pub fn reduce_at(r: &mut dyn Runner, seed: u64, sizes: &[usize]) -> Result<Vec<Outcome>> {
    let plan: Vec<(DType, &[usize])> = REDUCE_DTYPES.iter().map(|&d| (d, sizes)).collect();
    reduce_plan(r, seed, &plan)
}

/// [`reduce`] for each dtype at its sizes.
fn reduce_plan(r: &mut dyn Runner, seed: u64, plan: &[(DType, &[usize])]) -> Result<Vec<Outcome>> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for &(dtype, sizes) in plan {
        for op in REDUCE_OPS {
            let kernel = crate::kernels::reduce_kernel(op, dtype)?;
            for &n in sizes {
                for offset in [0, dtype.size()] {
                    let case = format!("n={n}{}", if offset > 0 { " misaligned" } else { "" });
                    let bytes = n * dtype.size();
                    let mut a = Bytes::new(bytes, offset, 0);
                    a.get_mut().copy_from_slice(&random_elements(&mut rng, dtype, n));
                    let mut b = Bytes::new(bytes, offset, 0);
                    b.get_mut().copy_from_slice(&random_elements(&mut rng, dtype, n));
                    let want: Vec<u8> = a
                        .get()
                        .chunks(dtype.size())
                        .zip(b.get().chunks(dtype.size()))
                        .flat_map(|(x, y)| reference::reduce(op, dtype, x, y))
                        .collect();
                    for poison in [0xa5, 0x5a] {
                        let mut dst = Bytes::new(bytes, offset, poison);
                        r.reduce(op, dtype, dst.get_mut(), a.get(), b.get())?;
                        out.push(compare_bytes(
                            kernel,
                            &format!("{case} poison {poison:#x}"),
                            seed,
                            dtype,
                            dst.get(),
                            &want,
                        ));
                    }
                    let mut acc = Bytes::new(bytes, offset, 0);
                    acc.get_mut().copy_from_slice(a.get());
                    r.reduce_in_place(op, dtype, acc.get_mut(), b.get())?;
                    out.push(compare_bytes(kernel, &format!("{case} in place"), seed, dtype, acc.get(), &want));
                }
            }
        }
        let kernel = crate::kernels::avg_kernel(dtype)?;
        for &n in sizes {
            // Integers also over worlds that i8, u8 and i32 cannot hold (divided exactly, as the
            // CPU's finalize does).
            let worlds: &[u32] = if dtype.is_float() { &[1, 3, 7] } else { &[1, 3, 7, 200, 1000, 3_000_000_000] };
            for &world in worlds {
                let mut acc = Bytes::new(n * dtype.size(), 0, 0);
                acc.get_mut().copy_from_slice(&random_elements(&mut rng, dtype, n));
                let want: Vec<u8> =
                    acc.get().chunks(dtype.size()).flat_map(|x| reference::avg_div(dtype, x, world)).collect();
                r.avg_div(dtype, acc.get_mut(), world)?;
                out.push(compare_bytes(kernel, &format!("n={n} world={world}"), seed, dtype, acc.get(), &want));
            }
        }
    }
    Ok(out)
}

/// The multi-reducer (the direct step's: many sources, many destinations,
/// avg fused) for every op and dtype, 2, 3 and 8 sources, 1 and 3
/// destinations, at `sizes`, aligned and misaligned; exact results.
pub fn reduce_multi_at(r: &mut dyn Runner, seed: u64, sizes: &[usize]) -> Result<Vec<Outcome>> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for dtype in REDUCE_DTYPES {
        for op in REDUCE_OPS {
            let kernel = crate::kernels::reduce_multi_kernel(op, dtype)?;
            for &n in sizes {
                for (nsrc, ndst, offset) in [(2, 1, 0), (3, 3, dtype.size()), (8, 2, 0)] {
                    let bytes = n * dtype.size();
                    let srcs: Vec<Bytes> = (0..nsrc)
                        .map(|_| {
                            let mut b = Bytes::new(bytes, offset, 0);
                            b.get_mut().copy_from_slice(&random_elements(&mut rng, dtype, n));
                            b
                        })
                        .collect();
                    let views: Vec<&[u8]> = srcs.iter().map(|s| s.get()).collect();
                    let avgs = if op == ReduceOp::Sum { vec![0, nsrc as u32] } else { vec![0] };
                    for avg in avgs {
                        let want: Vec<u8> = (0..n)
                            .flat_map(|i| {
                                let terms: Vec<&[u8]> = views.iter().map(|v| &v[i * dtype.size()..]).collect();
                                reference::reduce_multi(op, dtype, &terms, avg)
                            })
                            .collect();
                        let mut dsts: Vec<Bytes> = (0..ndst).map(|_| Bytes::new(bytes, offset, 0xa5)).collect();
                        {
                            let mut outs: Vec<&mut [u8]> = dsts.iter_mut().map(|d| d.get_mut()).collect();
                            r.reduce_multi(op, dtype, &views, &mut outs, avg)?;
                        }
                        for (j, d) in dsts.iter().enumerate() {
                            let case = format!("n={n} srcs={nsrc} dst {j} of {ndst} avg={avg} offset={offset}");
                            out.push(compare_bytes(kernel, &case, seed, dtype, d.get(), &want));
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The signal kernels of `ptx/kernels/signal.cu`: the values `sig_write`
/// stores, `sig_advance`, and the three ends of `sig_wait` — its word
/// reached (exactly, and by a later epoch's value), released by an abort
/// (all ones), and its timeout (a value of the previous epoch never
/// satisfies this one's), which stores the fault code and returns.
pub fn signals(r: &mut dyn Runner) -> Result<Vec<Outcome>> {
    use crate::emudev::signal_value;
    use crate::runner::Signal;
    let code = (1u64 << 63) | (2 << 32) | 5;
    let outcome = |kernel: &str, case: String, bad: Option<String>| Outcome {
        kernel: kernel.into(),
        case,
        seed: 0,
        checked: 1,
        failures: usize::from(bad.is_some()),
        worst: 0.0,
        tol: 0.0,
        first_bad: bad,
    };
    let mut out = Vec::new();
    for (e, offset) in [(0u64, 1u64), (5, 7), (6, 1 << 32), (u32::MAX as u64, 3)] {
        let mut w = [0, e, 0];
        r.signal(Signal::Write { offset }, &mut w)?;
        let want = signal_value(e, offset);
        let bad = (w[0] != want).then(|| format!("word {:#x}, want {want:#x}", w[0]));
        out.push(outcome(crate::kernels::SIG_WRITE, format!("epoch {e}, offset {offset:#x}"), bad));
        r.signal(Signal::Advance, &mut w)?;
        let bad = (w[1] != e + 1).then(|| format!("epoch {}, want {}", w[1], e + 1));
        out.push(outcome(crate::kernels::SIG_ADVANCE, format!("epoch {e}"), bad));
    }
    let ten_s = 10_000_000_000;
    let waits = [
        ("reached exactly", signal_value(6, 3), 3, ten_s, 0),
        ("reached by the next epoch", signal_value(7, 0), 3, ten_s, 0),
        ("released (all ones)", u64::MAX, u32::MAX as u64, ten_s, 0),
        ("previous epoch's value: times out after 20 ms", signal_value(5, 9), 1, 20_000_000, code),
    ];
    for (case, word, offset, timeout_ns, want_fault) in waits {
        let mut w = [word, 6, 0];
        let t = std::time::Instant::now();
        r.signal(Signal::Wait { offset, timeout_ns, code }, &mut w)?;
        let took = t.elapsed();
        let bad = if w[2] != want_fault {
            Some(format!("fault word {:#x}, want {want_fault:#x}", w[2]))
        } else if want_fault != 0 && took.as_nanos() < u128::from(timeout_ns) {
            Some(format!("gave up after {took:?}, before its timeout"))
        } else {
            None
        };
        out.push(outcome(crate::kernels::SIG_WAIT, case.into(), bad));
    }
    Ok(out)
}

/// The whole suite at the emulator's sizes.
pub fn all(r: &mut dyn Runner, seed: u64) -> Result<Vec<Outcome>> {
    let mut out = Vec::new();
    for act in Activation::ALL {
        out.extend(activation(r, act, seed)?);
    }
    out.extend(adam(r, seed)?);
    out.extend(reduce(r, seed)?);
    out.extend(reduce_multi_at(r, seed, &MULTI_SIZES)?);
    out.extend(matmul_f32(r, seed)?);
    out.extend(matmul_bf16(r, seed)?);
    out.extend(gemm(r, seed)?);
    out.extend(bias(r, seed)?);
    out.extend(mse(r, seed)?);
    out.extend(signals(r)?);
    Ok(out)
}

/// Extra cases too large for the emulator, for a GPU: elementwise counts
/// that take several trips round the grid-stride loops at the GPU's grid
/// cap, and matmuls spanning many tiles.
pub fn large(r: &mut dyn Runner, seed: u64) -> Result<Vec<Outcome>> {
    let elementwise = [(1 << 24) + 5];
    let reducer = [(1 << 22) + 3];
    let shapes = [(1000, 1032, 1024), (513, 257, 1000)];
    let mut out = Vec::new();
    for act in Activation::ALL {
        out.extend(activation_at(r, act, seed, &elementwise)?);
    }
    out.extend(adam_at(r, seed, &elementwise)?);
    out.extend(reduce_at(r, seed, &reducer)?);
    out.extend(reduce_multi_at(r, seed, &reducer)?);
    out.extend(matmul_f32_at(r, seed, &shapes)?);
    out.extend(matmul_bf16_at(r, seed, &shapes)?);
    out.extend(gemm_at(r, seed, &shapes, false)?);
    out.extend(bias_at(r, seed, &[(4099, 1031), (20_011, 7)])?);
    out.extend(mse_at(r, seed, &elementwise)?);
    Ok(out)
}

/// Reducer ops and dtypes used by the suite, for reports.
pub fn reduce_pairs() -> Vec<(ReduceOp, DType)> {
    REDUCE_DTYPES.iter().flat_map(|&d| REDUCE_OPS.iter().map(move |&o| (o, d))).collect()
}
