//! Shared checks of the cross-crate tests: a transform's block run through
//! `hasten::fastconv` equals its reference forward, the block is the dense
//! layer with the kernel it computes, and that kernel is as far from the
//! original as the report says.
//!
//! The effective kernel of a block is read off the block itself by probing
//! (one one-hot input per kernel tap, plus a zero input for the bias), so the
//! report's weight error is checked against what the block really computes,
//! not against the factors the transform says it used.
#![allow(dead_code)]

use hasten::core::ndarray::{s, Array1, Array2, Array4};
use hasten::core::{relative_error, ActShape, Block, Conv4d, ConvLayer, ConvSpec, Padding};

/// fastconv's stated agreement with the reference forward.
pub const FAST_TOL: f64 = 1e-4;

/// The specs every conv transform is tested with: stride 1 and 2, symmetric
/// and asymmetric zero padding.
pub fn specs() -> Vec<ConvSpec> {
    vec![
        ConvSpec::new().with_padding(1),
        ConvSpec::new().with_stride(2).with_padding(1),
        ConvSpec::new().with_stride(2).with_padding_sides(Padding {
            top: 1,
            bottom: 0,
            left: 0,
            right: 1,
        }),
    ]
}

/// `‖x‖_F`.
pub fn norm<D: hasten::core::ndarray::Dimension>(x: &hasten::core::ndarray::Array<f32, D>) -> f64 {
    x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt()
}

/// Asserts that `fastconv::forward` and a pre-packed `fastconv::Plan` agree
/// with the block's reference forward on `x`; returns the reference output.
pub fn assert_fast_matches_reference(block: &Block, x: &Array4<f32>, what: &str) -> Array4<f32> {
    let reference = block.reference_forward(x).unwrap();
    let fast = hasten::fastconv::forward(block, x).unwrap();
    let err = relative_error(&reference, &fast);
    assert!(err < FAST_TOL, "{what}: fast vs reference {err:e}");
    let d = x.shape();
    let input = ActShape::new(d[1], d[2], d[3]);
    let mut plan = hasten::fastconv::Plan::new(block, input, d[0]).unwrap();
    let planned = plan.run(x).unwrap().to_owned();
    let err = relative_error(&reference, &planned);
    assert!(err < FAST_TOL, "{what}: plan vs reference {err:e}");
    reference
}

/// The dense kernel `[T, C, kh, kw]` and bias `[T]` a conv block computes,
/// assuming it is `conv(x, W̃, spec) + b̃` (checked afterwards by
/// [`assert_block_is_conv`]). Reads output position `(oy, ox)`, the first
/// whose receptive field lies wholly inside the image.
pub fn probe_conv(block: &Block, c: usize, kh: usize, kw: usize, spec: &ConvSpec) -> ConvLayer {
    let (sy, sx) = spec.stride;
    let (pt, pl) = (spec.padding.top, spec.padding.left);
    let (oy, ox) = (pt.div_ceil(sy), pl.div_ceil(sx));
    let (r0, c0) = (oy * sy - pt, ox * sx - pl);
    let (h, w) = (r0 + kh, c0 + kw);
    let taps = c * kh * kw;
    let mut x = Array4::<f32>::zeros((taps + 1, c, h, w));
    for ch in 0..c {
        for i in 0..kh {
            for j in 0..kw {
                let idx = (ch * kh + i) * kw + j;
                x[[1 + idx, ch, r0 + i, c0 + j]] = 1.0;
            }
        }
    }
    let y = block.reference_forward(&x).unwrap();
    let t = y.shape()[1];
    let bias = Array1::from_shape_fn(t, |o| y[[0, o, oy, ox]]);
    let kernel = Array4::from_shape_fn((t, c, kh, kw), |(o, ch, i, j)| {
        y[[1 + (ch * kh + i) * kw + j, o, oy, ox]] - bias[o]
    });
    ConvLayer::new(Conv4d::new(kernel).unwrap(), Some(bias), *spec).unwrap()
}

/// The dense `[out, in]` matrix and bias a linear block computes.
pub fn probe_linear(block: &Block, features: usize) -> (Array2<f32>, Array1<f32>) {
    let mut x = Array4::<f32>::zeros((features + 1, features, 1, 1));
    for j in 0..features {
        x[[1 + j, j, 0, 0]] = 1.0;
    }
    let y = block.reference_forward(&x).unwrap();
    let out = y.shape()[1];
    let bias = Array1::from_shape_fn(out, |o| y[[0, o, 0, 0]]);
    let w = Array2::from_shape_fn((out, features), |(o, j)| y[[1 + j, o, 0, 0]] - bias[o]);
    (w, bias)
}

