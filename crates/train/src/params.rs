//! [`ParamStore`]: the values a training run updates, by `state_dict` name.

use std::collections::BTreeMap;

use hasten_core::grad::{graph_with_params, is_trainable, Params};
use hasten_core::Graph;
use ndarray::ArrayD;

use crate::error::{Result, TrainError};

/// Gradients (or any per-parameter f32 tensors) by `state_dict` name.
pub type Grads = BTreeMap<String, ArrayD<f32>>;

/// A graph's parameters (trainable) and buffers (batch-norm running
/// statistics) by `state_dict` name, in f32.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParamStore {
    values: BTreeMap<String, (ArrayD<f32>, bool)>,
}

impl ParamStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every dense parameter of `graph` under the names the tapes use, those
    /// of [`Graph::parameters`] (the dense ops inside compressed blocks
    /// included: `node.index.weight`, a decomposition's factors);
    /// batch-norm `running_mean` / `running_var` are buffers, the rest
    /// trainable.
    pub fn from_graph(graph: &Graph) -> Self {
        let mut store = ParamStore::new();
        for (name, v) in graph.parameters() {
            let trainable = is_trainable(name.rsplit('.').next().unwrap_or(""));
            store.values.insert(name, (v, trainable));
        }
        store
    }

    /// Adds (or replaces) a value; rejects non-finite entries.
    pub fn insert(
        &mut self,
        name: impl Into<String>,
        value: ArrayD<f32>,
        trainable: bool,
    ) -> Result<()> {
        let name = name.into();
        if value.iter().any(|v| !v.is_finite()) {
            return Err(TrainError::param(&name, "holds a non-finite value"));
        }
        self.values.insert(name, (value, trainable));
        Ok(())
    }

    /// Removes the value named `name`, returning it.
    pub fn remove(&mut self, name: &str) -> Option<ArrayD<f32>> {
        self.values.remove(name).map(|(v, _)| v)
    }

    /// The value named `name`.
    pub fn get(&self, name: &str) -> Option<&ArrayD<f32>> {
        self.values.get(name).map(|(v, _)| v)
    }

    /// The value named `name`, mutably.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut ArrayD<f32>> {
        self.values.get_mut(name).map(|(v, _)| v)
    }

    /// Whether `name` is a trainable parameter (not a buffer).
    pub fn is_trainable(&self, name: &str) -> bool {
        self.values.get(name).is_some_and(|(_, t)| *t)
    }

    /// Every value in name order, with whether it is trainable.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ArrayD<f32>, bool)> {
        self.values.iter().map(|(k, (v, t))| (k.as_str(), v, *t))
    }

    /// The trainable parameters in name order, mutably.
    pub fn trainable_mut(&mut self) -> impl Iterator<Item = (&str, &mut ArrayD<f32>)> {
        self.values
            .iter_mut()
            .filter(|(_, (_, t))| *t)
            .map(|(k, (v, _))| (k.as_str(), v))
    }

    /// The number of values (parameters and buffers).
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The number of trainable scalars.
    pub fn trainable_count(&self) -> usize {
        self.values
            .values()
            .filter(|(_, t)| *t)
            .map(|(v, _)| v.len())
            .sum()
    }

    /// Every value in f64, for `hasten_core::grad::Tape::forward`.
    pub fn to_f64(&self) -> Params {
        self.values
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.mapv(f64::from)))
            .collect()
    }

    /// Sets existing values from f64 ones (e.g. the running statistics a
    /// training-mode forward returns); an unknown name or a shape change is
    /// an error, and nothing is changed then.
    pub fn update_from_f64(&mut self, values: &Params) -> Result<()> {
        for (k, v) in values {
            match self.values.get(k) {
                None => return Err(TrainError::param(k, "not in the store")),
                Some((old, _)) if old.shape() != v.shape() => {
                    return Err(TrainError::param(
                        k,
                        format!("shape {:?}, store holds {:?}", v.shape(), old.shape()),
                    ))
                }
                _ => {}
            }
        }
        for (k, v) in values {
            self.values.get_mut(k).expect("checked").0 = v.mapv(|x| x as f32);
        }
        Ok(())
    }

    /// A copy of `graph` holding this store's values.
    pub fn apply_to(&self, graph: &Graph) -> Result<Graph> {
        Ok(graph_with_params(graph, &self.to_f64())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::graph::GraphBuilder;
    use hasten_core::{ActShape, Block, ConvLayer, ConvSpec, LinearLayer, Relu, SeededRng};

    #[test]
    fn the_store_holds_the_parameters_inside_blocks() {
        let mut rng = SeededRng::new(3);
        let conv = |rng: &mut SeededRng, t, c| {
            ConvLayer::from_array(rng.normal_array((t, c, 1, 1), 0.5), ConvSpec::new()).unwrap()
        };
        let mut b = GraphBuilder::new();
        let x = b.input("x", ActShape::new(3, 2, 2));
        let factors = Block::new(vec![
            conv(&mut rng, 2, 3).into(),
            Relu.into(),
            conv(&mut rng, 4, 2).into(),
        ])
        .unwrap();
        let y = b.op("conv", conv(&mut rng, 4, 3), x);
        let y = b.op("flatten", hasten_core::Flatten, y);
        let fc = LinearLayer::new(rng.normal_array((5, 16), 0.5), None).unwrap();
        let y = b.op("fc", fc, y);
        b.output(y);
        let mut g = b.build().unwrap();
        g.replace("conv", factors).unwrap();
        let store = ParamStore::from_graph(&g);
        let names: Vec<&str> = store.iter().map(|(n, _, _)| n).collect();
        assert_eq!(names, ["conv.0.weight", "conv.2.weight", "fc.weight"]);
        assert!(store.is_trainable("conv.0.weight") && store.is_trainable("conv.2.weight"));
        // Writing the store back reproduces the graph.
        assert_eq!(store.apply_to(&g).unwrap(), g);
    }
}
