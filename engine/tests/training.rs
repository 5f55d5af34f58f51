//! The training loop against the f64 reference, and the strategies against
//! each other: one replica = reference; N mirrored replicas = one replica at
//! the same global batch; synchronous parameter server = mirrored.

use oxccl_engine::backend::Activation;
use oxccl_engine::data::{Dataset, EpochPlan, Synthetic};
use oxccl_engine::model::{AdamConfig, ModelSpec};
use oxccl_engine::reference::Mlp;
use oxccl_engine::train::{train, Strategy, TrainConfig, TrainOutcome};

fn data(rows: usize, width: usize, seed: u64) -> Dataset {
    Synthetic { width, noise: 0.1, seed }.generate(rows, "train").unwrap()
}

fn run(config: &TrainConfig, data: &Dataset) -> TrainOutcome {
    train(config, data, None, None).unwrap()
}

/// Largest |a − b| over a tensor, relative to the tensor's largest |b| (≥ 1e-3).
fn rel_diff(a: &[f32], b: &[f64]) -> f64 {
    let scale = b.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(&a, &b)| (f64::from(a) - b).abs()).fold(0.0, f64::max) / scale
}

/// Compares every tensor of two flat parameter vectors.
fn assert_params_close(spec: &ModelSpec, got: &[f32], want: &[f32], tol: f64, what: &str) {
    for (name, offset, shape) in spec.tensor_names() {
        let len: usize = shape.iter().product();
        let w: Vec<f64> = want[offset..offset + len].iter().map(|&v| f64::from(v)).collect();
        let d = rel_diff(&got[offset..offset + len], &w);
        assert!(d <= tol, "{what}: {name} differs by {d:e} (relative), tolerance {tol:e}");
    }
}

fn check_against_reference(spec: ModelSpec, batch: usize, rows: usize, weight_decay: f32) {
    let d = data(rows, spec.inputs(), 3);
    let adam = AdamConfig { lr: 0.01, weight_decay, ..AdamConfig::default() };
    let config =
        TrainConfig { spec: spec.clone(), adam, batch, epochs: 1, seed: 9, max_steps: Some(10), ..Default::default() };
    let out = run(&config, &d);
    assert_eq!(out.step_losses.len(), 10);

    let init: Vec<f64> = spec.init_params(9).iter().map(|&v| f64::from(v)).collect();
    let layout = spec.layout();
    let w = layout.iter().map(|l| init[l.kernel..l.bias].to_vec()).collect();
    let b = layout.iter().map(|l| init[l.bias..l.bias + l.outputs].to_vec()).collect();
    let mut reference = Mlp::new(spec.widths.clone(), spec.hidden, w, b);
    let plan = EpochPlan::new(d.rows, batch, true, 9, 0).unwrap();
    let hp = adam.step(0);
    for step in 0..10 {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        d.gather(plan.global(step), &mut x, &mut y);
        let x: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        let y: Vec<f64> = y.iter().map(|&v| f64::from(v)).collect();
        let loss = reference.train_step(&x, &y, x.len() / spec.inputs(), &hp);
        let got = f64::from(out.step_losses[step]);
        assert!((got - loss).abs() <= 1e-5 * loss.abs(), "step {step}: loss {got} vs reference {loss}");
    }
    for (l, layer) in layout.iter().enumerate() {
        let k = &out.state.params[layer.kernel..layer.bias];
        let bias = &out.state.params[layer.bias..layer.bias + layer.outputs];
        assert!(rel_diff(k, &reference.w[l]) < 1e-4, "layer {l} kernel: {:e}", rel_diff(k, &reference.w[l]));
        assert!(rel_diff(bias, &reference.b[l]) < 1e-4, "layer {l} bias: {:e}", rel_diff(bias, &reference.b[l]));
        let m = &out.state.m[layer.kernel..layer.bias];
        assert!(rel_diff(m, &reference.mw[l]) < 1e-4, "layer {l} Adam m");
    }
    assert_eq!(out.state.t, 10);
}

#[test]
fn one_replica_matches_f64_reference_seed_model() {
    check_against_reference(ModelSpec::default(), 32, 1000, 0.0);
}

