//! Asymmetric reconstruction, Zhang et al. \[23\] (survey section 2).
//!
//! The layer's responses `y = W x + b` (`W` the `[N, C·kh·kw]` filter matrix,
//! `x` an input patch) are approximated by `M ŷ + b′`, `ŷ = W x̂`, with
//! `rank(M) ≤ K`; `x̂` are the inputs the *approximated* network feeds the
//! layer and `y` the *original* network's responses, so errors of earlier
//! approximated layers are compensated instead of accumulated. `M = P Q̃`
//! gives the block `kh×kw C→K` (filters `Q = Q̃ W`, the layer's
//! stride/padding/dilation) then `1×1 K→N` (`P`, bias `b′`).
//!
//! - Linear solution (closed form): reduced-rank regression — the
//!   unconstrained least-squares `M̂` projected on the `K` leading left
//!   singular vectors `U_K` of its fitted values: `P = U_K`, `Q̃ = U_Kᵀ M̂`.
//! - Non-linear solution: minimises `Σ ‖r(y_i) − r(M ŷ_i + b′)‖²` with
//!   `r = ReLU` by the relaxation of \[23\]: auxiliary responses `z_i`,
//!   alternately solving for `(M, b′)` (the linear problem with targets `z`)
//!   and for `z` (element-wise closed form), with the penalty weight `λ`
//!   growing from `λ₀` to `λ₁` geometrically.

use hasten_core::error::{ensure_finite, ensure_nonempty, Error, Result};
use hasten_core::linalg;
use hasten_core::ndarray::{s, Array1, Array2, Array4, ArrayView2, Axis};
use hasten_core::{ActShape, Block, Compressed, ConvLayer, Layer, SeededRng, Transform};

use crate::common::{conv_op, dense_conv, matrix_error, pointwise_op};
use crate::rank::{RankProblem, RankSpec};

/// Options of the asymmetric reconstruction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AsymmetricOptions {
    /// Solve the ReLU-aware (non-linear) problem after the linear one.
    pub nonlinear: bool,
    /// Alternations of the non-linear solver.
    pub iterations: usize,
    /// Initial penalty weight `λ₀ > 0`.
    pub lambda_start: f64,
    /// Final penalty weight `λ₁ ≥ λ₀`.
    pub lambda_end: f64,
}

impl Default for AsymmetricOptions {
    fn default() -> Self {
        AsymmetricOptions {
            nonlinear: false,
            iterations: 25,
            lambda_start: 0.01,
            lambda_end: 1.0,
        }
    }
}

impl AsymmetricOptions {
    fn validate(&self) -> Result<()> {
        if !(self.lambda_start > 0.0 && self.lambda_start.is_finite()) {
            return Err(Error::param(
                "lambda_start",
                self.lambda_start,
                "a finite value > 0",
            ));
        }
        if !(self.lambda_end >= self.lambda_start && self.lambda_end.is_finite()) {
            return Err(Error::param(
                "lambda_end",
                self.lambda_end,
                format!("a finite value >= lambda_start ({})", self.lambda_start),
            ));
        }
        Ok(())
    }
}

/// The fitted low-rank pair.
#[derive(Debug, Clone)]
pub struct AsymmetricResult {
    /// First convolution's filters `Q`, `[K, C·kh·kw]`.
    pub first: Array2<f64>,
    /// Second (1×1) convolution `P`, `[N, K]`.
    pub second: Array2<f64>,
    /// New bias `b′`, `[N]`.
    pub bias: Array1<f64>,
    /// `Σ‖y − ỹ‖² / Σ‖y‖²` of the linear responses after the linear solution.
    pub linear_error: f64,
    /// `Σ‖r(y) − r(ỹ)‖² / Σ‖r(y)‖²` after the linear solution and after every
    /// non-linear alternation; the returned factors are those of the minimum.
    pub relu_error_history: Vec<f64>,
}

