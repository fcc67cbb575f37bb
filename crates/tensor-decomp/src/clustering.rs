//! Clustering approximations of Denton et al. \[17\] (survey section 2,
//! Table 1): the kernel's slices are clustered and each cluster is
//! approximated separately.
//!
//! - [`Monochromatic`]: each filter `W_n ∈ R^{C×d²}` is approximated by its
//!   rank-1 part `c_n w_nᵀ`; the colour vectors `c_n` are clustered into
//!   `C₁` centroids. Block: `1×1 C→C₁`, a channel gather routing centroid
//!   `k(n)` to output `n`, `d×d` depthwise on `N`: `C·C₁ + N·d²` MACs per pixel.
//! - [`BiclusterSvd`]: input channels in `G` balanced clusters, output
//!   channels in `H`; every sub-tensor `W_S ∈ R^{N′×C′×d×d}` is approximated
//!   by two SVDs (`C′ × d²N′` at rank `K₁`, then `K₁d² × N′` at rank `K₂`).
//!   Block: gather, grouped `1×1` (`G` groups, `C → G·H·K₁`), grouped `d×d`
//!   (`G·H` groups, `K₁ → K₂`), gather, grouped `1×1` (`H` groups,
//!   `G·K₂ → N′`), gather: `C·H·K₁ + G·H·K₁K₂d² + N·G·K₂` MACs per pixel.
//! - [`BiclusterCp`]: same clustering, each sub-tensor `[N′, C′, d²]` by a
//!   rank-`K` CP (outer-product) decomposition: grouped `1×1`, depthwise
//!   `d×d`, grouped `1×1`: `K(C·H + G·H·d² + G·N)` MACs per pixel.
//!
//! Table 1 writes the biclustering counts as `C C₁ K₁ + C₁N₁K₁K₂d² + N N₁ K₂`
//! and `K(C C₁ + C₁N₁d² + N₁N)`: there `C₁ = H` is the number of clusters
//! each input channel feeds (the output clusters) and `N₁ = G` the number of
//! clusters each output gathers from (the input clusters) — the same reading
//! that makes the monochromatic row `C C₁ + N d²`, `C₁` its output (colour)
//! clusters.

use hasten_core::error::{Error, Result};
use hasten_core::linalg;
use hasten_core::ndarray::{s, Array1, Array2, Array4, IxDyn};
use hasten_core::{ActShape, Block, ChannelGather, Compressed, ConvLayer, Layer, Transform};

use crate::common::{conv_op, dense_conv, kernel_error, pointwise_op, with_groups};
use crate::cp::{cp_als, max_cp_rank, CpOptions};
use crate::kmeans::kmeans;
use crate::rank::{RankProblem, RankSpec};

const KMEANS_ITERATIONS: usize = 50;

/// Monochromatic approximation with `clusters` colour centroids (\[17\], §3.1).
///
/// # Errors
/// [`Transform::apply`] fails with
/// [`Error::Unsupported`] for a fully connected or grouped layer,
/// [`Error::InvalidParameter`] for `clusters` outside `1..=N`, and with the
/// input-shape errors of the layer.
///
/// ```
/// use hasten_core::{ActShape, ConvLayer, ConvSpec, Layer, SeededRng, Transform};
/// use hasten_tensor_decomp::Monochromatic;
///
/// let w = SeededRng::new(0).normal_array((8, 3, 3, 3), 0.1);
/// let layer = Layer::from(ConvLayer::from_array(w, ConvSpec::new().with_padding(1))?);
/// let c = Monochromatic::new(4).apply(&layer, ActShape::new(3, 8, 8))?;
/// assert_eq!(c.block.output_shape(ActShape::new(3, 8, 8))?, ActShape::new(8, 8, 8));
/// assert!(Monochromatic::new(0).apply(&layer, ActShape::new(3, 8, 8)).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Monochromatic {
    clusters: usize,
    seed: u64,
}

impl Monochromatic {
    /// `clusters` (`C₁`, 1 ≤ C₁ ≤ N) colour centroids; k-means seeded with 0.
    pub fn new(clusters: usize) -> Self {
        Monochromatic { clusters, seed: 0 }
    }

