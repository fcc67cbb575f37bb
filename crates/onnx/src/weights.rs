//! A graph's named parameters (PyTorch `state_dict` names, see
//! [`hasten_core::Graph::parameters`]) as safetensors, npy and npz files.
//!
//! Readers work on bytes, check every declared dim and data length against
//! the bytes present (checked arithmetic, no allocation from a header's
//! claim alone) and convert float (`f16`, `bf16`, `f32`, `f64`) and integer
//! tensors to `f32`. [`load_weights`] drops PyTorch's integer
//! `*.num_batches_tracked` counters, which have no Hasten equivalent.
//!
//! ```
//! use hasten_onnx::weights::{read_safetensors, write_safetensors};
//! use ndarray::ArrayD;
//!
//! let params = vec![("fc.weight".to_string(), ArrayD::<f32>::ones(vec![2, 3]))];
//! let bytes = write_safetensors(&params)?;
//! assert_eq!(read_safetensors(&bytes)?, params);
//! # Ok::<(), hasten_onnx::OnnxError>(())
//! ```

use std::io::{Cursor, Read, Write};
use std::path::Path;

use hasten_core::Graph;
use ndarray::{ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors};

use crate::error::{OnnxError, Result};
use crate::tensor::{checked_numel, f16_to_f32};

/// Named f32 tensors.
pub type Params = Vec<(String, ArrayD<f32>)>;

fn st_err(reason: impl ToString) -> OnnxError {
    OnnxError::WeightFile {
        format: "safetensors",
        reason: reason.to_string(),
    }
}

fn npy_err(reason: impl ToString) -> OnnxError {
    OnnxError::WeightFile {
        format: "npy",
        reason: reason.to_string(),
    }
}

fn npz_err(reason: impl ToString) -> OnnxError {
    OnnxError::WeightFile {
        format: "npz",
        reason: reason.to_string(),
    }
}

fn dims_i64(shape: &[usize]) -> Vec<i64> {
    shape
        .iter()
        .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
        .collect()
}

/// Converts little-endian bytes of element type `kind` (`f2`, `bf16`, `f4`,
/// `f8`, `i1`, `u1`, `i2`, `i4`, `i8`, `b1`) to f32 of `shape`.
fn decode(name: &str, kind: &str, shape: &[usize], data: &[u8]) -> Result<ArrayD<f32>> {
    let (_, numel) = checked_numel(name, &dims_i64(shape))?;
    let size = match kind {
        "i1" | "u1" | "b1" => 1,
        "f2" | "bf16" | "i2" => 2,
        "f4" | "i4" => 4,
        "f8" | "i8" => 8,
        other => {
            return Err(OnnxError::tensor(
                name,
                format!("unsupported element type {other}"),
            ))
        }
    };
    let need = numel
        .checked_mul(size)
        .ok_or_else(|| OnnxError::tensor(name, "byte size overflows"))?;
    if data.len() != need {
        return Err(OnnxError::tensor(
            name,
            format!("holds {} bytes, shape {shape:?} needs {need}", data.len()),
        ));
    }
    let v: Vec<f32> = match kind {
        "i1" => data.iter().map(|&b| f32::from(b as i8)).collect(),
        "u1" | "b1" => data.iter().map(|&b| f32::from(b)).collect(),
        _ => data
            .chunks_exact(size)
            .map(|c| match kind {
                "f2" => f16_to_f32(u16::from_le_bytes([c[0], c[1]])),
                "bf16" => f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16),
                "i2" => f32::from(i16::from_le_bytes([c[0], c[1]])),
                "f4" => f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                "i4" => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32,
                "f8" => f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32,
                _ => i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32,
            })
            .collect(),
    };
    ArrayD::from_shape_vec(IxDyn(shape), v).map_err(|e| OnnxError::tensor(name, e.to_string()))
}

