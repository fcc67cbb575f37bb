//! One-dimensional k-means, the engine of scalar quantization (survey eq. (4),
//! Gong et al. \[51\]): every weight is replaced by its nearest centroid.
//!
//! Scalars are sorted once; then
//! - [`lloyd_1d`]: k-means++ seeding and Lloyd iterations in which a cluster
//!   is a contiguous range of the sorted values, found by binary search at
//!   the midpoints between consecutive centroids, and centroids are updated
//!   from prefix sums — `O(k log n)` per iteration instead of `O(n k)`. An
//!   empty cluster is repaired by moving its centroid onto the point farthest
//!   from its centroid in the cluster with the largest squared error;
//! - [`optimal_1d`]: the exact optimum by dynamic programming over contiguous
//!   partitions (as in Ckmeans.1d.dp), with the divide-and-conquer speed-up
//!   that the optimal split point is monotone: `O(k n log n)` time,
//!   `O(k n)` memory.
//!
//! Equal values are merged into one weighted point first, so `k ≥` the
//! number of distinct values gives zero error.

use hasten_core::error::ensure_finite;
use hasten_core::{Error, Result, SeededRng};
use rayon::prelude::*;

/// Largest `k · distinct values` for which [`optimal_1d`] runs (its table
/// of split points takes 4 bytes per entry).
pub const OPTIMAL_MAX_CELLS: usize = 20_000_000;

/// A 1-D k-means solution.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeans1d {
    /// The `k` centroids, ascending. When there are fewer distinct values than
    /// `k`, the distinct values followed by copies of the largest one.
    pub centroids: Vec<f64>,
    /// The objective `Σ (x − c(x))²` over all input values.
    pub objective: f64,
    /// Lloyd iterations performed (0 for the optimal solver).
    pub iterations: usize,
}

/// Sorted distinct values with multiplicities and prefix sums (centred).
struct Sorted {
    xs: Vec<f64>,
    /// Prefix sums of counts, of `w·(x − shift)`, of `w·(x − shift)²`.
    p0: Vec<f64>,
    p1: Vec<f64>,
    p2: Vec<f64>,
    shift: f64,
}

impl Sorted {
    fn new(values: &[f32]) -> Self {
        let mut v: Vec<f32> = values.to_vec();
        v.par_sort_unstable_by(f32::total_cmp);
        let mut xs = Vec::new();
        let mut ws = Vec::new();
        for &x in &v {
            let x = f64::from(x);
            match xs.last() {
                Some(&last) if last == x => *ws.last_mut().expect("paired") += 1.0,
                _ => {
                    xs.push(x);
                    ws.push(1.0f64);
                }
            }
        }
        let shift = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        let n = xs.len();
        let (mut p0, mut p1, mut p2) = (vec![0.0; n + 1], vec![0.0; n + 1], vec![0.0; n + 1]);
        for i in 0..n {
            let d = xs[i] - shift;
            p0[i + 1] = p0[i] + ws[i];
            p1[i + 1] = p1[i] + ws[i] * d;
            p2[i + 1] = p2[i] + ws[i] * d * d;
        }
        Sorted {
            xs,
            p0,
            p1,
            p2,
            shift,
        }
    }

    fn weight(&self, i: usize) -> f64 {
        self.p0[i + 1] - self.p0[i]
    }

    /// Squared error of points `a..b` around their mean.
    fn sse(&self, a: usize, b: usize) -> f64 {
        let w = self.p0[b] - self.p0[a];
        if w == 0.0 {
            return 0.0;
        }
        let s1 = self.p1[b] - self.p1[a];
        (self.p2[b] - self.p2[a] - s1 * s1 / w).max(0.0)
    }

    fn mean(&self, a: usize, b: usize) -> f64 {
        (self.p1[b] - self.p1[a]) / (self.p0[b] - self.p0[a]) + self.shift
    }

    /// First index whose value is above `m`.
    fn after(&self, m: f64) -> usize {
        self.xs.partition_point(|&x| x <= m)
    }