    /// Sets the k-means seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// Fitted monochromatic factors.
#[derive(Debug, Clone)]
pub struct MonochromaticFactors {
    /// Centroid colours `[C₁, C]`.
    pub colours: Array2<f64>,
    /// Cluster of each output filter.
    pub assignment: Vec<usize>,
    /// Monochrome filters `[N, kh, kw]`.
    pub filters: Array2<f64>,
    /// Kernel height and width.
    pub kernel_hw: (usize, usize),
}

impl MonochromaticFactors {
    /// The kernel `W[n, c] = colour[k(n), c] · filter[n]`; fails when the
    /// parts do not fit together.
    pub fn reconstruct(&self) -> Result<Array4<f64>> {
        let (kh, kw) = self.kernel_hw;
        let n = self.filters.nrows();
        let c = self.colours.ncols();
        if self.assignment.len() != n
            || self.filters.ncols() != kh * kw
            || self.assignment.iter().any(|&k| k >= self.colours.nrows())
        {
            return Err(Error::shape(
                "monochromatic factors",
                format!(
                    "{n} assignments below {} and {n} × {} filters",
                    self.colours.nrows(),
                    kh * kw
                ),
                format!(
                    "{} assignments and {} × {} filters",
                    self.assignment.len(),
                    n,
                    self.filters.ncols()
                ),
            ));
        }
        Ok(Array4::from_shape_fn((n, c, kh, kw), |(o, ch, i, j)| {
            self.colours[[self.assignment[o], ch]] * self.filters[[o, i * kw + j]]
        }))
    }
}

/// Fits the monochromatic approximation to a kernel `[N, C, kh, kw]`.
pub fn fit_monochromatic(
    kernel: &Array4<f64>,
    clusters: usize,
    seed: u64,
) -> Result<MonochromaticFactors> {
    let (n, c, kh, kw) = kernel.dim();
    if clusters == 0 || clusters > n {
        return Err(Error::param(
            "colour clusters",
            clusters,
            format!("1..={n} (output channels)"),
        ));
    }
    let mut colours = Array2::<f64>::zeros((n, c));
    for o in 0..n {
        let wn = kernel
            .slice(s![o, .., .., ..])
            .to_owned()
            .into_shape_with_order((c, kh * kw))
            .expect("standard");
        let svd = linalg::thin_svd(wn.view())?;
        let mut u = svd.u.column(0).to_owned();
        // Fix the sign: the largest-magnitude entry positive.
        let big = u
            .iter()
            .copied()
            .fold(0.0f64, |a, b| if b.abs() > a.abs() { b } else { a });
        if big < 0.0 {
            u.mapv_inplace(|v| -v);
        }
        colours.row_mut(o).assign(&u);
    }
    let assignment = kmeans(&colours, clusters, false, seed, KMEANS_ITERATIONS)?;
    let mut centroids = Array2::<f64>::zeros((clusters, c));
    for k in 0..clusters {
        let members: Vec<usize> = (0..n).filter(|&o| assignment[o] == k).collect();
        if members.is_empty() {
            continue;
        }
        for &o in &members {
            let row = colours.row(o).to_owned();
            centroids.row_mut(k).zip_mut_with(&row, |a, &b| *a += b);
        }
        centroids
            .row_mut(k)
            .mapv_inplace(|v| v / members.len() as f64);
    }
    // Least-squares monochrome filter for the centroid colour.
    let mut filters = Array2::<f64>::zeros((n, kh * kw));
    for o in 0..n {
        let ck = centroids.row(assignment[o]);
        let norm2 = ck.dot(&ck);
        if norm2 == 0.0 {
            continue;
        }
        let wn = kernel
            .slice(s![o, .., .., ..])
            .to_owned()
            .into_shape_with_order((c, kh * kw))
            .expect("standard");
        filters.row_mut(o).assign(&(ck.dot(&wn) / norm2));
    }
    Ok(MonochromaticFactors {
        colours: centroids,
        assignment,
        filters,
        kernel_hw: (kh, kw),
    })
}

impl Transform for Monochromatic {
    fn name(&self) -> &str {
        "monochromatic"
    }

