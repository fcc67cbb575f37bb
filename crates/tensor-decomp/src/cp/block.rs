//! [`CpConv`]: the CP decomposition of a convolution kernel as a block
//! (survey section 2, Fig. 1; Lebedev et al. \[18\]).
//!
//! `W[n, c, i, j] ≈ Σ_r A_N[n, r] A_C[c, r] A_H[i, r] A_W[j, r]` becomes
//! `1×1 C→R`, `kh×1` depthwise on `R`, `1×kw` depthwise on `R`, `1×1 R→N`:
//! `R(C + 2d + N)` MACs per pixel (Table 1). The vertical depthwise
//! convolution carries the vertical stride/padding/dilation, the horizontal
//! one the horizontal ones; the `1×1` convolutions get none; the bias goes on
//! the last op. The 3-way variant factors `[N, C, kh·kw]` and uses one `d×d`
//! depthwise core (`R(C + d² + N)`).

use hasten_core::error::{Error, Result};
use hasten_core::ndarray::{Array2, Array4, IxDyn};
use hasten_core::{ActShape, Block, Compressed, ConvLayer, Layer, Transform};

use super::{
    cp_als, cp_deflation, cp_lm, cp_power, max_cp_rank, CpInit, CpOptions, CpResult, CpTensor,
    LmOptions, PowerOptions,
};
use crate::common::{
    conv_op, dense_conv, horizontal_spec, kernel_error, pointwise_op, vertical_spec, with_groups,
};
use crate::rank::{RankProblem, RankSpec};

/// Which tensor of the kernel is decomposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpVariant {
    /// The 4-way kernel: separate vertical and horizontal depthwise convolutions.
    FourWay,
    /// The kernel with its spatial modes merged (`[N, C, kh·kw]`): one
    /// `kh×kw` depthwise convolution.
    ThreeWay,
}

/// Which algorithm produces the CP factors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpAlgorithm {
    /// CP-ALS with the start of its options.
    Als,
    /// Greedy rank-1 deflation (Denton et al. \[17\]).
    Deflation,
    /// Tensor power method (Astrid & Lee \[19\]).
    Power,
    /// Greedy deflation, then CP-ALS from it.
    DeflationThenAls,
    /// Tensor power method, then CP-ALS from it.
    PowerThenAls,
}

/// CP decomposition of a convolution (Fig. 1 of the survey).
///
/// ```
/// use hasten_core::{ActShape, ConvLayer, ConvSpec, Layer, SeededRng, Transform};
/// use hasten_tensor_decomp::{cp::CpConv, RankSpec};
///
/// let w = SeededRng::new(0).normal_array((16, 8, 3, 3), 0.1);
/// let layer = Layer::from(ConvLayer::from_array(w, ConvSpec::new().with_padding(1))?);
/// let c = CpConv::new(RankSpec::Fixed(6)).apply(&layer, ActShape::new(8, 6, 6))?;
/// assert_eq!(c.block.ops().len(), 4);
/// # Ok::<(), hasten_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CpConv {
    rank: RankSpec,
    variant: CpVariant,
    algorithm: CpAlgorithm,
    als: CpOptions,
    power: PowerOptions,
    lm: Option<LmOptions>,
}

impl CpConv {
    /// 4-way CP-ALS (SVD start, 100 sweeps) with the rank chosen by `rank`
    /// (fixed or target speed-up: CP has no spectrum for energy or EVBMF).
    pub fn new(rank: RankSpec) -> Self {
        CpConv {
            rank,
            variant: CpVariant::FourWay,
            algorithm: CpAlgorithm::Als,
            als: CpOptions::default(),
            power: PowerOptions::default(),
            lm: None,
        }
    }

    /// Sets the variant.
    pub fn with_variant(mut self, variant: CpVariant) -> Self {
        self.variant = variant;
        self
    }