    /// Cluster boundaries for sorted centroids: cluster `j` is `b[j]..b[j+1]`.
    fn boundaries(&self, c: &[f64]) -> Vec<usize> {
        let mut b = Vec::with_capacity(c.len() + 1);
        b.push(0);
        for w in c.windows(2) {
            b.push(self.after(0.5 * (w[0] + w[1])));
        }
        b.push(self.xs.len());
        b
    }

    /// `Σ w·(x − c(x))²`, summed point by point (no cancellation).
    fn objective(&self, c: &[f64]) -> f64 {
        let b = self.boundaries(c);
        (0..c.len())
            .map(|j| {
                (b[j]..b[j + 1])
                    .map(|i| self.weight(i) * (self.xs[i] - c[j]).powi(2))
                    .sum::<f64>()
            })
            .sum()
    }
}

fn validate(values: &[f32], k: usize) -> Result<()> {
    if values.is_empty() {
        return Err(Error::EmptyDimension {
            what: "values to cluster".into(),
            shape: "[0]".into(),
        });
    }
    ensure_finite("values to cluster", values.iter())?;
    if k == 0 || k > values.len() {
        return Err(Error::param(
            "k (clusters)",
            k,
            format!("1..={} (the number of points)", values.len()),
        ));
    }
    Ok(())
}

/// Fewer distinct values than clusters: the distinct values are the optimum.
fn exact_distinct(s: &Sorted, k: usize) -> Option<KMeans1d> {
    (s.xs.len() <= k).then(|| {
        let mut c = s.xs.clone();
        c.resize(k, *s.xs.last().expect("non-empty"));
        KMeans1d {
            centroids: c,
            objective: 0.0,
            iterations: 0,
        }
    })
}

/// k-means++ seeding (D² sampling) on the sorted weighted points. A new
/// centre changes the nearest-centre distance only of points between its
/// neighbouring centres' midpoints, a contiguous range; block sums of the
/// weighted D² make sampling `O(√n)`.
fn kmeans_pp(s: &Sorted, k: usize, rng: &mut SeededRng) -> Vec<f64> {
    let n = s.xs.len();
    let block = (n as f64).sqrt().ceil().max(1.0) as usize;
    let mut d2 = vec![f64::INFINITY; n];
    let mut block_sum = vec![0.0f64; n.div_ceil(block)];
    let mut centres = std::collections::BTreeSet::new();
    // First centre: proportional to multiplicity.
    let first = {
        let r = rng.uniform() * s.p0[n];
        s.p0[1..].partition_point(|&c| c <= r).min(n - 1)
    };
    let mut chosen = first;
    for _ in 0..k {
        centres.insert(chosen);
        let c = s.xs[chosen];
        let left = centres.range(..chosen).next_back().map(|&i| s.xs[i]);
        let right = centres.range(chosen + 1..).next().map(|&i| s.xs[i]);
        let lo = left.map_or(0, |l| s.after(0.5 * (l + c)));
        let hi = right.map_or(n, |r| s.after(0.5 * (c + r)));
        for i in lo..hi {
            d2[i] = d2[i].min((s.xs[i] - c) * (s.xs[i] - c));
        }
        // Recompute the touched blocks exactly (no drift from incremental updates).
        if hi > lo {
            for b in lo / block..=(hi - 1) / block {
                block_sum[b] = (b * block..((b + 1) * block).min(n))
                    .map(|i| {
                        if d2[i].is_finite() {
                            s.weight(i) * d2[i]
                        } else {
                            0.0
                        }
                    })
                    .sum();
            }
        }
        if centres.len() == k {
            break;
        }
        let total: f64 = block_sum.iter().sum();
        if total <= 0.0 || !total.is_finite() {
            // Distances underflowed: take any point that is not yet a centre.
            chosen = (0..n)
                .find(|i| !centres.contains(i))
                .expect("n > k distinct points");
            continue;
        }
        let mut r = rng.uniform() * total;
        let mut b = 0;
        while b + 1 < block_sum.len() && r >= block_sum[b] {
            r -= block_sum[b];
            b += 1;
        }
        let (start, end) = (b * block, ((b + 1) * block).min(n));
        chosen = (start..end)
            .find(|&i| {
                let m = s.weight(i) * d2[i];
                if r < m {
                    true
                } else {
                    r -= m;
                    false
                }
            })
            .or_else(|| (start..end).rev().find(|&i| d2[i] > 0.0))
            .or_else(|| (0..n).find(|i| !centres.contains(i)))
            .expect("n > k distinct points");
    }
    centres.into_iter().map(|i| s.xs[i]).collect()
}

