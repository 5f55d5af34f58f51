//! The model: a `Sequential` stack of dense layers.
//!
//! * [`spec`]: the architecture (`--layers 32,10,1 --act relu`), the layout
//!   of every parameter in one flat buffer, FLOP counts, Glorot init.
//! * [`sequential`]: one replica's model on a backend — forward, manual
//!   backward, and its buffers.
//! * [`adam`]: the optimiser state (moments and step count) over a flat buffer.

pub mod adam;
pub mod sequential;
pub mod spec;

pub use adam::{Adam, AdamConfig};
pub use sequential::Sequential;
pub use spec::{LayerLayout, ModelSpec};
