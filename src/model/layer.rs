//! Layer kinds with typed parameters, read once from a `LayerParameter`. Every type string that Intel Caffe
//! 1.1.6a registers (caffe-format §6.9) has a variant; anything else loads as `Unsupported(type)` so the net
//! can still be viewed. After this module nothing matches on type strings.

use crate::caffe::{self, LayerParameter};

/// Spatial sizes given either as a repeated field (one value for all axes, or one per axis) or as the
/// 2-D `_h`/`_w` pair.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SpatialSpec {
    pub list: Vec<usize>,
    pub hw: Option<(usize, usize)>,
}

impl SpatialSpec {
    fn new(list: &[u32], h: Option<u32>, w: Option<u32>) -> Self {
        let hw = match (h, w) {
            (Some(h), Some(w)) => Some((h as usize, w as usize)),
            _ => None,
        };
        Self {
            list: list.iter().map(|&v| v as usize).collect(),
            hw,
        }
    }

    /// One value per spatial axis (`n` axes), or why not.
    pub fn resolve(
        &self,
        n: usize,
        default: Option<usize>,
        what: &str,
    ) -> Result<Vec<usize>, String> {
        if let Some((h, w)) = self.hw {
            if n != 2 {
                return Err(format!(
                    "{what}_h/{what}_w are for 2-D data, the input has {n} spatial axes"
                ));
            }
            if !self.list.is_empty() {
                return Err(format!("both {what} and {what}_h/{what}_w are given"));
            }
            return Ok(vec![h, w]);
        }
        match (self.list.len(), default) {
            (0, Some(d)) => Ok(vec![d; n]),
            (0, None) => Err(format!("{what} is not given")),
            (1, _) => Ok(vec![self.list[0]; n]),
            (k, _) if k == n => Ok(self.list.clone()),
            (k, _) => Err(format!("{what} has {k} values for {n} spatial axes")),
        }
    }
}

/// Intel's fusion of an elementwise sum into a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fusion {
    None,
    Sum,
}

