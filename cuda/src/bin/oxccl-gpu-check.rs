//! oxccl-gpu-check: every kernel against its CPU reference on a GPU, then
//! the benchmarks, printed as one table and written as JSON.
//!
//!   oxccl-gpu-check [--device N] [--out DIR] [--torch FILE] [--seed S] [--no-bench] [--probe]
//!
//! `--probe` only opens the device and prints its name and capability.
//!
//! `--torch FILE` is the JSON written by tools/gpu-check's PyTorch step
//! (`{"matmul": {"bf16 4096": tflops, ...}}`); with it the matmul rows show
//! the share of torch.matmul. Exit status: 0 all checks passed, 1 a check
//! failed, 2 no usable GPU (the message says why), 3 bad arguments.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use oxccl_cuda::bench::{self, Measurement};
use oxccl_cuda::rng::Rng;
use oxccl_cuda::{verify, Device, GpuRunner};
use serde_json::{json, Value};

struct Args {
    device: usize,
    out: Option<PathBuf>,
    torch: Option<PathBuf>,
    seed: u64,
    bench: bool,
    probe: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        device: 0,
        out: std::env::var_os("OUT").map(PathBuf::from),
        torch: None,
        seed: Rng::seed_from_env(),
        bench: true,
        probe: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--device" => a.device = value()?.parse().map_err(|e| format!("--device: {e}"))?,
            "--out" => a.out = Some(value()?.into()),
            "--torch" => a.torch = Some(value()?.into()),
            "--seed" => a.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--no-bench" => a.bench = false,
            "--probe" => a.probe = true,
            "-h" | "--help" => {
                return Err(
                    "usage: oxccl-gpu-check [--device N] [--out DIR] [--torch FILE] [--seed S] [--no-bench]".into()
                )
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("oxccl-gpu-check: {e}");
            return ExitCode::from(3);
        }
    };
    let dev = match Device::new(args.device) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("oxccl-gpu-check: {e}");
            return ExitCode::from(2);
        }
    };
    if args.probe {
        let (major, minor) = dev.capability();
        println!("{} (sm_{major}{minor})", dev.name().unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    match run(dev, &args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("oxccl-gpu-check: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(dev: Device, args: &Args) -> oxccl_cuda::Result<bool> {
    let name = dev.name()?;
    let (major, minor) = dev.capability();
    println!("# oxccl-gpu-check on {name} (sm_{major}{minor}, loading {} PTX), seed {}", dev.arch().name(), args.seed);

    // 1. Correctness: the same suite the tests run on the emulator.
    let mut runner = GpuRunner::new(dev);
    let mut outcomes = verify::all(&mut runner, args.seed)?;
    outcomes.extend(verify::large(&mut runner, args.seed)?);
    let mut per_kernel: BTreeMap<String, (usize, usize, f64)> = BTreeMap::new();
    for o in &outcomes {
        let e = per_kernel.entry(o.kernel.clone()).or_insert((0, 0, 0.0));
        e.0 += 1;
        e.1 += usize::from(!o.passed());
        e.2 = e.2.max(o.worst);
        if !o.passed() {
            println!("{o}");
        }
    }
    let all_passed = outcomes.iter().all(|o| o.passed());
    println!("\n## correctness vs CPU reference ({} cases)", outcomes.len());
    println!("{:<18} {:>6} {:>6} {:>12}", "kernel", "cases", "failed", "worst err");
    for (k, (cases, failed, worst)) in &per_kernel {
        println!("{k:<18} {cases:>6} {failed:>6} {worst:>12.2e}");
    }
    let dev = runner.into_device();

    // 2. Benchmarks.
    let mut rows: Vec<Value> = Vec::new();
    if args.bench {
        let torch = args
            .torch
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| serde_json::from_str::<Value>(&s).ok());
        let copy = bench::copy_bandwidth(&dev, 1 << 30)?;
        let copy_gbps = copy.gbps.unwrap_or(f64::NAN);
        let mut measured = vec![copy];
        measured.extend(bench::elementwise(&dev, 1 << 28, args.seed)?);
        for size in [4096, 8192] {
            measured.extend(bench::matmul(&dev, size, args.seed)?);
        }
        println!("\n## benchmarks");
        println!(
            "{:<28} {:>10} {:>10} {:>8} {:>10} {:>10} {:>8}",
            "kernel", "ms", "GB/s", "% copy", "TFLOP/s", "torch", "% torch"
        );
        for m in &measured {
            rows.push(print_row(m, copy_gbps, torch.as_ref()));
        }
    }

    let report = json!({
        "device": name,
        "capability": format!("{major}.{minor}"),
        "seed": args.seed,
        "all_passed": all_passed,
        "correctness": per_kernel.iter().map(|(k, (c, f, w))| json!({"kernel": k, "cases": c, "failed": f, "worst_rel_err": w})).collect::<Vec<_>>(),
        "failures": outcomes.iter().filter(|o| !o.passed()).map(|o| o.to_string()).collect::<Vec<_>>(),
        "benchmarks": rows,
    });
    if let Some(dir) = &args.out {
        let path = dir.join("gpu-check.json");
        let written = std::fs::create_dir_all(dir)
            .and_then(|_| std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap_or_default()));
        match written {
            Ok(()) => println!("\nwrote {}", path.display()),
            Err(e) => eprintln!("oxccl-gpu-check: writing {}: {e}", path.display()),
        }
    }
    println!("\n{}", if all_passed { "ALL KERNELS PASSED" } else { "SOME KERNELS FAILED" });
    Ok(all_passed)
}

fn print_row(m: &Measurement, copy_gbps: f64, torch: Option<&Value>) -> Value {
    let pct_copy = m.gbps.map(|g| 100.0 * g / copy_gbps);
    let torch_tflops = torch.and_then(|t| {
        let key = m.name.replace("matmul_", "").replace('³', "");
        t.get("matmul").and_then(|mm| mm.get(&key)).and_then(Value::as_f64)
    });
    let pct_torch = match (m.tflops, torch_tflops) {
        (Some(ours), Some(theirs)) if theirs > 0.0 => Some(100.0 * ours / theirs),
        _ => None,
    };
    let f = |v: Option<f64>, p: usize| v.map(|x| format!("{x:.p$}")).unwrap_or_else(|| "-".into());
    println!(
        "{:<28} {:>10.3} {:>10} {:>8} {:>10} {:>10} {:>8}",
        m.name,
        m.ms,
        f(m.gbps, 1),
        f(pct_copy, 1),
        f(m.tflops, 1),
        f(torch_tflops, 1),
        f(pct_torch, 1)
    );
    json!({"name": m.name, "ms": m.ms, "gbps": m.gbps, "pct_copy": pct_copy, "tflops": m.tflops, "torch_tflops": torch_tflops, "pct_torch": pct_torch})
}
