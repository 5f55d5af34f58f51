//! Who am I, how many are we, and where do we meet: the launcher's environment.
//!
//! [`Launch::from_env`] reads the first of these sets of variables that is
//! present (an empty variable counts as unset):
//!
//! | launcher | rank | world size | local rank | local world size |
//! |---|---|---|---|---|
//! | `oxccl` (`oxccl run`, or by hand) | `OXCCL_RANK` | `OXCCL_WORLD_SIZE` | `OXCCL_LOCAL_RANK` | `OXCCL_LOCAL_WORLD_SIZE` |
//! | `openmpi` (`mpirun`) | `OMPI_COMM_WORLD_RANK` | `OMPI_COMM_WORLD_SIZE` | `OMPI_COMM_WORLD_LOCAL_RANK` | `OMPI_COMM_WORLD_LOCAL_SIZE` |
//! | `slurm` (`srun`) | `SLURM_PROCID` | `SLURM_NTASKS` | `SLURM_LOCALID` | from `SLURM_STEP_TASKS_PER_NODE` (else `SLURM_TASKS_PER_NODE`) at `SLURM_NODEID` |
//! | `torchrun` (and launchers that mimic it) | `RANK` | `WORLD_SIZE` | `LOCAL_RANK` | `LOCAL_WORLD_SIZE` |
//!
//! The rank and the world size are required once a set is chosen; the local
//! ones are optional. Slurm's tasks-per-node lists look like `2(x3),1`
//! (two tasks on each of three nodes, then one).
//!
//! The master (where rank 0 serves the rendezvous store), whatever the
//! launcher:
//!
//! * host: `OXCCL_MASTER_ADDR`, else `MASTER_ADDR`, else (Slurm only) the
//!   first host of `SLURM_STEP_NODELIST`, `SLURM_JOB_NODELIST` or
//!   `SLURM_NODELIST`, else `127.0.0.1` when every rank is on this host (a
//!   world of one, or a local world size equal to the world size); otherwise
//!   it is an error.
//! * port: `OXCCL_MASTER_PORT`, else `MASTER_PORT`, else
//!   `DEFAULT_MASTER_PORT` (29571).
//!
//! Slurm node lists: the first top-level comma-separated item (commas inside
//! brackets do not split) with every bracket group replaced by the first
//! entry of its first range, digits kept as written: `node[01-04,07],x`
//! gives `node01`, `rack[2-3]-n[5-6]` gives `rack2-n5`, `a,b` gives `a`.
//! Unbalanced brackets or an empty group are an error.
//!
//! Caveats: a fixed default port means two jobs sharing a node must set
//! different ports. Under torchrun, `MASTER_PORT` is also torch's own store
//! (served by the agent on the first node): if that port is taken, set
//! `OXCCL_MASTER_PORT`. Inside an `sbatch` script but outside `srun`, Slurm
//! sets `SLURM_PROCID=0` and `SLURM_NTASKS` for the whole job, so a process
//! started there believes it is rank 0 of the job.

use std::collections::HashMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::schedule::Rank;

/// The master port when no variable names one.
pub(crate) const DEFAULT_MASTER_PORT: u16 = 29571;

/// Where rank 0 serves the rendezvous store: a host name or address, and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Master {
    pub host: String,
    pub port: u16,
}

impl Master {
    /// The addresses the host name resolves to (an address resolves to itself).
    pub fn resolve(&self) -> Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| Error::io(format!("cannot resolve the master address {self}"), e))?
            .collect();
        if addrs.is_empty() {
            return Err(Error::System(format!("the master address {self} resolves to nothing")));
        }
        Ok(addrs)
    }
}

impl fmt::Display for Master {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// This process's place in the job, as its launcher described it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    pub rank: Rank,
    pub world: usize,
    /// Rank among the ranks on this host, if the launcher says.
    pub local_rank: Option<usize>,
    /// Number of ranks on this host, if the launcher says.
    pub local_world: Option<usize>,
    pub master: Master,
    /// `oxccl`, `openmpi`, `slurm` or `torchrun`.
    pub launcher: &'static str,
}

