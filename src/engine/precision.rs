//! Which layers of a quantized net Intel Caffe runs in INT8, and the data type and scale every value
//! then has (spec/intel-calibrator.md §4.2-§4.5), decided statically in net order on the compiled view:
//! a quantized Convolution or InnerProduct runs INT8 with u8 output after a fused zero-slope ReLU, s8
//! without, f32 with `bw_layer_out: 32`; a sum-fused convolution writes into its residual's buffer and
//! takes the residual's type (so an f32 residual makes a convolution with INT8 output run FP32, and an
//! s8 residual stores a u8-scaled output as s8); ReLU and Pooling pass INT8 through; Concat keeps INT8
//! when all inputs share a type, at the smallest scale; a BatchNorm (one left unfolded, after an
//! Eltwise) whose input holds codes runs MKL-DNN's s8 batch norm on the raw codes; everything else
//! reads and writes f32.

use super::compile::{Compiled, Role};
use super::quant::IntType;
use crate::model::layer::{Activation, LayerKind};
use crate::model::quant::{LayerQuant, OutputPrecision, Quantized, layer_quant};
use crate::model::{LayerId, Net};

/// How a value is held.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Repr {
    F32,
    /// Integer codes with their scale (real = code / scale). `sum`: written by a sum-fused
    /// convolution (Intel reads an s8 one of these as u8 in pooling).
    Int {
        ty: IntType,
        scale: f32,
        sum: bool,
    },
}

/// How a layer runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Exec {
    /// Absorbed into a fused layer.
    Absorbed,
    F32,
    /// A Convolution or InnerProduct in INT8 with its input type, and what it stores.
    Int8 {
        quant: LayerQuant,
        input: IntType,
        output: Repr,
    },
    /// Passes INT8 through (ReLU, Pooling, Concat on INT8 inputs).
    PassInt8,
    /// A BatchNorm (with its merged Scale and fused ReLU) on INT8 input: Intel Caffe builds it on its
    /// input's s8 memory, so MKL-DNN normalises the raw integer codes with the FP32-domain statistics
    /// and stores rounded s8 codes, which keep the input's scale (ssd_face_res10's notes.md). The
    /// observed inputs are s8 sums at scale 1; a u8 input (which MKL-DNN's s8 kernel does not take) is
    /// treated the same way, unverified.
    OnCodes,
}

/// The precision plan of a quantized net.
#[derive(Debug, Clone, PartialEq)]
pub struct Precision {
    pub exec: Vec<Exec>,
    /// Per value; values of absorbed layers share their fused layer's output representation.
    pub repr: Vec<Repr>,
    /// Things the user should know (quantization parameters Intel ignores, layers that silently run
    /// FP32), one line each, naming the layer.
    pub notes: Vec<String>,
}

impl Precision {
    /// Decides every layer's execution. Errors name the layer with a bad `quantization_param`.
    pub fn new(net: &Net, compiled: &Compiled) -> Result<Self, String> {
        let mut p = Self {
            exec: vec![Exec::F32; net.layers.len()],
            repr: vec![Repr::F32; net.values.len()],
            notes: Vec::new(),
        };
        for (id, l) in net.layers.iter().enumerate() {
            if let Role::Absorbed(_) = compiled.roles[id] {
                p.exec[id] = Exec::Absorbed;
                continue;
            }
            let outputs = match &l.kind {
                LayerKind::Convolution(c) => c.num_output,
                LayerKind::InnerProduct(ip) => ip.num_output,
                _ => 0,
            };
            let quant = layer_quant(&l.kind, l.proto.quantization_param.as_ref(), outputs)
                .map_err(|e| format!("layer '{}': quantization_param: {e}", l.name))?;
            let (exec, out) = match quant {
                Quantized::Int8(q) => p.quantized(net, compiled, id, q),
                Quantized::Ignored(why) => {
                    p.notes.push(format!("layer '{}': {why}", l.name));
                    (Exec::F32, Repr::F32)
                }
                Quantized::No => p.unquantized(net, id),
            };
            if exec == Exec::OnCodes {
                p.notes.push(format!(
                    "layer '{}': Intel Caffe runs this BatchNorm on the raw int8 codes of its input \
                     (its statistics are in real units), which distorts everything after it",
                    l.name
                ));
            }
            p.exec[id] = exec;
            // The layer's tops, or for a fused layer every value it stands for.
            let values: Vec<usize> = match compiled.fusion(id) {
                Some(_) => compiled.values_of(net, id).collect(),
                None => l.tops.clone(),
            };
            for v in values {
                p.repr[v] = out;
            }
        }
        Ok(p)
    }

