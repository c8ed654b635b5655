//! Running a plan: one buffer per value, allocated once and reused across batches; data layers filled by
//! a `Feed`; every layer computed by one exhaustive match; an `Observer` called on every output value.

mod int8;

use ndarray::{ArrayD, IxDyn};

use super::error::EngineError;
use super::ops::detection::{Candidates, detection_output};
use super::ops::{activation, conv, inner_product, norm, pool, prior_box, softmax, tensor};
use super::plan::{Plan, Prepared};
use crate::model::layer::{Identity, LayerKind, LossKind};
use crate::model::shape::canonical_axis;
use crate::model::{Layer, ValueId};

/// Provides the tops of Input and data layers.
pub trait Feed {
    fn fill(&mut self, layer: &Layer, tops: &mut [ArrayD<f32>]) -> Result<(), String>;
}

/// Sees every value as soon as it is computed (calibration collects statistics through it).
pub trait Observer {
    fn output(&mut self, layer: &Layer, value: ValueId, data: &ArrayD<f32>);

    /// Whether `output` looks at the data (INT8 values are then dequantized as they are written).
    fn wants_values(&self) -> bool {
        true
    }
}

/// An observer that does nothing.
#[derive(Debug, Default)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn output(&mut self, _: &Layer, _: ValueId, _: &ArrayD<f32>) {}

    fn wants_values(&self) -> bool {
        false
    }
}

#[derive(Debug)]
pub struct Session<'p, 'n> {
    plan: &'p Plan<'n>,
    /// One buffer per value that owns one (see `Plan::buffer_of`); read values through `value`.
    values: Vec<ArrayD<f32>>,
    /// The tops of the layer being computed, taken out of `values` (kept to reuse its allocation).
    tops: Vec<ArrayD<f32>>,
    /// A quantized plan's state: each buffer's current representation and its dequantized view.
    int8: int8::State,
    /// Whether the current pass's observer looks at values.
    eager: bool,
}

impl<'p, 'n> Session<'p, 'n> {
    pub fn new(plan: &'p Plan<'n>) -> Self {
        // Values that live in another value's buffer get none of their own.
        let values = plan
            .shapes
            .iter()
            .enumerate()
            .map(|(v, s)| {
                let own = plan.buffer_of[v] == v;
                ArrayD::zeros(IxDyn(if own { s.as_slice() } else { &[0] }))
            })
            .collect();
        Self {
            plan,
            values,
            tops: Vec::new(),
            int8: int8::State::new(plan),
            eager: false,
        }
    }

    /// With `false`, INT8 values that no FP32 layer reads are not dequantized at the end of a pass
    /// (`eval` and `bench` need only the outputs); `value` of such a value is then stale. Default true.
    pub fn set_dequantized_views(&mut self, views: bool) {
        self.int8.views = views;
    }

    /// The data of a value after the pass (dequantized when it holds INT8 codes, as Intel Caffe's
    /// pycaffe reads its blobs).
    pub fn value(&self, v: ValueId) -> &ArrayD<f32> {
        &self.values[self.plan.buffer_of[v]]
    }

    /// The value a blob name holds at the end of the pass (the last write).
    pub fn blob(&self, name: &str) -> Option<&ArrayD<f32>> {
        let net = self.plan.net;
        (0..net.values.len())
            .rev()
            .find(|&v| net.values[v].name == name)
            .map(|v| self.value(v))
    }

    /// One forward pass.
    pub fn forward(
        &mut self,
        feed: &mut dyn Feed,
        observer: &mut dyn Observer,
    ) -> Result<(), EngineError> {
        if self.plan.int8.is_some() {
            return with_workers_awake(|| self.run_layers_int8(feed, observer));
        }
        with_workers_awake(|| self.run_layers(feed, observer))
    }

    fn run_layers(
        &mut self,
        feed: &mut dyn Feed,
        observer: &mut dyn Observer,
    ) -> Result<(), EngineError> {
        let net = self.plan.net;
        for (id, layer) in net.layers.iter().enumerate() {
            if self.plan.folded[id] {
                // Computed by its producer; its value shares that buffer.
                for &t in &layer.tops {
                    observer.output(layer, t, self.value(t));
                }
                continue;
            }
            let mut tops = std::mem::take(&mut self.tops);
            tops.clear();
            tops.extend(
                layer
                    .tops
                    .iter()
                    .map(|&t| std::mem::replace(&mut self.values[t], ArrayD::zeros(IxDyn(&[0])))),
            );
            let result = match &layer.kind {
                LayerKind::Input { .. } | LayerKind::Data { .. } => feed.fill(layer, &mut tops),
                _ => self.compute(id, layer, &mut tops),
            };
            for (&t, v) in layer.tops.iter().zip(tops.drain(..)) {
                self.values[t] = v;
            }
            self.tops = tops;
            result.map_err(|m| EngineError::layer(layer, m))?;
            for &t in &layer.tops {
                observer.output(layer, t, self.value(t));
            }
        }
        Ok(())
    }