impl AsymmetricResult {
    /// The approximated filter matrix `P Q`.
    pub fn filter_matrix(&self) -> Array2<f64> {
        self.second.dot(&self.first)
    }
}

/// Draws `count` receptive-field patches of `layer` from `input` (NCHW) at
/// random output positions (seeded), flattened in the `(c, i, j)` order of
/// [`hasten_core::Conv4d::filter_matrix`]; out-of-image taps are zero.
pub fn sample_patches(
    layer: &ConvLayer,
    input: &Array4<f32>,
    count: usize,
    seed: u64,
) -> Result<Array2<f32>> {
    let shape = hasten_core::op::input_shape_of(input)?;
    let out = layer.output_shape(shape)?;
    if count == 0 {
        return Err(Error::param("patch count", 0, ">= 1"));
    }
    ensure_finite("input activations", input.iter())?;
    let [_, c, kh, kw] = layer.weight().dims();
    let spec = layer.spec();
    let batch = input.shape()[0];
    let mut rng = SeededRng::new(seed);
    let mut patches = Array2::<f32>::zeros((count, c * kh * kw));
    for p in 0..count {
        let n = rng.below(batch);
        let y = rng.below(out.height);
        let x = rng.below(out.width);
        for ch in 0..c {
            for i in 0..kh {
                let iy =
                    (y * spec.stride.0 + i * spec.dilation.0) as isize - spec.padding.top as isize;
                for j in 0..kw {
                    let ix = (x * spec.stride.1 + j * spec.dilation.1) as isize
                        - spec.padding.left as isize;
                    if iy >= 0
                        && ix >= 0
                        && (iy as usize) < shape.height
                        && (ix as usize) < shape.width
                    {
                        patches[[p, (ch * kh + i) * kw + j]] =
                            input[[n, ch, iy as usize, ix as usize]];
                    }
                }
            }
        }
    }
    Ok(patches)
}

/// The layer's responses `W x + b` to patches `[S, C·kh·kw]`: `[S, N]`.
pub fn layer_responses(layer: &ConvLayer, patches: ArrayView2<f32>) -> Result<Array2<f32>> {
    let w = layer.weight().filter_matrix().mapv(f64::from);
    if patches.ncols() != w.ncols() {
        return Err(Error::shape(
            "patch length (C·kh·kw)",
            w.ncols(),
            patches.ncols(),
        ));
    }
    let mut y = patches.mapv(f64::from).dot(&w.t());
    if let Some(b) = layer.bias() {
        y += &b.mapv(f64::from).insert_axis(Axis(0));
    }
    Ok(y.mapv(|v| v as f32))
}

fn relu(v: f64) -> f64 {
    v.max(0.0)
}

/// Reduced-rank regression of `targets` (`[S, N]`) on `predictors` (`[S, N]`)
/// with intercept: returns `(P = U_K, Q̃ = U_Kᵀ M̂, b′)`.
fn reduced_rank(
    predictors: &Array2<f64>,
    targets: &Array2<f64>,
    rank: usize,
) -> Result<(Array2<f64>, Array2<f64>, Array1<f64>)> {
    let p_mean = predictors.mean_axis(Axis(0)).expect("non-empty");
    let t_mean = targets.mean_axis(Axis(0)).expect("non-empty");
    let xc = predictors - &p_mean.view().insert_axis(Axis(0));
    let yc = targets - &t_mean.view().insert_axis(Axis(0));
    // M̂ᵀ = argmin ‖Xc M̂ᵀ − Yc‖ (minimum norm).
    let mt = linalg::lstsq(xc.view(), yc.view())?;
    let fitted = xc.dot(&mt); // [S, N]
    let (_vals, vecs) = linalg::sym_eig(fitted.t().dot(&fitted).view())?;
    let n = vecs.ncols();
    let u = vecs.slice(s![.., n - rank..;-1]).to_owned(); // [N, K]
    let q = u.t().dot(&mt.t()); // [K, N]
    let m = u.dot(&q);
    let bias = &t_mean - &m.dot(&p_mean);
    Ok((u, q, bias))
}

