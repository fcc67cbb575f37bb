//! Weight initialisation: He-normal convolution and linear weights, zero
//! biases, PyTorch's batch-norm defaults, and seeded random batch-norm
//! statistics.
//!
//! Every parameterised node draws from its own stream, derived from the
//! model seed and the node's name, so the weights of a node do not depend on
//! the order of the nodes drawn before it, and switching batch norms to
//! [`BatchNormInit::Random`](crate::BatchNormInit::Random) leaves every
//! convolution unchanged.

use hasten_core::graph::NodeOp;
use hasten_core::ndarray::Array1;
use hasten_core::{BatchNorm, ConvLayer, ConvSpec, Graph, LinearLayer, Op, Result, SeededRng};

/// PyTorch's batch-norm ε.
pub const BATCH_NORM_EPS: f32 = 1e-5;

/// Salts separating the streams of one node name.
const WEIGHT_STREAM: u64 = 0;
const BATCH_NORM_STREAM: u64 = 0x5bd1_e995;

/// The standard deviation of He (Kaiming) normal initialisation,
/// `sqrt(2 / fan_in)`.
///
/// `fan_in` is the number of inputs of one output: `in_channels / groups · kh
/// · kw` for a convolution (9 for a 3×3 depthwise filter), `in_features` for a
/// linear layer. He et al. (2015) derive it so that the variance of the
/// activations is preserved through a ReLU network in the forward pass,
/// which keeps random-weight forwards well scaled however deep the model.
/// (torchvision draws ResNet and VGG convolutions with `mode="fan_out"`
/// instead, the variance-preserving choice for the backward pass.)
pub fn he_std(fan_in: usize) -> f64 {
    (2.0 / fan_in.max(1) as f64).sqrt()
}

