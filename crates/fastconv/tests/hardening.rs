//! Hostile inputs for a plan: sizes that overflow, buffers beyond the memory
//! limit, and non-finite activations on the Winograd path.

use hasten_core::ndarray::Array4;
use hasten_core::{ActShape, Block, ConvLayer, ConvSpec, Error, Operator, Padding, SeededRng};
use hasten_fastconv::{Isa, Plan, PlanOptions, Winograd};

fn conv(t: usize, c: usize, k: usize, spec: ConvSpec) -> ConvLayer {
    ConvLayer::from_array(Array4::from_elem((t, c, k, k), 0.25), spec).unwrap()
}

fn options(winograd: Winograd) -> PlanOptions {
    PlanOptions {
        winograd,
        ..PlanOptions::default()
    }
}

/// The error of a failed plan, unwrapped from the block's `Error::Op`.
fn plan_error(block: &Block, input: ActShape, options: PlanOptions) -> Error {
    match Plan::with_options(block, input, 1, options) {
        Ok(_) => panic!("expected the plan to fail"),
        Err(Error::Op { cause, .. }) => *cause,
        Err(e) => e,
    }
}

#[test]
fn overflowing_paddings_are_typed_errors() {
    for winograd in [Winograd::Always, Winograd::Off] {
        for (pad, c, t) in [
            (usize::MAX, 1, 2),
            (usize::MAX / 4, 1, 1),
            (2_000_000_000, 3, 4),
            (1 << 30, 64, 64),
        ] {
            let block = Block::single(conv(t, c, 3, ConvSpec::new().with_padding(pad)));
            let err = plan_error(&block, ActShape::new(c, 8, 8), options(winograd));
            assert!(
                matches!(err, Error::Overflow { .. }),
                "padding {pad}: {err:?}"
            );
        }
    }
}

/// Found by the `plan` fuzz target: a batch times an activation size beyond
/// the address space was an `InvalidParameter`, not the typed overflow.
#[test]
fn a_batch_times_activation_overflow_is_an_overflow_error() {
    let mut b = hasten_core::GraphBuilder::new();
    let x = b.input("x", ActShape::new(1, 1 << 31, 1 << 31));
    let y = b.op("relu", hasten_core::Relu, x);
    b.output(y);
    let graph = b.build().unwrap();
    for batch in [3, 1 << 20] {
        let err = Plan::for_graph(&graph, batch, PlanOptions::default()).unwrap_err();
        assert!(
            matches!(err, Error::Overflow { .. }),
            "batch {batch}: {err:?}"
        );
    }
}

/// The plan of a one-layer block equals its reference forward on every ISA
/// path, fused or not.
fn assert_plan_is_reference(spec: ConvSpec, w: (usize, usize, usize, usize), x: [usize; 4]) {
    let w = SeededRng::new(1).normal_array(w, 0.5);
    let block = Block::single(ConvLayer::from_array(w, spec).unwrap());
    let x: Array4<f32> = SeededRng::new(2).normal_array((x[0], x[1], x[2], x[3]), 1.0);
    let want = block.reference_forward(&x).unwrap();
    for isa in [Isa::Avx512, Isa::Avx2, Isa::Scalar] {
        if !isa.is_supported() {
            continue;
        }
        for fuse in [false, true] {
            let options = PlanOptions {
                isa,
                fuse,
                memory_limit: 1 << 22,
                ..PlanOptions::default()
            };
            let input = ActShape::new(x.dim().1, x.dim().2, x.dim().3);
            let mut plan = Plan::with_options(&block, input, x.dim().0, options).unwrap();
            let got = plan.run(&x).unwrap();
            assert_eq!(got.shape(), want.shape());
            for (a, b) in got.iter().zip(want.iter()) {
                assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                    "{isa:?} fuse {fuse}: {a} vs {b}"
                );
            }
        }
    }
}

/// Found by the `plan` fuzz target: a depthwise layer whose horizontal
/// stride (2⁴⁴) exceeds its padded width sized its column-phase buffer by
/// the stride and aborted on allocation.
#[test]
fn a_stride_wider_than_the_plane_allocates_only_the_plane() {
    let spec = ConvSpec {
        stride: (3, 1 << 44),
        padding: Padding {
            top: 3,
            bottom: 3,
            left: 2,
            right: 0,
        },
        dilation: (3, 3),
        groups: 3,
    };
    assert_plan_is_reference(spec, (9, 1, 3, 3), [3, 3, 8, 8]);
}

