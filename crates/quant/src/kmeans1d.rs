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
//!   that the optimal split point is monotone: `O(k n log n)` time, a
//!   `k · n` table of split points (4 bytes each, checked against the
//!   memory limit of [`hasten_core::memory`]) and `O(n)` other memory.
//!
//! Within-cluster costs are numerically stable on any finite input, values
//! near `f32::MAX` next to subnormals included: each cost is the weight,
//! mean and centred sum of squares of a range, merged from pieces by the
//! pairwise update of Chan, Golub and LeVeque (every piece summed with
//! Welford's update), never a difference of prefix sums — a difference
//! that would lose every digit of a small cluster's cost beside large
//! values. Cluster means are computed the same way.
//!
//! Equal values are merged into one weighted point first, so `k ≥` the
//! number of distinct values gives zero error.

use hasten_core::error::ensure_finite;
use hasten_core::{Error, Result, SeededRng};
use rayon::prelude::*;

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

/// Weight, mean and centred sum of squares `Σ w·(x − mean)²` of a set of
/// weighted points.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Moments {
    w: f64,
    mean: f64,
    m2: f64,
}

impl Moments {
    fn point(w: f64, x: f64) -> Self {
        Moments {
            w,
            mean: x,
            m2: 0.0,
        }
    }

    /// The moments of the union (Chan, Golub & LeVeque): no subtraction of
    /// large sums, so the error is relative to each part's own spread.
    fn merge(self, o: Moments) -> Moments {
        if self.w == 0.0 {
            return o;
        }
        if o.w == 0.0 {
            return self;
        }
        let w = self.w + o.w;
        let d = o.mean - self.mean;
        Moments {
            w,
            mean: self.mean + d * (o.w / w),
            m2: self.m2 + o.m2 + d * d * (self.w * o.w / w),
        }
    }
}

/// Points per block of [`Sorted`]'s range structure.
const BLOCK: usize = 32;

