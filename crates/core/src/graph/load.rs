//! Loading named parameters into a graph: the inverse of
//! [`Graph::parameters`], so trained weights saved under PyTorch
//! `state_dict` names (`layer1.0.conv1.weight`, `bn1.running_var`, …) can
//! replace a built graph's. Every array is checked against the parameter's
//! shape, unknown and (for the strict load) missing names are errors, and a
//! failed load leaves the graph unchanged.

use std::collections::BTreeMap;

use ndarray::{Array1, Array2, ArrayD, Ix1, Ix2, Ix3, Ix4};

use super::{inner_ops, prefix, Graph, GraphError, NodeOp};
use crate::error::{Error, Result};
use crate::layer::{ConvLayer, LinearLayer};
use crate::op::{
    BatchNorm, BinaryConv, CodebookConv, Csr, FixedPointConv, GroupwiseConv, LcnnConv, Op,
    PerforatedConv, ProductQuantizedConv, SparseConv, SparseLinear, TernaryConv, TtLinear,
};
use crate::weight::Conv4d;
use crate::Block;

impl Graph {
    /// Replaces the parameters named in `params` (other parameters keep
    /// their values) and returns how many were set. A name the graph does
    /// not list in [`Graph::parameters`] is
    /// [`GraphError::UnexpectedParameter`]; an array of another shape is
    /// [`Error::ShapeMismatch`] naming the parameter; layer validation
    /// (finite values, `var ≥ 0`) applies. All or nothing.
    pub fn set_parameters(&mut self, params: &[(String, ArrayD<f32>)]) -> Result<usize> {
        let current: BTreeMap<String, Vec<usize>> = self
            .parameters()
            .into_iter()
            .map(|(n, a)| (n, a.shape().to_vec()))
            .collect();
        let mut given: BTreeMap<&str, &ArrayD<f32>> = BTreeMap::new();
        for (name, array) in params {
            let Some(shape) = current.get(name) else {
                return Err(GraphError::UnexpectedParameter { name: name.clone() }.into());
            };
            if array.shape() != shape.as_slice() {
                return Err(Error::shape(
                    format!("parameter `{name}`"),
                    format!("{shape:?}"),
                    format!("{:?}", array.shape()),
                ));
            }
            given.insert(name, array);
        }
        let mut replaced = Vec::new();
        for (index, node) in self.nodes.iter().enumerate() {
            let ops = inner_ops(&node.op);
            let mut fresh_ops = Vec::with_capacity(ops.len());
            let mut changed = false;
            for (i, op) in ops.iter().enumerate() {
                let pre = prefix(&node.name, &node.op, i);
                let fresh = with_given(op, |suffix| {
                    given.get(format!("{pre}.{suffix}").as_str()).copied()
                })?;
                changed |= fresh.is_some();
                fresh_ops.push(fresh.unwrap_or_else(|| op.clone()));
            }
            if !changed {
                continue;
            }
            let fresh = match &node.op {
                NodeOp::Block(_) => NodeOp::Block(Block::new(fresh_ops)?),
                _ => match fresh_ops.pop() {
                    Some(op) => NodeOp::Op(op),
                    None => continue,
                },
            };
            replaced.push((index, fresh));
        }
        for (index, op) in replaced {
            self.nodes[index].op = op;
        }
        Ok(given.len())
    }

    /// As [`Graph::set_parameters`], and every parameter of the graph must be
    /// given ([`GraphError::MissingParameter`] names the first absent one).
    pub fn load_parameters(&mut self, params: &[(String, ArrayD<f32>)]) -> Result<()> {
        let given: std::collections::HashSet<&str> =
            params.iter().map(|(n, _)| n.as_str()).collect();
        if let Some((name, _)) = self
            .parameters()
            .into_iter()
            .find(|(n, _)| !given.contains(n.as_str()))
        {
            return Err(GraphError::MissingParameter { name }.into());
        }
        self.set_parameters(params).map(|_| ())
    }
}