#[test]
fn one_replica_matches_f64_reference_deep_gelu_with_decay() {
    let spec = ModelSpec::new(vec![8, 16, 12, 3], Activation::Gelu).unwrap();
    // A short last batch inside the 10 steps: 10 steps of 7 over 66 rows.
    let d_rows = 66;
    let d = data(d_rows, 8, 1);
    let y3 = d.y.iter().flat_map(|&v| [v, -v, 0.5 * v]).collect();
    let d3 = Dataset::new(d.x.clone(), 8, y3, 3).unwrap();
    let adam = AdamConfig { lr: 0.01, weight_decay: 0.004, ..AdamConfig::default() };
    let config = TrainConfig { spec: spec.clone(), adam, batch: 7, epochs: 1, seed: 2, ..Default::default() };
    let out = run(&config, &d3);
    assert_eq!(out.step_losses.len(), 10);
    let init: Vec<f64> = spec.init_params(2).iter().map(|&v| f64::from(v)).collect();
    let layout = spec.layout();
    let w = layout.iter().map(|l| init[l.kernel..l.bias].to_vec()).collect();
    let b = layout.iter().map(|l| init[l.bias..l.bias + l.outputs].to_vec()).collect();
    let mut reference = Mlp::new(spec.widths.clone(), spec.hidden, w, b);
    let plan = EpochPlan::new(d_rows, 7, true, 2, 0).unwrap();
    for step in 0..10 {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        d3.gather(plan.global(step), &mut x, &mut y);
        let x: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        let y: Vec<f64> = y.iter().map(|&v| f64::from(v)).collect();
        let loss = reference.train_step(&x, &y, x.len() / 8, &adam.step(0));
        assert!((f64::from(out.step_losses[step]) - loss).abs() <= 1e-5 * loss, "step {step}");
    }
    for (l, layer) in layout.iter().enumerate() {
        assert!(rel_diff(&out.state.params[layer.kernel..layer.bias], &reference.w[l]) < 1e-4, "layer {l} kernel");
        assert!(rel_diff(&out.state.params[layer.bias..layer.bias + layer.outputs], &reference.b[l]) < 1e-4);
    }
}

#[test]
fn one_replica_matches_f64_reference_batch_64_threaded_wide() {
    // Wide enough that the threaded matmul paths run.
    let spec = ModelSpec::new(vec![32, 256, 128, 1], Activation::Relu).unwrap();
    check_against_reference(spec, 64, 700, 0.0);
}

#[test]
fn mirrored_replicas_equal_one_replica() {
    let d = data(1000, 32, 4);
    // 1000 rows at batch 64: a short last batch of 40 rows.
    // (4, 3): every step leaves one replica without rows.
    for &(replicas, batch) in &[(2usize, 64usize), (3, 64), (4, 50), (3, 5), (4, 3)] {
        let base = TrainConfig { batch, epochs: 2, seed: 5, ..Default::default() };
        let one = run(&base, &d);
        let many = run(&TrainConfig { strategy: Strategy::Mirrored { replicas }, ..base.clone() }, &d);
        assert_eq!(one.step_losses.len(), many.step_losses.len());
        for (a, b) in one.step_losses.iter().zip(&many.step_losses) {
            assert!((a - b).abs() <= 1e-4 * a.abs(), "{replicas} replicas, batch {batch}: loss {b} vs {a}");
        }
        assert_params_close(&base.spec, &many.state.params, &one.state.params, 1e-4, &format!("{replicas} replicas"));
        assert_eq!(many.report.samples, 2 * 1000);
    }
}

