//! Kernel-shape trimming (survey section 6.1, slice `W(i, j, :, :)` — here
//! `W[:, :, i, j]`, after Wen et al. \[70\]): a window of kernel rows
//! `i0..i1` and columns `j0..j1` is kept for every filter, e.g. 5×5 → 3×3.
//!
//! Padding is adjusted so outputs keep their size and alignment: output `y`
//! reads input row `y·σ + i·δ − p_top`, so keeping rows from `i0` needs
//! `p_top' = p_top − i0·δ`, and equal output size needs
//! `p_bottom' = p_bottom − (kh − i1)·δ` (the same for columns). Both must be
//! non-negative (a negative padding would crop the input).

use std::ops::Range;

use hasten_core::{
    ActShape, Block, Compressed, Conv4d, ConvLayer, Error, Layer, Padding, Result, Transform,
};
use ndarray::s;

use crate::slice::Slicing;

/// Keeps kernel rows `rows` and columns `cols`, adjusting the padding.
pub fn trim_kernel(layer: &ConvLayer, rows: Range<usize>, cols: Range<usize>) -> Result<ConvLayer> {
    let [_, _, kh, kw] = layer.weight().dims();
    let spec = *layer.spec();
    let (dh, dw) = spec.dilation;
    if rows.start >= rows.end || rows.end > kh || cols.start >= cols.end || cols.end > kw {
        return Err(Error::param(
            "kernel window",
            format!("rows {rows:?}, cols {cols:?}"),
            format!("non-empty ranges within 0..{kh}, 0..{kw}"),
        ));
    }
    let p = spec.padding;
    let sub = |pad: usize, cut: usize, side: &str| {
        pad.checked_sub(cut).ok_or_else(|| {
            Error::unsupported(
                "kernel trimming",
                format!("removing {cut} padded rows/columns on the {side} with only {pad} padding (would crop the input)"),
            )
        })
    };
    let padding = Padding {
        top: sub(p.top, rows.start * dh, "top")?,
        bottom: sub(p.bottom, (kh - rows.end) * dh, "bottom")?,
        left: sub(p.left, cols.start * dw, "left")?,
        right: sub(p.right, (kw - cols.end) * dw, "right")?,
    };
    let w = layer
        .weight()
        .array()
        .slice(s![.., .., rows, cols])
        .to_owned();
    ConvLayer::new(
        Conv4d::new(w)?,
        layer.bias().cloned(),
        spec.with_padding_sides(padding),
    )
}

/// The smallest window holding every non-zero tap; exact by construction.
pub fn trim_zero_taps(layer: &ConvLayer) -> Result<ConvLayer> {
    let [_, _, _, kw] = layer.weight().dims();
    let energy = Slicing::KernelTap.aggregate(layer.weight().array(), |v| v * v);
    let nz: Vec<(usize, usize)> = (0..energy.len())
        .filter(|&k| energy[k] > 0.0)
        .map(|k| (k / kw, k % kw))
        .collect();
    if nz.is_empty() {
        return Err(Error::param(
            "kernel",
            "all zero",
            "at least one non-zero tap",
        ));
    }
    let (i0, i1) = (
        nz.iter().map(|p| p.0).min().unwrap_or(0),
        nz.iter().map(|p| p.0).max().unwrap_or(0) + 1,
    );
    let (j0, j1) = (
        nz.iter().map(|p| p.1).min().unwrap_or(0),
        nz.iter().map(|p| p.1).max().unwrap_or(0) + 1,
    );
    trim_kernel(layer, i0..i1, j0..j1)
}

/// Transform: keep the `size` window of kernel taps with the largest energy
/// `Σ W[:, :, i, j]²` (L2 magnitude criterion, eq. (14)).
///
/// # Errors
/// [`Transform::apply`] fails with
/// [`Error::Unsupported`] for a fully
/// connected layer or a window whose removed taps lie beyond the padding
/// (the output would change size), [`Error::InvalidParameter`] for a size of
/// zero or larger than the kernel, and with the input-shape errors of the
/// layer.
///
/// ```
/// use hasten_core::{ActShape, ConvLayer, ConvSpec, Layer, SeededRng, Transform};
/// use hasten_prune::removal::KernelTrim;
///
/// // Nearly all the energy in the middle row of taps: the 1×3 window keeps it.
/// let mut w = SeededRng::new(0).normal_array((8, 4, 3, 3), 0.01);
/// w.slice_mut(ndarray::s![.., .., 1, ..]).mapv_inplace(|v| v * 100.0);
/// let layer = Layer::from(ConvLayer::from_array(w, ConvSpec::new().with_padding(1))?);
/// let input = ActShape::new(4, 6, 6);
/// let c = KernelTrim { size: (1, 3) }.apply(&layer, input)?;
/// assert!((c.report.mac_speedup() - 3.0).abs() < 1e-9);
/// assert!(c.report.weight_error.unwrap() < 0.03);
/// assert!(KernelTrim { size: (4, 3) }.apply(&layer, input).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelTrim {
    /// Kernel height and width after trimming.
    pub size: (usize, usize),
}

