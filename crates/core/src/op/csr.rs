//! [`Csr`]: compressed sparse rows, the storage of the unstructured-sparsity
//! ops [`super::SparseConv`] and [`super::SparseLinear`] (survey section 6.1:
//! magnitude pruning of individual weights, \[72\]).
//!
//! Layout: `row_ptr` has `rows + 1` entries, `row_ptr\[0\] = 0`, non-decreasing,
//! `row_ptr[rows] = nnz`; the non-zeros of row `r` are
//! `values[row_ptr[r]..row_ptr[r + 1]]` at columns
//! `col_idx[row_ptr[r]..row_ptr[r + 1]]`, strictly increasing within a row.
//! Indices are `u32`: 4 bytes each in the cost model.

use ndarray::{Array2, ArrayView2};

use crate::error::{ensure_finite, Error, Result};

/// A `rows × cols` sparse f32 matrix in CSR form.
#[derive(Debug, Clone, PartialEq)]
pub struct Csr {
    rows: usize,
    cols: usize,
    row_ptr: Vec<u32>,
    col_idx: Vec<u32>,
    values: Vec<f32>,
}

impl Csr {
    /// Validates the CSR invariants listed in the module docs.
    pub fn new(
        rows: usize,
        cols: usize,
        row_ptr: Vec<u32>,
        col_idx: Vec<u32>,
        values: Vec<f32>,
    ) -> Result<Self> {
        if rows == 0 || cols == 0 {
            return Err(Error::EmptyDimension {
                what: "CSR matrix".into(),
                shape: format!("[{rows}, {cols}]"),
            });
        }
        if cols > u32::MAX as usize || values.len() > u32::MAX as usize {
            return Err(Error::param(
                "CSR size",
                format!("{cols} columns, {} non-zeros", values.len()),
                "<= u32::MAX",
            ));
        }
        if row_ptr.len() != rows + 1 {
            return Err(Error::shape("CSR row_ptr length", rows + 1, row_ptr.len()));
        }
        if col_idx.len() != values.len() {
            return Err(Error::shape(
                "CSR col_idx length (= values length)",
                values.len(),
                col_idx.len(),
            ));
        }
        if row_ptr[0] != 0 || row_ptr[rows] as usize != values.len() {
            return Err(Error::param(
                "CSR row_ptr ends",
                format!("[{}, .., {}]", row_ptr[0], row_ptr[rows]),
                format!("[0, .., {}]", values.len()),
            ));
        }
        for r in 0..rows {
            let (a, b) = (row_ptr[r] as usize, row_ptr[r + 1] as usize);
            if a > b {
                return Err(Error::param(
                    format!("CSR row_ptr[{}]", r + 1),
                    b,
                    format!(">= row_ptr[{r}] = {a}"),
                ));
            }
            // The ends match, but a row may still point past them
            // ([0, 5, 0] with no non-zeros).
            if b > values.len() {
                return Err(Error::param(
                    format!("CSR row_ptr[{}]", r + 1),
                    b,
                    format!("<= {} (the non-zeros)", values.len()),
                ));
            }
            let row = &col_idx[a..b];
            if let Some(&bad) = row.iter().find(|&&c| c as usize >= cols) {
                return Err(Error::param(
                    format!("CSR column in row {r}"),
                    bad,
                    format!("< {cols}"),
                ));
            }
            if row.windows(2).any(|w| w[0] >= w[1]) {
                return Err(Error::param(
                    format!("CSR columns of row {r}"),
                    format!("{row:?}"),
                    "strictly increasing",
                ));
            }
        }
        ensure_finite("CSR values", values.iter())?;
        Ok(Csr {
            rows,
            cols,
            row_ptr,
            col_idx,
            values,
        })
    }

