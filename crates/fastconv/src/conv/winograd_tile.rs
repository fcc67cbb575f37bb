//! The transforms of Winograd minimal filtering F(m×m, 3×3) (Lavin & Gray,
//! 2016), as data: `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` for an `α × α` input
//! tile `d` (`α = m + 2`) and a 3×3 filter `g`. [`WinogradTile`] holds the
//! matrices of the two tiles the driver ([`super::winograd`]) runs:
//!
//! - F(2×2, 3×3), interpolation points 0, ±1 and ∞: 16 products per 4
//!   outputs (2.25× fewer than equation (1)'s 36); its transforms only add,
//!   subtract and halve.
//! - F(4×4, 3×3), points 0, ±1, ±2 and ∞: 36 products per 16 outputs (4×
//!   fewer); `Bᵀ` and `Aᵀ` hold powers of two up to 8 and a 5, `G` the
//!   fractions ¼, ⅙, 1/12 and 1/24, so the rounding error grows (measured in
//!   the driver's documentation).
//!
//! The input and output transforms act on [`LANES`] tiles at once (one
//! array of lanes per matrix element), so that inside [`crate::Isa::run`]
//! their loops compile to 512-bit (AVX-512) or 2 × 256-bit (AVX2) vector
//! operations; zero coefficients are skipped.

/// Tiles one input or output transform handles at once.
pub(super) const LANES: usize = 16;

/// One value per tile of a group of [`LANES`] tiles.
pub(super) type Lanes = [f32; LANES];

/// The output tile of a Winograd convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WinogradTile {
    /// F(2×2, 3×3): 4×4 input tiles, 16 components.
    F2,
    /// F(4×4, 3×3): 6×6 input tiles, 36 components.
    F4,
}

/// `Bᵀ` of F(2×2, 3×3), row-major 4×4.
const BT2: [f32; 16] = [
    1.0, 0.0, -1.0, 0.0, //
    0.0, 1.0, 1.0, 0.0, //
    0.0, -1.0, 1.0, 0.0, //
    0.0, 1.0, 0.0, -1.0,
];
/// `G` of F(2×2, 3×3), row-major 4×3.
const G2: [f64; 12] = [
    1.0, 0.0, 0.0, //
    0.5, 0.5, 0.5, //
    0.5, -0.5, 0.5, //
    0.0, 0.0, 1.0,
];
/// `Aᵀ` of F(2×2, 3×3), row-major 2×4.
const AT2: [f32; 8] = [
    1.0, 1.0, 1.0, 0.0, //
    0.0, 1.0, -1.0, -1.0,
];
/// `Bᵀ` of F(4×4, 3×3), row-major 6×6.
const BT4: [f32; 36] = [
    4.0, 0.0, -5.0, 0.0, 1.0, 0.0, //
    0.0, -4.0, -4.0, 1.0, 1.0, 0.0, //
    0.0, 4.0, -4.0, -1.0, 1.0, 0.0, //
    0.0, -2.0, -1.0, 2.0, 1.0, 0.0, //
    0.0, 2.0, -1.0, -2.0, 1.0, 0.0, //
    0.0, 4.0, 0.0, -5.0, 0.0, 1.0,
];
/// `G` of F(4×4, 3×3), row-major 6×3 (applied in f64, rounded once).
const G4: [f64; 18] = [
    1.0 / 4.0,
    0.0,
    0.0,
    -1.0 / 6.0,
    -1.0 / 6.0,
    -1.0 / 6.0,
    -1.0 / 6.0,
    1.0 / 6.0,
    -1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 12.0,
    1.0 / 6.0,
    1.0 / 24.0,
    -1.0 / 12.0,
    1.0 / 6.0,
    0.0,
    0.0,
    1.0,
];
/// `Aᵀ` of F(4×4, 3×3), row-major 4×6.
const AT4: [f32; 24] = [
    1.0, 1.0, 1.0, 1.0, 1.0, 0.0, //
    0.0, 1.0, -1.0, 2.0, -2.0, 0.0, //
    0.0, 1.0, 1.0, 4.0, 4.0, 0.0, //
    0.0, 1.0, -1.0, 8.0, -8.0, 1.0,
];

impl WinogradTile {
    /// The tile with `m` outputs per side (2, else 4); a constant `m`
    /// makes the tile, and so its matrices, known at compile time.
    #[inline(always)]
    pub const fn with_m(m: usize) -> Self {
        if m == 2 {
            WinogradTile::F2
        } else {
            WinogradTile::F4
        }
    }

    /// Outputs per tile side, `m`.
    #[inline(always)]
    pub fn m(self) -> usize {
        match self {
            WinogradTile::F2 => 2,
            WinogradTile::F4 => 4,
        }
    }

    /// Input tile side, `α = m + 2`.
    #[inline(always)]
    pub fn alpha(self) -> usize {
        self.m() + 2
    }

    /// Transformed-domain components per tile, `α²`.
    pub fn components(self) -> usize {
        self.alpha() * self.alpha()
    }

