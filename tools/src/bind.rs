//! Binding ranks to cores, as launchers do (`mpirun --bind-to core`,
//! `srun --cpu-bind=cores`): a rank that stays on one core keeps its caches
//! and never shares a core with another rank, which at small sizes decides
//! the latency (two unbound ranks often land on one core and then take turns).
//!
//! `oxccl run` binds rank r to the r-th core of the cores it may use itself,
//! one hardware thread per physical core first. A child inherits the mask of
//! the thread that forks it, so the launcher sets its own mask before
//! starting each rank and restores it afterwards.

pub use oxccl::affinity::{by_core as cores, set};

/// How ranks are bound (`oxccl run --bind-to`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BindTo {
    /// One core per rank when there are at least as many cores as ranks
    /// (each rank then has a core of its own), else none.
    Auto,
    /// One core per rank, cycling through the cores when ranks outnumber them.
    Core,
    /// Ranks run wherever the kernel puts them.
    None,
}

/// The CPU each of `ranks` ranks is bound to under `how`, or `None` for no binding.
pub fn plan(how: BindTo, ranks: usize, cores: &[usize]) -> Option<Vec<usize>> {
    match how {
        BindTo::None => None,
        _ if cores.is_empty() => None,
        BindTo::Auto => oxccl::affinity::one_core_each(ranks),
        BindTo::Core => Some((0..ranks).map(|r| cores[r % cores.len()]).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans() {
        let cores = cores().unwrap();
        assert!(!cores.is_empty());
        assert_eq!(plan(BindTo::None, 2, &cores), None);
        let all = plan(BindTo::Core, cores.len() + 1, &cores).unwrap();
        assert_eq!(all.len(), cores.len() + 1);
        assert_eq!(all[cores.len()], cores[0], "cycles through the cores");
        assert_eq!(plan(BindTo::Auto, 1, &cores), Some(vec![cores[0]]));
        assert_eq!(plan(BindTo::Auto, 10_000, &cores), None, "more ranks than cores: no binding");
        assert_eq!(plan(BindTo::Core, 3, &[]), None);
    }
}
