//! Max and average pooling over `kh × kw` windows (ONNX `MaxPool` /
//! `AveragePool`, PyTorch `MaxPool2d` / `AvgPool2d`).
//!
//! Both share [`PoolSpec`]'s geometry: output size
//! `⌊(in + pad_before + pad_after − k) / s⌋ + 1` (`⌈·⌉` in ceil mode, where
//! the last window must still start inside the input or the leading
//! padding), and [`PoolSpec::windows`], the input range and clipped length of
//! every window, which the fast kernels use too.
//!
//! A window lying entirely in padding would have no input value (max −∞,
//! average 0/0); such specs are rejected: every padding must be smaller than
//! the kernel along its axis (PyTorch demands at most half of it).

use ndarray::Array4;

use super::{input_shape_of, Operator};
use crate::cost::Cost;
use crate::error::{Error, Result};
use crate::shape::ActShape;
use crate::spec::Padding;

/// Kernel, stride, padding and rounding of a pooling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolSpec {
    /// Window height and width, each ≥ 1.
    pub kernel: (usize, usize),
    /// Vertical and horizontal stride, each ≥ 1 (default 1, as ONNX).
    pub stride: (usize, usize),
    /// Padding on each side; each must be smaller than the kernel.
    pub padding: Padding,
    /// Round the output size up instead of down.
    pub ceil_mode: bool,
}

/// One window along one axis, in input coordinates: it reads input
/// positions `start..end` (never empty) and covers `padded_len` positions
/// of the padded input (the divisor of an average that counts padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolWindow {
    /// First input position read.
    pub start: usize,
    /// One past the last input position read.
    pub end: usize,
    /// Window length clipped to the padded input.
    pub padded_len: usize,
}

impl PoolWindow {
    /// Input positions read, `end − start`.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Always false for a window of a valid spec.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// The per-axis quantities of a pooling geometry.
#[derive(Debug, Clone, Copy)]
struct Axis {
    name: &'static str,
    input: usize,
    kernel: usize,
    stride: usize,
    before: usize,
    after: usize,
    ceil: bool,
}

fn overflow(what: &str) -> Error {
    Error::param(
        format!("pooling {what}"),
        "overflow",
        "a size that fits in usize",
    )
}

impl Axis {
    /// Output length along the axis, all arithmetic checked.
    fn output(&self) -> Result<usize> {
        let padded = self
            .input
            .checked_add(self.before)
            .and_then(|v| v.checked_add(self.after))
            .ok_or_else(|| overflow(&format!("padded input ({})", self.name)))?;
        if self.kernel > padded {
            return Err(Error::KernelLargerThanInput {
                kernel: (self.kernel, self.kernel),
                padded_input: (padded, padded),
            });
        }
        let span = padded - self.kernel;
        let mut out = if self.ceil {
            span.div_ceil(self.stride)
        } else {
            span / self.stride
        }
        .checked_add(1)
        .ok_or_else(|| overflow(&format!("output ({})", self.name)))?;
        if self.ceil {
            let last_start = (out - 1)
                .checked_mul(self.stride)
                .ok_or_else(|| overflow(&format!("window start ({})", self.name)))?;
            // `input + before` cannot overflow: `padded` did not.
            if last_start >= self.input + self.before {
                out -= 1;
            }
        }
        Ok(out)
    }

    /// Every window of the axis.
    fn windows(&self) -> Result<Vec<PoolWindow>> {
        let out = self.output()?;
        let padded = self.input + self.before + self.after;
        Ok((0..out)
            .map(|o| {
                // o < out, so o·stride is at most the last start, checked above.
                let ps = o * self.stride;
                let padded_len = self.kernel.min(padded - ps);
                let start = ps.max(self.before) - self.before;
                let end = (ps + padded_len).min(self.before + self.input) - self.before;
                PoolWindow {
                    start,
                    end,
                    padded_len,
                }
            })
            .collect())
    }
}

impl PoolSpec {
    /// A `kh × kw` window, stride 1, no padding, floor rounding.
    pub fn new(kh: usize, kw: usize) -> Self {
        PoolSpec {
            kernel: (kh, kw),
            stride: (1, 1),
            padding: Padding::default(),
            ceil_mode: false,
        }
    }

    /// A `k × k` window.
    pub fn square(k: usize) -> Self {
        PoolSpec::new(k, k)
    }

