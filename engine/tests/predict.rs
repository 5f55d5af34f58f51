//! Distributed prediction: N replicas give exactly what one gives, in order,
//! and both match the f64 reference.

use oxccl_engine::backend::Activation;
use oxccl_engine::data::Synthetic;
use oxccl_engine::model::ModelSpec;
use oxccl_engine::predict::{predict, PredictConfig};
use oxccl_engine::reference::Mlp;

#[test]
fn replicas_agree_with_one_and_with_the_reference() {
    for spec in [ModelSpec::default(), ModelSpec::new(vec![32, 300, 2], Activation::Gelu).unwrap()] {
        let params = spec.init_params(4);
        let x = Synthetic::default().generate(1003, "test").unwrap().x;
        let one = predict(&spec, &params, &x, &PredictConfig { replicas: 1, batch: 1024, threads: Some(1) }).unwrap();
        assert_eq!(one.len(), 1003 * spec.outputs());
        for (replicas, batch) in [(2, 64), (3, 100), (4, 7), (5, 1024)] {
            let many = predict(&spec, &params, &x, &PredictConfig { replicas, batch, threads: None }).unwrap();
            let same = one.iter().zip(&many).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same && many.len() == one.len(), "{replicas} replicas, batch {batch}");
        }
        let layout = spec.layout();
        let p64: Vec<f64> = params.iter().map(|&v| f64::from(v)).collect();
        let reference = Mlp::new(
            spec.widths.clone(),
            spec.hidden,
            layout.iter().map(|l| p64[l.kernel..l.bias].to_vec()).collect(),
            layout.iter().map(|l| p64[l.bias..l.bias + l.outputs].to_vec()).collect(),
        );
        let want = reference.predict(&x.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(), 1003);
        for (g, w) in one.iter().zip(&want) {
            assert!((f64::from(*g) - w).abs() < 1e-5 * (1.0 + w.abs()), "{g} vs {w}");
        }
    }
}

#[test]
fn fewer_rows_than_replicas_and_errors() {
    let spec = ModelSpec::default();
    let params = spec.init_params(0);
    let x = Synthetic::default().generate(3, "x").unwrap().x;
    let one = predict(&spec, &params, &x, &PredictConfig::default()).unwrap();
    let many = predict(&spec, &params, &x, &PredictConfig { replicas: 5, batch: 2, threads: None }).unwrap();
    assert_eq!(one, many);
    assert!(predict(&spec, &params, &[], &PredictConfig { replicas: 3, ..Default::default() }).unwrap().is_empty());
    assert!(predict(&spec, &params, &x[..31], &PredictConfig::default()).is_err());
    assert!(predict(&spec, &params, &x, &PredictConfig { replicas: 0, ..Default::default() }).is_err());
}
