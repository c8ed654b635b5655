//! The integer arithmetic of Intel Caffe's INT8 layers (MKL-DNN, spec/intel-calibrator.md §4.2-§4.4),
//! one small function per step, each computed in f32 in the order MKL-DNN does: a scale multiplies
//! (q = x·S), rounding is to nearest with ties to even (`nearbyint` under the default MXCSR), and every
//! store to u8/s8 saturates.

/// The integer type of an INT8 buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntType {
    U8,
    S8,
}

impl IntType {
    fn range(self) -> (f32, f32) {
        match self {
            Self::U8 => (0.0, 255.0),
            Self::S8 => (-128.0, 127.0),
        }
    }

    /// The byte that stores code 0. Buffers hold codes as bytes, s8 ones offset by +128 so that every
    /// INT8 buffer feeds the u8 × s8 kernels as it is (the s8 offset is corrected with the weight sums).
    pub fn zero_byte(self) -> u8 {
        match self {
            Self::U8 => 0,
            Self::S8 => 128,
        }
    }
}

/// The stored byte of a code already in the type's range.
#[inline]
pub fn encode(code: i32, ty: IntType) -> u8 {
    (code + i32::from(ty.zero_byte())) as u8
}

/// The code a stored byte holds.
#[inline]
pub fn decode(byte: u8, ty: IntType) -> i32 {
    i32::from(byte) - i32::from(ty.zero_byte())
}

/// `sat(nearbyint(v))` into the type's range. Clamping first and rounding after gives the same result
/// (the bounds are integers), and keeps |v| small enough for `round_even_small`.
pub fn round_saturate(v: f32, ty: IntType) -> i32 {
    let (lo, hi) = ty.range();
    round_even_small(v.clamp(lo, hi)) as i32
}

/// Nearest integer, ties to even, for |v| ≤ 2^22: adding and removing 1.5·2^23 leaves the rounding to
/// the FPU's default mode (nearest-even). Without SSE4.1 in the baseline target, `round_ties_even`
/// is a library call on every value; this is two additions.
#[inline]
fn round_even_small(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

/// FP32 input to INT8: `sat(nearbyint(x · s_in))`.
pub fn quantize(x: f32, s_in: f32, ty: IntType) -> i32 {
    round_saturate(x * s_in, ty)
}

/// A weight to s8 with its output channel's scale.
pub fn quantize_weight(w: f32, s_w: f32) -> i8 {
    round_saturate(w * s_w, IntType::S8) as i8
}

/// The s32 bias: `nearbyint(b · (s_in · s_w))`, or `nearbyint(b)` for a channel whose weight scale is 0
/// (all-zero weights; Intel then takes the bias in real units).
pub fn quantize_bias(b: f32, s_in: f32, s_w: f32) -> i32 {
    let scale = if s_w == 0.0 { 1.0 } else { s_in * s_w };
    let v = (b * scale).round_ties_even();
    v.clamp(i32::MIN as f32, i32::MAX as f32) as i32
}

/// The factor from accumulator units to output units: `s_out / (s_in · s_w)` (`s_out` when s_w = 0).
pub fn output_factor(s_in: f32, s_w: f32, s_out: f32) -> f32 {
    if s_w == 0.0 {
        s_out
    } else {
        s_out / (s_in * s_w)
    }
}

/// Requantization of an INT8 buffer to another scale or type: `sat(nearbyint(q · (s_to / s_from)))`.
pub fn requantize(q: i32, s_from: f32, s_to: f32, ty: IntType) -> i32 {
    round_saturate(q as f32 * (s_to / s_from), ty)
}

/// An INT8 value back to FP32: `q · (1 / s)`.
pub fn dequantize(q: i32, s: f32) -> f32 {
    q as f32 * (1.0 / s)
}

/// What follows the products in an INT8 convolution or InnerProduct, per output channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Requant {
    /// `output_factor`, times the second Eltwise coefficient of a fused sum with two coefficients.
    pub factor: f32,
    /// The sum post-op's factor on the residual already in the buffer: (s_out / s_res) · coeff[0].
    pub sum: Option<f32>,
    /// ReLU post-op slope (0 for a plain ReLU).
    pub relu: Option<f32>,
}

