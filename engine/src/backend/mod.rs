//! The `Backend` trait: every kernel the engine's model and optimiser need,
//! on buffers the backend owns.
//!
//! A backend owns its memory (`Backend::Buf`: a `Vec<f32>` on the CPU, a
//! device allocation for the CUDA backend of a later issue), so the model
//! never touches elements directly: it names a buffer and an element offset
//! ([`Src`], [`Dst`]) and the shape, and the backend runs the kernel. All
//! matrices are row-major and contiguous as stored; a transpose is a flag of
//! the matmul, not a copy. Every kernel checks that its operands lie inside
//! their buffers and returns [`Error::Shape`] otherwise, before touching data.
//!
//! The kernels, with the maths each computes:
//!
//! * `matmul`: C = α·op(A)·op(B) + β·C, op = identity or transpose.
//! * `add_bias`: `Y[r, c] += b[c]` for every row r; `bias_grad`: `db[c] = Σ_r dY[r, c]`.
//! * `activation`: A = f(Z) for f ∈ {identity, ReLU, GELU (tanh form)};
//!   `activation_backward`: G ← G ⊙ f'(Z), in place.
//! * `mse`: for predictions P and targets T of n elements and a scale s,
//!   dP = 2·s·(P − T) and loss = s·Σ(P − T)²; with s = 1/(global batch ×
//!   outputs) the loss is the mean and the per-replica gradients sum to the
//!   gradient of the mean.
//! * `adam`: Keras' Adam, fused over a whole flat buffer (see [`AdamStep`]).
//!
//! Host access: `host`/`host_mut` return the buffer as a slice when it lives
//! in host memory (CPU backend), so collectives run on it without a copy;
//! otherwise `upload`/`download` stage through host memory.

use crate::error::{Error, Result};

pub mod cpu;

pub use cpu::CpuBackend;

/// Element-wise nonlinearity of a dense layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// f(z) = z (the output layer).
    Linear,
    /// f(z) = max(z, 0); f'(z) = 1 for z > 0, else 0 (as TensorFlow at 0).
    Relu,
    /// The tanh form of GELU (Hendrycks and Gimpel; Keras `approximate=True`):
    /// f(z) = ½·z·(1 + tanh(√(2/π)·(z + 0.044715·z³))).
    Gelu,
}

impl Activation {
    pub fn name(self) -> &'static str {
        match self {
            Activation::Linear => "linear",
            Activation::Relu => "relu",
            Activation::Gelu => "gelu",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "linear" | "none" | "identity" => Ok(Activation::Linear),
            "relu" => Ok(Activation::Relu),
            "gelu" => Ok(Activation::Gelu),
            other => Err(Error::Spec(format!("unknown activation {other:?} (expected relu, gelu or linear)"))),
        }
    }
}

/// Shape and scalars of C = α·op(A)·op(B) + β·C, where op(A) is m×k, op(B)
/// is k×n and C is m×n. As stored, A is m×k (or k×m when `trans_a`) and B is
/// k×n (or n×k when `trans_b`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f32,
    /// 0 overwrites C (its old contents are not read), 1 accumulates.
    pub beta: f32,
}

impl Gemm {
    /// C = op(A)·op(B), overwriting C.
    pub fn new(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> Self {
        Gemm { m, n, k, trans_a, trans_b, alpha: 1.0, beta: 0.0 }
    }

    /// Multiply-adds: 2·m·n·k floating-point operations.
    pub fn flops(&self) -> u64 {
        2 * (self.m as u64) * (self.n as u64) * (self.k as u64)
    }
}

/// One step of Keras' Adam (`keras.optimizers.Adam`), fused over a buffer:
///
/// ```text
/// p ← p − lr·wd·p                              (only when wd > 0: decoupled, as Keras/AdamW)
/// m ← m + (1 − β₁)·(g − m)
/// v ← v + (1 − β₂)·(g² − v)
/// p ← p − α·m / (√v + ε),   α = lr·√(1 − β₂ᵗ) / (1 − β₁ᵗ)
/// ```
///
/// which is the bias-corrected update p ← p − lr·m̂/(√v̂ + ε̂) with
/// m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ) and ε̂ = ε/√(1 − β₂ᵗ): Keras (and TF)
/// put ε outside the bias correction, PyTorch inside; the difference only
/// shows while √v is near ε.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// 1 for the first update.
    pub t: u64,
}

impl AdamStep {
    /// α = lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ), computed in f64 and rounded once.
    pub fn alpha(&self) -> f32 {
        let t = self.t.min(i32::MAX as u64) as i32;
        let c1 = 1.0 - f64::from(self.beta1).powi(t);
        let c2 = 1.0 - f64::from(self.beta2).powi(t);
        (f64::from(self.lr) * c2.sqrt() / c1) as f32
    }
}

