//! INT8 values held as bytes (`quant::encode`): quantizing FP32 values into them, requantizing them to
//! another type and scale, dequantizing them, and ReLU on them (spec §4.2-§4.4). A byte-to-anything
//! conversion depends on the byte alone, so it is a 256-entry table computed with the scalar
//! definitions in `quant`, which keeps every path exactly the definition.

use rayon::prelude::*;

use crate::engine::gemm::requant;
use crate::engine::quant::{self, IntType};

/// Elements per parallel block.
const CHUNK: usize = 1 << 15;

/// The codes of a buffer: their type and scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Codes {
    pub ty: IntType,
    pub scale: f32,
}

/// `dst[i] = f(src[i])` in parallel blocks.
fn map<S: Copy + Sync, D: Send>(src: &[S], dst: &mut [D], f: impl Fn(S) -> D + Sync) {
    dst.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, &v)| *d = f(v)));
}

/// `dst[i] = table[src[i]]`.
fn lookup<D: Copy + Send + Sync>(src: &[u8], table: &[D; 256], dst: &mut [D]) {
    map(src, dst, |b| table[usize::from(b)]);
}

fn table<D: Copy + Default>(f: impl Fn(u8) -> D) -> [D; 256] {
    let mut t = [D::default(); 256];
    for (b, v) in t.iter_mut().enumerate() {
        *v = f(b as u8);
    }
    t
}

/// FP32 values into codes: `sat(nearbyint(x·S))`.
pub fn quantize(x: &[f32], to: Codes, out: &mut [u8]) {
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(d, s)| quantize_run(s, to, d));
}

/// `quantize` of one run, on the calling thread.
pub fn quantize_run(x: &[f32], to: Codes, out: &mut [u8]) {
    if !requant::quantize(x, to.scale, to.ty, out) {
        let q = |v| quant::encode(quant::quantize(v, to.scale, to.ty), to.ty);
        out.iter_mut().zip(x).for_each(|(d, &v)| *d = q(v));
    }
}

/// Codes into codes of another type and scale: `sat(nearbyint(q·S_to/S_from))`.
pub fn requantize(src: &[u8], from: Codes, to: Codes, out: &mut [u8]) {
    out.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| requantize_run(s, from, to, d));
}

/// `requantize` of one run, on the calling thread.
pub fn requantize_run(src: &[u8], from: Codes, to: Codes, out: &mut [u8]) {
    if !requant::bytes(src, from.ty, to.ty, to.scale / from.scale, out) {
        let t = table(|b| {
            let q = quant::decode(b, from.ty);
            quant::encode(quant::requantize(q, from.scale, to.scale, to.ty), to.ty)
        });
        out.iter_mut()
            .zip(src)
            .for_each(|(d, &b)| *d = t[usize::from(b)]);
    }
}

/// The FP32 values of codes quantized to other codes, `sat(nearbyint((q / S_from)·S_to))`: what a
/// layer that quantizes its FP32 input reads from an FP32 layer that passed codes' values on.
pub fn quantize_values_of(src: &[u8], from: Codes, to: Codes, out: &mut [u8]) {
    let t = table(|b| {
        let v = quant::dequantize(quant::decode(b, from.ty), from.scale);
        quant::encode(quant::quantize(v, to.scale, to.ty), to.ty)
    });
    lookup(src, &t, out);
}

/// Intel's skipped reorder from an s8 "sum" buffer to u8 at the same scale: the s8 bytes (two's
/// complement) read as u8, so negative codes become 128..255.
pub fn reinterpret_s8_as_u8(src: &[u8], out: &mut [u8]) {
    // The stored byte is the code + 128, so the code's two's complement byte is the stored byte
    // with its top bit flipped (the unit test checks it against the decoded codes).
    map(src, out, |b| b ^ 0x80);
}

/// Codes into FP32 values: `q / S`.
pub fn dequantize(src: &[u8], from: Codes, out: &mut [f32]) {
    out.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| dequantize_run(s, from, d));
}

/// `dequantize` of one run, on this thread.
pub fn dequantize_run(src: &[u8], from: Codes, out: &mut [f32]) {
    if !requant::dequantize(src, from.ty, from.scale, out) {
        let t = table(|b| quant::dequantize(quant::decode(b, from.ty), from.scale));
        out.iter_mut()
            .zip(src)
            .for_each(|(d, &b)| *d = t[usize::from(b)]);
    }
}

/// ReLU on codes in place (MKL-DNN's standalone ReLU keeps the type and scale): negatives times the
/// slope, rounded and saturated.
pub fn relu(buf: &mut [u8], ty: IntType, slope: f32) {
    let t = table(|b| {
        let q = quant::decode(b, ty);
        if q < 0 {
            quant::encode(quant::round_saturate(q as f32 * slope, ty), ty)
        } else {
            b
        }
    });
    buf.par_chunks_mut(CHUNK)
        .for_each(|c| c.iter_mut().for_each(|b| *b = t[usize::from(*b)]));
}

#[cfg(test)]
mod tests {
    use super::*;

    const U8: IntType = IntType::U8;
    const S8: IntType = IntType::S8;

    #[test]
    fn conversions_follow_the_scalar_definitions() {
        let x = [-3.3f32, -0.26, 0.0, 0.25, 0.75, 2.5, 40.0];
        let mut b = [0u8; 7];
        quantize(&x, Codes { ty: S8, scale: 2.0 }, &mut b);
        let codes: Vec<i32> = b.iter().map(|&v| quant::decode(v, S8)).collect();
        assert_eq!(codes, [-7, -1, 0, 0, 2, 5, 80]);
        let mut u = [0u8; 7];
        quantize(
            &x,
            Codes {
                ty: U8,
                scale: 10.0,
            },
            &mut u,
        );
        assert_eq!(u, [0, 0, 0, 2, 8, 25, 255]);
        // s8 codes at scale 2 to u8 at scale 3: q·1.5, negatives saturate to 0.
        let mut r = [0u8; 7];
        requantize(
            &b,
            Codes { ty: S8, scale: 2.0 },
            Codes { ty: U8, scale: 3.0 },
            &mut r,
        );
        assert_eq!(r, [0, 0, 0, 0, 3, 8, 120]);
        let mut f = [0f32; 7];
        dequantize(&b, Codes { ty: S8, scale: 2.0 }, &mut f);
        assert_eq!(f, [-3.5, -0.5, 0.0, 0.0, 1.0, 2.5, 40.0]);
        let mut raw = [0u8; 7];
        reinterpret_s8_as_u8(&b, &mut raw);
        assert_eq!(raw, [249, 255, 0, 0, 2, 5, 80]);
        let every: Vec<u8> = (0..=255).collect();
        let mut flipped = vec![0u8; 256];
        reinterpret_s8_as_u8(&every, &mut flipped);
        for (&b, &f) in every.iter().zip(&flipped) {
            assert_eq!(f, quant::decode(b, S8) as i8 as u8, "byte {b}");
        }
        let mut l = b;
        relu(&mut l, S8, 0.5);
        let leaky: Vec<i32> = l.iter().map(|&v| quant::decode(v, S8)).collect();
        // -7·0.5 = -3.5 → -4 (ties to even), -1·0.5 = -0.5 → 0.
        assert_eq!(leaky, [-4, 0, 0, 0, 2, 5, 80]);
    }
}
