//! ShiftNet per-channel spatial shift (survey section 3):
//! `out[c, y, x] = in[c, y − dy, x − dx]`, zero outside the image — one
//! slice copy per row. Plans absorb shifts into the next convolution's reads
//! ([`crate::conv::ChannelView`]); this materialises one where none follows.

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
