//! Tucker decomposition by higher-order orthogonal iteration (HOOI), and the
//! Tucker-2 block of Kim et al. \[24\] (survey section 2).
//!
//! [`partial_tucker`] factors any N-way tensor over a chosen set of modes:
//! `X ≈ G ×_{n∈modes} U_n` with orthonormal `U_n` (HOSVD start, then HOOI:
//! `U_n ←` leading left singular vectors of `(X ×_{k≠n} U_kᵀ)_(n)`).
//!
//! [`Tucker2`] applies it to the two channel modes of a kernel,
//! `W ≈ G ×_0 U_out ×_1 U_in`, giving the block `1×1 C→R₁`, `d×d R₁→R₂`
//! (the layer's stride/padding/dilation), `1×1 R₂→N` (bias). Kim et al. pick
//! the ranks by EVBMF on the two unfoldings; energy, target speed-up or fixed
//! ranks are also available.

use hasten_core::error::{Error, Result};
use hasten_core::linalg;
use hasten_core::ndarray::{s, Array2, Array4, ArrayD, Ix4};
use hasten_core::{ActShape, Block, Compressed, ConvLayer, Layer, Transform};

use crate::common::{conv_op, dense_conv, kernel_error, pointwise_op};
use crate::rank::{RankProblem, RankSpec};
use crate::tensor::{check_tensor, mode_product, norm, unfold};

/// Options of [`partial_tucker`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TuckerOptions {
    /// HOOI sweeps after the HOSVD start (0: plain truncated HOSVD).
    pub max_iter: usize,
    /// Stop when the relative error decreases by less than this (default
    /// `1e-6`: HOOI gains little after its first sweeps).
    pub tol: f64,
}

impl Default for TuckerOptions {
    fn default() -> Self {
        TuckerOptions {
            max_iter: 10,
            tol: 1e-6,
        }
    }
}

/// A (partial) Tucker decomposition.
#[derive(Debug, Clone)]
pub struct TuckerResult {
    /// The core tensor (decomposed modes shrunk to their ranks).
    pub core: ArrayD<f64>,
    /// `(mode, U)` with `U` of shape `I_mode × rank`, orthonormal columns.
    pub factors: Vec<(usize, Array2<f64>)>,
    /// Relative error after each HOOI sweep (of the HOSVD when `max_iter = 0`).
    pub error_history: Vec<f64>,
}

impl TuckerResult {
    /// The full tensor `G ×_n U_n`.
    pub fn to_tensor(&self) -> Result<ArrayD<f64>> {
        let mut t = self.core.clone();
        for (mode, u) in &self.factors {
            t = mode_product(&t, u.view(), *mode)?;
        }
        Ok(t)
    }
}

/// Leading `r` left singular vectors of `m` (through the eigenvectors of
/// `m mᵀ`, which share them), as an `rows × r` matrix, and the energy they
/// capture (`‖Uᵀ m‖²`, the sum of the `r` largest eigenvalues).
fn leading_subspace(m: &Array2<f64>, r: usize) -> Result<(Array2<f64>, f64)> {
    leading_gram(&m.dot(&m.t()), r)
}

