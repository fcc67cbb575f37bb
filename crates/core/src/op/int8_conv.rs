//! 8-bit integer convolution / linear layer with i32 accumulation and
//! fixed-point requantization: the 8-bit arithmetic of Vanhoucke et al. [49]
//! (survey section 5).
//!
//! # Format
//! - `weights`: `[rows, row_len]` i8, symmetric (zero point 0), one row per
//!   output filter (see [`WeightLayout`]).
//! - `weight_scales`: f32, length 1 (per tensor) or `rows` (per channel).
//! - `input`: the activation quantization [`QuantParams`] (u8 or i8).
//! - `bias`: optional i32 per filter, in units of `input.scale · weight_scale[t]`.
//! - `output`: optional [`QuantParams`] of the output; when present every
//!   channel carries a fixed-point [`Requant`] multiplier.
//!
//! # Semantics (exact integer arithmetic)
//! 1. `q = clamp(round(x / s_in) + z_in)` (round half away from zero) to the
//!    input type's range; zero padding reads as `z_in` (real 0).
//! 2. `acc[t] = bias[t] + Σ w[t, ·] · (q − z_in)` in i32 (the constructor
//!    proves it cannot overflow).
//! 3. Without `output`: `y = acc · s_in · s_w[t]` (computed in f64, stored f32).
//!    With `output`: `y_q = clamp(z_out + ((acc · m + 2^(n−1)) >> n))`, the
//!    `(m, n)` of [`Requant`] approximating `s_in·s_w[t]/s_out = m / 2^n`,
//!    then `y = s_out · (y_q − z_out)`.
//! 4. NaN: a NaN activation has no integer code (step 1 gives it the zero
//!    point), but as in IEEE arithmetic — and in the f32 layer of the
//!    dequantized tensors — every output that reads it, whatever the
//!    weight, is NaN ([`Int8Conv::nan_outputs`]). Infinities saturate in
//!    step 1 like any out-of-range value.

use ndarray::{Array1, Array2, Array4};

use super::weight_layout::WeightLayout;
use super::Operator;
use crate::cost::Cost;
use crate::error::{ensure_finite, Error, Result};
use crate::shape::ActShape;

/// The integer type of a quantized activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntType {
    /// Unsigned 8-bit, `0..=255`.
    U8,
    /// Signed 8-bit, `−128..=127`.
    I8,
}

impl IntType {
    /// The representable range `(min, max)`.
    pub fn range(self) -> (i32, i32) {
        match self {
            IntType::U8 => (0, 255),
            IntType::I8 => (-128, 127),
        }
    }
}

/// Affine quantization of an activation: `x ≈ scale · (q − zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantParams {
    scale: f32,
    zero_point: i32,
    dtype: IntType,
}

impl QuantParams {
    /// Validates a finite `scale > 0` and a zero point inside the type's range.
    pub fn new(scale: f32, zero_point: i32, dtype: IntType) -> Result<Self> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Error::param("activation scale", scale, "finite and > 0"));
        }
        let (lo, hi) = dtype.range();
        if !(lo..=hi).contains(&zero_point) {
            return Err(Error::param(
                "zero point",
                zero_point,
                format!("{lo}..={hi}"),
            ));
        }
        Ok(QuantParams {
            scale,
            zero_point,
            dtype,
        })
    }

    /// The scale.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// The zero point.
    pub fn zero_point(&self) -> i32 {
        self.zero_point
    }

    /// The integer type.
    pub fn dtype(&self) -> IntType {
        self.dtype
    }

    /// `clamp(round(x / scale) + zero_point)`; NaN maps to the zero point
    /// (the op then marks the outputs that read it NaN; see the module
    /// documentation).
    pub fn quantize(&self, x: f32) -> i32 {
        let (lo, hi) = self.dtype.range();
        let q = (f64::from(x) / f64::from(self.scale)).round();
        let q = if q.is_nan() { 0.0 } else { q };
        (q + f64::from(self.zero_point)).clamp(f64::from(lo), f64::from(hi)) as i32
    }

    /// `scale · (q − zero_point)`.
    pub fn dequantize(&self, q: i32) -> f32 {
        (f64::from(self.scale) * f64::from(q - self.zero_point)) as f32
    }
}

