//! Physical removal: pruned slices leave smaller dense layers or a compact
//! format with its own kernel (survey section 6.1), never a mask that still
//! costs full time.

pub mod connection;
pub mod filter;
pub mod groupwise;
pub mod kernel_shape;
pub mod residual;
pub mod sparse;

pub use connection::{connection_to_grouped, detect_groups, ConnectionGroups};
pub use filter::{check_keep, prune_channels, prune_filters, zero_filters, Consumer, FilterPruned};
pub use groupwise::{groupwise_keep, groupwise_prune, GroupwisePrune};
pub use kernel_shape::{trim_kernel, trim_zero_taps, KernelTrim};
pub use residual::{ResidualBlock, ResidualNet};
pub use sparse::{sparse_prune, MagnitudeSparse};