/// Convolution, Deconvolution and Im2col geometry.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv {
    pub num_output: usize,
    pub bias_term: bool,
    pub kernel: SpatialSpec,
    pub stride: SpatialSpec,
    pub pad: SpatialSpec,
    pub dilation: SpatialSpec,
    pub group: usize,
    pub axis: i32,
    /// Intel's fused ReLU: `Some(negative_slope)` when `relu: true`.
    pub relu: Option<f32>,
    pub fusion: Fusion,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMethod {
    Max,
    Ave,
    Stochastic,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub method: PoolMethod,
    pub global: bool,
    pub kernel: Option<(usize, usize)>,
    pub stride: (usize, usize),
    pub pad: (usize, usize),
    /// Intel's `avg_include_pad` (true in Caffe's behaviour).
    pub avg_include_pad: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InnerProduct {
    pub num_output: usize,
    pub bias_term: bool,
    pub axis: i32,
    pub transpose: bool,
    pub relu: Option<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormRegion {
    AcrossChannels,
    WithinChannel,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Lrn {
    pub local_size: usize,
    pub alpha: f32,
    pub beta: f32,
    pub k: f32,
    pub region: NormRegion,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm {
    pub eps: f32,
    /// None: Caffe's default, which is true in the TEST phase.
    pub use_global_stats: Option<bool>,
    pub moving_average_fraction: f32,
}

/// Scale and Bias: a per-channel (or per-range) multiplier or addend.
#[derive(Debug, Clone, PartialEq)]
pub struct Affine {
    pub axis: i32,
    pub num_axes: i32,
    pub bias_term: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EltwiseOp {
    Prod,
    Sum,
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReductionOp {
    Sum,
    Asum,
    SumSq,
    Mean,
}

/// Unary elementwise functions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    ReLU { negative_slope: f32 },
    Elu { alpha: f32 },
    Sigmoid,
    TanH,
    AbsVal,
    Bnll,
    Swish { beta: f32 },
    Power { power: f32, scale: f32, shift: f32 },
    Exp { base: f32, scale: f32, shift: f32 },
    Log { base: f32, scale: f32, shift: f32 },
    Threshold { threshold: f32 },
}

/// Layers that are identity at TEST time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    Dropout,
    SpatialDropout,
}

/// Training losses and helpers (loaded and shaped, not run by the inference engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossKind {
    SoftmaxWithLoss,
    EuclideanLoss,
    MultinomialLogisticLoss,
    SigmoidCrossEntropyLoss,
    HingeLoss,
    InfogainLoss,
    ContrastiveLoss,
    MultiBoxLoss,
    SmoothL1Loss,
    SmoothL1LossOhem,
    SoftmaxWithLossOhem,
    RegionLoss,
}

/// Where a data layer's records come from.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    /// `Data`: an LMDB/LevelDB of `Datum`.
    Db(caffe::DataParameter),
    /// `AnnotatedData`: an LMDB of `AnnotatedDatum` (SSD).
    Annotated(caffe::DataParameter, caffe::AnnotatedDataParameter),
    /// `ImageData`: a text list of "path label".
    ImageList(caffe::ImageDataParameter),
    Memory(caffe::MemoryDataParameter),
    Dummy(caffe::DummyDataParameter),
    Hdf5(caffe::Hdf5DataParameter),
    Window(caffe::WindowDataParameter),
    Video(caffe::VideoDataParameter),
    /// Intel's YOLO `BoxData`.
    Box(caffe::DataParameter),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecurrentKind {
    Rnn,
    Lstm,
}

/// What a layer computes, with its parameters.
// One value per layer, a few hundred per net: the size of the data-layer variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum LayerKind {
    /// Tops with fixed shapes (also the upgraded form of `input`/`input_dim`).
    Input {
        shapes: Vec<Vec<i64>>,
    },
    Data {
        source: DataSource,
        transform: caffe::TransformationParameter,
    },
    Convolution(Conv),
    Deconvolution(Conv),
    Im2col(Conv),
    Pooling(Pool),
    Spp {
        pyramid_height: usize,
        method: PoolMethod,
    },
    Lrn(Lrn),
    InnerProduct(InnerProduct),
    Embed {
        num_output: usize,
        input_dim: usize,
        bias_term: bool,
    },
    Activation(Activation),
    PReLU {
        channel_shared: bool,
    },
    Identity(Identity),
    BatchNorm(BatchNorm),
    Scale(Affine),
    Bias(Affine),
    Mvn {
        normalize_variance: bool,
        across_channels: bool,
        eps: f32,
    },
    Normalize {
        across_spatial: bool,
        channel_shared: bool,
        eps: f32,
    },
    Eltwise {
        op: EltwiseOp,
        coeff: Vec<f32>,
    },
    Concat {
        axis: i32,
    },
    Slice {
        axis: i32,
        points: Vec<usize>,
    },
    Split,
    Flatten {
        axis: i32,
        end_axis: i32,
    },
    Reshape {
        dims: Vec<i64>,
        axis: i32,
        num_axes: i32,
    },
    Crop {
        axis: i32,
        offsets: Vec<usize>,
    },
    Tile {
        axis: i32,
        tiles: usize,
    },
    Reduction {
        op: ReductionOp,
        axis: i32,
        coeff: f32,
    },
    Permute {
        order: Vec<usize>,
    },
    Reorg {
        stride: usize,
        reverse: bool,
    },
    Axpy,
    Filter,
    BatchReindex,
    Silence,
    Parameter {
        shape: Vec<i64>,
    },
    Softmax {
        axis: i32,
    },
    ArgMax {
        out_max_val: bool,
        top_k: usize,
        axis: Option<i32>,
    },
    Accuracy {
        top_k: usize,
        axis: i32,
        ignore_label: Option<i32>,
    },
    PriorBox(caffe::PriorBoxParameter),
    DetectionOutput(caffe::DetectionOutputParameter),
    DetectionEvaluate(caffe::DetectionEvaluateParameter),
    EvalDetection(caffe::EvalDetectionParameter),
    RoiPooling {
        pooled_h: usize,
        pooled_w: usize,
        spatial_scale: f32,
    },
    PsRoiPooling {
        spatial_scale: f32,
        output_dim: usize,
        group_size: usize,
    },
    Recurrent {
        kind: RecurrentKind,
        num_output: usize,
    },
    LstmUnit,
    Python {
        module: String,
        layer: String,
    },
    Hdf5Output,
    BoxAnnotatorOhem,
    Loss(LossKind),
    /// A type this tool does not know; the net can be viewed but not run.
    Unsupported(String),
}

/// Broad groups, for colours in the graph and for rules that treat a family alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    Data,
    Layer,
    Activation,
    Pool,
    Normalization,
    Tensor,
    Output,
    Loss,
    Unknown,
}

impl LayerKind {
    /// Reads the kind and parameters of a layer from its proto.
    pub fn from_proto(p: &LayerParameter) -> Self {
        use LayerKind as K;
        let transform = || p.transform_param.clone().unwrap_or_default();
        let data = |source| K::Data {
            source,
            transform: transform(),
        };
        let dp = || p.data_param.clone().unwrap_or_default();
        let act = K::Activation;
        match p.r#type() {
            "Input" => K::Input {
                shapes: p
                    .input_param
                    .as_ref()
                    .map(|i| i.shape.iter().map(|s| s.dim.clone()).collect())
                    .unwrap_or_default(),
            },
            "Data" => data(DataSource::Db(dp())),
            "AnnotatedData" => data(DataSource::Annotated(
                dp(),
                p.annotated_data_param.clone().unwrap_or_default(),
            )),
            "ImageData" => data(DataSource::ImageList(
                p.image_data_param.clone().unwrap_or_default(),
            )),
            "MemoryData" => data(DataSource::Memory(p.memory_data_param.unwrap_or_default())),
            "DummyData" => data(DataSource::Dummy(
                p.dummy_data_param.clone().unwrap_or_default(),
            )),
            "HDF5Data" => data(DataSource::Hdf5(
                p.hdf5_data_param.clone().unwrap_or_default(),
            )),
            "WindowData" => data(DataSource::Window(
                p.window_data_param.clone().unwrap_or_default(),
            )),
            "VideoData" => data(DataSource::Video(
                p.video_data_param.clone().unwrap_or_default(),
            )),
            "BoxData" => data(DataSource::Box(dp())),
            "Convolution" => K::Convolution(conv(p)),
            "Deconvolution" => K::Deconvolution(conv(p)),
            "Im2col" => K::Im2col(conv(p)),
            "Pooling" => K::Pooling(pool(p)),
            "SPP" => {
                let s = p.spp_param.unwrap_or_default();
                K::Spp {
                    pyramid_height: s.pyramid_height() as usize,
                    method: pool_method(s.pool),
                }
            }
            "LRN" => {
                let l = p.lrn_param.unwrap_or_default();
                let region = match l.norm_region() {
                    caffe::lrn_parameter::NormRegion::AcrossChannels => NormRegion::AcrossChannels,
                    caffe::lrn_parameter::NormRegion::WithinChannel => NormRegion::WithinChannel,
                };
                K::Lrn(Lrn {
                    local_size: l.local_size() as usize,
                    alpha: l.alpha(),
                    beta: l.beta(),
                    k: l.k(),
                    region,
                })
            }
            "InnerProduct" => {
                let ip = p.inner_product_param.clone().unwrap_or_default();
                K::InnerProduct(InnerProduct {
                    num_output: ip.num_output() as usize,
                    bias_term: ip.bias_term(),
                    axis: ip.axis(),
                    transpose: ip.transpose(),
                    relu: ip.relu().then_some(ip.negative_slope()),
                })
            }
            "Embed" => {
                let e = p.embed_param.clone().unwrap_or_default();
                K::Embed {
                    num_output: e.num_output() as usize,
                    input_dim: e.input_dim() as usize,
                    bias_term: e.bias_term(),
                }
            }
            "ReLU" => act(Activation::ReLU {
                negative_slope: p.relu_param.as_ref().map_or(0.0, |r| r.negative_slope()),
            }),
            "ELU" => act(Activation::Elu {
                alpha: p.elu_param.as_ref().map_or(1.0, |e| e.alpha()),
            }),
            "Sigmoid" => act(Activation::Sigmoid),
            "TanH" => act(Activation::TanH),
            "AbsVal" => act(Activation::AbsVal),
            "BNLL" => act(Activation::Bnll),
            "Swish" => act(Activation::Swish {
                beta: p.swish_param.as_ref().map_or(1.0, |s| s.beta()),
            }),
            "Power" => {
                let q = p.power_param.unwrap_or_default();
                act(Activation::Power {
                    power: q.power(),
                    scale: q.scale(),
                    shift: q.shift(),
                })
            }
            "Exp" => {
                let q = p.exp_param.unwrap_or_default();
                act(Activation::Exp {
                    base: q.base(),
                    scale: q.scale(),
                    shift: q.shift(),
                })
            }
            "Log" => {
                let q = p.log_param.unwrap_or_default();
                act(Activation::Log {
                    base: q.base(),
                    scale: q.scale(),
                    shift: q.shift(),
                })
            }
            "Threshold" => act(Activation::Threshold {
                threshold: p.threshold_param.as_ref().map_or(0.0, |t| t.threshold()),
            }),
            "PReLU" => K::PReLU {
                channel_shared: p.prelu_param.as_ref().is_some_and(|q| q.channel_shared()),
            },
            "Dropout" => K::Identity(Identity::Dropout),
            "SpatialDropout" => K::Identity(Identity::SpatialDropout),
            "BatchNorm" => {
                let b = p.batch_norm_param.clone().unwrap_or_default();
                K::BatchNorm(BatchNorm {
                    eps: b.eps(),
                    use_global_stats: b.use_global_stats,
                    moving_average_fraction: b.moving_average_fraction(),
                })
            }
            "Scale" => {
                let s = p.scale_param.clone().unwrap_or_default();
                K::Scale(Affine {
                    axis: s.axis(),
                    num_axes: s.num_axes(),
                    bias_term: s.bias_term(),
                })
            }
            "Bias" => {
                let b = p.bias_param.clone().unwrap_or_default();
                K::Bias(Affine {
                    axis: b.axis(),
                    num_axes: b.num_axes(),
                    bias_term: true,
                })
            }
            "MVN" => {
                let m = p.mvn_param.unwrap_or_default();
                K::Mvn {
                    normalize_variance: m.normalize_variance(),
                    across_channels: m.across_channels(),
                    eps: m.eps(),
                }
            }
            "Normalize" => {
                let n = p.norm_param.clone().unwrap_or_default();
                K::Normalize {
                    across_spatial: n.across_spatial(),
                    channel_shared: n.channel_shared(),
                    eps: n.eps(),
                }
            }
            "Eltwise" => {
                let e = p.eltwise_param.clone().unwrap_or_default();
                let op = match e.operation() {
                    caffe::eltwise_parameter::EltwiseOp::Prod => EltwiseOp::Prod,
                    caffe::eltwise_parameter::EltwiseOp::Sum => EltwiseOp::Sum,
                    caffe::eltwise_parameter::EltwiseOp::Max => EltwiseOp::Max,
                };
                K::Eltwise { op, coeff: e.coeff }
            }
            "Concat" => {
                let c = p.concat_param.unwrap_or_default();
                K::Concat {
                    axis: c.concat_dim.map_or(c.axis(), |d| d as i32),
                }
            }
            "Slice" => {
                let s = p.slice_param.clone().unwrap_or_default();
                K::Slice {
                    axis: s.slice_dim.map_or(s.axis(), |d| d as i32),
                    points: s.slice_point.iter().map(|&v| v as usize).collect(),
                }
            }
            "Split" => K::Split,
            "Flatten" => {
                let f = p.flatten_param.unwrap_or_default();
                K::Flatten {
                    axis: f.axis(),
                    end_axis: f.end_axis(),
                }
            }
            "Reshape" => {
                let r = p.reshape_param.clone().unwrap_or_default();
                K::Reshape {
                    axis: r.axis(),
                    num_axes: r.num_axes(),
                    dims: r.shape.map(|s| s.dim).unwrap_or_default(),
                }
            }
            "Crop" => {
                let c = p.crop_param.clone().unwrap_or_default();
                K::Crop {
                    axis: c.axis(),
                    offsets: c.offset.iter().map(|&v| v as usize).collect(),
                }
            }
            "Tile" => {
                let t = p.tile_param.unwrap_or_default();
                K::Tile {
                    axis: t.axis(),
                    tiles: usize::try_from(t.tiles()).unwrap_or(0),
                }
            }
            "Reduction" => {
                let r = p.reduction_param.unwrap_or_default();
                let op = match r.operation() {
                    caffe::reduction_parameter::ReductionOp::Sum => ReductionOp::Sum,
                    caffe::reduction_parameter::ReductionOp::Asum => ReductionOp::Asum,
                    caffe::reduction_parameter::ReductionOp::Sumsq => ReductionOp::SumSq,
                    caffe::reduction_parameter::ReductionOp::Mean => ReductionOp::Mean,
                };
                K::Reduction {
                    op,
                    axis: r.axis(),
                    coeff: r.coeff(),
                }
            }
            "Permute" => K::Permute {
                order: p
                    .permute_param
                    .as_ref()
                    .map(|q| q.order.iter().map(|&v| v as usize).collect())
                    .unwrap_or_default(),
            },
            "Reorg" => {
                let r = p.reorg_param.unwrap_or_default();
                K::Reorg {
                    stride: r.stride() as usize,
                    reverse: r.reverse(),
                }
            }
            "Axpy" => K::Axpy,
            "Filter" => K::Filter,
            "BatchReindex" => K::BatchReindex,
            "Silence" => K::Silence,
            "Parameter" => K::Parameter {
                shape: p
                    .parameter_param
                    .as_ref()
                    .and_then(|q| q.shape.clone())
                    .map(|s| s.dim)
                    .unwrap_or_default(),
            },
            "Softmax" => K::Softmax {
                axis: p.softmax_param.as_ref().map_or(1, |s| s.axis()),
            },
            "ArgMax" => {
                let a = p.argmax_param.unwrap_or_default();
                K::ArgMax {
                    out_max_val: a.out_max_val(),
                    top_k: a.top_k() as usize,
                    axis: a.axis,
                }
            }
            "Accuracy" => {
                let a = p.accuracy_param.unwrap_or_default();
                K::Accuracy {
                    top_k: a.top_k() as usize,
                    axis: a.axis(),
                    ignore_label: a.ignore_label,
                }
            }
            "PriorBox" => K::PriorBox(p.prior_box_param.clone().unwrap_or_default()),
            "DetectionOutput" => {
                K::DetectionOutput(p.detection_output_param.clone().unwrap_or_default())
            }
            "DetectionEvaluate" => {
                K::DetectionEvaluate(p.detection_evaluate_param.clone().unwrap_or_default())
            }
            "EvalDetection" => K::EvalDetection(p.eval_detection_param.clone().unwrap_or_default()),
            "ROIPooling" => {
                let r = p.roi_pooling_param.clone().unwrap_or_default();
                let (h, w) = match r.pooled_size.as_slice() {
                    [s] => (*s, *s),
                    [h, w, ..] => (*h, *w),
                    [] => (r.pooled_h(), r.pooled_w()),
                };
                K::RoiPooling {
                    pooled_h: h as usize,
                    pooled_w: w as usize,
                    spatial_scale: r.spatial_scale(),
                }
            }
            "PSROIPooling" => {
                let r = p.psroi_pooling_param.unwrap_or_default();
                K::PsRoiPooling {
                    spatial_scale: r.spatial_scale,
                    output_dim: usize::try_from(r.output_dim).unwrap_or(0),
                    group_size: usize::try_from(r.group_size).unwrap_or(0),
                }
            }
            "RNN" | "LSTM" => K::Recurrent {
                kind: if p.r#type() == "RNN" {
                    RecurrentKind::Rnn
                } else {
                    RecurrentKind::Lstm
                },
                num_output: p
                    .recurrent_param
                    .as_ref()
                    .map_or(0, |r| r.num_output() as usize),
            },
            "LSTMUnit" => K::LstmUnit,
            "Python" => {
                let q = p.python_param.clone().unwrap_or_default();
                K::Python {
                    module: q.module().to_string(),
                    layer: q.layer().to_string(),
                }
            }
            "HDF5Output" => K::Hdf5Output,
            "BoxAnnotatorOHEM" => K::BoxAnnotatorOhem,
            other => match loss_kind(other) {
                Some(kind) => K::Loss(kind),
                None => K::Unsupported(other.to_string()),
            },
        }
    }

    pub fn category(&self) -> Category {
        use LayerKind as K;
        match self {
            K::Input { .. } | K::Data { .. } | K::Parameter { .. } => Category::Data,
            K::Convolution(_)
            | K::Deconvolution(_)
            | K::Im2col(_)
            | K::InnerProduct(_)
            | K::Embed { .. } => Category::Layer,
            K::Recurrent { .. } | K::LstmUnit => Category::Layer,
            K::Activation(_) | K::PReLU { .. } | K::Identity(_) => Category::Activation,
            K::Pooling(_) | K::Spp { .. } | K::RoiPooling { .. } | K::PsRoiPooling { .. } => {
                Category::Pool
            }
            K::Lrn(_)
            | K::BatchNorm(_)
            | K::Scale(_)
            | K::Bias(_)
            | K::Mvn { .. }
            | K::Normalize { .. } => Category::Normalization,
            K::Eltwise { .. }
            | K::Concat { .. }
            | K::Slice { .. }
            | K::Split
            | K::Flatten { .. }
            | K::Reshape { .. } => Category::Tensor,
            K::Crop { .. }
            | K::Tile { .. }
            | K::Reduction { .. }
            | K::Permute { .. }
            | K::Reorg { .. } => Category::Tensor,
            K::Axpy | K::Filter | K::BatchReindex | K::Silence | K::PriorBox(_) => Category::Tensor,
            K::Softmax { .. } | K::ArgMax { .. } | K::Accuracy { .. } | K::DetectionOutput(_) => {
                Category::Output
            }
            K::DetectionEvaluate(_) | K::EvalDetection(_) | K::Hdf5Output => Category::Output,
            K::Loss(_) | K::BoxAnnotatorOhem => Category::Loss,
            K::Python { .. } | K::Unsupported(_) => Category::Unknown,
        }
    }

    /// True for layers that feed the net (Input and the data layers).
    pub fn is_data(&self) -> bool {
        matches!(self, LayerKind::Input { .. } | LayerKind::Data { .. })
    }
}

