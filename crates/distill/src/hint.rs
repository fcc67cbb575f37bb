//! FitNets hints (Romero et al. \[82\]) — equation (21) of the survey:
//!
//! `L_h = ½ ‖u_T − r(u_S)‖²`,
//!
//! where `u_T` is the output of a teacher's hidden layer (the *hint*), `u_S`
//! that of the student's *guided* layer, and `r` a regressor that maps the
//! student's channels to the teacher's: a linear map `r(u) = W u + b` on
//! `[batch, dim]` features, or the same map applied at every pixel (a 1×1
//! convolution) on NCHW feature maps (spatial sizes must agree). `W` is
//! `[teacher_dim, student_dim]` (OI, as PyTorch stores a 1×1 kernel).
//!
//! **Reduction.** Batch mean: with residual `e = r(u_S) − u_T` over all rows
//! `m` (samples, or samples × pixels for feature maps) and `N` samples,
//! `L = (1/(2N)) Σ_m ‖e_m‖²`, and
//!
//! - `∂L/∂u_S = (1/N) e W` (per row / per pixel),
//! - `∂L/∂W = (1/N) eᵀ u_S`, `∂L/∂b = (1/N) Σ_m e_m`.
//!
//! **Initialisation.** [`HintRegressor::fit_linear`] / [`HintRegressor::fit_conv`]
//! solve `min_{W,b} L_h` for fixed features by least squares
//! (`hasten_core::linalg::lstsq`, minimum-norm in f64), which makes the
//! regressor gradients zero at the start of hint training.

use hasten_core::{linalg, Conv4d, ConvLayer, ConvSpec, Error, Result};
use ndarray::{s, Array1, Array2, Array4, ArrayView1, ArrayView2, ArrayView4, Axis, Ix2, Ix4};

use crate::real::count;
use crate::{validate, LossGrad, Real};

/// The regressor `r(u) = W u + b` of equation (21).
#[derive(Debug, Clone, PartialEq)]
pub struct HintRegressor<F: Real> {
    weight: Array2<F>,
    bias: Array1<F>,
}

/// The hint loss with its gradients w.r.t. the student features and the
/// regressor's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct HintGrad<F: Real, D: ndarray::Dimension> {
    /// The loss value and `∂L/∂u_S` (shape of `u_S`).
    pub student: LossGrad<F, D>,
    /// `∂L/∂W`, `[teacher_dim, student_dim]`.
    pub weight: Array2<F>,
    /// `∂L/∂b`, `[teacher_dim]`.
    pub bias: Array1<F>,
}

impl<F: Real> HintRegressor<F> {
    /// A regressor from `W` (`[teacher_dim, student_dim]`) and `b`
    /// (`[teacher_dim]`).
    ///
    /// # Errors
    /// Empty or non-finite parameters, `b.len() ≠ W.nrows()`.
    pub fn new(weight: Array2<F>, bias: Array1<F>) -> Result<Self> {
        validate::tensor("regressor weight", &weight)?;
        if bias.len() != weight.nrows() {
            return Err(Error::shape(
                "regressor bias (one per teacher channel)",
                weight.nrows(),
                bias.len(),
            ));
        }
        validate::tensor("regressor bias", &bias)?;
        Ok(Self { weight, bias })
    }

    /// Least-squares fit on `[batch, dim]` features: `argmin_{W,b} ‖u_T − W u_S − b‖²`.
    ///
    /// # Errors
    /// Batch sizes differ, empty or non-finite features, a failed solve.
    pub fn fit_linear(student: ArrayView2<F>, teacher: ArrayView2<F>) -> Result<Self> {
        check_pair_linear(student, teacher)?;
        Self::fit_rows(student, teacher)
    }

    /// Least-squares fit of a 1×1 convolution on NCHW feature maps, pooling
    /// every pixel of every sample.
    ///
    /// # Errors
    /// Batch or spatial sizes differ, empty or non-finite features,
    /// a failed solve.
    pub fn fit_conv(student: ArrayView4<F>, teacher: ArrayView4<F>) -> Result<Self> {
        check_pair_conv(student, teacher)?;
        Self::fit_rows(pixels(student)?.view(), pixels(teacher)?.view())
    }

