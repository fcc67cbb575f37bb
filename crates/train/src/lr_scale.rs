//! [`LrScales`]: per-parameter learning-rate multipliers, applied as
//! gradient scales before the optimizer step.
//!
//! Under SGD without weight decay (the fine-tuning of the survey's
//! pipeline) a gradient scale `s` on a parameter is exactly a learning rate
//! `s·η` for it, momentum included (the buffer is linear in the gradient);
//! `s = 0` freezes it. Two uses:
//! - the factors of a low-rank decomposition fine-tuned at a smaller rate
//!   than the rest of the network (Lebedev et al. report that fine-tuning
//!   CP-decomposed layers is unstable, survey section 2);
//! - the step sizes and offsets of uniform quantizers (survey section 5),
//!   whose gradients sum those of every weight they scale: as in LSQ
//!   (Esser et al., "Learned step size quantization") they are scaled
//!   down so that their steps stay the size of the weights' own
//!   ([`LrScales::fixed_point_projected`]).

use std::collections::BTreeMap;

use hasten_core::graph::{inner_ops, prefix};
use hasten_core::op::Op;
use hasten_core::Graph;

use crate::error::{Result, TrainError};
use crate::params::{Grads, ParamStore};

/// Learning-rate multipliers by `state_dict` parameter name; a parameter
/// without one keeps the optimizer's rate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LrScales {
    scales: BTreeMap<String, f32>,
}

impl LrScales {
    /// No multipliers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the multiplier of `name` (finite, ≥ 0; 0 freezes it),
    /// multiplying an existing one.
    ///
    /// # Errors
    /// [`TrainError::Invalid`] for a negative or non-finite multiplier.
    pub fn set(&mut self, name: impl Into<String>, scale: f32) -> Result<()> {
        if !(scale.is_finite() && scale >= 0.0) {
            return Err(TrainError::invalid(
                "learning-rate multiplier",
                scale,
                "finite and >= 0",
            ));
        }
        *self.scales.entry(name.into()).or_insert(1.0) *= scale;
        Ok(())
    }

    /// The multiplier of `name` (1 when it has none).
    pub fn get(&self, name: &str) -> f32 {
        self.scales.get(name).copied().unwrap_or(1.0)
    }

    /// The number of parameters with a multiplier.
    pub fn len(&self) -> usize {
        self.scales.len()
    }

    /// Whether no parameter has a multiplier.
    pub fn is_empty(&self) -> bool {
        self.scales.is_empty()
    }

    /// The gradient scales of the per-filter `scales` and `offsets` of every
    /// fixed-point convolution of `graph` (survey section 5), in the spirit
    /// of LSQ (Esser et al.): a parameter `θ` that every weight `w_j` of its
    /// group depends on through `∂w_j/∂θ = J_j` (`J_j = u_j`, the stored
    /// code, for a scale; `J_j = 1` for an offset, in `w = scale·u +
    /// offset`) gets `1/‖J‖²`, so that its SGD step `−η·Jᵀg/‖J‖²` changes
    /// the weights by the least-squares projection onto `J` of the step
    /// `−η·g` plain SGD would take on them. `‖J‖²` is averaged over the
    /// groups of a layer (one multiplier per tensor). LSQ's `1/√(N·Q_P)`
    /// assumes codes centred on 0; the stored codes here are unsigned (a
    /// symmetric 4-bit code is `q + 8`), so a scale's gradient carries the
    /// offset's eight times over and `1/√(N·Q_P)` still diverges.
    pub fn fixed_point_projected(graph: &Graph) -> Self {
        let mut out = LrScales::new();
        for node in graph.nodes() {
            for (i, op) in inner_ops(node.op()).iter().enumerate() {
                let Op::FixedPointConv(f) = op else { continue };
                let groups = f.scales().len().max(1) as f64;
                let codes = f.codes().unpack();
                let sum_u2: f64 = codes.iter().map(|&u| f64::from(u).powi(2)).sum();
                let scale = (groups / sum_u2.max(1.0)) as f32;
                let offset = (groups / codes.len().max(1) as f64) as f32;
                let pre = prefix(node.name(), node.op(), i);
                out.scales.insert(format!("{pre}.scales"), scale);
                out.scales.insert(format!("{pre}.offsets"), offset);
            }
        }
        out
    }

