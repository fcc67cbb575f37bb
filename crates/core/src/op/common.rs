//! Validation and reshaping shared by the op files: the bias check of every
//! op with a per-output bias, the flattening of a batch into feature rows
//! for the fully connected ops, and the channel copy of the channel-routing
//! ops.

use ndarray::{s, Array1, Array2, Array4};

use crate::error::{ensure_finite, Error, Result};
use crate::shape::ActShape;

/// Checks that a bias (when given) has one finite entry per output, `outputs`.
pub(crate) fn check_bias(bias: Option<&Array1<f32>>, outputs: usize) -> Result<()> {
    if let Some(b) = bias {
        if b.len() != outputs {
            return Err(Error::shape("bias length", outputs, b.len()));
        }
        ensure_finite("bias", b.iter())?;
    }
    Ok(())
}

/// A zeroed NCHW output of `batch` samples of shape `out` — after checking
/// that its size fits (`Error::Overflow`) and that it stays within the
/// memory limit of the reference forwards (`Error::MemoryLimit`; see
/// [`crate::memory`]). `kind` names the op in the error.
pub(crate) fn zeros_output<T: Clone + num_traits::Zero>(
    kind: &str,
    out: ActShape,
    batch: usize,
) -> Result<Array4<T>> {
    let len = out.checked_batch_len(batch)?;
    crate::memory::check(
        &format!("the {kind} output of {batch} × {out}"),
        len,
        std::mem::size_of::<T>(),
    )?;
    Ok(Array4::zeros(out.batched(batch)))
}

/// The NCHW batch `input` (per-sample shape `shape`) as a `[N, C·H·W]`
/// matrix, one row-major flattened sample per row: the input of a fully
/// connected layer.
pub(crate) fn flatten_samples(input: &Array4<f32>, shape: ActShape) -> Array2<f32> {
    let batch = input.shape()[0];
    input
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((batch, shape.len()))
        .expect("element count preserved")
}

/// The batch whose output channel `o` is a copy of input channel
/// `sources[o]` (indices already checked against the input channels): the
/// reference forward of the channel-routing ops (gather, shuffle).
pub(crate) fn route_channels(input: &Array4<f32>, sources: &[usize]) -> Array4<f32> {
    let (batch, _, h, w) = input.dim();
    let mut y = Array4::<f32>::zeros((batch, sources.len(), h, w));
    for (o, &i) in sources.iter().enumerate() {
        y.slice_mut(s![.., o, .., ..])
            .assign(&input.slice(s![.., i, .., ..]));
    }
    y
}
