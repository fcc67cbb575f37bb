//! Optimizers with PyTorch's update rules, and gradient clipping.
//!
//! Every optimizer checks first that each trainable parameter has a finite
//! gradient of its shape and that no gradient names anything else; on an
//! error nothing is updated.

use std::collections::BTreeMap;

use ndarray::{ArrayD, Zip};

use crate::error::{Result, TrainError};
use crate::params::{Grads, ParamStore};

/// An optimizer: one update of the trainable parameters from their gradients.
pub trait Optimizer {
    /// Applies one step with learning rate `lr` (from a [`crate::schedule`]).
    fn step(&mut self, params: &mut ParamStore, grads: &Grads, lr: f32) -> Result<()>;

    /// The state the next steps depend on (momentum buffers, moments, step
    /// count) as named f32 tensors, for checkpoints.
    fn state(&self) -> Grads;

    /// Replaces the state by one [`Optimizer::state`] returned; an entry
    /// this optimizer does not keep is an error, and nothing is changed
    /// then.
    fn load_state(&mut self, state: &Grads) -> Result<()>;
}

/// The parameter name of a state entry `NAME.suffix`.
fn state_param<'a>(key: &'a str, suffix: &str) -> Option<&'a str> {
    key.strip_suffix(suffix)?.strip_suffix('.')
}

fn check(params: &ParamStore, grads: &Grads, lr: f32) -> Result<()> {
    if !(lr.is_finite() && lr >= 0.0) {
        return Err(TrainError::invalid("learning rate", lr, "finite and >= 0"));
    }
    for (name, value, trainable) in params.iter() {
        if !trainable {
            continue;
        }
        let g = grads
            .get(name)
            .ok_or_else(|| TrainError::param(name, "has no gradient"))?;
        if g.shape() != value.shape() {
            return Err(TrainError::param(
                name,
                format!(
                    "gradient shape {:?}, parameter {:?}",
                    g.shape(),
                    value.shape()
                ),
            ));
        }
        if g.iter().any(|v| !v.is_finite()) {
            return Err(TrainError::param(name, "non-finite gradient"));
        }
    }
    if let Some(k) = grads.keys().find(|k| !params.is_trainable(k)) {
        return Err(TrainError::param(k, "gradient for no trainable parameter"));
    }
    Ok(())
}

fn unit(name: &'static str, v: f32) -> Result<f32> {
    if (0.0..1.0).contains(&v) {
        Ok(v)
    } else {
        Err(TrainError::invalid(name, v, "in [0, 1)"))
    }
}

fn non_negative(name: &'static str, v: f32) -> Result<f32> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(TrainError::invalid(name, v, "finite and >= 0"))
    }
}

/// Stochastic gradient descent with momentum `μ`, optional Nesterov
/// momentum and L2 weight decay `λ` (PyTorch's `SGD`, no dampening):
/// `d = g + λθ`; `b ← μ b + d` (`b = d` on the first step);
/// `θ ← θ − η (d + μ b)` with Nesterov, `θ ← θ − η b` without.
#[derive(Debug, Clone, Default)]
pub struct Sgd {
    momentum: f32,
    nesterov: bool,
    weight_decay: f32,
    buffers: BTreeMap<String, ArrayD<f32>>,
}

impl Sgd {
    /// SGD with momentum `μ ∈ [0, 1)` (0 for plain SGD).
    ///
    /// # Errors
    /// [`TrainError::Invalid`] for `μ` outside `[0, 1)`.
    ///
    /// ```
    /// use hasten_core::ndarray::{arr1, ArrayD};
    /// use hasten_train::optim::{Optimizer, Sgd};
    /// use hasten_train::{Grads, ParamStore};
    ///
    /// let mut params = ParamStore::new();
    /// params.insert("w", arr1(&[1.0f32, -2.0]).into_dyn(), true)?;
    /// let grads: Grads = [("w".to_string(), arr1(&[0.5f32, 1.0]).into_dyn())].into();
    /// // The first step has no history: θ − η g whatever the momentum.
    /// let mut sgd = Sgd::new(0.9)?.nesterov(false)?;
    /// sgd.step(&mut params, &grads, 0.1)?;
    /// let w: &ArrayD<f32> = params.get("w").unwrap();
    /// assert!((w[[0]] - 0.95).abs() < 1e-7 && (w[[1]] + 2.1).abs() < 1e-7);
    /// assert!(Sgd::new(1.0).is_err());
    /// assert!(Sgd::new(0.0)?.nesterov(true).is_err());
    /// # Ok::<(), hasten_train::TrainError>(())
    /// ```
    pub fn new(momentum: f32) -> Result<Self> {
        Ok(Sgd {
            momentum: unit("momentum", momentum)?,
            ..Sgd::default()
        })
    }

