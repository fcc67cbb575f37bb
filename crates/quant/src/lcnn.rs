//! Lookup-based CNN (LCNN, Bagherinezhad et al. \[63\]; survey section 5,
//! eq. (10)–(12)).
//!
//! Every filter slice over the input channels, `v = W[t, :, i, j]`, is coded
//! as a sparse combination of `s` rows of a dictionary `D [m, C]`, eq. (10):
//! `v ≈ Σ_ξ C(ξ) · D[I(ξ), :]`. The coefficients are found by orthogonal
//! matching pursuit ([`omp`]); the dictionary is initialised by k-means on
//! the slices and refined by alternating OMP with the least-squares
//! dictionary update `D = argmin ‖V − A D‖` (the method of optimal
//! directions). The result is an [`LcnnConv`], which runs as eq. (12): a
//! `1 × 1` convolution with `D`, shifts and a sparse combination.

use hasten_core::error::ensure_finite;
use hasten_core::linalg::lstsq;
use hasten_core::ndarray::{Array1, Array2, Axis};
use hasten_core::{
    ActShape, Compressed, Error, Layer, LcnnConv, Result, SeededRng, Transform, WeightLayout,
};

use crate::kmeans::kmeans;
use crate::weights::{LayerWeights, QuantizeLayer};

/// Orthogonal matching pursuit: at most `sparsity` atoms (rows of
/// `dictionary`) and their least-squares coefficients approximating `v`.
/// Stops early when the residual vanishes. Zero atoms are never chosen.
pub fn omp(dictionary: &Array2<f64>, v: &[f64], sparsity: usize) -> Result<Vec<(usize, f64)>> {
    ensure_finite("OMP dictionary", dictionary.iter())?;
    ensure_finite("OMP target", v.iter())?;
    if dictionary.ncols() != v.len() {
        return Err(Error::shape(
            "OMP target length",
            dictionary.ncols(),
            v.len(),
        ));
    }
    let norms: Vec<f64> = dictionary
        .rows()
        .into_iter()
        .map(|r| r.dot(&r).sqrt())
        .collect();
    let target = Array1::from(v.to_vec());
    let scale = target.dot(&target).sqrt();
    let mut residual = target.clone();
    let mut chosen: Vec<usize> = Vec::new();
    let mut coeffs: Vec<f64> = Vec::new();
    for _ in 0..sparsity.min(dictionary.nrows()) {
        if residual.dot(&residual).sqrt() <= 1e-12 * scale.max(f64::MIN_POSITIVE) {
            break;
        }
        let best = (0..dictionary.nrows())
            .filter(|a| norms[*a] > 0.0 && !chosen.contains(a))
            .map(|a| (a, (dictionary.row(a).dot(&residual) / norms[a]).abs()))
            .max_by(|x, y| x.1.total_cmp(&y.1));
        let Some((atom, _)) = best else { break };
        chosen.push(atom);
        // Least squares on the chosen atoms: (D_Sᵀ) c = v.
        let ds = dictionary.select(Axis(0), &chosen).reversed_axes();
        let c = lstsq(ds.view(), target.view().insert_axis(Axis(1)))?;
        coeffs = c.column(0).to_vec();
        residual = &target - &ds.dot(&c.column(0));
    }
    Ok(chosen.into_iter().zip(coeffs).collect())
}

/// LCNN: dictionary of `m` atoms, `s` taps per slice.
///
/// # Errors
/// [`Transform::apply`] fails with
/// [`Error::NonFinite`] for a NaN or infinite
/// weight and with the input-shape errors of the layer; [`Lcnn::new`] refuses a dictionary size outside `1..=65536` and a sparsity outside `1..=dictionary_size`.
///
/// ```
/// use hasten_core::{ActShape, ConvLayer, ConvSpec, Layer, SeededRng, Transform};
/// use hasten_quant::Lcnn;
///
/// let w = SeededRng::new(0).normal_array((8, 4, 3, 3), 0.1);
/// let layer = Layer::from(ConvLayer::from_array(w, ConvSpec::new().with_padding(1))?);
/// let input = ActShape::new(4, 6, 6);
/// let c = Lcnn::new(4, 2, 5, 1)?.apply(&layer, input)?;
/// assert_eq!(c.block.output_shape(input)?, ActShape::new(8, 6, 6));
/// assert!(Lcnn::new(4, 5, 5, 1).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Lcnn {
    dictionary_size: usize,
    sparsity: usize,
    iterations: usize,
    seed: u64,
    fixed: Option<Array2<f32>>,
}

