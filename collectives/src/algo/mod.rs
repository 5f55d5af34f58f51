//! One file per algorithm. Each exposes `schedule(spec, rank)` covering every
//! collective; see each file's header for its words and steps.

pub mod direct;
pub mod halving_doubling;
pub mod ring;
pub mod tree;
