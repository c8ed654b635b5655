//! Pooling as Caffe computes it: MAX over the window clipped to the input; AVE divides by the window
//! size clipped to the padded input (so padding counts, but not the overhang past it); global pooling
//! covers the whole plane.

use rayon::prelude::*;

use super::codes::{self, Codes};
use super::max_pool::{self, Columns, Lanes};
use crate::engine::quant::{self, IntType};
use crate::model::layer::{Pool, PoolMethod};

/// One axis of a pooling layer's windows, worked out once per plan.
#[derive(Debug, Clone, PartialEq)]
struct Axis {
    /// Per output index: the first and past-the-last input index inside the image, and the divisor
    /// of an average (the window clipped to the padded input, or to the image without `avg_include_pad`).
    windows: Vec<(usize, usize, f32)>,
    /// Per kernel tap: the outputs whose tap falls inside the image, and the input index of the first.
    taps: Vec<(usize, usize, usize)>,
    stride: usize,
    pad: usize,
}

impl Axis {
    fn new(
        len: usize,
        k: usize,
        stride: usize,
        pad: usize,
        outs: usize,
        include_pad: bool,
    ) -> Self {
        let windows = (0..outs)
            .map(|o| {
                let start = (o * stride) as isize - pad as isize;
                let end = (start + k as isize).min((len + pad) as isize);
                let (first, last) = (start.max(0) as usize, end.min(len as isize) as usize);
                let size = if include_pad {
                    (end - start) as f32
                } else {
                    (last - first) as f32
                };
                (first, last, size)
            })
            .collect();
        let taps = (0..k)
            .map(|t| {
                let off = t as isize - pad as isize;
                let first = if off >= 0 {
                    0
                } else {
                    ((-off) as usize).div_ceil(stride).min(outs)
                };
                let end = if (len as isize) <= off {
                    first
                } else {
                    ((len as isize - off) as usize)
                        .div_ceil(stride)
                        .clamp(first, outs)
                };
                (
                    first,
                    end,
                    (first as isize * stride as isize + off).max(0) as usize,
                )
            })
            .collect();
        Self {
            windows,
            taps,
            stride,
            pad,
        }
    }
}

/// A pooling layer's windows at its input size (rows and columns).
#[derive(Debug, Clone, PartialEq)]
pub struct Windows {
    method: PoolMethod,
    rows: Axis,
    cols: Axis,
}

impl Windows {
    pub fn new(p: &Pool, [h, w]: [usize; 2], [oh, ow]: [usize; 2]) -> Result<Self, String> {
        let (kernel, stride, pad) = if p.global {
            ((h, w), (1, 1), (0, 0))
        } else {
            (p.kernel.ok_or("kernel_size is required")?, p.stride, p.pad)
        };
        if p.method == PoolMethod::Stochastic {
            return Err(
                "STOCHASTIC pooling is for training; at TEST Caffe's CPU code does not implement it"
                    .into(),
            );
        }
        let include = p.avg_include_pad;
        Ok(Self {
            method: p.method,
            rows: Axis::new(h, kernel.0, stride.0, pad.0, oh, include),
            cols: Axis::new(w, kernel.1, stride.1, pad.1, ow, include),
        })
    }
}

/// What a pooled line accumulates: FP32 values, or codes (bytes) for a MAX.
trait Lane: Copy + PartialOrd + std::ops::AddAssign + Send + Sync {
    /// The start of a MAX (Caffe's is -FLT_MAX; every byte is at least 0).
    const LOWEST: Self;
    const ZERO: Self;
}

impl Lane for f32 {
    const LOWEST: Self = -f32::MAX;
    const ZERO: Self = 0.0;
}

impl Lane for u8 {
    const LOWEST: Self = 0;
    const ZERO: Self = 0;
}

/// Pools N·C planes of h×w (`x`) into `out`, planes in parallel.
pub fn pooling(win: &Windows, x: &[f32], [h, w]: [usize; 2], out: &mut [f32]) {
    let (oh, ow) = (win.rows.windows.len(), win.cols.windows.len());
    if win.method == PoolMethod::Max {
        if !max_kernel(win, x, [h, w], out) {
            max_pooling(win, x, [h, w], out);
        }
        return;
    }
    if let ([(0, he, hsize)], [(0, we, wsize)]) = (&win.rows.windows[..], &win.cols.windows[..])
        && (*he, *we) == (h, w)
    {
        global_average(x, h * w, hsize * wsize, out);
        return;
    }
    out.par_chunks_mut(oh * ow)
        .zip(x.par_chunks(h * w))
        .for_each(|(o, plane)| {
            for (row, line) in win.rows.windows.iter().zip(o.chunks_mut(ow)) {
                pool_line(win, plane, w, *row, line);
                for (v, &(_, _, wsize)) in line.iter_mut().zip(&win.cols.windows) {
                    *v /= row.2 * wsize;
                }
            }
        });
}