fn loss_kind(type_name: &str) -> Option<LossKind> {
    use LossKind::*;
    Some(match type_name {
        "SoftmaxWithLoss" => SoftmaxWithLoss,
        "EuclideanLoss" => EuclideanLoss,
        "MultinomialLogisticLoss" => MultinomialLogisticLoss,
        "SigmoidCrossEntropyLoss" => SigmoidCrossEntropyLoss,
        "HingeLoss" => HingeLoss,
        "InfogainLoss" => InfogainLoss,
        "ContrastiveLoss" => ContrastiveLoss,
        "MultiBoxLoss" => MultiBoxLoss,
        "SmoothL1Loss" => SmoothL1Loss,
        "SmoothL1LossOHEM" => SmoothL1LossOhem,
        "SoftmaxWithLossOHEM" => SoftmaxWithLossOhem,
        "RegionLoss" => RegionLoss,
        _ => return None,
    })
}

fn pool_method(m: Option<i32>) -> PoolMethod {
    match m.and_then(|v| caffe::pooling_parameter::PoolMethod::try_from(v).ok()) {
        Some(caffe::pooling_parameter::PoolMethod::Ave) => PoolMethod::Ave,
        Some(caffe::pooling_parameter::PoolMethod::Stochastic) => PoolMethod::Stochastic,
        _ => PoolMethod::Max,
    }
}

