//! The thin LeNet-style student of the distillation examples (survey §7):
//! LeNet-5's layout with 3 and 6 convolution channels and one 32-unit
//! hidden layer, about 11× fewer parameters than LeNet-5.

use hasten::core::op::{Flatten, MaxPool, PoolSpec, Relu};
use hasten::core::{ActShape, ConvLayer, ConvSpec, Graph, GraphBuilder, LinearLayer, SeededRng};
use hasten::models::he_std;

/// The thin student: LeNet-5's layout with 3 and 6 convolution channels
/// and one 32-unit hidden layer, He-normal weights.
pub fn thin_lenet5(seed: u64) -> Result<Graph, hasten::core::Error> {
    let mut rng = SeededRng::new(seed);
    let mut conv = |t: usize, c: usize, pad: usize| {
        let w = rng.normal_array((t, c, 5, 5), he_std(c * 25));
        ConvLayer::new(
            hasten::core::Conv4d::new(w)?,
            Some(ndarray::Array1::zeros(t)),
            ConvSpec::new().with_padding(pad),
        )
    };
    let (c1, c2) = (conv(3, 1, 2)?, conv(6, 3, 0)?);
    let pool = || MaxPool::new(PoolSpec::square(2).with_stride(2));
    let mut b = GraphBuilder::new();
    let x = b.input("x", ActShape::new(1, 28, 28));
    let y = b.op("conv1", c1, x);
    let y = b.op("relu1", Relu, y);
    let y = b.op("pool1", pool()?, y);
    let y = b.op("conv2", c2, y);
    let y = b.op("relu2", Relu, y);
    let y = b.op("pool2", pool()?, y);
    let y = b.op("flatten", Flatten, y);
    let fc1 = rng.normal_array((32, 150), he_std(150));
    let y = b.op(
        "fc1",
        LinearLayer::new(fc1, Some(ndarray::Array1::zeros(32)))?,
        y,
    );
    let y = b.op("relu3", Relu, y);
    let fc2 = rng.normal_array((10, 32), he_std(32));
    let y = b.op(
        "fc2",
        LinearLayer::new(fc2, Some(ndarray::Array1::zeros(10)))?,
        y,
    );
    b.output(y);
    b.build()
}
