//! # hasten-prune
//!
//! Pruning (section 6 of the survey *Speeding-up convolutional neural
//! networks*, Lebedev & Lempitsky): the three design choices of the pruning
//! pipeline, each ending in a real speed-up rather than a mask.
//!
//! - **Sparsity structure** (§6.1, [`slice::Slicing`]): filters and channels
//!   ([`removal::prune_filters`] → smaller dense producer, batch-norm and
//!   consumer), kernel shape ([`removal::KernelTrim`] → smaller kernel with
//!   adjusted padding), connections ([`removal::ConnectionGroups`] → grouped
//!   convolution), group-wise taps ([`removal::GroupwisePrune`] →
//!   [`hasten_core::GroupwiseConv`]), single weights
//!   ([`removal::MagnitudeSparse`] → CSR [`hasten_core::SparseConv`]),
//!   residual branches ([`removal::ResidualNet`]) and perforation
//!   ([`perforation::Perforation`] → [`hasten_core::PerforatedConv`]).
//! - **Criteria** (§6.2, [`criteria`]): magnitude (eq. (14)), activation
//!   energy (eq. (15)), APoZ \[73\], OBD (eq. (16)), first-order Taylor
//!   (eq. (17)), ThiNet \[74\], random.
//! - **Regularizers** (§6.3, [`regularizer`]): L1, group lasso `L2,1`
//!   (eq. (18)), network slimming.
//!
//! [`graph`] finds the channels a whole [`hasten_core::Graph`] ties together
//! (batch norms, residual adds, concatenations, depthwise convolutions,
//! flatten → linear), scores and removes them together, and prunes a graph to
//! a target fraction of channels or MACs.
//!
//! [`driver`] prunes a plain network to a target fraction of channels, MACs or
//! parameters, one-shot or iteratively, per layer or globally.

pub mod criteria;
pub mod driver;
pub mod graph;
pub mod perforation;
pub mod regularizer;
pub mod removal;
pub mod select;
pub mod slice;

pub use driver::{
    prune_network, ChainLayer, ChainNet, PruneConfig, PruneReport, Schedule, Scope, Target,
};
pub use removal::{prune_channels, prune_filters, Consumer, FilterPruned};
pub use slice::Slicing;

#[cfg(test)]
mod no_panic_tests;