    #[inline(always)]
    fn bt(self) -> &'static [f32] {
        match self {
            WinogradTile::F2 => &BT2,
            WinogradTile::F4 => &BT4,
        }
    }

    #[inline(always)]
    fn g(self) -> &'static [f64] {
        match self {
            WinogradTile::F2 => &G2,
            WinogradTile::F4 => &G4,
        }
    }

    #[inline(always)]
    fn at(self) -> &'static [f32] {
        match self {
            WinogradTile::F2 => &AT2,
            WinogradTile::F4 => &AT4,
        }
    }

    /// `U = G g Gᵀ` for a row-major 3×3 filter, row-major `α × α`, computed
    /// in f64 and rounded once.
    pub fn filter_transform(self, g: &[f32]) -> Vec<f32> {
        let (a, gm) = (self.alpha(), self.g());
        // t = G g (α × 3), then U = t Gᵀ.
        let mut t = vec![0.0f64; a * 3];
        for i in 0..a {
            for j in 0..3 {
                t[i * 3 + j] = (0..3).map(|k| gm[i * 3 + k] * g[k * 3 + j] as f64).sum();
            }
        }
        let mut u = vec![0.0f32; a * a];
        for i in 0..a {
            for j in 0..a {
                u[i * a + j] = (0..3).map(|k| t[i * 3 + k] * gm[j * 3 + k]).sum::<f64>() as f32;
            }
        }
        u
    }

    /// `V = Bᵀ d B` for [`LANES`] tiles: `d` and `v` hold `α × α` lane
    /// arrays, row-major; `tmp` is scratch of the same size.
    #[inline(always)]
    pub fn input_transform(self, d: &[Lanes], tmp: &mut [Lanes], v: &mut [Lanes]) {
        let a = self.alpha();
        left(self.bt(), a, a, a, d, tmp);
        right(self.bt(), a, a, a, tmp, v);
    }

    /// `Y = Aᵀ M A` for [`LANES`] tiles: `mt` holds `α × α` lane arrays,
    /// `y` gets `m × m`; `tmp` is scratch of `m × α`.
    #[inline(always)]
    pub fn output_transform(self, mt: &[Lanes], tmp: &mut [Lanes], y: &mut [Lanes]) {
        let (m, a) = (self.m(), self.alpha());
        left(self.at(), m, a, a, mt, tmp);
        right(self.at(), m, m, a, tmp, y);
    }
}

/// `out = mat · x` for a row-major `rows × inner` coefficient matrix and
/// `x` of `inner × cols` lane arrays.
#[inline(always)]
fn left(mat: &[f32], rows: usize, inner: usize, cols: usize, x: &[Lanes], out: &mut [Lanes]) {
    for i in 0..rows {
        for j in 0..cols {
            let mut acc = [0.0f32; LANES];
            for k in 0..inner {
                let c = mat[i * inner + k];
                if c != 0.0 {
                    let xk = &x[k * cols + j];
                    for l in 0..LANES {
                        acc[l] += c * xk[l];
                    }
                }
            }
            out[i * cols + j] = acc;
        }
    }
}

/// `out = x · matᵀ` for `x` of `rows × inner` lane arrays and a row-major
/// `cols × inner` coefficient matrix.
#[inline(always)]
fn right(mat: &[f32], rows: usize, cols: usize, inner: usize, x: &[Lanes], out: &mut [Lanes]) {
    for i in 0..rows {
        for j in 0..cols {
            let mut acc = [0.0f32; LANES];
            for k in 0..inner {
                let c = mat[j * inner + k];
                if c != 0.0 {
                    let xk = &x[i * inner + k];
                    for l in 0..LANES {
                        acc[l] += c * xk[l];
                    }
                }
            }
            out[i * cols + j] = acc;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One tile of each size against direct correlation (equation (1)) in
    /// f64, in every lane: `α × α` input, 3×3 filter → `m × m`.
    #[test]
    fn transforms_compute_a_tile_exactly() {
        for tile in [WinogradTile::F2, WinogradTile::F4] {
            let (m, a) = (tile.m(), tile.alpha());
            let g: [f32; 9] = std::array::from_fn(|k| (k as f32 * 0.91 + 0.2).cos());
            let d: Vec<Lanes> = (0..a * a)
                .map(|k| std::array::from_fn(|l| ((k * 7 + l * 3) as f32 * 0.37).sin()))
                .collect();
            let u = tile.filter_transform(&g);
            let mut v = vec![[0.0; LANES]; a * a];
            let mut tmp = vec![[0.0; LANES]; a * a];
            tile.input_transform(&d, &mut tmp, &mut v);
            let prod: Vec<Lanes> = (0..a * a)
                .map(|k| std::array::from_fn(|l| u[k] * v[k][l]))
                .collect();
            let mut y = vec![[0.0; LANES]; m * m];
            tile.output_transform(&prod, &mut tmp, &mut y);
            for l in 0..LANES {
                for oy in 0..m {
                    for ox in 0..m {
                        let direct: f64 = (0..9)
                            .map(|k| g[k] as f64 * d[(oy + k / 3) * a + ox + k % 3][l] as f64)
                            .sum();
                        let got = y[oy * m + ox][l] as f64;
                        assert!(
                            (got - direct).abs() < 2e-5,
                            "{tile:?} lane {l} ({oy}, {ox}): {got} vs {direct}"
                        );
                    }
                }
            }
        }
    }
}
