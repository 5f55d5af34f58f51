//! End-to-end runs of `oxccl run` with small shell commands as ranks.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn oxccl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_oxccl"))
}

/// Runs `oxccl run ARGS`; the output and how long it took.
fn run(args: &[&str]) -> (Output, Duration) {
    let began = Instant::now();
    let out = oxccl().arg("run").args(args).stdin(Stdio::null()).output().expect("start oxccl");
    (out, began.elapsed())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn sorted_lines(b: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = text(b).lines().map(String::from).collect();
    v.sort();
    v
}

#[test]
fn every_rank_sees_its_environment() {
    let (out, _) = run(&[
        "-n",
        "3",
        "--prefix",
        "--master-port",
        "4242",
        "--",
        "sh",
        "-c",
        "echo $OXCCL_RANK $OXCCL_WORLD_SIZE $OXCCL_LOCAL_RANK $OXCCL_LOCAL_WORLD_SIZE $OXCCL_MASTER_ADDR $OXCCL_MASTER_PORT",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        sorted_lines(&out.stdout),
        ["[0] 0 3 0 3 127.0.0.1 4242", "[1] 1 3 1 3 127.0.0.1 4242", "[2] 2 3 2 3 127.0.0.1 4242"]
    );
}

#[test]
fn a_free_master_port_is_chosen_and_shared() {
    let (out, _) = run(&["-n", "2", "--", "sh", "-c", "echo $OXCCL_MASTER_PORT"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ports = sorted_lines(&out.stdout);
    assert_eq!(ports.len(), 2);
    assert_eq!(ports[0], ports[1]);
    assert!(ports[0].parse::<u16>().is_ok_and(|p| p > 0), "{ports:?}");
}

#[test]
fn output_passes_through_without_prefix() {
    let (out, _) = run(&["-n", "2", "--", "sh", "-c", "echo out$OXCCL_RANK; echo err$OXCCL_RANK >&2"]);
    assert!(out.status.success());
    assert_eq!(sorted_lines(&out.stdout), ["out0", "out1"]);
    assert_eq!(sorted_lines(&out.stderr), ["err0", "err1"]);
}

#[test]
fn prefixed_lines_stay_whole() {
    let script = "i=0; while [ $i -lt 300 ]; do echo line $OXCCL_RANK $i; echo e$OXCCL_RANK >&2; i=$((i+1)); done; \
                  printf 'last %s' $OXCCL_RANK";
    let (out, _) = run(&["-n", "3", "--prefix", "--", "sh", "-c", script]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3 * 301);
    for line in &lines {
        let (tag, rest) = line.split_once(' ').unwrap();
        let rank = tag.trim_start_matches('[').trim_end_matches(']');
        assert!(
            rest.starts_with(&format!("line {rank} ")) || rest == format!("last {rank}"),
            "a line was cut or mixed: {line:?}"
        );
    }
    for rank in 0..3 {
        assert!(lines.contains(&format!("[{rank}] last {rank}").as_str()), "missing the unterminated last line");
        let errs = text(&out.stderr).lines().filter(|l| *l == format!("[{rank}] e{rank}")).count();
        assert_eq!(errs, 300);
    }
}

#[test]
fn a_failing_rank_is_named_and_the_others_are_stopped() {
    let (out, took) = run(&[
        "-n",
        "3",
        "--grace",
        "0.3",
        "--",
        "sh",
        "-c",
        "if [ $OXCCL_RANK = 1 ]; then sleep 0.2; exit 3; fi; exec sleep 30",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("rank 1 (pid ") && err.contains("exited with status 3"), "{err}");
    assert!(err.contains("rank 0 (pid ") && err.contains("killed by SIGTERM (signal 15), sent by oxccl run"), "{err}");
    assert!(took >= Duration::from_millis(450) && took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn a_rank_that_ignores_sigterm_gets_sigkill() {
    let (out, took) = run(&[
        "-n",
        "2",
        "--grace",
        "0.3",
        "--",
        "sh",
        "-c",
        "if [ $OXCCL_RANK = 0 ]; then exit 5; fi; trap '' TERM; while :; do sleep 0.05; done",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("rank 1 (pid ") && err.contains("killed by SIGKILL (signal 9), sent by oxccl run"), "{err}");
    assert!(took >= Duration::from_millis(600) && took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn a_rank_killed_by_a_signal_is_named() {
    let (out, _) = run(&[
        "-n",
        "2",
        "--grace",
        "0.2",
        "--",
        "sh",
        "-c",
        "if [ $OXCCL_RANK = 0 ]; then kill -9 $$; fi; exec sleep 30",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(128 + 9), "{err}");
    assert!(err.contains("rank 0 (pid ") && err.contains("was killed by SIGKILL (signal 9)\n"), "{err}");
}

#[test]
fn the_timeout_stops_every_rank() {
    let (out, took) = run(&["-n", "2", "--timeout", "0.4", "--grace", "0.5", "--", "sleep", "30"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(124), "{err}");
    assert!(err.contains("timeout after 400ms"), "{err}");
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn a_command_that_cannot_start() {
    let (out, _) = run(&["-n", "2", "--", "/nonexistent/oxccl-rank"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(text(&out.stderr).contains("cannot start rank 0: /nonexistent/oxccl-rank"));
}

#[test]
fn bad_arguments() {
    for args in
        [&["-n", "2"][..], &["-n", "0", "--", "true"], &["--", "true"], &["-n", "2", "--timeout", "x", "--", "true"]]
    {
        let (out, _) = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
    }
}

#[test]
fn rank_0_reads_standard_input() {
    let mut child = oxccl()
        .args(["run", "-n", "2", "--prefix", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "[0] hello\n");
}

/// Starts `oxccl run` with a script that prints `ready` on every rank, and
/// waits until all have.
fn start_ready(ranks: usize, script: &str) -> (Child, mpsc::Receiver<String>) {
    let mut child = oxccl()
        // The timeout only keeps a broken launcher from hanging the test.
        .args([
            "run",
            "-n",
            &ranks.to_string(),
            "--grace",
            "5",
            "--timeout",
            "30",
            "--prefix",
            "--",
            "sh",
            "-c",
            script,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    for _ in 0..ranks {
        let line = rx.recv_timeout(Duration::from_secs(20)).expect("ranks never became ready");
        assert!(line.ends_with(" ready"), "{line}");
    }
    (child, rx)
}

fn send(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success();
    assert!(ok);
}

#[test]
fn sigterm_is_forwarded_to_every_rank() {
    let script = "trap 'echo got-term $OXCCL_RANK; exit 7' TERM; echo ready; while :; do sleep 0.05; done";
    let (child, rx) = start_ready(2, script);
    let began = Instant::now();
    send(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(err.contains("got SIGTERM (signal 15), forwarding it to the ranks"), "{err}");
    let mut got: Vec<String> = rx.iter().collect();
    got.sort();
    assert_eq!(got, ["[0] got-term 0", "[1] got-term 1"]);
    assert!(began.elapsed() < Duration::from_secs(4), "the ranks ended by themselves, before the grace");
}

#[test]
fn sigint_is_forwarded_and_a_second_signal_kills() {
    // SIGINT ends plain `sleep`s; the exit status is then 128 + 2.
    let (child, _rx) = start_ready(2, "echo ready; exec sleep 30");
    send(&child, "-INT");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("killed by SIGINT (signal 2)"));

    // Ranks that ignore SIGTERM: the second signal kills them at once.
    let (child, _rx) = start_ready(2, "trap '' TERM; echo ready; while :; do sleep 0.05; done");
    let began = Instant::now();
    send(&child, "-TERM");
    std::thread::sleep(Duration::from_millis(300));
    send(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(137), "{err}");
    assert!(err.contains("got SIGTERM (signal 15) again, killing the ranks"), "{err}");
    assert!(began.elapsed() < Duration::from_secs(4), "killed before the 5 s grace: {:?}", began.elapsed());
}

/// The cores each rank may run on, from /proc (rank order).
fn allowed_lists(args: &[&str], ranks: usize) -> Vec<String> {
    let n = ranks.to_string();
    let mut all = vec!["-n", &n, "--prefix"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--", "sh", "-c", "grep Cpus_allowed_list /proc/self/status"]);
    let (out, _) = run(&all);
    assert!(out.status.success(), "{}", text(&out.stderr));
    sorted_lines(&out.stdout).into_iter().map(|l| l.split_whitespace().last().unwrap_or("").to_string()).collect()
}

/// By default each rank gets a core of its own while ranks do not
/// outnumber the cores (and none when they do); `--bind-to none` binds
/// nothing; `--bind-to core` cycles through the cores.
#[test]
fn ranks_are_bound_to_cores_of_their_own() {
    let cores = oxccl::affinity::by_core().unwrap();
    let physical = cores.iter().map(|&c| oxccl::affinity::core_of(c)).collect::<std::collections::BTreeSet<_>>().len();
    let whole = allowed_lists(&["--bind-to", "none"], 1)[0].clone();
    if physical >= 2 {
        let lists = allowed_lists(&[], 2);
        assert_eq!(lists, [cores[0].to_string(), cores[1].to_string()]);
    }
    let over = physical + 1;
    assert!(allowed_lists(&[], over).iter().all(|l| *l == whole), "more ranks than cores: not bound");
    let cycled = allowed_lists(&["--bind-to", "core"], over);
    assert_eq!(cycled[over - 1], cores[(over - 1) % cores.len()].to_string());
    assert!(allowed_lists(&["--bind-to", "none"], 2).iter().all(|l| *l == whole));
}
