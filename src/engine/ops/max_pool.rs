//! MAX pooling of a plane with AVX-512, for FP32 values and for INT8 codes (bytes; BW and VBMI). Per
//! output row, the window rows' maximum a vector at a time into a row with a border of the lowest
//! value; then a vector of outputs' window columns at once: one load per kernel column at that
//! column's offset, the loads' maximum, and every stride-th lane of it gathered by one permutation.
//! The border stands for the window clipped to the image (as Caffe clips it): every value is above
//! it (bytes order as their codes do; FP32 values are at least −FLT_MAX, Caffe's start). FP32 NaNs
//! are skipped as Caffe skips them (`vmaxps` keeps its second operand, the maximum so far). The
//! portable loops in `pool` are the definition; a test compares the two.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::sync::LazyLock;

static AVAILABLE: LazyLock<bool> = LazyLock::new(|| {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vbmi")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
});

/// A pooling's columns: kernel width, stride and left padding.
#[derive(Debug, Clone, Copy)]
pub struct Columns {
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
}

/// A value the kernel pools: its lanes per vector, the border value, and the kernel itself.
pub trait Lanes: Copy + Sized + 'static {
    const LANES: usize;
    const BORDER: Self;

    /// The border row kept across calls on this thread.
    fn with_border<R>(f: impl FnOnce(&mut Vec<Self>) -> R) -> R;

    /// # Safety
    /// The CPU has the features of `AVAILABLE`; `x` holds every window row, `border` every lane
    /// written or read (as `planes` sizes it) and `out` rows.len()·ow values.
    unsafe fn kernel(k: Kernel<Self>);
}

/// One call of the kernel: the plane, its windows, the border row and the outputs.
#[derive(Debug)]
pub struct Kernel<'a, T> {
    x: *const T,
    w: usize,
    rows: &'a [(usize, usize, f32)],
    cols: Columns,
    border: *mut T,
    out: *mut T,
    ow: usize,
}

thread_local! {
    static BORDER_F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static BORDER_U8: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Lanes for f32 {
    const LANES: usize = 16;
    const BORDER: Self = -f32::MAX;

    fn with_border<R>(f: impl FnOnce(&mut Vec<Self>) -> R) -> R {
        BORDER_F32.with_borrow_mut(f)
    }

    unsafe fn kernel(k: Kernel<Self>) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as the caller's.
        unsafe {
            x86::plane_f32(k)
        };
    }
}

impl Lanes for u8 {
    const LANES: usize = 64;
    const BORDER: Self = 0;

    fn with_border<R>(f: impl FnOnce(&mut Vec<Self>) -> R) -> R {
        BORDER_U8.with_borrow_mut(f)
    }

    unsafe fn kernel(k: Kernel<Self>) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as the caller's.
        unsafe {
            x86::plane_u8(k)
        };
    }
}

/// Outputs per vector: every stride-th lane of one vector of bytes, of two vectors of FP32 values.
fn per_vector<T: Lanes>(stride: usize) -> usize {
    let span = if T::LANES == 16 { 32 } else { 64 };
    (span / stride).min(T::LANES)
}

/// Whether a row of bytes and its outputs each fit one vector, every window column read lying in
/// it: the window columns are then taken from the row's register by permutations, with no border
/// row written and read back.
fn in_one_vector(w: usize, ow: usize, cols: Columns) -> bool {
    let reach = (ow - 1) * cols.stride + cols.kernel;
    w <= 64 && ow <= 64 && cols.pad < 64 && cols.stride <= 64 && reach <= 64 + cols.pad
}

/// Whether the kernel runs on this CPU for these columns.
pub fn takes<T: Lanes>(cols: Columns) -> bool {
    *AVAILABLE && (1..=T::LANES).contains(&cols.stride) && cols.kernel > 0
}

