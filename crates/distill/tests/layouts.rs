//! Every public loss gives the same result on non-contiguous (transposed,
//! permuted) views as on standard-layout arrays, and the f32 instantiation
//! agrees with f64.

use hasten_core::SeededRng;
use hasten_distill::*;
use ndarray::{Array2, Array4, ArrayView2};

fn close2(a: &Array2<f64>, b: &Array2<f64>) -> bool {
    a.dim() == b.dim() && a.iter().zip(b.iter()).all(|(x, y)| (x - y).abs() < 1e-14)
}

fn close4(a: &Array4<f64>, b: &Array4<f64>) -> bool {
    a.dim() == b.dim() && a.iter().zip(b.iter()).all(|(x, y)| (x - y).abs() < 1e-14)
}

/// The same values as `a`, stored column-major (a transposed view).
fn fortran(a: &Array2<f64>) -> Array2<f64> {
    a.t().as_standard_layout().into_owned().reversed_axes()
}

/// The same values as `a` `[N, C, H, W]`, stored as NHWC.
fn nhwc(a: &Array4<f64>) -> Array4<f64> {
    a.view()
        .permuted_axes([0, 2, 3, 1])
        .as_standard_layout()
        .into_owned()
        .permuted_axes([0, 3, 1, 2])
}

#[test]
fn logit_losses_ignore_memory_layout() {
    let mut rng = SeededRng::new(70);
    let zs = rng.normal_array_f64((4, 6), 2.0);
    let zt = rng.normal_array_f64((4, 6), 2.0);
    let (fs, ft) = (fortran(&zs), fortran(&zt));
    assert!(!fs.is_standard_layout());
    let cfg = DistillationConfig::new(3.0, 0.5).unwrap();
    let y = [0, 5, 2, 3];
    let a = distillation_loss(zs.view(), zt.view(), Some(&y), &cfg).unwrap();
    let b = distillation_loss(fs.view(), ft.view(), Some(&y), &cfg).unwrap();
    assert!((a.loss.value - b.loss.value).abs() < 1e-14);
    assert!(close2(&a.loss.grad, &b.loss.grad));
    let teachers: Vec<ArrayView2<f64>> = vec![zt.view(), zs.view()];
    let teachers_f: Vec<ArrayView2<f64>> = vec![ft.view(), fs.view()];
    let a = ensemble_distillation_loss(zs.view(), &teachers, None, &cfg).unwrap();
    let b = ensemble_distillation_loss(fs.view(), &teachers_f, None, &cfg).unwrap();
    assert!(close2(&a.loss.grad, &b.loss.grad));
    let a = logit_matching_loss(zs.view(), zt.view()).unwrap();
    let b = logit_matching_loss(fs.view(), ft.view()).unwrap();
    assert!(close2(&a.grad, &b.grad));
    let a = rkd_loss(zs.view(), zt.view(), &RkdConfig::paper()).unwrap();
    let b = rkd_loss(fs.view(), ft.view(), &RkdConfig::paper()).unwrap();
    assert!((a.value - b.value).abs() < 1e-12);
    assert!(close2(&a.grad, &b.grad));
}

#[test]
fn feature_losses_ignore_memory_layout() {
    let mut rng = SeededRng::new(71);
    let us = rng.normal_array_f64((2, 3, 4, 5), 1.0);
    let ut = rng.normal_array_f64((2, 6, 4, 5), 1.0);
    let (ns, nt) = (nhwc(&us), nhwc(&ut));
    assert!(!ns.is_standard_layout());
    let r = HintRegressor::fit_conv(us.view(), ut.view()).unwrap();
    let r_n = HintRegressor::fit_conv(ns.view(), nt.view()).unwrap();
    assert!(r
        .weight()
        .iter()
        .zip(r_n.weight().iter())
        .all(|(a, b)| (a - b).abs() < 1e-12));
    let a = hint_loss_conv(us.view(), ut.view(), &r).unwrap();
    let b = hint_loss_conv(ns.view(), nt.view(), &r).unwrap();
    assert!(close4(&a.student.grad, &b.student.grad));
    assert!(close2(&a.weight, &b.weight));
    let a = attention_transfer_loss(us.view(), ut.view(), 2.0).unwrap();
    let b = attention_transfer_loss(ns.view(), nt.view(), 2.0).unwrap();
    assert!((a.value - b.value).abs() < 1e-15);
    assert!(close4(&a.grad, &b.grad));
}

#[test]
fn f32_agrees_with_f64() {
    let mut rng = SeededRng::new(72);
    let zs = rng.normal_array_f64((5, 7), 2.0);
    let zt = rng.normal_array_f64((5, 7), 2.0);
    let (s32, t32) = (zs.mapv(|v| v as f32), zt.mapv(|v| v as f32));
    let cfg64 = DistillationConfig::new(4.0, 1.0).unwrap();
    let cfg32 = DistillationConfig::new(4.0f32, 1.0).unwrap();
    let y = [1, 2, 3, 4, 0];
    let a = distillation_loss(zs.view(), zt.view(), Some(&y), &cfg64).unwrap();
    let b = distillation_loss(s32.view(), t32.view(), Some(&y), &cfg32).unwrap();
    // f32 rounding of logits (~6e-8 relative) and of the sums: 1e-5 is ample.
    assert!((a.loss.value - f64::from(b.loss.value)).abs() < 1e-5 * a.loss.value.abs());
    assert!(a
        .loss
        .grad
        .iter()
        .zip(b.loss.grad.iter())
        .all(|(x, y)| (x - f64::from(*y)).abs() < 1e-6));
    let a = rkd_loss(zs.view(), zt.view(), &RkdConfig::paper()).unwrap();
    let b = rkd_loss(s32.view(), t32.view(), &RkdConfig::paper()).unwrap();
    assert!((a.value - f64::from(b.value)).abs() < 1e-4 * a.value.abs());
}
