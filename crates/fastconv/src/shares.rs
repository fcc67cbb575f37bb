//! Equal shares of a step's work for the threads: `total` work units (a
//! GEMM's `MR × NR` output tiles, a packing pass's `KC × NR` panels) in a
//! fixed order, cut into contiguous ranges whose sizes differ by at most one
//! unit, and each range of a row-major grid cut into the few rectangles a
//! kernel can run. So at batch 1 every thread gets the same work, however
//! few output tiles a layer has (the parallelism of equation (1) of the
//! survey lies in its output tiles).

use std::ops::Range;

/// Floats a task of a streaming kernel (pooling) must read at least: a
/// rayon fork-join (waking a worker, then joining it) costs a few
/// microseconds, about the time one thread takes to stream this many floats
/// through such a kernel, so smaller tasks cost more than they save — e.g.
/// the global pooling of ResNet-8 at batch 1, 64 planes of 49 floats, is
/// one task, run on the calling thread.
pub(crate) const MIN_TASK_FLOATS: usize = 1 << 14;

/// The fewest items of `item_floats` floats each that a task of a parallel
/// loop over them gets (rayon's `with_min_len`), per [`MIN_TASK_FLOATS`].
pub(crate) fn min_items(item_floats: usize) -> usize {
    MIN_TASK_FLOATS.div_ceil(item_floats.max(1))
}

/// Share `s` of `shares` equal contiguous shares of `0..total`: sizes
/// `⌊total/shares⌋` or one more, in order, covering `0..total` once.
pub(crate) fn share(total: usize, shares: usize, s: usize) -> Range<usize> {
    debug_assert!(shares >= 1 && s < shares);
    let at = |s: usize| (s as u128 * total as u128 / shares as u128) as usize;
    at(s)..at(s + 1)
}

/// The range `range` of a row-major grid `width` units wide as at most
/// three rectangles `(rows, columns)`: a partial first row, whole rows, a
/// partial last row (empty ones left out).
pub(crate) fn rectangles(
    range: Range<usize>,
    width: usize,
) -> impl Iterator<Item = (Range<usize>, Range<usize>)> {
    debug_assert!(width >= 1);
    let (mut a, b) = (range.start, range.end.max(range.start));
    let mut out: [Option<(Range<usize>, Range<usize>)>; 3] = [None, None, None];
    if a < b && a % width != 0 {
        let row = a / width;
        let end = b.min((row + 1) * width);
        out[0] = Some((row..row + 1, a % width..end - row * width));
        a = end;
    }
    if a < b && b / width > a / width {
        out[1] = Some((a / width..b / width, 0..width));
        a = b / width * width;
    }
    if a < b {
        let row = a / width;
        out[2] = Some((row..row + 1, 0..b - a));
    }
    out.into_iter().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_get_at_least_the_minimum_work_and_one_item() {
        for floats in [
            0,
            1,
            49,
            196,
            784,
            MIN_TASK_FLOATS - 1,
            MIN_TASK_FLOATS,
            1 << 20,
        ] {
            let n = min_items(floats);
            assert!(n >= 1, "{floats}");
            // Enough items to reach the minimum, and no more than needed.
            assert!(n * floats.max(1) >= MIN_TASK_FLOATS || n == 1, "{floats}");
            assert!((n - 1) * floats.max(1) < MIN_TASK_FLOATS, "{floats}");
        }
        // ResNet-8's global pooling at batch 1: 64 planes of 49, one task.
        assert!(min_items(49) >= 64);
    }

    #[test]
    fn shares_cover_once_and_differ_by_at_most_one() {
        for total in [0, 1, 7, 77, 98, 1000] {
            for shares in 1..=9 {
                let sizes: Vec<usize> = (0..shares)
                    .map(|s| {
                        let r = share(total, shares, s);
                        assert_eq!(r.start, s * total / shares);
                        r.len()
                    })
                    .collect();
                assert_eq!(share(total, shares, shares - 1).end, total);
                assert_eq!(sizes.iter().sum::<usize>(), total);
                let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                assert!(hi - lo <= 1, "{total} / {shares}: {sizes:?}");
            }
        }
    }

    #[test]
    fn rectangles_tile_the_range_exactly() {
        // Brute force: every cell of the range once, nothing else.
        for width in 1..=7 {
            for start in 0..30 {
                for end in start..30 {
                    let mut seen = [0u8; 30];
                    let rects: Vec<_> = rectangles(start..end, width).collect();
                    assert!(rects.len() <= 3);
                    for (rows, cols) in rects {
                        assert!(!rows.is_empty() && !cols.is_empty() && cols.end <= width);
                        for r in rows {
                            for c in cols.clone() {
                                seen[r * width + c] += 1;
                            }
                        }
                    }
                    for (i, &n) in seen.iter().enumerate() {
                        assert_eq!(
                            n,
                            u8::from((start..end).contains(&i)),
                            "{start}..{end} w{width}"
                        );
                    }
                }
            }
        }
    }
}
