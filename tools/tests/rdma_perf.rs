//! `oxccl perf --transport rdma` end to end: `oxccl run` starts 2 and 3
//! ranks that meet at rendezvous and sweep all-reduce sizes over RDMA with
//! every message-passing algorithm, checking every result; the default
//! algorithm set skips direct (no shared memory over RDMA).
//!
//! Needs an RDMA device: it runs inside the Soft-RoCE guest (`rdma/guest/`,
//! which CI drives through `rdma/guest/ci.sh` with this binary and `oxccl`
//! packed in); anywhere else it fails and says so. Speeds there are
//! emulation speeds, printed for the record, never asserted.
#![cfg(feature = "rdma")]

use std::process::Command;

fn in_guest() {
    assert!(
        std::env::var_os("RXE_DEV").is_some(),
        "RXE_DEV is not set: this test runs only inside the Soft-RoCE guest (rdma/guest/run.sh; CI: rdma/guest/ci.sh)"
    );
}

/// `oxccl run -n RANKS -- LAUNCH... perf COLLECTIVE PERF...` with its
/// rendezvous at `port`: asserts it succeeded with every result right, and
/// returns (stdout, stderr).
fn perf(ranks: &str, port: &str, launch: &[&str], collective: &str, perf: &[&str], what: &str) -> (String, String) {
    let oxccl = env!("CARGO_BIN_EXE_oxccl");
    let out = Command::new(oxccl)
        .args(["run", "-n", ranks, "--"])
        .args(launch)
        .args(["perf", collective, "-c", "1", "--no-membw"])
        .args(perf)
        .env("OXCCL_MASTER_PORT", port)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    println!("--- {what} (Soft-RoCE, emulation speed):\n{stdout}{stderr}");
    assert!(out.status.success(), "{what}: {:?}", out.status);
    assert!(stdout.contains("Out of bounds values : 0 OK"), "{what}: results not all correct");
    (stdout, stderr)
}

#[test]
fn perf_sweep_over_rdma() {
    in_guest();
    let oxccl = env!("CARGO_BIN_EXE_oxccl");
    for (ranks, port) in [("2", "29621"), ("3", "29622")] {
        let sweep = ["--transport", "rdma", "-b", "8", "-e", "1M", "-f", "32", "-n", "10", "-w", "2"];
        let what = format!("{ranks} ranks over RDMA");
        let (stdout, _) =
            perf(ranks, port, &[oxccl], "all_reduce", &[&sweep[..], &["--algo", "ring,tree,rhd"]].concat(), &what);
        // 8 B, 256 B, 8 KiB, 256 KiB (and 1 MiB is past the end): rows for each algorithm.
        for algo in ["ring", "tree", "rhd"] {
            assert!(
                stdout.lines().any(|l| l.split_whitespace().next() == Some("262144") && l.contains(algo)),
                "{ranks} ranks: no {algo} row of 262144 B"
            );
        }
    }
}

/// `--transport auto` in a build with RDMA, ranks on two "hosts" (host ids
/// set per rank): shared memory inside a host, RDMA between them, every
/// result checked.
#[test]
fn perf_auto_over_shm_and_rdma() {
    in_guest();
    let oxccl = env!("CARGO_BIN_EXE_oxccl");
    let rank = format!("OXCCL_HOST_ID=host$((OXCCL_RANK / 2)) exec {oxccl} \"$@\"");
    let sweep =
        ["--transport", "auto", "-b", "8", "-e", "256K", "-f", "32", "-n", "5", "-w", "1", "--algo", "ring,rhd"];
    let (_, stderr) =
        perf("4", "29623", &["sh", "-c", &rank, "rank"], "all_reduce", &sweep, "4 ranks on 2 hosts, transport auto");
    assert!(stderr.contains("rank 0's transport: shm+rdma (2 of 4 ranks on this host)"), "{stderr}");
}

/// The default algorithm set (`all`) over RDMA: direct, which needs ranks
/// sharing an address space, is skipped and named on stderr once; every
/// other algorithm reports rows, every result right.
#[test]
fn perf_default_algorithms_over_rdma_skip_direct() {
    in_guest();
    let oxccl = env!("CARGO_BIN_EXE_oxccl");
    for (collective, port) in [("all_reduce", "29624"), ("reduce_scatter", "29625")] {
        let sweep = ["--transport", "rdma", "-b", "8", "-e", "8K", "-f", "32", "-n", "5", "-w", "1"];
        let what = format!("{collective}, 2 ranks over RDMA, default algorithms");
        let (stdout, stderr) = perf("2", port, &[oxccl], collective, &sweep, &what);
        let skipped = "# oxccl perf: skipping direct: it needs ranks that share an address space; rdma has none";
        assert_eq!(stderr.matches(skipped).count(), 1, "{what}: {stderr}");
        let rows: Vec<Vec<&str>> = stdout
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| l.split_whitespace().collect())
            .collect();
        // 8 B, 256 B, 8 KiB, each for ring, tree, rhd and auto.
        assert_eq!(rows.len(), 3 * 4, "{what}: {stdout}");
        for algo in ["ring", "tree", "rhd", "auto:"] {
            assert!(rows.iter().any(|r| r[0] == "8192" && r[5].starts_with(algo)), "{what}: no {algo} row of 8192 B");
        }
        assert!(rows.iter().all(|r| !r[5].contains("direct")), "{what}: {stdout}");
    }
}
