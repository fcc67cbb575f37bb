//! [`Tensor`]: a typed n-dimensional constant (an initializer, a `Constant`
//! node's value, a folded shape computation), read from and written to ONNX
//! `TensorProto`s.
//!
//! Reading never trusts the declared dims: every dim must be non-negative,
//! their product is computed with checked arithmetic and must match the data
//! actually present (`raw_data` bytes or the typed repeated field), so a
//! malformed file cannot make the reader allocate more than its own size.

use ndarray::{ArrayD, IxDyn};

use crate::error::{OnnxError, Result};
use crate::proto::TensorProto;

/// ONNX `TensorProto.DataType` codes this crate reads.
pub mod dtype {
    /// 32-bit float.
    pub const FLOAT: i32 = 1;
    /// Unsigned 8-bit integer.
    pub const UINT8: i32 = 2;
    /// Signed 8-bit integer.
    pub const INT8: i32 = 3;
    /// Unsigned 16-bit integer.
    pub const UINT16: i32 = 4;
    /// Signed 16-bit integer.
    pub const INT16: i32 = 5;
    /// Signed 32-bit integer.
    pub const INT32: i32 = 6;
    /// Signed 64-bit integer.
    pub const INT64: i32 = 7;
    /// Boolean.
    pub const BOOL: i32 = 9;
    /// IEEE half precision.
    pub const FLOAT16: i32 = 10;
    /// 64-bit float.
    pub const DOUBLE: i32 = 11;
    /// Unsigned 32-bit integer.
    pub const UINT32: i32 = 12;
}

/// Largest element count a tensor may declare (2³⁶); larger dims are
/// rejected before anything is allocated.
pub const MAX_ELEMENTS: usize = 1 << 36;

/// Largest tensor rank accepted.
pub const MAX_RANK: usize = 32;

/// A typed constant tensor. Narrow integer types widen on reading
/// (`uint16`/`int16` → `I32`, `uint32` → `I64`), half floats to `F32`.
#[derive(Debug, Clone, PartialEq)]
pub enum Tensor {
    /// `float` (and `float16`, widened).
    F32(ArrayD<f32>),
    /// `double`.
    F64(ArrayD<f64>),
    /// `int64` (and `uint32`, widened).
    I64(ArrayD<i64>),
    /// `int32` (and `int16`/`uint16`, widened).
    I32(ArrayD<i32>),
    /// `int8`.
    I8(ArrayD<i8>),
    /// `uint8`.
    U8(ArrayD<u8>),
    /// `bool`.
    Bool(ArrayD<bool>),
}

/// Checked element count of `dims`, each required non-negative; also checks
/// the rank and that the count (ignoring zero dims) stays below
/// [`MAX_ELEMENTS`], so `ndarray` can never overflow on it.
pub fn checked_numel(name: &str, dims: &[i64]) -> Result<(Vec<usize>, usize)> {
    if dims.len() > MAX_RANK {
        return Err(OnnxError::tensor(
            name,
            format!("rank {} exceeds {MAX_RANK}", dims.len()),
        ));
    }
    let mut shape = Vec::with_capacity(dims.len());
    let mut nonzero: usize = 1;
    let mut numel: usize = 1;
    for &d in dims {
        let d = usize::try_from(d)
            .map_err(|_| OnnxError::tensor(name, format!("negative dim {d} in {dims:?}")))?;
        nonzero = nonzero
            .checked_mul(d.max(1))
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| OnnxError::tensor(name, format!("dims {dims:?} are too large")))?;
        numel *= d; // bounded by `nonzero`
        shape.push(d);
    }
    Ok((shape, numel))
}

fn from_vec<T>(name: &str, shape: &[usize], v: Vec<T>) -> Result<ArrayD<T>> {
    ArrayD::from_shape_vec(IxDyn(shape), v)
        .map_err(|e| OnnxError::tensor(name, format!("data does not fit dims {shape:?}: {e}")))
}

