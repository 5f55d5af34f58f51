//! Adam's state over a flat buffer: both moments and the step count.
//!
//! Hyper-parameters default to Keras' (`lr` 0.001, β₁ 0.9, β₂ 0.999,
//! ε 1e-7, no weight decay); the update itself is the backend's fused
//! kernel ([`crate::backend::AdamStep`] gives the formula).

use crate::backend::{dst, src, AdamStep, Backend};
use crate::error::Result;

/// Adam's hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Decoupled weight decay (AdamW / Keras `weight_decay`); 0 turns it off.
    pub weight_decay: f32,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-7, weight_decay: 0.0 }
    }
}

impl AdamConfig {
    /// The hyper-parameters of update number `t` (1-based).
    pub fn step(&self, t: u64) -> AdamStep {
        AdamStep {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            t,
        }
    }
}

/// Adam over `len` parameters: moments in backend buffers and the number of
/// updates done.
pub struct Adam<B: Backend> {
    pub config: AdamConfig,
    pub m: B::Buf,
    pub v: B::Buf,
    /// Updates done so far (the next one is t + 1).
    pub t: u64,
    len: usize,
}

impl<B: Backend> Adam<B> {
    pub fn new(backend: &B, config: AdamConfig, len: usize) -> Result<Self> {
        Ok(Adam { config, m: backend.alloc(len)?, v: backend.alloc(len)?, t: 0, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One update of `params[0..len]` with `grads[0..len]` (further
    /// elements of `grads`, such as the loss slot, are ignored).
    pub fn update(&mut self, backend: &B, params: &mut B::Buf, grads: &B::Buf) -> Result<()> {
        self.t += 1;
        let step = self.config.step(self.t);
        backend.adam(&step, dst(params, 0), src(grads, 0), dst(&mut self.m, 0), dst(&mut self.v, 0), self.len)
    }

    /// The moments as host vectors (m, v).
    pub fn moments(&self, backend: &B) -> Result<(Vec<f32>, Vec<f32>)> {
        let (mut m, mut v) = (vec![0.0; self.len], vec![0.0; self.len]);
        backend.download(&self.m, 0, &mut m)?;
        backend.download(&self.v, 0, &mut v)?;
        Ok((m, v))
    }

    /// Restores moments and step count (from a checkpoint).
    pub fn restore(&mut self, backend: &B, m: &[f32], v: &[f32], t: u64) -> Result<()> {
        if m.len() != self.len || v.len() != self.len {
            return Err(crate::Error::Shape {
                op: "adam restore",
                detail: format!("moments of {} and {} elements for {} parameters", m.len(), v.len(), self.len),
            });
        }
        backend.upload(&mut self.m, 0, m)?;
        backend.upload(&mut self.v, 0, v)?;
        self.t = t;
        Ok(())
    }
}