/// Found by the `plan` fuzz target: a depthwise layer whose horizontal
/// stride exceeds `isize::MAX` (one output column) gave wrong values on the
/// AVX-512 path — the valid-column range took the stride as a negative
/// `isize`.
#[test]
fn a_single_column_depthwise_layer_equals_the_reference() {
    let spec = ConvSpec {
        stride: (3, usize::MAX - 255),
        padding: Padding {
            top: 3,
            bottom: 0,
            left: 2,
            right: 2,
        },
        dilation: (2, 2),
        groups: 2,
    };
    assert_plan_is_reference(spec, (2, 1, 3, 3), [3, 2, 7, 7]);
}

/// Found by the `plan` fuzz target: a vertical stride of 2⁶² (one output
/// row) made the AVX-512 depthwise kernel's prefetch loop run over `R·sh`
/// rows — practically forever — instead of the image rows among them.
#[test]
fn a_single_row_depthwise_layer_finishes_and_equals_the_reference() {
    let spec = ConvSpec {
        stride: (1 << 62, 2),
        padding: Padding {
            top: 2,
            bottom: 2,
            left: 2,
            right: 1,
        },
        dilation: (3, 2),
        groups: 2,
    };
    assert_plan_is_reference(spec, (2, 1, 3, 2), [1, 2, 6, 1]);
}

#[test]
fn a_huge_stride_does_not_hide_a_huge_padded_plane() {
    // Output 3×3, but the depthwise kernel would zero-pad a 2⁴⁰ × 2⁴⁰ plane.
    let p = 1usize << 39;
    let spec = ConvSpec::new()
        .with_padding(p)
        .with_stride(p)
        .with_groups(4);
    let block = Block::single(conv(4, 1, 3, spec));
    let input = ActShape::new(4, 8, 8);
    assert_eq!(block.output_shape(input).unwrap(), ActShape::new(4, 3, 3));
    let err = plan_error(&block, input, options(Winograd::Auto));
    assert!(matches!(err, Error::Overflow { .. }), "{err:?}");
}

#[test]
fn buffers_beyond_the_memory_limit_are_refused() {
    // Padding 100 000 on 8×8: 4 × 200 006² outputs, 640 GB.
    let block = Block::single(conv(4, 1, 3, ConvSpec::new().with_padding(100_000)));
    let input = ActShape::new(1, 8, 8);
    let limit = 1 << 30;
    let opts = PlanOptions {
        memory_limit: limit,
        ..PlanOptions::default()
    };
    match Plan::with_options(&block, input, 1, opts) {
        Err(Error::MemoryLimit {
            bytes, limit: l, ..
        }) => {
            assert_eq!(l, limit);
            // The first buffer over the limit: the zero-padded 1 × 200 008²
            // input, checked before the 640 GB output is placed.
            assert_eq!(bytes, 4 * 200_008u64 * 200_008);
        }
        other => panic!("expected a memory-limit error, got {other:?}"),
    }
    // The default limit is the process-wide one.
    assert_eq!(
        PlanOptions::default().memory_limit,
        hasten_core::memory::limit()
    );
    // A small plan fits a limit of exactly its arena (one 4×8×8 output; the
    // padded 1×10×10 input is smaller); one byte less does not fit.
    let small = Block::single(conv(4, 1, 3, ConvSpec::new().with_padding(1)));
    let fits = PlanOptions {
        memory_limit: 4 * 4 * 64,
        ..PlanOptions::default()
    };
    assert!(Plan::with_options(&small, input, 1, fits).is_ok());
    let tiny = PlanOptions {
        memory_limit: 4 * 4 * 64 - 1,
        ..PlanOptions::default()
    };
    assert!(matches!(
        Plan::with_options(&small, input, 1, tiny),
        Err(Error::MemoryLimit { .. })
    ));
    // The zero-padded input of a depthwise convolution counts too: its
    // output is small, its padded plane is not.
    let dw = ConvSpec::new()
        .with_padding_sides(Padding::symmetric(20_000, 20_000))
        .with_stride(10_000)
        .with_groups(2);
    let dw = Block::single(conv(2, 1, 3, dw));
    let opts = PlanOptions {
        memory_limit: 1 << 30,
        ..PlanOptions::default()
    };
    match Plan::with_options(&dw, ActShape::new(2, 8, 8), 1, opts) {
        Err(Error::MemoryLimit { what, .. }) => assert!(what.contains("zero-padded"), "{what}"),
        other => panic!("expected a memory-limit error, got {other:?}"),
    }
}