/// A fixed-point multiplier `m / 2^shift` with `m < 2^31`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requant {
    /// The integer multiplier `m`, in `[2^30, 2^31)`.
    pub multiplier: i64,
    /// The right shift `n`, in `1..=62`.
    pub shift: u32,
}

impl Requant {
    /// The closest `m / 2^n` to `real > 0` with `m ∈ [2^30, 2^31)`.
    pub fn from_real(real: f64) -> Result<Self> {
        if !(real.is_finite() && real > 0.0) {
            return Err(Error::param(
                "requantization multiplier",
                real,
                "finite and > 0",
            ));
        }
        let mut e = real.log2().floor() as i32 + 1; // real = f · 2^e, f ∈ [0.5, 1)
        let mut m = (real / 2f64.powi(e) * 2f64.powi(31)).round() as i64;
        if m >= 1 << 31 {
            m /= 2;
            e += 1;
        }
        if m < 1 << 30 {
            m *= 2;
            e -= 1;
        }
        let shift = 31 - e;
        if !(1..=62).contains(&shift) {
            return Err(Error::param(
                "requantization multiplier",
                real,
                "within [2^-31, 2^30)",
            ));
        }
        Ok(Requant {
            multiplier: m,
            shift: shift as u32,
        })
    }

    /// `(acc · m + 2^(n−1)) >> n`: rounding half up, exact in i64.
    pub fn apply(&self, acc: i32) -> i64 {
        (i64::from(acc) * self.multiplier + (1i64 << (self.shift - 1))) >> self.shift
    }
}

/// i8 weights, quantized activations, i32 accumulation, optional requantization.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Conv {
    layout: Box<WeightLayout>,
    weights: Array2<i8>,
    weight_scales: Array1<f32>,
    input: QuantParams,
    bias: Option<Array1<i32>>,
    output: Option<QuantParams>,
    requant: Vec<Requant>,
    learned: bool,
}

impl Int8Conv {
    /// Validates shapes, finite positive weight scales (length 1 or rows), and
    /// that the i32 accumulator cannot overflow; derives the requantization
    /// multipliers when `output` is given.
    pub fn new(
        layout: WeightLayout,
        weights: Array2<i8>,
        weight_scales: Array1<f32>,
        input: QuantParams,
        bias: Option<Array1<i32>>,
        output: Option<QuantParams>,
    ) -> Result<Self> {
        if weights.dim() != (layout.rows(), layout.row_len()) {
            return Err(Error::shape(
                "int8 weight matrix",
                format!("{} × {}", layout.rows(), layout.row_len()),
                format!("{} × {}", weights.nrows(), weights.ncols()),
            ));
        }
        super::weight_layout::check_groups(
            "int8 weight scales",
            weight_scales.len(),
            layout.rows(),
        )?;
        ensure_finite("int8 weight scales", weight_scales.iter())?;
        if let Some(bad) = weight_scales.iter().find(|&&s| s <= 0.0) {
            return Err(Error::param("int8 weight scale", bad, "> 0"));
        }
        if let Some(b) = &bias {
            if b.len() != layout.rows() {
                return Err(Error::shape("int8 bias length", layout.rows(), b.len()));
            }
        }
        let max_bias = bias.as_ref().map_or(0, |b| {
            b.iter().map(|v| i64::from(*v).abs()).max().unwrap_or(0)
        });
        let bound = layout.row_len() as i64 * 128 * 255 + max_bias;
        if bound > i64::from(i32::MAX) {
            return Err(Error::param(
                "int8 accumulator bound (row length · 128 · 255 + |bias|)",
                bound,
                format!("<= {}", i32::MAX),
            ));
        }
        let requant = match &output {
            None => Vec::new(),
            Some(out) => (0..layout.rows())
                .map(|t| {
                    let sw = weight_scales[if weight_scales.len() == 1 { 0 } else { t }];
                    Requant::from_real(
                        f64::from(input.scale) * f64::from(sw) / f64::from(out.scale),
                    )
                })
                .collect::<Result<_>>()?,
        };
        Ok(Int8Conv {
            layout: Box::new(layout),
            weights: weights.as_standard_layout().into_owned(),
            weight_scales,
            input,
            bias,
            output,
            requant,
            learned: false,
        })
    }