/// `op` with the parameters `get` returns by suffix (`weight`, `bias`, …)
/// replaced; `None` when it gives none of them.
pub(crate) fn with_given<'a>(
    op: &Op,
    get: impl Fn(&str) -> Option<&'a ArrayD<f32>>,
) -> Result<Option<Op>> {
    Ok(match op {
        Op::Conv(c) => {
            let (w, b) = (get("weight"), get("bias"));
            if w.is_none() && b.is_none() {
                None
            } else {
                let weight = match w {
                    Some(w) => Conv4d::new(dim::<Ix4>(w)?)?,
                    None => c.weight().clone(),
                };
                let bias = b.map(dim::<Ix1>).transpose()?.or_else(|| c.bias().cloned());
                Some(ConvLayer::new(weight, bias, *c.spec())?.into())
            }
        }
        Op::Linear(l) => {
            let (w, b) = (get("weight"), get("bias"));
            if w.is_none() && b.is_none() {
                None
            } else {
                let weight: Array2<f32> = match w {
                    Some(w) => dim::<Ix2>(w)?,
                    None => l.weight().clone(),
                };
                let bias = b.map(dim::<Ix1>).transpose()?.or_else(|| l.bias().cloned());
                Some(LinearLayer::new(weight, bias)?.into())
            }
        }
        Op::BatchNorm(bn) => {
            let parts = ["weight", "bias", "running_mean", "running_var"].map(get);
            if parts.iter().all(Option::is_none) {
                None
            } else {
                let pick = |i: usize, old: &Array1<f32>| -> Result<Array1<f32>> {
                    parts[i].map_or_else(|| Ok(old.clone()), dim::<Ix1>)
                };
                Some(
                    BatchNorm::new(
                        pick(0, bn.gamma())?,
                        pick(1, bn.beta())?,
                        pick(2, bn.mean())?,
                        pick(3, bn.var())?,
                        bn.eps(),
                    )?
                    .into(),
                )
            }
        }
        _ => compressed_with_given(op, get)?,
    })
}

/// [`with_given`] for the compressed ops: the op rebuilt around its fixed
/// structure (sparsity pattern, codes, taps, dictionary indices) with the
/// given stored values (see [`super::op_parameters`]).
fn compressed_with_given<'a>(
    op: &Op,
    get: impl Fn(&str) -> Option<&'a ArrayD<f32>>,
) -> Result<Option<Op>> {
    let current = super::op_parameters(op);
    if current.iter().all(|(n, _)| get(n).is_none()) {
        return Ok(None);
    }
    let pick = |name: &str| -> ArrayD<f32> {
        get(name).cloned().unwrap_or_else(|| {
            current
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .expect("a parameter of the op")
        })
    };
    let bias = |has: bool| -> Result<Option<Array1<f32>>> {
        has.then(|| dim::<Ix1>(&pick("bias"))).transpose()
    };
    let values = |csr: &Csr| -> Result<Csr> {
        Csr::new(
            csr.rows(),
            csr.cols(),
            csr.row_ptr().to_vec(),
            csr.col_idx().to_vec(),
            pick("values").iter().copied().collect(),
        )
    };
    Ok(Some(match op {
        Op::SparseConv(s) => SparseConv::new(
            values(s.filters())?,
            s.in_channels(),
            s.kernel_hw(),
            bias(s.bias().is_some())?,
            *s.spec(),
        )?
        .into(),
        Op::SparseLinear(s) => {
            SparseLinear::new(values(s.weight())?, bias(s.bias().is_some())?)?.into()
        }
        Op::CodebookConv(c) => CodebookConv::new(
            *c.layout(),
            c.codes().clone(),
            dim::<Ix2>(&pick("centroids"))?,
            bias(c.bias().is_some())?,
        )?
        .into(),
        Op::ProductQuantizedConv(q) => ProductQuantizedConv::new(
            *q.layout(),
            q.codes().clone(),
            dim::<Ix3>(&pick("centroids"))?,
            bias(q.bias().is_some())?,
        )?
        .into(),
        Op::BinaryConv(b) => BinaryConv::new(
            *b.layout(),
            b.signs().clone(),
            dim::<Ix1>(&pick("alpha"))?,
            bias(b.bias().is_some())?,
            false,
        )?
        .with_input(b.input())
        .into(),
        Op::TernaryConv(t) => TernaryConv::new(
            *t.layout(),
            t.codes().clone(),
            dim::<Ix1>(&pick("scales"))?,
            bias(t.bias().is_some())?,
        )?
        .into(),
        Op::FixedPointConv(f) => FixedPointConv::new(
            *f.layout(),
            f.codes().clone(),
            dim::<Ix1>(&pick("scales"))?,
            dim::<Ix1>(&pick("offsets"))?,
            bias(f.bias().is_some())?,
        )?
        .into(),
        Op::GroupwiseConv(g) => GroupwiseConv::new(
            g.in_channels(),
            g.kernel_hw(),
            g.taps().to_vec(),
            dim::<Ix2>(&pick("weight"))?,
            bias(g.bias().is_some())?,
            *g.spec(),
        )?
        .into(),
        Op::PerforatedConv(p) => {
            let conv = ConvLayer::new(
                Conv4d::new(dim::<Ix4>(&pick("weight"))?)?,
                bias(p.conv().bias().is_some())?,
                *p.conv().spec(),
            )?;
            PerforatedConv::new(conv, p.out_hw(), p.mask().to_vec())?.into()
        }
        Op::LcnnConv(l) => LcnnConv::new(
            *l.layout(),
            dim::<Ix2>(&pick("dictionary"))?,
            l.offsets().to_vec(),
            l.indices().to_vec(),
            pick("coeffs").iter().copied().collect(),
            bias(l.bias().is_some())?,
        )?
        .into(),
        Op::Int8Conv(q) if q.learns_scale() => {
            let s = dim::<Ix1>(&pick("scale"))?;
            if s.len() != 1 {
                return Err(Error::shape("learned activation scale", 1, s.len()));
            }
            q.with_learned_scale(s[0])?.into()
        }
        Op::TtLinear(t) => TtLinear::new(
            (0..t.cores().len())
                .map(|k| dim::<Ix4>(&pick(&super::tt_core_name(k))))
                .collect::<Result<_>>()?,
            bias(t.bias().is_some())?,
        )?
        .into(),
        _ => return Ok(None),
    }))
}

