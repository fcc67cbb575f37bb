//! Tensor-Train (TT-matrix) fully connected layer, Novikov et al. \[26\]
//! (survey section 2).
//!
//! The `out × in` weight with `out = Π m_k`, `in = Π n_k` is stored as cores
//! `G_k[r_{k−1}, m_k, n_k, r_k]` (`r_0 = r_d = 1`):
//! `W[(o_1…o_d), (i_1…i_d)] = G_1[:, o_1, i_1, :] · G_2[:, o_2, i_2, :] ⋯ G_d[:, o_d, i_d, :]`,
//! row and column multi-indices in row-major order (first mode slowest).
//! The forward contracts one core at a time (last to first), costing
//! `Σ_k (Π_{j<k} n_j)(Π_{j>k} m_j) r_{k−1} m_k n_k r_k` MACs.

use ndarray::{Array1, Array2, Array4};

use super::common::flatten_samples;
use super::{input_shape_of, Operator};
use crate::cost::Cost;
use crate::error::{ensure_finite, ensure_nonempty, Error, Result};
use crate::shape::ActShape;

/// A fully connected layer in TT-matrix format.
#[derive(Debug, Clone, PartialEq)]
pub struct TtLinear {
    cores: Vec<Array4<f32>>,
    bias: Option<Array1<f32>>,
}

impl TtLinear {
    /// Validates the cores (`[r_{k−1}, m_k, n_k, r_k]`, boundary ranks 1,
    /// adjacent ranks equal, finite, non-empty) and the bias (`Π m_k` entries).
    pub fn new(cores: Vec<Array4<f32>>, bias: Option<Array1<f32>>) -> Result<Self> {
        if cores.is_empty() {
            return Err(Error::EmptyDimension {
                what: "TT cores".into(),
                shape: "0 cores".into(),
            });
        }
        for (k, g) in cores.iter().enumerate() {
            ensure_nonempty(&format!("TT core {k}"), g.shape())?;
            ensure_finite(&format!("TT core {k}"), g.iter())?;
            let expected_left = if k == 0 { 1 } else { cores[k - 1].shape()[3] };
            if g.shape()[0] != expected_left {
                return Err(Error::shape(
                    format!("TT core {k} left rank"),
                    expected_left,
                    g.shape()[0],
                ));
            }
        }
        let last = cores.last().expect("non-empty").shape()[3];
        if last != 1 {
            return Err(Error::shape("TT last core right rank", 1, last));
        }
        let out: usize = cores.iter().map(|g| g.shape()[1]).product();
        if let Some(b) = &bias {
            if b.len() != out {
                return Err(Error::shape("TT bias length", out, b.len()));
            }
            ensure_finite("TT bias", b.iter())?;
        }
        Ok(TtLinear {
            cores: cores
                .into_iter()
                .map(|g| g.as_standard_layout().into_owned())
                .collect(),
            bias,
        })
    }

    /// The cores `[r_{k−1}, m_k, n_k, r_k]`.
    pub fn cores(&self) -> &[Array4<f32>] {
        &self.cores
    }

    /// The bias.
    pub fn bias(&self) -> Option<&Array1<f32>> {
        self.bias.as_ref()
    }

    /// Output modes `m_k`.
    pub fn out_modes(&self) -> Vec<usize> {
        self.cores.iter().map(|g| g.shape()[1]).collect()
    }

    /// Input modes `n_k`.
    pub fn in_modes(&self) -> Vec<usize> {
        self.cores.iter().map(|g| g.shape()[2]).collect()
    }

    /// TT ranks `r_0 = 1, r_1, …, r_d = 1`.
    pub fn ranks(&self) -> Vec<usize> {
        let mut r = vec![1];
        r.extend(self.cores.iter().map(|g| g.shape()[3]));
        r
    }

    /// `Π m_k`.
    pub fn out_features(&self) -> usize {
        self.out_modes().iter().product()
    }

    /// `Π n_k`.
    pub fn in_features(&self) -> usize {
        self.in_modes().iter().product()
    }

    /// The dense `[out, in]` weight, each entry the product of core slices
    /// (accumulated in f64).
    pub fn to_dense(&self) -> Array2<f64> {
        let cores: Vec<Array4<f64>> = self.cores.iter().map(|g| g.mapv(f64::from)).collect();
        let dense = tt_prefixes(&cores).pop().expect("at least one core");
        dense
            .into_shape_with_order((self.out_features(), self.in_features()))
            .expect("r_d = 1")
    }

