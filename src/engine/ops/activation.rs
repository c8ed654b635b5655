//! Elementwise activations (ReLU with negative slope, ELU, Sigmoid, TanH, AbsVal, BNLL, Swish, Power,
//! Exp, Log, Threshold) and PReLU, with Caffe's formulas.

use rayon::prelude::*;

use crate::model::layer::Activation;

const CHUNK: usize = 1 << 14;

pub fn activation(a: Activation, x: &[f32], out: &mut [f32]) {
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
