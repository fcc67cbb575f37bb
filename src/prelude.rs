//! One import for the common path: build or import a network, compress it,
//! plan it and run it.
//!
//! ```
//! use hasten::prelude::*;
//!
//! // A small ResNet for 28×28 inputs, seeded He-initialised weights.
//! let mut graph = resnet8(&ModelConfig::mnist().with_seed(1))?;
//! let x = SeededRng::new(2).normal_array((2, 1, 28, 28), 1.0);
//! let dense = graph.reference_forward(&[&x])?.remove(0);
//!
//! // Tucker-2 (survey section 2) on every 3×3 convolution but the stem.
//! let filter = NodeFilter::kind("conv").except_first(1);
//! let report = graph.apply_transform(&Tucker2::new(RankSpec::Energy(0.9)), &filter)?;
//! assert!(report.after.macs < report.before.macs);
//!
//! // One fast plan for the compressed graph agrees with its reference forward.
//! let mut plan = Plan::for_graph(&graph, 2, PlanOptions::default())?;
//! let fast = plan.run(&x)?.to_owned();
//! let reference = graph.reference_forward(&[&x])?.remove(0);
//! assert!(relative_error(&reference, &fast) < 1e-4);
//! assert_eq!(fast.dim(), dense.dim());
//! # Ok::<(), Error>(())
//! ```
//!
//! Everything here is a re-export; the crates behind it
//! ([`crate::core`], [`crate::models`], [`crate::fastconv`], [`crate::onnx`],
//! [`crate::tensor_decomp`], [`crate::quant`], [`crate::prune`]) hold the rest.

pub use hasten_core::{
    relative_error, ActShape, Block, Conv4d, ConvLayer, ConvSpec, Cost, Error, Graph, GraphBuilder,
    Layer, LinearLayer, NodeFilter, Op, Operator, Padding, Report, Result, SeededRng, Transform,
};

pub use hasten_fastconv::{Plan, PlanOptions};

pub use hasten_models::{
    by_name, lenet5, mobilenet_v1, resnet18, resnet34, resnet8, vgg16, ModelConfig,
};

pub use hasten_onnx::weights::{load_weights, save_weights};
pub use hasten_onnx::{export_file, import_file, ImportOptions, OnnxError};

pub use hasten_tensor_decomp::{CpConv, RankSpec, SeparableFilters, TruncatedSvd, Tucker2};

pub use hasten_quant::{Binarize, Granularity, Int8Quantize, ScalarKMeans, Ternarize};

pub use hasten_prune::graph::{prune_graph, GraphPruneConfig};
pub use hasten_prune::{prune_filters, Slicing};
