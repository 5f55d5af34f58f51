//! `oxccl train` and `oxccl predict` end to end: JSON lines, a checkpoint
//! written and resumed, predictions over replicas equal to one replica's,
//! and clear failures.

use std::path::PathBuf;
use std::process::{Command, Stdio};

fn oxccl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_oxccl")).args(args).output().expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("oxccl-tools-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[test]
fn train_save_resume_predict() {
    let dir = temp_dir("train");
    let ckpt = dir.join("m.safetensors");
    let ck = ckpt.to_str().unwrap();
    let common = ["--samples", "4096", "--test-samples", "512", "--batch", "64", "--json"];
    let (ok, out, err) = oxccl(
        &[&["train", "--replicas", "2", "--epochs", "1", "--save", ck, "--baseline-steps", "20"], &common[..]].concat(),
    );
    assert!(ok, "{err}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!((lines[0]["event"].as_str(), lines[0]["epoch"].as_u64()), (Some("epoch"), Some(1)));
    let report = &lines[1];
    assert_eq!(report["event"], "report");
    assert_eq!(
        (report["replicas"].as_u64(), report["steps"].as_u64(), report["samples"].as_u64()),
        (Some(2), Some(64), Some(4096))
    );
    for key in ["samples_per_s", "gflops", "compute_ms", "comm_ms", "optimizer_ms", "scaling_efficiency", "test_mse"] {
        assert!(report[key].as_f64().is_some_and(|v| v.is_finite() && v >= 0.0), "{key}: {report}");
    }

    // Resume to 3 epochs with the parameter server.
    let (ok, out, err) = oxccl(
        &[
            &[
                "train",
                "--strategy",
                "ps",
                "--servers",
                "2",
                "--replicas",
                "2",
                "--epochs",
                "3",
                "--resume",
                ck,
                "--save",
                ck,
            ],
            &common[..],
        ]
        .concat(),
    );
    assert!(ok, "{err}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3, "two more epochs and the report: {out}");
    assert!(lines[2]["test_mse"].as_f64().unwrap() < report["test_mse"].as_f64().unwrap());

    // Predictions over 3 replicas equal those of one, file for file.
    let (p1, p3) = (dir.join("p1.npy"), dir.join("p3.npy"));
    // The same 512 held-out rows as training's test MSE.
    let p1s = p1.to_str().unwrap();
    let (ok, out, err) = oxccl(&["predict", "--model", ck, "--samples", "512", "--output", p1s, "--json"]);
    assert!(ok, "{err}");
    let line = &json_lines(&out)[0];
    assert_eq!(line["rows"].as_u64(), Some(512));
    let (mse, trained) = (line["mse"].as_f64().unwrap(), lines[2]["test_mse"].as_f64().unwrap());
    assert!((mse - trained).abs() <= 1e-5 * trained, "predict's MSE {mse}, training's {trained}");
    let p3s = p3.to_str().unwrap();
    let (ok, _, err) =
        oxccl(&["predict", "--model", ck, "--samples", "512", "--replicas", "3", "--batch", "100", "--output", p3s]);
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(&p1).unwrap(), std::fs::read(&p3).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn csv_data_and_human_summary() {
    let dir = temp_dir("csv");
    let csv = dir.join("d.csv");
    let mut text = String::from("a,b,y\n");
    for i in 0..200 {
        let (a, b) = ((i % 17) as f32 / 17.0, (i % 5) as f32 / 5.0);
        text += &format!("{a},{b},{}\n", 2.0 * a - b);
    }
    std::fs::write(&csv, text).unwrap();
    let (ok, out, err) = oxccl(&[
        "train",
        "--data",
        csv.to_str().unwrap(),
        "--layers",
        "2,8,1",
        "--act",
        "gelu",
        "--holdout",
        "40",
        "--epochs",
        "3",
        "--batch",
        "16",
        "--replicas",
        "2",
        "--no-baseline",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("mirrored (2 replicas), 2,8,1 [gelu]") && out.contains("test MSE"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every launcher's rank variable, removed so a test sees no launcher.
const LAUNCHER_VARS: [&str; 4] = ["OXCCL_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID", "RANK"];

#[test]
fn multi_worker_processes_equal_mirrored_threads() {
    let dir = temp_dir("multi");
    let (mw, mir) = (dir.join("mw.safetensors"), dir.join("mir.safetensors"));
    let job = ["--samples", "2048", "--test-samples", "0", "--batch", "64", "--epochs", "2", "--threads", "1"];
    let port = (30_000 + std::process::id() % 20_000).to_string();
    let children: Vec<_> = (0..2)
        .map(|rank| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_oxccl"));
            c.args(["train", "--strategy", "multi-worker", "--save", mw.to_str().unwrap()]).args(job);
            LAUNCHER_VARS.iter().for_each(|v| {
                c.env_remove(v);
            });
            c.envs([("OXCCL_RANK", rank.to_string()), ("OXCCL_WORLD_SIZE", "2".into())])
                .envs([
                    ("OXCCL_MASTER_ADDR", "127.0.0.1"),
                    ("OXCCL_MASTER_PORT", port.as_str()),
                    ("OXCCL_TIMEOUT", "60"),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawns")
        })
        .collect();
    for (rank, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "rank {rank} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let (ok, _, err) =
        oxccl(&[&["train", "--replicas", "2", "--no-baseline", "--save", mir.to_str().unwrap()], &job[..]].concat());
    assert!(ok, "{err}");
    // With two ranks every all-reduce algorithm computes a + b: bit-identical.
    let (a, b) = (oxccl_engine::checkpoint::load(&mw).unwrap(), oxccl_engine::checkpoint::load(&mir).unwrap());
    assert_eq!(a, b, "two processes and two threads trained the same model");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn failures_are_clear() {
    let mut c = Command::new(env!("CARGO_BIN_EXE_oxccl"));
    c.args(["train", "--strategy", "multi-worker", "--samples", "64"]);
    LAUNCHER_VARS.iter().for_each(|v| {
        c.env_remove(v);
    });
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no launcher environment"), "{err}");
    let (ok, _, err) = oxccl(&["train", "--layers", "32,x,1"]);
    assert!(!ok && err.contains("bad width"), "{err}");
    let (ok, _, err) = oxccl(&["predict", "--model", "/nonexistent/m.safetensors"]);
    assert!(!ok && err.contains("/nonexistent/m.safetensors"), "{err}");
}
