//! Vector k-means (Lloyd's algorithm with k-means++ seeding), the clustering
//! step of product quantization (Jégou et al. \[52\], survey section 5) and of
//! the LCNN dictionary initialisation.
//!
//! Points are the rows of a matrix. An empty cluster is repaired by moving
//! its centroid onto the point farthest from its current centroid, which
//! never increases the objective.

use hasten_core::kmeans::{repair_empty, seed_plus_plus, update_centroids, validate};
use hasten_core::ndarray::Array2;
use hasten_core::{Result, SeededRng};

pub use hasten_core::kmeans::assign;

/// A k-means solution.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeans {
    /// Centroids `[k, d]`.
    pub centroids: Array2<f64>,
    /// Index of each point's centroid.
    pub assignment: Vec<u32>,
    /// `Σ ‖x − c(x)‖²` after the last assignment.
    pub objective: f64,
    /// Objective after each iteration's assignment step.
    pub history: Vec<f64>,
}

/// Lloyd's k-means on the rows of `points` (`n × d`, finite, `1 ≤ k ≤ n`):
/// the shared steps of [`hasten_core::kmeans`], with every empty cluster
/// repaired after each update, at most `max_iter` updates, stopping when
/// the assignment no longer changes.
///
/// # Errors
/// No points, a non-finite coordinate, `k` outside `1..=n`.
pub fn kmeans(
    points: &Array2<f64>,
    k: usize,
    max_iter: usize,
    rng: &mut SeededRng,
) -> Result<KMeans> {
    validate(points.view(), k)?;
    let pts = points.view();
    let mut centroids = seed_plus_plus(pts, k, rng);
    let mut history = Vec::new();
    let (mut codes, mut obj) = assign(pts, centroids.view());
    history.push(obj);
    for _ in 0..max_iter {
        let counts = update_centroids(pts, &codes, &mut centroids);
        repair_empty(pts, &mut codes, &counts, &mut centroids);
        let (next, next_obj) = assign(pts, centroids.view());
        history.push(next_obj);
        let done = next == codes;
        codes = next;
        obj = next_obj;
        if done {
            break;
        }
    }
    Ok(KMeans {
        centroids,
        assignment: codes,
        objective: obj,
        history,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dist2(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
    }

    #[test]
    fn objective_non_increasing_and_nearest_assignment() {
        let mut rng = SeededRng::new(1);
        let pts = rng.normal_array_f64((200, 3), 1.0);
        let r = kmeans(&pts, 7, 50, &mut rng).unwrap();
        for w in r.history.windows(2) {
            assert!(w[1] <= w[0] * (1.0 + 1e-12), "{:?}", r.history);
        }
        // Brute-force nearest centroid for every point.
        for (i, &c) in r.assignment.iter().enumerate() {
            let p = pts.row(i).to_vec();
            let mine = dist2(&p, &r.centroids.row(c as usize).to_vec());
            for j in 0..7 {
                assert!(mine <= dist2(&p, &r.centroids.row(j).to_vec()));
            }
        }
    }

    #[test]
    fn planted_distinct_rows_give_zero_error() {
        let mut rng = SeededRng::new(2);
        let proto = rng.normal_array_f64((4, 5), 1.0);
        let pts = Array2::from_shape_fn((40, 5), |(i, j)| proto[[i % 4, j]]);
        let r = kmeans(&pts, 4, 50, &mut rng).unwrap();
        assert!(r.objective < 1e-20, "{}", r.objective);
    }

    #[test]
    fn small_case_equals_brute_force_optimum() {
        // 6 points in 2-D, k = 2: Lloyd from several seeds reaches the optimum
        // of all 2^6 labelings.
        let mut rng = SeededRng::new(3);
        let pts = rng.normal_array_f64((6, 2), 1.0);
        let mut best = f64::INFINITY;
        for mask in 1u32..63 {
            let mut sse = 0.0;
            for side in [0, 1] {
                let idx: Vec<usize> = (0..6).filter(|&i| (mask >> i) & 1 == side).collect();
                let mean: Vec<f64> = (0..2)
                    .map(|j| idx.iter().map(|&i| pts[[i, j]]).sum::<f64>() / idx.len() as f64)
                    .collect();
                sse += idx
                    .iter()
                    .map(|&i| dist2(&pts.row(i).to_vec(), &mean))
                    .sum::<f64>();
            }
            best = best.min(sse);
        }
        let found = (0..10)
            .map(|s| {
                kmeans(&pts, 2, 50, &mut SeededRng::new(s))
                    .unwrap()
                    .objective
            })
            .fold(f64::INFINITY, f64::min);
        assert!((found - best).abs() < 1e-9, "{found} vs {best}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn bad_input_never_panics(n in 0usize..6, d in 0usize..3, k in 0usize..8, nan in any::<bool>()) {
            let mut pts = Array2::<f64>::ones((n, d));
            if nan && n * d > 0 {
                pts[[0, 0]] = f64::NAN;
            }
            let r = kmeans(&pts, k, 10, &mut SeededRng::new(0));
            let ok = n * d > 0 && !nan && k >= 1 && k <= n;
            prop_assert_eq!(r.is_ok(), ok);
        }
    }
}
