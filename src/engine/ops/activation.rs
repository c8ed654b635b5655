//! Elementwise activations (ReLU with negative slope, ELU, Sigmoid, TanH, AbsVal, BNLL, Swish, Power,
//! Exp, Log, Threshold) and PReLU, with Caffe's formulas.

use rayon::prelude::*;

use crate::model::layer::Activation;

const CHUNK: usize = 1 << 14;

pub fn activation(a: Activation, x: &[f32], out: &mut [f32]) {
    if let Activation::ReLU { negative_slope } = a {
        relu(negative_slope, x, out);
        return;
    }
    let f = move |v: f32| -> f32 {
        match a {
            Activation::ReLU { negative_slope } => {
                if v > 0.0 {
                    v
                } else {
                    v * negative_slope
                }
            }
            Activation::Elu { alpha } => {
                if v > 0.0 {
                    v
                } else {
                    alpha * (v.exp() - 1.0)
                }
            }
            Activation::Sigmoid => 0.5 * (0.5 * v).tanh() + 0.5,
            Activation::TanH => v.tanh(),
            Activation::AbsVal => v.abs(),
            // log(1 + e^x), computed without overflow as Caffe does.
            Activation::Bnll => {
                if v > 0.0 {
                    v + (-v).exp().ln_1p()
                } else {
                    v.exp().ln_1p()
                }
            }
            Activation::Swish { beta } => v / (1.0 + (-beta * v).exp()),
            Activation::Power {
                power,
                scale,
                shift,
            } => (shift + scale * v).powf(power),
            Activation::Exp { base, scale, shift } => {
                let ln_base = if base == -1.0 { 1.0 } else { base.ln() };
                (ln_base * (shift + scale * v)).exp()
            }
            Activation::Log { base, scale, shift } => {
                let inv_ln_base = if base == -1.0 { 1.0 } else { 1.0 / base.ln() };
                (shift + scale * v).ln() * inv_ln_base
            }
            Activation::Threshold { threshold } => {
                if v > threshold {
                    1.0
                } else {
                    0.0
                }
            }
        }
    };
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(o, i)| {
            for (o, &v) in o.iter_mut().zip(i) {
                *o = f(v);
            }
        });
}

/// ReLU in a loop of its own: with the other activations' `match` inside, the loop is not
/// vectorized (a ReLU the INT8 plan cannot fuse cost as much as a small convolution). Both sides
/// are computed and one selected, so the loop has no branch on the sign: written as a branch it
/// stayed scalar, and random signs cost a misprediction every other value. The slope is copied into
/// each task: read through the closure's reference, it was reloaded for every value.
fn relu(slope: f32, x: &[f32], out: &mut [f32]) {
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(move |(o, i)| {
            let slope = slope;
            for (o, &v) in o.iter_mut().zip(i) {
                let negative = v * slope;
                *o = if v > 0.0 { v } else { negative };
            }
        });
}

/// PReLU: a slope per channel (or one shared), for N×C×(spatial) data.
pub fn prelu(x: &[f32], n: usize, c: usize, slopes: &[f32], out: &mut [f32]) {
    let plane = x.len() / (n * c).max(1);
    out.par_chunks_mut(plane)
        .zip(x.par_chunks(plane))
        .enumerate()
        .for_each(|(i, (o, xi))| {
            let s = if slopes.len() == 1 {
                slopes[0]
            } else {
                slopes[i % c]
            };
            for (o, &v) in o.iter_mut().zip(xi) {
                *o = if v > 0.0 { v } else { v * s };
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(a: Activation, v: f32) -> f32 {
        let mut out = [0.0];
        activation(a, &[v], &mut out);
        out[0]
    }

    #[test]
    fn formulas_are_caffes() {
        let close = |a: f32, b: f64| assert!((f64::from(a) - b).abs() < 1e-6, "{a} vs {b}");
        close(
            one(
                Activation::ReLU {
                    negative_slope: 0.1,
                },
                -2.0,
            ),
            -0.2,
        );
        close(
            one(Activation::Elu { alpha: 0.5 }, -1.0),
            0.5 * ((-1.0f64).exp() - 1.0),
        );
        close(one(Activation::Sigmoid, 0.3), 1.0 / (1.0 + (-0.3f64).exp()));
        close(one(Activation::Bnll, 2.0), (1.0 + 2.0f64.exp()).ln());
        close(one(Activation::Bnll, -3.0), (1.0 + (-3.0f64).exp()).ln());
        let power = Activation::Power {
            power: 2.0,
            scale: 0.5,
            shift: 1.0,
        };
        close(one(power, 2.0), 4.0);
        // base −1 is e.
        let exp = Activation::Exp {
            base: -1.0,
            scale: 2.0,
            shift: 0.5,
        };
        close(one(exp, 1.0), 2.5f64.exp());
        let log = Activation::Log {
            base: 10.0,
            scale: 1.0,
            shift: 0.0,
        };
        close(one(log, 1000.0), 3.0);
        close(one(Activation::Threshold { threshold: 0.5 }, 0.5), 0.0);
        close(one(Activation::AbsVal, -0.25), 0.25);
        let mut out = [0.0; 4];
        prelu(&[-1.0, 1.0, -1.0, 1.0], 1, 2, &[0.1, 0.2], &mut out);
        assert_eq!(out, [-0.1, 1.0, -0.2, 1.0]);
    }
}
