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
///
/// # Errors
/// [`TrainError::Io`] when the file cannot be opened, and
/// [`TrainError::Format`] for a file that is not an f32 `.npy` array.
///
/// ```
/// use hasten_core::ndarray::array;
/// use hasten_train::data::npy::{read_npy_f32, read_npy_u8};
/// use hasten_train::TrainError;
/// use ndarray_npy::WriteNpyExt;
///
/// let path = std::env::temp_dir().join("hasten-read-npy-f32-example.npy");
/// let a = array![[1.5f32, -2.0], [0.0, 4.25]];
/// a.write_npy(std::fs::File::create(&path).unwrap()).unwrap();
/// assert_eq!(read_npy_f32(&path)?, a.into_dyn());
/// // The same file read as bytes: a format error, not a reinterpretation.
/// assert!(matches!(read_npy_u8(&path), Err(TrainError::Format { .. })));
/// std::fs::remove_file(&path).unwrap();
/// # Ok::<(), TrainError>(())
/// ```
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