/// Pools N·C planes of FP32 values (`pooling`) and quantizes the results to `to` (`codes::quantize`),
/// a few planes at a time so that the pooled values are quantized while in cache.
pub fn pooling_to_codes(win: &Windows, x: &[f32], [h, w]: [usize; 2], to: Codes, out: &mut [u8]) {
    const PLANES: usize = 16;
    let plane = win.rows.windows.len() * win.cols.windows.len();
    out.par_chunks_mut(PLANES * plane.max(1))
        .zip(x.par_chunks(PLANES * h * w))
        .for_each_init(Vec::new, |pooled: &mut Vec<f32>, (o, x)| {
            pooled.resize(o.len(), 0.0);
            pooling(win, x, [h, w], pooled);
            codes::quantize_run(pooled, to, o);
        });
}

/// Pools planes of INT8 codes (bytes of type `ty`), as MKL-DNN passes them through (spec §4.4): MAX
/// of the bytes (the byte order is the code order), AVE the code sum divided by the window size and
/// rounded to the nearest code.
pub fn pooling_codes(win: &Windows, x: &[u8], [h, w]: [usize; 2], ty: IntType, out: &mut [u8]) {
    let (oh, ow) = (win.rows.windows.len(), win.cols.windows.len());
    if win.method == PoolMethod::Max {
        if !max_kernel(win, x, [h, w], out) {
            max_pooling(win, x, [h, w], out);
        }
        return;
    }
    let zero = f32::from(ty.zero_byte());
    out.par_chunks_mut(oh * ow)
        .zip(x.par_chunks(h * w))
        .for_each_init(Vec::new, |sums: &mut Vec<f32>, (o, plane)| {
            sums.resize(ow, 0.0);
            for (&(hs, he, hsize), line) in win.rows.windows.iter().zip(o.chunks_mut(ow)) {
                pool_line(win, plane, w, (hs, he, hsize), sums);
                for ((d, &s), &(ws, we, wsize)) in
                    line.iter_mut().zip(&*sums).zip(&win.cols.windows)
                {
                    // The bytes' sum less the shift of each tap inside the image: the codes' sum.
                    let codes = s - zero * ((he - hs) * (we - ws)) as f32;
                    *d = quant::encode(quant::round_saturate(codes / (hsize * wsize), ty), ty);
                }
            }
        });
}

/// The whole plane's average (global pooling), eight planes side by side: each plane's sum still
/// takes its values in order, as Caffe's loop does, while eight independent sums hide the latency
/// of each addition (one plane's sum alone waits on every add).
fn global_average(x: &[f32], plane: usize, divisor: f32, out: &mut [f32]) {
    const SIDE: usize = 8;
    out.par_chunks_mut(SIDE)
        .zip(x.par_chunks(SIDE * plane.max(1)))
        .for_each(|(o, planes)| {
            let mut sums = [0.0f32; SIDE];
            let mut rows = planes.chunks_exact(plane.max(1));
            if rows.len() == SIDE {
                let g: [&[f32]; SIDE] = std::array::from_fn(|_| rows.next().unwrap_or_default());
                let [p0, p1, p2, p3, p4, p5, p6, p7] = g.map(<[f32]>::iter);
                let eight = p0.zip(p1).zip(p2).zip(p3).zip(p4).zip(p5).zip(p6).zip(p7);
                for (((((((v0, v1), v2), v3), v4), v5), v6), v7) in eight {
                    for (s, v) in sums.iter_mut().zip([v0, v1, v2, v3, v4, v5, v6, v7]) {
                        *s += v;
                    }
                }
            } else {
                for (s, p) in sums.iter_mut().zip(rows) {
                    *s = p.iter().fold(0.0, |a, &v| a + v);
                }
            }
            for (d, s) in o.iter_mut().zip(sums) {
                *d = s / divisor;
            }
        });
}

