//! INT8 Convolution as MKL-DNN runs it for Intel Caffe (spec §4.2): s8 weights per output channel, an
//! s32 bias, u8 or s8 input codes, exact int32 sums (`gemm::int8`), then per output channel the
//! requantization of `quant::Requant` (scale, sum post-op on the residual in the buffer, ReLU) and a
//! store as u8, s8 or f32. Input and output codes are bytes (`quant::encode`: s8 shifted to u8), in
//! the engine's N×C×H×W order.

use std::cell::RefCell;
use std::sync::LazyLock;

use rayon::prelude::*;

use super::conv::Geometry;
use super::phases::{PhaseGrid, subsample};
use crate::engine::gemm::int8::amx::{self, AmxWeights};
use crate::engine::gemm::int8::{
    GridRows, Isa8, PackedS8, Quads, Requantized, RowsU8, Scratch8, gemm_u8s8, gemm_u8s8_quads,
    gemm_u8s8_requant, interleave_quads, interleave_quads_split, multiply_add_u8,
};
use crate::engine::gemm::requant::{self, RowParams};
use crate::engine::quant::{self, IntType, Requant};

/// How an INT8 convolution stores its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Int(IntType),
    F32,
}

/// A convolution prepared for INT8: quantized weights packed per group, s32 biases and the
/// requantization of each output channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Conv {
    pub geometry: Geometry,
    pub input: IntType,
    pub store: Store,
    /// Weights packed per group for the GEMM (empty for a depthwise convolution).
    groups: Vec<PackedS8>,
    /// With VNNI, the same weights per group with their depth in channel-quad order (tap, quad,
    /// channel in the quad; `quad_weights`), for the product on channel quads.
    quads: Vec<QuadWeights>,
    /// A depthwise convolution's weights, kh·kw per channel, for its direct loop.
    depthwise: Option<Vec<i8>>,
    outputs: usize,
    /// Per output channel: the s32 bias, the s8 correction (128·Σw for s8 input shifted to u8), the
    /// output factor, sum and ReLU, and the stored type.
    row_params: Vec<RowParams>,
}

/// The scales and post-ops of an INT8 convolution.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Params<'a> {
    pub scale_in: f32,
    pub scale_out: f32,
    /// One per output channel.
    pub scale_params: &'a [f32],
    pub input: IntType,
    pub store: Store,
    /// Sum post-op factor on the residual: (scale_out / scale_res) · coeff[0].
    pub sum: Option<f32>,
    /// A second Eltwise coefficient multiplies the convolution's own term.
    pub own_coeff: f32,
    pub relu: Option<f32>,
}

impl Int8Conv {
    /// Quantizes (folded) weights and bias: `outputs` × (channels/group · kh · kw) weights.
    pub fn new(
        weights: &[f32],
        bias: &[f32],
        geometry: Geometry,
        (outputs, channels): (usize, usize),
        p: &Int8Params,
    ) -> Result<Self, String> {
        let k = channels / geometry.group * geometry.kernel[0] * geometry.kernel[1];
        if weights.len() != outputs * k || bias.len() != outputs || p.scale_params.len() != outputs
        {
            return Err(format!(
                "{} weights, {} biases and {} weight scales for {outputs} outputs of depth {k}",
                weights.len(),
                bias.len(),
                p.scale_params.len()
            ));
        }
        let q: Vec<i8> = weights
            .chunks(k.max(1))
            .zip(p.scale_params)
            .flat_map(|(w, &s)| w.iter().map(move |&v| quant::quantize_weight(v, s)))
            .collect();
        let mg = outputs / geometry.group;
        // An s8 input shifted by +128 subtracts 128·Σw per output channel.
        let shift = i32::from(p.input.zero_byte());
        let ty = match p.store {
            Store::Int(t) => t,
            Store::F32 => IntType::S8,
        };
        let row_params = q
            .chunks(k.max(1))
            .zip(bias)
            .zip(p.scale_params)
            .map(|((w, &b), &s)| RowParams {
                comp: shift * w.iter().map(|&v| i32::from(v)).sum::<i32>(),
                bias: quant::quantize_bias(b, p.scale_in, s),
                factor: quant::output_factor(p.scale_in, s, p.scale_out) * p.own_coeff,
                sum: p.sum,
                relu: p.relu,
                ty,
                then: None,
            })
            .collect();
        let taps = geometry.kernel[0] * geometry.kernel[1];
        // Packing a strip per call costs about as much as the products of a few panels, and the
        // quads are read from as many places as the depth has groups: they pay off for kernels
        // wider than 1×1 (the packed strip repeats each value per tap) with few output channels.
        let cg = channels / geometry.group;
        let on_amx = *amx::AVAILABLE && cg.div_ceil(4) >= AMX_MIN_QUADS;
        let on_quads = taps > 1 && (on_amx || mg <= QUADS_MAX_OUTPUTS.max(QUADS_SMALL_MAP_OUTPUTS));
        let quads = if *FUSES && on_quads && !geometry.is_depthwise(channels, outputs) {
            q.chunks((mg * k).max(1))
                .take(geometry.group)
                .map(|w| quad_weights(w, mg, channels / geometry.group, taps))
                .collect()
        } else {
            Vec::new()
        };
        let (groups, depthwise) = if geometry.is_depthwise(channels, outputs) {
            (Vec::new(), Some(q))
        } else {
            let packed = q
                .chunks((mg * k).max(1))
                .take(geometry.group)
                .map(|w| PackedS8::new(w, mg, k))
                .collect();
            (packed, None)
        };
        Ok(Self {
            geometry,
            input: p.input,
            store: p.store,
            groups,
            quads,
            depthwise,
            outputs,
            row_params,
        })
    }
}

