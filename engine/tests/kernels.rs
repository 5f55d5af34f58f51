//! Every CPU kernel against the f64 reference (`oxccl_engine::reference`):
//! fresh random inputs, outputs poisoned with NaN before the run, on a
//! serial backend and on a threaded one with sizes large enough to take the
//! parallel paths.

use oxccl_engine::backend::{dst, src, Activation, AdamStep, Backend, CpuBackend, Gemm};
use oxccl_engine::reference;
use oxccl_engine::rng::Rng;

fn randn(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

fn backends() -> Vec<CpuBackend> {
    vec![CpuBackend::serial(), CpuBackend::new(3)]
}

#[allow(clippy::too_many_arguments)]
fn check_matmul(be: &CpuBackend, m: usize, n: usize, k: usize, ta: bool, tb: bool, alpha: f32, beta: f32, seed: u64) {
    let mut rng = Rng::new(seed);
    let a = randn(&mut rng, m * k);
    let b = randn(&mut rng, k * n);
    let c0 = randn(&mut rng, m * n);
    // Operands at nonzero offsets inside larger buffers.
    let mut abuf = vec![7.0; 3 + m * k];
    abuf[3..].copy_from_slice(&a);
    let mut bbuf = vec![7.0; 5 + k * n];
    bbuf[5..].copy_from_slice(&b);
    let mut cbuf = vec![f32::NAN; 2 + m * n + 4];
    if beta != 0.0 {
        cbuf[2..2 + m * n].copy_from_slice(&c0);
    }
    let g = Gemm { m, n, k, trans_a: ta, trans_b: tb, alpha, beta };
    be.matmul(&g, src(&abuf, 3), src(&bbuf, 5), dst(&mut cbuf, 2)).unwrap();
    let mut want = f64s(&c0);
    reference::matmul(m, n, k, &f64s(&a), ta, &f64s(&b), tb, f64::from(alpha), f64::from(beta), &mut want);
    // Error bound from the magnitudes: |Δ| ≲ k·ε·Σ|a||b|.
    let mut bound = vec![0.0; m * n];
    let abs = |v: &[f32]| v.iter().map(|x| f64::from(x.abs())).collect::<Vec<_>>();
    reference::matmul(m, n, k, &abs(&a), ta, &abs(&b), tb, f64::from(alpha.abs()), 0.0, &mut bound);
    for i in 0..m * n {
        let got = f64::from(cbuf[2 + i]);
        let tol = 2e-7 * (k as f64 + 4.0) * (bound[i] + f64::from(beta.abs()) * f64::from(c0[i].abs())) + 1e-6;
        assert!((got - want[i]).abs() <= tol, "{m}x{n}x{k} ta={ta} tb={tb} [{i}]: got {got}, want {}", want[i]);
    }
    assert!(cbuf[..2].iter().chain(&cbuf[2 + m * n..]).all(|x| x.is_nan()), "wrote outside C");
}

#[test]
fn matmul_all_transposes_and_shapes() {
    let shapes = [(4, 3, 0), (1, 1, 1), (3, 5, 7), (32, 10, 17), (17, 1, 10), (10, 32, 64), (1, 9, 33), (64, 64, 64)];
    for be in backends() {
        for (s, &(m, n, k)) in shapes.iter().enumerate() {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                check_matmul(&be, m, n, k, ta, tb, 1.0, 0.0, s as u64);
                check_matmul(&be, m, n, k, ta, tb, 0.5, 1.0, 100 + s as u64);
            }
        }
    }
}

#[test]
fn matmul_large_parallel_paths() {
    let be = CpuBackend::new(3);
    // Tall (rows split) and wide (columns split), both above the threshold.
    check_matmul(&be, 300, 40, 200, false, false, 1.0, 0.0, 1);
    check_matmul(&be, 200, 300, 70, true, false, 1.0, 1.0, 2);
    check_matmul(&be, 20, 500, 300, false, true, 1.0, 0.0, 3);
    check_matmul(&be, 129, 257, 130, true, true, -2.0, 0.5, 4);
}

#[test]
fn matmul_rejects_out_of_bounds() {
    let be = CpuBackend::serial();
    let a = vec![0.0; 6];
    let b = vec![0.0; 6];
    let mut c = vec![0.0; 3];
    let err = be.matmul(&Gemm::new(2, 2, 3, false, false), src(&a, 0), src(&b, 0), dst(&mut c, 0)).unwrap_err();
    assert!(err.to_string().contains("C needs elements 0..4"), "{err}");
    assert!(be.matmul(&Gemm::new(2, 2, 3, false, false), src(&a, 1), src(&b, 0), dst(&mut c, 0)).is_err());
}

#[test]
fn bias_add_and_reduction() {
    for be in backends() {
        for &(rows, cols) in &[(1, 1), (5, 3), (64, 10), (300, 257)] {
            let mut rng = Rng::new(rows as u64);
            let y0 = randn(&mut rng, rows * cols);
            let b = randn(&mut rng, cols);
            let mut y = y0.clone();
            be.add_bias(dst(&mut y, 0), rows, cols, src(&b, 0)).unwrap();
            for r in 0..rows {
                for c in 0..cols {
                    let want = f64::from(y0[r * cols + c]) + f64::from(b[c]);
                    assert!((f64::from(y[r * cols + c]) - want).abs() < 1e-6 * (1.0 + want.abs()));
                }
            }
            let mut db = vec![f32::NAN; cols + 1];
            be.bias_grad(src(&y0, 0), rows, cols, dst(&mut db, 1)).unwrap();
            for c in 0..cols {
                let want: f64 = (0..rows).map(|r| f64::from(y0[r * cols + c])).sum();
                let mag: f64 = (0..rows).map(|r| f64::from(y0[r * cols + c].abs())).sum();
                assert!((f64::from(db[1 + c]) - want).abs() <= 1e-6 * rows as f64 * mag + 1e-6, "col {c}");
            }
            assert!(db[0].is_nan());
        }
    }
}

