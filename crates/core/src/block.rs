//! [`Block`]: a short chain of ops that replaces one layer.

use ndarray::Array4;

use crate::cost::Cost;
use crate::error::{Error, Result};
use crate::op::{input_shape_of, Op, Operator};
use crate::shape::ActShape;

/// A non-empty chain of ops applied in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    ops: Vec<Op>,
}

impl Block {
    /// A block of `ops`, applied first to last.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyBlock`] for an empty chain (shapes are checked later,
    /// against an input: [`Block::shapes`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use hasten_core::{ActShape, Block, Flatten, GlobalAvgPool};
    ///
    /// let block = Block::new(vec![GlobalAvgPool.into(), Flatten.into()])?;
    /// assert_eq!(block.output_shape(ActShape::new(16, 7, 7))?, ActShape::flat(16));
    /// assert!(Block::new(vec![]).is_err());
    /// # Ok::<(), hasten_core::Error>(())
    /// ```
    pub fn new(ops: Vec<Op>) -> Result<Self> {
        if ops.is_empty() {
            return Err(Error::EmptyBlock);
        }
        Ok(Block { ops })
    }

    /// A block of a single op.
    pub fn single(op: impl Into<Op>) -> Self {
        Block {
            ops: vec![op.into()],
        }
    }

    /// The ops, first to last.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Consumes the block, returning its ops.
    pub fn into_ops(self) -> Vec<Op> {
        self.ops
    }

    /// The input shape followed by every op's output shape; fails at the first
    /// op that cannot take its predecessor's output with [`Error::Op`], which
    /// names the op and keeps its own error as the `source()`.
    pub fn shapes(&self, input: ActShape) -> Result<Vec<ActShape>> {
        let mut shapes = Vec::with_capacity(self.ops.len() + 1);
        shapes.push(input);
        for (i, op) in self.ops.iter().enumerate() {
            let prev = *shapes.last().expect("non-empty");
            let next = op
                .output_shape(prev)
                .map_err(|e| chain_error(i, op, prev, e))?;
            shapes.push(next);
        }
        Ok(shapes)
    }

    /// Output shape for one sample of shape `input`.
    pub fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        Ok(*self.shapes(input)?.last().expect("non-empty"))
    }

    /// The cost of each op for an input of shape `input`.
    pub fn op_costs(&self, input: ActShape) -> Result<Vec<Cost>> {
        let shapes = self.shapes(input)?;
        self.ops
            .iter()
            .zip(shapes.iter())
            .map(|(op, &s)| op.cost(s))
            .collect()
    }

    /// Total cost for an input of shape `input`.
    pub fn cost(&self, input: ActShape) -> Result<Cost> {
        Cost::checked_sum(self.op_costs(input)?)
    }

    /// The reference forward: each op's reference semantics in turn.
    pub fn reference_forward(&self, input: &Array4<f32>) -> Result<Array4<f32>> {
        self.shapes(input_shape_of(input)?)?;
        let mut x = self.ops[0].reference_forward(input)?;
        for op in &self.ops[1..] {
            x = op.reference_forward(&x)?;
        }
        Ok(x)
    }
}

fn chain_error(index: usize, op: &Op, input: ActShape, cause: Error) -> Error {
    Error::Op {
        index,
        kind: op.kind(),
        input,
        cause: Box::new(cause),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConvLayer, ConvSpec, LinearLayer, Relu};
    use ndarray::{Array2, Array4};

    fn conv(t: usize, c: usize, k: usize, spec: ConvSpec) -> Op {
        ConvLayer::from_array(Array4::ones((t, c, k, k)), spec)
            .unwrap()
            .into()
    }

    #[test]
    fn shape_inference_through_chain() {
        let b = Block::new(vec![
            conv(8, 3, 3, ConvSpec::new().with_padding(1).with_stride(2)),
            Relu.into(),
            LinearLayer::new(Array2::ones((10, 8 * 4 * 4)), None)
                .unwrap()
                .into(),
        ])
        .unwrap();
        assert_eq!(
            b.output_shape(ActShape::new(3, 8, 8)).unwrap(),
            ActShape::flat(10)
        );
    }

    #[test]
    fn inconsistent_chain_is_rejected() {
        let b = Block::new(vec![
            conv(8, 3, 3, ConvSpec::new()),
            conv(4, 5, 1, ConvSpec::new()),
        ])
        .unwrap();
        let err = b.output_shape(ActShape::new(3, 8, 8)).unwrap_err();
        assert!(err.to_string().contains("op #1"), "{err}");
        assert!(Block::new(vec![]).is_err());
    }

    #[test]
    fn table1_two_component_and_cp_costs() {
        let (c, n, k, d, h) = (16usize, 24usize, 5usize, 3usize, 9usize);
        let area = (h * h) as u64;
        // Two-component (Jaderberg): d×1 C→K then 1×d K→N: K·d·(C+N) per pixel.
        let vert = ConvLayer::from_array(
            Array4::ones((k, c, d, 1)),
            ConvSpec::new().with_padding_sides(crate::Padding::symmetric(1, 0)),
        )
        .unwrap();
        let horiz = ConvLayer::from_array(
            Array4::ones((n, k, 1, d)),
            ConvSpec::new().with_padding_sides(crate::Padding::symmetric(0, 1)),
        )
        .unwrap();
        let two = Block::new(vec![vert.into(), horiz.into()]).unwrap();
        assert_eq!(
            two.cost(ActShape::new(c, h, h)).unwrap().macs,
            (k * d * (c + n)) as u64 * area
        );
        // CP (Fig. 1): 1×1 C→K, d×1 dw, 1×d dw, 1×1 K→N: K·(C + 2d + N) per pixel.
        let dw_v = ConvLayer::from_array(
            Array4::ones((k, 1, d, 1)),
            ConvSpec::new()
                .with_groups(k)
                .with_padding_sides(crate::Padding::symmetric(1, 0)),
        )
        .unwrap();
        let dw_h = ConvLayer::from_array(
            Array4::ones((k, 1, 1, d)),
            ConvSpec::new()
                .with_groups(k)
                .with_padding_sides(crate::Padding::symmetric(0, 1)),
        )
        .unwrap();
        let cp = Block::new(vec![
            conv(k, c, 1, ConvSpec::new()),
            dw_v.into(),
            dw_h.into(),
            conv(n, k, 1, ConvSpec::new()),
        ])
        .unwrap();
        assert_eq!(
            cp.cost(ActShape::new(c, h, h)).unwrap().macs,
            (k * (c + 2 * d + n)) as u64 * area
        );
    }
}
