//! Seeded k-means (k-means++ start, Lloyd iterations), optionally balanced
//! (every cluster exactly `n / k` points), used by the clustering
//! approximations of Denton et al. \[17\].

use hasten_core::error::{ensure_finite, ensure_nonempty, Error, Result};
use hasten_core::ndarray::{Array2, ArrayView1};
use hasten_core::SeededRng;

fn dist2(a: ArrayView1<f64>, b: ArrayView1<f64>) -> f64 {
    a.iter().zip(b.iter()).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Clusters the rows of `points` into `k` clusters; returns one cluster index
/// per row. With `balanced`, `k` must divide the number of rows and every
/// cluster gets exactly `rows / k` members (greedy capacity-constrained
/// assignment by increasing distance).
pub fn kmeans(
    points: &Array2<f64>,
    k: usize,
    balanced: bool,
    seed: u64,
    iterations: usize,
) -> Result<Vec<usize>> {
    ensure_nonempty("k-means points", points.shape())?;
    ensure_finite("k-means points", points.iter())?;
    let n = points.nrows();
    if k == 0 || k > n {
        return Err(Error::param(
            "cluster count",
            k,
            format!("1..={n} (the number of points)"),
        ));
    }
    if balanced && !n.is_multiple_of(k) {
        return Err(Error::param(
            "cluster count",
            k,
            format!("a divisor of {n} (balanced clusters)"),
        ));
    }
    let mut rng = SeededRng::new(seed);
    // k-means++ seeding.
    let mut centroids = Array2::<f64>::zeros((k, points.ncols()));
    centroids.row_mut(0).assign(&points.row(rng.below(n)));
    let mut d2: Vec<f64> = (0..n)
        .map(|i| dist2(points.row(i), centroids.row(0)))
        .collect();
    for c in 1..k {
        let total: f64 = d2.iter().sum();
        let pick = if total > 0.0 {
            let mut t = rng.uniform() * total;
            let mut chosen = n - 1;
            for (i, &d) in d2.iter().enumerate() {
                if t < d {
                    chosen = i;
                    break;
                }
                t -= d;
            }
            chosen
        } else {
            rng.below(n)
        };
        centroids.row_mut(c).assign(&points.row(pick));
        for i in 0..n {
            d2[i] = d2[i].min(dist2(points.row(i), centroids.row(c)));
        }
    }
    let mut assign = vec![usize::MAX; n];
    for _ in 0..iterations.max(1) {
        let next = if balanced {
            balanced_assign(points, &centroids)
        } else {
            (0..n)
                .map(|i| {
                    (0..k)
                        .min_by(|&a, &b| {
                            dist2(points.row(i), centroids.row(a))
                                .total_cmp(&dist2(points.row(i), centroids.row(b)))
                        })
                        .expect("k >= 1")
                })
                .collect()
        };
        if next == assign {
            break;
        }
        assign = next;
        for c in 0..k {
            let members: Vec<usize> = (0..n).filter(|&i| assign[i] == c).collect();
            if members.is_empty() {
                continue;
            }
            let mut mean = points.row(members[0]).to_owned();
            for &i in &members[1..] {
                mean += &points.row(i);
            }
            mean /= members.len() as f64;
            centroids.row_mut(c).assign(&mean);
        }
    }
    Ok(assign)
}

fn balanced_assign(points: &Array2<f64>, centroids: &Array2<f64>) -> Vec<usize> {
    let (n, k) = (points.nrows(), centroids.nrows());
    let cap = n / k;
    let mut pairs: Vec<(f64, usize, usize)> = Vec::with_capacity(n * k);
    for i in 0..n {
        for c in 0..k {
            pairs.push((dist2(points.row(i), centroids.row(c)), i, c));
        }
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut assign = vec![usize::MAX; n];
    let mut fill = vec![0usize; k];
    for (_, i, c) in pairs {
        if assign[i] == usize::MAX && fill[c] < cap {
            assign[i] = c;
            fill[c] += 1;
        }
    }
    assign
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
