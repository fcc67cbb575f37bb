//! Element-wise ops: ReLU and inference-mode batch normalisation (a
//! per-channel affine map `y = scale·x + shift`) where no convolution
//! precedes them to absorb them, and the multi-input graph ops — n-ary
//! residual sums (with a fused ReLU), broadcast products (squeeze–excitation
//! gates) and the copies of a channel concatenation. The graph ops write
//! each sample at a stride, so their output can be a channel slice of a
//! concatenation, and run their loops compiled for the plan's [`Isa`].

use std::ops::Range;

use rayon::prelude::*;

use crate::tiling::SharedOut;
use crate::Isa;

/// Elements per parallel chunk of an element-wise op.
const CHUNK: usize = 1 << 14;

/// Elements per pass of a multi-operand sum (stays in L1 between passes).
const BLOCK: usize = 2048;

/// `dst = max(0, src)`, in parallel.
pub(crate) fn relu(src: &[f32], dst: &mut [f32]) {
    dst.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, &s)| *d = s.max(0.0)));
}

/// `dst = scale[c]·src + shift[c]` on planes of `area` values, channel
/// `c = plane mod C`, in parallel over planes.
pub(crate) fn affine(src: &[f32], dst: &mut [f32], area: usize, scale: &[f32], shift: &[f32]) {
    let channels = scale.len();
    dst.par_chunks_mut(area)
        .zip(src.par_chunks(area))
        .enumerate()
        .for_each(|(k, (d, s))| {
            let (a, b) = (scale[k % channels], shift[k % channels]);
            d.iter_mut().zip(s).for_each(|(d, &s)| *d = a * s + b);
        });
}

/// The layout of a batch written at a stride: `batch` samples of `len`
/// floats, sample `n` starting at `n · stride` (`stride ≥ len`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Strided {
    /// Samples.
    pub batch: usize,
    /// Floats per sample.
    pub len: usize,
    /// Floats from one sample's start to the next's.
    pub stride: usize,
}

/// Runs `f(n, range, out)` over chunks of every sample in parallel, `out`
/// being the `range` of sample `n` inside `dst` (laid out as `layout`).
fn par_strided(
    dst: &mut [f32],
    layout: Strided,
    f: impl Fn(usize, Range<usize>, &mut [f32]) + Sync,
) {
    let Strided { batch, len, stride } = layout;
    assert!(stride >= len && batch >= 1 && dst.len() >= (batch - 1) * stride + len);
    let chunks = len.div_ceil(CHUNK).max(1);
    let out = SharedOut(dst.as_mut_ptr());
    (0..batch * chunks).into_par_iter().for_each(|task| {
        let (n, c) = (task / chunks, task % chunks);
        let range = c * CHUNK..((c + 1) * CHUNK).min(len);
        // SAFETY: tasks own pairwise-disjoint ranges of distinct samples,
        // inside `dst` (asserted above).
        let d = unsafe {
            std::slice::from_raw_parts_mut(out.ptr().add(n * stride + range.start), range.len())
        };
        f(n, range, d);
    });
}

/// Runs `f` compiled for `isa` (its loops auto-vectorised to that width).
#[inline(always)]
fn on_isa(isa: Isa, f: impl FnOnce()) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512(f: impl FnOnce()) {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(f: impl FnOnce()) {
            f()
        }
        match isa {
            // SAFETY: plans only hold ISAs this CPU supports
            // (`Isa::ensure_supported` when they are built).
            Isa::Avx512 => unsafe { avx512(f) },
            // SAFETY: as above.
            Isa::Avx2 => unsafe { avx2(f) },
            Isa::Scalar => f(),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        f()
    }
}

/// `dst = Σₖ src(k)` over `count ≥ 2` contiguous batches of `layout.batch ×
/// layout.len` floats, clamped at zero when `relu` (`f32::max`, so NaN maps
/// to 0 as in the reference ReLU); `dst` laid out as `layout`.
pub(crate) fn add<'a>(
    isa: Isa,
    count: usize,
    src: impl Fn(usize) -> &'a [f32] + Sync,
    dst: &mut [f32],
    layout: Strided,
    relu: bool,
) {
    assert!(count >= 2);
    let len = layout.len;
    par_strided(dst, layout, |n, range, out| {
        on_isa(isa, || {
            let at = n * len + range.start;
            for b in (0..out.len()).step_by(BLOCK) {
                let e = (b + BLOCK).min(out.len());
                let d = &mut out[b..e];
                let (x, y) = (&src(0)[at + b..at + e], &src(1)[at + b..at + e]);
                for ((d, &x), &y) in d.iter_mut().zip(x).zip(y) {
                    *d = x + y;
                }
                for k in 2..count {
                    for (d, &x) in d.iter_mut().zip(&src(k)[at + b..at + e]) {
                        *d += x;
                    }
                }
                if relu {
                    for d in d.iter_mut() {
                        *d = d.max(0.0);
                    }
                }
            }
        })
    });
}

/// `dst = x · gate` with `x` a contiguous batch of `layout.len` floats per
/// sample in planes of `area`, and `gate` of `x`'s shape, or one value per
/// plane (`C × 1 × 1`) broadcast over it when `broadcast`.
pub(crate) fn mul(
    isa: Isa,
    x: &[f32],
    gate: &[f32],
    broadcast: bool,
    area: usize,
    dst: &mut [f32],
    layout: Strided,
) {
    let len = layout.len;
    let planes = len / area.max(1);
    par_strided(dst, layout, |n, range, out| {
        on_isa(isa, || {
            let at = n * len + range.start;
            let x = &x[at..at + out.len()];
            if broadcast {
                let mut i = 0;
                while i < out.len() {
                    let p = (range.start + i) / area;
                    let end = ((p + 1) * area - range.start).min(out.len());
                    let g = gate[n * planes + p];
                    for (d, &v) in out[i..end].iter_mut().zip(&x[i..end]) {
                        *d = v * g;
                    }
                    i = end;
                }
            } else {
                let g = &gate[at..at + out.len()];
                for ((d, &v), &g) in out.iter_mut().zip(x).zip(g) {
                    *d = v * g;
                }
            }
        })
    });
}

/// Copies a contiguous batch `src` into `dst` laid out as `layout` (one
/// operand of a channel concatenation, or an output that is an input).
pub(crate) fn copy(src: &[f32], dst: &mut [f32], layout: Strided) {
    let len = layout.len;
    par_strided(dst, layout, |n, range, out| {
        out.copy_from_slice(&src[n * len + range.start..n * len + range.end]);
    });
}
