//! # hasten-tensor-decomp
//!
//! Tensor decompositions of section 2 of the survey (and the FC-layer SVD of
//! section 5, eq. (2)): each method is a [`hasten_core::Transform`] that
//! replaces a layer by a block of cheaper convolutions.
