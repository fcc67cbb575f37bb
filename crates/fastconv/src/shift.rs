//! ShiftNet per-channel spatial shift (survey section 3):
//! `out[c, y, x] = in[c, y − dy, x − dx]`, zero outside the image. Each
//! channel is one slice copy per output row.

use hasten_core::ndarray::Array4;
use hasten_core::Shift;
use rayon::prelude::*;

/// Shifts every channel plane by its offset, zero-filling what enters.
pub(crate) fn forward(shift: &Shift, input: &Array4<f32>) -> Array4<f32> {
    let x = input.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    let (channels, h, w) = (x.shape()[1], x.shape()[2], x.shape()[3]);
    let mut y = Array4::<f32>::zeros(x.raw_dim());
    let ys = y.as_slice_mut().expect("fresh array");
    ys.par_chunks_mut(h * w).enumerate().for_each(|(k, plane)| {
        let (dy, dx) = shift.offsets()[k % channels];
        shift_plane(&xs[k * h * w..][..h * w], plane, h, w, dy, dx);
    });
    y
}

/// Copies `src` (h × w, row-major) into the zeroed `dst` shifted by `(dy, dx)`.
pub(crate) fn shift_plane(src: &[f32], dst: &mut [f32], h: usize, w: usize, dy: isize, dx: isize) {
    let (hi, wi) = (h as isize, w as isize);
    if dy.abs() >= hi || dx.abs() >= wi {
        return;
    }
    // Output columns [x0, x1) read input columns [x0 − dx, x1 − dx).
    let x0 = dx.max(0) as usize;
    let x1 = (wi + dx.min(0)) as usize;
    for yy in 0..h {
        let sy = yy as isize - dy;
        if sy < 0 || sy >= hi {
            continue;
        }
        let s0 = (x0 as isize - dx) as usize;
        let srow = &src[sy as usize * w..][s0..s0 + (x1 - x0)];
        dst[yy * w + x0..yy * w + x1].copy_from_slice(srow);
    }
}