/// MAX pooling with the AVX-512 kernel (`max_pool`), planes in parallel; false when it does not
/// apply (global pooling, or a CPU without it).
fn max_kernel<T: Lanes + Send + Sync>(
    win: &Windows,
    x: &[T],
    [h, w]: [usize; 2],
    out: &mut [T],
) -> bool {
    let (oh, ow) = (win.rows.windows.len(), win.cols.windows.len());
    let cols = Columns {
        kernel: win.cols.taps.len(),
        stride: win.cols.stride,
        pad: win.cols.pad,
    };
    if !max_pool::takes::<T>(cols) || cols.kernel > ow || oh * ow == 0 || h * w == 0 {
        return false;
    }
    // Several small planes per task (about 16 KB of input).
    let per_task = (16 * 1024 / (h * w * std::mem::size_of::<T>())).max(1);
    out.par_chunks_mut(oh * ow * per_task)
        .zip(x.par_chunks(h * w * per_task))
        .all(|(o, x)| max_pool::planes(x, (w, h * w), &win.rows.windows, cols, o))
}

/// MAX pooling as the maximum of each window's rows first (one vectorized pass over whole rows per
/// output row), then of its columns. Caffe takes the window in row-major order keeping strictly
/// greater values; the maximum does not depend on the order (NaNs are skipped either way), so the
/// values are Caffe's (of equal values −0 and +0 either may be kept).
fn max_pooling<T: Lane>(win: &Windows, x: &[T], [h, w]: [usize; 2], out: &mut [T]) {
    let (oh, ow) = (win.rows.windows.len(), win.cols.windows.len());
    out.par_chunks_mut(oh * ow)
        .zip(x.par_chunks(h * w))
        .for_each_init(Vec::new, |rows: &mut Vec<T>, (o, plane)| {
            for (&(hs, he, _), line) in win.rows.windows.iter().zip(o.chunks_mut(ow)) {
                rows.clear();
                rows.resize(w, T::LOWEST);
                for src in plane[hs * w..he * w].chunks_exact(w) {
                    rows.iter_mut()
                        .zip(src)
                        .for_each(|(m, &v)| *m = if v > *m { v } else { *m });
                }
                if win.cols.taps.len() > ow {
                    // Wider windows than outputs (global pooling): each output's window at once.
                    for (d, &(ws, we, _)) in line.iter_mut().zip(&win.cols.windows) {
                        *d = fold_run(true, T::LOWEST, &rows[ws..we]);
                    }
                    continue;
                }
                // One kernel column at a time over all outputs (a strided run).
                line.fill(T::LOWEST);
                for &(first, end, start) in &win.cols.taps {
                    if first >= end {
                        continue;
                    }
                    let taps = rows[start..].iter().step_by(win.cols.stride);
                    line[first..end]
                        .iter_mut()
                        .zip(taps)
                        .for_each(|(o, &v)| *o = if v > *o { v } else { *o });
                }
            }
        });
}

/// A window row folded into `acc`: Caffe's MAX keeps strictly greater values.
fn fold_run<T: Copy, A: Lane + From<T>>(max: bool, acc: A, run: &[T]) -> A {
    if max {
        run.iter()
            .fold(acc, |m, &v| if A::from(v) > m { A::from(v) } else { m })
    } else {
        run.iter().fold(acc, |mut s, &v| {
            s += A::from(v);
            s
        })
    }
}

