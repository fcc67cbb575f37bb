//! [`Recipe`]: how to compress a whole network, read from TOML or JSON.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::calibration::CalibrationSettings;
use super::error::{PipelineError, Result};
use super::method::Method;
use super::selection::Selection;

/// When fine-tuning runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Every step, then fine-tuning once.
    #[default]
    OneShot,
    /// Fine-tuning after each step.
    Gradual,
}

/// Knowledge distillation during fine-tuning (survey §7, eq. (19)–(20)):
/// the original, uncompressed network is the teacher.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Distill {
    /// The softmax temperature τ (finite, > 0).
    pub temperature: f32,
    /// The weight λ of the teacher's soft targets, in `[0, 1]` (the hard
    /// labels get `1 − λ`).
    pub weight: f32,
}

/// Fine-tuning settings: SGD with momentum at a constant learning rate, on
/// the labels or distilled from the original network, optionally
/// quantization-aware.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FineTune {
    /// Epochs over the training split (0: no fine-tuning).
    pub epochs: usize,
    /// Learning rate.
    pub lr: f32,
    /// Training batch size.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// SGD momentum.
    #[serde(default = "default_momentum")]
    pub momentum: f32,
    /// Quantization-aware training (survey eq. (5)): a weight-quantizer
    /// step (binarize sign / binary-weights, ternarize, symmetric
    /// fixed-point, int8) this fine-tuning follows is held back; this and
    /// every later fine-tuning train its layers with fake-quantized weights
    /// `q(W)` and full-precision shadow weights, and at the end the step
    /// freezes them into its packed ops. Other quantizers are refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub qat: bool,
    /// Learning-rate multiplier of the factors of decomposed layers (the
    /// dense ops of a block holding two or more; 0 freezes them): fine-tuning
    /// CP-decomposed layers at the network's rate is unstable (Lebedev et
    /// al., survey section 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor_lr_scale: Option<f32>,
    /// Distil from the original network instead of training on the labels
    /// alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill: Option<Distill>,
}

fn default_batch() -> usize {
    64
}

fn default_momentum() -> f32 {
    0.9
}

impl FineTune {
    fn check(&self) -> std::result::Result<(), String> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("fine_tune.lr {}: must be finite and > 0", self.lr));
        }
        if self.batch == 0 {
            return Err("fine_tune.batch must be at least 1".into());
        }
        if let Some(f) = self
            .factor_lr_scale
            .filter(|f| !(f.is_finite() && *f >= 0.0))
        {
            return Err(format!(
                "fine_tune.factor_lr_scale {f}: must be finite and >= 0"
            ));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(format!(
                "fine_tune.momentum {}: must be in [0, 1)",
                self.momentum
            ));
        }
        if let Some(d) = &self.distill {
            if !(d.temperature.is_finite() && d.temperature > 0.0) {
                return Err(format!(
                    "fine_tune.distill.temperature {}: must be finite and > 0",
                    d.temperature
                ));
            }
            if !(0.0..=1.0).contains(&d.weight) {
                return Err(format!(
                    "fine_tune.distill.weight {}: must be in [0, 1]",
                    d.weight
                ));
            }
        }
        Ok(())
    }
}

/// One step: the nodes and the method, with optional fine-tuning settings
/// that override the recipe's for this step (gradual mode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Which nodes (default: every convolution and linear layer).
    #[serde(default = "Selection::layers")]
    pub select: Selection,
    /// What to do to them.
    pub method: Method,
    /// Fine-tuning after this step, overriding the recipe's (gradual mode
    /// only: a one-shot recipe with one is rejected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fine_tune: Option<FineTune>,
}

/// Latency measurement settings of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencySettings {
    /// Batch sizes to time (empty: no timing).
    #[serde(default = "default_batches")]
    pub batches: Vec<usize>,
    /// Timed runs per graph and batch, at least.
    #[serde(default = "default_runs")]
    pub runs: usize,
}

fn default_batches() -> Vec<usize> {
    vec![1, 8]
}

fn default_runs() -> usize {
    10
}

impl Default for LatencySettings {
    fn default() -> Self {
        LatencySettings {
            batches: default_batches(),
            runs: default_runs(),
        }
    }
}

