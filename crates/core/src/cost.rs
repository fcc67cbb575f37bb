//! The cost model: multiply–accumulates, parameters and bytes of an op.
//!
//! Counts are per sample for a stated input shape. The survey's Table 1 gives
//! per-pixel counts; multiplying by the output area gives ours (see the tests).

use std::ops::{Add, AddAssign};

/// What one op (or a block) costs for one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cost {
    /// Multiply–accumulate operations (for binary/int ops: the same count of
    /// their narrow equivalents).
    pub macs: u64,
    /// Stored parameters (weights, biases, scales, codebook entries).
    pub params: u64,
    /// Bytes of weight storage as held in memory (packed formats count their
    /// real payload).
    pub weight_bytes: u64,
    /// Bytes of activations read and written (f32 input + output).
    pub activation_bytes: u64,
}

impl Cost {
    /// Cost of an f32 op with `macs`, `params` f32 parameters, reading
    /// `input_len` and writing `output_len` f32 values.
    pub fn f32_op(macs: u64, params: u64, input_len: usize, output_len: usize) -> Self {
        Cost {
            macs,
            params,
            weight_bytes: params * 4,
            activation_bytes: 4 * (input_len + output_len) as u64,
        }
    }
}

impl Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            macs: self.macs + o.macs,
            params: self.params + o.params,
            weight_bytes: self.weight_bytes + o.weight_bytes,
            activation_bytes: self.activation_bytes + o.activation_bytes,
        }
    }
}

impl AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        *self = *self + o;
    }
}

impl std::iter::Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(iter: I) -> Cost {
        iter.fold(Cost::default(), Add::add)
    }
}
