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
    // Window bounds depend only on the output row or column: compute them once per layer.
    let windows =
        |len: usize, k: usize, st: usize, p: usize, outs: usize| -> Vec<(usize, usize, f32)> {
            (0..outs)
                .map(|o| {
                    let start = (o * st) as isize - p as isize;
                    let end = (start + k as isize).min((len + p) as isize);
                    let size = (end - start) as f32;
                    (start.max(0) as usize, end.min(len as isize) as usize, size)
                })
                .collect()
        };
    let rows = windows(h, kernel.0, stride.0, pad.0, oh);
    let cols = windows(w, kernel.1, stride.1, pad.1, ow);
    out.par_chunks_mut(oh * ow)
        .zip(x.par_chunks(h * w))
        .take(n * c)
        .for_each(|(o, plane)| {
            for (py, &(hs, he, hsize)) in rows.iter().enumerate() {
                let line = &mut o[py * ow..(py + 1) * ow];
                for (v, &(ws, we, wsize)) in line.iter_mut().zip(&cols) {
                    *v = match method {
                        PoolMethod::Max => {
                            // Caffe starts from -FLT_MAX and keeps strictly greater values.
                            let mut m = -f32::MAX;
                            for y in hs..he {
                                for &e in &plane[y * w + ws..y * w + we] {
                                    if e > m {
                                        m = e;
                                    }
                                }
                            }
                            m
                        }
                        _ => {
                            let mut sum = 0.0f32;
                            for y in hs..he {
                                for &e in &plane[y * w + ws..y * w + we] {
                                    sum += e;
                                }
                            }
                            sum / (hsize * wsize)
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
