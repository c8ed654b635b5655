//! Convolution and Deconvolution in NCHW: im2col + GEMM per image and group (1×1 stride-1 unpadded
//! convolutions multiply the input directly), a direct kernel for depthwise convolutions, bias added per
//! output channel. Images run in parallel; the im2col buffer is per thread and reused.

use std::cell::RefCell;

use rayon::prelude::*;

use std::ops::Range;

use super::post::{self, Post};
use crate::engine::gemm::{sgemm, sgemm_into};

/// Floats of unrolled columns per tile (384 KB): each tile's im2col stays in L2 for its GEMM.
const TILE_FLOATS: usize = 96 * 1024;
use crate::model::layer::Conv;

/// Resolved 2-D geometry of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub dilation: [usize; 2],
    pub group: usize,
}

impl Geometry {
    pub fn of(c: &Conv) -> Result<Self, String> {
        let two = |v: Vec<usize>| -> [usize; 2] { [v[0], v[1]] };
        Ok(Self {
            kernel: two(c.kernel.resolve(2, None, "kernel_size")?),
            stride: two(c.stride.resolve(2, Some(1), "stride")?),
            pad: two(c.pad.resolve(2, Some(0), "pad")?),
            dilation: two(c.dilation.resolve(2, Some(1), "dilation")?),
            group: c.group.max(1),
        })
    }

    fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        let o = |x: usize, i: usize| {
            (x + 2 * self.pad[i] - (self.dilation[i] * (self.kernel[i] - 1) + 1)) / self.stride[i]
                + 1
        };
        (o(h, 0), o(w, 1))
    }

    fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.pad == [0, 0]
    }
}

/// A convolution's weights, optional bias and number of output channels.
#[derive(Debug, Clone, Copy)]
pub struct Filter<'a> {
    pub weights: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub outputs: usize,
}