    /// Sets the same stride on both axes.
    pub fn with_stride(mut self, s: usize) -> Self {
        self.stride = (s, s);
        self
    }

    /// Sets the stride per axis.
    pub fn with_stride_hw(mut self, sh: usize, sw: usize) -> Self {
        self.stride = (sh, sw);
        self
    }

    /// Sets the same padding on all sides.
    pub fn with_padding(mut self, p: usize) -> Self {
        self.padding = Padding::same(p);
        self
    }

    /// Sets an arbitrary padding.
    pub fn with_padding_sides(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }

    /// Rounds the output size up (`true`) or down (`false`, the default).
    pub fn with_ceil_mode(mut self, ceil: bool) -> Self {
        self.ceil_mode = ceil;
        self
    }

    /// Checks kernel and stride ≥ 1 and every padding smaller than the
    /// kernel along its axis (so no window lies entirely in padding).
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("pooling kernel (height)", self.kernel.0),
            ("pooling kernel (width)", self.kernel.1),
            ("pooling stride (vertical)", self.stride.0),
            ("pooling stride (horizontal)", self.stride.1),
        ] {
            if v == 0 {
                return Err(Error::param(name, v, ">= 1"));
            }
        }
        let p = self.padding;
        for (name, pad, k) in [
            ("pooling padding (top)", p.top, self.kernel.0),
            ("pooling padding (bottom)", p.bottom, self.kernel.0),
            ("pooling padding (left)", p.left, self.kernel.1),
            ("pooling padding (right)", p.right, self.kernel.1),
        ] {
            if pad >= k {
                return Err(Error::param(name, pad, format!("< kernel extent {k}")));
            }
        }
        Ok(())
    }

    fn axes(&self, h: usize, w: usize) -> Result<[Axis; 2]> {
        self.validate()?;
        Ok([
            Axis {
                name: "height",
                input: h,
                kernel: self.kernel.0,
                stride: self.stride.0,
                before: self.padding.top,
                after: self.padding.bottom,
                ceil: self.ceil_mode,
            },
            Axis {
                name: "width",
                input: w,
                kernel: self.kernel.1,
                stride: self.stride.1,
                before: self.padding.left,
                after: self.padding.right,
                ceil: self.ceil_mode,
            },
        ])
    }

    /// Output height and width on an `h × w` input (ONNX / PyTorch rule,
    /// see the module docs); every step overflow-checked.
    pub fn output_hw(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let [ah, aw] = self.axes(h, w)?;
        if h == 0 || w == 0 {
            return Err(Error::EmptyDimension {
                what: "pooling input".into(),
                shape: format!("{h}×{w}"),
            });
        }
        Ok((ah.output()?, aw.output()?))
    }

    /// The row windows (one per output row) and column windows (one per
    /// output column) on an `h × w` input: output `(oy, ox)` pools input
    /// rows `rows[oy].start..rows[oy].end` × columns `cols[ox].start..cols[ox].end`.
    pub fn windows(&self, h: usize, w: usize) -> Result<(Vec<PoolWindow>, Vec<PoolWindow>)> {
        self.output_hw(h, w)?;
        let [ah, aw] = self.axes(h, w)?;
        Ok((ah.windows()?, aw.windows()?))
    }

    fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        let (oh, ow) = self.output_hw(input.height, input.width)?;
        Ok(ActShape::new(input.channels, oh, ow))
    }

    /// One comparison or addition per window tap of every output value.
    fn cost(&self, input: ActShape) -> Result<Cost> {
        let out = self.output_shape(input)?;
        let taps = (self.kernel.0 as u64)
            .checked_mul(self.kernel.1 as u64)
            .and_then(|t| t.checked_mul(out.len() as u64))
            .ok_or_else(|| overflow("cost"))?;
        Cost::f32_op(taps, 0, input.checked_len()?, out.checked_len()?)
    }

    /// Applies `reduce(plane, rows, cols, rows_padded · cols_padded)` to
    /// every window of every plane.
    fn pool(
        &self,
        input: &Array4<f32>,
        reduce: impl Fn(ndarray::ArrayView2<f32>, usize) -> f32,
    ) -> Result<Array4<f32>> {
        let shape = input_shape_of(input)?;
        let out = self.output_shape(shape)?;
        let (rows, cols) = self.windows(shape.height, shape.width)?;
        let batch = input.shape()[0];
        Ok(Array4::from_shape_fn(
            out.batched(batch),
            |(n, c, oy, ox)| {
                let (r, q) = (rows[oy], cols[ox]);
                let window = input.slice(ndarray::s![n, c, r.start..r.end, q.start..q.end]);
                reduce(window, r.padded_len * q.padded_len)
            },
        ))
    }
}

