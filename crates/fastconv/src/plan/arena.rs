//! The activation arena: every intermediate buffer of a plan is a range of
//! one allocation, assigned by liveness — buffers whose lifetimes (first
//! write to last read, over the step schedule) overlap get disjoint
//! ranges, the others may share memory. Placement is greedy by size (the
//! largest buffer first, each at the lowest offset that fits beside the
//! already placed buffers it overlaps in time), which is near the live-set
//! lower bound on the chains and residual graphs of CNNs.

use hasten_core::{Error, Result};

/// Floats per 64-byte line: every buffer starts on a cache line.
const ALIGN: usize = 16;

/// A buffer to place: its size in floats and the steps it is live in
/// (inclusive).
#[derive(Debug, Clone, Copy)]
pub(super) struct Lifetime {
    /// Floats.
    pub size: usize,
    /// First step that writes it.
    pub first: usize,
    /// Last step that reads or writes it (or the end, for outputs).
    pub last: usize,
}

/// Offsets (floats) of the buffers and the arena's total size: the smallest
/// prefix holding every buffer at its offset.
pub(super) fn assign(buffers: &[Lifetime]) -> Result<(Vec<usize>, usize)> {
    let overflow = || {
        Error::param(
            "plan activation arena size",
            "overflow",
            "a size that fits in memory",
        )
    };
    let mut order: Vec<usize> = (0..buffers.len()).collect();
    order.sort_by_key(|&b| (std::cmp::Reverse(buffers[b].size), buffers[b].first));
    let mut offsets = vec![0; buffers.len()];
    let mut placed: Vec<usize> = Vec::with_capacity(buffers.len());
    let mut total = 0usize;
    for b in order {
        let me = buffers[b];
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&o| buffers[o].first <= me.last && me.first <= buffers[o].last)
            .map(|&o| (offsets[o], offsets[o] + buffers[o].size))
            .collect();
        busy.sort_unstable();
        let mut at = 0usize;
        for (start, end) in busy {
            if at.checked_add(me.size).ok_or_else(overflow)? <= start {
                break;
            }
            at = at.max(end.checked_next_multiple_of(ALIGN).ok_or_else(overflow)?);
        }
        offsets[b] = at;
        total = total.max(at.checked_add(me.size).ok_or_else(overflow)?);
        placed.push(b);
    }
    Ok((offsets, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_lifetimes_get_disjoint_ranges() {
        let bufs = [
            Lifetime {
                size: 100,
                first: 0,
                last: 1,
            },
            Lifetime {
                size: 50,
                first: 1,
                last: 2,
            },
            Lifetime {
                size: 100,
                first: 2,
                last: 3,
            },
            Lifetime {
                size: 10,
                first: 0,
                last: 3,
            },
        ];
        let (off, total) = assign(&bufs).unwrap();
        for i in 0..bufs.len() {
            for j in 0..i {
                let (a, b) = (bufs[i], bufs[j]);
                if a.first <= b.last && b.first <= a.last {
                    let disjoint = off[i] + a.size <= off[j] || off[j] + b.size <= off[i];
                    assert!(disjoint, "{i} and {j} overlap");
                }
            }
        }
        assert!(total < 100 + 50 + 100 + 10);
        assert!(off.iter().all(|o| o % ALIGN == 0));
    }
}
