//! k-means (codebook, survey section 3, eq. (4)) convolutions and linear
//! layers — per-layer or per-channel codebooks, random kernels, strides,
//! padding, groups and bias, followed by batch norms and ReLUs — compile to
//! the dense f32 kernels with their weights decoded once, and the plan
//! equals the graph's reference forward on every instruction-set path;
//! only a 4-bit one-codebook linear layer of ≥ 32 MiB of decoded weights at
//! batch 1 keeps its codes (the codebook kernel, faster there).

mod common;

use common::{random_batch_norm as bn, relative_error};
use hasten_core::graph::{Graph, GraphBuilder};
use hasten_core::ndarray::Array4;
use hasten_core::op::WeightLayout;
use hasten_core::Block;
use hasten_core::{
    ActShape, CodebookConv, ConvSpec, Flatten, Op, Operator, PackedCodes, Padding, Relu, SeededRng,
};
use hasten_fastconv::{Isa, Plan, PlanOptions};
use proptest::prelude::*;

/// As the other plan tests: f32 against the f64-accumulating reference.
const TOL: f64 = 1e-4;

/// A codebook op on `layout`: `k` centroids in one codebook or one per
/// output row, scaled to keep activations near unit size.
fn codebook(rng: &mut SeededRng, layout: WeightLayout, k: usize, per_channel: bool) -> Op {
    let (rows, cols) = (layout.rows(), layout.row_len());
    let codes: Vec<u32> = (0..rows * cols).map(|_| rng.below(k) as u32).collect();
    let bits = hasten_core::bits_for(k);
    let books = rng.normal_array(
        (if per_channel { rows } else { 1 }, k),
        1.0 / (cols as f64).sqrt(),
    );
    let bias = (rng.below(2) == 0).then(|| rng.normal_array(rows, 0.5));
    CodebookConv::new(
        layout,
        PackedCodes::pack(&codes, rows, cols, bits).unwrap(),
        books,
        bias,
    )
    .unwrap()
    .into()
}

/// `convs` codebook convolutions (each with a batch norm and a ReLU), then
/// flatten → codebook linear → ReLU → codebook linear.
fn codebook_net(seed: u64, convs: usize, batch: usize) -> (Graph, Array4<f32>) {
    let mut rng = SeededRng::new(seed);
    let mut b = GraphBuilder::new();
    let c0 = 1 + rng.below(6);
    let hw = 6 + rng.below(8);
    let mut shape = ActShape::new(c0, hw, hw);
    let mut v = b.input("x", shape);
    for i in 0..convs {
        let groups = [1, 1, 2, 3][rng.below(4)];
        let c = shape.channels;
        let groups = if c.is_multiple_of(groups) { groups } else { 1 };
        let t = groups * (1 + rng.below(12));
        let k = 1 + rng.below(shape.height.min(shape.width).min(5));
        let stride = 1 + rng.below(2);
        let pad = |r: &mut SeededRng| r.below(k);
        let spec = ConvSpec::new()
            .with_stride(stride)
            .with_groups(groups)
            .with_padding_sides(Padding {
                top: pad(&mut rng),
                bottom: pad(&mut rng),
                left: pad(&mut rng),
                right: pad(&mut rng),
            });
        let layout = WeightLayout::conv([t, c / groups, k, k], spec).unwrap();
        let centroids = [2, 16, 200][rng.below(3)];
        let per_channel = rng.below(2) == 0;
        let op = codebook(&mut rng, layout, centroids, per_channel);
        shape = op.output_shape(shape).unwrap();
        v = b.node(format!("conv{i}"), op, &[v]);
        v = b.node(format!("bn{i}"), Op::from(bn(&mut rng, t)), &[v]);
        v = b.node(format!("relu{i}"), Op::from(Relu), &[v]);
    }
    v = b.node("flatten", Op::from(Flatten), &[v]);
    let hidden = 1 + rng.below(40);
    let fc1 = codebook(
        &mut rng,
        WeightLayout::linear(hidden, shape.len()).unwrap(),
        16,
        true,
    );
    v = b.node("fc1", fc1, &[v]);
    v = b.node("fc_relu", Op::from(Relu), &[v]);
    let fc2 = codebook(
        &mut rng,
        WeightLayout::linear(10, hidden).unwrap(),
        16,
        false,
    );
    v = b.node("fc2", fc2, &[v]);
    b.output(v);
    let x = rng.normal_array((batch, c0, hw, hw), 1.0);
    (b.build().unwrap(), x)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn codebook_graphs_run_dense_kernels_and_match_reference(
        seed in any::<u64>(), convs in 1..=3usize, batch in prop_oneof![Just(1usize), Just(3)],
    ) {
        let (graph, x) = codebook_net(seed, convs, batch);
        let slow = graph.reference_forward(&[&x]).unwrap();
        for isa in Isa::supported() {
            let options = PlanOptions { isa, ..PlanOptions::default() };
            let mut plan = Plan::for_graph(&graph, batch, options).unwrap();
            for s in plan.steps() {
                let name = &s.nodes[0];
                if name.starts_with("conv") {
                    prop_assert!(s.kernel.starts_with("conv "), "{isa}: {name} on {}\n{plan}", s.kernel);
                } else if name.starts_with("fc") && !name.ends_with("relu") {
                    prop_assert_eq!(&s.kernel, "linear", "{}: {}\n{}", isa, name, plan);
                }
            }
            let fast = plan.run(&x).unwrap().to_owned();
            let err = relative_error(&fast, &slow[0]);
            prop_assert!(err < TOL, "{isa}: relative error {err}\n{plan}");
        }
    }
}

/// A 4096 → 2048 linear layer with one 16-entry codebook (32 MiB of f32
/// weights) runs the codebook kernel at batch 1 and the dense linear step
/// at batch 2; both equal the reference. With one codebook per output it is
/// decoded at any batch.
#[test]
fn large_four_bit_linear_keeps_its_codes_at_batch_one() {
    let mut rng = SeededRng::new(3);
    let (out, inp) = (2048, 4096);
    let shape = ActShape::new(inp, 1, 1);
    for (per_channel, kernel_at_1) in [(false, "low-bit codebook_conv"), (true, "linear")] {
        let op = codebook(
            &mut rng,
            WeightLayout::linear(out, inp).unwrap(),
            16,
            per_channel,
        );
        let block = Block::single(op.clone());
        for (batch, kernel) in [(1, kernel_at_1), (2, "linear")] {
            let x: Array4<f32> = rng.normal_array((batch, inp, 1, 1), 1.0);
            let slow = op.reference_forward(&x).unwrap();
            for isa in Isa::supported() {
                let mut plan = Plan::with_isa(&block, shape, batch, isa).unwrap();
                assert_eq!(plan.steps()[0].kernel, kernel, "{isa}, batch {batch}");
                let err = relative_error(&plan.run(&x).unwrap().to_owned(), &slow);
                assert!(err < TOL, "{isa}, batch {batch}: relative error {err}");
            }
        }
    }
}

/// The generator once drew a 3×3 kernel for a 3×2 plane (asymmetric
/// padding had made the plane non-square) and built no graph at all.
#[test]
fn kernels_fit_planes_made_non_square_by_padding() {
    let (graph, x) = codebook_net(13451370090139860597, 2, 1);
    let slow = graph.reference_forward(&[&x]).unwrap();
    let mut plan = Plan::for_graph(&graph, 1, PlanOptions::default()).unwrap();
    let fast = plan.run(&x).unwrap().to_owned();
    assert!(relative_error(&fast, &slow[0]) < TOL);
}
