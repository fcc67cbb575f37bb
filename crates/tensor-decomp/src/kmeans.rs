//! Seeded k-means (k-means++ start, Lloyd iterations), optionally balanced
//! (every cluster exactly `n / k` points), used by the clustering
//! approximations of Denton et al. \[17\].

use hasten_core::error::{Error, Result};
use hasten_core::kmeans::{assign, dist2, seed_plus_plus, update_centroids, validate};
use hasten_core::ndarray::Array2;
use hasten_core::SeededRng;

/// Clusters the rows of `points` into `k` clusters; returns one cluster index
/// per row. The seeding, assignment and update steps are those of
/// [`hasten_core::kmeans`]; what differs here: the first assignment is
/// computed even with `iterations == 0`, an empty cluster keeps its old
/// centroid, and with `balanced`, `k` must divide the number of rows and
/// every cluster gets exactly `rows / k` members (greedy
/// capacity-constrained assignment by increasing distance).
///
/// # Errors
/// No points, a non-finite coordinate, `k` outside `1..=rows`, or with
/// `balanced` a `k` that does not divide the rows.
pub fn kmeans(
    points: &Array2<f64>,
    k: usize,
    balanced: bool,
    seed: u64,
    iterations: usize,
) -> Result<Vec<usize>> {
    validate(points.view(), k)?;
    let n = points.nrows();
    if balanced && !n.is_multiple_of(k) {
        return Err(Error::param(
            "k (clusters)",
            k,
            format!("a divisor of {n} (balanced clusters)"),
        ));
    }
    let mut rng = SeededRng::new(seed);
    let mut centroids = seed_plus_plus(points.view(), k, &mut rng);
    let mut codes: Vec<u32> = Vec::new();
    for _ in 0..iterations.max(1) {
        let next = if balanced {
            balanced_assign(points, &centroids)
        } else {
            assign(points.view(), centroids.view()).0
        };
        if next == codes {
            break;
        }
        codes = next;
        update_centroids(points.view(), &codes, &mut centroids);
    }
    Ok(codes.into_iter().map(|c| c as usize).collect())
}

fn balanced_assign(points: &Array2<f64>, centroids: &Array2<f64>) -> Vec<u32> {
    let (n, k) = (points.nrows(), centroids.nrows());
    let cap = n / k;
    let mut pairs: Vec<(f64, usize, usize)> = Vec::with_capacity(n * k);
    for i in 0..n {
        for c in 0..k {
            pairs.push((dist2(points.row(i), centroids.row(c)), i, c));
        }
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut codes = vec![u32::MAX; n];
    let mut fill = vec![0usize; k];
    for (_, i, c) in pairs {
        if codes[i] == u32::MAX && fill[c] < cap {
            codes[i] = c as u32;
            fill[c] += 1;
        }
    }
    codes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_well_separated_blobs() {
        let mut rng = SeededRng::new(1);
        let mut pts = Array2::<f64>::zeros((30, 2));
        for i in 0..30 {
            let centre = (i % 3) as f64 * 10.0;
            pts[[i, 0]] = centre + 0.1 * rng.normal();
            pts[[i, 1]] = -centre + 0.1 * rng.normal();
        }
        for balanced in [false, true] {
            let a = kmeans(&pts, 3, balanced, 2, 50).unwrap();
            for i in 0..30 {
                assert_eq!(a[i], a[i % 3], "point {i}");
            }
            let mut sizes = [0; 3];
            for &c in &a {
                sizes[c] += 1;
            }
            assert_eq!(sizes, [10, 10, 10]);
        }
    }

    #[test]
    fn bad_inputs() {
        let pts = Array2::<f64>::zeros((6, 2));
        assert!(kmeans(&pts, 0, false, 0, 5).is_err());
        assert!(kmeans(&pts, 7, false, 0, 5).is_err());
        assert!(kmeans(&pts, 4, true, 0, 5).is_err());
        assert_eq!(kmeans(&pts, 3, true, 0, 5).unwrap().len(), 6);
    }
}
