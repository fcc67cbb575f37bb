//! 8-bit integer inference (Vanhoucke et al. \[49\], survey section 5): i8
//! weights with per-channel (or per-tensor) symmetric scales, u8 or i8
//! activations with a calibrated range, i32 accumulation and optional
//! fixed-point requantization of the output, in an [`Int8Conv`].

use hasten_core::ndarray::Array1;
use hasten_core::{
    ActShape, Compressed, Error, Int8Conv, IntType, Layer, QuantParams, Result, Transform,
};

use crate::weights::{Granularity, LayerWeights, QuantizeLayer};

/// The affine activation parameters covering `[lo, hi]` (extended to contain
/// 0, so that zero padding is exact) with 256 levels of `dtype`.
///
/// # Errors
///
/// [`Error::InvalidParameter`] when `lo` or `hi` is not finite or
/// `lo > hi`.
///
/// # Examples
///
/// ```
/// use hasten_core::IntType;
/// use hasten_quant::activation_params;
///
/// let p = activation_params(0.0, 2.55, IntType::U8)?;
/// assert!((p.scale() - 0.01).abs() < 1e-6);
/// assert!(activation_params(1.0, 0.0, IntType::U8).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn activation_params(lo: f32, hi: f32, dtype: IntType) -> Result<QuantParams> {
    if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
        return Err(Error::param(
            "activation range",
            format!("[{lo}, {hi}]"),
            "finite with lo <= hi",
        ));
    }
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
    let (qmin, qmax) = dtype.range();
    let z = (f64::from(qmin) - f64::from(lo) / f64::from(scale)).round();
    QuantParams::new(
        scale,
        z.clamp(f64::from(qmin), f64::from(qmax)) as i32,
        dtype,
    )
}

/// Int8 quantization of a layer for a calibrated input range (survey
/// section 5): applied as a [`Transform`], it replaces the layer by an
/// [`Int8Conv`].
///
/// # Errors
///
/// [`Transform::apply`] fails with a typed error for weights that are not
/// finite, and for a bias too large for the input scale (it must fit in
/// ±2³⁰ once quantized; a channel's weight scale is coarsened until it
/// does, so this only happens where no finite scale can).
///
/// # Examples
///
/// ```
/// use hasten_core::{ActShape, ConvLayer, ConvSpec, IntType, Layer, SeededRng, Transform};
/// use hasten_quant::{activation_params, Granularity, Int8Quantize};
///
/// let w = SeededRng::new(0).normal_array((8, 4, 3, 3), 0.2);
/// let layer = Layer::from(ConvLayer::from_array(w, ConvSpec::new().with_padding(1))?);
/// let input = activation_params(0.0, 6.0, IntType::U8)?;
/// let int8 = Int8Quantize::new(input, None, Granularity::PerChannel);
/// let c = int8.apply(&layer, ActShape::new(4, 8, 8))?;
/// assert_eq!(c.block.ops()[0].kind(), "int8_conv");
/// assert!(c.report.weight_error.unwrap() < 0.02);
/// # Ok::<(), hasten_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Int8Quantize {
    input: QuantParams,
    output: Option<QuantParams>,
    granularity: Granularity,
}

/// The largest quantized bias magnitude a weight scale is chosen for
/// (2^29: half the i32 accumulator's headroom of ±2^30, so that rounding
/// and f32 scales never push it over).
const BIAS_LIMIT: f64 = (1u32 << 29) as f64;

impl Int8Quantize {
    /// Inputs quantized with `input`; outputs requantized with `output` when given.
    pub fn new(input: QuantParams, output: Option<QuantParams>, granularity: Granularity) -> Self {
        Int8Quantize {
            input,
            output,
            granularity,
        }
    }

