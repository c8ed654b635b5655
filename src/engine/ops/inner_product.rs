//! InnerProduct: the bottom flattened from `axis` (M × K) times the weights (N × K, or K × N with
//! `transpose`), plus the bias.

use crate::engine::gemm::{sgemm, sgemm_bt};

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
    } else {
        sgemm_bt(m, k, n, x, weights, out);
    }
    if let Some(b) = bias {
        for row in out.chunks_mut(n) {
            row.iter_mut().zip(b).for_each(|(o, &bv)| *o += bv);
        }
    }
}