impl KernelTrim {
    /// The best window's rows and columns for `layer`.
    pub fn window(&self, layer: &ConvLayer) -> Result<(Range<usize>, Range<usize>)> {
        let [_, _, kh, kw] = layer.weight().dims();
        let (h, w) = self.size;
        if h == 0 || w == 0 || h > kh || w > kw {
            return Err(Error::param(
                "trimmed kernel size",
                format!("{h}×{w}"),
                format!("1..={kh} × 1..={kw}"),
            ));
        }
        let energy = Slicing::KernelTap.aggregate(layer.weight().array(), |v| v * v);
        let mut best = (f64::NEG_INFINITY, 0, 0);
        for i0 in 0..=kh - h {
            for j0 in 0..=kw - w {
                let e: f64 = (i0..i0 + h)
                    .flat_map(|i| (j0..j0 + w).map(move |j| (i, j)))
                    .map(|(i, j)| energy[i * kw + j])
                    .sum();
                if e > best.0 {
                    best = (e, i0, j0);
                }
            }
        }
        Ok((best.1..best.1 + h, best.2..best.2 + w))
    }
}

impl Transform for KernelTrim {
    fn name(&self) -> &str {
        "kernel-shape trim"
    }

    fn apply(&self, layer: &Layer, input: ActShape) -> Result<Compressed> {
        let Layer::Conv(conv) = layer else {
            return Err(Error::unsupported(self.name(), layer.kind()));
        };
        let (rows, cols) = self.window(conv)?;
        let [_, _, kh, kw] = conv.weight().dims();
        let dropped: Vec<usize> = (0..kh * kw)
            .filter(|&k| !rows.contains(&(k / kw)) || !cols.contains(&(k % kw)))
            .collect();
        let zeroed = Slicing::KernelTap.zero_slices(conv.weight(), &dropped)?;
        let err = conv.weight().relative_error(&zeroed)?;
        let trimmed = trim_kernel(conv, rows, cols)?;
        Compressed::new(self.name(), layer, Block::single(trimmed), input, Some(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::removal::test_support::max_diff;
    use hasten_core::{ConvSpec, Operator, SeededRng};
    use ndarray::Array4;

    #[test]
    fn trimming_zero_taps_is_exact_5x5_to_3x3_and_off_centre() {
        let mut rng = SeededRng::new(9);
        for (rows, cols, stride, dil) in
            [(1..4, 1..4, 1, 1), (0..3, 2..5, 2, 1), (1..3, 0..3, 1, 2)]
        {
            let mut w = Array4::<f32>::zeros((4, 3, 5, 5));
            let inner = rng.normal_array((4, 3, rows.len(), cols.len()), 1.0);
            w.slice_mut(s![.., .., rows.clone(), cols.clone()])
                .assign(&inner);
            let spec = ConvSpec::new()
                .with_padding(2 * dil)
                .with_stride(stride)
                .with_dilation(dil);
            let layer = ConvLayer::new(
                Conv4d::new(w).unwrap(),
                Some(rng.normal_array(4, 1.0)),
                spec,
            )
            .unwrap();
            let trimmed = trim_zero_taps(&layer).unwrap();
            assert_eq!(trimmed.weight().kernel_hw(), (rows.len(), cols.len()));
            let x = rng.normal_array((2, 3, 9, 8), 1.0);
            assert!(
                max_diff(
                    &layer.reference_forward(&x).unwrap(),
                    &trimmed.reference_forward(&x).unwrap()
                ) < 1e-5
            );
        }
    }

    #[test]
    fn transform_picks_the_energetic_window() {
        let mut rng = SeededRng::new(1);
        let mut w = rng.normal_array((4, 2, 5, 5), 0.001);
        w.slice_mut(s![.., .., 1..4, 1..4])
            .mapv_inplace(|v| v * 1000.0);
        let layer = ConvLayer::from_array(w, ConvSpec::new().with_padding(2)).unwrap();
        let t = KernelTrim { size: (3, 3) };
        assert_eq!(t.window(&layer).unwrap(), (1..4, 1..4));
        let c = t
            .apply(&Layer::Conv(layer), ActShape::new(2, 8, 8))
            .unwrap();
        assert!((c.report.mac_speedup() - 25.0 / 9.0).abs() < 1e-9);
        assert!(c.report.weight_error.unwrap() < 0.01);
    }

    #[test]
    fn bad_windows_are_rejected() {
        let layer = ConvLayer::from_array(Array4::ones((1, 1, 3, 3)), ConvSpec::new()).unwrap();
        assert!(trim_kernel(&layer, 1..3, 0..3).is_err()); // no top padding to remove
        assert!(trim_kernel(&layer, 0..4, 0..3).is_err());
        assert!(trim_kernel(&layer, 2..2, 0..3).is_err());
        assert!(KernelTrim { size: (4, 1) }.window(&layer).is_err());
    }
}
