//! Convolution and Deconvolution in NCHW. A convolution is a GEMM per image and group of weights packed
//! once per plan: 1×1 stride-1 unpadded convolutions multiply the input directly; every other geometry
//! reads the rows of its unrolled matrix in place from the image split into stride phases
//! (`PhaseGrid`), without unrolling it. Depthwise convolutions run direct loops. Bias and a leading
//! ReLU are applied as the GEMM stores. Images run in parallel; buffers are per thread and reused.
//! Deconvolution is a GEMM followed by col2im.

use std::cell::RefCell;

use rayon::prelude::*;

use super::codes::{self, Codes};
use super::phases::PhaseGrid;
use super::post::{self, Post};
use crate::engine::gemm::{PackedA, Rows, Scratch, gemm_rows, gemm_strided};

use crate::model::layer::Conv;

/// Resolved 2-D geometry of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub dilation: [usize; 2],
    pub group: usize,
}

impl Geometry {
    pub fn of(c: &Conv) -> Result<Self, String> {
        let two = |v: Vec<usize>| -> [usize; 2] { [v[0], v[1]] };
        Ok(Self {
            kernel: two(c.kernel.resolve(2, None, "kernel_size")?),
            stride: two(c.stride.resolve(2, Some(1), "stride")?),
            pad: two(c.pad.resolve(2, Some(0), "pad")?),
            dilation: two(c.dilation.resolve(2, Some(1), "dilation")?),
            group: c.group.max(1),
        })
    }

    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        let o = |x: usize, i: usize| {
            (x + 2 * self.pad[i] - (self.dilation[i] * (self.kernel[i] - 1) + 1)) / self.stride[i]
                + 1
        };
        (o(h, 0), o(w, 1))
    }

    pub fn is_depthwise(&self, channels: usize, outputs: usize) -> bool {
        self.group == channels && self.group == outputs && self.group > 1
    }

    pub fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.pad == [0, 0]
    }
}

/// The order in which a convolution sums its terms (each output is one chain of fused multiply-adds
/// from zero, then the bias): the order decides the FP32 rounding, and so which way a value near a
/// quantization step or a near-tie between classes falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SumOrder {
    /// Caffe's unrolled rows: channel, then kernel row, then kernel column.
    Caffe,
    /// MKL-DNN's direct kernel, which Intel Caffe runs for its FP32 convolutions: per block of 16
    /// input channels, kernel row, then kernel column, the block's channels innermost. With it
    /// Intel Caffe's INT8 accuracy on SqueezeNet is matched exactly (its FP32 `conv1`, 3 channels,
    /// decides two images) and the fixtures' INT8 losses come closer to Intel's; that MKL-DNN
    /// chains several blocks in one sum (rather than adding per-block sums) is not verified.
    MklDnn,
}

impl SumOrder {
    /// Where each term reads, in order: channel c's tap t at c·`len` + `taps[t]` (the order of
    /// `term`, without its divisions).
    fn starts(self, channels: usize, taps: &[usize], len: usize, out: &mut Vec<usize>) {
        out.clear();
        match self {
            Self::Caffe => {
                for ch in 0..channels {
                    out.extend(taps.iter().map(|t| ch * len + t));
                }
            }
            Self::MklDnn => {
                for block in (0..channels).step_by(16) {
                    let width = 16.min(channels - block);
                    for t in taps {
                        out.extend((block..block + width).map(|ch| ch * len + t));
                    }
                }
            }
        }
    }

    /// Index (channel, tap) of the `i`-th term, for `channels` channels of `taps` kernel taps.
    fn term(self, i: usize, channels: usize, taps: usize) -> (usize, usize) {
        match self {
            Self::Caffe => (i / taps.max(1), i % taps.max(1)),
            Self::MklDnn => {
                // Whole blocks of 16 channels first, then the last (narrower) block.
                let full = 16 * taps;
                let (block, rest) = (i / full.max(1), i % full.max(1));
                let width = 16.min(channels - 16 * block);
                (16 * block + rest % width, rest / width)
            }
        }
    }
}

/// A convolution's weights (plain, and packed per group by `pack_weights`), optional bias and number of
/// output channels.
#[derive(Debug, Clone, Copy)]
pub struct Filter<'a> {
    pub weights: &'a [f32],
    pub packed: &'a [PackedA],
    pub bias: Option<&'a [f32]>,
    pub outputs: usize,
    /// The order the packed weights' depth runs in.
    pub order: SumOrder,
}

thread_local! {
    static GEMM: RefCell<Scratch> = RefCell::new(Scratch::default());
    static COLUMNS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static PHASED: RefCell<Phased> = RefCell::new(Phased::default());
    static PHASES: RefCell<Phases> = RefCell::new(Phases::default());
    /// The residual of a fused sum, set aside while the convolution overwrites it.
    static RESIDUAL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// One image's values, from the codes a convolution was given (`Input::Codes`).
    static DECODED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// A convolution's input: FP32 values, or codes whose values it reads (each image's dequantized
/// into a buffer of the thread that convolves it while in cache, rather than the whole batch's
/// values written out first). The INT8 session's Eltwise and Concat read their inputs the same way.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    Values(&'a [f32]),
    Codes(&'a [u8], Codes),
}

/// The weights (and bias) of each group packed for the GEMM, their depth in `order` (none for
/// depthwise convolutions, which run a direct loop over the plain weights).
pub fn pack_weights(
    weights: &[f32],
    bias: Option<&[f32]>,
    g: &Geometry,
    (outputs, channels): (usize, usize),
    order: SumOrder,
) -> Vec<PackedA> {
    if g.is_depthwise(channels, outputs) || outputs == 0 {
        return Vec::new();
    }
    let (mg, k) = (
        outputs / g.group,
        channels / g.group * g.kernel[0] * g.kernel[1],
    );
    weights
        .chunks(mg * k)
        .take(g.group)
        .enumerate()
        .map(|(gi, w)| {
            let (cg, taps) = (channels / g.group, g.kernel[0] * g.kernel[1]);
            let ordered: Vec<f32> = w
                .chunks(k.max(1))
                .flat_map(|row| {
                    (0..k).map(move |i| {
                        let (c, t) = order.term(i, cg, taps);
                        row[c * taps + t]
                    })
                })
                .collect();
            let packed = PackedA::new(&ordered, mg, k);
            match bias {
                Some(b) if b.len() >= outputs => packed.with_bias(&b[gi * mg..(gi + 1) * mg]),
                _ => packed,
            }
        })
        .collect()
}

/// The Eltwise SUM a convolution is fused with (Intel Caffe's conv+sum): each output becomes
/// `coeffs[1]·conv + coeffs[0]·residual`, the residual being what the output holds on entry, then
/// the ReLU of `relu`'s negative slope if any (the Eltwise's arithmetic, in its order).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SumPost {
    pub coeffs: [f32; 2],
    pub relu: Option<f32>,
}

