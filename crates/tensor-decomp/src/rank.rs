//! [`RankSpec`]: how a method chooses its decomposition rank.
//!
//! The survey (section 2) stresses that "carefully tuning K for every
//! approximated layer is a crucial part" of every decomposition method. One
//! specification serves all of them: a fixed rank, a fraction of the spectral
//! energy to keep, a target MAC speed-up (Table 1's operation counts), or the
//! rank that empirical variational Bayesian matrix factorisation (EVBMF,
//! Nakajima et al.; used for Tucker-2 by Kim et al. \[24\]) selects.

use hasten_core::error::{Error, Result};
use hasten_core::ndarray::ArrayView2;

use crate::evbmf::evbmf_rank;

/// How to choose a decomposition rank.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RankSpec {
    /// Exactly this rank (1 ≤ rank ≤ the method's bound).
    Fixed(usize),
    /// The smallest rank whose leading singular values keep this fraction
    /// `0 < e ≤ 1` of the squared Frobenius norm.
    Energy(f64),
    /// The largest rank whose block is at least this many times cheaper in
    /// MACs than the layer (`s > 1`).
    Speedup(f64),
    /// The rank EVBMF selects on the relevant unfolding (matrix methods and
    /// Tucker-2 only).
    Evbmf,
}

impl RankSpec {
    /// Checks the parameter itself (not yet the bound of a particular layer).
    pub fn validate(&self) -> Result<()> {
        match *self {
            RankSpec::Fixed(0) => Err(Error::InvalidRank { rank: 0, max: 0 }),
            RankSpec::Energy(e) if !(e > 0.0 && e <= 1.0) => {
                Err(Error::param("energy fraction", e, "0 < energy <= 1"))
            }
            RankSpec::Speedup(s) if !(s.is_finite() && s > 1.0) => {
                Err(Error::param("target speed-up", s, "a finite value > 1"))
            }
            _ => Ok(()),
        }
    }
}

/// Everything a method knows that a rank choice may need.
pub(crate) struct RankProblem<'a> {
    /// The method, for error messages.
    pub method: &'a str,
    /// Largest admissible rank.
    pub max: usize,
    /// Singular values of the relevant unfolding (energy rule).
    pub spectrum: Option<&'a [f64]>,
    /// The matrix EVBMF analyses.
    pub matrix: Option<ArrayView2<'a, f64>>,
    /// MACs of the original layer.
    pub base_macs: u64,
    /// MACs of the block at a given rank (non-decreasing in the rank).
    pub macs: &'a dyn Fn(usize) -> Result<u64>,
}

impl RankSpec {
    /// Resolves the spec for `problem`.
    pub(crate) fn resolve(&self, p: &RankProblem<'_>) -> Result<usize> {
        self.validate().map_err(|e| match e {
            Error::InvalidRank { rank, .. } => Error::InvalidRank { rank, max: p.max },
            e => e,
        })?;
        match *self {
            RankSpec::Fixed(r) => {
                if r > p.max {
                    Err(Error::InvalidRank {
                        rank: r,
                        max: p.max,
                    })
                } else {
                    Ok(r)
                }
            }
            RankSpec::Energy(e) => {
                let s = p.spectrum.ok_or_else(|| {
                    Error::unsupported(p.method, "rank selection by energy (no spectrum)")
                })?;
                Ok(energy_rank(s, e).min(p.max))
            }
            RankSpec::Speedup(target) => speedup_rank(p, target),
            RankSpec::Evbmf => {
                let m = p
                    .matrix
                    .as_ref()
                    .ok_or_else(|| Error::unsupported(p.method, "rank selection by EVBMF"))?;
                let r = evbmf_rank(m.view())?;
                if r == 0 {
                    return Err(Error::numerical(
                        "EVBMF rank selection",
                        "no component lies above the estimated noise level",
                    ));
                }
                Ok(r.min(p.max))
            }
        }
    }
}

/// The smallest `r` with `Σ_{i<r} s_i² ≥ energy · Σ s_i²` (at least 1).
pub fn energy_rank(singular_values: &[f64], energy: f64) -> usize {
    let total: f64 = singular_values.iter().map(|s| s * s).sum();
    if total == 0.0 {
        return 1;
    }
    let mut acc = 0.0;
    for (i, s) in singular_values.iter().enumerate() {
        acc += s * s;
        // A relative slack of 1e-12 absorbs rounding in the running sum.
        if acc >= energy * total * (1.0 - 1e-12) {
            return i + 1;
        }
    }
    singular_values.len().max(1)
}

fn speedup_rank(p: &RankProblem<'_>, target: f64) -> Result<usize> {
    let fits = |r: usize| -> Result<bool> {
        let m = (p.macs)(r)?;
        Ok(m == 0 || p.base_macs as f64 / m as f64 >= target)
    };
    if p.max == 0 || !fits(1)? {
        let best = (p.macs)(1).map(|m| p.base_macs as f64 / m.max(1) as f64)?;
        return Err(Error::param(
            "target speed-up",
            target,
            format!("at most {best:.3} for {} (reached at rank 1)", p.method),
        ));
    }
    // MACs grow with the rank: binary search for the last rank that fits.
    let (mut lo, mut hi) = (1usize, p.max);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid)? {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem<'a>(macs: &'a dyn Fn(usize) -> Result<u64>, s: &'a [f64]) -> RankProblem<'a> {
        RankProblem {
            method: "test",
            max: 10,
            spectrum: Some(s),
            matrix: None,
            base_macs: 1000,
            macs,
        }
    }

    #[test]
    fn energy_rule_counts_squares() {
        // Energies 16, 9, 1 of total 26: 16/26 = 0.615, 25/26 = 0.96.
        let s = [4.0, 3.0, 1.0];
        assert_eq!(energy_rank(&s, 0.5), 1);
        assert_eq!(energy_rank(&s, 0.9), 2);
        assert_eq!(energy_rank(&s, 0.97), 3);
        assert_eq!(energy_rank(&s, 1.0), 3);
    }

    #[test]
    fn speedup_rule_is_largest_fitting_rank() {
        // MACs = 100·r: speed-up 1000 / (100 r) ≥ 2.5 ⇔ r ≤ 4.
        let macs = |r: usize| Ok(100 * r as u64);
        let s = [1.0];
        assert_eq!(
            RankSpec::Speedup(2.5).resolve(&problem(&macs, &s)).unwrap(),
            4
        );
        assert!(RankSpec::Speedup(20.0)
            .resolve(&problem(&macs, &s))
            .is_err());
    }

    #[test]
    fn fixed_rank_bounds() {
        let macs = |r: usize| Ok(r as u64);
        let s = [1.0];
        let p = problem(&macs, &s);
        assert_eq!(RankSpec::Fixed(10).resolve(&p).unwrap(), 10);
        assert_eq!(
            RankSpec::Fixed(11).resolve(&p).unwrap_err(),
            Error::InvalidRank { rank: 11, max: 10 }
        );
        assert_eq!(
            RankSpec::Fixed(0).resolve(&p).unwrap_err(),
            Error::InvalidRank { rank: 0, max: 10 }
        );
        assert!(RankSpec::Energy(0.0).resolve(&p).is_err());
        assert!(RankSpec::Energy(f64::NAN).resolve(&p).is_err());
        assert!(RankSpec::Speedup(1.0).resolve(&p).is_err());
        assert!(RankSpec::Evbmf.resolve(&p).is_err());
    }
}
