//! Normalizations: BatchNorm with global statistics (the third blob's scale factor divides the stored
//! mean and variance; Intel's optional gamma/beta blobs applied), Scale and Bias over an axis range, LRN
//! across and within channels, SSD's Normalize, and MVN.

use rayon::prelude::*;

use super::pool::{Windows, pooling};
use crate::model::Blob;
use crate::model::layer::{Affine, Lrn, NormRegion, Pool, PoolMethod};

/// Per-channel BatchNorm constants, computed once per plan.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormConsts {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub gamma_beta: Option<(Vec<f32>, Vec<f32>)>,
}

impl BatchNormConsts {
    pub fn new(blobs: &[Blob], eps: f32) -> Result<Self, String> {
        if blobs.len() < 3 {
            return Err(format!(
                "BatchNorm needs 3 blobs (mean, variance, scale factor), has {}",
                blobs.len()
            ));
        }
        let factor = blobs[2].data.iter().next().copied().unwrap_or(1.0);
        // Caffe: a zero factor scales the statistics by 0 (Intel's conv folding takes 1 instead).
        let sf = if factor == 0.0 { 0.0 } else { 1.0 / factor };
        let mean: Vec<f32> = blobs[0].data.iter().map(|v| v * sf).collect();
        let std: Vec<f32> = blobs[1]
            .data
            .iter()
            .map(|v| (v * sf + eps).sqrt())
            .collect();
        let gamma_beta = (blobs.len() >= 5).then(|| {
            (
                blobs[3].data.iter().copied().collect(),
                blobs[4].data.iter().copied().collect(),
            )
        });
        Ok(Self {
            mean,
            std,
            gamma_beta,
        })
    }
}

/// BatchNorm on N×C×(spatial) data; `spatial` is the product of the axes after the channel.
pub fn batch_norm(k: &BatchNormConsts, x: &[f32], c: usize, spatial: usize, out: &mut [f32]) {
    let spatial = spatial.max(1);
    out.par_chunks_mut(spatial)
        .zip(x.par_chunks(spatial))
        .enumerate()
        .for_each(|(i, (o, xi))| {
            let ch = i % c;
            let (m, s) = (k.mean[ch], k.std[ch]);
            match &k.gamma_beta {
                Some((g, b)) => o
                    .iter_mut()
                    .zip(xi)
                    .for_each(|(o, &v)| *o = (v - m) / s * g[ch] + b[ch]),
                None => o.iter_mut().zip(xi).for_each(|(o, &v)| *o = (v - m) / s),
            }
        });
}

/// Scale (`bias` optional) or Bias (`scale` None) over axes [axis, axis + num_axes) of `dims`.
pub fn affine(
    dims: &[usize],
    a: &Affine,
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
    x: &[f32],
    out: &mut [f32],
) -> Result<(), String> {
    let start = crate::model::shape::canonical_axis(a.axis, dims.len().max(1))?;
    let end = if a.num_axes < 0 {
        dims.len()
    } else {
        start + a.num_axes as usize
    };
    let outer: usize = dims[..start].iter().product();
    let mid: usize = dims[start..end].iter().product();
    let inner: usize = dims[end..].iter().product();
    for (name, v) in [("scale", scale), ("bias", bias)] {
        if let Some(v) = v
            && v.len() != mid
        {
            return Err(format!("{name} has {} values for {mid} positions", v.len()));
        }
    }
    let inner = inner.max(1);
    out.par_chunks_mut(inner)
        .zip(x.par_chunks(inner))
        .enumerate()
        .take(outer * mid)
        .for_each(|(i, (o, xi))| {
            let j = i % mid;
            let (s, b) = (scale.map_or(1.0, |s| s[j]), bias.map_or(0.0, |b| b[j]));
            match (scale.is_some(), bias.is_some()) {
                (true, true) => o.iter_mut().zip(xi).for_each(|(o, &v)| *o = v * s + b),
                (true, false) => o.iter_mut().zip(xi).for_each(|(o, &v)| *o = v * s),
                _ => o.iter_mut().zip(xi).for_each(|(o, &v)| *o = v + b),
            }
        });
    Ok(())
}