impl SumPost {
    /// `out` (holding the convolution) summed with `residual`, then the ReLU.
    fn apply(&self, out: &mut [f32], residual: &[f32]) {
        self.each(out, residual, |o, r| (o, r));
    }

    /// `out` (holding the residual) summed with the convolution's values `conv`, then the ReLU.
    fn onto(&self, conv: &[f32], out: &mut [f32]) {
        self.each(out, conv, |o, v| (v, o));
    }

    /// Each output `o` with its partner `p`, `order` saying which is the convolution's value and
    /// which the residual: one loop per ReLU case, without a branch per value, so that it vectorizes.
    #[inline]
    fn each(&self, out: &mut [f32], with: &[f32], order: impl Fn(f32, f32) -> (f32, f32)) {
        let [c0, c1] = self.coeffs;
        let sum = |o: f32, p: f32| {
            let (v, r) = order(o, p);
            c1 * v + c0 * r
        };
        let pairs = out.iter_mut().zip(with);
        match self.relu {
            None => pairs.for_each(|(o, &p)| *o = sum(*o, p)),
            Some(slope) => pairs.for_each(|(o, &p)| {
                let y = sum(*o, p);
                *o = if y < 0.0 { y * slope } else { y };
            }),
        }
    }
}

/// Forward convolution. `x` is N×C×H×W, `weights` M×(C/g)×kh×kw, `out` N×M×OH×OW.
pub fn convolution(
    x: &[f32],
    dims: [usize; 4],
    f: &Filter,
    g: &Geometry,
    posts: &[Post],
    out: &mut [f32],
) -> Result<(), String> {
    convolution_fused(
        Input::Values(x),
        dims,
        f,
        g,
        (posts, Extras::default()),
        out,
    )
}

/// What a fused convolution does besides its steps, each image while it is in cache.
#[derive(Debug, Default)]
pub struct Extras<'a> {
    /// The Eltwise SUM: `out` holds the residual on entry.
    pub sum: Option<SumPost>,
    /// The codes of the final values (`codes::quantize`), stored beside them (N×M×OH×OW bytes).
    pub codes: Option<(Codes, &'a mut [u8])>,
}

/// `convolution` stored as codes (`codes::quantize` of each value) tile by tile while in cache, so
/// the FP32 output is never written whole. Only where the GEMM applies every step (the bias and a
/// leading plain ReLU) and reads the image's phases: false for depthwise and 1×1 stride-1
/// convolutions and for other steps, `out` then untouched.
pub fn convolution_to_codes(
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    f: &Filter,
    g: &Geometry,
    posts: &[Post],
    (to, out): (Codes, &mut [u8]),
) -> Result<bool, String> {
    let cg = c / g.group.max(1);
    let k = cg * g.kernel[0] * g.kernel[1];
    let steps = GemmSteps::of(f, posts);
    if g.is_depthwise(c, f.outputs) || g.is_pointwise() || !steps.all() {
        return Ok(false);
    }
    packed_fits(f, g, k)?;
    let (oh, ow) = g.out_size(h, w);
    let plane = oh * ow;
    out.par_chunks_mut(f.outputs * plane)
        .zip(x.par_chunks(c * h * w))
        .take(n)
        .for_each(|(o, img)| {
            GEMM.with_borrow_mut(|scratch| {
                PHASED.with_borrow_mut(|buf| {
                    for (gi, wg) in f.packed.iter().enumerate() {
                        let input = &img[gi * cg * h * w..(gi + 1) * cg * h * w];
                        let og = &mut o[gi * wg.rows() * plane..(gi + 1) * wg.rows() * plane];
                        let out = (Dest::Codes(og, to), steps.relu);
                        let input = Input::Values(input);
                        phased((wg, f.order), input, (cg, h, w), g, buf, scratch, out);
                    }
                });
            });
        });
    Ok(true)
}

/// `convolution` with its `Extras`.
pub fn convolution_fused(
    x: Input,
    [n, c, h, w]: [usize; 4],
    f: &Filter,
    g: &Geometry,
    (posts, extras): (&[Post], Extras),
    out: &mut [f32],
) -> Result<(), String> {
    let m = f.outputs;
    let (oh, ow) = g.out_size(h, w);
    let plane = oh * ow;
    let Extras { sum, codes } = extras;
    if codes.as_ref().is_some_and(|(_, b)| b.len() != out.len()) {
        return Err("the codes do not match the output's size".into());
    }
    if g.is_depthwise(c, m) {
        let Input::Values(x) = x else {
            return Err("a depthwise convolution reads FP32 values".into());
        };
        summed(sum, out, |out| depthwise(x, [n, c, h, w], f, g, posts, out));
        if let Some((to, bytes)) = codes {
            codes::quantize(out, to, bytes);
        }
        return Ok(());
    }
    let cg = c / g.group;
    packed_fits(f, g, cg * g.kernel[0] * g.kernel[1])?;
    let steps = GemmSteps::of(f, posts);
    let (relu, rest) = (steps.relu, steps.rest);
    // When the GEMM applies every step, the sum and the codes are made as each tile is copied out.
    let in_copy = steps.all() && !g.is_pointwise();
    let one = |o: &mut [f32], img: Input, codes: Option<(Codes, &mut [u8])>| {
        if in_copy {
            let tail = Tail { sum, codes };
            image(img, (cg, h, w), f, g, (relu, rest), (o, tail));
            return;
        }
        summed(sum, o, |o| {
            image(img, (cg, h, w), f, g, (relu, rest), (o, Tail::default()));
        });
        if let Some((to, b)) = codes {
            codes::quantize_run(o, to, b);
        }
    };
    let image_len = c * h * w;
    if x.count() < n * image_len || out.len() < n * m * plane {
        return Err("the input or output is shorter than the batch".into());
    }
    let images = out.par_chunks_mut(m * plane).take(n).enumerate();
    match codes {
        Some((to, bytes)) => images
            .zip(bytes.par_chunks_mut(m * plane))
            .for_each(|((i, o), b)| one(o, x.part(i * image_len, image_len), Some((to, b)))),
        None => images.for_each(|(i, o)| one(o, x.part(i * image_len, image_len), None)),
    }
    Ok(())
}