    /// A quantized Convolution or InnerProduct.
    fn quantized(
        &mut self,
        net: &Net,
        compiled: &Compiled,
        id: LayerId,
        q: LayerQuant,
    ) -> (Exec, Repr) {
        let l = &net.layers[id];
        let input = if q.negative_input {
            IntType::S8
        } else {
            IntType::U8
        };
        let fusion = compiled.fusion(id);
        let relu = fusion
            .and_then(|f| f.relu)
            .map(|(_, slope)| slope)
            .or(match &l.kind {
                LayerKind::InnerProduct(ip) => ip.relu,
                _ => None,
            });
        if let Some(sum) = fusion.and_then(|f| f.sum.as_ref()) {
            return match self.repr[sum.residual] {
                // An FP32 output adds an FP32 residual in the INT8 kernel (ssd_face_res10's
                // layer_64_1_conv2_h ran INT8 so).
                Repr::F32 if q.output == OutputPrecision::F32 => (
                    Exec::Int8 {
                        quant: q,
                        input,
                        output: Repr::F32,
                    },
                    Repr::F32,
                ),
                Repr::F32 => {
                    self.notes.push(format!(
                        "layer '{}': its Eltwise SUM input is FP32, so Intel Caffe runs this quantized \
                         convolution in FP32",
                        l.name
                    ));
                    (Exec::F32, Repr::F32)
                }
                Repr::Int { ty, .. } => {
                    let output = Repr::Int {
                        ty,
                        scale: q.scale_out,
                        sum: true,
                    };
                    (
                        Exec::Int8 {
                            quant: q,
                            input,
                            output,
                        },
                        output,
                    )
                }
            };
        }
        let is_ip = matches!(l.kind, LayerKind::InnerProduct(_));
        let output = match q.output {
            OutputPrecision::F32 => Repr::F32,
            OutputPrecision::Int8 => {
                let unsigned = if is_ip {
                    relu.is_some()
                } else {
                    relu == Some(0.0)
                };
                Repr::Int {
                    ty: if unsigned { IntType::U8 } else { IntType::S8 },
                    scale: q.scale_out,
                    sum: false,
                }
            }
        };
        (
            Exec::Int8 {
                quant: q,
                input,
                output,
            },
            output,
        )
    }

    /// A layer without quantization_param: INT8 passes through ReLU, Pooling and same-type Concat.
    fn unquantized(&self, net: &Net, id: LayerId) -> (Exec, Repr) {
        let l = &net.layers[id];
        let first = l.bottoms.first().map_or(Repr::F32, |&b| self.repr[b]);
        match (&l.kind, first) {
            (LayerKind::Activation(Activation::ReLU { .. }), Repr::Int { .. }) => {
                (Exec::PassInt8, first)
            }
            (LayerKind::Pooling(_), Repr::Int { ty, scale, sum }) => {
                // An s8 buffer written by a sum-fused convolution is read as u8.
                let ty = if sum && ty == IntType::S8 {
                    IntType::U8
                } else {
                    ty
                };
                (Exec::PassInt8, Repr::Int { ty, scale, sum })
            }
            (LayerKind::BatchNorm(_), Repr::Int { scale, .. }) => (
                Exec::OnCodes,
                Repr::Int {
                    ty: IntType::S8,
                    scale,
                    sum: false,
                },
            ),
            (LayerKind::Concat { .. }, Repr::Int { ty, .. }) => {
                let inputs: Vec<Repr> = l.bottoms.iter().map(|&b| self.repr[b]).collect();
                let same = inputs
                    .iter()
                    .all(|r| matches!(r, Repr::Int { ty: t, .. } if *t == ty));
                if !same {
                    return (Exec::F32, Repr::F32);
                }
                // The smallest scale, 1.0 counting as unset.
                let scale = inputs
                    .iter()
                    .filter_map(|r| match r {
                        Repr::Int { scale, .. } if *scale != 1.0 => Some(*scale),
                        _ => None,
                    })
                    .fold(f32::INFINITY, f32::min);
                let scale = if scale.is_finite() { scale } else { 1.0 };
                (
                    Exec::PassInt8,
                    Repr::Int {
                        ty,
                        scale,
                        sum: false,
                    },
                )
            }
            _ => (Exec::F32, Repr::F32),
        }
    }

    /// Convolution and InnerProduct layers that run, and how many of them run INT8.
    pub fn gemm_layers(&self, net: &Net) -> (usize, usize) {
        let gemm =
            |k: &LayerKind| matches!(k, LayerKind::Convolution(_) | LayerKind::InnerProduct(_));
        let mut counts = (0, 0);
        for (l, e) in net.layers.iter().zip(&self.exec) {
            if gemm(&l.kind) && *e != Exec::Absorbed {
                counts.0 += 1;
                counts.1 += usize::from(matches!(e, Exec::Int8 { .. }));
            }
        }
        counts
    }
}