    /// The activation fake quantizer of `channels` channels as an int8
    /// layer: a 1×1 depthwise convolution with unit weights and weight
    /// scale 1, so `y = s·(q(x) − z)` — exactly the input `x̂` every
    /// `Int8Conv` with input quantization `input` computes with (step 1 of
    /// the module docs). Quantization-aware training puts it in front of a
    /// float layer so the training forward sees the int8 layer's inputs.
    ///
    /// # Errors
    /// `channels == 0`.
    pub fn quantize_dequantize(channels: usize, input: QuantParams) -> Result<Self> {
        let spec = crate::spec::ConvSpec::new().with_groups(channels.max(1));
        let layout = WeightLayout::conv([channels, 1, 1, 1], spec)?;
        Int8Conv::new(
            layout,
            Array2::ones((channels, 1)),
            Array1::ones(1),
            input,
            None,
            None,
        )
    }

    /// [`Int8Conv::quantize_dequantize`] whose scale `s` is a trainable
    /// parameter (`scale`, shape `[1]`, in `Graph::parameters`): the learned
    /// step size of LSQ (Esser et al. 2020), the zero point and type fixed.
    /// It computes exactly what the fixed quantizer of the same
    /// [`QuantParams`] computes; only training treats it differently.
    ///
    /// # Errors
    /// `channels == 0`.
    pub fn learned_quantize_dequantize(channels: usize, input: QuantParams) -> Result<Self> {
        let mut op = Int8Conv::quantize_dequantize(channels, input)?;
        op.learned = true;
        Ok(op)
    }

    /// Whether this op is a fake quantizer with a learned scale
    /// ([`Int8Conv::learned_quantize_dequantize`]).
    pub fn learns_scale(&self) -> bool {
        self.learned
    }

    /// This learned fake quantizer with the scale `scale` (zero point and
    /// type kept), as training writes the trained value back.
    ///
    /// # Errors
    /// An op that does not learn its scale; a scale that is not finite and
    /// positive.
    pub fn with_learned_scale(&self, scale: f32) -> Result<Self> {
        if !self.learned {
            return Err(Error::param(
                "int8 learned scale",
                scale,
                "an op made by Int8Conv::learned_quantize_dequantize",
            ));
        }
        let input = QuantParams::new(scale, self.input.zero_point, self.input.dtype)?;
        Int8Conv::learned_quantize_dequantize(self.layout.rows(), input)
    }

    /// Whether this op is an activation fake quantizer made by
    /// [`Int8Conv::quantize_dequantize`] (unit 1×1 depthwise weights, weight
    /// scale 1, no bias, no requantization): its output is then
    /// `s·(q(x) − z)` elementwise.
    pub fn is_quantize_dequantize(&self) -> bool {
        let WeightLayout::Conv { dims, spec } = *self.layout else {
            return false;
        };
        dims[1..] == [1, 1, 1]
            && spec == crate::spec::ConvSpec::new().with_groups(dims[0])
            && self.weights.iter().all(|&w| w == 1)
            && self.weight_scales.iter().all(|&s| s == 1.0)
            && self.bias.is_none()
            && self.output.is_none()
    }

