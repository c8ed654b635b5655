//! OpenCV's `cv::resize(…, INTER_LINEAR)` of 8-bit images, to the byte: the resize Caffe's ImageData
//! applies for `new_height`/`new_width` (notes/rust-stack.md §5a). OpenCV computes it in fixed point
//! (11-bit coefficients, a horizontal then a vertical pass with truncating shifts), so a float bilinear
//! resize differs by ±1 on some pixels; this follows the fixed-point rule. When the source is exactly
//! twice the destination in both directions, OpenCV averages 2×2 blocks instead (its INTER_AREA path).

/// `INTER_RESIZE_COEF_BITS`: coefficients are scaled by 2^11.
const COEF_SCALE: f32 = 2048.0;

/// One output column: the first source column and the two weights (scaled by 2048).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tap {
    index: usize,
    weights: [i32; 2],
}

/// The source coordinate of output `d` (half-pixel centres), split into its floor and fraction.
fn source(d: usize, scale: f64) -> (i64, f32) {
    let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
    let s = f.floor();
    (s as i64, f - s)
}

/// A weight pair, each rounded to the nearest (ties to even, as `cvRound`) on its own.
fn weights(frac: f32) -> [i32; 2] {
    let round = |v: f32| (v * COEF_SCALE).round_ties_even() as i32;
    [round(1.0 - frac), round(frac)]
}

/// OpenCV computes `1 / (dst / src)`, not `src / dst`; the two can differ in the last bit.
fn scale(src: usize, dst: usize) -> f64 {
    1.0 / (dst as f64 / src as f64)
}

/// The output columns' taps: a column whose source lies outside [0, w - 1) takes the edge pixel alone.
fn column_taps(w: usize, dw: usize) -> Vec<Tap> {
    let scale = scale(w, dw);
    (0..dw)
        .map(|d| {
            let (mut s, mut fx) = source(d, scale);
            if s < 0 {
                (s, fx) = (0, 0.0);
            }
            if s >= w as i64 - 1 {
                (s, fx) = (w as i64 - 1, 0.0);
            }
            Tap {
                index: s as usize,
                weights: weights(fx),
            }
        })
        .collect()
}

/// Per output row: the two source rows, each clamped into the image, with unchanged weights.
fn row_taps(h: usize, dh: usize) -> Vec<(usize, usize, [i32; 2])> {
    let scale = scale(h, dh);
    let clamp = |v: i64| v.clamp(0, h as i64 - 1) as usize;
    (0..dh)
        .map(|d| {
            let (s, fy) = source(d, scale);
            (clamp(s), clamp(s + 1), weights(fy))
        })
        .collect()
}

/// Resizes an interleaved 8-bit image (`h` × `w` × `c`, row-major) to `dh` × `dw`.
pub fn resize_linear(
    src: &[u8],
    (h, w, c): (usize, usize, usize),
    (dh, dw): (usize, usize),
) -> Vec<u8> {
    if (h, w) == (dh, dw) {
        return src.to_vec();
    }
    if h == 2 * dh && w == 2 * dw {
        return halve(src, (h, w, c));
    }
    let cols = column_taps(w, dw);
    let rows = row_taps(h, dh);
    // Horizontal pass per source row (once per row that is used): no rounding here.
    let horizontal = |y: usize| -> Vec<i32> {
        let line = &src[y * w * c..(y + 1) * w * c];
        let mut out = Vec::with_capacity(dw * c);
        for t in &cols {
            for ch in 0..c {
                let a = i32::from(line[t.index * c + ch]);
                // An edge column has weights (2048, 0) and no right neighbour.
                let b = if t.weights[1] == 0 {
                    0
                } else {
                    i32::from(line[(t.index + 1) * c + ch])
                };
                out.push(a * t.weights[0] + b * t.weights[1]);
            }
        }
        out
    };
    let mut cache: Vec<Option<Vec<i32>>> = vec![None; h];
    let mut out = Vec::with_capacity(dh * dw * c);
    // Vertical pass: each term reduced on its own (>> 4, >> 16), rounding only before the last >> 2.
    for (y0, y1, [b0, b1]) in rows {
        for y in [y0, y1] {
            if cache[y].is_none() {
                cache[y] = Some(horizontal(y));
            }
        }
        let (Some(h0), Some(h1)) = (&cache[y0], &cache[y1]) else {
            continue;
        };
        for (&v0, &v1) in h0.iter().zip(h1) {
            let t0 = (b0 * (v0 >> 4)) >> 16;
            let t1 = (b1 * (v1 >> 4)) >> 16;
            out.push(((t0 + t1 + 2) >> 2).clamp(0, 255) as u8);
        }
    }
    out
}

/// Exactly half the size in both directions: each output is its 2×2 block's mean, rounded half up.
fn halve(src: &[u8], (h, w, c): (usize, usize, usize)) -> Vec<u8> {
    let (dh, dw) = (h / 2, w / 2);
    let at = |y: usize, x: usize, ch: usize| u32::from(src[(y * w + x) * c + ch]);
    let mut out = Vec::with_capacity(dh * dw * c);
    for y in 0..dh {
        for x in 0..dw {
            for ch in 0..c {
                let sum = at(2 * y, 2 * x, ch)
                    + at(2 * y, 2 * x + 1, ch)
                    + at(2 * y + 1, 2 * x, ch)
                    + at(2 * y + 1, 2 * x + 1, ch);
                out.push(((sum + 2) >> 2) as u8);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic test image with structure in both directions and across channels.
    fn image(h: usize, w: usize, c: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(h * w * c);
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    v.push(((y * 37 + x * 11 + ch * 71 + ((x * y) % 13) * 19) % 256) as u8);
                }
            }
        }
        v
    }

    #[test]
    fn matches_opencv_to_the_byte() {
        // (source h, w, c), (destination h, w), Σ v, Σ v·(i + 1) mod 2^32 of
        // `cv2.resize(image, (dw, dh), interpolation=cv2.INTER_LINEAR)` with opencv-python-headless
        // 4.14.0 on this image: down, up, the exact-half case, one channel, and Caffe-typical sizes.
        let cases = [
            ((7, 5, 3), (4, 9), 13574u64, 767070u64),
            ((5, 7, 3), (3, 11), 12634, 668083),
            ((6, 8, 3), (3, 4), 4606, 87649),
            ((9, 13, 1), (20, 17), 40893, 7329305),
            ((32, 32, 3), (227, 227), 19608991, 3007832816),
            ((500, 375, 3), (300, 300), 34395561, 242614086),
            ((37, 53, 3), (300, 300), 34342857, 755857510),
        ];
        for ((h, w, c), (dh, dw), sum, weighted) in cases {
            let out = resize_linear(&image(h, w, c), (h, w, c), (dh, dw));
            assert_eq!(out.len(), dh * dw * c);
            let s: u64 = out.iter().map(|&v| u64::from(v)).sum();
            let ws = out
                .iter()
                .enumerate()
                .map(|(i, &v)| u64::from(v) * (i as u64 + 1))
                .sum::<u64>()
                % (1 << 32);
            assert_eq!((s, ws), (sum, weighted), "{h}x{w}x{c} -> {dh}x{dw}");
        }
    }

    #[test]
    fn equal_sizes_copy_the_image() {
        let img = image(4, 3, 3);
        assert_eq!(resize_linear(&img, (4, 3, 3), (4, 3)), img);
    }
}