/// `max(a, b)` that propagates a NaN in either argument.
#[inline]
pub fn max_nan(a: f32, b: f32) -> f32 {
    if b > a || b.is_nan() {
        b
    } else {
        a
    }
}

/// Max pooling; padding counts as −∞, and a NaN anywhere in a window makes
/// its output NaN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool {
    spec: PoolSpec,
}

impl MaxPool {
    /// Max pooling with a validated `spec` ([`PoolSpec::validate`]).
    pub fn new(spec: PoolSpec) -> Result<Self> {
        spec.validate()?;
        Ok(MaxPool { spec })
    }

    /// The window geometry.
    pub fn spec(&self) -> PoolSpec {
        self.spec
    }
}

impl Operator for MaxPool {
    fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        self.spec.output_shape(input)
    }

    /// One comparison per window tap of every output; no parameters.
    fn cost(&self, input: ActShape) -> Result<Cost> {
        self.spec.cost(input)
    }

    fn reference_forward(&self, input: &Array4<f32>) -> Result<Array4<f32>> {
        self.spec.pool(input, |window, _| {
            window.iter().fold(f32::NEG_INFINITY, |m, &v| max_nan(m, v))
        })
    }
}

/// Average pooling, summed in f64. The divisor is the window clipped to the
/// padded input when `count_include_pad`, else clipped to the real input
/// (PyTorch's semantics, which ONNX shares).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvgPool {
    spec: PoolSpec,
    count_include_pad: bool,
}

impl AvgPool {
    /// Average pooling with a validated `spec` ([`PoolSpec::validate`]).
    pub fn new(spec: PoolSpec, count_include_pad: bool) -> Result<Self> {
        spec.validate()?;
        Ok(AvgPool {
            spec,
            count_include_pad,
        })
    }

    /// The window geometry.
    pub fn spec(&self) -> PoolSpec {
        self.spec
    }

    /// Whether padded positions count in the divisor.
    pub fn count_include_pad(&self) -> bool {
        self.count_include_pad
    }
}

