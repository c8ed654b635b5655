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
    /// The phases some tap reads: bit r of rows (row phase r), bit s of columns; the others are
    /// left as filled (a 1×1 stride-2 convolution reads one phase of four).
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

    /// Writes a plane's phases into `out` (one channel's length, filled with the padding value
    /// beforehand); phases no tap reads are left as filled. The row and column arithmetic is
    /// incremental: a division per row cost more than copying the short rows of small maps.
    pub fn split<T: Copy>(&self, plane: &[T], w: usize, out: &mut [T]) {
        let ([sy, sx], [py, px], (hq, wq)) = (self.stride, self.pad, (self.hq, self.wq));
        let reads = |mask: u64, phase: usize| phase >= 64 || mask >> phase & 1 == 1;
        let rows = || {
            let at = row_phases(py, sy);
            plane
                .chunks_exact(w.max(1))
                .zip(at)
                .filter(|(_, (ry, _))| reads(self.read[0], *ry))
        };
        if sx == 1 {
            for (row, (ry, qy)) in rows() {
                let dst = (ry * hq + qy) * wq + px;
                copy_short(&mut out[dst..dst + w], row);
            }
        } else if sx == 2 && self.read[1] == 0b11 {
            for (row, (ry, qy)) in rows() {
                pairs(row, px, &mut out[(ry * 2 * hq + qy) * wq..], hq * wq);
            }
        } else {
            // Padded column xp = x + px goes to phase xp % sx at xp / sx: per phase, a strided run
            // (the same columns of every row).
            for phase in (0..sx).filter(|&p| reads(self.read[1], p)) {
                let x0 = (phase + sx - px % sx) % sx;
                let (col, n) = ((x0 + px) / sx, w.saturating_sub(x0).div_ceil(sx));
                for (row, (ry, qy)) in rows() {
                    let dst = ((ry * sx + phase) * hq + qy) * wq + col;
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

/// One row into its two column phases (stride 2): padded column xp = x + px goes to phase xp % 2 at
/// xp / 2 (phase 1 starts `phase_len` after phase 0 in `out`), one pair of columns at a time.
fn pairs<T: Copy>(row: &[T], px: usize, out: &mut [T], phase_len: usize) {
    let (even, odd) = out.split_at_mut(phase_len);
    // A first column at an odd padded position goes alone; then pairs (even, odd) from there.
    let first = px % 2;
    if let (1, Some(&v)) = (first, row.first()) {
        odd[px / 2] = v;
    }
    let at = (first + px) / 2;
    let rest = row.get(first..).unwrap_or_default();
    let pairs = rest.chunks_exact(2);
    let (n, last) = (pairs.len(), pairs.remainder().first().copied());
    for ((e, o), p) in even[at..at + n]
        .iter_mut()
        .zip(&mut odd[at..at + n])
        .zip(pairs)
    {
        *e = p[0];
        *o = p[1];
    }
    if let Some(v) = last {
        even[at + n] = v;
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
