//! A net compiled for execution at a batch size: every value's shape, and per layer the constants
//! prepared once (convolution geometry, BatchNorm's folded statistics).

use super::error::EngineError;
use super::gemm::PackedA;
use super::int8_plan::{Int8Plan, Residuals};
use super::ops::conv::{self, Geometry, SumOrder};
use super::ops::norm::BatchNormConsts;
use super::ops::pool;
use super::ops::post::Post;
use crate::model::layer::LayerKind;
use crate::model::{Net, Shape, shape};

/// Why a data layer's shape is unknown: the loader's warning about it, if any.
fn unknown_shape_reason(net: &Net, l: &crate::model::Layer) -> String {
    let tag = format!("layer '{}': ", l.name);
    net.warnings
        .iter()
        .find_map(|w| {
            w.split_once(&tag).map(|(_, reason)| {
                reason
                    .trim_end_matches("; shapes that depend on it are unknown")
                    .to_string()
            })
        })
        .unwrap_or_else(|| "its shape is unknown".into())
}

/// Constants a layer needs at every batch.
#[derive(Debug, Clone)]
pub enum Prepared {
    None,
    /// The geometry and the weights packed per group (a Deconvolution's transposed).
    Conv(Geometry, Vec<PackedA>),
    BatchNorm(BatchNormConsts),
    Pool(pool::Windows),
}

#[derive(Debug)]
pub struct Plan<'n> {
    pub net: &'n Net,
    /// Shape of every value at this batch size.
    pub shapes: Vec<Shape>,
    pub prepared: Vec<Prepared>,
    /// Steps fused after each layer (in-place BatchNorm / Scale / Bias / ReLU that follow it).
    pub posts: Vec<Vec<Post>>,
    /// Layers computed as part of their producer (their steps are in the producer's `posts`).
    pub folded: Vec<bool>,
    /// The buffer each value lives in: folded layers write their producer's buffer.
    pub buffer_of: Vec<usize>,
    pub batch: usize,
    /// For a quantized net run as Intel Caffe runs it (`new_int8`).
    pub int8: Option<Int8Plan>,
    /// The order FP32 convolutions sum in: Caffe's, or MKL-DNN's in a quantized net run as Intel
    /// Caffe runs it.
    pub sum_order: SumOrder,
}

impl<'n> Plan<'n> {
    /// Plans the net for `batch` images per pass (None: the net's own batch), in FP32 (any
    /// `quantization_param` is ignored).
    pub fn new(net: &'n Net, batch: Option<usize>) -> Result<Self, EngineError> {
        let mut plan = Self::build(net, batch, SumOrder::Caffe)?;
        plan.fuse();
        Ok(plan)
    }

    /// As `new`, without folding in-place layers into their producers, so that an observer sees
    /// every value as its own layer writes it (a value read in place by a BatchNorm is otherwise seen
    /// already normalised): for references compared value by value.
    pub fn new_unfused(net: &'n Net, batch: Option<usize>) -> Result<Self, EngineError> {
        Self::build(net, batch, SumOrder::Caffe)
    }

    /// Plans a quantized net to run as Intel Caffe runs it: compiled (BN folding, ReLU and sum
    /// fusions), INT8 where Intel runs INT8.
    pub fn new_int8(net: &'n Net, batch: Option<usize>) -> Result<Self, EngineError> {
        Self::with_int8(net, batch, Residuals::AsIntel)
    }

    /// As `new_int8`, but FP32 residuals are read as stored where Intel Caffe would scramble their
    /// layout: for measuring one layer alone, where the residual's producer runs FP32 only because
    /// of the isolation (a configuration never deployed), so the layer's own error is measured.
    pub fn new_int8_isolated(net: &'n Net, batch: Option<usize>) -> Result<Self, EngineError> {
        Self::with_int8(net, batch, Residuals::AsStored)
    }

    fn with_int8(
        net: &'n Net,
        batch: Option<usize>,
        residuals: Residuals,
    ) -> Result<Self, EngineError> {
        let mut plan = Self::build(net, batch, SumOrder::MklDnn)?;
        let int8 = Int8Plan::new(net, &plan.shapes, &mut plan.buffer_of, residuals)?;
        plan.int8 = Some(int8);
        Ok(plan)
    }

    /// Whether any layer of the net carries a `quantization_param`.
    pub fn is_quantized(net: &Net) -> bool {
        net.layers
            .iter()
            .any(|l| l.proto.quantization_param.is_some())
    }