impl Operator for AvgPool {
    fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        self.spec.output_shape(input)
    }

    /// One addition per window tap of every output; no parameters.
    fn cost(&self, input: ActShape) -> Result<Cost> {
        self.spec.cost(input)
    }

    fn reference_forward(&self, input: &Array4<f32>) -> Result<Array4<f32>> {
        let include = self.count_include_pad;
        self.spec.pool(input, |window, padded| {
            let sum: f64 = window.iter().map(|&v| f64::from(v)).sum();
            let divisor = if include { padded } else { window.len() };
            (sum / divisor as f64) as f32
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeededRng;
    use ndarray::Array;
    use proptest::prelude::*;

    /// Pooling by definition, written independently of the window helper:
    /// materialise the padded plane (NaN marks padding), slide the window in
    /// padded coordinates, and count what the divisor should be by hand.
    fn brute_force(x: &Array4<f32>, spec: PoolSpec, avg: Option<bool>) -> Array4<f32> {
        let (n, c, h, w) = x.dim();
        let p = spec.padding;
        let (ph, pw) = (h + p.top + p.bottom, w + p.left + p.right);
        let mut padded = Array4::<Option<f32>>::from_elem((n, c, ph, pw), None);
        for ((i, ch, y, xx), &v) in x.indexed_iter() {
            padded[[i, ch, y + p.top, xx + p.left]] = Some(v);
        }
        let (oh, ow) = spec.output_hw(h, w).unwrap();
        let (kh, kw) = spec.kernel;
        let (sh, sw) = spec.stride;
        Array4::from_shape_fn((n, c, oh, ow), |(i, ch, oy, ox)| {
            let mut values = Vec::new();
            let mut in_padded = 0usize;
            for ky in 0..kh {
                for kx in 0..kw {
                    let (y, xx) = (oy * sh + ky, ox * sw + kx);
                    if y < ph && xx < pw {
                        in_padded += 1;
                        if let Some(v) = padded[[i, ch, y, xx]] {
                            values.push(v);
                        }
                    }
                }
            }
            match avg {
                None => {
                    if values.iter().any(|v| v.is_nan()) {
                        f32::NAN
                    } else {
                        values.iter().copied().fold(f32::NEG_INFINITY, f32::max)
                    }
                }
                Some(include) => {
                    let sum: f64 = values.iter().map(|&v| v as f64).sum();
                    let d = if include { in_padded } else { values.len() };
                    (sum / d as f64) as f32
                }
            }
        })
    }

    fn same(a: &Array4<f32>, b: &Array4<f32>) -> bool {
        a.shape() == b.shape()
            && a.iter().zip(b.iter()).all(|(x, y)| {
                (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-6 * y.abs().max(1.0)
            })
    }

    #[test]
    fn output_sizes_follow_pytorch() {
        // PyTorch: MaxPool2d(3, 2, padding=1) on 112 → 56; ResNet stem.
        assert_eq!(
            PoolSpec::square(3)
                .with_stride(2)
                .with_padding(1)
                .output_hw(112, 112)
                .unwrap(),
            (56, 56)
        );
        // 2×2/s2 on 7 → 3 (floor), 4 (ceil).
        let s = PoolSpec::square(2).with_stride(2);
        assert_eq!(s.output_hw(7, 7).unwrap(), (3, 3));
        assert_eq!(s.with_ceil_mode(true).output_hw(7, 7).unwrap(), (4, 4));
        // Ceil mode drops a window that would start in the trailing padding:
        // in 5, k 2, s 2, pad 1: span 5 → ⌈5/2⌉ + 1 = 4, but the 4th window
        // starts at 6 ≥ 5 + 1, so 3 remain.
        let p = PoolSpec::square(2)
            .with_stride(2)
            .with_padding(1)
            .with_ceil_mode(true);
        assert_eq!(p.output_hw(5, 5).unwrap(), (3, 3));
        // in 6, k 3, s 2, pad 1: floor ⌊5/2⌋ + 1 = 3, ceil ⌈5/2⌉ + 1 = 4
        // (the 4th window starts at 6 < 6 + 1 and is kept).
        let q = PoolSpec::square(3).with_stride(2).with_padding(1);
        assert_eq!(q.output_hw(6, 6).unwrap(), (3, 3));
        assert_eq!(q.with_ceil_mode(true).output_hw(6, 6).unwrap(), (4, 4));
        // GoogLeNet: MaxPool2d(3, 2, ceil_mode=True) on 112 → 56; floor → 55.
        let g = PoolSpec::square(3).with_stride(2);
        assert_eq!(
            g.with_ceil_mode(true).output_hw(112, 112).unwrap(),
            (56, 56)
        );
        assert_eq!(g.output_hw(112, 112).unwrap(), (55, 55));
    }

    #[test]
    fn hand_computed_max_and_avg() {
        // 1×1×3×3 plane 1..9, 2×2 stride 1, no padding.
        let x = Array::from_shape_vec((1, 1, 3, 3), (1..=9).map(|v| v as f32).collect()).unwrap();
        let m = MaxPool::new(PoolSpec::square(2))
            .unwrap()
            .reference_forward(&x)
            .unwrap();
        assert_eq!(m.iter().copied().collect::<Vec<_>>(), vec![5., 6., 8., 9.]);
        let a = AvgPool::new(PoolSpec::square(2), false)
            .unwrap()
            .reference_forward(&x)
            .unwrap();
        assert_eq!(a.iter().copied().collect::<Vec<_>>(), vec![3., 4., 6., 7.]);
        // 3×3 stride 2 pad 1 → 2×2. Top-left window covers 1,2,4,5: sum 12.
        let spec = PoolSpec::square(3).with_stride(2).with_padding(1);
        let inc = AvgPool::new(spec, true)
            .unwrap()
            .reference_forward(&x)
            .unwrap();
        let exc = AvgPool::new(spec, false)
            .unwrap()
            .reference_forward(&x)
            .unwrap();
        // include: divisor 9 everywhere (windows fit in the padded 5×5).
        assert_eq!(
            inc.iter().copied().collect::<Vec<_>>(),
            vec![12. / 9., 16. / 9., 24. / 9., 28. / 9.]
        );
        assert_eq!(
            exc.iter().copied().collect::<Vec<_>>(),
            vec![3., 4., 6., 7.]
        );
        let mx = MaxPool::new(spec).unwrap().reference_forward(&x).unwrap();
        assert_eq!(mx.iter().copied().collect::<Vec<_>>(), vec![5., 6., 8., 9.]);
        // Padding is −∞ for max: an all-negative plane keeps its values.
        let neg = x.mapv(|v| -v);
        let mn = MaxPool::new(spec).unwrap().reference_forward(&neg).unwrap();
        assert_eq!(
            mn.iter().copied().collect::<Vec<_>>(),
            vec![-1., -2., -4., -5.]
        );
    }

    #[test]
    fn ceil_mode_divisor_clips_to_the_padded_input() {
        // PyTorch AvgPool2d(2, 2, ceil_mode=True, count_include_pad=True) on
        // [[1,2,3],[4,5,6],[7,8,9]]: the last window row/column hangs over
        // the padded input (no padding here) and divides by what is inside:
        // [[3, 4.5], [7.5, 9]].
        let x = Array::from_shape_vec((1, 1, 3, 3), (1..=9).map(|v| v as f32).collect()).unwrap();
        let spec = PoolSpec::square(2).with_stride(2).with_ceil_mode(true);
        for include in [true, false] {
            let y = AvgPool::new(spec, include)
                .unwrap()
                .reference_forward(&x)
                .unwrap();
            assert_eq!(
                y.iter().copied().collect::<Vec<_>>(),
                vec![3., 4.5, 7.5, 9.]
            );
        }
    }

    #[test]
    fn nan_is_never_dropped() {
        let mut x = Array4::<f32>::zeros((1, 2, 4, 4));
        x[[0, 1, 2, 3]] = f32::NAN;
        x[[0, 1, 3, 0]] = f32::INFINITY;
        let spec = PoolSpec::square(2).with_stride(2);
        let m = MaxPool::new(spec).unwrap().reference_forward(&x).unwrap();
        assert!(m[[0, 1, 1, 1]].is_nan());
        assert_eq!(m[[0, 1, 1, 0]], f32::INFINITY);
        assert_eq!(m.iter().filter(|v| v.is_nan()).count(), 1);
        let a = AvgPool::new(spec, true)
            .unwrap()
            .reference_forward(&x)
            .unwrap();
        assert!(a[[0, 1, 1, 1]].is_nan());
        assert_eq!(a.iter().filter(|v| v.is_nan()).count(), 1);
        // NaN first or last in the fold: both orders propagate.
        assert!(max_nan(f32::NAN, 1.0).is_nan());
        assert!(max_nan(1.0, f32::NAN).is_nan());
        assert_eq!(max_nan(1.0, 2.0), 2.0);
    }

    #[test]
    fn invalid_specs_are_typed_errors() {
        let bad = [
            PoolSpec::new(0, 2),
            PoolSpec::square(2).with_stride_hw(1, 0),
            PoolSpec::square(2).with_padding(2),
            PoolSpec::square(3).with_padding_sides(Padding {
                top: 0,
                bottom: 0,
                left: 0,
                right: 3,
            }),
        ];
        for s in bad {
            assert!(
                matches!(MaxPool::new(s), Err(Error::InvalidParameter { .. })),
                "{s:?}"
            );
            assert!(AvgPool::new(s, true).is_err());
        }
        // Kernel larger than the padded input.
        let op = MaxPool::new(PoolSpec::square(5)).unwrap();
        assert!(matches!(
            op.output_shape(ActShape::new(1, 4, 9)),
            Err(Error::KernelLargerThanInput { .. })
        ));
        assert!(op.reference_forward(&Array4::zeros((1, 1, 4, 4))).is_err());
        // Overflow of in + pads.
        let huge = PoolSpec::square(usize::MAX).with_padding(usize::MAX - 1);
        assert!(matches!(
            huge.output_hw(8, 8),
            Err(Error::InvalidParameter { .. })
        ));
    }

    #[test]
    fn cost_counts_window_taps() {
        let op = MaxPool::new(PoolSpec::square(3).with_stride(2).with_padding(1)).unwrap();
        let c = op.cost(ActShape::new(64, 112, 112)).unwrap();
        assert_eq!(c.macs, 64 * 56 * 56 * 9);
        assert_eq!((c.params, c.weight_bytes), (0, 0));
        assert_eq!(c.activation_bytes, 4 * 64 * (112 * 112 + 56 * 56));
        let a = AvgPool::new(PoolSpec::square(2).with_stride(2), false).unwrap();
        assert_eq!(a.cost(ActShape::new(3, 4, 4)).unwrap().macs, 3 * 4 * 4);
    }

    fn spec_strategy() -> impl Strategy<Value = (PoolSpec, usize, usize)> {
        (
            1..=4usize,
            1..=4usize,
            1..=3usize,
            1..=3usize,
            (0..4usize, 0..4usize, 0..4usize, 0..4usize),
            any::<bool>(),
            0..=6usize,
            0..=6usize,
        )
            .prop_map(|(kh, kw, sh, sw, (t, b, l, r), ceil, eh, ew)| {
                let padding = Padding {
                    top: t % kh,
                    bottom: b % kh,
                    left: l % kw,
                    right: r % kw,
                };
                let spec = PoolSpec::new(kh, kw)
                    .with_stride_hw(sh, sw)
                    .with_padding_sides(padding)
                    .with_ceil_mode(ceil);
                let h = kh.saturating_sub(t % kh + b % kh).max(1) + eh;
                let w = kw.saturating_sub(l % kw + r % kw).max(1) + ew;
                (spec, h, w)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn reference_matches_brute_force((spec, h, w) in spec_strategy(), seed in any::<u64>(), nan in any::<bool>()) {
            let mut x = SeededRng::new(seed).normal_array((2, 2, h, w), 1.0);
            if nan {
                x[[1, 1, h / 2, w / 2]] = f32::NAN;
            }
            let max = MaxPool::new(spec).unwrap().reference_forward(&x).unwrap();
            prop_assert!(same(&max, &brute_force(&x, spec, None)));
            for include in [true, false] {
                let avg = AvgPool::new(spec, include).unwrap().reference_forward(&x).unwrap();
                prop_assert!(same(&avg, &brute_force(&x, spec, Some(include))));
            }
            // Every output window reads at least one input value.
            let (rows, cols) = spec.windows(h, w).unwrap();
            prop_assert!(rows.iter().chain(&cols).all(|w| !w.is_empty() && w.len() <= w.padded_len));
            prop_assert_eq!(max.shape(), &[2, 2, rows.len(), cols.len()]);
        }

        #[test]
        fn arbitrary_specs_never_panic(
            k in (0usize..6, 0usize..6, prop_oneof![Just(usize::MAX), Just(usize::MAX / 2), 0usize..9]),
            s in (0usize..4, 0usize..4, prop_oneof![Just(usize::MAX), 0usize..4]),
            p in (0usize..6, 0usize..6, prop_oneof![Just(usize::MAX), Just(usize::MAX - 1), 0usize..6]),
            hw in (0usize..10, 0usize..10, prop_oneof![Just(usize::MAX), Just(usize::MAX / 3), 0usize..10]),
            ceil in any::<bool>(),
        ) {
            let spec = PoolSpec::new(k.0, k.2).with_stride_hw(s.0, s.2).with_padding_sides(Padding { top: p.0, bottom: p.2, left: p.1, right: p.2 }).with_ceil_mode(ceil);
            let valid = k.0 >= 1 && k.2 >= 1 && s.0 >= 1 && s.2 >= 1 && p.0 < k.0 && p.2 < k.0 && p.1 < k.2 && p.2 < k.2;
            prop_assert_eq!(MaxPool::new(spec).is_ok(), valid);
            prop_assert_eq!(spec.validate().is_ok(), valid);
            let r = spec.output_hw(hw.0, hw.2);
            if !valid {
                prop_assert!(r.is_err());
            }
            if let Ok((oh, ow)) = r {
                prop_assert!(oh >= 1 && ow >= 1);
                if hw.0 < 10 && hw.2 < 10 {
                    let (rows, cols) = spec.windows(hw.0, hw.2).unwrap();
                    prop_assert_eq!((rows.len(), cols.len()), (oh, ow));
                }
            }
            let _ = spec.output_hw(hw.1, hw.1);
        }
    }
}