/// Converts IEEE half-precision bits to f32 (exact).
pub fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits >> 15) << 31;
    let exp = u32::from((bits >> 10) & 0x1f);
    let man = u32::from(bits & 0x3ff);
    let out = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: value = m · 2^-24.
            let v = m as f32 * f32::powi(2.0, -24);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, m) => sign | 0x7fc0_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(out)
}

fn le_chunks<const N: usize, T>(raw: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    raw.chunks_exact(N)
        .map(|c| {
            let mut b = [0u8; N];
            b.copy_from_slice(c);
            f(b)
        })
        .collect()
}

/// Requires a typed repeated field to hold exactly `numel` values.
fn typed<T: Clone>(name: &str, field: &str, values: &[T], numel: usize) -> Result<Vec<T>> {
    if values.len() != numel {
        return Err(OnnxError::tensor(
            name,
            format!("{field} holds {} values, dims need {numel}", values.len()),
        ));
    }
    Ok(values.to_vec())
}

fn narrow<T: TryFrom<i32>>(name: &str, values: &[i32], numel: usize) -> Result<Vec<T>> {
    if values.len() != numel {
        return Err(OnnxError::tensor(
            name,
            format!(
                "int32_data holds {} values, dims need {numel}",
                values.len()
            ),
        ));
    }
    values
        .iter()
        .map(|&v| {
            T::try_from(v)
                .map_err(|_| OnnxError::tensor(name, format!("int32_data value {v} out of range")))
        })
        .collect()
}

