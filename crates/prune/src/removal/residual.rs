//! Residual-block removal (survey section 6.1, last structure): in a residual
//! architecture a whole branch `x ↦ x + F(x)` can be dropped, leaving the
//! identity. Blocks are ranked by the energy their branch adds,
//! `(1/N) Σ ‖F(x)‖²` on calibration data at the block's own input (eq. (15)
//! applied to the branch output).

use hasten_core::{ActShape, Block, Error, Result};
use ndarray::Array4;

use crate::select::{keep_count, top_k};

/// `y = x + F(x)` with `F` a shape-preserving block.
#[derive(Debug, Clone, PartialEq)]
pub struct ResidualBlock {
    branch: Block,
}

impl ResidualBlock {
    /// Wraps `branch`; it must map `input` to the same shape.
    pub fn new(branch: Block, input: ActShape) -> Result<Self> {
        let out = branch.output_shape(input)?;
        if out != input {
            return Err(Error::shape(
                "residual branch output (= its input)",
                input,
                out,
            ));
        }
        Ok(ResidualBlock { branch })
    }

    /// The branch `F`.
    pub fn branch(&self) -> &Block {
        &self.branch
    }

    /// `x + F(x)`.
    pub fn forward(&self, x: &Array4<f32>) -> Result<Array4<f32>> {
        let f = self.branch.reference_forward(x)?;
        if f.shape() != x.shape() {
            return Err(Error::shape(
                "residual branch output",
                format!("{:?}", x.shape()),
                format!("{:?}", f.shape()),
            ));
        }
        Ok(x + &f)
    }
}

/// A chain of residual blocks on a fixed activation shape.
///
/// Superseded for whole networks by [`crate::graph`], which prunes channels of
/// any [`hasten_core::Graph`] with its residual adds; kept for block-level
/// experiments.
#[derive(Debug, Clone, PartialEq)]
pub struct ResidualNet {
    shape: ActShape,
    blocks: Vec<ResidualBlock>,
}

impl ResidualNet {
    /// A network of `blocks` (at least one), each checked against `shape`.
    pub fn new(shape: ActShape, blocks: Vec<Block>) -> Result<Self> {
        if blocks.is_empty() {
            return Err(Error::EmptyDimension {
                what: "residual network".into(),
                shape: "0 blocks".into(),
            });
        }
        let blocks = blocks
            .into_iter()
            .map(|b| ResidualBlock::new(b, shape))
            .collect::<Result<_>>()?;
        Ok(ResidualNet { shape, blocks })
    }

    /// The blocks, first to last.
    pub fn blocks(&self) -> &[ResidualBlock] {
        &self.blocks
    }

    /// The activation shape every block keeps.
    pub fn shape(&self) -> ActShape {
        self.shape
    }

    /// Applies every block in turn.
    pub fn forward(&self, x: &Array4<f32>) -> Result<Array4<f32>> {
        let mut y = x.clone();
        for b in &self.blocks {
            y = b.forward(&y)?;
        }
        Ok(y)
    }

    /// Per block: `(1/N) Σ ‖F(x_b)‖²`, `x_b` the block's input on `x`.
    pub fn branch_energy(&self, x: &Array4<f32>) -> Result<Vec<f64>> {
        let n = x.shape()[0].max(1) as f64;
        let mut y = x.clone();
        let mut scores = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            let f = b.branch.reference_forward(&y)?;
            scores.push(f.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / n);
            y = &y + &f;
        }
        Ok(scores)
    }

    /// Keeps only the listed blocks (ascending, non-empty); the others become identity.
    pub fn keep_blocks(&self, keep: &[usize]) -> Result<ResidualNet> {
        crate::removal::check_keep(keep, self.blocks.len())?;
        Ok(ResidualNet {
            shape: self.shape,
            blocks: keep.iter().map(|&k| self.blocks[k].clone()).collect(),
        })
    }

    /// Removes `fraction ∈ [0, 1)` of the blocks with the lowest `scores`;
    /// returns the new network and the removed block indices.
    pub fn prune(&self, scores: &[f64], fraction: f64) -> Result<(ResidualNet, Vec<usize>)> {
        if scores.len() != self.blocks.len() {
            return Err(Error::shape(
                "block scores",
                self.blocks.len(),
                scores.len(),
            ));
        }
        let keep = top_k(scores, keep_count(scores.len(), fraction)?)?;
        let removed = (0..self.blocks.len())
            .filter(|k| !keep.contains(k))
            .collect();
        Ok((self.keep_blocks(&keep)?, removed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::{ConvLayer, ConvSpec, Relu, SeededRng};

    fn branch(rng: &mut SeededRng, scale: f64) -> Block {
        let c1 = ConvLayer::from_array(
            rng.normal_array((4, 4, 3, 3), 0.2),
            ConvSpec::new().with_padding(1),
        )
        .unwrap();
        let c2 = ConvLayer::from_array(
            rng.normal_array((4, 4, 3, 3), 0.2 * scale),
            ConvSpec::new().with_padding(1),
        )
        .unwrap();
        Block::new(vec![c1.into(), Relu.into(), c2.into()]).unwrap()
    }

    #[test]
    fn removes_the_planted_weak_branch() {
        let mut rng = SeededRng::new(5);
        let shape = ActShape::new(4, 6, 6);
        let blocks = vec![
            branch(&mut rng, 1.0),
            branch(&mut rng, 1e-4),
            branch(&mut rng, 1.0),
        ];
        let net = ResidualNet::new(shape, blocks).unwrap();
        let x = rng.normal_array((2, 4, 6, 6), 1.0);
        let scores = net.branch_energy(&x).unwrap();
        let (small, removed) = net.prune(&scores, 0.34).unwrap();
        assert_eq!(removed, vec![1]);
        assert_eq!(small.blocks().len(), 2);
        let (a, b) = (net.forward(&x).unwrap(), small.forward(&x).unwrap());
        let err = a
            .iter()
            .zip(b.iter())
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f32::max);
        assert!(err < 1e-3, "{err}");
        assert!(net.prune(&scores, 1.0).is_err());
        assert!(net.keep_blocks(&[]).is_err());
        let odd = Block::single(
            ConvLayer::from_array(rng.normal_array((3, 4, 1, 1), 1.0), ConvSpec::new()).unwrap(),
        );
        assert!(ResidualNet::new(shape, vec![odd]).is_err());
    }
}
