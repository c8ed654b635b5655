//! A zero-padded image plane split into its stride phases, so that a convolution tap over all outputs
//! reads one contiguous run (shared by the FP32 and INT8 convolutions and the depthwise loops).

use super::conv::Geometry;

/// A zero-padded plane split into its stride phases: phase (r, s) holds the padded rows ≡ r (mod the
/// vertical stride) and columns ≡ s (mod the horizontal stride), each phase hq × wq. Tap (ky, kx) of
/// output (oy, ox) then reads one phase at (oy + ky·dy / sy, ox + kx·dx / sx): the same phase at a fixed
/// shift for every output, so a tap over all outputs is one contiguous run, on a grid of width wq
/// (the columns past ow are computed and dropped).
#[derive(Debug, Clone, Copy)]
pub struct PhaseGrid {
    pub hq: usize,
    pub wq: usize,
    stride: [usize; 2],
    pad: [usize; 2],
    dilation: [usize; 2],
    /// The phases some tap reads: bit r of rows (row phase r), bit s of columns; rows of the others
    /// are left as filled (a 1×1 stride-2 convolution reads one phase of four; at a column stride
    /// of 2 both column phases of a row read are written, one deinterleave being faster than a
    /// strided copy of half the row).
    read: [u64; 2],
}

impl PhaseGrid {
    pub fn new(g: &Geometry, [h, w]: [usize; 2]) -> Self {
        let (oh, ow) = g.out_size(h, w);
        let ([sy, sx], [dy, dx], [py, px]) = (g.stride, g.dilation, g.pad);
        // Large enough for the padded plane and for the furthest tap of the last output.
        let hq = (h + 2 * py)
            .div_ceil(sy)
            .max(oh + (g.kernel[0] - 1) * dy / sy);
        let wq = (w + 2 * px)
            .div_ceil(sx)
            .max(ow + (g.kernel[1] - 1) * dx / sx);
        let read = |k: usize, d: usize, s: usize| -> u64 {
            (0..k).fold(0, |m, t| {
                m | 1u64.checked_shl(((t * d) % s) as u32).unwrap_or(0)
            })
        };
        let all = |s: usize| s > 64;
        let read = [
            if all(sy) {
                u64::MAX
            } else {
                read(g.kernel[0], dy, sy)
            },
            if all(sx) {
                u64::MAX
            } else {
                read(g.kernel[1], dx, sx)
            },
        ];
        Self {
            hq,
            wq,
            stride: g.stride,
            pad: g.pad,
            dilation: g.dilation,
            read,
        }
    }

    /// Floats of one channel's phases.
    pub fn channel_len(&self) -> usize {
        self.stride[0] * self.stride[1] * self.hq * self.wq
    }

    /// Where tap (ky, kx) of output (0, 0) reads, within one channel's phases.
    pub fn tap(&self, ky: usize, kx: usize) -> usize {
        let ([sy, sx], [dy, dx]) = (self.stride, self.dilation);
        let (ty, tx) = (ky * dy, kx * dx);
        ((ty % sy) * sx + tx % sx) * self.hq * self.wq + (ty / sy) * self.wq + tx / sx
    }

    /// `tap` of every kernel position, row by row, into `out` (replacing what it held).
    pub fn taps(&self, [kh, kw]: [usize; 2], out: &mut Vec<usize>) {
        out.clear();
        out.extend((0..kh).flat_map(|ky| (0..kw).map(move |kx| self.tap(ky, kx))));
    }

    /// Where each row of a plane `h` rows high goes in one channel's phases: the start of its
    /// padded row in column phase 0, or None for a row phase no tap reads. Incremental: a division
    /// per row cost more than copying the short rows of small maps.
    pub fn plane_rows(&self, h: usize) -> impl Iterator<Item = Option<usize>> + use<> {
        let ([sy, sx], py, (hq, wq), read) =
            (self.stride, self.pad[0], (self.hq, self.wq), self.read[0]);
        row_phases(py, sy)
            .take(h)
            .map(move |(ry, qy)| reads(read, ry).then_some((ry * sx * hq + qy) * wq))
    }