    /// The geometry.
    pub fn layout(&self) -> &WeightLayout {
        &self.layout
    }

    /// Weights `[rows, row_len]`.
    pub fn weights(&self) -> &Array2<i8> {
        &self.weights
    }

    /// Weight scales (length 1 or rows).
    pub fn weight_scales(&self) -> &Array1<f32> {
        &self.weight_scales
    }

    /// Scale of output channel `t`'s weights.
    pub fn weight_scale(&self, t: usize) -> f32 {
        self.weight_scales[if self.weight_scales.len() == 1 { 0 } else { t }]
    }

    /// Input quantization.
    pub fn input_params(&self) -> &QuantParams {
        &self.input
    }

    /// Output quantization, when requantizing.
    pub fn output_params(&self) -> Option<&QuantParams> {
        self.output.as_ref()
    }

    /// i32 bias.
    pub fn bias(&self) -> Option<&Array1<i32>> {
        self.bias.as_ref()
    }

    /// Per-channel requantization multipliers (empty without `output`).
    pub fn requant(&self) -> &[Requant] {
        &self.requant
    }

    /// Which outputs read a NaN activation (for any weight, as `0 · NaN` is
    /// NaN): `None` when the input holds no NaN, else a mask of the output's
    /// shape. The reference forward and the fast kernels set these outputs
    /// to NaN.
    ///
    /// # Errors
    /// As [`Operator::reference_forward`] for an input the op cannot take.
    pub fn nan_outputs(&self, input: &Array4<f32>) -> Result<Option<Array4<bool>>> {
        if !input.iter().any(|v| v.is_nan()) {
            return Ok(None);
        }
        let hits = input.mapv(|v| if v.is_nan() { 1.0f32 } else { 0.0 });
        let ones = Array2::<f32>::ones((self.layout.rows(), self.layout.row_len()));
        let reads = self.layout.dense_forward(ones, None, &hits)?;
        Ok(Some(reads.mapv(|r| r > 0.0)))
    }

    /// Step 1: quantized input codes.
    pub fn quantize_input(&self, input: &Array4<f32>) -> Array4<i32> {
        input.mapv(|x| self.input.quantize(x))
    }

    /// Step 2: the i32 accumulators `[N, rows, oh, ow]` from input codes.
    pub fn accumulate(&self, codes: &Array4<i32>) -> Result<Array4<i32>> {
        let dims = codes.shape();
        crate::error::ensure_nonempty("input codes (NCHW)", dims)?;
        let shape = ActShape::new(dims[1], dims[2], dims[3]);
        let out = self.layout.output_shape(shape)?;
        let (lo, hi) = self.input.dtype.range();
        if let Some(bad) = codes.iter().find(|&&q| q < lo || q > hi) {
            return Err(Error::param("input code", bad, format!("{lo}..={hi}")));
        }
        let z = self.input.zero_point;
        let batch = codes.shape()[0];
        let mut acc = super::common::zeros_output::<i32>("int8 accumulator", out, batch)?;
        match *self.layout {
            WeightLayout::Linear { .. } => {
                let flat: Vec<i32> = codes.iter().map(|&q| q - z).collect();
                let f = shape.len();
                for n in 0..batch {
                    for t in 0..out.channels {
                        let mut s = self.bias.as_ref().map_or(0, |b| b[t]);
                        for j in 0..f {
                            s += i32::from(self.weights[[t, j]]) * flat[n * f + j];
                        }
                        acc[[n, t, 0, 0]] = s;
                    }
                }
            }
            WeightLayout::Conv { dims, spec } => {
                let [t_all, c_g, kh, kw] = dims;
                let t_g = t_all / spec.groups;
                let (h, w) = (shape.height as isize, shape.width as isize);
                for n in 0..batch {
                    for t in 0..t_all {
                        let g = t / t_g;
                        for y in 0..out.height {
                            for x in 0..out.width {
                                let mut s = self.bias.as_ref().map_or(0, |b| b[t]);
                                for c in 0..c_g {
                                    for i in 0..kh {
                                        let iy = (y * spec.stride.0 + i * spec.dilation.0) as isize
                                            - spec.padding.top as isize;
                                        if iy < 0 || iy >= h {
                                            continue;
                                        }
                                        for j in 0..kw {
                                            let ix = (x * spec.stride.1 + j * spec.dilation.1)
                                                as isize
                                                - spec.padding.left as isize;
                                            if ix < 0 || ix >= w {
                                                continue;
                                            }
                                            let wv = self.weights[[t, (c * kh + i) * kw + j]];
                                            let q =
                                                codes[[n, g * c_g + c, iy as usize, ix as usize]];
                                            s += i32::from(wv) * (q - z);
                                        }
                                    }
                                }
                                acc[[n, t, y, x]] = s;
                            }
                        }
                    }
                }
            }
        }
        Ok(acc)
    }

