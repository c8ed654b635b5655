//! Per-channel steps fused after a producer (BatchNorm, Scale, Bias, ReLU), applied to its output while
//! it is still in cache. Each step does the same arithmetic, in the same order, as the layer it replaces,
//! so fusing does not change results.

use rayon::prelude::*;

use super::norm::BatchNormConsts;
use crate::model::Layer;
use crate::model::layer::{Activation, Affine, LayerKind};

#[derive(Debug, Clone, PartialEq)]
pub enum Post {
    BatchNorm(BatchNormConsts),
    /// Scale with an optional bias, one value per channel.
    Scale(Vec<f32>, Option<Vec<f32>>),
    Bias(Vec<f32>),
    ReLU(f32),
}

/// The step a per-channel Scale (with its bias), Bias or ReLU layer is (None for other layers, a
/// Scale or Bias over other axes, or missing blobs). A BatchNorm's needs its prepared constants.
pub fn of_layer(l: &Layer) -> Option<Post> {
    let blob = |i: usize| {
        l.blobs
            .get(i)
            .map(|b| b.data.iter().copied().collect::<Vec<f32>>())
    };
    let per_channel = |a: &Affine| a.axis == 1 && a.num_axes == 1;
    match &l.kind {
        LayerKind::Scale(a) if per_channel(a) => {
            let bias = if a.bias_term { Some(blob(1)?) } else { None };
            Some(Post::Scale(blob(0)?, bias))
        }
        LayerKind::Bias(a) if per_channel(a) => Some(Post::Bias(blob(0)?)),
        LayerKind::Activation(Activation::ReLU { negative_slope }) => {
            Some(Post::ReLU(*negative_slope))
        }
        _ => None,
    }
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

/// Applies the steps to a whole buffer of `shape` N×C×(spatial…), planes in parallel.
pub fn apply_all(posts: &[Post], shape: &[usize], data: &mut [f32]) {
    let channels = shape.get(1).copied().unwrap_or(1);
    let plane: usize = shape.iter().skip(2).product();
    if posts.is_empty() || channels == 0 || plane == 0 {
        return;
    }
    data.par_chunks_mut(plane)
        .enumerate()
        .for_each(|(i, p)| apply(posts, i % channels, p));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_buffers_take_each_channels_own_constants_in_every_image() {
        // 2 images × 3 channels × 2 values; channel c is scaled by c + 1 and shifted by 10·c.
        let post = Post::Scale(vec![1.0, 2.0, 3.0], Some(vec![0.0, 10.0, 20.0]));
        let mut data = vec![1.0f32; 12];
        apply_all(&[post], &[2, 3, 2], &mut data);
        let want = [1.0, 1.0, 12.0, 12.0, 23.0, 23.0];
        assert_eq!(data[..6], want);
        assert_eq!(data[6..], want);
    }
}