    /// The non-zero entries of a dense matrix (exact zeros are dropped).
    pub fn from_dense(dense: ArrayView2<f32>) -> Result<Self> {
        let (rows, cols) = dense.dim();
        let mut row_ptr = Vec::with_capacity(rows + 1);
        let (mut col_idx, mut values) = (Vec::new(), Vec::new());
        row_ptr.push(0u32);
        for r in 0..rows {
            for c in 0..cols {
                let v = dense[[r, c]];
                if v != 0.0 {
                    col_idx.push(c as u32);
                    values.push(v);
                }
            }
            row_ptr.push(values.len() as u32);
        }
        Csr::new(rows, cols, row_ptr, col_idx, values)
    }

    /// The equivalent dense matrix.
    pub fn to_dense(&self) -> Array2<f32> {
        let mut d = Array2::zeros((self.rows, self.cols));
        for r in 0..self.rows {
            for (c, v) in self.row(r) {
                d[[r, c]] = v;
            }
        }
        d
    }

    /// The `(column, value)` pairs of row `r` (`r < rows`).
    pub fn row(&self, r: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        let (a, b) = (self.row_ptr[r] as usize, self.row_ptr[r + 1] as usize);
        self.col_idx[a..b]
            .iter()
            .zip(&self.values[a..b])
            .map(|(&c, &v)| (c as usize, v))
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row pointers, `rows + 1` entries.
    pub fn row_ptr(&self) -> &[u32] {
        &self.row_ptr
    }

    /// Column index of each non-zero.
    pub fn col_idx(&self) -> &[u32] {
        &self.col_idx
    }

    /// Value of each non-zero.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Number of stored non-zeros.
    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// `nnz / (rows · cols)`.
    pub fn density(&self) -> f64 {
        self.nnz() as f64 / (self.rows * self.cols) as f64
    }

    /// Bytes held: 4 per value, 4 per column index, 4 per row pointer.
    pub fn bytes(&self) -> u64 {
        4 * (2 * self.nnz() + self.rows + 1) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::arr2;

    #[test]
    fn round_trip_and_layout() {
        let d = arr2(&[[0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, -3.0]]);
        let c = Csr::from_dense(d.view()).unwrap();
        assert_eq!(c.row_ptr(), &[0, 1, 1, 3]);
        assert_eq!(c.col_idx(), &[1, 0, 2]);
        assert_eq!(c.values(), &[2.0, 1.0, -3.0]);
        assert_eq!(c.to_dense(), d);
        assert_eq!(c.bytes(), 4 * (6 + 4));
    }

    #[test]
    fn invalid_layouts_are_rejected() {
        assert!(Csr::new(1, 2, vec![0, 2], vec![1, 0], vec![1.0, 2.0]).is_err());
        assert!(Csr::new(1, 2, vec![0, 1], vec![2], vec![1.0]).is_err());
        assert!(Csr::new(2, 2, vec![0, 1], vec![0], vec![1.0]).is_err());
        assert!(Csr::new(2, 2, vec![0, 1, 0], vec![0], vec![1.0]).is_err());
        assert!(Csr::new(1, 2, vec![0, 1], vec![0], vec![f32::NAN]).is_err());
        assert!(Csr::new(0, 2, vec![0], vec![], vec![]).is_err());
        // Ends that match the (empty) non-zeros around a row past them.
        assert!(Csr::new(2, 2, vec![0, 5, 0], vec![], vec![]).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]
        #[test]
        fn random_parts_never_panic(
            rows in 0usize..4, cols in 0usize..4,
            row_ptr in proptest::collection::vec(0u32..6, 0..6),
            col_idx in proptest::collection::vec(0u32..6, 0..6),
            values in proptest::collection::vec(-2.0f32..2.0, 0..6),
        ) {
            if let Ok(c) = Csr::new(rows, cols, row_ptr, col_idx, values) {
                proptest::prop_assert_eq!(Csr::from_dense(c.to_dense().view()).map(|d| d.to_dense()), Ok(c.to_dense()));
            }
        }
    }
}