impl<'a> Input<'a> {
    /// How many values it holds.
    pub fn count(self) -> usize {
        match self {
            Input::Values(v) => v.len(),
            Input::Codes(b, _) => b.len(),
        }
    }

    /// The `len` values from `at`.
    fn part(self, at: usize, len: usize) -> Input<'a> {
        match self {
            Input::Values(v) => Input::Values(&v[at..at + len]),
            Input::Codes(b, from) => Input::Codes(&b[at..at + len], from),
        }
    }

    /// `run` on the values, as given or decoded on this thread.
    fn with_values<R>(self, run: impl FnOnce(&[f32]) -> R) -> R {
        match self {
            Input::Values(v) => run(v),
            Input::Codes(b, from) => DECODED.with_borrow_mut(|d| {
                d.resize(b.len(), 0.0);
                codes::dequantize_run(b, from, d);
                run(d)
            }),
        }
    }
}

/// Which of a convolution's steps its GEMM applies as it stores.
struct GemmSteps<'p> {
    /// A leading plain ReLU (after the bias, which the GEMM then must add too).
    relu: bool,
    /// The steps left after it.
    rest: &'p [Post],
    /// Whether the GEMM adds the bias (or there is none).
    bias: bool,
}

impl<'p> GemmSteps<'p> {
    fn of(f: &Filter, posts: &'p [Post]) -> Self {
        let bias = f.bias.is_none() || f.packed.iter().all(PackedA::has_bias);
        let relu = matches!(posts.first(), Some(Post::ReLU(s)) if *s == 0.0) && bias;
        let rest = if relu { &posts[1..] } else { posts };
        Self { relu, rest, bias }
    }

    /// Whether the GEMM applies every step.
    fn all(&self) -> bool {
        self.rest.is_empty() && self.bias
    }
}

/// Whether the packed weights are one per group, each of depth `k`.
fn packed_fits(f: &Filter, g: &Geometry, k: usize) -> Result<(), String> {
    if f.packed.len() != g.group || f.packed.iter().any(|p| p.depth() != k) {
        return Err(format!(
            "the packed weights do not fit {} groups of depth {k}",
            g.group
        ));
    }
    Ok(())
}

/// `compute` on `out`, then the fused sum if any with the residual `out` held before.
fn summed(sum: Option<SumPost>, out: &mut [f32], compute: impl FnOnce(&mut [f32])) {
    let Some(s) = sum else {
        compute(out);
        return;
    };
    RESIDUAL.with_borrow_mut(|r| {
        r.clear();
        r.extend_from_slice(out);
        compute(out);
        s.apply(out, r);
    });
}

/// What the copy of a tile out of the wide output also does (for a convolution whose GEMM applies
/// every step): the fused sum with the residual the output holds, and the codes of the result.
#[derive(Debug, Default)]
struct Tail<'a> {
    sum: Option<SumPost>,
    codes: Option<(Codes, &'a mut [u8])>,
}

/// One image of `convolution_fused`: each group's product (with `tail` as it is copied out), then the
/// bias when the GEMM did not add it, then the remaining steps.
fn image(
    img: Input,
    (cg, h, w): (usize, usize, usize),
    f: &Filter,
    g: &Geometry,
    (relu, rest): (bool, &[Post]),
    (o, mut tail): (&mut [f32], Tail),
) {
    let (oh, ow) = g.out_size(h, w);
    let plane = oh * ow;
    GEMM.with_borrow_mut(|scratch| {
        for (gi, wg) in f.packed.iter().enumerate() {
            let input = img.part(gi * cg * h * w, cg * h * w);
            let span = gi * wg.rows() * plane..(gi + 1) * wg.rows() * plane;
            let og = &mut o[span.clone()];
            if g.is_pointwise() {
                input.with_values(|x| {
                    gemm_strided(wg, x, (plane, plane), (og, plane), relu, scratch)
                });
            } else {
                PHASED.with_borrow_mut(|buf| {
                    let tail = Tail {
                        sum: tail.sum,
                        codes: tail.codes.as_mut().map(|(to, b)| (*to, &mut b[span])),
                    };
                    let out = (Dest::Values(og, tail), relu);
                    let shape = (cg, h, w);
                    phased((wg, f.order), input, shape, g, buf, scratch, out);
                });
            }
        }
    });
    if !f.packed.iter().all(PackedA::has_bias) {
        add_bias(o, f.bias, plane);
    }
    for (ch, p) in o.chunks_mut(plane).enumerate() {
        post::apply(rest, ch, p);
    }
}

/// Buffers of the convolution path: the phases of the image, the row starts, one tile of wide output.
#[derive(Debug, Default)]
struct Phased {
    image: Vec<f32>,
    taps: Vec<usize>,
    starts: Vec<usize>,
    wide: Vec<f32>,
}

/// Where `phased` stores a group's output: the FP32 values (with what `Tail` adds), or their codes.
enum Dest<'a> {
    Values(&'a mut [f32], Tail<'a>),
    Codes(&'a mut [u8], Codes),
}

/// Floats of wide output per tile (256 KB, in L2 until copied out).
const WIDE_FLOATS: usize = 64 * 1024;

