//! Convolution by explicit im2col and GEMM (Chellapilla et al.; the lowering
//! the survey's section 2 assumes when it counts `C·N·d²` MACs per pixel).
//!
//! For each sample, group and tile of output pixels, the receptive fields are
//! copied into a `[C_g·kh·kw, tile]` matrix that the group's filter matrix
//! `[T_g, C_g·kh·kw]` multiplies; tiles run in parallel with rayon.

use hasten_core::ndarray::Array4;
use hasten_core::ConvLayer;
use rayon::prelude::*;

use super::Geometry;
use crate::tiling::SharedOut;

/// Output pixels per task: a tile's im2col matrix stays in L2.
const TILE: usize = 256;

/// Convolution of the NCHW batch `input` whose sizes `geo` describes.
pub(crate) fn forward(layer: &ConvLayer, geo: &Geometry, input: &Array4<f32>) -> Array4<f32> {
    let x = input.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    let batch = x.shape()[0];
    let area = geo.out_area();
    let t_all = geo.out_channels();
    let filters = layer.weight().filter_matrix();
    let ws = filters.as_slice().expect("Conv4d is standard layout");
    let bias = layer.bias().map(|b| b.to_vec());
    let mut y = Array4::<f32>::zeros((batch, t_all, geo.oh, geo.ow));
    let out = SharedOut(y.as_mut_ptr());
    let tiles = area.div_ceil(TILE);
    let depth = geo.depth();
    (0..batch * geo.groups * tiles)
        .into_par_iter()
        .for_each_init(Vec::new, |col, task| {
            let tile = task % tiles;
            let g = (task / tiles) % geo.groups;
            let n = task / (tiles * geo.groups);
            let p0 = tile * TILE;
            let len = TILE.min(area - p0);
            col.resize(depth * len, 0.0);
            let sample =
                &xs[n * geo.in_channels() * geo.in_area()..][..geo.in_channels() * geo.in_area()];
            fill_columns(geo, sample, g, p0, len, col);
            let w_g = &ws[g * geo.t_g * depth..][..geo.t_g * depth];
            let c_off = (n * t_all + g * geo.t_g) * area + p0;
            // SAFETY: A = w_g is t_g × depth row-major, B = col is depth × len
            // row-major, C is the t_g × len block of output rows
            // g·t_g..(g+1)·t_g of sample n, columns p0..p0+len, with row stride
            // `area`; it lies inside `y` (c_off + (t_g−1)·area + len ≤
            // batch·t_all·area) and tasks own pairwise-disjoint (n, g, tile)
            // blocks, so no two threads write the same element.
            unsafe {
                let c = out.ptr().add(c_off);
                matrixmultiply::sgemm(
                    geo.t_g,
                    depth,
                    len,
                    1.0,
                    w_g.as_ptr(),
                    depth as isize,
                    1,
                    col.as_ptr(),
                    len as isize,
                    1,
                    0.0,
                    c,
                    area as isize,
                    1,
                );
                if let Some(b) = &bias {
                    for t in 0..geo.t_g {
                        let bv = b[g * geo.t_g + t];
                        let row = std::slice::from_raw_parts_mut(c.add(t * area), len);
                        row.iter_mut().for_each(|v| *v += bv);
                    }
                }
            }
        });
    y
}

/// Writes the im2col matrix of group `g` for output pixels `p0..p0+len` of one
/// sample (`C × H × W`, row-major) into `col` (`[C_g·kh·kw, len]`), with zero
/// padding.
fn fill_columns(geo: &Geometry, sample: &[f32], g: usize, p0: usize, len: usize, col: &mut [f32]) {
    let mut row = 0;
    for s in 0..geo.c_g {
        let plane = &sample[(g * geo.c_g + s) * geo.in_area()..][..geo.in_area()];
        for i in 0..geo.kh {
            let (y0, y1) = geo.valid_y(i);
            for j in 0..geo.kw {
                let (x0, x1) = geo.valid_x(j);
                let dst = &mut col[row * len..][..len];
                let mut p = p0;
                while p < p0 + len {
                    let (oy, ox) = (p / geo.ow, p % geo.ow);
                    let seg = (geo.ow - ox).min(p0 + len - p);
                    let d = &mut dst[p - p0..][..seg];
                    if oy < y0 || oy >= y1 {
                        d.fill(0.0);
                    } else {
                        let iy = oy * geo.sh + i * geo.dh - geo.pt;
                        let src = &plane[iy * geo.w..][..geo.w];
                        for (q, v) in d.iter_mut().enumerate() {
                            let x = ox + q;
                            *v = if x >= x0 && x < x1 {
                                src[x * geo.sw + j * geo.dw - geo.pl]
                            } else {
                                0.0
                            };
                        }
                    }
                    p += seg;
                }
                row += 1;
            }
        }
    }
}