    fn apply(&self, layer: &Layer, input: ActShape) -> Result<Compressed> {
        let conv = dense_conv(self.name(), layer)?;
        conv.output_shape(input)?;
        let kernel = conv.weight().to_f64();
        let (n, _, kh, kw) = kernel.dim();
        let f = fit_monochromatic(&kernel, self.clusters, self.seed)?;
        let depthwise = f
            .filters
            .clone()
            .into_shape_with_order((n, 1, kh, kw))
            .map_err(|e| Error::shape("monochrome filters", n, e))?;
        let block = Block::new(vec![
            pointwise_op(&f.colours, None)?,
            ChannelGather::new(f.assignment.clone(), self.clusters)?.into(),
            conv_op(&depthwise, conv.bias(), with_groups(conv.spec(), n))?,
        ])?;
        let err = kernel_error(conv.weight(), &f.reconstruct()?)?;
        Compressed::new(self.name(), layer, block, input, Some(err))
    }
}

/// The balanced biclustering of a kernel's channels.
#[derive(Debug, Clone)]
struct Biclusters {
    /// Input channels ordered cluster by cluster (`G` clusters of `C′`).
    inputs: Vec<usize>,
    /// Output channels ordered cluster by cluster (`H` clusters of `N′`).
    outputs: Vec<usize>,
    g: usize,
    h: usize,
}

impl Biclusters {
    fn new(kernel: &Array4<f64>, g: usize, h: usize, seed: u64) -> Result<Self> {
        let (n, c, kh, kw) = kernel.dim();
        let by_input = kernel
            .view()
            .permuted_axes([1, 0, 2, 3])
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((c, n * kh * kw))
            .expect("standard");
        let by_output = kernel
            .clone()
            .into_shape_with_order((n, c * kh * kw))
            .expect("standard");
        let ai = kmeans(&by_input, g, true, seed, KMEANS_ITERATIONS).map_err(|e| {
            Error::param(
                "input clusters",
                g,
                format!("a divisor of the input channels {c}: {e}"),
            )
        })?;
        let ao =
            kmeans(&by_output, h, true, seed.wrapping_add(1), KMEANS_ITERATIONS).map_err(|e| {
                Error::param(
                    "output clusters",
                    h,
                    format!("a divisor of the output channels {n}: {e}"),
                )
            })?;
        let order = |a: &[usize], k: usize| -> Vec<usize> {
            (0..k)
                .flat_map(|cl| (0..a.len()).filter(move |&i| a[i] == cl))
                .collect()
        };
        Ok(Biclusters {
            inputs: order(&ai, g),
            outputs: order(&ao, h),
            g,
            h,
        })
    }

    fn c_per(&self) -> usize {
        self.inputs.len() / self.g
    }

    fn n_per(&self) -> usize {
        self.outputs.len() / self.h
    }

    /// Sub-tensor of bicluster `(g, h)`: `[N′, C′, kh, kw]`.
    fn sub(&self, kernel: &Array4<f64>, g: usize, h: usize) -> Array4<f64> {
        let (cp, np) = (self.c_per(), self.n_per());
        let (_, _, kh, kw) = kernel.dim();
        Array4::from_shape_fn((np, cp, kh, kw), |(o, i, y, x)| {
            kernel[[self.outputs[h * np + o], self.inputs[g * cp + i], y, x]]
        })
    }

    /// Gather from `(g, h, k)` channel order to `(h, g, k)`.
    fn regroup(&self, k: usize) -> Result<ChannelGather> {
        let idx = (0..self.h)
            .flat_map(|h| {
                (0..self.g).flat_map(move |g| (0..k).map(move |r| (g * self.h + h) * k + r))
            })
            .collect();
        ChannelGather::new(idx, self.g * self.h * k)
    }

    /// Gather restoring the original output order.
    fn restore(&self) -> Result<ChannelGather> {
        let mut pos = vec![0; self.outputs.len()];
        for (p, &o) in self.outputs.iter().enumerate() {
            pos[o] = p;
        }
        ChannelGather::new(pos, self.outputs.len())
    }

    /// Permuted bias for the last grouped convolution.
    fn bias(&self, conv: &ConvLayer) -> Option<Array1<f32>> {
        conv.bias()
            .map(|b| self.outputs.iter().map(|&o| b[o]).collect())
    }

    /// The block both biclustering approximations share: gather the inputs
    /// cluster by cluster, grouped `1×1` `w1` (`G` groups), the spatial `w2`
    /// with `conv`'s stride, padding and dilation in `spatial_groups` groups,
    /// regroup its `(g, h, ·)` channels of width `regroup_width` to
    /// `(h, g, ·)`, grouped `1×1` `w3` (`H` groups) with the permuted bias,
    /// and restore the original output order.
    fn block(
        &self,
        conv: &ConvLayer,
        w1: &Array4<f64>,
        w2: &Array4<f64>,
        spatial_groups: usize,
        regroup_width: usize,
        w3: &Array4<f64>,
    ) -> Result<Block> {
        let [_, in_channels, _, _] = conv.weight().dims();
        Block::new(vec![
            ChannelGather::new(self.inputs.clone(), in_channels)?.into(),
            conv_op(w1, None, hasten_core::ConvSpec::new().with_groups(self.g))?,
            conv_op(w2, None, with_groups(conv.spec(), spatial_groups))?,
            self.regroup(regroup_width)?.into(),
            conv_op(
                w3,
                self.bias(conv).as_ref(),
                hasten_core::ConvSpec::new().with_groups(self.h),
            )?,
            self.restore()?.into(),
        ])
    }

