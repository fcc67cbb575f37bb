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
///
/// # Errors
/// [`Transform::apply`] fails with
/// [`Error::InvalidParameter`] for a
/// fraction outside `[0, 1)` and with the input-shape errors of the layer.
///
/// ```
/// use hasten_core::{ActShape, ConvLayer, ConvSpec, Layer, SeededRng, Transform};
/// use hasten_prune::removal::MagnitudeSparse;
///
/// let w = SeededRng::new(0).normal_array((8, 4, 3, 3), 0.1);
/// let layer = Layer::from(ConvLayer::from_array(w, ConvSpec::new().with_padding(1))?);
/// let input = ActShape::new(4, 6, 6);
/// let c = MagnitudeSparse { fraction: 0.75 }.apply(&layer, input)?;
/// assert_eq!(c.block.ops()[0].kind(), "sparse_conv");
/// assert!((c.report.mac_speedup() - 4.0).abs() < 1e-9);
/// assert!(MagnitudeSparse { fraction: 1.0 }.apply(&layer, input).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
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

    /// `n` weights with the distinct magnitudes `1..=n` in random order and
    /// with random signs, so "the largest" is unambiguous.
    fn ranked_weights(n: usize, rng: &mut SeededRng) -> Vec<f32> {
        let mut w: Vec<f32> = (1..=n)
            .map(|m| {
                if rng.below(2) == 0 {
                    m as f32
                } else {
                    -(m as f32)
                }
            })
            .collect();
        rng.shuffle(&mut w);
        w
    }

    /// `Σ_{m=1..n} m²`.
    fn sum_squares(n: usize) -> f64 {
        (n * (n + 1) * (2 * n + 1)) as f64 / 6.0
    }

    #[test]
    fn csr_keeps_exactly_the_largest_weights() {
        let mut rng = SeededRng::new(14);
        let w = ranked_weights(8 * 4 * 3 * 3, &mut rng);
        let array = ndarray::Array4::from_shape_vec((8, 4, 3, 3), w.clone()).unwrap();
        let layer = ConvLayer::from_array(array.clone(), ConvSpec::new().with_padding(1)).unwrap();
        let c = MagnitudeSparse { fraction: 0.75 }
            .apply(&Layer::Conv(layer.clone()), ActShape::new(4, 6, 6))
            .unwrap();
        let Op::SparseConv(sp) = &c.block.ops()[0] else {
            panic!("not CSR")
        };
        // 288 weights, 75 % removed: exactly the magnitudes 217..=288 stay,
        // each at its own position with its own sign.
        assert_eq!(sp.filters().nnz(), 72);
        let mut kept = 0;
        for t in 0..8 {
            for (col, v) in sp.filters().row(t) {
                assert_eq!(v, w[t * 36 + col], "filter {t}, column {col}");
                assert!(v.abs() > 216.0, "kept a small weight {v}");
                kept += 1;
            }
        }
        assert_eq!(kept, 72);
        // The reported error in closed form: √(Σ_{m≤216} m² / Σ_{m≤288} m²).
        let want = (sum_squares(216) / sum_squares(288)).sqrt();
        let got = c.report.weight_error.unwrap();
        assert!((got - want).abs() < 1e-12, "weight error {got} vs {want}");
        assert!((c.report.mac_speedup() - 4.0).abs() < 1e-9);
        // The sparse forward against a dense layer built here from the
        // original kernel with every |w| ≤ 216 zeroed.
        let zeroed = array.mapv(|v| if v.abs() > 216.0 { v } else { 0.0 });
        let dense = ConvLayer::from_array(zeroed, ConvSpec::new().with_padding(1)).unwrap();
        let x = rng.normal_array((2, 4, 6, 6), 1.0);
        let (a, b) = (
            dense.reference_forward(&x).unwrap(),
            sp.reference_forward(&x).unwrap(),
        );
        // Both sum the same products in f64 in the same order.
        assert_eq!(a, b);
    }

    #[test]
    fn csr_linear_keeps_the_largest_weights() {
        let mut rng = SeededRng::new(15);
        let w = ranked_weights(30, &mut rng);
        let m = ndarray::Array2::from_shape_vec((3, 10), w.clone()).unwrap();
        let bias = ndarray::arr1(&[0.5f32, -1.0, 2.0]);
        let lin = LinearLayer::new(m.clone(), Some(bias.clone())).unwrap();
        let (op, err) = sparse_prune(&Layer::Linear(lin), 0.5).unwrap();
        let Op::SparseLinear(sl) = &op else {
            panic!("not CSR")
        };
        assert_eq!(sl.weight().nnz(), 15);
        let want = (sum_squares(15) / sum_squares(30)).sqrt();
        assert!((err - want).abs() < 1e-12, "weight error {err} vs {want}");
        let zeroed = m.mapv(|v| if v.abs() > 15.0 { v } else { 0.0 });
        let dense = LinearLayer::new(zeroed, Some(bias)).unwrap();
        let x = rng.normal_array((3, 10, 1, 1), 1.0);
        let (a, b) = (
            dense.reference_forward(&x).unwrap(),
            op.reference_forward(&x).unwrap(),
        );
        assert_eq!(a, b);
        assert!(sparse_prune(&Layer::Linear(dense), -0.5).is_err());
    }
}
