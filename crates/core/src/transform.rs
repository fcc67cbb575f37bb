//! The [`Transform`] contract: a method turns a layer into a cheaper [`Block`]
//! and reports what it gained and what it cost in accuracy.

use crate::block::Block;
use crate::cost::Cost;
use crate::error::Result;
use crate::layer::Layer;
use crate::shape::ActShape;

/// A compression method applicable to one layer.
pub trait Transform {
    /// Name of the method, for reports.
    fn name(&self) -> &str;
    /// Replaces `layer` (which sees inputs of shape `input`) by a block with the
    /// same input and output shapes.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Unsupported`] from methods that do not apply to the
    /// layer's kind; the layer's shape error when it cannot take `input`;
    /// a typed error for parameters the layer does not allow (a rank above
    /// its dimensions, a bad codebook size, …). Examples are on the types
    /// that implement it (`Tucker2`, `Int8Quantize`, …) and on
    /// [`crate::Graph::apply_transform`].
    fn apply(&self, layer: &Layer, input: ActShape) -> Result<Compressed>;
}

/// The result of a transform: the replacement block and its report.
#[derive(Debug, Clone, PartialEq)]
pub struct Compressed {
    /// The block that replaces the layer.
    pub block: Block,
    /// What the replacement costs and how close it is.
    pub report: Report,
}

/// Costs before and after, and the weight-space error.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Method name.
    pub method: String,
    /// Input shape the costs are stated for.
    pub input: ActShape,
    /// Cost of the original layer.
    pub before: Cost,
    /// Cost of the replacement block.
    pub after: Cost,
    /// `‖W − Ŵ‖_F / ‖W‖_F` where the block has an equivalent dense kernel.
    pub weight_error: Option<f64>,
}

impl Report {
    /// Builds the report of replacing `layer` by `block` for input `input`;
    /// fails when the block does not produce the layer's output shape.
    pub fn new(
        method: impl Into<String>,
        layer: &Layer,
        block: &Block,
        input: ActShape,
        weight_error: Option<f64>,
    ) -> Result<Self> {
        let expected = layer.output_shape(input)?;
        let got = block.output_shape(input)?;
        if expected != got {
            return Err(crate::Error::shape(
                "replacement block output",
                expected,
                got,
            ));
        }
        Ok(Report {
            method: method.into(),
            input,
            before: layer.cost(input)?,
            after: block.cost(input)?,
            weight_error,
        })
    }

    /// `MACs before / MACs after`.
    pub fn mac_speedup(&self) -> f64 {
        ratio(self.before.macs, self.after.macs)
    }

    /// `params before / params after`.
    pub fn param_ratio(&self) -> f64 {
        ratio(self.before.params, self.after.params)
    }

    /// `weight bytes before / weight bytes after`.
    pub fn compression_ratio(&self) -> f64 {
        ratio(self.before.weight_bytes, self.after.weight_bytes)
    }

    /// Stored bits after, per parameter of the original layer.
    pub fn bits_per_weight(&self) -> f64 {
        8.0 * self.after.weight_bytes as f64 / self.before.params.max(1) as f64
    }
}

impl Compressed {
    /// Builds a [`Compressed`] with its report; see [`Report::new`].
    pub fn new(
        method: impl Into<String>,
        layer: &Layer,
        block: Block,
        input: ActShape,
        weight_error: Option<f64>,
    ) -> Result<Self> {
        let report = Report::new(method, layer, &block, input, weight_error)?;
        Ok(Compressed { block, report })
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::INFINITY
    } else {
        a as f64 / b as f64
    }
}