/// An operand read by a kernel: `buf` from element `offset` on.
pub struct Src<'a, T: ?Sized> {
    pub buf: &'a T,
    pub offset: usize,
}

impl<T: ?Sized> Clone for Src<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: ?Sized> Copy for Src<'_, T> {}

/// An operand written by a kernel: `buf` from element `offset` on.
pub struct Dst<'a, T: ?Sized> {
    pub buf: &'a mut T,
    pub offset: usize,
}

/// `buf` from element `offset` on, read.
pub fn src<T: ?Sized>(buf: &T, offset: usize) -> Src<'_, T> {
    Src { buf, offset }
}

/// `buf` from element `offset` on, written.
pub fn dst<T: ?Sized>(buf: &mut T, offset: usize) -> Dst<'_, T> {
    Dst { buf, offset }
}

/// The kernels of the engine. Implementations must be callable from several
/// replica threads at once (`Sync`); each thread uses its own buffers.
pub trait Backend: Send + Sync {
    /// A buffer of f32 elements owned by the backend.
    type Buf: Send;

    /// For reports, e.g. `cpu (2 threads)`.
    fn name(&self) -> String;

    /// A zero-filled buffer of `len` elements.
    fn alloc(&self, len: usize) -> Result<Self::Buf>;

    fn len(&self, buf: &Self::Buf) -> usize;

    /// Copies `src` into `dst` at element `offset`.
    fn upload(&self, dst: &mut Self::Buf, offset: usize, src: &[f32]) -> Result<()>;

    /// Copies elements `offset..offset + dst.len()` of `src` into `dst`.
    fn download(&self, src: &Self::Buf, offset: usize, dst: &mut [f32]) -> Result<()>;

    /// The buffer as a host slice, where it lives in host memory.
    fn host<'a>(&self, buf: &'a Self::Buf) -> Option<&'a [f32]>;

    /// The buffer as a mutable host slice, where it lives in host memory.
    fn host_mut<'a>(&self, buf: &'a mut Self::Buf) -> Option<&'a mut [f32]>;

    /// C = α·op(A)·op(B) + β·C.
    fn matmul(&self, g: &Gemm, a: Src<'_, Self::Buf>, b: Src<'_, Self::Buf>, c: Dst<'_, Self::Buf>) -> Result<()>;

    /// `Y[r, c] += b[c]` for a rows×cols Y.
    fn add_bias(&self, y: Dst<'_, Self::Buf>, rows: usize, cols: usize, bias: Src<'_, Self::Buf>) -> Result<()>;

    /// `db[c] = Σ_r dY[r, c]` for a rows×cols dY (db is overwritten).
    fn bias_grad(&self, dy: Src<'_, Self::Buf>, rows: usize, cols: usize, db: Dst<'_, Self::Buf>) -> Result<()>;

    /// A = f(Z) over `len` elements.
    fn activation(&self, f: Activation, z: Src<'_, Self::Buf>, a: Dst<'_, Self::Buf>, len: usize) -> Result<()>;

    /// G ← G ⊙ f'(Z) over `len` elements.
    fn activation_backward(
        &self,
        f: Activation,
        z: Src<'_, Self::Buf>,
        g: Dst<'_, Self::Buf>,
        len: usize,
    ) -> Result<()>;

    /// dP = 2·scale·(P − T) and, at `loss`, scale·Σ(P − T)², over `len` elements.
    fn mse(
        &self,
        pred: Src<'_, Self::Buf>,
        target: Src<'_, Self::Buf>,
        dpred: Dst<'_, Self::Buf>,
        loss: Dst<'_, Self::Buf>,
        len: usize,
        scale: f32,
    ) -> Result<()>;

    /// One fused Adam step over `len` elements of parameters, gradients and
    /// both moments, each from its own offset.
    fn adam(
        &self,
        step: &AdamStep,
        params: Dst<'_, Self::Buf>,
        grads: Src<'_, Self::Buf>,
        m: Dst<'_, Self::Buf>,
        v: Dst<'_, Self::Buf>,
        len: usize,
    ) -> Result<()>;
}

/// Checks that `offset..offset + len` lies in a buffer of `have` elements.
pub(crate) fn check_span(op: &'static str, what: &str, offset: usize, len: usize, have: usize) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= have => Ok(()),
        _ => Err(Error::Shape {
            op,
            detail: format!("{what} needs elements {offset}..{} but its buffer holds {have}", offset + len),
        }),
    }
}