thread_local! {
    static COLUMNS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Unrolls one image's channels into columns: rows (c, ky, kx), columns (oy, ox); zeros in the padding.
/// Each row copies the input columns that fall inside the image and zero-fills the rest.
fn im2col(
    x: &[f32],
    (c, h, w): (usize, usize, usize),
    g: &Geometry,
    rows: Range<usize>,
    ow: usize,
    col: &mut [f32],
) {
    let oh = rows.len();
    let [kh, kw] = g.kernel;
    let (sx, dx, px) = (g.stride[1], g.dilation[1], g.pad[1] as isize);
    for ch in 0..c {
        let plane = &x[ch * h * w..(ch + 1) * h * w];
        for ky in 0..kh {
            for kx in 0..kw {
                let row = ((ch * kh + ky) * kw + kx) * oh * ow;
                let dst = &mut col[row..row + oh * ow];
                let off = (kx * dx) as isize - px;
                // Output columns whose input column ox·sx + off lies inside the row.
                let first = if off >= 0 {
                    0
                } else {
                    ((-off) as usize).div_ceil(sx).min(ow)
                };
                let end = if (w as isize) <= off {
                    first
                } else {
                    ((w as isize - off) as usize).div_ceil(sx).clamp(first, ow)
                };
                for (r, oy) in rows.clone().enumerate() {
                    let iy = (oy * g.stride[0] + ky * g.dilation[0]) as isize - g.pad[0] as isize;
                    let line = &mut dst[r * ow..(r + 1) * ow];
                    if iy < 0 || iy >= h as isize {
                        line.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                    line[..first].fill(0.0);
                    line[end..].fill(0.0);
                    let start = (first * sx) as isize + off;
                    if sx == 1 {
                        line[first..end]
                            .copy_from_slice(&src[start as usize..start as usize + end - first]);
                    } else {
                        for (i, d) in line[first..end].iter_mut().enumerate() {
                            *d = src[(start + (i * sx) as isize) as usize];
                        }
                    }
                }
            }
        }
    }
}

/// Forward convolution. `x` is N×C×H×W, `weights` M×(C/g)×kh×kw, `out` N×M×OH×OW.
pub fn convolution(
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    f: &Filter,
    g: &Geometry,
    posts: &[Post],
    out: &mut [f32],
) {
    let Filter {
        weights,
        bias,
        outputs: m,
    } = *f;
    let (oh, ow) = g.out_size(h, w);
    let plane = oh * ow;
    if g.group == c && g.group == m && g.group > 1 {
        return depthwise(x, [n, c, h, w], f, g, posts, out);
    }
    let (cg, mg) = (c / g.group, m / g.group);
    let k = cg * g.kernel[0] * g.kernel[1];
    out.par_chunks_mut(m * plane)
        .zip(x.par_chunks(c * h * w))
        .take(n)
        .for_each(|(o, img)| {
            COLUMNS.with_borrow_mut(|col| {
                for gi in 0..g.group {
                    let input = &img[gi * cg * h * w..(gi + 1) * cg * h * w];
                    let wg = &weights[gi * mg * k..(gi + 1) * mg * k];
                    let og = &mut o[gi * mg * plane..(gi + 1) * mg * plane];
                    if g.is_pointwise() {
                        sgemm(mg, k, plane, wg, input, og, false);
                        continue;
                    }
                    // Tiles of whole output rows, so the unrolled columns stay in cache.
                    let tile_rows = (TILE_FLOATS / (k * ow).max(1)).clamp(1, oh);
                    if col.len() < k * tile_rows * ow {
                        col.resize(k * tile_rows * ow, 0.0);
                    }
                    for oy0 in (0..oh).step_by(tile_rows) {
                        let rows = oy0..(oy0 + tile_rows).min(oh);
                        let cols = rows.len() * ow;
                        im2col(input, (cg, h, w), g, rows, ow, &mut col[..k * cols]);
                        sgemm_into(
                            mg,
                            k,
                            cols,
                            wg,
                            &col[..k * cols],
                            &mut og[oy0 * ow..],
                            plane,
                        );
                    }
                }
            });
            add_bias(o, bias, plane);
            for (ch, p) in o.chunks_mut(plane).enumerate() {
                post::apply(posts, ch, p);
            }
        });
}

/// One filter per channel: a direct loop is faster than a GEMM of one row.
fn depthwise(
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    f: &Filter,
    g: &Geometry,
    posts: &[Post],
    out: &mut [f32],
) {
    let (oh, ow) = g.out_size(h, w);
    // A few tasks per thread, each a run of planes (one plane per task is too fine for small maps).
    let per_task = (n * c / (rayon::current_num_threads() * 4)).max(1);
    out.par_chunks_mut(per_task * oh * ow)
        .enumerate()
        .for_each(|(t, planes)| {
            for (j, o) in planes.chunks_mut(oh * ow).enumerate() {
                depthwise_plane(t * per_task + j, x, [c, h, w], f, g, posts, o);
            }
        });
}

/// One output plane `i` (image i / c, channel i % c) of a depthwise convolution.
fn depthwise_plane(
    i: usize,
    x: &[f32],
    [c, h, w]: [usize; 3],
    f: &Filter,
    g: &Geometry,
    posts: &[Post],
    o: &mut [f32],
) {
    let (oh, ow) = g.out_size(h, w);
    let [kh, kw] = g.kernel;
    let ([sy, sx], [dy, dx], [py, px]) = (g.stride, g.dilation, g.pad);
    if g.kernel == [3, 3] && g.stride == [1, 1] && g.pad == [1, 1] && g.dilation == [1, 1] && w >= 3
    {
        let ch = i % c;
        let plane = &x[i * h * w..(i + 1) * h * w];
        depthwise_3x3_same(plane, h, w, &f.weights[ch * 9..ch * 9 + 9], o);
        if let Some(b) = f.bias {
            o.iter_mut().for_each(|v| *v += b[ch]);
        }
        post::apply(posts, ch, o);
        return;
    }
    {
        {
            let ch = i % c;
            let plane = &x[i * h * w..(i + 1) * h * w];
            let filt = &f.weights[ch * kh * kw..(ch + 1) * kh * kw];
            o.fill(0.0);
            for oy in 0..oh {
                let row = &mut o[oy * ow..(oy + 1) * ow];
                // Terms are added in (ky, kx) order for every output, as the plain definition does.
                for ky in 0..kh {
                    let iy = (oy * sy + ky * dy) as isize - py as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                    for kx in 0..kw {
                        let wk = filt[ky * kw + kx];
                        let off = (kx * dx) as isize - px as isize;
                        // Outputs whose input column ox·sx + off lies inside the row.
                        let first = if off >= 0 {
                            0
                        } else {
                            (-off as usize).div_ceil(sx)
                        };
                        let end = if (w as isize) <= off {
                            0
                        } else {
                            ((w as isize - off) as usize).div_ceil(sx).min(ow)
                        };
                        if first >= end {
                            continue;
                        }
                        if sx == 1 {
                            let s0 = (first as isize + off) as usize;
                            row[first..end]
                                .iter_mut()
                                .zip(&src[s0..s0 + end - first])
                                .for_each(|(o, &v)| *o += v * wk);
                        } else {
                            for (ox, o) in row.iter_mut().enumerate().take(end).skip(first) {
                                *o += src[((ox * sx) as isize + off) as usize] * wk;
                            }
                        }
                    }
                }
            }
            if let Some(b) = f.bias {
                o.iter_mut().for_each(|v| *v += b[ch]);
            }
            post::apply(posts, ch, o);
        }
    }
}

/// Depthwise 3×3, stride 1, padding 1 (output size = input size), without the bias. Each output adds
/// its valid terms in (ky, kx) order starting from zero, exactly as the general kernel does, so the
/// results are identical; interior columns run branch-free so the compiler vectorizes them.
fn depthwise_3x3_same(plane: &[f32], h: usize, w: usize, k: &[f32], o: &mut [f32]) {
    for oy in 0..h {
        // The input rows of taps ky = 0, 1, 2 (None above or below the image).
        let row = |ky: usize| -> Option<&[f32]> {
            let iy = (oy + ky).checked_sub(1)?;
            (iy < h).then(|| &plane[iy * w..(iy + 1) * w])
        };
        let rows = [row(0), row(1), row(2)];
        let out = &mut o[oy * w..(oy + 1) * w];
        // Edge columns: terms whose input column is outside are skipped.
        for ox in [0, w - 1] {
            let mut acc = 0.0f32;
            for (ky, r) in rows.iter().enumerate() {
                let Some(r) = r else { continue };
                for kx in 0..3 {
                    if let Some(ix) = (ox + kx).checked_sub(1).filter(|&ix| ix < w) {
                        acc += r[ix] * k[ky * 3 + kx];
                    }
                }
            }
            out[ox] = acc;
        }
        let interior = &mut out[1..w - 1];
        match rows {
            [Some(a), Some(b), Some(c)] => interior3(interior, [a, b, c], k),
            [None, Some(b), Some(c)] => interior2(interior, [b, c], [&k[3..6], &k[6..9]]),
            [Some(a), Some(b), None] => interior2(interior, [a, b], [&k[0..3], &k[3..6]]),
            [None, Some(b), None] => interior1(interior, b, &k[3..6]),
            _ => interior.fill(0.0),
        }
    }
}

fn interior3(out: &mut [f32], [a, b, c]: [&[f32]; 3], k: &[f32]) {
    let n = out.len();
    let (a0, a1, a2) = (&a[..n], &a[1..n + 1], &a[2..n + 2]);
    let (b0, b1, b2) = (&b[..n], &b[1..n + 1], &b[2..n + 2]);
    let (c0, c1, c2) = (&c[..n], &c[1..n + 1], &c[2..n + 2]);
    for x in 0..n {
        let mut acc = 0.0f32;
        acc += a0[x] * k[0];
        acc += a1[x] * k[1];
        acc += a2[x] * k[2];
        acc += b0[x] * k[3];
        acc += b1[x] * k[4];
        acc += b2[x] * k[5];
        acc += c0[x] * k[6];
        acc += c1[x] * k[7];
        acc += c2[x] * k[8];
        out[x] = acc;
    }
}

/// One valid row (an image one row high).
fn interior1(out: &mut [f32], a: &[f32], k: &[f32]) {
    let n = out.len();
    let (a0, a1, a2) = (&a[..n], &a[1..n + 1], &a[2..n + 2]);
    for x in 0..n {
        let mut acc = 0.0f32;
        acc += a0[x] * k[0];
        acc += a1[x] * k[1];
        acc += a2[x] * k[2];
        out[x] = acc;
    }
}

/// Two valid rows (the image's first or last row).
fn interior2(out: &mut [f32], [a, b]: [&[f32]; 2], [ka, kb]: [&[f32]; 2]) {
    let n = out.len();
    let (a0, a1, a2) = (&a[..n], &a[1..n + 1], &a[2..n + 2]);
    let (b0, b1, b2) = (&b[..n], &b[1..n + 1], &b[2..n + 2]);
    for x in 0..n {
        let mut acc = 0.0f32;
        acc += a0[x] * ka[0];
        acc += a1[x] * ka[1];
        acc += a2[x] * ka[2];
        acc += b0[x] * kb[0];
        acc += b1[x] * kb[1];
        acc += b2[x] * kb[2];
        out[x] = acc;
    }
}

fn add_bias(o: &mut [f32], bias: Option<&[f32]>, plane: usize) {
    if let Some(b) = bias {
        for (chunk, &bv) in o.chunks_mut(plane).zip(b) {
            chunk.iter_mut().for_each(|v| *v += bv);
        }
    }
}

/// Transposed convolution: per image and group, columns = Wᵀ × x, then col2im scatters them.
/// `weights` is C×(M/g)×kh×kw, `x` N×C×H×W, `out` N×M×OH×OW.
pub fn deconvolution(
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    f: &Filter,
    g: &Geometry,
    [oh, ow]: [usize; 2],
    out: &mut [f32],
) {
    let Filter {
        weights,
        bias,
        outputs: m,
    } = *f;
    let (cg, mg) = (c / g.group, m / g.group);
    let [kh, kw] = g.kernel;
    let k = mg * kh * kw;
    out.par_chunks_mut(m * oh * ow)
        .zip(x.par_chunks(c * h * w))
        .take(n)
        .for_each(|(o, img)| {
            o.fill(0.0);
            let mut col = vec![0.0f32; k * h * w];
            for gi in 0..g.group {
                let input = &img[gi * cg * h * w..(gi + 1) * cg * h * w];
                let wg = &weights[gi * cg * k..(gi + 1) * cg * k];
                // col (k × hw) = wgᵀ (k × cg) × input (cg × hw)
                let wt: Vec<f32> = (0..k * cg).map(|i| wg[(i % cg) * k + i / cg]).collect();
                sgemm(k, cg, h * w, &wt, input, &mut col, false);
                let og = &mut o[gi * mg * oh * ow..(gi + 1) * mg * oh * ow];
                for ch in 0..mg {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let row = &col[((ch * kh + ky) * kw + kx) * h * w..][..h * w];
                            for iy in 0..h {
                                let oy = (iy * g.stride[0] + ky * g.dilation[0]) as isize
                                    - g.pad[0] as isize;
                                if oy < 0 || oy >= oh as isize {
                                    continue;
                                }
                                for ix in 0..w {
                                    let ox = (ix * g.stride[1] + kx * g.dilation[1]) as isize
                                        - g.pad[1] as isize;
                                    if ox >= 0 && ox < ow as isize {
                                        og[(ch * oh + oy as usize) * ow + ox as usize] +=
                                            row[iy * w + ix];
                                    }
                                }
                            }
                        }
                    }
                }
            }
            add_bias(o, bias, oh * ow);
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition of convolution, written plainly.
    fn naive(x: &[f32], [n, c, h, w]: [usize; 4], wt: &[f32], g: &Geometry, m: usize) -> Vec<f32> {
        let (oh, ow) = g.out_size(h, w);
        let (cg, mg) = (c / g.group, m / g.group);
        let mut out = vec![0.0; n * m * oh * ow];
        for b in 0..n {
            for oc in 0..m {
                let gi = oc / mg;
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0.0;
                        for ic in 0..cg {
                            for ky in 0..g.kernel[0] {
                                for kx in 0..g.kernel[1] {
                                    let iy = (oy * g.stride[0] + ky * g.dilation[0]) as isize
                                        - g.pad[0] as isize;
                                    let ix = (ox * g.stride[1] + kx * g.dilation[1]) as isize
                                        - g.pad[1] as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w
                                    {
                                        let xv = x[((b * c + gi * cg + ic) * h + iy as usize) * w
                                            + ix as usize];
                                        let wv = wt[((oc * cg + ic) * g.kernel[0] + ky)
                                            * g.kernel[1]
                                            + kx];
                                        acc += xv * wv;
                                    }
                                }
                            }
                        }
                        out[((b * m + oc) * oh + oy) * ow + ox] = acc;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn large_images_are_tiled_and_still_match_the_definition() {
        // 3 channels, 7x7 stride 2 over 120x100: the unrolled columns exceed one tile (several tiles).
        let g = Geometry {
            kernel: [7, 7],
            stride: [2, 2],
            pad: [3, 3],
            dilation: [1, 1],
            group: 1,
        };
        let (c, m, h, w) = (3, 5, 120, 100);
        let (oh, ow) = g.out_size(h, w);
        assert!(c * 49 * oh * ow > TILE_FLOATS, "the case must span tiles");
        let x: Vec<f32> = (0..c * h * w)
            .map(|i| ((i * 7 % 23) as f32 - 11.0) * 0.1)
            .collect();
        let wt: Vec<f32> = (0..m * c * 49)
            .map(|i| ((i * 3 % 17) as f32 - 8.0) * 0.05)
            .collect();
        let mut out = vec![0.0; m * oh * ow];
        convolution(
            &x,
            [1, c, h, w],
            &Filter {
                weights: &wt,
                bias: None,
                outputs: m,
            },
            &g,
            &[],
            &mut out,
        );
        let want = naive(&x, [1, c, h, w], &wt, &g, m);
        for (a, b) in out.iter().zip(&want) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
    }

    #[test]
    fn grouped_strided_dilated_and_depthwise_match_the_definition() {
        let geo = |k: usize, s: [usize; 2], p: [usize; 2], d: [usize; 2], group: usize| Geometry {
            kernel: [k, k],
            stride: s,
            pad: p,
            dilation: d,
            group,
        };
        // (geometry, channels in, channels out, height, width)
        let cases = [
            (geo(3, [2, 1], [1, 2], [1, 2], 2), 4, 6, 7, 6),
            (geo(1, [1, 1], [0, 0], [1, 1], 1), 3, 5, 7, 6),
            (geo(3, [1, 1], [1, 1], [1, 1], 4), 4, 4, 7, 6),
            (geo(3, [1, 1], [1, 1], [1, 1], 4), 4, 4, 1, 5),
            (geo(3, [1, 1], [1, 1], [1, 1], 4), 4, 4, 2, 3),
            (geo(3, [2, 2], [1, 1], [1, 1], 4), 4, 4, 7, 6),
            (geo(3, [1, 1], [2, 2], [2, 2], 4), 4, 4, 7, 6),
        ];
        for (g, c, m, h, w) in cases {
            let shape = [2, c, h, w];
            let x: Vec<f32> = (0..2 * c * h * w)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.3)
                .collect();
            let wt: Vec<f32> = (0..m * (c / g.group) * 9)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1)
                .collect();
            let (oh, ow) = g.out_size(h, w);
            let mut out = vec![0.0; 2 * m * oh * ow];
            convolution(
                &x,
                shape,
                &Filter {
                    weights: &wt,
                    bias: None,
                    outputs: m,
                },
                &g,
                &[],
                &mut out,
            );
            let want = naive(&x, shape, &wt, &g, m);
            let depthwise = g.group == c && c == m;
            for (a, b) in out.iter().zip(&want) {
                // The depthwise kernel adds terms in the definition's order: bit-identical.
                if depthwise {
                    assert_eq!(a, b, "{g:?}");
                }
                assert!((a - b).abs() < 1e-4, "{g:?}: {a} vs {b}");
            }
        }
    }
}
