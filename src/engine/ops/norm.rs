//! Normalizations: BatchNorm with global statistics (the third blob's scale factor divides the stored
//! mean and variance; Intel's optional gamma/beta blobs applied), Scale and Bias over an axis range, LRN
//! across and within channels, SSD's Normalize, and MVN.

use rayon::prelude::*;

use super::pool::{Windows, pooling};
use crate::model::Blob;
use crate::model::layer::{Affine, Lrn, NormRegion, Pool, PoolMethod};

/// Per-channel BatchNorm constants, computed once per plan.
#[derive(Debug, Clone)]
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
        // Caffe: a zero factor means the statistics are used as they are stored.
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
            let var = xi.iter().map(|v| v * v).sum::<f32>() / len - mean * mean;
            let div = if normalize_variance {
                var.max(0.0).sqrt() + eps
            } else {
                1.0
            };
            o.iter_mut()
                .zip(xi)
                .for_each(|(o, &v)| *o = (v - mean) / div);
        });
}