    /// Enables Nesterov momentum (needs `μ > 0`).
    ///
    /// # Errors
    /// [`TrainError::Invalid`] when turned on with `μ = 0`.
    pub fn nesterov(mut self, on: bool) -> Result<Self> {
        if on && self.momentum == 0.0 {
            return Err(TrainError::invalid(
                "nesterov momentum",
                self.momentum,
                "> 0 with Nesterov",
            ));
        }
        self.nesterov = on;
        Ok(self)
    }

    /// Sets the L2 weight decay `λ ≥ 0`.
    pub fn weight_decay(mut self, decay: f32) -> Result<Self> {
        self.weight_decay = non_negative("weight decay", decay)?;
        Ok(self)
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, params: &mut ParamStore, grads: &Grads, lr: f32) -> Result<()> {
        check(params, grads, lr)?;
        let (mu, wd, nesterov) = (self.momentum, self.weight_decay, self.nesterov);
        for (name, theta) in params.trainable_mut() {
            let d = Zip::from(&grads[name])
                .and(&*theta)
                .map_collect(|&g, &t| g + wd * t);
            let update = if mu == 0.0 {
                d
            } else {
                let buf = match self.buffers.get_mut(name) {
                    Some(b) => {
                        Zip::from(&mut *b)
                            .and(&d)
                            .for_each(|b, &d| *b = mu * *b + d);
                        b
                    }
                    None => self.buffers.entry(name.to_string()).or_insert(d.clone()),
                };
                if nesterov {
                    Zip::from(&d).and(&*buf).map_collect(|&d, &b| d + mu * b)
                } else {
                    buf.clone()
                }
            };
            Zip::from(theta).and(&update).for_each(|t, &u| *t -= lr * u);
        }
        Ok(())
    }

    /// `NAME.momentum_buffer` per parameter with a buffer.
    fn state(&self) -> Grads {
        self.buffers
            .iter()
            .map(|(k, b)| (format!("{k}.momentum_buffer"), b.clone()))
            .collect()
    }

    fn load_state(&mut self, state: &Grads) -> Result<()> {
        let mut buffers = BTreeMap::new();
        for (key, v) in state {
            let name = state_param(key, "momentum_buffer")
                .ok_or_else(|| TrainError::param(key, "not an SGD state entry"))?;
            buffers.insert(name.to_string(), v.clone());
        }
        self.buffers = buffers;
        Ok(())
    }
}

/// Adam (Kingma & Ba) with PyTorch's update: `m ← β₁m + (1−β₁)g`,
/// `v ← β₂v + (1−β₂)g²`, `θ ← θ − η/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)`.
/// Weight decay `λ` is L2 (`g ← g + λθ`) for Adam and decoupled
/// (`θ ← θ(1 − ηλ)` before the step) for AdamW.
#[derive(Debug, Clone)]
pub struct Adam {
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    decoupled: bool,
    t: i32,
    moments: BTreeMap<String, (ArrayD<f32>, ArrayD<f32>)>,
}

impl Default for Adam {
    fn default() -> Self {
        Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            t: 0,
            moments: BTreeMap::new(),
        }
    }
}

impl Adam {
    /// Adam with β₁ = 0.9, β₂ = 0.999, ε = 1e-8, no weight decay.
    pub fn new() -> Self {
        Self::default()
    }

