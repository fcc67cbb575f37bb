//! The parts of vector k-means (Lloyd's algorithm) that every clustering
//! method shares: input checks, k-means++ seeding (D² sampling), the
//! nearest-centroid assignment, the centroid update and the repair of an
//! empty cluster.
//!
//! The survey clusters weights in several places — product quantization
//! (section 5, Jégou et al. \[52\]), the LCNN dictionary, and the clustering
//! approximations of Denton et al. \[17\] (section 3). Each method builds its
//! own Lloyd loop from these steps and keeps its differences explicit
//! (balanced assignment, what happens to an empty cluster, when to stop).
//!
//! ```
//! use hasten_core::kmeans::{assign, seed_plus_plus, update_centroids};
//! use hasten_core::ndarray::array;
//! use hasten_core::SeededRng;
//!
//! let points = array![[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0]];
//! let mut centroids = seed_plus_plus(points.view(), 2, &mut SeededRng::new(0));
//! let (codes, _) = assign(points.view(), centroids.view());
//! update_centroids(points.view(), &codes, &mut centroids);
//! let (codes, objective) = assign(points.view(), centroids.view());
//! assert_eq!(codes[0], codes[1]);
//! assert_eq!(codes[2], codes[3]);
//! assert!((objective - 1.0).abs() < 1e-12);
//! ```

use ndarray::{Array2, ArrayView1, ArrayView2};

use crate::error::{ensure_finite, ensure_nonempty, Error, Result};
use crate::SeededRng;

