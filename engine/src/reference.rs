//! The f64 reference: every kernel and one whole training step written the
//! obvious way (nested loops, f64 throughout), with no code shared with the
//! backends. Tests compare the backends and the training loop against it.
//!
//! Adam here is written in its textbook bias-corrected form,
//! p ← p − lr·m̂/(√v̂ + ε̂) with m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ) and
//! ε̂ = ε/√(1−β₂ᵗ), which is algebraically the Keras form the backends use
//! (see [`crate::backend::AdamStep`]); so a test also checks that algebra.

// Index loops are the point here: each line reads like the formula.
#![allow(clippy::needless_range_loop)]

use crate::backend::{Activation, AdamStep};

/// C = α·op(A)·op(B) + β·C on row-major storage.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    m: usize,
    n: usize,
    k: usize,
    a: &[f64],
    trans_a: bool,
    b: &[f64],
    trans_b: bool,
    alpha: f64,
    beta: f64,
    c: &mut [f64],
) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0;
            for p in 0..k {
                let av = if trans_a { a[p * m + i] } else { a[i * k + p] };
                let bv = if trans_b { b[j * k + p] } else { b[p * n + j] };
                s += av * bv;
            }
            c[i * n + j] = alpha * s + if beta == 0.0 { 0.0 } else { beta * c[i * n + j] };
        }
    }
}

pub fn act(f: Activation, z: f64) -> f64 {
    match f {
        Activation::Linear => z,
        Activation::Relu => {
            if z > 0.0 {
                z
            } else {
                0.0
            }
        }
        Activation::Gelu => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * z * (1.0 + (c * (z + 0.044715 * z.powi(3))).tanh())
        }
    }
}

/// f'(z), differentiated by hand from [`act`].
pub fn act_grad(f: Activation, z: f64) -> f64 {
    match f {
        Activation::Linear => 1.0,
        Activation::Relu => {
            if z > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Activation::Gelu => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            let u = c * (z + 0.044715 * z.powi(3));
            let du = c * (1.0 + 3.0 * 0.044715 * z * z);
            let t = u.tanh();
            0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * du
        }
    }
}

/// Bias-corrected Adam on one element; returns the new (p, m, v).
pub fn adam(s: &AdamStep, p: f64, g: f64, m: f64, v: f64) -> (f64, f64, f64) {
    let (lr, b1, b2, eps, wd) =
        (f64::from(s.lr), f64::from(s.beta1), f64::from(s.beta2), f64::from(s.eps), f64::from(s.weight_decay));
    let t = s.t as i32;
    let p = p - lr * wd * p;
    let m = b1 * m + (1.0 - b1) * g;
    let v = b2 * v + (1.0 - b2) * g * g;
    let m_hat = m / (1.0 - b1.powi(t));
    let v_hat = v / (1.0 - b2.powi(t));
    let eps_hat = eps / (1.0 - b2.powi(t)).sqrt();
    (p - lr * m_hat / (v_hat.sqrt() + eps_hat), m, v)
}

/// A dense MLP in f64: weights `w[l]` (inputs × outputs, row-major), biases
/// `b[l]`, Adam moments for both; hidden layers use `act`, the last is linear.
#[derive(Clone, Debug)]
pub struct Mlp {
    pub widths: Vec<usize>,
    pub act: Activation,
    pub w: Vec<Vec<f64>>,
    pub b: Vec<Vec<f64>>,
    pub mw: Vec<Vec<f64>>,
    pub vw: Vec<Vec<f64>>,
    pub mb: Vec<Vec<f64>>,
    pub vb: Vec<Vec<f64>>,
    pub t: u64,
}

impl Mlp {
    /// A model with the given weights and biases, zero moments.
    pub fn new(widths: Vec<usize>, act: Activation, w: Vec<Vec<f64>>, b: Vec<Vec<f64>>) -> Self {
        let zeros = |v: &Vec<Vec<f64>>| v.iter().map(|x| vec![0.0; x.len()]).collect::<Vec<_>>();
        let (mw, vw, mb, vb) = (zeros(&w), zeros(&w), zeros(&b), zeros(&b));
        Mlp { widths, act, w, b, mw, vw, mb, vb, t: 0 }
    }

    fn layer_act(&self, l: usize) -> Activation {
        if l + 1 == self.w.len() {
            Activation::Linear
        } else {
            self.act
        }
    }

