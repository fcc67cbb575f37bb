//! Error measures used by tests, reports and examples.

use ndarray::{ArrayBase, Data, Dimension};

/// Relative Frobenius error `‖reference − approx‖_F / ‖reference‖_F`,
/// accumulated in f64; the plain norm of the difference when the reference is
/// zero, and `f64::INFINITY` when the shapes differ.
///
/// ```
/// use hasten_core::ndarray::array;
/// use hasten_core::relative_error;
///
/// // ‖(3, 4) − (3, 0)‖ / ‖(3, 4)‖ = 4 / 5.
/// let e = relative_error(&array![3.0f32, 4.0], &array![3.0f32, 0.0]);
/// assert!((e - 0.8).abs() < 1e-12);
/// assert!(relative_error(&array![1.0f32, 2.0], &array![1.0f32]).is_infinite());
/// ```
pub fn relative_error<S1, S2, D>(reference: &ArrayBase<S1, D>, approx: &ArrayBase<S2, D>) -> f64
where
    S1: Data<Elem = f32>,
    S2: Data<Elem = f32>,
    D: Dimension,
{
    if reference.shape() != approx.shape() {
        return f64::INFINITY;
    }
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&r, &a) in reference.iter().zip(approx.iter()) {
        diff += (f64::from(r) - f64::from(a)).powi(2);
        norm += f64::from(r).powi(2);
    }
    if norm == 0.0 {
        diff.sqrt()
    } else {
        (diff / norm).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn closed_form_values() {
        let a = array![3.0f32, 4.0];
        assert_eq!(relative_error(&a, &a), 0.0);
        assert!((relative_error(&a, &array![3.0f32, 0.0]) - 0.8).abs() < 1e-12);
        assert_eq!(
            relative_error(&array![0.0f32, 0.0], &array![3.0f32, 4.0]),
            5.0
        );
        assert!(relative_error(&a, &array![1.0f32]).is_infinite());
    }
}
