//! The f32 micro-kernels behind `PackedA`: one 8-row panel of packed weights times an NR-column strip of
//! a matrix given by its rows (`Rows`), written to an 8×NR block of the output. AVX-512 (NR = 32) and AVX2+FMA (NR = 8)
//! kernels are chosen at run time; a portable kernel runs everywhere else.
//!
//! This is the crate's one place of `unsafe`: SIMD intrinsics need raw pointers and a CPU-feature
//! promise. The safe `run` checks every bound once before calling a kernel, so the kernels' pointer
//! arithmetic stays inside the slices it was given.
#![allow(unsafe_code)]

use super::Rows;

/// Rows of a packed weight panel (output channels computed together).
pub const MR: usize = 8;

/// The instruction set the kernels use, detected once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2Fma,
    Portable,
}

impl Isa {
    /// The best one this CPU has.
    pub fn detect() -> Self {
        [Self::Avx512, Self::Avx2Fma]
            .into_iter()
            .find(|i| i.available())
            .unwrap_or(Self::Portable)
    }

    /// Columns of one kernel call.
    pub fn nr(self) -> usize {
        match self {
            Self::Avx512 => 32,
            Self::Avx2Fma | Self::Portable => 8,
        }
    }

    /// Whether this CPU can run kernels of this instruction set.
    pub fn available(self) -> bool {
        match self {
            Self::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Self::Avx2Fma => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

/// What a kernel call does besides the products: add them to what `c` holds (a later block of
/// depth), and on the last block add a bias per row and apply ReLU, while the block is in registers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Finish<'a> {
    pub add: bool,
    /// MR values, one per row of the panel.
    pub bias: Option<&'a [f32]>,
    pub relu: bool,
}

/// `c[i][j] = Σ_p a[p][i] · b[p][col0 + j]` for i < MR, j < nr: `a` is one packed panel (k × MR, row p
/// holds the MR weights of depth p), `b` the k rows, `c` has rows of stride `ldc`.
pub fn run(isa: Isa, a: &[f32], b: &Rows, col0: usize, c: &mut [f32], ldc: usize, f: Finish) {
    let (k, nr) = (b.starts.len(), isa.nr());
    let c_needed = (MR - 1) * ldc + nr;
    let b_in_bounds = k == 0 || b.max_start + col0 + nr <= b.data.len();
    let bias_in_bounds = f.bias.is_none_or(|v| v.len() >= MR);
    if a.len() < k * MR || !b_in_bounds || !bias_in_bounds || c.len() < c_needed || !isa.available()
    {
        unreachable!("gemm kernel called out of bounds (k {k}, ldc {ldc})");
    }
    let bias = f.bias.map_or(std::ptr::null(), <[f32]>::as_ptr);
    match isa {
        // SAFETY: the CPU has the feature (checked above) and every pointer the kernel forms is within
        // the bounds just checked: a[p*MR + i], b.data[b.starts[p] + col0 + j] (every start is at most
        // max_start), c[i*ldc + j] and bias[i] (when not null), for p < k, i < MR, j < nr.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe {
            let b0 = b.data.as_ptr().add(col0);
            x86::avx512(
                a.as_ptr(),
                b0,
                b.starts,
                (c.as_mut_ptr(), ldc),
                (f.add, bias, f.relu),
            );
        },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => unsafe {
            let b0 = b.data.as_ptr().add(col0);
            x86::avx2(
                a.as_ptr(),
                b0,
                b.starts,
                (c.as_mut_ptr(), ldc),
                (f.add, bias, f.relu),
            );
        },
        _ => portable(a, b, col0, c, ldc, f),
    }
}

fn portable(a: &[f32], b: &Rows, col0: usize, c: &mut [f32], ldc: usize, f: Finish) {
    const NR: usize = 8;
    let mut acc = [[0.0f32; NR]; MR];
    if f.add {
        for (i, row) in acc.iter_mut().enumerate() {
            row.copy_from_slice(&c[i * ldc..i * ldc + NR]);
        }
    }
    for (p, &s) in b.starts.iter().enumerate() {
        let ap = &a[p * MR..p * MR + MR];
        let bp = &b.data[s + col0..s + col0 + NR];
        for (row, &av) in acc.iter_mut().zip(ap) {
            for (o, &bv) in row.iter_mut().zip(bp) {
                *o = av.mul_add(bv, *o);
            }
        }
    }
    for (i, row) in acc.iter_mut().enumerate() {
        if let Some(bias) = f.bias {
            row.iter_mut().for_each(|v| *v += bias[i]);
        }
        if f.relu {
            row.iter_mut()
                .for_each(|v| *v = if *v < 0.0 { 0.0 } else { *v });
        }
        c[i * ldc..i * ldc + NR].copy_from_slice(row);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::MR;

    /// 8 × 32: sixteen zmm accumulators, two loads of `b` and eight broadcasts of `a` per depth step.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512(
        a: *const f32,
        b: *const f32,
        starts: &[usize],
        (c, ldc): (*mut f32, usize),
        (add, bias, relu): (bool, *const f32, bool),
    ) {
        let mut lo = [_mm512_setzero_ps(); MR];
        let mut hi = [_mm512_setzero_ps(); MR];
        // SAFETY (every block below): `run` checked the bounds of a, b, c and bias for these offsets.
        if add {
            for i in 0..MR {
                unsafe {
                    lo[i] = _mm512_loadu_ps(c.add(i * ldc));
                    hi[i] = _mm512_loadu_ps(c.add(i * ldc + 16));
                }
            }
        }
        for (p, &s) in starts.iter().enumerate() {
            let (b0, b1, ap) = unsafe {
                let row = b.add(s);
                (
                    _mm512_loadu_ps(row),
                    _mm512_loadu_ps(row.add(16)),
                    a.add(p * MR),
                )
            };
            for i in 0..MR {
                let av = _mm512_set1_ps(unsafe { *ap.add(i) });
                lo[i] = _mm512_fmadd_ps(av, b0, lo[i]);
                hi[i] = _mm512_fmadd_ps(av, b1, hi[i]);
            }
        }
        for i in 0..MR {
            if !bias.is_null() {
                let v = _mm512_set1_ps(unsafe { *bias.add(i) });
                lo[i] = _mm512_add_ps(lo[i], v);
                hi[i] = _mm512_add_ps(hi[i], v);
            }
            // Caffe's ReLU, `x < 0 ? 0 : x`: max returns its second operand for NaN and for ±0.
            if relu {
                lo[i] = _mm512_max_ps(_mm512_setzero_ps(), lo[i]);
                hi[i] = _mm512_max_ps(_mm512_setzero_ps(), hi[i]);
            }
            unsafe {
                _mm512_storeu_ps(c.add(i * ldc), lo[i]);
                _mm512_storeu_ps(c.add(i * ldc + 16), hi[i]);
            }
        }
    }

    /// 4 × 4 dot products over the first k - k % 16 elements: sixteen zmm accumulators, eight loads
    /// per sixteen multiply-adds, reduced across lanes at the end.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dots_avx512(
        x: [*const f32; super::DOT],
        w: [*const f32; super::DOT],
        k: usize,
        out: &mut [[f32; super::DOT]; super::DOT],
    ) {
        let mut acc = [[_mm512_setzero_ps(); super::DOT]; super::DOT];
        for p in (0..k - k % 16).step_by(16) {
            // SAFETY: `dots` checked that every row has k elements, and p + 16 <= k here.
            let xv = x.map(|r| unsafe { _mm512_loadu_ps(r.add(p)) });
            let wv = w.map(|r| unsafe { _mm512_loadu_ps(r.add(p)) });
            for (row, &xi) in acc.iter_mut().zip(&xv) {
                for (a, &wj) in row.iter_mut().zip(&wv) {
                    *a = _mm512_fmadd_ps(xi, wj, *a);
                }
            }
        }
        for (o, a) in out.iter_mut().zip(&acc) {
            for (v, &s) in o.iter_mut().zip(a) {
                *v = _mm512_reduce_add_ps(s);
            }
        }
    }