fn conv(p: &LayerParameter) -> Conv {
    let c = p.convolution_param.clone().unwrap_or_default();
    Conv {
        num_output: c.num_output() as usize,
        bias_term: c.bias_term(),
        kernel: SpatialSpec::new(&c.kernel_size, c.kernel_h, c.kernel_w),
        stride: SpatialSpec::new(&c.stride, c.stride_h, c.stride_w),
        pad: SpatialSpec::new(&c.pad, c.pad_h, c.pad_w),
        dilation: SpatialSpec::new(&c.dilation, None, None),
        group: c.group() as usize,
        axis: c.axis(),
        relu: c.relu().then_some(c.negative_slope()),
        fusion: match c.fusion_type() {
            caffe::convolution_parameter::FusionType::SumFusion => Fusion::Sum,
            caffe::convolution_parameter::FusionType::NoneFusion => Fusion::None,
        },
    }
}

fn pool(p: &LayerParameter) -> Pool {
    let q = p.pooling_param.clone().unwrap_or_default();
    let pair = |one: Option<u32>, h: Option<u32>, w: Option<u32>| match (h, w) {
        (Some(h), Some(w)) => Some((h as usize, w as usize)),
        _ => one.map(|v| (v as usize, v as usize)),
    };
    Pool {
        method: pool_method(q.pool),
        global: q.global_pooling(),
        kernel: pair(q.kernel_size, q.kernel_h, q.kernel_w),
        stride: pair(Some(q.stride()), q.stride_h, q.stride_w).unwrap_or((1, 1)),
        pad: pair(Some(q.pad()), q.pad_h, q.pad_w).unwrap_or((0, 0)),
        avg_include_pad: q.avg_include_pad(),
    }
}
