//! Shape, size, cost and memory arithmetic on hostile hyper-parameters: every
//! case is a typed error, never a panic, a wrapped value or a bogus `Ok`.

use hasten_core::ndarray::{Array2, Array4};
use hasten_core::{
    memory, ActShape, Block, ConvLayer, ConvSpec, Error, LinearLayer, Op, Operator, Padding, Relu,
    SparseConv,
};

fn conv(t: usize, c: usize, k: usize, spec: ConvSpec) -> ConvLayer {
    ConvLayer::from_array(Array4::from_elem((t, c, k, k), 0.5), spec).unwrap()
}

fn is_overflow<T: std::fmt::Debug>(r: Result<T, Error>) -> bool {
    matches!(r, Err(Error::Overflow { .. }))
}

#[test]
fn padding_usize_max_is_an_overflow_error() {
    let spec = ConvSpec::new().with_padding(usize::MAX);
    assert!(is_overflow(spec.output_hw(8, 8, 3, 3)));
    let l = conv(2, 1, 3, spec);
    let input = ActShape::new(1, 8, 8);
    assert!(is_overflow(l.output_shape(input)));
    assert!(is_overflow(l.cost(input)));
    assert!(is_overflow(
        l.reference_forward(&Array4::ones((1, 1, 8, 8)))
    ));
    // One side only: 8 + usize::MAX overflows just the same.
    let top = ConvSpec::new().with_padding_sides(Padding {
        top: usize::MAX,
        ..Padding::default()
    });
    assert!(is_overflow(top.output_hw(8, 8, 3, 3)));
    // A dilation whose kernel extent overflows.
    let dil = ConvSpec::new().with_dilation(usize::MAX / 2 + 1);
    assert!(is_overflow(dil.output_hw(8, 8, 3, 3)));
}

#[test]
fn padding_quarter_usize_max_is_an_overflow_error() {
    // On a 1×1 input the padded plane is exactly isize::MAX long: it fits,
    // and the output area (4.6e18²) does not. On 8×8 the padded plane
    // fits in usize but not in the isize the kernels index it with.
    let spec = ConvSpec::new().with_padding(usize::MAX / 4);
    let side = isize::MAX as usize - 2;
    assert_eq!(spec.output_hw(1, 1, 3, 3).unwrap(), (side, side));
    assert!(is_overflow(
        conv(1, 1, 3, spec).output_shape(ActShape::new(1, 1, 1))
    ));
    assert!(is_overflow(spec.output_hw(8, 8, 3, 3)));
    let l = conv(1, 1, 3, spec);
    assert!(is_overflow(l.output_shape(ActShape::new(1, 8, 8))));
    assert!(is_overflow(l.cost(ActShape::new(1, 8, 8))));
    // Padding on top only: the output is 4.6e18 × 6, whose area overflows.
    let tall = ConvSpec::new().with_padding_sides(Padding {
        top: usize::MAX / 4,
        ..Padding::default()
    });
    let (oh, ow) = tall.output_hw(8, 8, 3, 3).unwrap();
    assert_eq!((oh, ow), (usize::MAX / 4 + 6, 6));
    assert!(is_overflow(
        conv(1, 1, 3, tall).output_shape(ActShape::new(1, 8, 8))
    ));
}

#[test]
fn padding_two_billion_is_an_overflow_error() {
    let l = conv(4, 3, 3, ConvSpec::new().with_padding(2_000_000_000));
    let input = ActShape::new(3, 8, 8);
    // 4e9 × 4e9 positions exceed isize::MAX.
    assert!(is_overflow(l.output_shape(input)));
    assert!(is_overflow(l.cost(input)));
    assert!(is_overflow(
        ActShape::new(4, 4_000_000_006, 4_000_000_006).checked_len()
    ));
    // Through a block the overflow is the cause of the block's error.
    match Block::single(l).cost(input) {
        Err(Error::Op {
            index: 0, cause, ..
        }) => {
            assert!(matches!(*cause, Error::Overflow { .. }), "{cause:?}")
        }
        other => panic!("expected Error::Op, got {other:?}"),
    }
}

#[test]
fn wide_conv_with_padding_2_pow_30_is_an_overflow_error() {
    // 4096 → 4096, 3×3, padding 2³⁰: 4096 · (2³¹ + 6)² values overflow.
    let spec = ConvSpec::new().with_padding(1 << 30);
    let l = ConvLayer::from_array(Array4::zeros((4096, 4096, 3, 3)), spec).unwrap();
    let input = ActShape::new(4096, 8, 8);
    assert!(is_overflow(l.output_shape(input)));
    assert!(is_overflow(l.cost(input)));
    // One output channel: the shape fits (4.6e18 values), the MACs
    // (36 864 per output) do not.
    let one = ConvLayer::from_array(Array4::zeros((1, 4096, 3, 3)), spec).unwrap();
    let out = one.output_shape(input).unwrap();
    assert_eq!(out, ActShape::new(1, (1 << 31) + 6, (1 << 31) + 6));
    assert!(is_overflow(one.cost(input)));
}