/// One group of one image without unrolling columns: row (c, ky, kx) of the unrolled matrix is the
/// image's phases (`PhaseGrid`) shifted by c·(phase length) + tap(ky, kx), so the GEMM reads its rows
/// in place (in the weights' order); the wide output is copied out in tiles of whole rows.
fn phased(
    (wg, order): (&PackedA, SumOrder),
    input: Input,
    (c, h, w): (usize, usize, usize),
    g: &Geometry,
    buf: &mut Phased,
    scratch: &mut Scratch,
    (mut og, relu): (Dest, bool),
) {
    let (oh, ow) = g.out_size(h, w);
    let grid = PhaseGrid::new(g, [h, w]);
    let (len, wq) = (grid.channel_len(), grid.wq);
    buf.image.clear();
    buf.image.resize(c * len, 0.0);
    match input {
        // Codes at a column stride of 1 are decoded straight into their rows of the phases.
        Input::Codes(b, from) if grid.column_stride() == 1 => {
            for (src, dst) in b.chunks(h * w).zip(buf.image.chunks_mut(len)) {
                grid.place_rows([h, w], dst, |r, row| {
                    codes::dequantize_run(&src[r * w..(r + 1) * w], from, row)
                });
            }
        }
        _ => input.with_values(|x| {
            for (src, dst) in x.chunks(h * w).zip(buf.image.chunks_mut(len)) {
                grid.split(src, w, dst);
            }
        }),
    }
    grid.taps(g.kernel, &mut buf.taps);
    order.starts(c, &buf.taps, len, &mut buf.starts);
    let m = wg.rows();
    let tile_rows = (WIDE_FLOATS / (m * wq).max(1)).clamp(1, oh);
    for oy0 in (0..oh).step_by(tile_rows) {
        let rows = tile_rows.min(oh - oy0);
        // The wide columns of these output rows, without the dropped tail of the last one.
        let n = (rows - 1) * wq + ow;
        buf.wide.resize(m * n, 0.0);
        let b = Rows::new(&buf.image[oy0 * wq..], &buf.starts);
        gemm_rows(wg, &b, n, (&mut buf.wide, n), relu, scratch);
        for (ch, wide) in buf.wide.chunks(n).enumerate() {
            // This channel's rows of the tile in the output, and their values in the wide tile.
            let first = (ch * oh + oy0) * ow;
            let run = first..first + rows * ow;
            let rows = (0..rows).map(|r| (first + r * ow, &wide[r * wq..r * wq + ow]));
            match &mut og {
                Dest::Values(og, tail) => {
                    for (dst, src) in rows {
                        let og = &mut og[dst..dst + ow];
                        match tail.sum {
                            Some(s) => s.onto(src, og),
                            None => og.copy_from_slice(src),
                        }
                    }
                    // The codes of the channel's rows of this tile, in one run.
                    if let Some((to, codes)) = &mut tail.codes {
                        codes::quantize_run(&og[run.clone()], *to, &mut codes[run]);
                    }
                }
                Dest::Codes(og, to) => {
                    for (dst, src) in rows {
                        codes::quantize_run(src, *to, &mut og[dst..dst + ow]);
                    }
                }
            }
        }
    }
}

/// One filter per channel: a direct loop is faster than a GEMM of one row.
fn depthwise(
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    f: &Filter,
    g: &Geometry,
    posts: &[Post],
    out: &mut [f32],
) {
    let (oh, ow) = g.out_size(h, w);
    // A few tasks per thread, each a run of planes (one plane per task is too fine for small maps).
    let per_task = (n * c / (rayon::current_num_threads() * 4)).max(1);
    out.par_chunks_mut(per_task * oh * ow)
        .enumerate()
        .for_each(|(t, planes)| {
            for (j, o) in planes.chunks_mut(oh * ow).enumerate() {
                depthwise_plane(t * per_task + j, x, [c, h, w], f, g, posts, o);
            }
        });
}

/// One output plane `i` (image i / c, channel i % c) of a depthwise convolution.
fn depthwise_plane(
    i: usize,
    x: &[f32],
    [c, h, w]: [usize; 3],
    f: &Filter,
    g: &Geometry,
    posts: &[Post],
    o: &mut [f32],
) {
    let ch = i % c;
    let plane = &x[i * h * w..(i + 1) * h * w];
    let [kh, kw] = g.kernel;
    let filt = &f.weights[ch * kh * kw..(ch + 1) * kh * kw];
    if g.kernel == [3, 3] && g.stride == [1, 1] && g.pad == [1, 1] && g.dilation == [1, 1] && w >= 3
    {
        depthwise_3x3_same(plane, h, w, filt, o);
    } else {
        PHASES.with_borrow_mut(|ph| depthwise_phased(plane, [h, w], filt, g, ph, o));
    }
    if let Some(b) = f.bias {
        o.iter_mut().for_each(|v| *v += b[ch]);
    }
    post::apply(posts, ch, o);
}

/// Buffers of `depthwise_phased`: the phases and the wide output.
#[derive(Debug, Default)]
struct Phases {
    planes: Vec<f32>,
    wide: Vec<f32>,
}

/// Any depthwise geometry with whole-plane vector loops over the plane's phases (`PhaseGrid`): each
/// tap is one multiply-add over all outputs. Every output adds its terms in (ky, kx) order from zero,
/// as the definition does; a padded term adds ±0, which leaves the sum unchanged.
fn depthwise_phased(
    plane: &[f32],
    [h, w]: [usize; 2],
    filt: &[f32],
    g: &Geometry,
    ph: &mut Phases,
    o: &mut [f32],
) {
    let (oh, ow) = g.out_size(h, w);
    let grid = PhaseGrid::new(g, [h, w]);
    ph.planes.clear();
    ph.planes.resize(grid.channel_len(), 0.0);
    grid.split(plane, w, &mut ph.planes);
    let n = (oh - 1) * grid.wq + ow;
    ph.wide.clear();
    ph.wide.resize(n, 0.0);
    for ky in 0..g.kernel[0] {
        for kx in 0..g.kernel[1] {
            let at = grid.tap(ky, kx);
            let wk = filt[ky * g.kernel[1] + kx];
            let src = &ph.planes[at..at + n];
            ph.wide
                .iter_mut()
                .zip(src)
                .for_each(|(acc, &v)| *acc += v * wk);
        }
    }
    for (oy, line) in o.chunks_mut(ow).enumerate() {
        line.copy_from_slice(&ph.wide[oy * grid.wq..oy * grid.wq + ow]);
    }
}