/// The most output channels per group that run on channel quads (measured with `bench`: ResNet-8's
/// 16-32-channel 3×3 layers gain; SqueezeNet's 64-256-channel 3×3 layers and its 1×1 layers,
/// `conv_final` most, are slower on quads; with 64 here SqueezeNet lost about 3%, ResNet-8 gained 3%).
const QUADS_MAX_OUTPUTS: usize = 32;

/// The fewest input channel quads per group for AMX (measured with `bench`, batch 8). A tile product
/// costs about the same for 4 quads as for 8 (6.3 against 8.3 ns), so 16-channel inputs (ResNet-8's
/// `res1_branch2a`, `res2_branch2a`) gained little on one thread, and on two the tile unit's use
/// slowed the whole pass, its FP32 convolutions too (ResNet-8's INT8 0.456 → 0.475 ms, medians of
/// 300 passes over 6 rounds). From 8 quads on, SqueezeNet's 3×3 expand layers take half the time
/// (`fire8/conv3x3_2` 1.87 → 0.94 ms) and ResNet-8's 32-64 channel layers a quarter less.
const AMX_MIN_QUADS: usize = 8;

/// Up to this many output positions, layers of up to `QUADS_SMALL_MAP_OUTPUTS` channels per group
/// also run on quads (ResNet-8's 64-channel 8×8 layers: `res3_branch2b` 0.16 → 0.13 ms, one thread).
const QUADS_SMALL_MAP: usize = 16 * 16;
const QUADS_SMALL_MAP_OUTPUTS: usize = 64;

/// One group's weights (`rows` × channels·taps, channel-major) with the depth reordered to (tap,
/// quad of four channels, channel in the quad), the channels padded to whole quads with zero weights.
/// The sums are integers, so the order changes nothing; it is the order of `gemm::int8::Quads`.
fn quad_weights(w: &[i8], rows: usize, channels: usize, taps: usize) -> QuadWeights {
    let nq = channels.div_ceil(4);
    let depth = taps * nq * 4;
    let mut a = vec![0i8; rows * depth];
    for (r, row) in w.chunks(channels * taps).enumerate().take(rows) {
        for (c, per_tap) in row.chunks(taps).enumerate() {
            for (t, &v) in per_tap.iter().enumerate() {
                a[r * depth + (t * nq + c / 4) * 4 + c % 4] = v;
            }
        }
    }
    QuadWeights {
        vnni: PackedS8::new(&a, rows, depth),
        amx: (*amx::AVAILABLE && nq >= AMX_MIN_QUADS).then(|| AmxWeights::new(&a, rows, taps, nq)),
    }
}

/// A group's weights for the product on channel quads: packed for the VNNI kernel, and as AMX tiles
/// where AMX runs (the same sums, at two to three times VNNI's rate here).
#[derive(Debug, Clone, PartialEq)]
struct QuadWeights {
    vnni: PackedS8,
    amx: Option<AmxWeights>,
}

/// Int32 sums per chunk of a convolution's output rows (512 KB), requantized while in L2 (tests use
/// chunks of one or a few rows, so that every path is exercised).
#[cfg(not(test))]
const ACC_CHUNK: usize = 1 << 17;
#[cfg(test)]
const ACC_CHUNK: usize = 150;

/// Per-thread buffers: the image's phases, row starts, the int32 wide output, GEMM
/// scratch.
#[derive(Debug, Default)]
struct Buffers {
    /// Per output channel requantization with a second factor (placed in a Concat).
    params: Vec<RowParams>,
    image: Vec<u8>,
    /// The image's phases as channel quads (`gemm::int8::Quads`) and the start of each depth group.
    quads: Vec<u8>,
    quad_starts: Vec<usize>,
    taps: Vec<usize>,
    starts: Vec<usize>,
    acc: Vec<i32>,
    gemm: Scratch8,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
}

