//! Binding ranks to cores, as launchers do (`mpirun --bind-to core`,
//! `srun --cpu-bind=cores`): a rank that stays on one core keeps its caches
//! and never shares a core with another rank, which at small sizes decides
//! the latency (two unbound ranks often land on one core and then take turns).
//!
//! `oxccl run` binds rank r to the r-th core of the cores it may use itself,
//! one hardware thread per physical core first. A child inherits the mask of
//! the thread that forks it, so the launcher sets its own mask before
//! starting each rank and restores it afterwards.

use std::collections::BTreeMap;
use std::io;

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

/// The CPUs the calling thread may run on, one hardware thread of every
/// physical core first (in core order), then the other threads.
pub fn cores() -> io::Result<Vec<usize>> {
    let allowed = allowed()?;
    let mut first = Vec::new();
    let mut rest = Vec::new();
    let mut seen = BTreeMap::new();
    for &cpu in &allowed {
        let core = core_of(cpu);
        if seen.insert(core, cpu).is_none() {
            first.push(cpu);
        } else {
            rest.push(cpu);
        }
    }
    first.extend(rest);
    Ok(first)
}

/// The physical core of a CPU: the first thread its siblings list names
/// (the CPU itself where the kernel does not say).
fn core_of(cpu: usize) -> usize {
    let path = format!("/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split([',', '-']).next().and_then(|f| f.trim().parse().ok()))
        .unwrap_or(cpu)
}

/// The CPU each of `ranks` ranks is bound to under `how`, or `None` for no binding.
pub fn plan(how: BindTo, ranks: usize, cores: &[usize]) -> Option<Vec<usize>> {
    let physical = cores.iter().map(|&c| core_of(c)).collect::<std::collections::BTreeSet<_>>().len();
    match how {
        BindTo::None => None,
        _ if cores.is_empty() => None,
        BindTo::Auto if ranks > physical => None,
        BindTo::Auto | BindTo::Core => Some((0..ranks).map(|r| cores[r % cores.len()]).collect()),
    }
}

fn allowed() -> io::Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most size_of::<cpu_set_t>() bytes into `set`.
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CPU_ISSET reads the set, for indices below CPU_SETSIZE.
    Ok((0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect())
}

/// Restricts the calling thread to `cpus` (its children inherit it).
pub fn set(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
        // SAFETY: CPU_SET writes the bit of `c`, which is below CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: sched_setaffinity reads size_of::<cpu_set_t>() bytes from `set`.
    match unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
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

    #[test]
    fn the_mask_is_set_and_restored() {
        let before = allowed().unwrap();
        std::thread::spawn(move || {
            set(&before[..1]).unwrap();
            assert_eq!(allowed().unwrap(), before[..1]);
            set(&before).unwrap();
            assert_eq!(allowed().unwrap(), before);
        })
        .join()
        .unwrap();
    }
}