/// Pools each h×w plane `x` holds, `len` values apart, into `out` (the planes' outputs one after the
/// other, rows of `out.len() / (planes · rows.len())` outputs), the window rows of output row oy
/// being `rows[oy].0..rows[oy].1`. The checks and the border row are made once for all the planes.
/// False, touching nothing, when the kernel does not take the shape (`takes`, or windows outside a
/// plane).
pub fn planes<T: Lanes>(
    x: &[T],
    (w, len): (usize, usize),
    rows: &[(usize, usize, f32)],
    cols: Columns,
    out: &mut [T],
) -> bool {
    let Columns {
        kernel,
        stride,
        pad,
    } = cols;
    let oh = rows.len();
    let fits = rows.iter().all(|&(hs, he, _)| hs <= he && he * w <= len);
    let count = x.len() / len.max(1);
    if !takes::<T>(cols)
        || oh == 0
        || w == 0
        || !fits
        || count == 0
        || !out.len().is_multiple_of(count)
    {
        return false;
    }
    let ow = out.len() / count / oh;
    let mut each = |border: *mut T| {
        for (x, out) in x.chunks_exact(len).zip(out.chunks_exact_mut(oh * ow)) {
            let k = Kernel {
                x: x.as_ptr(),
                w,
                rows,
                cols,
                border,
                out: out.as_mut_ptr(),
                ow,
            };
            // SAFETY: the features are checked (`takes`); every row read lies in the plane
            // (`fits`), `out` holds oh·ow values, and the border holds every lane written or read
            // (sized below; a row in one vector reads none, `in_one_vector`). Each row rewrites
            // the border lanes it reads before reading them, so one border serves every plane.
            unsafe { T::kernel(k) };
        }
    };
    if T::LANES == 64 && in_one_vector(w, ow, cols) {
        each(std::ptr::null_mut());
        return true;
    }
    // Written: pad + whole vectors; read: two vectors past the last output block's furthest column.
    let per = per_vector::<T>(stride);
    let reads = (ow.div_ceil(per) * per).saturating_sub(1) * stride + kernel + 2 * T::LANES;
    let written = pad + w.div_ceil(T::LANES) * T::LANES;
    T::with_border(|border| {
        border.clear();
        border.resize(written.max(reads), T::BORDER);
        each(border.as_mut_ptr());
    });
    true
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Columns, Kernel, Lanes, per_vector};

    /// The first n of 64 lanes.
    fn first64(n: usize) -> __mmask64 {
        if n >= 64 { !0 } else { (1u64 << n) - 1 }
    }

    /// The first n of 16 lanes.
    fn first16(n: usize) -> __mmask16 {
        if n >= 16 { !0 } else { (1u16 << n) - 1 }
    }

    /// Lane j of the gather takes lane j·stride.
    fn gather(stride: usize, lanes: usize) -> [u8; 64] {
        let mut g = [0u8; 64];
        for (j, v) in g.iter_mut().enumerate().take(lanes) {
            *v = (j * stride) as u8;
        }
        g
    }

    /// Per stride s (up to 64): lane j holds j·s, at most 127 (made once: per plane, the lanes cost
    /// as much as pooling a 16 × 16 plane).
    static STRIDED: [[i8; 64]; 65] = {
        let mut t = [[0i8; 64]; 65];
        let mut s = 0;
        while s < 65 {
            let mut j = 0;
            while j < 64 {
                let v = j * s;
                t[s][j] = if v > 127 { 127 } else { v as i8 };
                j += 1;
            }
            s += 1;
        }
        t
    };

    /// `plane_u8` for rows that fit one vector (`in_one_vector`): per output row the window rows'
    /// maximum in a register, then per kernel column the lanes j·stride + t − pad gathered from it
    /// (lanes outside the row read as zero, the border), and their maximum.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    unsafe fn rows_in_one_vector(k: Kernel<u8>) {
        let Columns {
            kernel,
            stride,
            pad,
        } = k.cols;
        let (row_mask, out_mask) = (first64(k.w), first64(k.ow));
        // Lane j of window column 0 reads lane j·stride − pad (as a signed byte: every read lies
        // within -pad..64, `in_one_vector`; lanes past ow are not stored).
        // SAFETY (all blocks): the caller's `x` holds every window row and `out` oh·ow bytes;
        // `in_one_vector` holds the stride to at most 64.
        let first = unsafe { _mm512_loadu_si512(STRIDED[stride].as_ptr().cast()) };
        let first = _mm512_sub_epi8(first, _mm512_set1_epi8(pad as i8));
        let (zero, width) = (_mm512_setzero_si512(), _mm512_set1_epi8(k.w as i8));
        // Where window column t reads, and which of those lanes lie in the row and are stored.
        let column = |t: usize| {
            let at = _mm512_add_epi8(first, _mm512_set1_epi8(t as i8));
            let inside = _mm512_cmpge_epi8_mask(at, zero) & _mm512_cmplt_epi8_mask(at, width);
            (at, inside & out_mask)
        };
        for (oy, &(hs, he, _)) in k.rows.iter().enumerate() {
            let mut rows = zero;
            for y in hs..he {
                let v = unsafe { _mm512_maskz_loadu_epi8(row_mask, k.x.add(y * k.w).cast()) };
                rows = _mm512_max_epu8(rows, v);
            }
            let acc = (0..kernel).map(column).fold(zero, |acc, (at, inside)| {
                _mm512_max_epu8(acc, _mm512_maskz_permutexvar_epi8(inside, at, rows))
            });
            unsafe { _mm512_mask_storeu_epi8(k.out.add(oy * k.ow).cast(), out_mask, acc) };
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub unsafe fn plane_u8(k: Kernel<u8>) {
        let Columns {
            kernel,
            stride,
            pad,
        } = k.cols;
        if super::in_one_vector(k.w, k.ow, k.cols) {
            // SAFETY: as the caller's.
            unsafe { rows_in_one_vector(k) };
            return;
        }
        let per = per_vector::<u8>(stride);
        let g = gather(stride, per);
        // SAFETY (all blocks): the caller sized every buffer (see `super::planes`).
        let g = unsafe { _mm512_loadu_si512(g.as_ptr().cast()) };
        for (oy, &(hs, he, _)) in k.rows.iter().enumerate() {
            for c in (0..k.w).step_by(64) {
                let m = first64(k.w - c);
                let mut acc = _mm512_setzero_si512();
                for y in hs..he {
                    let v = unsafe { _mm512_maskz_loadu_epi8(m, k.x.add(y * k.w + c).cast()) };
                    acc = _mm512_max_epu8(acc, v);
                }
                unsafe { _mm512_storeu_si512(k.border.add(pad + c).cast(), acc) };
            }
            for ox in (0..k.ow).step_by(per) {
                let mut acc = _mm512_setzero_si512();
                for t in 0..kernel {
                    let v = unsafe { _mm512_loadu_si512(k.border.add(ox * stride + t).cast()) };
                    acc = _mm512_max_epu8(acc, v);
                }
                if stride > 1 {
                    acc = _mm512_permutexvar_epi8(g, acc);
                }
                let m = first64((k.ow - ox).min(per));
                unsafe { _mm512_mask_storeu_epi8(k.out.add(oy * k.ow + ox).cast(), m, acc) };
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn plane_f32(k: Kernel<f32>) {
        let Columns {
            kernel,
            stride,
            pad,
        } = k.cols;
        let per = per_vector::<f32>(stride);
        let g = gather(stride, per).map(i32::from);
        // SAFETY (all blocks): the caller sized every buffer (see `super::planes`).
        let g = unsafe { _mm512_loadu_si512(g.as_ptr().cast()) };
        let lowest = _mm512_set1_ps(<f32 as Lanes>::BORDER);
        // The maximum so far is the second operand: a NaN value is skipped.
        let max = |v: __m512, acc: __m512| _mm512_max_ps(v, acc);
        for (oy, &(hs, he, _)) in k.rows.iter().enumerate() {
            for c in (0..k.w).step_by(16) {
                let m = first16(k.w - c);
                let mut acc = lowest;
                for y in hs..he {
                    acc = max(
                        unsafe { _mm512_mask_loadu_ps(lowest, m, k.x.add(y * k.w + c)) },
                        acc,
                    );
                }
                unsafe { _mm512_storeu_ps(k.border.add(pad + c), acc) };
            }
            for ox in (0..k.ow).step_by(per) {
                let (mut lo, mut hi) = (lowest, lowest);
                for t in 0..kernel {
                    let at = unsafe { k.border.add(ox * stride + t) };
                    lo = max(unsafe { _mm512_loadu_ps(at) }, lo);
                    if stride > 1 {
                        hi = max(unsafe { _mm512_loadu_ps(at.add(16)) }, hi);
                    }
                }
                let v = if stride > 1 {
                    _mm512_permutex2var_ps(lo, g, hi)
                } else {
                    lo
                };
                let m = first16((k.ow - ox).min(per));
                unsafe { _mm512_mask_storeu_ps(k.out.add(oy * k.ow + ox), m, v) };
            }
        }
    }
}
