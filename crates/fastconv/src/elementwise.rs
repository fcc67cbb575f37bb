//! Element-wise ops: ReLU and inference-mode batch normalisation (a
//! per-channel affine map `y = scale·x + shift`), where no convolution
//! precedes them to absorb them.

use rayon::prelude::*;

/// Elements per parallel chunk of an element-wise op.
const CHUNK: usize = 1 << 14;

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
