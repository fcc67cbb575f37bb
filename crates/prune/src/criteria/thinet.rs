//! ThiNet (Luo et al. \[74\], survey section 6.2): filters of layer `i` are
//! chosen by the reconstruction error of layer `i+1`'s output — the input of
//! layer `i+2`, the first whose input size is unaffected. For sampled outputs
//! `ŷ = Σ_c x̂_c` of the consumer (bias excluded), `x̂_c` being input channel
//! `c`'s contribution, a greedy search builds the removed set `T` minimising
//! `Σ_m (Σ_{c ∈ T} x̂_{m,c})²`; then the kept channels are rescaled by least
//! squares, `s = argmin Σ_m (ŷ_m − Σ_{c ∉ T} s_c x̂_{m,c})²`.

use hasten_core::{linalg, Error, Result, SeededRng};
use ndarray::{Array2, Axis};

use hasten_core::{BatchNorm, ConvLayer};

use crate::removal::{prune_filters, Consumer, FilterPruned};

/// The result of ThiNet channel selection.
#[derive(Debug, Clone, PartialEq)]
pub struct ThinetSelection {
    /// Kept input channels of the consumer, ascending.
    pub kept: Vec<usize>,
    /// Removed channels, ascending.
    pub removed: Vec<usize>,
    /// Least-squares scale of each kept channel (same order as `kept`).
    pub scales: Vec<f64>,
    /// Relative squared reconstruction error `‖ŷ − Σ_kept x̂‖² / ‖ŷ‖²` before scaling.
    pub error_unscaled: f64,
    /// The same after least-squares scaling (never larger).
    pub error_scaled: f64,
}

/// Samples `samples` consumer outputs and returns the per-channel
/// contributions `x̂` (`[samples, C]`, f64). `input` is the consumer's NCHW input.
pub fn thinet_contributions(
    consumer: &Consumer,
    input: &Array4<f32>,
    samples: usize,
    rng: &mut SeededRng,
) -> Result<Array2<f64>> {
    super::check_acts("consumer input", input)?;
    if samples == 0 {
        return Err(Error::param("ThiNet samples", 0, ">= 1"));
    }
    let (n, c, h, w) = input.dim();
    consumer.per_channel(c)?;
    let mut x = Array2::<f64>::zeros((samples, c));
    match consumer {
        Consumer::Conv(conv) => {
            let out = conv.output_shape(hasten_core::ActShape::new(c, h, w))?;
            let wt = conv.weight().array();
            let spec = conv.spec();
            let (kh, kw) = conv.weight().kernel_hw();
            for m in 0..samples {
                let (s, t) = (rng.below(n), rng.below(out.channels));
                let (y, xx) = (rng.below(out.height), rng.below(out.width));
                for ch in 0..c {
                    let mut acc = 0.0;
                    for i in 0..kh {
                        let iy = (y * spec.stride.0 + i * spec.dilation.0) as isize
                            - spec.padding.top as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        for j in 0..kw {
                            let ix = (xx * spec.stride.1 + j * spec.dilation.1) as isize
                                - spec.padding.left as isize;
                            if ix < 0 || ix >= w as isize {
                                continue;
                            }
                            acc += f64::from(wt[[t, ch, i, j]])
                                * f64::from(input[[s, ch, iy as usize, ix as usize]]);
                        }
                    }
                    x[[m, ch]] = acc;
                }
            }
        }
        Consumer::Linear(l) => {
            let per = h * w;
            if l.in_features() != c * per {
                return Err(Error::shape(
                    "linear consumer input features (C·H·W of its input)",
                    l.in_features(),
                    format!("{} ({c}×{h}×{w})", c * per),
                ));
            }
            for m in 0..samples {
                let (s, o) = (rng.below(n), rng.below(l.out_features()));
                for ch in 0..c {
                    let mut acc = 0.0;
                    for p in 0..per {
                        acc += f64::from(l.weight()[[o, ch * per + p]])
                            * f64::from(input[[s, ch, p / w, p % w]]);
                    }
                    x[[m, ch]] = acc;
                }
            }
        }
    }
    Ok(x)
}

use ndarray::Array4;