/// Reads every tensor of a safetensors file (as f32), sorted by name (the
/// format keeps no order).
pub fn read_safetensors(bytes: &[u8]) -> Result<Params> {
    let st = SafeTensors::deserialize(bytes).map_err(st_err)?;
    let mut out = Vec::new();
    for (name, view) in st.iter() {
        let kind = match view.dtype() {
            Dtype::F16 => "f2",
            Dtype::BF16 => "bf16",
            Dtype::F32 => "f4",
            Dtype::F64 => "f8",
            Dtype::I8 => "i1",
            Dtype::U8 => "u1",
            Dtype::BOOL => "b1",
            Dtype::I16 => "i2",
            Dtype::I32 => "i4",
            Dtype::I64 => "i8",
            other => {
                return Err(st_err(format!(
                    "tensor `{name}`: unsupported dtype {other:?}"
                )))
            }
        };
        out.push((
            name.to_string(),
            decode(name, kind, view.shape(), view.data())?,
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Writes named f32 tensors as a safetensors file.
pub fn write_safetensors(params: &[(String, ArrayD<f32>)]) -> Result<Vec<u8>> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = params
        .iter()
        .map(|(n, a)| {
            (
                n.clone(),
                a.shape().to_vec(),
                a.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, shape, data)| {
            safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|v| (n.clone(), v))
                .map_err(st_err)
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None).map_err(st_err)
}

/// Reads one `.npy` array (as f32). Supports format versions 1–3, C and
/// Fortran order, and little-endian or byte-sized float, integer and bool
/// element types.
pub fn read_npy(bytes: &[u8]) -> Result<ArrayD<f32>> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(npy_err("not an npy file (bad magic)"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (
            usize::from(u16::from_le_bytes([bytes[8], bytes[9]])),
            10usize,
        ),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(npy_err("truncated header"));
            }
            let n = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (usize::try_from(n).map_err(npy_err)?, 12)
        }
        v => return Err(npy_err(format!("unsupported format version {v}"))),
    };
    let end = start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| npy_err("header longer than the file"))?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(npy_err)?;
    let descr = dict_value(header, "descr").ok_or_else(|| npy_err("header has no descr"))?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    if !descr.is_ascii() || descr.is_empty() {
        return Err(npy_err(format!("unsupported descr {descr:?}")));
    }
    let (order, kind) = descr.split_at(1);
    let kind = match (order, kind) {
        ("<" | "|" | "=", k @ ("f2" | "f4" | "f8" | "i1" | "u1" | "b1" | "i2" | "i4" | "i8")) => k,
        _ => return Err(npy_err(format!("unsupported descr {descr}"))),
    };
    let fortran = match dict_value(header, "fortran_order") {
        Some("True") => true,
        Some("False") => false,
        _ => return Err(npy_err("header has no valid fortran_order")),
    };
    let shape_str = dict_value(header, "shape").ok_or_else(|| npy_err("header has no shape"))?;
    let inner = shape_str
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| npy_err(format!("bad shape {shape_str}")))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| npy_err(format!("bad dim {s}")))
        })
        .collect::<Result<Vec<usize>>>()?;
    if fortran {
        let rev: Vec<usize> = shape.iter().rev().copied().collect();
        let a = decode("npy", kind, &rev, &bytes[end..]).map_err(|e| npy_err(e.to_string()))?;
        let a = a.reversed_axes();
        Ok(a.as_standard_layout().into_owned())
    } else {
        decode("npy", kind, &shape, &bytes[end..]).map_err(|e| npy_err(e.to_string()))
    }
}

/// The raw text of `key`'s value in a Python dict literal (`{'k': v, …}`):
/// a quoted string, a parenthesised tuple, or a bare word.
fn dict_value<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header[at + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let end = match rest.chars().next()? {
        '(' => rest.find(')')? + 1,
        q @ ('\'' | '"') => rest[1..].find(q)? + 2,
        _ => rest.find([',', '}']).unwrap_or(rest.len()),
    };
    Some(rest[..end].trim())
}