impl Lcnn {
    /// Learns a dictionary of `dictionary_size ∈ 1..=65536` atoms with
    /// `iterations` OMP / least-squares rounds; `sparsity ≥ 1` taps per slice.
    ///
    /// # Errors
    /// As listed on [`Lcnn`].
    pub fn new(
        dictionary_size: usize,
        sparsity: usize,
        iterations: usize,
        seed: u64,
    ) -> Result<Self> {
        if !(1..=1 << 16).contains(&dictionary_size) {
            return Err(Error::param(
                "LCNN dictionary size",
                dictionary_size,
                "1..=65536",
            ));
        }
        if sparsity == 0 || sparsity > dictionary_size {
            return Err(Error::param(
                "LCNN sparsity",
                sparsity,
                format!("1..={dictionary_size} (the dictionary size)"),
            ));
        }
        Ok(Lcnn {
            dictionary_size,
            sparsity,
            iterations,
            seed,
            fixed: None,
        })
    }

    /// Uses the given dictionary `[m, C]` (finite) instead of learning one.
    ///
    /// # Errors
    /// As listed on [`Lcnn`].
    pub fn with_dictionary(dictionary: Array2<f32>, sparsity: usize) -> Result<Self> {
        hasten_core::error::ensure_nonempty("LCNN dictionary", dictionary.shape())?;
        ensure_finite("LCNN dictionary", dictionary.iter())?;
        let mut l = Lcnn::new(dictionary.nrows(), sparsity, 0, 0)?;
        l.fixed = Some(dictionary);
        Ok(l)
    }

    /// The slices `V [rows·kh·kw, C]`, slice `(t·kh + i)·kw + j` = `W[t, :, i, j]`.
    fn slices(weights: &LayerWeights) -> Result<Array2<f64>> {
        match *weights.layout() {
            WeightLayout::Conv { dims, spec } => {
                if spec.groups != 1 {
                    return Err(Error::unsupported(
                        "LCNN",
                        format!("a grouped convolution (groups = {})", spec.groups),
                    ));
                }
                let [t_all, c, kh, kw] = dims;
                Ok(Array2::from_shape_fn((t_all * kh * kw, c), |(r, s)| {
                    let (t, ij) = (r / (kh * kw), r % (kh * kw));
                    f64::from(weights.matrix()[[t, s * kh * kw + ij]])
                }))
            }
            WeightLayout::Linear { .. } => Ok(weights.matrix().mapv(f64::from)),
        }
    }

    fn code_all(d: &Array2<f64>, v: &Array2<f64>, s: usize) -> Result<Vec<Vec<(usize, f64)>>> {
        v.rows()
            .into_iter()
            .map(|row| omp(d, row.as_slice().expect("standard layout"), s))
            .collect()
    }

