//! Element-wise ops: ReLU and inference-mode batch normalisation (a
//! per-channel affine map `y = scale·x + shift`).

use hasten_core::ndarray::Array4;
use hasten_core::BatchNorm;
use rayon::prelude::*;

/// Elements per parallel chunk of an element-wise op.
const CHUNK: usize = 1 << 14;

/// `max(0, x)`, in parallel.
pub(crate) fn relu(input: &Array4<f32>) -> Array4<f32> {
    let mut y = input.as_standard_layout().into_owned();
    let ys = y.as_slice_mut().expect("standard layout");
    ys.par_chunks_mut(CHUNK)
        .for_each(|c| c.iter_mut().for_each(|v| *v = v.max(0.0)));
    y
}

/// `γ·(x − μ)/sqrt(σ² + ε) + β` per channel, in parallel over channel planes.
pub(crate) fn batch_norm(bn: &BatchNorm, input: &Array4<f32>) -> Array4<f32> {
    let (scale, shift) = bn.affine();
    let channels = bn.channels();
    let mut y = input.as_standard_layout().into_owned();
    let area = y.shape()[2] * y.shape()[3];
    let ys = y.as_slice_mut().expect("standard layout");
    ys.par_chunks_mut(area).enumerate().for_each(|(k, plane)| {
        let (a, b) = (scale[k % channels], shift[k % channels]);
        plane.iter_mut().for_each(|v| *v = a * *v + b);
    });
    y
}