    /// The dequantized weight matrix `Ŵ[t, ·] = s_w[t] · w[t, ·]`
    /// `[rows, row_len]` (each product exact in f64, rounded once to f32):
    /// the float weights the op's arithmetic stands for, which the
    /// straight-through backward propagates through.
    pub fn dequantized(&self) -> Array2<f32> {
        Array2::from_shape_fn(self.weights.dim(), |(t, j)| {
            (f64::from(self.weights[[t, j]]) * f64::from(self.weight_scale(t))) as f32
        })
    }

    /// Steps 3 and 4: the f32 outputs from the i32 accumulators `acc`
    /// (`[N, rows, oh, ow]`, as [`Int8Conv::accumulate`] computes them on
    /// the codes of `input`) — requantized and dequantized with `output`,
    /// `acc · s_in · s_w[t]` without — and NaN wherever an output reads a
    /// NaN of `input`. Any kernel that computes the accumulators exactly
    /// gets the reference's outputs bit for bit.
    ///
    /// # Errors
    /// An input the op cannot take; `acc` not of the output's shape.
    pub fn outputs_from_accumulators(
        &self,
        input: &Array4<f32>,
        acc: &Array4<i32>,
    ) -> Result<Array4<f32>> {
        let s = input.shape();
        crate::error::ensure_nonempty("input activation (NCHW)", s)?;
        let out = self.layout.output_shape(ActShape::new(s[1], s[2], s[3]))?;
        let want = [s[0], out.channels, out.height, out.width];
        if acc.shape() != want {
            return Err(Error::shape(
                "int8 accumulators",
                format!("{want:?}"),
                format!("{:?}", acc.shape()),
            ));
        }
        let mut y = match (self.requantize(acc), &self.output) {
            (Some(q), Some(out)) => q.mapv(|v| out.dequantize(v)),
            _ => {
                let mut y = Array4::<f32>::zeros(acc.raw_dim());
                for ((n, t, a, b), v) in y.indexed_iter_mut() {
                    *v = (f64::from(acc[[n, t, a, b]])
                        * f64::from(self.input.scale)
                        * f64::from(self.weight_scale(t))) as f32;
                }
                y
            }
        };
        if let Some(nan) = self.nan_outputs(input)? {
            y.zip_mut_with(&nan, |v, &n| {
                if n {
                    *v = f32::NAN;
                }
            });
        }
        Ok(y)
    }

    /// Step 3 (with `output`): the requantized output codes; `None` without `output`.
    pub fn requantize(&self, acc: &Array4<i32>) -> Option<Array4<i32>> {
        let out = self.output.as_ref()?;
        let (lo, hi) = out.dtype.range();
        let mut y = acc.clone();
        for ((_, t, _, _), v) in y.indexed_iter_mut() {
            let r = self.requant[t].apply(*v) + i64::from(out.zero_point);
            *v = r.clamp(i64::from(lo), i64::from(hi)) as i32;
        }
        Some(y)
    }
}

