//! Fully connected layer `y = W x + b` over flattened samples (section 5,
//! eq. (2) of the survey factorises it): one GEMM for the whole batch.

use hasten_core::LinearLayer;

use crate::plan::OpKernel;
use crate::pool::ScratchPool;

/// A fully connected layer as a plan kernel.
#[derive(Debug)]
pub(crate) struct LinearKernel {
    layer: LinearLayer,
}

impl LinearKernel {
    /// Keeps the layer (its weight is already row-major).
    pub fn new(layer: &LinearLayer) -> Self {
        LinearKernel {
            layer: layer.clone(),
        }
    }
}

impl OpKernel for LinearKernel {
    fn run(&self, src: &[f32], dst: &mut [f32], batch: usize, _pool: &ScratchPool) {
        forward(&self.layer, src, dst, batch);
    }
}

/// `Y[n, o] = b[o] + Σ_i W[o, i] · X[n, i]`, `X` = `batch × in` row-major,
/// `Y` = `batch × out`.
pub(crate) fn forward(layer: &LinearLayer, x: &[f32], y: &mut [f32], batch: usize) {
    let (out_f, in_f) = (layer.out_features(), layer.in_features());
    let w = layer.weight();
    let ws = w
        .as_slice()
        .expect("LinearLayer stores a standard-layout weight");
    assert!(x.len() >= batch * in_f && y.len() >= batch * out_f);
    let y = &mut y[..batch * out_f];
    match layer.bias() {
        Some(b) => y
            .chunks_exact_mut(out_f)
            .for_each(|row| row.iter_mut().zip(b.iter()).for_each(|(o, &bv)| *o = bv)),
        None => y.fill(0.0),
    }
    // SAFETY: X is batch × in_f row-major and Y batch × out_f row-major
    // (lengths asserted above); W is out_f × in_f row-major, read as its
    // transpose (row stride 1, column stride in_f); Y aliases neither.
    unsafe {
        matrixmultiply::sgemm(
            batch,
            in_f,
            out_f,
            1.0,
            x.as_ptr(),
            in_f as isize,
            1,
            ws.as_ptr(),
            1,
            in_f as isize,
            1.0,
            y.as_mut_ptr(),
            out_f as isize,
            1,
        );
    }
}