/// The fitted values of the unconstrained regression of the centred
/// `targets` on the centred `predictors`, in the coordinates of an
/// orthonormal basis `Q` of the predictors' column space: `Qᵀ·y_c`
/// (`rank × N`). Its singular values are those of the fitted values
/// `Q·Qᵀ·y_c` (for energy rank selection), and i.i.d. noise in the targets
/// stays i.i.d. in it — the noise model of EVBMF. Over the `S × N` fitted
/// values the noise is confined to `rank` dimensions, and EVBMF, reading it
/// as noise spread over `S × N`, underestimates it and keeps noise
/// components.
fn fitted_coordinates(predictors: &Array2<f64>, targets: &Array2<f64>) -> Result<Array2<f64>> {
    let p_mean = predictors.mean_axis(Axis(0)).expect("non-empty");
    let t_mean = targets.mean_axis(Axis(0)).expect("non-empty");
    let xc = predictors - &p_mean.view().insert_axis(Axis(0));
    let yc = targets - &t_mean.view().insert_axis(Axis(0));
    let svd = linalg::thin_svd(xc.view())?;
    // Numerical rank, as a least-squares solver counts it.
    let tol =
        svd.s.first().copied().unwrap_or(0.0) * xc.nrows().max(xc.ncols()) as f64 * f64::EPSILON;
    let rank = svd.s.iter().filter(|&&v| v > tol).count();
    Ok(svd.u.slice(s![.., ..rank]).t().dot(&yc))
}

fn check_samples(
    layer: &ConvLayer,
    patches: ArrayView2<f32>,
    targets: ArrayView2<f32>,
) -> Result<()> {
    let [n, c, kh, kw] = layer.weight().dims();
    ensure_nonempty("activation patches", patches.shape())?;
    ensure_nonempty("target responses", targets.shape())?;
    if patches.ncols() != c * kh * kw {
        return Err(Error::shape(
            "patch length (C·kh·kw)",
            c * kh * kw,
            patches.ncols(),
        ));
    }
    if targets.ncols() != n {
        return Err(Error::shape(
            "target responses per sample (N)",
            n,
            targets.ncols(),
        ));
    }
    if targets.nrows() != patches.nrows() {
        return Err(Error::shape(
            "target samples (one per patch)",
            patches.nrows(),
            targets.nrows(),
        ));
    }
    ensure_finite("activation patches", patches.iter())?;
    ensure_finite("target responses", targets.iter())
}

