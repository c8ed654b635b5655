//! The requantization of one output channel's int32 sums into stored codes (spec §4.2), 16 lanes at a
//! time with AVX-512: `((acc − comp) + bias)·factor`, the sum post-op on the residual codes already
//! in the destination, the ReLU, saturation and rounding to nearest-even, and the code's byte. Each
//! step is the f32 operation of `quant::Requant::apply` in the same order (the sum is one fused
//! multiply-add, as `mul_add` there), so results equal the scalar definition bit for bit; without
//! AVX-512 the caller uses that definition.
#![allow(unsafe_code)]

use std::sync::LazyLock;

use crate::engine::quant::IntType;

/// One channel's requantization.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowParams {
    /// Subtracted from every sum (128·Σw for s8 input stored shifted).
    pub comp: i32,
    pub bias: i32,
    pub factor: f32,
    /// The sum post-op's factor on the residual codes.
    pub sum: Option<f32>,
    pub relu: Option<f32>,
    pub ty: IntType,
    /// A second requantization of the stored code, by this factor (a convolution writing straight
    /// into its Concat's buffer at the Concat's scale: the code is rounded twice, as when the Concat
    /// requantizes it).
    pub then: Option<f32>,
}

impl RowParams {
    /// A row that stores each sum as it is, as a value of type `ty` (tests).
    #[cfg(test)]
    pub(crate) fn unit(ty: IntType) -> Self {
        Self {
            comp: 0,
            bias: 0,
            factor: 1.0,
            sum: None,
            relu: None,
            ty,
            then: None,
        }
    }

    /// Whether the row stores u8 codes (of its value, or of its sum with u8 residual codes) once
    /// rounded, maybe through a ReLU of slope at least 0, which changes no code: a negative value
    /// is clamped to code 0 either way.
    pub fn plain_u8(&self) -> bool {
        self.ty == IntType::U8 && self.then.is_none() && self.relu.is_none_or(|s| s >= 0.0)
    }
}

static AVX512: LazyLock<bool> = LazyLock::new(|| {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
});

