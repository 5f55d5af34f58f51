//! The seeded synthetic regression set, the kind of data the seed trains on.
//!
//! For a seed and an input width d (32 for the seed's model):
//!
//! * w ∈ ℝᵈ, drawn once from N(0, 1) (stream `"synthetic w"`), shared by
//!   every split of the same seed;
//! * each row: x ~ N(0, I_d), y = x·w + σ·ε with ε ~ N(0, 1) and σ = 0.1 by
//!   default. Rows of the "train" and "test" splits come from different
//!   streams (`"synthetic train"`, `"synthetic test"`), so they never overlap.
//!
//! y therefore has variance |w|² + σ² (about d + 0.01), and the best
//! possible test MSE is σ² = 0.01. The target has one column.

use super::dataset::Dataset;
use crate::error::Result;
use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Synthetic {
    pub width: usize,
    pub noise: f64,
    pub seed: u64,
}

impl Default for Synthetic {
    fn default() -> Self {
        Synthetic { width: 32, noise: 0.1, seed: 0 }
    }
}

impl Synthetic {
    /// The true weights w.
    pub fn weights(&self) -> Vec<f64> {
        let mut rng = Rng::derive(self.seed, "synthetic w");
        (0..self.width).map(|_| rng.normal()).collect()
    }

    /// `rows` rows of split `split` ("train", "test", or any other name).
    pub fn generate(&self, rows: usize, split: &str) -> Result<Dataset> {
        let w = self.weights();
        let mut rng = Rng::derive(self.seed, &format!("synthetic {split}"));
        let mut x = Vec::with_capacity(rows * self.width);
        let mut y = Vec::with_capacity(rows);
        for _ in 0..rows {
            let mut dot = 0.0;
            for wj in &w {
                let v = rng.normal() as f32;
                dot += f64::from(v) * wj;
                x.push(v);
            }
            y.push((dot + self.noise * rng.normal()) as f32);
        }
        Dataset::new(x, self.width, y, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_its_definition() {
        let s = Synthetic { width: 4, noise: 0.1, seed: 11 };
        let d = s.generate(20_000, "train").unwrap();
        let w = s.weights();
        // Residual y − x·w is the noise: mean ~0, variance ~σ².
        let res: Vec<f64> = (0..d.rows)
            .map(|r| f64::from(d.y[r]) - d.x_row(r).iter().zip(&w).map(|(&x, w)| f64::from(x) * w).sum::<f64>())
            .collect();
        let mean = res.iter().sum::<f64>() / res.len() as f64;
        let var = res.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / res.len() as f64;
        assert!(mean.abs() < 0.005 && (var - 0.01).abs() < 0.001, "mean {mean} var {var}");
        assert_eq!(d, s.generate(20_000, "train").unwrap());
        assert_ne!(d.x[..4], s.generate(1, "test").unwrap().x[..]);
    }
}
