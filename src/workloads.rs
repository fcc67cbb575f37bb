//! Standard benchmark layers, with random weights: the 3×3 and strided
//! convolutions of ResNet-18, VGG-16's conv1_2 / conv3_3 / conv5_3,
//! MobileNet-v1's depthwise and pointwise layers, and the blocks that
//! replace a `C`-channel 3×3 layer at rank `R` — CP (survey Fig. 1, eq. (4)–(5):
//! `1×1 C→R`, `3×1` and `1×3` depthwise, `1×1 R→N`), Tucker-2 (`1×1 C→R`,
//! `3×3 R→R`, `1×1 R→N`) and the separable two-component scheme of
//! Jaderberg et al. (section 2.1: `3×1 C→R`, `1×3 R→N`). Block weights come
//! from random factors: only their shapes matter for speed.

use hasten_core::{ActShape, Block, ConvLayer, ConvSpec, Padding, Result, SeededRng};

/// What a workload measures against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Compute-bound: compare GFLOP/s with the GEMM peak.
    Compute,
    /// Memory-bound: compare bytes moved per second with copy bandwidth.
    Memory,
}

/// One benchmark shape: a block and its per-sample input.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Short name, e.g. `resnet18/conv3_x`.
    pub name: String,
    /// The ops to run.
    pub block: Block,
    /// Per-sample input shape.
    pub input: ActShape,
    /// Compute- or memory-bound.
    pub bound: Bound,
    /// For a decomposed block: the name of the dense layer it replaces.
    pub replaces: Option<String>,
}

/// A `kh × kw` convolution `c → t` with bias and the given spec.
fn conv(
    rng: &mut SeededRng,
    t: usize,
    c_g: usize,
    kh: usize,
    kw: usize,
    spec: ConvSpec,
) -> Result<ConvLayer> {
    let fan_in = (c_g * kh * kw) as f64;
    ConvLayer::new(
        hasten_core::Conv4d::new(rng.normal_array((t, c_g, kh, kw), 1.0 / fan_in.sqrt()))?,
        Some(rng.normal_array(t, 0.1)),
        spec,
    )
}

/// A dense workload of one convolution.
fn dense(
    rng: &mut SeededRng,
    name: &str,
    c: usize,
    t: usize,
    k: usize,
    stride: usize,
    hw: usize,
) -> Result<Workload> {
    let spec = ConvSpec::new().with_stride(stride).with_padding(k / 2);
    Ok(Workload {
        name: name.into(),
        block: Block::single(conv(rng, t, c, k, k, spec)?),
        input: ActShape::new(c, hw, hw),
        bound: Bound::Compute,
        replaces: None,
    })
}

/// ResNet-18: the 3×3 convolution of each stage, the strided 3×3 that opens
/// stages 3–5, and the 7×7/2 stem.
pub fn resnet18(rng: &mut SeededRng) -> Result<Vec<Workload>> {
    Ok(vec![
        dense(rng, "resnet18/conv1 7x7/2", 3, 64, 7, 2, 224)?,
        dense(rng, "resnet18/conv2_x 3x3", 64, 64, 3, 1, 56)?,
        dense(rng, "resnet18/conv3_x 3x3", 128, 128, 3, 1, 28)?,
        dense(rng, "resnet18/conv4_x 3x3", 256, 256, 3, 1, 14)?,
        dense(rng, "resnet18/conv5_x 3x3", 512, 512, 3, 1, 7)?,
        dense(rng, "resnet18/conv3_1 3x3/2", 64, 128, 3, 2, 56)?,
        dense(rng, "resnet18/conv4_1 3x3/2", 128, 256, 3, 2, 28)?,
        dense(rng, "resnet18/conv5_1 3x3/2", 256, 512, 3, 2, 14)?,
    ])
}

/// VGG-16: conv1_2, conv3_3 and conv5_3.
pub fn vgg16(rng: &mut SeededRng) -> Result<Vec<Workload>> {
    Ok(vec![
        dense(rng, "vgg16/conv1_2", 64, 64, 3, 1, 224)?,
        dense(rng, "vgg16/conv3_3", 256, 256, 3, 1, 56)?,
        dense(rng, "vgg16/conv5_3", 512, 512, 3, 1, 14)?,
    ])
}