/// Writes an f32 array as `.npy` bytes.
pub fn write_npy(array: &ArrayD<f32>) -> Result<Vec<u8>> {
    use ndarray_npy::WriteNpyExt;
    let mut out = Vec::new();
    array.write_npy(&mut out).map_err(npy_err)?;
    Ok(out)
}

/// Reads every array of an `.npz` archive (stored or deflated), names
/// without the `.npy` suffix. An entry may not inflate to more than 1100
/// times its compressed size (deflate's own bound is 1032).
pub fn read_npz(bytes: &[u8]) -> Result<Params> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(npz_err)?;
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(npz_err)?;
        let name = entry.name().to_string();
        let limit = entry
            .compressed_size()
            .saturating_mul(1100)
            .saturating_add(4096);
        let mut data = Vec::new();
        (&mut entry)
            .take(limit)
            .read_to_end(&mut data)
            .map_err(|e| npz_err(format!("entry `{name}`: {e}")))?;
        if data.len() as u64 >= limit {
            return Err(npz_err(format!(
                "entry `{name}` inflates beyond its compressed size allows"
            )));
        }
        let array = read_npy(&data).map_err(|e| npz_err(format!("entry `{name}`: {e}")))?;
        let key = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        out.push((key, array));
    }
    Ok(out)
}

/// Writes named f32 arrays as an uncompressed `.npz` archive (NumPy's
/// `savez` layout: one `<name>.npy` per array).
pub fn write_npz(params: &[(String, ArrayD<f32>)]) -> Result<Vec<u8>> {
    let mut cursor = Cursor::new(Vec::new());
    {
        let mut npz = ndarray_npy::NpzWriter::new(&mut cursor);
        for (name, array) in params {
            npz.add_array(name.as_str(), array).map_err(npz_err)?;
        }
        npz.finish().map_err(npz_err)?;
    }
    let mut bytes = cursor.into_inner();
    bytes.flush().map_err(npz_err)?;
    Ok(bytes)
}

fn format_of(path: &Path) -> Result<&'static str> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => Ok("safetensors"),
        Some("npz") => Ok("npz"),
        other => Err(OnnxError::WeightFile {
            format: "unknown",
            reason: format!(
                "{}: extension {other:?}, expected .safetensors or .npz",
                path.display()
            ),
        }),
    }
}

/// Reads the named tensors of a `.safetensors` or `.npz` file.
pub fn read_weights(path: impl AsRef<Path>) -> Result<Params> {
    let path = path.as_ref();
    let format = format_of(path)?;
    let bytes = std::fs::read(path).map_err(|e| OnnxError::io(path, e))?;
    match format {
        "safetensors" => read_safetensors(&bytes),
        _ => read_npz(&bytes),
    }
}

/// Loads every parameter of `graph` from a `.safetensors` or `.npz` file
/// under its `state_dict` name; missing, unexpected or misshapen tensors
/// are errors and leave the graph unchanged. `*.num_batches_tracked` is
/// ignored.
///
/// # Errors
///
/// [`OnnxError::WeightFile`] for another extension or a malformed file,
/// [`OnnxError::Io`] when it cannot be read, [`OnnxError::Core`] when its
/// tensors do not match the graph's parameters (names or shapes).
///
/// # Examples
///
/// ```
/// use hasten_core::{ActShape, ConvLayer, ConvSpec, GraphBuilder, SeededRng};
/// use hasten_onnx::weights::{load_weights, save_weights};
///
/// let build = |seed| -> Result<_, hasten_core::Error> {
///     let w = SeededRng::new(seed).normal_array((2, 1, 3, 3), 1.0);
///     let mut b = GraphBuilder::new();
///     let x = b.input("x", ActShape::new(1, 4, 4));
///     let y = b.op("conv", ConvLayer::from_array(w, ConvSpec::new())?, x);
///     b.output(y);
///     b.build()
/// };
/// let (trained, mut fresh) = (build(1)?, build(2)?);
/// let path = std::env::temp_dir().join(format!("hasten-load-weights-doc-{}.safetensors", std::process::id()));
/// save_weights(&trained, &path)?;
/// load_weights(&mut fresh, &path)?;
/// assert_eq!(fresh.parameters(), trained.parameters());
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn load_weights(graph: &mut Graph, path: impl AsRef<Path>) -> Result<()> {
    let params: Params = read_weights(path)?
        .into_iter()
        .filter(|(n, _)| !n.ends_with(".num_batches_tracked"))
        .collect();
    graph
        .load_parameters(&params)
        .map_err(|e| OnnxError::core("loading weights", e))
}