/// The variable names of one launcher.
struct Names {
    launcher: &'static str,
    rank: &'static str,
    world: &'static str,
    local_rank: &'static str,
    /// `None` for Slurm, whose local world size comes from a task list.
    local_world: Option<&'static str>,
}

const LAUNCHERS: [Names; 4] = [
    Names {
        launcher: "oxccl",
        rank: "OXCCL_RANK",
        world: "OXCCL_WORLD_SIZE",
        local_rank: "OXCCL_LOCAL_RANK",
        local_world: Some("OXCCL_LOCAL_WORLD_SIZE"),
    },
    Names {
        launcher: "openmpi",
        rank: "OMPI_COMM_WORLD_RANK",
        world: "OMPI_COMM_WORLD_SIZE",
        local_rank: "OMPI_COMM_WORLD_LOCAL_RANK",
        local_world: Some("OMPI_COMM_WORLD_LOCAL_SIZE"),
    },
    Names {
        launcher: "slurm",
        rank: "SLURM_PROCID",
        world: "SLURM_NTASKS",
        local_rank: "SLURM_LOCALID",
        local_world: None,
    },
    Names {
        launcher: "torchrun",
        rank: "RANK",
        world: "WORLD_SIZE",
        local_rank: "LOCAL_RANK",
        local_world: Some("LOCAL_WORLD_SIZE"),
    },
];

/// A lookup in a map of variables where an empty value counts as unset.
struct Vars<'a>(&'a HashMap<String, String>);

impl Vars<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn parse<T: FromStr>(&self, name: &str, what: &str) -> Result<Option<T>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => {
                v.parse().map(Some).map_err(|_| Error::InvalidArgument(format!("{name}={v:?} is not a valid {what}")))
            }
        }
    }

    fn require<T: FromStr>(&self, name: &str, what: &str, because: &str) -> Result<T> {
        self.parse(name, what)?
            .ok_or_else(|| Error::InvalidArgument(format!("{name} is not set ({because} is set, so {name} is needed)")))
    }
}

impl Launch {
    /// Reads the process environment (variables that are not UTF-8 are ignored).
    pub fn from_env() -> Result<Launch> {
        let vars: HashMap<String, String> =
            std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect();
        Launch::from_vars(&vars)
    }

    /// The same as [`Launch::from_env`] over a given map of variables.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Launch> {
        let vars = Vars(vars);
        let Some(names) = LAUNCHERS.iter().find(|n| vars.get(n.rank).is_some()) else {
            return Err(Error::InvalidArgument(
                "no launcher environment: none of OXCCL_RANK, OMPI_COMM_WORLD_RANK, SLURM_PROCID or RANK is set \
                 (start the job with `oxccl run`, mpirun, srun or torchrun, or set OXCCL_RANK, OXCCL_WORLD_SIZE, \
                 OXCCL_MASTER_ADDR and OXCCL_MASTER_PORT)"
                    .into(),
            ));
        };
        let rank: usize = vars.require(names.rank, "rank", names.rank)?;
        let world: usize = vars.require(names.world, "world size", names.rank)?;
        if world == 0 {
            return Err(Error::InvalidArgument(format!("{}=0: the world size must be at least 1", names.world)));
        }
        if rank >= world {
            return Err(Error::InvalidArgument(format!(
                "{}={rank} is out of range for {}={world}",
                names.rank, names.world
            )));
        }
        let local_rank: Option<usize> = vars.parse(names.local_rank, "local rank")?;
        let (local_world, local_world_name) = match names.local_world {
            Some(name) => (vars.parse::<usize>(name, "local world size")?, name),
            None => (slurm_local_world(&vars)?, "SLURM_STEP_TASKS_PER_NODE"),
        };
        if let Some(lw) = local_world {
            if lw == 0 || lw > world {
                return Err(Error::InvalidArgument(format!(
                    "{local_world_name} gives a local world size of {lw}, outside 1..={world} ({}={world})",
                    names.world
                )));
            }
            if let Some(lr) = local_rank.filter(|&lr| lr >= lw) {
                return Err(Error::InvalidArgument(format!(
                    "{}={lr} is out of range for a local world size of {lw} ({local_world_name})",
                    names.local_rank
                )));
            }
        }
        let master = master(&vars, names, world, local_world)?;
        Ok(Launch { rank, world, local_rank, local_world, master, launcher: names.launcher })
    }
}

