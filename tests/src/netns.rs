//! Network namespaces as hosts.
//!
//! [`Hosts::create`] makes one namespace per host and one for a switch: in
//! the switch namespace a bridge, and for every host a veth pair with one end
//! ([`Hosts::IFNAME`]) in the host namespace holding the host's address
//! (`10.77.0.<h+1>/24`) and the other end in the bridge. Every namespace has
//! `lo` up. Names are `oxt<pid>-<n><role>` (pid of the test process, a
//! counter, `h0`, `h1`, ... or `sw`), so parallel runs and tests never
//! collide; interfaces live inside the namespaces, so the machine's own
//! network is never touched. Dropping [`Hosts`] deletes the namespaces (and
//! with them their interfaces). Namespaces left by test processes that died
//! (their pid no longer runs) are removed by the next [`Hosts::create`].
//!
//! Everything runs `ip` from iproute2, each call with a deadline.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Prefix of every namespace made here.
const PREFIX: &str = "oxt";
/// Longest an `ip` command may take.
const IP_DEADLINE: Duration = Duration::from_secs(20);

/// Runs `ip args...` with a deadline; its standard output, or an error with
/// its standard error.
pub fn ip(args: &[&str]) -> Result<String, String> {
    let mut child = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `ip {}`: {e}", args.join(" ")))?;
    let deadline = Instant::now() + IP_DEADLINE;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`ip {}` took more than {IP_DEADLINE:?}", args.join(" ")));
            }
            Err(e) => return Err(format!("waiting for `ip {}`: {e}", args.join(" "))),
        }
    }
    // Output of `ip` here is small (well under a pipe's buffer), so reading
    // after the exit cannot have blocked it.
    let out = child.wait_with_output().map_err(|e| format!("`ip {}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("`ip {}` failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Why this process cannot make network namespaces, if it cannot: it must
/// be root and have a working `ip netns`.
pub fn unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|v| v.split_whitespace().nth(1));
    if euid != Some("0") {
        return Some(format!("the test process is not root (effective uid {})", euid.unwrap_or("unknown")));
    }
    ip(&["netns", "list"]).err().map(|e| format!("iproute2 `ip netns` does not work: {e}"))
}

/// True while a process with this pid exists.
fn pid_running(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes namespaces made here by test processes that no longer run.
fn sweep_stale() {
    let Ok(list) = ip(&["netns", "list"]) else { return };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        let Some((pid, _)) = rest.split_once('-') else { continue };
        if let Ok(pid) = pid.parse::<u32>() {
            if pid != std::process::id() && !pid_running(pid) {
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
}

/// Hosts made of network namespaces; see the module documentation.
pub struct Hosts {
    /// Host namespaces, in order.
    pub hosts: Vec<String>,
    /// Every namespace made (hosts and switch), deleted on drop.
    made: Vec<String>,
}

impl Hosts {
    /// The interface of every host namespace that leads to the bridge.
    pub const IFNAME: &'static str = "oxnet0";

    /// `n` hosts joined by a bridge; see the module documentation.
    pub fn create(n: usize) -> Result<Hosts, String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        assert!((1..=200).contains(&n), "1 ..= 200 hosts");
        sweep_stale();
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = format!("{PREFIX}{}-{k}", std::process::id());
        let mut me = Hosts { hosts: Vec::new(), made: Vec::new() };
        let sw = format!("{base}sw");
        me.add_ns(&sw)?;
        ip(&["-n", &sw, "link", "add", "name", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        for h in 0..n {
            let ns = format!("{base}h{h}");
            me.add_ns(&ns)?;
            let port = format!("p{h}");
            ip(&["-n", &ns, "link", "add", "name", Self::IFNAME, "type", "veth", "peer", "name", &port, "netns", &sw])?;
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", Self::addr(h)), "dev", Self::IFNAME])?;
            ip(&["-n", &ns, "link", "set", Self::IFNAME, "up"])?;
            ip(&["-n", &sw, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &sw, "link", "set", &port, "up"])?;
            me.hosts.push(ns);
        }
        Ok(me)
    }

    /// Adds a namespace (recorded first, so a failure after it still deletes it) with `lo` up.
    fn add_ns(&mut self, name: &str) -> Result<(), String> {
        ip(&["netns", "add", name])?;
        self.made.push(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Every namespace made (hosts and switch).
    pub fn namespaces(&self) -> Vec<String> {
        self.made.clone()
    }

    /// The IPv4 address of host `h`.
    pub fn addr(h: usize) -> String {
        format!("10.77.0.{}", h + 1)
    }

    /// Cuts host `h` off: its interface to the bridge goes down.
    pub fn link_down(&self, h: usize) -> Result<(), String> {
        ip(&["-n", &self.hosts[h], "link", "set", Self::IFNAME, "down"]).map(drop)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("warning: could not delete network namespace {ns}: {e}");
            }
        }
    }
}

/// True when a namespace of this name exists.
pub fn exists(name: &str) -> bool {
    ip(&["netns", "list"]).is_ok_and(|l| l.lines().any(|l| l.split_whitespace().next() == Some(name)))
}
