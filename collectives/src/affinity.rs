//! Which cores a thread may run on: the machine's online cores, the calling
//! thread's affinity mask, and setting it. Launchers bind each rank to one
//! core (`oxccl run`, mpirun); the ranks' own decisions about the machine
//! (spinning while every rank has a core, measuring the machine's memory
//! bandwidth) still need the whole machine's count, and a thread may widen
//! its mask again to measure it.

use std::io;

/// The machine's online cores (not this thread's mask), at least 1.
pub fn online() -> usize {
    // SAFETY: sysconf only reads a system setting.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    match usize::try_from(n) {
        Ok(n) if n > 0 => n,
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// The CPUs the calling thread may run on, in ascending order.
pub fn allowed() -> io::Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most size_of::<cpu_set_t>() bytes into `set`.
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CPU_ISSET reads the set, for indices below CPU_SETSIZE.
    Ok((0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect())
}

/// The CPUs the calling thread may run on, one hardware thread of every
/// physical core first (in core order), then the other threads.
pub fn by_core() -> io::Result<Vec<usize>> {
    let allowed = allowed()?;
    let mut first = Vec::new();
    let mut rest = Vec::new();
    let mut seen = std::collections::BTreeMap::new();
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
pub fn core_of(cpu: usize) -> usize {
    let path = format!("/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split([',', '-']).next().and_then(|f| f.trim().parse().ok()))
        .unwrap_or(cpu)
}

/// A CPU for each of `ranks` ranks (threads or processes), each on a
/// physical core of its own among those the calling thread may use, when
/// there are that many; else `None` (then binding would put two ranks on one
/// core, and the kernel places them better).
pub fn one_core_each(ranks: usize) -> Option<Vec<usize>> {
    let cpus = by_core().ok()?;
    let physical = cpus.iter().map(|&c| core_of(c)).collect::<std::collections::BTreeSet<_>>().len();
    (ranks <= physical).then(|| cpus[..ranks].to_vec())
}

/// Restricts the calling thread to `cpus` (threads and processes it starts
/// afterwards inherit the mask).
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

/// Runs `f` on a thread free to use every online core, whatever the calling
/// thread is bound to (threads `f` starts inherit that); where the mask
/// cannot be widened (a cpuset), on the cores it may use.
pub fn unbound<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        s.spawn(|| {
            let _ = set(&(0..online()).collect::<Vec<_>>());
            f()
        })
        .join()
        .expect("the unbound thread panicked")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_core_each_rank_while_they_last() {
        let cpus = by_core().unwrap();
        assert_eq!(one_core_each(1), Some(vec![cpus[0]]));
        assert_eq!(one_core_each(cpus.len() + 1), None);
        assert_eq!(one_core_each(0), Some(vec![]));
    }

    #[test]
    fn a_mask_is_set_widened_and_restored() {
        let before = allowed().unwrap();
        assert!(!before.is_empty() && online() >= 1);
        std::thread::spawn(move || {
            set(&before[..1]).unwrap();
            assert_eq!(allowed().unwrap(), before[..1]);
            // Widened from one core to at least the cores the test started with.
            assert!(unbound(|| allowed().unwrap()).len() >= before.len());
            set(&before).unwrap();
            assert_eq!(allowed().unwrap(), before);
        })
        .join()
        .unwrap();
    }
}