/// Tucker decomposition of `tensor` over `modes` with `ranks[i]` for
/// `modes[i]` (`1 ≤ rank ≤ I_mode`, modes distinct): HOSVD start, then
/// HOOI sweeps (section 2, Kim et al. \[24\]).
///
/// # Errors
/// [`Error::ShapeMismatch`] for a tensor of order below 2 or when `modes`
/// is empty or not as long as `ranks`, [`Error::EmptyDimension`] or
/// [`Error::NonFinite`] for an empty or non-finite tensor,
/// [`Error::InvalidParameter`] for a repeated or out-of-range mode or a
/// negative or non-finite `tol`, and [`Error::InvalidRank`] for a rank
/// outside `1..=I_mode`.
///
/// ```
/// use hasten_core::{ndarray::IxDyn, SeededRng};
/// use hasten_tensor_decomp::partial_tucker;
/// use hasten_tensor_decomp::tucker::TuckerOptions;
///
/// let x = SeededRng::new(0).normal_array_f64(IxDyn(&[4, 5, 6]), 1.0);
/// let t = partial_tucker(&x, &[0, 2], &[2, 3], &TuckerOptions::default())?;
/// assert_eq!(t.core.shape(), &[2, 5, 3]);
/// assert_eq!(t.to_tensor()?.shape(), x.shape());
/// // Full ranks on the decomposed modes reproduce the tensor.
/// let full = partial_tucker(&x, &[0, 2], &[4, 6], &TuckerOptions::default())?;
/// let err = (&full.to_tensor()? - &x).iter().fold(0.0f64, |e, v| e.max(v.abs()));
/// assert!(err < 1e-10);
/// assert!(partial_tucker(&x, &[0, 0], &[2, 2], &TuckerOptions::default()).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn partial_tucker(
    tensor: &ArrayD<f64>,
    modes: &[usize],
    ranks: &[usize],
    options: &TuckerOptions,
) -> Result<TuckerResult> {
    check_tensor("Tucker input", tensor)?;
    if modes.is_empty() || modes.len() != ranks.len() {
        return Err(Error::shape(
            "Tucker ranks (one per decomposed mode)",
            modes.len(),
            ranks.len(),
        ));
    }
    for (i, (&m, &r)) in modes.iter().zip(ranks).enumerate() {
        if m >= tensor.ndim() || modes[..i].contains(&m) {
            return Err(Error::param(
                "Tucker mode",
                m,
                format!("distinct modes in 0..{}", tensor.ndim()),
            ));
        }
        let max = tensor.shape()[m];
        if r == 0 || r > max {
            return Err(Error::InvalidRank { rank: r, max });
        }
    }
    if !(options.tol >= 0.0 && options.tol.is_finite()) {
        return Err(Error::param("tol", options.tol, "a finite value >= 0"));
    }
    let norm_x = norm(tensor);
    let norm2 = norm_x * norm_x;
    let error = |energy: f64| -> f64 {
        if norm_x == 0.0 {
            0.0
        } else {
            (norm2 - energy).max(0.0).sqrt() / norm_x
        }
    };
    let project = |factors: &[Array2<f64>], skip: Option<usize>| -> Result<ArrayD<f64>> {
        let mut t = tensor.clone();
        for (i, (&m, u)) in modes.iter().zip(factors).enumerate() {
            if Some(i) != skip {
                t = mode_product(&t, u.t(), m)?;
            }
        }
        Ok(t)
    };
    // HOSVD start. The first sweep recomputes the first mode's factor from
    // the others, so with HOOI sweeps only the other modes need a start.
    let first = usize::from(options.max_iter > 0);
    let mut factors: Vec<Array2<f64>> = Vec::with_capacity(modes.len());
    for (i, (&m, &r)) in modes.iter().zip(ranks).enumerate() {
        factors.push(if i < first {
            Array2::zeros((tensor.shape()[m], r))
        } else {
            leading_subspace(&unfold(tensor, m)?, r)?.0
        });
    }
    if options.max_iter == 0 {
        let core = project(&factors, None)?;
        let c = norm(&core);
        return Ok(TuckerResult {
            core,
            factors: modes.iter().copied().zip(factors).collect(),
            error_history: vec![error(c * c)],
        });
    }
    let last = modes.len() - 1;
    let mut history: Vec<f64> = Vec::with_capacity(options.max_iter);
    let mut last_projection = None;
    for _ in 0..options.max_iter {
        let mut energy = 0.0;
        for i in 0..modes.len() {
            let y = project(&factors, Some(i))?;
            let (u, e) = leading_subspace(&unfold(&y, modes[i])?, ranks[i])?;
            factors[i] = u;
            energy = e;
            if i == last {
                last_projection = Some(y);
            }
        }
        // ‖core‖² is the energy the last update captured.
        let e = error(energy);
        let prev = history.last().copied();
        history.push(e);
        if prev.is_some_and(|p| (p - e).abs() < options.tol) {
            break;
        }
    }
    let y = last_projection.expect("max_iter >= 1");
    let core = mode_product(&y, factors[last].t(), modes[last])?;
    Ok(TuckerResult {
        core,
        factors: modes.iter().copied().zip(factors).collect(),
        error_history: history,
    })
}

