//! Ops that move data without arithmetic on it (or with only a sum/product/max): Eltwise, Concat, Slice,
//! Permute, Crop, Tile, Reduction.

use rayon::prelude::*;

use crate::model::layer::{EltwiseOp, ReductionOp};

/// Elements per parallel block of Eltwise (64 KB: large enough to be worth a task).
const ELTWISE_BLOCK: usize = 16 * 1024;

pub fn eltwise<'a>(
    op: EltwiseOp,
    coeff: &[f32],
    inputs: &[&'a [f32]],
    out: &mut [f32],
) -> Result<(), String> {
    if !coeff.is_empty() && (coeff.len() != inputs.len() || op != EltwiseOp::Sum) {
        return Err(format!(
            "{} coefficients for {} inputs (coefficients are for SUM only)",
            coeff.len(),
            inputs.len()
        ));
    }
    if inputs.is_empty() || inputs.iter().any(|x| x.len() != out.len()) {
        return Err("the inputs must all have the output's size".into());
    }
    let c = |i: usize| coeff.get(i).copied().unwrap_or(1.0);
    // Blocks of the output in parallel; within a block the inputs are combined in order, as Caffe does.
    out.par_chunks_mut(ELTWISE_BLOCK)
        .enumerate()
        .for_each(|(b, o)| {
            let range = b * ELTWISE_BLOCK..b * ELTWISE_BLOCK + o.len();
            let part = |x: &'a [f32]| -> &'a [f32] { &x[range.clone()] };
            match op {
                EltwiseOp::Sum => {
                    o.iter_mut()
                        .zip(part(inputs[0]))
                        .for_each(|(o, &v)| *o = c(0) * v);
                    for (i, x) in inputs.iter().enumerate().skip(1) {
                        o.iter_mut().zip(part(x)).for_each(|(o, &v)| *o += c(i) * v);
                    }
                }
                EltwiseOp::Prod => {
                    o.copy_from_slice(part(inputs[0]));
                    for x in &inputs[1..] {
                        o.iter_mut().zip(part(x)).for_each(|(o, &v)| *o *= v);
                    }
                }
                EltwiseOp::Max => {
                    o.copy_from_slice(part(inputs[0]));
                    for x in &inputs[1..] {
                        o.iter_mut().zip(part(x)).for_each(|(o, &v)| *o = o.max(v));
                    }
                }
            }
        });
    Ok(())
}

/// Concatenation along `axis`: inputs with shapes equal except at the axis. Each outer index (the
/// image, for axis 1) is copied in parallel.
pub fn concat(inputs: &[(&[f32], &[usize])], axis: usize, out: &mut [f32]) {
    let total: usize = inputs
        .iter()
        .map(|(_, d)| d[axis..].iter().product::<usize>())
        .sum();
    out.par_chunks_mut(total.max(1))
        .enumerate()
        .for_each(|(o, dst)| {
            let mut offset = 0;
            for (x, d) in inputs {
                let block: usize = d[axis..].iter().product();
                dst[offset..offset + block].copy_from_slice(&x[o * block..(o + 1) * block]);
                offset += block;
            }
        });
}

/// Slicing along `axis` into outputs with the given sizes at that axis.
pub fn slice(x: &[f32], dims: &[usize], axis: usize, outs: &mut [&mut [f32]]) {
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    let total = dims[axis] * inner;
    let mut offset = 0;
    for out in outs.iter_mut() {
        let block = out.len() / outer.max(1);
        for o in 0..outer {
            out[o * block..(o + 1) * block]
                .copy_from_slice(&x[o * total + offset..o * total + offset + block]);
        }
        offset += block;
    }
}

/// Axis permutation: output axis i is input axis `order[i]` (order completed with the remaining axes).
pub fn permute(x: &[f32], dims: &[usize], order: &[usize], out: &mut [f32]) {
    let rank = dims.len();
    let mut full: Vec<usize> = order.to_vec();
    full.extend((0..rank).filter(|a| !order.contains(a)));
    let out_dims: Vec<usize> = full.iter().map(|&a| dims[a]).collect();
    let mut in_strides = vec![1usize; rank];
    for a in (0..rank.saturating_sub(1)).rev() {
        in_strides[a] = in_strides[a + 1] * dims[a + 1];
    }
    let strides: Vec<usize> = full.iter().map(|&a| in_strides[a]).collect();
    let mut idx = vec![0usize; rank];
    for o in out.iter_mut() {
        *o = x[idx.iter().zip(&strides).map(|(i, s)| i * s).sum::<usize>()];
        for a in (0..rank).rev() {
            idx[a] += 1;
            if idx[a] < out_dims[a] {
                break;
            }
            idx[a] = 0;
        }
    }
}

