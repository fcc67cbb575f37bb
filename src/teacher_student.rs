//! Teacher–student training (survey §7): a student [`Graph`] trained against
//! a frozen teacher [`Graph`] with the distillation loss of eq. (19)–(20)
//! (Hinton et al. \[80\]) and, optionally, a FitNets hint (eq. (21), Romero
//! et al. \[82\]).
//!
//! The objective per batch is
//!
//! `L = (1 − λ)·H(y, p^S) + λ·τ²·H(p^T_τ, p^S_τ) + β·½‖u_T − r(u_S)‖²/N`,
//!
//! with `p_τ = softmax(z/τ)`. [`DistillLoss`] is this objective as a
//! [`Loss`] of `hasten-train`'s [`Trainer`], built from `hasten-distill`'s
//! losses (their values and exact gradients are reused, not re-derived):
//! the teacher runs through a `hasten_fastconv` [`Plan`] in inference mode,
//! the student through the trainer's tape in training mode; the hint
//! regressor `r` is a learned 1×1 convolution, a parameter of the loss,
//! fitted by least squares on the first batch ([`HintRegressor::fit_conv`])
//! and then trained with the student. [`DistillTrainer`] is the trainer on
//! that loss (its epochs, checkpoints and early stopping).
//!
//! ```
//! use hasten::teacher_student::distillation_objective;
//! use ndarray::array;
//!
//! let student = array![[1.0_f64, 0.0, -1.0]];
//! // λ = 0: plain cross-entropy, whatever the teacher says.
//! let out = distillation_objective(student.view(), student.view(), &[0], 4.0, 0.0)?;
//! let p0 = 1.0 / (1.0 + (-1.0_f64).exp() + (-2.0_f64).exp());
//! assert!((out.value + p0.ln()).abs() < 1e-12);
//! # Ok::<(), hasten_core::Error>(())
//! ```

use hasten_core::grad::Mode;
use hasten_core::{Error, Graph};
use hasten_distill::{
    hard_label_loss, hint_loss_conv, soft_target_loss, softmax, DistillationConfig, HintRegressor,
    LossGrad, Real,
};
use hasten_fastconv::{Plan, PlanOptions};
use hasten_train::data::Dataset;
use hasten_train::loss::with_extra_outputs;
use hasten_train::optim::Optimizer;
use hasten_train::schedule::Schedule;
use hasten_train::{
    EpochStats, Grads, Loss, LossInput, LossOutput, ParamStore, Result, TrainConfig, Trainer,
};
use ndarray::{Array2, Array4, ArrayD, ArrayView2, Ix2};

/// The parameter names of the hint regressor in [`DistillTrainer::params`].
pub const HINT_REGRESSOR: [&str; 2] = ["hint_regressor.weight", "hint_regressor.bias"];

/// Loss (20) with the weighting `(1 − λ)·H(y, p^S) + λ·τ²·H(p^T_τ, p^S_τ)`
/// (batch mean) and its gradient w.r.t. the student logits `[N, K]`:
/// `(1 − λ)(p − onehot(y))/N + λτ(p^S_τ − p^T_τ)/N`.
///
/// Errors: `τ` not finite and > 0, `λ` outside `[0, 1]`, shapes that
/// differ, empty or non-finite logits, a label count other than `N` or a
/// label `≥ K`.
pub fn distillation_objective<F: Real>(
    student_logits: ArrayView2<F>,
    teacher_logits: ArrayView2<F>,
    labels: &[usize],
    temperature: F,
    lambda: F,
) -> hasten_core::Result<LossGrad<F>> {
    if !(lambda >= F::zero() && lambda <= F::one()) {
        return Err(Error::param("distillation λ", lambda, "in [0, 1]"));
    }
    let config = DistillationConfig::new(temperature, F::one())?;
    if student_logits.shape() != teacher_logits.shape() {
        return Err(Error::shape(
            "teacher logits",
            format!("{:?}", student_logits.shape()),
            format!("{:?}", teacher_logits.shape()),
        ));
    }
    let targets = softmax(teacher_logits, temperature)?;
    let soft = soft_target_loss(student_logits, targets.view(), &config)?.scaled(lambda);
    let hard = hard_label_loss(student_logits, labels)?.scaled(F::one() - lambda);
    let mut total = soft;
    total.value = total.value + hard.value;
    total.grad.zip_mut_with(&hard.grad, |a, &b| *a = *a + b);
    Ok(total)
}