    fn compute(&self, id: usize, l: &Layer, tops: &mut [ArrayD<f32>]) -> Result<(), String> {
        let plan = self.plan;
        let input = |i: usize| -> Result<&ArrayD<f32>, String> {
            l.bottoms
                .get(i)
                .map(|&b| self.value(b))
                .ok_or_else(|| format!("bottom {i} is missing"))
        };
        let x = || input(0).and_then(contiguous);
        let dims =
            |i: usize| -> &[usize] { l.bottoms.get(i).map_or(&[], |&b| plan.shapes[b].as_slice()) };
        let d4 = |i: usize| -> Result<[usize; 4], String> {
            <[usize; 4]>::try_from(dims(i))
                .map_err(|_| format!("expects a 4-D input, got {:?}", dims(i)))
        };
        let blob = |i: usize| -> Result<&[f32], String> {
            l.blobs
                .get(i)
                .and_then(|b| b.data.as_slice())
                .ok_or_else(|| format!("weight blob {i} is missing (were weights given?)"))
        };
        let [top, rest @ ..] = tops else {
            return Ok(());
        };
        if let LayerKind::DetectionOutput(p) = &l.kind {
            // As many rows as detections: the top takes its shape from the data.
            let images = dims(0).first().copied().unwrap_or(1);
            let (conf, prior) = (contiguous(input(1)?)?, contiguous(input(2)?)?);
            // A quantized net runs as Intel Caffe runs it, its NMS candidates included.
            let kind = if plan.int8.is_some() {
                Candidates::IntelPadded
            } else {
                Candidates::Exact
            };
            let rows = detection_output(p, x()?, conf, prior, images, kind)?;
            let n = rows.len() / 7;
            *top = ArrayD::from_shape_vec(IxDyn(&[1, 1, n, 7]), rows).map_err(|e| e.to_string())?;
            return Ok(());
        }
        if let LayerKind::DetectionEvaluate(p) = &l.kind {
            let (det, truth) = (x()?, contiguous(input(1)?)?);
            let rows = super::ops::detection_eval::detection_evaluate(p, det, truth)?;
            let n = rows.len() / 5;
            *top = ArrayD::from_shape_vec(IxDyn(&[1, 1, n, 5]), rows).map_err(|e| e.to_string())?;
            return Ok(());
        }
        let top_shape = plan.shapes[l.tops[0]].as_slice();
        let out = top.as_slice_mut().ok_or("non-contiguous output")?;
        match &l.kind {
            LayerKind::Input { .. } | LayerKind::Data { .. } => {}
            LayerKind::Convolution(c) | LayerKind::Deconvolution(c) => {
                let Prepared::Conv(g, packed) = &plan.prepared[id] else {
                    return Err("not planned".into());
                };
                let bias = if c.bias_term { Some(blob(1)?) } else { None };
                let filter = conv::Filter {
                    weights: blob(0)?,
                    packed,
                    bias,
                    outputs: c.num_output,
                    order: plan.sum_order,
                };
                if matches!(l.kind, LayerKind::Convolution(_)) {
                    conv::convolution(x()?, d4(0)?, &filter, g, &plan.posts[id], out)?;
                } else {
                    let s = top_shape;
                    conv::deconvolution(x()?, d4(0)?, &filter, g, [s[2], s[3]], out)?;
                }
            }
            LayerKind::Pooling(_) => {
                let Prepared::Pool(windows) = &plan.prepared[id] else {
                    return Err("not planned".into());
                };
                let [_, _, h, w] = d4(0)?;
                pool::pooling(windows, x()?, [h, w], out);
            }
            LayerKind::InnerProduct(ip) => {
                let d = dims(0);
                let axis = canonical_axis(ip.axis, d.len())?;
                let (m, k) = (d[..axis].iter().product(), d[axis..].iter().product());
                let bias = if ip.bias_term { Some(blob(1)?) } else { None };
                inner_product::inner_product(
                    x()?,
                    [m, k],
                    blob(0)?,
                    ip.num_output,
                    ip.transpose,
                    bias,
                    out,
                );
            }
            LayerKind::Activation(a) => activation::activation(*a, x()?, out),
            LayerKind::PReLU { .. } => {
                let d = dims(0);
                activation::prelu(x()?, d[0], d.get(1).copied().unwrap_or(1), blob(0)?, out);
            }
            LayerKind::Identity(Identity::Dropout | Identity::SpatialDropout)
            | LayerKind::Split => {
                out.copy_from_slice(x()?);
                for t in rest {
                    t.as_slice_mut()
                        .ok_or("non-contiguous output")?
                        .copy_from_slice(x()?);
                }
            }
            LayerKind::Flatten { .. } | LayerKind::Reshape { .. } => out.copy_from_slice(x()?),
            LayerKind::BatchNorm(_) => {
                let Prepared::BatchNorm(k) = &plan.prepared[id] else {
                    return Err("not planned".into());
                };
                let d = dims(0);
                let c = d.get(1).copied().unwrap_or(1);
                norm::batch_norm(k, x()?, c, d.iter().skip(2).product(), out);
            }
            LayerKind::Scale(a) => {
                let second = if l.bottoms.len() > 1 {
                    Some(contiguous(input(1)?)?)
                } else {
                    None
                };
                let (scale, bias) = match second {
                    Some(s) => (s, if a.bias_term { Some(blob(0)?) } else { None }),
                    None => (blob(0)?, if a.bias_term { Some(blob(1)?) } else { None }),
                };
                norm::affine(dims(0), a, Some(scale), bias, x()?, out)?;
            }
            LayerKind::Bias(a) => {
                let b = if l.bottoms.len() > 1 {
                    contiguous(input(1)?)?
                } else {
                    blob(0)?
                };
                norm::affine(dims(0), a, None, Some(b), x()?, out)?;
            }
            LayerKind::Lrn(p) => norm::lrn(p, x()?, d4(0)?, out)?,
            LayerKind::Normalize {
                across_spatial,
                eps,
                ..
            } => norm::normalize(*across_spatial, *eps, blob(0)?, x()?, d4(0)?, out),
            LayerKind::Mvn {
                normalize_variance,
                across_channels,
                eps,
            } => norm::mvn(
                *normalize_variance,
                *across_channels,
                *eps,
                x()?,
                d4(0)?,
                out,
            ),
            LayerKind::Eltwise { op, coeff } => {
                let inputs = (0..l.bottoms.len())
                    .map(|i| input(i).and_then(contiguous))
                    .collect::<Result<Vec<_>, _>>()?;
                tensor::eltwise(*op, coeff, &inputs, out)?;
            }
            LayerKind::Concat { axis } => {
                let a = canonical_axis(*axis, dims(0).len())?;
                let inputs = (0..l.bottoms.len())
                    .map(|i| Ok((input(i).and_then(contiguous)?, dims(i))))
                    .collect::<Result<Vec<_>, String>>()?;
                tensor::concat(&inputs, a, out);
            }
            LayerKind::Slice { axis, .. } => {
                let d = dims(0);
                let a = canonical_axis(*axis, d.len())?;
                let mut outs: Vec<&mut [f32]> = Vec::with_capacity(1 + rest.len());
                outs.push(out);
                for t in rest.iter_mut() {
                    outs.push(t.as_slice_mut().ok_or("non-contiguous output")?);
                }
                tensor::slice(x()?, d, a, &mut outs);
            }
            LayerKind::Permute { order } => tensor::permute(x()?, dims(0), order, out),
            LayerKind::Crop { axis, offsets } => {
                let d = dims(0);
                let a = canonical_axis(*axis, d.len())?;
                let offs: Vec<usize> = (0..d.len())
                    .map(|i| {
                        if i < a {
                            0
                        } else if offsets.len() == 1 {
                            offsets[0]
                        } else {
                            offsets.get(i - a).copied().unwrap_or(0)
                        }
                    })
                    .collect();
                tensor::crop(x()?, d, top_shape, &offs, out);
            }
            LayerKind::Tile { axis, tiles } => {
                let d = dims(0);
                tensor::tile(x()?, d, canonical_axis(*axis, d.len())?, *tiles, out);
            }
            LayerKind::Reduction { op, axis, coeff } => {
                let d = dims(0);
                let outer = d[..canonical_axis(*axis, d.len())?].iter().product();
                tensor::reduction(*op, *coeff, x()?, outer, out);
            }
            LayerKind::Softmax { axis } => {
                let d = dims(0);
                softmax::softmax(
                    x()?,
                    softmax::split_at_axis(d, canonical_axis(*axis, d.len())?),
                    out,
                );
            }
            LayerKind::ArgMax {
                out_max_val,
                top_k,
                axis,
            } => {
                if axis.is_some() {
                    return Err("ArgMax with an axis is not supported".into());
                }
                let d = dims(0);
                softmax::argmax(
                    x()?,
                    softmax::split_at_axis(d, 1.min(d.len() - 1)),
                    *top_k,
                    *out_max_val,
                    out,
                );
            }
            LayerKind::Accuracy {
                top_k,
                axis,
                ignore_label,
            } => {
                let d = dims(0);
                let split = softmax::split_at_axis(d, canonical_axis(*axis, d.len())?);
                let (acc, per_class) =
                    softmax::accuracy(x()?, contiguous(input(1)?)?, split, *top_k, *ignore_label)?;
                out[0] = acc;
                if let Some(t) = rest.first_mut() {
                    t.as_slice_mut()
                        .ok_or("non-contiguous output")?
                        .copy_from_slice(&per_class);
                }
            }
            LayerKind::Loss(LossKind::SoftmaxWithLoss) => {
                let d = dims(0);
                let p = l.proto.softmax_param.as_ref().map_or(1, |s| s.axis());
                let split = softmax::split_at_axis(d, canonical_axis(p, d.len())?);
                let mut prob = vec![0.0f32; x()?.len()];
                softmax::softmax(x()?, split, &mut prob);
                let (ignore, norm) = loss_settings(l);
                out[0] = softmax::softmax_loss(&prob, contiguous(input(1)?)?, split, ignore, norm)?;
                if let Some(t) = rest.first_mut() {
                    t.as_slice_mut()
                        .ok_or("non-contiguous output")?
                        .copy_from_slice(&prob);
                }
            }
            LayerKind::PriorBox(p) => {
                let (f, i) = (d4(0)?, d4(1)?);
                prior_box::prior_box(p, [f[2], f[3]], [i[2], i[3]], out)?;
            }
            LayerKind::Silence | LayerKind::Hdf5Output => {}
            _ => return Err("this layer type is not supported by the FP32 engine".into()),
        }
        // Fused steps (the convolution applied its own per image, in cache).
        if !matches!(l.kind, LayerKind::Convolution(_)) && !plan.posts[id].is_empty() {
            let data = top.as_slice_mut().ok_or("non-contiguous output")?;
            super::ops::post::apply_all(&plan.posts[id], top_shape, data);
        }
        Ok(())
    }
}