    /// The op for a layer's weights.
    pub fn quantize(&self, weights: &LayerWeights) -> Result<Int8Conv> {
        let m = &weights.matrix();
        let rows = m.nrows();
        let groups = self.granularity.groups(rows);
        let mut scales = Array1::<f32>::zeros(groups.len());
        let input_scale = f64::from(self.input.scale());
        for (g, range) in groups.iter().enumerate() {
            let max = m
                .slice(hasten_core::ndarray::s![range.clone(), ..])
                .iter()
                .fold(0.0f32, |a, &v| a.max(v.abs()));
            let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
            // The bias is stored in i32 at scale `input · weight`: a channel
            // whose weights are tiny next to its bias (a dead filter after
            // batch-norm folding) gets the coarser weight scale that keeps
            // its quantized bias within ±2^29, its weights rounding to 0.
            let bias_max = weights.bias().map_or(0.0, |b| {
                b.slice(hasten_core::ndarray::s![range.clone()])
                    .iter()
                    .fold(0.0f64, |a, &v| a.max(f64::from(v).abs()))
            });
            let floor = (bias_max / (input_scale * BIAS_LIMIT)) as f32;
            scales[g] = if floor.is_finite() {
                scale.max(floor)
            } else {
                scale
            };
        }
        let scale_of = |t: usize| scales[if scales.len() == 1 { 0 } else { t }];
        let q = hasten_core::ndarray::Array2::from_shape_fn(m.dim(), |(t, j)| {
            (m[[t, j]] / scale_of(t)).round().clamp(-127.0, 127.0) as i8
        });
        let bias = match weights.bias() {
            None => None,
            Some(b) => Some(
                b.iter()
                    .enumerate()
                    .map(|(t, &v)| {
                        let r = (f64::from(v)
                            / (f64::from(self.input.scale()) * f64::from(scale_of(t))))
                        .round();
                        if r.abs() > f64::from(i32::MAX) / 2.0 {
                            Err(Error::param(
                                format!("quantized bias of channel {t}"),
                                r,
                                "within ±2^30 (input scale too small for this bias)",
                            ))
                        } else {
                            Ok(r as i32)
                        }
                    })
                    .collect::<Result<Array1<i32>>>()?,
            ),
        };
        Int8Conv::new(*weights.layout(), q, scales, self.input, bias, self.output)
    }
}

impl Transform for Int8Quantize {
    fn name(&self) -> &str {
        "int8 (i32 accumulation)"
    }

