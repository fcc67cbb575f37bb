//! QDQ int8 models: `QuantizeLinear` → `DequantizeLinear` pairs around a
//! float `Conv` / `Gemm` / `MatMul` whose weight is `DequantizeLinear` of an
//! int8 initializer (and whose bias, if any, `DequantizeLinear` of int32) —
//! the form onnxruntime's `quantize_static(quant_format=QDQ)` and Hasten's
//! own exporter write. Each such layer maps onto [`Int8Conv`], the 8-bit
//! arithmetic of Vanhoucke et al. (survey section 5):
//!
//! - the activation pair gives the input [`QuantParams`] (per tensor, u8 or
//!   i8; the two nodes must agree);
//! - the weights must be symmetric int8 (zero point 0), per tensor or per
//!   output channel (equal per-channel scales become one per-tensor scale);
//! - the bias must be int32 in units of `s_in · s_w[t]`: its scale must
//!   equal that product to 1e-6 relative (the f32 product both writers use);
//! - a pair after an int8 layer becomes that layer's output requantization
//!   when anything other than an int8 layer reads it (a graph output, an
//!   activation, a sum); an int8 layer reading it quantizes the float output
//!   itself, which is how Hasten exports a layer without requantization, so
//!   import(export(g)) gives `g` back.
//!
//! A `DequantizeLinear` of constants folds to f32 for every other reader
//! ([`QConst`]). A pair on a float value that no int8 layer reads or
//! requantizes (fake quantization) is an [`OnnxError::UnsupportedOp`] naming
//! the `DequantizeLinear` node: Hasten has no fake-quantization op.

use hasten_core::graph::NodeDef;
use hasten_core::op::{Int8Conv, QuantParams, WeightLayout};
use hasten_core::{ConvSpec, NodeOp, Op};
use ndarray::{Array1, ArrayD, Ix2};

use super::{pair, Act, Importer, Val};
use crate::error::{OnnxError, Result};
use crate::node::NodeView;
use crate::tensor::Tensor;

/// A `DequantizeLinear` of constants: its f32 value and its parts.
#[derive(Debug, Clone)]
pub(super) struct QConst {
    /// The dequantized value, as constant folding computes it.
    pub value: Tensor,
    /// The integer tensor.
    q: Tensor,
    /// Scale: one value, or one per slice along `axis`.
    scale: ArrayD<f32>,
    /// Zero point (absent reads as 0).
    zero_point: Option<Tensor>,
    /// The `axis` attribute (default 1).
    axis: i64,
}

impl QConst {
    /// Wraps the folded `value` of the `DequantizeLinear` `node` on `inputs`.
    pub(super) fn of(node: &NodeView, inputs: &[Option<&Tensor>], value: Tensor) -> Result<Val> {
        let at = |i: usize| inputs.get(i).copied().flatten();
        let q = at(0).ok_or_else(|| node.invalid("missing input 0"))?;
        let scale = at(1).ok_or_else(|| node.invalid("missing input 1"))?;
        Ok(Val::QConst(Box::new(QConst {
            value,
            q: q.clone(),
            scale: scale.to_f32(),
            zero_point: at(2).cloned(),
            axis: node.int_or("axis", 1),
        })))
    }

    /// Whether every zero point is 0.
    fn symmetric(&self) -> bool {
        self.zero_point
            .as_ref()
            .is_none_or(|z| z.to_i64().iter().all(|&v| v == 0))
    }

    /// Scale of slice `t` (one scale for all, or one per slice).
    fn scale_at(&self, t: usize) -> Option<f32> {
        let n = if self.scale.len() == 1 { 0 } else { t };
        self.scale.iter().nth(n).copied()
    }
}

/// The error for a fake-quantized activation: the `DequantizeLinear` node
/// `dq` read by `reader`.
pub(super) fn fake_quant_error(opset: i64, dq: &str, reader: &str) -> OnnxError {
    OnnxError::UnsupportedOp {
        op_type: "DequantizeLinear".into(),
        node: dq.into(),
        opset,
        reason: format!(
            "fake quantization of a float activation (read by {reader}); a QuantizeLinear → \
             DequantizeLinear pair maps only onto the int8 convolution or linear layer that \
             reads it or whose output it requantizes"
        ),
    }
}

