//! Checkpoints: a bit-exact round trip of parameters and Adam state through
//! a safetensors file, an atomic write, clear errors for bad files, and a
//! resumed run that equals an uninterrupted one bit for bit.

use std::path::PathBuf;

use oxccl_engine::checkpoint;
use oxccl_engine::data::Synthetic;
use oxccl_engine::model::{AdamConfig, ModelSpec};
use oxccl_engine::train::{train, Strategy, TrainConfig, TrainState};

/// A fresh directory under the system's temporary directory.
fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("oxccl-engine-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn round_trip_is_bit_exact() {
    let dir = temp_dir("roundtrip");
    let d = Synthetic::default().generate(500, "train").unwrap();
    let config = TrainConfig { batch: 32, epochs: 1, ..Default::default() };
    let mut state = train(&config, &d, None, None).unwrap().state;
    // Awkward values survive too: subnormals, negative zero, extremes.
    state.params[0] = f32::from_bits(1);
    state.params[1] = -0.0;
    state.m[2] = f32::MAX;
    state.v[3] = f32::MIN_POSITIVE;
    let path = dir.join("model.safetensors");
    checkpoint::save(&path, &state, &AdamConfig::default()).unwrap();
    let back = checkpoint::load(&path).unwrap();
    assert_eq!(bits(&back.params), bits(&state.params));
    assert_eq!(bits(&back.m), bits(&state.m));
    assert_eq!(bits(&back.v), bits(&state.v));
    assert_eq!((back.t, back.epochs_done, back.steps_done, &back.spec), (state.t, 1, 16, &state.spec));
    // Only the file itself is left: the temporary one was renamed.
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("model.safetensors")]);
    // Overwriting works and replaces the contents.
    let mut other = state.clone();
    other.params[5] += 1.0;
    checkpoint::save(&path, &other, &AdamConfig::default()).unwrap();
    assert_eq!(checkpoint::load(&path).unwrap().params[5], other.params[5]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resumed_training_equals_uninterrupted() {
    let dir = temp_dir("resume");
    let d = Synthetic::default().generate(600, "train").unwrap();
    for strategy in
        [Strategy::Mirrored { replicas: 2 }, Strategy::ParameterServer { workers: 2, servers: 2, synchronous: true }]
    {
        let config = TrainConfig { batch: 50, epochs: 3, strategy, ..Default::default() };
        let straight = train(&config, &d, None, None).unwrap();
        let first = train(&TrainConfig { epochs: 1, ..config.clone() }, &d, None, None).unwrap();
        let path = dir.join("ckpt.safetensors");
        checkpoint::save(&path, &first.state, &config.adam).unwrap();
        let resumed = train(&config, &d, Some(checkpoint::load(&path).unwrap()), None).unwrap();
        assert_eq!(bits(&resumed.state.params), bits(&straight.state.params), "{}", strategy.name());
        assert_eq!(bits(&resumed.state.v), bits(&straight.state.v));
        assert_eq!(resumed.state.t, straight.state.t);
        assert_eq!(resumed.report.epochs, 2);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_checkpoints_are_clear_errors() {
    let dir = temp_dir("bad");
    let p = dir.join("x.safetensors");
    std::fs::write(&p, b"not a checkpoint").unwrap();
    assert!(checkpoint::load(&p).unwrap_err().to_string().contains("not safetensors"));
    assert!(checkpoint::load(&dir.join("missing")).is_err());
    // A model file without optimizer state loads with zero moments.
    let spec = ModelSpec::default();
    let state = TrainState::fresh(&spec, 1);
    let mut bytes = checkpoint::encode(&state, &AdamConfig::default()).unwrap();
    assert_eq!(checkpoint::decode(&p, &bytes).unwrap(), state);
    // Corrupt the header's layer spec: shapes no longer match.
    let at = bytes.windows(9).position(|w| w == b"\"32,10,1\"").unwrap();
    bytes[at..at + 9].copy_from_slice(b"\"32,11,1\"");
    let err = checkpoint::decode(&p, &bytes).unwrap_err().to_string();
    assert!(err.contains("shape"), "{err}");
    // Resuming with a different model is refused.
    let d = Synthetic::default().generate(10, "train").unwrap();
    let other = TrainConfig { spec: ModelSpec::parse("32,4,1", "relu").unwrap(), ..Default::default() };
    assert!(train(&other, &d, Some(state), None).unwrap_err().to_string().contains("checkpoint's model"));
    std::fs::remove_dir_all(&dir).unwrap();
}
