//! The pretrained EfficientNet-Lite0 of `shared/models/efficientnet_lite0`
//! and its 20 preprocessed photos, shared by the results example and the
//! EfficientNet tests.

use std::path::{Path, PathBuf};

use hasten::core::graph::NodeOp;
use hasten::core::ndarray::{Array2, Array4, Ix2, Ix4};
use hasten::core::{Graph, Op};
use hasten::onnx::weights::read_npy;

/// The model's folder: `HASTEN_MODELS_DIR/efficientnet_lite0`, the
/// variable defaulting to `<workspace>/../shared/models`.
pub fn model_dir() -> PathBuf {
    std::env::var_os("HASTEN_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/models"))
        .join("efficientnet_lite0")
}

/// The 20 preprocessed photos (`[20, 3, 224, 224]`), the original
/// framework's logits (`[20, 1000]`) and the labels.
pub struct Photos {
    /// `inputs.npy`.
    pub inputs: Array4<f32>,
    /// `logits.npy`.
    pub logits: Array2<f32>,
    /// `labels.npy`, ImageNet class indices.
    pub labels: Vec<usize>,
}

impl Photos {
    /// Reads the three arrays from `dir`.
    pub fn load(dir: &Path) -> Result<Photos, Box<dyn std::error::Error>> {
        let read = |name: &str| -> Result<_, Box<dyn std::error::Error>> {
            Ok(read_npy(&std::fs::read(dir.join(name))?)?)
        };
        Ok(Photos {
            inputs: read("inputs.npy")?.into_dimensionality::<Ix4>()?,
            logits: read("logits.npy")?.into_dimensionality::<Ix2>()?,
            labels: read("labels.npy")?.iter().map(|&l| l as usize).collect(),
        })
    }

    /// The number of photos.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
}

/// The grouped convolutions of `graph` (in EfficientNet-Lite0: the
/// depthwise ones) and its other convolution and linear layers, by name.
pub fn layers(graph: &Graph) -> (Vec<String>, Vec<String>) {
    let (mut depthwise, mut other) = (Vec::new(), Vec::new());
    for node in graph.nodes() {
        match node.op() {
            NodeOp::Op(Op::Conv(c)) if c.spec().groups > 1 => {
                depthwise.push(node.name().to_string())
            }
            NodeOp::Op(Op::Conv(_) | Op::Linear(_)) => other.push(node.name().to_string()),
            _ => {}
        }
    }
    (depthwise, other)
}