/// Lloyd iterations on sorted points from sorted `centroids`; returns the
/// iterations run.
fn lloyd_iterations(s: &Sorted, c: &mut [f64], max_iter: usize) -> usize {
    let mut prev: Vec<usize> = Vec::new();
    for it in 0..max_iter {
        let b = s.boundaries(c);
        if b == prev {
            return it;
        }
        let mut empty = Vec::new();
        for j in 0..c.len() {
            if b[j + 1] > b[j] {
                c[j] = s.mean(b[j], b[j + 1]);
            } else {
                empty.push(j);
            }
        }
        for j in empty {
            // Split the worst cluster: move centroid j onto its farthest point.
            let bb = s.boundaries(c);
            let worst = (0..c.len())
                .filter(|&i| bb[i + 1] > bb[i] + 1)
                .max_by(|&p, &q| s.sse(bb[p], bb[p + 1]).total_cmp(&s.sse(bb[q], bb[q + 1])));
            if let Some(w) = worst {
                let (lo, hi) = (s.xs[bb[w]], s.xs[bb[w + 1] - 1]);
                c[j] = if (c[w] - lo).abs() >= (hi - c[w]).abs() {
                    lo
                } else {
                    hi
                };
            }
            c.sort_by(f64::total_cmp);
        }
        c.sort_by(f64::total_cmp);
        prev = b;
    }
    max_iter
}

/// Lloyd's k-means on scalars with k-means++ seeding: at most `max_iter`
/// iterations, stopping when assignments no longer change.
pub fn lloyd_1d(
    values: &[f32],
    k: usize,
    max_iter: usize,
    rng: &mut SeededRng,
) -> Result<KMeans1d> {
    validate(values, k)?;
    let s = Sorted::new(values);
    if let Some(done) = exact_distinct(&s, k) {
        return Ok(done);
    }
    let mut c = kmeans_pp(&s, k, rng);
    let iterations = lloyd_iterations(&s, &mut c, max_iter);
    Ok(KMeans1d {
        objective: s.objective(&c),
        centroids: c,
        iterations,
    })
}

/// The globally optimal 1-D k-means (dynamic programming over contiguous
/// partitions of the sorted values). Needs `k · distinct ≤ OPTIMAL_MAX_CELLS`.
pub fn optimal_1d(values: &[f32], k: usize) -> Result<KMeans1d> {
    validate(values, k)?;
    let s = Sorted::new(values);
    if let Some(done) = exact_distinct(&s, k) {
        return Ok(done);
    }
    let n = s.xs.len();
    if k.saturating_mul(n) > OPTIMAL_MAX_CELLS {
        return Err(Error::param(
            "k · distinct values for optimal 1-D k-means",
            k * n,
            format!("<= {OPTIMAL_MAX_CELLS} (use Lloyd for larger problems)"),
        ));
    }
    // dp[i] = best cost of the first i points with m clusters; split[m][i] = start of the last cluster.
    let mut prev: Vec<f64> = (0..=n).map(|i| s.sse(0, i)).collect();
    let mut split = vec![0u32; k * (n + 1)];
    for m in 1..k {
        let mut cur = vec![f64::INFINITY; n + 1];
        let row = &mut split[m * (n + 1)..(m + 1) * (n + 1)];
        // Stack-based divide and conquer over i ∈ [m+1, n], opt ∈ [m, i-1].
        let mut stack = vec![(m + 1, n, m, n - 1)];
        while let Some((lo, hi, olo, ohi)) = stack.pop() {
            if lo > hi {
                continue;
            }
            let mid = (lo + hi) / 2;
            let (mut best, mut arg) = (f64::INFINITY, olo);
            for j in olo..=ohi.min(mid - 1) {
                let v = prev[j] + s.sse(j, mid);
                if v < best {
                    best = v;
                    arg = j;
                }
            }
            cur[mid] = best;
            row[mid] = arg as u32;
            if mid > lo {
                stack.push((lo, mid - 1, olo, arg));
            }
            stack.push((mid + 1, hi, arg, ohi));
        }
        prev = cur;
    }
    // Backtrack.
    let mut bounds = vec![n];
    let mut i = n;
    for m in (1..k).rev() {
        i = split[m * (n + 1) + i] as usize;
        bounds.push(i);
    }
    bounds.push(0);
    bounds.reverse();
    let centroids: Vec<f64> = bounds.windows(2).map(|w| s.mean(w[0], w[1])).collect();
    Ok(KMeans1d {
        objective: s.objective(&centroids),
        centroids,
        iterations: 0,
    })
}

