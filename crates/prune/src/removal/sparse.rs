//! Unstructured magnitude pruning (survey section 6.1, eq. (14); Han et al.
//! \[72\]) into CSR: the smallest `|w|` are removed and the layer becomes a
//! [`SparseConv`] or [`SparseLinear`] that multiplies only the rest. The
//! survey notes this pays off only below ≈ 10 % density.

use hasten_core::{
    ActShape, Block, Compressed, Csr, Error, Layer, Op, Result, SparseConv, SparseLinear, Transform,
};
use ndarray::{Array2, ArrayView2};

use crate::select::{keep_count, top_k};

fn keep_largest(m: ArrayView2<f32>, fraction: f64) -> Result<(Csr, Array2<f32>)> {
    let scores: Vec<f64> = m.iter().map(|&v| f64::from(v).abs()).collect();
    let keep = top_k(&scores, keep_count(scores.len(), fraction)?)?;
    let mut pruned = Array2::<f32>::zeros(m.raw_dim());
    let cols = m.ncols();
    for k in keep {
        pruned[[k / cols, k % cols]] = m[[k / cols, k % cols]];
    }
    Ok((Csr::from_dense(pruned.view())?, pruned))
}

/// Removes `fraction ∈ [0, 1)` of the weights by magnitude; returns the CSR
/// op and the relative weight error.
pub fn sparse_prune(layer: &Layer, fraction: f64) -> Result<(Op, f64)> {
    let rel = |orig: ArrayView2<f32>, pruned: &Array2<f32>| {
        let (mut d, mut n) = (0.0f64, 0.0f64);
        for (&a, &b) in orig.iter().zip(pruned.iter()) {
            d += (f64::from(a) - f64::from(b)).powi(2);
            n += f64::from(a).powi(2);
        }
        if n > 0.0 {
            (d / n).sqrt()
        } else {
            d.sqrt()
        }
    };
    match layer {
        Layer::Conv(c) => {
            if c.spec().groups != 1 {
                return Err(Error::unsupported(
                    "CSR pruning",
                    format!("{} groups", c.spec().groups),
                ));
            }
            let [_, ch, kh, kw] = c.weight().dims();
            let (csr, pruned) = keep_largest(c.weight().filter_matrix(), fraction)?;
            let err = rel(c.weight().filter_matrix(), &pruned);
            Ok((
                SparseConv::new(csr, ch, (kh, kw), c.bias().cloned(), *c.spec())?.into(),
                err,
            ))
        }
        Layer::Linear(l) => {
            let (csr, pruned) = keep_largest(l.weight().view(), fraction)?;
            let err = rel(l.weight().view(), &pruned);
            Ok((SparseLinear::new(csr, l.bias().cloned())?.into(), err))
        }
    }
}

/// Transform: unstructured magnitude pruning to CSR.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MagnitudeSparse {
    /// Fraction of weights removed, in `[0, 1)`.
    pub fraction: f64,
}

impl Transform for MagnitudeSparse {
    fn name(&self) -> &str {
        "unstructured CSR"
    }

    fn apply(&self, layer: &Layer, input: ActShape) -> Result<Compressed> {
        let (op, err) = sparse_prune(layer, self.fraction)?;
        Compressed::new(self.name(), layer, Block::single(op), input, Some(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::{ConvLayer, ConvSpec, LinearLayer, Operator, SeededRng};

    #[test]
    fn csr_keeps_the_largest_and_matches_zeroed_dense() {
        let mut rng = SeededRng::new(14);
        let layer = ConvLayer::from_array(
            rng.normal_array((8, 4, 3, 3), 1.0),
            ConvSpec::new().with_padding(1),
        )
        .unwrap();
        let c = MagnitudeSparse { fraction: 0.75 }
            .apply(&Layer::Conv(layer.clone()), ActShape::new(4, 6, 6))
            .unwrap();
        let Op::SparseConv(sp) = &c.block.ops()[0] else {
            panic!("not CSR")
        };
        assert_eq!(sp.filters().nnz(), 72);
        let thr = sp
            .filters()
            .values()
            .iter()
            .map(|v| v.abs())
            .fold(f32::INFINITY, f32::min);
        let dropped_max = layer
            .weight()
            .array()
            .iter()
            .map(|v| v.abs())
            .filter(|&v| v < thr)
            .fold(0.0, f32::max);
        assert!(dropped_max <= thr);
        let x = rng.normal_array((1, 4, 6, 6), 1.0);
        let dense = sp.to_dense().unwrap();
        let (a, b) = (
            dense.reference_forward(&x).unwrap(),
            sp.reference_forward(&x).unwrap(),
        );
        assert!(a.iter().zip(b.iter()).all(|(p, q)| (p - q).abs() < 1e-5));
        assert!((c.report.mac_speedup() - 4.0).abs() < 1e-9);
        let lin = LinearLayer::new(rng.normal_array((3, 10), 1.0), None).unwrap();
        let (op, _) = sparse_prune(&Layer::Linear(lin), 0.5).unwrap();
        assert!(matches!(op, Op::SparseLinear(_)));
        assert!(sparse_prune(&Layer::Conv(layer), -0.5).is_err());
    }
}