/// Depthwise 3×3, stride 1, padding 1 (output size = input size), without the bias. Each output adds
/// its valid terms in (ky, kx) order starting from zero, exactly as the general kernel does, so the
/// results are identical; interior columns run branch-free so the compiler vectorizes them.
fn depthwise_3x3_same(plane: &[f32], h: usize, w: usize, k: &[f32], o: &mut [f32]) {
    for oy in 0..h {
        // The input rows of taps ky = 0, 1, 2 (None above or below the image).
        let row = |ky: usize| -> Option<&[f32]> {
            let iy = (oy + ky).checked_sub(1)?;
            (iy < h).then(|| &plane[iy * w..(iy + 1) * w])
        };
        let rows = [row(0), row(1), row(2)];
        let out = &mut o[oy * w..(oy + 1) * w];
        // Edge columns: terms whose input column is outside are skipped.
        for ox in [0, w - 1] {
            let mut acc = 0.0f32;
            for (ky, r) in rows.iter().enumerate() {
                let Some(r) = r else { continue };
                for kx in 0..3 {
                    if let Some(ix) = (ox + kx).checked_sub(1).filter(|&ix| ix < w) {
                        acc += r[ix] * k[ky * 3 + kx];
                    }
                }
            }
            out[ox] = acc;
        }
        let interior = &mut out[1..w - 1];
        match rows {
            [Some(a), Some(b), Some(c)] => interior3(interior, [a, b, c], k),
            [None, Some(b), Some(c)] => interior2(interior, [b, c], [&k[3..6], &k[6..9]]),
            [Some(a), Some(b), None] => interior2(interior, [a, b], [&k[0..3], &k[3..6]]),
            [None, Some(b), None] => interior1(interior, b, &k[3..6]),
            _ => interior.fill(0.0),
        }
    }
}

fn interior3(out: &mut [f32], [a, b, c]: [&[f32]; 3], k: &[f32]) {
    let n = out.len();
    let (a0, a1, a2) = (&a[..n], &a[1..n + 1], &a[2..n + 2]);
    let (b0, b1, b2) = (&b[..n], &b[1..n + 1], &b[2..n + 2]);
    let (c0, c1, c2) = (&c[..n], &c[1..n + 1], &c[2..n + 2]);
    for x in 0..n {
        let mut acc = 0.0f32;
        acc += a0[x] * k[0];
        acc += a1[x] * k[1];
        acc += a2[x] * k[2];
        acc += b0[x] * k[3];
        acc += b1[x] * k[4];
        acc += b2[x] * k[5];
        acc += c0[x] * k[6];
        acc += c1[x] * k[7];
        acc += c2[x] * k[8];
        out[x] = acc;
    }
}

/// One valid row (an image one row high).
fn interior1(out: &mut [f32], a: &[f32], k: &[f32]) {
    let n = out.len();
    let (a0, a1, a2) = (&a[..n], &a[1..n + 1], &a[2..n + 2]);
    for x in 0..n {
        let mut acc = 0.0f32;
        acc += a0[x] * k[0];
        acc += a1[x] * k[1];
        acc += a2[x] * k[2];
        out[x] = acc;
    }
}

/// Two valid rows (the image's first or last row).
fn interior2(out: &mut [f32], [a, b]: [&[f32]; 2], [ka, kb]: [&[f32]; 2]) {
    let n = out.len();
    let (a0, a1, a2) = (&a[..n], &a[1..n + 1], &a[2..n + 2]);
    let (b0, b1, b2) = (&b[..n], &b[1..n + 1], &b[2..n + 2]);
    for x in 0..n {
        let mut acc = 0.0f32;
        acc += a0[x] * ka[0];
        acc += a1[x] * ka[1];
        acc += a2[x] * ka[2];
        acc += b0[x] * kb[0];
        acc += b1[x] * kb[1];
        acc += b2[x] * kb[2];
        out[x] = acc;
    }
}

fn add_bias(o: &mut [f32], bias: Option<&[f32]>, plane: usize) {
    if let Some(b) = bias {
        for (chunk, &bv) in o.chunks_mut(plane).zip(b) {
            chunk.iter_mut().for_each(|v| *v += bv);
        }
    }
}