    /// AdamW: decoupled weight decay `λ ≥ 0` (PyTorch's default is 0.01).
    ///
    /// # Errors
    /// [`TrainError::Invalid`] for a negative or non-finite `λ`.
    ///
    /// ```
    /// use hasten_core::ndarray::arr1;
    /// use hasten_train::optim::{Adam, Optimizer};
    /// use hasten_train::{Grads, ParamStore};
    ///
    /// // Adam's first step moves every weight by η·sign(g) (up to ε), whatever |g|.
    /// let mut params = ParamStore::new();
    /// params.insert("w", arr1(&[1.0f32, 1.0]).into_dyn(), true)?;
    /// let grads: Grads = [("w".to_string(), arr1(&[1e-3f32, -5.0]).into_dyn())].into();
    /// let mut adam = Adam::new().betas(0.9, 0.999)?;
    /// adam.step(&mut params, &grads, 0.01)?;
    /// let w = params.get("w").unwrap();
    /// assert!((w[[0]] - 0.99).abs() < 1e-6 && (w[[1]] - 1.01).abs() < 1e-6);
    /// assert_eq!(adam.steps(), 1);
    /// assert!(Adam::adamw(-0.01).is_err() && Adam::new().betas(1.0, 0.999).is_err());
    /// # Ok::<(), hasten_train::TrainError>(())
    /// ```
    pub fn adamw(weight_decay: f32) -> Result<Self> {
        Ok(Adam {
            weight_decay: non_negative("weight decay", weight_decay)?,
            decoupled: true,
            ..Adam::default()
        })
    }

    /// Sets β₁, β₂ ∈ [0, 1).
    pub fn betas(mut self, beta1: f32, beta2: f32) -> Result<Self> {
        self.beta1 = unit("beta1", beta1)?;
        self.beta2 = unit("beta2", beta2)?;
        Ok(self)
    }

    /// Sets ε > 0.
    pub fn eps(mut self, eps: f32) -> Result<Self> {
        if !(eps.is_finite() && eps > 0.0) {
            return Err(TrainError::invalid("adam eps", eps, "finite and > 0"));
        }
        self.eps = eps;
        Ok(self)
    }

    /// Sets the weight decay `λ ≥ 0` (L2 for Adam, decoupled for AdamW).
    pub fn weight_decay(mut self, decay: f32) -> Result<Self> {
        self.weight_decay = non_negative("weight decay", decay)?;
        Ok(self)
    }

    /// Steps taken so far.
    pub fn steps(&self) -> i32 {
        self.t
    }
}

impl Optimizer for Adam {
    fn step(&mut self, params: &mut ParamStore, grads: &Grads, lr: f32) -> Result<()> {
        check(params, grads, lr)?;
        self.t = self.t.saturating_add(1);
        let (b1, b2, eps, wd) = (self.beta1, self.beta2, self.eps, self.weight_decay);
        let bc1 = 1.0 - b1.powi(self.t);
        let bc2_sqrt = (1.0 - b2.powi(self.t)).sqrt();
        let step_size = lr / bc1;
        for (name, theta) in params.trainable_mut() {
            let g = &grads[name];
            let (m, v) = self
                .moments
                .entry(name.to_string())
                .or_insert_with(|| (ArrayD::zeros(g.raw_dim()), ArrayD::zeros(g.raw_dim())));
            Zip::from(theta)
                .and(g)
                .and(m)
                .and(v)
                .for_each(|t, &g, m, v| {
                    let g = if self.decoupled {
                        *t *= 1.0 - lr * wd;
                        g
                    } else {
                        g + wd * *t
                    };
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    *t -= step_size * *m / (v.sqrt() / bc2_sqrt + eps);
                });
        }
        Ok(())
    }

    /// `step` (a scalar) and `NAME.exp_avg`, `NAME.exp_avg_sq` per
    /// parameter (PyTorch's names).
    fn state(&self) -> Grads {
        let mut state = Grads::new();
        state.insert("step".into(), ndarray::arr0(self.t as f32).into_dyn());
        for (k, (m, v)) in &self.moments {
            state.insert(format!("{k}.exp_avg"), m.clone());
            state.insert(format!("{k}.exp_avg_sq"), v.clone());
        }
        state
    }

