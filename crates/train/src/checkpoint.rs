//! Training checkpoints in the safetensors format: a [`Trainer`](crate::Trainer)'s
//! parameters, buffers and optimizer state, and how far it got, so that a
//! run can stop and resume bit-identically.
//!
//! Tensors are f32 and named `param.NAME` (trainable parameters),
//! `buffer.NAME` (batch-norm running statistics) and `optim.KEY` (the
//! optimizer's [`Optimizer::state`](crate::optim::Optimizer::state)); the
//! header's metadata holds `format` = [`FORMAT`], `epoch` (epochs
//! completed) and `step` (optimizer steps taken).

use std::collections::HashMap;
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Result, TrainError};
use crate::params::{Grads, ParamStore};

/// The `format` metadata value of a checkpoint.
pub const FORMAT: &str = "hasten-train checkpoint v1";

/// What a checkpoint holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Parameters and buffers.
    pub store: ParamStore,
    /// The optimizer's state.
    pub optimizer: Grads,
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps taken.
    pub step: usize,
}

fn format_error(path: &Path, reason: impl ToString) -> TrainError {
    TrainError::Format {
        format: "safetensors",
        what: path.display().to_string(),
        reason: reason.to_string(),
    }
}

impl Checkpoint {
    /// The checkpoint as safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut named: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        let mut add = |name: String, v: &ArrayD<f32>| {
            let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            named.push((name, v.shape().to_vec(), bytes));
        };
        for (name, v, trainable) in self.store.iter() {
            let kind = if trainable { "param" } else { "buffer" };
            add(format!("{kind}.{name}"), v);
        }
        for (key, v) in &self.optimizer {
            add(format!("optim.{key}"), v);
        }
        let views = named
            .iter()
            .map(|(n, shape, data)| {
                TensorView::new(Dtype::F32, shape.clone(), data)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| format_error(Path::new(n), e))
            })
            .collect::<Result<Vec<_>>>()?;
        let meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("epoch".to_string(), self.epoch.to_string()),
            ("step".to_string(), self.step.to_string()),
        ]);
        safetensors::serialize(views, Some(meta)).map_err(|e| format_error(Path::new("-"), e))
    }

    /// Reads a checkpoint from safetensors bytes (`what` names the source in
    /// errors). Errors: malformed bytes, another format, a tensor that is
    /// not f32 or not named `param.`, `buffer.` or `optim.`, a non-finite
    /// value, missing or malformed `epoch` / `step`.
    pub fn from_bytes(bytes: &[u8], what: &Path) -> Result<Self> {
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| format_error(what, e))?;
        let info = meta.metadata().clone().unwrap_or_default();
        if info.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(format_error(
                what,
                format!("format {:?}, expected {FORMAT:?}", info.get("format")),
            ));
        }
        let number = |key: &str| -> Result<usize> {
            info.get(key).and_then(|v| v.parse().ok()).ok_or_else(|| {
                format_error(what, format!("metadata `{key}` missing or not a count"))
            })
        };
        let (epoch, step) = (number("epoch")?, number("step")?);
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| format_error(what, e))?;
        let mut store = ParamStore::new();
        let mut optimizer = Grads::new();
        let mut names: Vec<String> = tensors.names().into_iter().map(str::to_string).collect();
        names.sort();
        for name in names {
            let t = tensors.tensor(&name).map_err(|e| format_error(what, e))?;
            if t.dtype() != Dtype::F32 {
                return Err(format_error(
                    what,
                    format!("`{name}` is {:?}, not F32", t.dtype()),
                ));
            }
            let values: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let array = ArrayD::from_shape_vec(IxDyn(t.shape()), values)
                .map_err(|e| format_error(what, format!("`{name}`: {e}")))?;
            if let Some(p) = name.strip_prefix("param.") {
                store.insert(p, array, true)?;
            } else if let Some(b) = name.strip_prefix("buffer.") {
                store.insert(b, array, false)?;
            } else if let Some(k) = name.strip_prefix("optim.") {
                if array.iter().any(|v| !v.is_finite()) {
                    return Err(TrainError::param(&name, "holds a non-finite value"));
                }
                optimizer.insert(k.to_string(), array);
            } else {
                return Err(format_error(
                    what,
                    format!("tensor `{name}` is neither `param.`, `buffer.` nor `optim.`"),
                ));
            }
        }
        Ok(Checkpoint {
            store,
            optimizer,
            epoch,
            step,
        })
    }

    /// Writes the checkpoint to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_bytes()?).map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads a checkpoint from `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::arr1;

    fn sample() -> Checkpoint {
        let mut store = ParamStore::new();
        store
            .insert(
                "fc.weight",
                ArrayD::from_shape_vec(vec![2, 3], vec![1.0, -2.0, 0.5, 3.0, 0.0, -0.25]).unwrap(),
                true,
            )
            .unwrap();
        store
            .insert("bn.running_var", arr1(&[0.5f32, 2.0]).into_dyn(), false)
            .unwrap();
        let mut optimizer = Grads::new();
        optimizer.insert("step".into(), ndarray::arr0(7.0f32).into_dyn());
        optimizer.insert("fc.weight.exp_avg".into(), ArrayD::zeros(vec![2, 3]));
        Checkpoint {
            store,
            optimizer,
            epoch: 3,
            step: 7,
        }
    }

    #[test]
    fn round_trip_is_exact() {
        let c = sample();
        let back = Checkpoint::from_bytes(&c.to_bytes().unwrap(), Path::new("mem")).unwrap();
        assert_eq!(back, c);
        assert!(back.store.is_trainable("fc.weight"));
        assert!(!back.store.is_trainable("bn.running_var"));
    }

    #[test]
    fn foreign_or_broken_files_are_errors() {
        let c = sample();
        let bytes = c.to_bytes().unwrap();
        assert!(Checkpoint::from_bytes(&bytes[..bytes.len() - 1], Path::new("cut")).is_err());
        assert!(Checkpoint::from_bytes(b"not safetensors", Path::new("junk")).is_err());
        // A plain safetensors file without the checkpoint metadata.
        let data = [0u8; 4];
        let v = TensorView::new(Dtype::F32, vec![1], &data).unwrap();
        let plain = safetensors::serialize([("param.w".to_string(), v)], None).unwrap();
        assert!(Checkpoint::from_bytes(&plain, Path::new("plain")).is_err());
        // Right metadata, unknown tensor prefix.
        let meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("epoch".to_string(), "1".to_string()),
            ("step".to_string(), "2".to_string()),
        ]);
        let v = TensorView::new(Dtype::F32, vec![1], &data).unwrap();
        let odd = safetensors::serialize([("w".to_string(), v)], Some(meta)).unwrap();
        assert!(Checkpoint::from_bytes(&odd, Path::new("odd")).is_err());
        assert!(Checkpoint::load(Path::new("/nonexistent/checkpoint.safetensors")).is_err());
    }
}
