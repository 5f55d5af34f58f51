//! `oxccl run -n N [options] -- CMD ARGS...`: start N ranks on this host.
//!
//! Each rank is `CMD ARGS...` in a process group of its own, with
//! `OXCCL_RANK`, `OXCCL_WORLD_SIZE`, `OXCCL_LOCAL_RANK`,
//! `OXCCL_LOCAL_WORLD_SIZE`, `OXCCL_MASTER_ADDR=127.0.0.1` and
//! `OXCCL_MASTER_PORT` (`--master-port`, else a port that was free a moment
//! ago) set, which `Launch::from_env` reads. Output passes straight through,
//! or line by line behind `[rank] ` with `--prefix`. Rank 0 reads this
//! process's standard input when that is not a terminal; the others read
//! nothing.
//!
//! Binding (`--bind-to`, see [`crate::bind`]): by default each rank is bound to
//! a core of its own when there are at least as many cores as ranks, as
//! mpirun binds; `--bind-to none` leaves placement to the kernel.
//!
//! Signals: SIGINT, SIGTERM and SIGHUP are forwarded to every running rank's
//! process group; ranks still running `--grace` seconds later get SIGKILL, and
//! so does every rank at a second signal.
//!
//! Failures: when a rank exits non-zero or by a signal, the line says which
//! rank and how; the others get `--grace` seconds to end by themselves (a
//! communicator notices the lost peer and says so), then SIGTERM, then, after
//! `--grace` more, SIGKILL. `--timeout` sends SIGTERM to every rank at the
//! deadline and SIGKILL `--grace` later.
//!
//! Exit status: 0 when every rank exits 0; 124 after `--timeout`; else the
//! first failed rank's status, or 128 + its signal; 127 when the command
//! cannot be started; 2 for bad arguments.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::net::TcpListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;

use crate::bind::{self, BindTo};
use signal_hook::consts::{SIGHUP, SIGINT, SIGKILL, SIGTERM};
use signal_hook::iterator::Signals;

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("invalid duration '{s}' (seconds, e.g. 30 or 0.5)"))?;
    if !(secs >= 0.0 && secs.is_finite()) {
        return Err(format!("the duration must be a non-negative number of seconds, not '{s}'"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Number of ranks (processes) to start.
    #[arg(short = 'n', long = "np", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub ranks: u32,

    /// Port of rank 0's rendezvous store (default: a free port).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub master_port: Option<u16>,

    /// Prefix every line of output with `[rank] `.
    #[arg(long)]
    pub prefix: bool,

    /// Stop every rank after this many seconds and exit 124.
    #[arg(long, value_parser = parse_secs)]
    pub timeout: Option<Duration>,

    /// Seconds between a failure and SIGTERM to the other ranks, and between
    /// SIGTERM (or a forwarded signal) and SIGKILL.
    #[arg(long, value_parser = parse_secs, default_value = "3")]
    pub grace: Duration,

    /// Bind each rank to a core of its own (`core`), or not (`none`); `auto`
    /// binds when there are at least as many cores as ranks, as mpirun does.
    #[arg(long = "bind-to", value_enum, default_value = "auto")]
    pub bind_to: BindTo,

    /// The command every rank runs, after `--`.
    #[arg(last = true, required = true, value_parser = clap::value_parser!(OsString))]
    pub command: Vec<OsString>,
}

/// One started rank.
struct Rank {
    rank: usize,
    child: Child,
    pid: u32,
    /// Set once the process is reaped; from then on its group is never signalled.
    status: Option<ExitStatus>,
    /// The last signal this launcher sent it.
    sent: Option<i32>,
}

impl Rank {
    fn running(&self) -> bool {
        self.status.is_none()
    }

    /// Sends `sig` to the rank's process group.
    fn signal(&mut self, sig: i32) {
        if !self.running() {
            return;
        }
        self.sent = Some(sig);
        let Ok(pgid) = libc::pid_t::try_from(self.pid) else { return };
        // SAFETY: kill(2) takes two integers and touches no memory of this
        // process. The group id is the pid of a child we have not reaped yet
        // (checked above), so it still names that child's group and cannot
        // have been reused by an unrelated process.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => return format!("signal {sig}"),
    };
    format!("{name} (signal {sig})")
}

/// How a rank ended, for a message.
fn describe(r: &Rank, status: ExitStatus) -> String {
    let who = format!("rank {} (pid {})", r.rank, r.pid);
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("{who} exited with status {code}"),
        (None, Some(sig)) => {
            let core = if status.core_dumped() { ", core dumped" } else { "" };
            let by = if r.sent == Some(sig) { ", sent by oxccl run" } else { "" };
            format!("{who} was killed by {}{core}{by}", signal_name(sig))
        }
        (None, None) => format!("{who} ended with {status}"),
    }
}

/// This launcher's exit status for a rank's.
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1).max(1),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(255),
        (None, None) => 1,
    }
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Copies `from` to `to` line by line behind `[rank] `; says `done` at the end.
fn relay(rank: usize, from: impl Read + Send + 'static, to_stderr: bool, done: mpsc::Sender<()>) {
    std::thread::spawn(move || {
        let mut from = BufReader::new(from);
        let mut line = Vec::new();
        let tag = format!("[{rank}] ");
        loop {
            line.clear();
            match from.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if !line.ends_with(b"\n") {
                line.push(b'\n');
            }
            // A closed output only loses lines: keep draining so the rank never blocks.
            let _ = if to_stderr {
                let mut e = io::stderr().lock();
                e.write_all(tag.as_bytes()).and_then(|()| e.write_all(&line))
            } else {
                let mut o = io::stdout().lock();
                o.write_all(tag.as_bytes()).and_then(|()| o.write_all(&line)).and_then(|()| o.flush())
            };
        }
        let _ = done.send(());
    });
}