    fn apply(&self, layer: &Layer, input: ActShape) -> Result<Compressed> {
        let dequantize = |op: &Int8Conv| {
            hasten_core::ndarray::Array2::from_shape_fn(op.weights().dim(), |(t, j)| {
                f32::from(op.weights()[[t, j]]) * op.weight_scale(t)
            })
        };
        self.quantize_layer(Self::quantize, dequantize, layer, input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed_point::{calibrate, Calibration};
    use hasten_core::ndarray::Array2;
    use hasten_core::{ConvLayer, ConvSpec, LinearLayer, Op, Operator, SeededRng};

    #[test]
    fn forward_equals_dense_on_dequantized_weights_and_fake_quantized_input() {
        let mut rng = SeededRng::new(1);
        let layer = ConvLayer::new(
            hasten_core::Conv4d::new(rng.normal_array((6, 4, 3, 3), 0.2)).unwrap(),
            Some(rng.normal_array(6, 0.1)),
            ConvSpec::new().with_padding(1),
        )
        .unwrap();
        let x = rng.normal_array((2, 4, 6, 6), 1.0);
        let (lo, hi) = calibrate(x.as_slice().unwrap(), Calibration::MinMax, 8).unwrap();
        let params = activation_params(lo, hi, IntType::U8).unwrap();
        let t = Int8Quantize::new(params, None, Granularity::PerChannel);
        let c = t
            .apply(&layer.clone().into(), ActShape::new(4, 6, 6))
            .unwrap();
        let Op::Int8Conv(op) = &c.block.ops()[0] else {
            panic!()
        };
        // Dense truth: dequantized weights and bias on the fake-quantized input.
        let deq = Array2::from_shape_fn((6, 36), |(t, j)| {
            f32::from(op.weights()[[t, j]]) * op.weight_scale(t)
        });
        let bias: Array1<f32> = (0..6)
            .map(|t| {
                (f64::from(op.bias().unwrap()[t])
                    * f64::from(params.scale())
                    * f64::from(op.weight_scale(t))) as f32
            })
            .collect();
        let xq = x.mapv(|v| params.dequantize(params.quantize(v)));
        let want = op.layout().dense_forward(deq, Some(bias), &xq).unwrap();
        let got = op.reference_forward(&x).unwrap();
        for (a, b) in got.iter().zip(want.iter()) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
        // And it approximates the float layer: relative output error below 2 %.
        let dense = layer.reference_forward(&x).unwrap();
        let num: f32 = got
            .iter()
            .zip(dense.iter())
            .map(|(a, b)| (a - b) * (a - b))
            .sum();
        let den: f32 = dense.iter().map(|b| b * b).sum();
        assert!((num / den).sqrt() < 0.02, "{}", (num / den).sqrt());
        // 1 byte per weight + 6 scales + 6 i32 biases.
        assert_eq!(c.report.after.weight_bytes, 216 + 24 + 24);
    }

    #[test]
    fn dead_filter_with_large_bias_keeps_its_bias() {
        // Batch-norm folding leaves filters with weights ~1e-9 and a bias of
        // order 1: at the per-channel scale max|w|/127 that bias would need
        // ~1e12 in i32. The coarser scale keeps it, the weights go to 0.
        let mut rng = SeededRng::new(3);
        let mut w = rng.normal_array((3, 2, 3, 3), 0.3);
        w.slice_mut(hasten_core::ndarray::s![1, .., .., ..])
            .mapv_inplace(|v| v * 1e-8);
        let b = Array1::from(vec![0.1f32, -1.5, 0.2]);
        let layer = ConvLayer::new(
            hasten_core::Conv4d::new(w).unwrap(),
            Some(b),
            ConvSpec::new(),
        )
        .unwrap();
        let input = activation_params(-2.0, 2.0, IntType::U8).unwrap();
        let c = Int8Quantize::new(input, None, Granularity::PerChannel)
            .apply(&layer.clone().into(), ActShape::new(2, 4, 4))
            .unwrap();
        let Op::Int8Conv(op) = &c.block.ops()[0] else {
            panic!()
        };
        assert!(op.weights().row(1).iter().all(|&q| q == 0));
        // The other channels keep their usual scale max|w|/127.
        let m = layer.weight().array().to_shape((3, 18)).unwrap().to_owned();
        let usual = m.row(0).iter().fold(0.0f32, |a, &v| a.max(v.abs())) / 127.0;
        assert_eq!(op.weight_scale(0), usual);
        // Truth: the float layer; the dead channel's output is its bias.
        let x = rng.normal_array((1, 2, 4, 4), 0.6);
        let got = op.reference_forward(&x).unwrap();
        let dense = layer.reference_forward(&x).unwrap();
        for (a, d) in got.iter().zip(dense.iter()) {
            assert!((a - d).abs() < 0.05, "{a} vs {d}");
        }
        for &v in got.slice(hasten_core::ndarray::s![0, 1, .., ..]).iter() {
            assert!((v + 1.5).abs() < 1e-5, "{v}");
        }
    }

    #[test]
    fn activation_params_cover_range_and_zero() {
        let p = activation_params(-1.0, 3.0, IntType::U8).unwrap();
        assert_eq!(p.dequantize(p.quantize(0.0)), 0.0);
        assert!((p.dequantize(p.quantize(3.0)) - 3.0).abs() <= p.scale());
        assert!((p.dequantize(p.quantize(-1.0)) + 1.0).abs() <= p.scale());
        let s = activation_params(-2.0, 2.0, IntType::I8).unwrap();
        assert_eq!(s.dequantize(s.quantize(0.0)), 0.0);
        assert!(activation_params(1.0, 0.0, IntType::U8).is_err());
        assert!(activation_params(f32::NAN, 0.0, IntType::U8).is_err());
    }

    #[test]
    fn linear_layer_with_requantized_output() {
        let mut rng = SeededRng::new(2);
        let layer: Layer = LinearLayer::new(rng.normal_array((5, 20), 0.3), None)
            .unwrap()
            .into();
        let input = activation_params(-3.0, 3.0, IntType::I8).unwrap();
        let output = activation_params(-5.0, 5.0, IntType::I8).unwrap();
        let c = Int8Quantize::new(input, Some(output), Granularity::PerTensor)
            .apply(&layer, ActShape::flat(20))
            .unwrap();
        let x = rng.normal_array((3, 20, 1, 1), 1.0);
        let y = c.block.reference_forward(&x).unwrap();
        let dense = layer.to_op().reference_forward(&x).unwrap();
        for (a, b) in y.iter().zip(dense.iter()) {
            // Output step 10/255 ≈ 0.04; input and weight rounding add a little more.
            assert!((a - b).abs() < 0.1, "{a} vs {b}");
        }
    }
}