    fn scatter(&self, kernel: &mut Array4<f64>, sub: &Array4<f64>, g: usize, h: usize) {
        let (cp, np) = (self.c_per(), self.n_per());
        for ((o, i, y, x), &v) in sub.indexed_iter() {
            kernel[[self.outputs[h * np + o], self.inputs[g * cp + i], y, x]] = v;
        }
    }
}

/// Biclustering + SVD (\[17\], §3.2).
///
/// # Errors
/// [`Transform::apply`] fails with
/// [`Error::Unsupported`] for a fully connected or grouped layer, with
/// [`Error::InvalidParameter`] or [`Error::InvalidRank`] when the cluster
/// counts do not divide the channels or a rank is out of its range, and with
/// the input-shape errors of the layer.
///
/// ```
/// use hasten_core::{ActShape, ConvLayer, ConvSpec, Layer, SeededRng, Transform};
/// use hasten_tensor_decomp::BiclusterSvd;
///
/// let w = SeededRng::new(0).normal_array((8, 6, 3, 3), 0.1);
/// let layer = Layer::from(ConvLayer::from_array(w, ConvSpec::new().with_padding(1))?);
/// // 3 input clusters of 2 channels, 2 output clusters of 4 filters.
/// let c = BiclusterSvd::new(3, 2, 2, 2).apply(&layer, ActShape::new(6, 8, 8))?;
/// assert_eq!(c.block.output_shape(ActShape::new(6, 8, 8))?, ActShape::new(8, 8, 8));
/// assert!(BiclusterSvd::new(4, 2, 2, 2).apply(&layer, ActShape::new(6, 8, 8)).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct BiclusterSvd {
    input_clusters: usize,
    output_clusters: usize,
    k1: usize,
    k2: usize,
    seed: u64,
}

impl BiclusterSvd {
    /// `G = input_clusters` (divides C), `H = output_clusters` (divides N),
    /// first rank `K₁ ≤ min(C′, d²N′)`, second rank `K₂ ≤ min(K₁d², N′)`.
    pub fn new(input_clusters: usize, output_clusters: usize, k1: usize, k2: usize) -> Self {
        BiclusterSvd {
            input_clusters,
            output_clusters,
            k1,
            k2,
            seed: 0,
        }
    }

    /// Sets the k-means seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Fits the factors and returns the block and the reconstructed kernel.
    pub fn fit(&self, conv: &ConvLayer) -> Result<(Block, Array4<f64>)> {
        let kernel = conv.weight().to_f64();
        let (n, c, kh, kw) = kernel.dim();
        let bc = Biclusters::new(
            &kernel,
            self.input_clusters,
            self.output_clusters,
            self.seed,
        )?;
        let (g_n, h_n, cp, np, d2) = (bc.g, bc.h, bc.c_per(), bc.n_per(), kh * kw);
        let (k1, k2) = (self.k1, self.k2);
        let max1 = cp.min(d2 * np);
        if k1 == 0 || k1 > max1 {
            return Err(Error::InvalidRank {
                rank: k1,
                max: max1,
            });
        }
        let max2 = (k1 * d2).min(np);
        if k2 == 0 || k2 > max2 {
            return Err(Error::InvalidRank {
                rank: k2,
                max: max2,
            });
        }
        let mut w1 = Array4::<f64>::zeros((g_n * h_n * k1, cp, 1, 1));
        let mut w2 = Array4::<f64>::zeros((g_n * h_n * k2, k1, kh, kw));
        let mut w3 = Array4::<f64>::zeros((n, g_n * k2, 1, 1));
        let mut recon = Array4::<f64>::zeros((n, c, kh, kw));
        for g in 0..g_n {
            for h in 0..h_n {
                let sub = bc.sub(&kernel, g, h);
                // C′ × (d² N′): rows c′, columns (i, j, n′).
                let m1 = sub
                    .view()
                    .permuted_axes([1, 2, 3, 0])
                    .as_standard_layout()
                    .into_owned()
                    .into_shape_with_order((cp, d2 * np))
                    .expect("standard");
                let svd1 = linalg::thin_svd(m1.view())?;
                let (u1, r1) = crate::common::balanced_factors(&svd1, k1);
                // (K₁ d²) × N′.
                let m2 = r1
                    .into_shape_with_order((k1 * d2, np))
                    .map_err(|e| Error::shape("bicluster SVD", k1, e))?;
                let svd2 = linalg::thin_svd(m2.view())?;
                let (p, q) = crate::common::balanced_factors(&svd2, k2);
                let gh = g * h_n + h;
                for k in 0..k1 {
                    for i in 0..cp {
                        w1[[gh * k1 + k, i, 0, 0]] = u1[[i, k]];
                    }
                }
                for k in 0..k2 {
                    for a in 0..k1 {
                        for y in 0..kh {
                            for x in 0..kw {
                                w2[[gh * k2 + k, a, y, x]] = p[[(a * kh + y) * kw + x, k]];
                            }
                        }
                    }
                }
                for o in 0..np {
                    for k in 0..k2 {
                        w3[[h * np + o, g * k2 + k, 0, 0]] = q[[k, o]];
                    }
                }
                let approx = u1
                    .dot(
                        &p.dot(&q)
                            .into_shape_with_order((k1, d2 * np))
                            .expect("standard"),
                    )
                    .into_shape_with_order((cp, kh, kw, np))
                    .expect("standard")
                    .permuted_axes([3, 0, 1, 2])
                    .as_standard_layout()
                    .into_owned();
                bc.scatter(&mut recon, &approx, g, h);
            }
        }
        let block = bc.block(conv, &w1, &w2, g_n * h_n, k2, &w3)?;
        Ok((block, recon))
    }
}

