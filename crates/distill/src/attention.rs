//! Attention transfer (Zagoruyko & Komodakis, *Paying more attention to
//! attention*, ICLR 2017) — beyond the survey, in the spirit of the FitNets
//! hints of §7, eq. (21): the student matches the teacher's *spatial
//! attention* rather than its raw features, so channel counts may differ.
//!
//! For a feature map `a` `[C, H, W]` of one sample the attention map is
//! `Q_j = Σ_c |a_{c,j}|^p` over the `H·W` pixels `j` (p ≥ 1, usually 2) and its
//! normalised form `q = Q / ‖Q‖₂`. The loss is
//!
//! `L = (1/(2N)) Σ_n ‖q^S_n − q^T_n‖₂²`
//!
//! (the paper writes `β/2 Σ ‖q^S − q^T‖_p`; its reference code uses the mean of
//! squared differences, as here up to the constant `1/(H·W)` — fold any such
//! constant into the loss weight). With `g = (q^S − q^T)/N`,
//!
//! `∂L/∂Q = (g − q (q·g)) / ‖Q‖`,  `∂L/∂a_{c,j} = ∂L/∂Q_j · p |a_{c,j}|^{p−1} sign(a_{c,j})`
//!
//! (for `p = 1` the subgradient `0` is used at `a = 0`). Because `q` is scale
//! invariant, each sample's features are divided by their largest magnitude
//! before the power, so `|a|^p` cannot overflow. A sample whose feature map is
//! identically zero has no attention direction: it is a typed error, not
//! silently replaced.

use hasten_core::{Error, Result};
use ndarray::{Array2, Array4, ArrayView3, ArrayView4, Ix4};

use crate::real::count;
use crate::{validate, LossGrad, Real};

/// Normalised attention maps `q = Q/‖Q‖₂`, `Q_j = Σ_c |a_{c,j}|^p`, of NCHW
/// features, as `[N, H·W]` (rows in row-major pixel order).
///
/// # Errors
/// Empty or non-finite features, `p` not finite and ≥ 1, a sample whose
/// features are all zero.
///
/// ```
/// use hasten_distill::attention_map;
/// use ndarray::Array4;
///
/// // One sample, one channel, pixels 3 and −4: with p = 1, Q = (3, 4), q = (0.6, 0.8).
/// let a = Array4::from_shape_vec((1, 1, 1, 2), vec![3.0_f64, -4.0]).unwrap();
/// let q = attention_map(a.view(), 1.0)?;
/// assert!((q[[0, 0]] - 0.6).abs() < 1e-15 && (q[[0, 1]] - 0.8).abs() < 1e-15);
/// assert!(attention_map(Array4::<f64>::zeros((1, 1, 1, 2)).view(), 2.0).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn attention_map<F: Real>(features: ArrayView4<F>, p: F) -> Result<Array2<F>> {
    validate::tensor("feature map", &features)?;
    check_power(p)?;
    let (n, _, h, w) = features.dim();
    let mut out = Array2::zeros((n, h * w));
    for (i, (a, mut row)) in features.outer_iter().zip(out.rows_mut()).enumerate() {
        let m = SampleMap::new(a, p, i)?;
        row.assign(&m.q);
    }
    Ok(out)
}