pub fn lrn(p: &Lrn, x: &[f32], [n, c, h, w]: [usize; 4], out: &mut [f32]) -> Result<(), String> {
    let plane = h * w;
    match p.region {
        NormRegion::AcrossChannels => {
            let pre = (p.local_size.saturating_sub(1)) / 2;
            let alpha_over = p.alpha / p.local_size as f32;
            out.par_chunks_mut(c * plane)
                .zip(x.par_chunks(c * plane))
                .take(n)
                .for_each(|(o, img)| {
                    for ch in 0..c {
                        let lo = ch.saturating_sub(pre);
                        let hi = (ch + p.local_size - pre).min(c);
                        for i in 0..plane {
                            let mut s = 0.0f32;
                            for cc in lo..hi {
                                let v = img[cc * plane + i];
                                s += alpha_over * v * v;
                            }
                            o[ch * plane + i] = img[ch * plane + i] * (p.k + s).powf(-p.beta);
                        }
                    }
                });
        }
        NormRegion::WithinChannel => {
            let pad = (p.local_size.saturating_sub(1)) / 2;
            let sq: Vec<f32> = x.iter().map(|v| v * v).collect();
            let pool = Pool {
                method: PoolMethod::Ave,
                global: false,
                kernel: Some((p.local_size, p.local_size)),
                stride: (1, 1),
                pad: (pad, pad),
                avg_include_pad: true,
            };
            let mut avg = vec![0.0f32; x.len()];
            pooling(&Windows::new(&pool, [h, w], [h, w])?, &sq, [h, w], &mut avg);
            out.par_iter_mut()
                .zip(x.par_iter().zip(avg.par_iter()))
                .for_each(|(o, (&v, &a))| *o = v * (1.0 + p.alpha * a).powf(-p.beta));
        }
    }
    Ok(())
}

/// SSD's Normalize: L2 over the whole image (`across_spatial`) or over channels per position, then a
/// per-channel (or shared) scale.
pub fn normalize(
    across_spatial: bool,
    eps: f32,
    scale: &[f32],
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    out: &mut [f32],
) {
    let plane = h * w;
    let sc = |ch: usize| {
        if scale.len() == 1 {
            scale[0]
        } else {
            scale[ch]
        }
    };
    out.par_chunks_mut(c * plane)
        .zip(x.par_chunks(c * plane))
        .take(n)
        .for_each(|(o, img)| {
            if across_spatial {
                let norm = (img.iter().map(|v| v * v).sum::<f32>() + eps).sqrt();
                let inv = 1.0 / norm;
                for ch in 0..c {
                    for i in 0..plane {
                        o[ch * plane + i] = img[ch * plane + i] * inv * sc(ch);
                    }
                }
            } else {
                for i in 0..plane {
                    let norm = ((0..c)
                        .map(|ch| img[ch * plane + i] * img[ch * plane + i])
                        .sum::<f32>()
                        + eps)
                        .sqrt();
                    for ch in 0..c {
                        o[ch * plane + i] = img[ch * plane + i] / norm * sc(ch);
                    }
                }
            }
        });
}

