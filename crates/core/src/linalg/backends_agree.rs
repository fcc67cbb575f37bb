//! With the `lapack` feature, both backends are compiled: feed them the same
//! random inputs and compare the sign-invariant results (singular values,
//! eigenvalues, projectors, reconstructions, solutions).

use ndarray::Array2;

use super::{faer_backend, lapack_backend};
use crate::rng::SeededRng;

fn random(m: usize, n: usize, seed: u64) -> Array2<f64> {
    SeededRng::new(seed).normal_array_f64((m, n), 1.0)
}

fn max_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

/// Tolerance: both are backward-stable O(ε·‖A‖) algorithms on O(1) inputs;
/// 1e-11 leaves a margin of ~10⁴ over f64 rounding for these sizes.
const TOL: f64 = 1e-11;

#[test]
fn svd_agrees() {
    for (m, n, seed) in [(9, 5, 1), (5, 9, 2), (12, 12, 3)] {
        let a = random(m, n, seed);
        let f = faer_backend::svd(a.view()).unwrap();
        let l = lapack_backend::svd(a.view()).unwrap();
        let ds =
            f.s.iter()
                .zip(l.s.iter())
                .fold(0.0f64, |d, (x, y)| d.max((x - y).abs()));
        assert!(ds < TOL, "singular values differ by {ds}");
        // U Uᵀ and the rank-k reconstructions are invariant to the vectors' signs.
        assert!(max_diff(&f.u.dot(&f.u.t()), &l.u.dot(&l.u.t())) < TOL);
        assert!(max_diff(&f.reconstruct(2), &l.reconstruct(2)) < TOL);
    }
}

#[test]
fn sym_eig_agrees() {
    let b = random(8, 8, 4);
    let a = &b + &b.t();
    let (wf, vf) = faer_backend::sym_eig(a.view()).unwrap();
    let (wl, vl) = lapack_backend::sym_eig(a.view()).unwrap();
    let dw = wf
        .iter()
        .zip(wl.iter())
        .fold(0.0f64, |d, (x, y)| d.max((x - y).abs()));
    assert!(dw < TOL, "eigenvalues differ by {dw}");
    for k in 0..8 {
        // Each eigenvector is determined up to sign (the spectrum is simple).
        let dot: f64 = vf.column(k).dot(&vl.column(k));
        assert!(
            (dot.abs() - 1.0).abs() < TOL,
            "eigenvector {k}: |<vf, vl>| = {}",
            dot.abs()
        );
    }
}

#[test]
fn qr_solve_agree() {
    let a = random(10, 4, 5);
    let (qf, rf) = faer_backend::qr(a.view()).unwrap();
    let (ql, rl) = lapack_backend::qr(a.view()).unwrap();
    assert!(max_diff(&qf.dot(&qf.t()), &ql.dot(&ql.t())) < TOL);
    assert!(max_diff(&rf.mapv(f64::abs), &rl.mapv(f64::abs)) < TOL);
    let sq = random(6, 6, 6);
    let rhs = random(6, 3, 7);
    let xf = faer_backend::solve(sq.view(), rhs.view()).unwrap();
    let xl = lapack_backend::solve(sq.view(), rhs.view()).unwrap();
    assert!(
        max_diff(&xf, &xl) < 1e-9,
        "solutions differ (condition-number dependent)"
    );
}
