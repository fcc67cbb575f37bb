//! npy arrays (NumPy's `.npy` format) through `ndarray-npy`.

use std::fs::File;
use std::path::Path;

use ndarray::ArrayD;
use ndarray_npy::ReadNpyExt;

use crate::error::{Result, TrainError};

fn read<T: ndarray_npy::ReadableElement>(path: &Path) -> Result<ArrayD<T>> {
    let what = path.display().to_string();
    let file = File::open(path).map_err(|source| TrainError::Io {
        path: path.into(),
        source,
    })?;
    ArrayD::<T>::read_npy(std::io::BufReader::new(file)).map_err(|e| TrainError::Format {
        format: "npy",
        what,
        reason: e.to_string(),
    })
}

/// Reads an f32 `.npy` array of any rank.
pub fn read_npy_f32(path: &Path) -> Result<ArrayD<f32>> {
    read(path)
}

/// Reads a u8 `.npy` array of any rank (images, labels).
pub fn read_npy_u8(path: &Path) -> Result<ArrayD<u8>> {
    read(path)
}

/// Reads an i64 `.npy` array of any rank (NumPy's default integer labels).
pub fn read_npy_i64(path: &Path) -> Result<ArrayD<i64>> {
    read(path)
}