    /// Outputs for `rows` inputs (row-major, `widths[0]` wide).
    pub fn predict(&self, x: &[f64], rows: usize) -> Vec<f64> {
        self.forward(x, rows).0.pop().expect("at least one layer")
    }

    /// Activations per layer (post-activation) and pre-activations.
    fn forward(&self, x: &[f64], rows: usize) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let mut outs: Vec<Vec<f64>> = Vec::new();
        let mut pres: Vec<Vec<f64>> = Vec::new();
        for l in 0..self.w.len() {
            let (fan_in, fan_out) = (self.widths[l], self.widths[l + 1]);
            let input = if l == 0 { x } else { &outs[l - 1] };
            let mut z = vec![0.0; rows * fan_out];
            for r in 0..rows {
                for o in 0..fan_out {
                    let mut s = self.b[l][o];
                    for i in 0..fan_in {
                        s += input[r * fan_in + i] * self.w[l][i * fan_out + o];
                    }
                    z[r * fan_out + o] = s;
                }
            }
            let f = self.layer_act(l);
            outs.push(z.iter().map(|&v| act(f, v)).collect());
            pres.push(z);
        }
        (outs, pres)
    }

    /// Mean squared error over all outputs of the batch.
    pub fn loss(&self, x: &[f64], y: &[f64], rows: usize) -> f64 {
        let p = self.predict(x, rows);
        p.iter().zip(y).map(|(p, y)| (p - y) * (p - y)).sum::<f64>() / p.len() as f64
    }

    /// Gradients (dW per layer, db per layer) of the batch's mean squared
    /// error, and the loss.
    #[allow(clippy::type_complexity)]
    pub fn gradients(&self, x: &[f64], y: &[f64], rows: usize) -> (Vec<Vec<f64>>, Vec<Vec<f64>>, f64) {
        let (outs, pres) = self.forward(x, rows);
        let layers = self.w.len();
        let pred = &outs[layers - 1];
        let count = pred.len() as f64;
        let loss = pred.iter().zip(y).map(|(p, y)| (p - y) * (p - y)).sum::<f64>() / count;
        // dL/dA of the last layer.
        let mut grad_out: Vec<f64> = pred.iter().zip(y).map(|(p, y)| 2.0 * (p - y) / count).collect();
        let mut dw = vec![Vec::new(); layers];
        let mut db = vec![Vec::new(); layers];
        for l in (0..layers).rev() {
            let (fan_in, fan_out) = (self.widths[l], self.widths[l + 1]);
            let f = self.layer_act(l);
            let dz: Vec<f64> = grad_out.iter().zip(&pres[l]).map(|(g, &z)| g * act_grad(f, z)).collect();
            let input = if l == 0 { x } else { &outs[l - 1] };
            let mut w_grad = vec![0.0; fan_in * fan_out];
            let mut b_grad = vec![0.0; fan_out];
            for r in 0..rows {
                for o in 0..fan_out {
                    b_grad[o] += dz[r * fan_out + o];
                    for i in 0..fan_in {
                        w_grad[i * fan_out + o] += input[r * fan_in + i] * dz[r * fan_out + o];
                    }
                }
            }
            let mut grad_in = vec![0.0; rows * fan_in];
            for r in 0..rows {
                for i in 0..fan_in {
                    let mut s = 0.0;
                    for o in 0..fan_out {
                        s += dz[r * fan_out + o] * self.w[l][i * fan_out + o];
                    }
                    grad_in[r * fan_in + i] = s;
                }
            }
            dw[l] = w_grad;
            db[l] = b_grad;
            grad_out = grad_in;
        }
        (dw, db, loss)
    }

    /// One training step (gradients of the batch's mean, then Adam); returns
    /// the loss before the update.
    pub fn train_step(&mut self, x: &[f64], y: &[f64], rows: usize, hp: &AdamStep) -> f64 {
        let (dw, db, loss) = self.gradients(x, y, rows);
        self.t += 1;
        let step = AdamStep { t: self.t, ..*hp };
        for l in 0..self.w.len() {
            for i in 0..self.w[l].len() {
                (self.w[l][i], self.mw[l][i], self.vw[l][i]) =
                    adam(&step, self.w[l][i], dw[l][i], self.mw[l][i], self.vw[l][i]);
            }
            for i in 0..self.b[l].len() {
                (self.b[l][i], self.mb[l][i], self.vb[l][i]) =
                    adam(&step, self.b[l][i], db[l][i], self.mb[l][i], self.vb[l][i]);
            }
        }
        loss
    }
}