/// Where an INT8 convolution stores its output: the bytes of codes of the layer's type, or FP32
/// values. With a sum post-op it holds the residual on entry (codes of the same type, or values).
#[derive(Debug)]
pub enum Out<'a> {
    Codes(&'a mut [u8]),
    F32(&'a mut [f32]),
}

/// An output element type: how it reads as a residual and how a requantized value is stored in it.
trait Sink: Requantized + Send {
    fn residual(self, ty: IntType) -> f32;
    fn store(y: f32, ty: IntType) -> Self;

    /// Whether the product's kernel requantizes sums in its registers on this CPU.
    fn fuses() -> bool {
        *FUSES
    }

    /// The vectorized requantization of a run, when there is one for this type and CPU.
    fn vectorized(_: &RowParams, _: &[i32], _: (usize, usize), _: &mut [Self]) -> bool {
        false
    }
}

impl Sink for u8 {
    #[inline]
    fn residual(self, ty: IntType) -> f32 {
        quant::decode(self, ty) as f32
    }

    #[inline]
    fn store(y: f32, ty: IntType) -> Self {
        quant::encode(quant::round_saturate(y, ty), ty)
    }

    fn vectorized(p: &RowParams, acc: &[i32], rows: (usize, usize), dst: &mut [Self]) -> bool {
        requant::rows_u8(p, acc, rows, dst)
    }
}

impl Sink for f32 {
    #[inline]
    fn residual(self, _: IntType) -> f32 {
        self
    }

    #[inline]
    fn store(y: f32, _: IntType) -> Self {
        y
    }

    fn vectorized(p: &RowParams, acc: &[i32], rows: (usize, usize), dst: &mut [Self]) -> bool {
        requant::rows_f32(p, acc, rows, dst)
    }
}

/// Where a convolution's outputs go in its output buffer: images `image_len` apart, the channels from
/// `offset` on (a Concat's buffer), each code requantized once more by `then` when given (to the
/// Concat's scale, rounded twice as when the Concat requantizes it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    pub image_len: usize,
    pub offset: usize,
    pub then: Option<f32>,
}

/// Whether the packed weights' kernel requantizes in its registers (VNNI).
static FUSES: LazyLock<bool> = LazyLock::new(|| Isa8::detect() == Isa8::Vnni);

/// Runs the convolution on N×C×H×W input codes `x` (bytes of the convolution's input type) into
/// `out` (N×M×OH×OW, or placed as `at` says).
pub fn convolution_int8(
    conv: &Int8Conv,
    x: &[u8],
    dims: [usize; 4],
    out: Out,
    at: Option<Placement>,
) {
    match out {
        Out::Codes(o) => per_image(conv, x, dims, o, at),
        Out::F32(o) => per_image(conv, x, dims, o, at),
    }
}

fn per_image<T: Sink>(
    conv: &Int8Conv,
    x: &[u8],
    [n, c, h, w]: [usize; 4],
    out: &mut [T],
    at: Option<Placement>,
) {
    let g = &conv.geometry;
    let (oh, ow) = g.out_size(h, w);
    let len = conv.outputs * oh * ow;
    let at = at.unwrap_or(Placement {
        image_len: len,
        offset: 0,
        then: None,
    });
    if at.image_len < at.offset + len {
        return;
    }
    out.par_chunks_mut(at.image_len)
        .zip(x.par_chunks(c * h * w))
        .take(n)
        .for_each(|(o, img)| {
            let o = &mut o[at.offset..at.offset + len];
            BUFFERS.with_borrow_mut(|b| image_int8(conv, img, [c, h, w], b, o, at.then));
        });
}