impl Importer<'_> {
    /// Replaces each fake-quantized input that `node` does not fuse (input 0
    /// of a layer with a quantized weight) by the int8 layer output it
    /// requantizes.
    pub(super) fn materialize_fake_quant(
        &mut self,
        node: &NodeView,
        inputs: Vec<Option<Val>>,
    ) -> Result<Vec<Option<Val>>> {
        let fuses = matches!(node.op_type(), "Conv" | "Gemm" | "MatMul")
            && matches!(inputs.get(1), Some(Some(Val::QConst(_))));
        let reader = format!("{} node `{}`", node.op_type(), node.name());
        inputs
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Some(v @ Val::Dequantized { .. }) if !(fuses && i == 0) => {
                    Ok(Some(Val::Act(self.fake_quant_act(v, &reader)?)))
                }
                v => Ok(v),
            })
            .collect()
    }

    /// The activation a `DequantizeLinear(QuantizeLinear(x))` equals: `x`
    /// itself when an int8 layer produced it on that grid (setting the
    /// layer's output quantization when it has none and only the pair reads
    /// its float output); otherwise the fake-quantization error.
    pub(super) fn fake_quant_act(&mut self, v: Val, reader: &str) -> Result<Act> {
        let (act, params, sole, dq) = match v {
            Val::Dequantized {
                act,
                params,
                sole,
                node,
            } => (act, params, sole, node),
            Val::Act(a) => return Ok(a),
            _ => {
                return Err(OnnxError::InvalidModel(format!(
                    "{reader} reads a constant or partial value where an activation is expected"
                )))
            }
        };
        let def = self
            .def_of
            .get(&act.name)
            .and_then(|&i| self.defs.get_mut(i))
            .and_then(Option::as_mut);
        if let Some(NodeDef {
            op: NodeOp::Op(Op::Int8Conv(c)),
            ..
        }) = def
        {
            match c.output_params() {
                Some(p) if *p == params => return Ok(act),
                None if sole => {
                    *c = Int8Conv::new(
                        *c.layout(),
                        c.weights().clone(),
                        c.weight_scales().clone(),
                        *c.input_params(),
                        c.bias().cloned(),
                        Some(params),
                    )
                    .map_err(|e| OnnxError::core(format!("DequantizeLinear node `{dq}`"), e))?;
                    return Ok(act);
                }
                _ => {}
            }
        }
        Err(fake_quant_error(self.opset, &dq, reader))
    }

    /// `Conv` / `Gemm` / `MatMul` reading a fake-quantized activation with a
    /// quantized constant weight, as an [`Int8Conv`]; `None` when `node` is
    /// not of that form.
    pub(super) fn qdq_layer(
        &mut self,
        node: &NodeView,
        inputs: &[Option<Val>],
    ) -> Result<Option<Val>> {
        let (Some(Some(Val::Dequantized { act, params, .. })), Some(Some(Val::QConst(w)))) =
            (inputs.first(), inputs.get(1))
        else {
            return Ok(None);
        };
        let Tensor::I8(wq) = &w.q else {
            return Err(node.unsupported("quantized weights that are not int8"));
        };
        if !w.symmetric() {
            return Err(node.unsupported("asymmetric weights (weight zero point ≠ 0)"));
        }
        let core = |e| OnnxError::core(format!("{} node `{}`", node.op_type(), node.name()), e);
        let (layout, matrix, out_axis) = if node.op_type() == "Conv" {
            if act.rank != 4 || wq.ndim() != 4 {
                return Err(node.unsupported("only 2-D convolution of an NCHW input"));
            }
            let s = wq.shape();
            let dims = [s[0], s[1], s[2], s[3]];
            if let Some(k) = node.usizes("kernel_shape")? {
                if k != [dims[2], dims[3]] {
                    return Err(
                        node.invalid(format!("kernel_shape {k:?} disagrees with the weight"))
                    );
                }
            }
            let stride = pair(node, "strides")?;
            let dilation = pair(node, "dilations")?;
            let spec = ConvSpec {
                stride,
                padding: self.padding(node, act, (dims[2], dims[3]), stride, dilation)?,
                dilation,
                groups: node.usize_attr("group", 1)?,
            };
            let matrix = wq
                .as_standard_layout()
                .into_owned()
                .into_shape_with_order((dims[0], dims[1] * dims[2] * dims[3]))
                .map_err(|e| node.invalid(e.to_string()))?;
            (WeightLayout::conv(dims, spec).map_err(core)?, matrix, 0)
        } else {
            let gemm = node.op_type() == "Gemm";
            let beta_used = inputs.get(2).is_some_and(Option::is_some);
            if gemm
                && (node.int_or("transA", 0) != 0
                    || node.float("alpha").unwrap_or(1.0) != 1.0
                    || (beta_used && node.float("beta").unwrap_or(1.0) != 1.0))
            {
                return Err(node.unsupported("transA, alpha ≠ 1 or beta ≠ 1 on an int8 layer"));
            }
            if act.rank != 2 {
                return Err(node.unsupported(format!("input of rank {} (only [N, F])", act.rank)));
            }
            let m = wq
                .clone()
                .into_dimensionality::<Ix2>()
                .map_err(|_| node.unsupported(format!("a rank-{} weight", wq.ndim())))?;
            // Rows are output features: `[out, in]` with transB, else `[in, out]`.
            let (m, axis) = if gemm && node.int_or("transB", 0) != 0 {
                (m, 0)
            } else {
                (m.reversed_axes(), 1)
            };
            let m = m.as_standard_layout().into_owned();
            let layout = WeightLayout::linear(m.nrows(), m.ncols()).map_err(core)?;
            (layout, m, axis)
        };
        let rows = layout.rows();
        let axis = if w.axis < 0 {
            w.axis + wq.ndim() as i64
        } else {
            w.axis
        };
        let scales: Vec<f32> = w.scale.iter().copied().collect();
        let scales = match scales.as_slice() {
            [_] => Array1::from(scales),
            s if s.len() == rows && axis == out_axis => {
                if s.iter().all(|&v| v == s[0]) {
                    Array1::from(vec![s[0]])
                } else {
                    Array1::from(scales)
                }
            }
            s => {
                return Err(node.unsupported(format!(
                    "{} weight scales along axis {axis} (one, or one per output channel)",
                    s.len()
                )))
            }
        };
        let bias = match inputs.get(2).cloned().flatten() {
            None => None,
            Some(Val::QConst(b)) => Some(self.int8_bias(node, &b, params, &scales, rows)?),
            Some(_) => {
                return Err(node
                    .unsupported("a bias that is not DequantizeLinear of int32 on an int8 layer"))
            }
        };
        let q = Int8Conv::new(layout, matrix, scales, *params, bias, None).map_err(core)?;
        let weight = node.proto.input.get(1).map(String::as_str);
        let out = self.emit_op(node, q, &act.clone(), weight)?;
        Ok(Some(Val::Act(out)))
    }

    /// The int32 bias of an int8 layer, its scale checked against
    /// `s_in · s_w[t]`.
    fn int8_bias(
        &self,
        node: &NodeView,
        b: &QConst,
        input: &QuantParams,
        weight_scales: &Array1<f32>,
        rows: usize,
    ) -> Result<Array1<i32>> {
        let Tensor::I32(q) = &b.q else {
            return Err(node.unsupported("a bias that is not int32 on an int8 layer"));
        };
        if q.len() != rows {
            return Err(node.invalid(format!(
                "int32 bias of {} values for {rows} output channels",
                q.len()
            )));
        }
        if !b.symmetric() {
            return Err(node.unsupported("an int32 bias with a nonzero zero point"));
        }
        if b.scale.len() != 1 && b.scale.len() != rows {
            return Err(node.invalid(format!(
                "{} bias scales for {rows} output channels",
                b.scale.len()
            )));
        }
        for t in 0..rows {
            let sw = weight_scales[if weight_scales.len() == 1 { 0 } else { t }];
            let want = input.scale() * sw;
            let got = b.scale_at(t).unwrap_or(f32::NAN);
            let close = (got - want).abs() <= 1e-6 * want;
            if !close {
                return Err(node.unsupported(format!(
                    "bias scale {got} of output channel {t} differs from input scale · weight \
                     scale = {want}"
                )));
            }
        }
        Ok(q.iter().copied().collect())
    }
}
