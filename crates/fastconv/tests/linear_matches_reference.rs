//! The fully connected kernels (skinny product for batch ≤ 8, GEMM above)
//! equal the reference forward on every instruction-set path, with and
//! without bias and a fused ReLU, on odd sizes.

mod common;

use common::relative_error;
use hasten_core::ndarray::Array4;
use hasten_core::{ActShape, Block, LinearLayer, Op, Relu, SeededRng};
use hasten_fastconv::{Isa, Plan};
use proptest::prelude::*;

/// f32 accumulation over at most a few thousand terms against an f64
/// reference stays two orders of magnitude below this.
const TOL: f64 = 1e-4;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn linear_matches_reference(
        (out, c, hw) in (1..=70usize, 1..=40usize, 1..=3usize),
        batch in 1..=12usize,
        (bias, relu, seed) in (any::<bool>(), any::<bool>(), any::<u64>()),
    ) {
        let mut rng = SeededRng::new(seed);
        let inp = c * hw * hw;
        let layer = LinearLayer::new(
            rng.normal_array((out, inp), 1.0),
            bias.then(|| rng.normal_array(out, 1.0)),
        )
        .unwrap();
        let mut ops: Vec<Op> = vec![layer.into()];
        if relu {
            ops.push(Relu.into());
        }
        let block = Block::new(ops).unwrap();
        let x: Array4<f32> = rng.normal_array((batch, c, hw, hw), 1.0);
        let slow = block.reference_forward(&x).unwrap();
        for isa in Isa::supported() {
            let mut plan = Plan::with_isa(&block, ActShape::new(c, hw, hw), batch, isa).unwrap();
            // Twice: the second run reuses every buffer of the first.
            for _ in 0..2 {
                let fast = plan.run(&x).unwrap().to_owned();
                let err = relative_error(&fast, &slow);
                prop_assert!(err < TOL, "{isa}, batch {batch}: relative error {err}");
            }
        }
    }
}

/// Inner sizes beyond one GEMM depth block (256) and one pass of eight
/// samples, on both paths.
#[test]
fn deep_linear_matches_reference() {
    let mut rng = SeededRng::new(11);
    for (out, inp, batch) in [(37, 611, 1), (13, 1001, 8), (29, 517, 9), (70, 300, 17)] {
        let layer = LinearLayer::new(
            rng.normal_array((out, inp), 1.0),
            Some(rng.normal_array(out, 1.0)),
        )
        .unwrap();
        let block = Block::new(vec![layer.into(), Relu.into()]).unwrap();
        let x: Array4<f32> = rng.normal_array((batch, inp, 1, 1), 1.0);
        let slow = block.reference_forward(&x).unwrap();
        for isa in Isa::supported() {
            let mut plan = Plan::with_isa(&block, ActShape::new(inp, 1, 1), batch, isa).unwrap();
            let fast = plan.run(&x).unwrap().to_owned();
            let err = relative_error(&fast, &slow);
            assert!(err < TOL, "{isa}, {out}×{inp}, batch {batch}: {err}");
        }
    }
}
