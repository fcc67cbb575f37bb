//! Filter and channel pruning with physical removal (survey section 6.1):
//! removing filter `W[t, :, :, :]` of a producer empties output channel `t`,
//! so the consumer loses input channel `t` (`W'[:, t, :, :]`, or the matching
//! columns of a fully connected layer) and a batch-norm in between loses its
//! entry `t`. Channel pruning (`W'[:, c, :, :]` of the consumer) is the same
//! operation seen from the consumer. Both layers become smaller dense layers.
//!
//! **Definition of "zeroed"** used by [`zero_filters`] (the dense network the
//! removal must reproduce exactly): a removed channel's activation is zero
//! *after* the producer's bias and batch-norm. Zeroing only the filter is not
//! enough — the bias and the batch-norm shift `β − γμ/σ` would still feed a
//! constant to the consumer — so the zeroed network sets the filter, its bias
//! and its batch-norm `γ` and `β` to zero. Any element-wise map `f` with
//! `f(0) = 0` (ReLU) may sit between producer and consumer.

use hasten_core::{BatchNorm, Conv4d, ConvLayer, Error, LinearLayer, Result};
use ndarray::{Array1, Axis};

/// The layer that reads the producer's output channels.
#[derive(Debug, Clone, PartialEq)]
pub enum Consumer {
    /// A (groups = 1) convolution: input channel `t` is `W'[:, t, :, :]`.
    Conv(ConvLayer),
    /// A fully connected layer on the flattened `T × H × W` output: channel
    /// `t` is columns `t·H·W .. (t+1)·H·W`.
    Linear(LinearLayer),
}

impl Consumer {
    /// Input columns (conv: 1, linear: `H·W`) each producer channel feeds,
    /// after checking that the consumer reads exactly `channels` channels.
    pub fn per_channel(&self, channels: usize) -> Result<usize> {
        match self {
            Consumer::Conv(c) => {
                if c.spec().groups != 1 {
                    return Err(Error::unsupported(
                        "channel removal",
                        format!("a consumer convolution with {} groups", c.spec().groups),
                    ));
                }
                if c.in_channels() != channels {
                    return Err(Error::shape(
                        "consumer input channels",
                        channels,
                        c.in_channels(),
                    ));
                }
                Ok(1)
            }
            Consumer::Linear(l) => {
                if channels == 0 || l.in_features() % channels != 0 {
                    return Err(Error::shape(
                        "consumer linear input features (multiple of producer channels)",
                        format!("a multiple of {channels}"),
                        l.in_features(),
                    ));
                }
                Ok(l.in_features() / channels)
            }
        }
    }

    /// The consumer as an op.
    pub fn to_op(&self) -> hasten_core::Op {
        match self {
            Consumer::Conv(c) => c.clone().into(),
            Consumer::Linear(l) => l.clone().into(),
        }
    }

    /// Keeps only the listed input channels (already validated).
    fn select_inputs(&self, keep: &[usize], per: usize) -> Result<Consumer> {
        Ok(match self {
            Consumer::Conv(c) => {
                let w = c.weight().array().select(Axis(1), keep);
                Consumer::Conv(ConvLayer::new(
                    Conv4d::new(w)?,
                    c.bias().cloned(),
                    *c.spec(),
                )?)
            }
            Consumer::Linear(l) => {
                let cols: Vec<usize> = keep.iter().flat_map(|&t| t * per..(t + 1) * per).collect();
                Consumer::Linear(LinearLayer::new(
                    l.weight().select(Axis(1), &cols),
                    l.bias().cloned(),
                )?)
            }
        })
    }

    /// Multiplies the weights reading input channel `keep[k]` by `scales[k]`
    /// (ThiNet's least-squares channel scaling).
    pub fn scale_inputs(&self, scales: &[f64]) -> Result<Consumer> {
        let channels = match self {
            Consumer::Conv(c) => c.in_channels(),
            Consumer::Linear(_) => scales.len(),
        };
        if scales.len() != channels {
            return Err(Error::shape("channel scales", channels, scales.len()));
        }
        hasten_core::error::ensure_finite("channel scales", scales.iter())?;
        let per = self.per_channel(channels)?;
        Ok(match self {
            Consumer::Conv(c) => {
                let mut w = c.weight().array().clone();
                for (k, mut sl) in w.axis_iter_mut(Axis(1)).enumerate() {
                    sl.mapv_inplace(|v| (f64::from(v) * scales[k]) as f32);
                }
                Consumer::Conv(c.with_weight(Conv4d::new(w)?)?)
            }
            Consumer::Linear(l) => {
                let mut w = l.weight().clone();
                for (col, mut sl) in w.axis_iter_mut(Axis(1)).enumerate() {
                    let s = scales[col / per];
                    sl.mapv_inplace(|v| (f64::from(v) * s) as f32);
                }
                Consumer::Linear(LinearLayer::new(w, l.bias().cloned())?)
            }
        })
    }
}

