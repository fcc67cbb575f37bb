//! # hasten-distill
//!
//! Teacher–student losses of section 7 of the survey *Speeding-up
//! convolutional neural networks* (Lebedev & Lempitsky), each returning its
//! value and its exact gradients so that any training loop can call it.
//!
//! | module | method | survey |
//! | --- | --- | --- |
//! | [`mod@softmax`] | stable softmax / log-softmax at temperature τ | eq. (19) |
//! | [`kd`] | distillation loss `H(y, p^S) + λ·H(p^T_τ, p^S_τ)` (Hinton et al. \[80\]) | eq. (20) |
//! | [`ensemble`] | averaged soft targets of several teachers (Bucila et al. \[78\], Zeng & Martinez \[79\]) | §7 |
//! | [`logit_matching`] | ½‖z_S − z_T‖² on zero-mean logits, the high-temperature limit (Li et al. \[81\]) | §7 |
//! | [`hint`] | FitNets hint loss `½‖u_T − r(u_S)‖²` with a linear / 1×1-conv regressor (Romero et al. \[82\]) | eq. (21) |
//! | [`attention`] | attention transfer (Zagoruyko & Komodakis), beyond the survey | — |
//! | [`relational`] | relational KD, distance- and angle-wise (Park et al.), beyond the survey | — |
//!
//! Every loss is *batch-mean* reduced (summed over classes, positions and
//! features, divided by the batch size), works in `f32` and `f64` (any
//! [`Real`]), validates its input and returns a typed
//! [`hasten_core::Error`] instead of panicking.
//!
//! ```
//! use hasten_distill::{distillation_loss, DistillationConfig};
//! use ndarray::array;
//!
//! let student = array![[1.0_f64, 0.5, -0.3], [0.2, 0.1, 2.0]];
//! let teacher = array![[2.0_f64, 0.0, -1.0], [0.0, 0.5, 3.0]];
//! let cfg = DistillationConfig::new(4.0, 0.9)?;
//! let out = distillation_loss(student.view(), teacher.view(), Some(&[0, 2]), &cfg)?;
//! assert!(out.loss.value.is_finite());
//! assert_eq!(out.loss.grad.dim(), (2, 3));
//! # Ok::<(), hasten_core::Error>(())
//! ```

pub mod attention;
pub mod ensemble;
pub mod hint;
pub mod kd;
pub mod logit_matching;
pub mod loss_grad;
pub mod real;
pub mod relational;
pub mod softmax;
mod validate;

#[cfg(test)]
mod grad_check;

pub use attention::{attention_map, attention_transfer_loss};
pub use ensemble::{ensemble_distillation_loss, ensemble_soft_targets};
pub use hint::{hint_loss_conv, hint_loss_linear, HintGrad, HintRegressor};
pub use kd::{
    distillation_loss, distillation_loss_with_targets, hard_label_loss, soft_target_loss,
    Distillation, DistillationConfig, SoftTargetDivergence,
};

pub use logit_matching::logit_matching_loss;
pub use loss_grad::LossGrad;
pub use real::Real;
pub use relational::{rkd_angle_loss, rkd_distance_loss, rkd_loss, RkdConfig};
pub use softmax::{log_softmax, softmax};
