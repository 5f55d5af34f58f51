//! Batching and sharding: which rows each replica sees at each step.
//!
//! An epoch visits every row exactly once, in an order that is either the
//! identity or a Fisher–Yates shuffle drawn from stream `"epoch {e}"` of
//! the seed (so a resumed run sees the same order as an uninterrupted one).
//! Step s takes global batch s: positions `s·B .. min((s+1)·B, rows)` of
//! that order, so the last batch may be short and nothing is dropped.
//! A global batch of n rows is split into contiguous shards over R replicas
//! by [`shard_range`]: the first n mod R replicas get ⌈n/R⌉ rows, the others
//! ⌊n/R⌋ (a replica may get none when n < R). Shards partition the batch, so
//! no row is duplicated either.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::rng::Rng;

/// Part `i` of `len` items split into `parts` contiguous, balanced ranges.
pub fn shard_range(len: usize, parts: usize, i: usize) -> Range<usize> {
    assert!(parts > 0 && i < parts, "shard {i} of {parts}");
    let (base, extra) = (len / parts, len % parts);
    let start = i * base + i.min(extra);
    start..start + base + usize::from(i < extra)
}

/// One epoch's order and batches.
#[derive(Clone, Debug)]
pub struct EpochPlan {
    order: Vec<usize>,
    batch: usize,
}

impl EpochPlan {
    /// Batches of `batch` rows over `rows` rows; shuffled from `seed` and
    /// `epoch` when `shuffle`.
    pub fn new(rows: usize, batch: usize, shuffle: bool, seed: u64, epoch: u64) -> Result<Self> {
        if batch == 0 {
            return Err(Error::Config("batch size must be positive".into()));
        }
        let mut order: Vec<usize> = (0..rows).collect();
        if shuffle {
            Rng::derive(seed, &format!("epoch {epoch}")).shuffle(&mut order);
        }
        Ok(EpochPlan { order, batch })
    }

    /// Number of steps (global batches) in the epoch.
    pub fn steps(&self) -> usize {
        self.order.len().div_ceil(self.batch)
    }

    /// The rows of global batch `step`.
    pub fn global(&self, step: usize) -> &[usize] {
        let start = step * self.batch;
        &self.order[start..(start + self.batch).min(self.order.len())]
    }

    /// The rows replica `replica` of `replicas` trains on at `step`.
    pub fn shard(&self, step: usize, replica: usize, replicas: usize) -> &[usize] {
        let g = self.global(step);
        &g[shard_range(g.len(), replicas, replica)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_every_epoch() {
        for &(rows, batch, replicas) in &[(100, 64, 2), (65, 8, 3), (7, 4, 5), (10, 10, 1), (1, 3, 4)] {
            let plan = EpochPlan::new(rows, batch, true, 3, 1).unwrap();
            let mut seen = vec![0u32; rows];
            for s in 0..plan.steps() {
                let mut sizes = Vec::new();
                for r in 0..replicas {
                    let shard = plan.shard(s, r, replicas);
                    sizes.push(shard.len());
                    shard.iter().for_each(|&i| seen[i] += 1);
                }
                assert_eq!(sizes.iter().sum::<usize>(), plan.global(s).len());
                assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
            }
            assert!(seen.iter().all(|&c| c == 1), "rows {rows} batch {batch} replicas {replicas}: {seen:?}");
        }
    }

    #[test]
    fn shuffle_depends_on_epoch_and_is_reproducible() {
        let a = EpochPlan::new(50, 50, true, 1, 0).unwrap();
        let b = EpochPlan::new(50, 50, true, 1, 1).unwrap();
        assert_ne!(a.global(0), b.global(0));
        assert_eq!(a.global(0), EpochPlan::new(50, 50, true, 1, 0).unwrap().global(0));
        let plain = EpochPlan::new(5, 2, false, 1, 0).unwrap();
        assert_eq!((plain.global(0), plain.global(2)), (&[0, 1][..], &[4][..]));
    }

    #[test]
    fn shard_ranges() {
        assert_eq!(shard_range(10, 3, 0), 0..4);
        assert_eq!(shard_range(10, 3, 1), 4..7);
        assert_eq!(shard_range(10, 3, 2), 7..10);
        assert_eq!(shard_range(2, 4, 3), 2..2);
    }
}