/// One image: per group, the phases of its channels (or the planes themselves at stride 1 without
/// padding), the integer product on the phase grid, then each output requantized from its accumulator
/// and the residual in `o`.
fn image_int8<T: Sink>(
    conv: &Int8Conv,
    img: &[u8],
    [c, h, w]: [usize; 3],
    b: &mut Buffers,
    o: &mut [T],
    then: Option<f32>,
) {
    let g = &conv.geometry;
    let (oh, ow) = g.out_size(h, w);
    let cg = c / g.group;
    let grid = PhaseGrid::new(g, [h, w]);
    let (len, wq) = (grid.channel_len(), grid.wq);
    // s8 codes are stored shifted by +128 (u8); the padding is the shifted zero, and each output
    // subtracts 128·Σw, which makes the sums exactly those of the s8 codes.
    let shift = conv.input.zero_byte();
    // Stride 1 without padding: the phase grid is the plane itself. A 1×1 kernel without padding
    // at a stride reads one phase only: its samples as planes (`subsample`), then as at stride 1.
    let direct = g.stride == [1, 1] && g.pad == [0, 0];
    let sampled = !direct && g.kernel == [1, 1] && g.pad == [0, 0];
    let (len, wq) = match (direct, sampled) {
        (true, _) => (h * w, wq),
        (_, true) => (oh * ow, ow),
        _ => (len, wq),
    };
    let mg = conv.outputs / g.group;
    let taps = g.kernel[0] * g.kernel[1];
    // Where each depth row starts, the same in every group.
    grid.taps(g.kernel, &mut b.taps);
    b.starts.clear();
    for ch in 0..cg {
        b.starts.extend(b.taps.iter().map(|t| ch * len + t));
    }
    let ncols = (oh - 1) * wq + ow;
    // At a column stride of 1 or 2 the channel quads are interleaved straight from the planes, each
    // row placed in the phase grid (at 2, its even and odd columns in their two column phases at
    // once), without splitting the planes first: when the fused product on quads below runs (the
    // other paths read the phases). Splitting first cost ResNet-8's stride-2 layers a third of
    // their time.
    let fused = T::fuses();
    let on_amx = conv.quads.first().is_some_and(|q| q.amx.is_some());
    let on_quads =
        !conv.quads.is_empty() && (on_amx || mg <= QUADS_MAX_OUTPUTS || oh * ow <= QUADS_SMALL_MAP);
    let quads_from_planes = fused && g.stride[1] <= 2 && on_quads;
    for gi in 0..g.group {
        let input = &img[gi * cg * h * w..(gi + 1) * cg * h * w];
        if sampled {
            // Every byte is written: no clearing.
            b.image.resize(cg * len, shift);
            for (src, dst) in input.chunks(h * w).zip(b.image.chunks_mut(len)) {
                subsample(src, w, g.stride, ow, dst);
            }
        } else if !direct && !quads_from_planes {
            b.image.clear();
            b.image.resize(cg * len, shift);
            for (src, dst) in input.chunks(h * w).zip(b.image.chunks_mut(len)) {
                grid.split(src, w, dst);
            }
        }
        let data: &[u8] = if direct { input } else { &b.image };
        // This group's output channels, with the Concat's second rounding when placed in one.
        let mut params = &conv.row_params[gi * mg..(gi + 1) * mg];
        if let Some(f) = then {
            b.params.clear();
            b.params.extend(params.iter().map(|p| RowParams {
                then: Some(f),
                ..*p
            }));
            params = &b.params;
        }
        match (&conv.depthwise, conv.groups.get(gi)) {
            // One channel, one filter: each tap is one integer multiply-add over the phase grid.
            (Some(dw), _) => {
                b.acc.clear();
                b.acc.resize(ncols, 0);
                for (&wv, &start) in dw[gi * taps..(gi + 1) * taps].iter().zip(&b.starts) {
                    multiply_add_u8(&mut b.acc, &data[start..start + ncols], wv);
                }
                let dst = &mut o[gi * oh * ow..(gi + 1) * oh * ow];
                requantize_rows(&params[0], &b.acc, (ow, wq), dst);
            }
            (None, Some(wg)) if fused => {
                // Sums requantized in the kernel's registers and stored straight into the output
                // plane (the grid's extra columns dropped by masks). The activations are the
                // image's channel quads when the weights are packed for them and the layer is
                // small enough, else strips packed per call.
                let quads = conv.quads.get(gi).filter(|_| on_quads);
                if quads.is_some() {
                    let from = if quads_from_planes {
                        QuadSource::Planes(input, [h, w])
                    } else {
                        QuadSource::Phases(data)
                    };
                    let to = (&mut b.quads, &mut b.quad_starts);
                    channel_quads(from, (cg, len, ncols), (&grid, &b.taps), shift, to);
                }
                let plane = oh * ow;
                let dst = &mut o[gi * mg * plane..(gi + 1) * mg * plane];
                let quads = quads.map(|w| {
                    let x = Quads {
                        data: &b.quads,
                        starts: &b.quad_starts,
                    };
                    (w, x)
                });
                let rows = RowsU8 {
                    data,
                    starts: &b.starts,
                };
                let to = (ncols, GridRows { wq, ow });
                let done = match quads {
                    Some((w4, x)) => {
                        let on_amx = w4.amx.as_ref().is_some_and(|wa| {
                            amx::gemm_quads(wa, x, to, params, (&mut *dst, plane))
                        });
                        on_amx || gemm_u8s8_quads(&w4.vnni, x, to, params, (dst, plane))
                    }
                    None => gemm_u8s8_requant(wg, rows, to, params, (dst, plane), &mut b.gemm),
                };
                if !done {
                    unreachable!("an instruction set that fuses the requantization");
                }
            }
            (None, Some(wg)) => {
                // Whole grid rows in chunks whose int32 sums (mg × cols) stay within L2, each
                // requantized as soon as it is computed.
                let rows_per_chunk = (ACC_CHUNK / (mg * wq).max(1)).max(1);
                for y0 in (0..oh).step_by(rows_per_chunk) {
                    let rows_here = rows_per_chunk.min(oh - y0);
                    let (c0, cols) = (y0 * wq, (rows_here - 1) * wq + ow);
                    let rows = RowsU8 {
                        data: &data[c0..],
                        starts: &b.starts,
                    };
                    b.acc.clear();
                    b.acc.resize(mg * cols, 0);
                    gemm_u8s8(wg, rows, cols, (&mut b.acc, cols), &mut b.gemm);
                    for (i, (acc, p)) in b.acc.chunks(cols).zip(params).enumerate() {
                        let at = ((gi * mg + i) * oh + y0) * ow;
                        requantize_rows(p, acc, (ow, wq), &mut o[at..at + rows_here * ow]);
                    }
                }
            }
            (None, None) => return,
        }
    }
}

