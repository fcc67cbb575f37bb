//! Shared helpers for the property tests: random layers and the error measure.

#![allow(dead_code)]

use hasten_core::ndarray::Array4;
use hasten_core::{BatchNorm, ConvLayer, ConvSpec, Op, Operator, Padding, SeededRng};

/// `‖fast − reference‖_F / ‖reference‖_F` (core's shared metric).
pub fn relative_error(fast: &Array4<f32>, reference: &Array4<f32>) -> f64 {
    assert_eq!(fast.shape(), reference.shape(), "output shapes differ");
    hasten_core::relative_error(reference, fast)
}

/// `‖fast − reference‖_F / ‖scale‖_F` (the absolute error if `scale` is
/// zero): the error of a kernel against the size of the value it computed
/// (`scale`), when the outputs compared went through maps that do not grow
/// an error but may shrink the output (ReLU, Clip).
pub fn error_relative_to(fast: &Array4<f32>, reference: &Array4<f32>, scale: &Array4<f32>) -> f64 {
    assert_eq!(fast.shape(), reference.shape(), "output shapes differ");
    let norm = |it: &mut dyn Iterator<Item = f64>| it.map(|v| v * v).sum::<f64>().sqrt();
    let diff = norm(
        &mut fast
            .iter()
            .zip(reference)
            .map(|(&f, &r)| f64::from(f) - f64::from(r)),
    );
    let size = norm(&mut scale.iter().map(|&v| f64::from(v)));
    if size == 0.0 {
        diff
    } else {
        diff / size
    }
}

/// A batch norm over `c` channels with random statistics and affine
/// parameters (scales in `[0.5, 1.5]`), so that a fused normalisation
/// changes every channel differently.
pub fn random_batch_norm(rng: &mut SeededRng, c: usize) -> BatchNorm {
    BatchNorm::new(
        rng.uniform_array(c, 0.5, 1.5),
        rng.normal_array(c, 0.5),
        rng.normal_array(c, 0.5),
        rng.uniform_array(c, 0.5, 1.5),
        1e-5,
    )
    .unwrap()
}

/// Sizes of a random convolution.
#[derive(Debug, Clone, Copy)]
pub struct ConvCase {
    pub batch: usize,
    pub groups: usize,
    pub c_g: usize,
    pub t_g: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub dilation: (usize, usize),
    pub padding: Padding,
    pub extra: (usize, usize),
    pub bias: bool,
    pub seed: u64,
}

impl ConvCase {
    /// Input height and width: the smallest the dilated kernel fits, plus `extra`.
    pub fn input_hw(&self) -> (usize, usize) {
        let eh = self.dilation.0 * (self.kh - 1) + 1;
        let ew = self.dilation.1 * (self.kw - 1) + 1;
        let h = eh
            .saturating_sub(self.padding.top + self.padding.bottom)
            .max(1);
        let w = ew
            .saturating_sub(self.padding.left + self.padding.right)
            .max(1);
        (h + self.extra.0, w + self.extra.1)
    }

    /// The layer and an input batch, from the case's seed.
    pub fn build(&self) -> (ConvLayer, Array4<f32>) {
        let mut rng = SeededRng::new(self.seed);
        let t = self.t_g * self.groups;
        let w = rng.normal_array((t, self.c_g, self.kh, self.kw), 1.0);
        let bias = self.bias.then(|| rng.normal_array(t, 1.0));
        let spec = ConvSpec::new()
            .with_stride_hw(self.stride.0, self.stride.1)
            .with_padding_sides(self.padding)
            .with_groups(self.groups);
        let spec = ConvSpec {
            dilation: self.dilation,
            ..spec
        };
        let layer = ConvLayer::new(hasten_core::Conv4d::new(w).unwrap(), bias, spec).unwrap();
        let (h, wd) = self.input_hw();
        let x = rng.normal_array((self.batch, self.c_g * self.groups, h, wd), 1.0);
        (layer, x)
    }
}

/// A strategy over convolution cases with the given channel and kernel bounds.
pub fn conv_case(
    max_groups: usize,
    max_channels: usize,
    max_kernel: usize,
) -> impl proptest::strategy::Strategy<Value = ConvCase> {
    use proptest::prelude::*;
    (
        (
            1..=3usize,
            1..=max_groups,
            1..=max_channels,
            1..=max_channels,
        ),
        (
            1..=max_kernel,
            1..=max_kernel,
            1..=3usize,
            1..=3usize,
            1..=2usize,
            1..=2usize,
        ),
        (0..=2usize, 0..=2usize, 0..=2usize, 0..=2usize),
        (0..=7usize, 0..=7usize, any::<bool>(), any::<u64>()),
    )
        .prop_map(
            |(
                (batch, groups, c_g, t_g),
                (kh, kw, s0, s1, d0, d1),
                (pt, pb, pl, pr),
                (e0, e1, bias, seed),
            )| {
                ConvCase {
                    batch,
                    groups,
                    c_g,
                    t_g,
                    kh,
                    kw,
                    stride: (s0, s1),
                    dilation: (d0, d1),
                    padding: Padding {
                        top: pt,
                        bottom: pb,
                        left: pl,
                        right: pr,
                    },
                    extra: (e0, e1),
                    bias,
                    seed,
                }
            },
        )
}

/// The reference forward of `ops` one after the other, a batch norm as the
/// plan's f32 `scale·x + shift` of `BatchNorm::affine` (core's own batch
/// norm computes in f64, which may differ in the last bit).
pub fn reference_with_f32_batch_norm(ops: &[Op], x: &Array4<f32>) -> Array4<f32> {
    let mut y = x.clone();
    for op in ops {
        y = match op {
            Op::BatchNorm(b) => {
                let (scale, shift) = b.affine();
                let mut z = y.clone();
                for ((_, ch, _, _), v) in z.indexed_iter_mut() {
                    *v = scale[ch] * *v + shift[ch];
                }
                z
            }
            _ => op.reference_forward(&y).unwrap(),
        };
    }
    y
}

/// Whether `a` and `b` hold the same bits (any NaN equal to any NaN).
pub fn same_bits(a: &Array4<f32>, b: &Array4<f32>) -> bool {
    a.shape() == b.shape()
        && a.iter()
            .zip(b.iter())
            .all(|(f, s)| f.to_bits() == s.to_bits() || (f.is_nan() && s.is_nan()))
}