    /// The horizontal stride: 1 or 2 for `columns`.
    pub fn column_stride(&self) -> usize {
        self.stride[1]
    }

    /// Where a row's columns start from its `plane_rows` offset: at a column stride of 1 all of
    /// them from the first (twice); at 2 its even and its odd columns (padded column xp = x + px is
    /// column xp / 2 of phase xp % 2).
    pub fn columns(&self) -> [usize; 2] {
        let (px, len) = (self.pad[1], self.hq * self.wq);
        match self.stride[1] {
            1 => [px; 2],
            _ => [
                (px % 2) * len + px / 2,
                ((px + 1) % 2) * len + px.div_ceil(2),
            ],
        }
    }

    /// At a column stride of 1 (else nothing): `row(r, dst)` fills row r of an h × w plane in its
    /// place in one channel's phases (`split` of a plane made row by row), for the rows some tap
    /// reads; the rest is left as filled.
    pub fn place_rows<T>(
        &self,
        [h, w]: [usize; 2],
        out: &mut [T],
        mut row: impl FnMut(usize, &mut [T]),
    ) {
        let first = self.columns()[0];
        if self.stride[1] != 1 {
            return;
        }
        for (r, at) in self.plane_rows(h).enumerate() {
            if let Some(at) = at {
                row(r, &mut out[at + first..at + first + w]);
            }
        }
    }

    /// Writes a plane's phases into `out` (one channel's length, filled with the padding value
    /// beforehand); row phases no tap reads are left as filled.
    pub fn split<T: Element>(&self, plane: &[T], w: usize, out: &mut [T]) {
        let (sx, w) = (self.stride[1], w.max(1));
        let rows = || {
            plane
                .chunks_exact(w)
                .zip(self.plane_rows(plane.len() / w))
                .filter_map(|(row, at)| Some((row, at?)))
        };
        let [first, second] = self.columns();
        match sx {
            1 => rows().for_each(|(row, at)| copy_short(&mut out[at + first..][..row.len()], row)),
            2 => {
                let (evens, odds) = (w.div_ceil(2), w / 2);
                for (row, at) in rows() {
                    // The even columns' phase and the odd columns' phase, in either order.
                    let (lo, hi) = (first.min(second), first.max(second));
                    let (a, b) = out.split_at_mut(at + hi);
                    let (low, high) = (&mut a[at + lo..], b);
                    let (e, o) = if first < second {
                        (&mut low[..evens], &mut high[..odds])
                    } else {
                        (&mut high[..evens], &mut low[..odds])
                    };
                    T::deinterleave(row, e, o);
                }
            }
            _ => {
                // Padded column xp = x + px goes to phase xp % sx at xp / sx: per phase, a strided
                // run (the same columns of every row).
                let px = self.pad[1];
                for phase in (0..sx).filter(|&p| reads(self.read[1], p)) {
                    let x0 = (phase + sx - px % sx) % sx;
                    let (col, n) = ((x0 + px) / sx, w.saturating_sub(x0).div_ceil(sx));
                    for (row, at) in rows() {
                        let dst = at + phase * self.hq * self.wq + col;
                        let taps = row.iter().skip(x0).step_by(sx);
                        out[dst..dst + n]
                            .iter_mut()
                            .zip(taps)
                            .for_each(|(d, &v)| *d = v);
                    }
                }
            }
        }
    }
}

/// Whether bit `phase` of a `PhaseGrid::read` mask is set (phases past 64 are all read).
fn reads(mask: u64, phase: usize) -> bool {
    phase >= 64 || mask >> phase & 1 == 1
}

/// (Row phase, row within it) of padded rows pad, pad + 1, …: row yp is row yp / stride of phase
/// yp % stride, counted without a division per row.
fn row_phases(pad: usize, stride: usize) -> impl Iterator<Item = (usize, usize)> + Clone {
    let first = (pad % stride.max(1), pad / stride.max(1));
    std::iter::successors(Some(first), move |&(r, q)| {
        Some(if r + 1 >= stride {
            (0, q + 1)
        } else {
            (r + 1, q)
        })
    })
}