/// Fits the rank-`rank` pair for `layer` from input patches `x̂` (`[S, C·kh·kw]`,
/// as the approximated network produces them) and target responses `y`
/// (`[S, N]`, the original network's pre-activation responses).
pub fn asymmetric_reconstruction(
    layer: &ConvLayer,
    patches: ArrayView2<f32>,
    targets: ArrayView2<f32>,
    rank: usize,
    options: &AsymmetricOptions,
) -> Result<AsymmetricResult> {
    dense_conv("asymmetric reconstruction", &Layer::Conv(layer.clone()))?;
    check_samples(layer, patches, targets)?;
    options.validate()?;
    let w = layer.weight().filter_matrix().mapv(f64::from);
    let n = w.nrows();
    let max = n.min(w.ncols());
    if rank == 0 || rank > max {
        return Err(Error::InvalidRank { rank, max });
    }
    let y_hat = patches.mapv(f64::from).dot(&w.t()); // ŷ = W x̂
    let y = targets.mapv(f64::from);
    let ry = y.mapv(relu);
    let ry_norm = ry.iter().map(|v| v * v).sum::<f64>().max(f64::MIN_POSITIVE);
    let predict = |p: &Array2<f64>, q: &Array2<f64>, b: &Array1<f64>| -> Array2<f64> {
        y_hat.dot(&p.dot(q).t()) + b.view().insert_axis(Axis(0))
    };
    let relu_error = |pred: &Array2<f64>| -> f64 {
        pred.iter()
            .zip(ry.iter())
            .map(|(&a, &b)| (relu(a) - b).powi(2))
            .sum::<f64>()
            / ry_norm
    };
    let (mut p, mut q, mut b) = reduced_rank(&y_hat, &y, rank)?;
    let pred = predict(&p, &q, &b);
    let y_norm = y.iter().map(|v| v * v).sum::<f64>().max(f64::MIN_POSITIVE);
    let linear_error = (&pred - &y).iter().map(|v| v * v).sum::<f64>() / y_norm;
    let mut history = vec![relu_error(&pred)];
    let mut best = (history[0], p.clone(), q.clone(), b.clone());
    if options.nonlinear && options.iterations > 0 {
        let steps = options.iterations.max(2) - 1;
        let growth = (options.lambda_end / options.lambda_start).powf(1.0 / steps as f64);
        let mut lambda = options.lambda_start;
        let mut current = pred;
        for _ in 0..options.iterations {
            // z-step: element-wise minimiser of (r(y) − r(z))² + λ(z − z′)².
            let z = Array2::from_shape_fn(current.dim(), |(i, j)| {
                let (t, zp) = (ry[[i, j]], current[[i, j]]);
                let z0 = zp.min(0.0);
                let c0 = t * t + lambda * (z0 - zp).powi(2);
                let z1 = ((t + lambda * zp) / (1.0 + lambda)).max(0.0);
                let c1 = (t - z1).powi(2) + lambda * (z1 - zp).powi(2);
                if c0 <= c1 {
                    z0
                } else {
                    z1
                }
            });
            (p, q, b) = reduced_rank(&y_hat, &z, rank)?;
            current = predict(&p, &q, &b);
            let e = relu_error(&current);
            history.push(e);
            if e < best.0 {
                best = (e, p.clone(), q.clone(), b.clone());
            }
            lambda *= growth;
        }
    }
    let (_, p, q, b) = best;
    Ok(AsymmetricResult {
        first: q.dot(&w),
        second: p,
        bias: b,
        linear_error,
        relu_error_history: history,
    })
}

/// Asymmetric reconstruction of a convolution from activation samples.
///
/// # Errors
/// [`Transform::apply`] fails with
/// [`Error::Unsupported`] for a fully connected or grouped layer,
/// [`Error::ShapeMismatch`] when the patches or targets do not fit the layer,
/// [`Error::NonFinite`] for a NaN or infinity in them, [`Error::InvalidRank`]
/// for a rank outside `1..=min(N, C·kh·kw)`, and with the input-shape errors of
/// the layer.
///
/// ```
/// use hasten_core::{ActShape, ConvLayer, ConvSpec, Layer, SeededRng, Transform};
/// use hasten_tensor_decomp::asymmetric::{layer_responses, sample_patches};
/// use hasten_tensor_decomp::{AsymmetricReconstruction, RankSpec};
///
/// let mut rng = SeededRng::new(0);
/// let conv = ConvLayer::from_array(rng.normal_array((8, 3, 3, 3), 0.1), ConvSpec::new().with_padding(1))?;
/// let x = rng.normal_array((2, 3, 8, 8), 1.0);
/// let patches = sample_patches(&conv, &x, 200, 1)?;
/// let targets = layer_responses(&conv, patches.view())?;
/// let t = AsymmetricReconstruction::new(RankSpec::Fixed(4), patches, targets);
/// let c = t.apply(&Layer::from(conv), ActShape::new(3, 8, 8))?;
/// assert_eq!(c.block.ops().len(), 2);
/// # Ok::<(), hasten_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct AsymmetricReconstruction {
    rank: RankSpec,
    patches: Array2<f32>,
    targets: Array2<f32>,
    options: AsymmetricOptions,
}

impl AsymmetricReconstruction {
    /// From input patches `x̂` (`[S, C·kh·kw]`) and target responses `y`
    /// (`[S, N]`); see [`sample_patches`] and [`layer_responses`].
    pub fn new(rank: RankSpec, patches: Array2<f32>, targets: Array2<f32>) -> Self {
        AsymmetricReconstruction {
            rank,
            patches,
            targets,
            options: AsymmetricOptions::default(),
        }
    }