    /// The op for a layer's weights.
    ///
    /// # Errors
    /// As listed on [`Lcnn`].
    pub fn quantize(&self, weights: &LayerWeights) -> Result<LcnnConv> {
        let v = Self::slices(weights)?;
        let (n, c) = v.dim();
        let mut d = match &self.fixed {
            Some(f) => {
                if f.ncols() != c {
                    return Err(Error::shape("LCNN dictionary width", c, f.ncols()));
                }
                f.mapv(f64::from)
            }
            None => {
                if self.dictionary_size > n {
                    return Err(Error::param(
                        "LCNN dictionary size",
                        self.dictionary_size,
                        format!("<= {n} (filter slices to learn from)"),
                    ));
                }
                kmeans(&v, self.dictionary_size, 10, &mut SeededRng::new(self.seed))?.centroids
            }
        };
        let mut codes = Self::code_all(&d, &v, self.sparsity)?;
        for _ in 0..self.iterations {
            let mut a = Array2::<f64>::zeros((n, d.nrows()));
            for (r, taps) in codes.iter().enumerate() {
                for &(atom, coef) in taps {
                    a[[r, atom]] = coef;
                }
            }
            d = lstsq(a.view(), v.view())?;
            codes = Self::code_all(&d, &v, self.sparsity)?;
        }
        let mut offsets = vec![0u32];
        let (mut indices, mut coeffs) = (Vec::new(), Vec::new());
        for taps in &codes {
            for &(atom, coef) in taps {
                indices.push(atom as u16);
                coeffs.push(coef as f32);
            }
            offsets.push(indices.len() as u32);
        }
        LcnnConv::new(
            *weights.layout(),
            d.mapv(|x| x as f32),
            offsets,
            indices,
            coeffs,
            weights.bias().cloned(),
        )
    }
}

impl Transform for Lcnn {
    fn name(&self) -> &str {
        "LCNN (eq. 10-12)"
    }