/// Tucker-2 decomposition of a convolution (Kim et al. \[24\]).
///
/// ```
/// use hasten_core::{ActShape, ConvLayer, ConvSpec, Layer, SeededRng, Transform};
/// use hasten_tensor_decomp::{RankSpec, Tucker2};
///
/// let w = SeededRng::new(0).normal_array((32, 16, 3, 3), 0.1);
/// let layer = Layer::from(ConvLayer::from_array(w, ConvSpec::new().with_padding(1))?);
/// let c = Tucker2::with_ranks(8, 4).apply(&layer, ActShape::new(16, 8, 8))?;
/// assert_eq!(c.block.ops().len(), 3);
/// # Ok::<(), hasten_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Tucker2 {
    rank: Tucker2Rank,
    options: TuckerOptions,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tucker2Rank {
    Spec(RankSpec),
    Explicit { output: usize, input: usize },
}

/// A fitted Tucker-2 kernel: `W ≈ core ×_0 output ×_1 input`.
#[derive(Debug, Clone)]
pub struct Tucker2Factors {
    /// Core `[R_out, R_in, kh, kw]`.
    pub core: Array4<f64>,
    /// `N × R_out`, orthonormal columns.
    pub output: Array2<f64>,
    /// `C × R_in`, orthonormal columns.
    pub input: Array2<f64>,
    /// Relative error history of HOOI.
    pub error_history: Vec<f64>,
}

impl Tucker2Factors {
    /// The kernel the factors represent; fails when the shapes disagree.
    pub fn reconstruct(&self) -> Result<Array4<f64>> {
        let core = self.core.clone().into_dyn();
        let t = mode_product(&core, self.output.view(), 0)?;
        mode_product(&t, self.input.view(), 1)?
            .into_dimensionality::<Ix4>()
            .map_err(|e| Error::shape("Tucker-2 kernel", 4, e))
    }
}