impl Transform for BiclusterSvd {
    fn name(&self) -> &str {
        "bicluster-svd"
    }

    fn apply(&self, layer: &Layer, input: ActShape) -> Result<Compressed> {
        let conv = dense_conv(self.name(), layer)?;
        conv.output_shape(input)?;
        let (block, recon) = self.fit(conv)?;
        let err = kernel_error(conv.weight(), &recon)?;
        Compressed::new(self.name(), layer, block, input, Some(err))
    }
}

/// Biclustering + outer product (rank-`K` CP per bicluster) (\[17\], §3.2).
///
/// # Errors
/// As [`BiclusterSvd`]; the rank may be fixed or a target speed-up.
///
/// ```
/// use hasten_core::{ActShape, ConvLayer, ConvSpec, Layer, SeededRng, Transform};
/// use hasten_tensor_decomp::{BiclusterCp, RankSpec};
///
/// let w = SeededRng::new(0).normal_array((8, 6, 3, 3), 0.1);
/// let layer = Layer::from(ConvLayer::from_array(w, ConvSpec::new().with_padding(1))?);
/// let c = BiclusterCp::new(3, 2, RankSpec::Fixed(2)).apply(&layer, ActShape::new(6, 8, 8))?;
/// assert_eq!(c.block.output_shape(ActShape::new(6, 8, 8))?, ActShape::new(8, 8, 8));
/// assert!(BiclusterCp::new(3, 3, RankSpec::Fixed(2)).apply(&layer, ActShape::new(6, 8, 8)).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct BiclusterCp {
    input_clusters: usize,
    output_clusters: usize,
    rank: RankSpec,
    options: CpOptions,
    seed: u64,
}

impl BiclusterCp {
    /// `G = input_clusters` (divides C), `H = output_clusters` (divides N),
    /// CP rank per bicluster from `rank` (fixed or target speed-up).
    pub fn new(input_clusters: usize, output_clusters: usize, rank: RankSpec) -> Self {
        BiclusterCp {
            input_clusters,
            output_clusters,
            rank,
            options: CpOptions::default(),
            seed: 0,
        }
    }