impl Tensor {
    /// Reads an ONNX `TensorProto` in any storage form: little-endian
    /// `raw_data`, or the typed `float_data`, `int32_data`, `int64_data`,
    /// `double_data`, `uint64_data` fields. External data, strings and
    /// unsupported element types are typed errors.
    pub fn from_proto(t: &TensorProto) -> Result<Tensor> {
        let name = t.name();
        if t.data_location == Some(1) || !t.external_data.is_empty() {
            return Err(OnnxError::ExternalData {
                tensor: name.to_string(),
            });
        }
        if t.segment.is_some() {
            return Err(OnnxError::tensor(
                name,
                "segmented tensors are not supported",
            ));
        }
        let (shape, numel) = checked_numel(name, &t.dims)?;
        let dt = t.data_type();
        let elem = match dt {
            dtype::FLOAT | dtype::INT32 | dtype::UINT32 => 4,
            dtype::UINT8 | dtype::INT8 | dtype::BOOL => 1,
            dtype::UINT16 | dtype::INT16 | dtype::FLOAT16 => 2,
            dtype::INT64 | dtype::DOUBLE => 8,
            other => {
                return Err(OnnxError::UnsupportedDataType {
                    tensor: name.to_string(),
                    data_type: other,
                })
            }
        };
        if let Some(raw) = t
            .raw_data
            .as_deref()
            .filter(|r| !r.is_empty() || numel == 0)
        {
            let need = numel
                .checked_mul(elem)
                .ok_or_else(|| OnnxError::tensor(name, "byte size overflows"))?;
            if raw.len() != need {
                return Err(OnnxError::tensor(
                    name,
                    format!("raw_data holds {} bytes, dims need {need}", raw.len()),
                ));
            }
            return Ok(match dt {
                dtype::FLOAT => {
                    Tensor::F32(from_vec(name, &shape, le_chunks(raw, f32::from_le_bytes))?)
                }
                dtype::FLOAT16 => Tensor::F32(from_vec(
                    name,
                    &shape,
                    le_chunks(raw, |b| f16_to_f32(u16::from_le_bytes(b))),
                )?),
                dtype::DOUBLE => {
                    Tensor::F64(from_vec(name, &shape, le_chunks(raw, f64::from_le_bytes))?)
                }
                dtype::INT64 => {
                    Tensor::I64(from_vec(name, &shape, le_chunks(raw, i64::from_le_bytes))?)
                }
                dtype::UINT32 => Tensor::I64(from_vec(
                    name,
                    &shape,
                    le_chunks(raw, |b| i64::from(u32::from_le_bytes(b))),
                )?),
                dtype::INT32 => {
                    Tensor::I32(from_vec(name, &shape, le_chunks(raw, i32::from_le_bytes))?)
                }
                dtype::INT16 => Tensor::I32(from_vec(
                    name,
                    &shape,
                    le_chunks(raw, |b| i32::from(i16::from_le_bytes(b))),
                )?),
                dtype::UINT16 => Tensor::I32(from_vec(
                    name,
                    &shape,
                    le_chunks(raw, |b| i32::from(u16::from_le_bytes(b))),
                )?),
                dtype::INT8 => Tensor::I8(from_vec(
                    name,
                    &shape,
                    raw.iter().map(|&b| b as i8).collect(),
                )?),
                dtype::UINT8 => Tensor::U8(from_vec(name, &shape, raw.to_vec())?),
                _ => Tensor::Bool(from_vec(
                    name,
                    &shape,
                    raw.iter().map(|&b| b != 0).collect(),
                )?),
            });
        }
        Ok(match dt {
            dtype::FLOAT => Tensor::F32(from_vec(
                name,
                &shape,
                typed(name, "float_data", &t.float_data, numel)?,
            )?),
            dtype::DOUBLE => Tensor::F64(from_vec(
                name,
                &shape,
                typed(name, "double_data", &t.double_data, numel)?,
            )?),
            dtype::INT64 => Tensor::I64(from_vec(
                name,
                &shape,
                typed(name, "int64_data", &t.int64_data, numel)?,
            )?),
            dtype::UINT32 => {
                let v = typed(name, "uint64_data", &t.uint64_data, numel)?;
                let v = v
                    .into_iter()
                    .map(|x| {
                        u32::try_from(x).map(i64::from).map_err(|_| {
                            OnnxError::tensor(name, format!("uint64_data value {x} out of range"))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Tensor::I64(from_vec(name, &shape, v)?)
            }
            dtype::INT32 => Tensor::I32(from_vec(
                name,
                &shape,
                typed(name, "int32_data", &t.int32_data, numel)?,
            )?),
            dtype::INT16 => {
                let v: Vec<i16> = narrow(name, &t.int32_data, numel)?;
                Tensor::I32(from_vec(
                    name,
                    &shape,
                    v.into_iter().map(i32::from).collect(),
                )?)
            }
            dtype::UINT16 => {
                let v: Vec<u16> = narrow(name, &t.int32_data, numel)?;
                Tensor::I32(from_vec(
                    name,
                    &shape,
                    v.into_iter().map(i32::from).collect(),
                )?)
            }
            dtype::FLOAT16 => {
                let v: Vec<u16> = narrow(name, &t.int32_data, numel)?;
                Tensor::F32(from_vec(
                    name,
                    &shape,
                    v.into_iter().map(f16_to_f32).collect(),
                )?)
            }
            dtype::INT8 => Tensor::I8(from_vec(name, &shape, narrow(name, &t.int32_data, numel)?)?),
            dtype::UINT8 => {
                Tensor::U8(from_vec(name, &shape, narrow(name, &t.int32_data, numel)?)?)
            }
            _ => {
                let v: Vec<u8> = narrow(name, &t.int32_data, numel)?;
                Tensor::Bool(from_vec(
                    name,
                    &shape,
                    v.into_iter().map(|b| b != 0).collect(),
                )?)
            }
        })
    }

    /// Writes the tensor as a `TensorProto` named `name`, data in
    /// little-endian `raw_data`.
    pub fn to_proto(&self, name: &str) -> TensorProto {
        fn raw<T: Copy, const N: usize>(a: &ArrayD<T>, f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
            a.iter().flat_map(|&v| f(v)).collect()
        }
        let (data_type, bytes) = match self {
            Tensor::F32(a) => (dtype::FLOAT, raw(a, f32::to_le_bytes)),
            Tensor::F64(a) => (dtype::DOUBLE, raw(a, f64::to_le_bytes)),
            Tensor::I64(a) => (dtype::INT64, raw(a, i64::to_le_bytes)),
            Tensor::I32(a) => (dtype::INT32, raw(a, i32::to_le_bytes)),
            Tensor::I8(a) => (dtype::INT8, raw(a, i8::to_le_bytes)),
            Tensor::U8(a) => (dtype::UINT8, raw(a, u8::to_le_bytes)),
            Tensor::Bool(a) => (dtype::BOOL, raw(a, |b: bool| [u8::from(b)])),
        };
        TensorProto {
            dims: self.shape().iter().map(|&d| d as i64).collect(),
            data_type: Some(data_type),
            name: Some(name.to_string()),
            raw_data: Some(bytes),
            ..Default::default()
        }
    }

    /// The dims.
    pub fn shape(&self) -> &[usize] {
        match self {
            Tensor::F32(a) => a.shape(),
            Tensor::F64(a) => a.shape(),
            Tensor::I64(a) => a.shape(),
            Tensor::I32(a) => a.shape(),
            Tensor::I8(a) => a.shape(),
            Tensor::U8(a) => a.shape(),
            Tensor::Bool(a) => a.shape(),
        }
    }

    /// The element count.
    pub fn len(&self) -> usize {
        self.shape().iter().product()
    }

    /// Whether it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ONNX data type code of its storage.
    pub fn data_type(&self) -> i32 {
        match self {
            Tensor::F32(_) => dtype::FLOAT,
            Tensor::F64(_) => dtype::DOUBLE,
            Tensor::I64(_) => dtype::INT64,
            Tensor::I32(_) => dtype::INT32,
            Tensor::I8(_) => dtype::INT8,
            Tensor::U8(_) => dtype::UINT8,
            Tensor::Bool(_) => dtype::BOOL,
        }
    }

    /// Whether the storage is a floating-point type.
    pub fn is_float(&self) -> bool {
        matches!(self, Tensor::F32(_) | Tensor::F64(_))
    }

    /// The values as f64 (exact for every stored type but large `i64`).
    pub fn to_f64(&self) -> ArrayD<f64> {
        match self {
            Tensor::F32(a) => a.mapv(f64::from),
            Tensor::F64(a) => a.clone(),
            Tensor::I64(a) => a.mapv(|v| v as f64),
            Tensor::I32(a) => a.mapv(f64::from),
            Tensor::I8(a) => a.mapv(f64::from),
            Tensor::U8(a) => a.mapv(f64::from),
            Tensor::Bool(a) => a.mapv(|b| f64::from(u8::from(b))),
        }
    }

    /// The values as f32.
    pub fn to_f32(&self) -> ArrayD<f32> {
        match self {
            Tensor::F32(a) => a.clone(),
            other => other.to_f64().mapv(|v| v as f32),
        }
    }

    /// The values as i64 (floats truncate toward zero, saturating).
    pub fn to_i64(&self) -> ArrayD<i64> {
        match self {
            Tensor::F32(a) => a.mapv(|v| v as i64),
            Tensor::F64(a) => a.mapv(|v| v as i64),
            Tensor::I64(a) => a.clone(),
            Tensor::I32(a) => a.mapv(i64::from),
            Tensor::I8(a) => a.mapv(i64::from),
            Tensor::U8(a) => a.mapv(i64::from),
            Tensor::Bool(a) => a.mapv(i64::from),
        }
    }

    /// Builds a tensor of type `data_type` from f64 values (ONNX `Cast`
    /// semantics for the supported types: floats round to nearest, integers
    /// truncate toward zero and wrap).
    pub fn from_f64(data_type: i32, a: ArrayD<f64>) -> Option<Tensor> {
        Some(match data_type {
            dtype::FLOAT | dtype::FLOAT16 => Tensor::F32(a.mapv(|v| v as f32)),
            dtype::DOUBLE => Tensor::F64(a),
            dtype::INT64 | dtype::UINT32 => Tensor::I64(a.mapv(|v| v as i64)),
            dtype::INT32 | dtype::INT16 | dtype::UINT16 => Tensor::I32(a.mapv(|v| v as i64 as i32)),
            dtype::INT8 => Tensor::I8(a.mapv(|v| v as i64 as i8)),
            dtype::UINT8 => Tensor::U8(a.mapv(|v| v as i64 as u8)),
            dtype::BOOL => Tensor::Bool(a.mapv(|v| v != 0.0)),
            _ => return None,
        })
    }

    /// Builds a tensor of type `data_type` from i64 values (wrapping to
    /// narrower integer types).
    pub fn from_i64(data_type: i32, a: ArrayD<i64>) -> Option<Tensor> {
        Some(match data_type {
            dtype::FLOAT | dtype::FLOAT16 => Tensor::F32(a.mapv(|v| v as f32)),
            dtype::DOUBLE => Tensor::F64(a.mapv(|v| v as f64)),
            dtype::INT64 | dtype::UINT32 => Tensor::I64(a),
            dtype::INT32 | dtype::INT16 | dtype::UINT16 => Tensor::I32(a.mapv(|v| v as i32)),
            dtype::INT8 => Tensor::I8(a.mapv(|v| v as i8)),
            dtype::UINT8 => Tensor::U8(a.mapv(|v| v as u8)),
            dtype::BOOL => Tensor::Bool(a.mapv(|v| v != 0)),
            _ => return None,
        })
    }

    /// Converts to `data_type` (ONNX `Cast`), `None` for an unsupported type.
    pub fn cast(&self, data_type: i32) -> Option<Tensor> {
        if self.is_float() {
            Tensor::from_f64(data_type, self.to_f64())
        } else {
            Tensor::from_i64(data_type, self.to_i64())
        }
    }

    /// Applies a shape-only transformation to the storage, keeping the type.
    pub fn map_array(&self, f: impl ArrayFn) -> Result<Tensor> {
        Ok(match self {
            Tensor::F32(a) => Tensor::F32(f.apply(a)?),
            Tensor::F64(a) => Tensor::F64(f.apply(a)?),
            Tensor::I64(a) => Tensor::I64(f.apply(a)?),
            Tensor::I32(a) => Tensor::I32(f.apply(a)?),
            Tensor::I8(a) => Tensor::I8(f.apply(a)?),
            Tensor::U8(a) => Tensor::U8(f.apply(a)?),
            Tensor::Bool(a) => Tensor::Bool(f.apply(a)?),
        })
    }
}

/// A shape-only transformation (reshape, transpose, gather, slice, …) that
/// works for every element type; see [`Tensor::map_array`].
pub trait ArrayFn {
    /// Applies it.
    fn apply<T: Clone + Default>(&self, a: &ArrayD<T>) -> Result<ArrayD<T>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(dims: &[i64], dt: i32) -> TensorProto {
        TensorProto {
            dims: dims.to_vec(),
            data_type: Some(dt),
            name: Some("t".into()),
            ..Default::default()
        }
    }

    #[test]
    fn every_storage_form() {
        let mut t = proto(&[2], dtype::FLOAT);
        t.float_data = vec![1.5, -2.0];
        assert_eq!(
            Tensor::from_proto(&t)
                .unwrap()
                .to_f64()
                .into_raw_vec_and_offset()
                .0,
            vec![1.5, -2.0]
        );
        let mut t = proto(&[2], dtype::FLOAT);
        t.raw_data = Some([1.5f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat());
        assert_eq!(
            Tensor::from_proto(&t)
                .unwrap()
                .to_f64()
                .into_raw_vec_and_offset()
                .0,
            vec![1.5, -2.0]
        );
        let mut t = proto(&[1, 2], dtype::INT64);
        t.int64_data = vec![-7, 1 << 40];
        assert_eq!(
            Tensor::from_proto(&t).unwrap(),
            Tensor::I64(ndarray::arr2(&[[-7, 1 << 40]]).into_dyn())
        );
        let mut t = proto(&[3], dtype::INT32);
        t.int32_data = vec![1, -2, 3];
        assert_eq!(
            Tensor::from_proto(&t)
                .unwrap()
                .to_i64()
                .into_raw_vec_and_offset()
                .0,
            vec![1, -2, 3]
        );
        let mut t = proto(&[2], dtype::DOUBLE);
        t.double_data = vec![0.25, 1e300];
        assert_eq!(
            Tensor::from_proto(&t).unwrap(),
            Tensor::F64(ndarray::arr1(&[0.25, 1e300]).into_dyn())
        );
        let mut t = proto(&[2], dtype::INT8);
        t.int32_data = vec![-128, 127];
        assert_eq!(
            Tensor::from_proto(&t).unwrap(),
            Tensor::I8(ndarray::arr1(&[-128i8, 127]).into_dyn())
        );
        let mut t = proto(&[2], dtype::INT8);
        t.int32_data = vec![-129, 0];
        assert!(matches!(
            Tensor::from_proto(&t),
            Err(OnnxError::TensorData { .. })
        ));
        let mut t = proto(&[3], dtype::FLOAT16);
        t.int32_data = vec![0x3c00, 0xc000, 0x0001];
        let v = Tensor::from_proto(&t)
            .unwrap()
            .to_f64()
            .into_raw_vec_and_offset()
            .0;
        assert_eq!(v, vec![1.0, -2.0, 2f64.powi(-24)]);
        let t = proto(&[], dtype::FLOAT);
        assert!(
            matches!(Tensor::from_proto(&t), Err(OnnxError::TensorData { .. })),
            "scalar needs one value"
        );
    }

    #[test]
    fn rejects_bad_dims_and_lengths() {
        let mut t = proto(&[-1], dtype::FLOAT);
        t.float_data = vec![1.0];
        assert!(matches!(
            Tensor::from_proto(&t),
            Err(OnnxError::TensorData { .. })
        ));
        let mut t = proto(&[1 << 40, 1 << 40], dtype::FLOAT);
        t.raw_data = Some(vec![0; 16]);
        assert!(matches!(
            Tensor::from_proto(&t),
            Err(OnnxError::TensorData { .. })
        ));
        let mut t = proto(&[3], dtype::FLOAT);
        t.raw_data = Some(vec![0; 11]);
        assert!(matches!(
            Tensor::from_proto(&t),
            Err(OnnxError::TensorData { .. })
        ));
        let mut t = proto(&[2], dtype::FLOAT);
        t.data_location = Some(1);
        assert!(matches!(
            Tensor::from_proto(&t),
            Err(OnnxError::ExternalData { .. })
        ));
        let t = proto(&[2], 8);
        assert!(matches!(
            Tensor::from_proto(&t),
            Err(OnnxError::UnsupportedDataType { data_type: 8, .. })
        ));
        let t = proto(&[0, 1 << 62], dtype::FLOAT);
        assert!(matches!(
            Tensor::from_proto(&t),
            Err(OnnxError::TensorData { .. })
        ));
        let t = proto(&[0, 5], dtype::FLOAT);
        assert_eq!(Tensor::from_proto(&t).unwrap().shape(), &[0, 5]);
    }

    #[test]
    fn proto_round_trip() {
        for t in [
            Tensor::F32(ndarray::arr2(&[[1.0f32, -0.5], [3.0, 4.0]]).into_dyn()),
            Tensor::I64(ndarray::arr1(&[i64::MIN, 0, i64::MAX]).into_dyn()),
            Tensor::I8(ndarray::arr1(&[-3i8, 4]).into_dyn()),
            Tensor::U8(ndarray::arr1(&[200u8]).into_dyn()),
            Tensor::I32(ndarray::arr1(&[-70000]).into_dyn()),
            Tensor::Bool(ndarray::arr1(&[true, false]).into_dyn()),
            Tensor::F64(ndarray::arr0(2.5).into_dyn()),
        ] {
            assert_eq!(Tensor::from_proto(&t.to_proto("x")).unwrap(), t);
        }
    }
}