/// The index of the nearest of the ascending `centroids` for each value
/// (ties go to the lower centroid), by binary search over the midpoints.
pub fn assign_1d(values: &[f32], centroids: &[f64]) -> Vec<u32> {
    let mids: Vec<f64> = centroids.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect();
    values
        .par_iter()
        .with_min_len(4096)
        .map(|&v| mids.partition_point(|&m| m < f64::from(v)) as u32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn direct_objective(values: &[f32], c: &[f64]) -> f64 {
        values
            .iter()
            .map(|&v| {
                c.iter()
                    .map(|&m| (f64::from(v) - m).powi(2))
                    .fold(f64::INFINITY, f64::min)
            })
            .sum()
    }

    /// Brute force over all k^n labelings.
    fn brute_force(values: &[f32], k: usize) -> f64 {
        let n = values.len();
        let mut best = f64::INFINITY;
        for code in 0..k.pow(n as u32) {
            let mut labels = vec![0; n];
            let mut c = code;
            for l in labels.iter_mut() {
                *l = c % k;
                c /= k;
            }
            let mut sse = 0.0;
            for j in 0..k {
                let pts: Vec<f64> = (0..n)
                    .filter(|&i| labels[i] == j)
                    .map(|i| f64::from(values[i]))
                    .collect();
                if pts.is_empty() {
                    continue;
                }
                let mean = pts.iter().sum::<f64>() / pts.len() as f64;
                sse += pts.iter().map(|p| (p - mean).powi(2)).sum::<f64>();
            }
            best = best.min(sse);
        }
        best
    }

    #[test]
    fn optimal_equals_brute_force() {
        let mut rng = SeededRng::new(1);
        for trial in 0..20 {
            let n = 3 + trial % 5;
            let k = 1 + trial % 3;
            let values: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
            let opt = optimal_1d(&values, k).unwrap();
            let bf = brute_force(&values, k);
            assert!(
                (opt.objective - bf).abs() < 1e-9,
                "n {n} k {k}: {} vs {bf}",
                opt.objective
            );
            assert!((direct_objective(&values, &opt.centroids) - bf).abs() < 1e-9);
        }
    }

    #[test]
    fn optimal_dp_matches_quadratic_dp_on_larger_inputs() {
        // Plain O(k n²) DP without the monotone-split speed-up as the truth.
        let mut rng = SeededRng::new(2);
        let values: Vec<f32> = (0..120)
            .map(|_| (rng.normal() * if rng.below(2) == 0 { 1.0 } else { 3.0 }) as f32)
            .collect();
        let mut xs: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
        xs.sort_by(f64::total_cmp);
        let sse = |a: usize, b: usize| {
            let m = xs[a..b].iter().sum::<f64>() / (b - a) as f64;
            xs[a..b].iter().map(|x| (x - m).powi(2)).sum::<f64>()
        };
        let n = xs.len();
        for k in [2, 5, 9] {
            let mut dp: Vec<f64> = (0..=n)
                .map(|i| if i == 0 { 0.0 } else { sse(0, i) })
                .collect();
            for m in 1..k {
                let mut next = vec![f64::INFINITY; n + 1];
                for i in m + 1..=n {
                    for j in m..i {
                        next[i] = next[i].min(dp[j] + sse(j, i));
                    }
                }
                dp = next;
            }
            let opt = optimal_1d(&values, k).unwrap();
            assert!(
                (opt.objective - dp[n]).abs() < 1e-8 * (1.0 + dp[n]),
                "k {k}: {} vs {}",
                opt.objective,
                dp[n]
            );
        }
    }

    #[test]
    fn lloyd_objective_is_non_increasing() {
        let mut rng = SeededRng::new(3);
        let values: Vec<f32> = (0..2000).map(|_| rng.normal() as f32).collect();
        let mut last = f64::INFINITY;
        for it in 1..25 {
            // Same seed ⇒ same seeding; `it` iterations.
            let r = lloyd_1d(&values, 16, it, &mut SeededRng::new(7)).unwrap();
            let obj = direct_objective(&values, &r.centroids);
            assert!(
                obj <= last * (1.0 + 1e-12),
                "iteration {it}: {obj} > {last}"
            );
            assert!((obj - r.objective).abs() < 1e-8 * (1.0 + obj));
            last = obj;
        }
        let opt = optimal_1d(&values, 16).unwrap();
        assert!(opt.objective <= last * (1.0 + 1e-12));
    }

    #[test]
    fn assignment_is_nearest_centroid() {
        let mut rng = SeededRng::new(4);
        let values: Vec<f32> = (0..500).map(|_| rng.normal() as f32).collect();
        let r = lloyd_1d(&values, 7, 50, &mut rng).unwrap();
        let codes = assign_1d(&values, &r.centroids);
        for (&v, &c) in values.iter().zip(&codes) {
            let d = (f64::from(v) - r.centroids[c as usize]).abs();
            assert!(r.centroids.iter().all(|&m| d <= (f64::from(v) - m).abs()));
        }
    }

    #[test]
    fn lloyd_finds_planted_clusters_and_zero_error_for_few_values() {
        let mut rng = SeededRng::new(5);
        let centres = [-3.0f32, 0.0, 2.0, 7.0];
        let values: Vec<f32> = (0..400)
            .map(|i| centres[i % 4] + 0.01 * rng.normal() as f32)
            .collect();
        let r = lloyd_1d(&values, 4, 100, &mut rng).unwrap();
        let opt = optimal_1d(&values, 4).unwrap();
        assert!((r.objective - opt.objective).abs() < 1e-9);
        let few = [1.0f32, 1.0, 2.0, 5.0, 5.0, 2.0];
        for k in 3..=6 {
            assert_eq!(lloyd_1d(&few, k, 10, &mut rng).unwrap().objective, 0.0);
            assert_eq!(optimal_1d(&few, k).unwrap().objective, 0.0);
        }
    }

    #[test]
    fn empty_cluster_repair_keeps_k_distinct_centroids() {
        // Heavy duplicates make the seeding collide with sparse regions.
        let mut values = vec![0.0f32; 300];
        values.extend((0..40).map(|i| 10.0 + i as f32 * 0.1));
        let r = lloyd_1d(&values, 8, 100, &mut SeededRng::new(8)).unwrap();
        let mut c = r.centroids.clone();
        c.dedup();
        assert_eq!(c.len(), 8);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn bad_input_is_an_error_never_a_panic(
            values in proptest::collection::vec(proptest::num::f32::ANY, 0..30),
            k in 0usize..35,
        ) {
            let ok = !values.is_empty() && values.iter().all(|v| v.is_finite()) && k >= 1 && k <= values.len();
            let a = lloyd_1d(&values, k, 20, &mut SeededRng::new(0));
            let b = optimal_1d(&values, k);
            prop_assert_eq!(a.is_ok(), ok);
            prop_assert_eq!(b.is_ok(), ok);
            if let Ok(a) = &a {
                prop_assert_eq!(a.centroids.len(), k);
            }
            let moderate = values.iter().all(|v| v.abs() < 1e6 && (v.abs() > 1e-6 || *v == 0.0));
            if let (Ok(a), Ok(b), true) = (a, b, moderate) {
                prop_assert!(b.objective <= a.objective * (1.0 + 1e-9) + 1e-9);
            }
        }
    }
}