    fn load_state(&mut self, state: &Grads) -> Result<()> {
        let t = match state.get("step") {
            Some(s) if s.len() == 1 => {
                let t = s.iter().next().copied().unwrap_or(-1.0);
                if !(t >= 0.0 && t.fract() == 0.0 && t <= 16_777_216.0) {
                    return Err(TrainError::param(
                        "step",
                        format!("{t} is not a step count"),
                    ));
                }
                t as i32
            }
            _ => return Err(TrainError::param("step", "missing or not a scalar")),
        };
        let mut moments = BTreeMap::new();
        for (key, m) in state {
            if key == "step" || state_param(key, "exp_avg_sq").is_some() {
                continue;
            }
            let name = state_param(key, "exp_avg")
                .ok_or_else(|| TrainError::param(key, "not an Adam state entry"))?;
            let v = state
                .get(&format!("{name}.exp_avg_sq"))
                .filter(|v| v.shape() == m.shape())
                .ok_or_else(|| TrainError::param(key, "without an `exp_avg_sq` of its shape"))?;
            moments.insert(name.to_string(), (m.clone(), v.clone()));
        }
        if moments.len() * 2 + 1 != state.len() {
            return Err(TrainError::param(
                "exp_avg_sq",
                "an entry without its `exp_avg`",
            ));
        }
        self.t = t;
        self.moments = moments;
        Ok(())
    }
}

