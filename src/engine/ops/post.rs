//! Per-channel steps fused after a producer (BatchNorm, Scale, Bias, ReLU), applied to its output while
//! it is still in cache. Each step does the same arithmetic, in the same order, as the layer it replaces,
//! so fusing does not change results.

use super::norm::BatchNormConsts;

#[derive(Debug, Clone)]
pub enum Post {
    BatchNorm(BatchNormConsts),
    /// Scale with an optional bias, one value per channel.
    Scale(Vec<f32>, Option<Vec<f32>>),
    Bias(Vec<f32>),
    ReLU(f32),
}

/// Applies the steps to channel `c` of one image (`plane` holds that channel's values).
pub fn apply(posts: &[Post], c: usize, plane: &mut [f32]) {
    for p in posts {
        match p {
            Post::BatchNorm(k) => {
                let (m, s) = (k.mean[c], k.std[c]);
                plane.iter_mut().for_each(|v| *v = (*v - m) / s);
                if let Some((g, b)) = &k.gamma_beta {
                    plane.iter_mut().for_each(|v| *v = *v * g[c] + b[c]);
                }
            }
            Post::Scale(g, Some(b)) => plane.iter_mut().for_each(|v| *v = *v * g[c] + b[c]),
            Post::Scale(g, None) => plane.iter_mut().for_each(|v| *v *= g[c]),
            Post::Bias(b) => plane.iter_mut().for_each(|v| *v += b[c]),
            Post::ReLU(slope) if *slope == 0.0 => plane.iter_mut().for_each(|v| *v = v.max(0.0)),
            Post::ReLU(slope) => plane.iter_mut().for_each(|v| {
                if *v <= 0.0 {
                    *v *= slope
                }
            }),
        }
    }
}

/// Applies the steps to a whole N×C×(spatial) buffer.
pub fn apply_all(posts: &[Post], channels: usize, data: &mut [f32]) {
    if posts.is_empty() || channels == 0 {
        return;
    }
    let plane = data.len() / channels;
    let per_image = channels * plane;
    for image in data.chunks_mut(per_image.max(1)) {
        for (c, p) in image.chunks_mut(plane.max(1)).enumerate() {
            apply(posts, c, p);
        }
    }
}