/// A dense 3×3 layer the plan runs by Winograd, with mixed-sign filters.
fn winograd_layer(c: usize, t: usize) -> ConvLayer {
    let mut rng = SeededRng::new(5);
    ConvLayer::new(
        hasten_core::Conv4d::new(rng.normal_array((t, c, 3, 3), 1.0)).unwrap(),
        Some(rng.normal_array(t, 1.0)),
        ConvSpec::new().with_padding(1),
    )
    .unwrap()
}

/// Equal as IEEE values: same NaN-ness, same infinities, finite values
/// within `tol` relative to the output's scale.
fn assert_same_ieee(fast: &Array4<f32>, slow: &Array4<f32>, tol: f32, what: &str) {
    let scale = slow
        .iter()
        .filter(|v| v.is_finite())
        .fold(1.0f32, |m, v| m.max(v.abs()));
    for (i, (&f, &s)) in fast.iter().zip(slow.iter()).enumerate() {
        let ok = if s.is_nan() {
            f.is_nan()
        } else if s.is_infinite() {
            f == s
        } else {
            f.is_finite() && (f - s).abs() <= tol * scale
        };
        assert!(ok, "{what}: element {i}: fast {f}, reference {s}");
    }
}

#[test]
fn winograd_propagates_infinities_like_the_reference() {
    let (c, t) = (6, 5);
    let layer = winograd_layer(c, t);
    let block = Block::single(layer.clone());
    let shape = ActShape::new(c, 9, 10);
    let mut rng = SeededRng::new(8);
    let mut x: Array4<f32> = rng.normal_array((3, c, 9, 10), 1.0);
    // Sample 0: one +Inf; sample 1: one −Inf and one NaN; sample 2 finite.
    x[[0, 2, 4, 5]] = f32::INFINITY;
    x[[1, 0, 0, 0]] = f32::NEG_INFINITY;
    x[[1, 3, 8, 9]] = f32::NAN;
    let slow = layer.reference_forward(&x).unwrap();
    assert!(
        slow.iter().any(|v| v.is_infinite()),
        "the case has infinities"
    );
    assert!(slow.iter().any(|v| v.is_finite()));
    for isa in Isa::supported() {
        // Each tile's stated error bound (the Winograd module's documentation).
        for (winograd, name, tol) in [
            (Winograd::F2, "conv winograd", 1e-5),
            (Winograd::F4, "conv winograd f4", 2e-5),
        ] {
            let opts = PlanOptions {
                isa,
                ..options(winograd)
            };
            let mut plan = Plan::with_options(&block, shape, 3, opts).unwrap();
            assert_eq!(kernels(&plan), [name]);
            let fast = plan.run(&x).unwrap().to_owned();
            assert_same_ieee(&fast, &slow, tol, &format!("{isa} {winograd:?}"));
        }
    }
}

/// The kernel of each step of `plan`.
fn kernels(plan: &Plan) -> Vec<String> {
    plan.steps().into_iter().map(|s| s.kernel).collect()
}

