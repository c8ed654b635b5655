//! What a quantized net needs beyond the FP32 plan to run as Intel Caffe runs it: the compiled view,
//! the precision of every layer and value, each INT8 convolution prepared (weights folded, quantized
//! and packed once), each fused convolution that runs FP32 prepared with its folded weights, and the
//! buffer sharing of Intel's fusions (a sum-fused convolution writes into its residual's buffer, so
//! after a pass the residual's name holds the sum, as in Intel Caffe).

use super::compile::{Compiled, Fusion, Role, folded_weights};
use super::error::EngineError;
use super::gemm::PackedA;
use super::ops::conv::{self, Geometry};
use super::ops::conv_int8::{Int8Conv, Int8Params, Placement, Store};
use super::ops::post::{self, Post};
use super::precision::{Exec, Precision, Repr};
use super::quant::IntType;
use crate::model::layer::{Activation, InnerProduct, LayerKind};
use crate::model::shape::canonical_axis;
use crate::model::{Layer, LayerId, Net, Shape, ValueId};

/// The input an INT8 layer reads: codes of this type at this scale (1 with `force_u8_input`: the data
/// layer already produced u8 units).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputSpec {
    pub ty: IntType,
    pub scale: f32,
    /// An InnerProduct's input seen as N×K×1×1 (N rows of K values).
    pub flat: Option<[usize; 4]>,
}

/// A fused convolution that runs FP32: folded weights and bias, ReLU and sum applied after.
#[derive(Debug, Clone, PartialEq)]
pub struct FusedF32 {
    pub geometry: Geometry,
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    pub packed: Vec<PackedA>,
    pub relu: Option<f32>,
    /// Eltwise coefficients (residual first) when the convolution absorbed a SUM.
    pub sum: Option<[f32; 2]>,
}

/// How a convolution that absorbed a SUM reads the FP32 residual in its output buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResidualRead {
    /// In its own layout (or there is no FP32 residual).
    AsStored,
    /// Made by an FP32 MKL-DNN convolution in nChw16c, read as NHWC (`ops::layout`).
    BlockedAsNhwc,
}

/// How FP32 residuals are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Residuals {
    /// As Intel Caffe reads them (`residual_read`).
    AsIntel,
    /// Always as stored.
    AsStored,
}