/// The master host and port; see the module documentation for the order.
fn master(vars: &Vars<'_>, names: &Names, world: usize, local_world: Option<usize>) -> Result<Master> {
    let port = match ["OXCCL_MASTER_PORT", "MASTER_PORT"].into_iter().find(|n| vars.get(n).is_some()) {
        Some(name) => match vars.parse::<u16>(name, "port (1-65535)")? {
            Some(0) => return Err(Error::InvalidArgument(format!("{name}=0 is not a valid port (1-65535)"))),
            Some(p) => p,
            None => DEFAULT_MASTER_PORT,
        },
        None => DEFAULT_MASTER_PORT,
    };
    if let Some(host) = vars.get("OXCCL_MASTER_ADDR").or_else(|| vars.get("MASTER_ADDR")) {
        return Ok(Master { host: host.to_string(), port });
    }
    if names.launcher == "slurm" {
        for name in ["SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"] {
            if let Some(list) = vars.get(name) {
                let host = first_host(list).map_err(|e| Error::InvalidArgument(format!("{name}={list:?}: {e}")))?;
                return Ok(Master { host, port });
            }
        }
    }
    if world == 1 || local_world == Some(world) {
        return Ok(Master { host: "127.0.0.1".into(), port });
    }
    let spread = match (names.local_world, local_world) {
        (Some(lw_name), Some(lw)) => format!("{lw_name}={lw} of {}={world}", names.world),
        _ => format!("{}={world}, and nothing says they are all on this host", names.world),
    };
    Err(Error::InvalidArgument(format!(
        "no master address: set MASTER_ADDR (or OXCCL_MASTER_ADDR) to rank 0's host; the ranks may span \
         several hosts ({spread})"
    )))
}

/// The first host of a Slurm node list such as `node[01-04,07],login1`.
pub(crate) fn first_host(list: &str) -> std::result::Result<String, String> {
    let mut host = String::new();
    let mut chars = list.trim().chars();
    while let Some(c) = chars.next() {
        match c {
            ',' => break,
            '[' => {
                let mut group = String::new();
                let mut closed = false;
                for c in chars.by_ref() {
                    match c {
                        ']' => {
                            closed = true;
                            break;
                        }
                        '[' => return Err("unbalanced brackets".into()),
                        c => group.push(c),
                    }
                }
                if !closed {
                    return Err("unbalanced brackets".into());
                }
                let first = group.split(',').next().unwrap_or("").split('-').next().unwrap_or("").trim();
                if first.is_empty() || !first.chars().all(|c| c.is_ascii_digit()) {
                    return Err(format!("cannot read the range [{group}]"));
                }
                host.push_str(first);
            }
            ']' => return Err("unbalanced brackets".into()),
            c => host.push(c),
        }
    }
    if host.is_empty() {
        return Err("no host in the list".into());
    }
    Ok(host)
}