/// Saves every parameter of `graph` to a `.safetensors` or `.npz` file,
/// chosen by the extension of `path` (round trip: [`load_weights`]).
///
/// # Errors
///
/// [`OnnxError::WeightFile`] for another extension, [`OnnxError::Io`] when
/// the file cannot be written.
///
/// # Examples
///
/// ```
/// use hasten_core::{ActShape, GraphBuilder, LinearLayer};
/// use hasten_onnx::weights::{read_weights, save_weights};
///
/// let mut b = GraphBuilder::new();
/// let x = b.input("x", ActShape::flat(3));
/// let y = b.op("fc", LinearLayer::from_slice(2, 3, &[1.0; 6], None)?, x);
/// b.output(y);
/// let graph = b.build()?;
/// let path = std::env::temp_dir().join(format!("hasten-save-weights-doc-{}.npz", std::process::id()));
/// save_weights(&graph, &path)?;
/// let names: Vec<String> = read_weights(&path)?.into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["fc.weight"]);
/// assert!(save_weights(&graph, "weights.txt").is_err());
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn save_weights(graph: &Graph, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let params = graph.parameters();
    let bytes = match format_of(path)? {
        "safetensors" => write_safetensors(&params)?,
        _ => write_npz(&params)?,
    };
    std::fs::write(path, bytes).map_err(|e| OnnxError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        vec![
            (
                "conv.weight".into(),
                ArrayD::from_shape_fn(vec![2, 1, 3, 3], |i| i[2] as f32 - 0.5 * i[0] as f32),
            ),
            ("conv.bias".into(), ArrayD::from_elem(vec![2], -1.25)),
            ("scalar".into(), ArrayD::from_elem(vec![], 3.0)),
        ]
    }

    #[test]
    fn formats_round_trip() {
        let p = params();
        let mut sorted = p.clone();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            read_safetensors(&write_safetensors(&p).unwrap()).unwrap(),
            sorted
        );
        assert_eq!(read_npz(&write_npz(&p).unwrap()).unwrap(), p);
        for (_, a) in &p {
            assert_eq!(&read_npy(&write_npy(a).unwrap()).unwrap(), a);
        }
    }

    #[test]
    fn npy_header_forms() {
        // Version 1, Fortran order, f8, as NumPy writes it.
        let mut header = b"{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }".to_vec();
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(b' ');
        }
        header.push(b'\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(&header);
        // Column-major 2×3: [[0, 1, 2], [3, 4, 5]].
        for v in [0.0f64, 3.0, 1.0, 4.0, 2.0, 5.0] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let a = read_npy(&bytes).unwrap();
        assert_eq!(a.shape(), &[2, 3]);
        assert_eq!(
            a.iter().copied().collect::<Vec<_>>(),
            vec![0., 1., 2., 3., 4., 5.]
        );
        // One byte short.
        assert!(matches!(
            read_npy(&bytes[..bytes.len() - 1]),
            Err(OnnxError::WeightFile { .. })
        ));
        // A non-ASCII descr (found by the fuzzer: it once split inside a
        // UTF-8 character).
        let garbled = String::from_utf8_lossy(&bytes).replace("<f8", "\u{112}1");
        assert!(matches!(
            read_npy(garbled.as_bytes()),
            Err(OnnxError::WeightFile { .. })
        ));
        // A huge claimed shape with no data behind it.
        let lie = String::from_utf8_lossy(&bytes).replace("(2, 3)", "(99999999999, 99999999999)");
        assert!(read_npy(lie.as_bytes()).is_err());
    }
}