/// The block equals the dense convolution with its probed kernel and bias on
/// `x` (relative error below [`FAST_TOL`]: both are f32 forwards of the same
/// linear map, rounded differently).
pub fn assert_block_is_conv(block: &Block, dense: &ConvLayer, x: &Array4<f32>, what: &str) {
    let y = block.reference_forward(x).unwrap();
    let d = Block::single(dense.clone()).reference_forward(x).unwrap();
    let err = relative_error(&d, &y);
    assert!(err < FAST_TOL, "{what}: block vs its dense kernel {err:e}");
}

/// `‖W̃ − W‖_F / ‖W‖_F` of two kernels, in f64.
pub fn weight_error(original: &[f32], approx: &[f32]) -> f64 {
    let num: f64 = original
        .iter()
        .zip(approx)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum();
    let den: f64 = original.iter().map(|&a| f64::from(a).powi(2)).sum();
    (num / den).sqrt()
}

/// The probed weight error equals the report's: both are `‖W̃ − W‖/‖W‖`; the
/// probe reads `W̃` back through an f32 forward of the stored f32 factors,
/// which moves it by ~1e-6 of `‖W‖`, so 1e-4 absolute is two orders above
/// the rounding and far below any approximation error a wrong report would
/// show.
pub fn assert_report_error(reported: Option<f64>, probed: f64, what: &str) {
    let reported = reported.unwrap_or_else(|| panic!("{what}: report has no weight error"));
    assert!(
        (reported - probed).abs() < 1e-4,
        "{what}: report says weight error {reported}, the block computes {probed}"
    );
}

/// The output-error bound a weight error `ε` predicts for a convolution
/// without its bias: each output is `⟨ΔW_t, patch_p⟩`, so by Cauchy–Schwarz
/// `‖Δy‖² ≤ ‖ΔW‖_F² Σ_p ‖patch_p‖²`, and every input pixel lies in at most
/// `⌈kh/sy⌉·⌈kw/sx⌉` patches (dilation 1; padding adds zeros only), so
/// `‖Δy‖ ≤ ε ‖W‖_F √(⌈kh/sy⌉⌈kw/sx⌉) ‖x‖_F`.
pub fn conv_error_bound(
    eps: f64,
    w_norm: f64,
    kh: usize,
    kw: usize,
    spec: &ConvSpec,
    x: f64,
) -> f64 {
    let overlap = kh.div_ceil(spec.stride.0) * kw.div_ceil(spec.stride.1);
    eps * w_norm * (overlap as f64).sqrt() * x
}

/// `y − b` for an NCHW output and a per-channel bias.
pub fn without_bias(y: &Array4<f32>, b: Option<&Array1<f32>>) -> Array4<f32> {
    let mut y = y.clone();
    if let Some(b) = b {
        for (t, &v) in b.iter().enumerate() {
            y.slice_mut(s![.., t, .., ..]).mapv_inplace(|a| a - v);
        }
    }
    y
}

