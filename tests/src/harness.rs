//! What the process and namespace tests share: starting a job of
//! `oxccl-rank` processes, and checking how its ranks ended.

use std::path::Path;
use std::process::ExitStatus;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::procs::{rank_command, Group, RankEnv};

/// Tests that start processes run one at a time (they compete for the two
/// cores CI has, and their deadlines are tight).
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `OXCCL_TIMEOUT` of the failure scenarios.
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// What an error may take beyond [`TIMEOUT`] to be printed and the rank to
/// exit (scheduling on two busy cores).
pub const SLACK: Duration = Duration::from_secs(2);
/// Deadline for every rank of a job to be up and through its first call.
pub const READY: Duration = Duration::from_secs(30);

/// Where each rank runs.
#[derive(Clone, Debug)]
pub struct Placement {
    /// `Some(namespace)` per rank, or `None` for this host.
    pub netns: Vec<Option<String>>,
    pub master_addr: String,
    pub master_port: u16,
    /// Per rank: (local rank, local world size).
    pub local: Vec<(usize, usize)>,
    /// Per-rank further variables.
    pub extra: Vec<Vec<(String, String)>>,
}

impl Placement {
    /// `n` ranks on this host meeting on loopback at a free port.
    pub fn local(n: usize) -> Placement {
        Placement {
            netns: vec![None; n],
            master_addr: "127.0.0.1".into(),
            master_port: crate::procs::free_port(),
            local: (0..n).map(|r| (r, n)).collect(),
            extra: vec![Vec::new(); n],
        }
    }
}

/// Starts `bin args...` as every rank of `place` with `transport` and `timeout`.
pub fn start(bin: &Path, place: &Placement, transport: &str, timeout: Duration, args: &[&str]) -> Group {
    let n = place.netns.len();
    let mut g = Group::new();
    for r in 0..n {
        let env = RankEnv {
            rank: r,
            world: n,
            local_rank: place.local[r].0,
            local_world: place.local[r].1,
            master_addr: place.master_addr.clone(),
            master_port: place.master_port,
            transport: transport.into(),
            timeout: timeout.as_secs_f64(),
            extra: place.extra[r].clone(),
        };
        g.spawn(&format!("rank {r}"), rank_command(bin, place.netns[r].as_deref(), &env, args));
    }
    g
}

/// Checks the line every rank prints after init: its own pid (so the
/// process the test holds is the rank, also through `ip netns exec`) and the
/// transport it got.
pub fn check_init(g: &Group, transport: &str, deadline: Instant) {
    for r in 0..g.len() {
        let want = format!("rank {r} pid {} transport {transport} world {}", g.pid(r), g.len());
        let line = g.wait_line(r, &format!("rank {r} pid"), deadline).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(line.text, want, "rank {r}'s first line\n{}", g.dump());
    }
}

/// Runs the collectives scenario on every rank and checks each ends with
/// `rank R ok` and status 0, by `limit`. Returns the job's wall time.
pub fn collectives(
    bin: &Path,
    place: &Placement,
    transport: &str,
    expect: &str,
    limit: Duration,
) -> (Duration, Vec<u32>) {
    scenario(bin, place, transport, expect, limit, "collectives")
}

/// [`collectives`] for any scenario that ends with `rank R ok (...)`.
pub fn scenario(
    bin: &Path,
    place: &Placement,
    transport: &str,
    expect: &str,
    limit: Duration,
    name: &str,
) -> (Duration, Vec<u32>) {
    let began = Instant::now();
    let mut g = start(bin, place, transport, Duration::from_secs(30), &[name]);
    let deadline = began + limit;
    check_init(&g, expect, deadline);
    let all: Vec<usize> = (0..g.len()).collect();
    let exits = g.wait_exits(&all, deadline);
    for (r, e) in exits.iter().enumerate() {
        match e {
            Some((status, _)) if status.success() => {}
            Some((status, _)) => panic!("rank {r} exited with {status}\n{}", g.dump()),
            None => panic!("rank {r} did not finish within {limit:?}\n{}", g.dump()),
        }
        assert!(g.find(r, &format!("rank {r} ok (")).is_some(), "rank {r} exited 0 without `ok`\n{}", g.dump());
        assert!(g.find(r, "wrong").is_none(), "rank {r}\n{}", g.dump());
    }
    (began.elapsed(), g.pids())
}