/// MVN: subtract the mean (per channel, or across channels), optionally divide by the standard deviation.
pub fn mvn(
    normalize_variance: bool,
    across_channels: bool,
    eps: f32,
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    out: &mut [f32],
) {
    let group = if across_channels { c * h * w } else { h * w };
    let _ = n;
    out.par_chunks_mut(group.max(1))
        .zip(x.par_chunks(group.max(1)))
        .for_each(|(o, xi)| {
            let len = xi.len() as f32;
            let mean = xi.iter().sum::<f32>() / len;
            // Caffe's var(X) = E((X − EX)²), then (√var + eps).
            let div = if normalize_variance {
                let var = xi.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / len;
                var.sqrt() + eps
            } else {
                1.0
            };
            o.iter_mut()
                .zip(xi)
                .for_each(|(o, &v)| *o = (v - mean) / div);
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::layer::{Lrn, NormRegion};

    fn data(len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 37 % 29) as f32 - 14.0) * 0.3)
            .collect()
    }

    /// Caffe's LRN, written out per element: the window of channels (or pixels) clipped to the data.
    fn lrn_naive(p: &Lrn, x: &[f32], [n, c, h, w]: [usize; 4]) -> Vec<f32> {
        let at = |i: usize, ch: usize, y: usize, xx: usize| x[((i * c + ch) * h + y) * w + xx];
        let pre = (p.local_size - 1) / 2;
        let mut out = Vec::new();
        for i in 0..n {
            for ch in 0..c {
                for y in 0..h {
                    for xx in 0..w {
                        let v = at(i, ch, y, xx);
                        out.push(match p.region {
                            NormRegion::AcrossChannels => {
                                let lo = ch.saturating_sub(pre);
                                let hi = (ch + p.local_size - pre).min(c);
                                let s: f32 = (lo..hi).map(|cc| at(i, cc, y, xx).powi(2)).sum();
                                v * (p.k + p.alpha / p.local_size as f32 * s).powf(-p.beta)
                            }
                            NormRegion::WithinChannel => {
                                // Average pooling with padding pre: the divisor counts the padding.
                                let (y0, x0) =
                                    (y as isize - pre as isize, xx as isize - pre as isize);
                                let y1 = (y0 + p.local_size as isize).min((h + pre) as isize);
                                let x1 = (x0 + p.local_size as isize).min((w + pre) as isize);
                                let size = ((y1 - y0) * (x1 - x0)) as f32;
                                let mut s = 0.0f32;
                                for yy in y0.max(0)..y1.min(h as isize) {
                                    for xs in x0.max(0)..x1.min(w as isize) {
                                        s += at(i, ch, yy as usize, xs as usize).powi(2);
                                    }
                                }
                                v * (1.0 + p.alpha * s / size).powf(-p.beta)
                            }
                        });
                    }
                }
            }
        }
        out
    }

    #[test]
    fn lrn_matches_the_definition_in_both_regions() {
        let dims = [2, 7, 5, 4];
        let x = data(2 * 7 * 5 * 4);
        for region in [NormRegion::AcrossChannels, NormRegion::WithinChannel] {
            for local_size in [3, 5] {
                let p = Lrn {
                    local_size,
                    alpha: 1e-2,
                    beta: 0.75,
                    k: 2.0,
                    region,
                };
                let mut out = vec![0.0; x.len()];
                lrn(&p, &x, dims, &mut out).unwrap();
                for (a, b) in out.iter().zip(lrn_naive(&p, &x, dims)) {
                    assert!(
                        (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                        "{region:?} {local_size}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn mvn_subtracts_the_mean_and_divides_by_the_deviation() {
        // Large offsets: E(x²) − (Ex)² would lose the variance; E((x − Ex)²) keeps it.
        let x: Vec<f32> = data(2 * 3 * 4).iter().map(|v| v + 1000.0).collect();
        for across in [false, true] {
            let mut out = vec![0.0; x.len()];
            mvn(true, across, 1e-9, &x, [2, 3, 2, 2], &mut out);
            for group in out.chunks(if across { 12 } else { 4 }) {
                let mean = group.iter().sum::<f32>() / group.len() as f32;
                let var = group.iter().map(|v| v * v).sum::<f32>() / group.len() as f32;
                assert!(
                    mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-3,
                    "{across}: {mean} {var}"
                );
            }
        }
        let mut centred = vec![0.0; 4];
        mvn(
            false,
            false,
            1e-9,
            &[1.0, 2.0, 3.0, 6.0],
            [1, 1, 2, 2],
            &mut centred,
        );
        assert_eq!(centred, [-2.0, -1.0, 0.0, 3.0]);
    }

    #[test]
    fn normalize_divides_by_the_l2_norm_then_scales() {
        let x = [3.0, 4.0, 0.0, 0.0];
        let mut out = [0.0; 4];
        // Per position over 2 channels (positions (3, 0) and (4, 0)), then scales 10 and 20.
        normalize(false, 0.0, &[10.0, 20.0], &x, [1, 2, 1, 2], &mut out);
        assert_eq!(out, [10.0, 10.0, 0.0, 0.0]);
        // Over the whole image: norm 5, one shared scale.
        normalize(true, 0.0, &[2.0], &x, [1, 2, 1, 2], &mut out);
        assert_eq!(out, [1.2, 1.6, 0.0, 0.0]);
    }
}
