//! The blocks produced by `hasten-prune` (group-wise, CSR, perforated,
//! grouped, trimmed and filter-pruned convolutions) run through
//! `hasten::fastconv::forward` agree with their reference forward, and with
//! the dense layer carrying the same zeros.

use hasten::core::{
    relative_error, ActShape, Block, ConvLayer, ConvSpec, Layer, Op, SeededRng, Transform,
};
use hasten::prune::perforation::{MaskKind, Perforation};
use hasten::prune::removal::{ConnectionGroups, GroupwisePrune, KernelTrim, MagnitudeSparse};

#[test]
fn pruned_blocks_fast_equals_reference() {
    let mut rng = SeededRng::new(77);
    let (c, hw) = (16, 9);
    let layer = ConvLayer::new(
        hasten::core::Conv4d::new(rng.normal_array((24, c, 3, 3), 0.3)).unwrap(),
        Some(rng.normal_array(24, 0.1)),
        ConvSpec::new().with_padding(1),
    )
    .unwrap();
    let input = ActShape::new(c, hw, hw);
    let x = rng.normal_array((2, c, hw, hw), 1.0);
    let l = Layer::Conv(layer);
    let transforms: Vec<Box<dyn Transform>> = vec![
        Box::new(GroupwisePrune { fraction: 0.6 }),
        Box::new(MagnitudeSparse { fraction: 0.9 }),
        Box::new(ConnectionGroups { groups: 4 }),
        Box::new(KernelTrim { size: (2, 3) }),
        Box::new(Perforation {
            mask: MaskKind::Grid((2, 3)),
        }),
    ];
    for t in transforms {
        let out = t.apply(&l, input).unwrap();
        let reference = out.block.reference_forward(&x).unwrap();
        let fast = hasten::fastconv::forward(&out.block, &x).unwrap();
        let err = relative_error(&reference, &fast);
        // fastconv's stated agreement with the reference: relative error < 1e-4.
        assert!(err < 1e-4, "{}: {err}", t.name());
        // Group-wise and CSR blocks equal the dense layer with the same zeros.
        let dense = match &out.block.ops()[0] {
            Op::GroupwiseConv(g) => Some(g.to_dense().unwrap()),
            Op::SparseConv(s) => Some(s.to_dense().unwrap()),
            _ => None,
        };
        if let Some(d) = dense {
            let y = hasten::fastconv::forward(&Block::single(d), &x).unwrap();
            assert!(relative_error(&y, &fast) < 1e-4, "{}", t.name());
        }
    }
}