/// Greedy ThiNet selection of `keep` channels from contributions `[m, C]`,
/// followed by least-squares scaling.
pub fn thinet_select(contributions: &Array2<f64>, keep: usize) -> Result<ThinetSelection> {
    hasten_core::error::ensure_nonempty("ThiNet contributions", contributions.shape())?;
    hasten_core::error::ensure_finite("ThiNet contributions", contributions.iter())?;
    let (m, c) = contributions.dim();
    if keep == 0 || keep > c {
        return Err(Error::param(
            "ThiNet kept channels",
            keep,
            format!("1..={c}"),
        ));
    }
    let mut residual = vec![0.0f64; m];
    let mut removed_mask = vec![false; c];
    for _ in 0..c - keep {
        let mut best = (f64::INFINITY, usize::MAX);
        for ch in (0..c).filter(|&ch| !removed_mask[ch]) {
            let col = contributions.column(ch);
            let e: f64 = residual
                .iter()
                .zip(col.iter())
                .map(|(r, v)| (r + v).powi(2))
                .sum();
            if e < best.0 {
                best = (e, ch);
            }
        }
        removed_mask[best.1] = true;
        for (r, v) in residual.iter_mut().zip(contributions.column(best.1).iter()) {
            *r += v;
        }
    }
    let kept: Vec<usize> = (0..c).filter(|&ch| !removed_mask[ch]).collect();
    let removed: Vec<usize> = (0..c).filter(|&ch| removed_mask[ch]).collect();
    let target = contributions.sum_axis(Axis(1));
    let norm = target
        .iter()
        .map(|v| v * v)
        .sum::<f64>()
        .max(f64::MIN_POSITIVE);
    let error_unscaled = residual.iter().map(|r| r * r).sum::<f64>() / norm;
    let scales = thinet_scales(contributions, &kept)?;
    let a = contributions.select(Axis(1), &kept);
    let fitted = a.dot(&ndarray::Array1::from(scales.clone()));
    let error_scaled = (&target - &fitted).iter().map(|v| v * v).sum::<f64>() / norm;
    Ok(ThinetSelection {
        kept,
        removed,
        scales,
        error_unscaled,
        error_scaled,
    })
}

/// Least-squares channel scales: `argmin_s Σ_m (Σ_c x̂_{m,c} − Σ_{k} s_k x̂_{m,kept[k]})²`.
pub fn thinet_scales(contributions: &Array2<f64>, kept: &[usize]) -> Result<Vec<f64>> {
    let c = contributions.ncols();
    crate::removal::check_keep(kept, c)?;
    let a = contributions.select(Axis(1), kept);
    let target = contributions.sum_axis(Axis(1)).insert_axis(Axis(1));
    let s = linalg::lstsq(a.view(), target.view())?;
    Ok(s.column(0).to_vec())
}