/// HOOI over the two channel modes of a kernel `[N, C, kh, kw]`
/// (`1 ≤ output_rank ≤ N`, `1 ≤ input_rank ≤ C`).
///
/// The same iteration as [`partial_tucker`] over modes 0 and 1, with the
/// contractions arranged for kernels: the kernel is stored once as
/// `X[n, (s, c)]` (`s` the spatial position), so that every step is one GEMM
/// and the Grams of both projected unfoldings are single GEMMs too.
///
/// # Errors
/// [`Error::EmptyDimension`] or [`Error::NonFinite`] for an empty or
/// non-finite kernel, [`Error::InvalidRank`] for a rank outside `1..=N` or
/// `1..=C`, and [`Error::InvalidParameter`] for a negative or non-finite
/// `tol`.
///
/// ```
/// use hasten_core::{ndarray::Array4, SeededRng};
/// use hasten_tensor_decomp::tucker2;
/// use hasten_tensor_decomp::tucker::TuckerOptions;
///
/// let w: Array4<f64> = SeededRng::new(0).normal_array_f64((8, 6, 3, 3), 1.0);
/// let f = tucker2(&w, 4, 3, &TuckerOptions::default())?;
/// assert_eq!(f.core.dim(), (4, 3, 3, 3));
/// assert_eq!((f.output.dim(), f.input.dim()), ((8, 4), (6, 3)));
/// // Full channel ranks reproduce the kernel.
/// let full = tucker2(&w, 8, 6, &TuckerOptions::default())?.reconstruct()?;
/// assert!((&full - &w).iter().all(|v| v.abs() < 1e-10));
/// assert!(tucker2(&w, 9, 3, &TuckerOptions::default()).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn tucker2(
    kernel: &Array4<f64>,
    output_rank: usize,
    input_rank: usize,
    options: &TuckerOptions,
) -> Result<Tucker2Factors> {
    check_tensor("Tucker-2 kernel", &kernel.clone().into_dyn())?;
    let (n, c, kh, kw) = kernel.dim();
    let sp = kh * kw;
    if output_rank == 0 || output_rank > n {
        return Err(Error::InvalidRank {
            rank: output_rank,
            max: n,
        });
    }
    if input_rank == 0 || input_rank > c {
        return Err(Error::InvalidRank {
            rank: input_rank,
            max: c,
        });
    }
    if !(options.tol >= 0.0 && options.tol.is_finite()) {
        return Err(Error::param("tol", options.tol, "a finite value >= 0"));
    }
    let shape_err = |e| Error::shape("Tucker-2 reshape", format!("{n} × {c} × {kh} × {kw}"), e);
    // X[n, s, c] as an N × (S·C) matrix and as an (N·S) × C matrix.
    let x_nsc = kernel
        .view()
        .into_shape_with_order((n, c, sp))
        .map_err(shape_err)?
        .permuted_axes([0, 2, 1])
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((n, sp * c))
        .map_err(shape_err)?;
    let x_rows = x_nsc
        .view()
        .into_shape_with_order((n * sp, c))
        .map_err(shape_err)?;
    let norm2: f64 = x_nsc.iter().map(|v| v * v).sum();
    let error = |energy: f64| {
        if norm2 == 0.0 {
            0.0
        } else {
            ((norm2 - energy).max(0.0) / norm2).sqrt()
        }
    };
    // Projection on the output factor: D[(s, r), c] = Σ_n U_out[n, r] X[n, s, c].
    let project_out = |u_out: &Array2<f64>| -> Result<Array2<f64>> {
        let d = u_out.t().dot(&x_nsc); // [r_out, (s, c)]
        d.into_shape_with_order((output_rank, sp, c))
            .map_err(shape_err)
            .map(|d| d.permuted_axes([1, 0, 2]).as_standard_layout().into_owned())?
            .into_shape_with_order((sp * output_rank, c))
            .map_err(shape_err)
    };
    let mut u_in = leading_gram(&x_rows.t().dot(&x_rows), input_rank)?.0;
    let mut history = Vec::new();
    let (u_out, d) = if options.max_iter == 0 {
        let u_out = leading_gram(&x_nsc.dot(&x_nsc.t()), output_rank)?.0;
        let d = project_out(&u_out)?;
        let core = d.dot(&u_in);
        history.push(error(core.iter().map(|v| v * v).sum()));
        (u_out, d)
    } else {
        let mut last = None;
        for _ in 0..options.max_iter {
            // Mode 0: B[n, (s, r)] = Σ_c X[n, s, c] U_in[c, r].
            let b = x_rows
                .dot(&u_in)
                .into_shape_with_order((n, sp * input_rank))
                .map_err(shape_err)?;
            let u_out = leading_gram(&b.dot(&b.t()), output_rank)?.0;
            // Mode 1: Gram of D over its (s, r) rows.
            let d = project_out(&u_out)?;
            let (u, energy) = leading_gram(&d.t().dot(&d), input_rank)?;
            u_in = u;
            let e = error(energy);
            let prev = history.last().copied();
            history.push(e);
            last = Some((u_out, d));
            if prev.is_some_and(|p: f64| (p - e).abs() < options.tol) {
                break;
            }
        }
        last.expect("max_iter >= 1")
    };
    // core[r_out, r_in, s] from D[(s, r_out), c] U_in[c, r_in].
    let core = d
        .dot(&u_in)
        .into_shape_with_order((sp, output_rank, input_rank))
        .map_err(shape_err)?
        .permuted_axes([1, 2, 0])
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((output_rank, input_rank, kh, kw))
        .map_err(shape_err)?;
    Ok(Tucker2Factors {
        core,
        output: u_out,
        input: u_in,
        error_history: history,
    })
}