/// Requantizes `acc` into `dst` (codes of `p.ty`, holding the residual codes on entry when there is
/// a sum): `dst` rows of `width` from `acc` rows `stride` apart. Returns false, touching nothing, when
/// this CPU lacks AVX-512.
pub fn rows_u8(p: &RowParams, acc: &[i32], shape: (usize, usize), dst: &mut [u8]) -> bool {
    rows(acc, shape, dst, |a, d| {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F/BW/VL are present (`rows` checked); `a` and `d` hold `d.len()` values and
        // the kernel touches only those (masked tail).
        unsafe {
            x86::row_u8(p, a.as_ptr(), d.as_mut_ptr(), d.len());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (p, a, d);
    })
}

/// As `rows_u8` for an FP32 destination: the requantized values are stored as they are (the sum's
/// residual is FP32 values in `dst`).
pub fn rows_f32(p: &RowParams, acc: &[i32], shape: (usize, usize), dst: &mut [f32]) -> bool {
    rows(acc, shape, dst, |a, d| {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `rows_u8`.
        unsafe {
            x86::row_f32(p, a.as_ptr(), d.as_mut_ptr(), d.len());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (p, a, d);
    })
}

/// Runs `row` on each `dst` row of `width` and its `acc` row (rows `stride` apart), when this CPU
/// has AVX-512 and the shapes fit (else false, touching nothing).
fn rows<T>(
    acc: &[i32],
    (width, stride): (usize, usize),
    dst: &mut [T],
    row: impl Fn(&[i32], &mut [T]),
) -> bool {
    if !*AVX512 {
        return false;
    }
    let n = dst.len().checked_div(width).unwrap_or(0);
    if n == 0 {
        return true;
    }
    if stride < width || acc.len() < (n - 1) * stride + width {
        // Not the shape described: left to the scalar definition.
        return false;
    }
    for (i, d) in dst.chunks_exact_mut(width).enumerate() {
        row(&acc[i * stride..i * stride + width], d);
    }
    true
}

/// Codes of type `from` into codes of type `to`: `sat(nearbyint(q·factor))`, as
/// `quant::requantize` with `factor = S_to / S_from`. False, touching nothing, without AVX-512.
pub fn bytes(src: &[u8], from: IntType, to: IntType, factor: f32, dst: &mut [u8]) -> bool {
    if !*AVX512 {
        return false;
    }
    let n = src.len().min(dst.len());
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `row_u8`: AVX-512 checked, n elements in both slices, masked tail.
    unsafe {
        x86::bytes(src.as_ptr(), from, to, factor, dst.as_mut_ptr(), n);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = n;
    true
}

/// FP32 values into codes: `sat(nearbyint(x·scale))`, as `quant::quantize`. False, touching nothing,
/// without AVX-512.
pub fn quantize(src: &[f32], scale: f32, to: IntType, dst: &mut [u8]) -> bool {
    if !*AVX512 {
        return false;
    }
    let n = src.len().min(dst.len());
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `row_u8`.
    unsafe {
        x86::quantize(src.as_ptr(), scale, to, dst.as_mut_ptr(), n);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = n;
    true
}

/// Codes back to FP32 values: `q·(1/scale)`, as `quant::dequantize`. False, touching nothing,
/// without AVX-512.
pub fn dequantize(src: &[u8], from: IntType, scale: f32, dst: &mut [f32]) -> bool {
    if !*AVX512 {
        return false;
    }
    let n = src.len().min(dst.len());
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `row_u8`.
    unsafe {
        x86::dequantize(src.as_ptr(), from, 1.0 / scale, dst.as_mut_ptr(), n);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = n;
    true
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use std::arch::x86_64::*;

    use super::RowParams;
    use crate::engine::quant::IntType;

    /// The clamp bounds and the stored byte of code 0.
    fn range(ty: IntType) -> (f32, f32, i32) {
        match ty {
            IntType::U8 => (0.0, 255.0, 0),
            IntType::S8 => (-128.0, 127.0, 128),
        }
    }

    /// The 16-lane mask of the block starting at i of n.
    fn mask(i: usize, n: usize) -> __mmask16 {
        let lanes = (n - i).min(16);
        if lanes == 16 {
            0xffff
        } else {
            (1u16 << lanes) - 1
        }
    }

    /// Clamps to the type's range, rounds to nearest-even (the default MXCSR mode of the conversion)
    /// and stores the codes' bytes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn store(y: __m512, ty: IntType, dst: *mut u8, mask: __mmask16) {
        // SAFETY: as the caller's.
        unsafe { store_bytes(narrow(y, ty), dst, mask) }
    }

    /// The codes' bytes of 16 values (`store` without the store).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn narrow(y: __m512, ty: IntType) -> __m128i {
        let (lo, hi, zero) = range(ty);
        let y = _mm512_min_ps(_mm512_max_ps(y, _mm512_set1_ps(lo)), _mm512_set1_ps(hi));
        let q = _mm512_add_epi32(_mm512_cvtps_epi32(y), _mm512_set1_epi32(zero));
        // Narrowed in a register: the memory form of vpmovdb is slow on some CPUs (Zen 4).
        _mm512_cvtepi32_epi8(q)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn store_bytes(bytes: __m128i, dst: *mut u8, mask: __mmask16) {
        // SAFETY: the caller's mask covers only lanes inside `dst`.
        unsafe {
            if mask == 0xffff {
                _mm_storeu_si128(dst as *mut __m128i, bytes);
            } else {
                _mm_mask_storeu_epi8(dst as *mut i8, mask, bytes);
            }
        }
    }

    /// The codes of 16 bytes (masked) as f32.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn load(src: *const u8, ty: IntType, mask: __mmask16) -> __m512 {
        // SAFETY: the caller's mask covers only lanes inside `src`.
        let bytes = unsafe { _mm_maskz_loadu_epi8(mask, src as *const i8) };
        codes_as_values(bytes, ty)
    }

    /// 16 codes' bytes as f32.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn codes_as_values(bytes: __m128i, ty: IntType) -> __m512 {
        let zero = _mm512_set1_epi32(range(ty).2);
        _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(bytes), zero))
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn bytes(
        src: *const u8,
        from: IntType,
        to: IntType,
        factor: f32,
        dst: *mut u8,
        n: usize,
    ) {
        let f = _mm512_set1_ps(factor);
        for i in (0..n).step_by(16) {
            let m = mask(i, n);
            // SAFETY: lanes i..i + 16 masked to n.
            unsafe {
                let y = _mm512_mul_ps(load(src.add(i), from, m), f);
                store(y, to, dst.add(i), m);
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn quantize(src: *const f32, scale: f32, to: IntType, dst: *mut u8, n: usize) {
        let s = _mm512_set1_ps(scale);
        // 64 values at a time: four vectors of codes as 32-bit lanes packed to bytes by two
        // saturating packs (exact: the codes' bytes are within 0..=255) and one permutation of
        // 4-byte groups (the packs interleave the four vectors per 128-bit lane), rather than
        // four narrowing moves.
        let whole = n / 64 * 64;
        let (lo, hi, zero) = range(to);
        let (lo, hi, zero) = (
            _mm512_set1_ps(lo),
            _mm512_set1_ps(hi),
            _mm512_set1_epi32(zero),
        );
        let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        for i in (0..whole).step_by(64) {
            // SAFETY: values i..i + 64 < n are read and bytes i..i + 64 written.
            unsafe {
                let codes = |j: usize| {
                    let y = _mm512_mul_ps(_mm512_loadu_ps(src.add(i + 16 * j)), s);
                    let y = _mm512_min_ps(_mm512_max_ps(y, lo), hi);
                    _mm512_add_epi32(_mm512_cvtps_epi32(y), zero)
                };
                let ab = _mm512_packus_epi32(codes(0), codes(1));
                let cd = _mm512_packus_epi32(codes(2), codes(3));
                let bytes = _mm512_permutexvar_epi32(order, _mm512_packus_epi16(ab, cd));
                _mm512_storeu_si512(dst.add(i).cast(), bytes);
            }
        }
        for i in (whole..n).step_by(16) {
            let m = mask(i, n);
            // SAFETY: lanes i..i + 16 masked to n.
            unsafe {
                let y = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, src.add(i)), s);
                store(y, to, dst.add(i), m);
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn dequantize(src: *const u8, from: IntType, inverse: f32, dst: *mut f32, n: usize) {
        let f = _mm512_set1_ps(inverse);
        // Whole vectors unmasked, then the tail.
        let whole = n / 16 * 16;
        for i in (0..whole).step_by(16) {
            // SAFETY: bytes i..i + 16 < n are read and values i..i + 16 written.
            unsafe {
                let bytes = _mm_loadu_si128(src.add(i).cast());
                _mm512_storeu_ps(dst.add(i), _mm512_mul_ps(codes_as_values(bytes, from), f));
            }
        }
        if whole < n {
            let m = mask(whole, n);
            // SAFETY: lanes whole..n masked.
            unsafe {
                let y = _mm512_mul_ps(load(src.add(whole), from, m), f);
                _mm512_mask_storeu_ps(dst.add(whole), m, y);
            }
        }
    }

    /// `((acc − comp) + bias)·factor`, then the sum with `residual(lane)` and the ReLU.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn value(p: &RowParams, a: __m512i, residual: impl Fn() -> __m512) -> __m512 {
        let t = _mm512_cvtepi32_ps(_mm512_sub_epi32(a, _mm512_set1_epi32(p.comp)));
        let mut y = _mm512_mul_ps(
            _mm512_add_ps(t, _mm512_set1_ps(p.bias as f32)),
            _mm512_set1_ps(p.factor),
        );
        if let Some(s) = p.sum {
            y = _mm512_fmadd_ps(residual(), _mm512_set1_ps(s), y);
        }
        if let Some(slope) = p.relu {
            let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(y, _mm512_setzero_ps());
            y = _mm512_mask_mul_ps(y, neg, y, _mm512_set1_ps(slope));
        }
        y
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn row_f32(p: &RowParams, acc: *const i32, dst: *mut f32, n: usize) {
        for i in (0..n).step_by(16) {
            let m = mask(i, n);
            // SAFETY: the masked loads and stores touch lanes i..i + 16 < n only.
            unsafe {
                let a = _mm512_maskz_loadu_epi32(m, acc.add(i));
                values_from_sums(p, a, dst.add(i), m);
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn row_u8(p: &RowParams, acc: *const i32, dst: *mut u8, n: usize) {
        for i in (0..n).step_by(16) {
            let m = mask(i, n);
            // SAFETY: the masked loads and stores touch lanes i..i + 16 < n only.
            unsafe {
                let a = _mm512_maskz_loadu_epi32(m, acc.add(i));
                codes_from_sums(p, a, dst.add(i), m);
            }
        }
    }

    /// Requantizes 16 sums (masked) into the FP32 values at `dst`, which hold the residual on entry
    /// when there is a sum.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn values_from_sums(p: &RowParams, a: __m512i, dst: *mut f32, m: __mmask16) {
        // SAFETY: as the caller's.
        unsafe { values_from_sums_in_runs(p, a, dst, &[(0, m)]) }
    }

    /// `values_from_sums` with the 16 lanes in runs: lane i of run (d, m) (the lanes of mask m, the
    /// runs' masks disjoint) at `base + d + i`, as a phase grid's columns land in the output rows.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn values_from_sums_in_runs(
        p: &RowParams,
        a: __m512i,
        base: *mut f32,
        runs: &[(isize, __mmask16)],
    ) {
        // SAFETY (both blocks): each run's mask covers only lanes inside the output; the offset
        // pointer itself may lie before it (wrapping arithmetic), no masked-off lane is touched.
        let residual = || {
            runs.iter().fold(_mm512_setzero_ps(), |v, &(d, m)| unsafe {
                _mm512_mask_loadu_ps(v, m, base.wrapping_offset(d))
            })
        };
        let y = value(p, a, residual);
        for &(d, m) in runs {
            unsafe { _mm512_mask_storeu_ps(base.wrapping_offset(d), m, y) };
        }
    }

    /// Requantizes 16 sums (masked) into the codes at `dst`, which hold the residual on entry when
    /// there is a sum.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn codes_from_sums(p: &RowParams, a: __m512i, dst: *mut u8, m: __mmask16) {
        // SAFETY: as the caller's.
        unsafe { codes_from_sums_in_runs(p, a, dst, &[(0, m)]) }
    }

    /// `codes_from_sums_in_runs` for the rows most layers have (`RowParams::plain_u8`): without
    /// the second rounding and the ReLU (which the clamp at code 0 makes of no effect), with the
    /// clamp in fewer steps; the same codes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn plain_codes_in_runs(
        p: &RowParams,
        a: __m512i,
        base: *mut u8,
        runs: &[(isize, __mmask16)],
    ) {
        let t = _mm512_cvtepi32_ps(_mm512_sub_epi32(a, _mm512_set1_epi32(p.comp)));
        let mut y = _mm512_mul_ps(
            _mm512_add_ps(t, _mm512_set1_ps(p.bias as f32)),
            _mm512_set1_ps(p.factor),
        );
        if let Some(s) = p.sum {
            // The residual's u8 codes, where the runs place them.
            let bytes = runs.iter().fold(_mm_setzero_si128(), |v, &(d, m)| unsafe {
                _mm_mask_loadu_epi8(v, m, base.wrapping_offset(d) as *const i8)
            });
            let residual = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes));
            y = _mm512_fmadd_ps(residual, _mm512_set1_ps(s), y);
        }
        // Above 255 clamped before the conversion (which would overflow), below 0 after it (a
        // negative value rounds to a code of at most 0).
        let q = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_set1_ps(255.0), y));
        let bytes = _mm512_cvtepi32_epi8(_mm512_max_epi32(q, _mm512_setzero_si512()));
        for &(d, m) in runs {
            // SAFETY: as in `values_from_sums_in_runs`.
            unsafe { _mm_mask_storeu_epi8(base.wrapping_offset(d).cast(), m, bytes) };
        }
    }

    /// `codes_from_sums` with the 16 lanes in runs, as `values_from_sums_in_runs`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn codes_from_sums_in_runs(
        p: &RowParams,
        a: __m512i,
        base: *mut u8,
        runs: &[(isize, __mmask16)],
    ) {
        // SAFETY (both blocks): as in `values_from_sums_in_runs`.
        let residual = || {
            let bytes = runs.iter().fold(_mm_setzero_si128(), |v, &(d, m)| unsafe {
                _mm_mask_loadu_epi8(v, m, base.wrapping_offset(d) as *const i8)
            });
            codes_as_values(bytes, p.ty)
        };
        let mut y = value(p, a, residual);
        if let Some(f) = p.then {
            let (lo, hi, _) = range(p.ty);
            let c = _mm512_min_ps(_mm512_max_ps(y, _mm512_set1_ps(lo)), _mm512_set1_ps(hi));
            let q = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(c);
            y = _mm512_mul_ps(q, _mm512_set1_ps(f));
        }
        let bytes = narrow(y, p.ty);
        for &(d, m) in runs {
            unsafe { store_bytes(bytes, base.wrapping_offset(d), m) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::quant::{self, Requant};

    #[test]
    fn the_vectorized_rows_equal_the_scalar_definition() {
        let acc: Vec<i32> = (0..53).map(|i| (i * 7919 % 20011) - 10000).collect();
        let residual: Vec<u8> = (0..53).map(|i| (i * 97 % 256) as u8).collect();
        for ty in [IntType::U8, IntType::S8] {
            for sum in [None, Some(0.7)] {
                for relu in [None, Some(0.0), Some(0.1)] {
                    let p = RowParams {
                        comp: 128 * 37,
                        bias: -411,
                        factor: 0.0123,
                        sum,
                        relu,
                        ty,
                        then: None,
                    };
                    let r = Requant {
                        factor: p.factor,
                        sum,
                        relu,
                    };
                    // Every length up to the tail of the fourth block.
                    for n in [0, 1, 15, 16, 17, 53] {
                        let mut got = residual[..n].to_vec();
                        if !rows_u8(&p, &acc[..n], (n.max(1), n.max(1)), &mut got) {
                            assert!(!*AVX512, "refused with AVX-512");
                            eprintln!("no AVX-512 here: the scalar definition is used");
                            return;
                        }
                        let want: Vec<u8> = acc[..n]
                            .iter()
                            .zip(&residual)
                            .map(|(&a, &res)| {
                                let code = quant::decode(res, ty) as f32;
                                let y = r.apply(a - p.comp, p.bias, code);
                                quant::encode(quant::round_saturate(y, ty), ty)
                            })
                            .collect();
                        assert_eq!(got, want, "{ty:?} {sum:?} {relu:?} {n}");
                        // Rounded twice: requantized again to another scale.
                        let twice = RowParams {
                            then: Some(0.77),
                            ..p
                        };
                        let mut got = residual[..n].to_vec();
                        assert!(rows_u8(&twice, &acc[..n], (n.max(1), n.max(1)), &mut got));
                        let direct: Vec<u8> = want
                            .iter()
                            .map(|&b| {
                                let q =
                                    quant::round_saturate(quant::decode(b, ty) as f32 * 0.77, ty);
                                quant::encode(q, ty)
                            })
                            .collect();
                        assert_eq!(got, direct, "twice {ty:?} {sum:?} {relu:?} {n}");
                        // An FP32 destination: the values themselves, the residual FP32 values.
                        let res: Vec<f32> = residual[..n]
                            .iter()
                            .map(|&b| b as f32 * 0.3 - 20.0)
                            .collect();
                        let mut got = res.clone();
                        assert!(rows_f32(&p, &acc[..n], (n.max(1), n.max(1)), &mut got));
                        let want: Vec<f32> = acc[..n]
                            .iter()
                            .zip(&res)
                            .map(|(&a, &r0)| r.apply(a - p.comp, p.bias, r0))
                            .collect();
                        assert_eq!(got, want, "f32 {sum:?} {relu:?} {n}");
                    }
                }
            }
        }
    }

    /// The plain rows' shorter path stores the codes of the general one: sums far below 0 and
    /// above 255 (and past the int32 range once scaled), ReLUs of slope 0 and above, runs that
    /// split the 16 lanes, with and without a residual.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn plain_rows_store_the_codes_of_the_general_path() {
        if !*AVX512 {
            eprintln!("SKIPPED: no AVX-512 here, the plain path is not run");
            return;
        }
        let runs: &[&[(isize, u16)]] =
            &[&[(0, 0xffff)], &[(0, 0x00ff), (3, 0xff00)], &[(5, 0x0f0f)]];
        for (factor, bias) in [(0.0123, -411), (0.77, 9), (3.0e4, -2)] {
            for (relu, sum) in [None, Some(0.0), Some(0.25)]
                .into_iter()
                .flat_map(|r| [(r, None), (r, Some(0.6))])
            {
                let p = RowParams {
                    comp: 128 * 37,
                    bias,
                    factor,
                    sum,
                    relu,
                    ty: IntType::U8,
                    then: None,
                };
                assert!(p.plain_u8());
                for (k, runs) in runs.iter().enumerate() {
                    let lanes: [i32; 16] =
                        std::array::from_fn(|i| (i as i32 - 7) * 1733 * (k as i32 + 1));
                    // Residual codes under the lanes, different at each position.
                    let mut got: [u8; 24] = std::array::from_fn(|i| (i * 37 % 256) as u8);
                    let mut want = got;
                    // SAFETY: AVX-512 is here; each run's lanes lie within the 24 bytes.
                    unsafe {
                        let a = std::arch::x86_64::_mm512_loadu_si512(lanes.as_ptr().cast());
                        x86::plain_codes_in_runs(&p, a, got.as_mut_ptr(), runs);
                        x86::codes_from_sums_in_runs(&p, a, want.as_mut_ptr(), runs);
                    }
                    assert_eq!(got, want, "{factor} {bias} {relu:?} {sum:?} runs {k}");
                }
            }
        }
        let summed = RowParams {
            sum: Some(1.0),
            ..RowParams::unit(IntType::U8)
        };
        assert!(summed.plain_u8());
        let not_plain = [
            RowParams {
                ty: IntType::S8,
                ..summed
            },
            RowParams {
                relu: Some(-0.1),
                ..summed
            },
            RowParams {
                then: Some(0.5),
                ..summed
            },
        ];
        assert!(not_plain.iter().all(|p| !p.plain_u8()));
    }

    #[test]
    fn rows_skip_the_extra_columns_of_the_grid() {
        let p = RowParams::unit(IntType::U8);
        // Three rows of 5 from a grid of width 7: columns 5 and 6 dropped.
        let acc: Vec<i32> = (0..19).collect();
        let mut got = [0u8; 15];
        if rows_u8(&p, &acc, (5, 7), &mut got) {
            let want: Vec<u8> = [0..5, 7..12, 14..19]
                .into_iter()
                .flatten()
                .map(|v| v as u8)
                .collect();
            assert_eq!(got.to_vec(), want);
        }
        // A grid too short for the rows is refused.
        assert!(!rows_u8(&p, &acc[..18], (5, 7), &mut got));
    }

    #[test]
    fn the_vectorized_conversions_equal_the_scalar_definitions() {
        let src: Vec<u8> = (0..=255).chain(0..37).map(|i| i as u8).collect();
        let x: Vec<f32> = (0..293).map(|i| (i as f32 - 140.0) * 0.173).collect();
        for (from, to) in [
            (IntType::U8, IntType::U8),
            (IntType::S8, IntType::U8),
            (IntType::U8, IntType::S8),
            (IntType::S8, IntType::S8),
        ] {
            let (s_from, s_to) = (3.7f32, 2.25f32);
            let mut got = vec![0u8; src.len()];
            if !bytes(&src, from, to, s_to / s_from, &mut got) {
                eprintln!("no AVX-512 here: the scalar definition is used");
                return;
            }
            let want: Vec<u8> = src
                .iter()
                .map(|&b| {
                    let q = quant::requantize(quant::decode(b, from), s_from, s_to, to);
                    quant::encode(q, to)
                })
                .collect();
            assert_eq!(got, want, "{from:?} -> {to:?}");
            let mut got = vec![0u8; x.len()];
            assert!(quantize(&x, 5.5, to, &mut got));
            let want: Vec<u8> = x
                .iter()
                .map(|&v| quant::encode(quant::quantize(v, 5.5, to), to))
                .collect();
            assert_eq!(got, want, "{to:?}");
            let mut values = vec![0f32; src.len()];
            assert!(dequantize(&src, from, s_from, &mut values));
            for (&b, &v) in src.iter().zip(&values) {
                let want = quant::dequantize(quant::decode(b, from), s_from);
                assert_eq!(v.to_bits(), want.to_bits(), "{from:?} byte {b}");
            }
        }
    }
}
