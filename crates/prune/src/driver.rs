//! The pruning driver (survey section 6, the pipeline "score → remove the
//! least important → fine-tune", possibly iterated): prunes the filters of a
//! plain chain of convolutions (each with an optional batch-norm and ReLU,
//! optionally ending in a fully connected head) to a target fraction of
//! channels, MACs or parameters.
//!
//! - **Scores** come from a caller-supplied scorer `(net, layer) → scores`,
//!   one per current filter of that layer (any criterion of
//!   [`crate::criteria`]; data-driven ones need the caller's activations). It
//!   is called again before every step of an iterative schedule, which is
//!   where a caller fine-tunes.
//! - **Per-layer** scope removes the same fraction of every layer (the
//!   smallest common fraction meeting the target, found by bisection); **global**
//!   scope ranks all filters together after L2-normalising each layer's
//!   scores (Molchanov et al. \[71\]).
//! - Kept counts are rounded up to a multiple of `multiple` (e.g. 8 or 16;
//!   a layer's full width also qualifies) for kernel efficiency, and the
//!   target is met *after* rounding, so the achieved reduction can exceed it
//!   by up to one rounding step. When it cannot be met (every layer at its
//!   minimum) the driver prunes as far as it can; the report states what was
//!   achieved. A layer never loses all its filters.

use hasten_core::op::WeightLayout;
use hasten_core::{
    ActShape, BatchNorm, Block, ConvLayer, Cost, Error, LinearLayer, Op, Operator, Relu, Result,
};

use crate::criteria::{magnitude, Norm};
use crate::removal::{prune_filters, Consumer};
use crate::select::{check_fraction, keep_count, l2_normalise, round_up_to, top_k};
use crate::slice::Slicing;

/// One layer of a [`ChainNet`]: convolution, optional batch-norm, optional ReLU.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainLayer {
    /// The convolution (groups = 1).
    pub conv: ConvLayer,
    /// Batch-norm after it.
    pub bn: Option<BatchNorm>,
    /// Whether a ReLU follows.
    pub relu: bool,
}

/// A plain chain of convolution layers with an optional fully connected head.
/// Every layer's filters are prunable except the last one's when there is no head.
///
/// Superseded for whole networks by [`crate::graph`], which prunes any
/// [`hasten_core::Graph`] across residual adds, concatenations and depthwise
/// convolutions; kept for chain-level experiments.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainNet {
    layers: Vec<ChainLayer>,
    head: Option<LinearLayer>,
}

impl ChainNet {
    /// Validates that consecutive layers fit for input `input`.
    pub fn new(
        layers: Vec<ChainLayer>,
        head: Option<LinearLayer>,
        input: ActShape,
    ) -> Result<Self> {
        if layers.is_empty() {
            return Err(Error::EmptyDimension {
                what: "chain network".into(),
                shape: "0 layers".into(),
            });
        }
        if let Some(l) = layers.iter().find(|l| l.conv.spec().groups != 1) {
            return Err(Error::unsupported(
                "the pruning driver",
                format!("a convolution with {} groups", l.conv.spec().groups),
            ));
        }
        let net = ChainNet { layers, head };
        net.block()?.output_shape(input)?;
        Ok(net)
    }

    /// The layers.
    pub fn layers(&self) -> &[ChainLayer] {
        &self.layers
    }

    /// The head.
    pub fn head(&self) -> Option<&LinearLayer> {
        self.head.as_ref()
    }

    /// Indices of the layers whose filters can be removed.
    pub fn prunable(&self) -> Vec<usize> {
        let n = self.layers.len();
        (0..n)
            .filter(|&l| l + 1 < n || self.head.is_some())
            .collect()
    }

    /// The whole network as one block (for its reference forward and cost).
    pub fn block(&self) -> Result<Block> {
        let mut ops: Vec<Op> = Vec::new();
        for l in &self.layers {
            ops.push(l.conv.clone().into());
            if let Some(bn) = &l.bn {
                ops.push(bn.clone().into());
            }
            if l.relu {
                ops.push(Relu.into());
            }
        }
        if let Some(h) = &self.head {
            ops.push(h.clone().into());
        }
        Block::new(ops)
    }

    /// Cost for one sample of shape `input`.
    pub fn cost(&self, input: ActShape) -> Result<Cost> {
        self.block()?.cost(input)
    }

