//! The f32 matrix product the convolution and InnerProduct ops use: ndarray's `general_mat_mul`
//! (matrixmultiply's blocked kernels, 87 GFLOP/s on one core of this machine per notes/rust-stack.md).
//! The `gemm` crate was measured in its place (batch 8, 2 threads, interleaved runs): SqueezeNet 153-154 ms
//! against 136-139 ms here, MobileNet 5.8 against 5.1 ms, ResNet-8 3.2 against 3.4 ms; so this one stays.

use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder};

/// `c = a × b` (row-major slices), with `a` m×k, `b` k×n, `c` m×n; `accumulate` adds to `c`.
pub fn sgemm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32], accumulate: bool) {
    let (Ok(a), Ok(b), Ok(mut c)) = (
        ArrayView2::from_shape((m, k), a),
        ArrayView2::from_shape((k, n), b),
        ArrayViewMut2::from_shape((m, n), c),
    ) else {
        unreachable!("sgemm called with slices that do not match {m}x{k}x{n}");
    };
    ndarray::linalg::general_mat_mul(1.0, &a, &b, if accumulate { 1.0 } else { 0.0 }, &mut c);
}

/// `c = a × b` where `c` is an m×n block of a larger row-major matrix with row stride `ldc`
/// (a tile of columns of a convolution's output).
pub fn sgemm_into(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32], ldc: usize) {
    let (Ok(a), Ok(b)) = (
        ArrayView2::from_shape((m, k), a),
        ArrayView2::from_shape((k, n), b),
    ) else {
        unreachable!("sgemm_into called with slices that do not match {m}x{k}x{n}");
    };
    let len = if m == 0 { 0 } else { (m - 1) * ldc + n };
    let Ok(mut c) = ArrayViewMut2::from_shape((m, n).strides((ldc, 1)), &mut c[..len]) else {
        unreachable!("sgemm_into: output block {m}x{n} with stride {ldc} does not fit");
    };
    ndarray::linalg::general_mat_mul(1.0, &a, &b, 0.0, &mut c);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_match_a_naive_loop() {
        let (m, k, n) = (3, 4, 5);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 2.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32).sin()).collect();
        let mut c = vec![0.0; m * n];
        sgemm(m, k, n, &a, &b, &mut c, false);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                assert!((c[i * n + j] - want).abs() < 1e-5);
            }
        }
    }
}
