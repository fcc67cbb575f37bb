//! The input code of an int8 step (Vanhoucke et al. \[49\], survey Section
//! 5): core's [`QuantParams::quantize`] — `round(x / s)` in f64, half away
//! from zero, NaN to the zero point, saturated to the integer type — plus
//! the kernel's u8 shift, on one value ([`InputCode::code`], the reference)
//! and on runs of values with AVX-512 or AVX2 + FMA ([`InputCode::code_run`]).
//!
//! **Why the vector formula is exact.** The vector paths never divide. With
//! `t = x · fl(1/s)` in f32, clamped to ±1024, and `r = round_even(t)`:
//! 1. For `|x/s| ≤ 1024` the relative error of `t` is below `2^-23`, so
//!    `|t − x/s| ≤ 2^-13` and the exact `R = round_half_away(x/s)` is one
//!    of `r − 1, r, r + 1`; beyond ±1024, `r = ±1024` and every code
//!    saturates whichever of those it is (`|zero point| ≤ 255`).
//! 2. `h = r ± 0.5` is exact in f32 (12 bits), and `fma(−h, s, x)` rounds
//!    the exact `x − h·s` once, so its sign is the sign of `x/s − h` and it
//!    is zero exactly when `x/s = h`: a non-zero `x − h·s` is a multiple of
//!    `2^-149` (the f32 grid of `x` and, for `s ≥ 2^-60`, of `h·s`), which
//!    never rounds to zero.
//! 3. `R = r + 1` iff `x/s > r + 0.5`, or `= r + 0.5` with `r ≥ 0` (ties
//!    away from zero); `R = r − 1` iff `x/s < r − 0.5`, or `= r − 0.5` with
//!    `r ≤ 0`.
//! 4. Core's f64 quotient rounds to the same integer as the exact one: a
//!    half-integer `h` with `0.5 ≤ |h| ≤ 1024.5` is an f64, and the exact
//!    quotient of two f32 values is either `h` or at least `2^-27` away
//!    from it, far more than half an f64 ulp of `h` (`≤ 2^-43`), so
//!    rounding to f64 never lands on or crosses `h`.
//!
//! Scales outside `[2^-60, 2^60]` (where `1/s` or `h·s` could leave the
//! normal range) take the scalar reference. Tests compare the vector runs
//! with [`InputCode::code`] at the rounding boundaries, on arbitrary bit
//! patterns, and (ignored by default, release build) on every f32 for a
//! grid of scales.

use hasten_core::QuantParams;

use super::Isa;

/// Core's [`QuantParams::quantize`] followed by the kernel's u8 shift.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct InputCode {
    scale: f64,
    zero_point: i32,
    range: (i32, i32),
    shift: i32,
    /// `scale` as f32 and its reciprocal, for the vector runs.
    scale32: f32,
    inverse: f32,
    /// Whether the scale lies where the vector formula is exact.
    vector: bool,
}

/// The scales the vector formula is proven for (module doc, points 1–2).
const VECTOR_SCALES: std::ops::RangeInclusive<f32> =
    f32::from_bits(67 << 23)..=f32::from_bits(187 << 23);

impl InputCode {
    /// The code of `params` plus `shift` (128 for i8 inputs, else 0).
    pub(crate) fn new(params: &QuantParams, shift: i32) -> Self {
        let scale32 = params.scale();
        InputCode {
            scale: f64::from(scale32),
            zero_point: params.zero_point(),
            range: params.dtype().range(),
            shift,
            scale32,
            inverse: 1.0 / scale32,
            vector: VECTOR_SCALES.contains(&scale32),
        }
    }

