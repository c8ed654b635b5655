//! Running a quantized plan as Intel Caffe runs it: INT8 convolutions read their input as codes of
//! their type and scale (quantized from FP32, requantized from other codes, or used as they are when
//! type and scale match exactly), ReLU / Pooling / Concat pass codes through, and every other layer
//! reads the dequantized values (spec §4.2-§4.5). Each buffer carries its current representation;
//! buffers holding codes keep them as bytes (`ops::codes`), and their FP32 values (the session's
//! ordinary buffer) are made from the codes when an FP32 layer, an observer or a dump reads them.

use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use super::{Feed, Observer, Session, contiguous};
use crate::engine::compile::Role;
use crate::engine::error::EngineError;
use crate::engine::int8_plan::{FusedF32, InputSpec, Int8Layer, ResidualRead};
use crate::engine::ops::codes::{self, Codes};
use crate::engine::ops::conv::{self, Filter, Input};
use crate::engine::ops::conv_int8::{Int8Conv, Out, convolution_int8};
use crate::engine::ops::post::{self, Post};
use crate::engine::ops::{layout, norm, pool};
use crate::engine::plan::{Plan, Prepared};
use crate::engine::precision::{Exec, Repr};
use crate::engine::quant::IntType;
use crate::model::Layer;
use crate::model::layer::{Activation, EltwiseOp, Identity, LayerKind, PoolMethod};

/// Per buffer: what it holds now, and its codes when that is INT8.
#[derive(Debug, Default)]
pub(super) struct State {
    repr: Vec<Repr>,
    /// The bytes of the codes of buffers that hold INT8 values (N×C×H×W).
    bytes: Vec<Vec<u8>>,
    /// Buffers whose FP32 values are not made from their codes yet.
    stale: Vec<bool>,
    /// Whether every INT8 value's FP32 values are made by the end of a pass.
    pub(super) views: bool,
    /// Buffers whose codes a convolution wrote straight into its Concat's buffer this pass.
    placed: Vec<bool>,
    /// Buffers whose codes stand for the FP32 output of a layer Intel runs in FP32 (a Dropout of
    /// codes): an INT8 reader quantizes their values, as it would the FP32 values.
    via_f32: Vec<bool>,
    /// Codes of an FP32 buffer's values made with them (`codes::quantize`, by a fused FP32
    /// convolution for its INT8 readers), in the buffer's bytes: a reader taking exactly these
    /// codes reads them instead of quantizing the values again.
    codes_too: Vec<Option<Codes>>,
    /// An INT8 layer's input converted to its type and scale.
    converted: Vec<u8>,
    /// A convolution's FP32 residual, read in another layout (`ResidualRead::BlockedAsNhwc`).
    residual: Vec<f32>,
    /// A BatchNorm's input codes as numbers.
    raw: Vec<f32>,
}

impl State {
    pub(super) fn new(plan: &Plan) -> Self {
        let n = plan.shapes.len();
        Self {
            repr: vec![Repr::F32; n],
            bytes: vec![Vec::new(); n],
            stale: vec![false; n],
            placed: vec![false; n],
            via_f32: vec![false; n],
            codes_too: vec![None; n],
            views: true,
            ..Self::default()
        }
    }

    fn codes(&self, b: usize) -> Option<Codes> {
        match self.repr[b] {
            Repr::Int { ty, scale, .. } => Some(Codes { ty, scale }),
            Repr::F32 => None,
        }
    }

    /// Records what a buffer now holds; FP32 values of codes are made now when an observer looks at
    /// every value (`eager`), else when first read.
    fn stored(&mut self, b: usize, repr: Repr, values: &mut ArrayD<f32>, eager: bool) {
        self.repr[b] = repr;
        self.stale[b] = matches!(repr, Repr::Int { .. });
        self.via_f32[b] = false;
        self.codes_too[b] = None;
        if eager {
            self.refresh(b, values);
        }
    }

    /// Makes a buffer's FP32 values from its codes if they are stale.
    fn refresh(&mut self, b: usize, values: &mut ArrayD<f32>) {
        let (Some(from), true) = (self.codes(b), self.stale[b]) else {
            return;
        };
        if let Some(v) = values.as_slice_mut()
            && v.len() == self.bytes[b].len()
        {
            codes::dequantize(&self.bytes[b], from, v);
            self.stale[b] = false;
        }
    }
}

/// The most inputs `Session::read_as_they_stand` takes (more go through `tensor::eltwise` and
/// `tensor::concat`).
const SUM_INPUTS: usize = 4;

/// Values per block of `sum_blocks` (16 KB of decoded codes, in L1).
const SUM_BLOCK: usize = 4096;