/// How to compress a whole network — ordered steps, each a node
/// [`Selection`] and a [`Method`], with fine-tuning in the survey's two
/// regimes: "gradual" (transform a layer or stage at a time and fine-tune in
/// between, section 1 and \[19\]) or "one-shot" (every step, then
/// fine-tuning). Fine-tuning may be quantization-aware
/// ([`FineTune::qat`]) and distilled from the original network
/// ([`FineTune::distill`]); batch norms are recalibrated after each step
/// ([`Recipe::recalibrate_bn`]). Read from TOML or JSON:
///
/// ```
/// use hasten::pipeline::Recipe;
///
/// let recipe = Recipe::from_toml(r#"
///     mode = "gradual"
///     fine_tune = { epochs = 1, lr = 0.01, qat = true, distill = { temperature = 4.0, weight = 0.5 } }
///
///     [[steps]]
///     select = { kinds = ["conv"], except_first = 1 }
///     method = { name = "tucker2", rank = { energy = 0.9 } }
///
///     [[steps]]
///     select = { kinds = ["conv"] }
///     method = { name = "int8", input_range = [0.0, 6.0] }
/// "#)?;
/// assert_eq!(recipe.steps.len(), 2);
/// assert_eq!(recipe.steps[1].method.name(), "int8");
/// # Ok::<(), hasten::pipeline::PipelineError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// One-shot or gradual fine-tuning.
    #[serde(default)]
    pub mode: Mode,
    /// Fine-tuning settings (none: no fine-tuning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fine_tune: Option<FineTune>,
    /// Latency measurement of the report.
    #[serde(default)]
    pub latency: LatencySettings,
    /// Calibration inputs of the data-driven steps (int8 without a fixed
    /// range, activation criteria of channel pruning).
    #[serde(default)]
    pub calibration: CalibrationSettings,
    /// Batch-norm recalibration: after each step (with data), the running
    /// statistics are re-estimated on this many training batches of 64
    /// (0: never).
    #[serde(default = "default_recalibrate_bn")]
    pub recalibrate_bn: usize,
    /// The steps, applied in order.
    pub steps: Vec<Step>,
}

fn default_recalibrate_bn() -> usize {
    8
}

/// The top level with the steps still unread, so that a step's error can
/// name it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    fine_tune: Option<FineTune>,
    #[serde(default)]
    latency: LatencySettings,
    #[serde(default)]
    calibration: CalibrationSettings,
    #[serde(default = "default_recalibrate_bn")]
    recalibrate_bn: usize,
    steps: Vec<serde_json::Value>,
}

impl Recipe {
    /// Parses and checks a TOML recipe (an example is on [`Recipe`]).
    ///
    /// # Errors
    /// [`PipelineError::Parse`] for malformed TOML or an unknown top-level
    /// field; [`PipelineError::Invalid`] or [`PipelineError::Step`] for a bad
    /// setting, naming the step.
    ///
    /// ```
    /// use hasten::pipeline::Recipe;
    ///
    /// let text = r#"
    ///     [[steps]]
    ///     select = { kinds = ["conv"] }
    ///     method = { name = "int8", input_range = [0.0, 6.0] }
    /// "#;
    /// assert_eq!(Recipe::from_toml(text)?.steps.len(), 1);
    /// assert!(Recipe::from_toml(&text.replace("int8", "int9")).is_err());
    /// # Ok::<(), hasten::pipeline::PipelineError>(())
    /// ```
    pub fn from_toml(text: &str) -> Result<Self> {
        let value: serde_json::Value = toml::from_str(text).map_err(|e| PipelineError::Parse {
            format: "TOML",
            message: e.to_string().trim().to_string(),
        })?;
        Recipe::from_value(value, "TOML")
    }

