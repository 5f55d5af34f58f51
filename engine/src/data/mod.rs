//! Data: an in-memory table of inputs and targets, the seeded synthetic
//! regression set, `.npy` and CSV loaders, and the plan that batches an
//! epoch and shards each batch over replicas.
//!
//! * [`dataset`]: `Dataset` (rows of x and y, row-major f32).
//! * [`batches`]: per-epoch order, global batches, per-replica shards.
//! * [`synthetic`]: x ~ N(0, 1), y = x·w + σ·noise.
//! * [`npy`], [`csv`]: file loaders (and writers for predictions);
//!   [`files`] picks one by extension.

pub mod batches;
pub mod csv;
pub mod dataset;
pub mod files;
pub mod npy;
pub mod synthetic;

pub use batches::{shard_range, EpochPlan};
pub use dataset::Dataset;
pub use synthetic::Synthetic;
