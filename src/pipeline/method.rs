//! [`Method`]: the per-layer compression methods a recipe step can name,
//! with their parameters, and the one function that turns a method into its
//! [`Transform`]. Decompositions are the survey's section 2 (Table 1),
//! quantizers section 5, pruning and perforation sections 3–4.
//!
//! In TOML a method is a table tagged by its `name`:
//! `method = { name = "tucker2", rank = { energy = 0.9 } }`. A new method is
//! one more variant and one more arm of [`Method::transform`].

use std::sync::Arc;

use hasten_core::{IntType, Transform};
use hasten_prune::perforation::{MaskKind, Perforation};
use hasten_prune::removal::{ConnectionGroups, GroupwisePrune, KernelTrim, MagnitudeSparse};
use hasten_quant as quant;
use hasten_tensor_decomp::cp::{CpConv, CpVariant};
use hasten_tensor_decomp::{
    BiclusterCp, BiclusterSvd, Monochromatic, RankSpec, SeparableFilters, TruncatedSvd, TtConv,
    TtMatrix, Tucker2,
};
use hasten_train::WeightQuantizer;
use serde::{Deserialize, Serialize};

use super::calibration::RangeRule;
use crate::qat::{Int8Weights, QatQuantizer};

/// A decomposition rank: a number (`rank = 16`), or a rule
/// (`rank = { energy = 0.9 }`, `rank = { speedup = 3.0 }`, `rank = "evbmf"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Rank {
    /// Exactly this rank.
    Fixed(usize),
    /// A rule choosing the rank per layer.
    Rule(RankRule),
}

/// A per-layer rank rule (see `hasten_tensor_decomp::RankSpec`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RankRule {
    /// The smallest rank keeping this fraction of the spectral energy.
    Energy(f64),
    /// The largest rank at least this many times cheaper in MACs.
    Speedup(f64),
    /// The rank empirical variational Bayesian matrix factorisation selects.
    Evbmf,
}

impl Rank {
    /// The equivalent [`RankSpec`].
    pub fn spec(self) -> RankSpec {
        match self {
            Rank::Fixed(r) => RankSpec::Fixed(r),
            Rank::Rule(RankRule::Energy(e)) => RankSpec::Energy(e),
            Rank::Rule(RankRule::Speedup(s)) => RankSpec::Speedup(s),
            Rank::Rule(RankRule::Evbmf) => RankSpec::Evbmf,
        }
    }
}

/// One scale or codebook per layer or per output channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Granularity {
    /// One for the whole layer.
    #[default]
    PerTensor,
    /// One per output channel.
    PerChannel,
}

impl From<Granularity> for quant::Granularity {
    fn from(g: Granularity) -> Self {
        match g {
            Granularity::PerTensor => quant::Granularity::PerTensor,
            Granularity::PerChannel => quant::Granularity::PerChannel,
        }
    }
}

/// The scale of binary weights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BinaryKind {
    /// `sign(W)` with unit scale (BinaryConnect).
    Sign,
    /// `α·sign(W)` with one `α = mean|W|` per filter (Rastegari et al.'s
    /// binary-weight networks).
    #[default]
    BinaryWeights,
    /// XNOR-Net: binary weights and binary activations.
    XnorNet,
    /// Binary weights and sign activations without XNOR-Net's `K` (BNN):
    /// consecutive such layers run on packed sign bits in a plan.
    Bnn,
}

/// The factors of a CP-decomposed convolution (survey Fig. 1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CpForm {
    /// 1×1, d×1, 1×d, 1×1 (Lebedev et al.).
    #[default]
    FourWay,
    /// 1×1, d×d depthwise, 1×1.
    ThreeWay,
}

fn default_seed() -> u64 {
    0
}

fn default_patches() -> usize {
    2048
}

fn default_iterations() -> usize {
    25
}

