//! Both Winograd tiles, F(2×2, 3×3) and F(4×4, 3×3), equal the f64
//! reference on random stride-1 3×3 layers — 1×1 to 9×9 planes (outputs
//! that are and are not multiples of the tile), any padding, batch, bias,
//! a residual add and a ReLU or Clip after — on every instruction-set path
//! this CPU has (AVX-512, AVX2 forced, portable).

mod common;

use common::relative_error;
use hasten_core::graph::GraphBuilder;
use hasten_core::ndarray::Array4;
use hasten_core::{ActShape, Clip, ConvLayer, ConvSpec, Padding, Relu, SeededRng};
use hasten_fastconv::{Isa, Plan, PlanOptions, Winograd};
use proptest::prelude::*;

/// Each tile's stated error bound relative to the output's largest
/// magnitude (the Winograd module's documentation: measured ≤ 5e-7 for
/// F(2×2) and ≤ 3e-6 for F(4×4), on unit-variance and ResNet-like data).
fn bound(tile: Winograd) -> f64 {
    if tile == Winograd::F2 {
        1e-5
    } else {
        2e-5
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn winograd_tiles_match_reference(
        seed in any::<u64>(),
        (c, t, batch) in (1..=24usize, 1..=24usize, 1..=3usize),
        (h, w) in (1..=9usize, 1..=9usize),
        pad in proptest::array::uniform4(0..=2usize),
        (bias, residual, act) in (any::<bool>(), any::<bool>(), 0..3usize),
    ) {
        // The padded input must hold the 3×3 window.
        let (h, w) = (h.max(3 - (pad[0] + pad[1]).min(2)), w.max(3 - (pad[2] + pad[3]).min(2)));
        let mut rng = SeededRng::new(seed);
        let spec = ConvSpec::new().with_padding_sides(Padding {
            top: pad[0],
            bottom: pad[1],
            left: pad[2],
            right: pad[3],
        });
        let layer = ConvLayer::new(
            hasten_core::Conv4d::new(rng.normal_array((t, c, 3, 3), 1.0)).unwrap(),
            bias.then(|| rng.normal_array(t, 1.0)),
            spec,
        )
        .unwrap();
        let shape = ActShape::new(c, h, w);
        let out = hasten_core::Operator::output_shape(&layer, shape).unwrap();
        let mut b = GraphBuilder::new();
        let x = b.input("x", shape);
        let mut y = b.op("conv", layer, x);
        let mut inputs: Vec<Array4<f32>> = vec![rng.normal_array(shape.batched(batch), 1.0)];
        if residual {
            let r = b.input("r", out);
            inputs.push(rng.normal_array(out.batched(batch), 1.0));
            y = b.add("add", &[y, r]);
        }
        match act {
            0 => {}
            1 => y = b.op("relu", Relu, y),
            _ => y = b.op("clip", Clip::new(-0.5, 1.0).unwrap(), y),
        }
        b.output(y);
        let graph = b.build().unwrap();
        let refs: Vec<&Array4<f32>> = inputs.iter().collect();
        let slow = graph.reference_forward(&refs).unwrap();
        for isa in Isa::supported() {
            for (tile, name) in [(Winograd::F2, "conv winograd"), (Winograd::F4, "conv winograd f4")] {
                let options = PlanOptions { isa, winograd: tile, ..PlanOptions::default() };
                let mut plan = Plan::for_graph(&graph, batch, options).unwrap();
                prop_assert_eq!(&plan.steps()[0].kernel, name, "{}", plan);
                // Twice: the transformed buffers are reused.
                for run in 0..2 {
                    let fast = plan.run_all(&refs).unwrap().to_vec().remove(0);
                    let err = relative_error(&fast, &slow[0]);
                    prop_assert!(
                        err < bound(tile),
                        "{isa} {tile:?} run {run} ({c}→{t}, {h}×{w}, pad {pad:?}, batch {batch}): relative error {err}"
                    );
                }
            }
        }
    }
}
