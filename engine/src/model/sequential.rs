//! One replica's `Sequential` MLP on a backend: parameters, gradients and
//! the activations of a batch, with the forward pass and a hand-written
//! backward pass.
//!
//! Buffers (all backend-owned):
//! * `params`: the flat parameters (layout in [`ModelSpec::layout`]).
//! * `grads`: the same layout plus one trailing element, the *loss slot*,
//!   which the loss kernel fills with this replica's share of the batch loss.
//!   Summing `grads` over replicas (one all-reduce) therefore yields both the
//!   global gradient and the global loss.
//! * `input`, `target`: one batch, rows × inputs and rows × outputs.
//! * per layer `z` (pre-activation), `a` (post-activation; absent for the
//!   linear output layer, whose output is `z`), `dz` (gradient w.r.t. `z`).
//!
//! The maths, for layer l with input A (rows × in), kernel W (in × out), bias b:
//!
//! ```text
//! forward:   Z = A·W + b,  A' = f(Z)
//! backward:  dZ = dA' ⊙ f'(Z)
//!            dW = Aᵀ·dZ,  db = Σ_rows dZ,  dA = dZ·Wᵀ   (dA skipped for the first layer)
//! ```
//!
//! The loss is `scale · Σ (P − T)²` with `scale = 1 / (rows of the global
//! batch × outputs)`, so replicas' gradients add up to the gradient of the
//! global batch's mean squared error (as TensorFlow's
//! `compute_average_loss` with the global batch size).

use super::spec::{LayerLayout, ModelSpec};
use crate::backend::{dst, src, Activation, Backend, Gemm};
use crate::error::{Error, Result};

/// A replica's model and its batch buffers, for batches of up to `capacity` rows.
pub struct Sequential<B: Backend> {
    pub spec: ModelSpec,
    layout: Vec<LayerLayout>,
    capacity: usize,
    pub params: B::Buf,
    /// Gradients and, at index `num_params`, the loss slot.
    pub grads: B::Buf,
    pub input: B::Buf,
    pub target: B::Buf,
    z: Vec<B::Buf>,
    a: Vec<B::Buf>,
    dz: Vec<B::Buf>,
}

impl<B: Backend> Sequential<B> {
    /// A model with parameters `params` (e.g. [`ModelSpec::init_params`]) and
    /// room for batches of `capacity` rows.
    pub fn new(backend: &B, spec: ModelSpec, params: &[f32], capacity: usize) -> Result<Self> {
        let n = spec.num_params();
        if params.len() != n {
            return Err(Error::Shape {
                op: "Sequential::new",
                detail: format!("{} parameters given, model {} has {n}", params.len(), spec.layers_string()),
            });
        }
        let layout = spec.layout();
        let mut p = backend.alloc(n)?;
        backend.upload(&mut p, 0, params)?;
        let cap = capacity.max(1);
        let mut z = Vec::new();
        let mut a = Vec::new();
        let mut dz = Vec::new();
        for l in &layout {
            z.push(backend.alloc(cap * l.outputs)?);
            a.push(backend.alloc(if l.activation == Activation::Linear { 0 } else { cap * l.outputs })?);
            dz.push(backend.alloc(cap * l.outputs)?);
        }
        Ok(Sequential {
            input: backend.alloc(cap * spec.inputs())?,
            target: backend.alloc(cap * spec.outputs())?,
            grads: backend.alloc(n + 1)?,
            params: p,
            spec,
            layout,
            capacity: cap,
            z,
            a,
            dz,
        })
    }

