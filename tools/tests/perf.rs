//! End-to-end runs of `oxccl perf` on tiny sweeps.

use std::process::{Command, Output, Stdio};
use std::time::Instant;

use serde_json::Value;

fn oxccl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oxccl")).args(args).env("OXCCL_TIMEOUT", "60").output().expect("run oxccl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Data lines of the table (not starting with '#').
fn data_rows(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

const ALGOS: usize = 5; // ring, tree, rhd, direct, auto

#[test]
fn all_reduce_table() {
    let out = oxccl(&[
        "perf",
        "all_reduce",
        "-b",
        "8",
        "-e",
        "64K",
        "-f",
        "8",
        "--ranks",
        "3",
        "--algo",
        "all",
        "-n",
        "2",
        "-w",
        "1",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("# Out of bounds values : 0 OK\n"), "{stdout}");
    assert!(stdout.contains("# Avg bus bandwidth    : "), "{stdout}");
    assert!(stdout.contains("# Memory bandwidth ("), "{stdout}");
    let rows = data_rows(&stdout);
    // Sizes 8, 64, 512, 4K, 32K, each for every algorithm.
    assert_eq!(rows.len(), 5 * ALGOS, "{stdout}");
    for r in &rows {
        assert_eq!(r.len(), 16, "{r:?}");
        assert_eq!((&*r[2], &*r[3], &*r[4]), ("float", "sum", "-1"), "{r:?}");
        assert_eq!((&*r[9], &*r[14]), ("0", "0"), "#wrong in {r:?}");
        for cell in [&r[6], &r[7], &r[8], &r[10], &r[11], &r[12], &r[13], &r[15]] {
            let v: f64 = cell.parse().unwrap_or_else(|_| panic!("{cell} in {r:?}"));
            assert!(v >= 0.0 && v.is_finite(), "{r:?}");
        }
    }
    let sizes: Vec<&str> = rows.iter().step_by(ALGOS).map(|r| &*r[0]).collect();
    assert_eq!(sizes, ["8", "64", "512", "4096", "32768"]);
    let algos: Vec<&str> = rows[..ALGOS].iter().map(|r| &*r[5]).collect();
    assert_eq!(&algos[..4], ["ring", "tree", "rhd", "direct"]);
    assert!(algos[4].starts_with("auto:"), "{algos:?}");
}

#[test]
fn all_reduce_json() {
    let out = oxccl(&[
        "perf",
        "all_reduce",
        "-b",
        "8",
        "-e",
        "64K",
        "-f",
        "8",
        "--ranks",
        "3",
        "--algo",
        "all",
        "-n",
        "2",
        "-w",
        "1",
        "--json",
        "--no-membw",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let values: Vec<Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let (summary, rows) = values.split_last().unwrap();
    assert_eq!(rows.len(), 5 * ALGOS);
    for r in rows {
        assert_eq!(r["collective"], "all_reduce");
        assert_eq!(r["ranks"], 3);
        assert_eq!(r["out_of_place"]["wrong"], 0, "{r}");
        assert_eq!(r["in_place"]["wrong"], 0, "{r}");
        assert!(r["out_of_place"]["time_us"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["in_place"]["floor_pct"].is_null(), "no membw, no floor: {r}");
    }
    let s = &summary["summary"];
    assert_eq!(s["wrong"], 0);
    assert_eq!(s["rows"], 5 * ALGOS);
    assert!(s["avg_busbw_gbps"].as_f64().unwrap() >= 0.0);
}

#[test]
fn csv_output() {
    let out = oxccl(&[
        "perf",
        "reduce_scatter",
        "-b",
        "96",
        "-e",
        "96",
        "--ranks",
        "3",
        "--algo",
        "ring",
        "-n",
        "1",
        "-w",
        "0",
        "--csv",
        "--no-membw",
        "-d",
        "int32,half",
        "-o",
        "sum,avg",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("collective,ranks,size,count,type,redop,root,algo,"));
    assert_eq!(lines.len(), 1 + 4, "{stdout}");
    let cols = lines[0].split(',').count();
    for l in &lines[1..] {
        assert_eq!(l.split(',').count(), cols, "{l}");
        assert!(l.starts_with("reduce_scatter,3,96,"), "{l}");
    }
}

/// Every collective, every dtype and op, every algorithm: 0 wrong.
#[test]
fn every_collective_is_checked_clean() {
    for c in ["all_reduce", "reduce_scatter", "all_gather", "broadcast", "reduce", "alltoall"] {
        let out = oxccl(&[
            "perf",
            c,
            "-b",
            "8",
            "-e",
            "4K",
            "-f",
            "8",
            "--ranks",
            "3",
            "-r",
            "2",
            "--algo",
            "all",
            "-n",
            "1",
            "-w",
            "0",
            "-d",
            "all",
            "-o",
            "all",
            "--no-membw",
        ]);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{c}:\n{stdout}\n{}", text(&out.stderr));
        assert!(stdout.contains("# Out of bounds values : 0 OK\n"), "{c}: {stdout}");
    }
    let out = oxccl(&["perf", "barrier", "--ranks", "3", "-n", "3", "--no-membw"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert_eq!(data_rows(&stdout).len(), ALGOS, "{stdout}");
}

#[test]
fn nccl_tests_binary_names_and_unchecked_runs() {
    let out = oxccl(&[
        "perf",
        "all_gather_perf",
        "-b",
        "1K",
        "-e",
        "1K",
        "--ranks",
        "2",
        "--algo",
        "direct",
        "-n",
        "1",
        "-w",
        "0",
        "-c",
        "0",
        "--no-membw",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let rows = data_rows(&stdout);
    assert_eq!(rows.len(), 1);
    assert_eq!((&*rows[0][0], &*rows[0][1], &*rows[0][9]), ("1024", "128", "N/A"));
    assert!(stdout.contains("# Out of bounds values : N/A"), "{stdout}");
}

/// `oxccl run -n RANKS -- oxccl perf ARGS`: ranks that are processes of
/// this host, over the transport ARGS name.
fn launched(ranks: &str, args: &[&str]) -> Output {
    launched_env(ranks, args, &[])
}

/// As [`launched`] with more environment for the ranks.
fn launched_env(ranks: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let exe = env!("CARGO_BIN_EXE_oxccl");
    Command::new(exe)
        .args(["run", "-n", ranks, "--", exe, "perf"])
        .args(args)
        .env("OXCCL_TIMEOUT", "60")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run oxccl")
}

/// Tiny sweeps, every result checked: 8 B and 256 B.
const TINY: &[&str] = &["-b", "8", "-e", "1K", "-f", "32", "-n", "2", "-w", "1", "--no-membw", "-r", "1"];

const SKIPPED_DIRECT: &str = "# oxccl perf: skipping direct: it needs ranks that share an address space; tcp";

/// Over TCP the default set (`all`) runs every algorithm but direct, which
/// needs ranks sharing an address space, and says so on stderr once (rank
/// 0), for every collective; `--algo all` is the same.
#[test]
fn all_over_tcp_skips_direct() {
    let began = Instant::now();
    for c in ["all_reduce", "reduce_scatter", "all_gather", "broadcast", "reduce", "alltoall", "barrier"] {
        let explicit = c == "all_reduce";
        let mut args = vec![c, "--transport", "tcp"];
        args.extend_from_slice(TINY);
        if explicit {
            args.extend_from_slice(&["--algo", "all"]);
        }
        let out = launched("3", &args);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{c}:\n{stdout}\n{stderr}");
        assert!(stdout.contains("# Out of bounds values : 0 OK\n"), "{c}: {stdout}");
        assert_eq!(stderr.matches(SKIPPED_DIRECT).count(), 1, "{c}: {stderr}");
        let rows = data_rows(&stdout);
        let sizes = if c == "barrier" { 1 } else { 2 };
        assert_eq!(rows.len(), sizes * (ALGOS - 1), "{c}: {stdout}");
        for r in &rows {
            assert_eq!((&*r[9], &*r[14]), ("0", "0"), "{c}: #wrong in {r:?}");
            assert!(!r[5].contains("direct"), "{c}: {r:?}");
        }
        let algos: Vec<&str> = rows[..ALGOS - 1].iter().map(|r| &*r[5]).collect();
        assert_eq!(&algos[..3], ["ring", "tree", "rhd"], "{c}: {stdout}");
        assert!(algos[3].starts_with("auto:"), "{c}: {algos:?}");
    }
    println!("7 collectives over TCP: {:?}", began.elapsed());
}

/// Naming direct over TCP (alone or in a list) stays an error naming it.
#[test]
fn naming_direct_over_tcp_is_an_error() {
    for algo in ["direct", "ring,direct"] {
        let out =
            launched("2", &["all_reduce", "--transport", "tcp", "--algo", algo, "-b", "8", "-e", "8", "--no-membw"]);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "--algo {algo}: {stderr}");
        assert!(stderr.contains("direct needs ranks that share an address space"), "--algo {algo}: {stderr}");
        assert!(!stderr.contains("skipping"), "--algo {algo}: {stderr}");
    }
}

/// Processes on one host over shared memory can run direct: `all` keeps it.
#[test]
fn all_over_shm_keeps_direct() {
    let mut args = vec!["all_reduce", "--transport", "shm"];
    args.extend_from_slice(TINY);
    let out = launched("2", &args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("# Out of bounds values : 0 OK\n"), "{stdout}");
    assert!(!stderr.contains("skipping"), "{stderr}");
    let rows = data_rows(&stdout);
    assert_eq!(rows.len(), 2 * ALGOS, "{stdout}");
    assert_eq!(rows.iter().filter(|r| r[5] == "direct").count(), 2, "{stdout}");
}

#[test]
fn bad_arguments_fail_clearly() {
    for (args, needle) in [
        (&["perf", "all_reduce", "-b", "1X"][..], "invalid size"),
        (&["perf", "allgatherr"], "unknown collective"),
        (&["perf", "broadcast", "--ranks", "2", "-r", "5"], "root 5 out of range"),
        (&["perf", "all_reduce", "-b", "1M", "-e", "1K"], "larger than maximum"),
        (&["perf", "all_reduce", "--algo", "star"], "unknown algorithm"),
        (&["perf", "all_reduce", "--backend", "nccl"], "NCCL backend runs on GPU memory"),
    ] {
        let out = oxccl(args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
    }
}

/// Without a GPU, `--device cuda` is a clear error and a non-zero exit, not
/// a panic (with one it runs the sweep on GPU 0, checked).
#[test]
fn cuda_device_without_gpu_is_a_clear_error() {
    let out = oxccl(&["perf", "all_reduce", "--device", "cuda", "-b", "8", "-e", "8"]);
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    if !oxccl_cuda::device::Libraries::probe().driver {
        assert!(!out.status.success());
        assert!(err.contains("no CUDA driver found (libcuda.so)"), "{err}");
        // Process ranks too: every rank says so and exits.
        let out = launched("2", &["all_reduce", "--device", "cuda", "--transport", "shm", "-b", "8", "-e", "8"]);
        let err = text(&out.stderr);
        assert!(!out.status.success() && err.contains("no CUDA driver found"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// `--device emu` sweeps on the emulated device's memory: the header names
/// the device and its copy bandwidth, every row is checked (0 wrong) and
/// has a %floor; commands without an emulated mode say so.
#[test]
fn emulated_device_sweep() {
    let out = oxccl(&["perf", "all_reduce", "--device", "emu", "--ranks", "3", "-b", "8", "-e", "64K", "-f", "32"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("buffers on one emulated device") && stdout.contains("Device copy bandwidth"), "{stdout}");
    let rows: Vec<&str> = stdout.lines().filter(|l| !l.starts_with('#')).collect();
    // 8 B, 256 B, 8 KiB: every algorithm and auto.
    assert_eq!(rows.len(), 3 * 5, "{stdout}");
    for row in rows {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[9], "0", "{row}");
        assert_eq!(cells[14], "0", "{row}");
    }
    let out = oxccl(&["train", "--device", "emu"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("emulated device is not built yet"), "{}", text(&out.stderr));
}

/// `--device emu` with process ranks over TCP (as across hosts): device
/// data staged through the transport's host slots, every algorithm but
/// direct, every result checked; graphs need stream-ordered calls, so
/// `--graph` is refused there with the reason.
#[test]
fn emulated_device_staged_over_tcp() {
    let out =
        launched("2", &["all_reduce", "--device", "emu", "--transport", "tcp", "-b", "8", "-e", "256K", "-f", "64"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("data staged through host slots"), "{stdout}");
    assert!(stderr.contains("staged through its host slots"), "{stderr}");
    let rows = data_rows(&stdout);
    assert_eq!(rows.len(), 3 * 4, "{stdout}");
    assert!(rows.iter().all(|r| r[9] == "0" && r[14] == "0"), "{stdout}");
    let out = launched("2", &["all_reduce", "--device", "emu", "--transport", "tcp", "--graph", "-b", "8", "-e", "8"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--graph needs stream-ordered calls"), "{}", text(&out.stderr));
}

/// Process ranks over shared memory whose devices refuse IPC (as a sandbox
/// that refuses CUDA IPC does; `OXCCL_EMU_IPC=0`): the ranks agree to stage
/// device data through the host's shared memory instead, say so and why,
/// and every result is right.
#[test]
fn without_ipc_device_data_is_staged_through_shared_memory() {
    let out = launched_env(
        "2",
        &["all_reduce", "--device", "emu", "--transport", "shm", "-b", "8", "-e", "64K", "-f", "64"],
        &[("OXCCL_EMU_IPC", "0")],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("staged through its host slots") && stderr.contains("IPC between processes is unavailable"),
        "{stderr}"
    );
    let rows = data_rows(&stdout);
    assert_eq!(rows.len(), 3 * 4, "{stdout}");
    assert!(rows.iter().all(|r| r[9] == "0" && r[14] == "0"), "{stdout}");
}

/// `--graph`: each rank's call captured once and replayed, for every
/// algorithm, ranks as threads and as processes; every replay's result
/// checked (0 wrong). Host memory has no graphs: an error says so.
#[test]
fn graph_replays_are_timed_and_checked() {
    let out = oxccl(&[
        "perf",
        "reduce_scatter",
        "--device",
        "emu",
        "--ranks",
        "3",
        "--graph",
        "-b",
        "8",
        "-e",
        "64K",
        "-f",
        "32",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("# Graphs: each rank's call captured once"), "{stdout}");
    let rows = data_rows(&stdout);
    assert_eq!(rows.len(), 3 * 5, "{stdout}");
    assert!(rows.iter().all(|r| r[9] == "0" && r[14] == "0"), "{stdout}");

    let out = launched(
        "2",
        &["all_reduce", "--device", "emu", "--transport", "shm", "--graph", "-b", "8", "-e", "64K", "-f", "64"],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let rows = data_rows(&stdout);
    assert_eq!(rows.len(), 3 * 4, "{stdout}");
    assert!(rows.iter().all(|r| r[9] == "0" && r[14] == "0"), "{stdout}");

    let out = oxccl(&["perf", "all_reduce", "--graph", "-b", "8", "-e", "8"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--graph captures device work"), "{}", text(&out.stderr));
}

/// `--device emu` with process ranks: every algorithm but direct (peers'
/// device buffers are another process's), every result checked, for a
/// reduction and a gather.
#[test]
fn emulated_device_between_processes() {
    for c in ["all_reduce", "all_gather"] {
        let out = launched("2", &[c, "--device", "emu", "--transport", "shm", "-b", "8", "-e", "64K", "-f", "64"]);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{c}: {stdout}\n{stderr}");
        assert!(stdout.contains("an emulated device each"), "{stdout}");
        assert!(stderr.contains("skipping direct"), "{stderr}");
        let rows = data_rows(&stdout);
        assert_eq!(rows.len(), 3 * 4, "{stdout}");
        assert!(rows.iter().all(|r| r[9] == "0" && r[14] == "0"), "{stdout}");
    }
}
