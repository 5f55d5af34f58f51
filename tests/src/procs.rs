//! Rank processes started by a test: their output, read as it comes with a
//! timestamp per line, waits that all have deadlines, and a [`Group`] guard
//! that kills and reaps every process it started when dropped, whether the
//! test passed or panicked (stopped ones included: SIGKILL ends a process
//! stopped by SIGSTOP too).

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a dropped group waits for each killed process to be reaped.
const REAP: Duration = Duration::from_secs(5);
/// Polling interval of exit waits.
const POLL: Duration = Duration::from_millis(5);
/// How long after a process's exit its output may take to be read to the end.
const DRAIN: Duration = Duration::from_secs(2);

/// One line a process printed, and when the test read it.
#[derive(Clone, Debug)]
pub struct Line {
    pub at: Instant,
    pub stderr: bool,
    pub text: String,
}

#[derive(Default)]
struct LogState {
    lines: Vec<Line>,
    /// Standard output reached its end (the process closed it or died).
    stdout_closed: bool,
    /// Standard error reached its end.
    stderr_closed: bool,
}

/// A process's output, filled by reader threads.
#[derive(Default)]
struct Log {
    state: Mutex<LogState>,
    changed: Condvar,
}

impl Log {
    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reader(self: &Arc<Log>, stream: impl Read + Send + 'static, stderr: bool) {
        let log = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(text) = line else { break };
                log.lock().lines.push(Line { at: Instant::now(), stderr, text });
                log.changed.notify_all();
            }
            {
                let mut st = log.lock();
                if stderr {
                    st.stderr_closed = true;
                } else {
                    st.stdout_closed = true;
                }
            }
            log.changed.notify_all();
        });
    }
}

/// A process of a group.
struct Proc {
    label: String,
    child: Child,
    pid: u32,
    log: Arc<Log>,
    exit: Option<(ExitStatus, Instant)>,
    /// Stopped with SIGSTOP by [`Group::stop`].
    stopped: bool,
}

impl Proc {
    /// Records the exit status if the process has ended, once its output
    /// has been read to the end (or [`DRAIN`] has passed), so that what it
    /// printed last is there to check.
    fn poll(&mut self) -> Option<(ExitStatus, Instant)> {
        if self.exit.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                let at = Instant::now();
                let deadline = at + DRAIN;
                let mut st = self.log.lock();
                while !(st.stdout_closed && st.stderr_closed) && Instant::now() < deadline {
                    let left = deadline.saturating_duration_since(Instant::now());
                    st = self.log.changed.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0;
                }
                self.exit = Some((status, at));
            }
        }
        self.exit
    }
}

/// Processes started by a test, indexed in the order they were added
/// (ranks, for the tests here). Dropping the group kills (SIGKILL) and reaps
/// every process still running.
#[derive(Default)]
pub struct Group {
    procs: Vec<Proc>,
}

impl Group {
    pub fn new() -> Group {
        Group::default()
    }

