//! Pooling as Caffe computes it: MAX over the window clipped to the input; AVE divides by the window
//! size clipped to the padded input (so padding counts, but not the overhang past it); global pooling
//! covers the whole plane.

use rayon::prelude::*;

use crate::model::layer::{Pool, PoolMethod};

pub fn pooling(
    p: &Pool,
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    [oh, ow]: [usize; 2],
    out: &mut [f32],
) -> Result<(), String> {
    let (kernel, stride, pad) = if p.global {
        ((h, w), (1, 1), (0, 0))
    } else {
        (p.kernel.ok_or("kernel_size is required")?, p.stride, p.pad)
    };
    let method = p.method;
    if method == PoolMethod::Stochastic {
        return Err(
            "STOCHASTIC pooling is for training; at TEST Caffe's CPU code does not implement it"
                .into(),
        );
    }
    out.par_chunks_mut(oh * ow)
        .zip(x.par_chunks(h * w))
        .take(n * c)
        .for_each(|(o, plane)| {
            for py in 0..oh {
                for px in 0..ow {
                    let hs = (py * stride.0) as isize - pad.0 as isize;
                    let ws = (px * stride.1) as isize - pad.1 as isize;
                    let he = (hs + kernel.0 as isize).min((h + pad.0) as isize);
                    let we = (ws + kernel.1 as isize).min((w + pad.1) as isize);
                    let size = ((he - hs) * (we - ws)) as f32;
                    let (hs, ws) = (hs.max(0) as usize, ws.max(0) as usize);
                    let (he, we) = (he.min(h as isize) as usize, we.min(w as isize) as usize);
                    o[py * ow + px] = match method {
                        PoolMethod::Max => {
                            let mut m = f32::NEG_INFINITY;
                            for y in hs..he {
                                for v in &plane[y * w + ws..y * w + we] {
                                    m = m.max(*v);
                                }
                            }
                            m
                        }
                        _ => {
                            let mut s = 0.0f32;
                            for y in hs..he {
                                for v in &plane[y * w + ws..y * w + we] {
                                    s += *v;
                                }
                            }
                            s / size
                        }
                    };
                }
            }
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_counts_padding_but_not_overhang() {
        // 3x3 input of ones, kernel 2 stride 2 pad 1: output 2x2 (Caffe's ceil rule).
        let p = Pool {
            method: PoolMethod::Ave,
            global: false,
            kernel: Some((2, 2)),
            stride: (2, 2),
            pad: (1, 1),
            avg_include_pad: true,
        };
        let mut out = vec![0.0; 4];
        pooling(&p, &[1.0; 9], [1, 1, 3, 3], [2, 2], &mut out).unwrap();
        // Top-left window covers 1 real pixel of a 2x2 padded window: 1/4.
        assert_eq!(out, vec![0.25, 0.5, 0.5, 1.0]);
        let max = Pool {
            method: PoolMethod::Max,
            ..p
        };
        let x: Vec<f32> = (0..9).map(|i| i as f32).collect();
        pooling(&max, &x, [1, 1, 3, 3], [2, 2], &mut out).unwrap();
        assert_eq!(out, vec![0.0, 2.0, 6.0, 8.0]);
    }
}