/// Squared Euclidean distance of two equally long vectors.
pub fn dist2(a: ArrayView1<'_, f64>, b: ArrayView1<'_, f64>) -> f64 {
    a.iter().zip(b.iter()).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Checks the rows of `points` can be clustered into `k` clusters.
///
/// # Errors
/// [`Error::EmptyDimension`] for no points or no features, a non-finite
/// coordinate, `k` outside `1..=rows`.
pub fn validate(points: ArrayView2<'_, f64>, k: usize) -> Result<()> {
    ensure_nonempty("points to cluster", points.shape())?;
    ensure_finite("points to cluster", points.iter())?;
    let n = points.nrows();
    if k == 0 || k > n {
        return Err(Error::param(
            "k (clusters)",
            k,
            format!("1..={n} (the number of points)"),
        ));
    }
    Ok(())
}

/// k-means++ seeding (Arthur & Vassilvitskii): the first centroid is a
/// uniformly drawn row, each further one a row drawn with probability
/// proportional to its squared distance to the nearest centroid so far.
/// When every distance is zero (fewer distinct rows than `k`) a uniformly
/// drawn row is taken.
///
/// Expects [`validate`]d input (`1 ≤ k ≤ rows`).
pub fn seed_plus_plus(points: ArrayView2<'_, f64>, k: usize, rng: &mut SeededRng) -> Array2<f64> {
    let n = points.nrows();
    let mut centroids = Array2::<f64>::zeros((k, points.ncols()));
    let first = rng.below(n);
    centroids.row_mut(0).assign(&points.row(first));
    let mut d2: Vec<f64> = (0..n)
        .map(|i| dist2(points.row(i), points.row(first)))
        .collect();
    for j in 1..k {
        let total: f64 = d2.iter().sum();
        let pick = if total > 0.0 {
            let mut r = rng.uniform() * total;
            (0..n)
                .find(|&i| {
                    if r < d2[i] {
                        true
                    } else {
                        r -= d2[i];
                        false
                    }
                })
                // Rounding left `r` past the end: the last row still at a
                // positive distance.
                .unwrap_or_else(|| (0..n).rev().find(|&i| d2[i] > 0.0).unwrap_or(n - 1))
        } else {
            rng.below(n)
        };
        centroids.row_mut(j).assign(&points.row(pick));
        for (i, v) in d2.iter_mut().enumerate() {
            *v = v.min(dist2(points.row(i), points.row(pick)));
        }
    }
    centroids
}

/// The nearest centroid of each row (ties go to the lower index) and the
/// objective `Σ ‖x − c(x)‖²`.
pub fn assign(points: ArrayView2<'_, f64>, centroids: ArrayView2<'_, f64>) -> (Vec<u32>, f64) {
    let mut total = 0.0;
    let codes = points
        .rows()
        .into_iter()
        .map(|p| {
            let (mut best, mut arg) = (f64::INFINITY, 0);
            for (j, c) in centroids.rows().into_iter().enumerate() {
                let d = dist2(p, c);
                if d < best {
                    best = d;
                    arg = j;
                }
            }
            total += best;
            arg as u32
        })
        .collect();
    (codes, total)
}

/// The Lloyd update: each centroid becomes the mean of its rows under
/// `codes`. A centroid with no rows is left where it was; the returned
/// cluster sizes say which those are.
pub fn update_centroids(
    points: ArrayView2<'_, f64>,
    codes: &[u32],
    centroids: &mut Array2<f64>,
) -> Vec<usize> {
    let k = centroids.nrows();
    let mut sums = Array2::<f64>::zeros(centroids.raw_dim());
    let mut counts = vec![0usize; k];
    for (p, &c) in points.rows().into_iter().zip(codes) {
        counts[c as usize] += 1;
        let mut s = sums.row_mut(c as usize);
        s += &p;
    }
    for (j, &count) in counts.iter().enumerate() {
        if count > 0 {
            let mut c = centroids.row_mut(j);
            c.assign(&sums.row(j));
            c /= count as f64;
        }
    }
    counts
}

/// Moves each empty cluster's centroid (size 0 in `counts`) onto the row
/// farthest from its own centroid and assigns that row to it. The moved row
/// now costs zero, so the objective never increases.
pub fn repair_empty(
    points: ArrayView2<'_, f64>,
    codes: &mut [u32],
    counts: &[usize],
    centroids: &mut Array2<f64>,
) {
    for j in (0..counts.len()).filter(|&j| counts[j] == 0) {
        let Some(far) = (0..points.nrows()).max_by(|&a, &b| {
            let da = dist2(points.row(a), centroids.row(codes[a] as usize));
            let db = dist2(points.row(b), centroids.row(codes[b] as usize));
            da.total_cmp(&db)
        }) else {
            return;
        };
        centroids.row_mut(j).assign(&points.row(far));
        codes[far] = j as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeding_picks_distinct_rows_while_they_exist() {
        // Three distinct rows, each repeated: k-means++ never draws a row at
        // distance zero while a positive distance remains.
        let points = Array2::from_shape_fn((9, 2), |(i, j)| ((i % 3) * 5 + j) as f64);
        for seed in 0..20 {
            let c = seed_plus_plus(points.view(), 3, &mut SeededRng::new(seed));
            let mut firsts: Vec<i64> = c.column(0).iter().map(|&v| v as i64).collect();
            firsts.sort_unstable();
            assert_eq!(firsts, vec![0, 5, 10], "seed {seed}");
        }
    }

    #[test]
    fn assignment_is_the_brute_force_nearest_and_update_is_the_mean() {
        let mut rng = SeededRng::new(1);
        let points = rng.normal_array_f64((50, 3), 1.0);
        let mut centroids = rng.normal_array_f64((4, 3), 1.0);
        let (codes, obj) = assign(points.view(), centroids.view());
        let mut direct = 0.0;
        for (i, &c) in codes.iter().enumerate() {
            let d: Vec<f64> = (0..4)
                .map(|j| {
                    (0..3)
                        .map(|t| (points[[i, t]] - centroids[[j, t]]).powi(2))
                        .sum()
                })
                .collect();
            assert!(d.iter().all(|&x| d[c as usize] <= x));
            direct += d[c as usize];
        }
        assert!((obj - direct).abs() <= 1e-12 * direct);
        let before = centroids.clone();
        let counts = update_centroids(points.view(), &codes, &mut centroids);
        for j in 0..4 {
            let members: Vec<usize> = (0..50).filter(|&i| codes[i] as usize == j).collect();
            assert_eq!(counts[j], members.len());
            for t in 0..3 {
                let want = if members.is_empty() {
                    before[[j, t]]
                } else {
                    members.iter().map(|&i| points[[i, t]]).sum::<f64>() / members.len() as f64
                };
                assert!((centroids[[j, t]] - want).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn repair_moves_an_empty_centroid_onto_the_farthest_point() {
        let points = ndarray::array![[0.0], [1.0], [2.0], [9.0]];
        // Cluster 1 sits far away and owns nothing.
        let mut centroids = ndarray::array![[1.0], [100.0]];
        let (mut codes, before) = assign(points.view(), centroids.view());
        let counts = update_centroids(points.view(), &codes, &mut centroids);
        assert_eq!(counts, vec![4, 0]);
        repair_empty(points.view(), &mut codes, &counts, &mut centroids);
        // Mean 3: the farthest point is 9.
        assert_eq!(centroids[[1, 0]], 9.0);
        assert_eq!(codes, vec![0, 0, 0, 1]);
        let (_, after) = assign(points.view(), centroids.view());
        assert!(after <= before);
    }

    #[test]
    fn validation_errors() {
        let p = Array2::<f64>::zeros((3, 2));
        assert!(validate(p.view(), 0).is_err());
        assert!(validate(p.view(), 4).is_err());
        assert!(validate(p.view(), 3).is_ok());
        assert!(validate(Array2::<f64>::zeros((0, 2)).view(), 1).is_err());
        let mut nan = p.clone();
        nan[[1, 1]] = f64::NAN;
        assert!(validate(nan.view(), 1).is_err());
    }
}