/// Waits until every rank printed `rank R ready`; the instant the last did.
pub fn all_ready(g: &Group, deadline: Instant) -> Instant {
    (0..g.len())
        .map(|r| g.wait_line(r, &format!("rank {r} ready"), deadline).unwrap_or_else(|e| panic!("{e}")).at)
        .max()
        .expect("some ranks")
}

/// How a surviving rank ended.
#[derive(Debug)]
pub struct End {
    pub rank: usize,
    pub status: ExitStatus,
    /// From the provoking event to the exit being seen.
    pub after: Duration,
    /// The text after `rank R error: ` (empty when there was no such line).
    pub error: String,
}

/// What is wrong with how a job ended, collected so that one failure shows
/// every problem at once, with every rank's output.
#[derive(Default)]
pub struct Problems(Vec<String>);

impl Problems {
    /// True when nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems found, one a line.
    pub fn list(&self) -> String {
        self.0.join("\n")
    }

    /// Records `what` unless `ok`.
    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    /// Panics listing every problem, and what every process printed.
    pub fn assert_none(self, g: &Group) {
        assert!(self.0.is_empty(), "{}\n{}", self.0.join("\n"), g.dump());
    }
}

/// Waits for `ranks` to exit (up to a few seconds past the deadline, to see
/// how late they are) and checks each exited within `TIMEOUT + SLACK` of
/// `event`, with status 3 and an error line. Ranks still running are
/// problems and have no [`End`].
pub fn survivors_end(g: &mut Group, ranks: &[usize], event: Instant, problems: &mut Problems) -> Vec<End> {
    survivors_end_within(g, ranks, event, TIMEOUT, problems)
}

/// [`survivors_end`] for a job started with `OXCCL_TIMEOUT` = `timeout`:
/// each must exit within `timeout + SLACK` of `event`.
pub fn survivors_end_within(
    g: &mut Group,
    ranks: &[usize],
    event: Instant,
    timeout: Duration,
    problems: &mut Problems,
) -> Vec<End> {
    let limit = timeout + SLACK;
    let exits = g.wait_exits(ranks, event + limit + Duration::from_secs(5));
    let mut ends = Vec::new();
    for (&r, e) in ranks.iter().zip(&exits) {
        let Some((status, at)) = *e else {
            problems.check(false, || {
                format!("rank {r} still runs {:?} after the event (deadline {limit:?})", event.elapsed())
            });
            continue;
        };
        let after = at.saturating_duration_since(event);
        let prefix = format!("rank {r} error: ");
        let error =
            g.find(r, &prefix).map(|l| l.text[l.text.find(&prefix).expect("found") + prefix.len()..].to_string());
        problems.check(error.is_some(), || format!("rank {r} exited ({status}) without an error line"));
        let error = error.unwrap_or_default();
        problems.check(status.code() == Some(crate::EXIT_LOOP_ERROR), || format!("rank {r}: {status}"));
        problems.check(after < limit, || format!("rank {r} took {after:?} to report (deadline {limit:?}): {error}"));
        ends.push(End { rank: r, status, after, error });
    }
    ends
}

/// True when `error` names the call with its sequence number (`all_reduce #12`).
pub fn names_call(error: &str, call: &str) -> bool {
    let pat = format!("{call} #");
    error.match_indices(&pat).any(|(i, _)| error[i + pat.len()..].starts_with(|c: char| c.is_ascii_digit()))
}

/// True when `error` names `peer` as the rank that failed: gone, or waited for.
pub fn names_peer(error: &str, peer: usize) -> bool {
    let gone = format!("rank {peer} is gone");
    let waited = format!("waiting for rank {peer} ");
    error.contains(&gone) || error.contains(&waited)
}

/// Prints how the survivors ended (visible with `--nocapture`, and in failures).
pub fn report(what: &str, ends: &[End]) {
    for e in ends {
        eprintln!("{what}: rank {} after {:?}: {}", e.rank, e.after, e.error);
    }
}
