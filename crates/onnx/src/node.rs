//! A view of one ONNX node for the importer and the constant evaluator: its
//! identity for error messages and typed attribute look-ups.

use crate::error::OnnxError;
use crate::proto::{AttributeProto, NodeProto};
use crate::tensor::Tensor;

/// One ONNX node with the model's default-domain opset.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NodeView<'a> {
    pub proto: &'a NodeProto,
    pub opset: i64,
}

impl<'a> NodeView<'a> {
    pub fn op_type(&self) -> &'a str {
        self.proto.op_type()
    }

    /// The node name, or its first output when unnamed.
    pub fn name(&self) -> &'a str {
        match self.proto.name() {
            "" => self.proto.output.first().map_or("", String::as_str),
            n => n,
        }
    }

    pub fn unsupported(&self, reason: impl Into<String>) -> OnnxError {
        OnnxError::UnsupportedOp {
            op_type: self.op_type().to_string(),
            node: self.name().to_string(),
            opset: self.opset,
            reason: reason.into(),
        }
    }

    pub fn invalid(&self, reason: impl Into<String>) -> OnnxError {
        OnnxError::InvalidNode {
            op_type: self.op_type().to_string(),
            node: self.name().to_string(),
            reason: reason.into(),
        }
    }

    fn attr(&self, name: &str) -> Option<&'a AttributeProto> {
        self.proto.attribute.iter().find(|a| a.name() == name)
    }

    pub fn has_attr(&self, name: &str) -> bool {
        self.attr(name).is_some()
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        self.attr(name).and_then(|a| a.i)
    }

    pub fn int_or(&self, name: &str, default: i64) -> i64 {
        self.int(name).unwrap_or(default)
    }

    pub fn float(&self, name: &str) -> Option<f32> {
        self.attr(name).and_then(|a| a.f)
    }

    pub fn ints(&self, name: &str) -> Option<&'a [i64]> {
        self.attr(name).map(|a| a.ints.as_slice())
    }

    pub fn floats(&self, name: &str) -> Option<&'a [f32]> {
        self.attr(name).map(|a| a.floats.as_slice())
    }

    pub fn string(&self, name: &str) -> Option<&'a [u8]> {
        self.attr(name).and_then(|a| a.s.as_deref())
    }

    pub fn tensor(&self, name: &str) -> Option<crate::error::Result<Tensor>> {
        self.attr(name)
            .and_then(|a| a.t.as_ref())
            .map(Tensor::from_proto)
    }

    /// The names of the node's attributes.
    pub fn attr_names(&self) -> impl Iterator<Item = &'a str> {
        self.proto.attribute.iter().map(|a| a.name())
    }

    /// A non-negative integer attribute as usize.
    pub fn usize_attr(&self, name: &str, default: usize) -> crate::error::Result<usize> {
        match self.int(name) {
            None => Ok(default),
            Some(v) => usize::try_from(v)
                .map_err(|_| self.invalid(format!("attribute {name} = {v} must be >= 0"))),
        }
    }

    /// A list of non-negative integers as usize.
    pub fn usizes(&self, name: &str) -> crate::error::Result<Option<Vec<usize>>> {
        self.ints(name)
            .map(|v| {
                v.iter()
                    .map(|&x| {
                        usize::try_from(x).map_err(|_| {
                            self.invalid(format!("attribute {name} holds {x}, must be >= 0"))
                        })
                    })
                    .collect()
            })
            .transpose()
    }
}