/// Leading `r` eigenvectors (and their eigenvalue sum) of a symmetric PSD Gram.
fn leading_gram(gram: &Array2<f64>, r: usize) -> Result<(Array2<f64>, f64)> {
    let (vals, vecs) = linalg::sym_eig(gram.view())?;
    let d = vecs.ncols();
    Ok((
        vecs.slice(s![.., d - r..;-1]).to_owned(),
        vals.slice(s![d - r..]).sum(),
    ))
}

impl Tucker2 {
    /// Tucker-2 with both ranks chosen by `rank`: a fixed rank applies to
    /// both modes (≤ min(N, C)); energy and EVBMF are evaluated on each
    /// channel unfolding; a target speed-up scales both ranks in proportion
    /// to the channel counts.
    pub fn new(rank: RankSpec) -> Self {
        Tucker2 {
            rank: Tucker2Rank::Spec(rank),
            options: TuckerOptions::default(),
        }
    }

    /// Tucker-2 with explicit ranks for the output (`R₂`, ≤ N) and input
    /// (`R₁`, ≤ C) channel modes.
    pub fn with_ranks(output: usize, input: usize) -> Self {
        Tucker2 {
            rank: Tucker2Rank::Explicit { output, input },
            options: TuckerOptions::default(),
        }
    }

    /// Sets the HOOI options.
    pub fn with_options(mut self, options: TuckerOptions) -> Self {
        self.options = options;
        self
    }

    /// MACs of the block with ranks `(r_out, r_in)`.
    fn macs(conv: &ConvLayer, input: ActShape, r_out: usize, r_in: usize) -> Result<u64> {
        let [n, c, kh, kw] = conv.weight().dims();
        let out = conv.output_shape(input)?.area();
        Ok((r_in * c * input.area() + r_out * r_in * kh * kw * out + n * r_out * out) as u64)
    }

    /// Resolves `(R_out, R_in)` for a layer.
    fn ranks(&self, conv: &ConvLayer, layer: &Layer, input: ActShape) -> Result<(usize, usize)> {
        let [n, c, _, _] = conv.weight().dims();
        let spec = match self.rank {
            Tucker2Rank::Explicit { output, input } => return Ok((output, input)),
            Tucker2Rank::Spec(s) => s,
        };
        let base_macs = layer.cost(input)?.macs;
        match spec {
            RankSpec::Fixed(_) => {
                let macs = |r: usize| Self::macs(conv, input, r, r);
                let r = spec.resolve(&RankProblem {
                    method: self.name(),
                    max: n.min(c),
                    spectrum: None,
                    matrix: None,
                    base_macs,
                    macs: &macs,
                })?;
                Ok((r, r))
            }
            RankSpec::Speedup(_) => {
                let big = n.max(c);
                let split = |r: usize| ((r * n).div_ceil(big), (r * c).div_ceil(big));
                let macs = |r: usize| {
                    let (a, b) = split(r);
                    Self::macs(conv, input, a, b)
                };
                let r = spec.resolve(&RankProblem {
                    method: self.name(),
                    max: big,
                    spectrum: None,
                    matrix: None,
                    base_macs,
                    macs: &macs,
                })?;
                Ok(split(r))
            }
            RankSpec::Energy(_) | RankSpec::Evbmf => {
                let kernel = conv.weight().to_f64();
                let mut ranks = [0usize; 2];
                for mode in 0..2 {
                    let m = hasten_core::mode_unfold(&kernel, mode)?;
                    let sv: Vec<f64> = linalg::thin_svd(m.view())?.s.to_vec();
                    let none = |_: usize| Ok(0u64);
                    ranks[mode] = spec.resolve(&RankProblem {
                        method: self.name(),
                        max: m.nrows(),
                        spectrum: Some(&sv),
                        matrix: Some(m.view()),
                        base_macs,
                        macs: &none,
                    })?;
                }
                Ok((ranks[0], ranks[1]))
            }
        }
    }
}

