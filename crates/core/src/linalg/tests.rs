//! The facade's contract, checked identically on whichever backend is built.
//! `cargo test -p hasten-core` and `cargo test -p hasten-core --features lapack`
//! run the same assertions, so both backends agree within these tolerances.

use super::*;
use crate::rng::SeededRng;
use ndarray::Array2;

fn random(m: usize, n: usize, seed: u64) -> Array2<f64> {
    SeededRng::new(seed).normal_array_f64((m, n), 1.0)
}

fn max_abs(a: &Array2<f64>) -> f64 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

fn assert_orthonormal_columns(q: &Array2<f64>) {
    let g = q.t().dot(q);
    let err = max_abs(&(&g - &Array2::<f64>::eye(g.nrows())));
    assert!(err < 1e-12, "QᵀQ − I = {err}");
}

#[test]
fn svd_reconstructs_tall_and_wide() {
    for (m, n) in [(7, 4), (4, 7), (5, 5), (1, 3)] {
        let a = random(m, n, 1 + m as u64 * 10 + n as u64);
        let f = thin_svd(a.view()).unwrap();
        assert_eq!(f.s.len(), m.min(n));
        assert!(f.s.windows(2).into_iter().all(|w| w[0] >= w[1]));
        assert_orthonormal_columns(&f.u);
        assert_orthonormal_columns(&f.vt.t().to_owned());
        assert!(max_abs(&(&f.reconstruct(m.min(n)) - &a)) < 1e-12);
    }
}

#[test]
fn svd_singular_values_match_closed_form() {
    // diag(3, -2, 1) padded: singular values 3, 2, 1.
    let mut a = Array2::zeros((4, 3));
    a[[0, 0]] = 3.0;
    a[[1, 1]] = -2.0;
    a[[2, 2]] = 1.0;
    let s = thin_svd(a.view()).unwrap().s;
    for (got, want) in s.iter().zip([3.0, 2.0, 1.0]) {
        assert!((got - want).abs() < 1e-14);
    }
}

#[test]
fn sym_eig_diagonalises() {
    let b = random(6, 6, 5);
    let a = &b + &b.t();
    let (w, v) = sym_eig(a.view()).unwrap();
    assert!(w.windows(2).into_iter().all(|p| p[0] <= p[1]));
    assert_orthonormal_columns(&v);
    let recon = v.dot(&Array2::from_diag(&w)).dot(&v.t());
    assert!(max_abs(&(&recon - &a)) < 1e-12);
}

#[test]
fn qr_factorises() {
    for (m, n) in [(8, 3), (3, 8)] {
        let a = random(m, n, 9);
        let (q, r) = qr(a.view()).unwrap();
        assert_orthonormal_columns(&q);
        for i in 0..r.nrows() {
            for j in 0..i.min(r.ncols()) {
                assert!(r[[i, j]].abs() < 1e-14);
            }
        }
        assert!(max_abs(&(&q.dot(&r) - &a)) < 1e-12);
    }
}

#[test]
fn solve_and_lstsq() {
    let a = random(5, 5, 11);
    let x = random(5, 2, 12);
    let b = a.dot(&x);
    assert!(max_abs(&(&solve(a.view(), b.view()).unwrap() - &x)) < 1e-10);
    // Overdetermined consistent system: exact recovery.
    let tall = random(9, 4, 13);
    let bt = tall.dot(&x.slice(ndarray::s![..4, ..]));
    let xt = lstsq(tall.view(), bt.view()).unwrap();
    assert!(max_abs(&(&xt - &x.slice(ndarray::s![..4, ..]))) < 1e-10);
    // Rank-deficient: minimum-norm solution has no component in the null space.
    let mut def = Array2::zeros((3, 2));
    def[[0, 0]] = 1.0;
    def[[1, 0]] = 1.0;
    let rhs = Array2::from_shape_vec((3, 1), vec![1.0, 3.0, 0.0]).unwrap();
    let sol = lstsq(def.view(), rhs.view()).unwrap();
    assert!((sol[[0, 0]] - 2.0).abs() < 1e-12 && sol[[1, 0]].abs() < 1e-12);
}

#[test]
fn bad_input_is_an_error() {
    assert!(thin_svd(Array2::<f64>::zeros((0, 3)).view()).is_err());
    let mut nan = random(3, 3, 1);
    nan[[1, 1]] = f64::NAN;
    assert!(matches!(
        thin_svd(nan.view()),
        Err(Error::NonFinite { index: 4, .. })
    ));
    assert!(sym_eig(random(2, 3, 1).view()).is_err());
    assert!(solve(Array2::zeros((2, 2)).view(), Array2::ones((2, 1)).view()).is_err());
    assert!(solve(random(2, 2, 1).view(), Array2::ones((3, 1)).view()).is_err());
}