/// Sorted distinct values with multiplicities, and the range structure that
/// gives the [`Moments`] of any contiguous range in O(1) merges (O(`BLOCK`)
/// inside one block): per point, the moments from its block's start up to
/// it and from it to its block's end; over whole blocks, a disjoint sparse
/// table of block moments.
struct Sorted {
    xs: Vec<f64>,
    ws: Vec<f64>,
    /// `head[i]`: points `block_start(i)..=i`.
    head: Vec<Moments>,
    /// `tail[i]`: points `i..block_end(i)`.
    tail: Vec<Moments>,
    /// Disjoint sparse table over the block totals: `levels[h][b]` holds,
    /// for block `b` in the lower half of its aligned group of `2^(h+1)`
    /// blocks, the blocks from `b` to the end of that half; in the upper
    /// half, from the half's start to `b`.
    levels: Vec<Vec<Moments>>,
    blocks: Vec<Moments>,
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
        let n = xs.len();
        let mut head = vec![Moments::default(); n];
        let mut tail = vec![Moments::default(); n];
        let mut blocks = Vec::with_capacity(n.div_ceil(BLOCK));
        for start in (0..n).step_by(BLOCK) {
            let end = (start + BLOCK).min(n);
            let mut acc = Moments::default();
            for i in start..end {
                acc = acc.merge(Moments::point(ws[i], xs[i]));
                head[i] = acc;
            }
            blocks.push(acc);
            let mut acc = Moments::default();
            for i in (start..end).rev() {
                acc = Moments::point(ws[i], xs[i]).merge(acc);
                tail[i] = acc;
            }
        }
        let nb = blocks.len();
        let mut levels = Vec::new();
        let mut half = 1;
        while half < nb {
            let mut level = vec![Moments::default(); nb];
            for group in (0..nb).step_by(2 * half) {
                let mid = (group + half).min(nb);
                let mut acc = Moments::default();
                for b in (group..mid).rev() {
                    acc = blocks[b].merge(acc);
                    level[b] = acc;
                }
                let mut acc = Moments::default();
                for b in mid..(group + 2 * half).min(nb) {
                    acc = acc.merge(blocks[b]);
                    level[b] = acc;
                }
            }
            levels.push(level);
            half *= 2;
        }
        Sorted {
            xs,
            ws,
            head,
            tail,
            levels,
            blocks,
        }
    }

    fn weight(&self, i: usize) -> f64 {
        self.ws[i]
    }

    /// Total weight of all points.
    fn total_weight(&self) -> f64 {
        self.ws.iter().sum()
    }

    /// Moments of whole blocks `l..=r`.
    fn block_range(&self, l: usize, r: usize) -> Moments {
        if l == r {
            return self.blocks[l];
        }
        let h = (usize::BITS - 1 - (l ^ r).leading_zeros()) as usize;
        self.levels[h][l].merge(self.levels[h][r])
    }

    /// Moments of points `a..b`.
    fn range(&self, a: usize, b: usize) -> Moments {
        if a >= b {
            return Moments::default();
        }
        let (ba, bb) = (a / BLOCK, (b - 1) / BLOCK);
        if ba == bb {
            return (a..b).fold(Moments::default(), |acc, i| {
                acc.merge(Moments::point(self.ws[i], self.xs[i]))
            });
        }
        let mut m = self.tail[a];
        if bb > ba + 1 {
            m = m.merge(self.block_range(ba + 1, bb - 1));
        }
        m.merge(self.head[b - 1])
    }

    /// Squared error of points `a..b` around their mean.
    fn sse(&self, a: usize, b: usize) -> f64 {
        self.range(a, b).m2
    }

    fn mean(&self, a: usize, b: usize) -> f64 {
        self.range(a, b).mean
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
        let mut r = rng.uniform() * s.total_weight();
        (0..n)
            .find(|&i| {
                if r < s.ws[i] {
                    true
                } else {
                    r -= s.ws[i];
                    false
                }
            })
            .unwrap_or(n - 1)
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
/// partitions of the sorted values), at any size whose table of split
/// points (`k · distinct values` entries of 4 bytes) fits the memory limit
/// of [`hasten_core::memory`].
///
/// # Errors
/// No values, a non-finite value, `k` outside `1..=values.len()`;
/// [`Error::MemoryLimit`] when the split table would exceed the limit.
pub fn optimal_1d(values: &[f32], k: usize) -> Result<KMeans1d> {
    validate(values, k)?;
    let s = Sorted::new(values);
    if let Some(done) = exact_distinct(&s, k) {
        return Ok(done);
    }
    let n = s.xs.len();
    if u32::try_from(n).is_err() {
        return Err(Error::param(
            "distinct values for optimal 1-D k-means",
            n,
            format!("<= {}", u32::MAX),
        ));
    }
    let cells = k
        .checked_mul(n + 1)
        .ok_or_else(|| Error::overflow("the split table of optimal 1-D k-means"))?;
    hasten_core::memory::check("the split table of optimal 1-D k-means", cells, 4)?;
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

    /// The previous solver, kept as a second opinion on moderate inputs:
    /// the same divide-and-conquer DP on prefix sums centred at the mean.
    fn prefix_sum_dp(values: &[f32], k: usize) -> f64 {
        let mut xs: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
        xs.sort_by(f64::total_cmp);
        let n = xs.len();
        let shift = xs.iter().sum::<f64>() / n as f64;
        let (mut p1, mut p2) = (vec![0.0; n + 1], vec![0.0; n + 1]);
        for i in 0..n {
            let d = xs[i] - shift;
            p1[i + 1] = p1[i] + d;
            p2[i + 1] = p2[i] + d * d;
        }
        let sse = |a: usize, b: usize| {
            let w = (b - a) as f64;
            let s1 = p1[b] - p1[a];
            (p2[b] - p2[a] - s1 * s1 / w).max(0.0)
        };
        let mut prev: Vec<f64> = (0..=n)
            .map(|i| if i == 0 { 0.0 } else { sse(0, i) })
            .collect();
        for m in 1..k {
            let mut cur = vec![f64::INFINITY; n + 1];
            let mut stack = vec![(m + 1, n, m, n - 1)];
            while let Some((lo, hi, olo, ohi)) = stack.pop() {
                if lo > hi {
                    continue;
                }
                let mid = (lo + hi) / 2;
                let (mut best, mut arg) = (f64::INFINITY, olo);
                for j in olo..=ohi.min(mid - 1) {
                    let v = prev[j] + sse(j, mid);
                    if v < best {
                        best = v;
                        arg = j;
                    }
                }
                cur[mid] = best;
                if mid > lo {
                    stack.push((lo, mid - 1, olo, arg));
                }
                stack.push((mid + 1, hi, arg, ohi));
            }
            prev = cur;
        }
        prev[n]
    }

    /// Exact (to rounding of each term) weight, mean and centred sum of
    /// squares of sorted points, two-pass: the independent truth for the
    /// range structure.
    fn two_pass(xs: &[f64], ws: &[f64]) -> (f64, f64, f64) {
        let w: f64 = ws.iter().sum();
        let mean = xs.iter().zip(ws).map(|(x, w)| x * w).sum::<f64>() / w;
        let mean = if mean.is_finite() {
            mean
        } else {
            // Σ w·x overflowed: average the scaled values.
            let s = xs.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            s * (xs.iter().zip(ws).map(|(x, w)| (x / s) * w).sum::<f64>() / w)
        };
        let m2 = xs.iter().zip(ws).map(|(x, w)| w * (x - mean).powi(2)).sum();
        (w, mean, m2)
    }

    #[test]
    fn range_moments_match_two_pass_sums() {
        // Wide-range values: subnormals, ordinary values and values near
        // f32::MAX, with multiplicities; every range of up to four blocks.
        let mut rng = SeededRng::new(9);
        let mut values = Vec::new();
        for i in 0..150 {
            let v = match i % 5 {
                0 => 1e-40f32 * (1.0 + rng.uniform() as f32),
                1 => rng.normal() as f32,
                2 => 3e38f32 * (rng.uniform() as f32),
                3 => -1e31f32 * (1.0 + rng.uniform() as f32),
                _ => values.last().copied().unwrap_or(0.0),
            };
            values.push(v);
        }
        let s = Sorted::new(&values);
        let n = s.xs.len();
        for a in 0..n {
            for b in a + 1..=n.min(a + 4 * BLOCK + 3) {
                let (w, mean, m2) = two_pass(&s.xs[a..b], &s.ws[a..b]);
                let got = s.range(a, b);
                assert_eq!(got.w, w);
                let scale = s.xs[a].abs().max(s.xs[b - 1].abs());
                assert!(
                    (got.mean - mean).abs() <= 1e-12 * scale,
                    "{a}..{b}: mean {} vs {mean}",
                    got.mean
                );
                assert!(
                    (got.m2 - m2).abs() <= 1e-12 * m2 + f64::MIN_POSITIVE,
                    "{a}..{b}: m2 {} vs {m2}",
                    got.m2
                );
            }
        }
    }

    #[test]
    fn wide_range_regression_has_the_exact_optimum() {
        // The saved proptest case: one value near 3e31 beside subnormals.
        let values = [
            2.823_416_8e31f32,
            -8.21091e-40,
            -0.0,
            -2.230347e-39,
            -2.452732e-39,
            -4.202_737_3e-14,
        ];
        let opt = optimal_1d(&values, 4).unwrap();
        let bf = brute_force(&values, 4);
        assert!(
            (opt.objective - bf).abs() <= 1e-12 * bf + 1e-300,
            "{} vs brute force {bf}",
            opt.objective
        );
        // The optimum keeps 3e31 alone, -4.2e-14 alone, and splits the four
        // values within 3e-39 of zero into two clusters; their means lie
        // inside their clusters.
        assert_eq!(opt.centroids[3], f64::from(2.823_416_8e31f32));
        assert_eq!(opt.centroids[0], f64::from(-4.202_737_3e-14f32));
        for c in &opt.centroids[1..3] {
            assert!(c.abs() < 3e-39, "centroid {c}");
        }
        let lloyd = lloyd_1d(&values, 4, 50, &mut SeededRng::new(0)).unwrap();
        assert!(opt.objective <= lloyd.objective * (1.0 + 1e-9));
    }

    #[test]
    fn optimal_equals_brute_force_on_wide_range_values() {
        let mut rng = SeededRng::new(10);
        let scales = [1e-40f32, 1e-20, 1.0, 1e20, 1e31, 3e38];
        for trial in 0..60 {
            let n = 3 + trial % 5;
            let k = 1 + trial % 3;
            let values: Vec<f32> = (0..n)
                .map(|_| {
                    let s = scales[rng.below(scales.len())];
                    let v = (rng.uniform() * 2.0 - 1.0) as f32 * s;
                    v.clamp(-f32::MAX, f32::MAX)
                })
                .collect();
            let opt = optimal_1d(&values, k).unwrap();
            let bf = brute_force(&values, k);
            assert!(
                (opt.objective - bf).abs() <= 1e-9 * bf + 1e-300,
                "{values:?}, k {k}: {} vs {bf}",
                opt.objective
            );
        }
    }

    #[test]
    fn optimal_agrees_with_the_prefix_sum_dp_on_moderate_inputs() {
        let mut rng = SeededRng::new(12);
        for (n, k) in [(300, 4), (700, 9), (1500, 16)] {
            let values: Vec<f32> = (0..n).map(|_| (rng.normal() * 5.0) as f32).collect();
            let opt = optimal_1d(&values, k).unwrap();
            let old = prefix_sum_dp(&values, k);
            assert!(
                (opt.objective - old).abs() <= 1e-9 * old,
                "n {n} k {k}: {} vs {old}",
                opt.objective
            );
        }
    }

    /// The optimum over every partition of the sorted values into exactly
    /// `k` contiguous non-empty groups (equal values may be split), each
    /// group's cost by two-pass sums: the truth for `n ≤ 12`, `k ≤ 4`.
    fn contiguous_brute_force(values: &[f32], k: usize) -> f64 {
        let mut xs: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
        xs.sort_by(f64::total_cmp);
        let n = xs.len();
        let ones = vec![1.0; n];
        let cost = |a: usize, b: usize| two_pass(&xs[a..b], &ones[a..b]).2;
        let mut best = f64::INFINITY;
        // Cut masks: bit i set ⇒ a group ends after sorted value i.
        for mask in 0u32..(1 << (n - 1)) {
            if mask.count_ones() as usize != k - 1 {
                continue;
            }
            let (mut start, mut total) = (0, 0.0);
            for i in 0..n - 1 {
                if mask >> i & 1 == 1 {
                    total += cost(start, i + 1);
                    start = i + 1;
                }
            }
            best = best.min(total + cost(start, n));
        }
        best
    }

    #[test]
    fn optimal_equals_contiguous_brute_force_up_to_twelve_values() {
        // Ordinary, wide-range and duplicate-heavy inputs.
        let mut rng = SeededRng::new(13);
        let scales = [1e-40f32, 1e-20, 1.0, 1e20, 1e31, 3e38];
        for trial in 0..90 {
            let n = 4 + trial % 9;
            let k = 1 + trial % 4;
            let values: Vec<f32> = (0..n)
                .map(|_| match trial % 3 {
                    0 => rng.normal() as f32,
                    1 => {
                        let s = scales[rng.below(scales.len())];
                        ((rng.uniform() * 2.0 - 1.0) as f32 * s).clamp(-f32::MAX, f32::MAX)
                    }
                    // Three distinct levels, many repeats.
                    _ => [-1.5f32, 0.25, 4.0][rng.below(3)],
                })
                .collect();
            let opt = optimal_1d(&values, k).unwrap();
            let bf = contiguous_brute_force(&values, k);
            // Both sides round each term once: relative agreement to a few
            // ulps of f64, times the number of terms.
            assert!(
                (opt.objective - bf).abs() <= 1e-12 * bf,
                "{values:?}, k {k}: {} vs {bf}",
                opt.objective
            );
            let direct = direct_objective(&values, &opt.centroids);
            assert!(
                (direct - bf).abs() <= 1e-12 * bf,
                "{values:?}, k {k}: centroids give {direct} vs {bf}"
            );
            if n <= 7 {
                // Contiguity loses nothing: all k^n labelings agree.
                let labelings = brute_force(&values, k);
                assert!((labelings - bf).abs() <= 1e-9 * bf + 1e-300);
            }
        }
    }

    #[test]
    fn optimal_runs_above_the_old_twenty_million_cell_refusal() {
        // 1.4 M distinct values, k = 16: 22.4 M table cells, above the
        // former 20 M cap. Lloyd cannot do better, the reported objective is
        // the direct one, and the optimum is a Lloyd fixed point.
        let n = 1_400_000usize;
        let values: Vec<f32> = (0..n)
            .map(|i| {
                let t = i as f32 / n as f32;
                // A smooth non-uniform density: denser near zero.
                (t * 2.0 - 1.0).powi(3) * 4.0 + t
            })
            .collect();
        let mut distinct = values.clone();
        distinct.sort_by(f32::total_cmp);
        distinct.dedup();
        assert!(16 * distinct.len() > 20_000_000, "{}", distinct.len());
        let opt = optimal_1d(&values, 16).unwrap();
        assert_eq!(opt.centroids.len(), 16);
        let direct = direct_objective(&values, &opt.centroids);
        assert!((direct - opt.objective).abs() <= 1e-9 * direct);
        let lloyd = lloyd_1d(&values, 16, 30, &mut SeededRng::new(1)).unwrap();
        assert!(opt.objective <= lloyd.objective * (1.0 + 1e-12));
        // Each centroid is the mean of its Voronoi cell (a DP optimum is a
        // Lloyd fixed point).
        let codes = assign_1d(&values, &opt.centroids);
        let mut sums = [0.0f64; 16];
        let mut counts = [0usize; 16];
        for (&v, &c) in values.iter().zip(&codes) {
            sums[c as usize] += f64::from(v);
            counts[c as usize] += 1;
        }
        for j in 0..16 {
            let mean = sums[j] / counts[j] as f64;
            assert!(
                (mean - opt.centroids[j]).abs() <= 1e-9,
                "cluster {j}: mean {mean} vs {}",
                opt.centroids[j]
            );
        }
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
            // Every finite input, however wide its range: the optimum is
            // never worse than Lloyd's local optimum.
            if let (Ok(a), Ok(b)) = (a, b) {
                prop_assert!(
                    b.objective <= a.objective * (1.0 + 1e-9),
                    "optimal {} > Lloyd {}", b.objective, a.objective
                );
                for w in b.centroids.windows(2) {
                    prop_assert!(w[0] <= w[1]);
                }
            }
        }
    }
}
