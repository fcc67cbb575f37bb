//! Random scores: the baseline every criterion should beat.

use hasten_core::SeededRng;

/// `count` i.i.d. uniform scores in `[0, 1)`.
pub fn random_scores(count: usize, rng: &mut SeededRng) -> Vec<f64> {
    (0..count).map(|_| rng.uniform()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible() {
        let a = random_scores(5, &mut SeededRng::new(1));
        assert_eq!(a, random_scores(5, &mut SeededRng::new(1)));
        assert!(a.iter().all(|&v| (0.0..1.0).contains(&v)));
    }
}