/// A FitNets hint (eq. (21)): the teacher value `teacher` guides the
/// student value `student` (same spatial size) through a learned 1×1
/// regressor, with loss weight `weight`.
#[derive(Debug, Clone, PartialEq)]
pub struct HintSettings {
    /// The teacher value (graph input or node name) giving the hint.
    pub teacher: String,
    /// The student value (node name) being guided.
    pub student: String,
    /// The weight β of the hint loss.
    pub weight: f32,
}

/// The loss settings of a [`DistillTrainer`].
#[derive(Debug, Clone, PartialEq)]
pub struct DistillSettings {
    /// The temperature τ of eq. (19), > 0.
    pub temperature: f32,
    /// The weight λ of the soft targets, in `[0, 1]` (1: soft targets only).
    pub lambda: f32,
    /// An optional hint.
    pub hint: Option<HintSettings>,
}

impl DistillSettings {
    /// τ and λ, without a hint.
    ///
    /// Errors: `τ` not finite and > 0, `λ` outside `[0, 1]`.
    pub fn new(temperature: f32, lambda: f32) -> Result<Self> {
        DistillationConfig::new(temperature, lambda)?;
        if !(0.0..=1.0).contains(&lambda) {
            return Err(Error::param("distillation λ", lambda, "in [0, 1]").into());
        }
        Ok(DistillSettings {
            temperature,
            lambda,
            hint: None,
        })
    }

    /// Adds a hint from the teacher value `teacher` to the student value
    /// `student` with weight `weight` (finite, ≥ 0).
    pub fn with_hint(
        mut self,
        teacher: impl Into<String>,
        student: impl Into<String>,
        weight: f32,
    ) -> Result<Self> {
        if !(weight.is_finite() && weight >= 0.0) {
            return Err(Error::param("hint weight", weight, "finite and >= 0").into());
        }
        self.hint = Some(HintSettings {
            teacher: teacher.into(),
            student: student.into(),
            weight,
        });
        Ok(self)
    }
}

/// `[N, K, 1, 1]` logits as `[N, K]`.
fn logits2(x: &Array4<f32>) -> Result<ArrayView2<'_, f32>> {
    let s = x.shape();
    if s[2] != 1 || s[3] != 1 {
        return Err(Error::shape("classifier output", "[N, K, 1, 1]", format!("{s:?}")).into());
    }
    Ok(x.view()
        .into_shape_with_order((s[0], s[1]))
        .map_err(|e| Error::numerical("logits view", e))?
        .into_dimensionality::<Ix2>()
        .expect("two axes"))
}

/// What one training step computed.
#[derive(Debug, Clone)]
pub struct StepGrads {
    /// The batch loss `L`.
    pub loss: f32,
    /// The student's logits `[N, K, 1, 1]`.
    pub logits: Array4<f32>,
    /// `∂L/∂θ` for every trainable value of [`DistillTrainer::params`].
    pub grads: Grads,
    /// The updated batch-norm running statistics of the student.
    pub buffers: Grads,
}

/// The distillation objective as a [`Loss`] of `hasten-train`'s
/// [`Trainer`]: the teacher runs on each batch through a fast plan in
/// inference mode; with a hint, the student's hinted value is tapped and
/// the regressor ([`HINT_REGRESSOR`]) is a parameter of the loss.
#[derive(Debug)]
pub struct DistillLoss {
    /// The teacher, with the hint value as a second output, if any.
    teacher: Graph,
    settings: DistillSettings,
    /// The regressor's `[teacher, student]` channel counts, with a hint.
    regressor: Option<(usize, usize)>,
    teacher_plans: Vec<(usize, Plan)>,
}

