//! (being written)

use crate::schedule::{Rank, Schedule, Spec};

pub fn schedule(spec: &Spec, rank: Rank) -> Schedule {
    let _ = (spec, rank);
    todo!("algorithm not yet written")
}