/// ThiNet end to end: selects `keep` producer filters from `samples` sampled
/// consumer outputs on `consumer_input` (the consumer's NCHW input on
/// calibration data), removes the others ([`prune_filters`]) and applies the
/// least-squares scales to the consumer's kept input channels.
pub fn thinet_prune(
    producer: &ConvLayer,
    bn: Option<&BatchNorm>,
    consumer: &Consumer,
    consumer_input: &Array4<f32>,
    keep: usize,
    samples: usize,
    rng: &mut SeededRng,
) -> Result<(FilterPruned, ThinetSelection)> {
    if consumer_input.shape()[1] != producer.out_channels() {
        return Err(Error::shape(
            "consumer input channels (= producer filters)",
            producer.out_channels(),
            consumer_input.shape()[1],
        ));
    }
    let contrib = thinet_contributions(consumer, consumer_input, samples, rng)?;
    let sel = thinet_select(&contrib, keep)?;
    let mut pruned = prune_filters(producer, bn, consumer, &sel.kept)?;
    pruned.consumer = pruned.consumer.scale_inputs(&sel.scales)?;
    Ok((pruned, sel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::{Conv4d, ConvSpec, Operator};

    #[test]
    fn finds_planted_redundant_channels() {
        // 10 input channels; channels 2, 5, 7 carry large activations but the
        // consumer barely reads them (weights × 1e-3): magnitude of the
        // activations would keep them, ThiNet must remove exactly them.
        let mut rng = SeededRng::new(21);
        let mut w = rng.normal_array((8, 10, 3, 3), 1.0);
        let planted = [2usize, 5, 7];
        for &p in &planted {
            w.index_axis_mut(Axis(1), p).mapv_inplace(|v| v * 1e-3);
        }
        let consumer =
            Consumer::Conv(ConvLayer::from_array(w, ConvSpec::new().with_padding(1)).unwrap());
        let mut x = rng.normal_array((4, 10, 6, 6), 1.0);
        for &p in &planted {
            x.index_axis_mut(Axis(1), p).mapv_inplace(|v| v * 10.0);
        }
        let contrib = thinet_contributions(&consumer, &x, 400, &mut rng).unwrap();
        let sel = thinet_select(&contrib, 7).unwrap();
        assert_eq!(sel.removed, planted.to_vec());
        assert!(sel.error_scaled <= sel.error_unscaled + 1e-12);
        assert!(sel.error_unscaled < 1e-3, "{}", sel.error_unscaled);
    }

    #[test]
    fn scales_recover_a_duplicated_channel() {
        // Channel 1 is an exact copy of channel 0 with consumer weights 0.5×
        // channel 0's: removing 1 and scaling 0 by 1.5 reconstructs exactly.
        let mut rng = SeededRng::new(3);
        let mut w = rng.normal_array((5, 3, 1, 1), 1.0);
        for t in 0..5 {
            w[[t, 1, 0, 0]] = 0.5 * w[[t, 0, 0, 0]];
        }
        let consumer =
            Consumer::Conv(ConvLayer::new(Conv4d::new(w).unwrap(), None, ConvSpec::new()).unwrap());
        let mut x = rng.normal_array((3, 3, 4, 4), 1.0);
        let copy = x.index_axis(Axis(1), 0).to_owned();
        x.index_axis_mut(Axis(1), 1).assign(&copy);
        let contrib = thinet_contributions(&consumer, &x, 100, &mut rng).unwrap();
        let s = thinet_scales(&contrib, &[0, 2]).unwrap();
        assert!(
            (s[0] - 1.5).abs() < 1e-9 && (s[1] - 1.0).abs() < 1e-9,
            "{s:?}"
        );
    }

    #[test]
    fn end_to_end_reconstruction_error_matches_the_selection() {
        // Producer conv → ReLU → consumer conv; the pruned chain's consumer
        // output (bias excluded) deviates from the original by about the
        // sampled relative error ThiNet reports.
        let mut rng = SeededRng::new(44);
        let producer = ConvLayer::from_array(
            rng.normal_array((12, 3, 3, 3), 0.5),
            ConvSpec::new().with_padding(1),
        )
        .unwrap();
        let mut w = rng.normal_array((6, 12, 3, 3), 0.5);
        for p in [0usize, 3, 4, 9] {
            w.index_axis_mut(Axis(1), p).mapv_inplace(|v| v * 0.01);
        }
        let consumer =
            Consumer::Conv(ConvLayer::from_array(w, ConvSpec::new().with_padding(1)).unwrap());
        let x = rng.normal_array((4, 3, 8, 8), 1.0);
        let a = producer.reference_forward(&x).unwrap().mapv(|v| v.max(0.0));
        let (pruned, sel) =
            thinet_prune(&producer, None, &consumer, &a, 8, 2000, &mut rng).unwrap();
        assert_eq!(sel.removed, vec![0, 3, 4, 9]);
        let Consumer::Conv(orig) = &consumer else {
            unreachable!()
        };
        let Consumer::Conv(new) = &pruned.consumer else {
            unreachable!()
        };
        let y0 = orig.reference_forward(&a).unwrap();
        let a1 = pruned
            .producer
            .reference_forward(&x)
            .unwrap()
            .mapv(|v| v.max(0.0));
        let y1 = new.reference_forward(&a1).unwrap();
        let err = (&y0 - &y1)
            .iter()
            .map(|v| f64::from(*v).powi(2))
            .sum::<f64>()
            / y0.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>();
        // Exactly: the pruned chain computes Σ_{c kept} s_c·x̂_c over every
        // output, x̂_c = the consumer applied to channel c of `a` alone, so
        // its error is the selection's objective over the whole population.
        let mut pred = Array4::<f64>::zeros(y0.dim());
        for (&ch, &scale) in sel.kept.iter().zip(&sel.scales) {
            let mut only = Array4::<f32>::zeros(a.dim());
            only.index_axis_mut(Axis(1), ch)
                .assign(&a.index_axis(Axis(1), ch));
            pred = pred
                + orig
                    .reference_forward(&only)
                    .unwrap()
                    .mapv(|v| scale * f64::from(v));
        }
        let full = (&y0.mapv(f64::from) - &pred)
            .iter()
            .map(|v| v * v)
            .sum::<f64>()
            / y0.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>();
        // Both sides hold f32 outputs whose differences are about √err of
        // their size: relative rounding of err ≈ 2·2⁻²⁴/√err < 1e-3.
        assert!((err - full).abs() <= 1e-3 * full, "{err} vs {full}");
        // The reported figure is a 2000-draw sample of that ratio of sums of
        // squares (1536 positions drawn with replacement): a sanity band,
        // the exact identity above carries the test.
        let ratio = err / sel.error_scaled;
        assert!((0.5..2.0).contains(&ratio), "{err} vs {}", sel.error_scaled);
        assert!(thinet_prune(&producer, None, &consumer, &x, 8, 10, &mut rng).is_err());
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let c = Array2::<f64>::ones((4, 3));
        assert!(thinet_select(&c, 0).is_err());
        assert!(thinet_select(&c, 4).is_err());
        assert!(thinet_scales(&c, &[3]).is_err());
        let consumer = Consumer::Conv(
            ConvLayer::from_array(ndarray::Array4::ones((2, 3, 1, 1)), ConvSpec::new()).unwrap(),
        );
        let x = ndarray::Array4::<f32>::ones((1, 4, 2, 2));
        assert!(thinet_contributions(&consumer, &x, 10, &mut SeededRng::new(0)).is_err());
    }
}