/// How one layer runs in a quantized net.
#[derive(Debug, Clone, PartialEq)]
pub enum Int8Layer {
    /// As in the FP32 plan (its INT8 inputs dequantized), or absorbed.
    Plain,
    Conv(Box<Int8Conv>, InputSpec, ResidualRead),
    FusedF32(Box<FusedF32>),
    /// A BatchNorm that absorbed a Scale and/or a ReLU: the steps applied after it.
    BatchNorm(Vec<Post>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Int8Plan {
    pub compiled: Compiled,
    pub precision: Precision,
    pub layers: Vec<Int8Layer>,
    /// Per layer: the Concat an INT8 convolution can write its codes into (when no one looks at
    /// the convolution's own output).
    pub concat_slots: Vec<Option<ConcatSlot>>,
}

/// Where an INT8 convolution's channels go in the buffer of the INT8 Concat (along channels) that is
/// its output's only reader.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConcatSlot {
    /// The Concat's output value (its buffer receives the codes).
    pub top: ValueId,
    /// Per image: after the Concat's earlier inputs, requantized by `S_concat / S_conv` when the
    /// scales differ.
    pub at: Placement,
}

impl Int8Plan {
    /// Prepares every layer; `shapes` are the FP32 plan's. `buffer_of` is updated for the fusions.
    pub fn new(
        net: &Net,
        shapes: &[Shape],
        buffer_of: &mut [usize],
        residuals: Residuals,
    ) -> Result<Self, EngineError> {
        let compiled = Compiled::new(net);
        let precision = Precision::new(net, &compiled).map_err(EngineError::Plan)?;
        let mut layers = Vec::with_capacity(net.layers.len());
        for (id, l) in net.layers.iter().enumerate() {
            let err = |m: String| EngineError::layer(l, m);
            let fusion = compiled.fusion(id);
            let layer = match (&precision.exec[id], &l.kind) {
                (
                    Exec::Int8 {
                        quant,
                        input,
                        output,
                    },
                    kind,
                ) => {
                    let bottom = l.bottoms.first().map_or(&[][..], |&b| shapes[b].as_slice());
                    let (g, (w, b), outputs, channels, flat) = match kind {
                        LayerKind::Convolution(c) => {
                            let channels = bottom.get(1).copied().unwrap_or(0);
                            let wb = weights(net, id, fusion).map_err(err)?;
                            (
                                Geometry::of(c).map_err(err)?,
                                wb,
                                c.num_output,
                                channels,
                                None,
                            )
                        }
                        // An InnerProduct is a 1×1 convolution of a 1×1 image of k channels.
                        LayerKind::InnerProduct(ip) => {
                            let axis = canonical_axis(ip.axis, bottom.len()).map_err(err)?;
                            let m: usize = bottom[..axis].iter().product();
                            let k: usize = bottom[axis..].iter().product();
                            let wb = ip_weights(l, ip, k).map_err(err)?;
                            (POINT, wb, ip.num_output, k, Some([m, k, 1, 1]))
                        }
                        _ => return Err(err("only Convolution and InnerProduct run INT8".into())),
                    };
                    let (relu, sum) = post_ops(fusion);
                    let relu = relu.or(match kind {
                        LayerKind::InnerProduct(ip) => ip.relu,
                        _ => None,
                    });
                    let store = match output {
                        Repr::F32 => Store::F32,
                        Repr::Int { ty, .. } => Store::Int(*ty),
                    };
                    // The sum post-op's factor on the residual: (s_out / s_res) · coeff[0].
                    let sum_factor = sum.map(|[c0, _]| {
                        let s_res = fusion.and_then(|f| f.sum.as_ref()).map_or(1.0, |s| {
                            match precision.repr[s.residual] {
                                Repr::Int { scale, .. } => scale,
                                Repr::F32 => 1.0,
                            }
                        });
                        quant.scale_out / s_res * c0
                    });
                    let params = Int8Params {
                        scale_in: quant.scale_in,
                        scale_out: quant.scale_out,
                        scale_params: &quant.scale_params,
                        input: *input,
                        store,
                        sum: sum_factor,
                        own_coeff: sum.map_or(1.0, |[_, c1]| c1),
                        relu,
                    };
                    let conv =
                        Int8Conv::new(&w, &b, g, (outputs, channels), &params).map_err(err)?;
                    let spec = InputSpec {
                        ty: *input,
                        scale: if quant.force_u8_input {
                            1.0
                        } else {
                            quant.scale_in
                        },
                        flat,
                    };
                    let read = fusion
                        .and_then(|f| f.sum.as_ref())
                        .filter(|_| *output == Repr::F32 && residuals == Residuals::AsIntel)
                        .map_or(ResidualRead::AsStored, |s| {
                            residual_read(net, &compiled, &precision, shapes, s.residual)
                        });
                    Int8Layer::Conv(Box::new(conv), spec, read)
                }
                (Exec::F32, LayerKind::Convolution(c)) if fusion.is_some() => {
                    let channels = l
                        .bottoms
                        .first()
                        .map_or(0, |&b| shapes[b].get(1).copied().unwrap_or(0));
                    let geometry = Geometry::of(c).map_err(err)?;
                    let (weights, bias) = weights(net, id, fusion).map_err(err)?;
                    // Intel Caffe runs it with MKL-DNN's FP32 kernel, in that kernel's order.
                    let packed = conv::pack_weights(
                        &weights,
                        Some(&bias),
                        &geometry,
                        (c.num_output, channels),
                        conv::SumOrder::MklDnn,
                    );
                    let (relu, sum) = post_ops(fusion);
                    Int8Layer::FusedF32(Box::new(FusedF32 {
                        geometry,
                        weights,
                        bias,
                        packed,
                        relu,
                        sum,
                    }))
                }
                (_, LayerKind::BatchNorm(_)) if fusion.is_some() => {
                    Int8Layer::BatchNorm(merged_steps(net, fusion).map_err(err)?)
                }
                _ => Int8Layer::Plain,
            };
            layers.push(layer);
            if let Some(f) = fusion {
                share_buffers(net, &compiled, id, f, buffer_of);
            }
        }
        let concat_slots = (0..net.layers.len())
            .map(|id| concat_slot(net, shapes, &compiled, &precision, id))
            .collect();
        Ok(Self {
            compiled,
            precision,
            layers,
            concat_slots,
        })
    }
}

/// The Concat slot of an INT8 convolution with codes output and no sum, whose output's only reader
/// is an INT8 Concat along channels of the same code type.
fn concat_slot(
    net: &Net,
    shapes: &[Shape],
    compiled: &Compiled,
    precision: &Precision,
    id: LayerId,
) -> Option<ConcatSlot> {
    let Exec::Int8 {
        output: Repr::Int { ty, scale, .. },
        ..
    } = precision.exec[id]
    else {
        return None;
    };
    if compiled.fusion(id).is_some_and(|f| f.sum.is_some()) {
        return None;
    }
    // The readers of every value the convolution stands for, its absorbed layers aside.
    let values: Vec<usize> = compiled.values_of(net, id).collect();
    let readers: Vec<LayerId> = values
        .iter()
        .flat_map(|&v| net.values[v].consumers.iter().copied())
        .filter(|&c| !matches!(precision.exec[c], Exec::Absorbed))
        .collect();
    let ([concat], Some(&own)) = (readers.as_slice(), values.last()) else {
        return None;
    };
    let l = &net.layers[*concat];
    let LayerKind::Concat { axis } = l.kind else {
        return None;
    };
    let out = *l.tops.first()?;
    let Repr::Int {
        ty: cty,
        scale: cscale,
        ..
    } = precision.repr[out]
    else {
        return None;
    };
    let rank = shapes[own].len();
    let position = l.bottoms.iter().position(|&b| b == own)?;
    let once = l.bottoms.iter().filter(|&&b| b == own).count() == 1;
    let channels = |v: usize| shapes[v].get(1).copied().unwrap_or(0);
    if !matches!(precision.exec[*concat], Exec::PassInt8)
        || canonical_axis(axis, rank).ok()? != 1
        || rank != 4
        || cty != ty
        || !once
    {
        return None;
    }
    let plane: usize = shapes[own][2..].iter().product();
    let offset: usize = l.bottoms[..position].iter().map(|&b| channels(b)).sum();
    Some(ConcatSlot {
        top: out,
        at: Placement {
            image_len: channels(out) * plane,
            offset: offset * plane,
            then: (cscale != scale).then(|| cscale / scale),
        },
    })
}

/// A 1×1 convolution geometry (InnerProduct).
const POINT: Geometry = Geometry {
    kernel: [1, 1],
    stride: [1, 1],
    pad: [0, 0],
    dilation: [1, 1],
    group: 1,
};

/// An InnerProduct's weights as outputs × k (transposed when stored k × outputs) and its bias.
pub(crate) fn ip_weights(
    l: &Layer,
    ip: &InnerProduct,
    k: usize,
) -> Result<(Vec<f32>, Vec<f32>), String> {
    let blob = |i: usize| -> Result<Vec<f32>, String> {
        l.blobs
            .get(i)
            .map(|b| b.data.iter().copied().collect())
            .ok_or_else(|| format!("weight blob {i} is missing (were weights given?)"))
    };
    let n = ip.num_output;
    let stored = blob(0)?;
    if stored.len() != n * k {
        return Err(format!(
            "{} weights for {n} outputs of {k} inputs",
            stored.len()
        ));
    }
    let w = if ip.transpose {
        (0..n * k).map(|i| stored[(i % k) * n + i / k]).collect()
    } else {
        stored
    };
    let b = if ip.bias_term { blob(1)? } else { vec![0.0; n] };
    Ok((w, b))
}

/// The weights and bias of a (possibly folded) convolution.
fn weights(
    net: &Net,
    id: LayerId,
    fusion: Option<&Fusion>,
) -> Result<(Vec<f32>, Vec<f32>), String> {
    folded_weights(net, id, fusion.map_or(&[], |f| f.folded.as_slice()))
}

/// How Intel's INT8 kernel reads an FP32 residual: scrambled when an FP32 convolution made it (through
/// layers that keep the layout) with a multiple of 16 channels above 16, the layout MKL-DNN's AVX-512
/// FP32 kernels write. Other producers (Caffe-engine layers in NCHW, other channel counts) are read
/// as stored: Intel's behaviour there was not observed.
pub fn residual_read(
    net: &Net,
    compiled: &Compiled,
    precision: &Precision,
    shapes: &[Shape],
    residual: ValueId,
) -> ResidualRead {
    let channels = shapes[residual].get(1).copied().unwrap_or(0);
    if shapes[residual].len() != 4 || channels % 16 != 0 || channels <= 16 {
        return ResidualRead::AsStored;
    }
    let mut v = residual;
    loop {
        let mut p = net.values[v].producer;
        if let Role::Absorbed(into) = compiled.roles[p] {
            p = into;
        }
        let l = &net.layers[p];
        let keeps_layout = matches!(
            l.kind,
            LayerKind::Pooling(_)
                | LayerKind::Split
                | LayerKind::BatchNorm(_)
                | LayerKind::Activation(Activation::ReLU { .. })
        );
        match (&l.kind, &precision.exec[p]) {
            (LayerKind::Convolution(_), Exec::F32) => return ResidualRead::BlockedAsNhwc,
            (_, Exec::F32) if keeps_layout => match l.bottoms.first() {
                Some(&b) => v = b,
                None => return ResidualRead::AsStored,
            },
            _ => return ResidualRead::AsStored,
        }
    }
}

/// The Scale merged into a BatchNorm and its fused ReLU, as steps on its output.
fn merged_steps(net: &Net, fusion: Option<&Fusion>) -> Result<Vec<Post>, String> {
    let Some(f) = fusion else {
        return Ok(Vec::new());
    };
    let relu = f.relu.map(|(id, _)| id);
    f.folded
        .iter()
        .chain(&relu)
        .map(|&id| {
            let l = &net.layers[id];
            post::of_layer(l).ok_or_else(|| {
                format!(
                    "layer '{}' merged into the BatchNorm is not a per-channel Scale with its \
                     blobs, or a ReLU",
                    l.name
                )
            })
        })
        .collect()
}

/// The fused ReLU slope and the Eltwise coefficients (residual first; 1 when not given).
fn post_ops(fusion: Option<&Fusion>) -> (Option<f32>, Option<[f32; 2]>) {
    let relu = fusion.and_then(|f| f.relu).map(|(_, s)| s);
    let sum = fusion
        .and_then(|f| f.sum.as_ref())
        .map(|s| match s.coeff.as_slice() {
            [a, b] => [*a, *b],
            _ => [1.0, 1.0],
        });
    (relu, sum)
}

/// Every value a fused layer stands for lives in one buffer: its residual's for a sum fusion (Intel
/// writes the sum there), else its own top's.
fn share_buffers(net: &Net, compiled: &Compiled, id: LayerId, f: &Fusion, buffer_of: &mut [usize]) {
    let Some(&own) = net.layers[id].tops.first() else {
        return;
    };
    let target = f
        .sum
        .as_ref()
        .map_or(buffer_of[own], |s| buffer_of[s.residual]);
    for v in compiled.values_of(net, id) {
        buffer_of[v] = target;
    }
}
