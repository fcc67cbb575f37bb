//! Random — often invalid — shapes, specs and values fed to the public
//! constructors and the reference forward: every call returns `Ok` or a typed
//! `Err`, never panics, and `Ok` results have the shape the cost model predicts.

use hasten_core::ndarray::{Array1, Array2, Array4};
use hasten_core::{
    ActShape, BatchNorm, Block, ChannelShuffle, Conv4d, ConvLayer, ConvSpec, Error, LinearLayer,
    Operator, Padding, Shift,
};
use proptest::prelude::*;

fn spec_strategy() -> impl Strategy<Value = ConvSpec> {
    (
        0usize..4,
        0usize..4,
        0usize..3,
        0usize..3,
        0usize..4,
        0usize..3,
        0usize..5,
    )
        .prop_map(|(sh, sw, pt, pl, dh, dw, g)| ConvSpec {
            stride: (sh, sw),
            padding: Padding {
                top: pt,
                bottom: pl,
                left: pl,
                right: pt,
            },
            dilation: (dh, dw),
            groups: g,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn conv_construction_and_forward_never_panic(
        t in 0usize..5, c in 0usize..4, kh in 0usize..4, kw in 0usize..4,
        spec in spec_strategy(),
        n in 0usize..3, ci in 0usize..7, h in 0usize..6, w in 0usize..6,
        poison in proptest::option::of(0usize..64),
    ) {
        let mut weight = Array4::from_shape_fn((t, c, kh, kw), |(a, b, i, j)| (a + 2 * b + i + j) as f32 * 0.1);
        if let Some(p) = poison {
            if let Some(v) = weight.iter_mut().nth(p) { *v = f32::NAN; }
        }
        let layer = Conv4d::new(weight).and_then(|k| ConvLayer::new(k, None, spec));
        if let Ok(layer) = layer {
            let x = Array4::from_elem((n, ci, h, w), 1.0f32);
            match layer.reference_forward(&x) {
                Ok(y) => {
                    let out = layer.output_shape(ActShape::new(ci, h, w)).unwrap();
                    prop_assert_eq!(y.shape(), &out.batched(n)[..]);
                    prop_assert!(layer.cost(ActShape::new(ci, h, w)).is_ok());
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        } else if let Some(p) = poison {
            if p < t * c * kh * kw {
                let typed = matches!(layer, Err(Error::NonFinite { .. }) | Err(Error::EmptyDimension { .. }));
                prop_assert!(typed);
            }
        }
    }

    #[test]
    fn linear_and_small_ops_never_panic(
        o in 0usize..4, i in 0usize..6, bias_len in 0usize..5,
        n in 0usize..3, c in 0usize..7, h in 0usize..3, w in 0usize..3,
        groups in 0usize..4, shifts in 0usize..7,
    ) {
        let x = Array4::from_elem((n, c, h, w), 0.5f32);
        let bias = (bias_len > 0).then(|| Array1::zeros(bias_len - 1));
        if let Ok(l) = LinearLayer::new(Array2::ones((o, i)), bias) {
            let _ = l.reference_forward(&x);
        }
        if let Ok(s) = ChannelShuffle::new(groups) {
            let _ = s.reference_forward(&x);
        }
        if let Ok(s) = Shift::new(vec![(1, -1); shifts]) {
            let _ = s.reference_forward(&x);
        }
        let ones = Array1::<f32>::ones(shifts);
        if let Ok(bn) = BatchNorm::new(ones.clone(), ones.clone(), ones.clone(), ones, 1e-5) {
            let _ = bn.reference_forward(&x);
            let _ = Block::new(vec![bn.into()]).and_then(|b| b.reference_forward(&x));
        }
    }

    #[test]
    fn slice_constructors_check_lengths(len in 0usize..40, o in 0usize..4, i in 0usize..4) {
        let values = vec![0.25f32; len];
        let conv = Conv4d::from_slice([o, i, 1, 1], &values);
        prop_assert_eq!(conv.is_ok(), len == o * i && len > 0);
        let lin = LinearLayer::from_slice(o, i, &values, None);
        prop_assert_eq!(lin.is_ok(), len == o * i && len > 0);
    }
}

#[test]
fn errors_say_what_was_given_and_expected() {
    let err = ConvLayer::from_array(Array4::ones((6, 2, 3, 3)), ConvSpec::new().with_groups(4))
        .unwrap_err();
    assert!(err.to_string().contains("groups = 4"), "{err}");
    let layer = ConvLayer::from_array(Array4::ones((4, 3, 5, 5)), ConvSpec::new()).unwrap();
    let err = layer.output_shape(ActShape::new(3, 4, 4)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::KernelLargerThanInput {
                kernel: (5, 5),
                padded_input: (4, 4)
            }
        ),
        "{err}"
    );
    let err = layer.output_shape(ActShape::new(2, 8, 8)).unwrap_err();
    assert!(err.to_string().contains("expected 3, got 2"), "{err}");
    let err = ConvLayer::from_array(Array4::ones((4, 3, 1, 1)), ConvSpec::new().with_stride(0))
        .unwrap_err();
    assert!(err.to_string().contains("stride"), "{err}");
}