    fn apply(&self, layer: &Layer, input: ActShape) -> Result<Compressed> {
        self.quantize_layer(Self::quantize, LcnnConv::dequantized, layer, input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::ndarray::Array4;
    use hasten_core::{ConvLayer, ConvSpec, LinearLayer, Operator};

    #[test]
    fn omp_recovers_planted_sparse_code() {
        let mut rng = SeededRng::new(1);
        let d = rng.normal_array_f64((12, 8), 1.0);
        let v: Vec<f64> = (0..8).map(|j| 2.0 * d[[3, j]] - 0.5 * d[[7, j]]).collect();
        let mut code = omp(&d, &v, 2).unwrap();
        code.sort_by_key(|c| c.0);
        assert_eq!(code.iter().map(|c| c.0).collect::<Vec<_>>(), vec![3, 7]);
        assert!((code[0].1 - 2.0).abs() < 1e-9 && (code[1].1 + 0.5).abs() < 1e-9);
    }

    #[test]
    fn exact_dictionary_reproduces_the_layer() {
        // Every slice W[t, :, i, j] is a multiple of one of 5 atoms.
        let mut rng = SeededRng::new(2);
        let atoms: Array2<f32> = rng.normal_array((5, 4), 1.0);
        let picks: Vec<(usize, f32)> = (0..6 * 9)
            .map(|_| (rng.below(5), rng.normal() as f32))
            .collect();
        let w = Array4::from_shape_fn((6, 4, 3, 3), |(t, s, i, j)| {
            let (a, c) = picks[(t * 3 + i) * 3 + j];
            c * atoms[[a, s]]
        });
        let spec = ConvSpec::new().with_padding(1);
        let layer = ConvLayer::from_array(w, spec).unwrap();
        let c = Lcnn::with_dictionary(atoms, 1)
            .unwrap()
            .apply(&layer.clone().into(), ActShape::new(4, 6, 6))
            .unwrap();
        assert!(c.report.weight_error.unwrap() < 1e-6);
        let x = rng.normal_array((2, 4, 6, 6), 1.0);
        let (a, b) = (
            c.block.reference_forward(&x).unwrap(),
            layer.reference_forward(&x).unwrap(),
        );
        for (p, q) in a.iter().zip(b.iter()) {
            assert!((p - q).abs() < 1e-4, "{p} vs {q}");
        }
        // Op count: 1×1 conv 5·4·36 + one tap per slice per output pixel 54·36.
        assert_eq!(c.report.after.macs, (5 * 4 * 36 + 54 * 36) as u64);
    }

    #[test]
    fn learned_dictionary_error_decreases_with_iterations_and_size() {
        let mut rng = SeededRng::new(3);
        let layer: Layer = LinearLayer::new(rng.normal_array((40, 6), 1.0), None)
            .unwrap()
            .into();
        let err = |m, s, it| {
            Lcnn::new(m, s, it, 5)
                .unwrap()
                .apply(&layer, ActShape::flat(6))
                .unwrap()
                .report
                .weight_error
                .unwrap()
        };
        assert!(err(8, 2, 4) <= err(8, 2, 0) + 1e-9);
        assert!(err(16, 3, 2) < err(4, 1, 2));
        // Sparsity = width with a full-rank dictionary is exact.
        assert!(err(6, 6, 0) < 1e-5);
    }

    #[test]
    fn learned_dictionary_recovers_a_planted_one() {
        // Every row is a signed multiple (|c| in [1, 1.5]) of one of 4
        // planted unit atoms in 6-D: the optimum of eq. (10) with m = 4,
        // s = 1 has zero error, and the learned dictionary must reach it
        // with atoms parallel to the planted ones.
        let mut rng = SeededRng::new(4);
        let mut atoms = rng.normal_array_f64((4, 6), 1.0);
        for mut a in atoms.rows_mut() {
            let norm = a.dot(&a).sqrt();
            a /= norm;
        }
        let w = Array2::from_shape_fn((60, 6), |(r, j)| {
            let sign = if r % 2 == 0 { 1.0 } else { -1.0 };
            let c = sign * (1.0 + 0.5 * ((r * 7 % 11) as f64 / 10.0));
            (c * atoms[[r % 4, j]]) as f32
        });
        let layer: Layer = LinearLayer::new(w, None).unwrap().into();
        let lcnn = Lcnn::new(4, 1, 5, 7).unwrap();
        let c = lcnn.apply(&layer, ActShape::flat(6)).unwrap();
        let err = c.report.weight_error.unwrap();
        assert!(err < 1e-6, "weight error {err}");
        let op = lcnn.quantize(&LayerWeights::of(&layer)).unwrap();
        let d = op.dictionary().mapv(f64::from);
        for a in atoms.rows() {
            let best = d
                .rows()
                .into_iter()
                .map(|r| (r.dot(&a) / r.dot(&r).sqrt()).abs())
                .fold(0.0, f64::max);
            assert!(
                best > 1.0 - 1e-6,
                "planted atom not recovered: |cos| {best}"
            );
        }
    }

    #[test]
    fn bad_input_is_typed() {
        assert!(Lcnn::new(0, 1, 0, 0).is_err());
        assert!(Lcnn::new(4, 5, 0, 0).is_err());
        assert!(Lcnn::with_dictionary(Array2::from_elem((2, 2), f32::NAN), 1).is_err());
        let layer: Layer = LinearLayer::new(Array2::ones((2, 3)), None).unwrap().into();
        assert!(Lcnn::new(3, 1, 0, 0)
            .unwrap()
            .apply(&layer, ActShape::flat(3))
            .is_err());
        assert!(Lcnn::with_dictionary(Array2::ones((2, 2)), 1)
            .unwrap()
            .apply(&layer, ActShape::flat(3))
            .is_err());
        let grouped: Layer =
            ConvLayer::from_array(Array4::ones((2, 1, 1, 1)), ConvSpec::new().with_groups(2))
                .unwrap()
                .into();
        assert!(matches!(
            Lcnn::new(1, 1, 0, 0)
                .unwrap()
                .apply(&grouped, ActShape::new(2, 2, 2)),
            Err(Error::Unsupported { .. })
        ));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        #[test]
        fn never_panics(rows in 1usize..5, cols in 1usize..5, m in 0usize..7, s in 0usize..4) {
            let mut rng = SeededRng::new((rows * 10 + cols) as u64);
            let layer: Layer = LinearLayer::new(rng.normal_array((rows, cols), 1.0), None).unwrap().into();
            let r = Lcnn::new(m, s, 1, 0).and_then(|l| l.apply(&layer, ActShape::flat(cols)));
            let ok = m >= 1 && s >= 1 && s <= m && m <= rows;
            proptest::prop_assert_eq!(r.is_ok(), ok);
        }
    }
}
