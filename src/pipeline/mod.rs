//! Compress a whole network by a recipe: the survey's methods applied
//! layer by layer to a [`Graph`](hasten_core::Graph) — alone or composed
//! (Tucker-2, then int8 on its factors) — with fine-tuning in the survey's
//! gradual or one-shot regime, and a report of what it gained and cost.
//!
//! - [`Recipe`]: ordered steps of a [`Selection`] and a [`Method`], fine-tuning
//!   and latency settings; TOML or JSON.
//! - [`compress`]: applies a recipe; [`CompressionReport`] says per node and
//!   in total what changed, with accuracy and measured latency.

mod asymmetric;
mod calibration;
mod channel_pruning;
mod compress;
mod error;
mod fine_tune;
mod latency;
mod method;
mod recipe;
mod report;
mod selection;

pub use calibration::{CalibrationSettings, RangeRule};
pub use compress::{compress, compress_calibrated};
pub use error::{PipelineError, Result};
pub use fine_tune::{fine_tune_lr_scales, first_untrainable_op, FineTuneData};
pub use latency::measure_latency;
pub use method::{
    BinaryKind, ChannelCriterion, CpForm, Granularity, Method, PruneTarget, Rank, RankRule,
};
pub use recipe::{Distill, FineTune, LatencySettings, Mode, Recipe, Step};
pub use report::{CompressionReport, Costs, Event, LatencyRow, NodeRow, StepReport};
pub use selection::Selection;
