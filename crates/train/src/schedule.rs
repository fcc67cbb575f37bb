//! Learning-rate schedules: the rate for optimizer step `t` (0-based).

use std::f64::consts::PI;

use crate::error::{Result, TrainError};

/// A learning rate as a function of the step.
pub trait Schedule {
    /// The learning rate of step `step` (0-based).
    fn lr(&self, step: usize) -> f32;
}

fn rate(name: &'static str, v: f32) -> Result<f64> {
    if v.is_finite() && v >= 0.0 {
        Ok(f64::from(v))
    } else {
        Err(TrainError::invalid(name, v, "finite and >= 0"))
    }
}

fn positive(name: &'static str, v: usize) -> Result<usize> {
    if v > 0 {
        Ok(v)
    } else {
        Err(TrainError::invalid(name, v, ">= 1"))
    }
}

/// `(1 + cos(π·p))/2` interpolation from `start` (p = 0) to `end` (p = 1).
fn anneal_cos(start: f64, end: f64, p: f64) -> f64 {
    end + (start - end) * (1.0 + (PI * p).cos()) / 2.0
}

/// A constant rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Constant(f64);

impl Constant {
    /// The rate `lr ≥ 0`.
    pub fn new(lr: f32) -> Result<Self> {
        Ok(Constant(rate("learning rate", lr)?))
    }
}

impl Schedule for Constant {
    fn lr(&self, _: usize) -> f32 {
        self.0 as f32
    }
}

/// Step decay: `η₀ · γ^⌊t / s⌋`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepDecay {
    base: f64,
    gamma: f64,
    step_size: usize,
}

impl StepDecay {
    /// Multiplies `base` by `gamma ∈ [0, 1]` every `step_size ≥ 1` steps.
    ///
    /// # Errors
    /// [`TrainError::Invalid`] for a negative or non-finite `base`, `gamma`
    /// outside `[0, 1]` or a zero `step_size`.
    ///
    /// ```
    /// use hasten_train::schedule::{Schedule, StepDecay};
    ///
    /// let s = StepDecay::new(0.1, 0.5, 10)?;
    /// assert_eq!([s.lr(0), s.lr(9), s.lr(10), s.lr(25)], [0.1, 0.1, 0.05, 0.025]);
    /// assert!(StepDecay::new(0.1, 1.5, 10).is_err());
    /// # Ok::<(), hasten_train::TrainError>(())
    /// ```
    pub fn new(base: f32, gamma: f32, step_size: usize) -> Result<Self> {
        if !(0.0..=1.0).contains(&gamma) {
            return Err(TrainError::invalid("decay factor", gamma, "in [0, 1]"));
        }
        Ok(StepDecay {
            base: rate("learning rate", base)?,
            gamma: f64::from(gamma),
            step_size: positive("decay period", step_size)?,
        })
    }
}

impl Schedule for StepDecay {
    fn lr(&self, step: usize) -> f32 {
        let k = (step / self.step_size).min(i32::MAX as usize) as i32;
        (self.base * self.gamma.powi(k)) as f32
    }
}

/// Cosine annealing (Loshchilov & Hutter, no restarts):
/// `η_min + (η₀ − η_min)(1 + cos(π t / T))/2` for `t ≤ T`, `η_min` after.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cosine {
    base: f64,
    min: f64,
    total: usize,
}

impl Cosine {
    /// From `base` down to `min` over `total ≥ 1` steps.
    ///
    /// # Errors
    /// [`TrainError::Invalid`] for a negative or non-finite rate or a zero
    /// `total`.
    ///
    /// ```
    /// use hasten_train::schedule::{Cosine, Schedule};
    ///
    /// // Half-way the rate is the mean of base and min; after `total`, min.
    /// let s = Cosine::new(1.0, 0.0, 100)?;
    /// assert_eq!(s.lr(0), 1.0);
    /// assert!((s.lr(50) - 0.5).abs() < 1e-7);
    /// assert_eq!(s.lr(500), 0.0);
    /// assert!(Cosine::new(1.0, 0.0, 0).is_err());
    /// # Ok::<(), hasten_train::TrainError>(())
    /// ```
    pub fn new(base: f32, min: f32, total: usize) -> Result<Self> {
        Ok(Cosine {
            base: rate("learning rate", base)?,
            min: rate("minimum learning rate", min)?,
            total: positive("cosine period", total)?,
        })
    }
}

