//! # hasten-train
//!
//! Training and fine-tuning of Hasten graphs — the "fine-tune after each
//! transformation" loop shared by the survey's decomposition, quantization
//! and pruning methods.
//!
//! - [`ParamStore`]: a graph's parameters and buffers by `state_dict` name,
//!   in f32, written back with [`ParamStore::apply_to`];
//! - [`optim`]: SGD (momentum, Nesterov, weight decay) and Adam / AdamW, and
//!   [`optim::clip_grad_norm`];
//! - [`schedule`]: step, cosine, one-cycle and linear warm-up learning rates;
//! - [`kernels`]: f32 convolution and linear forward/backward through
//!   im2col and GEMM, batch-parallel and deterministic;
//! - [`data`]: the IDX format of MNIST / Fashion-MNIST (raw or gzip) and npy,
//!   a [`data::Dataset`] trait, a seeded shuffling [`data::Loader`] and
//!   augmentations.
//!
//! - [`TrainTape`]: the f32 training forward and backward of a whole graph
//!   (the fast kernels where the cost lies, checked against the f64
//!   reference of `hasten_core::grad`, which it falls back to for rare ops);
//! - [`FakeQuant`]: quantization-aware training (survey eq. (5)) — the
//!   forward with quantized weights, straight-through gradients to the
//!   full-precision ones, for any [`WeightQuantizer`];
//! - [`LrScales`]: per-parameter learning-rate multipliers (decomposed
//!   factors at a smaller rate, quantizer step sizes scaled as in LSQ);
//! - [`Trainer`]: seeded epochs with an optimizer and a schedule, per-epoch
//!   evaluation through a `hasten_fastconv` plan, early stopping, on
//!   cross-entropy or any [`Loss`] (logits and tapped intermediate values);
//! - [`recalibrate_batch_norm`]: batch-norm running statistics re-estimated
//!   from data after a transform, weights untouched;
//! - [`Checkpoint`]: a run's parameters, optimizer state and progress as
//!   safetensors, resumed bit-identically.
//!
//! ```
//! use hasten_train::optim::{Optimizer, Sgd};
//! use hasten_train::{Grads, ParamStore};
//! use ndarray::arr1;
//!
//! // One SGD step on f(θ) = θ²/2 from θ = 1: θ ← 1 − 0.1·1.
//! let mut store = ParamStore::new();
//! store.insert("w", arr1(&[1.0f32]).into_dyn(), true)?;
//! let mut grads = Grads::new();
//! grads.insert("w".into(), arr1(&[1.0f32]).into_dyn());
//! let mut sgd = Sgd::new(0.0)?;
//! sgd.step(&mut store, &grads, 0.1)?;
//! assert_eq!(store.get("w").unwrap()[[0]], 0.9);
//! # Ok::<(), hasten_train::TrainError>(())
//! ```

mod bn_recalibrate;
pub mod checkpoint;
mod compressed;
pub mod data;
mod error;
pub mod fake_quant;
pub mod kernels;
pub mod loss;
mod lr_scale;
pub mod optim;
mod params;
pub mod schedule;
mod split;
pub mod tape;
pub mod trainer;

pub use bn_recalibrate::recalibrate_batch_norm;
pub use checkpoint::Checkpoint;
pub use error::{Result, TrainError};
pub use fake_quant::{clipped_straight_through, FakeQuant, WeightQuantizer};
pub use loss::{CrossEntropy, Loss, LossInput, LossOutput};
pub use lr_scale::LrScales;
pub use params::{Grads, ParamStore};
pub use tape::{TapeGrads, TrainTape};
pub use trainer::{evaluate, top1_hits, BatchGrads, EpochStats, TrainConfig, Trainer};
