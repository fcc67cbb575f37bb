//! The Tensor-Train fully connected kernel (one GEMM per core) equals the
//! reference contraction on every instruction-set path, with and without
//! bias and a fused ReLU or Clip.

mod common;

use common::relative_error;
use hasten_core::ndarray::{Array1, Array4};
use hasten_core::{ActShape, Block, Clip, Op, Relu, SeededRng, TtLinear};
use hasten_fastconv::{Isa, Plan};
use proptest::prelude::*;

/// f32 accumulation over at most a few thousand terms against an f64
/// reference stays two orders of magnitude below this.
const TOL: f64 = 1e-4;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn tt_linear_matches_reference(
        modes in proptest::collection::vec((1..=5usize, 1..=5usize, 1..=4usize), 1..=3),
        (batch, bias, act, seed) in (1..=4usize, any::<bool>(), 0..3usize, any::<u64>()),
    ) {
        let mut rng = SeededRng::new(seed);
        let d = modes.len();
        let cores: Vec<Array4<f32>> = modes
            .iter()
            .enumerate()
            .map(|(k, &(m, n, r))| {
                let r0 = if k == 0 { 1 } else { modes[k - 1].2 };
                let r1 = if k + 1 == d { 1 } else { r };
                rng.normal_array((r0, m, n, r1), 1.0)
            })
            .collect();
        let out: usize = modes.iter().map(|t| t.0).product();
        let inp: usize = modes.iter().map(|t| t.1).product();
        let b = bias.then(|| Array1::from_shape_fn(out, |_| rng.normal() as f32));
        let tt = TtLinear::new(cores, b).unwrap();
        let mut ops: Vec<Op> = vec![tt.into()];
        // No activation, a fused ReLU, or a fused Clip.
        match act {
            1 => ops.push(Relu.into()),
            2 => ops.push(Clip::new(-0.5, 0.75).unwrap().into()),
            _ => {}
        }
        let block = Block::new(ops).unwrap();
        let x: Array4<f32> = rng.normal_array((batch, inp, 1, 1), 1.0);
        let slow = block.reference_forward(&x).unwrap();
        for isa in Isa::supported() {
            let mut plan = Plan::with_isa(&block, ActShape::new(inp, 1, 1), batch, isa).unwrap();
            for _ in 0..2 {
                let fast = plan.run(&x).unwrap().to_owned();
                let err = relative_error(&fast, &slow);
                prop_assert!(err < TOL, "{isa}: relative error {err}");
            }
        }
    }
}