    fn fit_rows(x: ArrayView2<F>, y: ArrayView2<F>) -> Result<Self> {
        let (m, cs) = x.dim();
        let mut a = Array2::<f64>::ones((m, cs + 1));
        a.slice_mut(s![.., ..cs])
            .assign(&x.mapv(|v| v.to_f64().unwrap_or(f64::NAN)));
        let b = y.mapv(|v| v.to_f64().unwrap_or(f64::NAN));
        let sol = linalg::lstsq(a.view(), b.view())?;
        let from = |v: f64| F::from(v).unwrap_or_else(F::nan);
        let weight = sol.slice(s![..cs, ..]).t().mapv(from);
        let bias = sol.row(cs).mapv(from);
        validate::finite_array("HintRegressor least-squares fit", &weight)?;
        validate::finite_array("HintRegressor least-squares fit", &bias)?;
        Ok(Self { weight, bias })
    }

    /// `W`, `[teacher_dim, student_dim]`.
    pub fn weight(&self) -> ArrayView2<'_, F> {
        self.weight.view()
    }

    /// `b`, `[teacher_dim]`.
    pub fn bias(&self) -> ArrayView1<'_, F> {
        self.bias.view()
    }

    /// Input (student) dimension or channel count.
    pub fn student_dim(&self) -> usize {
        self.weight.ncols()
    }

    /// Output (teacher) dimension or channel count.
    pub fn teacher_dim(&self) -> usize {
        self.weight.nrows()
    }

    /// `r(u_S)` on `[batch, student_dim]` features.
    ///
    /// # Errors
    /// Wrong feature dimension, empty or non-finite input.
    pub fn apply_linear(&self, student: ArrayView2<F>) -> Result<Array2<F>> {
        validate::tensor("student features", &student)?;
        self.check_dim(student.ncols())?;
        Ok(self.forward_rows(student))
    }

    /// `r(u_S)` as a 1×1 convolution on NCHW feature maps.
    ///
    /// # Errors
    /// Wrong channel count, empty or non-finite input.
    pub fn apply_conv(&self, student: ArrayView4<F>) -> Result<Array4<F>> {
        validate::tensor("student feature map", &student)?;
        self.check_dim(student.shape()[1])?;
        let (n, _, h, w) = student.dim();
        unpixels(self.forward_rows(pixels(student)?.view()), n, h, w)
    }

    /// The regressor as a 1×1 [`ConvLayer`] (f32), e.g. to run it with the
    /// op IR.
    ///
    /// # Errors
    /// A parameter that does not fit in `f32`.
    pub fn to_conv_layer(&self) -> Result<ConvLayer> {
        let (t, c) = self.weight.dim();
        let w = self
            .weight
            .mapv(|v| v.to_f32().unwrap_or(f32::NAN))
            .into_shape_with_order((t, c, 1, 1))
            .map_err(|e| Error::numerical("HintRegressor::to_conv_layer", e))?;
        let b = self.bias.mapv(|v| v.to_f32().unwrap_or(f32::NAN));
        ConvLayer::new(Conv4d::new(w)?, Some(b), ConvSpec::new())
    }

    fn check_dim(&self, got: usize) -> Result<()> {
        if got != self.student_dim() {
            return Err(Error::shape(
                "student channels (regressor input)",
                self.student_dim(),
                got,
            ));
        }
        Ok(())
    }

    fn forward_rows(&self, x: ArrayView2<F>) -> Array2<F> {
        let mut y = x.dot(&self.weight.t());
        y.rows_mut()
            .into_iter()
            .for_each(|mut r| r.zip_mut_with(&self.bias, |a, &b| *a = *a + b));
        y
    }

    /// Value and gradients on rows `x` `[M, Cs]`, `y` `[M, Ct]` from `n` samples.
    fn loss_rows(
        &self,
        x: ArrayView2<F>,
        y: ArrayView2<F>,
        n: usize,
    ) -> (F, Array2<F>, Array2<F>, Array1<F>) {
        let n = count::<F>(n);
        let mut e = self.forward_rows(x);
        e.zip_mut_with(&y, |a, &b| *a = *a - b);
        let half = F::one() / (F::one() + F::one());
        let value = e.iter().fold(F::zero(), |s, &v| s + v * v) * half / n;
        e.mapv_inplace(|v| v / n);
        let grad_x = e.dot(&self.weight);
        let grad_w = e.t().dot(&x);
        let grad_b = e.sum_axis(Axis(0));
        (value, grad_x, grad_w, grad_b)
    }
}