pub fn main(args: RunArgs) -> ExitCode {
    match run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(msg) => {
            eprintln!("oxccl run: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &RunArgs) -> Result<u8, String> {
    let world = args.ranks as usize;
    let port = match args.master_port {
        Some(p) => p,
        None => free_port().map_err(|e| format!("cannot find a free port for the rendezvous: {e}"))?,
    };
    // Handlers first, so a signal that comes while ranks start is forwarded,
    // not fatal to this launcher alone.
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let (done_tx, done_rx) = mpsc::channel();
    let mut ranks: Vec<Rank> = Vec::with_capacity(world);
    let cores = match (bind::cores(), args.bind_to) {
        (Ok(cores), _) => cores,
        (Err(e), BindTo::Core) => return Err(format!("cannot read the cores this launcher may use: {e}")),
        (Err(_), _) => Vec::new(),
    };
    let binding = bind::plan(args.bind_to, world, &cores);
    for rank in 0..world {
        if let Some(cpus) = &binding {
            // The rank inherits this thread's mask when it is forked.
            bind::set(&cpus[rank..=rank])
                .map_err(|e| format!("cannot bind rank {rank} to core {}: {e}", cpus[rank]))?;
        }
        let spawned = spawn(args, rank, world, port);
        if binding.is_some() {
            bind::set(&cores).map_err(|e| format!("cannot restore this launcher's cores: {e}"))?;
        }
        match spawned {
            Ok(mut child) => {
                if args.prefix {
                    if let Some(out) = child.stdout.take() {
                        relay(rank, out, false, done_tx.clone());
                    }
                    if let Some(err) = child.stderr.take() {
                        relay(rank, err, true, done_tx.clone());
                    }
                }
                let pid = child.id();
                ranks.push(Rank { rank, child, pid, status: None, sent: None });
            }
            Err(e) => {
                eprintln!("oxccl run: cannot start rank {rank}: {}: {e}", args.command[0].to_string_lossy());
                for r in &mut ranks {
                    r.signal(SIGKILL);
                    let _ = r.child.wait();
                }
                return Ok(127);
            }
        }
    }
    drop(done_tx);
    let code = supervise(args, &mut ranks, &mut signals)?;
    if args.prefix {
        // Drain what the ranks wrote last; a descendant that outlives its rank
        // and keeps the pipe open is not waited for long.
        let until = Instant::now() + Duration::from_secs(1);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || done_rx.recv_timeout(left).is_err() {
                break;
            }
        }
    }
    Ok(code)
}

fn spawn(args: &RunArgs, rank: usize, world: usize, port: u16) -> io::Result<Child> {
    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..])
        .env("OXCCL_RANK", rank.to_string())
        .env("OXCCL_WORLD_SIZE", world.to_string())
        .env("OXCCL_LOCAL_RANK", rank.to_string())
        .env("OXCCL_LOCAL_WORLD_SIZE", world.to_string())
        .env("OXCCL_MASTER_ADDR", "127.0.0.1")
        .env("OXCCL_MASTER_PORT", port.to_string())
        // Its own group: a terminal's Ctrl-C reaches only this launcher, which
        // forwards it once, and a rank's descendants are signalled with it.
        .process_group(0);
    if rank != 0 || io::stdin().is_terminal() {
        cmd.stdin(Stdio::null());
    }
    if args.prefix {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    cmd.spawn()
}