    /// Checks that every name is a trainable parameter of `store`.
    ///
    /// # Errors
    /// [`TrainError::Param`] naming the first that is not.
    pub fn check(&self, store: &ParamStore) -> Result<()> {
        match self.scales.keys().find(|k| !store.is_trainable(k)) {
            Some(k) => Err(TrainError::param(
                k,
                "a learning-rate multiplier for no trainable parameter",
            )),
            None => Ok(()),
        }
    }

    /// Multiplies each gradient by its parameter's multiplier.
    pub fn apply(&self, grads: &mut Grads) {
        for (name, s) in &self.scales {
            if let Some(g) = grads.get_mut(name) {
                g.mapv_inplace(|v| v * s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{Optimizer, Sgd};
    use ndarray::arr1;

    /// Momentum SGD on f(θ) = Σ θ²/2 (gradient θ) for a few steps.
    fn run(lr: f32, scales: &LrScales) -> ParamStore {
        let mut store = ParamStore::new();
        store
            .insert("a", arr1(&[1.0f32, -2.0]).into_dyn(), true)
            .unwrap();
        store.insert("b", arr1(&[3.0f32]).into_dyn(), true).unwrap();
        scales.check(&store).unwrap();
        let mut sgd = Sgd::new(0.9).unwrap();
        for _ in 0..5 {
            let mut grads: Grads = store
                .iter()
                .map(|(k, v, _)| (k.to_string(), v.clone()))
                .collect();
            scales.apply(&mut grads);
            sgd.step(&mut store, &grads, lr).unwrap();
        }
        store
    }

    #[test]
    fn a_multiplier_is_the_learning_rate_of_its_parameter_under_sgd() {
        let mut scales = LrScales::new();
        scales.set("a", 0.25).unwrap();
        let mixed = run(0.1, &scales);
        // `a` moves as under a quarter of the rate, `b` as under the full one.
        let slow = run(0.025, &LrScales::new());
        let fast = run(0.1, &LrScales::new());
        for (got, want) in mixed.get("a").unwrap().iter().zip(slow.get("a").unwrap()) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        assert_eq!(mixed.get("b"), fast.get("b"));
        // Zero freezes.
        let mut frozen = LrScales::new();
        frozen.set("b", 0.0).unwrap();
        assert_eq!(run(0.1, &frozen).get("b").unwrap()[[0]], 3.0);
    }

    #[test]
    fn a_trainer_leaves_a_frozen_parameter_and_refuses_unknown_names() {
        use crate::data::ImageSet;
        use crate::schedule::Constant;
        use crate::{TrainConfig, Trainer};
        use hasten_core::SeededRng;
        use hasten_models::{lenet5, ModelConfig};

        let g = lenet5(&ModelConfig::mnist()).unwrap();
        let mut rng = SeededRng::new(3);
        let data = ImageSet::new(
            rng.normal_array((16, 1, 28, 28), 1.0),
            (0..16).map(|i| i % 10).collect(),
            10,
        )
        .unwrap();
        let config = TrainConfig {
            epochs: 1,
            batch_size: 8,
            ..TrainConfig::default()
        };
        let trainer = || {
            Trainer::new(
                g.clone(),
                Sgd::new(0.9).unwrap(),
                Constant::new(0.05).unwrap(),
                config.clone(),
            )
            .unwrap()
        };
        let mut unknown = LrScales::new();
        unknown.set("conv9.weight", 0.5).unwrap();
        assert!(trainer().with_lr_scales(unknown).is_err());
        let mut frozen = LrScales::new();
        frozen.set("conv1.weight", 0.0).unwrap();
        let mut t = trainer().with_lr_scales(frozen).unwrap();
        t.fit(&data, &data, |_| {}).unwrap();
        let before = ParamStore::from_graph(&g);
        assert_eq!(t.params().get("conv1.weight"), before.get("conv1.weight"));
        assert_ne!(t.params().get("conv2.weight"), before.get("conv2.weight"));
    }

    #[test]
    fn bad_multipliers_and_unknown_names_are_errors() {
        let mut s = LrScales::new();
        assert!(s.set("a", -1.0).is_err());
        assert!(s.set("a", f32::NAN).is_err());
        s.set("a", 0.5).unwrap();
        s.set("a", 0.5).unwrap();
        assert_eq!(s.get("a"), 0.25);
        let mut store = ParamStore::new();
        store
            .insert("a", arr1(&[1.0f32]).into_dyn(), false)
            .unwrap();
        assert!(s.check(&store).is_err(), "a buffer is not trainable");
        assert!(s.check(&ParamStore::new()).is_err());
    }
}