/// A plane's element, with its fastest split of a row into even and odd columns.
pub trait Element: Copy {
    /// `even[i] = row[2i]` and `odd[i] = row[2i + 1]`, for the columns `row` holds (`even` holds
    /// ⌈len/2⌉ values, `odd` ⌊len/2⌋).
    fn deinterleave(row: &[Self], even: &mut [Self], odd: &mut [Self]);

    /// `even[i] = row[2i]` for the even columns `even` has room for.
    fn evens(row: &[Self], even: &mut [Self]) {
        even.iter_mut()
            .zip(row.iter().step_by(2))
            .for_each(|(e, &v)| *e = v);
    }
}

/// The samples a 1×1 kernel without padding reads at a stride: rows 0, sy, 2·sy, … of an h × w
/// plane and columns 0, sx, … of each, as the rows of an oh × ow plane in `out`.
pub fn subsample<T: Element>(
    plane: &[T],
    w: usize,
    [sy, sx]: [usize; 2],
    ow: usize,
    out: &mut [T],
) {
    let rows = plane.chunks(w.max(1)).step_by(sy.max(1));
    for (row, dst) in rows.zip(out.chunks_exact_mut(ow.max(1))) {
        match sx {
            1 => copy_short(dst, &row[..ow.min(row.len())]),
            2 => T::evens(row, dst),
            _ => dst
                .iter_mut()
                .zip(row.iter().step_by(sx.max(1)))
                .for_each(|(d, &v)| *d = v),
        }
    }
}

fn deinterleave_scalar<T: Copy>(row: &[T], even: &mut [T], odd: &mut [T]) {
    let pairs = row.chunks_exact(2);
    let (n, last) = (pairs.len(), pairs.remainder().first().copied());
    for ((e, o), p) in even.iter_mut().zip(odd.iter_mut()).zip(pairs) {
        *e = p[0];
        *o = p[1];
    }
    if let Some(v) = last {
        even[n] = v;
    }
}