/// Attention-transfer loss between student `[N, Cs, H, W]` and teacher
/// `[N, Ct, H, W]` feature maps, and its gradient w.r.t. the student features.
///
/// # Errors
/// Batch or spatial sizes differ, and those of [`attention_map`].
///
/// ```
/// use hasten_distill::attention_transfer_loss;
/// use ndarray::Array4;
///
/// // Student and teacher with the same attention (one channel scaled): loss 0.
/// let t = Array4::from_shape_vec((1, 1, 1, 2), vec![3.0_f64, 4.0]).unwrap();
/// let s = t.mapv(|v| 2.0 * v);
/// assert!(attention_transfer_loss(s.view(), t.view(), 2.0)?.value.abs() < 1e-15);
/// let wide = Array4::from_elem((1, 1, 1, 3), 1.0_f64);
/// assert!(attention_transfer_loss(s.view(), wide.view(), 2.0).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn attention_transfer_loss<F: Real>(
    student: ArrayView4<F>,
    teacher: ArrayView4<F>,
    p: F,
) -> Result<LossGrad<F, Ix4>> {
    validate::tensor("student feature map", &student)?;
    validate::tensor("teacher feature map", &teacher)?;
    check_power(p)?;
    let (s, t) = (student.shape(), teacher.shape());
    if (s[0], s[2], s[3]) != (t[0], t[2], t[3]) {
        return Err(Error::shape(
            "teacher feature map [N, _, H, W]",
            format!("[{}, _, {}, {}]", s[0], s[2], s[3]),
            format!("{t:?}"),
        ));
    }
    let n = count::<F>(s[0]);
    let half = F::one() / (F::one() + F::one());
    let mut value = F::zero();
    let mut grad = Array4::zeros(student.raw_dim());
    for (i, ((a_s, a_t), mut g_a)) in student
        .outer_iter()
        .zip(teacher.outer_iter())
        .zip(grad.outer_iter_mut())
        .enumerate()
    {
        let ms = SampleMap::new(a_s, p, i)?;
        let mt = SampleMap::new(a_t, p, i)?;
        let diff = &ms.q - &mt.q;
        value = value + diff.iter().fold(F::zero(), |acc, &d| acc + d * d) * half / n;
        let g = diff.mapv(|d| d / n);
        let qg = ms.q.dot(&g);
        // ∂L/∂Q' for the rescaled map Q' = Q/amax^p (‖Q'‖ = norm).
        let g_q = (g - &ms.q * qg).mapv(|v| v / ms.norm);
        let h_w = a_s.shape()[2];
        for (mut g_c, a_c) in g_a.outer_iter_mut().zip(a_s.outer_iter()) {
            for ((y, x), g_v) in g_c.indexed_iter_mut() {
                let a = a_c[[y, x]];
                let r = a.abs() / ms.amax;
                let dpow = if r > F::zero() {
                    p * r.powf(p - F::one()) * a.signum()
                } else {
                    F::zero()
                };
                *g_v = g_q[y * h_w + x] * dpow / ms.amax;
            }
        }
    }
    validate::finite_output("attention_transfer_loss", LossGrad::new(value, grad))
}

/// One sample's attention map, computed on features scaled by `1/amax`.
struct SampleMap<F: Real> {
    /// `q = Q/‖Q‖`, `[H·W]`.
    q: ndarray::Array1<F>,
    /// `‖Q'‖` of the rescaled map `Q' = Q/amax^p`.
    norm: F,
    /// `max |a|` of the sample.
    amax: F,
}

impl<F: Real> SampleMap<F> {
    fn new(a: ArrayView3<F>, p: F, sample: usize) -> Result<Self> {
        let amax = a.iter().fold(F::zero(), |m, &v| m.max(v.abs()));
        if amax == F::zero() {
            return Err(Error::numerical(
                "attention map",
                format!("the feature map of sample {sample} is identically zero, so its attention map cannot be normalised"),
            ));
        }
        let (_, h, w) = a.dim();
        // Accumulated pixel by pixel: works for any memory layout of `a`.
        let mut q_raw = ndarray::Array1::<F>::zeros(h * w);
        for a_c in a.outer_iter() {
            for ((y, x), &v) in a_c.indexed_iter() {
                q_raw[y * w + x] = q_raw[y * w + x] + (v.abs() / amax).powf(p);
            }
        }
        let norm = q_raw.iter().fold(F::zero(), |s, &v| s + v * v).sqrt();
        Ok(Self {
            q: q_raw.mapv(|v| v / norm),
            norm,
            amax,
        })
    }
}

