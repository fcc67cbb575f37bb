//! The IDX format (LeCun's MNIST files): two zero bytes, an element-type
//! byte, a dimension count, that many big-endian `u32` sizes, then the
//! elements in row-major order. Only unsigned bytes (type `0x08`, the type
//! of MNIST and Fashion-MNIST) are read. Gzip-compressed files are
//! recognised by their magic bytes.
//!
//! Reading never allocates beyond what the input holds: the element count
//! the header claims is checked against the file length for raw files, and
//! compressed data is read as it arrives, up to that count.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use flate2::read::GzDecoder;

use crate::error::{Result, TrainError};

/// The IDX element type byte for unsigned bytes.
pub const IDX_U8: u8 = 0x08;

/// An IDX array of bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions, outermost first.
    pub dims: Vec<usize>,
    /// The elements in row-major order.
    pub data: Vec<u8>,
}

fn format(what: &str, reason: impl Into<String>) -> TrainError {
    TrainError::Format {
        format: "IDX",
        what: what.to_string(),
        reason: reason.into(),
    }
}

fn io(what: &str, source: std::io::Error) -> TrainError {
    TrainError::Io {
        path: what.into(),
        source,
    }
}

/// Parses an uncompressed IDX stream. `available`, when known, is the total
/// length of the stream in bytes: a header claiming more (or fewer)
/// elements than it holds is rejected before any element is read.
///
/// # Errors
/// [`TrainError::Format`] for a bad magic number, an element type other
/// than unsigned bytes, a header that disagrees with `available`, a short
/// stream or trailing bytes, and [`TrainError::Io`] for a failed read.
///
/// ```
/// use hasten_train::data::idx::{read_idx, write_idx};
/// use hasten_train::TrainError;
///
/// let bytes = write_idx(&[2, 3], &[1, 2, 3, 4, 5, 6])?;
/// let a = read_idx(bytes.as_slice(), "example", Some(bytes.len() as u64))?;
/// assert_eq!((a.dims, a.data), (vec![2, 3], vec![1, 2, 3, 4, 5, 6]));
/// // One element missing: the header claims more than the stream holds.
/// let short = &bytes[..bytes.len() - 1];
/// let err = read_idx(short, "example", Some(short.len() as u64)).unwrap_err();
/// assert!(matches!(err, TrainError::Format { .. }));
/// # Ok::<(), TrainError>(())
/// ```
pub fn read_idx<R: Read>(mut reader: R, what: &str, available: Option<u64>) -> Result<IdxArray> {
    let mut head = [0u8; 4];
    reader.read_exact(&mut head).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => format(what, "shorter than the 4-byte magic number"),
        _ => io(what, e),
    })?;
    if head[0] != 0 || head[1] != 0 {
        return Err(format(what, format!("bad magic number {head:02x?}")));
    }
    if head[2] != IDX_U8 {
        return Err(format(
            what,
            format!(
                "element type 0x{:02x} is not supported (only unsigned bytes, 0x08)",
                head[2]
            ),
        ));
    }
    let rank = usize::from(head[3]);
    if rank == 0 {
        return Err(format(what, "zero dimensions"));
    }
    let mut dims = Vec::with_capacity(rank);
    let mut count: u64 = 1;
    for d in 0..rank {
        let mut b = [0u8; 4];
        reader.read_exact(&mut b).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                format(what, format!("header ends before dimension {d}"))
            }
            _ => io(what, e),
        })?;
        let n = u32::from_be_bytes(b);
        if n == 0 {
            return Err(format(what, format!("dimension {d} is zero")));
        }
        count = count
            .checked_mul(u64::from(n))
            .ok_or_else(|| format(what, "element count overflows"))?;
        dims.push(n as usize);
    }
    let header = 4 + 4 * rank as u64;
    if let Some(total) = available {
        if total != header + count {
            return Err(format(
                what,
                format!(
                    "header claims {count} elements but {} bytes follow it",
                    total.saturating_sub(header)
                ),
            ));
        }
    }
    let count_usize =
        usize::try_from(count).map_err(|_| format(what, "element count exceeds memory"))?;
    let mut data = Vec::new();
    reader
        .by_ref()
        .take(count)
        .read_to_end(&mut data)
        .map_err(|e| io(what, e))?;
    if data.len() != count_usize {
        return Err(format(
            what,
            format!(
                "header claims {count} elements, the data holds {}",
                data.len()
            ),
        ));
    }
    let mut extra = [0u8; 1];
    if reader.read(&mut extra).map_err(|e| io(what, e))? != 0 {
        return Err(format(what, "trailing bytes after the elements"));
    }
    Ok(IdxArray { dims, data })
}

/// Reads an IDX file, gunzipping it when it starts with the gzip magic bytes.
///
/// # Errors
/// [`TrainError::Io`] when the file cannot be opened or read, and the
/// format errors of [`read_idx`].
///
/// ```
/// use hasten_train::data::idx::{read_idx_file, write_idx};
/// use hasten_train::TrainError;
///
/// let path = std::env::temp_dir().join("hasten-read-idx-file-example.idx");
/// std::fs::write(&path, write_idx(&[3], &[7, 8, 9])?).unwrap();
/// assert_eq!(read_idx_file(&path)?.data, [7, 8, 9]);
/// std::fs::remove_file(&path).unwrap();
/// assert!(matches!(read_idx_file(&path), Err(TrainError::Io { .. })));
/// # Ok::<(), TrainError>(())
/// ```
pub fn read_idx_file(path: &Path) -> Result<IdxArray> {
    let what = path.display().to_string();
    let open = || File::open(path).map_err(|e| io(&what, e));
    let mut magic = [0u8; 2];
    let n = open()?.read(&mut magic).map_err(|e| io(&what, e))?;
    if n == 2 && magic == [0x1f, 0x8b] {
        read_idx(GzDecoder::new(BufReader::new(open()?)), &what, None)
    } else {
        let file = open()?;
        let len = file.metadata().map_err(|e| io(&what, e))?.len();
        read_idx(BufReader::new(file), &what, Some(len))
    }
}

/// Encodes `data` with dimensions `dims` as an IDX byte array (for tests
/// and for writing slices of a data set).
pub fn write_idx(dims: &[u32], data: &[u8]) -> Result<Vec<u8>> {
    let rank = u8::try_from(dims.len())
        .map_err(|_| TrainError::invalid("IDX rank", dims.len(), "<= 255"))?;
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d as usize));
    if count != Some(data.len()) {
        return Err(TrainError::invalid(
            "IDX data length",
            data.len(),
            "the product of the dimensions",
        ));
    }
    let mut out = vec![0, 0, IDX_U8, rank];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    Ok(out)
}