fn dim<D: ndarray::Dimension>(a: &ArrayD<f32>) -> Result<ndarray::Array<f32, D>> {
    a.clone()
        .into_dimensionality::<D>()
        .map_err(|e| Error::shape("parameter rank", D::NDIM.unwrap_or(0), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::GraphBuilder;
    use crate::{ActShape, ConvSpec, Relu, SeededRng};

    fn graph() -> Graph {
        let mut rng = SeededRng::new(1);
        let mut b = GraphBuilder::new();
        let x = b.input("input", ActShape::new(2, 4, 4));
        let w = Conv4d::new(rng.normal_array((3, 2, 3, 3), 0.5)).unwrap();
        let conv = ConvLayer::new(w, Some(Array1::zeros(3)), ConvSpec::new()).unwrap();
        let y = b.op("conv", conv, x);
        let bn = BatchNorm::new(
            Array1::ones(3),
            Array1::zeros(3),
            Array1::zeros(3),
            Array1::ones(3),
            1e-5,
        )
        .unwrap();
        let y = b.op("bn", bn, y);
        let y = b.op("relu", Relu, y);
        let fc = LinearLayer::new(rng.normal_array((5, 12), 0.5), None).unwrap();
        let y = b.op("fc", fc, y);
        b.output(y);
        b.build().unwrap()
    }

    #[test]
    fn load_replaces_every_parameter_and_round_trips() {
        let mut g = graph();
        let mut rng = SeededRng::new(9);
        let fresh: Vec<(String, ArrayD<f32>)> = g
            .parameters()
            .into_iter()
            .map(|(n, a)| {
                let v = rng.normal_array(a.shape().to_vec(), 1.0);
                let v = if n.ends_with("running_var") {
                    v.mapv(f32::abs)
                } else {
                    v
                };
                (n, v)
            })
            .collect();
        g.load_parameters(&fresh).unwrap();
        assert_eq!(g.parameters(), fresh);
    }

    #[test]
    fn errors_name_the_parameter_and_leave_the_graph_alone() {
        let mut g = graph();
        let before = g.clone();
        let bad = vec![("conv.weight".to_string(), ArrayD::zeros(vec![3, 2, 3, 4]))];
        assert!(
            matches!(g.set_parameters(&bad), Err(Error::ShapeMismatch { what, .. }) if what.contains("conv.weight"))
        );
        let unknown = vec![("conv.scale".to_string(), ArrayD::zeros(vec![3]))];
        assert!(matches!(
            g.set_parameters(&unknown),
            Err(Error::Graph(GraphError::UnexpectedParameter { name })) if name == "conv.scale"
        ));
        let negative_var = vec![
            ("bn.weight".to_string(), ArrayD::ones(vec![3])),
            (
                "bn.running_var".to_string(),
                ArrayD::from_elem(vec![3], -1.0),
            ),
        ];
        assert!(g.set_parameters(&negative_var).is_err());
        assert_eq!(g, before);
        let partial = vec![("fc.weight".to_string(), ArrayD::zeros(vec![5, 12]))];
        assert!(matches!(
            g.load_parameters(&partial),
            Err(Error::Graph(GraphError::MissingParameter { name })) if name == "conv.weight"
        ));
        assert_eq!(g.set_parameters(&partial).unwrap(), 1);
        assert!(g.node("fc").unwrap().op().as_op().is_some());
        assert_eq!(
            g.parameters()
                .iter()
                .find(|(n, _)| n == "fc.weight")
                .unwrap()
                .1,
            ArrayD::<f32>::zeros(vec![5, 12])
        );
    }
}