/// Transposed convolution: per image and group, columns = Wᵀ × x, then col2im scatters them.
/// `weights` is C×(M/g)×kh×kw, `x` N×C×H×W, `out` N×M×OH×OW.
pub fn deconvolution(
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    f: &Filter,
    g: &Geometry,
    [oh, ow]: [usize; 2],
    out: &mut [f32],
) -> Result<(), String> {
    let Filter {
        bias, outputs: m, ..
    } = *f;
    let (cg, mg) = (c / g.group, m / g.group);
    let [kh, kw] = g.kernel;
    let k = mg * kh * kw;
    if f.packed.len() != g.group || f.packed.iter().any(|p| p.depth() != cg || p.rows() != k) {
        return Err(format!(
            "the packed weights do not fit {} groups of {k}×{cg}",
            g.group
        ));
    }
    out.par_chunks_mut(m * oh * ow)
        .zip(x.par_chunks(c * h * w))
        .take(n)
        .for_each(|(o, img)| {
            o.fill(0.0);
            COLUMNS.with_borrow_mut(|col| {
                GEMM.with_borrow_mut(|scratch| {
                    col.resize(k * h * w, 0.0);
                    for (gi, wt) in f.packed.iter().enumerate() {
                        let input = &img[gi * cg * h * w..(gi + 1) * cg * h * w];
                        // col (k × hw) = wgᵀ (k × cg) × input (cg × hw), then scattered to the output.
                        gemm_strided(
                            wt,
                            input,
                            (h * w, h * w),
                            (&mut col[..], h * w),
                            false,
                            scratch,
                        );
                        let og = &mut o[gi * mg * oh * ow..(gi + 1) * mg * oh * ow];
                        for ch in 0..mg {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let row = &col[((ch * kh + ky) * kw + kx) * h * w..][..h * w];
                                    for iy in 0..h {
                                        let oy = (iy * g.stride[0] + ky * g.dilation[0]) as isize
                                            - g.pad[0] as isize;
                                        if oy < 0 || oy >= oh as isize {
                                            continue;
                                        }
                                        for ix in 0..w {
                                            let ox = (ix * g.stride[1] + kx * g.dilation[1])
                                                as isize
                                                - g.pad[1] as isize;
                                            if ox >= 0 && ox < ow as isize {
                                                og[(ch * oh + oy as usize) * ow + ox as usize] +=
                                                    row[iy * w + ix];
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                })
            });
            add_bias(o, bias, oh * ow);
        });
    Ok(())
}

/// A Deconvolution's weights (C × M/g × kh × kw) transposed per group to (M/g·kh·kw) × (C/g) and packed.
pub fn pack_deconv_weights(
    weights: &[f32],
    g: &Geometry,
    outputs: usize,
    channels: usize,
) -> Vec<PackedA> {
    let (cg, k) = (
        channels / g.group,
        outputs / g.group * g.kernel[0] * g.kernel[1],
    );
    weights
        .chunks(cg * k)
        .take(g.group)
        .map(|wg| {
            let wt: Vec<f32> = (0..k * cg).map(|i| wg[(i % cg) * k + i / cg]).collect();
            PackedA::new(&wt, k, cg)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition of convolution, written plainly.
    fn naive(x: &[f32], [n, c, h, w]: [usize; 4], wt: &[f32], g: &Geometry, m: usize) -> Vec<f32> {
        let (oh, ow) = g.out_size(h, w);
        let (cg, mg) = (c / g.group, m / g.group);
        let mut out = vec![0.0; n * m * oh * ow];
        for b in 0..n {
            for oc in 0..m {
                let gi = oc / mg;
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0.0;
                        for ic in 0..cg {
                            for ky in 0..g.kernel[0] {
                                for kx in 0..g.kernel[1] {
                                    let iy = (oy * g.stride[0] + ky * g.dilation[0]) as isize
                                        - g.pad[0] as isize;
                                    let ix = (ox * g.stride[1] + kx * g.dilation[1]) as isize
                                        - g.pad[1] as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w
                                    {
                                        let xv = x[((b * c + gi * cg + ic) * h + iy as usize) * w
                                            + ix as usize];
                                        let wv = wt[((oc * cg + ic) * g.kernel[0] + ky)
                                            * g.kernel[1]
                                            + kx];
                                        acc += xv * wv;
                                    }
                                }
                            }
                        }
                        out[((b * m + oc) * oh + oy) * ow + ox] = acc;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn each_output_sums_its_terms_in_the_chosen_order_exactly() {
        // 35 channels (two blocks of 16 and a ragged one), 3×3 padded: every output is one chain of
        // fused multiply-adds from zero in the order's term sequence, then the bias.
        let g = Geometry {
            kernel: [3, 3],
            stride: [1, 1],
            pad: [1, 1],
            dilation: [1, 1],
            group: 1,
        };
        let (c, m, h, w) = (35, 9, 6, 5);
        let x: Vec<f32> = (0..c * h * w)
            .map(|i| ((i * 7919 % 1013) as f32 - 500.0) * 0.0137)
            .collect();
        let wt: Vec<f32> = (0..m * c * 9)
            .map(|i| ((i * 104_729 % 997) as f32 - 498.0) * 0.0071)
            .collect();
        let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.31 - 1.2).collect();
        for order in [SumOrder::Caffe, SumOrder::MklDnn] {
            let mut out = vec![0.0; m * h * w];
            let filter = Filter {
                weights: &wt,
                packed: &pack_weights(&wt, Some(&bias), &g, (m, c), order),
                bias: Some(&bias),
                outputs: m,
                order,
            };
            convolution(&x, [1, c, h, w], &filter, &g, &[], &mut out).unwrap();
            for (o, got) in out.iter().enumerate() {
                let (oc, oy, ox) = (o / (h * w), o / w % h, o % w);
                let mut acc = 0.0f32;
                for i in 0..c * 9 {
                    let (ic, t) = order.term(i, c, 9);
                    let (iy, ix) = ((oy + t / 3) as isize - 1, (ox + t % 3) as isize - 1);
                    let inside = (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix);
                    let xv = if inside {
                        x[(ic * h + iy as usize) * w + ix as usize]
                    } else {
                        0.0
                    };
                    acc = xv.mul_add(wt[(oc * c + ic) * 9 + t], acc);
                }
                assert_eq!(*got, acc + bias[oc], "{order:?} output {o}");
            }
        }
        // The MKL-DNN order: block by block, taps, then the block's channels.
        let terms: Vec<(usize, usize)> =
            (0..c * 9).map(|i| SumOrder::MklDnn.term(i, c, 9)).collect();
        assert_eq!(&terms[..3], &[(0, 0), (1, 0), (2, 0)]);
        assert_eq!(terms[16], (0, 1));
        assert_eq!(terms[16 * 9], (16, 0));
        assert_eq!(terms[32 * 9], (32, 0));
        assert_eq!(terms[32 * 9 + 3], (32, 1));
        assert_eq!(terms[c * 9 - 1], (34, 8));
    }

    #[test]
    fn large_images_are_tiled_and_still_match_the_definition() {
        // 3 channels, 7x7 stride 2 over 120x100 into 40 channels: the output spans several tiles.
        let g = Geometry {
            kernel: [7, 7],
            stride: [2, 2],
            pad: [3, 3],
            dilation: [1, 1],
            group: 1,
        };
        let (c, m, h, w) = (3, 40, 120, 100);
        let (oh, ow) = g.out_size(h, w);
        assert!(m * oh * ow > WIDE_FLOATS, "the case must span tiles");
        let x: Vec<f32> = (0..c * h * w)
            .map(|i| ((i * 7 % 23) as f32 - 11.0) * 0.1)
            .collect();
        let wt: Vec<f32> = (0..m * c * 49)
            .map(|i| ((i * 3 % 17) as f32 - 8.0) * 0.05)
            .collect();
        let mut out = vec![0.0; m * oh * ow];
        convolution(
            &x,
            [1, c, h, w],
            &Filter {
                weights: &wt,
                packed: &pack_weights(&wt, None, &g, (m, c), SumOrder::Caffe),
                bias: None,
                outputs: m,
                order: SumOrder::Caffe,
            },
            &g,
            &[],
            &mut out,
        )
        .unwrap();
        let want = naive(&x, [1, c, h, w], &wt, &g, m);
        for (a, b) in out.iter().zip(&want) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
    }

    #[test]
    fn grouped_strided_dilated_and_depthwise_match_the_definition() {
        let geo = |k: usize, s: [usize; 2], p: [usize; 2], d: [usize; 2], group: usize| Geometry {
            kernel: [k, k],
            stride: s,
            pad: p,
            dilation: d,
            group,
        };
        // (geometry, channels in, channels out, height, width)
        let cases = [
            (geo(3, [2, 1], [1, 2], [1, 2], 2), 4, 6, 7, 6),
            (geo(1, [1, 1], [0, 0], [1, 1], 1), 3, 5, 7, 6),
            // Stride 1 (the shifted-rows path): plain, dilated with uneven padding, grouped, and a
            // map smaller than one strip of columns.
            (geo(3, [1, 1], [1, 1], [1, 1], 1), 3, 10, 9, 40),
            (geo(3, [1, 1], [2, 0], [2, 1], 2), 4, 6, 7, 6),
            (geo(3, [1, 1], [0, 0], [1, 1], 1), 2, 9, 3, 3),
            (geo(3, [1, 1], [1, 1], [1, 1], 4), 4, 4, 7, 6),
            (geo(3, [1, 1], [1, 1], [1, 1], 4), 4, 4, 1, 5),
            (geo(3, [1, 1], [1, 1], [1, 1], 4), 4, 4, 2, 3),
            (geo(3, [2, 2], [1, 1], [1, 1], 4), 4, 4, 7, 6),
            (geo(3, [1, 1], [2, 2], [2, 2], 4), 4, 4, 7, 6),
            // Phases no tap reads (1×1 stride 2), odd strides, a stride taller than the kernel.
            (geo(1, [2, 2], [0, 0], [1, 1], 1), 3, 4, 7, 6),
            (geo(3, [3, 2], [1, 0], [1, 1], 1), 3, 4, 10, 9),
            (geo(2, [3, 3], [2, 1], [1, 1], 1), 2, 3, 11, 8),
        ];
        for (g, c, m, h, w) in cases {
            let shape = [2, c, h, w];
            let x: Vec<f32> = (0..2 * c * h * w)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.3)
                .collect();
            let wt: Vec<f32> = (0..m * (c / g.group) * 9)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1)
                .collect();
            let (oh, ow) = g.out_size(h, w);
            let mut out = vec![0.0; 2 * m * oh * ow];
            convolution(
                &x,
                shape,
                &Filter {
                    weights: &wt,
                    packed: &pack_weights(&wt, None, &g, (m, c), SumOrder::Caffe),
                    bias: None,
                    outputs: m,
                    order: SumOrder::Caffe,
                },
                &g,
                &[],
                &mut out,
            )
            .unwrap();
            let want = naive(&x, shape, &wt, &g, m);
            let depthwise = g.group == c && c == m;
            for (a, b) in out.iter().zip(&want) {
                // The depthwise kernel adds terms in the definition's order: bit-identical.
                if depthwise {
                    assert_eq!(a, b, "{g:?}");
                }
                assert!((a - b).abs() < 1e-4, "{g:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn a_fused_sum_adds_the_residual_the_output_held_then_the_relu() {
        let geo = |k: usize, p: usize, group: usize| Geometry {
            kernel: [k, k],
            stride: [1, 1],
            pad: [p, p],
            dilation: [1, 1],
            group,
        };
        // Phased (one group and two), pointwise and depthwise, two images each.
        for (g, c, m) in [
            (geo(3, 1, 1), 3, 5),
            (geo(3, 1, 2), 4, 6),
            (geo(1, 0, 1), 3, 5),
            (geo(3, 1, 4), 4, 4),
        ] {
            let (h, w) = (5, 6);
            let x: Vec<f32> = (0..2 * c * h * w)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.3)
                .collect();
            let wt: Vec<f32> = (0..m * (c / g.group) * g.kernel[0] * g.kernel[1])
                .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1)
                .collect();
            let residual: Vec<f32> = (0..2 * m * h * w)
                .map(|i| ((i * 3 % 7) as f32 - 3.0) * 0.7)
                .collect();
            let filter = Filter {
                weights: &wt,
                packed: &pack_weights(&wt, None, &g, (m, c), SumOrder::MklDnn),
                bias: None,
                outputs: m,
                order: SumOrder::MklDnn,
            };
            let mut plain = vec![0.0; residual.len()];
            convolution(&x, [2, c, h, w], &filter, &g, &[], &mut plain).unwrap();
            let sum = SumPost {
                coeffs: [0.5, 2.0],
                relu: Some(0.1),
            };
            let fused = |input: Input, codes: Option<(Codes, &mut [u8])>, out: &mut [f32]| {
                let extras = Extras {
                    sum: Some(sum),
                    codes,
                };
                convolution_fused(input, [2, c, h, w], &filter, &g, (&[], extras), out)
            };
            let mut out = residual.clone();
            fused(Input::Values(&x), None, &mut out).unwrap();
            for ((o, p), r) in out.iter().zip(&plain).zip(&residual) {
                let v = 2.0 * p + 0.5 * r;
                assert_eq!(*o, if v < 0.0 { v * 0.1 } else { v }, "{g:?}");
            }
            // The codes made beside the values are those of the values.
            let to = Codes {
                ty: crate::engine::quant::IntType::S8,
                scale: 3.1,
            };
            let (mut again, mut got) = (residual.clone(), vec![0u8; residual.len()]);
            fused(Input::Values(&x), Some((to, &mut got)), &mut again).unwrap();
            let mut want = vec![0u8; out.len()];
            codes::quantize(&out, to, &mut want);
            assert_eq!((again, got), (out, want), "{g:?}");
            // Codes for input: the result of their values (each image decoded on its thread).
            let from = Codes {
                ty: crate::engine::quant::IntType::S8,
                scale: 4.0,
            };
            let mut bytes = vec![0u8; x.len()];
            codes::quantize(&x, from, &mut bytes);
            let mut values = vec![0.0f32; x.len()];
            codes::dequantize(&bytes, from, &mut values);
            let (mut of_values, mut of_codes) = (residual.clone(), residual.clone());
            fused(Input::Values(&values), None, &mut of_values).unwrap();
            let decoded = fused(Input::Codes(&bytes, from), None, &mut of_codes);
            if g.is_depthwise(c, m) {
                assert!(decoded.is_err(), "a depthwise convolution reads values");
            } else {
                decoded.unwrap();
                assert_eq!(of_codes, of_values, "{g:?}");
            }
        }
    }

    #[test]
    fn codes_stored_from_the_tiles_are_the_codes_of_the_values() {
        use crate::engine::quant::IntType;
        // 7×7 stride 2 (four phases) with bias and ReLU, two images; then a plain ReLU-free case.
        let g = Geometry {
            kernel: [7, 7],
            stride: [2, 2],
            pad: [0, 0],
            dilation: [1, 1],
            group: 1,
        };
        let (c, m, h, w) = (3, 10, 23, 19);
        let x: Vec<f32> = (0..2 * c * h * w)
            .map(|i| ((i * 7919 % 1013) as f32 - 500.0) * 0.0137)
            .collect();
        let wt: Vec<f32> = (0..m * c * 49)
            .map(|i| ((i * 104_729 % 997) as f32 - 498.0) * 0.0071)
            .collect();
        let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.31 - 1.2).collect();
        let filter = Filter {
            weights: &wt,
            packed: &pack_weights(&wt, Some(&bias), &g, (m, c), SumOrder::MklDnn),
            bias: Some(&bias),
            outputs: m,
            order: SumOrder::MklDnn,
        };
        let (oh, ow) = g.out_size(h, w);
        let to = Codes {
            ty: IntType::U8,
            scale: 7.3,
        };
        for posts in [vec![Post::ReLU(0.0)], vec![]] {
            let mut values = vec![0.0; 2 * m * oh * ow];
            convolution(&x, [2, c, h, w], &filter, &g, &posts, &mut values).unwrap();
            let mut want = vec![0u8; values.len()];
            codes::quantize(&values, to, &mut want);
            let mut got = vec![0u8; values.len()];
            let dims = [2, c, h, w];
            let stored = convolution_to_codes(&x, dims, &filter, &g, &posts, (to, &mut got));
            assert_eq!(stored, Ok(true));
            assert_eq!(got, want, "{posts:?}");
        }
        // Steps the GEMM cannot apply are refused, the output untouched.
        let mut got = vec![9u8; 2 * m * oh * ow];
        let leaky = [Post::ReLU(0.1)];
        let dims = [2, c, h, w];
        let stored = convolution_to_codes(&x, dims, &filter, &g, &leaky, (to, &mut got));
        assert_eq!(stored, Ok(false));
        assert!(got.iter().all(|&b| b == 9));
    }

    #[test]
    fn deconvolution_scatters_as_the_definition() {
        // (geometry, channels in, channels out, height, width): FCN-style 4/2/1 upsampling, grouped 3/2/1
        // with dilation, and 1×1.
        let geo = |k: usize, s: usize, p: usize, d: usize, group: usize| Geometry {
            kernel: [k, k],
            stride: [s, s],
            pad: [p, p],
            dilation: [d, d],
            group,
        };
        for (g, c, m, h, w) in [
            (geo(4, 2, 1, 1, 1), 3, 2, 5, 4),
            (geo(3, 2, 1, 2, 2), 4, 6, 3, 5),
            (geo(1, 1, 0, 1, 1), 2, 3, 2, 2),
        ] {
            let (cg, mg) = (c / g.group, m / g.group);
            let [kh, kw] = g.kernel;
            let o = |i: usize, a: usize| {
                (i - 1) * g.stride[a] + g.dilation[a] * (g.kernel[a] - 1) + 1 - 2 * g.pad[a]
            };
            let (oh, ow) = (o(h, 0), o(w, 1));
            let x: Vec<f32> = (0..2 * c * h * w)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.3)
                .collect();
            let wt: Vec<f32> = (0..c * mg * kh * kw)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1)
                .collect();
            let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.5).collect();
            let mut want = vec![0.0f32; 2 * m * oh * ow];
            for n in 0..2 {
                for ch in 0..c {
                    let gi = ch / cg;
                    for ml in 0..mg {
                        let mo = gi * mg + ml;
                        for (iy, ix, ky, kx) in every_tap(h, w, kh, kw) {
                            let oy = (iy * g.stride[0] + ky * g.dilation[0]) as isize
                                - g.pad[0] as isize;
                            let ox = (ix * g.stride[1] + kx * g.dilation[1]) as isize
                                - g.pad[1] as isize;
                            if oy < 0 || ox < 0 || oy >= oh as isize || ox >= ow as isize {
                                continue;
                            }
                            let v = x[((n * c + ch) * h + iy) * w + ix]
                                * wt[((ch * mg + ml) * kh + ky) * kw + kx];
                            want[((n * m + mo) * oh + oy as usize) * ow + ox as usize] += v;
                        }
                    }
                }
            }
            for (i, v) in want.iter_mut().enumerate() {
                *v += bias[(i / (oh * ow)) % m];
            }
            let mut out = vec![f32::NAN; want.len()];
            let packed = pack_deconv_weights(&wt, &g, m, c);
            let filter = Filter {
                weights: &wt,
                packed: &packed,
                bias: Some(&bias),
                outputs: m,
                order: SumOrder::Caffe,
            };
            deconvolution(&x, [2, c, h, w], &filter, &g, [oh, ow], &mut out).unwrap();
            for (a, b) in out.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4, "{g:?}: {a} vs {b}");
            }
        }
    }

    /// Every (iy, ix, ky, kx).
    fn every_tap(h: usize, w: usize, kh: usize, kw: usize) -> Vec<(usize, usize, usize, usize)> {
        let mut v = Vec::new();
        for iy in 0..h {
            for ix in 0..w {
                for ky in 0..kh {
                    for kx in 0..kw {
                        v.push((iy, ix, ky, kx));
                    }
                }
            }
        }
        v
    }
}