/// Hint loss (21) on `[batch, dim]` features, `u_S` `[N, Cs]`, `u_T` `[N, Ct]`.
///
/// # Errors
/// Batch sizes differ, regressor dimensions do not match, empty or
/// non-finite features, overflow.
///
/// ```
/// use hasten_distill::{hint_loss_linear, HintRegressor};
/// use ndarray::{array, Array1};
///
/// // A regressor fitted to a teacher that is an affine map of the student
/// // recovers the map: the hint loss and its gradients vanish.
/// let s = array![[1.0_f64, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]];
/// let t = s.dot(&array![[2.0, 0.5], [-1.0, 1.0]]) + &array![1.0, -2.0];
/// let r = HintRegressor::fit_linear(s.view(), t.view())?;
/// let out = hint_loss_linear(s.view(), t.view(), &r)?;
/// assert!(out.student.value < 1e-20 && out.bias.iter().all(|g| g.abs() < 1e-10));
/// let wrong = HintRegressor::new(array![[1.0_f64, 0.0, 0.0]], Array1::zeros(1))?;
/// assert!(hint_loss_linear(s.view(), t.view(), &wrong).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn hint_loss_linear<F: Real>(
    student: ArrayView2<F>,
    teacher: ArrayView2<F>,
    regressor: &HintRegressor<F>,
) -> Result<HintGrad<F, Ix2>> {
    check_pair_linear(student, teacher)?;
    check_regressor(regressor, student.ncols(), teacher.ncols())?;
    let (value, gx, gw, gb) = regressor.loss_rows(student, teacher, student.nrows());
    finish("hint_loss_linear", value, gx, gw, gb)
}

/// Hint loss (21) on NCHW feature maps with a 1×1-convolution regressor,
/// `u_S` `[N, Cs, H, W]`, `u_T` `[N, Ct, H, W]`.
///
/// # Errors
/// Batch or spatial sizes differ, regressor channels do not match,
/// empty or non-finite features, overflow.
pub fn hint_loss_conv<F: Real>(
    student: ArrayView4<F>,
    teacher: ArrayView4<F>,
    regressor: &HintRegressor<F>,
) -> Result<HintGrad<F, Ix4>> {
    check_pair_conv(student, teacher)?;
    check_regressor(regressor, student.shape()[1], teacher.shape()[1])?;
    let (n, _, h, w) = student.dim();
    let (value, gx, gw, gb) =
        regressor.loss_rows(pixels(student)?.view(), pixels(teacher)?.view(), n);
    finish("hint_loss_conv", value, unpixels(gx, n, h, w)?, gw, gb)
}

fn finish<F: Real, D: ndarray::Dimension>(
    routine: &str,
    value: F,
    grad: ndarray::Array<F, D>,
    weight: Array2<F>,
    bias: Array1<F>,
) -> Result<HintGrad<F, D>> {
    let student = validate::finite_output(routine, LossGrad::new(value, grad))?;
    validate::finite_array(routine, &weight)?;
    validate::finite_array(routine, &bias)?;
    Ok(HintGrad {
        student,
        weight,
        bias,
    })
}

fn check_pair_linear<F: Real>(student: ArrayView2<F>, teacher: ArrayView2<F>) -> Result<()> {
    validate::tensor("student features", &student)?;
    validate::tensor("teacher hint", &teacher)?;
    if student.nrows() != teacher.nrows() {
        return Err(Error::shape(
            "teacher hint batch size",
            student.nrows(),
            teacher.nrows(),
        ));
    }
    Ok(())
}

fn check_pair_conv<F: Real>(student: ArrayView4<F>, teacher: ArrayView4<F>) -> Result<()> {
    validate::tensor("student feature map", &student)?;
    validate::tensor("teacher hint", &teacher)?;
    let (s, t) = (student.shape(), teacher.shape());
    if (s[0], s[2], s[3]) != (t[0], t[2], t[3]) {
        return Err(Error::shape(
            "teacher hint [N, _, H, W]",
            format!("[{}, _, {}, {}]", s[0], s[2], s[3]),
            format!("{t:?}"),
        ));
    }
    Ok(())
}

