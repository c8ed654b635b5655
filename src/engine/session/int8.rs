//! Running a quantized plan as Intel Caffe runs it: INT8 convolutions read their input as codes of
//! their type and scale (quantized from FP32, requantized from other codes, or used as they are when
//! type and scale match exactly), ReLU / Pooling / Concat pass codes through, and every other layer
//! reads the dequantized values (spec §4.2-§4.5). Each buffer carries its current representation;
//! buffers holding codes keep a dequantized copy, which FP32 consumers, observers and dumps read.

use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use super::{Feed, Observer, Session, contiguous};
use crate::engine::error::EngineError;
use crate::engine::int8_plan::{FusedF32, InputSpec, Int8Layer};
use crate::engine::ops::conv::{self, Filter};
use crate::engine::ops::conv_int8::{Int8Conv, convolution_int8};
use crate::engine::ops::post::Post;
use crate::engine::ops::{pool, tensor};
use crate::engine::plan::{Plan, Prepared};
use crate::engine::precision::{Exec, Repr};
use crate::engine::quant::{self, IntType};
use crate::model::Layer;
use crate::model::layer::{Activation, LayerKind, PoolMethod};

/// Per buffer: what it holds now, and its dequantized copy when that is codes.
#[derive(Debug, Default)]
pub(super) struct State {
    repr: Vec<Repr>,
    shadow: Vec<ArrayD<f32>>,
    /// Buffers an FP32 layer reads: their dequantized copy is made as soon as they are written.
    read_as_f32: Vec<bool>,
    /// Buffers whose dequantized copy is not made yet.
    stale: Vec<bool>,
    /// Whether every INT8 value's dequantized copy is made by the end of a pass.
    pub(super) views: bool,
    /// An INT8 layer's input converted to its type and scale.
    codes: Vec<f32>,
    /// A fused FP32 convolution's residual, saved before the buffer is overwritten.
    residual: Vec<f32>,
}

impl State {
    pub(super) fn new(plan: &Plan) -> Self {
        let n = plan.shapes.len();
        let mut read_as_f32 = vec![false; n];
        if let Some(int8) = &plan.int8 {
            for (id, l) in plan.net.layers.iter().enumerate() {
                let reads_codes =
                    matches!(int8.precision.exec[id], Exec::PassInt8 | Exec::Absorbed)
                        || matches!(int8.layers[id], Int8Layer::Conv(..));
                if !reads_codes {
                    l.bottoms
                        .iter()
                        .for_each(|&b| read_as_f32[plan.buffer_of[b]] = true);
                }
            }
        }
        Self {
            repr: vec![Repr::F32; n],
            shadow: vec![ArrayD::zeros(IxDyn(&[0])); n],
            read_as_f32,
            stale: vec![false; n],
            views: true,
            codes: Vec::new(),
            residual: Vec::new(),
        }
    }

    /// The dequantized copy of a buffer that holds codes.
    pub(super) fn dequantized(&self, b: usize) -> Option<&ArrayD<f32>> {
        match self.repr.get(b) {
            Some(Repr::Int { .. }) => self.shadow.get(b),
            _ => None,
        }
    }

    /// Records what a buffer now holds; its dequantized copy is made now when an FP32 layer reads it
    /// or `eager` (an observer looks at every value), else marked stale.
    fn stored(&mut self, b: usize, repr: Repr, data: &ArrayD<f32>, eager: bool) {
        self.repr[b] = repr;
        self.stale[b] = false;
        if matches!(repr, Repr::Int { .. }) {
            if self.read_as_f32[b] || eager {
                self.dequantize(b, data);
            } else {
                self.stale[b] = true;
            }
        }
    }

