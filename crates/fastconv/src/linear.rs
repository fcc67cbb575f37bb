//! Fully connected layer `y = W x + b` over flattened samples, one GEMM for
//! the whole batch.

use hasten_core::ndarray::Array4;
use hasten_core::{LinearLayer, Result};

/// `Y[n, o] = b[o] + Σ_i W[o, i] · X[n, i]`.
pub(crate) fn forward(layer: &LinearLayer, input: &Array4<f32>) -> Result<Array4<f32>> {
    let x = input.as_standard_layout();
    let batch = x.shape()[0];
    let (out_f, in_f) = (layer.out_features(), layer.in_features());
    let xs = x.as_slice().expect("standard layout");
    let w = layer.weight();
    let ws = w
        .as_slice()
        .expect("LinearLayer stores a standard-layout weight");
    let mut y = Array4::<f32>::zeros((batch, out_f, 1, 1));
    {
        let ys = y.as_slice_mut().expect("fresh array");
        if let Some(b) = layer.bias() {
            for row in ys.chunks_exact_mut(out_f) {
                row.iter_mut().zip(b.iter()).for_each(|(o, &bv)| *o = bv);
            }
        }
        // SAFETY: X is batch × in_f row-major (xs.len() == batch·in_f, checked by
        // the caller's shape validation), W is out_f × in_f row-major read as its
        // transpose (row stride 1, column stride in_f), Y is batch × out_f
        // row-major; all three buffers are live and Y does not alias X or W.
        unsafe {
            matrixmultiply::sgemm(
                batch,
                in_f,
                out_f,
                1.0,
                xs.as_ptr(),
                in_f as isize,
                1,
                ws.as_ptr(),
                1,
                in_f as isize,
                if layer.bias().is_some() { 1.0 } else { 0.0 },
                ys.as_mut_ptr(),
                out_f as isize,
                1,
            );
        }
    }
    Ok(y)
}