impl Operator for Int8Conv {
    fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        self.layout.output_shape(input)
    }

    /// Payload: 1 byte per weight, 4 per weight scale and bias entry, 12 per
    /// requantization multiplier (i64 + u32).
    fn cost(&self, input: ActShape) -> Result<Cost> {
        let b = self.bias.as_ref().map_or(0, |b| b.len() as u64);
        let extra = self.weight_scales.len() as u64 + b;
        self.layout.cost(
            input,
            self.layout.weight_count() as u64 + extra,
            self.layout.weight_count() as u64 + 4 * extra + 12 * self.requant.len() as u64,
        )
    }

    fn reference_forward(&self, input: &Array4<f32>) -> Result<Array4<f32>> {
        let acc = self.accumulate(&self.quantize_input(input))?;
        self.outputs_from_accumulators(input, &acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConvSpec, SeededRng};

    fn op(output: Option<QuantParams>) -> (Int8Conv, Array2<i8>) {
        let mut rng = SeededRng::new(6);
        let l = WeightLayout::conv([3, 2, 3, 3], ConvSpec::new().with_padding(1).with_stride(2))
            .unwrap();
        let w = Array2::from_shape_fn((3, 18), |_| (rng.below(255) as i32 - 127) as i8);
        let input = QuantParams::new(0.05, 128, IntType::U8).unwrap();
        let op = Int8Conv::new(
            l,
            w.clone(),
            Array1::from(vec![0.01, 0.02, 0.03]),
            input,
            Some(Array1::from(vec![100, -200, 0])),
            output,
        )
        .unwrap();
        (op, w)
    }

    #[test]
    fn accumulators_equal_exact_dense_conv_of_integers() {
        // Independent truth: the f64 dense reference on small integers is exact.
        let (op, w) = op(None);
        let mut rng = SeededRng::new(7);
        let codes = Array4::from_shape_fn((2, 2, 5, 5), |_| rng.below(256) as i32);
        let acc = op.accumulate(&codes).unwrap();
        let dense = op
            .layout()
            .dense_forward(
                w.mapv(f32::from),
                Some(Array1::from(vec![100.0, -200.0, 0.0])),
                &codes.mapv(|q| (q - 128) as f32),
            )
            .unwrap();
        for (a, d) in acc.iter().zip(dense.iter()) {
            assert_eq!(*a as f32, *d);
        }
        assert!(op.accumulate(&codes.mapv(|q| q + 300)).is_err());
    }

    #[test]
    fn requant_matches_rounded_real_multiplier() {
        for real in [1e-4, 0.0123, 0.5, 0.999, 1.0, 3.7, 1000.0] {
            let r = Requant::from_real(real).unwrap();
            for acc in [-100_000, -7, 0, 1, 12_345, 2_000_000] {
                let want = (f64::from(acc) * real + 0.5).floor();
                // m/2^n differs from real by ≤ 2^-31 relative: off by at most one step.
                assert!((r.apply(acc) as f64 - want).abs() <= 1.0, "{real} {acc}");
            }
        }
        assert!(Requant::from_real(0.0).is_err());
        assert!(Requant::from_real(f64::NAN).is_err());
    }

    #[test]
    fn forward_with_output_is_requantized_accumulator() {
        let out = QuantParams::new(0.02, 10, IntType::I8).unwrap();
        let (op, _) = op(Some(out));
        let mut rng = SeededRng::new(8);
        let x = rng.normal_array((1, 2, 5, 5), 2.0);
        let acc = op.accumulate(&op.quantize_input(&x)).unwrap();
        let y = op.reference_forward(&x).unwrap();
        for ((n, t, a, b), &v) in y.indexed_iter() {
            let q = (op.requant()[t].apply(acc[[n, t, a, b]]) + 10).clamp(-128, 127) as i32;
            assert_eq!(v, out.dequantize(q));
        }
    }

    #[test]
    fn rejects_bad_parts() {
        let l = WeightLayout::linear(1, 2).unwrap();
        let p = QuantParams::new(1.0, 0, IntType::I8).unwrap();
        let w = Array2::<i8>::zeros((1, 2));
        assert!(Int8Conv::new(l, w.clone(), Array1::from(vec![0.0]), p, None, None).is_err());
        assert!(Int8Conv::new(l, w.clone(), Array1::ones(2), p, None, None).is_err());
        assert!(Int8Conv::new(l, Array2::zeros((2, 2)), Array1::ones(1), p, None, None).is_err());
        assert!(QuantParams::new(-1.0, 0, IntType::U8).is_err());
        assert!(QuantParams::new(1.0, 300, IntType::U8).is_err());
        let huge = WeightLayout::linear(1, 70_000).unwrap();
        assert!(Int8Conv::new(
            huge,
            Array2::zeros((1, 70_000)),
            Array1::ones(1),
            p,
            None,
            None
        )
        .is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        #[test]
        fn constructor_and_forward_never_panic(
            rows in 1usize..4, cols in 1usize..10, w_rows in 1usize..4, s_len in 0usize..5,
            scale in -2.0f32..2.0, zp in -300i32..300, signed in proptest::bool::ANY,
            x in proptest::collection::vec(-1e9f32..1e9, 1..12),
        ) {
            let layout = WeightLayout::linear(rows, cols).unwrap();
            let dtype = if signed { IntType::I8 } else { IntType::U8 };
            let p = QuantParams::new(scale, zp, dtype);
            let (lo, hi) = dtype.range();
            proptest::prop_assert_eq!(p.is_ok(), scale > 0.0 && (lo..=hi).contains(&zp));
            let Ok(p) = p else { return Ok(()) };
            let r = Int8Conv::new(layout, Array2::ones((w_rows, cols)), Array1::ones(s_len), p, None, Some(p));
            proptest::prop_assert_eq!(r.is_ok(), w_rows == rows && (s_len == 1 || s_len == rows));
            if let Ok(op) = r {
                let n = x.len();
                let input = Array4::from_shape_vec((1, n, 1, 1), x).unwrap();
                proptest::prop_assert_eq!(op.reference_forward(&input).is_ok(), n == cols);
            }
        }
    }

    #[test]
    fn nan_activations_give_nan_outputs_exactly_where_read() {
        // 3×3 kernel, padding 1, stride 2: output (y, x) reads input rows
        // 2y−1..=2y+1 and columns 2x−1..=2x+1 of every channel.
        for output in [None, Some(QuantParams::new(0.1, 3, IntType::I8).unwrap())] {
            let (op, _) = op(output);
            let mut rng = SeededRng::new(2);
            let x: Array4<f32> = rng.normal_array((2, 2, 5, 6), 1.0);
            let mut poisoned = x.clone();
            poisoned[[1, 1, 2, 3]] = f32::NAN;
            let clean = op.reference_forward(&x).unwrap();
            let y = op.reference_forward(&poisoned).unwrap();
            let reads = |o: usize, i: usize| (2 * o).abs_diff(i) <= 1;
            let mut nans = 0;
            for ((n, t, oy, ox), &v) in y.indexed_iter() {
                if n == 1 && reads(oy, 2) && reads(ox, 3) {
                    assert!(v.is_nan(), "({n}, {t}, {oy}, {ox}) = {v}");
                    nans += 1;
                } else {
                    assert_eq!(v, clean[[n, t, oy, ox]], "({n}, {t}, {oy}, {ox})");
                }
            }
            // Input row 2 is read by output row 1 only (rows 1..=3); input
            // column 3 by output columns 1 (1..=3) and 2 (3..=5): 2
            // positions × 3 filters.
            assert_eq!(nans, 6);
            assert!(op.nan_outputs(&x).unwrap().is_none());
        }
    }
}