    /// The forward by sequential core contraction (the computation [`Operator::cost`]
    /// counts), in f64, on `[batch, in]`; returns `[batch, out]` without bias.
    pub fn contract(&self, x: &Array2<f64>) -> Result<Array2<f64>> {
        if x.ncols() != self.in_features() {
            return Err(Error::shape(
                "TT input features",
                self.in_features(),
                x.ncols(),
            ));
        }
        let batch = x.nrows();
        let d = self.cores.len();
        let ns = self.in_modes();
        // State: [batch, P = Π_{j<k} n_j, n_k·r_k-side…] kept as a flat
        // [batch·Π_{j≤k} n_j, r_k, Π_{j>k} m_j] buffer.
        let mut lead: usize = ns.iter().product(); // Π_{j≤k} n_j for k = d
        let mut tail = 1usize; // Π_{j>k} m_j
        let mut r_right = 1usize;
        let mut state: Vec<f64> = x.iter().copied().collect(); // [batch·lead, 1, 1]
        for k in (0..d).rev() {
            let g = &self.cores[k];
            let (r0, m, n, r1) = g.dim();
            debug_assert_eq!(r1, r_right);
            let outer = batch * lead / n; // batch · Π_{j<k} n_j
            let mut next = vec![0.0f64; outer * r0 * m * tail];
            for p in 0..outer {
                for a in 0..r0 {
                    for mm in 0..m {
                        for t in 0..tail {
                            let mut v = 0.0;
                            for b in 0..n {
                                for s in 0..r1 {
                                    v += f64::from(g[[a, mm, b, s]])
                                        * state[((p * n + b) * r1 + s) * tail + t];
                                }
                            }
                            next[((p * r0 + a) * m + mm) * tail + t] = v;
                        }
                    }
                }
            }
            state = next;
            lead /= n;
            tail *= m;
            r_right = r0;
        }
        let out = self.out_features();
        Array2::from_shape_vec((batch, out), state).map_err(|e| Error::shape("TT output", out, e))
    }
}

impl Operator for TtLinear {
    fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        if input.checked_len()? != self.in_features() {
            return Err(Error::shape(
                "TT-linear input features (C·H·W)",
                self.in_features(),
                format!("{} ({input})", input.len()),
            ));
        }
        Ok(ActShape::flat(self.out_features()))
    }

    fn cost(&self, input: ActShape) -> Result<Cost> {
        let out = self.output_shape(input)?;
        let ns = self.in_modes();
        let ms = self.out_modes();
        let mut macs = 0u64;
        for (k, g) in self.cores.iter().enumerate() {
            let before: usize = ns[..k].iter().product();
            let after: usize = ms[k + 1..].iter().product();
            macs += (before * after * g.len()) as u64;
        }
        let params = self.cores.iter().map(|g| g.len() as u64).sum::<u64>()
            + self.bias.as_ref().map_or(0, |b| b.len() as u64);
        Cost::f32_op(macs, params, input.len(), out.len())
    }

    /// `y = W x + b` by contracting the cores one at a time
    /// ([`TtLinear::contract`], f64), never forming the dense `W` — which
    /// would not fit in memory for the large layers TT is meant for. The
    /// tests check it against the dense product of the cores.
    fn reference_forward(&self, input: &ndarray::Array4<f32>) -> Result<ndarray::Array4<f32>> {
        let shape = input_shape_of(input)?;
        let out = self.output_shape(shape)?;
        let batch = input.shape()[0];
        let flat = flatten_samples(input, shape).mapv(f64::from);
        let y = self.contract(&flat)?;
        let mut result = super::common::zeros_output::<f32>("TT-linear", out, batch)?;
        for s in 0..batch {
            for o in 0..out.channels {
                let b = self.bias.as_ref().map_or(0.0, |b| f64::from(b[o]));
                result[[s, o, 0, 0]] = (y[[s, o]] + b) as f32;
            }
        }
        Ok(result)
    }
}