/// The Tucker-2 block for fitted factors of `conv`'s kernel.
///
/// The core carries the kernel's whole norm while the factors are
/// orthonormal, so a kernel near the f32 limit (say, filled with 3e38) has
/// a core beyond it. Such a core is split: divided by a power of two `2^e`
/// (exact) that the output factor is multiplied by, so both hold about the
/// square root of the core's magnitude and the block computes the same map.
pub fn tucker2_block(conv: &ConvLayer, f: &Tucker2Factors) -> Result<Block> {
    let peak = f.core.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let (core, output) = if peak > BALANCE_ABOVE {
        let e = (peak.log2() / 2.0).ceil() as i32;
        let s = 2f64.powi(e);
        (f.core.mapv(|v| v / s), f.output.mapv(|v| v * s))
    } else {
        (f.core.clone(), f.output.clone())
    };
    Block::new(vec![
        pointwise_op(&f.input.t().to_owned(), None)?,
        conv_op(&core, None, *conv.spec())?,
        pointwise_op(&output, conv.bias())?,
    ])
}

/// Core magnitude above which [`tucker2_block`] moves part of the core's
/// scale into the output factor (far above any trained network's weights,
/// far below the f32 limit of 3.4e38).
const BALANCE_ABOVE: f64 = 1e30;

impl Transform for Tucker2 {
    fn name(&self) -> &str {
        "tucker2"
    }