fn check_regressor<F: Real>(r: &HintRegressor<F>, student: usize, teacher: usize) -> Result<()> {
    r.check_dim(student)?;
    if r.teacher_dim() != teacher {
        return Err(Error::shape(
            "teacher channels (regressor output)",
            r.teacher_dim(),
            teacher,
        ));
    }
    Ok(())
}

/// NCHW → `[N·H·W, C]` (one row per pixel).
fn pixels<F: Real>(x: ArrayView4<F>) -> Result<Array2<F>> {
    let (n, c, h, w) = x.dim();
    let nhwc = x.permuted_axes([0, 2, 3, 1]);
    Array2::from_shape_vec((n * h * w, c), nhwc.iter().copied().collect())
        .map_err(|e| Error::numerical("hint: NCHW to pixel rows", e))
}

/// `[N·H·W, C]` → NCHW.
fn unpixels<F: Real>(rows: Array2<F>, n: usize, h: usize, w: usize) -> Result<Array4<F>> {
    let c = rows.ncols();
    let nhwc = Array4::from_shape_vec((n, h, w, c), rows.into_iter().collect())
        .map_err(|e| Error::numerical("hint: pixel rows to NCHW", e))?;
    Ok(nhwc
        .permuted_axes([0, 3, 1, 2])
        .as_standard_layout()
        .into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grad_check::assert_grad;
    use hasten_core::{Operator, SeededRng};
    use ndarray::array;
    use proptest::prelude::*;

    fn random_regressor(rng: &mut SeededRng, t: usize, c: usize) -> HintRegressor<f64> {
        HintRegressor::new(
            rng.normal_array_f64((t, c), 0.7),
            rng.normal_array_f64(t, 0.5),
        )
        .unwrap()
    }

    #[test]
    fn linear_gradients_match_finite_differences() {
        let mut rng = SeededRng::new(40);
        let (n, cs, ct) = (5, 4, 3);
        let us = rng.normal_array_f64((n, cs), 1.0);
        let ut = rng.normal_array_f64((n, ct), 1.0);
        let r = random_regressor(&mut rng, ct, cs);
        let out = hint_loss_linear(us.view(), ut.view(), &r).unwrap();
        assert_grad("hint u_S", &us, &out.student.grad, |x| {
            hint_loss_linear(x.view(), ut.view(), &r)
                .unwrap()
                .student
                .value
        });
        assert_grad("hint W", &r.weight, &out.weight, |w| {
            let r = HintRegressor::new(w.clone(), r.bias.clone()).unwrap();
            hint_loss_linear(us.view(), ut.view(), &r)
                .unwrap()
                .student
                .value
        });
        assert_grad("hint b", &r.bias, &out.bias, |b| {
            let r = HintRegressor::new(r.weight.clone(), b.clone()).unwrap();
            hint_loss_linear(us.view(), ut.view(), &r)
                .unwrap()
                .student
                .value
        });
        // Value: ½‖u_T − r(u_S)‖² / N, evaluated directly.
        let pred = us.dot(&r.weight.t()) + &r.bias;
        let direct = (&ut - &pred).mapv(|v| v * v).sum() / (2.0 * n as f64);
        assert!((out.student.value - direct).abs() < 1e-13);
    }

    #[test]
    fn conv_gradients_match_finite_differences() {
        let mut rng = SeededRng::new(41);
        let us = rng.normal_array_f64((2, 3, 3, 2), 1.0);
        let ut = rng.normal_array_f64((2, 4, 3, 2), 1.0);
        let r = random_regressor(&mut rng, 4, 3);
        let out = hint_loss_conv(us.view(), ut.view(), &r).unwrap();
        assert_eq!(out.student.grad.dim(), us.dim());
        assert_grad("hint conv u_S", &us, &out.student.grad, |x| {
            hint_loss_conv(x.view(), ut.view(), &r)
                .unwrap()
                .student
                .value
        });
        assert_grad("hint conv W", &r.weight, &out.weight, |w| {
            let r = HintRegressor::new(w.clone(), r.bias.clone()).unwrap();
            hint_loss_conv(us.view(), ut.view(), &r)
                .unwrap()
                .student
                .value
        });
        assert_grad("hint conv b", &r.bias, &out.bias, |b| {
            let r = HintRegressor::new(r.weight.clone(), b.clone()).unwrap();
            hint_loss_conv(us.view(), ut.view(), &r)
                .unwrap()
                .student
                .value
        });
    }

    #[test]
    fn apply_conv_matches_the_reference_convolution() {
        let mut rng = SeededRng::new(42);
        let w = rng.normal_array((5, 3), 0.5);
        let b = rng.normal_array(5, 0.5);
        let r = HintRegressor::<f32>::new(w, b).unwrap();
        let x = rng.normal_array((2, 3, 4, 3), 1.0);
        let ours = r.apply_conv(x.view()).unwrap();
        let reference = r.to_conv_layer().unwrap().reference_forward(&x).unwrap();
        assert_eq!(ours.dim(), reference.dim());
        assert!(ours
            .iter()
            .zip(reference.iter())
            .all(|(a, b)| (a - b).abs() < 1e-5));
    }

    #[test]
    fn least_squares_recovers_a_planted_regressor() {
        let mut rng = SeededRng::new(43);
        let truth = random_regressor(&mut rng, 4, 3);
        let us = rng.normal_array_f64((2, 3, 5, 4), 1.0);
        let ut = truth.apply_conv(us.view()).unwrap();
        let fit = HintRegressor::fit_conv(us.view(), ut.view()).unwrap();
        assert!(fit
            .weight
            .iter()
            .zip(truth.weight.iter())
            .all(|(a, b)| (a - b).abs() < 1e-10));
        assert!(fit
            .bias
            .iter()
            .zip(truth.bias.iter())
            .all(|(a, b)| (a - b).abs() < 1e-10));
        let out = hint_loss_conv(us.view(), ut.view(), &fit).unwrap();
        assert!(out.student.value < 1e-20);
    }

    #[test]
    fn least_squares_zeroes_the_regressor_gradient_on_noisy_data() {
        let mut rng = SeededRng::new(44);
        let us = rng.normal_array_f64((20, 6), 1.0);
        let ut = rng.normal_array_f64((20, 4), 1.0);
        let fit = HintRegressor::fit_linear(us.view(), ut.view()).unwrap();
        let out = hint_loss_linear(us.view(), ut.view(), &fit).unwrap();
        assert!(out.student.value > 0.1);
        assert!(out
            .weight
            .iter()
            .chain(out.bias.iter())
            .all(|g| g.abs() < 1e-12));
        // Any perturbation of the fit increases the loss.
        let moved = HintRegressor::new(&fit.weight + 1e-3, fit.bias.clone()).unwrap();
        let worse = hint_loss_linear(us.view(), ut.view(), &moved).unwrap();
        assert!(worse.student.value > out.student.value);
    }

    #[test]
    fn typed_errors() {
        let w = array![[1.0_f64, 0.0], [0.0, 1.0], [1.0, 1.0]];
        assert!(matches!(
            HintRegressor::new(w.clone(), array![0.0, 0.0]),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            HintRegressor::new(array![[f64::NAN]], array![0.0]),
            Err(Error::NonFinite { .. })
        ));
        let r = HintRegressor::new(w, array![0.0, 0.0, 0.0]).unwrap();
        let us = Array2::<f64>::zeros((4, 2));
        assert!(hint_loss_linear(us.view(), Array2::zeros((4, 3)).view(), &r).is_ok());
        assert!(hint_loss_linear(us.view(), Array2::zeros((3, 3)).view(), &r).is_err());
        assert!(hint_loss_linear(us.view(), Array2::zeros((4, 2)).view(), &r).is_err());
        assert!(hint_loss_linear(
            Array2::zeros((4, 3)).view(),
            Array2::zeros((4, 3)).view(),
            &r
        )
        .is_err());
        let x = Array4::<f64>::zeros((1, 2, 3, 3));
        assert!(hint_loss_conv(x.view(), Array4::zeros((1, 3, 3, 3)).view(), &r).is_ok());
        assert!(matches!(
            hint_loss_conv(x.view(), Array4::zeros((1, 3, 2, 3)).view(), &r),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(r.apply_conv(Array4::zeros((1, 3, 2, 2)).view()).is_err());
        assert!(HintRegressor::fit_linear(us.view(), Array2::zeros((5, 3)).view()).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn never_panics(
            n in 0usize..3, cs in 0usize..3, ct in 0usize..3, h in 0usize..3, ht in 0usize..3,
            rs in 0usize..3, rt in 0usize..3,
            vals in proptest::collection::vec(prop_oneof![
                9 => -1e3f64..1e3, 1 => Just(f64::NAN)], 16),
        ) {
            let v = |i: usize| vals[i % 16];
            let us = Array4::from_shape_fn((n, cs, h, 2), |(a, b, c, d)| v(a + 2 * b + 3 * c + d));
            let ut = Array4::from_shape_fn((n, ct, ht, 2), |(a, b, c, d)| v(5 + a + b + 7 * c + d));
            let reg = HintRegressor::new(
                Array2::from_shape_fn((rt, rs), |(a, b)| v(3 * a + b)),
                Array1::from_shape_fn(rt, |a| v(a + 9)),
            );
            let finite = us.iter().chain(ut.iter()).all(|x| x.is_finite());
            let fit = HintRegressor::fit_conv(us.view(), ut.view());
            let fit_ok = n > 0 && cs > 0 && ct > 0 && h > 0 && h == ht && finite;
            prop_assert_eq!(fit.is_ok(), fit_ok);
            if let Ok(r) = reg {
                let res = hint_loss_conv(us.view(), ut.view(), &r);
                prop_assert_eq!(res.is_ok(), fit_ok && rs == cs && rt == ct);
                let us2 = Array2::from_shape_fn((n, cs), |(a, b)| v(a + 2 * b));
                let ut2 = Array2::from_shape_fn((n, ct), |(a, b)| v(4 + a + b));
                let lin_ok = n > 0 && cs > 0 && ct > 0 && rs == cs && rt == ct
                    && us2.iter().chain(ut2.iter()).all(|x| x.is_finite());
                prop_assert_eq!(hint_loss_linear(us2.view(), ut2.view(), &r).is_ok(), lin_ok);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn regressor_methods_never_panic(
            n in 0usize..4, nt in 0usize..4, cs in 0usize..3, ct in 0usize..3, rs in 1usize..3,
            vals in proptest::collection::vec(prop_oneof![
                9 => -1e3f64..1e3, 1 => Just(f64::NAN)], 16),
            big in prop_oneof![Just(1.0f64), Just(1e300)],
        ) {
            let v = |i: usize| vals[i % 16];
            let us = Array2::from_shape_fn((n, cs), |(a, b)| v(a + 3 * b));
            let ut = Array2::from_shape_fn((nt, ct), |(a, b)| v(7 + a + b));
            let finite = us.iter().chain(ut.iter()).all(|x| x.is_finite());
            let fit_ok = n > 0 && n == nt && cs > 0 && ct > 0 && finite;
            prop_assert_eq!(HintRegressor::fit_linear(us.view(), ut.view()).is_ok(), fit_ok);
            let r = HintRegressor::new(
                Array2::from_shape_fn((2, rs), |(a, b)| (a + b) as f64 * big),
                Array1::zeros(2),
            ).unwrap();
            let us_ok = n > 0 && cs > 0 && us.iter().all(|x| x.is_finite());
            let lin = r.apply_linear(us.view());
            prop_assert_eq!(lin.is_ok(), us_ok && cs == rs);
            let maps = Array4::from_shape_fn((n, cs, 2, 1), |(a, b, c, _)| v(a + b + 5 * c));
            let maps_ok = n > 0 && cs > 0 && maps.iter().all(|x| x.is_finite());
            prop_assert_eq!(r.apply_conv(maps.view()).is_ok(), maps_ok && cs == rs);
            // 1e300 does not fit in f32: a typed error, not a panic.
            prop_assert_eq!(r.to_conv_layer().is_ok(), big == 1.0);
        }
    }
}