    /// The cost the network would have with `counts[l]` filters in layer `l`
    /// (counts of non-prunable layers are ignored), without building it.
    pub fn cost_with_counts(&self, input: ActShape, counts: &[usize]) -> Result<Cost> {
        let prunable = self.prunable();
        let mut costs = Vec::new();
        let mut shape = input;
        for (l, layer) in self.layers.iter().enumerate() {
            let [t, _, kh, kw] = layer.conv.weight().dims();
            let t = if prunable.contains(&l) { counts[l] } else { t };
            // The layer as it would be after pruning: its shapes, no weights.
            let conv = WeightLayout::conv([t, shape.channels, kh, kw], *layer.conv.spec())?;
            costs.push(conv.dense_cost(shape, layer.conv.bias().is_some())?);
            shape = conv.output_shape(shape)?;
            if let Some(bn) = &layer.bn {
                let kept: Vec<usize> = (0..t).collect();
                costs.push(bn.select(&kept)?.cost(shape)?);
            }
            if layer.relu {
                costs.push(Relu.cost(shape)?);
            }
        }
        if let Some(h) = &self.head {
            let head = WeightLayout::linear(h.out_features(), shape.checked_len()?)?;
            costs.push(head.dense_cost(shape, h.bias().is_some())?);
        }
        Cost::checked_sum(costs)
    }

    /// Removes the filters of layer `l` not in `keep` (ascending), with its
    /// batch-norm entries and the next layer's (or head's) input channels.
    pub fn prune_layer(&self, l: usize, keep: &[usize]) -> Result<ChainNet> {
        if !self.prunable().contains(&l) {
            return Err(Error::param(
                "pruned layer",
                l,
                format!("one of {:?}", self.prunable()),
            ));
        }
        let layer = &self.layers[l];
        let consumer = match self.layers.get(l + 1) {
            Some(next) => Consumer::Conv(next.conv.clone()),
            None => Consumer::Linear(
                self.head
                    .clone()
                    .ok_or_else(|| Error::unsupported("pruning", "the output layer"))?,
            ),
        };
        let p = prune_filters(&layer.conv, layer.bn.as_ref(), &consumer, keep)?;
        let mut net = self.clone();
        net.layers[l].conv = p.producer;
        net.layers[l].bn = p.bn;
        match p.consumer {
            Consumer::Conv(c) => net.layers[l + 1].conv = c,
            Consumer::Linear(h) => net.head = Some(h),
        }
        Ok(net)
    }
}

/// What to reduce, as a fraction removed in `[0, 1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Fraction of the prunable filters.
    Slices(f64),
    /// Fraction of the network's MACs.
    Macs(f64),
    /// Fraction of the network's parameters.
    Params(f64),
}

/// One shot or several steps of growing sparsity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Score once and remove everything.
    OneShot,
    /// `steps ≥ 1` steps, step `s` reaching `s/steps` of the target, rescoring in between.
    Iterative {
        /// Number of steps.
        steps: usize,
    },
}

/// Which filters compete with which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The same fraction in every layer.
    PerLayer,
    /// All filters ranked together on L2-normalised scores.
    Global,
}

/// Driver settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PruneConfig {
    /// What to reduce and by how much.
    pub target: Target,
    /// One shot or iterative.
    pub schedule: Schedule,
    /// Per layer or global.
    pub scope: Scope,
    /// Kept counts are rounded up to a multiple of this (1 = no rounding).
    pub multiple: usize,
}

/// What the driver removed.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneReport {
    /// Per layer, the removed filters in the original numbering.
    pub removed: Vec<Vec<usize>>,
    /// Filters per layer before.
    pub channels_before: Vec<usize>,
    /// Filters per layer after.
    pub channels_after: Vec<usize>,
    /// Cost before.
    pub before: Cost,
    /// Cost after.
    pub after: Cost,
}

impl PruneReport {
    /// `MACs before / MACs after`.
    pub fn mac_speedup(&self) -> f64 {
        self.before.macs as f64 / self.after.macs.max(1) as f64
    }

    /// Fraction of the prunable filters removed.
    pub fn fraction_removed(&self) -> f64 {
        let b: usize = self.channels_before.iter().sum();
        let a: usize = self.channels_after.iter().sum();
        (b - a) as f64 / b.max(1) as f64
    }
}