/// A producer → (batch-norm) → consumer chain after filter removal.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterPruned {
    /// The producer with only the kept filters.
    pub producer: ConvLayer,
    /// The batch-norm with only the kept channels.
    pub bn: Option<BatchNorm>,
    /// The consumer with only the kept input channels.
    pub consumer: Consumer,
    /// Kept producer output channels (ascending).
    pub kept: Vec<usize>,
    /// Removed producer output channels (ascending).
    pub removed: Vec<usize>,
}

/// Validates `keep` (non-empty, strictly increasing, `< channels`) and returns the removed complement.
pub fn check_keep(keep: &[usize], channels: usize) -> Result<Vec<usize>> {
    if keep.is_empty() {
        return Err(Error::param(
            "kept channels",
            format!("none of {channels}"),
            "at least one channel (pruning every channel of a layer is not allowed)",
        ));
    }
    if let Some(&bad) = keep.iter().find(|&&k| k >= channels) {
        return Err(Error::param("kept channel", bad, format!("< {channels}")));
    }
    if keep.windows(2).any(|w| w[0] >= w[1]) {
        return Err(Error::param(
            "kept channels",
            format!("{keep:?}"),
            "strictly increasing indices",
        ));
    }
    Ok((0..channels)
        .filter(|c| keep.binary_search(c).is_err())
        .collect())
}

fn check_chain(producer: &ConvLayer, bn: Option<&BatchNorm>, consumer: &Consumer) -> Result<usize> {
    if producer.spec().groups != 1 {
        return Err(Error::unsupported(
            "filter removal",
            format!(
                "a producer convolution with {} groups",
                producer.spec().groups
            ),
        ));
    }
    let t = producer.out_channels();
    if let Some(bn) = bn {
        if bn.channels() != t {
            return Err(Error::shape("batch-norm channels", t, bn.channels()));
        }
    }
    consumer.per_channel(t)
}

/// Physically removes every producer filter not in `keep` (ascending), with
/// the matching batch-norm entries and consumer input channels (§4.1).
///
/// # Errors
/// [`Error::ShapeMismatch`] when the batch-norm or consumer does not take the
/// producer's channels (a linear consumer's input features must be a
/// multiple of the producer's filters), and [`Error::InvalidParameter`] when
/// `keep` is empty, not strictly increasing or names a missing filter.
///
/// ```
/// use hasten_core::{ConvLayer, ConvSpec, SeededRng};
/// use hasten_prune::{prune_filters, Consumer};
///
/// let mut rng = SeededRng::new(0);
/// let producer = ConvLayer::from_array(rng.normal_array((4, 3, 3, 3), 0.1), ConvSpec::new())?;
/// let consumer = Consumer::Conv(ConvLayer::from_array(rng.normal_array((5, 4, 1, 1), 0.1), ConvSpec::new())?);
/// let pruned = prune_filters(&producer, None, &consumer, &[0, 2])?;
/// assert_eq!(pruned.producer.out_channels(), 2);
/// assert_eq!(pruned.removed, [1, 3]);
/// let Consumer::Conv(next) = &pruned.consumer else { unreachable!() };
/// assert_eq!(next.weight().dims(), [5, 2, 1, 1]);
/// assert!(prune_filters(&producer, None, &consumer, &[2, 0]).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn prune_filters(
    producer: &ConvLayer,
    bn: Option<&BatchNorm>,
    consumer: &Consumer,
    keep: &[usize],
) -> Result<FilterPruned> {
    let per = check_chain(producer, bn, consumer)?;
    let removed = check_keep(keep, producer.out_channels())?;
    let w = producer.weight().array().select(Axis(0), keep);
    let bias = producer.bias().map(|b| b.select(Axis(0), keep));
    let new_producer = ConvLayer::new(Conv4d::new(w)?, bias, *producer.spec())?;
    let new_bn = bn.map(|b| b.select(keep)).transpose()?;
    Ok(FilterPruned {
        producer: new_producer,
        bn: new_bn,
        consumer: consumer.select_inputs(keep, per)?,
        kept: keep.to_vec(),
        removed,
    })
}