    /// Sets the CP-ALS options of each bicluster.
    pub fn with_cp_options(mut self, options: CpOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets the k-means seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Fits rank-`k` factors and returns the block and the reconstructed kernel.
    pub fn fit(&self, conv: &ConvLayer, k: usize) -> Result<(Block, Array4<f64>)> {
        let kernel = conv.weight().to_f64();
        let (n, c, kh, kw) = kernel.dim();
        let bc = Biclusters::new(
            &kernel,
            self.input_clusters,
            self.output_clusters,
            self.seed,
        )?;
        let (g_n, h_n, cp, np, d2) = (bc.g, bc.h, bc.c_per(), bc.n_per(), kh * kw);
        let max = max_cp_rank(&[np, cp, d2]);
        if k == 0 || k > max {
            return Err(Error::InvalidRank { rank: k, max });
        }
        let mut w1 = Array4::<f64>::zeros((g_n * h_n * k, cp, 1, 1));
        let mut w2 = Array4::<f64>::zeros((g_n * h_n * k, 1, kh, kw));
        let mut w3 = Array4::<f64>::zeros((n, g_n * k, 1, 1));
        let mut recon = Array4::<f64>::zeros((n, c, kh, kw));
        for g in 0..g_n {
            for h in 0..h_n {
                let sub = bc.sub(&kernel, g, h);
                let x = sub
                    .clone()
                    .into_shape_with_order(IxDyn(&[np, cp, d2]))
                    .expect("standard");
                let fit = if sub.iter().all(|&v| v == 0.0) {
                    None
                } else {
                    Some(cp_als(&x, k, &self.options)?.cp.balanced()?)
                };
                let gh = g * h_n + h;
                if let Some(f) = &fit {
                    for r in 0..k {
                        for i in 0..cp {
                            w1[[gh * k + r, i, 0, 0]] = f.factors[1][[i, r]];
                        }
                        for y in 0..kh {
                            for xx in 0..kw {
                                w2[[gh * k + r, 0, y, xx]] = f.factors[2][[y * kw + xx, r]];
                            }
                        }
                        for o in 0..np {
                            w3[[h * np + o, g * k + r, 0, 0]] = f.factors[0][[o, r]];
                        }
                    }
                    let approx = f
                        .to_tensor()?
                        .into_shape_with_order((np, cp, kh, kw))
                        .map_err(|e| Error::shape("bicluster CP", np, e))?;
                    bc.scatter(&mut recon, &approx, g, h);
                }
            }
        }
        let block = bc.block(conv, &w1, &w2, g_n * h_n * k, k, &w3)?;
        Ok((block, recon))
    }
}

impl Transform for BiclusterCp {
    fn name(&self) -> &str {
        "bicluster-cp"
    }