/// A scorer ranking filters by their L1/L2 norm (eq. (14)).
pub fn filter_magnitude(norm: Norm) -> impl FnMut(&ChainNet, usize) -> Result<Vec<f64>> {
    move |net: &ChainNet, l: usize| {
        Ok(magnitude(
            net.layers()[l].conv.weight(),
            Slicing::Filter,
            norm,
        ))
    }
}

/// Prunes `net` (inputs of shape `input`) as `config` says, scoring with `scorer`.
///
/// # Errors
/// [`Error::InvalidParameter`] for a target outside `[0, 1)`, zero steps or a
/// multiple of 0, [`Error::ShapeMismatch`] or [`Error::NonFinite`] for scores
/// that are not one finite value per filter, and the scorer's own errors.
///
/// ```
/// use hasten_core::{ActShape, ConvLayer, ConvSpec, SeededRng};
/// use hasten_prune::criteria::Norm;
/// use hasten_prune::driver::filter_magnitude;
/// use hasten_prune::{prune_network, ChainLayer, ChainNet, PruneConfig, Schedule, Scope, Target};
///
/// let mut rng = SeededRng::new(0);
/// let mut layer = |t, c| -> hasten_core::Result<ChainLayer> {
///     let conv = ConvLayer::from_array(rng.normal_array((t, c, 3, 3), 0.1), ConvSpec::new().with_padding(1))?;
///     Ok(ChainLayer { conv, bn: None, relu: true })
/// };
/// let input = ActShape::new(3, 8, 8);
/// let net = ChainNet::new(vec![layer(8, 3)?, layer(8, 8)?, layer(4, 8)?], None, input)?;
/// let config = PruneConfig {
///     target: Target::Slices(0.5),
///     schedule: Schedule::OneShot,
///     scope: Scope::PerLayer,
///     multiple: 1,
/// };
/// let (_, report) = prune_network(&net, input, &config, filter_magnitude(Norm::L2))?;
/// // The last layer has no head and keeps its filters; the two others lose half.
/// assert_eq!(report.channels_after, [4, 4]);
/// assert!(report.mac_speedup() > 2.0);
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn prune_network(
    net: &ChainNet,
    input: ActShape,
    config: &PruneConfig,
    mut scorer: impl FnMut(&ChainNet, usize) -> Result<Vec<f64>>,
) -> Result<(ChainNet, PruneReport)> {
    let target = match config.target {
        Target::Slices(f) | Target::Macs(f) | Target::Params(f) => {
            check_fraction("pruning target", f)?
        }
    };
    let steps = match config.schedule {
        Schedule::OneShot => 1,
        Schedule::Iterative { steps } if steps >= 1 => steps,
        Schedule::Iterative { steps } => {
            return Err(Error::param("iterative steps", steps, ">= 1"))
        }
    };
    if config.multiple == 0 {
        return Err(Error::param("channel multiple", 0, ">= 1"));
    }
    let prunable = net.prunable();
    if prunable.is_empty() {
        return Err(Error::unsupported(
            "the pruning driver",
            "a single convolution without a head (nothing to prune)",
        ));
    }
    let orig: Vec<usize> = net.layers.iter().map(|l| l.conv.out_channels()).collect();
    let before = net.cost(input)?;
    // The quantity the target constrains, as a function of per-layer filter counts.
    let value = |counts: &[usize]| -> Result<f64> {
        Ok(match config.target {
            Target::Slices(_) => prunable.iter().map(|&l| counts[l] as f64).sum(),
            Target::Macs(_) => net.cost_with_counts(input, counts)?.macs as f64,
            Target::Params(_) => net.cost_with_counts(input, counts)?.params as f64,
        })
    };
    let full = value(&orig)?;
    let mut ids: Vec<Vec<usize>> = orig.iter().map(|&n| (0..n).collect()).collect();
    let mut cur = net.clone();
    for step in 1..=steps {
        let goal = (1.0 - target * step as f64 / steps as f64) * full;
        let mut scores: Vec<Vec<f64>> = vec![Vec::new(); orig.len()];
        for &l in &prunable {
            let s = scorer(&cur, l)?;
            if s.len() != ids[l].len() {
                return Err(Error::shape(
                    format!("scores of layer {l}"),
                    ids[l].len(),
                    s.len(),
                ));
            }
            hasten_core::error::ensure_finite(&format!("scores of layer {l}"), s.iter())?;
            scores[l] = s;
        }
        let rounded = |l: usize, k: usize| -> Result<usize> {
            Ok(round_up_to(k, config.multiple, orig[l])?.min(ids[l].len()))
        };
        let keep: Vec<Vec<usize>> = match config.scope {
            Scope::PerLayer => {
                // The smallest common fraction whose rounded counts meet the goal.
                let counts_for = |p: f64| -> Result<Vec<usize>> {
                    (0..orig.len())
                        .map(|l| rounded(l, keep_count(orig[l], p)?))
                        .collect()
                };
                let (mut lo, mut hi) = (0.0f64, 1.0 - 1e-9);
                if value(&counts_for(lo)?)? <= goal {
                    hi = lo;
                }
                for _ in 0..50 {
                    let mid = 0.5 * (lo + hi);
                    if value(&counts_for(mid)?)? <= goal {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                let counts = counts_for(hi)?;
                prunable
                    .iter()
                    .map(|&l| top_k(&scores[l], counts[l]))
                    .collect::<Result<_>>()?
            }
            Scope::Global => global_keep(&ids, &prunable, &scores, goal, &value, &rounded)?,
        };
        for (&l, k) in prunable.iter().zip(&keep) {
            cur = cur.prune_layer(l, k)?;
            ids[l] = k.iter().map(|&i| ids[l][i]).collect();
        }
    }
    let removed = orig
        .iter()
        .zip(&ids)
        .map(|(&n, kept)| (0..n).filter(|i| !kept.contains(i)).collect())
        .collect();
    let after = cur.cost(input)?;
    let report = PruneReport {
        removed,
        channels_before: prunable.iter().map(|&l| orig[l]).collect(),
        channels_after: prunable.iter().map(|&l| ids[l].len()).collect(),
        before,
        after,
    };
    Ok((cur, report))
}

/// Global ranking: removes filters in increasing order of L2-normalised
/// score until the rounded counts meet `goal`, then re-admits the best
/// removed filters that rounding up keeps.
fn global_keep(
    ids: &[Vec<usize>],
    prunable: &[usize],
    scores: &[Vec<f64>],
    goal: f64,
    value: &dyn Fn(&[usize]) -> Result<f64>,
    rounded: &dyn Fn(usize, usize) -> Result<usize>,
) -> Result<Vec<Vec<usize>>> {
    let mut cand: Vec<(f64, usize, usize)> = Vec::new();
    for &l in prunable {
        for (i, s) in l2_normalise(&scores[l]).into_iter().enumerate() {
            cand.push((s, l, i));
        }
    }
    cand.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut counts: Vec<usize> = ids.iter().map(Vec::len).collect();
    let mut dropped: Vec<Vec<bool>> = counts.iter().map(|&n| vec![false; n]).collect();
    let rounded_all = |counts: &[usize]| -> Result<Vec<usize>> {
        (0..counts.len())
            .map(|l| {
                if prunable.contains(&l) {
                    rounded(l, counts[l])
                } else {
                    Ok(counts[l])
                }
            })
            .collect()
    };
    for &(_, l, i) in &cand {
        if value(&rounded_all(&counts)?)? <= goal {
            break;
        }
        if counts[l] > 1 {
            counts[l] -= 1;
            dropped[l][i] = true;
        }
    }
    let counts = rounded_all(&counts)?;
    prunable
        .iter()
        .map(|&l| {
            // Kept filters first, then the best dropped ones (re-admitted by rounding up).
            let mut order: Vec<usize> = (0..dropped[l].len()).collect();
            order.sort_by(|&a, &b| {
                dropped[l][a]
                    .cmp(&dropped[l][b])
                    .then(scores[l][b].total_cmp(&scores[l][a]))
                    .then(a.cmp(&b))
            });
            let mut keep = order[..counts[l]].to_vec();
            keep.sort_unstable();
            Ok(keep)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::{Conv4d, ConvSpec, SeededRng};
    use proptest::prelude::*;

    const INPUT: ActShape = ActShape::new(3, 8, 8);

    fn net(rng: &mut SeededRng, weak: &[usize]) -> ChainNet {
        let mut mk = |t: usize, c: usize, stride: usize| {
            let mut w = rng.normal_array((t, c, 3, 3), 0.3);
            if t == 16 && c == 16 {
                for &k in weak {
                    w.index_axis_mut(ndarray::Axis(0), k)
                        .mapv_inplace(|v| v * 1e-3);
                }
            }
            ChainLayer {
                conv: ConvLayer::new(
                    Conv4d::new(w).unwrap(),
                    Some(rng.normal_array(t, 0.1)),
                    ConvSpec::new().with_padding(1).with_stride(stride),
                )
                .unwrap(),
                bn: Some(
                    BatchNorm::new(
                        rng.uniform_array(t, 0.5, 1.5),
                        rng.normal_array(t, 0.1),
                        rng.normal_array(t, 0.1),
                        rng.uniform_array(t, 0.5, 2.0),
                        1e-5,
                    )
                    .unwrap(),
                ),
                relu: true,
            }
        };
        let layers = vec![mk(16, 3, 1), mk(16, 16, 2), mk(8, 16, 1)];
        let head = LinearLayer::new(rng.normal_array((5, 8 * 4 * 4), 0.1), None).unwrap();
        ChainNet::new(layers, Some(head), INPUT).unwrap()
    }

    fn cfg(target: Target, scope: Scope) -> PruneConfig {
        PruneConfig {
            target,
            schedule: Schedule::OneShot,
            scope,
            multiple: 1,
        }
    }

    #[test]
    fn analytic_cost_matches_the_built_network() {
        let mut rng = SeededRng::new(1);
        let n = net(&mut rng, &[]);
        let (p, rep) = prune_network(
            &n,
            INPUT,
            &cfg(Target::Slices(0.5), Scope::PerLayer),
            filter_magnitude(Norm::L2),
        )
        .unwrap();
        assert_eq!(rep.channels_after, vec![8, 8, 4]);
        let counts: Vec<usize> = p.layers().iter().map(|l| l.conv.out_channels()).collect();
        assert_eq!(
            n.cost_with_counts(INPUT, &counts).unwrap(),
            p.cost(INPUT).unwrap()
        );
        assert_eq!(rep.after, p.cost(INPUT).unwrap());
        let x = rng.normal_array((1, 3, 8, 8), 1.0);
        assert_eq!(
            p.block().unwrap().reference_forward(&x).unwrap().shape(),
            &[1, 5, 1, 1]
        );
    }

    #[test]
    fn mac_and_param_targets_are_met() {
        let mut rng = SeededRng::new(2);
        let n = net(&mut rng, &[]);
        for scope in [Scope::PerLayer, Scope::Global] {
            let (_, r) = prune_network(
                &n,
                INPUT,
                &cfg(Target::Macs(0.5), scope),
                filter_magnitude(Norm::L1),
            )
            .unwrap();
            let achieved = 1.0 - r.after.macs as f64 / r.before.macs as f64;
            assert!((0.5..0.65).contains(&achieved), "{scope:?}: {achieved}");
            let (_, r) = prune_network(
                &n,
                INPUT,
                &cfg(Target::Params(0.4), scope),
                filter_magnitude(Norm::L1),
            )
            .unwrap();
            let achieved = 1.0 - r.after.params as f64 / r.before.params as f64;
            assert!((0.4..0.55).contains(&achieved), "{scope:?}: {achieved}");
        }
    }

    #[test]
    fn targets_are_met_after_rounding_to_multiples() {
        let mut rng = SeededRng::new(12);
        let n = net(&mut rng, &[]);
        for scope in [Scope::PerLayer, Scope::Global] {
            for target in [Target::Macs(0.3), Target::Params(0.3), Target::Slices(0.3)] {
                let mut c = cfg(target, scope);
                c.multiple = 8;
                let (_, r) = prune_network(&n, INPUT, &c, filter_magnitude(Norm::L2)).unwrap();
                assert!(
                    r.channels_after.iter().all(|&k| k % 8 == 0),
                    "{:?}",
                    r.channels_after
                );
                let achieved = match target {
                    Target::Macs(_) => 1.0 - r.after.macs as f64 / r.before.macs as f64,
                    Target::Params(_) => 1.0 - r.after.params as f64 / r.before.params as f64,
                    Target::Slices(_) => r.fraction_removed(),
                };
                assert!(achieved >= 0.3, "{scope:?} {target:?}: {achieved}");
            }
        }
    }

    #[test]
    fn global_scope_removes_the_planted_weak_filters_first() {
        let mut rng = SeededRng::new(3);
        let weak = [1, 4, 9, 10, 13];
        let n = net(&mut rng, &weak);
        let (_, r) = prune_network(
            &n,
            INPUT,
            &cfg(Target::Slices(5.0 / 40.0), Scope::Global),
            filter_magnitude(Norm::L2),
        )
        .unwrap();
        assert_eq!(r.removed, vec![vec![], weak.to_vec(), vec![]]);
    }

    #[test]
    fn iterative_schedule_rescores_and_rounds_to_multiples() {
        let mut rng = SeededRng::new(4);
        let n = net(&mut rng, &[]);
        let mut calls = 0;
        let config = PruneConfig {
            target: Target::Slices(0.6),
            schedule: Schedule::Iterative { steps: 3 },
            scope: Scope::PerLayer,
            multiple: 8,
        };
        let (_, r) = prune_network(&n, INPUT, &config, |net, l| {
            calls += 1;
            Ok(magnitude(
                net.layers()[l].conv.weight(),
                Slicing::Filter,
                Norm::L1,
            ))
        })
        .unwrap();
        assert_eq!(calls, 9);
        // 16 → keep 7 → rounded up to 8; 8 → keep 4 → rounded up to 8.
        assert_eq!(r.channels_after, vec![8, 8, 8]);
    }

    #[test]
    fn removing_zero_filters_is_exact() {
        let mut rng = SeededRng::new(5);
        let mut n = net(&mut rng, &[]);
        for l in &mut n.layers {
            l.bn = None;
        }
        // Zero filters 2 and 7 of layer 0 (weights and bias).
        let z = Slicing::Filter
            .zero_slices(n.layers[0].conv.weight(), &[2, 7])
            .unwrap();
        let mut b = n.layers[0].conv.bias().unwrap().clone();
        b[2] = 0.0;
        b[7] = 0.0;
        n.layers[0].conv = ConvLayer::new(z, Some(b), *n.layers[0].conv.spec()).unwrap();
        let p = n
            .prune_layer(
                0,
                &(0..16).filter(|&i| i != 2 && i != 7).collect::<Vec<_>>(),
            )
            .unwrap();
        let x = rng.normal_array((2, 3, 8, 8), 1.0);
        let (a, c) = (
            n.block().unwrap().reference_forward(&x).unwrap(),
            p.block().unwrap().reference_forward(&x).unwrap(),
        );
        assert!(a.iter().zip(c.iter()).all(|(u, v)| (u - v).abs() < 1e-5));
    }

    #[test]
    fn bad_configs_are_typed_errors() {
        let mut rng = SeededRng::new(6);
        let n = net(&mut rng, &[]);
        let s = || filter_magnitude(Norm::L1);
        assert!(prune_network(&n, INPUT, &cfg(Target::Slices(1.0), Scope::Global), s()).is_err());
        assert!(prune_network(&n, INPUT, &cfg(Target::Macs(-0.1), Scope::Global), s()).is_err());
        let mut c = cfg(Target::Slices(0.5), Scope::PerLayer);
        c.multiple = 0;
        assert!(prune_network(&n, INPUT, &c, s()).is_err());
        c.multiple = 1;
        c.schedule = Schedule::Iterative { steps: 0 };
        assert!(prune_network(&n, INPUT, &c, s()).is_err());
        c.schedule = Schedule::OneShot;
        assert!(prune_network(&n, INPUT, &c, |_, _| Ok(vec![1.0; 3])).is_err());
        assert!(prune_network(&n, INPUT, &c, |_, _| Ok(vec![f64::NAN; 16])).is_err());
        assert!(n.prune_layer(0, &[]).is_err());
        assert!(ChainNet::new(vec![], None, INPUT).is_err());
        assert!(ChainNet::new(n.layers().to_vec(), None, ActShape::new(4, 8, 8)).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn random_configs_never_panic(f in -0.5f64..1.5, kind in 0usize..3, global in any::<bool>(), steps in 0usize..3, multiple in 0usize..10) {
            let mut rng = SeededRng::new(7);
            let n = net(&mut rng, &[]);
            let target = [Target::Slices(f), Target::Macs(f), Target::Params(f)][kind];
            let config = PruneConfig { target, schedule: Schedule::Iterative { steps }, scope: if global { Scope::Global } else { Scope::PerLayer }, multiple };
            let r = prune_network(&n, INPUT, &config, filter_magnitude(Norm::L2));
            prop_assert_eq!(r.is_ok(), (0.0..1.0).contains(&f) && steps >= 1 && multiple >= 1);
            if let Ok((p, rep)) = r {
                prop_assert!(rep.channels_after.iter().all(|&c| c >= 1));
                prop_assert_eq!(p.cost(INPUT).unwrap(), rep.after);
            }
        }
    }
}