fn earliest(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// Waits for every rank, forwarding signals and stopping the ranks after a
/// failure or the timeout; returns the exit status.
fn supervise(args: &RunArgs, ranks: &mut [Rank], signals: &mut Signals) -> Result<u8, String> {
    let started = Instant::now();
    let timeout_at = args.timeout.map(|t| started + t);
    let mut timed_out = false;
    let mut first_failure: Option<ExitStatus> = None;
    let mut signals_seen = 0;
    let (mut term_at, mut kill_at): (Option<Instant>, Option<Instant>) = (None, None);
    loop {
        for sig in signals.pending() {
            signals_seen += 1;
            if signals_seen == 1 {
                eprintln!("oxccl run: got {}, forwarding it to the ranks", signal_name(sig));
                ranks.iter_mut().for_each(|r| r.signal(sig));
                kill_at = earliest(kill_at, Instant::now() + args.grace);
            } else {
                eprintln!("oxccl run: got {} again, killing the ranks", signal_name(sig));
                ranks.iter_mut().for_each(|r| r.signal(SIGKILL));
            }
        }
        for i in 0..ranks.len() {
            if !ranks[i].running() {
                continue;
            }
            let Some(status) = ranks[i].child.try_wait().map_err(|e| format!("waiting for rank {i}: {e}"))? else {
                continue;
            };
            ranks[i].status = Some(status);
            // A rank killed while setting up shared memory could not unlink
            // its segments: remove what it left.
            let left = oxccl::transport::shm::segment::remove_leftovers(ranks[i].pid);
            if left > 0 {
                eprintln!("oxccl run: removed {left} shared-memory segment(s) rank {i} left behind");
            }
            if status.success() {
                continue;
            }
            eprintln!("oxccl run: {}", describe(&ranks[i], status));
            if first_failure.is_none() && !timed_out {
                first_failure = Some(status);
                if ranks.iter().any(Rank::running) && term_at.is_none() && kill_at.is_none() {
                    eprintln!(
                        "oxccl run: stopping the other ranks (SIGTERM in {:?}, SIGKILL {:?} later)",
                        args.grace, args.grace
                    );
                    let now = Instant::now();
                    term_at = earliest(term_at, now + args.grace);
                    kill_at = earliest(kill_at, now + 2 * args.grace);
                }
            }
        }
        if ranks.iter().all(|r| !r.running()) {
            break;
        }
        let now = Instant::now();
        if !timed_out && timeout_at.is_some_and(|t| now >= t) {
            timed_out = true;
            eprintln!("oxccl run: timeout after {:?}: stopping every rank", args.timeout.unwrap_or_default());
            term_at = Some(now);
            kill_at = earliest(kill_at, now + args.grace);
        }
        if term_at.is_some_and(|t| now >= t) {
            term_at = None;
            ranks.iter_mut().for_each(|r| r.signal(SIGTERM));
        }
        if kill_at.is_some_and(|t| now >= t) {
            kill_at = None;
            ranks.iter_mut().for_each(|r| r.signal(SIGKILL));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(match (timed_out, first_failure) {
        (true, _) => 124,
        (false, Some(status)) => exit_code(status),
        (false, None) => 0,
    })
}
