//! A C program built with the system compiler against `include/oxccl.h`
//! only and linked with `liboxccl.so` (`capi/tests/c/collectives.c`): run
//! as 4 processes meeting through a unique id, every collective in and out
//! of place over several types, operators and counts checked element by
//! element, a group sending to and receiving from every peer, bad input
//! refused; then 4 ranks in one process driven by one thread through groups.
//! The same again on device memory (the emulated device: `OXCCL_DEVICE=emu`),
//! stream-ordered and, with IPC refused, staged.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Builds `liboxccl.so` and returns its directory. `cargo test` builds no
/// cdylib for integration tests, so the test asks cargo for it, into a
/// target directory of its own (no lock shared with the running `cargo
/// test`), once for every test of this file.
fn lib_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let target = root.join("target/capi-c");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(&cargo)
            .args(["build", "--quiet", "-p", "oxccl-capi", "--target-dir"])
            .arg(&target)
            .current_dir(&root)
            .output()
            .unwrap_or_else(|e| panic!("running {cargo}: {e}"));
        assert!(out.status.success(), "cargo build -p oxccl-capi failed:\n{}", String::from_utf8_lossy(&out.stderr));
        target.join("debug")
    })
    .clone()
}

/// Builds the C program into a directory of its own for test `name`;
/// returns its path.
fn build(name: &str) -> PathBuf {
    build_source(name, "tests/c/collectives.c")
}

/// Builds `source` (relative to `capi/`) as [`build`] does.
fn build_source(name: &str, source: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = lib_dir();
    assert!(lib.join("liboxccl.so").exists(), "no liboxccl.so in {}", lib.display());
    let dir = std::env::temp_dir().join(format!("oxccl-capi-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("collectives");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", "-D_DEFAULT_SOURCE"])
        .arg(format!("-I{}", root.join("../include").display()))
        .arg(root.join(source))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-loxccl", "-lm"])
        .output()
        .unwrap_or_else(|e| panic!("running {cc}: {e}"));
    assert!(out.status.success(), "{cc} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    exe
}

/// Starts `cmd` with a deadline for oxccl's waits, its output captured.
fn spawn(cmd: &mut Command) -> std::process::Child {
    cmd.env("OXCCL_TIMEOUT", "60").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn wait_all(mut children: Vec<(String, std::process::Child)>, limit: Duration) {
    let start = Instant::now();
    let mut failed = Vec::new();
    for (name, child) in children.iter_mut() {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                if !status.success() {
                    failed.push(format!("{name}: {status}"));
                }
                break;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                failed.push(format!("{name}: still running after {limit:?}"));
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut report = String::new();
    for (name, child) in children {
        let out = child.wait_with_output().unwrap();
        report +=
            &format!("--- {name}\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if !String::from_utf8_lossy(&out.stdout).contains("ok")
            && !String::from_utf8_lossy(&out.stdout).contains("sums of")
        {
            failed.push(format!("{name}: no ok"));
        }
    }
    assert!(failed.is_empty(), "{failed:?}\n{report}");
}

/// `collectives.c` as `world` processes meeting through a unique id in a
/// file, with `env` set (`name` keeps runs apart).
fn run_ranks(name: &str, world: usize, env: &[(&str, &str)]) {
    let exe = build(name);
    let idfile = exe.with_file_name("id");
    let _ = std::fs::remove_file(&idfile);
    let children = (0..world)
        .map(|r| {
            let mut cmd = Command::new(&exe);
            cmd.args([r.to_string(), world.to_string(), idfile.display().to_string()]).envs(env.iter().copied());
            (format!("rank {r}"), spawn(&mut cmd))
        })
        .collect();
    wait_all(children, Duration::from_secs(240));
}

#[test]
fn a_c_program_runs_every_collective_as_four_processes() {
    run_ranks("ranks", 4, &[]);
}

/// Every buffer device memory (the emulated device's): the same checks
/// through the GPU collectives, stream-ordered between the processes.
#[test]
fn a_c_program_runs_every_collective_on_device_memory() {
    run_ranks("device", 4, &[("OXCCL_DEVICE", "emu")]);
}

/// As above where the processes cannot open each other's device memory
/// (IPC refused): staged through host memory.
#[test]
fn a_c_program_on_device_memory_without_ipc_is_staged() {
    run_ranks("staged", 3, &[("OXCCL_DEVICE", "emu"), ("OXCCL_EMU_IPC", "0")]);
}

#[test]
fn a_c_program_drives_four_ranks_from_one_thread() {
    let exe = build("all");
    let child = spawn(Command::new(&exe).args(["all", "4"]));
    wait_all(vec![("all".into(), child)], Duration::from_secs(120));
}

#[test]
fn a_c_program_drives_four_ranks_on_device_memory_from_one_thread() {
    let exe = build("all-device");
    let child = spawn(Command::new(&exe).args(["all", "4"]).env("OXCCL_DEVICE", "emu"));
    wait_all(vec![("all".into(), child)], Duration::from_secs(120));
}

/// The example (`capi/examples/all_reduce.c`) as 2 processes with the
/// environment `oxccl run` gives them.
#[test]
fn the_c_example_runs_from_a_launchers_environment() {
    let exe = build_source("example", "examples/all_reduce.c");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let children = (0..2)
        .map(|r| {
            let child = spawn(
                Command::new(&exe)
                    .env("OXCCL_RANK", r.to_string())
                    .env("OXCCL_WORLD_SIZE", "2")
                    .env("OXCCL_MASTER_ADDR", "127.0.0.1")
                    .env("OXCCL_MASTER_PORT", port.to_string()),
            );
            (format!("rank {r}"), child)
        })
        .collect();
    wait_all(children, Duration::from_secs(120));
}

/// The CUDA example (`capi/examples/cuda_collectives.c`, run by
/// `tools/gpu-check` on a GPU machine) compiles against `oxccl.h` and links
/// with `liboxccl.so` and the CUDA runtime of the pinned toolkit
/// (`ptx/tools/install-cuda-tools.sh`, which CI has installed for the PTX
/// check). It cannot run here: there is no GPU.
#[test]
fn the_cuda_example_builds_against_the_header() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("bash").arg(root.join("ptx/tools/install-cuda-tools.sh")).output().unwrap();
    assert!(out.status.success(), "install-cuda-tools.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let cuda = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let lib = lib_dir();
    let dir = std::env::temp_dir().join(format!("oxccl-capi-{}-cuda", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", "-D_DEFAULT_SOURCE"])
        .arg(format!("-I{}", root.join("include").display()))
        .arg(format!("-I{}", cuda.join("include").display()))
        .arg(root.join("capi/examples/cuda_collectives.c"))
        .arg("-o")
        .arg(dir.join("cuda_collectives"))
        .arg(format!("-L{}", lib.display()))
        .arg("-loxccl")
        .arg(cuda.join("lib/libcudart.so.13"))
        .output()
        .unwrap_or_else(|e| panic!("running {cc}: {e}"));
    assert!(out.status.success(), "{cc} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}
