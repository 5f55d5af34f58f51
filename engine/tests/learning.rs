//! The seed's job: `Dense(10, relu, input 32) -> Dense(1)`, Adam (Keras
//! defaults), MSE, on the synthetic set (x ~ N(0, 1) of width 32,
//! y = x·w + 0.1·noise, 65,536 training rows), global batch 64.
//! TensorFlow 2.21 reached test MSE ≈ 0.12 after 2 epochs on this kind of
//! data and schedule; the engine must do as well (within the spread between
//! initialisation seeds, which is about ±0.02 here), and get below 0.05
//! with more epochs. The best possible MSE is the noise's, 0.01; y's own
//! variance is about 32.

use oxccl_engine::data::Synthetic;
use oxccl_engine::predict::{evaluate, PredictConfig};
use oxccl_engine::train::{train, Strategy, TrainConfig};

#[test]
fn seed_model_learns_like_tensorflow() {
    let synth = Synthetic::default();
    let train_set = synth.generate(65_536, "train").unwrap();
    let test_set = synth.generate(8_192, "test").unwrap();
    let strategies = [
        Strategy::Mirrored { replicas: 1 },
        Strategy::Mirrored { replicas: 2 },
        Strategy::ParameterServer { workers: 2, servers: 1, synchronous: true },
    ];
    let mut after_two = Vec::new();
    for (seed, strategy) in strategies.into_iter().enumerate() {
        let config = TrainConfig { batch: 64, epochs: 2, seed: seed as u64, strategy, ..Default::default() };
        let two = train(&config, &train_set, None, None).unwrap();
        let mse2 = evaluate(&config.spec, &two.state.params, &test_set, &PredictConfig::default()).unwrap();
        // Resume from the 2-epoch state and continue to 6 epochs.
        let more =
            train(&TrainConfig { epochs: 6, ..config.clone() }, &train_set, Some(two.state.clone()), None).unwrap();
        let mse6 = evaluate(&config.spec, &more.state.params, &test_set, &PredictConfig::default()).unwrap();
        eprintln!("{} seed {seed}: test MSE {mse2:.4} after 2 epochs, {mse6:.4} after 6", strategy.name());
        assert!(mse2 < 0.2, "{} seed {seed}: test MSE {mse2} after 2 epochs (TensorFlow: ≈0.12)", strategy.name());
        assert!(mse6 < 0.05, "{} seed {seed}: test MSE {mse6} after 6 epochs", strategy.name());
        assert!(more.report.final_loss < two.report.final_loss);
        after_two.push(mse2);
    }
    let mean = after_two.iter().sum::<f32>() / after_two.len() as f32;
    assert!(mean < 0.16, "mean test MSE after 2 epochs {mean} (TensorFlow: ≈0.12)");
}
