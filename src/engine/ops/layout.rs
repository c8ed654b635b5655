//! Intel Caffe's residual layout quirk: an INT8 convolution with FP32 output that absorbed an
//! Eltwise SUM reads the residual already in its buffer as NHWC, its own layout, but a residual made
//! by an FP32 MKL-DNN layer is held there in the blocked nChw16c layout (no reorder runs in between:
//! ssd_face_res10's mkldnn_verbose.txt has none before `layer_64_1_conv2_h`). So the sum adds the
//! residual's values in a permuted order. With 16 channels both layouts coincide.

/// The residual as the convolution sees it: element (n, c, p) of the result (p = h·W + w) is the
/// value stored at the NHWC offset of (n, c, p) in an nChw16c buffer. `dims` is N×C×H×W with C a
/// multiple of 16.
pub fn blocked_read_as_nhwc(src: &[f32], dims: [usize; 4], dst: &mut [f32]) {
    let [n, c, h, w] = dims;
    let (plane, blocks) = (h * w, c / 16);
    let image = c * plane;
    for i in 0..n {
        let (s, d) = (&src[i * image..][..image], &mut dst[i * image..][..image]);
        for ch in 0..c {
            for p in 0..plane {
                // NHWC offset p·C + ch, decoded as nChw16c: 16-lane index, then pixel, then block.
                let q = p * blocks + ch / 16;
                let (block, pixel) = (q / plane, q % plane);
                d[ch * plane + p] = s[(block * 16 + ch % 16) * plane + pixel];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_channels_read_unchanged() {
        let src: Vec<f32> = (0..16 * 6).map(|v| v as f32).collect();
        let mut dst = vec![0.0; src.len()];
        blocked_read_as_nhwc(&src, [1, 16, 2, 3], &mut dst);
        assert_eq!(dst, src);
    }

    #[test]
    fn thirty_two_channels_interleave_the_blocks_by_pixel() {
        // 32 channels of 2 pixels, value = 100·channel + pixel. In nChw16c memory the first 16
        // floats are channels 0-15 of pixel 0, then channels 0-15 of pixel 1, then block 1.
        // Read as NHWC, pixel 0 takes the first 32 floats: channels 0-15 of pixels 0 and 1.
        let src: Vec<f32> = (0..32)
            .flat_map(|c| (0..2).map(move |p| (100 * c + p) as f32))
            .collect();
        let mut dst = vec![0.0; 64];
        blocked_read_as_nhwc(&src, [1, 32, 1, 2], &mut dst);
        // Channel 17 at pixel 0: NHWC offset 17 = lane 1 of pixel 1 in block 0 -> channel 1, pixel 1.
        assert_eq!(dst[17 * 2], 101.0);
        // Channel 3 at pixel 1: NHWC offset 32 + 3 = lane 3 of pixel 0 in block 1 -> channel 19.
        assert_eq!(dst[3 * 2 + 1], 1900.0);
        let mut sorted = dst.clone();
        sorted.sort_by(f32::total_cmp);
        let mut want = src.clone();
        want.sort_by(f32::total_cmp);
        assert_eq!(sorted, want, "a permutation");
    }
}