impl Schedule for Cosine {
    fn lr(&self, step: usize) -> f32 {
        let p = (step.min(self.total) as f64) / self.total as f64;
        anneal_cos(self.base, self.min, p) as f32
    }
}

/// The one-cycle policy (Smith & Topin) as PyTorch's `OneCycleLR` with
/// cosine annealing: from `η_max/div` up to `η_max` at step
/// `pct·T − 1` (not rounded, as in PyTorch: when `pct·T` is fractional the
/// peak lies between two steps and neither reaches `η_max` exactly), then
/// down to `η_max/(div·final_div)` at step `T − 1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OneCycle {
    initial: f64,
    max: f64,
    min: f64,
    peak_step: f64,
    last_step: f64,
}

impl OneCycle {
    /// `max_lr` over `total` steps, warming up for the fraction `pct_start`,
    /// with PyTorch's defaults `div = 25`, `final_div = 1e4`.
    ///
    /// # Errors
    /// [`TrainError::Invalid`] for a negative or
    /// non-finite `max_lr`, `pct_start` outside `(0, 1)`, or a `total` too
    /// short for both phases.
    ///
    /// ```
    /// use hasten_train::schedule::{OneCycle, Schedule};
    ///
    /// // 100 steps, peak at step 0.25·100 − 1 = 24.
    /// let s = OneCycle::new(0.1, 100, 0.25)?;
    /// assert!((s.lr(0) - 0.1 / 25.0).abs() < 1e-9);
    /// assert_eq!(s.lr(24), 0.1);
    /// assert!((s.lr(99) - 0.1 / 25.0 / 1e4).abs() < 1e-9);
    /// assert!(OneCycle::new(f32::NAN, 100, 0.25).is_err() && OneCycle::new(0.1, 2, 0.25).is_err());
    /// # Ok::<(), hasten_train::TrainError>(())
    /// ```
    pub fn new(max_lr: f32, total: usize, pct_start: f32) -> Result<Self> {
        OneCycle::with_divisors(max_lr, total, pct_start, 25.0, 1e4)
    }

    /// As [`OneCycle::new`] with explicit divisors (each ≥ 1).
    pub fn with_divisors(
        max_lr: f32,
        total: usize,
        pct_start: f32,
        div: f32,
        final_div: f32,
    ) -> Result<Self> {
        let max = rate("maximum learning rate", max_lr)?;
        let total = positive("one-cycle length", total)?;
        if !(pct_start > 0.0 && pct_start < 1.0) {
            return Err(TrainError::invalid(
                "one-cycle warm-up fraction",
                pct_start,
                "in (0, 1)",
            ));
        }
        for (name, d) in [
            ("one-cycle divisor", div),
            ("one-cycle final divisor", final_div),
        ] {
            if !(d.is_finite() && d >= 1.0) {
                return Err(TrainError::invalid(name, d, "finite and >= 1"));
            }
        }
        let peak_step = f64::from(pct_start) * total as f64 - 1.0;
        let last_step = total as f64 - 1.0;
        if !(peak_step > 0.0 && peak_step < last_step) {
            return Err(TrainError::invalid(
                "one-cycle length",
                total,
                "long enough for both phases",
            ));
        }
        let initial = max / f64::from(div);
        Ok(OneCycle {
            initial,
            max,
            min: initial / f64::from(final_div),
            peak_step,
            last_step,
        })
    }
}

