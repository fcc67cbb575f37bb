//! Ternary weights `{−α, 0, +α}` (Lin et al. \[55\], survey Section 5) with
//! binary activations, as two bit-planes on the XNOR–popcount kernel of
//! [`crate::lowbit::binary_gemm`]: a sign plane `s` and a non-zero mask `m`,
//! so that `Σ_c w·a = popcount(m) − 2·popcount(m ∧ (s ⊕ a))` — one extra
//! `VPTERNLOGQ` operand per word, the same exact zero-padding correction.

use hasten_core::{ConvSpec, Padding, Result};
use ndarray::{Array4, ArrayView4};

use super::binary_gemm::{ActivationScale, PackedFilters, XnorGemm};
use super::bitpack::PackedSigns;
use super::Isa;

/// A ternary-weight, binary-activation convolution.
#[derive(Debug, Clone, PartialEq)]
pub struct TernaryGemm {
    inner: XnorGemm,
}

impl TernaryGemm {
    /// `levels` holds OIHW values in {−1, 0, +1} (anything else is an error);
    /// the effective weight is `alpha[t] · levels[t, ...]`.
    pub fn new(
        levels: ArrayView4<'_, f32>,
        alpha: Vec<f32>,
        bias: Option<Vec<f32>>,
        spec: ConvSpec,
        scale: ActivationScale,
    ) -> Result<Self> {
        let filters = PackedFilters::pack(levels, true)?;
        Ok(TernaryGemm {
            inner: XnorGemm::from_filters(filters, alpha, bias, spec, scale)?,
        })
    }

    /// The two-plane packed filters.
    pub fn filters(&self) -> &PackedFilters {
        self.inner.filters()
    }

    /// Packs the signs of `x` with this layer's padding.
    pub fn pack_input(&self, x: ArrayView4<'_, f32>, isa: Option<Isa>) -> Result<PackedSigns> {
        self.inner.pack_input(x, isa)
    }

    /// Exact `Σ_{valid taps} level · sign(x)`, NHWC `[n][y][x][t]`.
    pub fn dot_products(
        &self,
        input: &PackedSigns,
        isa: Option<Isa>,
    ) -> Result<(Vec<i32>, (usize, usize))> {
        self.inner.dot_products(input, isa)
    }

    /// `y = α[t] · K · dot + b[t]` on an NCHW batch.
    pub fn forward(&self, x: &Array4<f32>) -> Result<Array4<f32>> {
        self.inner.forward(x)
    }

    /// [`Self::forward`] on a forced instruction set.
    pub fn forward_with(&self, x: &Array4<f32>, isa: Option<Isa>) -> Result<Array4<f32>> {
        self.inner.forward_with(x, isa)
    }

    /// Signs of `y`, packed for the next binary layer.
    pub fn forward_packed(
        &self,
        input: &PackedSigns,
        next_padding: Padding,
        isa: Option<Isa>,
    ) -> Result<PackedSigns> {
        self.inner.forward_packed(input, next_padding, isa)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lowbit::binary_gemm::tests::{conv_case, naive_dots};
    use crate::lowbit::Needs;
    use hasten_core::SeededRng;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn every_path_is_exact((n, c, t, k, h, w, spec, seed) in conv_case()) {
            prop_assume!(spec.output_hw(h, w, k, k).is_ok());
            let mut rng = SeededRng::new(seed);
            let x = rng.normal_array((n, c, h, w), 1.0);
            let levels = rng.normal_array((t, c, k, k), 1.0)
                .mapv(|v: f32| if v < -0.5 { -1.0 } else if v > 0.5 { 1.0 } else { 0.0 });
            let conv = TernaryGemm::new(levels.view(), vec![0.5; t], None, spec, ActivationScale::None).unwrap();
            let truth = naive_dots(&levels, &x, &spec);
            for isa in Isa::supported_for(Needs::Popcount) {
                let packed = conv.pack_input(x.view(), Some(isa)).unwrap();
                let (dots, _) = conv.dot_products(&packed, Some(isa)).unwrap();
                prop_assert_eq!(&dots, &truth, "{:?}", isa);
                let y = conv.forward_with(&x, Some(isa)).unwrap();
                let (oh, ow) = spec.output_hw(h, w, k, k).unwrap();
                for ((nn, tt, yy, xx), &v) in y.indexed_iter() {
                    prop_assert_eq!(v, 0.5 * truth[((nn * oh + yy) * ow + xx) * t + tt] as f32);
                }
            }
        }

        #[test]
        fn non_ternary_levels_are_errors(v in -3.0f32..3.0) {
            let mut levels = Array4::<f32>::zeros((2, 3, 1, 1));
            levels[[1, 2, 0, 0]] = v;
            let r = TernaryGemm::new(levels.view(), vec![1.0; 2], None, ConvSpec::new(), ActivationScale::None);
            prop_assert_eq!(r.is_ok(), v == 0.0 || v == 1.0 || v == -1.0);
        }
    }
}