    fn dequantize(&mut self, b: usize, data: &ArrayD<f32>) {
        let Repr::Int { scale, .. } = self.repr[b] else {
            return;
        };
        let shadow = &mut self.shadow[b];
        if shadow.shape() != data.shape() {
            *shadow = ArrayD::zeros(data.raw_dim());
        }
        if let (Some(d), Some(q)) = (shadow.as_slice_mut(), data.as_slice()) {
            d.par_chunks_mut(CHUNK)
                .zip(q.par_chunks(CHUNK))
                .for_each(|(d, q)| {
                    for (d, &q) in d.iter_mut().zip(q) {
                        *d = quant::dequantize(q as i32, scale);
                    }
                });
        }
        self.stale[b] = false;
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

/// Elements per parallel block of the conversions.
const CHUNK: usize = 1 << 15;

/// `dst[i] = f(src[i])` in parallel blocks.
fn map_parallel(src: &[f32], dst: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
    dst.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, &v)| *d = f(v)));
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
                (Exec::Int8 { output, .. }, Int8Layer::Conv(conv, spec)) => {
                    self.int8_conv(layer, conv, *spec, *output)
                }
                (_, Int8Layer::FusedF32(f)) => self.fused_f32(layer, f),
                (Exec::PassInt8, _) => self.pass_int8(id, layer),
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
                if self.int8.stale[b] {
                    let data = std::mem::replace(&mut self.values[b], ArrayD::zeros(IxDyn(&[0])));
                    self.int8.dequantize(b, &data);
                    self.values[b] = data;
                }
            }
        }
        Ok(())
    }

    /// An FP32 layer as in the FP32 plan; INT8 inputs are read dequantized.
    fn plain(&mut self, id: usize, layer: &Layer, feed: &mut dyn Feed) -> Result<(), String> {
        let buffer_of = &self.plan.buffer_of;
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

    /// The input of an INT8 layer as codes of its type and scale: the buffer itself when it already
    /// holds exactly those, else converted into `State::codes` (true when converted).
    fn prepare_codes(&mut self, bottom: usize, spec: InputSpec) -> Result<bool, String> {
        let b = self.plan.buffer_of[bottom];
        let src = self.values[b].as_slice().ok_or("non-contiguous input")?;
        if let Repr::Int { ty, scale, .. } = self.int8.repr[b]
            && ty == spec.ty
            && scale == spec.scale
        {
            return Ok(false);
        }
        let codes = &mut self.int8.codes;
        codes.resize(src.len(), 0.0);
        match self.int8.repr[b] {
            // Intel skips the reorder from an s8 sum buffer to u8 at the same scale: the bytes are
            // read as they are.
            Repr::Int {
                ty: IntType::S8,
                scale,
                sum: true,
            } if spec.ty == IntType::U8 && scale == spec.scale => {
                for (d, &q) in codes.iter_mut().zip(src) {
                    *d = f32::from(q as i32 as i8 as u8);
                }
            }
            Repr::Int { scale, .. } => {
                let f = |q: f32| quant::requantize(q as i32, scale, spec.scale, spec.ty) as f32;
                map_parallel(src, codes, f);
            }
            Repr::F32 => {
                map_parallel(src, codes, |x| {
                    quant::quantize(x, spec.scale, spec.ty) as f32
                });
            }
        }
        Ok(true)
    }

    fn int8_conv(
        &mut self,
        layer: &Layer,
        conv: &Int8Conv,
        spec: InputSpec,
        output: Repr,
    ) -> Result<(), String> {
        let plan = self.plan;
        let (bottom, top, dims) = conv_io(plan, layer, spec.flat)?;
        let (bin, bout) = (plan.buffer_of[bottom], plan.buffer_of[top]);
        let converted = self.prepare_codes(bottom, spec)?;
        if !converted && bin == bout {
            // The input is also the residual's buffer: read it from a copy.
            let src = self.values[bin].as_slice().ok_or("non-contiguous input")?;
            self.int8.codes.clear();
            self.int8.codes.extend_from_slice(src);
        }
        let mut out = std::mem::replace(&mut self.values[bout], ArrayD::zeros(IxDyn(&[0])));
        {
            let x: &[f32] = if converted || bin == bout {
                &self.int8.codes
            } else {
                contiguous(&self.values[bin])?
            };
            let o = out.as_slice_mut().ok_or("non-contiguous output")?;
            convolution_int8(conv, x, dims, o);
        }
        self.int8.stored(bout, output, &out, self.eager);
        self.values[bout] = out;
        Ok(())
    }

    /// A fused convolution that Intel runs in FP32: folded weights, then the sum and ReLU.
    fn fused_f32(&mut self, layer: &Layer, f: &FusedF32) -> Result<(), String> {
        let plan = self.plan;
        let (bottom, top, dims) = conv_io(plan, layer, None)?;
        let bout = plan.buffer_of[top];
        if f.sum.is_some() {
            // Reused across passes: taken out while the session is read.
            let mut residual = std::mem::take(&mut self.int8.residual);
            residual.clear();
            residual.extend_from_slice(contiguous(self.value(top))?);
            self.int8.residual = residual;
        }
        let mut out = std::mem::replace(&mut self.values[bout], ArrayD::zeros(IxDyn(&[0])));
        let filter = Filter {
            weights: &f.weights,
            packed: &f.packed,
            bias: Some(&f.bias),
            outputs: f.bias.len(),
        };
        let relu_posts = f.relu.map(Post::ReLU);
        let posts: &[Post] = match (&relu_posts, f.sum) {
            (Some(p), None) => std::slice::from_ref(p),
            _ => &[],
        };
        let result = {
            let x = contiguous(self.value(bottom))?;
            let o = out.as_slice_mut().ok_or("non-contiguous output")?;
            conv::convolution(x, dims, &filter, &f.geometry, posts, o)
        };
        if let (Ok(()), Some([c0, c1]), Some(o)) = (&result, f.sum, out.as_slice_mut()) {
            // The Eltwise (residual coefficient first), then the fused ReLU.
            for (v, &r) in o.iter_mut().zip(&self.int8.residual) {
                *v = c1 * *v + c0 * r;
                if let Some(slope) = f.relu
                    && *v < 0.0
                {
                    *v *= slope;
                }
            }
        }
        self.values[bout] = out;
        self.int8.repr[bout] = Repr::F32;
        result
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
        let mut out = std::mem::replace(&mut self.values[bout], ArrayD::zeros(IxDyn(&[0])));
        let result = (|| -> Result<(), String> {
            let o = out.as_slice_mut().ok_or("non-contiguous output")?;
            let input = |i: usize| -> Result<(&[f32], Repr), String> {
                let &b = layer.bottoms.get(i).ok_or("missing input")?;
                let buf = plan.buffer_of[b];
                Ok((contiguous(&self.values[buf])?, self.int8.repr[buf]))
            };
            match &layer.kind {
                LayerKind::Activation(Activation::ReLU { negative_slope }) => {
                    let (x, _) = input(0)?;
                    for (d, &q) in o.iter_mut().zip(x) {
                        *d = if q < 0.0 {
                            quant::round_saturate(q * negative_slope, ty) as f32
                        } else {
                            q
                        };
                    }
                }
                LayerKind::Pooling(p) => {
                    let (x, _) = input(0)?;
                    let Prepared::Pool(windows) = &plan.prepared[id] else {
                        return Err("not planned".into());
                    };
                    let [_, _, h, w] =
                        <[usize; 4]>::try_from(plan.shapes[layer.bottoms[0]].as_slice())
                            .map_err(|_| "expects a 4-D input")?;
                    pool::pooling(windows, x, [h, w], o);
                    if p.method == PoolMethod::Ave {
                        // Codes: the mean rounded to the nearest code (pool::pooling divided already).
                        o.iter_mut()
                            .for_each(|v| *v = quant::round_saturate(*v, ty) as f32);
                    }
                }
                LayerKind::Concat { axis } => {
                    let dims0 = plan.shapes[layer.bottoms[0]].as_slice();
                    let a = crate::model::shape::canonical_axis(*axis, dims0.len())?;
                    // Inputs already at the output scale are read in place; others requantized.
                    let mut parts = Vec::with_capacity(layer.bottoms.len());
                    for (i, &b) in layer.bottoms.iter().enumerate() {
                        let (x, repr) = input(i)?;
                        let scale = match repr {
                            Repr::Int { scale, .. } => scale,
                            Repr::F32 => 1.0,
                        };
                        let codes: std::borrow::Cow<[f32]> = if scale == out_scale {
                            std::borrow::Cow::Borrowed(x)
                        } else {
                            let mut v = vec![0.0; x.len()];
                            let f =
                                |q: f32| quant::requantize(q as i32, scale, out_scale, ty) as f32;
                            map_parallel(x, &mut v, f);
                            std::borrow::Cow::Owned(v)
                        };
                        parts.push((codes, plan.shapes[b].as_slice()));
                    }
                    let inputs: Vec<(&[f32], &[usize])> =
                        parts.iter().map(|(c, s)| (c.as_ref(), *s)).collect();
                    tensor::concat(&inputs, a, o);
                }
                _ => return Err("this layer does not pass INT8 through".into()),
            }
            Ok(())
        })();
        self.int8.stored(bout, out_repr, &out, self.eager);
        self.values[bout] = out;
        result
    }
}