    /// Starts `cmd` with its standard output and error captured; `label`
    /// names it in messages. Panics (and the guard cleans up what was
    /// already started) if it cannot be started.
    pub fn spawn(&mut self, label: &str, mut cmd: Command) -> usize {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {label} ({cmd:?}): {e}"));
        let log = Arc::new(Log::default());
        log.reader(child.stdout.take().expect("piped stdout"), false);
        log.reader(child.stderr.take().expect("piped stderr"), true);
        let pid = child.id();
        self.procs.push(Proc { label: label.to_string(), child, pid, log, exit: None, stopped: false });
        self.procs.len() - 1
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    pub fn pid(&self, i: usize) -> u32 {
        self.procs[i].pid
    }

    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|p| p.pid).collect()
    }

    /// Standard output lines of process `i` so far.
    pub fn stdout(&self, i: usize) -> Vec<Line> {
        self.procs[i].log.lock().lines.iter().filter(|l| !l.stderr).cloned().collect()
    }

    /// The first standard output line of process `i` containing `needle`, if any yet.
    pub fn find(&self, i: usize, needle: &str) -> Option<Line> {
        self.procs[i].log.lock().lines.iter().find(|l| !l.stderr && l.text.contains(needle)).cloned()
    }

    /// Waits until process `i` prints a line containing `needle`; an error
    /// (with everything printed so far) if it closes its output first or the
    /// deadline passes.
    pub fn wait_line(&self, i: usize, needle: &str, deadline: Instant) -> Result<Line, String> {
        let p = &self.procs[i];
        let mut st = p.log.lock();
        loop {
            if let Some(l) = st.lines.iter().find(|l| !l.stderr && l.text.contains(needle)) {
                return Ok(l.clone());
            }
            if st.stdout_closed {
                drop(st);
                return Err(format!("{} ended its output without printing {needle:?}\n{}", p.label, self.dump()));
            }
            let now = Instant::now();
            if now >= deadline {
                drop(st);
                return Err(format!("{} did not print {needle:?} in time\n{}", p.label, self.dump()));
            }
            st = p.log.changed.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Waits until every process in `which` has exited, or the deadline
    /// passes; returns each one's exit status and when it was seen (`None`
    /// for those still running).
    pub fn wait_exits(&mut self, which: &[usize], deadline: Instant) -> Vec<Option<(ExitStatus, Instant)>> {
        loop {
            let done: Vec<_> = which.iter().map(|&i| self.procs[i].poll()).collect();
            if done.iter().all(Option::is_some) || Instant::now() >= deadline {
                return done;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Sends SIGSTOP to process `i`: it stays alive, holding its sockets and
    /// shared memory, but runs no more (a wedged process, as a debugger or
    /// `kill -STOP` leaves it). [`Group::kill`] and dropping the group still
    /// end and reap it.
    pub fn stop(&mut self, i: usize) -> Result<(), String> {
        self.signal(i, "STOP")?;
        self.procs[i].stopped = true;
        Ok(())
    }

    /// True while process `i` is stopped by [`Group::stop`] (as the kernel
    /// says: state `T` in `/proc/PID/stat`).
    pub fn is_stopped(&self, i: usize) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.procs[i].pid)).unwrap_or_default();
        // The state follows the parenthesised command name, which may hold spaces.
        stat.rfind(')').and_then(|j| stat[j + 1..].split_whitespace().next()).is_some_and(|s| s == "T")
    }

    /// Sends signal `name` (`STOP`) to the live process `i` with `kill(1)`.
    fn signal(&mut self, i: usize, name: &str) -> Result<(), String> {
        let p = &mut self.procs[i];
        if p.poll().is_some() {
            return Err(format!("{} had already exited: {:?}", p.label, p.exit));
        }
        let out = Command::new("kill")
            .args([format!("-{name}"), p.pid.to_string()])
            .output()
            .map_err(|e| format!("running kill -{name} {}: {e}", p.pid))?;
        if !out.status.success() {
            return Err(format!(
                "kill -{name} {} ({}): {}: {}",
                p.pid,
                p.label,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    /// Sends SIGKILL to process `i` and reaps it (within a few seconds).
    pub fn kill(&mut self, i: usize) -> Result<(), String> {
        let p = &mut self.procs[i];
        if p.poll().is_some() {
            return Err(format!("{} had already exited: {:?}", p.label, p.exit));
        }
        p.child.kill().map_err(|e| format!("killing {}: {e}", p.label))?;
        let deadline = Instant::now() + REAP;
        while p.poll().is_none() {
            if Instant::now() >= deadline {
                return Err(format!("{} survived SIGKILL for {REAP:?}", p.label));
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    /// Everything every process printed, with exit statuses, for failure messages.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for p in &self.procs {
            let stopped = if p.stopped && p.exit.is_none() { " (stopped)" } else { "" };
            s.push_str(&format!("--- {} (pid {}){stopped}, exit {:?}\n", p.label, p.pid, p.exit.map(|e| e.0)));
            for l in &p.log.lock().lines {
                s.push_str(if l.stderr { "  err| " } else { "  out| " });
                s.push_str(&l.text);
                s.push('\n');
            }
        }
        s
    }
}

impl Drop for Group {
    /// SIGKILL to every process still running (stopped ones end too: the
    /// kernel delivers SIGKILL to a stopped process), then reaps them all.
    fn drop(&mut self) {
        for p in &mut self.procs {
            if p.poll().is_none() {
                let _ = p.child.kill();
            }
        }
        let deadline = Instant::now() + REAP;
        for p in &mut self.procs {
            while p.poll().is_none() && Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
            if p.exit.is_none() {
                eprintln!("warning: {} (pid {}) was not reaped after SIGKILL", p.label, p.pid);
            }
        }
    }
}

/// A TCP port that was free on 127.0.0.1 a moment ago, for a job's master.
///
/// Chosen below Linux's ephemeral range (32768 and up by default): a port
/// the kernel hands out for `bind(0)` could be taken, between this check
/// and the master's bind, by one of the listeners the ranks' transports
/// open on ephemeral ports. Successive calls step through the range, so
/// tests of one process running at once get different ports.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let seed = (std::process::id() * 7919) % SPAN;
    let _ = NEXT.compare_exchange(u32::MAX, seed, Ordering::AcqRel, Ordering::Acquire);
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::AcqRel) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port in {FIRST}..{}", FIRST + SPAN)
}

/// Where rank `rank` of a job meets the others, and how.
#[derive(Clone, Debug)]
pub struct RankEnv {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    pub local_world: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// `auto`, `shm` or `tcp`.
    pub transport: String,
    /// `OXCCL_TIMEOUT`, seconds.
    pub timeout: f64,
    /// Further variables (`OXCCL_HOST_ID`, `OXCCL_SOCKET_IFNAME`, ...).
    pub extra: Vec<(String, String)>,
}

/// A command running `bin args...` as the rank `env` describes, inside
/// network namespace `netns` if given (`ip netns exec` replaces itself with
/// the program, so the child's pid is the rank's). Every `OXCCL_*` variable
/// of the test's own environment is removed first, so the rank sees exactly
/// what the test sets.
pub fn rank_command(bin: &Path, netns: Option<&str>, env: &RankEnv, args: &[&str]) -> Command {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("OXCCL_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("OXCCL_RANK", env.rank.to_string())
        .env("OXCCL_WORLD_SIZE", env.world.to_string())
        .env("OXCCL_LOCAL_RANK", env.local_rank.to_string())
        .env("OXCCL_LOCAL_WORLD_SIZE", env.local_world.to_string())
        .env("OXCCL_MASTER_ADDR", &env.master_addr)
        .env("OXCCL_MASTER_PORT", env.master_port.to_string())
        .env("OXCCL_TRANSPORT", &env.transport)
        .env("OXCCL_TIMEOUT", env.timeout.to_string())
        .env("OXCCL_RANK_LIFETIME", "300")
        .env("RUST_BACKTRACE", "1");
    for (k, v) in &env.extra {
        cmd.env(k, v);
    }
    cmd
}

/// Names in `/dev/shm` made by any of `pids` (they start with
/// `oxccl-<pid>-`). Ranks started by [`rank_command`] never see an
/// `OXCCL_SHM_DIR`, so `/dev/shm` is where theirs are.
pub fn shm_leftovers(pids: &[u32]) -> Vec<String> {
    let entries = std::fs::read_dir("/dev/shm").unwrap_or_else(|e| panic!("reading /dev/shm: {e}"));
    let prefixes: Vec<String> =
        pids.iter().map(|p| format!("{}{p}-", oxccl::transport::shm::segment::PREFIX)).collect();
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| prefixes.iter().any(|p| n.starts_with(p)))
        .collect()
}