/// One output row (window rows `hs..he`) of an AVE: the sum of each window. Each output row gathers
/// its window rows one kernel column at a time over all outputs (a strided run the compiler
/// vectorizes); every output still takes its terms in Caffe's order, row by row and left to right.
fn pool_line<T: Copy, A: Lane + From<T>>(
    win: &Windows,
    plane: &[T],
    w: usize,
    (hs, he, _): (usize, usize, f32),
    line: &mut [A],
) {
    let ow = line.len();
    line.fill(A::ZERO);
    if win.cols.taps.len() > ow {
        // Wider windows than outputs (global pooling): each output's window at once.
        for (o, &(ws, we, _)) in line.iter_mut().zip(&win.cols.windows) {
            for y in hs..he {
                *o = fold_run(false, *o, &plane[y * w + ws..y * w + we]);
            }
        }
        return;
    }
    for y in hs..he {
        let src = &plane[y * w..(y + 1) * w];
        for &(first, end, start) in &win.cols.taps {
            if first >= end {
                continue;
            }
            let taps = src[start..].iter().step_by(win.cols.stride);
            line[first..end]
                .iter_mut()
                .zip(taps)
                .for_each(|(o, &v)| *o += A::from(v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p: &Pool, x: &[f32], [n, c, h, w]: [usize; 4], out_hw: [usize; 2]) -> Vec<f32> {
        let mut out = vec![f32::NAN; n * c * out_hw[0] * out_hw[1]];
        pooling(
            &Windows::new(p, [h, w], out_hw).unwrap(),
            x,
            [h, w],
            &mut out,
        );
        out
    }

    /// Caffe's loops, written out per output.
    fn naive(p: &Pool, x: &[f32], [h, w]: [usize; 2], [oh, ow]: [usize; 2]) -> Vec<f32> {
        let ((kh, kw), (sh, sw), (ph, pw)) = (p.kernel.unwrap(), p.stride, p.pad);
        let mut out = Vec::new();
        for plane in x.chunks(h * w) {
            for oy in 0..oh {
                for ox in 0..ow {
                    let (hs, ws) = (
                        (oy * sh) as isize - ph as isize,
                        (ox * sw) as isize - pw as isize,
                    );
                    let he = (hs + kh as isize).min((h + ph) as isize);
                    let we = (ws + kw as isize).min((w + pw) as isize);
                    let size = ((he - hs) * (we - ws)) as f32;
                    let (hs, ws, he, we) =
                        (hs.max(0), ws.max(0), he.min(h as isize), we.min(w as isize));
                    let (mut m, mut sum) = (-f32::MAX, 0.0f32);
                    for y in hs..he {
                        for xx in ws..we {
                            let v = plane[y as usize * w + xx as usize];
                            if v > m {
                                m = v;
                            }
                            sum += v;
                        }
                    }
                    out.push(if p.method == PoolMethod::Max {
                        m
                    } else {
                        sum / size
                    });
                }
            }
        }
        out
    }

    #[test]
    fn average_counts_padding_but_not_overhang() {
        // 3x3 input of ones, kernel 2 stride 2 pad 1: output 2x2 (Caffe's ceil rule).
        let p = Pool {
            method: PoolMethod::Ave,
            global: false,
            kernel: Some((2, 2)),
            stride: (2, 2),
            pad: (1, 1),
            avg_include_pad: true,
        };
        // Top-left window covers 1 real pixel of a 2x2 padded window: 1/4.
        assert_eq!(
            run(&p, &[1.0; 9], [1, 1, 3, 3], [2, 2]),
            vec![0.25, 0.5, 0.5, 1.0]
        );
        // Intel's avg_include_pad: false divides by the pixels inside the image.
        let no_pad = Pool {
            avg_include_pad: false,
            ..p
        };
        assert_eq!(run(&no_pad, &[1.0; 9], [1, 1, 3, 3], [2, 2]), vec![1.0; 4]);
        let max = Pool {
            method: PoolMethod::Max,
            ..p
        };
        let x: Vec<f32> = (0..9).map(|i| i as f32).collect();
        assert_eq!(
            run(&max, &x, [1, 1, 3, 3], [2, 2]),
            vec![0.0, 2.0, 6.0, 8.0]
        );
    }

    #[test]
    fn whole_plane_averages_sum_in_caffes_order_for_every_plane() {
        // 20 planes: two groups of eight side by side and a ragged group of four.
        let p = Pool {
            method: PoolMethod::Ave,
            global: false,
            kernel: Some((5, 7)),
            stride: (1, 1),
            pad: (0, 0),
            avg_include_pad: true,
        };
        let x: Vec<f32> = (0..20 * 35)
            .map(|i| ((i * 53 % 97) as f32 - 40.0) * 0.37)
            .collect();
        let got = run(&p, &x, [4, 5, 5, 7], [1, 1]);
        assert_eq!(got, naive(&p, &x, [5, 7], [1, 1]));
    }

    #[test]
    fn the_max_kernel_equals_the_portable_loops() {
        // Rows wider than one vector and within one (bytes: a row's windows taken by permutations,
        // up to a window column past the row's end), strides 1 to 3, padding, kernels wider than
        // strides; FP32 values with NaNs (skipped) and bytes.
        let cases = [
            (2, 2, 0, 16, 16),
            (3, 2, 1, 13, 13),
            (3, 1, 1, 8, 33),
            (2, 2, 0, 7, 64),
            (3, 3, 2, 10, 61),
            (3, 2, 0, 54, 54),
            (3, 2, 1, 9, 130),
            (2, 1, 0, 5, 70),
            (5, 3, 2, 11, 67),
        ];
        for (k, s, pad, h, w) in cases {
            let p = Pool {
                method: PoolMethod::Max,
                global: false,
                kernel: Some((k, k)),
                stride: (s, s),
                pad: (pad, pad),
                avg_include_pad: true,
            };
            let shape = crate::model::shape::infer(
                &crate::model::layer::LayerKind::Pooling(p.clone()),
                &[&[1, 3, h, w]],
                1,
            )
            .unwrap();
            let win = Windows::new(&p, [h, w], [shape[0][2], shape[0][3]]).unwrap();
            let n = 3 * shape[0][2] * shape[0][3];
            let bytes: Vec<u8> = (0..3 * h * w).map(|i| (i * 167 % 251) as u8).collect();
            let values: Vec<f32> = (0..3 * h * w)
                .map(|i| match i % 41 {
                    7 => f32::NAN,
                    _ => (i * 167 % 251) as f32 - 300.0,
                })
                .collect();
            let (mut fast, mut want) = (vec![7u8; n], vec![9u8; n]);
            max_pooling(&win, &bytes, [h, w], &mut want);
            let (mut fast_f, mut want_f) = (vec![7.0f32; n], vec![9.0f32; n]);
            max_pooling(&win, &values, [h, w], &mut want_f);
            if !max_kernel(&win, &bytes, [h, w], &mut fast)
                || !max_kernel(&win, &values, [h, w], &mut fast_f)
            {
                eprintln!("SKIPPED: this CPU has no AVX-512 VBMI for the MAX pooling kernel");
                return;
            }
            assert_eq!(fast, want, "bytes k{k} s{s} p{pad} {h}x{w}");
            assert_eq!(fast_f, want_f, "FP32 k{k} s{s} p{pad} {h}x{w}");
        }
    }

    #[test]
    fn windows_match_caffes_loops() {
        // (kernel, stride, pad, h, w): SqueezeNet's 3/2 with ceil rounding, padded, odd and global-like.
        let cases = [
            (13, 1, 0, 13, 13),
            (6, 1, 0, 6, 6),
            (3, 2, 0, 111, 111),
            (3, 2, 1, 8, 7),
            (2, 2, 0, 5, 5),
            (3, 1, 1, 4, 6),
            (5, 3, 2, 9, 4),
            (4, 4, 0, 4, 4),
        ];
        for (k, s, pad, h, w) in cases {
            for method in [PoolMethod::Max, PoolMethod::Ave] {
                let p = Pool {
                    method,
                    global: false,
                    kernel: Some((k, k)),
                    stride: (s, s),
                    pad: (pad, pad),
                    avg_include_pad: true,
                };
                let out_hw = {
                    let shape = crate::model::shape::infer(
                        &crate::model::layer::LayerKind::Pooling(p.clone()),
                        &[&[2, 3, h, w]],
                        1,
                    )
                    .unwrap();
                    [shape[0][2], shape[0][3]]
                };
                let x: Vec<f32> = (0..6 * h * w)
                    .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.1)
                    .collect();
                let got = run(&p, &x, [2, 3, h, w], out_hw);
                let want = naive(&p, &x, [h, w], out_hw);
                assert_eq!(got, want, "{method:?} k{k} s{s} p{pad} {h}x{w}");
                // Codes: the definition on the integers, rounded to the nearest code.
                for ty in [IntType::U8, IntType::S8] {
                    let bytes: Vec<u8> = (0..6 * h * w).map(|i| (i * 89 % 256) as u8).collect();
                    let codes: Vec<f32> =
                        bytes.iter().map(|&b| quant::decode(b, ty) as f32).collect();
                    let want: Vec<u8> = naive(&p, &codes, [h, w], out_hw)
                        .iter()
                        .map(|&v| quant::encode(quant::round_saturate(v, ty), ty))
                        .collect();
                    let mut got = vec![0u8; want.len()];
                    let win = Windows::new(&p, [h, w], out_hw).unwrap();
                    pooling_codes(&win, &bytes, [h, w], ty, &mut got);
                    assert_eq!(got, want, "{ty:?} {method:?} k{k} s{s} p{pad} {h}x{w}");
                }
            }
        }
    }
}