/// Runs `f` while the pool's other workers poll for work instead of sleeping. A pass is a chain of
/// short parallel layers; a sleeping worker takes tens of microseconds to wake for each one, which on
/// small nets was a large share of the pass. The pollers stop when `f` returns.
fn with_workers_awake<R>(f: impl FnOnce() -> R) -> R {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = AtomicBool::new(false);
    let origin = rayon::current_thread_index();
    rayon::in_place_scope(|scope| {
        for _ in 1..rayon::current_num_threads() {
            scope.spawn(|_| {
                // Never poll on the thread running `f`: it would wait for itself.
                if rayon::current_thread_index() == origin && origin.is_some() {
                    return;
                }
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        // Stops the pollers however `f` ends: after a panic they would poll forever and the
        // scope would never return.
        let _stop = StopOnDrop(&done);
        f()
    })
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

fn contiguous(a: &ArrayD<f32>) -> Result<&[f32], String> {
    a.as_slice()
        .ok_or_else(|| "non-contiguous input".to_string())
}

/// SoftmaxWithLoss's ignore label and normalization (`normalize: false` is the legacy BATCH_SIZE).
fn loss_settings(l: &Layer) -> (Option<i32>, softmax::Normalization) {
    use crate::caffe::loss_parameter::NormalizationMode as M;
    let p = l.proto.loss_param.unwrap_or_default();
    let norm = match (p.normalize, p.normalization()) {
        (Some(false), _) => softmax::Normalization::BatchSize,
        (Some(true), _) => softmax::Normalization::Valid,
        (None, M::Full) => softmax::Normalization::Full,
        (None, M::Valid) => softmax::Normalization::Valid,
        (None, M::BatchSize) => softmax::Normalization::BatchSize,
        (None, M::None | M::PreFixed) => softmax::Normalization::None,
    };
    (p.ignore_label, norm)
}