impl Element for u8 {
    fn deinterleave(row: &[u8], even: &mut [u8], odd: &mut [u8]) {
        // 32 bytes at a time, then 16 (the rows of 16-wide maps).
        let whole = row.len() / 16 * 16;
        #[cfg(target_arch = "x86_64")]
        for at in (0..whole).step_by(32) {
            let n = (whole - at).min(32);
            let (e, o) = (
                &mut even[at / 2..at / 2 + n / 2],
                &mut odd[at / 2..at / 2 + n / 2],
            );
            x86::deinterleave(&row[at..at + n], e, o);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let whole = 0;
        deinterleave_scalar(&row[whole..], &mut even[whole / 2..], &mut odd[whole / 2..]);
    }

    fn evens(row: &[u8], even: &mut [u8]) {
        // 32 bytes to 16 at a time, then 16 to 8, within both slices.
        let whole = (row.len() / 16).min(even.len() / 8) * 16;
        #[cfg(target_arch = "x86_64")]
        for at in (0..whole).step_by(32) {
            let n = (whole - at).min(32);
            x86::evens(&row[at..at + n], &mut even[at / 2..at / 2 + n / 2]);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let whole = 0;
        let rest = even[whole / 2..].iter_mut();
        rest.zip(row[whole..].iter().step_by(2))
            .for_each(|(e, &v)| *e = v);
    }
}

impl Element for f32 {
    fn deinterleave(row: &[f32], even: &mut [f32], odd: &mut [f32]) {
        let whole = row.len() / 8 * 8;
        #[cfg(target_arch = "x86_64")]
        for at in (0..whole).step_by(8) {
            let (e, o) = (&mut even[at / 2..at / 2 + 4], &mut odd[at / 2..at / 2 + 4]);
            x86::deinterleave_8(&row[at..at + 8], e, o);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let whole = 0;
        deinterleave_scalar(&row[whole..], &mut even[whole / 2..], &mut odd[whole / 2..]);
    }
}

/// SSE2 deinterleaves (part of every x86-64 CPU, so no run-time check).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use std::arch::x86_64::*;

    /// 32 or 16 bytes into their even and odd bytes: the even bytes are the low halves of the
    /// 16-bit lanes, the odd ones the high halves, each packed back to bytes (no saturation: ≤ 255).
    pub fn deinterleave(row: &[u8], even: &mut [u8], odd: &mut [u8]) {
        let n = row.len();
        assert!((n == 32 || n == 16) && even.len() == n / 2 && odd.len() == n / 2);
        // SAFETY: SSE2 is baseline on x86-64; n bytes are read from `row`, n/2 written to each of
        // `even` and `odd` (asserted above).
        unsafe {
            let a = _mm_loadu_si128(row.as_ptr().cast());
            let b = if n == 32 {
                _mm_loadu_si128(row.as_ptr().add(16).cast())
            } else {
                _mm_setzero_si128()
            };
            let low = _mm_set1_epi16(0xff);
            let e = _mm_packus_epi16(_mm_and_si128(a, low), _mm_and_si128(b, low));
            let o = _mm_packus_epi16(_mm_srli_epi16(a, 8), _mm_srli_epi16(b, 8));
            if n == 32 {
                _mm_storeu_si128(even.as_mut_ptr().cast(), e);
                _mm_storeu_si128(odd.as_mut_ptr().cast(), o);
            } else {
                _mm_storel_epi64(even.as_mut_ptr().cast(), e);
                _mm_storel_epi64(odd.as_mut_ptr().cast(), o);
            }
        }
    }

    /// 32 or 16 bytes into their 16 or 8 even bytes (the low halves of the 16-bit lanes, packed).
    pub fn evens(row: &[u8], even: &mut [u8]) {
        let n = row.len();
        assert!((n == 32 || n == 16) && even.len() == n / 2);
        // SAFETY: SSE2 is baseline on x86-64; n bytes are read, n/2 written (asserted above).
        unsafe {
            let low = _mm_set1_epi16(0xff);
            let a = _mm_and_si128(_mm_loadu_si128(row.as_ptr().cast()), low);
            if n == 32 {
                let b = _mm_and_si128(_mm_loadu_si128(row.as_ptr().add(16).cast()), low);
                _mm_storeu_si128(even.as_mut_ptr().cast(), _mm_packus_epi16(a, b));
            } else {
                let e = _mm_packus_epi16(a, _mm_setzero_si128());
                _mm_storel_epi64(even.as_mut_ptr().cast(), e);
            }
        }
    }

    /// 8 floats into their 4 even and 4 odd ones (bit patterns moved, not computed on).
    pub fn deinterleave_8(row: &[f32], even: &mut [f32], odd: &mut [f32]) {
        assert!(row.len() == 8 && even.len() == 4 && odd.len() == 4);
        // SAFETY: SSE is baseline on x86-64; 8 floats are read from `row`, 4 written to each of
        // `even` and `odd` (asserted above).
        unsafe {
            let (a, b) = (
                _mm_loadu_ps(row.as_ptr()),
                _mm_loadu_ps(row.as_ptr().add(4)),
            );
            _mm_storeu_ps(even.as_mut_ptr(), _mm_shuffle_ps::<0b10_00_10_00>(a, b));
            _mm_storeu_ps(odd.as_mut_ptr(), _mm_shuffle_ps::<0b11_01_11_01>(a, b));
        }
    }
}

/// `dst.copy_from_slice(src)` for the short rows of small images, in fixed-size pieces the compiler
/// copies inline: a library call per row cost as much as copying it.
fn copy_short<T: Copy>(dst: &mut [T], src: &[T]) {
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (a, b) in (&mut d).zip(&mut s) {
        let b: &[T; 8] = b.try_into().unwrap_or_else(|_| unreachable!());
        a.copy_from_slice(b);
    }
    for (a, &b) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *a = b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Phase (r, s) at (qy, qx) is padded pixel (qy·sy + r, qx·sx + s): the definition, for kernels
    /// that read every phase, over widths around the vector lengths and odd and even paddings.
    fn split_is_the_definition<T: Element + PartialEq + std::fmt::Debug>(value: fn(usize) -> T) {
        let fill = value(usize::MAX);
        for (stride, pad, w) in [
            (1, 1, 5),
            (2, 0, 31),
            (2, 1, 32),
            (2, 1, 33),
            (2, 1, 16),
            (2, 0, 49),
            (2, 2, 70),
            (2, 0, 64),
            (3, 1, 35),
        ] {
            let h = 4;
            let g = Geometry {
                kernel: [3, 3],
                stride: [stride; 2],
                pad: [pad; 2],
                dilation: [1, 1],
                group: 1,
            };
            let grid = PhaseGrid::new(&g, [h, w]);
            let plane: Vec<T> = (0..h * w).map(value).collect();
            let mut out = vec![fill; grid.channel_len()];
            grid.split(&plane, w, &mut out);
            let (hq, wq) = (grid.hq, grid.wq);
            for (i, &got) in out.iter().enumerate() {
                let (phase, at) = (i / (hq * wq), i % (hq * wq));
                let (yp, xp) = (
                    at / wq * stride + phase / stride,
                    at % wq * stride + phase % stride,
                );
                let inside = (pad..pad + h).contains(&yp) && (pad..pad + w).contains(&xp);
                let want = if inside {
                    plane[(yp - pad) * w + xp - pad]
                } else {
                    fill
                };
                assert_eq!(
                    got, want,
                    "stride {stride} pad {pad} width {w}: phase {phase} at {at}"
                );
            }
        }
    }

    #[test]
    fn split_of_bytes_is_the_definition() {
        split_is_the_definition(|i| {
            if i == usize::MAX {
                0
            } else {
                (i % 251 + 1) as u8
            }
        });
    }

    #[test]
    fn subsample_takes_every_strided_sample() {
        for (h, w, sy, sx) in [
            (5, 33, 2, 2),
            (3, 16, 2, 2),
            (3, 48, 2, 2),
            (4, 64, 2, 2),
            (7, 70, 3, 2),
            (6, 17, 2, 3),
            (3, 9, 1, 1),
        ] {
            let (oh, ow) = ((h - 1) / sy + 1, (w - 1) / sx + 1);
            let plane: Vec<u8> = (0..h * w).map(|i| (i % 253) as u8).collect();
            let mut out = vec![255u8; oh * ow];
            subsample(&plane, w, [sy, sx], ow, &mut out);
            for (i, &got) in out.iter().enumerate() {
                assert_eq!(
                    got,
                    plane[i / ow * sy * w + i % ow * sx],
                    "{h}×{w} stride {sy},{sx}"
                );
            }
        }
    }

    #[test]
    fn rows_placed_one_by_one_are_the_split() {
        for (stride, pad, kernel) in [(1, 1, 3), (1, 0, 3), (1, 2, 5), (2, 1, 3)] {
            let g = Geometry {
                kernel: [kernel, kernel],
                stride: [stride, 1],
                pad: [pad; 2],
                dilation: [1, 1],
                group: 1,
            };
            let (h, w) = (6, 9);
            let grid = PhaseGrid::new(&g, [h, w]);
            let plane: Vec<f32> = (0..h * w).map(|i| i as f32 + 1.0).collect();
            let (mut split, mut placed) =
                (vec![0.0; grid.channel_len()], vec![0.0; grid.channel_len()]);
            grid.split(&plane, w, &mut split);
            grid.place_rows([h, w], &mut placed, |r, row| {
                row.copy_from_slice(&plane[r * w..(r + 1) * w])
            });
            assert_eq!(placed, split, "stride {stride} pad {pad}");
        }
    }

    #[test]
    fn split_of_floats_is_the_definition() {
        split_is_the_definition(|i| if i == usize::MAX { 0.0 } else { i as f32 + 0.5 });
    }
}