impl DistillLoss {
    /// The loss of `settings` for a student of the teacher `teacher` (one
    /// input, one output).
    ///
    /// Errors: invalid settings, a graph with other than one input and one
    /// output, teacher and student inputs or output shapes that differ, an
    /// unknown hint value, hinted values of different spatial sizes.
    pub fn new(student: &Graph, teacher: Graph, settings: DistillSettings) -> Result<Self> {
        for (g, who) in [(student, "student"), (&teacher, "teacher")] {
            if g.inputs().len() != 1 || g.outputs().len() != 1 {
                return Err(Error::param(
                    format!("{who} inputs / outputs"),
                    format!("{} / {}", g.inputs().len(), g.outputs().len()),
                    "one input and one output",
                )
                .into());
            }
        }
        if student.inputs()[0].shape() != teacher.inputs()[0].shape()
            || student.output_shapes() != teacher.output_shapes()
        {
            return Err(Error::shape(
                "teacher input / output",
                format!(
                    "{} / {:?}",
                    student.inputs()[0].shape(),
                    student.output_shapes()
                ),
                format!(
                    "{} / {:?}",
                    teacher.inputs()[0].shape(),
                    teacher.output_shapes()
                ),
            )
            .into());
        }
        DistillSettings::new(settings.temperature, settings.lambda)?;
        let (teacher, regressor) = match &settings.hint {
            None => (teacher, None),
            Some(h) => {
                if !(h.weight.is_finite() && h.weight >= 0.0) {
                    return Err(Error::param("hint weight", h.weight, "finite and >= 0").into());
                }
                let tapped = with_extra_outputs(student, std::slice::from_ref(&h.student))?;
                let teacher = with_extra_outputs(&teacher, std::slice::from_ref(&h.teacher))?;
                let (s, t) = (tapped.output_shapes()[1], teacher.output_shapes()[1]);
                if (s.height, s.width) != (t.height, t.width) {
                    return Err(Error::shape(
                        format!("hint `{}` → `{}` spatial size", h.student, h.teacher),
                        format!("{}×{}", t.height, t.width),
                        format!("{}×{}", s.height, s.width),
                    )
                    .into());
                }
                (teacher, Some((t.channels, s.channels)))
            }
        };
        Ok(DistillLoss {
            teacher,
            settings,
            regressor,
            teacher_plans: Vec::new(),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &DistillSettings {
        &self.settings
    }

    /// The teacher's outputs (logits, then the hint value if any) on `x`,
    /// run by a fast plan in inference mode.
    fn teacher_outputs(&mut self, x: &Array4<f32>) -> Result<Vec<Array4<f32>>> {
        let n = x.shape()[0];
        let k = match self.teacher_plans.iter().position(|(b, _)| *b == n) {
            Some(k) => k,
            None => {
                let plan = Plan::for_graph(&self.teacher, n, PlanOptions::default())?;
                self.teacher_plans.push((n, plan));
                self.teacher_plans.len() - 1
            }
        };
        Ok(self.teacher_plans[k].1.run_all(&[x])?.to_vec())
    }
}

impl Loss for DistillLoss {
    fn taps(&self) -> Vec<String> {
        self.settings
            .hint
            .iter()
            .map(|h| h.student.clone())
            .collect()
    }

    /// The hint regressor, zero until the least-squares fit on the first
    /// batch.
    fn params(&self) -> Vec<(String, ArrayD<f32>)> {
        match self.regressor {
            None => Vec::new(),
            Some((t, s)) => vec![
                (HINT_REGRESSOR[0].into(), ArrayD::zeros(vec![t, s])),
                (HINT_REGRESSOR[1].into(), ArrayD::zeros(vec![t])),
            ],
        }
    }

    /// The objective of the [module docs](self); on the first step with a
    /// hint and a zero regressor, fits the regressor by least squares on
    /// this batch.
    fn evaluate(&mut self, input: &LossInput<'_>, params: &mut ParamStore) -> Result<LossOutput> {
        let teacher = self.teacher_outputs(input.x)?;
        let logits = input.outputs[0];
        let kd = distillation_objective(
            logits2(logits)?,
            logits2(&teacher[0])?,
            input.labels,
            self.settings.temperature,
            self.settings.lambda,
        )?;
        let mut out = LossOutput {
            value: kd.value,
            output_grads: vec![kd
                .grad
                .into_shape_with_order(logits.raw_dim())
                .expect("N·K values")],
            param_grads: Grads::new(),
        };
        if let Some(h) = &self.settings.hint {
            let u_s = input.outputs[1];
            let u_t = &teacher[1];
            let w = params
                .get(HINT_REGRESSOR[0])
                .ok_or_else(|| Error::param("hint regressor", HINT_REGRESSOR[0], "in the store"))?;
            let regressor = if input.step == 0 && w.iter().all(|&v| v == 0.0) {
                let fit = HintRegressor::fit_conv(u_s.view(), u_t.view())?;
                params.insert(HINT_REGRESSOR[0], fit.weight().to_owned().into_dyn(), true)?;
                params.insert(HINT_REGRESSOR[1], fit.bias().to_owned().into_dyn(), true)?;
                fit
            } else {
                let w: Array2<f32> = w
                    .clone()
                    .into_dimensionality::<Ix2>()
                    .map_err(|e| Error::numerical("hint regressor", e))?;
                let b = params
                    .get(HINT_REGRESSOR[1])
                    .ok_or_else(|| {
                        Error::param("hint regressor", HINT_REGRESSOR[1], "in the store")
                    })?
                    .clone()
                    .into_dimensionality()
                    .map_err(|e| Error::numerical("hint regressor", e))?;
                HintRegressor::new(w, b)?
            };
            let hint = hint_loss_conv(u_s.view(), u_t.view(), &regressor)?;
            out.value += h.weight * hint.student.value;
            out.output_grads
                .push(hint.student.grad.mapv(|g| g * h.weight));
            out.param_grads.insert(
                HINT_REGRESSOR[0].into(),
                hint.weight.mapv(|g| g * h.weight).into_dyn(),
            );
            out.param_grads.insert(
                HINT_REGRESSOR[1].into(),
                hint.bias.mapv(|g| g * h.weight).into_dyn(),
            );
        }
        Ok(out)
    }
}

/// Trains a student classifier against a frozen teacher: `hasten-train`'s
/// [`Trainer`] on the [`DistillLoss`] (so checkpoints and early stopping
/// apply); see the [module docs](self).
#[derive(Debug)]
pub struct DistillTrainer<O, S> {
    trainer: Trainer<O, S, DistillLoss>,
}

impl<O: Optimizer, S: Schedule> DistillTrainer<O, S> {
    /// A trainer starting from the student's own parameters.
    ///
    /// Errors: a graph with other than one input and one output, teacher
    /// and student inputs or output shapes that differ, an unknown hint
    /// value, a student node named like the regressor, an invalid setting
    /// (as for [`Trainer::new`]).
    pub fn new(
        student: Graph,
        teacher: Graph,
        settings: DistillSettings,
        optimizer: O,
        schedule: S,
        config: TrainConfig,
    ) -> Result<Self> {
        let loss = DistillLoss::new(&student, teacher, settings)?;
        let trainer = Trainer::new(student, optimizer, schedule, config)?.with_loss(loss)?;
        Ok(DistillTrainer { trainer })
    }

    /// The underlying trainer (checkpoints, resumption, evaluation).
    pub fn trainer(&self) -> &Trainer<O, S, DistillLoss> {
        &self.trainer
    }

    /// The underlying trainer, mutably.
    pub fn trainer_mut(&mut self) -> &mut Trainer<O, S, DistillLoss> {
        &mut self.trainer
    }

    /// The student's parameters and buffers, and the hint regressor's
    /// ([`HINT_REGRESSOR`]) when there is a hint.
    pub fn params(&self) -> &ParamStore {
        self.trainer.params()
    }

    /// The number of optimizer steps taken.
    pub fn steps(&self) -> usize {
        self.trainer.steps()
    }

    /// A copy of the student graph holding the current parameters.
    pub fn student(&self) -> Result<Graph> {
        self.trainer.graph()
    }

    /// The loss and gradients of one batch `x` with `labels`, the student in
    /// `mode`; on the first call with a hint, fits the regressor by least
    /// squares on this batch.
    pub fn step_grads(
        &mut self,
        x: &Array4<f32>,
        labels: &[usize],
        mode: Mode,
    ) -> Result<StepGrads> {
        let b = self.trainer.batch_grads(x, labels, mode)?;
        Ok(StepGrads {
            loss: b.loss,
            logits: b.logits,
            grads: b.grads,
            buffers: b.buffers,
        })
    }

    /// Trains the configured epochs on `train`, evaluating the student on
    /// `test` after each (a fast plan, inference mode) and calling
    /// `on_epoch` with the statistics; returns the history. Early stopping
    /// applies as configured ([`TrainConfig::patience`]).
    pub fn fit<D: Dataset + ?Sized, T: Dataset + ?Sized>(
        &mut self,
        train: &D,
        test: &T,
        on_epoch: impl FnMut(&EpochStats),
    ) -> Result<Vec<EpochStats>> {
        self.trainer.fit(train, test, on_epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::grad::check::{numeric_grad, relative_error, TOLERANCE};
    use hasten_core::op::{Flatten, Relu};
    use hasten_core::SeededRng;
    use hasten_core::{ActShape, ConvLayer, ConvSpec, GraphBuilder, LinearLayer};
    use hasten_train::data::ImageSet;
    use hasten_train::evaluate;
    use hasten_train::optim::Adam;
    use hasten_train::schedule::{Constant, Cosine};
    use ndarray::{array, s, Array1, Array2};

    /// Loss (20) with the (1 − λ, λτ²) weighting, written out directly in
    /// f64 from its definition: the truth for the value and, through
    /// central differences, for the gradient.
    fn brute_force(z: &Array2<f64>, t: &Array2<f64>, y: &[usize], tau: f64, lambda: f64) -> f64 {
        let n = z.nrows() as f64;
        let log_softmax = |row: Vec<f64>| {
            let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
            row.into_iter().map(|v| v - lse).collect::<Vec<_>>()
        };
        let mut total = 0.0;
        for i in 0..z.nrows() {
            let ls1 = log_softmax(z.row(i).to_vec());
            let lst = log_softmax(z.row(i).iter().map(|v| v / tau).collect());
            let q: Vec<f64> = log_softmax(t.row(i).iter().map(|v| v / tau).collect())
                .into_iter()
                .map(f64::exp)
                .collect();
            let ce: f64 = -q.iter().zip(&lst).map(|(a, b)| a * b).sum::<f64>();
            total += (1.0 - lambda) * -ls1[y[i]] + lambda * tau * tau * ce;
        }
        total / n
    }

    #[test]
    fn objective_value_and_gradient_match_the_definition() {
        let z = array![
            [1.0, -0.5, 0.3, 2.0],
            [0.2, 0.1, -1.2, 0.7],
            [-2.0, 1.5, 0.0, 0.4]
        ];
        let t = array![
            [2.5, 0.0, -1.0, 1.0],
            [0.0, 1.0, -0.5, 3.0],
            [1.0, 1.0, 0.5, -1.0]
        ];
        let y = [3, 0, 1];
        for (tau, lambda) in [(3.0, 0.7), (1.0, 0.0), (4.0, 1.0)] {
            let out = distillation_objective(z.view(), t.view(), &y, tau, lambda).unwrap();
            let truth = brute_force(&z, &t, &y, tau, lambda);
            assert!(
                (out.value - truth).abs() < 1e-12,
                "{} vs {truth}",
                out.value
            );
            let numeric = numeric_grad(&z, |zz| brute_force(zz, &t, &y, tau, lambda));
            let err = relative_error(&out.grad, &numeric);
            assert!(
                err < TOLERANCE,
                "τ {tau} λ {lambda}: relative error {err:e}"
            );
            assert!(numeric.iter().any(|g| g.abs() > 1e-3));
        }
    }

    #[test]
    fn bad_settings_are_errors() {
        let z = array![[1.0_f32, 0.0]];
        assert!(distillation_objective(z.view(), z.view(), &[0], 1.0, 1.5).is_err());
        assert!(distillation_objective(z.view(), z.view(), &[0], 0.0, 0.5).is_err());
        assert!(distillation_objective(z.view(), z.view(), &[2], 1.0, 0.5).is_err());
        let wide = array![[1.0_f32, 0.0, 2.0]];
        assert!(distillation_objective(z.view(), wide.view(), &[0], 1.0, 0.5).is_err());
        assert!(DistillSettings::new(2.0, -0.1).is_err());
        assert!(DistillSettings::new(f32::NAN, 0.5).is_err());
        assert!(DistillSettings::new(2.0, 0.5)
            .unwrap()
            .with_hint("a", "b", -1.0)
            .is_err());
    }

    fn linear_net(weight: Array2<f32>, bias: Array1<f32>) -> Graph {
        let mut b = GraphBuilder::new();
        let x = b.input("x", ActShape::new(1, 2, 4));
        let f = b.op("flatten", Flatten, x);
        let y = b.op("fc", LinearLayer::new(weight, Some(bias)).unwrap(), f);
        b.output(y);
        b.build().unwrap()
    }

    /// `n` Gaussian inputs labelled by the teacher's arg-max.
    fn labelled(teacher: &Graph, n: usize, seed: u64) -> ImageSet {
        let x: Array4<f32> = SeededRng::new(seed).normal_array((n, 1, 2, 4), 1.0);
        let logits = &teacher.reference_forward(&[&x]).unwrap()[0];
        let labels = (0..n)
            .map(|i| {
                let row = logits.slice(s![i, .., 0, 0]);
                (0..row.len()).fold(0, |b, k| if row[k] > row[b] { k } else { b })
            })
            .collect();
        ImageSet::new(x, labels, 4).unwrap()
    }

    /// Planted structure: a linear teacher on 8 features, 4 classes, and a
    /// linear student shown only 16 samples. The soft targets at τ = 2
    /// carry the teacher's logit differences (3 per sample, 48 equations
    /// for the 27 identifiable unknowns), so the distilled student
    /// recovers the teacher's decision rule; 16 hard labels cannot.
    #[test]
    fn soft_targets_teach_more_than_hard_labels_from_few_samples() {
        let mut rng = SeededRng::new(11);
        let teacher = linear_net(rng.normal_array((4, 8), 1.0), rng.normal_array(4, 0.5));
        let train = labelled(&teacher, 16, 1);
        let fresh = labelled(&teacher, 2000, 2);
        let agreement = |lambda: f32| {
            let student = linear_net(
                SeededRng::new(3).normal_array((4, 8), 0.1),
                Array1::zeros(4),
            );
            let config = TrainConfig {
                epochs: 1500,
                batch_size: 16,
                ..TrainConfig::default()
            };
            let mut trainer = DistillTrainer::new(
                student,
                teacher.clone(),
                DistillSettings::new(2.0, lambda).unwrap(),
                Adam::new(),
                Cosine::new(0.05, 0.0, 1500).unwrap(),
                config,
            )
            .unwrap();
            let history = trainer.fit(&train, &train, |_| {}).unwrap();
            // Both fit their training set.
            assert_eq!(history.last().unwrap().test_accuracy, 1.0, "λ {lambda}");
            evaluate(&trainer.student().unwrap(), &fresh, 500).unwrap()
        };
        let hard = agreement(0.0);
        let soft = agreement(1.0);
        assert!(
            soft >= 0.97,
            "distilled student agrees on {soft}, hard labels {hard}"
        );
        assert!(soft - hard >= 0.05, "distilled {soft}, hard labels {hard}");
    }

    /// Student conv(2→3) → relu → flatten → fc; teacher conv(2→5) → relu →
    /// flatten → fc; the hint maps the student's conv output to the
    /// teacher's.
    fn conv_net(seed: u64, width: usize) -> Graph {
        let mut rng = SeededRng::new(seed);
        let mut b = GraphBuilder::new();
        let x = b.input("x", ActShape::new(2, 4, 4));
        let conv = ConvLayer::from_array(
            rng.normal_array((width, 2, 3, 3), 0.5),
            ConvSpec::new().with_padding(1),
        )
        .unwrap();
        let c = b.op("conv", conv, x);
        let r = b.op("relu", Relu, c);
        let f = b.op("flatten", Flatten, r);
        let fc = LinearLayer::new(rng.normal_array((3, width * 16), 0.3), None).unwrap();
        let y = b.op("fc", fc, f);
        b.output(y);
        b.build().unwrap()
    }

    /// The whole step — tape forward, teacher plan, KD and hint losses,
    /// backward through the extra output — against central differences of
    /// the step's own f32 loss. In f32 with step h = 1e-2 and a loss of
    /// order 1, truncation (O(h²)) and rounding (O(ε/h) ≈ 1e-5) stay well
    /// below the 1e-3 bound.
    #[test]
    fn step_gradients_with_a_hint_match_finite_differences() {
        let settings = DistillSettings::new(2.0, 0.5)
            .unwrap()
            .with_hint("conv", "conv", 0.3)
            .unwrap();
        let mut trainer = DistillTrainer::new(
            conv_net(1, 3),
            conv_net(2, 5),
            settings,
            Adam::new(),
            Constant::new(0.01).unwrap(),
            TrainConfig::default(),
        )
        .unwrap();
        let x: Array4<f32> = SeededRng::new(4).normal_array((3, 2, 4, 4), 1.0);
        let labels = [0, 2, 1];
        // The first call fits the regressor; move it off the optimum so
        // its gradient does not vanish.
        trainer.step_grads(&x, &labels, Mode::Eval).unwrap();
        for name in HINT_REGRESSOR {
            let v = trainer.trainer.params_mut().get_mut(name).unwrap();
            v.mapv_inplace(|u| u * 0.8 + 0.05);
        }
        // (The regressor is no longer zero: the step-0 refit cannot recur.)
        let analytic = trainer.step_grads(&x, &labels, Mode::Eval).unwrap();
        for name in [
            "conv.weight",
            "fc.weight",
            HINT_REGRESSOR[0],
            HINT_REGRESSOR[1],
        ] {
            let base = trainer
                .params()
                .get(name)
                .unwrap()
                .as_standard_layout()
                .into_owned();
            let h = 1e-2f32;
            let mut numeric = base.mapv(|_| 0.0f64);
            for i in 0..base.len() {
                let mut value_at = |d: f32| {
                    let mut p = base.clone();
                    p.as_slice_mut().unwrap()[i] += d;
                    *trainer.trainer.params_mut().get_mut(name).unwrap() = p;
                    f64::from(trainer.step_grads(&x, &labels, Mode::Eval).unwrap().loss)
                };
                numeric.as_slice_mut().unwrap()[i] =
                    (value_at(h) - value_at(-h)) / (2.0 * f64::from(h));
            }
            *trainer.trainer.params_mut().get_mut(name).unwrap() = base;
            let got = analytic.grads[name].mapv(f64::from);
            let err = relative_error(&got, &numeric);
            assert!(err < 1e-3, "{name}: relative error {err:e}");
            assert!(numeric.iter().any(|g| g.abs() > 1e-4), "{name}: vanishing");
        }
    }

    #[test]
    fn mismatched_graphs_and_unknown_hint_values_are_errors() {
        let make = |student: Graph, settings: DistillSettings| {
            DistillTrainer::new(
                student,
                conv_net(2, 5),
                settings,
                Adam::new(),
                Constant::new(0.01).unwrap(),
                TrainConfig::default(),
            )
        };
        let plain = DistillSettings::new(2.0, 0.5).unwrap();
        let hint = |t: &str, s: &str| plain.clone().with_hint(t, s, 1.0).unwrap();
        assert!(make(conv_net(1, 3), plain.clone()).is_ok());
        assert!(make(conv_net(1, 3), hint("nope", "conv")).is_err());
        assert!(make(conv_net(1, 3), hint("conv", "nope")).is_err());
        // The flattened value has no 4×4 spatial extent to match the conv.
        assert!(make(conv_net(1, 3), hint("conv", "flatten")).is_err());
        let other_input = linear_net(Array2::zeros((3, 8)), Array1::zeros(3));
        assert!(make(other_input, plain).is_err());
    }
}