thread_local! {
    /// A block of codes decoded by `sum_blocks`.
    static DECODED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `tensor::concat` along `axis` of values and codes (decoded as they are copied): each outer index
/// (the image, for axis 1) in parallel.
fn join_blocks(
    inputs: &[Option<(Input, &[usize])>],
    axis: usize,
    out: &mut [f32],
) -> Result<(), String> {
    let block = |d: &[usize]| d.get(axis..).map_or(0, |d| d.iter().product::<usize>());
    let total: usize = inputs.iter().flatten().map(|(_, d)| block(d)).sum();
    let fits = inputs
        .iter()
        .flatten()
        .all(|(x, d)| d.len() > axis && x.count() == out.len() / total.max(1) * block(d));
    if !fits || total == 0 || !out.len().is_multiple_of(total) {
        return Err("the inputs do not make up the output".into());
    }
    out.par_chunks_mut(total).enumerate().for_each(|(o, dst)| {
        let mut offset = 0;
        for (x, d) in inputs.iter().flatten() {
            let n = block(d);
            let to = &mut dst[offset..offset + n];
            match *x {
                Input::Values(v) => to.copy_from_slice(&v[o * n..(o + 1) * n]),
                Input::Codes(b, from) => codes::dequantize_run(&b[o * n..(o + 1) * n], from, to),
            }
            offset += n;
        }
    });
    Ok(())
}

/// `out = Σ coeff[i]·input[i]` in input order (coefficient 1 when none is given), as
/// `tensor::eltwise` computes it.
fn sum_blocks(inputs: &[Option<Input>], coeff: &[f32], out: &mut [f32]) -> Result<(), String> {
    let fits = inputs.iter().flatten().all(|x| x.count() == out.len());
    if !fits || (!coeff.is_empty() && coeff.len() != inputs.iter().flatten().count()) {
        return Err("the inputs must all have the output's size, one coefficient each".into());
    }
    out.par_chunks_mut(SUM_BLOCK)
        .enumerate()
        .for_each(|(k, o)| {
            let range = k * SUM_BLOCK..k * SUM_BLOCK + o.len();
            DECODED.with_borrow_mut(|decoded| {
                decoded.resize(SUM_BLOCK, 0.0);
                for (i, x) in inputs.iter().flatten().enumerate() {
                    let v: &[f32] = match *x {
                        Input::Values(v) => &v[range.clone()],
                        Input::Codes(b, from) => {
                            let d = &mut decoded[..o.len()];
                            codes::dequantize_run(&b[range.clone()], from, d);
                            d
                        }
                    };
                    let c = coeff.get(i).copied().unwrap_or(1.0);
                    if i == 0 {
                        o.iter_mut().zip(v).for_each(|(o, &v)| *o = c * v);
                    } else {
                        o.iter_mut().zip(v).for_each(|(o, &v)| *o += c * v);
                    }
                }
            });
        });
    Ok(())
}

/// What a buffer holding codes a layer wrote (not a sum buffer) holds.
fn codes_repr(c: Codes) -> Repr {
    Repr::Int {
        ty: c.ty,
        scale: c.scale,
        sum: false,
    }
}

/// A convolution's input and output values and its 4-D input shape (`flat`: an InnerProduct's input
/// seen as N×K×1×1).
fn conv_io(
    plan: &Plan,
    layer: &Layer,
    flat: Option<[usize; 4]>,
) -> Result<(usize, usize, [usize; 4]), String> {
    let (&bottom, &top) = layer
        .bottoms
        .first()
        .zip(layer.tops.first())
        .ok_or("no input or output")?;
    let dims = match flat {
        Some(d) => d,
        None => <[usize; 4]>::try_from(plan.shapes[bottom].as_slice())
            .map_err(|_| "expects a 4-D input")?,
    };
    Ok((bottom, top, dims))
}

impl Session<'_, '_> {
    pub(super) fn run_layers_int8(
        &mut self,
        feed: &mut dyn Feed,
        observer: &mut dyn Observer,
    ) -> Result<(), EngineError> {
        let plan = self.plan;
        let (net, Some(int8)) = (plan.net, plan.int8.as_ref()) else {
            return Err(EngineError::Plan("the plan is not quantized".into()));
        };
        self.eager = observer.wants_values();
        for (id, layer) in net.layers.iter().enumerate() {
            let exec = &int8.precision.exec[id];
            let result = match (exec, &int8.layers[id]) {
                (Exec::Absorbed, _) => Ok(()),
                (Exec::F32, Int8Layer::Plain) if self.reads_as_they_stand(layer) => {
                    self.read_as_they_stand(layer)
                }
                (Exec::Int8 { output, .. }, Int8Layer::Conv(conv, spec, read)) => {
                    self.int8_conv(id, layer, conv, (*spec, *read), *output)
                }
                (_, Int8Layer::FusedF32(f)) => self.fused_f32(id, layer, f),
                (Exec::PassInt8, _) => self.pass_int8(id, layer),
                (Exec::OnCodes, Int8Layer::BatchNorm(steps)) => {
                    self.batch_norm_on_codes(id, layer, steps)
                }
                (Exec::OnCodes, _) => self.batch_norm_on_codes(id, layer, &[]),
                (Exec::F32, _) if self.dropout_on_codes(layer) => Ok(()),
                (Exec::F32, _) if self.pooled_to_codes(id, layer) => Ok(()),
                (_, Int8Layer::BatchNorm(steps)) => self.plain(id, layer, feed).and_then(|()| {
                    let &top = layer.tops.first().ok_or("no output")?;
                    let b = self.plan.buffer_of[top];
                    let o = self.values[b]
                        .as_slice_mut()
                        .ok_or("non-contiguous output")?;
                    post::apply_all(steps, &self.plan.shapes[top], o);
                    Ok(())
                }),
                _ => self.plain(id, layer, feed).and_then(|()| {
                    // An FP32 InnerProduct keeps the ReLU it absorbed.
                    let relu = int8.compiled.fusion(id).and_then(|f| f.relu);
                    relu.map_or(Ok(()), |(_, slope)| self.relu_in_place(layer, slope))
                }),
            };
            result.map_err(|m| EngineError::layer(layer, m))?;
            for &t in &layer.tops {
                observer.output(layer, t, self.value(t));
            }
        }
        if self.int8.views {
            for b in 0..self.values.len() {
                self.refresh(b);
            }
        }
        Ok(())
    }

    /// Whether `read_as_they_stand` runs this layer: an Eltwise SUM or a Concat of at most
    /// `SUM_INPUTS` inputs, none its output's buffer, with no observer looking at values.
    fn reads_as_they_stand(&self, layer: &Layer) -> bool {
        let joins = matches!(
            layer.kind,
            LayerKind::Eltwise {
                op: EltwiseOp::Sum,
                ..
            } | LayerKind::Concat { .. }
        );
        let buffer_of = &self.plan.buffer_of;
        let out = layer.tops.first().map(|&t| buffer_of[t]);
        joins
            && !self.eager
            && (1..=SUM_INPUTS).contains(&layer.bottoms.len())
            && layer.bottoms.iter().all(|&b| Some(buffer_of[b]) != out)
    }

    /// An Eltwise SUM (as `tensor::eltwise`, term by term in input order) or a Concat (as
    /// `tensor::concat`) reading its inputs as they stand: codes whose values nothing has made yet
    /// are decoded where they are used, block by block on the thread that sums them or straight
    /// into their place in the output (their own values stay unmade).
    fn read_as_they_stand(&mut self, layer: &Layer) -> Result<(), String> {
        let plan = self.plan;
        let &top = layer.tops.first().ok_or("no output")?;
        let bout = plan.buffer_of[top];
        let mut out = std::mem::replace(&mut self.values[bout], ArrayD::zeros(IxDyn(&[0])));
        let result = (|| {
            let mut inputs = [None; SUM_INPUTS];
            for (slot, &b) in inputs.iter_mut().zip(&layer.bottoms) {
                let buf = plan.buffer_of[b];
                let x = match self.int8.codes(buf).filter(|_| self.int8.stale[buf]) {
                    Some(from) => Input::Codes(&self.int8.bytes[buf], from),
                    None => Input::Values(contiguous(&self.values[buf])?),
                };
                *slot = Some((x, plan.shapes[b].as_slice()));
            }
            let o = out.as_slice_mut().ok_or("non-contiguous output")?;
            match &layer.kind {
                LayerKind::Eltwise { coeff, .. } => {
                    sum_blocks(&inputs.map(|i| i.map(|(x, _)| x)), coeff, o)
                }
                LayerKind::Concat { axis } => {
                    let rank = inputs[0].map_or(0, |(_, d)| d.len());
                    let axis = crate::model::shape::canonical_axis(*axis, rank)?;
                    join_blocks(&inputs, axis, o)
                }
                _ => Err("neither an Eltwise nor a Concat".into()),
            }
        })();
        self.values[bout] = out;
        let st = &mut self.int8;
        st.repr[bout] = Repr::F32;
        st.stale[bout] = false;
        st.via_f32[bout] = false;
        st.codes_too[bout] = None;
        result
    }

    /// Makes a buffer's FP32 values from its codes if they are stale.
    fn refresh(&mut self, b: usize) {
        self.int8.refresh(b, &mut self.values[b]);
    }

    /// An FP32 layer as in the FP32 plan; INT8 inputs are read dequantized.
    fn plain(&mut self, id: usize, layer: &Layer, feed: &mut dyn Feed) -> Result<(), String> {
        let buffer_of = &self.plan.buffer_of;
        for &b in &layer.bottoms {
            self.refresh(buffer_of[b]);
        }
        let mut tops = std::mem::take(&mut self.tops);
        tops.clear();
        for &t in &layer.tops {
            let b = buffer_of[t];
            tops.push(std::mem::replace(
                &mut self.values[b],
                ArrayD::zeros(IxDyn(&[0])),
            ));
        }
        let result = match &layer.kind {
            LayerKind::Input { .. } | LayerKind::Data { .. } => feed.fill(layer, &mut tops),
            _ => self.compute(id, layer, &mut tops),
        };
        for (&t, v) in layer.tops.iter().zip(tops.drain(..)) {
            let b = buffer_of[t];
            self.values[b] = v;
            self.int8.repr[b] = Repr::F32;
            self.int8.stale[b] = false;
            self.int8.via_f32[b] = false;
            self.int8.codes_too[b] = None;
        }
        self.tops = tops;
        result
    }

    /// Caffe's ReLU on a layer's FP32 output, in place.
    fn relu_in_place(&mut self, layer: &Layer, slope: f32) -> Result<(), String> {
        let &top = layer.tops.first().ok_or("no output")?;
        let b = self.plan.buffer_of[top];
        let o = self.values[b]
            .as_slice_mut()
            .ok_or("non-contiguous output")?;
        o.iter_mut()
            .filter(|v| **v <= 0.0)
            .for_each(|v| *v *= slope);
        Ok(())
    }

    /// The input of an INT8 layer as codes of its type and scale: the buffer's bytes when they are
    /// exactly those, else converted into `State::converted` (true when converted).
    fn prepare_codes(&mut self, bottom: usize, spec: InputSpec) -> Result<bool, String> {
        let b = self.plan.buffer_of[bottom];
        let to = Codes {
            ty: spec.ty,
            scale: spec.scale,
        };
        let st = &mut self.int8;
        let out = &mut st.converted;
        match st.repr[b] {
            Repr::Int { ty, scale, .. } if st.via_f32[b] => {
                out.resize(st.bytes[b].len(), 0);
                codes::quantize_values_of(&st.bytes[b], Codes { ty, scale }, to, out);
            }
            Repr::Int { ty, scale, .. } if ty == spec.ty && scale == spec.scale => {
                return Ok(false);
            }
            // Intel skips the reorder from an s8 sum buffer to u8 at the same scale: the bytes are
            // read as they are.
            Repr::Int {
                ty: IntType::S8,
                scale,
                sum: true,
            } if spec.ty == IntType::U8 && scale == spec.scale => {
                out.resize(st.bytes[b].len(), 0);
                codes::reinterpret_s8_as_u8(&st.bytes[b], out);
            }
            Repr::Int { ty, scale, .. } => {
                out.resize(st.bytes[b].len(), 0);
                codes::requantize(&st.bytes[b], Codes { ty, scale }, to, out);
            }
            Repr::F32 if st.codes_too[b] == Some(to) => return Ok(false),
            Repr::F32 => {
                let src = self.values[b].as_slice().ok_or("non-contiguous input")?;
                out.resize(src.len(), 0);
                codes::quantize(src, to, out);
            }
        }
        Ok(true)
    }

    fn int8_conv(
        &mut self,
        id: usize,
        layer: &Layer,
        conv: &Int8Conv,
        (spec, read): (InputSpec, ResidualRead),
        output: Repr,
    ) -> Result<(), String> {
        let plan = self.plan;
        let (bottom, top, dims) = conv_io(plan, layer, spec.flat)?;
        let (bin, bout) = (plan.buffer_of[bottom], plan.buffer_of[top]);
        let converted = self.prepare_codes(bottom, spec)?;
        let st = &mut self.int8;
        if !converted && bin == bout {
            // The input is also the residual's buffer: read it from a copy.
            st.converted.clone_from(&st.bytes[bin]);
        }
        // When no one looks at this output, codes read only by a Concat go straight to its buffer.
        let placed = plan
            .int8
            .as_ref()
            .and_then(|p| p.concat_slots[id])
            .filter(|_| !self.eager && !st.views && matches!(output, Repr::Int { .. }))
            .map(|slot| (plan.buffer_of[slot.top], slot))
            .filter(|&(cat, _)| cat != bin)
            .map(|(cat, slot)| {
                (
                    cat,
                    plan.shapes[slot.top].iter().product::<usize>(),
                    slot.at,
                )
            });
        let mut values = std::mem::replace(&mut self.values[bout], ArrayD::zeros(IxDyn(&[0])));
        // Codes go to the buffer's bytes (which hold the residual of a sum), values to its FP32 array.
        let dest = placed.map_or(bout, |(cat, ..)| cat);
        let mut out = std::mem::take(&mut st.bytes[dest]);
        // A copy of an FP32 residual that is read scrambled.
        let mut stored = std::mem::take(&mut st.residual);
        let x: &[u8] = if converted || bin == bout {
            &st.converted
        } else {
            &st.bytes[bin]
        };
        st.placed[bout] = placed.is_some();
        let result = match output {
            Repr::Int { .. } => {
                out.resize(placed.map_or(values.len(), |(_, len, _)| len), 0);
                let at = placed.map(|(.., at)| at);
                convolution_int8(conv, x, dims, Out::Codes(&mut out), at);
                Ok(())
            }
            Repr::F32 => values
                .as_slice_mut()
                .map(|o| {
                    // A residual held as codes enters the sum post-op as its integers.
                    if let Some(Codes { ty, .. }) = st.codes(bout) {
                        codes::dequantize(&out, Codes { ty, scale: 1.0 }, o);
                    } else if let (ResidualRead::BlockedAsNhwc, Ok(out_dims)) =
                        (read, <[usize; 4]>::try_from(plan.shapes[top].as_slice()))
                    {
                        stored.clear();
                        stored.extend_from_slice(o);
                        layout::blocked_read_as_nhwc(&stored, out_dims, o);
                    }
                    convolution_int8(conv, x, dims, Out::F32(o), None)
                })
                .ok_or("non-contiguous output"),
        };
        st.bytes[dest] = out;
        st.residual = stored;
        st.stored(bout, output, &mut values, self.eager);
        self.values[bout] = values;
        result.map_err(String::from)
    }

    /// A BatchNorm (then the steps merged into it) on the raw codes of its INT8 input, stored as
    /// s8 codes of the rounded results at the input's scale, as MKL-DNN's s8 batch norm does.
    fn batch_norm_on_codes(
        &mut self,
        id: usize,
        layer: &Layer,
        steps: &[Post],
    ) -> Result<(), String> {
        let plan = self.plan;
        let int8 = plan.int8.as_ref().ok_or("not quantized")?;
        let (&bottom, &top) = layer
            .bottoms
            .first()
            .zip(layer.tops.first())
            .ok_or("no input or output")?;
        let Prepared::BatchNorm(k) = &plan.prepared[id] else {
            return Err("not planned".into());
        };
        let (bin, bout) = (plan.buffer_of[bottom], plan.buffer_of[top]);
        let st = &mut self.int8;
        let Some(Codes { ty, .. }) = st.codes(bin) else {
            return Err("planned on codes but its input holds FP32 values".into());
        };
        let dims = plan.shapes[bottom].as_slice();
        let channels = dims.get(1).copied().unwrap_or(1);
        let spatial = dims.iter().skip(2).product();
        // The codes as the numbers MKL-DNN reads (scale 1), in a buffer kept across passes.
        let mut raw = std::mem::take(&mut st.raw);
        raw.resize(st.bytes[bin].len(), 0.0);
        codes::dequantize(&st.bytes[bin], Codes { ty, scale: 1.0 }, &mut raw);
        let mut values = std::mem::replace(&mut self.values[bout], ArrayD::zeros(IxDyn(&[0])));
        let mut out = std::mem::take(&mut st.bytes[bout]);
        let result = match values.as_slice_mut() {
            Some(o) if o.len() == raw.len() => {
                norm::batch_norm(k, &raw, channels, spatial, o);
                post::apply_all(steps, dims, o);
                out.resize(o.len(), 0);
                codes::quantize(
                    o,
                    Codes {
                        ty: IntType::S8,
                        scale: 1.0,
                    },
                    &mut out,
                );
                Ok(())
            }
            _ => Err("the output does not match the input's shape".to_string()),
        };
        st.raw = raw;
        st.bytes[bout] = out;
        st.stored(bout, int8.precision.repr[top], &mut values, self.eager);
        self.values[bout] = values;
        result
    }

    /// A fused convolution that Intel runs in FP32: folded weights, then the sum and ReLU.
    fn fused_f32(&mut self, id: usize, layer: &Layer, f: &FusedF32) -> Result<(), String> {
        let plan = self.plan;
        let (bottom, top, dims) = conv_io(plan, layer, None)?;
        let (bin, bout) = (plan.buffer_of[bottom], plan.buffer_of[top]);
        // Codes whose values nothing has made yet are read as codes, each image's values made
        // while in cache (not for a depthwise convolution, nor when an observer wants every value).
        let codes_in = self
            .int8
            .codes(bin)
            .filter(|_| self.int8.stale[bin] && !self.eager && bin != bout)
            .filter(|_| !f.geometry.is_depthwise(dims[1], f.bias.len()));
        let to_pooled = f.sum.is_none() && bin != bout && self.max_pools_codes(id, top).is_some();
        if codes_in.is_none() || to_pooled {
            self.refresh(bin);
        }
        if f.sum.is_some() {
            // The residual, in the output's buffer.
            self.refresh(bout);
        }
        let mut out = std::mem::replace(&mut self.values[bout], ArrayD::zeros(IxDyn(&[0])));
        let filter = Filter {
            weights: &f.weights,
            packed: &f.packed,
            bias: Some(&f.bias),
            outputs: f.bias.len(),
            order: conv::SumOrder::MklDnn,
        };
        let relu_posts = f.relu.map(Post::ReLU);
        // With a sum, the ReLU follows it (`SumPost`).
        let posts = match f.sum {
            Some(_) => &[],
            None => relu_posts.as_slice(),
        };
        if let (None, true, Some(to)) = (f.sum, bin != bout, self.max_pools_codes(id, top)) {
            // Straight to the codes its MAX Poolings give their readers (`pooled_to_codes`).
            let st = &mut self.int8;
            let mut bytes = std::mem::take(&mut st.bytes[bout]);
            bytes.resize(out.len(), 0);
            let done = self.values[bin]
                .as_slice()
                .ok_or_else(|| "non-contiguous input".to_string())
                .and_then(|x| {
                    let to_codes = (to, bytes.as_mut_slice());
                    conv::convolution_to_codes(x, dims, &filter, &f.geometry, posts, to_codes)
                });
            st.bytes[bout] = bytes;
            match done {
                Ok(true) => {
                    st.stored(bout, codes_repr(to), &mut out, false);
                    self.values[bout] = out;
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => {
                    self.values[bout] = out;
                    return Err(e);
                }
            }
        }
        // The codes its INT8 readers take, made per image beside the values.
        let also = self.int8_readers_codes(id);
        let mut bytes = std::mem::take(&mut self.int8.bytes[bout]);
        if also.is_some() {
            bytes.resize(out.len(), 0);
        }
        let result = (|| {
            let x = match codes_in {
                Some(from) if !to_pooled => conv::Input::Codes(&self.int8.bytes[bin], from),
                _ => conv::Input::Values(contiguous(self.value(bottom))?),
            };
            let o = out.as_slice_mut().ok_or("non-contiguous output")?;
            let extras = conv::Extras {
                // The Eltwise (residual coefficient first), then the fused ReLU.
                sum: f.sum.map(|coeffs| conv::SumPost {
                    coeffs,
                    relu: f.relu,
                }),
                codes: also.map(|to| (to, bytes.as_mut_slice())),
            };
            conv::convolution_fused(x, dims, &filter, &f.geometry, (posts, extras), o)
        })();
        let st = &mut self.int8;
        st.bytes[bout] = bytes;
        self.values[bout] = out;
        st.repr[bout] = Repr::F32;
        st.stale[bout] = false;
        st.codes_too[bout] = also.filter(|_| result.is_ok());
        result
    }

    /// The codes every INT8 convolution reading the fused output of `conv` takes, when there is
    /// one and they all take the same (its other readers read the values).
    fn int8_readers_codes(&self, conv: usize) -> Option<Codes> {
        let int8 = self.plan.int8.as_ref()?;
        let output = int8.compiled.fusion(conv)?.output;
        self.codes_taken(output, false)
    }

    /// A Dropout (the identity at test) of a buffer holding codes, when every reader either reads
    /// FP32 values or is an INT8 convolution: its output keeps the codes (as bytes standing for the
    /// FP32 values Intel's Dropout outputs), so the codes are neither dequantized nor copied as
    /// values; an INT8 reader quantizes those values exactly as it would the FP32 output. False when
    /// the layer is not such a Dropout (it then runs as planned).
    fn dropout_on_codes(&mut self, layer: &Layer) -> bool {
        let plan = self.plan;
        let (net, Some(int8)) = (plan.net, plan.int8.as_ref()) else {
            return false;
        };
        let is_dropout = matches!(
            layer.kind,
            LayerKind::Identity(Identity::Dropout | Identity::SpatialDropout)
        );
        let (true, false, Some(&bottom), [top]) = (
            is_dropout,
            self.eager,
            layer.bottoms.first(),
            layer.tops.as_slice(),
        ) else {
            return false;
        };
        let (bin, bout) = (plan.buffer_of[bottom], plan.buffer_of[*top]);
        let Repr::Int { .. } = self.int8.repr[bin] else {
            return false;
        };
        // Readers that reach the bytes other than through `prepare_codes` or `refresh` (INT8
        // pass-through, BatchNorm on codes) would read them as INT8 outputs.
        let readers_ok = net.values[*top]
            .consumers
            .iter()
            .all(|&r| matches!(int8.precision.exec[r], Exec::F32 | Exec::Int8 { .. }));
        if !readers_ok {
            return false;
        }
        let st = &mut self.int8;
        if bin != bout {
            let mut out = std::mem::take(&mut st.bytes[bout]);
            out.clone_from(&st.bytes[bin]);
            st.bytes[bout] = out;
        }
        let repr = st.repr[bin];
        let mut values = std::mem::replace(&mut self.values[bout], ArrayD::zeros(IxDyn(&[0])));
        st.stored(bout, repr, &mut values, false);
        self.values[bout] = values;
        st.via_f32[bout] = true;
        true
    }

    /// The codes every reader of `value` takes, when each is an INT8 convolution and all take the
    /// same type and scale.
    fn readers_codes(&self, value: usize) -> Option<Codes> {
        self.codes_taken(value, true)
    }

    /// The codes the INT8 convolutions among the readers of `value` take, when there is one and all
    /// take the same type and scale (and, with `every_reader`, no other layer reads it).
    fn codes_taken(&self, value: usize, every_reader: bool) -> Option<Codes> {
        let int8 = self.plan.int8.as_ref()?;
        let mut codes = None;
        for &r in &self.plan.net.values[value].consumers {
            let Int8Layer::Conv(_, spec, _) = &int8.layers[r] else {
                if every_reader {
                    return None;
                }
                continue;
            };
            let this = Codes {
                ty: spec.ty,
                scale: spec.scale,
            };
            if spec.flat.is_some() || codes.is_some_and(|c| c != this) {
                return None;
            }
            codes = Some(this);
        }
        codes
    }

    /// The codes an FP32 convolution's output `value` can be stored as instead of its values: when
    /// nothing else looks at it (no observer, no views) and every reader is an FP32 MAX Pooling
    /// that `pooled_to_codes` turns into u8 codes, all the same. The maximum of a window's codes is
    /// the code of its maximum (quantization never reverses an order; an unordered NaN becomes the
    /// lowest u8 code, which a maximum skips as Caffe's skips the NaN), so the pools' outputs are
    /// unchanged.
    fn max_pools_codes(&self, conv: usize, value: usize) -> Option<Codes> {
        if self.eager || self.int8.views {
            return None;
        }
        self.max_pool_readers(conv, value, None)
    }

    /// `max_pools_codes` of the readers of `value`, agreeing with `codes` so far; the layers
    /// absorbed into the convolution `conv` (its BatchNorm, Scale, ReLU) stand for their readers.
    fn max_pool_readers(&self, conv: usize, value: usize, codes: Option<Codes>) -> Option<Codes> {
        let plan = self.plan;
        let int8 = plan.int8.as_ref()?;
        let mut codes = codes;
        for &r in &plan.net.values[value].consumers {
            let layer = &plan.net.layers[r];
            let absorbed = int8.compiled.roles[r] == Role::Absorbed(conv);
            match (&layer.kind, &int8.precision.exec[r], layer.tops.as_slice()) {
                (_, _, [top]) if absorbed => {
                    codes = Some(self.max_pool_readers(conv, *top, codes)?)
                }
                (LayerKind::Pooling(p), Exec::F32, [top]) if p.method == PoolMethod::Max => {
                    let this = self.readers_codes(*top)?;
                    if this.ty != IntType::U8 || codes.is_some_and(|c| c != this) {
                        return None;
                    }
                    codes = Some(this);
                }
                _ => return None,
            }
        }
        codes
    }

    /// An FP32 Pooling whose FP32 output nothing reads (no observer, no views) and whose every
    /// reader is an INT8 convolution taking the same codes: pooled and quantized to those codes
    /// plane by plane while in cache, as the readers would quantize the values. False when not
    /// such a layer (it then runs as planned).
    fn pooled_to_codes(&mut self, id: usize, layer: &Layer) -> bool {
        let plan = self.plan;
        let (LayerKind::Pooling(_), Prepared::Pool(windows), [bottom], [top]) = (
            &layer.kind,
            &plan.prepared[id],
            layer.bottoms.as_slice(),
            layer.tops.as_slice(),
        ) else {
            return false;
        };
        let (bin, bout) = (plan.buffer_of[*bottom], plan.buffer_of[*top]);
        let hw = plan.shapes[*bottom]
            .get(2..4)
            .and_then(|d| <[usize; 2]>::try_from(d).ok());
        let (false, false, Some([h, w]), Some(to)) =
            (self.eager, self.int8.views, hw, self.readers_codes(*top))
        else {
            return false;
        };
        let is_max = matches!(&layer.kind, LayerKind::Pooling(p) if p.method == PoolMethod::Max);
        let st = &mut self.int8;
        let mut out = std::mem::take(&mut st.bytes[bout]);
        out.resize(plan.shapes[*top].iter().product(), 0);
        match (st.repr[bin], self.values[bin].as_slice()) {
            (Repr::F32, Some(x)) => pool::pooling_to_codes(windows, x, [h, w], to, &mut out),
            // Codes of the readers' type and scale (`max_pools_codes`): the maximum of the codes
            // is the code of the maximum of their values.
            (Repr::Int { ty, scale, .. }, _)
                if is_max && bin != bout && to == (Codes { ty, scale }) =>
            {
                pool::pooling_codes(windows, &st.bytes[bin], [h, w], ty, &mut out);
            }
            _ => {
                st.bytes[bout] = out;
                return false;
            }
        }
        st.bytes[bout] = out;
        let mut values = std::mem::replace(&mut self.values[bout], ArrayD::zeros(IxDyn(&[0])));
        st.stored(bout, codes_repr(to), &mut values, false);
        self.values[bout] = values;
        true
    }

    /// ReLU, Pooling or Concat on codes.
    fn pass_int8(&mut self, id: usize, layer: &Layer) -> Result<(), String> {
        let plan = self.plan;
        let int8 = plan.int8.as_ref().ok_or("not quantized")?;
        let &top = layer.tops.first().ok_or("no output")?;
        let out_repr = int8.precision.repr[top];
        let Repr::Int {
            ty,
            scale: out_scale,
            ..
        } = out_repr
        else {
            return Err("planned as INT8 without an INT8 output".into());
        };
        let bout = plan.buffer_of[top];
        let st = &mut self.int8;
        let mut out = std::mem::take(&mut st.bytes[bout]);
        let mut values = std::mem::replace(&mut self.values[bout], ArrayD::zeros(IxDyn(&[0])));
        out.resize(values.len(), 0);
        let input = |i: usize| -> Result<usize, String> {
            let &b = layer.bottoms.get(i).ok_or("missing input")?;
            Ok(plan.buffer_of[b])
        };
        let result = (|| -> Result<(), String> {
            match &layer.kind {
                LayerKind::Activation(Activation::ReLU { negative_slope }) => {
                    let bin = input(0)?;
                    if bin != bout {
                        out.copy_from_slice(&st.bytes[bin]);
                    }
                    codes::relu(&mut out, ty, *negative_slope);
                }
                LayerKind::Pooling(_) => {
                    let Prepared::Pool(windows) = &plan.prepared[id] else {
                        return Err("not planned".into());
                    };
                    let [_, _, h, w] =
                        <[usize; 4]>::try_from(plan.shapes[layer.bottoms[0]].as_slice())
                            .map_err(|_| "expects a 4-D input")?;
                    let bin = input(0)?;
                    let x = match st.repr[bin] {
                        // An s8 sum buffer is pooled as u8: its bytes read as they are.
                        Repr::Int {
                            ty: IntType::S8, ..
                        } if ty == IntType::U8 => {
                            st.converted.resize(st.bytes[bin].len(), 0);
                            codes::reinterpret_s8_as_u8(&st.bytes[bin], &mut st.converted);
                            &st.converted
                        }
                        _ => &st.bytes[bin],
                    };
                    pool::pooling_codes(windows, x, [h, w], ty, &mut out);
                }
                LayerKind::Concat { axis } => {
                    let dims0 = plan.shapes[layer.bottoms[0]].as_slice();
                    let a = crate::model::shape::canonical_axis(*axis, dims0.len())?;
                    let outer: usize = dims0[..a].iter().product();
                    let block = |v: usize| -> usize { plan.shapes[v][a..].iter().product() };
                    let total: usize = layer.bottoms.iter().map(|&v| block(v)).sum();
                    let values = &self.values;
                    for &v in &layer.bottoms {
                        let b = plan.buffer_of[v];
                        let len = match st.repr[b] {
                            _ if st.placed[b] => outer * block(v),
                            Repr::Int { .. } => st.bytes[b].len(),
                            Repr::F32 => values[b].as_slice().map_or(0, <[f32]>::len),
                        };
                        if len != outer * block(v) || out.len() != outer * total {
                            return Err("the inputs do not match the output's shape".into());
                        }
                    }
                    let to = Codes {
                        ty,
                        scale: out_scale,
                    };
                    // Each input's block per outer index: copied when it holds codes of the output
                    // type and scale, else requantized (FP32 inputs quantized) as it is copied.
                    out.par_chunks_mut(total.max(1))
                        .enumerate()
                        .for_each(|(o, dst)| {
                            let mut offset = 0;
                            for &v in &layer.bottoms {
                                let (b, n) = (plan.buffer_of[v], block(v));
                                let d = &mut dst[offset..offset + n];
                                let run = o * n..(o + 1) * n;
                                offset += n;
                                if st.placed[b] {
                                    // Written there by its convolution.
                                    continue;
                                }
                                match st.repr[b] {
                                    Repr::Int { ty: t, scale, .. }
                                        if t == ty && scale == out_scale =>
                                    {
                                        d.copy_from_slice(&st.bytes[b][run]);
                                    }
                                    Repr::Int { ty: t, scale, .. } => {
                                        let from = Codes { ty: t, scale };
                                        codes::requantize_run(&st.bytes[b][run], from, to, d);
                                    }
                                    Repr::F32 => {
                                        let x = values[b].as_slice().unwrap_or_default();
                                        codes::quantize_run(&x[run], to, d);
                                    }
                                }
                            }
                        });
                    for &v in &layer.bottoms {
                        st.placed[plan.buffer_of[v]] = false;
                    }
                }
                _ => return Err("this layer does not pass INT8 through".into()),
            }
            Ok(())
        })();
        st.bytes[bout] = out;
        st.stored(bout, out_repr, &mut values, self.eager);
        self.values[bout] = values;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ops::tensor;

    /// Codes decoded block by block and summed equal `tensor::eltwise` of their values, bit for
    /// bit, with and without coefficients, over sizes around the block.
    #[test]
    fn sums_of_codes_read_as_they_stand_equal_the_eltwise_of_their_values() {
        let from = Codes {
            ty: IntType::S8,
            scale: 3.7,
        };
        for n in [1, SUM_BLOCK - 1, SUM_BLOCK, 2 * SUM_BLOCK + 5] {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 73 % 256) as u8).collect();
            let values: Vec<f32> = (0..n).map(|i| (i % 97) as f32 * 0.31 - 11.0).collect();
            let mut decoded = vec![0.0f32; n];
            codes::dequantize(&bytes, from, &mut decoded);
            for coeff in [&[][..], &[0.5, -2.0][..]] {
                let mut want = vec![0.0f32; n];
                tensor::eltwise(EltwiseOp::Sum, coeff, &[&values, &decoded], &mut want).unwrap();
                let inputs = [
                    Some(Input::Values(&values)),
                    Some(Input::Codes(&bytes, from)),
                ];
                let mut got = vec![f32::NAN; n];
                sum_blocks(&inputs, coeff, &mut got).unwrap();
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{n} values, coefficients {coeff:?}"
                );
            }
            let short = [Some(Input::Codes(&bytes[..n - 1], from))];
            assert!(sum_blocks(&short, &[], &mut vec![0.0; n]).is_err());
        }
    }

    /// Codes decoded into their place equal `tensor::concat` of their values, bit for bit.
    #[test]
    fn joins_of_codes_read_as_they_stand_equal_the_concat_of_their_values() {
        let from = Codes {
            ty: IntType::U8,
            scale: 5.25,
        };
        let (a_dims, b_dims) = ([2usize, 3, 4, 5], [2usize, 2, 4, 5]);
        let values: Vec<f32> = (0..120).map(|i| i as f32 * 0.7 - 9.0).collect();
        let bytes: Vec<u8> = (0..80).map(|i| (i * 37 % 256) as u8).collect();
        let mut decoded = vec![0.0f32; 80];
        codes::dequantize(&bytes, from, &mut decoded);
        let mut want = vec![0.0f32; 200];
        tensor::concat(&[(&values, &a_dims), (&decoded, &b_dims)], 1, &mut want);
        let inputs = [
            Some((Input::Values(&values), &a_dims[..])),
            Some((Input::Codes(&bytes, from), &b_dims[..])),
        ];
        let mut got = vec![f32::NAN; 200];
        join_blocks(&inputs, 1, &mut got).unwrap();
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
        assert!(join_blocks(&inputs, 1, &mut vec![0.0; 199]).is_err());
    }
}