/// `‖a − b‖_F` in f64.
pub fn diff_norm(a: &Array4<f32>, b: &Array4<f32>) -> f64 {
    a.iter()
        .zip(b.iter())
        .map(|(&p, &q)| (f64::from(p) - f64::from(q)).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Whether a transform keeps the layer's bias or refits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BiasRule {
    /// The block's bias is the layer's.
    Kept,
    /// The block carries a refitted bias (asymmetric reconstruction).
    Refitted,
}

/// All three checks of a transform on a conv layer with spatial input
/// `hw × hw`: fast = reference at batch 1 and 3; the block is the dense conv
/// with its probed kernel (same stride and padding); the report's weight
/// error is that kernel's; and the output error of the block against the
/// layer (bias removed) stays within [`conv_error_bound`].
pub fn check_conv_transform(
    t: &dyn hasten::core::Transform,
    layer: &ConvLayer,
    hw: usize,
    bias: BiasRule,
    seed: u64,
) -> hasten::core::Compressed {
    use hasten::core::{ActShape, Layer, SeededRng};
    let [_, c, kh, kw] = layer.weight().dims();
    let spec = *layer.spec();
    let what = format!("{} {spec:?}", t.name());
    let out = t
        .apply(&Layer::Conv(layer.clone()), ActShape::new(c, hw, hw))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut rng = SeededRng::new(seed);
    let mut x3 = None;
    for batch in [1, 3] {
        let x = rng.normal_array((batch, c, hw, hw), 1.0);
        assert_fast_matches_reference(&out.block, &x, &format!("{what} batch {batch}"));
        x3 = Some(x);
    }
    let x = x3.unwrap();
    let dense = probe_conv(&out.block, c, kh, kw, &spec);
    assert_block_is_conv(&out.block, &dense, &x, &what);
    let w = layer.weight().array();
    let w_tilde = dense.weight().array();
    let eps = weight_error(
        w.as_standard_layout().as_slice().unwrap(),
        w_tilde.as_standard_layout().as_slice().unwrap(),
    );
    assert_report_error(out.report.weight_error, eps, &what);
    if bias == BiasRule::Kept {
        let b = layer
            .bias()
            .cloned()
            .unwrap_or_else(|| Array1::zeros(w.shape()[0]));
        let err = relative_error(&b, dense.bias().unwrap());
        assert!(err < FAST_TOL, "{what}: bias not kept ({err:e})");
    }
    let y_block = without_bias(&out.block.reference_forward(&x).unwrap(), dense.bias());
    let y_layer = without_bias(
        &Block::single(layer.clone()).reference_forward(&x).unwrap(),
        layer.bias(),
    );
    let bound = conv_error_bound(eps, norm(w), kh, kw, &spec, norm(&x));
    // f32 slack: both outputs carry ~1e-6 relative rounding.
    let slack = 1e-5 * norm(&y_layer);
    let got = diff_norm(&y_block, &y_layer);
    assert!(
        got <= bound + slack,
        "{what}: output error {got} above the bound {bound} of weight error {eps}"
    );
    out
}

/// The same checks for a fully connected layer: fast = reference at batch 1
/// and 3, the report's weight error is the probed matrix's, the bias is kept,
/// and `‖Δy‖ ≤ ε ‖W‖_F ‖x‖_F` (Cauchy–Schwarz per sample).
pub fn check_linear_transform(
    t: &dyn hasten::core::Transform,
    layer: &hasten::core::LinearLayer,
    seed: u64,
) -> hasten::core::Compressed {
    use hasten::core::{ActShape, Layer, SeededRng};
    let w = layer.weight();
    let (o, f) = w.dim();
    let what = format!("{} linear {o}x{f}", t.name());
    let out = t
        .apply(&Layer::Linear(layer.clone()), ActShape::new(f, 1, 1))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut rng = SeededRng::new(seed);
    let mut x3 = None;
    for batch in [1, 3] {
        let x = rng.normal_array((batch, f, 1, 1), 1.0);
        assert_fast_matches_reference(&out.block, &x, &format!("{what} batch {batch}"));
        x3 = Some(x);
    }
    let x = x3.unwrap();
    let (w_tilde, b_tilde) = probe_linear(&out.block, f);
    let eps = weight_error(
        w.as_standard_layout().as_slice().unwrap(),
        w_tilde.as_standard_layout().as_slice().unwrap(),
    );
    assert_report_error(out.report.weight_error, eps, &what);
    let b = layer.bias().cloned().unwrap_or_else(|| Array1::zeros(o));
    assert!(
        relative_error(&b, &b_tilde) < FAST_TOL,
        "{what}: bias not kept"
    );
    let y_block = out.block.reference_forward(&x).unwrap();
    let dense = hasten::core::LinearLayer::new(w_tilde, Some(b_tilde)).unwrap();
    let y_dense = Block::single(dense).reference_forward(&x).unwrap();
    let err = relative_error(&y_dense, &y_block);
    assert!(err < FAST_TOL, "{what}: block vs its dense matrix {err:e}");
    let y_layer = Block::single(layer.clone()).reference_forward(&x).unwrap();
    let bound = eps * norm(w) * norm(&x);
    let slack = 1e-5 * norm(&y_layer);
    let got = diff_norm(&y_block, &y_layer);
    assert!(
        got <= bound + slack,
        "{what}: output error {got} above {bound}"
    );
    out
}

/// A seeded conv layer `[t, c, 3, 3]` with bias and the given spec.
pub fn conv_layer(t: usize, c: usize, spec: ConvSpec, seed: u64) -> ConvLayer {
    let mut rng = hasten::core::SeededRng::new(seed);
    ConvLayer::new(
        Conv4d::new(rng.normal_array((t, c, 3, 3), 0.3)).unwrap(),
        Some(rng.normal_array(t, 0.1)),
        spec,
    )
    .unwrap()
}

/// A seeded linear layer `[out, in]` with bias.
pub fn linear_layer(out: usize, inp: usize, seed: u64) -> hasten::core::LinearLayer {
    let mut rng = hasten::core::SeededRng::new(seed);
    hasten::core::LinearLayer::new(
        rng.normal_array((out, inp), 0.3),
        Some(rng.normal_array(out, 0.1)),
    )
    .unwrap()
}