#[test]
fn huge_outputs_are_refused_by_the_memory_limit() {
    // Padding 100 000 on 8×8: a 200 006 × 200 006 output plane per channel.
    // The shape and cost are honest numbers; the forward must not try to
    // allocate 4000 × 160 GB.
    let l = conv(4000, 1, 3, ConvSpec::new().with_padding(100_000));
    let input = ActShape::new(1, 8, 8);
    let out = l.output_shape(input).unwrap();
    assert_eq!(out, ActShape::new(4000, 200_006, 200_006));
    let cost = l.cost(input).unwrap();
    assert_eq!(cost.macs, 9 * 4000 * 200_006u64 * 200_006);
    let x = Array4::ones((1, 1, 8, 8));
    match l.reference_forward(&x) {
        Err(Error::MemoryLimit { bytes, limit, .. }) => {
            assert_eq!(bytes, 4 * 4000 * 200_006u64 * 200_006);
            assert_eq!(limit, memory::limit());
        }
        other => panic!("expected a memory-limit error, got {other:?}"),
    }
    // The same through a block, and for a sparse convolution.
    assert!(matches!(
        Block::single(l.clone()).reference_forward(&x),
        Err(Error::MemoryLimit { .. })
    ));
    let sparse = SparseConv::from_conv(&l).unwrap();
    assert!(matches!(
        sparse.reference_forward(&x),
        Err(Error::MemoryLimit { .. })
    ));
}

#[test]
fn pass_through_ops_check_their_input_size() {
    let huge = ActShape::new(3, usize::MAX / 2, 5);
    assert!(is_overflow(Relu.output_shape(huge)));
    assert!(is_overflow(Relu.cost(huge)));
    let fc = LinearLayer::new(Array2::ones((2, 4)), None).unwrap();
    assert!(is_overflow(fc.output_shape(huge)));
    // A shape at the edge of isize still passes, and its byte count does not.
    let edge = ActShape::new(1, isize::MAX as usize, 1);
    assert_eq!(Relu.output_shape(edge).unwrap(), edge);
    assert!(is_overflow(Relu.cost(edge)));
}

#[test]
fn cost_sums_are_checked() {
    let l = conv(2, 1, 3, ConvSpec::new().with_padding(1));
    let single = l.cost(ActShape::new(1, 8, 8)).unwrap();
    let full = hasten_core::Cost {
        macs: u64::MAX,
        ..Default::default()
    };
    assert!(is_overflow(full.checked_add(single)));
    assert!(is_overflow(hasten_core::Cost::checked_sum([single, full])));
    let two = hasten_core::Cost::checked_sum([single, single]).unwrap();
    assert_eq!(two, single + single);
    let ops: Vec<Op> = vec![l.into(), Relu.into()];
    let block = Block::new(ops).unwrap();
    assert_eq!(
        block.cost(ActShape::new(1, 8, 8)).unwrap(),
        block
            .op_costs(ActShape::new(1, 8, 8))
            .unwrap()
            .into_iter()
            .sum()
    );
}

#[test]
fn an_empty_block_has_its_own_error() {
    let err = Block::new(vec![]).unwrap_err();
    assert_eq!(err, Error::EmptyBlock);
    assert_eq!(err.to_string(), "a block needs at least one op");
}

#[test]
fn block_errors_keep_their_cause() {
    use std::error::Error as _;
    let b = Block::new(vec![
        conv(8, 3, 3, ConvSpec::new()).into(),
        conv(4, 5, 1, ConvSpec::new()).into(),
    ])
    .unwrap();
    let err = b.output_shape(ActShape::new(3, 8, 8)).unwrap_err();
    let Error::Op {
        index,
        kind,
        input,
        ref cause,
    } = err
    else {
        panic!("expected Error::Op, got {err:?}");
    };
    assert_eq!((index, kind, input), (1, "conv", ActShape::new(8, 6, 6)));
    assert_eq!(
        **cause,
        Error::shape("convolution input channels", 5, 8),
        "the cause is the op's own typed error"
    );
    assert_eq!(
        err.to_string(),
        "op #1 (conv) of the block cannot take input 8×6×6"
    );
    let source = err.source().expect("the cause is the source");
    assert_eq!(source.to_string(), cause.to_string());
    assert!(!err.to_string().contains("expected"));
}

/// Found by the `plan` fuzz target: refusing groups that do not divide the
/// filters computed the input-channel count for the message with an
/// unchecked multiply (a panic in debug builds, a wrapped value in release).
#[test]
fn huge_groups_that_do_not_divide_the_filters_are_an_overflow_error() {
    let spec = ConvSpec::new().with_groups(1 << 62);
    let r = ConvLayer::from_array(Array4::from_elem((3, 4, 1, 1), 0.5), spec);
    assert!(is_overflow(r), "expected an overflow error");
    let layout = hasten_core::WeightLayout::conv([3, 4, 1, 1], spec);
    assert!(is_overflow(layout), "expected an overflow error");
}
