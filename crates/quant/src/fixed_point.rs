//! Fixed-point (uniform k-bit) quantization: Vanhoucke et al. \[49\] and Anwar
//! et al. \[53\] (survey section 5; the `q` of eq. (5)).
//!
//! A real value `x` is coded as an unsigned `b`-bit integer `u` with
//! `x ≈ scale · u + offset`:
//! - **symmetric**: `q = clamp(round(x / scale), −(2^(b−1) − 1), 2^(b−1) − 1)`
//!   with `scale = max |x| / (2^(b−1) − 1)`, stored as `u = q + 2^(b−1)`,
//!   `offset = −scale · 2^(b−1)` (needs `b ≥ 2`);
//! - **affine**: the range `[lo, hi]` (extended to contain 0) is split into
//!   `2^b − 1` steps, `scale = (hi − lo) / (2^b − 1)`, zero point
//!   `z = round(−lo / scale)`, `u = clamp(round(x / scale) + z, 0, 2^b − 1)`,
//!   `offset = −scale · z` (so 0 is exact).
//!
//! Weights are quantized per tensor or per output channel into a
//! [`FixedPointConv`]. Activation ranges are calibrated on samples by
//! min/max, percentile or MSE-optimal clipping ([`calibrate`]).

use hasten_core::error::ensure_finite;
use hasten_core::ndarray::Array1;
use hasten_core::{
    ActShape, Compressed, Error, FixedPointConv, Layer, PackedCodes, Result, Transform,
};

use crate::weights::{Granularity, LayerWeights, QuantizeLayer};

/// Symmetric (zero-centred) or affine (zero point) uniform quantization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Signed levels `scale · q`, `|q| ≤ 2^(b−1) − 1`.
    Symmetric,
    /// `scale · (u − z)` over the full `[lo, hi]` range.
    Affine,
}

/// A uniform quantizer: `x ≈ scale · u + offset`, `u ∈ 0..2^bits`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UniformQuantizer {
    /// Bits per code.
    pub bits: u32,
    /// Step size, > 0.
    pub scale: f32,
    /// Value of code 0.
    pub offset: f32,
    /// Smallest code used (1 for symmetric, so that `|q| ≤ 2^(b−1) − 1`).
    pub min_code: u32,
}

fn check_bits(bits: u32, mode: Mode) -> Result<()> {
    let min = if mode == Mode::Symmetric { 2 } else { 1 };
    if !(min..=16).contains(&bits) {
        return Err(Error::param(
            "bits",
            bits,
            format!("{min}..=16 for {mode:?} quantization"),
        ));
    }
    Ok(())
}

impl UniformQuantizer {
    /// The quantizer covering `[lo, hi]` (finite, `lo ≤ hi`) with `bits` bits.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a bit width outside `1..=16`
    /// (`2..=16` when symmetric), a range that is not finite or has
    /// `lo > hi`, and a range too wide for its codes' values `scale · u`
    /// (`u ≤ 2^bits − 1`) to stay finite in f32 (e.g. `±1.7e38` at 3 bits:
    /// `scale · 7` overflows, and every code read back as infinity).
    pub fn for_range(lo: f32, hi: f32, bits: u32, mode: Mode) -> Result<Self> {
        check_bits(bits, mode)?;
        if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
            return Err(Error::param(
                "quantization range",
                format!("[{lo}, {hi}]"),
                "finite with lo <= hi",
            ));
        }
        let q = match mode {
            Mode::Symmetric => {
                let half = (1u32 << (bits - 1)) as f32;
                let m = lo.abs().max(hi.abs());
                let scale = if m > 0.0 { m / (half - 1.0) } else { 1.0 };
                UniformQuantizer {
                    bits,
                    scale,
                    offset: -scale * half,
                    min_code: 1,
                }
            }
            Mode::Affine => {
                let (lo, hi) = (lo.min(0.0), hi.max(0.0));
                let levels = ((1u32 << bits) - 1) as f32;
                let scale = if hi > lo { (hi - lo) / levels } else { 1.0 };
                let z = (-lo / scale).round().clamp(0.0, levels);
                UniformQuantizer {
                    bits,
                    scale,
                    offset: -scale * z,
                    min_code: 0,
                }
            }
        };
        // `|offset| ≤ scale · max_code` in both modes, and `x − offset` for
        // `x` in the range is at most `scale · max_code` too: one finite
        // product keeps `code` and `value` finite.
        if !(q.scale * q.max_code() as f32).is_finite() {
            return Err(Error::param(
                "quantization range",
                format!("[{lo}, {hi}]"),
                format!("a range whose {bits}-bit codes' values stay finite in f32"),
            ));
        }
        Ok(q)
    }

    /// The quantizer fitted to the min and max of `values`.
    pub fn fit(values: &[f32], bits: u32, mode: Mode) -> Result<Self> {
        let (lo, hi) = min_max(values)?;
        Self::for_range(lo, hi, bits, mode)
    }

    /// The largest code, `2^bits − 1`.
    pub fn max_code(&self) -> u32 {
        (1u32 << self.bits) - 1
    }

    /// The code of `x` (rounded to nearest, saturated).
    pub fn code(&self, x: f32) -> u32 {
        let u = ((x - self.offset) / self.scale).round();
        u.clamp(self.min_code as f32, self.max_code() as f32) as u32
    }

    /// The value of code `u`.
    pub fn value(&self, u: u32) -> f32 {
        self.scale * u as f32 + self.offset
    }

    /// `value(code(x))`: the fake-quantized `x`.
    pub fn fake_quantize(&self, x: f32) -> f32 {
        self.value(self.code(x))
    }
}