#[test]
fn activations_and_backward() {
    for be in backends() {
        for &len in &[1usize, 7, 1000, 100_003] {
            let mut rng = Rng::new(len as u64);
            let mut z: Vec<f32> = randn(&mut rng, len).iter().map(|v| v * 3.0).collect();
            z[0] = 0.0; // ReLU's kink: TensorFlow's gradient there is 0.
            let g0 = randn(&mut rng, len);
            for f in [Activation::Linear, Activation::Relu, Activation::Gelu] {
                let mut a = vec![f32::NAN; len];
                be.activation(f, src(&z, 0), dst(&mut a, 0), len).unwrap();
                let mut g = g0.clone();
                be.activation_backward(f, src(&z, 0), dst(&mut g, 0), len).unwrap();
                for i in 0..len {
                    let zi = f64::from(z[i]);
                    let want = reference::act(f, zi);
                    assert!((f64::from(a[i]) - want).abs() <= 1e-6 * (1.0 + want.abs()), "{f:?}({zi})");
                    let want_g = f64::from(g0[i]) * reference::act_grad(f, zi);
                    assert!((f64::from(g[i]) - want_g).abs() <= 1e-5 * (1.0 + want_g.abs()), "{f:?}'({zi})");
                }
            }
        }
    }
}

#[test]
fn gelu_derivative_matches_finite_differences() {
    // Checks the hand-derived reference derivative itself.
    for i in -40..=40 {
        let z = f64::from(i) * 0.1;
        let h = 1e-6;
        let fd = (reference::act(Activation::Gelu, z + h) - reference::act(Activation::Gelu, z - h)) / (2.0 * h);
        assert!((fd - reference::act_grad(Activation::Gelu, z)).abs() < 1e-8, "z={z}");
    }
}

#[test]
fn mse_and_gradient() {
    for be in backends() {
        let mut rng = Rng::new(9);
        let len = 333;
        let p = randn(&mut rng, len);
        let t = randn(&mut rng, len);
        let scale = 1.0 / 1000.0;
        let mut d = vec![f32::NAN; len];
        let mut loss = vec![f32::NAN; 3];
        be.mse(src(&p, 0), src(&t, 0), dst(&mut d, 0), dst(&mut loss, 2), len, scale).unwrap();
        let want: f64 = p.iter().zip(&t).map(|(&p, &t)| (f64::from(p) - f64::from(t)).powi(2)).sum::<f64>() / 1000.0;
        assert!((f64::from(loss[2]) - want).abs() < 1e-6 * want);
        for i in 0..len {
            let want = 2.0 * (f64::from(p[i]) - f64::from(t[i])) / 1000.0;
            assert!((f64::from(d[i]) - want).abs() < 1e-6 * (1e-3 + want.abs()));
        }
        assert!(loss[0].is_nan() && loss[1].is_nan());
    }
}

#[test]
fn fused_adam_matches_textbook_adam() {
    for be in backends() {
        for &(len, wd) in &[(10usize, 0.0f32), (100_000, 0.0), (1000, 0.01)] {
            let mut rng = Rng::new(len as u64);
            let p0 = randn(&mut rng, len);
            let mut p = p0.clone();
            let (mut m, mut v) = (vec![0.0f32; len], vec![0.0f32; len]);
            let mut want: Vec<(f64, f64, f64)> = p0.iter().map(|&p| (f64::from(p), 0.0, 0.0)).collect();
            for t in 1..=5u64 {
                // Gradients of varied size, some tiny so ε matters.
                let g: Vec<f32> =
                    randn(&mut rng, len).iter().enumerate().map(|(i, x)| x * 10f32.powi(-(i as i32 % 8))).collect();
                let step = AdamStep { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-7, weight_decay: wd, t };
                be.adam(&step, dst(&mut p, 0), src(&g, 0), dst(&mut m, 0), dst(&mut v, 0), len).unwrap();
                for (i, w) in want.iter_mut().enumerate() {
                    *w = reference::adam(&step, w.0, f64::from(g[i]), w.1, w.2);
                }
            }
            for i in 0..len {
                let (wp, wm, wv) = want[i];
                assert!((f64::from(p[i]) - wp).abs() <= 2e-6 * (1.0 + wp.abs()), "p[{i}] {} vs {wp}", p[i]);
                // Moments can cancel to near zero: bound by the gradients' scale.
                let scale = 10f64.powi(-(i as i32 % 8));
                assert!((f64::from(m[i]) - wm).abs() <= 1e-6 * (wm.abs() + scale), "m[{i}] {} vs {wm}", m[i]);
                assert!((f64::from(v[i]) - wv).abs() <= 1e-6 * (wv.abs() + scale * scale), "v[{i}] {} vs {wv}", v[i]);
            }
        }
    }
}
