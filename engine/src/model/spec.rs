//! The architecture of a `Sequential` MLP and where its parameters live.
//!
//! `widths = [32, 10, 1]` is the seed's model: `Dense(10, relu)` on 32
//! inputs, then `Dense(1)` (linear). Every hidden layer uses the same
//! activation; the last layer is always linear (a regression head).
//!
//! Parameters live in one flat buffer, layer after layer, each layer's
//! kernel W (inputs × outputs, row-major, as Keras stores `kernel`) followed
//! by its bias b. Gradients and both Adam moments use the same layout, so
//! an all-reduce or an optimiser step is one call over one buffer, and a
//! parameter-server shard is a contiguous range of it.

use crate::backend::Activation;
use crate::error::{Error, Result};
use crate::rng::Rng;

/// Where one dense layer's parameters are in the flat buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerLayout {
    pub inputs: usize,
    pub outputs: usize,
    pub activation: Activation,
    /// Offset of the kernel (inputs × outputs elements).
    pub kernel: usize,
    /// Offset of the bias (outputs elements), right after the kernel.
    pub bias: usize,
}

/// A `Sequential` MLP: layer widths (input first) and the hidden activation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    pub widths: Vec<usize>,
    pub hidden: Activation,
}

impl Default for ModelSpec {
    /// The seed's model: `Dense(10, relu, input 32) -> Dense(1)`.
    fn default() -> Self {
        ModelSpec { widths: vec![32, 10, 1], hidden: Activation::Relu }
    }
}

impl ModelSpec {
    pub fn new(widths: Vec<usize>, hidden: Activation) -> Result<Self> {
        if widths.len() < 2 {
            return Err(Error::Spec(format!("need at least an input and an output width, got {widths:?}")));
        }
        if widths.contains(&0) {
            return Err(Error::Spec(format!("widths must be positive, got {widths:?}")));
        }
        Ok(ModelSpec { widths, hidden })
    }

    /// Parses `"32,10,1"` and `"relu"`.
    pub fn parse(layers: &str, act: &str) -> Result<Self> {
        let widths = layers
            .split(',')
            .map(|w| w.trim().parse::<usize>().map_err(|_| Error::Spec(format!("bad width {w:?} in {layers:?}"))))
            .collect::<Result<Vec<_>>>()?;
        ModelSpec::new(widths, Activation::parse(act)?)
    }

    /// `"32,10,1"`.
    pub fn layers_string(&self) -> String {
        self.widths.iter().map(|w| w.to_string()).collect::<Vec<_>>().join(",")
    }

    pub fn inputs(&self) -> usize {
        self.widths[0]
    }

    pub fn outputs(&self) -> usize {
        *self.widths.last().expect("validated")
    }

    pub fn num_layers(&self) -> usize {
        self.widths.len() - 1
    }

    /// Every layer's place in the flat buffer.
    pub fn layout(&self) -> Vec<LayerLayout> {
        let mut offset = 0;
        let last = self.num_layers() - 1;
        (0..=last)
            .map(|l| {
                let (inputs, outputs) = (self.widths[l], self.widths[l + 1]);
                let kernel = offset;
                let bias = kernel + inputs * outputs;
                offset = bias + outputs;
                let activation = if l == last { Activation::Linear } else { self.hidden };
                LayerLayout { inputs, outputs, activation, kernel, bias }
            })
            .collect()
    }

    /// Number of parameters (all kernels and biases).
    pub fn num_params(&self) -> usize {
        self.widths.windows(2).map(|w| w[0] * w[1] + w[1]).sum()
    }

    /// Matmul FLOPs of one forward pass per sample: Σ 2·inputs·outputs.
    /// (Bias, activation and loss are O(width) and not counted.)
    pub fn forward_flops_per_sample(&self) -> u64 {
        self.widths.windows(2).map(|w| 2 * (w[0] * w[1]) as u64).sum()
    }

    /// Matmul FLOPs of one training step per sample: the forward pass, the
    /// kernel gradients (2·in·out per layer) and the input gradients of every
    /// layer but the first (2·in·out each).
    pub fn train_flops_per_sample(&self) -> u64 {
        let first = 2 * (self.widths[0] * self.widths[1]) as u64;
        3 * self.forward_flops_per_sample() - first
    }

    /// Keras' default initialisation: kernels Glorot-uniform,
    /// U(−√(6/(in+out)), √(6/(in+out))), biases zero; drawn from the "init"
    /// stream of `seed`, layer by layer, kernel elements in row-major order.
    pub fn init_params(&self, seed: u64) -> Vec<f32> {
        let mut rng = Rng::derive(seed, "init");
        let mut params = vec![0f32; self.num_params()];
        for layer in self.layout() {
            let limit = (6.0 / (layer.inputs + layer.outputs) as f64).sqrt();
            for w in &mut params[layer.kernel..layer.bias] {
                *w = rng.uniform_in(-limit, limit) as f32;
            }
        }
        params
    }

    /// Names of the layers' tensors, Keras-style: `dense_0/kernel`, `dense_0/bias`, ...
    pub fn tensor_names(&self) -> Vec<(String, usize, Vec<usize>)> {
        self.layout()
            .iter()
            .enumerate()
            .flat_map(|(l, layer)| {
                [
                    (format!("dense_{l}/kernel"), layer.kernel, vec![layer.inputs, layer.outputs]),
                    (format!("dense_{l}/bias"), layer.bias, vec![layer.outputs]),
                ]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_model_layout_and_counts() {
        let s = ModelSpec::default();
        assert_eq!(s.num_params(), 32 * 10 + 10 + 10 + 1);
        let l = s.layout();
        assert_eq!((l[0].kernel, l[0].bias, l[1].kernel, l[1].bias), (0, 320, 330, 340));
        assert_eq!(l[0].activation, Activation::Relu);
        assert_eq!(l[1].activation, Activation::Linear);
        assert_eq!(s.forward_flops_per_sample(), 2 * 320 + 2 * 10);
        assert_eq!(s.train_flops_per_sample(), 3 * (640 + 20) - 640);
    }

    #[test]
    fn parse_and_reject() {
        assert_eq!(ModelSpec::parse("32,10,1", "relu").unwrap(), ModelSpec::default());
        assert_eq!(ModelSpec::parse("4, 8, 2", "gelu").unwrap().hidden, Activation::Gelu);
        assert!(ModelSpec::parse("32", "relu").is_err());
        assert!(ModelSpec::parse("32,0,1", "relu").is_err());
        assert!(ModelSpec::parse("32,x,1", "relu").is_err());
        assert!(ModelSpec::parse("32,10,1", "tanh").is_err());
    }

    #[test]
    fn glorot_uniform_bounds_zero_bias_and_seeded() {
        let s = ModelSpec::parse("64,256,1", "relu").unwrap();
        let p = s.init_params(5);
        let l = s.layout();
        let limit = (6.0f64 / (64.0 + 256.0)).sqrt() as f32;
        let k = &p[l[0].kernel..l[0].bias];
        assert!(k.iter().all(|w| w.abs() <= limit));
        // Uniform on [-a, a] has variance a²/3.
        let var = k.iter().map(|w| f64::from(*w).powi(2)).sum::<f64>() / k.len() as f64;
        assert!((var - f64::from(limit).powi(2) / 3.0).abs() < 0.05 * f64::from(limit).powi(2), "{var}");
        assert!(p[l[0].bias..l[1].kernel].iter().all(|&b| b == 0.0));
        assert_eq!(p, s.init_params(5));
        assert_ne!(p, s.init_params(6));
    }
}