fn min_max(values: &[f32]) -> Result<(f32, f32)> {
    hasten_core::error::ensure_nonempty("values", &[values.len()])?;
    ensure_finite("values", values.iter())?;
    Ok(values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        }))
}

/// How to choose an activation range from samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Calibration {
    /// The observed minimum and maximum.
    MinMax,
    /// The `100 − p` and `p` percentiles, `p ∈ (50, 100]`.
    Percentile(f64),
    /// The clipping of the min/max range (scaled by `1/100 … 100/100`) with
    /// the least mean squared quantization error for the given bits.
    MseOptimal,
}

/// Mean squared error of fake-quantizing `values` with `q`.
pub fn quantization_mse(values: &[f32], q: &UniformQuantizer) -> f64 {
    values
        .iter()
        .map(|&v| (f64::from(v) - f64::from(q.fake_quantize(v))).powi(2))
        .sum::<f64>()
        / values.len().max(1) as f64
}

/// An activation range `[lo, hi]` from `samples` (finite, non-empty).
pub fn calibrate(samples: &[f32], method: Calibration, bits: u32) -> Result<(f32, f32)> {
    let (lo, hi) = min_max(samples)?;
    match method {
        Calibration::MinMax => Ok((lo, hi)),
        Calibration::Percentile(p) => {
            if !(p > 50.0 && p <= 100.0) {
                return Err(Error::param("percentile", p, "in (50, 100]"));
            }
            let mut s = samples.to_vec();
            s.sort_unstable_by(f32::total_cmp);
            let at = |q: f64| s[((q / 100.0) * (s.len() - 1) as f64).round() as usize];
            Ok((at(100.0 - p), at(p)))
        }
        Calibration::MseOptimal => {
            check_bits(bits, Mode::Affine)?;
            let mut best = (f64::INFINITY, (lo, hi));
            for step in 1..=100 {
                let f = step as f32 / 100.0;
                let q = UniformQuantizer::for_range(lo * f, hi * f, bits, Mode::Affine)?;
                let mse = quantization_mse(samples, &q);
                if mse < best.0 {
                    best = (mse, (lo * f, hi * f));
                }
            }
            Ok(best.1)
        }
    }
}

/// Uniform k-bit weight quantization of a conv or linear layer.
///
/// # Errors
/// [`Transform::apply`] fails with
/// [`Error::NonFinite`] for a NaN or infinite
/// weight and with the input-shape errors of the layer; [`FixedPoint::new`] refuses bit widths outside `1..=16` (`2..=16` when symmetric).
///
/// ```
/// use hasten_core::{ActShape, ConvLayer, ConvSpec, Layer, SeededRng, Transform};
/// use hasten_quant::{FixedPoint, Granularity, Mode};
///
/// let w = SeededRng::new(0).normal_array((8, 4, 3, 3), 0.1);
/// let layer = Layer::from(ConvLayer::from_array(w, ConvSpec::new().with_padding(1))?);
/// let input = ActShape::new(4, 6, 6);
/// let q = FixedPoint::new(4, Mode::Symmetric, Granularity::PerChannel)?;
/// let c = q.apply(&layer, input)?;
/// assert!(c.report.weight_error.unwrap() < 0.2);
/// assert!(FixedPoint::new(1, Mode::Symmetric, Granularity::PerTensor).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedPoint {
    bits: u32,
    mode: Mode,
    granularity: Granularity,
}