    /// Sets the algorithm.
    pub fn with_algorithm(mut self, algorithm: CpAlgorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// Sets the CP-ALS (and deflation) options.
    pub fn with_als_options(mut self, options: CpOptions) -> Self {
        self.als = options;
        self
    }

    /// Sets the tensor power method options.
    pub fn with_power_options(mut self, options: PowerOptions) -> Self {
        self.power = options;
        self
    }

    /// Refines the factors with Levenberg–Marquardt (Lebedev et al. \[18\]).
    pub fn with_lm_refinement(mut self, options: LmOptions) -> Self {
        self.lm = Some(options);
        self
    }

    /// The decomposed tensor of a kernel for this variant.
    fn tensor(&self, kernel: &Array4<f64>) -> hasten_core::ndarray::ArrayD<f64> {
        let (n, c, kh, kw) = kernel.dim();
        let shape: Vec<usize> = match self.variant {
            CpVariant::FourWay => vec![n, c, kh, kw],
            CpVariant::ThreeWay => vec![n, c, kh * kw],
        };
        kernel
            .clone()
            .into_shape_with_order(IxDyn(&shape))
            .expect("standard layout kernel")
    }

    /// Runs the configured algorithm on a kernel (`[N, C, kh, kw]`).
    pub fn decompose(&self, kernel: &Array4<f64>, rank: usize) -> Result<CpResult> {
        let x = self.tensor(kernel);
        let fit = match self.algorithm {
            CpAlgorithm::Als => cp_als(&x, rank, &self.als)?,
            CpAlgorithm::Deflation => cp_deflation(&x, rank, &self.als)?,
            CpAlgorithm::Power => cp_power(&x, rank, &self.power)?,
            CpAlgorithm::DeflationThenAls | CpAlgorithm::PowerThenAls => {
                let start = if self.algorithm == CpAlgorithm::DeflationThenAls {
                    cp_deflation(&x, rank, &self.als)?
                } else {
                    cp_power(&x, rank, &self.power)?
                };
                let opts = self.als.clone().with_init(CpInit::Given(start.cp));
                let mut fit = cp_als(&x, rank, &opts)?;
                let mut history = start.error_history;
                history.append(&mut fit.error_history);
                fit.error_history = history;
                fit
            }
        };
        match &self.lm {
            None => Ok(fit),
            Some(lm) => {
                let mut refined = cp_lm(&x, &fit.cp, lm)?;
                let mut history = fit.error_history;
                history.append(&mut refined.error_history);
                refined.error_history = history;
                Ok(refined)
            }
        }
    }

    /// The block `1×1, (d×1 dw, 1×d dw | d×d dw), 1×1` for CP factors of `conv`'s kernel.
    pub fn block(&self, conv: &ConvLayer, cp: &CpTensor) -> Result<Block> {
        let [n, c, kh, kw] = conv.weight().dims();
        let cp = cp.balanced()?;
        let r = cp.rank();
        let expected = match self.variant {
            CpVariant::FourWay => vec![n, c, kh, kw],
            CpVariant::ThreeWay => vec![n, c, kh * kw],
        };
        if cp.shape() != expected {
            return Err(Error::shape(
                "CP factors of the kernel",
                format!("{expected:?}"),
                format!("{:?}", cp.shape()),
            ));
        }
        let f = &cp.factors;
        let first = pointwise_op(&f[1].t().to_owned(), None)?;
        let last = pointwise_op(&f[0], conv.bias())?;
        let depthwise = |m: &Array2<f64>, h: usize, w: usize| -> Result<Array4<f64>> {
            m.t()
                .as_standard_layout()
                .into_owned()
                .into_shape_with_order((r, 1, h, w))
                .map_err(|e| Error::shape("depthwise CP kernel", r, e))
        };
        let spec = conv.spec();
        let ops = match self.variant {
            CpVariant::FourWay => vec![
                first,
                conv_op(&depthwise(&f[2], kh, 1)?, None, vertical_spec(spec, r))?,
                conv_op(&depthwise(&f[3], 1, kw)?, None, horizontal_spec(spec, r))?,
                last,
            ],
            CpVariant::ThreeWay => vec![
                first,
                conv_op(&depthwise(&f[2], kh, kw)?, None, with_groups(spec, r))?,
                last,
            ],
        };
        Block::new(ops)
    }

    fn macs(&self, conv: &ConvLayer, input: ActShape, r: usize) -> Result<u64> {
        let [n, c, kh, kw] = conv.weight().dims();
        let out = conv.output_shape(input)?.area();
        let spatial = match self.variant {
            CpVariant::FourWay => {
                let (vh, vw) =
                    vertical_spec(conv.spec(), 1).output_hw(input.height, input.width, kh, 1)?;
                r * kh * vh * vw + r * kw * out
            }
            CpVariant::ThreeWay => r * kh * kw * out,
        };
        Ok((r * c * input.area() + spatial + n * r * out) as u64)
    }
}

impl Transform for CpConv {
    fn name(&self) -> &str {
        match self.variant {
            CpVariant::FourWay => "cp",
            CpVariant::ThreeWay => "cp-3way",
        }
    }