impl Schedule for OneCycle {
    fn lr(&self, step: usize) -> f32 {
        let t = (step as f64).min(self.last_step);
        let v = if t <= self.peak_step {
            anneal_cos(self.initial, self.max, t / self.peak_step)
        } else {
            anneal_cos(
                self.max,
                self.min,
                (t - self.peak_step) / (self.last_step - self.peak_step),
            )
        };
        v as f32
    }
}

/// Linear warm-up in front of another schedule: for `t < W` the inner rate
/// times `f + (1 − f)·t/W`, the inner rate afterwards.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Warmup<S> {
    inner: S,
    steps: usize,
    start_factor: f64,
}

impl<S: Schedule> Warmup<S> {
    /// Warms `inner` up over `steps ≥ 1` steps from `start_factor ∈ [0, 1]`.
    pub fn new(inner: S, steps: usize, start_factor: f32) -> Result<Self> {
        if !(0.0..=1.0).contains(&start_factor) {
            return Err(TrainError::invalid(
                "warm-up start factor",
                start_factor,
                "in [0, 1]",
            ));
        }
        Ok(Warmup {
            inner,
            steps: positive("warm-up steps", steps)?,
            start_factor: f64::from(start_factor),
        })
    }
}

impl<S: Schedule> Schedule for Warmup<S> {
    fn lr(&self, step: usize) -> f32 {
        let base = f64::from(self.inner.lr(step));
        if step >= self.steps {
            return base as f32;
        }
        let f = self.start_factor + (1.0 - self.start_factor) * step as f64 / self.steps as f64;
        (base * f) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f64) -> bool {
        (f64::from(a) - b).abs() < 1e-7 * b.abs().max(1.0)
    }

    #[test]
    fn closed_forms() {
        let c = Constant::new(0.3).unwrap();
        assert!(close(c.lr(0), 0.3) && close(c.lr(1000), 0.3));
        let s = StepDecay::new(1.0, 0.1, 3).unwrap();
        let got: Vec<f32> = (0..7).map(|t| s.lr(t)).collect();
        for (g, w) in got.iter().zip([1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01]) {
            assert!(close(*g, w), "{got:?}");
        }
        let cos = Cosine::new(1.0, 0.1, 10).unwrap();
        assert!(close(cos.lr(0), 1.0));
        assert!(close(cos.lr(5), 0.55));
        assert!(close(cos.lr(10), 0.1) && close(cos.lr(50), 0.1));
        assert!(close(cos.lr(2), 0.1 + 0.9 * (1.0 + (0.2 * PI).cos()) / 2.0));
        let w = Warmup::new(Constant::new(2.0).unwrap(), 4, 0.0).unwrap();
        let got: Vec<f32> = (0..6).map(|t| w.lr(t)).collect();
        assert_eq!(got, vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.0]);
    }

    #[test]
    fn one_cycle_matches_pytorch_phases() {
        // total 100, pct 0.3: peak at step 29, end at step 99.
        let s = OneCycle::new(1.0, 100, 0.3).unwrap();
        assert!(close(s.lr(0), 0.04));
        assert!(close(s.lr(29), 1.0));
        assert!(close(s.lr(99), 0.04 / 1e4));
        // Half-way through the annealing phase: the mean of its two ends.
        assert!(close(s.lr(64), 0.04e-4 + (1.0 - 0.04e-4) / 2.0));
        assert!(s.lr(10) > s.lr(5) && s.lr(50) < s.lr(40));
        assert!(OneCycle::new(1.0, 1, 0.3).is_err());
        assert!(OneCycle::new(1.0, 100, 1.0).is_err());
    }

    #[test]
    fn invalid_arguments() {
        assert!(Constant::new(-1.0).is_err() && Constant::new(f32::NAN).is_err());
        assert!(StepDecay::new(1.0, 1.5, 1).is_err() && StepDecay::new(1.0, 0.5, 0).is_err());
        assert!(Cosine::new(1.0, 0.0, 0).is_err());
        assert!(Warmup::new(Constant::new(1.0).unwrap(), 0, 0.0).is_err());
        assert!(Warmup::new(Constant::new(1.0).unwrap(), 3, 1.5).is_err());
    }
}
