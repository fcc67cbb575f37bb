//! Property tests: random (also invalid) inputs to the raw algorithms never
//! panic, and invalid ones are rejected with a typed error.

use hasten_core::ndarray::{Array1, Array2, Array3, Array4, ArrayD, IxDyn};
use hasten_core::{ConvLayer, ConvSpec, SeededRng};
use proptest::prelude::*;

use crate::asymmetric::{layer_responses, sample_patches};
use crate::clustering::fit_monochromatic;
use crate::cp::{cp_deflation, cp_lm, cp_power, CpOptions, CpTensor, LmOptions, PowerOptions};
use crate::evbmf::evbmf;
use crate::kmeans::kmeans;
use crate::separable::{fit_separable, SeparableInit};
use crate::svd::low_rank;
use crate::tensor::{fold, khatri_rao, mode_product, unfold, Mttkrp};
use crate::tt::{TtConv, TtMatrix, TtTensor};
use crate::tucker::{partial_tucker, tucker2, TuckerOptions};
use crate::RankSpec;

fn poison<D: hasten_core::ndarray::Dimension>(
    a: &mut hasten_core::ndarray::Array<f64, D>,
    on: bool,
) {
    if on {
        if let Some(v) = a.iter_mut().next() {
            *v = f64::NAN;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn matrix_algorithms(rows in 0usize..6, cols in 0usize..6, rank in 0usize..7, nan in any::<bool>(), k in 0usize..7, balanced in any::<bool>()) {
        let mut m = SeededRng::new(1).normal_array_f64((rows, cols), 1.0);
        poison(&mut m, nan);
        let bad = rows == 0 || cols == 0 || nan;
        let r = evbmf(m.view());
        prop_assert_eq!(r.is_ok(), !bad);
        let r = low_rank(m.view(), rank);
        prop_assert_eq!(r.is_ok(), !bad && rank >= 1 && rank <= rows.min(cols));
        let r = kmeans(&m, k, balanced, 0, 5);
        prop_assert_eq!(r.is_ok(), !bad && k >= 1 && k <= rows && (!balanced || rows % k == 0));
    }

    #[test]
    fn nway_helpers(dims in proptest::collection::vec(0usize..4, 0..5), mode in 0usize..5, rows in 0usize..4, r in 0usize..4) {
        let t = SeededRng::new(2).normal_array_f64(IxDyn(&dims), 1.0);
        let u = unfold(&t, mode);
        prop_assert_eq!(u.is_ok(), mode < dims.len());
        if let Ok(u) = u {
            prop_assert_eq!(fold(&u, mode, &dims).unwrap(), t.clone());
        }
        let m = Array2::<f64>::ones((rows, dims.get(mode).copied().unwrap_or(1)));
        let _ = mode_product(&t, m.view(), mode);
        let mats: Vec<Array2<f64>> = dims.iter().map(|&d| Array2::ones((d, r))).collect();
        let views: Vec<_> = mats.iter().map(|a| a.view()).collect();
        let _ = khatri_rao(&views);
        if let Ok(plan) = Mttkrp::new(&t, r.max(1)) {
            let _ = plan.compute(&mats, mode);
            let wrong: Vec<Array2<f64>> = dims.iter().map(|&d| Array2::ones((d + 1, r))).collect();
            prop_assert!(plan.compute(&wrong, mode).is_err());
            let _ = plan.finish(&Array2::ones((rows, r)), &mats, mode);
        }
    }

    #[test]
    fn cp_alternatives(dims in proptest::collection::vec(1usize..4, 2..4), rank in 0usize..5, restarts in 0usize..3,
                       extra in 0usize..2, nan in any::<bool>()) {
        let x = SeededRng::new(3).normal_array_f64(IxDyn(&dims), 1.0);
        let max = crate::cp::max_cp_rank(&dims);
        let ok = rank >= 1 && rank <= max;
        prop_assert_eq!(cp_deflation(&x, rank, &CpOptions::default().with_max_iter(3)).is_ok(), ok);
        let p = PowerOptions { restarts, iterations: 2, polish: 2, seed: 0 };
        prop_assert_eq!(cp_power(&x, rank, &p).is_ok(), ok && restarts >= 1);
        let mut rng = SeededRng::new(4);
        let mut start = CpTensor {
            weights: Array1::ones(rank.max(1)),
            factors: dims.iter().map(|&d| rng.normal_array_f64((d, rank.max(1) + extra), 1.0)).collect(),
        };
        poison(&mut start.factors[0], nan);
        let r = cp_lm(&x, &start, &LmOptions { max_iter: 2, ..LmOptions::default() });
        prop_assert_eq!(r.is_ok(), extra == 0 && !nan && rank.max(1) <= max);
        prop_assert_eq!(start.normalized().is_ok(), extra == 0 && !nan);
    }

    #[test]
    fn tucker_and_separable(n in 1usize..5, c in 1usize..5, kh in 1usize..4, kw in 1usize..4,
                            ro in 0usize..6, ri in 0usize..6, iters in 0usize..3, nan in any::<bool>()) {
        let mut k: Array4<f64> = SeededRng::new(5).normal_array_f64((n, c, kh, kw), 1.0);
        poison(&mut k, nan);
        let opts = TuckerOptions { max_iter: iters, tol: 0.0 };
        prop_assert_eq!(tucker2(&k, ro, ri, &opts).is_ok(), !nan && ro >= 1 && ro <= n && ri >= 1 && ri <= c);
        let r = partial_tucker(&k.clone().into_dyn(), &[0, 3], &[ro, ri], &opts);
        prop_assert_eq!(r.is_ok(), !nan && ro >= 1 && ro <= n && ri >= 1 && ri <= kw);
        let r = fit_separable(&k, ro, SeparableInit::Svd, 2);
        prop_assert_eq!(r.is_ok(), !nan && (kh > 1 || kw > 1) && ro >= 1 && ro <= (c * kh).min(n * kw));
        let r = fit_monochromatic(&k, ri, 0);
        prop_assert_eq!(r.is_ok(), !nan && ri >= 1 && ri <= n);
    }

    #[test]
    fn tt_formats(ranks in proptest::collection::vec(1usize..3, 3), first in 1usize..3, out in 1usize..4, inp in 1usize..4, r in 0usize..4) {
        // A possibly inconsistent train for a 2×1×1×2 "kernel" (C, kh, kw, N).
        let shape = [2usize, 1, 1, 2];
        let mut left = first;
        let mut cores = Vec::new();
        for (k, &d) in shape.iter().enumerate() {
            let right = if k == 3 { 1 } else { ranks[k] };
            cores.push(Array3::<f64>::ones((left, d, right)));
            left = right;
        }
        let tt = TtTensor { cores };
        let conv = ConvLayer::from_array(Array4::ones((2, 2, 1, 1)), ConvSpec::new()).unwrap();
        prop_assert_eq!(TtConv::block(&conv, &tt).is_ok(), first == 1);
        prop_assert_eq!(tt.to_tensor().is_ok(), first == 1);
        let w = Array2::<f64>::ones((out * 2, inp * 3));
        let t = TtMatrix::new(vec![out, 2], vec![inp, 3], RankSpec::Fixed(r));
        let _ = t.decompose(&w, crate::tt::TtRank::Max(r.max(1)));
        let wrong = TtMatrix::new(vec![out + 1, 2], vec![inp, 3], RankSpec::Fixed(1));
        prop_assert!(wrong.decompose(&w, crate::tt::TtRank::Max(1)).is_err());
    }

    #[test]
    fn activation_sampling(c in 1usize..4, count in 0usize..5, h in 1usize..5, cols in 8usize..11) {
        let conv = ConvLayer::from_array(Array4::ones((2, 2, 3, 3)), ConvSpec::new().with_padding(1)).unwrap();
        let x = Array4::<f32>::ones((1, c, h, h));
        prop_assert_eq!(sample_patches(&conv, &x, count, 0).is_ok(), c == 2 && count >= 1);
        let p = Array2::<f32>::ones((3, cols * 2));
        prop_assert_eq!(layer_responses(&conv, p.view()).is_ok(), cols == 9);
        let _ = ArrayD::<f64>::zeros(IxDyn(&[1]));
    }
}
