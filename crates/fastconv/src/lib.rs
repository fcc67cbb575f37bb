//! # hasten-fastconv
//!
//! Fast CPU execution of the Hasten op IR.
pub mod lowbit;