    /// `clamp(round(x / scale) + zero_point) + shift` as u8; NaN gives the
    /// zero point, as in core. Same f64 division, no libm call: `round` half
    /// away from zero as a truncation and a comparison of the exact
    /// fractional part.
    #[inline]
    pub(crate) fn code(&self, x: f32) -> u8 {
        let t = f64::from(x) / self.scale;
        // Every code saturates beyond ±1024 steps (ranges lie in −128..=255),
        // so clamping first is exact and keeps the truncation in i32.
        let t = if t.is_nan() {
            0.0
        } else {
            t.clamp(-1024.0, 1024.0)
        };
        let whole = t as i32;
        // Exact: t and its truncation share sign and exponent range.
        let frac = t - f64::from(whole);
        let r = whole + i32::from(frac >= 0.5) - i32::from(frac <= -0.5);
        self.saturate(r)
    }

    /// `clamp(r + zero_point) + shift` as u8.
    #[inline]
    fn saturate(&self, r: i32) -> u8 {
        ((r + self.zero_point).clamp(self.range.0, self.range.1) + self.shift) as u8
    }

    /// Codes `src` into `dst` (same length) on `isa` (a level the caller
    /// checked for the int8 kernel; AVX2 also needs FMA, else the scalar
    /// reference runs); returns whether `src` holds a NaN. Bit-identical to
    /// [`Self::code`] on every value.
    pub(crate) fn code_run(&self, src: &[f32], dst: &mut [u8], isa: Isa) -> bool {
        assert_eq!(src.len(), dst.len(), "InputCode::code_run lengths");
        #[cfg(target_arch = "x86_64")]
        if self.vector {
            match isa {
                Isa::Avx512 if std::arch::is_x86_feature_detected!("avx512f") => {
                    // SAFETY: avx512f detected; equal lengths asserted.
                    return unsafe { x86::run_avx512(self, src, dst) };
                }
                Isa::Avx2
                    if std::arch::is_x86_feature_detected!("avx2")
                        && std::arch::is_x86_feature_detected!("fma") =>
                {
                    // SAFETY: avx2 and fma detected; equal lengths asserted.
                    return unsafe { x86::run_avx2(self, src, dst) };
                }
                _ => {}
            }
        }
        let _ = isa;
        code_each(src, dst, |v| self.code(v))
    }
}