    fn apply(&self, layer: &Layer, input: ActShape) -> Result<Compressed> {
        let conv = dense_conv(self.name(), layer)?;
        let out = conv.output_shape(input)?;
        let [n, c, kh, kw] = conv.weight().dims();
        let (g, h) = (self.input_clusters, self.output_clusters);
        if g == 0 || c % g != 0 {
            return Err(Error::param(
                "input clusters",
                g,
                format!("a divisor of the input channels {c}"),
            ));
        }
        if h == 0 || n % h != 0 {
            return Err(Error::param(
                "output clusters",
                h,
                format!("a divisor of the output channels {n}"),
            ));
        }
        let macs = |k: usize| {
            Ok(
                (k * (c * h * input.area() + g * h * kh * kw * out.area() + n * g * out.area()))
                    as u64,
            )
        };
        let k = self.rank.resolve(&RankProblem {
            method: self.name(),
            max: max_cp_rank(&[n / h, c / g, kh * kw]),
            spectrum: None,
            matrix: None,
            base_macs: layer.cost(input)?.macs,
            macs: &macs,
        })?;
        let (block, recon) = self.fit(conv, k)?;
        let err = kernel_error(conv.weight(), &recon)?;
        Compressed::new(self.name(), layer, block, input, Some(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{as_layer, assert_block_is_conv, layer_from, specs};
    use hasten_core::{ConvSpec, SeededRng};
    use proptest::prelude::*;

    #[test]
    fn monochromatic_is_exact_on_planted_colours_and_matches_table1() {
        // Filters = one of 3 colours ⊗ a monochrome filter.
        let (n, c, d, c1, h) = (12, 3, 3, 3, 7);
        let mut rng = SeededRng::new(1);
        let colours: Array2<f64> = rng.normal_array_f64((c1, c), 1.0);
        let mono: Array2<f64> = rng.normal_array_f64((n, d * d), 1.0);
        let kernel = Array4::from_shape_fn((n, c, d, d), |(o, ch, i, j)| {
            colours[[o % c1, ch]] * mono[[o, i * d + j]]
        });
        for (i, spec) in specs().into_iter().enumerate() {
            let conv = layer_from(&kernel, spec, i as u64);
            let res = Monochromatic::new(c1)
                .apply(&as_layer(&conv), ActShape::new(c, 9, 8))
                .unwrap();
            assert!(
                res.report.weight_error.unwrap() < 1e-6,
                "{:?}",
                res.report.weight_error
            );
            let f = fit_monochromatic(&kernel, c1, 0).unwrap();
            assert_block_is_conv(&res.block, &conv, &f.reconstruct().unwrap(), (c, 9, 8));
        }
        let conv = layer_from(&kernel, ConvSpec::new().with_padding(1), 0);
        let res = Monochromatic::new(c1)
            .apply(&as_layer(&conv), ActShape::new(c, h, h))
            .unwrap();
        // Table 1: C·C₁ + N·d² per pixel.
        assert_eq!(res.report.after.macs, ((c * c1 + n * d * d) * h * h) as u64);
    }

    #[test]
    fn bicluster_svd_full_ranks_are_exact_and_match_table1() {
        let (n, c, d, g, hh) = (8, 6, 3, 2, 4);
        let kernel = SeededRng::new(2).normal_array_f64((n, c, d, d), 1.0);
        let (cp, np) = (c / g, n / hh);
        for (i, spec) in specs().into_iter().enumerate() {
            let conv = layer_from(&kernel, spec, i as u64);
            // K₁ = C′ and K₂ = N′ keep every sub-tensor exactly.
            let t = BiclusterSvd::new(g, hh, cp, np);
            let res = t.apply(&as_layer(&conv), ActShape::new(c, 9, 8)).unwrap();
            assert!(res.report.weight_error.unwrap() < 1e-6);
            assert_block_is_conv(&res.block, &conv, &kernel, (c, 9, 8));
            // Truncated ranks: the block is the reconstructed kernel.
            let (block, recon) = BiclusterSvd::new(g, hh, 2, 1).fit(&conv).unwrap();
            assert_block_is_conv(&block, &conv, &recon, (c, 9, 8));
        }
        let (k1, k2, h) = (2, 1, 6);
        let conv = layer_from(&kernel, ConvSpec::new().with_padding(1), 0);
        let res = BiclusterSvd::new(g, hh, k1, k2)
            .apply(&as_layer(&conv), ActShape::new(c, h, h))
            .unwrap();
        // Table 1 with C₁ = H, N₁ = G: C·C₁·K₁ + C₁·N₁·K₁·K₂·d² + N·N₁·K₂.
        let (c_1, n_1) = (hh, g);
        let per_pixel = c * c_1 * k1 + c_1 * n_1 * k1 * k2 * d * d + n * n_1 * k2;
        assert_eq!(res.report.after.macs, (per_pixel * h * h) as u64);
    }

    #[test]
    fn biclustering_finds_interleaved_planted_clusters() {
        // Channels of one (output cluster, input cluster) pair share one
        // 3×3 filter, and the clusters are interleaved: every sub-tensor of
        // the planted partition has rank 1 in both channel modes, so rank
        // K₁ = K₂ = 1 is exact (and CP rank 1 per bicluster) exactly when the
        // transform recovers that partition; any other balanced partition
        // mixes different filters in a bicluster.
        let (n, c, d, g, hh) = (8, 6, 3, 3, 2);
        let input_cluster = [2, 0, 1, 1, 2, 0];
        let output_cluster = [1, 0, 0, 1, 1, 0, 1, 0];
        let proto = SeededRng::new(11).normal_array_f64((hh, g, d, d), 1.0);
        let kernel = Array4::from_shape_fn((n, c, d, d), |(o, i, y, x)| {
            proto[[output_cluster[o], input_cluster[i], y, x]]
        });
        let conv = layer_from(&kernel, ConvSpec::new().with_padding(1), 0);
        let input = ActShape::new(c, 6, 6);
        for seed in 0..4 {
            let svd = BiclusterSvd::new(g, hh, 1, 1)
                .with_seed(seed)
                .apply(&as_layer(&conv), input)
                .unwrap();
            assert!(svd.report.weight_error.unwrap() < 1e-6, "seed {seed}");
            let cp = BiclusterCp::new(g, hh, RankSpec::Fixed(1))
                .with_seed(seed)
                .apply(&as_layer(&conv), input)
                .unwrap();
            assert!(cp.report.weight_error.unwrap() < 1e-6, "seed {seed}");
        }
        // Control: a different scale for every (o, i) filter breaks the
        // rank-1 biclusters, and the same ranks are then far from exact.
        let mixed = Array4::from_shape_fn((n, c, d, d), |(o, i, y, x)| {
            proto[[output_cluster[o], input_cluster[i], y, x]] * (1.0 + (o * c + i) as f64 * 0.1)
        });
        let conv = layer_from(&mixed, ConvSpec::new().with_padding(1), 0);
        let svd = BiclusterSvd::new(g, hh, 1, 1)
            .apply(&as_layer(&conv), input)
            .unwrap();
        assert!(svd.report.weight_error.unwrap() > 1e-3);
    }

    #[test]
    fn bicluster_cp_block_and_table1() {
        let (n, c, d, g, hh, k, h) = (8, 6, 3, 3, 2, 2, 5);
        let kernel = SeededRng::new(3).normal_array_f64((n, c, d, d), 1.0);
        for (i, spec) in specs().into_iter().enumerate() {
            let conv = layer_from(&kernel, spec, i as u64);
            let (block, recon) = BiclusterCp::new(g, hh, RankSpec::Fixed(k))
                .fit(&conv, k)
                .unwrap();
            assert_block_is_conv(&block, &conv, &recon, (c, 9, 8));
        }
        let conv = layer_from(&kernel, ConvSpec::new().with_padding(1), 0);
        let res = BiclusterCp::new(g, hh, RankSpec::Fixed(k))
            .apply(&as_layer(&conv), ActShape::new(c, h, h))
            .unwrap();
        let (c_1, n_1) = (hh, g);
        assert_eq!(
            res.report.after.macs,
            (k * (c * c_1 + c_1 * n_1 * d * d + n_1 * n) * h * h) as u64
        );
        // Exact on a kernel whose biclusters have CP rank ≤ K: a kernel of CP rank 1.
        let mut rng = SeededRng::new(4);
        let (a, b, e) = (
            rng.normal_array_f64(n, 1.0),
            rng.normal_array_f64(c, 1.0),
            rng.normal_array_f64(d * d, 1.0),
        );
        let r1 = Array4::from_shape_fn((n, c, d, d), |(o, i, y, x)| a[o] * b[i] * e[y * d + x]);
        let conv = layer_from(&r1, ConvSpec::new().with_padding(1), 0);
        let res = BiclusterCp::new(g, hh, RankSpec::Fixed(1))
            .apply(&as_layer(&conv), ActShape::new(c, h, h))
            .unwrap();
        assert!(res.report.weight_error.unwrap() < 1e-6);
    }

    #[test]
    fn bad_cluster_counts_and_ranks() {
        let kernel = SeededRng::new(5).normal_array_f64((8, 6, 3, 3), 1.0);
        let conv = layer_from(&kernel, ConvSpec::new().with_padding(1), 0);
        let l = as_layer(&conv);
        let input = ActShape::new(6, 5, 5);
        assert!(Monochromatic::new(0).apply(&l, input).is_err());
        assert!(Monochromatic::new(9).apply(&l, input).is_err());
        assert!(BiclusterSvd::new(4, 2, 1, 1).apply(&l, input).is_err());
        assert!(BiclusterSvd::new(2, 3, 1, 1).apply(&l, input).is_err());
        assert!(BiclusterSvd::new(2, 2, 4, 1).apply(&l, input).is_err());
        assert!(BiclusterSvd::new(2, 2, 1, 0).apply(&l, input).is_err());
        assert!(BiclusterCp::new(2, 2, RankSpec::Fixed(0))
            .apply(&l, input)
            .is_err());
        assert!(BiclusterCp::new(0, 2, RankSpec::Fixed(1))
            .apply(&l, input)
            .is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn never_panics(c1 in 0usize..10, g in 0usize..7, h in 0usize..9, k1 in 0usize..5, k2 in 0usize..5) {
            let kernel = SeededRng::new(6).normal_array_f64((8, 6, 3, 3), 1.0);
            let conv = layer_from(&kernel, ConvSpec::new().with_padding(1), 0);
            let l = as_layer(&conv);
            let input = ActShape::new(6, 4, 4);
            prop_assert_eq!(Monochromatic::new(c1).apply(&l, input).is_ok(), (1..=8).contains(&c1));
            let ok_clusters = g >= 1 && 6 % g == 0 && h >= 1 && 8 % h == 0;
            let r = BiclusterSvd::new(g, h, k1, k2).apply(&l, input);
            if !ok_clusters { prop_assert!(r.is_err()); }
            let r = BiclusterCp::new(g, h, RankSpec::Fixed(k1)).apply(&l, input);
            if !ok_clusters || k1 == 0 { prop_assert!(r.is_err()); }
        }
    }
}