/// A per-layer compression method and its parameters.
///
/// # Errors
/// Deserialising refuses an unknown `name` or field; [`Method::validate`]
/// and [`Method::transform`] return a message naming a bad parameter.
///
/// ```
/// use hasten::pipeline::Method;
///
/// // A recipe step's `method = { name = "tucker2", rank = { speedup = 2.0 } }`.
/// let m: Method = toml::from_str("name = \"tucker2\"\nrank = { speedup = 2.0 }")?;
/// assert_eq!(m.name(), "tucker2");
/// assert!(m.validate().is_ok() && m.transform().is_ok());
/// let bad: Method = toml::from_str("name = \"prune-channels\"\ntarget = \"macs\"\nfraction = 1.5")?;
/// assert!(bad.validate().unwrap_err().contains("fraction"));
/// assert!(toml::from_str::<Method>("name = \"no-such-method\"").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Method {
    /// Truncated SVD of the weight matrix (Denton et al., section 2.1).
    Svd {
        /// The rank.
        rank: Rank,
    },
    /// Tucker-2 (Kim et al. \[24\]): 1×1, core d×d, 1×1; one rank for both
    /// modes, or `ranks = [output, input]`.
    Tucker2 {
        /// Rank of both channel modes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rank: Option<Rank>,
        /// `[output, input]` ranks.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ranks: Option<[usize; 2]>,
    },
    /// CP decomposition (Lebedev et al. \[18\], Fig. 1).
    Cp {
        /// The CP rank.
        rank: Rank,
        /// Four- or three-factor block.
        #[serde(default)]
        form: CpForm,
    },
    /// Separable filters (Jaderberg et al. \[15\]): d×1 then 1×d.
    Separable {
        /// Number of intermediate channels.
        rank: Rank,
    },
    /// Monochromatic approximation (Denton et al. \[17\]).
    Monochromatic {
        /// Colour clusters.
        clusters: usize,
        /// Seed of the clustering.
        #[serde(default = "default_seed")]
        seed: u64,
    },
    /// Biclustering then per-cluster SVD (Denton et al. \[17\]).
    BiclusterSvd {
        /// Input-channel clusters.
        input_clusters: usize,
        /// Output-channel clusters.
        output_clusters: usize,
        /// Rank of the input side.
        k1: usize,
        /// Rank of the output side.
        k2: usize,
        /// Seed of the clustering.
        #[serde(default = "default_seed")]
        seed: u64,
    },
    /// Biclustering then per-cluster CP (Denton et al. \[17\]).
    BiclusterCp {
        /// Input-channel clusters.
        input_clusters: usize,
        /// Output-channel clusters.
        output_clusters: usize,
        /// The CP rank per bicluster.
        rank: Rank,
        /// Seed of the clustering.
        #[serde(default = "default_seed")]
        seed: u64,
    },
    /// Asymmetric reconstruction (Zhang et al. \[23\]): `k×k C→K` then
    /// `1×1 K→N`, fitted on the calibration data — the approximated graph's
    /// inputs against the original responses, layer after layer.
    Asymmetric {
        /// The rank `K`.
        rank: Rank,
        /// The ReLU-aware (non-linear) solution.
        #[serde(default)]
        nonlinear: bool,
        /// Patches sampled per layer.
        #[serde(default = "default_patches")]
        samples: usize,
        /// Seed of the patch positions.
        #[serde(default = "default_seed")]
        seed: u64,
    },
    /// Tensor-train matrix of a linear layer (Novikov et al.).
    TtMatrix {
        /// Factorisation of the output size.
        out_modes: Vec<usize>,
        /// Factorisation of the input size.
        in_modes: Vec<usize>,
        /// Maximal TT rank.
        rank: Rank,
    },
    /// Tensor-train decomposition of a convolution.
    TtConv {
        /// Maximal TT rank.
        rank: Rank,
    },
    /// 8-bit integer inference (Vanhoucke et al. \[49\]): inputs in a
    /// fixed `input_range`, or, without one, in each layer's own range
    /// calibrated on the data (`calibrate`, min–max by default).
    Int8 {
        /// `[lo, hi]`: the range of every selected layer's input.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input_range: Option<[f32; 2]>,
        /// The rule calibrating each layer's range on data (only without
        /// `input_range`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        calibrate: Option<RangeRule>,
        /// Signed (`i8`) rather than unsigned (`u8`) activations.
        #[serde(default)]
        signed: bool,
        /// Weight scale granularity.
        #[serde(default)]
        granularity: Granularity,
    },
    /// Binary weights (section 5).
    Binarize {
        /// Which binarization.
        #[serde(default)]
        kind: BinaryKind,
    },
    /// Ternary weight networks.
    Ternarize {
        /// Scale granularity.
        #[serde(default)]
        granularity: Granularity,
    },
    /// Scalar k-means weight sharing (Gong et al.).
    Kmeans {
        /// Codebook size.
        k: usize,
        /// Codebook granularity.
        #[serde(default)]
        granularity: Granularity,
    },
    /// Product quantization (Gong et al., Wu et al.).
    ProductQuantize {
        /// Sub-blocks per weight row.
        subblocks: usize,
        /// Codewords per sub-block.
        k: usize,
        /// k-means iterations.
        #[serde(default = "default_iterations")]
        iterations: usize,
        /// Seed.
        #[serde(default = "default_seed")]
        seed: u64,
    },
    /// Uniform fixed-point weights.
    FixedPoint {
        /// Bits per weight.
        bits: u32,
        /// Affine (with offset) rather than symmetric levels.
        #[serde(default)]
        affine: bool,
        /// Scale granularity.
        #[serde(default)]
        granularity: Granularity,
    },
    /// DoReFa-Net k-bit weights.
    Dorefa {
        /// Bits per weight.
        bits: u32,
    },
    /// LCNN: a shared dictionary with sparse lookups.
    Lcnn {
        /// Dictionary atoms.
        dictionary: usize,
        /// Taps per slice.
        sparsity: usize,
        /// Learning rounds.
        #[serde(default = "default_iterations")]
        iterations: usize,
        /// Seed.
        #[serde(default = "default_seed")]
        seed: u64,
    },
    /// Unstructured magnitude pruning to sparse storage (Han et al.).
    MagnitudeSparse {
        /// Fraction of weights removed, in `[0, 1)`.
        fraction: f64,
    },
    /// Group-wise pruning (Lebedev & Lempitsky).
    GroupwisePrune {
        /// Fraction of weights removed, in `[0, 1)`.
        fraction: f64,
    },
    /// Block-diagonal channel connections (grouped convolution).
    ConnectionGroups {
        /// Number of groups.
        groups: usize,
    },
    /// Kernel-shape trimming to the strongest `size` window.
    KernelTrim {
        /// `[height, width]` after trimming.
        size: [usize; 2],
    },
    /// Perforation on a regular grid (Figurnov et al.).
    Perforation {
        /// `[row, column]` strides of the evaluated positions.
        stride: [usize; 2],
    },
    /// Structured filter / channel pruning of the whole graph (survey
    /// section 6): channels tied by residual adds, concats, depthwise
    /// convolutions, batch norms and flatten → linear are removed together
    /// and the layers become smaller dense ones. Acts on the channel groups
    /// one of whose producers the step selects.
    PruneChannels {
        /// What `fraction` measures.
        target: PruneTarget,
        /// Fraction removed, in `(0, 1)`: of the MACs, of every group's
        /// channels, or of all channels ranked together.
        fraction: f64,
        /// Kept channel counts are rounded up to a multiple of this.
        #[serde(default = "default_multiple")]
        multiple: usize,
        /// What ranks the channels: a filter norm (eq. (14)), or the
        /// energy (eq. (15)) or APoZ of the channels on calibration data.
        #[serde(default)]
        criterion: ChannelCriterion,
        /// Replace each removed channel by its mean on the calibration data:
        /// its consumers' biases absorb `Σ W[:, c] · mean(c)` — what a
        /// removed filter still contributed through its bias (large after
        /// batch-norm folding) when there is no fine-tuning to recover it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        compensate: bool,
    },
}