/// FNV-1a of a node name: a stable 64-bit key for its stream.
fn name_key(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The stream of node `name` for `salt`, under `seed`.
fn node_rng(seed: u64, name: &str, salt: u64) -> SeededRng {
    SeededRng::new(seed).fork(name_key(name) ^ salt)
}

/// A convolution with He-normal weights of shape `out × in/groups × kh × kw`
/// and, when `bias`, a zero bias.
pub(crate) fn conv(
    seed: u64,
    name: &str,
    in_channels: usize,
    out_channels: usize,
    kernel: (usize, usize),
    spec: ConvSpec,
    bias: bool,
) -> Result<ConvLayer> {
    let per_group = in_channels / spec.groups.max(1);
    let fan_in = per_group * kernel.0 * kernel.1;
    let mut rng = node_rng(seed, name, WEIGHT_STREAM);
    let w = rng.normal_array(
        (out_channels, per_group, kernel.0, kernel.1),
        he_std(fan_in),
    );
    let bias = bias.then(|| Array1::zeros(out_channels));
    ConvLayer::new(hasten_core::Conv4d::new(w)?, bias, spec)
}

/// A linear layer with He-normal weights `out × in` and a zero bias.
pub(crate) fn linear(
    seed: u64,
    name: &str,
    in_features: usize,
    out_features: usize,
) -> Result<LinearLayer> {
    let mut rng = node_rng(seed, name, WEIGHT_STREAM);
    let w = rng.normal_array((out_features, in_features), he_std(in_features));
    LinearLayer::new(w, Some(Array1::zeros(out_features)))
}

/// PyTorch's fresh `BatchNorm2d(channels)`: γ = 1, β = 0, μ = 0, σ² = 1,
/// ε = 1e-5.
pub(crate) fn identity_batch_norm(channels: usize) -> Result<BatchNorm> {
    BatchNorm::new(
        Array1::ones(channels),
        Array1::zeros(channels),
        Array1::zeros(channels),
        Array1::ones(channels),
        BATCH_NORM_EPS,
    )
}

/// Random statistics for the batch norm named `name`: γ ~ U[0.5, 1.5),
/// β ~ N(0, 0.2²), μ ~ N(0, 0.2²), σ² ~ U[0.5, 2), ε = 1e-5.
pub(crate) fn random_batch_norm(seed: u64, name: &str, channels: usize) -> Result<BatchNorm> {
    let mut rng = node_rng(seed, name, BATCH_NORM_STREAM);
    let gamma = rng.uniform_array(channels, 0.5, 1.5);
    let beta = rng.normal_array(channels, 0.2);
    let mean = rng.normal_array(channels, 0.2);
    let var = rng.uniform_array(channels, 0.5, 2.0);
    BatchNorm::new(gamma, beta, mean, var, BATCH_NORM_EPS)
}

/// Replaces every batch norm of `graph` by one of the same width with
/// random statistics drawn from `seed` and the node's name: γ ~ U[0.5, 1.5),
/// β ~ N(0, 0.2²), running mean ~ N(0, 0.2²), running variance ~ U[0.5, 2),
/// ε = 1e-5. Returns how many it replaced.
///
/// A model built with [`BatchNormInit::Random`](crate::BatchNormInit::Random)
/// is the model built with the default initialisation after
/// `randomize_batch_norms(&mut graph, config.seed)`.
///
/// ```
/// use hasten_models::{randomize_batch_norms, resnet8, ModelConfig};
///
/// let config = ModelConfig::mnist().with_seed(3);
/// let mut graph = resnet8(&config)?;
/// assert_eq!(randomize_batch_norms(&mut graph, 3)?, 9);
/// assert_eq!(graph, resnet8(&config.with_random_batch_norm())?);
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn randomize_batch_norms(graph: &mut Graph, seed: u64) -> Result<usize> {
    let targets: Vec<(String, usize)> = graph
        .nodes()
        .iter()
        .filter_map(|node| match node.op() {
            NodeOp::Op(Op::BatchNorm(bn)) => Some((node.name().to_string(), bn.channels())),
            _ => None,
        })
        .collect();
    for (name, channels) in &targets {
        let bn = random_batch_norm(seed, name, *channels)?;
        graph.replace(name, NodeOp::Op(Op::BatchNorm(bn)))?;
    }
    Ok(targets.len())
}

/// Re-draws every dense parameter of `graph` as the builders initialise
/// them, for training an imported network from scratch: convolution and
/// linear weights He-normal (fan-in from the weight's shape, the stream of
/// the node's name), biases zero, batch norms at PyTorch's defaults
/// (γ = 1, β = 0, μ = 0, σ² = 1); the stored values of compressed ops
/// (`values`, `centroids`, …) are left as they are. Returns how many
/// tensors were set.
///
/// Errors: those of [`Graph::set_parameters`] (none for a valid graph).
pub fn reinitialize(graph: &mut Graph, seed: u64) -> Result<usize> {
    let fresh: Vec<(String, hasten_core::ndarray::ArrayD<f32>)> = graph
        .parameters()
        .into_iter()
        .map(|(name, v)| {
            let (node, suffix) = name.rsplit_once('.').unwrap_or((name.as_str(), ""));
            let value = match (suffix, v.ndim()) {
                ("weight", d) if d >= 2 => {
                    let fan_in: usize = v.shape()[1..].iter().product();
                    let mut rng = node_rng(seed, node, WEIGHT_STREAM);
                    rng.normal_array(v.raw_dim(), he_std(fan_in))
                }
                ("weight" | "running_var", _) => v.mapv(|_| 1.0),
                ("bias" | "running_mean", _) => v.mapv(|_| 0.0),
                // The stored values of a compressed op (sparse values,
                // centroids, scales, TT cores) are kept.
                _ => v,
            };
            (name, value)
        })
        .collect();
    graph.set_parameters(&fresh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reinitialize_redraws_the_builders_initialisation() {
        use crate::{lenet5, resnet8, ModelConfig};
        // LeNet-5 has zero biases: re-drawing seed 7 over the weights of
        // seed 3 gives exactly the network built with seed 7.
        let mut g = lenet5(&ModelConfig::mnist().with_seed(3)).unwrap();
        let want = lenet5(&ModelConfig::mnist().with_seed(7)).unwrap();
        assert_ne!(g, want);
        assert_eq!(reinitialize(&mut g, 7).unwrap(), 10);
        assert_eq!(g, want);
        // Random batch-norm statistics go back to PyTorch's defaults.
        let config = ModelConfig::cifar10().with_seed(2);
        let mut r = resnet8(&config.with_random_batch_norm()).unwrap();
        reinitialize(&mut r, 2).unwrap();
        assert_eq!(r, resnet8(&config).unwrap());
    }

    #[test]
    fn he_std_matches_the_formula() {
        assert!((he_std(2) - 1.0).abs() < 1e-12);
        assert!((he_std(9 * 64) - (2.0f64 / 576.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn streams_depend_on_name_and_seed_only() {
        let spec = ConvSpec::new();
        let a = conv(1, "conv1", 4, 8, (3, 3), spec, false).unwrap();
        let b = conv(1, "conv1", 4, 8, (3, 3), spec, false).unwrap();
        let c = conv(1, "conv2", 4, 8, (3, 3), spec, false).unwrap();
        let d = conv(2, "conv1", 4, 8, (3, 3), spec, false).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    #[test]
    fn he_weights_have_the_he_variance() {
        let l = linear(0, "fc", 500, 400).unwrap();
        let w = l.weight();
        let var = w.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / w.len() as f64;
        assert!((var / (2.0 / 500.0) - 1.0).abs() < 0.02, "{var}");
        assert!(l.bias().unwrap().iter().all(|&b| b == 0.0));
    }

    #[test]
    fn random_batch_norm_stays_in_its_ranges() {
        let bn = random_batch_norm(0, "bn1", 256).unwrap();
        assert!(bn.gamma().iter().all(|&g| (0.5..1.5).contains(&g)));
        assert!(bn.var().iter().all(|&v| (0.5..2.0).contains(&v)));
        assert!(bn.mean().iter().any(|&m| m != 0.0));
        assert!(bn.beta().iter().any(|&b| b != 0.0));
    }
}