/// Crop of `x` (dims) to `out_dims` starting at `offsets` (one per axis, zeros before the crop axis).
pub fn crop(x: &[f32], dims: &[usize], out_dims: &[usize], offsets: &[usize], out: &mut [f32]) {
    let rank = dims.len();
    let mut in_strides = vec![1usize; rank];
    for a in (0..rank.saturating_sub(1)).rev() {
        in_strides[a] = in_strides[a + 1] * dims[a + 1];
    }
    let mut idx = vec![0usize; rank];
    for o in out.iter_mut() {
        *o = x[(0..rank)
            .map(|a| (idx[a] + offsets[a]) * in_strides[a])
            .sum::<usize>()];
        for a in (0..rank).rev() {
            idx[a] += 1;
            if idx[a] < out_dims[a] {
                break;
            }
            idx[a] = 0;
        }
    }
}

pub fn tile(x: &[f32], dims: &[usize], axis: usize, tiles: usize, out: &mut [f32]) {
    let outer: usize = dims[..axis].iter().product();
    let block: usize = dims[axis..].iter().product();
    for o in 0..outer {
        for t in 0..tiles {
            out[(o * tiles + t) * block..(o * tiles + t + 1) * block]
                .copy_from_slice(&x[o * block..(o + 1) * block]);
        }
    }
}

pub fn reduction(op: ReductionOp, coeff: f32, x: &[f32], outer: usize, out: &mut [f32]) {
    let inner = x.len() / outer.max(1);
    for (o, chunk) in out.iter_mut().zip(x.chunks(inner.max(1))) {
        let v: f32 = match op {
            ReductionOp::Sum => chunk.iter().sum(),
            ReductionOp::Asum => chunk.iter().map(|v| v.abs()).sum(),
            ReductionOp::SumSq => chunk.iter().map(|v| v * v).sum(),
            ReductionOp::Mean => chunk.iter().sum::<f32>() / inner as f32,
        };
        *o = v * coeff;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_slice_permute_round_trip() {
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [5.0, 6.0];
        let mut out = [0.0; 6];
        concat(&[(&a, &[2, 2]), (&b, &[2, 1])], 1, &mut out);
        assert_eq!(out, [1.0, 2.0, 5.0, 3.0, 4.0, 6.0]);
        let (mut s1, mut s2) = ([0.0; 4], [0.0; 2]);
        slice(&out, &[2, 3], 1, &mut [&mut s1, &mut s2]);
        assert_eq!((s1, s2), (a, b));
        let mut p = [0.0; 6];
        permute(&out, &[2, 3], &[1, 0], &mut p);
        assert_eq!(p, [1.0, 3.0, 2.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn crop_tile_and_reduction_follow_caffe() {
        // 1×1×3×4 cropped from axis 2 to 2×2 at offsets (1, 2).
        let x: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let mut out = [0.0; 4];
        crop(&x, &[1, 1, 3, 4], &[1, 1, 2, 2], &[0, 0, 1, 2], &mut out);
        assert_eq!(out, [6.0, 7.0, 10.0, 11.0]);
        // 2×2 tiled 3 times along axis 1: each row repeated.
        let mut tiled = [0.0; 12];
        tile(&[1.0, 2.0, 3.0, 4.0], &[2, 2], 1, 3, &mut tiled);
        assert_eq!(
            tiled,
            [1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 4.0, 3.0, 4.0]
        );
        // Two rows reduced with coefficient 2.
        let v = [1.0, -2.0, 3.0, -4.0];
        let mut r = [0.0; 2];
        for (op, want) in [
            (ReductionOp::Sum, [-2.0, -2.0]),
            (ReductionOp::Asum, [6.0, 14.0]),
            (ReductionOp::SumSq, [10.0, 50.0]),
            (ReductionOp::Mean, [-1.0, -1.0]),
        ] {
            reduction(op, 2.0, &v, 2, &mut r);
            assert_eq!(r, want, "{op:?}");
        }
    }
}
