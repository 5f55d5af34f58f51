//! Checkpoints in safetensors: the model's parameters, Adam's state and
//! where training stopped, written atomically.
//!
//! Tensors (all F32, little-endian, shapes as Keras stores them):
//! * `dense_{l}/kernel` (inputs × outputs) and `dense_{l}/bias` (outputs);
//! * `optimizer/m/dense_{l}/kernel`, `optimizer/m/dense_{l}/bias`, and the
//!   same under `optimizer/v/`: Adam's moments.
//!
//! Metadata (strings): `format` = `oxccl-engine`, `version` = `1`,
//! `layers` (`32,10,1`), `activation`, `adam_t` (updates done),
//! `epochs_done`, `steps_done`, and Adam's hyper-parameters for reference.
//! A file without the optimizer tensors (a model exported elsewhere) loads
//! with zero moments and `adam_t` 0.
//!
//! Atomic write: the bytes go to a temporary file in the same directory,
//! which is flushed to disk and then renamed over the destination, so a
//! reader sees either the old file or the complete new one.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::{tensor::TensorView, Dtype, SafeTensors};

use crate::backend::Activation;
use crate::error::{Error, Result};
use crate::model::{AdamConfig, ModelSpec};
use crate::train::TrainState;

const FORMAT: &str = "oxccl-engine";
const VERSION: &str = "1";

fn ck(path: &Path, what: impl Into<String>) -> Error {
    Error::Checkpoint { path: path.to_path_buf(), what: what.into() }
}

/// The bytes of a checkpoint of `state`.
pub fn encode(state: &TrainState, adam: &AdamConfig) -> Result<Vec<u8>> {
    let spec = &state.spec;
    let n = spec.num_params();
    if state.params.len() != n || state.m.len() != n || state.v.len() != n {
        return Err(Error::Shape {
            op: "checkpoint",
            detail: format!(
                "{} parameters and moments of {} and {} for a model of {n}",
                state.params.len(),
                state.m.len(),
                state.v.len()
            ),
        });
    }
    let mut tensors = Vec::new();
    for (prefix, values) in [("", &state.params), ("optimizer/m/", &state.m), ("optimizer/v/", &state.v)] {
        for (name, offset, shape) in spec.tensor_names() {
            let len: usize = shape.iter().product();
            let bytes: &[u8] = bytemuck::cast_slice(&values[offset..offset + len]);
            let view = TensorView::new(Dtype::F32, shape, bytes).map_err(|e| ck(Path::new("-"), e.to_string()))?;
            tensors.push((format!("{prefix}{name}"), view));
        }
    }
    let mut meta = HashMap::new();
    let mut put = |k: &str, v: String| meta.insert(k.to_string(), v);
    put("format", FORMAT.into());
    put("version", VERSION.into());
    put("layers", spec.layers_string());
    put("activation", spec.hidden.name().into());
    put("adam_t", state.t.to_string());
    put("epochs_done", state.epochs_done.to_string());
    put("steps_done", state.steps_done.to_string());
    put("adam_lr", adam.lr.to_string());
    put("adam_beta1", adam.beta1.to_string());
    put("adam_beta2", adam.beta2.to_string());
    put("adam_eps", adam.eps.to_string());
    put("adam_weight_decay", adam.weight_decay.to_string());
    // On a little-endian host the f32 bytes above are already the file's
    // little-endian encoding.
    #[cfg(target_endian = "big")]
    compile_error!("checkpoints assume a little-endian host");
    safetensors::serialize(tensors, Some(meta)).map_err(|e| ck(Path::new("-"), e.to_string()))
}

/// Writes a checkpoint atomically (temporary file, flush, rename).
pub fn save(path: &Path, state: &TrainState, adam: &AdamConfig) -> Result<()> {
    let bytes = encode(state, adam)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| ck(path, "not a file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp: PathBuf = dir.join(tmp_name);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable where the platform allows.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

fn f32s(path: &Path, view: &TensorView<'_>, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    if view.dtype() != Dtype::F32 {
        return Err(ck(path, format!("{name} is {:?}, expected F32", view.dtype())));
    }
    if view.shape() != shape {
        return Err(ck(path, format!("{name} has shape {:?}, the model needs {shape:?}", view.shape())));
    }
    Ok(view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

/// Decodes checkpoint bytes (`path` names the file in errors).
pub fn decode(path: &Path, bytes: &[u8]) -> Result<TrainState> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| ck(path, format!("not safetensors: {e}")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let get = |k: &str| meta.get(k).ok_or_else(|| ck(path, format!("metadata has no {k:?}")));
    if get("format")? != FORMAT {
        return Err(ck(path, format!("format {:?} is not {FORMAT:?}", get("format")?)));
    }
    if get("version")? != VERSION {
        return Err(ck(path, format!("version {:?} is not supported (expected {VERSION})", get("version")?)));
    }
    let spec = ModelSpec::parse(get("layers")?, get("activation")?)?;
    let count = |k: &str| -> Result<u64> {
        meta.get(k).map_or(Ok(0), |v| v.parse().map_err(|_| ck(path, format!("bad {k} {v:?}"))))
    };
    let st = SafeTensors::deserialize(bytes).map_err(|e| ck(path, e.to_string()))?;
    let n = spec.num_params();
    let mut state = TrainState {
        spec: spec.clone(),
        params: vec![0.0; n],
        m: vec![0.0; n],
        v: vec![0.0; n],
        t: count("adam_t")?,
        epochs_done: count("epochs_done")?,
        steps_done: count("steps_done")?,
    };
    let has_optimizer = st.names().iter().any(|name| name.starts_with("optimizer/"));
    let mut parts: Vec<(&str, &mut Vec<f32>)> = vec![("", &mut state.params)];
    if has_optimizer {
        parts.push(("optimizer/m/", &mut state.m));
        parts.push(("optimizer/v/", &mut state.v));
    } else {
        state.t = 0;
    }
    for (prefix, values) in parts {
        for (name, offset, shape) in spec.tensor_names() {
            let full = format!("{prefix}{name}");
            let view = st.tensor(&full).map_err(|_| ck(path, format!("missing tensor {full:?}")))?;
            let data = f32s(path, &view, &full, &shape)?;
            values[offset..offset + data.len()].copy_from_slice(&data);
        }
    }
    Ok(state)
}

/// Reads a checkpoint.
pub fn load(path: &Path) -> Result<TrainState> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode(path, &bytes)
}

/// The activation named in a checkpoint's spec (for messages).
pub fn describe(state: &TrainState) -> String {
    let act: Activation = state.spec.hidden;
    format!(
        "{} [{}], {} parameters, {} epochs / {} steps done",
        state.spec.layers_string(),
        act.name(),
        state.spec.num_params(),
        state.epochs_done,
        state.steps_done
    )
}