/// The number of tasks on this node, from Slurm's tasks-per-node list
/// (`2(x3),1`) at index `SLURM_NODEID`; `None` when either is unset.
fn slurm_local_world(vars: &Vars<'_>) -> Result<Option<usize>> {
    let Some((name, list)) =
        ["SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"].into_iter().find_map(|n| vars.get(n).map(|v| (n, v)))
    else {
        return Ok(None);
    };
    let Some(node) = vars.parse::<usize>("SLURM_NODEID", "node index")? else {
        return Ok(None);
    };
    let invalid = || Error::InvalidArgument(format!("{name}={list:?} is not a tasks-per-node list such as 2(x3),1"));
    let mut index = 0usize;
    for item in list.split(',') {
        let item = item.trim();
        let (tasks, repeat) = match item.split_once('(') {
            Some((tasks, rest)) => {
                let times = rest.strip_prefix('x').and_then(|r| r.strip_suffix(')')).ok_or_else(invalid)?;
                (tasks, times.parse::<usize>().map_err(|_| invalid())?)
            }
            None => (item, 1),
        };
        let tasks: usize = tasks.parse().map_err(|_| invalid())?;
        if node < index + repeat {
            return Ok(Some(tasks));
        }
        index += repeat;
    }
    Err(Error::InvalidArgument(format!("SLURM_NODEID={node} is past the {index} nodes of {name}={list:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn launch(pairs: &[(&str, &str)]) -> Result<Launch> {
        Launch::from_vars(&vars(pairs))
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        match launch(pairs) {
            Ok(l) => panic!("expected an error, got {l:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn oxccl_variables() {
        let l = launch(&[
            ("OXCCL_RANK", "2"),
            ("OXCCL_WORLD_SIZE", "4"),
            ("OXCCL_LOCAL_RANK", "0"),
            ("OXCCL_LOCAL_WORLD_SIZE", "2"),
            ("OXCCL_MASTER_ADDR", "10.0.0.7"),
            ("OXCCL_MASTER_PORT", "1234"),
        ])
        .unwrap();
        assert_eq!(
            l,
            Launch {
                rank: 2,
                world: 4,
                local_rank: Some(0),
                local_world: Some(2),
                master: Master { host: "10.0.0.7".into(), port: 1234 },
                launcher: "oxccl",
            }
        );
    }

    #[test]
    fn open_mpi_on_one_host_meets_on_loopback_at_the_default_port() {
        let l = launch(&[
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
        ])
        .unwrap();
        assert_eq!((l.rank, l.world, l.local_rank, l.local_world, l.launcher), (1, 2, Some(1), Some(2), "openmpi"));
        assert_eq!(l.master, Master { host: "127.0.0.1".into(), port: DEFAULT_MASTER_PORT });
    }

    #[test]
    fn open_mpi_across_hosts_needs_a_master_address() {
        let base = [
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "8"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "4"),
        ];
        let e = err(&base);
        assert!(e.contains("MASTER_ADDR") && e.contains("OMPI_COMM_WORLD_LOCAL_SIZE=4"), "{e}");
        let mut with = base.to_vec();
        with.extend([("MASTER_ADDR", "head"), ("MASTER_PORT", "5000")]);
        assert_eq!(launch(&with).unwrap().master, Master { host: "head".into(), port: 5000 });
    }

    #[test]
    fn slurm_reads_the_node_list_and_tasks_per_node() {
        let l = launch(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "7"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_NODEID", "2"),
            ("SLURM_STEP_TASKS_PER_NODE", "2(x3),1"),
            ("SLURM_STEP_NODELIST", "node[01-04],x"),
            ("SLURM_NODELIST", "other"),
        ])
        .unwrap();
        assert_eq!((l.rank, l.world, l.local_rank, l.local_world, l.launcher), (5, 7, Some(1), Some(2), "slurm"));
        assert_eq!(l.master, Master { host: "node01".into(), port: DEFAULT_MASTER_PORT });
        // The last node of `2(x3),1` has one task; past it is an error.
        let last = [("SLURM_PROCID", "6"), ("SLURM_NTASKS", "7"), ("SLURM_NODEID", "3")];
        let mut v = last.to_vec();
        v.extend([("SLURM_TASKS_PER_NODE", "2(x3),1"), ("SLURM_NODELIST", "a,b")]);
        let l = launch(&v).unwrap();
        assert_eq!((l.local_world, l.master.host.as_str()), (Some(1), "a"));
        v[2] = ("SLURM_NODEID", "4");
        assert!(err(&v).contains("SLURM_NODEID=4 is past the 4 nodes"));
        v[2] = ("SLURM_NODEID", "0");
        v[3] = ("SLURM_TASKS_PER_NODE", "2(3)");
        assert!(err(&v).contains("SLURM_TASKS_PER_NODE=\"2(3)\""));
    }

    #[test]
    fn slurm_without_a_node_list_or_master_spanning_hosts_is_an_error() {
        let e = err(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "4")]);
        assert!(e.contains("no master address"), "{e}");
        // MASTER_ADDR beats the node list.
        let l =
            launch(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "4"), ("SLURM_NODELIST", "n[1-2]"), ("MASTER_ADDR", "m")])
                .unwrap();
        assert_eq!(l.master.host, "m");
    }

    #[test]
    fn torchrun_variables() {
        let l = launch(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "::1"),
            ("MASTER_PORT", "29500"),
        ])
        .unwrap();
        assert_eq!((l.rank, l.world, l.local_rank, l.local_world, l.launcher), (3, 4, Some(1), Some(2), "torchrun"));
        assert_eq!(l.master.to_string(), "[::1]:29500");
        assert_eq!(l.master.resolve().unwrap(), vec!["[::1]:29500".parse::<SocketAddr>().unwrap()]);
    }

    #[test]
    fn launchers_are_tried_in_order_and_oxccl_master_overrides_all() {
        let l = launch(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "9"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "9"),
            ("SLURM_NODELIST", "n1"),
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "3"),
            ("MASTER_ADDR", "torch-master"),
            ("MASTER_PORT", "1"),
            ("OXCCL_MASTER_ADDR", "ox-master"),
            ("OXCCL_MASTER_PORT", "2"),
        ])
        .unwrap();
        assert_eq!((l.launcher, l.rank, l.world), ("openmpi", 1, 3));
        assert_eq!(l.master, Master { host: "ox-master".into(), port: 2 });
        let l = launch(&[("OXCCL_RANK", "0"), ("OXCCL_WORLD_SIZE", "1"), ("RANK", "5"), ("WORLD_SIZE", "9")]).unwrap();
        assert_eq!((l.launcher, l.rank, l.world, l.master.host.as_str()), ("oxccl", 0, 1, "127.0.0.1"));
    }

    #[test]
    fn errors_name_the_variable() {
        assert!(err(&[]).contains("no launcher environment"));
        assert!(err(&[("OXCCL_RANK", ""), ("WORLD_SIZE", "2")]).contains("no launcher environment"));
        let e = err(&[("OXCCL_RANK", "1")]);
        assert!(e.contains("OXCCL_WORLD_SIZE is not set"), "{e}");
        let e = err(&[("RANK", "x"), ("WORLD_SIZE", "2")]);
        assert!(e.contains("RANK=\"x\" is not a valid rank"), "{e}");
        let e = err(&[("RANK", "2"), ("WORLD_SIZE", "2")]);
        assert!(e.contains("RANK=2 is out of range for WORLD_SIZE=2"), "{e}");
        let e = err(&[("RANK", "0"), ("WORLD_SIZE", "0")]);
        assert!(e.contains("WORLD_SIZE=0"), "{e}");
        let e = err(&[("RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_PORT", "70000")]);
        assert!(e.contains("MASTER_PORT=\"70000\" is not a valid port"), "{e}");
        let e = err(&[("RANK", "0"), ("WORLD_SIZE", "1"), ("OXCCL_MASTER_PORT", "0")]);
        assert!(e.contains("OXCCL_MASTER_PORT=0"), "{e}");
        let e = err(&[("RANK", "0"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "2"), ("LOCAL_WORLD_SIZE", "2")]);
        assert!(e.contains("LOCAL_RANK=2 is out of range for a local world size of 2"), "{e}");
        let e = err(&[("RANK", "0"), ("WORLD_SIZE", "4"), ("LOCAL_WORLD_SIZE", "5")]);
        assert!(e.contains("LOCAL_WORLD_SIZE gives a local world size of 5"), "{e}");
        let e = err(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2"), ("SLURM_NODELIST", "n[01-02")]);
        assert!(e.contains("SLURM_NODELIST=\"n[01-02\": unbalanced brackets"), "{e}");
    }

    #[test]
    fn slurm_node_lists() {
        assert_eq!(first_host("node[01-04],x").unwrap(), "node01");
        assert_eq!(first_host("node[07,01-04]").unwrap(), "node07");
        assert_eq!(first_host("rack[2-3]-n[005-006]").unwrap(), "rack2-n005");
        assert_eq!(first_host("a,b[1-2]").unwrap(), "a");
        assert_eq!(first_host(" solo ").unwrap(), "solo");
        assert_eq!(first_host("n[1-2]x[3]").unwrap(), "n1x3");
        assert!(first_host("n[1-2").is_err());
        assert!(first_host("n[1-2]x[3").is_err());
        assert!(first_host("n1-2]").is_err());
        assert!(first_host("n[]").is_err());
        assert!(first_host("n[a-b]").is_err());
        assert!(first_host("n[[1]]").is_err());
        assert!(first_host(",x").is_err());
    }
}