/// MobileNet-v1 (width 1.0, 224²): depthwise 3×3 layers (memory-bound) and
/// pointwise 1×1 layers.
pub fn mobilenet_v1(rng: &mut SeededRng) -> Result<Vec<Workload>> {
    let dw =
        |rng: &mut SeededRng, name: &str, c: usize, stride: usize, hw: usize| -> Result<Workload> {
            let spec = ConvSpec::new()
                .with_stride(stride)
                .with_padding(1)
                .with_groups(c);
            Ok(Workload {
                name: name.into(),
                block: Block::single(conv(rng, c, 1, 3, 3, spec)?),
                input: ActShape::new(c, hw, hw),
                bound: Bound::Memory,
                replaces: None,
            })
        };
    Ok(vec![
        dw(rng, "mobilenet/dw1 32@112", 32, 1, 112)?,
        dw(rng, "mobilenet/dw2 64@112/2", 64, 2, 112)?,
        dw(rng, "mobilenet/dw4 128@56/2", 128, 2, 56)?,
        dw(rng, "mobilenet/dw6 256@28", 256, 1, 28)?,
        dw(rng, "mobilenet/dw8 512@14", 512, 1, 14)?,
        dense(rng, "mobilenet/pw1 32->64@112", 32, 64, 1, 1, 112)?,
        dense(rng, "mobilenet/pw3 128->128@56", 128, 128, 1, 1, 56)?,
        dense(rng, "mobilenet/pw7 512->512@14", 512, 512, 1, 1, 14)?,
        dense(rng, "mobilenet/pw13 1024->1024@7", 1024, 1024, 1, 1, 7)?,
    ])
}

/// The dense `channels`-channel 3×3 layer on `hw × hw` inputs and its CP,
/// Tucker-2 and separable replacements at `rank`.
pub fn decomposed_blocks(
    rng: &mut SeededRng,
    channels: usize,
    rank: usize,
    hw: usize,
) -> Result<Vec<Workload>> {
    let (c, r) = (channels, rank);
    let dense_name = format!("dense 3x3 {c}@{hw}");
    let pad = |top, left| ConvSpec::new().with_padding_sides(Padding::symmetric(top, left));
    let block = |name: &str, layers: Vec<ConvLayer>| Workload {
        name: format!("{name} r{r} {c}@{hw}"),
        block: Block::new(layers.into_iter().map(Into::into).collect()).expect("non-empty"),
        input: ActShape::new(c, hw, hw),
        bound: Bound::Compute,
        replaces: Some(dense_name.clone()),
    };
    let dense = dense(rng, &dense_name, c, c, 3, 1, hw)?;
    let cp = block(
        "cp",
        vec![
            conv(rng, r, c, 1, 1, ConvSpec::new())?,
            conv(rng, r, 1, 3, 1, pad(1, 0).with_groups(r))?,
            conv(rng, r, 1, 1, 3, pad(0, 1).with_groups(r))?,
            conv(rng, c, r, 1, 1, ConvSpec::new())?,
        ],
    );
    let tucker = block(
        "tucker2",
        vec![
            conv(rng, r, c, 1, 1, ConvSpec::new())?,
            conv(rng, r, r, 3, 3, ConvSpec::new().with_padding(1))?,
            conv(rng, c, r, 1, 1, ConvSpec::new())?,
        ],
    );
    let separable = block(
        "separable",
        vec![
            conv(rng, r, c, 3, 1, pad(1, 0))?,
            conv(rng, c, r, 1, 3, pad(0, 1))?,
        ],
    );
    Ok(vec![dense, cp, tucker, separable])
}

/// Every standard workload: ResNet-18, VGG-16, MobileNet-v1, and the 256-channel
/// rank-64 blocks on 56×56 inputs.
pub fn all(seed: u64) -> Result<Vec<Workload>> {
    let mut rng = SeededRng::new(seed);
    let mut w = resnet18(&mut rng)?;
    w.extend(vgg16(&mut rng)?);
    w.extend(mobilenet_v1(&mut rng)?);
    w.extend(decomposed_blocks(&mut rng, 256, 64, 56)?);
    Ok(w)
}
