//! The cost model: multiply–accumulates, parameters and bytes of an op.
//!
//! Counts are per sample for a stated input shape. The survey's Table 1 gives
//! per-pixel counts; multiplying by the output area gives ours (see the tests).

use std::ops::{Add, AddAssign};

use crate::error::{Error, Result};

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
    /// `input_len` and writing `output_len` f32 values; [`Error::Overflow`]
    /// when a byte count exceeds `u64`.
    pub fn f32_op(macs: u64, params: u64, input_len: usize, output_len: usize) -> Result<Self> {
        Ok(Cost {
            macs,
            params,
            weight_bytes: product("weight bytes", &[params, 4])?,
            activation_bytes: activation_bytes(input_len, output_len)?,
        })
    }

    /// The field-wise sum, or [`Error::Overflow`] naming the field that
    /// exceeds `u64`.
    pub fn checked_add(self, o: Cost) -> Result<Cost> {
        Ok(Cost {
            macs: sum("MACs", &[self.macs, o.macs])?,
            params: sum("parameters", &[self.params, o.params])?,
            weight_bytes: sum("weight bytes", &[self.weight_bytes, o.weight_bytes])?,
            activation_bytes: sum(
                "activation bytes",
                &[self.activation_bytes, o.activation_bytes],
            )?,
        })
    }

    /// The sum of `costs`, checked like [`Self::checked_add`].
    pub fn checked_sum(costs: impl IntoIterator<Item = Cost>) -> Result<Cost> {
        costs
            .into_iter()
            .try_fold(Cost::default(), |acc, c| acc.checked_add(c))
    }
}

/// The product of `factors` in `u64`, or [`Error::Overflow`] naming `what`.
pub fn product(what: &str, factors: &[u64]) -> Result<u64> {
    factors
        .iter()
        .try_fold(1u64, |acc, &f| acc.checked_mul(f))
        .ok_or_else(|| Error::overflow(format!("the {what} count")))
}

/// The sum of `terms` in `u64`, or [`Error::Overflow`] naming `what`.
pub fn sum(what: &str, terms: &[u64]) -> Result<u64> {
    terms
        .iter()
        .try_fold(0u64, |acc, &t| acc.checked_add(t))
        .ok_or_else(|| Error::overflow(format!("the {what} count")))
}

/// `4 · (input_len + output_len)`: the bytes of f32 activations read and
/// written, or [`Error::Overflow`].
pub fn activation_bytes(input_len: usize, output_len: usize) -> Result<u64> {
    let values = sum("activation", &[input_len as u64, output_len as u64])?;
    product("activation byte", &[values, 4])
}

/// Field-wise sum; like integer addition it overflows (a panic in debug
/// builds) past `u64` — [`Cost::checked_add`] reports that as an error.
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