fn check_power<F: Real>(p: F) -> Result<()> {
    if !(p.is_finite() && p >= F::one()) {
        return Err(Error::param("attention power p", p, "a finite value >= 1"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grad_check::assert_grad;
    use hasten_core::SeededRng;
    use ndarray::{concatenate, Axis};
    use proptest::prelude::*;

    #[test]
    fn gradient_matches_finite_differences() {
        let mut rng = SeededRng::new(50);
        for p in [2.0, 3.0, 1.5] {
            let s = rng.normal_array_f64((2, 3, 3, 4), 1.0);
            let t = rng.normal_array_f64((2, 5, 3, 4), 1.0);
            let out = attention_transfer_loss(s.view(), t.view(), p).unwrap();
            assert_grad(&format!("attention p={p}"), &s, &out.grad, |x| {
                attention_transfer_loss(x.view(), t.view(), p)
                    .unwrap()
                    .value
            });
        }
    }

    #[test]
    fn map_matches_direct_formula() {
        let mut rng = SeededRng::new(51);
        let a = rng.normal_array_f64((2, 3, 2, 2), 1.0);
        let q = attention_map(a.view(), 2.0).unwrap();
        for n in 0..2 {
            let raw: Vec<f64> = (0..4)
                .map(|j| (0..3).map(|c| a[[n, c, j / 2, j % 2]].powi(2)).sum())
                .collect();
            let norm = raw.iter().map(|v| v * v).sum::<f64>().sqrt();
            for j in 0..4 {
                assert!((q[[n, j]] - raw[j] / norm).abs() < 1e-15);
            }
        }
    }

    #[test]
    fn scaled_or_duplicated_teacher_is_matched_exactly() {
        let mut rng = SeededRng::new(52);
        let t = rng.normal_array_f64((3, 4, 5, 5), 1.0);
        // Student = teacher's channels twice, scaled: Q_S = 2·9·Q_T for p = 2.
        let s = concatenate(Axis(1), &[t.view(), t.view()]).unwrap() * 3.0;
        let out = attention_transfer_loss(s.view(), t.view(), 2.0).unwrap();
        assert!(out.value < 1e-30);
        assert!(out.grad.iter().all(|g| g.abs() < 1e-15));
    }

    #[test]
    fn extreme_features_stay_finite() {
        let mut rng = SeededRng::new(53);
        let s = rng.normal_array((2, 3, 4, 4), 1.0).mapv(|v: f32| v * 1e30);
        let t = rng.normal_array((2, 2, 4, 4), 1.0).mapv(|v: f32| v * 1e-30);
        for p in [1.0f32, 2.0, 4.0] {
            let out = attention_transfer_loss(s.view(), t.view(), p).unwrap();
            assert!(out.value.is_finite() && out.value > 0.0);
            assert!(out.grad.iter().all(|g| g.is_finite()));
        }
    }

    #[test]
    fn typed_errors() {
        let a = Array4::<f64>::ones((2, 3, 4, 4));
        assert!(matches!(
            attention_transfer_loss(a.view(), Array4::ones((2, 3, 4, 3)).view(), 2.0),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            attention_transfer_loss(a.view(), Array4::ones((1, 3, 4, 4)).view(), 2.0),
            Err(Error::ShapeMismatch { .. })
        ));
        for p in [0.5, 0.0, -2.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                attention_map(a.view(), p),
                Err(Error::InvalidParameter { .. })
            ));
        }
        let mut z = a.clone();
        z.index_axis_mut(Axis(0), 1).fill(0.0);
        assert!(matches!(
            attention_transfer_loss(z.view(), a.view(), 2.0),
            Err(Error::Numerical { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn never_panics(
            n in 0usize..3, cs in 0usize..3, ct in 0usize..3, h in 0usize..3, ht in 0usize..3,
            vals in proptest::collection::vec(prop_oneof![
                6 => -1e30f32..1e30, 2 => Just(0.0f32), 1 => Just(f32::NAN)], 16),
            p in -1.0f32..6.0,
        ) {
            let v = |i: usize| vals[i % 16];
            let s = Array4::from_shape_fn((n, cs, h, 2), |(a, b, c, d)| v(a + 2 * b + 3 * c + d));
            let t = Array4::from_shape_fn((n, ct, ht, 2), |(a, b, c, d)| v(5 + a + b + 7 * c + d));
            let nonzero = |x: &Array4<f32>| x.outer_iter().all(|m| m.iter().any(|&v| v != 0.0));
            let valid = n > 0 && cs > 0 && ct > 0 && h > 0 && h == ht && p >= 1.0
                && s.iter().chain(t.iter()).all(|x| x.is_finite())
                && nonzero(&s) && nonzero(&t);
            let res = attention_transfer_loss(s.view(), t.view(), p);
            prop_assert_eq!(res.is_ok(), valid);
            if let Ok(out) = res {
                prop_assert!(out.grad.iter().all(|g| g.is_finite()));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn attention_map_never_panics_and_is_unit_norm(
            n in 0usize..3, c in 0usize..3, h in 0usize..3,
            vals in proptest::collection::vec(prop_oneof![
                6 => -1e30f64..1e30, 2 => Just(0.0f64), 1 => Just(f64::NEG_INFINITY)], 16),
            p in 0.0f64..5.0,
        ) {
            let a = Array4::from_shape_fn((n, c, h, 2), |(i, j, k, l)| vals[(i + 3 * j + 5 * k + l) % 16]);
            let valid = n > 0 && c > 0 && h > 0 && p >= 1.0
                && a.iter().all(|v| v.is_finite())
                && a.outer_iter().all(|m| m.iter().any(|&v| v != 0.0));
            match attention_map(a.view(), p) {
                Ok(q) => {
                    prop_assert!(valid);
                    for row in q.rows() {
                        prop_assert!((row.dot(&row) - 1.0).abs() < 1e-12);
                    }
                }
                Err(_) => prop_assert!(!valid),
            }
        }
    }
}