/// What `channel_quads` interleaves: the image's phases (planes of the phase grid's length), or at
/// stride 1 the image's own planes (h × w), each row placed in the grid as it is interleaved.
enum QuadSource<'a> {
    Phases(&'a [u8]),
    Planes(&'a [u8], [usize; 2]),
}

/// The image's channels (`from`) as channel quads into `quads`, with the start of each depth group
/// (tap, quad; `taps` the kernel's offsets on the grid) in `starts`; channels past the last whole
/// quad, and the padding, read as the padding byte (their weights are zero), and the buffer runs on
/// far enough for every strip of `ncols` columns.
fn channel_quads(
    from: QuadSource,
    (channels, len, ncols): (usize, usize, usize),
    (grid, taps): (&PhaseGrid, &[usize]),
    shift: u8,
    (quads, starts): (&mut Vec<u8>, &mut Vec<usize>),
) {
    let tail = (taps.iter().max().copied().unwrap_or(0) + ncols.div_ceil(32) * 32) * 4;
    let nq = channels.div_ceil(4);
    quads.clear();
    quads.resize(nq * len * 4 + tail, shift);
    for (c4, dst) in quads.chunks_mut(len * 4).take(nq).enumerate() {
        let chans: [Option<usize>; 4] =
            std::array::from_fn(|e| Some(4 * c4 + e).filter(|&ch| ch < channels));
        match from {
            QuadSource::Phases(data) => {
                let rows = chans.map(|c| c.map(|ch| &data[ch * len..(ch + 1) * len]));
                interleave_into(rows, dst, shift);
            }
            QuadSource::Planes(x, [h, w]) => {
                let [first, second] = grid.columns();
                for (r, at) in grid.plane_rows(h).enumerate() {
                    let Some(at) = at else { continue };
                    let rows =
                        chans.map(|c| c.map(|ch| &x[(ch * h + r) * w..(ch * h + r + 1) * w]));
                    if grid.column_stride() == 1 {
                        interleave_into(
                            rows,
                            &mut dst[4 * (at + first)..4 * (at + first + w)],
                            shift,
                        );
                        continue;
                    }
                    // Even columns to one column phase, odd ones to the other.
                    let (evens, odds) = (w.div_ceil(2), w / 2);
                    let (lo, hi) = ((at + first).min(at + second), (at + first).max(at + second));
                    let (a, b) = dst.split_at_mut(4 * hi);
                    let (low, high) = (&mut a[4 * lo..], b);
                    let (e, o) = if first < second {
                        (&mut low[..4 * evens], &mut high[..4 * odds])
                    } else {
                        (&mut high[..4 * evens], &mut low[..4 * odds])
                    };
                    split_into(rows, (e, o), shift);
                }
            }
        }
    }
    starts.clear();
    for tap in taps {
        starts.extend((0..nq).map(|c4| (c4 * len + tap) * 4));
    }
}

/// Four rows of equal length, their even columns interleaved into `even` and their odd ones into
/// `odd` (`interleave_quads_split`); a missing row (a channel past the last) reads as `fill`.
fn split_into(rows: [Option<&[u8]>; 4], (even, odd): (&mut [u8], &mut [u8]), fill: u8) {
    if let [Some(a), Some(b), Some(c), Some(d)] = rows {
        interleave_quads_split([a, b, c, d], even, odd);
        return;
    }
    for (p, d) in even.chunks_exact_mut(4).enumerate() {
        for (e, r) in rows.iter().enumerate() {
            d[e] = r.map_or(fill, |r| r[2 * p]);
        }
    }
    for (p, d) in odd.chunks_exact_mut(4).enumerate() {
        for (e, r) in rows.iter().enumerate() {
            d[e] = r.map_or(fill, |r| r[2 * p + 1]);
        }
    }
}

/// Four rows of equal length interleaved into `dst` (`interleave_quads`); a missing row (a channel
/// past the last) reads as `fill`.
fn interleave_into(rows: [Option<&[u8]>; 4], dst: &mut [u8], fill: u8) {
    if let [Some(a), Some(b), Some(c), Some(d)] = rows {
        interleave_quads([a, b, c, d], dst);
        return;
    }
    for (p, d) in dst.chunks_exact_mut(4).enumerate() {
        for (e, r) in rows.iter().enumerate() {
            d[e] = r.map_or(fill, |r| r[p]);
        }
    }
}

/// One channel's outputs: rows of `width` in `dst`, read from `acc` rows `stride` apart (the phase
/// grid's extra columns dropped). `dst` holds the residual on entry (when there is a sum post-op).
/// The loop without a sum post-op has no calls or branches the compiler cannot vectorize.
fn requantize_rows<T: Sink>(
    p: &RowParams,
    acc: &[i32],
    (width, stride): (usize, usize),
    dst: &mut [T],
) {
    if T::vectorized(p, acc, (width, stride), dst) {
        return;
    }
    let r = Requant {
        factor: p.factor,
        sum: p.sum,
        relu: p.relu,
    };
    let twice = |y: f32| {
        p.then
            .map_or(y, |f| quant::round_saturate(y, p.ty) as f32 * f)
    };
    for (dst, acc) in dst.chunks_mut(width).zip(acc.chunks(stride)) {
        if r.sum.is_none() {
            for (d, &a) in dst.iter_mut().zip(acc) {
                let mut y = ((a - p.comp) as f32 + p.bias as f32) * r.factor;
                if let Some(s) = r.relu
                    && y < 0.0
                {
                    y *= s;
                }
                *d = T::store(twice(y), p.ty);
            }
        } else {
            for (d, &a) in dst.iter_mut().zip(acc) {
                *d = T::store(twice(r.apply(a - p.comp, p.bias, d.residual(p.ty))), p.ty);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The INT8 convolution written out per output: integer sums over the taps inside the image (the
    /// padding is real zero), then the same requantization and store.
    fn naive(
        conv_w: &[f32],
        bias: &[f32],
        g: &Geometry,
        p: &Int8Params,
        x: &[f32],
        [n, c, h, w]: [usize; 4],
        residual: &[f32],
    ) -> Vec<f32> {
        let (oh, ow) = g.out_size(h, w);
        let m = bias.len();
        let (cg, mg) = (c / g.group, m / g.group);
        let k = cg * g.kernel[0] * g.kernel[1];
        let mut out = Vec::new();
        for b in 0..n {
            for oc in 0..m {
                let gi = oc / mg;
                let s_w = p.scale_params[oc];
                let r = Requant {
                    factor: quant::output_factor(p.scale_in, s_w, p.scale_out) * p.own_coeff,
                    sum: p.sum,
                    relu: p.relu,
                };
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0i32;
                        for ci in 0..cg {
                            for ky in 0..g.kernel[0] {
                                for kx in 0..g.kernel[1] {
                                    let iy = (oy * g.stride[0] + ky * g.dilation[0]) as isize
                                        - g.pad[0] as isize;
                                    let ix = (ox * g.stride[1] + kx * g.dilation[1]) as isize
                                        - g.pad[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let xv = x[((b * c + gi * cg + ci) * h + iy as usize) * w
                                        + ix as usize]
                                        as i32;
                                    let wv = quant::quantize_weight(
                                        conv_w[oc * k + (ci * g.kernel[0] + ky) * g.kernel[1] + kx],
                                        s_w,
                                    );
                                    acc += xv * i32::from(wv);
                                }
                            }
                        }
                        let i = ((b * m + oc) * oh + oy) * ow + ox;
                        let y = r.apply(
                            acc,
                            quant::quantize_bias(bias[oc], p.scale_in, s_w),
                            residual[i],
                        );
                        out.push(match p.store {
                            Store::Int(t) => quant::round_saturate(y, t) as f32,
                            Store::F32 => y,
                        });
                    }
                }
            }
        }
        out
    }

    #[test]
    fn int8_convolution_equals_the_naive_definition_exactly() {
        let geo = |k: usize, s: usize, p: usize, group: usize| Geometry {
            kernel: [k, k],
            stride: [s, s],
            pad: [p, p],
            dilation: [1, 1],
            group,
        };
        let scales: Vec<f32> = (0..48).map(|i| 80.0 + 13.0 * i as f32).collect();
        let cases = [
            // (geometry, channels in, channels out, h, w, input type, store, sum, relu)
            (
                geo(3, 1, 1, 1),
                5,
                12,
                7,
                9,
                IntType::U8,
                Store::Int(IntType::U8),
                None,
                Some(0.0),
            ),
            (
                geo(3, 2, 1, 2),
                4,
                6,
                9,
                8,
                IntType::S8,
                Store::Int(IntType::S8),
                None,
                None,
            ),
            (
                geo(1, 1, 0, 1),
                6,
                10,
                5,
                5,
                IntType::U8,
                Store::F32,
                None,
                None,
            ),
            (
                geo(5, 2, 2, 1),
                3,
                7,
                11,
                10,
                IntType::S8,
                Store::Int(IntType::U8),
                Some(0.7),
                Some(0.0),
            ),
            // Depthwise (the direct loop), strided with s8 input and stride 1 with a sum.
            (
                geo(3, 2, 1, 4),
                4,
                4,
                9,
                8,
                IntType::S8,
                Store::Int(IntType::U8),
                None,
                Some(0.0),
            ),
            (
                geo(3, 1, 1, 6),
                6,
                6,
                5,
                7,
                IntType::U8,
                Store::F32,
                Some(0.5),
                None,
            ),
            // Channel quads (3×3, at most 32 outputs) at stride 1 with padding: codes on the grid,
            // and FP32 values, which take the path over the phases.
            (
                geo(3, 1, 1, 1),
                8,
                12,
                9,
                10,
                IntType::U8,
                Store::Int(IntType::U8),
                Some(1.0),
                Some(0.0),
            ),
            (
                geo(3, 1, 1, 1),
                8,
                12,
                9,
                10,
                IntType::S8,
                Store::F32,
                None,
                None,
            ),
            // Depthwise over a map wide enough for whole vectors of outputs and a ragged end.
            (
                geo(3, 1, 1, 3),
                3,
                3,
                20,
                23,
                IntType::S8,
                Store::Int(IntType::S8),
                None,
                None,
            ),
            // Stride 1 without padding reads the planes in place (s8, with a sum into u8).
            (
                geo(3, 1, 0, 1),
                8,
                12,
                6,
                7,
                IntType::S8,
                Store::Int(IntType::U8),
                Some(0.9),
                Some(0.0),
            ),
            (
                geo(3, 1, 1, 1),
                40,
                9,
                4,
                3,
                IntType::U8,
                Store::Int(IntType::S8),
                Some(1.3),
                None,
            ),
            // 33-64 outputs: on channel quads over a small map (stride 2 from the phases, stride 1
            // from the planes), on packed strips over a larger one.
            (
                geo(3, 2, 1, 1),
                6,
                48,
                9,
                11,
                IntType::U8,
                Store::Int(IntType::U8),
                Some(0.7),
                Some(0.0),
            ),
            (
                geo(3, 1, 1, 1),
                6,
                48,
                5,
                6,
                IntType::S8,
                Store::Int(IntType::S8),
                None,
                None,
            ),
            (
                geo(3, 1, 1, 1),
                5,
                40,
                17,
                16,
                IntType::U8,
                Store::Int(IntType::U8),
                None,
                Some(0.0),
            ),
            (
                geo(3, 2, 0, 1),
                5,
                7,
                10,
                13,
                IntType::S8,
                Store::Int(IntType::U8),
                None,
                Some(0.0),
            ),
            // A map narrower than the kernel's 16 lanes: each 16 sums land in several output rows.
            (
                geo(3, 1, 1, 1),
                4,
                8,
                3,
                2,
                IntType::U8,
                Store::Int(IntType::U8),
                Some(0.8),
                Some(0.0),
            ),
            (
                geo(3, 1, 1, 1),
                4,
                9,
                2,
                1,
                IntType::S8,
                Store::F32,
                Some(0.8),
                None,
            ),
            // A 1×1 stride-2 projection reads one phase of four (ResNet's shortcut).
            (
                geo(1, 2, 0, 1),
                7,
                10,
                9,
                11,
                IntType::U8,
                Store::Int(IntType::S8),
                None,
                None,
            ),
            // FP32 outputs requantized in the kernel's registers: a sum and ReLU, and a padded 1×1
            // (SqueezeNet's conv_final), whose phase grid is its output plane.
            (
                geo(1, 1, 0, 1),
                17,
                11,
                5,
                7,
                IntType::S8,
                Store::F32,
                Some(0.6),
                Some(0.0),
            ),
            (
                geo(1, 1, 1, 1),
                9,
                11,
                4,
                5,
                IntType::U8,
                Store::F32,
                None,
                Some(0.0),
            ),
            // Stride 2 from rows wider than the 32-byte steps of the split into quads (and a tail).
            (
                geo(3, 2, 1, 1),
                8,
                16,
                5,
                70,
                IntType::U8,
                Store::Int(IntType::U8),
                None,
                Some(0.0),
            ),
            // At least 8 input channel quads: AMX tiles where the CPU has them (9 quads a tile at
            // stride 2 over a pair and a part of 16-channel blocks; two tiles of 9 quads; 16).
            (
                geo(3, 2, 1, 1),
                33,
                40,
                9,
                11,
                IntType::S8,
                Store::Int(IntType::U8),
                Some(0.7),
                Some(0.0),
            ),
            (
                geo(3, 1, 1, 1),
                70,
                48,
                6,
                19,
                IntType::U8,
                Store::Int(IntType::S8),
                None,
                None,
            ),
            (
                geo(3, 1, 1, 1),
                64,
                20,
                7,
                6,
                IntType::U8,
                Store::F32,
                Some(0.5),
                None,
            ),
        ];
        for (g, c, m, h, w, input, store, sum, relu) in cases {
            let k = c / g.group * g.kernel[0] * g.kernel[1];
            let weights: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37 % 61) as f32 - 30.0) * 0.004)
                .collect();
            let bias: Vec<f32> = (0..m).map(|i| (i as f32 - 3.0) * 0.05).collect();
            let p = Int8Params {
                scale_in: 21.5,
                scale_out: 17.25,
                scale_params: &scales[..m],
                input,
                store,
                sum,
                own_coeff: 1.0,
                relu,
            };
            let n = 2;
            let x: Vec<f32> = (0..n * c * h * w)
                .map(|i| match input {
                    IntType::U8 => (i * 97 % 256) as f32,
                    IntType::S8 => (i * 89 % 256) as f32 - 128.0,
                })
                .collect();
            let (oh, ow) = g.out_size(h, w);
            // The residual is codes of the output type, or values for an FP32 output.
            let residual: Vec<f32> = (0..n * m * oh * ow)
                .map(|i| match store {
                    Store::Int(IntType::U8) => (i * 31 % 256) as f32,
                    Store::Int(IntType::S8) => (i * 31 % 256) as f32 - 128.0,
                    Store::F32 => (i * 31 % 200) as f32 * 0.37 - 60.0,
                })
                .collect();
            let conv = Int8Conv::new(&weights, &bias, g, (m, c), &p).unwrap();
            let bytes: Vec<u8> = x.iter().map(|&v| quant::encode(v as i32, input)).collect();
            let out = match store {
                Store::Int(t) => {
                    let mut o: Vec<u8> = residual
                        .iter()
                        .map(|&v| quant::encode(v as i32, t))
                        .collect();
                    convolution_int8(&conv, &bytes, [n, c, h, w], Out::Codes(&mut o), None);
                    o.iter().map(|&b| quant::decode(b, t) as f32).collect()
                }
                Store::F32 => {
                    let mut o = residual.clone();
                    convolution_int8(&conv, &bytes, [n, c, h, w], Out::F32(&mut o), None);
                    o
                }
            };
            let want = naive(&weights, &bias, &g, &p, &x, [n, c, h, w], &residual);
            assert_eq!(out, want, "{g:?} {input:?} {store:?}");
            // Placed in a Concat's buffer (channels 3.. of m + 5 per image) and requantized again:
            // each code as the Concat's requantization of the stored code makes it.
            if let (Store::Int(t), None) = (store, sum) {
                let plane = oh * ow;
                let at = Placement {
                    image_len: (m + 5) * plane,
                    offset: 3 * plane,
                    then: Some(0.61),
                };
                let mut wide = vec![7u8; n * (m + 5) * plane];
                convolution_int8(&conv, &bytes, [n, c, h, w], Out::Codes(&mut wide), Some(at));
                for (img, chunk) in wide.chunks(at.image_len).enumerate() {
                    let own = &want[img * m * plane..(img + 1) * m * plane];
                    let placed = &chunk[at.offset..at.offset + m * plane];
                    for (&q, &b) in own.iter().zip(placed) {
                        let again = quant::round_saturate(q * 0.61, t);
                        assert_eq!(quant::decode(b, t), again, "{g:?} placed");
                    }
                    assert!(
                        chunk[..at.offset].iter().all(|&b| b == 7),
                        "before the slot"
                    );
                    assert!(
                        chunk[at.offset + m * plane..].iter().all(|&b| b == 7),
                        "after"
                    );
                }
            }
        }
    }
}