#[test]
fn synchronous_parameter_server_equals_mirrored() {
    let d = data(700, 32, 6);
    let base = TrainConfig { batch: 64, epochs: 2, seed: 1, ..Default::default() };
    let mirrored = run(&TrainConfig { strategy: Strategy::Mirrored { replicas: 2 }, ..base.clone() }, &d);
    for servers in [1, 2, 3] {
        let ps = run(
            &TrainConfig {
                strategy: Strategy::ParameterServer { workers: 2, servers, synchronous: true },
                ..base.clone()
            },
            &d,
        );
        assert_params_close(&base.spec, &ps.state.params, &mirrored.state.params, 1e-4, &format!("ps {servers}"));
        assert_params_close(&base.spec, &ps.state.m, &mirrored.state.m, 1e-4, "ps m");
        assert_eq!(ps.state.t, mirrored.state.t);
        assert_eq!(ps.step_losses.len(), mirrored.step_losses.len());
        for (a, b) in ps.step_losses.iter().zip(&mirrored.step_losses) {
            assert!((a - b).abs() <= 1e-4 * a.abs(), "loss {a} vs {b}");
        }
        assert_eq!(ps.report.samples, 1400);
    }
    // Three workers, batch not divisible: still the same maths.
    let three = run(&TrainConfig { strategy: Strategy::Mirrored { replicas: 1 }, batch: 10, ..base.clone() }, &d);
    let ps3 = run(
        &TrainConfig {
            strategy: Strategy::ParameterServer { workers: 3, servers: 2, synchronous: true },
            batch: 10,
            ..base.clone()
        },
        &d,
    );
    assert_params_close(&base.spec, &ps3.state.params, &three.state.params, 1e-4, "ps 3 workers");
    // Batches smaller than the worker count: idle workers push zeros.
    let small = data(50, 32, 2);
    let one = run(&TrainConfig { batch: 2, ..base.clone() }, &small);
    let ps4 = run(
        &TrainConfig {
            strategy: Strategy::ParameterServer { workers: 4, servers: 2, synchronous: true },
            batch: 2,
            ..base.clone()
        },
        &small,
    );
    assert_params_close(&base.spec, &ps4.state.params, &one.state.params, 1e-4, "ps, batch < workers");
}

#[test]
fn asynchronous_parameter_server_skips_empty_shards() {
    // 10 rows, batch 4, 3 workers: shards 2,1,1 / 2,1,1 / 1,1,0 per epoch.
    let d = data(10, 32, 8);
    let config = TrainConfig {
        strategy: Strategy::ParameterServer { workers: 3, servers: 3, synchronous: false },
        batch: 4,
        epochs: 2,
        ..Default::default()
    };
    let out = run(&config, &d);
    assert_eq!(out.state.t, 2 * 8, "one update per non-empty push");
    assert_eq!(out.step_losses.len(), 16);
    assert_eq!(out.report.samples, 20);
}

#[test]
fn asynchronous_parameter_server_learns_reproducibly() {
    let d = data(4096, 32, 7);
    let config = TrainConfig {
        strategy: Strategy::ParameterServer { workers: 3, servers: 2, synchronous: false },
        batch: 96,
        epochs: 3,
        seed: 3,
        adam: AdamConfig { lr: 0.01, ..AdamConfig::default() },
        ..Default::default()
    };
    let a = run(&config, &d);
    let b = run(&config, &d);
    assert_eq!(a.state, b.state, "round-robin asynchronous runs are reproducible");
    // One update per worker push: 43 steps × 3 workers per epoch (the last
    // batch of 64 rows still has rows for all three workers).
    assert_eq!(a.state.t, 3 * 43 * 3);
    assert_eq!(a.report.samples, 3 * 4096);
    let first = a.report.epoch_loss[0];
    let last = a.report.final_loss;
    assert!(last < 0.25 * first, "async loss fell only from {first} to {last}");
}

#[test]
fn bad_configurations_are_errors() {
    let d = data(10, 32, 0);
    let bad = |c: TrainConfig| train(&c, &d, None, None).unwrap_err().to_string();
    assert!(bad(TrainConfig { batch: 0, ..Default::default() }).contains("batch"));
    assert!(bad(TrainConfig { strategy: Strategy::Mirrored { replicas: 0 }, ..Default::default() }).contains("replica"));
    let wrong = TrainConfig { spec: ModelSpec::parse("16,4,1", "relu").unwrap(), ..Default::default() };
    assert!(bad(wrong).contains("needs 16"));
    let ps = Strategy::ParameterServer { workers: 1, servers: 0, synchronous: true };
    assert!(bad(TrainConfig { strategy: ps, ..Default::default() }).contains("server"));
}
