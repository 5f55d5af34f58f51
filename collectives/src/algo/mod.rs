//! The algorithms, one file each. Each exposes `schedule(spec, rank)`
//! covering every collective; see each file's header for its words and
//! steps. [`Algorithm`] names them and dispatches to them; the schedules
//! themselves are plain data ([`crate::schedule`]).

pub mod direct;
pub mod halving_doubling;
pub mod ring;
pub mod tree;

use std::fmt;
use std::str::FromStr;

use crate::schedule::{Rank, Schedule, Spec};
use crate::transport::connector::Caps;

/// The algorithms; each has one file under `algo/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Ring,
    Tree,
    HalvingDoubling,
    Direct,
}

impl Algorithm {
    pub const ALL: [Algorithm; 4] = [Algorithm::Ring, Algorithm::Tree, Algorithm::HalvingDoubling, Algorithm::Direct];

    /// True when the schedule reads or writes other ranks' buffers directly,
    /// so it runs only where ranks share an address space.
    pub const fn needs_shared_memory(self) -> bool {
        matches!(self, Algorithm::Direct)
    }

    /// What a group's transport must be able to do for this algorithm to run.
    pub const fn needs(self) -> Caps {
        Caps { shares_memory: self.needs_shared_memory(), registers_memory: false, device_memory: false }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::Ring => "ring",
            Algorithm::Tree => "tree",
            Algorithm::HalvingDoubling => "rhd",
            Algorithm::Direct => "direct",
        }
    }

    /// The schedule this algorithm gives `rank`.
    pub fn schedule(self, spec: &Spec, rank: Rank) -> Schedule {
        debug_assert!(rank < spec.world && spec.world > 0 && spec.slice > 0);
        match self {
            Algorithm::Ring => ring::schedule(spec, rank),
            Algorithm::Tree => tree::schedule(spec, rank),
            Algorithm::HalvingDoubling => halving_doubling::schedule(spec, rank),
            Algorithm::Direct => direct::schedule(spec, rank),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "ring" => Algorithm::Ring,
            "tree" => Algorithm::Tree,
            "rhd" | "halving_doubling" | "halving-doubling" => Algorithm::HalvingDoubling,
            "direct" => Algorithm::Direct,
            _ => return Err(format!("unknown algorithm '{s}' (expected one of: ring, tree, rhd, direct)")),
        })
    }
}