    /// Parses and checks a JSON recipe.
    ///
    /// # Errors
    /// [`PipelineError::Parse`] for malformed JSON; otherwise as
    /// [`Recipe::from_toml`].
    ///
    /// ```
    /// use hasten::pipeline::Recipe;
    ///
    /// let recipe = Recipe::from_json(r#"{"steps": [{"select": {"kinds": ["conv"]},
    ///     "method": {"name": "int8", "input_range": [0.0, 6.0]}}]}"#)?;
    /// assert_eq!(recipe.steps[0].method.name(), "int8");
    /// assert!(Recipe::from_json("{").is_err());
    /// # Ok::<(), hasten::pipeline::PipelineError>(())
    /// ```
    pub fn from_json(text: &str) -> Result<Self> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| PipelineError::Parse {
                format: "JSON",
                message: e.to_string(),
            })?;
        Recipe::from_value(value, "JSON")
    }

    /// Reads a recipe file: JSON for a `.json` extension, TOML otherwise.
    ///
    /// # Errors
    /// [`PipelineError::Invalid`] when the file cannot be read; otherwise as
    /// [`Recipe::from_toml`] or [`Recipe::from_json`].
    pub fn from_path(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PipelineError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            Recipe::from_json(&text)
        } else {
            Recipe::from_toml(&text)
        }
    }

    /// The recipe as TOML.
    ///
    /// # Errors
    /// [`PipelineError::Invalid`] when a value has no TOML form.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| PipelineError::Invalid(e.to_string()))
    }

    /// The recipe as pretty-printed JSON.
    ///
    /// # Errors
    /// [`PipelineError::Invalid`] when serialization fails.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| PipelineError::Invalid(e.to_string()))
    }

    fn from_value(value: serde_json::Value, format: &'static str) -> Result<Self> {
        let raw: RawRecipe = serde_json::from_value(value).map_err(|e| PipelineError::Parse {
            format,
            message: e.to_string(),
        })?;
        let steps = raw
            .steps
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let method = v
                    .get("method")
                    .and_then(|m| m.get("name"))
                    .and_then(|n| n.as_str())
                    .unwrap_or("?")
                    .to_string();
                serde_json::from_value::<Step>(v).map_err(|e| PipelineError::Step {
                    step: i + 1,
                    method,
                    message: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let recipe = Recipe {
            mode: raw.mode,
            fine_tune: raw.fine_tune,
            latency: raw.latency,
            calibration: raw.calibration,
            recalibrate_bn: raw.recalibrate_bn,
            steps,
        };
        recipe.check()?;
        Ok(recipe)
    }

    /// Checks the settings and every step's parameters (not yet against a
    /// graph).
    pub fn check(&self) -> Result<()> {
        if self.steps.is_empty() {
            return Err(PipelineError::Invalid("the recipe has no steps".into()));
        }
        if let Some(f) = &self.fine_tune {
            f.check().map_err(PipelineError::Invalid)?;
        }
        if self.latency.batches.contains(&0) || self.latency.runs == 0 {
            return Err(PipelineError::Invalid(
                "latency batches and runs must be at least 1".into(),
            ));
        }
        if self.calibration.samples == 0 {
            return Err(PipelineError::Invalid(
                "calibration.samples must be at least 1".into(),
            ));
        }
        for (i, step) in self.steps.iter().enumerate() {
            let fail = |message: String| PipelineError::Step {
                step: i + 1,
                method: step.method.name().to_string(),
                message,
            };
            step.method.validate().map_err(fail)?;
            if let Some(f) = &step.fine_tune {
                if self.mode == Mode::OneShot {
                    return Err(fail(
                        "a step's own fine_tune applies in gradual mode only".into(),
                    ));
                }
                f.check().map_err(fail)?;
            }
            if self.qat_for(i) {
                step.method.qat_quantizer().map_err(fail)?;
            }
        }
        Ok(())
    }

    /// Whether step `index` (from 0) is trained quantization-aware when it
    /// quantizes weights: the fine-tuning that follows it — its own or the
    /// recipe's in gradual mode, the recipe's in one-shot mode — has
    /// `qat = true` and at least one epoch.
    pub fn qat_for(&self, index: usize) -> bool {
        let governing = match self.mode {
            Mode::Gradual => self.fine_tune_for(index),
            Mode::OneShot => self.fine_tune.filter(|f| f.epochs > 0),
        };
        governing.is_some_and(|f| f.qat)
    }

    /// The fine-tuning settings after step `index` (from 0): the step's
    /// own, else the recipe's.
    pub fn fine_tune_for(&self, index: usize) -> Option<FineTune> {
        self.steps
            .get(index)
            .and_then(|s| s.fine_tune)
            .or(self.fine_tune)
            .filter(|f| f.epochs > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
        mode = "gradual"
        fine_tune = { epochs = 2, lr = 0.01, batch = 32 }
        latency = { batches = [1], runs = 3 }

        [[steps]]
        select = { kinds = ["conv"], except_first = 1 }
        method = { name = "tucker2", rank = { energy = 0.9 } }

        [[steps]]
        select = { names = ["fc*"] }
        method = { name = "svd", rank = 8 }
        fine_tune = { epochs = 1, lr = 0.001 }

        [[steps]]
        method = { name = "int8", input_range = [-1.0, 4.0], granularity = "per-channel" }

        [[steps]]
        method = { name = "tucker2", ranks = [4, 3] }

        [[steps]]
        method = { name = "kmeans", k = 16 }

        [[steps]]
        method = { name = "cp", rank = { speedup = 2.0 }, form = "three-way" }

        [[steps]]
        method = { name = "svd", rank = "evbmf" }
    "#;

    #[test]
    fn toml_and_json_round_trip() {
        let r = Recipe::from_toml(TOML).unwrap();
        assert_eq!(r.mode, Mode::Gradual);
        assert_eq!(r.steps.len(), 7);
        assert_eq!(r.steps[0].select.except_first, 1);
        assert_eq!(
            r.steps[1].method,
            Method::Svd {
                rank: super::super::method::Rank::Fixed(8)
            }
        );
        assert_eq!(r.steps[2].select, Selection::layers());
        assert_eq!(r.latency.batches, [1]);
        assert_eq!(r.fine_tune_for(0).unwrap().epochs, 2);
        assert_eq!(r.fine_tune_for(1).unwrap().lr, 0.001);
        assert_eq!(r.fine_tune_for(1).unwrap().batch, 64, "the default batch");
        assert_eq!(Recipe::from_toml(&r.to_toml().unwrap()).unwrap(), r);
        assert_eq!(Recipe::from_json(&r.to_json().unwrap()).unwrap(), r);
    }

    #[test]
    fn qat_distillation_and_recalibration_settings_round_trip() {
        let text = r#"
            mode = "gradual"
            recalibrate_bn = 3
            fine_tune = { epochs = 1, lr = 0.01, qat = true, distill = { temperature = 2.0, weight = 0.25 } }
            [[steps]]
            method = { name = "binarize" }
            [[steps]]
            method = { name = "int8", input_range = [0.0, 4.0] }
            fine_tune = { epochs = 1, lr = 0.01 }
            [[steps]]
            method = { name = "kmeans", k = 4 }
            fine_tune = { epochs = 0, lr = 0.01, qat = true }
        "#;
        let r = Recipe::from_toml(text).unwrap();
        assert_eq!(r.recalibrate_bn, 3);
        let d = r.fine_tune.unwrap().distill.unwrap();
        assert_eq!((d.temperature, d.weight), (2.0, 0.25));
        // The step's own fine-tuning decides: none after k-means (zero
        // epochs), so no quantization-aware training it has not got.
        assert_eq!(
            (r.qat_for(0), r.qat_for(1), r.qat_for(2)),
            (true, false, false)
        );
        assert!(Recipe::from_toml(&text.replace("epochs = 0", "epochs = 1")).is_err());
        assert_eq!(Recipe::from_toml(&r.to_toml().unwrap()).unwrap(), r);
        assert_eq!(Recipe::from_json(&r.to_json().unwrap()).unwrap(), r);
        assert_eq!(Recipe::from_toml(TOML).unwrap().recalibrate_bn, 8);
    }

    fn step_error(text: &str) -> (usize, String, String) {
        match Recipe::from_toml(text).unwrap_err() {
            PipelineError::Step {
                step,
                method,
                message,
            } => (step, method, message),
            other => panic!("expected a step error, got {other}"),
        }
    }

    #[test]
    fn bad_recipes_are_errors_naming_the_step() {
        let two = |second: &str| {
            format!(
                "[[steps]]\nmethod = {{ name = \"svd\", rank = 4 }}\n[[steps]]\nmethod = {second}\n"
            )
        };
        let (step, method, message) = step_error(&two("{ name = \"tuker2\", rank = 4 }"));
        assert_eq!((step, method.as_str()), (2, "tuker2"));
        assert!(message.contains("unknown variant `tuker2`"), "{message}");
        let (step, _, message) = step_error(&two("{ name = \"svd\", rank = 4, bogus = 1 }"));
        assert_eq!(step, 2);
        assert!(message.contains("bogus"), "{message}");
        let (_, method, message) = step_error(&two("{ name = \"svd\", rank = { energy = 1.5 } }"));
        assert_eq!(method, "svd");
        assert!(message.contains("energy"), "{message}");
        let (_, _, message) = step_error(&two("{ name = \"kmeans\", k = 0 }"));
        assert!(message.contains("k (codebook size)"), "{message}");
        let (_, _, message) = step_error(&two("{ name = \"tucker2\" }"));
        assert!(message.contains("exactly one of"), "{message}");
        let (step, _, message) = step_error(
            "[[steps]]\nmethod = { name = \"svd\", rank = 4 }\nfine_tune = { epochs = 1, lr = 0.1 }\n",
        );
        assert_eq!(step, 1);
        assert!(message.contains("gradual mode only"), "{message}");
        let (_, _, message) = step_error(&two("{ name = \"magnitude-sparse\", fraction = 1.0 }"));
        assert!(message.contains("fraction"), "{message}");
        for bad in [
            "{ name = \"prune-channels\", target = \"macs\", fraction = 1.0 }",
            "{ name = \"prune-channels\", target = \"global\", fraction = 0.5, multiple = 0 }",
        ] {
            let (_, method, message) = step_error(&two(bad));
            assert_eq!(method, "prune-channels");
            assert!(message.contains("must be"), "{message}");
        }
        assert!(matches!(
            Recipe::from_toml("steps = []"),
            Err(PipelineError::Invalid(_))
        ));
        assert!(matches!(
            Recipe::from_toml(
                "mode = \"sometimes\"\n[[steps]]\nmethod = { name = \"svd\", rank = 2 }"
            ),
            Err(PipelineError::Parse { .. })
        ));
        assert!(matches!(
            Recipe::from_toml("fine_tune = { epochs = 1, lr = -1.0 }\n[[steps]]\nmethod = { name = \"svd\", rank = 2 }"),
            Err(PipelineError::Invalid(_))
        ));
        assert!(matches!(
            Recipe::from_json("{\"steps\": ["),
            Err(PipelineError::Parse { format: "JSON", .. })
        ));
    }
}
