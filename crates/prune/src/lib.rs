//! # hasten-prune
//!
//! Pruning methods of section 6 of the survey: structured slicers, criteria,
//! regularizers and physical removal that yields smaller dense layers.