/// Channel pruning: keeps the consumer's input channels `keep` (the survey's
/// `W(:, :, t)` slices), removing the producer filters that fed the others.
/// Identical to [`prune_filters`] with `keep` read on the consumer side.
pub fn prune_channels(
    producer: &ConvLayer,
    bn: Option<&BatchNorm>,
    consumer: &Consumer,
    keep: &[usize],
) -> Result<FilterPruned> {
    prune_filters(producer, bn, consumer, keep)
}

/// The dense reference of removal: producer filters, biases and batch-norm
/// `γ`, `β` of the channels in `drop` set to zero (see the module docs).
pub fn zero_filters(
    producer: &ConvLayer,
    bn: Option<&BatchNorm>,
    drop: &[usize],
) -> Result<(ConvLayer, Option<BatchNorm>)> {
    let t = producer.out_channels();
    if let Some(&bad) = drop.iter().find(|&&d| d >= t) {
        return Err(Error::param("dropped channel", bad, format!("< {t}")));
    }
    let mut w = producer.weight().array().clone();
    let mut bias = producer.bias().cloned();
    for &d in drop {
        w.index_axis_mut(Axis(0), d).fill(0.0);
        if let Some(b) = bias.as_mut() {
            b[d] = 0.0;
        }
    }
    let p = ConvLayer::new(Conv4d::new(w)?, bias, *producer.spec())?;
    let bn = match bn {
        None => None,
        Some(bn) => {
            if bn.channels() != t {
                return Err(Error::shape("batch-norm channels", t, bn.channels()));
            }
            let (mut g, mut b): (Array1<f32>, Array1<f32>) =
                (bn.gamma().clone(), bn.beta().clone());
            for &d in drop {
                g[d] = 0.0;
                b[d] = 0.0;
            }
            Some(BatchNorm::new(
                g,
                b,
                bn.mean().clone(),
                bn.var().clone(),
                bn.eps(),
            )?)
        }
    };
    Ok((p, bn))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::removal::test_support::max_diff;
    use hasten_core::{Block, ConvSpec, Op, Relu, SeededRng};
    use proptest::prelude::*;

    fn chain(p: &ConvLayer, bn: Option<&BatchNorm>, c: &Consumer) -> Block {
        let mut ops: Vec<Op> = vec![p.clone().into()];
        if let Some(bn) = bn {
            ops.push(bn.clone().into());
        }
        ops.push(Relu.into());
        ops.push(c.to_op());
        Block::new(ops).unwrap()
    }

    fn setup(rng: &mut SeededRng, linear: bool) -> (ConvLayer, BatchNorm, Consumer) {
        let p = ConvLayer::new(
            Conv4d::new(rng.normal_array((6, 3, 3, 3), 0.5)).unwrap(),
            Some(rng.normal_array(6, 0.5)),
            ConvSpec::new().with_padding(1),
        )
        .unwrap();
        let bn = BatchNorm::new(
            rng.normal_array(6, 1.0),
            rng.normal_array(6, 1.0),
            rng.normal_array(6, 1.0),
            rng.uniform_array(6, 0.5, 2.0),
            1e-5,
        )
        .unwrap();
        let c = if linear {
            Consumer::Linear(
                LinearLayer::new(
                    rng.normal_array((4, 6 * 5 * 5), 0.3),
                    Some(rng.normal_array(4, 1.0)),
                )
                .unwrap(),
            )
        } else {
            Consumer::Conv(
                ConvLayer::new(
                    Conv4d::new(rng.normal_array((4, 6, 3, 3), 0.5)).unwrap(),
                    Some(rng.normal_array(4, 1.0)),
                    ConvSpec::new().with_padding(1).with_stride(2),
                )
                .unwrap(),
            )
        };
        (p, bn, c)
    }

    #[test]
    fn removal_equals_zeroing_for_every_chain_kind() {
        let mut rng = SeededRng::new(4);
        let keep = [0, 2, 3, 5];
        for (linear, with_bn) in [(false, false), (false, true), (true, false), (true, true)] {
            let (p, bn, c) = setup(&mut rng, linear);
            let bn = with_bn.then_some(&bn);
            let x = rng.normal_array((2, 3, 5, 5), 1.0);
            let pruned = prune_filters(&p, bn, &c, &keep).unwrap();
            assert_eq!(pruned.removed, vec![1, 4]);
            assert_eq!(pruned.producer.out_channels(), 4);
            let (zp, zbn) = zero_filters(&p, bn, &pruned.removed).unwrap();
            let zeroed = chain(&zp, zbn.as_ref(), &c).reference_forward(&x).unwrap();
            let removed = chain(&pruned.producer, pruned.bn.as_ref(), &pruned.consumer)
                .reference_forward(&x)
                .unwrap();
            assert!(
                max_diff(&zeroed, &removed) < 1e-5,
                "linear={linear} bn={with_bn}"
            );
            // And the removal really changed the function (the test can fail).
            let full = chain(&p, bn, &c).reference_forward(&x).unwrap();
            assert!(max_diff(&full, &removed) > 1e-3);
        }
    }

    #[test]
    fn zeroing_only_the_filter_is_not_removal_under_batch_norm() {
        // The documented pitfall: with BN after the producer, a zero filter
        // still emits the BN shift, so removal differs from filter-only zeroing.
        let mut rng = SeededRng::new(8);
        let (p, bn, c) = setup(&mut rng, false);
        let x = rng.normal_array((1, 3, 5, 5), 1.0);
        let filter_only = Slicing::Filter.zero_slices(p.weight(), &[1]).unwrap();
        let mut bias = p.bias().unwrap().clone();
        bias[1] = 0.0;
        let zp = ConvLayer::new(filter_only, Some(bias), *p.spec()).unwrap();
        let pruned = prune_filters(&p, Some(&bn), &c, &[0, 2, 3, 4, 5]).unwrap();
        let a = chain(&zp, Some(&bn), &c).reference_forward(&x).unwrap();
        let b = chain(&pruned.producer, pruned.bn.as_ref(), &pruned.consumer)
            .reference_forward(&x)
            .unwrap();
        assert!(max_diff(&a, &b) > 1e-3);
    }

    use crate::slice::Slicing;

    #[test]
    fn bad_chains_are_rejected() {
        let mut rng = SeededRng::new(1);
        let (p, bn, c) = setup(&mut rng, false);
        assert!(prune_filters(&p, Some(&bn), &c, &[]).is_err());
        assert!(prune_filters(&p, Some(&bn), &c, &[3, 1]).is_err());
        assert!(prune_filters(&p, Some(&bn), &c, &[6]).is_err());
        let small_bn = bn.select(&[0, 1]).unwrap();
        assert!(prune_filters(&p, Some(&small_bn), &c, &[0]).is_err());
        let (_, _, lin) = setup(&mut rng, true);
        let Consumer::Linear(l) = lin else {
            unreachable!()
        };
        let odd = Consumer::Linear(
            LinearLayer::new(l.weight().slice(ndarray::s![.., 1..]).to_owned(), None).unwrap(),
        );
        // 149 features for 6 filters: a typed shape error, never a consumer
        // sliced into wrongly sized groups.
        for bad in [&odd, &short_linear(4), &short_linear(6 * 25 + 3)] {
            let Consumer::Linear(l) = bad else {
                unreachable!()
            };
            assert_eq!(
                prune_filters(&p, None, bad, &[0]).unwrap_err(),
                Error::shape(
                    "consumer linear input features (multiple of producer channels)",
                    "a multiple of 6",
                    l.in_features(),
                )
            );
        }
        assert!(prune_filters(&p, None, &short_linear(12), &[0, 5]).is_ok());
    }

    fn short_linear(features: usize) -> Consumer {
        Consumer::Linear(LinearLayer::new(ndarray::Array2::ones((2, features)), None).unwrap())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn removal_equals_zeroing_for_random_keep_sets(
            mask in proptest::collection::vec(any::<bool>(), 6),
            linear in any::<bool>(),
            with_bn in any::<bool>(),
            seed in 0u64..1000,
        ) {
            let keep: Vec<usize> = (0..6).filter(|&i| mask[i]).collect();
            prop_assume!(!keep.is_empty());
            let mut rng = SeededRng::new(seed);
            let (p, bn, c) = setup(&mut rng, linear);
            let bn = with_bn.then_some(&bn);
            let x = rng.normal_array((1, 3, 5, 5), 1.0);
            let pruned = prune_filters(&p, bn, &c, &keep).unwrap();
            let (zp, zbn) = zero_filters(&p, bn, &pruned.removed).unwrap();
            let zeroed = chain(&zp, zbn.as_ref(), &c).reference_forward(&x).unwrap();
            let removed = chain(&pruned.producer, pruned.bn.as_ref(), &pruned.consumer)
                .reference_forward(&x)
                .unwrap();
            prop_assert!(max_diff(&zeroed, &removed) < 1e-5);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn random_keep_lists_never_panic(keep in proptest::collection::vec(0usize..9, 0..8)) {
            let mut rng = SeededRng::new(2);
            let (p, bn, c) = setup(&mut rng, false);
            let valid = !keep.is_empty() && keep.iter().all(|&k| k < 6) && keep.windows(2).all(|w| w[0] < w[1]);
            prop_assert_eq!(prune_filters(&p, Some(&bn), &c, &keep).is_ok(), valid);
        }
    }
}
