//! LeNet-5 (LeCun et al., 1998) in its common modern form.

use hasten_core::{ConvSpec, Flatten, Graph, MaxPool, PoolSpec, Result};

use crate::config::ModelConfig;
use crate::net::Net;

/// LeNet-5 for `1 × 28 × 28` digits, in the form PyTorch tutorials use:
/// `conv1` (5×5, padding 2, 6 channels, bias), `relu1`, `pool1` (2×2/2
/// max-pool), `conv2` (5×5, 16 channels, bias), `relu2`, `pool2`, `flatten`,
/// `fc1` (400 → 120), `relu3`, `fc2` (120 → 84), `relu4`, `fc3` (84 →
/// classes).
///
/// The variant differs from the 1998 network as modern re-implementations
/// do: ReLU instead of scaled tanh, max-pooling instead of trainable
/// subsampling, `conv2` connected to all six maps rather than through the
/// sparse connection table, padding 2 on the 28 × 28 input instead of a
/// 32 × 32 input, and a linear output layer instead of RBF units. At 10
/// classes it has the familiar 61,706 parameters.
///
/// Other input sizes work as long as the features survive the two pools;
/// `fc1` takes whatever `pool2` yields (400 features at 28 × 28).
///
/// # Errors
/// [`Error::InvalidParameter`](hasten_core::Error::InvalidParameter) for an
/// invalid configuration (see
/// [`ModelConfig::input_shape`]) or a
/// width multiplier other than 1, and a shape error when the input is too
/// small for the network's strides and pools.
///
/// ```
/// use hasten_models::{lenet5, ModelConfig};
/// use hasten_core::SeededRng;
///
/// let graph = lenet5(&ModelConfig::mnist())?;
/// assert_eq!(graph.cost()?.params, 61_706);
/// let x = SeededRng::new(0).normal_array((4, 1, 28, 28), 1.0);
/// assert_eq!(graph.reference_forward(&[&x])?[0].shape(), &[4, 10, 1, 1]);
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn lenet5(config: &ModelConfig) -> Result<Graph> {
    config.require_unit_width("lenet5")?;
    let (mut net, x) = Net::new(config)?;
    let pool = || MaxPool::new(PoolSpec::square(2).with_stride(2));
    let y = net.conv("conv1", x, 6, 5, ConvSpec::new().with_padding(2), true)?;
    let y = net.relu("relu1", y)?;
    let y = net.op("pool1", pool()?, y)?;
    let y = net.conv("conv2", y, 16, 5, ConvSpec::new(), true)?;
    let y = net.relu("relu2", y)?;
    let y = net.op("pool2", pool()?, y)?;
    let y = net.op("flatten", Flatten, y)?;
    let y = net.linear("fc1", y, 120)?;
    let y = net.relu("relu3", y)?;
    let y = net.linear("fc2", y, 84)?;
    let y = net.relu("relu4", y)?;
    let y = net.linear("fc3", y, config.num_classes)?;
    net.finish(y)
}