    fn build(net: &'n Net, batch: Option<usize>, order: SumOrder) -> Result<Self, EngineError> {
        let mut shapes: Vec<Shape> = vec![Vec::new(); net.values.len()];
        let mut prepared = Vec::with_capacity(net.layers.len());
        let own_batch = net.batch_size().unwrap_or(1);
        let batch = batch.unwrap_or(own_batch);
        for l in &net.layers {
            let err = |m: String| EngineError::layer(l, m);
            let tops: Vec<Shape> = match &l.kind {
                LayerKind::Input { .. } | LayerKind::Data { .. } => l
                    .tops
                    .iter()
                    .map(|&t| {
                        let mut s = net.values[t]
                            .shape
                            .clone()
                            .ok_or_else(|| err(unknown_shape_reason(net, l)))?;
                        // Tops that carry the batch (data, labels) follow the planned batch.
                        if s.first() == Some(&own_batch) && !net.values[t].dynamic {
                            s[0] = batch;
                        }
                        Ok(s)
                    })
                    .collect::<Result<_, EngineError>>()?,
                LayerKind::Unsupported(t) => {
                    return Err(err(format!("type '{t}' cannot be run by int8cal")));
                }
                kind => {
                    let bottoms: Vec<&[usize]> =
                        l.bottoms.iter().map(|&b| shapes[b].as_slice()).collect();
                    shape::infer(kind, &bottoms, l.tops.len()).map_err(err)?
                }
            };
            for (&t, s) in l.tops.iter().zip(tops) {
                shapes[t] = s;
            }
            prepared.push(match &l.kind {
                LayerKind::Convolution(c) | LayerKind::Deconvolution(c) => {
                    if l.bottoms.first().is_some_and(|&b| shapes[b].len() != 4) || c.axis != 1 {
                        return Err(err("only 2-D convolutions over axis 1 are supported".into()));
                    }
                    let g = Geometry::of(c).map_err(err)?;
                    let packed = match (&l.kind, l.blobs.first(), l.bottoms.first()) {
                        (LayerKind::Convolution(_), Some(w), Some(&b)) => {
                            let weights = w.data.as_slice().unwrap_or(&[]);
                            let bias = l.blobs.get(1).and_then(|b| b.data.as_slice());
                            let bias = bias.filter(|_| c.bias_term);
                            let dims = (c.num_output, shapes[b][1]);
                            conv::pack_weights(weights, bias, &g, dims, order)
                        }
                        (LayerKind::Deconvolution(_), Some(w), Some(&b)) => {
                            let weights = w.data.as_slice().unwrap_or(&[]);
                            conv::pack_deconv_weights(weights, &g, c.num_output, shapes[b][1])
                        }
                        _ => Vec::new(),
                    };
                    Prepared::Conv(g, packed)
                }
                LayerKind::BatchNorm(b) => {
                    if b.use_global_stats == Some(false) {
                        return Err(err("use_global_stats: false normalises with the batch's own statistics, which is training behaviour".into()));
                    }
                    Prepared::BatchNorm(BatchNormConsts::new(&l.blobs, b.eps).map_err(err)?)
                }
                LayerKind::Pooling(p) => {
                    let (b, t) = (&shapes[l.bottoms[0]], &shapes[l.tops[0]]);
                    if b.len() != 4 {
                        return Err(err(format!("expects a 4-D input, got {b:?}")));
                    }
                    Prepared::Pool(pool::Windows::new(p, [b[2], b[3]], [t[2], t[3]]).map_err(err)?)
                }
                _ => Prepared::None,
            });
        }
        Ok(Self {
            net,
            shapes,
            prepared,
            posts: vec![Vec::new(); net.layers.len()],
            folded: vec![false; net.layers.len()],
            buffer_of: (0..net.values.len()).collect(),
            batch,
            int8: None,
            sum_order: order,
        })
    }

    /// Folds chains of in-place per-channel layers into the layer that produces their input, when
    /// nothing else reads the intermediate values (so no one can tell the difference).
    fn fuse(&mut self) {
        let net = self.net;
        for (id, l) in net.layers.iter().enumerate() {
            if l.kind.is_data() || l.tops.len() != 1 || self.folded[id] {
                continue;
            }
            let mut value = l.tops[0];
            if self.shapes[value].len() < 2 {
                continue;
            }
            while let [next] = net.values[value].consumers.as_slice() {
                let f = &net.layers[*next];
                if f.bottoms.len() != 1 || f.tops.len() != 1 || !f.in_place(net, 0) {
                    break;
                }
                let Some(post) = self.post_for(*next) else {
                    break;
                };
                self.posts[id].push(post);
                self.folded[*next] = true;
                self.buffer_of[f.tops[0]] = self.buffer_of[value];
                value = f.tops[0];
            }
        }
    }

    /// The fused form of a per-channel layer (channel axis 1), if it has one.
    fn post_for(&self, id: usize) -> Option<Post> {
        match (&self.net.layers[id].kind, &self.prepared[id]) {
            (LayerKind::BatchNorm(_), Prepared::BatchNorm(k)) => Some(Post::BatchNorm(k.clone())),
            _ => super::ops::post::of_layer(&self.net.layers[id]),
        }
    }

    /// Values no layer reads: the net's outputs (what `caffe test` reports).
    pub fn outputs(&self) -> Vec<usize> {
        (0..self.net.values.len())
            .filter(|&v| self.net.values[v].consumers.is_empty())
            .collect()
    }
}
