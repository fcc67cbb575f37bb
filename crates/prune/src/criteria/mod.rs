//! Pruning criteria `Θ` (survey section 6.2, after Molchanov et al. \[71\]).
//!
//! Every criterion returns one importance score per slice or channel,
//! **higher = more important**; the pruner removes the lowest. Data-driven
//! criteria take activations (NCHW, one channel per prunable unit) and
//! gradients as arrays computed by the caller.

pub mod activation;
pub mod apoz;
pub mod magnitude;
pub mod obd;
pub mod random;
pub mod taylor;
pub mod thinet;

pub use activation::activation_energy;
pub use apoz::{apoz_scores, average_percentage_of_zeros};
pub use magnitude::{magnitude, Norm};
pub use obd::obd;
pub use random::random_scores;
pub use taylor::taylor;
pub use thinet::{
    thinet_contributions, thinet_prune, thinet_scales, thinet_select, ThinetSelection,
};

use hasten_core::{Error, Result};
use ndarray::Array4;

/// Checks that two NCHW arrays (e.g. activations and their gradients) agree in shape.
pub(crate) fn same_shape(what: &str, a: &Array4<f32>, b: &Array4<f32>) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::shape(
            what,
            format!("{:?}", a.shape()),
            format!("{:?}", b.shape()),
        ));
    }
    Ok(())
}

/// Checks that an NCHW activation array is non-empty and finite.
pub(crate) fn check_acts(what: &str, a: &Array4<f32>) -> Result<()> {
    hasten_core::error::ensure_nonempty(what, a.shape())?;
    hasten_core::error::ensure_finite(what, a.iter())
}