    /// 8 × 8: eight ymm accumulators, one load of `b` and eight broadcasts of `a` per depth step.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2(
        a: *const f32,
        b: *const f32,
        starts: &[usize],
        (c, ldc): (*mut f32, usize),
        (add, bias, relu): (bool, *const f32, bool),
    ) {
        let mut acc = [_mm256_setzero_ps(); MR];
        // SAFETY (every block below): `run` checked the bounds of a, b, c and bias for these offsets.
        if add {
            for (i, o) in acc.iter_mut().enumerate() {
                *o = unsafe { _mm256_loadu_ps(c.add(i * ldc)) };
            }
        }
        for (p, &s) in starts.iter().enumerate() {
            let (bv, ap) = unsafe { (_mm256_loadu_ps(b.add(s)), a.add(p * MR)) };
            for (i, o) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_ps(unsafe { *ap.add(i) });
                *o = _mm256_fmadd_ps(av, bv, *o);
            }
        }
        for (i, o) in acc.iter_mut().enumerate() {
            if !bias.is_null() {
                *o = _mm256_add_ps(*o, _mm256_set1_ps(unsafe { *bias.add(i) }));
            }
            if relu {
                *o = _mm256_max_ps(_mm256_setzero_ps(), *o);
            }
            unsafe { _mm256_storeu_ps(c.add(i * ldc), *o) };
        }
    }
}

/// Rows and columns of one `dots` tile.
pub const DOT: usize = 4;

/// The DOT×DOT dot products of rows `x[i]` and `w[j]` (all of length k) into `out[i][j]`: InnerProduct
/// with both operands read along their contiguous rows, so the weights need no packing.
pub fn dots(isa: Isa, x: [&[f32]; DOT], w: [&[f32]; DOT], out: &mut [[f32; DOT]; DOT]) {
    let k = x[0].len();
    if x.iter().chain(&w).any(|r| r.len() != k) || !isa.available() {
        unreachable!("dot rows of different lengths");
    }
    let body = match isa {
        // SAFETY: the CPU has the feature (checked above) and the kernel reads elements below
        // k - k % 16 of rows that all have length k (checked above).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe {
            x86::dots_avx512(x.map(<[f32]>::as_ptr), w.map(<[f32]>::as_ptr), k, out);
            k - k % 16
        },
        _ => {
            *out = [[0.0; DOT]; DOT];
            0
        }
    };
    // The rest of each row (all of it without AVX-512).
    for (i, xr) in x.iter().enumerate() {
        for (j, wr) in w.iter().enumerate() {
            let tail: f32 = xr[body..].iter().zip(&wr[body..]).map(|(a, b)| a * b).sum();
            out[i][j] += tail;
        }
    }
}
