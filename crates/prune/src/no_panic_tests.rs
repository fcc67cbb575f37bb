//! Property tests: random (also invalid) inputs to the public functions give
//! `Ok` or a typed error, never a panic.

use hasten_core::{
    ActShape, BatchNorm, ConvLayer, ConvSpec, Layer, LinearLayer, SeededRng, Transform,
};
use ndarray::{Array1, Array2, Array4};
use proptest::prelude::*;

use crate::criteria::*;
use crate::regularizer::{bn_slimming, group_lasso, l1};
use crate::removal::*;
use crate::slice::Slicing;

fn conv(rng: &mut SeededRng, t: usize, c: usize, k: usize, pad: usize) -> ConvLayer {
    ConvLayer::from_array(
        rng.normal_array((t, c, k, k), 1.0),
        ConvSpec::new().with_padding(pad),
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn single_layer_transforms(t in 1usize..5, c in 1usize..5, k in 1usize..4, pad in 0usize..3, h in 1usize..6,
                               f in -0.5f64..1.5, groups in 0usize..5, r0 in 0usize..4, r1 in 0usize..5) {
        let mut rng = SeededRng::new(1);
        let layer = conv(&mut rng, t, c, k, pad);
        let input = ActShape::new(c, h, h);
        let fits = layer.output_shape(input).is_ok();
        let valid_f = (0.0..1.0).contains(&f);
        let l = Layer::Conv(layer.clone());
        prop_assert_eq!(GroupwisePrune { fraction: f }.apply(&l, input).is_ok(), valid_f && fits);
        prop_assert_eq!(MagnitudeSparse { fraction: f }.apply(&l, input).is_ok(), valid_f && fits);
        let g = ConnectionGroups { groups }.apply(&l, input);
        prop_assert_eq!(g.is_ok(), groups > 0 && t % groups == 0 && c % groups == 0 && fits);
        let _ = KernelTrim { size: (r0, r1) }.apply(&l, input);
        let _ = trim_kernel(&layer, r0..r1, 0..k);
        let _ = connection_to_grouped(&layer, groups);
        let _ = crate::perforation::Perforation { mask: crate::perforation::MaskKind::Grid((groups, 1)) }.apply(&l, input);
        for s in Slicing::ALL {
            let _ = group_lasso(layer.weight(), s, f);
            prop_assert_eq!(magnitude(layer.weight(), s, Norm::L1).len(), s.count(layer.weight().dims()));
        }
        prop_assert_eq!(l1(layer.weight(), f).is_ok(), f >= 0.0);
    }

    #[test]
    fn data_criteria_with_mismatched_shapes(n in 0usize..3, c in 0usize..4, h in 0usize..3, c2 in 0usize..4, keep in 0usize..6) {
        let mut rng = SeededRng::new(2);
        let a = rng.normal_array((n, c, h, h), 1.0);
        let g = rng.normal_array((n, c2, h, h), 1.0);
        let nonempty = n * c * h > 0;
        prop_assert_eq!(taylor(&a, &g).is_ok(), nonempty && c == c2);
        prop_assert_eq!(activation_energy(&a).is_ok(), nonempty);
        prop_assert_eq!(apoz_scores(&a).is_ok(), nonempty);
        let contrib = Array2::<f64>::ones((n, c));
        prop_assert_eq!(thinet_select(&contrib, keep).is_ok(), n * c > 0 && keep >= 1 && keep <= c);
        let consumer = Consumer::Linear(LinearLayer::new(Array2::ones((2, 4)), None).unwrap());
        let _ = thinet_contributions(&consumer, &a, keep, &mut rng);
        let w = hasten_core::Conv4d::new(Array4::ones((2, 2, 1, 1))).unwrap();
        prop_assert_eq!(obd(&w, &Array4::ones((2, c, 1, 1)), Slicing::Filter).is_ok(), c == 2);
    }

    #[test]
    fn chain_removal_with_random_shapes(t in 1usize..5, c_next in 1usize..5, bn_len in 1usize..5, keep in proptest::collection::vec(0usize..6, 0..5), lam in -1.0f64..1.0) {
        let mut rng = SeededRng::new(3);
        let p = conv(&mut rng, t, 2, 3, 1);
        let consumer = Consumer::Conv(conv(&mut rng, 3, c_next, 1, 0));
        let bn = BatchNorm::new(Array1::ones(bn_len), Array1::zeros(bn_len), Array1::zeros(bn_len), Array1::ones(bn_len), 1e-5).unwrap();
        let valid_keep = !keep.is_empty() && keep.iter().all(|&k| k < t) && keep.windows(2).all(|w| w[0] < w[1]);
        let r = prune_filters(&p, Some(&bn), &consumer, &keep);
        prop_assert_eq!(r.is_ok(), valid_keep && bn_len == t && c_next == t);
        let _ = zero_filters(&p, Some(&bn), &keep);
        prop_assert_eq!(bn_slimming(&bn, lam).is_ok(), lam >= 0.0);
    }
}