impl FixedPoint {
    /// `bits ∈ 1..=16` (`2..=16` for symmetric).
    ///
    /// # Errors
    /// As listed on [`FixedPoint`].
    pub fn new(bits: u32, mode: Mode, granularity: Granularity) -> Result<Self> {
        check_bits(bits, mode)?;
        Ok(FixedPoint {
            bits,
            mode,
            granularity,
        })
    }

    /// The op for a layer's weights.
    ///
    /// # Errors
    /// As listed on [`FixedPoint`].
    pub fn quantize(&self, weights: &LayerWeights) -> Result<FixedPointConv> {
        let m = &weights.matrix();
        let (rows, cols) = m.dim();
        let flat = m.as_slice().expect("standard layout");
        let groups = self.granularity.groups(rows);
        let (mut scales, mut offsets) = (Array1::zeros(groups.len()), Array1::zeros(groups.len()));
        let mut codes = vec![0u32; rows * cols];
        for (g, range) in groups.iter().enumerate() {
            let span = range.start * cols..range.end * cols;
            let q = UniformQuantizer::fit(&flat[span.clone()], self.bits, self.mode)?;
            for (c, &v) in codes[span.clone()].iter_mut().zip(&flat[span]) {
                *c = q.code(v);
            }
            scales[g] = q.scale;
            offsets[g] = q.offset;
        }
        FixedPointConv::new(
            *weights.layout(),
            PackedCodes::pack(&codes, rows, cols, self.bits)?,
            scales,
            offsets,
            weights.bias().cloned(),
        )
    }
}

impl Transform for FixedPoint {
    fn name(&self) -> &str {
        match self.mode {
            Mode::Symmetric => "fixed point (symmetric)",
            Mode::Affine => "fixed point (affine)",
        }
    }