/// Scales all gradients together so that their global L2 norm is at most
/// `max_norm` (PyTorch's `clip_grad_norm_`: factor `max_norm/(‖g‖ + 1e-6)`
/// when below 1); returns the norm before clipping, accumulated in f64.
pub fn clip_grad_norm(grads: &mut Grads, max_norm: f32) -> Result<f32> {
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(TrainError::invalid(
            "max gradient norm",
            max_norm,
            "finite and > 0",
        ));
    }
    let total = grads
        .values()
        .flat_map(|g| g.iter())
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt();
    if !total.is_finite() {
        return Err(TrainError::invalid("gradient norm", total, "finite"));
    }
    let coef = f64::from(max_norm) / (total + 1e-6);
    if coef < 1.0 {
        for g in grads.values_mut() {
            g.mapv_inplace(|v| (f64::from(v) * coef) as f32);
        }
    }
    Ok(total as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, ArrayD};

    fn store(values: &[f32]) -> ParamStore {
        let mut s = ParamStore::new();
        s.insert("w", arr1(values).into_dyn(), true).unwrap();
        s.insert("bn.running_mean", arr1(&[5.0]).into_dyn(), false)
            .unwrap();
        s
    }

    fn grads(values: &[f32]) -> Grads {
        Grads::from([("w".to_string(), arr1(values).into_dyn())])
    }

    fn w(s: &ParamStore) -> Vec<f32> {
        s.get("w").unwrap().iter().copied().collect()
    }

    #[test]
    fn sgd_momentum_nesterov_and_decay_by_hand() {
        // Momentum 0.5, lr 0.1, gradients 1 then 2 then 0:
        // b = 1, 2.5, 1.25 → θ = 1 − 0.1, − 0.25, − 0.125.
        let mut s = store(&[1.0]);
        let mut opt = Sgd::new(0.5).unwrap();
        for (g, want) in [(1.0, 0.9), (2.0, 0.65), (0.0, 0.525)] {
            opt.step(&mut s, &grads(&[g]), 0.1).unwrap();
            assert!((w(&s)[0] - want).abs() < 1e-6, "{g}: {:?}", w(&s));
        }
        // Nesterov: d = 1, b = 1, θ -= 0.1·(1 + 0.5) ; then d = 2, b = 2.5, θ -= 0.1·(2 + 1.25).
        let mut s = store(&[1.0]);
        let mut opt = Sgd::new(0.5).unwrap().nesterov(true).unwrap();
        opt.step(&mut s, &grads(&[1.0]), 0.1).unwrap();
        assert!((w(&s)[0] - 0.85).abs() < 1e-6);
        opt.step(&mut s, &grads(&[2.0]), 0.1).unwrap();
        assert!((w(&s)[0] - 0.525).abs() < 1e-6);
        // Weight decay 0.1 adds 0.1·θ: θ = 2, g = 1 → 2 − 0.5·(1 + 0.2) = 1.4.
        let mut s = store(&[2.0]);
        Sgd::new(0.0)
            .unwrap()
            .weight_decay(0.1)
            .unwrap()
            .step(&mut s, &grads(&[1.0]), 0.5)
            .unwrap();
        assert!((w(&s)[0] - 1.4).abs() < 1e-6);
        // Buffers are untouched.
        assert_eq!(s.get("bn.running_mean").unwrap()[[0]], 5.0);
    }

    #[test]
    fn restored_state_continues_the_steps_exactly() {
        // Two steps in one optimizer equal one step, a state round trip
        // into a fresh optimizer, and a second step.
        fn check<O: Optimizer>(make: impl Fn() -> O) {
            let (g1, g2) = (grads(&[1.0, -2.0]), grads(&[0.5, 3.0]));
            let mut a = make();
            let mut sa = store(&[1.0, 2.0]);
            a.step(&mut sa, &g1, 0.1).unwrap();
            a.step(&mut sa, &g2, 0.1).unwrap();
            let mut b = make();
            let mut sb = store(&[1.0, 2.0]);
            b.step(&mut sb, &g1, 0.1).unwrap();
            let mut c = make();
            c.load_state(&b.state()).unwrap();
            c.step(&mut sb, &g2, 0.1).unwrap();
            assert_eq!(w(&sa), w(&sb));
            // A fresh optimizer's second step differs (the state matters).
            let mut sc = store(&[1.0, 2.0]);
            make().step(&mut sc, &g1, 0.1).unwrap();
            make().step(&mut sc, &g2, 0.1).unwrap();
            assert_ne!(w(&sa), w(&sc));
        }
        check(|| Sgd::new(0.9).unwrap());
        check(Adam::new);
        assert_eq!(Adam::new().state().keys().collect::<Vec<_>>(), ["step"]);
        // Foreign or incomplete states are errors.
        let mut adam = Adam::new();
        let mut s = store(&[1.0]);
        adam.step(&mut s, &grads(&[1.0]), 0.1).unwrap();
        let mut state = adam.state();
        state.remove("w.exp_avg_sq");
        assert!(Adam::new().load_state(&state).is_err());
        let mut state = adam.state();
        state.insert("step".into(), ndarray::arr0(1.5f32).into_dyn());
        assert!(Adam::new().load_state(&state).is_err());
        assert!(Sgd::new(0.9).unwrap().load_state(&adam.state()).is_err());
        assert!(Adam::new().load_state(&Grads::new()).is_err());
    }

    #[test]
    fn sgd_with_momentum_converges_to_the_quadratic_optimum() {
        // f(θ) = ½ Σ aᵢ (θᵢ − cᵢ)², ∇f = a ⊙ (θ − c); optimum θ = c.
        let a = [1.0f32, 4.0, 0.5];
        let c = [3.0f32, -1.0, 0.25];
        for nesterov in [false, true] {
            let mut s = store(&[0.0, 0.0, 0.0]);
            let mut opt = Sgd::new(0.9).unwrap().nesterov(nesterov).unwrap();
            for _ in 0..400 {
                let g: Vec<f32> = (0..3).map(|i| a[i] * (w(&s)[i] - c[i])).collect();
                opt.step(&mut s, &grads(&g), 0.05).unwrap();
            }
            for i in 0..3 {
                assert!((w(&s)[i] - c[i]).abs() < 1e-4, "{nesterov}: {:?}", w(&s));
            }
        }
    }

    #[test]
    fn adam_first_steps_by_hand() {
        // Step 1: m̂ = g, v̂ = g², so Δθ = −lr·g/(|g| + ε) ≈ −lr·sign(g).
        let mut s = store(&[1.0, -2.0]);
        let mut opt = Adam::new();
        opt.step(&mut s, &grads(&[0.5, -4.0]), 0.01).unwrap();
        assert!((w(&s)[0] - 0.99).abs() < 1e-6 && (w(&s)[1] + 1.99).abs() < 1e-6);
        // Step 2 with g = 1.5 on the first entry:
        // m = 0.9·0.05 + 0.1·1.5 = 0.195, v = 0.999·0.00025 + 0.001·2.25 = 0.00249975,
        // θ -= 0.01/(1 − 0.81) · 0.195 / (√v/√(1 − 0.998001) + 1e-8).
        opt.step(&mut s, &grads(&[1.5, -4.0]), 0.01).unwrap();
        let (m, v) = (0.195f64, 0.00249975f64);
        let want = 0.99 - 0.01 / 0.19 * m / (v.sqrt() / 0.001999f64.sqrt() + 1e-8);
        assert!(
            (f64::from(w(&s)[0]) - want).abs() < 1e-6,
            "{} vs {want}",
            w(&s)[0]
        );
        assert_eq!(opt.steps(), 2);
    }

    #[test]
    fn adam_weight_decay_l2_and_decoupled() {
        // AdamW: θ(1 − lr·λ) then the Adam step: 2·(1 − 0.1·0.5) − 0.1 = 1.8.
        let mut s = store(&[2.0]);
        Adam::adamw(0.5)
            .unwrap()
            .step(&mut s, &grads(&[3.0]), 0.1)
            .unwrap();
        assert!((w(&s)[0] - 1.8).abs() < 1e-6);
        // Adam with L2: the gradient becomes 3 + 0.5·2 = 4 > 0, first step −lr.
        let mut s = store(&[2.0]);
        Adam::new()
            .weight_decay(0.5)
            .unwrap()
            .step(&mut s, &grads(&[-0.5]), 0.1)
            .unwrap();
        // g = −0.5 + 1 = 0.5 > 0: θ = 2 − 0.1.
        assert!((w(&s)[0] - 1.9).abs() < 1e-6);
    }

    #[test]
    fn bad_gradients_and_hyper_parameters_are_errors_and_change_nothing() {
        let mut s = store(&[1.0]);
        let mut opt = Sgd::new(0.9).unwrap();
        let mut bad = grads(&[f32::NAN]);
        assert!(opt.step(&mut s, &bad, 0.1).is_err());
        bad.insert("w".into(), ArrayD::zeros(vec![2]));
        assert!(opt.step(&mut s, &bad, 0.1).is_err());
        assert!(opt.step(&mut s, &Grads::new(), 0.1).is_err());
        let mut extra = grads(&[1.0]);
        extra.insert("bn.running_mean".into(), arr1(&[1.0]).into_dyn());
        assert!(opt.step(&mut s, &extra, 0.1).is_err());
        assert!(opt.step(&mut s, &grads(&[1.0]), f32::NAN).is_err());
        assert_eq!(w(&s), vec![1.0]);
        assert!(Sgd::new(1.0).is_err() && Sgd::new(-0.1).is_err());
        assert!(Sgd::new(0.0).unwrap().nesterov(true).is_err());
        assert!(Adam::new().betas(0.9, 1.0).is_err() && Adam::new().eps(0.0).is_err());
        assert!(Adam::adamw(-1.0).is_err());
    }

    #[test]
    fn clipping_by_global_norm() {
        // Two tensors (3, 0) and (4): norm 5, clipped to 1 → ×1/(5 + 1e-6).
        let mut g = Grads::from([
            ("a".to_string(), arr1(&[3.0f32, 0.0]).into_dyn()),
            ("b".to_string(), arr1(&[4.0f32]).into_dyn()),
        ]);
        let norm = clip_grad_norm(&mut g, 1.0).unwrap();
        assert_eq!(norm, 5.0);
        assert!((g["a"][[0]] - 0.6).abs() < 1e-6 && (g["b"][[0]] - 0.8).abs() < 1e-6);
        // Below the limit nothing changes.
        let before = g.clone();
        assert!((clip_grad_norm(&mut g, 10.0).unwrap() - 1.0).abs() < 1e-6);
        assert_eq!(g, before);
        assert!(clip_grad_norm(&mut g, 0.0).is_err());
    }
}