#[test]
fn plans_say_which_kernel_runs() {
    let layer = winograd_layer(4, 4);
    let block = Block::single(layer);
    let shape = ActShape::new(4, 8, 8);
    let ways = [
        (Winograd::Always, "conv winograd f4"),
        (Winograd::F4, "conv winograd f4"),
        (Winograd::F2, "conv winograd"),
        // GEMM on the rows of a zero-padded copy: stride 1, 6-pixel rows.
        (Winograd::Off, "conv gemm (padded rows)"),
        // Auto: 4 channels are far below the 64 where Winograd pays.
        (Winograd::Auto, "conv gemm (padded rows)"),
    ];
    for (w, name) in ways {
        let plan = Plan::with_options(&block, shape, 1, options(w)).unwrap();
        assert_eq!(kernels(&plan), [name], "{w:?}");
    }
    // Auto's measured rule: F(4×4) from 64 channels and 13×13 outputs,
    // F(2×2) from 256 channels on smaller outputs, GEMM below 64 channels.
    for (c, t, hw, name) in [
        (64, 64, 13, "conv winograd f4"),
        (64, 64, 12, "conv gemm (padded rows)"),
        (256, 256, 12, "conv winograd"),
        (256, 256, 7, "conv winograd"),
        (63, 64, 13, "conv gemm (padded rows)"),
    ] {
        let block = Block::single(winograd_layer(c, t));
        let plan = Plan::with_options(&block, ActShape::new(c, hw, hw), 1, options(Winograd::Auto))
            .unwrap();
        assert_eq!(kernels(&plan), [name], "{c} channels at {hw}×{hw}");
    }
    let dw = Block::single(conv(4, 1, 3, ConvSpec::new().with_groups(4)));
    let plan = Plan::new(&dw, shape, 1).unwrap();
    assert_eq!(kernels(&plan), ["conv depthwise"]);
    // Padded rows up to 64 filters; lazy im2col beyond.
    for (t, name) in [(64, "conv gemm (padded rows)"), (65, "conv gemm")] {
        let block = Block::single(winograd_layer(4, t));
        let plan = Plan::with_options(&block, shape, 1, options(Winograd::Off)).unwrap();
        assert_eq!(kernels(&plan), [name], "{t} filters");
    }
    // Strided, 128 filters: padded rows where the wide rows waste at most
    // one column per 12 output columns (3×3/2 on 56²: 29 for 28; on 28²:
    // 15 for 14), lazy im2col beyond (on 14²: 8 for 7) and for 1×1/2.
    for (k, hw, name) in [
        (3, 56, "conv gemm (padded rows)"),
        (3, 28, "conv gemm (padded rows)"),
        (3, 14, "conv gemm"),
        (1, 56, "conv gemm"),
    ] {
        let spec = ConvSpec::new().with_stride(2).with_padding(k / 2);
        let block = Block::single(conv(128, 4, k, spec));
        let plan = Plan::with_options(&block, ActShape::new(4, hw, hw), 1, options(Winograd::Auto))
            .unwrap();
        assert_eq!(kernels(&plan), [name], "{k}×{k}/2 at {hw}×{hw}");
    }
}

#[test]
fn int8_plans_propagate_nan_activations_like_the_reference() {
    use hasten_core::ndarray::{Array1, Array2};
    use hasten_core::{Int8Conv, IntType, QuantParams, WeightLayout};
    let mut rng = SeededRng::new(4);
    let layout = WeightLayout::conv([4, 3, 3, 3], ConvSpec::new().with_padding(1)).unwrap();
    let w = Array2::from_shape_fn((4, 27), |_| (rng.below(255) as i32 - 127) as i8);
    let input = QuantParams::new(0.05, 128, IntType::U8).unwrap();
    for output in [None, Some(QuantParams::new(0.2, 0, IntType::I8).unwrap())] {
        let op = Int8Conv::new(
            layout,
            w.clone(),
            Array1::from(vec![0.01, 0.02, 0.03, 0.01]),
            input,
            None,
            output,
        )
        .unwrap();
        let block = Block::single(op.clone());
        let mut x: Array4<f32> = rng.normal_array((2, 3, 6, 7), 1.0);
        x[[0, 1, 3, 3]] = f32::NAN;
        let slow = op.reference_forward(&x).unwrap();
        let nans = slow.iter().filter(|v| v.is_nan()).count();
        // A 3×3 window around (3, 3), all 4 filters, sample 0 only.
        assert_eq!(nans, 4 * 9);
        let mut plan = Plan::new(&block, ActShape::new(3, 6, 7), 2).unwrap();
        assert_eq!(kernels(&plan), ["low-bit int8_conv"]);
        let fast = plan.run(&x).unwrap().to_owned();
        for (i, (&f, &s)) in fast.iter().zip(slow.iter()).enumerate() {
            assert!(
                f.to_bits() == s.to_bits() || (f.is_nan() && s.is_nan()),
                "element {i}: fast {f}, reference {s}"
            );
        }
    }
}