    pub fn num_params(&self) -> usize {
        self.layout.last().map_or(0, |l| l.bias + l.outputs)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn check_rows(&self, rows: usize) -> Result<()> {
        if rows > self.capacity {
            return Err(Error::Shape {
                op: "Sequential",
                detail: format!("batch of {rows} rows exceeds the model's capacity of {}", self.capacity),
            });
        }
        Ok(())
    }

    /// Copies a batch (rows × inputs, and optionally rows × outputs targets)
    /// into the model's input buffers.
    pub fn load_batch(&mut self, backend: &B, x: &[f32], y: Option<&[f32]>) -> Result<usize> {
        let rows = x.len() / self.spec.inputs();
        if rows * self.spec.inputs() != x.len() {
            return Err(Error::Shape {
                op: "load_batch",
                detail: format!("{} inputs is not a multiple of width {}", x.len(), self.spec.inputs()),
            });
        }
        self.check_rows(rows)?;
        backend.upload(&mut self.input, 0, x)?;
        if let Some(y) = y {
            if y.len() != rows * self.spec.outputs() {
                return Err(Error::Shape {
                    op: "load_batch",
                    detail: format!("{} targets for {rows} rows of {} outputs", y.len(), self.spec.outputs()),
                });
            }
            backend.upload(&mut self.target, 0, y)?;
        }
        Ok(rows)
    }

    /// Copies rows `indices` of `data` into the input and target buffers
    /// (straight into them when the backend's buffers are host memory).
    pub fn load_rows(&mut self, backend: &B, data: &crate::data::Dataset, indices: &[usize]) -> Result<usize> {
        let rows = indices.len();
        self.check_rows(rows)?;
        if data.x_width != self.spec.inputs() || data.y_width != self.spec.outputs() {
            return Err(Error::Shape {
                op: "load_rows",
                detail: format!("data is {}→{}, model {}", data.x_width, data.y_width, self.spec.layers_string()),
            });
        }
        let (xw, yw) = (data.x_width, data.y_width);
        match (backend.host_mut(&mut self.input), backend.host_mut(&mut self.target)) {
            (Some(x), Some(y)) => {
                for (i, &r) in indices.iter().enumerate() {
                    x[i * xw..(i + 1) * xw].copy_from_slice(data.x_row(r));
                    y[i * yw..(i + 1) * yw].copy_from_slice(data.y_row(r));
                }
            }
            _ => {
                let (mut x, mut y) = (Vec::new(), Vec::new());
                data.gather(indices, &mut x, &mut y);
                backend.upload(&mut self.input, 0, &x)?;
                backend.upload(&mut self.target, 0, &y)?;
            }
        }
        Ok(rows)
    }

    /// The buffer holding layer l's output after [`Self::forward`].
    fn output_of(&self, l: usize) -> &B::Buf {
        if self.layout[l].activation == Activation::Linear {
            &self.z[l]
        } else {
            &self.a[l]
        }
    }

    /// Forward pass over the first `rows` rows of `input`.
    pub fn forward(&mut self, backend: &B, rows: usize) -> Result<()> {
        self.check_rows(rows)?;
        for l in 0..self.layout.len() {
            let layer = self.layout[l];
            let g = Gemm::new(rows, layer.outputs, layer.inputs, false, false);
            let (before, rest) = self.z.split_at_mut(l);
            let z = &mut rest[0];
            let a_in = if l == 0 {
                &self.input
            } else if self.layout[l - 1].activation == Activation::Linear {
                &before[l - 1]
            } else {
                &self.a[l - 1]
            };
            backend.matmul(&g, src(a_in, 0), src(&self.params, layer.kernel), dst(z, 0))?;
            backend.add_bias(dst(z, 0), rows, layer.outputs, src(&self.params, layer.bias))?;
            if layer.activation != Activation::Linear {
                backend.activation(
                    layer.activation,
                    src(&self.z[l], 0),
                    dst(&mut self.a[l], 0),
                    rows * layer.outputs,
                )?;
            }
        }
        Ok(())
    }

    /// Predictions of the last forward pass (rows × outputs) into `out`.
    pub fn read_output(&self, backend: &B, out: &mut [f32]) -> Result<()> {
        backend.download(self.output_of(self.layout.len() - 1), 0, out)
    }

    /// Loss and backward pass for the last forward pass over `rows` rows
    /// (targets in `target`): fills `grads`, loss slot included, with
    /// `scale = 1 / (global rows × outputs)` (see the module docs).
    pub fn backward(&mut self, backend: &B, rows: usize, scale: f32) -> Result<()> {
        self.check_rows(rows)?;
        let last = self.layout.len() - 1;
        let n_out = rows * self.spec.outputs();
        let loss_slot = self.num_params();
        let pred = if self.layout[last].activation == Activation::Linear { &self.z[last] } else { &self.a[last] };
        backend.mse(
            src(pred, 0),
            src(&self.target, 0),
            dst(&mut self.dz[last], 0),
            dst(&mut self.grads, loss_slot),
            n_out,
            scale,
        )?;
        for l in (0..=last).rev() {
            let layer = self.layout[l];
            let width = rows * layer.outputs;
            backend.activation_backward(layer.activation, src(&self.z[l], 0), dst(&mut self.dz[l], 0), width)?;
            let a_in = if l == 0 {
                &self.input
            } else if self.layout[l - 1].activation == Activation::Linear {
                &self.z[l - 1]
            } else {
                &self.a[l - 1]
            };
            // dW = Aᵀ·dZ (in × out, reducing over rows).
            let g = Gemm::new(layer.inputs, layer.outputs, rows, true, false);
            backend.matmul(&g, src(a_in, 0), src(&self.dz[l], 0), dst(&mut self.grads, layer.kernel))?;
            backend.bias_grad(src(&self.dz[l], 0), rows, layer.outputs, dst(&mut self.grads, layer.bias))?;
            if l > 0 {
                // dA = dZ·Wᵀ (rows × in), the next layer down's dZ before f'.
                let (below, rest) = self.dz.split_at_mut(l);
                let g = Gemm::new(rows, layer.inputs, layer.outputs, false, true);
                backend.matmul(&g, src(&rest[0], 0), src(&self.params, layer.kernel), dst(&mut below[l - 1], 0))?;
            }
        }
        Ok(())
    }

    /// Parameters as a host vector.
    pub fn params_host(&self, backend: &B) -> Result<Vec<f32>> {
        let mut p = vec![0.0; self.num_params()];
        backend.download(&self.params, 0, &mut p)?;
        Ok(p)
    }

    /// Gradients (without the loss slot) as a host vector.
    pub fn grads_host(&self, backend: &B) -> Result<Vec<f32>> {
        let mut g = vec![0.0; self.num_params()];
        backend.download(&self.grads, 0, &mut g)?;
        Ok(g)
    }

    /// The loss slot of `grads`.
    pub fn loss_host(&self, backend: &B) -> Result<f32> {
        let mut l = [0.0];
        backend.download(&self.grads, self.num_params(), &mut l)?;
        Ok(l[0])
    }

    /// Replaces the parameters.
    pub fn set_params(&mut self, backend: &B, params: &[f32]) -> Result<()> {
        if params.len() != self.num_params() {
            return Err(Error::Shape {
                op: "set_params",
                detail: format!("{} values for {} parameters", params.len(), self.num_params()),
            });
        }
        backend.upload(&mut self.params, 0, params)
    }
}