/// The partial products of a TT chain: entry `k` is `[Π_{j<k} m_j ·
/// Π_{j<k} n_j, r_k]` (row `o·cols + i` for the row and column prefixes `o`,
/// `i`); the last entry, `[out·in, 1]`, is the dense weight.
pub(crate) fn tt_prefixes(cores: &[Array4<f64>]) -> Vec<Array2<f64>> {
    let mut out = vec![Array2::<f64>::ones((1, 1))];
    let (mut rows, mut cols) = (1usize, 1usize);
    for g in cores {
        let acc = out.last().expect("seeded");
        let (r0, m, n, r1) = g.dim();
        let mut next = Array2::<f64>::zeros((rows * m * cols * n, r1));
        for o in 0..rows {
            for i in 0..cols {
                let prev = acc.row(o * cols + i);
                for a in 0..m {
                    for b in 0..n {
                        let row = (o * m + a) * (cols * n) + (i * n + b);
                        for s in 0..r1 {
                            next[[row, s]] = (0..r0).map(|r| prev[r] * g[[r, a, b, s]]).sum();
                        }
                    }
                }
            }
        }
        out.push(next);
        rows *= m;
        cols *= n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SeededRng;

    fn cores(modes: &[(usize, usize)], ranks: &[usize], seed: u64) -> Vec<Array4<f32>> {
        let mut rng = SeededRng::new(seed);
        modes
            .iter()
            .enumerate()
            .map(|(k, &(m, n))| rng.normal_array((ranks[k], m, n, ranks[k + 1]), 1.0))
            .collect()
    }

    #[test]
    fn one_core_is_a_dense_matrix() {
        let g = cores(&[(3, 4)], &[1, 1], 1);
        let tt = TtLinear::new(g.clone(), None).unwrap();
        let w = tt.to_dense();
        for o in 0..3 {
            for i in 0..4 {
                assert_eq!(w[[o, i]], f64::from(g[0][[0, o, i, 0]]));
            }
        }
    }

    #[test]
    fn dense_entry_is_product_of_core_slices() {
        let g = cores(&[(2, 3), (3, 2), (2, 2)], &[1, 2, 3, 1], 2);
        let tt = TtLinear::new(g.clone(), None).unwrap();
        let w = tt.to_dense();
        // o = (1, 2, 0), i = (2, 1, 1): row 1·6 + 2·2 + 0 = 10, col 2·4 + 1·2 + 1 = 11.
        let slice = |k: usize, a: usize, b: usize| {
            let s = g[k].shape();
            Array2::from_shape_fn((s[0], s[3]), |(r, t)| f64::from(g[k][[r, a, b, t]]))
        };
        let p = slice(0, 1, 2).dot(&slice(1, 2, 1)).dot(&slice(2, 0, 1));
        assert!((w[[10, 11]] - p[[0, 0]]).abs() < 1e-9);
    }

    #[test]
    fn contraction_matches_dense_and_cost_formula() {
        let modes = [(2, 3), (4, 2), (3, 2)];
        let ranks = [1, 3, 2, 1];
        let tt = TtLinear::new(cores(&modes, &ranks, 3), Some(Array1::zeros(24))).unwrap();
        let x = SeededRng::new(4).normal_array_f64((2, 12), 1.0);
        let fast = tt.contract(&x).unwrap();
        let dense = x.dot(&tt.to_dense().t());
        assert!((&fast - &dense).iter().all(|v| v.abs() < 1e-9));
        // Σ_k (Π_{j<k} n_j)(Π_{j>k} m_j) r_{k−1} m_k n_k r_k.
        let macs = (4 * 3) * (2 * 3 * 3) + (3 * 3) * (3 * 4 * 2 * 2) + (3 * 2) * (2 * 3 * 2);
        let cost = tt.cost(ActShape::flat(12)).unwrap();
        assert_eq!(cost.macs, macs as u64);
        assert_eq!(cost.params, (18 + 48 + 12 + 24) as u64);
        let y = tt
            .reference_forward(
                &x.mapv(|v| v as f32)
                    .into_shape_with_order((2, 12, 1, 1))
                    .unwrap(),
            )
            .unwrap();
        assert!((y[[1, 5, 0, 0]] as f64 - dense[[1, 5]]).abs() < 1e-4);
    }

    #[test]
    fn invalid_cores_are_rejected() {
        assert!(TtLinear::new(vec![], None).is_err());
        assert!(TtLinear::new(cores(&[(2, 2), (2, 2)], &[1, 2, 2], 1), None).is_err());
        let mut g = cores(&[(2, 2), (2, 2)], &[1, 2, 1], 1);
        g[1] = Array4::zeros((3, 2, 2, 1));
        assert!(TtLinear::new(g, None).is_err());
        let g = cores(&[(2, 2)], &[2, 1], 1);
        assert!(TtLinear::new(g, None).is_err());
        let g = cores(&[(2, 2)], &[1, 1], 1);
        assert!(TtLinear::new(g.clone(), Some(Array1::zeros(3))).is_err());
        let tt = TtLinear::new(g, None).unwrap();
        assert!(tt.output_shape(ActShape::flat(3)).is_err());
    }
}