impl Requant {
    /// The output value before its store: y = (acc + q_b) · factor; y += sum · residual; ReLU.
    /// `acc` and `q_b` are converted to f32 and added there, as MKL-DNN's kernel does.
    pub fn apply(&self, acc: i32, q_b: i32, residual: f32) -> f32 {
        let mut y = (acc as f32 + q_b as f32) * self.factor;
        if let Some(s) = self.sum {
            y = residual.mul_add(s, y);
        }
        if let Some(slope) = self.relu
            && y < 0.0
        {
            y *= slope;
        }
        y
    }
}

/// INT8 average pooling of `n` values: `nearbyint(Σq / n)` with the sum in 32-bit integers.
pub fn average(sum: i32, n: usize) -> i32 {
    (sum as f32 / n as f32).round_ties_even() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_rounding_is_round_ties_even() {
        for i in -2_000_000..2_000_000 {
            let v = i as f32 * 0.25 + 0.125 * (i % 3) as f32;
            assert_eq!(round_even_small(v), v.round_ties_even(), "{v}");
        }
    }

    #[test]
    fn rounding_is_to_even_and_saturating() {
        assert_eq!(quantize(0.5, 1.0, IntType::U8), 0);
        assert_eq!(quantize(1.5, 1.0, IntType::U8), 2);
        assert_eq!(quantize(2.5, 1.0, IntType::S8), 2);
        assert_eq!(quantize(-2.5, 1.0, IntType::S8), -2);
        assert_eq!(quantize(-0.7, 10.0, IntType::U8), 0);
        assert_eq!(quantize(30.0, 10.0, IntType::U8), 255);
        assert_eq!(quantize(-30.0, 10.0, IntType::S8), -128);
        assert_eq!(quantize_weight(0.01, 12700.0), 127);
        assert_eq!(quantize_weight(-0.0051, 12700.0), -65);
    }

    #[test]
    fn bias_uses_the_product_of_the_scales_or_real_units() {
        // 0.3 · (15.1368 · 388.338) = 0.3 · 5878.2… = 1763.46… → 1763.
        assert_eq!(quantize_bias(0.3, 15.1368, 388.338), 1763);
        assert_eq!(quantize_bias(2.6, 15.0, 0.0), 3);
        assert_eq!(output_factor(15.0, 0.0, 19.0), 19.0);
        assert!(
            (output_factor(15.1368, 388.338, 19.0237) - 19.0237 / (15.1368 * 388.338)).abs()
                < 1e-12
        );
    }

    #[test]
    fn requantization_order_is_bias_then_scale_then_sum_then_relu() {
        // acc 1000, bias 24, factor 0.01: (1000 + 24) · 0.01 = 10.24.
        let plain = Requant {
            factor: 0.01,
            sum: None,
            relu: None,
        };
        assert!((plain.apply(1000, 24, 0.0) - 10.24).abs() < 1e-5);
        // Sum post-op: 10.24 + 0.5 · (−30) = −4.76; then ReLU with slope 0 gives 0, with 0.1 gives −0.476.
        let sum = Requant {
            sum: Some(0.5),
            ..plain
        };
        assert!((sum.apply(1000, 24, -30.0) + 4.76).abs() < 1e-5);
        let relu = Requant {
            relu: Some(0.0),
            ..sum
        };
        assert_eq!(relu.apply(1000, 24, -30.0), 0.0);
        let leaky = Requant {
            relu: Some(0.1),
            ..sum
        };
        assert!((leaky.apply(1000, 24, -30.0) + 0.476).abs() < 1e-5);
        // The ReLU comes after the sum: a negative product lifted by the residual stays.
        assert!((relu.apply(-1000, 0, 40.0) - 10.0).abs() < 1e-5);
        // Stored to u8 / s8: rounding to even, saturating.
        assert_eq!(round_saturate(plain.apply(1000, 50, 0.0), IntType::U8), 10);
        assert_eq!(
            round_saturate(
                Requant {
                    factor: 1.0,
                    ..plain
                }
                .apply(300, 0, 0.0),
                IntType::S8
            ),
            127
        );
    }

    #[test]
    fn requantize_dequantize_and_average() {
        // From scale 10 to scale 4: 25 · 0.4 = 10.
        assert_eq!(requantize(25, 10.0, 4.0, IntType::U8), 10);
        assert_eq!(requantize(-100, 10.0, 40.0, IntType::S8), -128);
        assert!((dequantize(51, 25.5) - 2.0).abs() < 1e-6);
        assert_eq!(average(10, 4), 2);
        assert_eq!(average(14, 4), 4);
        assert_eq!(average(-6, 4), -2);
    }
}
