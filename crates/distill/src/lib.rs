//! # hasten-distill
//!
//! Teacher–student losses of section 7 of the survey, each returning its value
//! and exact gradients.