    fn apply(&self, layer: &Layer, input: ActShape) -> Result<Compressed> {
        let conv = dense_conv(self.name(), layer)?;
        conv.output_shape(input)?;
        let kernel = conv.weight().to_f64();
        let x = self.tensor(&kernel);
        let macs = |r: usize| self.macs(conv, input, r);
        let rank = self.rank.resolve(&RankProblem {
            method: self.name(),
            max: max_cp_rank(x.shape()),
            spectrum: None,
            matrix: None,
            base_macs: layer.cost(input)?.macs,
            macs: &macs,
        })?;
        let fit = self.decompose(&kernel, rank)?;
        let block = self.block(conv, &fit.cp)?;
        let recon = fit
            .cp
            .to_tensor()?
            .into_shape_with_order(kernel.raw_dim())
            .map_err(|e| Error::shape("CP reconstruction", format!("{:?}", kernel.dim()), e))?;
        let err = kernel_error(conv.weight(), &recon)?;
        Compressed::new(self.name(), layer, block, input, Some(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{as_layer, assert_block_is_conv, layer_from, specs};
    use hasten_core::ndarray::Array1;
    use hasten_core::{ConvSpec, SeededRng};
    use proptest::prelude::*;

    fn planted(shape: &[usize], rank: usize, seed: u64) -> Array4<f64> {
        let mut rng = SeededRng::new(seed);
        let cp = CpTensor::new(
            Array1::ones(rank),
            shape
                .iter()
                .map(|&d| rng.normal_array_f64((d, rank), 1.0))
                .collect(),
        )
        .unwrap();
        let (n, c) = (shape[0], shape[1]);
        cp.to_tensor()
            .unwrap()
            .into_shape_with_order((n, c, 3, 3))
            .unwrap()
    }

    #[test]
    fn four_way_exact_recovery_and_block_is_layer() {
        let kernel = planted(&[8, 6, 3, 3], 3, 1);
        let t = CpConv::new(RankSpec::Fixed(3))
            .with_als_options(CpOptions::default().with_max_iter(300).with_tol(0.0));
        for (i, spec) in specs().into_iter().enumerate() {
            let conv = layer_from(&kernel, spec, i as u64);
            let res = t.apply(&as_layer(&conv), ActShape::new(6, 9, 8)).unwrap();
            assert!(
                res.report.weight_error.unwrap() < 1e-5,
                "{:?}",
                res.report.weight_error
            );
            let recon = t
                .decompose(&kernel, 3)
                .unwrap()
                .cp
                .to_tensor()
                .unwrap()
                .into_shape_with_order((8, 6, 3, 3))
                .unwrap();
            assert_block_is_conv(&res.block, &conv, &recon, (6, 9, 8));
        }
    }

    #[test]
    fn three_way_exact_recovery_and_block_is_layer() {
        let kernel = planted(&[7, 5, 9], 4, 2);
        let t = CpConv::new(RankSpec::Fixed(4))
            .with_variant(CpVariant::ThreeWay)
            .with_als_options(CpOptions::default().with_max_iter(300).with_tol(0.0));
        for (i, spec) in specs().into_iter().enumerate() {
            let conv = layer_from(&kernel, spec, i as u64);
            let res = t.apply(&as_layer(&conv), ActShape::new(5, 8, 9)).unwrap();
            assert!(res.report.weight_error.unwrap() < 1e-5);
            assert_eq!(res.block.ops().len(), 3);
            let recon = t
                .decompose(&kernel, 4)
                .unwrap()
                .cp
                .to_tensor()
                .unwrap()
                .into_shape_with_order((7, 5, 3, 3))
                .unwrap();
            assert_block_is_conv(&res.block, &conv, &recon, (5, 8, 9));
        }
    }

    #[test]
    fn table1_cp_cost_and_speedup_rank() {
        let (n, c, d, k, h) = (20, 12, 3, 5, 6);
        let kernel = SeededRng::new(3).normal_array_f64((n, c, d, d), 1.0);
        let conv = layer_from(&kernel, ConvSpec::new().with_padding(1), 0);
        let t =
            CpConv::new(RankSpec::Fixed(k)).with_als_options(CpOptions::default().with_max_iter(5));
        let res = t.apply(&as_layer(&conv), ActShape::new(c, h, h)).unwrap();
        assert_eq!(res.report.after.macs, (k * (c + 2 * d + n) * h * h) as u64);
        // Speed-up 10: K(C + 2d + N) ≤ CNd²/10 = 216 ⇔ K ≤ 5.4.
        let s = CpConv::new(RankSpec::Speedup(10.0))
            .with_als_options(CpOptions::default().with_max_iter(5));
        let res = s.apply(&as_layer(&conv), ActShape::new(c, h, h)).unwrap();
        assert_eq!(res.report.after.macs, (5 * (c + 2 * d + n) * h * h) as u64);
        assert!(CpConv::new(RankSpec::Energy(0.9))
            .apply(&as_layer(&conv), ActShape::new(c, h, h))
            .is_err());
        assert!(CpConv::new(RankSpec::Evbmf)
            .apply(&as_layer(&conv), ActShape::new(c, h, h))
            .is_err());
    }

    #[test]
    fn alternative_algorithms_produce_valid_blocks() {
        let kernel = planted(&[6, 5, 3, 3], 2, 4);
        let conv = layer_from(&kernel, ConvSpec::new().with_padding(1), 0);
        for alg in [
            CpAlgorithm::Deflation,
            CpAlgorithm::Power,
            CpAlgorithm::DeflationThenAls,
            CpAlgorithm::PowerThenAls,
        ] {
            let t = CpConv::new(RankSpec::Fixed(2))
                .with_algorithm(alg)
                .with_lm_refinement(LmOptions::default());
            let res = t.apply(&as_layer(&conv), ActShape::new(5, 6, 6)).unwrap();
            // LM from any of these starts reaches the planted solution.
            assert!(
                res.report.weight_error.unwrap() < 1e-5,
                "{alg:?}: {:?}",
                res.report.weight_error
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn never_panics(n in 1usize..5, c in 1usize..4, k in 1usize..4, rank in 0usize..40,
                        three in any::<bool>(), groups in 1usize..3) {
            let w: Array4<f32> = SeededRng::new(7).normal_array((n * groups, c, k, k), 1.0);
            let conv = ConvLayer::from_array(w, ConvSpec::new().with_padding(1).with_groups(groups)).unwrap();
            let variant = if three { CpVariant::ThreeWay } else { CpVariant::FourWay };
            let t = CpConv::new(RankSpec::Fixed(rank)).with_variant(variant)
                .with_als_options(CpOptions::default().with_max_iter(3));
            let r = t.apply(&as_layer(&conv), ActShape::new(c * groups, 3, 3));
            let shape: Vec<usize> = if three { vec![n, c, k * k] } else { vec![n, c, k, k] };
            let valid = groups == 1 && rank >= 1 && rank <= max_cp_rank(&shape);
            prop_assert_eq!(r.is_ok(), valid, "{:?}", r.err());
        }
    }
}
