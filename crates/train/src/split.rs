//! How the training kernels split a parallel loop: into leaves of at most
//! `1/LEAVES` of its items. Rayon's default splitting hands each of two
//! threads about half of a loop in one piece; a worker the operating system
//! deschedules then holds back that half while the other idles at the end
//! of the loop. With small leaves it holds back one leaf and the others
//! steal the rest. Which items form a leaf never changes a result: every
//! item writes its own output and reductions are summed in item order.

/// Leaves per parallel loop (at least; more when items are few).
const LEAVES: usize = 64;

/// The largest leaf, in items, for a parallel loop over `items` items.
pub(crate) fn leaf(items: usize) -> usize {
    items.div_ceil(LEAVES).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_are_small_and_never_empty() {
        assert_eq!(leaf(0), 1);
        assert_eq!(leaf(1), 1);
        assert_eq!(leaf(128), 2);
        assert_eq!(leaf(129), 3);
        assert!((1..5000).all(|n| leaf(n) * LEAVES >= n && (leaf(n) - 1) * LEAVES < n));
    }
}
