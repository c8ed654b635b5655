//! InnerProduct: the bottom flattened from `axis` (M × K) times the weights (N × K, or K × N with
//! `transpose`), plus the bias. Blocks of output columns run in parallel (with a batch of a few images,
//! M is too small to split).

use ndarray::{ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

use crate::engine::gemm::{has_dot_kernel, row_dots, sgemm};

/// Output columns per parallel block, at least this many so each block is a worthwhile GEMM.
const MIN_BLOCK: usize = 64;

pub fn inner_product(
    x: &[f32],
    [m, k]: [usize; 2],
    weights: &[f32],
    n: usize,
    transpose: bool,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    if transpose {
        sgemm(m, k, n, x, weights, out, false);
    } else if has_dot_kernel() {
        row_dots(x, [m, k], weights, n, out);
    } else {
        let block = n
            .div_ceil(rayon::current_num_threads() * 2)
            .max(MIN_BLOCK)
            .min(n.max(1));
        // Disjoint column blocks of the output, each x × W[j0..j1]ᵀ written in place.
        let (Ok(xv), Ok(wv), Ok(mut ov)) = (
            ArrayView2::from_shape((m, k), x),
            ArrayView2::from_shape((n, k), weights),
            ArrayViewMut2::from_shape((m, n), &mut *out),
        ) else {
            unreachable!("inner_product called with slices that do not match {m}x{k}x{n}");
        };
        ov.axis_chunks_iter_mut(Axis(1), block)
            .into_par_iter()
            .zip(wv.axis_chunks_iter(Axis(0), block).into_par_iter())
            .for_each(|(mut o, w)| ndarray::linalg::general_mat_mul(1.0, &xv, &w.t(), 0.0, &mut o));
    }
    if let Some(b) = bias {
        for row in out.chunks_mut(n) {
            row.iter_mut().zip(b).for_each(|(o, &bv)| *o += bv);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_give_the_same_product_as_one_gemm() {
        let (m, k, n) = (3, 50, 300);
        let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.3).sin()).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.7).cos()).collect();
        let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
        let mut out = vec![0.0; m * n];
        inner_product(&x, [m, k], &w, n, false, Some(&b), &mut out);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|p| x[i * k + p] * w[j * k + p]).sum::<f32>() + b[j];
                assert!((out[i * n + j] - want).abs() < 1e-3, "{i},{j}");
            }
        }
    }
}