    /// Sets the options.
    pub fn with_options(mut self, options: AsymmetricOptions) -> Self {
        self.options = options;
        self
    }

    /// Enables the ReLU-aware solution.
    pub fn nonlinear(mut self, on: bool) -> Self {
        self.options.nonlinear = on;
        self
    }
}

impl Transform for AsymmetricReconstruction {
    fn name(&self) -> &str {
        if self.options.nonlinear {
            "asymmetric-nonlinear"
        } else {
            "asymmetric-linear"
        }
    }

    fn apply(&self, layer: &Layer, input: ActShape) -> Result<Compressed> {
        let conv = dense_conv(self.name(), layer)?;
        let out = conv.output_shape(input)?;
        check_samples(conv, self.patches.view(), self.targets.view())?;
        let [t, c, kh, kw] = conv.weight().dims();
        let area = out.area() as u64;
        let macs = |r: usize| Ok(r as u64 * (c * kh * kw + t) as u64 * area);
        let needs_fit = matches!(self.rank, RankSpec::Energy(_) | RankSpec::Evbmf);
        let (fitted, spectrum) = if needs_fit {
            let w = conv.weight().filter_matrix().mapv(f64::from);
            let y_hat = self.patches.mapv(f64::from).dot(&w.t());
            let f = fitted_coordinates(&y_hat, &self.targets.mapv(f64::from))?;
            let s = linalg::thin_svd(f.view())?.s.to_vec();
            (Some(f), s)
        } else {
            (None, Vec::new())
        };
        let rank = self.rank.resolve(&RankProblem {
            method: self.name(),
            max: t.min(c * kh * kw),
            spectrum: needs_fit.then_some(spectrum.as_slice()),
            matrix: fitted.as_ref().map(|f| f.view()),
            base_macs: layer.cost(input)?.macs,
            macs: &macs,
        })?;
        let fit = asymmetric_reconstruction(
            conv,
            self.patches.view(),
            self.targets.view(),
            rank,
            &self.options,
        )?;
        let spatial = fit
            .first
            .clone()
            .into_shape_with_order((rank, c, kh, kw))
            .map_err(|e| Error::shape("asymmetric first kernel", rank, e))?;
        let bias = fit.bias.mapv(|v| v as f32);
        let block = Block::new(vec![
            conv_op(&spatial, None, *conv.spec())?,
            pointwise_op(&fit.second, Some(&bias))?,
        ])?;
        let w = conv.weight().filter_matrix().mapv(f64::from);
        let err = matrix_error(&w, &fit.filter_matrix());
        Compressed::new(self.name(), layer, block, input, Some(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{as_layer, assert_block_is_conv, layer_from};
    use hasten_core::{Conv4d, ConvSpec};
    use proptest::prelude::*;

    fn low_rank_layer(n: usize, c: usize, r: usize, spec: ConvSpec, seed: u64) -> ConvLayer {
        let mut rng = SeededRng::new(seed);
        let a: Array2<f64> = rng.normal_array_f64((n, r), 1.0);
        let b: Array2<f64> = rng.normal_array_f64((r, c * 9), 1.0);
        layer_from(
            &a.dot(&b).into_shape_with_order((n, c, 3, 3)).unwrap(),
            spec,
            seed,
        )
    }

    #[test]
    fn linear_solution_recovers_low_rank_layer_and_block_is_layer() {
        let spec = ConvSpec::new().with_padding(1).with_stride(2);
        let layer = low_rank_layer(10, 4, 3, spec, 1);
        let x: Array4<f32> = SeededRng::new(2).normal_array((4, 4, 9, 9), 1.0);
        let patches = sample_patches(&layer, &x, 300, 3).unwrap();
        let targets = layer_responses(&layer, patches.view()).unwrap();
        let t = AsymmetricReconstruction::new(RankSpec::Fixed(3), patches.clone(), targets.clone());
        let res = t.apply(&as_layer(&layer), ActShape::new(4, 9, 9)).unwrap();
        assert!(
            res.report.weight_error.unwrap() < 1e-5,
            "{:?}",
            res.report.weight_error
        );
        let fit = asymmetric_reconstruction(
            &layer,
            patches.view(),
            targets.view(),
            3,
            &AsymmetricOptions::default(),
        )
        .unwrap();
        // Bias recovered too: the block is the layer itself.
        let b = layer.bias().unwrap().mapv(f64::from);
        assert!((&fit.bias - &b).iter().all(|d| d.abs() < 1e-4));
        let kernel = fit
            .filter_matrix()
            .into_shape_with_order((10, 4, 3, 3))
            .unwrap();
        let rebuilt = ConvLayer::new(
            Conv4d::from_f64(&kernel).unwrap(),
            Some(fit.bias.mapv(|v| v as f32)),
            spec,
        )
        .unwrap();
        assert_block_is_conv(&res.block, &rebuilt, &kernel, (4, 9, 9));
        let direct = Block::single(layer.clone()).reference_forward(&x).unwrap();
        assert!(crate::testutil::rel(&res.block.reference_forward(&x).unwrap(), &direct) < 1e-4);
    }

    #[test]
    fn evbmf_picks_the_planted_rank_of_the_fitted_responses() {
        // A rank-3 layer observed through responses with white noise 100×
        // below the signal. In the coordinates of the predictors' column
        // space the fitted responses are a 24 × 24 matrix of 3 components
        // near 100 plus i.i.d. noise (top singular value ≈ σ·2√24 ≈ 0.1),
        // below EVBMF's threshold, so EVBMF picks rank 3, which Table 1's
        // cost R·(C·k² + N) per pixel shows. Over the 300 × 24 fitted values
        // themselves (noise confined to 24 of 300 dimensions) EVBMF took the
        // noise for smaller than it is and kept noise components.
        let spec = ConvSpec::new().with_padding(1).with_stride(2);
        let (n, c, r) = (24, 8, 3);
        let layer = low_rank_layer(n, c, r, spec, 5);
        let x: Array4<f32> = SeededRng::new(6).normal_array((4, c, 9, 9), 1.0);
        let patches = sample_patches(&layer, &x, 300, 7).unwrap();
        let clean = layer_responses(&layer, patches.view()).unwrap();
        let noisy = &clean + &SeededRng::new(8).normal_array(clean.dim(), 0.01);
        let input = ActShape::new(c, 9, 9);
        let area = layer.output_shape(input).unwrap().area();
        let res = AsymmetricReconstruction::new(RankSpec::Evbmf, patches, noisy)
            .apply(&as_layer(&layer), input)
            .unwrap();
        assert_eq!(res.report.after.macs, (r * (c * 9 + n) * area) as u64);
    }

    #[test]
    fn asymmetric_targets_beat_symmetric_fit() {
        // x̂ = x + noise (an approximated earlier layer); targets from x.
        let layer = layer_from(
            &SeededRng::new(4).normal_array_f64((12, 4, 3, 3), 1.0),
            ConvSpec::new(),
            4,
        );
        let mut rng = SeededRng::new(5);
        let x: Array2<f32> = rng.normal_array((400, 36), 1.0);
        let x_hat = &x + &rng.normal_array::<_, hasten_core::ndarray::Ix2>((400, 36), 0.5);
        let y = layer_responses(&layer, x.view()).unwrap();
        let y_sym = layer_responses(&layer, x_hat.view()).unwrap();
        let opts = AsymmetricOptions::default();
        let asym = asymmetric_reconstruction(&layer, x_hat.view(), y.view(), 4, &opts).unwrap();
        let sym = asymmetric_reconstruction(&layer, x_hat.view(), y_sym.view(), 4, &opts).unwrap();
        let err = |f: &AsymmetricResult| {
            let pred = x_hat.mapv(f64::from).dot(&f.filter_matrix().t())
                + f.bias.view().insert_axis(Axis(0));
            let d = &pred - &y.mapv(f64::from);
            d.iter().map(|v| v * v).sum::<f64>()
        };
        assert!(
            err(&asym) < 0.95 * err(&sym),
            "{} vs {}",
            err(&asym),
            err(&sym)
        );
        assert!(
            (asym.linear_error - err(&asym) / y.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>())
                .abs()
                < 1e-9
        );
    }

    #[test]
    fn nonlinear_solution_lowers_relu_error() {
        let layer = layer_from(
            &SeededRng::new(6).normal_array_f64((16, 4, 3, 3), 1.0),
            ConvSpec::new(),
            6,
        );
        let x: Array2<f32> = SeededRng::new(7).normal_array((500, 36), 1.0);
        let y = layer_responses(&layer, x.view()).unwrap();
        let opts = AsymmetricOptions {
            nonlinear: true,
            ..AsymmetricOptions::default()
        };
        let fit = asymmetric_reconstruction(&layer, x.view(), y.view(), 5, &opts).unwrap();
        let start = fit.relu_error_history[0];
        let best = fit
            .relu_error_history
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        assert!(best < 0.95 * start, "{start} → {best}");
        // The returned factors achieve the best ReLU error.
        let pred =
            x.mapv(f64::from).dot(&fit.filter_matrix().t()) + fit.bias.view().insert_axis(Axis(0));
        let ry = y.mapv(|v| f64::from(v).max(0.0));
        let e = pred
            .iter()
            .zip(ry.iter())
            .map(|(&a, &b)| (a.max(0.0) - b).powi(2))
            .sum::<f64>()
            / ry.iter().map(|v| v * v).sum::<f64>();
        assert!((e - best).abs() < 1e-9);
    }

    #[test]
    fn nonlinear_solution_reaches_a_planted_zero_relu_error() {
        // Targets whose positive parts are exactly those of a rank-3 map of
        // ŷ = W x̂ plus a bias, with unrelated negative values elsewhere: the
        // ReLU objective has a known optimum of zero (checked directly), the
        // linear fit does not (it chases the negative values), and the
        // non-linear solver must reach that optimum.
        let layer = layer_from(
            &SeededRng::new(8).normal_array_f64((8, 4, 3, 3), 1.0),
            ConvSpec::new(),
            8,
        );
        let mut rng = SeededRng::new(9);
        let x: Array2<f32> = rng.normal_array((600, 36), 1.0);
        let w = layer.weight().filter_matrix().mapv(f64::from);
        let y_hat = x.mapv(f64::from).dot(&w.t());
        let m_star = rng
            .normal_array_f64((8, 3), 0.5)
            .dot(&rng.normal_array_f64((3, 8), 0.5));
        let b_star = rng.normal_array_f64(8, 0.5);
        let planted = y_hat.dot(&m_star.t()) + b_star.view().insert_axis(Axis(0));
        let y = planted.mapv(|v| {
            if v > 0.0 {
                v as f32
            } else {
                // Any non-positive value has the same ReLU.
                (v * 3.0 - 1.0) as f32
            }
        });
        let relu_err = |pred: &Array2<f64>| {
            let ry = y.mapv(|v| f64::from(v).max(0.0));
            pred.iter()
                .zip(ry.iter())
                .map(|(&a, &b)| (a.max(0.0) - b).powi(2))
                .sum::<f64>()
                / ry.iter().map(|v| v * v).sum::<f64>()
        };
        // The planted optimum (up to the f32 rounding of the targets).
        assert!(relu_err(&planted) < 1e-12);
        // The default λ schedule (0.01 → 1); the error falls geometrically
        // and needs about 200 alternations to pass 1e-6.
        let opts = AsymmetricOptions {
            nonlinear: true,
            iterations: 200,
            ..AsymmetricOptions::default()
        };
        let fit = asymmetric_reconstruction(&layer, x.view(), y.view(), 3, &opts).unwrap();
        let start = fit.relu_error_history[0];
        assert!(start > 1e-2, "the linear fit is already exact: {start}");
        let pred =
            x.mapv(f64::from).dot(&fit.filter_matrix().t()) + fit.bias.view().insert_axis(Axis(0));
        let reached = relu_err(&pred);
        assert!(reached < 1e-6, "{start} → {reached}");
        // And it found the planted map itself: M* W and b*.
        let want = m_star.dot(&w);
        let d = &fit.filter_matrix() - &want;
        let rel =
            (d.iter().map(|v| v * v).sum::<f64>() / want.iter().map(|v| v * v).sum::<f64>()).sqrt();
        let bias = (&fit.bias - &b_star)
            .iter()
            .map(|v| v * v)
            .sum::<f64>()
            .sqrt()
            / b_star.iter().map(|v| v * v).sum::<f64>().sqrt();
        // A squared relative response error below 1e-6 leaves the parameters
        // off by about its square root, 1e-3, relative to their size.
        assert!(rel < 1e-3, "filter matrix off by {rel}");
        assert!(bias < 1e-3, "bias off by {bias}");
    }

    #[test]
    fn mismatched_samples_are_errors() {
        let layer = low_rank_layer(6, 2, 2, ConvSpec::new(), 1);
        let good_p = Array2::<f32>::ones((10, 18));
        let good_t = Array2::<f32>::ones((10, 6));
        let input = ActShape::new(2, 5, 5);
        for (p, t) in [
            (Array2::<f32>::ones((10, 17)), good_t.clone()),
            (good_p.clone(), Array2::<f32>::ones((10, 5))),
            (good_p.clone(), Array2::<f32>::ones((9, 6))),
            (Array2::<f32>::ones((0, 18)), Array2::<f32>::ones((0, 6))),
        ] {
            let e = AsymmetricReconstruction::new(RankSpec::Fixed(1), p, t)
                .apply(&as_layer(&layer), input);
            assert!(
                matches!(
                    e,
                    Err(Error::ShapeMismatch { .. }) | Err(Error::EmptyDimension { .. })
                ),
                "{e:?}"
            );
        }
        let mut nan = good_p.clone();
        nan[[0, 0]] = f32::NAN;
        assert!(
            AsymmetricReconstruction::new(RankSpec::Fixed(1), nan, good_t.clone())
                .apply(&as_layer(&layer), input)
                .is_err()
        );
        assert!(
            AsymmetricReconstruction::new(RankSpec::Fixed(7), good_p.clone(), good_t.clone())
                .apply(&as_layer(&layer), input)
                .is_err()
        );
        let bad = AsymmetricOptions {
            lambda_start: 0.0,
            ..AsymmetricOptions::default()
        };
        assert!(asymmetric_reconstruction(&layer, good_p.view(), good_t.view(), 1, &bad).is_err());
        assert!(sample_patches(&layer, &Array4::zeros((1, 2, 5, 5)), 0, 0).is_err());
        assert!(sample_patches(&layer, &Array4::zeros((1, 3, 5, 5)), 3, 0).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn never_panics(s in 0usize..20, cols in 17usize..20, n_t in 5usize..8, rank in 0usize..8, nonlinear in any::<bool>()) {
            let layer = low_rank_layer(6, 2, 2, ConvSpec::new(), 1);
            let p: Array2<f32> = SeededRng::new(9).normal_array((s, cols), 1.0);
            let t: Array2<f32> = SeededRng::new(10).normal_array((s, n_t), 1.0);
            let r = AsymmetricReconstruction::new(RankSpec::Fixed(rank), p, t).nonlinear(nonlinear)
                .apply(&as_layer(&layer), ActShape::new(2, 5, 5));
            prop_assert_eq!(r.is_ok(), s >= 1 && cols == 18 && n_t == 6 && (1..=6).contains(&rank));
        }
    }
}