fn default_multiple() -> usize {
    8
}

/// What a channel-pruning fraction measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PruneTarget {
    /// The graph's MACs ("half the MACs": 0.5).
    Macs,
    /// The channels of every group alike.
    PerGroup,
    /// All channels ranked together on per-group normalised scores.
    Global,
}

/// What ranks a channel for pruning (survey section 6.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelCriterion {
    /// Sum of the filter's absolute weights (eq. (14)).
    #[default]
    L1,
    /// Euclidean norm of the filter (eq. (14)).
    L2,
    /// Mean energy of the output channel on calibration data (eq. (15)).
    Energy,
    /// `1 − APoZ` of the output channel on calibration data (Hu et al. \[73\]).
    Apoz,
}

impl ChannelCriterion {
    /// Whether ranking needs calibration data.
    pub fn needs_data(self) -> bool {
        matches!(self, ChannelCriterion::Energy | ChannelCriterion::Apoz)
    }
}

impl Method {
    /// The method's name as a recipe spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Svd { .. } => "svd",
            Method::Tucker2 { .. } => "tucker2",
            Method::Cp { .. } => "cp",
            Method::Separable { .. } => "separable",
            Method::Monochromatic { .. } => "monochromatic",
            Method::BiclusterSvd { .. } => "bicluster-svd",
            Method::BiclusterCp { .. } => "bicluster-cp",
            Method::Asymmetric { .. } => "asymmetric",
            Method::TtMatrix { .. } => "tt-matrix",
            Method::TtConv { .. } => "tt-conv",
            Method::Int8 { .. } => "int8",
            Method::Binarize { .. } => "binarize",
            Method::Ternarize { .. } => "ternarize",
            Method::Kmeans { .. } => "kmeans",
            Method::ProductQuantize { .. } => "product-quantize",
            Method::FixedPoint { .. } => "fixed-point",
            Method::Dorefa { .. } => "dorefa",
            Method::Lcnn { .. } => "lcnn",
            Method::MagnitudeSparse { .. } => "magnitude-sparse",
            Method::GroupwisePrune { .. } => "groupwise-prune",
            Method::ConnectionGroups { .. } => "connection-groups",
            Method::KernelTrim { .. } => "kernel-trim",
            Method::Perforation { .. } => "perforation",
            Method::PruneChannels { .. } => "prune-channels",
        }
    }

    /// Checks the parameters as far as they can be checked without a graph;
    /// a message names the bad one.
    pub fn validate(&self) -> std::result::Result<(), String> {
        match self {
            Method::PruneChannels {
                fraction, multiple, ..
            } => {
                if !(fraction.is_finite() && *fraction > 0.0 && *fraction < 1.0) {
                    return Err(format!("fraction {fraction}: must be in (0, 1)"));
                }
                if *multiple == 0 {
                    return Err("multiple must be at least 1".into());
                }
                Ok(())
            }
            Method::Int8 {
                input_range: None,
                calibrate,
                ..
            } => calibrate.unwrap_or_default().validate(),
            Method::Asymmetric { rank, samples, .. } => {
                if *samples == 0 {
                    return Err("samples must be at least 1".into());
                }
                rank.spec().validate().map_err(|e| format!("rank: {e}"))
            }
            Method::Int8 {
                input_range: Some(_),
                calibrate: Some(_),
                ..
            } => Err("give `input_range` or `calibrate`, not both".into()),
            _ => self.transform().map(|_| ()),
        }
    }

    /// The fake quantizer that trains this method quantization-aware
    /// (`fine_tune.qat`, survey eq. (5)): `None` for a method that does not
    /// quantize weights (it is applied as usual), a message for a quantizer
    /// without one. Its `q(W)` is exactly the weights of the method's packed
    /// op, so freezing after training keeps what was trained.
    pub fn qat_quantizer(&self) -> std::result::Result<Option<Arc<dyn WeightQuantizer>>, String> {
        let per_channel = |g: &Granularity| *g == Granularity::PerChannel;
        Ok(Some(Arc::new(match self {
            Method::Binarize {
                kind: BinaryKind::Sign,
            } => QatQuantizer::Sign { clip: Some(1.0) },
            Method::Binarize {
                kind: BinaryKind::BinaryWeights,
            } => QatQuantizer::binary(),
            Method::Ternarize { granularity } if per_channel(granularity) => QatQuantizer::Ternary,
            Method::Ternarize { .. } => QatQuantizer::TernaryPerTensor,
            Method::FixedPoint {
                bits,
                affine: false,
                granularity,
            } => match per_channel(granularity) {
                true => QatQuantizer::FixedPoint { bits: *bits },
                false => QatQuantizer::FixedPointPerTensor { bits: *bits },
            },
            Method::Dorefa { bits } => QatQuantizer::DoReFa { bits: *bits },
            Method::Int8 { granularity, .. } => {
                return Ok(Some(Arc::new(Int8Weights {
                    per_channel: per_channel(granularity),
                })))
            }
            Method::Binarize {
                kind: BinaryKind::XnorNet | BinaryKind::Bnn,
            }
            | Method::FixedPoint { affine: true, .. }
            | Method::Kmeans { .. }
            | Method::ProductQuantize { .. }
            | Method::Lcnn { .. } => {
                return Err(format!(
                    "qat: {} has no quantization-aware training (supported: binarize sign and \
                     binary-weights, ternarize, symmetric fixed-point, dorefa, int8)",
                    self.describe()
                ))
            }
            _ => return Ok(None),
        })))
    }

    /// The method's name with the parameter that rules out
    /// quantization-aware training, for messages.
    fn describe(&self) -> String {
        match self {
            Method::Binarize { .. } => "binarize kind xnor-net (binary activations)".into(),
            Method::FixedPoint { .. } => "affine fixed-point".into(),
            other => other.name().into(),
        }
    }

    /// The transform, or a message naming the bad parameter. Parameters a
    /// transform checks only against a layer (a rank above the layer's
    /// bound) fail later, when the step is applied. Graph-level methods
    /// ([`Method::PruneChannels`]) have no per-layer transform and say so.
    pub fn transform(&self) -> std::result::Result<Box<dyn Transform>, String> {
        let rank = |r: &Rank| -> std::result::Result<RankSpec, String> {
            let spec = r.spec();
            spec.validate().map_err(|e| format!("rank: {e}"))?;
            Ok(spec)
        };
        let err = |e: hasten_core::Error| e.to_string();
        Ok(match self {
            Method::Svd { rank: r } => Box::new(TruncatedSvd::new(rank(r)?)),
            Method::Tucker2 { rank: r, ranks } => match (r, ranks) {
                (Some(r), None) => Box::new(Tucker2::new(rank(r)?)),
                (None, Some([o, i])) => Box::new(Tucker2::with_ranks(*o, *i)),
                _ => return Err("give exactly one of `rank` and `ranks`".into()),
            },
            Method::Cp { rank: r, form } => {
                Box::new(CpConv::new(rank(r)?).with_variant(match form {
                    CpForm::FourWay => CpVariant::FourWay,
                    CpForm::ThreeWay => CpVariant::ThreeWay,
                }))
            }
            Method::Separable { rank: r } => Box::new(SeparableFilters::new(rank(r)?)),
            Method::Monochromatic { clusters, seed } => {
                Box::new(Monochromatic::new(*clusters).with_seed(*seed))
            }
            Method::BiclusterSvd {
                input_clusters,
                output_clusters,
                k1,
                k2,
                seed,
            } => Box::new(
                BiclusterSvd::new(*input_clusters, *output_clusters, *k1, *k2).with_seed(*seed),
            ),
            Method::BiclusterCp {
                input_clusters,
                output_clusters,
                rank: r,
                seed,
            } => Box::new(
                BiclusterCp::new(*input_clusters, *output_clusters, rank(r)?).with_seed(*seed),
            ),
            Method::Asymmetric { .. } => {
                return Err(
                    "asymmetric reconstruction is fitted on data, not a fixed transform".into(),
                )
            }
            Method::TtMatrix {
                out_modes,
                in_modes,
                rank: r,
            } => Box::new(TtMatrix::new(out_modes.clone(), in_modes.clone(), rank(r)?)),
            Method::TtConv { rank: r } => Box::new(TtConv::new(rank(r)?)),
            Method::Int8 {
                input_range: None, ..
            } => return Err(
                "int8 without `input_range` is calibrated per layer on data, not a fixed transform"
                    .into(),
            ),
            Method::Int8 {
                input_range: Some([lo, hi]),
                signed,
                granularity,
                ..
            } => {
                let dtype = if *signed { IntType::I8 } else { IntType::U8 };
                let input = quant::activation_params(*lo, *hi, dtype).map_err(err)?;
                Box::new(quant::Int8Quantize::new(input, None, (*granularity).into()))
            }
            Method::Binarize { kind } => Box::new(match kind {
                BinaryKind::Sign => quant::Binarize::sign(),
                BinaryKind::BinaryWeights => quant::Binarize::binary_weights(),
                BinaryKind::XnorNet => quant::Binarize::xnor_net(),
                BinaryKind::Bnn => quant::Binarize::bnn(),
            }),
            Method::Ternarize { granularity } => {
                Box::new(quant::Ternarize::twn((*granularity).into()))
            }
            Method::Kmeans { k, granularity } => Box::new(
                quant::ScalarKMeans::new(*k, (*granularity).into(), quant::Solver::Optimal)
                    .map_err(err)?,
            ),
            Method::ProductQuantize {
                subblocks,
                k,
                iterations,
                seed,
            } => Box::new(
                quant::ProductQuantize::new(*subblocks, *k, *iterations, *seed).map_err(err)?,
            ),
            Method::FixedPoint {
                bits,
                affine,
                granularity,
            } => {
                let mode = if *affine {
                    quant::Mode::Affine
                } else {
                    quant::Mode::Symmetric
                };
                Box::new(quant::FixedPoint::new(*bits, mode, (*granularity).into()).map_err(err)?)
            }
            Method::Dorefa { bits } => Box::new(quant::DoReFa::new(*bits).map_err(err)?),
            Method::Lcnn {
                dictionary,
                sparsity,
                iterations,
                seed,
            } => {
                Box::new(quant::Lcnn::new(*dictionary, *sparsity, *iterations, *seed).map_err(err)?)
            }
            Method::MagnitudeSparse { fraction } => Box::new(MagnitudeSparse {
                fraction: check_fraction(*fraction)?,
            }),
            Method::GroupwisePrune { fraction } => Box::new(GroupwisePrune {
                fraction: check_fraction(*fraction)?,
            }),
            Method::ConnectionGroups { groups } => {
                if *groups == 0 {
                    return Err("groups must be at least 1".into());
                }
                Box::new(ConnectionGroups { groups: *groups })
            }
            Method::KernelTrim { size: [h, w] } => {
                if *h == 0 || *w == 0 {
                    return Err(format!("size [{h}, {w}]: both must be at least 1"));
                }
                Box::new(KernelTrim { size: (*h, *w) })
            }
            Method::Perforation { stride: [r, c] } => {
                if *r == 0 || *c == 0 {
                    return Err(format!("stride [{r}, {c}]: both must be at least 1"));
                }
                Box::new(Perforation {
                    mask: MaskKind::Grid((*r, *c)),
                })
            }
            Method::PruneChannels { .. } => {
                return Err("prune-channels acts on the whole graph, not layer by layer".into())
            }
        })
    }
}

fn check_fraction(f: f64) -> std::result::Result<f64, String> {
    if (0.0..1.0).contains(&f) {
        Ok(f)
    } else {
        Err(format!("fraction {f}: must be in [0, 1)"))
    }
}
