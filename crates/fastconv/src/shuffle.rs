//! ShuffleNet channel shuffle (survey section 3): a copy of channel planes
//! in permuted order.

use hasten_core::ndarray::Array4;
use hasten_core::ChannelShuffle;
use rayon::prelude::*;

/// Output channel `o` is input channel `shuffle.source_channel(o, C)`.
pub(crate) fn forward(shuffle: &ChannelShuffle, input: &Array4<f32>) -> Array4<f32> {
    let x = input.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    let channels = x.shape()[1];
    let area = x.shape()[2] * x.shape()[3];
    let mut y = Array4::<f32>::zeros(x.raw_dim());
    let ys = y.as_slice_mut().expect("fresh array");
    ys.par_chunks_mut(area).enumerate().for_each(|(k, plane)| {
        let (n, o) = (k / channels, k % channels);
        let src = n * channels + shuffle.source_channel(o, channels);
        plane.copy_from_slice(&xs[src * area..][..area]);
    });
    y
}