    fn apply(&self, layer: &Layer, input: ActShape) -> Result<Compressed> {
        self.quantize_layer(Self::quantize, FixedPointConv::dequantized, layer, input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::{ConvLayer, ConvSpec, LinearLayer, Op, Operator, SeededRng};
    use proptest::prelude::*;

    #[test]
    fn symmetric_and_affine_closed_forms() {
        // max |x| = 1.27 with 8 bits: scale 0.01, 0.5 → q = 50 → u = 178.
        let q = UniformQuantizer::fit(&[-1.27, 0.5, 1.0], 8, Mode::Symmetric).unwrap();
        assert!((q.scale - 0.01).abs() < 1e-7);
        assert_eq!(q.code(0.5), 178);
        assert!((q.fake_quantize(0.5) - 0.5).abs() < 1e-6);
        assert_eq!(q.fake_quantize(0.0), 0.0);
        // Affine [0, 2.55], 8 bits: scale 0.01, zero point 0; 0 exact.
        let a = UniformQuantizer::fit(&[0.3, 2.55], 8, Mode::Affine).unwrap();
        assert!((a.scale - 0.01).abs() < 1e-7);
        assert_eq!(a.fake_quantize(0.0), 0.0);
        assert!(UniformQuantizer::fit(&[1.0], 1, Mode::Symmetric).is_err());
        assert!(UniformQuantizer::fit(&[1.0], 17, Mode::Affine).is_err());
        assert!(UniformQuantizer::fit(&[f32::NAN], 8, Mode::Affine).is_err());
    }

    /// A range so wide that `scale · u` overflows f32 is an error, not a
    /// quantizer whose codes all read back as infinity (a 3-bit symmetric
    /// range of ±1.7e38 had `scale · 7 = 4e38`); the widest ranges that fit
    /// keep every value finite and the range's ends within half a step.
    #[test]
    fn ranges_too_wide_for_f32_values_are_errors() {
        assert!(UniformQuantizer::fit(&[1.7388187e38, 0.0], 3, Mode::Symmetric).is_err());
        for mode in [Mode::Symmetric, Mode::Affine] {
            assert!(UniformQuantizer::for_range(-f32::MAX, f32::MAX, 8, mode).is_err());
            for bits in 2..=16 {
                // scale · max_code: m (2^b − 1)/(2^(b−1) − 1) ≤ 3m symmetric, 2m affine.
                let m = f32::MAX / 3.5;
                let q = UniformQuantizer::for_range(-m, m, bits, mode).unwrap();
                for x in [-m, -m / 3.0, 0.0, m / 7.0, m] {
                    let y = q.fake_quantize(x);
                    assert!(y.is_finite(), "{mode:?} {bits} bits: {x} → {y}");
                }
                // Half a step (the affine zero point moves the grid by up
                // to that), to f32 rounding.
                let err = (q.fake_quantize(m) - m).abs();
                assert!(err <= q.scale * 0.5 + m * 1e-6, "{mode:?} {bits}: {err}");
            }
        }
    }

    #[test]
    fn error_within_half_step_and_forward_matches_dense() {
        let mut rng = SeededRng::new(1);
        let layer: Layer = ConvLayer::from_array(
            rng.normal_array((4, 3, 3, 3), 0.2),
            ConvSpec::new().with_padding(1),
        )
        .unwrap()
        .into();
        for (bits, mode, g) in [
            (4, Mode::Symmetric, Granularity::PerChannel),
            (3, Mode::Affine, Granularity::PerTensor),
        ] {
            let w = LayerWeights::of(&layer);
            let op = FixedPoint::new(bits, mode, g)
                .unwrap()
                .quantize(&w)
                .unwrap();
            let deq = op.dequantized();
            for (t, (row, qrow)) in w.matrix().rows().into_iter().zip(deq.rows()).enumerate() {
                let s = op.scales()[if op.scales().len() == 1 { 0 } else { t }];
                for (a, b) in row.iter().zip(qrow.iter()) {
                    assert!((a - b).abs() <= 0.5 * s * (1.0 + 1e-5), "{a} {b} {s}");
                }
            }
            let c = FixedPoint::new(bits, mode, g)
                .unwrap()
                .apply(&layer, ActShape::new(3, 5, 5))
                .unwrap();
            let Op::FixedPointConv(op) = &c.block.ops()[0] else {
                panic!()
            };
            let dense = op.layout().dense_layer(op.dequantized(), None).unwrap();
            let x = rng.normal_array((1, 3, 5, 5), 1.0);
            let (a, b) = (
                op.reference_forward(&x).unwrap(),
                dense.to_op().reference_forward(&x).unwrap(),
            );
            for (p, q) in a.iter().zip(b.iter()) {
                assert!((p - q).abs() < 1e-5);
            }
            // 27 codes per filter: ⌈27·bits/64⌉ words; scale + offset per group.
            let groups = if g == Granularity::PerChannel { 4 } else { 1 };
            let words = (27 * bits as u64).div_ceil(64);
            assert_eq!(c.report.after.weight_bytes, 4 * words * 8 + 8 * groups);
        }
    }

    #[test]
    fn calibration_methods() {
        let mut rng = SeededRng::new(2);
        let mut xs: Vec<f32> = (0..5000).map(|_| rng.normal() as f32).collect();
        xs.push(20.0); // one outlier
        let (lo, hi) = calibrate(&xs, Calibration::MinMax, 8).unwrap();
        assert_eq!(hi, 20.0);
        assert!(lo < -2.0);
        let (_, phi) = calibrate(&xs, Calibration::Percentile(99.0), 8).unwrap();
        assert!(phi > 2.0 && phi < 2.7, "{phi}");
        let (mlo, mhi) = calibrate(&xs, Calibration::MseOptimal, 4).unwrap();
        let mse = |lo, hi| {
            quantization_mse(
                &xs,
                &UniformQuantizer::for_range(lo, hi, 4, Mode::Affine).unwrap(),
            )
        };
        assert!(
            mse(mlo, mhi) < mse(lo, hi) * 0.5,
            "clipping the outlier must help at 4 bits"
        );
        for f in [0.05f32, 0.3, 0.6, 1.0] {
            assert!(mse(mlo, mhi) <= mse(lo * f, hi * f) + 1e-12);
        }
        assert!(calibrate(&xs, Calibration::Percentile(40.0), 8).is_err());
        assert!(calibrate(&[], Calibration::MinMax, 8).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn never_panics(bits in 0u32..20, sym in any::<bool>(), rows in 1usize..4, cols in 1usize..9, scale in -1e30f32..1e30) {
            let mut rng = SeededRng::new(cols as u64);
            let layer: Layer = LinearLayer::new(rng.normal_array((rows, cols), 1.0).mapv(|v: f32| v * scale.abs().max(1e-30)), None).unwrap().into();
            let mode = if sym { Mode::Symmetric } else { Mode::Affine };
            let r = FixedPoint::new(bits, mode, Granularity::PerChannel).and_then(|t| t.apply(&layer, ActShape::flat(cols)));
            let ok = bits <= 16 && bits >= if sym { 2 } else { 1 };
            prop_assert_eq!(r.is_ok(), ok);
        }
    }
}