/// Codes `src` into `dst` one value at a time with `code`; returns whether
/// `src` holds a NaN.
#[inline]
pub(crate) fn code_each(src: &[f32], dst: &mut [u8], code: impl Fn(f32) -> u8) -> bool {
    let mut nan = false;
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = code(v);
        nan |= v.is_nan();
    }
    nan
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::InputCode;
    use std::arch::x86_64::*;

    const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

    /// 16 values at a time (module doc), the last block padded.
    ///
    /// # Safety
    /// AVX-512F available; `src.len() == dst.len()`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn run_avx512(c: &InputCode, src: &[f32], dst: &mut [u8]) -> bool {
        let inv = _mm512_set1_ps(c.inverse);
        let s = _mm512_set1_ps(c.scale32);
        let (lim, half, zero) = (
            _mm512_set1_ps(1024.0),
            _mm512_set1_ps(0.5),
            _mm512_setzero_ps(),
        );
        let one = _mm512_set1_epi32(1);
        let zp = _mm512_set1_epi32(c.zero_point);
        let (lo, hi) = (_mm512_set1_epi32(c.range.0), _mm512_set1_epi32(c.range.1));
        let shift = _mm512_set1_epi32(c.shift);
        let mut nan: __mmask16 = 0;
        // A short last block runs through these, padded with zeros.
        let (mut xs, mut codes) = ([0f32; 16], [0u8; 16]);
        let mut i = 0;
        while i < src.len() {
            let full = src.len() - i >= 16;
            if !full {
                xs[..src.len() - i].copy_from_slice(&src[i..]);
            }
            let from = if full { src[i..].as_ptr() } else { xs.as_ptr() };
            // SAFETY: 16 values from `from` (src[i..i + 16] or xs).
            let x = unsafe { _mm512_loadu_ps(from) };
            let is_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
            nan |= is_nan;
            let t = _mm512_max_ps(
                _mm512_min_ps(_mm512_mul_ps(x, inv), lim),
                _mm512_sub_ps(zero, lim),
            );
            let r = _mm512_mask_mov_ps(_mm512_roundscale_ps::<NEAREST>(t), is_nan, zero);
            let above = _mm512_fnmadd_ps(_mm512_add_ps(r, half), s, x);
            let below = _mm512_fnmadd_ps(_mm512_sub_ps(r, half), s, x);
            let up = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(above, zero)
                | (_mm512_cmp_ps_mask::<_CMP_EQ_OQ>(above, zero)
                    & _mm512_cmp_ps_mask::<_CMP_GE_OQ>(r, zero));
            let down = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(below, zero)
                | (_mm512_cmp_ps_mask::<_CMP_EQ_OQ>(below, zero)
                    & _mm512_cmp_ps_mask::<_CMP_LE_OQ>(r, zero));
            let mut v = _mm512_cvtps_epi32(r);
            v = _mm512_mask_add_epi32(v, up, v, one);
            v = _mm512_mask_sub_epi32(v, down, v, one);
            v = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(v, zp), lo), hi);
            v = _mm512_add_epi32(v, shift);
            let to = if full {
                dst[i..].as_mut_ptr()
            } else {
                codes.as_mut_ptr()
            };
            // SAFETY: 16 bytes at `to` (dst[i..i + 16] or codes); every
            // lane is in 0..=255.
            unsafe { _mm_storeu_si128(to.cast(), _mm512_cvtepi32_epi8(v)) };
            if !full {
                let rest = dst.len() - i;
                dst[i..].copy_from_slice(&codes[..rest]);
            }
            i += 16;
        }
        nan != 0
    }

    /// 8 values at a time (module doc), the last block padded.
    ///
    /// # Safety
    /// AVX2 and FMA available; `src.len() == dst.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run_avx2(c: &InputCode, src: &[f32], dst: &mut [u8]) -> bool {
        let inv = _mm256_set1_ps(c.inverse);
        let s = _mm256_set1_ps(c.scale32);
        let (lim, half, zero) = (
            _mm256_set1_ps(1024.0),
            _mm256_set1_ps(0.5),
            _mm256_setzero_ps(),
        );
        let zp = _mm256_set1_epi32(c.zero_point);
        let (lo, hi) = (_mm256_set1_epi32(c.range.0), _mm256_set1_epi32(c.range.1));
        let shift = _mm256_set1_epi32(c.shift);
        let mut nan = _mm256_setzero_ps();
        // A short last block runs through these, padded with zeros.
        let (mut xs, mut codes) = ([0f32; 8], [0u8; 8]);
        let mut i = 0;
        while i < src.len() {
            let full = src.len() - i >= 8;
            if !full {
                xs[..src.len() - i].copy_from_slice(&src[i..]);
            }
            let from = if full { src[i..].as_ptr() } else { xs.as_ptr() };
            // SAFETY: 8 values from `from` (src[i..i + 8] or xs).
            let x = unsafe { _mm256_loadu_ps(from) };
            let is_nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x);
            nan = _mm256_or_ps(nan, is_nan);
            let t = _mm256_max_ps(
                _mm256_min_ps(_mm256_mul_ps(x, inv), lim),
                _mm256_sub_ps(zero, lim),
            );
            let r = _mm256_andnot_ps(is_nan, _mm256_round_ps::<NEAREST>(t));
            let above = _mm256_fnmadd_ps(_mm256_add_ps(r, half), s, x);
            let below = _mm256_fnmadd_ps(_mm256_sub_ps(r, half), s, x);
            let up = _mm256_or_ps(
                _mm256_cmp_ps::<_CMP_GT_OQ>(above, zero),
                _mm256_and_ps(
                    _mm256_cmp_ps::<_CMP_EQ_OQ>(above, zero),
                    _mm256_cmp_ps::<_CMP_GE_OQ>(r, zero),
                ),
            );
            let down = _mm256_or_ps(
                _mm256_cmp_ps::<_CMP_LT_OQ>(below, zero),
                _mm256_and_ps(
                    _mm256_cmp_ps::<_CMP_EQ_OQ>(below, zero),
                    _mm256_cmp_ps::<_CMP_LE_OQ>(r, zero),
                ),
            );
            // Masks are −1 where set: subtracting `up` adds one.
            let mut v = _mm256_cvtps_epi32(r);
            v = _mm256_sub_epi32(v, _mm256_castps_si256(up));
            v = _mm256_add_epi32(v, _mm256_castps_si256(down));
            v = _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(v, zp), lo), hi);
            v = _mm256_add_epi32(v, shift);
            // Lanes 0..=255: two unsigned packs leave bytes 0..4 of each
            // 128-bit half holding lanes 0..4 and 4..8.
            let words = _mm256_packus_epi32(v, v);
            let bytes = _mm256_packus_epi16(words, words);
            let low = _mm_cvtsi128_si32(_mm256_castsi256_si128(bytes));
            let high = _mm_cvtsi128_si32(_mm256_extracti128_si256::<1>(bytes));
            let to = if full {
                dst[i..].as_mut_ptr()
            } else {
                codes.as_mut_ptr()
            };
            // SAFETY: 8 bytes at `to` (dst[i..i + 8] or codes).
            unsafe {
                to.cast::<i32>().write_unaligned(low);
                to.add(4).cast::<i32>().write_unaligned(high);
            }
            if !full {
                let rest = dst.len() - i;
                dst[i..].copy_from_slice(&codes[..rest]);
            }
            i += 8;
        }
        _mm256_movemask_ps(nan) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lowbit::Needs;
    use hasten_core::IntType;
    use proptest::prelude::*;

    /// The code of scale `scale`, zero point drawn from `z`, u8 or i8.
    fn input_code(scale: f32, z: u8, signed: bool) -> (QuantParams, InputCode, i32) {
        let (dtype, zp, shift) = if signed {
            (IntType::I8, i32::from(z) - 128, 128)
        } else {
            (IntType::U8, i32::from(z), 0)
        };
        let p = QuantParams::new(scale, zp, dtype).unwrap();
        (p, InputCode::new(&p, shift), shift)
    }

    /// Every ISA path's run equals the reference code value by value, and
    /// reports a NaN exactly when there is one.
    fn assert_runs_match(code: &InputCode, xs: &[f32]) {
        let want: Vec<u8> = xs.iter().map(|&x| code.code(x)).collect();
        let nan = xs.iter().any(|x| x.is_nan());
        for isa in Isa::supported_for(Needs::Int8Dot) {
            let mut got = vec![0u8; xs.len()];
            assert_eq!(code.code_run(xs, &mut got, isa), nan, "{isa:?}");
            for (k, (&g, &w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g, w, "{isa:?}: x = {:e} ({:#x})", xs[k], xs[k].to_bits());
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Bit-exact against core's own quantiser on arbitrary f32 bit
        /// patterns (NaN, infinities, subnormals) and on the exact
        /// half-steps, where the rounding mode shows.
        #[test]
        fn code_equals_core_quantize(
            bits in any::<u32>(), k in -300i32..300, near in -2i32..3,
            scale in 1e-3f32..2.0, z in any::<u8>(), signed in any::<bool>(),
        ) {
            let (p, code, shift) = input_code(scale, z, signed);
            let half = (k as f32 + 0.5) * scale;
            let nudged = f32::from_bits((half.to_bits() as i32 + near) as u32);
            for x in [f32::from_bits(bits), half, nudged, -half] {
                prop_assert_eq!(i32::from(code.code(x)), p.quantize(x) + shift, "x = {}", x);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// The vector runs equal the reference on the f32 neighbours of
        /// every half-step `(k + 0.5)·s` of a random scale (the rounding
        /// boundaries, where `fl(1/s)` misleads the first guess), of the
        /// saturation edges, and on arbitrary bit patterns, with run lengths
        /// that leave every tail length.
        #[test]
        fn vector_runs_equal_the_reference(
            scale_bits in any::<u32>(), z in any::<u8>(), signed in any::<bool>(),
            patterns in proptest::collection::vec(any::<u32>(), 0..40),
        ) {
            // Scales over the vector range's whole exponent span and beyond.
            let scale = f32::from_bits(scale_bits % 0x7f00_0000 + 0x0080_0000);
            let (_, code, _) = input_code(scale, z, signed);
            let mut xs: Vec<f32> = patterns.iter().map(|&b| f32::from_bits(b)).collect();
            for k in (-1030..1030).step_by(7).chain([-385, -384, -129, -128, 127, 128, 255, 256]) {
                let h = (k as f32 + 0.5) * scale;
                for d in -3i32..=3 {
                    let v = f32::from_bits((h.to_bits() as i32 + d) as u32);
                    xs.extend([v, -v]);
                }
            }
            xs.extend([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MAX, f32::MIN_POSITIVE]);
            assert_runs_match(&code, &xs);
        }
    }

    /// Every half-step `(k + 0.5)·s` represented exactly in f32 (scales of
    /// few significant bits), where ties decide, and the NaN flag on runs
    /// whose only NaN is in the vector body or in the tail.
    #[test]
    fn exact_ties_and_nan_positions() {
        for (scale, z) in [
            (0.25f32, 128u8),
            (0.5, 0),
            (1.0, 255),
            (3.0, 7),
            (0.125, 200),
        ] {
            let (_, code, _) = input_code(scale, z, false);
            let xs: Vec<f32> = (-2100..2100).map(|k| k as f32 * 0.5 * scale).collect();
            assert_runs_match(&code, &xs);
        }
        let (_, code, _) = input_code(0.1, 3, true);
        for len in [1, 7, 8, 15, 16, 17, 33] {
            for at in 0..len {
                let mut xs: Vec<f32> = (0..len).map(|k| k as f32 * 0.37 - 3.0).collect();
                xs[at] = f32::NAN;
                assert_runs_match(&code, &xs);
            }
        }
    }

    /// Every f32 bit pattern for a grid of scales (about a minute per scale
    /// in a release build: `cargo test --release -p hasten-fastconv --lib
    /// every_f32 -- --ignored`).
    #[test]
    #[ignore]
    fn every_f32_codes_as_the_reference() {
        let scales = [
            1e-3f32,
            16.0 / 255.0,
            0.02,
            0.1,
            std::f32::consts::PI,
            f32::from_bits(67 << 23),
            f32::from_bits(187 << 23),
        ];
        for scale in scales {
            let (_, code, _) = input_code(scale, 128, false);
            const CHUNK: u32 = 1 << 20;
            let mut xs = vec![0f32; CHUNK as usize];
            let mut want = vec![0u8; CHUNK as usize];
            let mut got = vec![0u8; CHUNK as usize];
            for chunk in 0..(1u64 << 32) / u64::from(CHUNK) {
                let start = chunk as u32 * CHUNK;
                for (k, x) in xs.iter_mut().enumerate() {
                    *x = f32::from_bits(start + k as u32);
                }
                code_each(&xs, &mut want, |v| code.code(v));
                for isa in Isa::supported_for(Needs::Int8Dot) {
                    code.code_run(&xs, &mut got, isa);
                    if got != want {
                        let k = got.iter().zip(&want).position(|(g, w)| g != w).unwrap();
                        panic!("{isa:?}, scale {scale:e}: x = {:e}", xs[k]);
                    }
                }
            }
        }
    }
}