    fn apply(&self, layer: &Layer, input: ActShape) -> Result<Compressed> {
        let conv = dense_conv(self.name(), layer)?;
        conv.output_shape(input)?;
        let (r_out, r_in) = self.ranks(conv, layer, input)?;
        let f = tucker2(&conv.weight().to_f64(), r_out, r_in, &self.options)?;
        let block = tucker2_block(conv, &f)?;
        let err = kernel_error(conv.weight(), &f.reconstruct()?)?;
        Compressed::new(self.name(), layer, block, input, Some(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::relative_error;
    use crate::testutil::{as_layer, assert_block_is_conv, layer_from, specs};
    use hasten_core::ndarray::IxDyn;
    use hasten_core::{ConvSpec, Operator, SeededRng};
    use proptest::prelude::*;

    fn orthonormal(rows: usize, cols: usize, rng: &mut SeededRng) -> Array2<f64> {
        let g: Array2<f64> = rng.normal_array_f64((rows, cols), 1.0);
        linalg::qr(g.view()).unwrap().0
    }

    /// Ported from TensorLy's `test_tucker`: at full rank the decomposition
    /// reconstructs the tensor exactly; truncated ranks give the core shape.
    #[test]
    fn tensorly_full_rank_tucker_is_exact() {
        let x = SeededRng::new(1234).normal_array_f64(IxDyn(&[3, 4, 3]), 1.0);
        let full = partial_tucker(&x, &[0, 1, 2], &[3, 4, 3], &TuckerOptions::default()).unwrap();
        assert!(relative_error(&x, &full.to_tensor().unwrap()).unwrap() < 1e-12);
        let small = partial_tucker(&x, &[0, 1, 2], &[2, 3, 1], &TuckerOptions::default()).unwrap();
        assert_eq!(small.core.shape(), &[2, 3, 1]);
        for (_, u) in &small.factors {
            let eye = u.t().dot(u);
            assert!((eye - Array2::<f64>::eye(u.ncols()))
                .iter()
                .all(|v| v.abs() < 1e-10));
        }
        // HOOI never increases the error, starts no worse than the HOSVD,
        // and its history ends at the true error.
        for w in small.error_history.windows(2) {
            assert!(w[1] <= w[0] + 1e-12);
        }
        let hosvd = partial_tucker(
            &x,
            &[0, 1, 2],
            &[2, 3, 1],
            &TuckerOptions {
                max_iter: 0,
                tol: 0.0,
            },
        )
        .unwrap();
        let true_err = |t: &TuckerResult| relative_error(&x, &t.to_tensor().unwrap()).unwrap();
        assert!((hosvd.error_history[0] - true_err(&hosvd)).abs() < 1e-9);
        assert!((small.error_history.last().unwrap() - true_err(&small)).abs() < 1e-9);
        assert!(true_err(&small) <= true_err(&hosvd) + 1e-12);
    }

    #[test]
    fn tucker2_exact_recovery_and_block_is_layer() {
        let mut rng = SeededRng::new(2);
        let (n, c, r_out, r_in) = (10, 8, 4, 3);
        let core: Array4<f64> = rng.normal_array_f64((r_out, r_in, 3, 3), 1.0);
        let f = Tucker2Factors {
            core,
            output: orthonormal(n, r_out, &mut rng),
            input: orthonormal(c, r_in, &mut rng),
            error_history: vec![],
        };
        let kernel = f.reconstruct().unwrap();
        for (i, spec) in specs().into_iter().enumerate() {
            let conv = layer_from(&kernel, spec, i as u64);
            let res = Tucker2::with_ranks(r_out, r_in)
                .apply(&as_layer(&conv), ActShape::new(c, 9, 8))
                .unwrap();
            assert!(res.report.weight_error.unwrap() < 1e-5);
            let fit = tucker2(&kernel, r_out, r_in, &TuckerOptions::default()).unwrap();
            assert_block_is_conv(&res.block, &conv, &fit.reconstruct().unwrap(), (c, 9, 8));
        }
    }

    #[test]
    fn tucker2_fast_path_equals_partial_tucker() {
        let kernel = SeededRng::new(8).normal_array_f64((9, 7, 3, 2), 1.0);
        for max_iter in [0, 1, 4] {
            let opts = TuckerOptions { max_iter, tol: 0.0 };
            let fast = tucker2(&kernel, 4, 3, &opts).unwrap();
            let general =
                partial_tucker(&kernel.clone().into_dyn(), &[0, 1], &[4, 3], &opts).unwrap();
            let a = fast.reconstruct().unwrap().into_dyn();
            let b = general.to_tensor().unwrap();
            assert!(
                relative_error(&b, &a).unwrap() < 1e-9,
                "max_iter {max_iter}"
            );
            for (x, y) in fast.error_history.iter().zip(&general.error_history) {
                assert!((x - y).abs() < 1e-9);
            }
            assert!(
                (relative_error(&kernel.clone().into_dyn(), &a).unwrap()
                    - fast.error_history.last().unwrap())
                .abs()
                    < 1e-9
            );
        }
    }

    #[test]
    fn evbmf_and_energy_find_planted_ranks() {
        let mut rng = SeededRng::new(3);
        let (n, c, r_out, r_in) = (48, 40, 6, 5);
        let f = Tucker2Factors {
            core: rng.normal_array_f64((r_out, r_in, 3, 3), 3.0),
            output: orthonormal(n, r_out, &mut rng),
            input: orthonormal(c, r_in, &mut rng),
            error_history: vec![],
        };
        let noisy = f.reconstruct().unwrap() + rng.normal_array_f64((n, c, 3, 3), 0.01);
        let conv = layer_from(&noisy, ConvSpec::new().with_padding(1), 0);
        let input = ActShape::new(c, 6, 6);
        let out_area = 36u64;
        let expected = Tucker2::macs(&conv, input, r_out, r_in).unwrap();
        let res = Tucker2::new(RankSpec::Evbmf)
            .apply(&as_layer(&conv), input)
            .unwrap();
        assert_eq!(res.report.after.macs, expected);
        let res = Tucker2::new(RankSpec::Energy(0.99))
            .apply(&as_layer(&conv), input)
            .unwrap();
        assert_eq!(res.report.after.macs, expected);
        // Speed-up: the block is at least 3× cheaper.
        let res = Tucker2::new(RankSpec::Speedup(3.0))
            .apply(&as_layer(&conv), input)
            .unwrap();
        assert!(res.report.mac_speedup() >= 3.0);
        assert!(res.report.after.macs > 0 && out_area > 0);
    }

    #[test]
    fn bad_inputs() {
        let x = SeededRng::new(1).normal_array_f64(IxDyn(&[3, 4, 2]), 1.0);
        assert!(partial_tucker(&x, &[0, 0], &[1, 1], &TuckerOptions::default()).is_err());
        assert!(partial_tucker(&x, &[0], &[4], &TuckerOptions::default()).is_err());
        assert!(partial_tucker(&x, &[3], &[1], &TuckerOptions::default()).is_err());
        assert!(partial_tucker(&x, &[0, 1], &[1], &TuckerOptions::default()).is_err());
        let conv = layer_from(&Array4::ones((4, 3, 3, 3)), ConvSpec::new(), 0);
        assert!(Tucker2::new(RankSpec::Fixed(4))
            .apply(&as_layer(&conv), ActShape::new(3, 5, 5))
            .is_err());
        assert!(Tucker2::with_ranks(5, 1)
            .apply(&as_layer(&conv), ActShape::new(3, 5, 5))
            .is_err());
        assert!(Tucker2::with_ranks(1, 0)
            .apply(&as_layer(&conv), ActShape::new(3, 5, 5))
            .is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn never_panics(n in 1usize..6, c in 1usize..6, k in 1usize..4, ro in 0usize..7, ri in 0usize..7) {
            let kernel = SeededRng::new(5).normal_array_f64((n, c, k, k), 1.0);
            let conv = layer_from(&kernel, ConvSpec::new().with_padding(1), 0);
            let r = Tucker2::with_ranks(ro, ri).apply(&as_layer(&conv), ActShape::new(c, 3, 3));
            prop_assert_eq!(r.is_ok(), ro >= 1 && ro <= n && ri >= 1 && ri <= c);
            let _ = Tucker2::new(RankSpec::Evbmf).apply(&as_layer(&conv), ActShape::new(c, 3, 3));
        }
    }

    #[test]
    fn kernels_near_the_f32_limit_are_decomposed() {
        // A finite kernel filled with 3e38: rank 1, so Tucker-2 is exact, but
        // its core (3e38 · √(N·C) ≈ 1e39) exceeds f32 unless balanced.
        let spec = ConvSpec::new().with_padding(1);
        let conv = ConvLayer::from_array(Array4::from_elem((4, 3, 3, 3), 3e38f32), spec).unwrap();
        let layer = as_layer(&conv);
        let input = ActShape::new(3, 5, 5);
        for (r_out, r_in) in [(1, 1), (2, 2)] {
            let c = Tucker2::with_ranks(r_out, r_in)
                .apply(&layer, input)
                .unwrap();
            assert!(c.report.weight_error.unwrap() < 1e-6);
            // Same map as the layer on inputs small enough not to overflow.
            let x = SeededRng::new(1).normal_array((1, 3, 5, 5), 1e-3);
            let want = conv.reference_forward(&x).unwrap();
            let got = c.block.reference_forward(&x).unwrap();
            assert!(want.iter().all(|v| v.is_finite()));
            let err = hasten_core::relative_error(&want, &got);
            assert!(err < 1e-5, "ranks ({r_out}, {r_in}): relative error {err}");
        }
        // An unbalanced core beyond f32 is reported as an internal overflow.
        let big = Array4::from_elem((1, 1, 1, 1), 1e39f64);
        match conv_op(&big, None, ConvSpec::new()) {
            Err(Error::Numerical { reason, .. }) => assert!(reason.contains("overflows f32")),
            other => panic!("expected a numerical error, got {other:?}"),
        }
    }
}
