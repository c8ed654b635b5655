//! From statistics to `quantization_param` blocks by the rules of Intel's calibrator 1.1.6 (spec
//! §2.6.2-§2.10): which layers are quantized, u8 or s8 input by the producer walk on the compiled net,
//! 255/M or 127/M, weight scales per tensor or per channel, and the layers whose output is forced to
//! FP32. Maxima and scales pass through binary32 as in Intel's proto fields; the arithmetic is double.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::config::{CalibConfig, ScaleMethod, WeightScaling};
use super::methods::threshold;
use super::stats::{TensorStats, weight_maxima};
use crate::caffe::QuantizationParameter;
use crate::engine::compile::{Compiled, Role, folded_weights};
use crate::engine::int8_plan::ip_weights;
use crate::model::layer::{Activation, LayerKind};
use crate::model::{LayerId, Net};

/// The quantizable layers of a net in file order: Convolutions, and InnerProducts with `-fc`; the first
/// is left FP32 unless `-1st`.
pub fn quantizable(net: &Net, cfg: &CalibConfig) -> Vec<LayerId> {
    let all: Vec<LayerId> = (0..net.layers.len())
        .filter(|&id| is_quantizable_type(&net.layers[id].kind, cfg.int8_inner_product))
        .collect();
    let skip = usize::from(!cfg.quantize_first_conv && !all.is_empty());
    all[skip..].to_vec()
}

fn is_quantizable_type(kind: &LayerKind, inner_product: bool) -> bool {
    match kind {
        LayerKind::Convolution(_) => true,
        LayerKind::InnerProduct(_) => inner_product,
        _ => false,
    }
}

/// Types Intel's tool counts as able to carry INT8 (quantizable ones, ReLU, Split, Concat, Pooling,
/// Eltwise).
fn int8_capable(kind: &LayerKind) -> bool {
    matches!(
        kind,
        LayerKind::Convolution(_)
            | LayerKind::InnerProduct(_)
            | LayerKind::Activation(Activation::ReLU { .. })
            | LayerKind::Split
            | LayerKind::Concat { .. }
            | LayerKind::Pooling(_)
            | LayerKind::Eltwise { .. }
    )
}

/// The blobs whose statistics the rules read: every quantizable layer's input and (compiled) output.
pub fn sampled_blobs(net: &Net, compiled: &Compiled, layers: &[LayerId]) -> Vec<String> {
    let mut names = BTreeSet::new();
    for &id in layers {
        let l = &net.layers[id];
        if let Some(&b) = l.bottoms.first() {
            names.insert(net.values[b].name.clone());
        }
        if let Some(t) = output_value(net, compiled, id) {
            names.insert(net.values[t].name.clone());
        }
    }
    names.into_iter().collect()
}

/// The compiled layer's top: its fused output (the Eltwise's top after a sum fusion).
fn output_value(net: &Net, compiled: &Compiled, id: LayerId) -> Option<usize> {
    compiled
        .fusion(id)
        .map(|f| f.output)
        .or_else(|| net.layers[id].tops.first().copied())
}

/// A compiled layer's inputs: its own, and the residual of a fused Eltwise SUM (Intel's fused
/// convolution has it as a second bottom).
fn bottoms(net: &Net, compiled: &Compiled, id: LayerId) -> Vec<usize> {
    let mut b = net.layers[id].bottoms.clone();
    if let Some(sum) = compiled.fusion(id).and_then(|f| f.sum.as_ref()) {
        b.push(sum.residual);
    }
    b
}

/// `levels / M` through binary32 (M = 0 or an infinite quotient gives 0, as Intel 1.1.3+ writes).
fn scale(levels: f64, m: f32) -> f32 {
    let s = levels / f64::from(m);
    if s.is_finite() { s as f32 } else { 0.0 }
}

/// The compiled net's layers (absorbed ones aside) before `before` that write a value named `name`
/// (in-place writers included).
fn producers(net: &Net, compiled: &Compiled, name: &str, before: LayerId) -> Vec<LayerId> {
    (0..before)
        .filter(|&id| !matches!(compiled.roles[id], Role::Absorbed(_)))
        .filter(|&id| {
            compiled
                .values_of(net, id)
                .any(|v| net.values[v].name == name)
        })
        .collect()
}

/// Intel's u8 input test (§2.6.2): walking producers from the layer's input, a quantizable layer not
/// fused with a zero-slope ReLU makes the input s8; non-INT8 types end their branch as non-negative.
/// Each layer's bottom[0] only is followed, as Intel's blob-to-layer maps do: results on ResNet-8
/// (an Eltwise whose second input is an s8 convolution, a sum-fused projection) show it.
fn input_is_unsigned(
    net: &Net,
    compiled: &Compiled,
    relu_fused: &BTreeSet<LayerId>,
    id: LayerId,
) -> bool {
    let first_input = |l: LayerId| -> Vec<LayerId> {
        net.layers[l]
            .bottoms
            .first()
            .map(|&b| producers(net, compiled, &net.values[b].name, l))
            .unwrap_or_default()
    };
    let mut frontier = first_input(id);
    let mut seen = BTreeSet::new();
    while !frontier.is_empty() {
        if frontier
            .iter()
            .any(|&p| is_quantizable_type(&net.layers[p].kind, true) && !relu_fused.contains(&p))
        {
            return false;
        }
        let mut next = Vec::new();
        for p in frontier {
            let k = &net.layers[p].kind;
            if int8_capable(k) && !matches!(k, LayerKind::Convolution(_)) && seen.insert(p) {
                next.extend(first_input(p));
            }
        }
        frontier = next;
    }
    true
}

/// What tuning (or the user) changed on top of the configuration: layers kept FP32, blobs whose
/// threshold another method gives, layers with per-channel weight scales whatever `-c` says, and
/// quantized layers whose output is kept FP32 (`bw_layer_out: 32`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Choices {
    pub fp32: BTreeSet<String>,
    pub methods: BTreeMap<String, ScaleMethod>,
    pub per_channel: BTreeSet<String>,
    pub fp32_out: BTreeSet<String>,
}

/// The `quantization_param` of every quantized layer, by name, from the sampled statistics.
pub fn quantization_table(
    net: &Net,
    stats: &BTreeMap<String, TensorStats>,
    cfg: &CalibConfig,
    choices: &Choices,
) -> Result<BTreeMap<String, QuantizationParameter>, String> {
    let compiled = Compiled::new(net);
    let layers: Vec<LayerId> = quantizable(net, cfg)
        .into_iter()
        .filter(|&id| !choices.fp32.contains(&net.layers[id].name))
        .collect();
    // R: convolutions fused with a zero-slope ReLU.
    let relu_fused: BTreeSet<LayerId> = (0..net.layers.len())
        .filter(|&id| matches!(net.layers[id].kind, LayerKind::Convolution(_)))
        .filter(|&id| {
            compiled
                .fusion(id)
                .and_then(|f| f.relu)
                .is_some_and(|(_, s)| s == 0.0)
        })
        .collect();
    let m = |name: &str, unsigned: bool| -> Result<f32, String> {
        stats
            .get(name)
            .map(|s| {
                let method = choices.methods.get(name).copied();
                threshold(method.unwrap_or(cfg.scale_method), s, unsigned)
            })
            .ok_or_else(|| format!("blob \"{name}\" was not sampled"))
    };
    let mut table = BTreeMap::new();
    let mut first_unsigned_done = false;
    for &id in &layers {
        let l = &net.layers[id];
        let err = |e: String| format!("layer \"{}\": {e}", l.name);
        let input = l.bottoms.first().ok_or_else(|| err("no input".into()))?;
        let output = output_value(net, &compiled, id).ok_or_else(|| err("no output".into()))?;
        let out_unsigned = relu_fused.contains(&id) || cfg.unsigned_outputs;
        let mut unsigned_in = input_is_unsigned(net, &compiled, &relu_fused, id);
        if cfg.quantize_first_conv && unsigned_in && !first_unsigned_done {
            // `-1st`: the first layer judged u8 gets a signed input scale.
            first_unsigned_done = true;
            unsigned_in = false;
        }
        let m_in = m(&net.values[*input].name, unsigned_in).map_err(err)?;
        let m_out = m(&net.values[output].name, out_unsigned).map_err(err)?;
        let (w, outputs) = match &l.kind {
            LayerKind::InnerProduct(ip) => {
                let n = ip.num_output.max(1);
                let k = l.blobs.first().map_or(0, |b| b.data.len()) / n;
                (ip_weights(l, ip, k).map_err(err)?.0, ip.num_output)
            }
            LayerKind::Convolution(c) => {
                let folded = compiled.fusion(id).map_or(&[][..], |f| f.folded.as_slice());
                (
                    folded_weights(net, id, folded).map_err(err)?.0,
                    c.num_output,
                )
            }
            _ => return Err(err("not quantizable".into())),
        };
        let per_channel =
            cfg.weight_scaling == WeightScaling::Multiple || choices.per_channel.contains(&l.name);
        let params = weight_maxima(&w, outputs, per_channel)
            .into_iter()
            .map(|mw| scale(127.0, mw))
            .collect();
        table.insert(
            l.name.clone(),
            QuantizationParameter {
                bw_layer_in: Some(8),
                bw_layer_out: Some(8),
                bw_params: Some(8),
                scale_in: vec![scale(if unsigned_in { 255.0 } else { 127.0 }, m_in)],
                scale_out: vec![scale(if out_unsigned { 255.0 } else { 127.0 }, m_out)],
                scale_params: params,
                is_negative_input: (!unsigned_in).then_some(true),
                ..Default::default()
            },
        );
    }
    if cfg.unify_concat_scales || cfg.concat_fp32 {
        concat_producers(net, &compiled, cfg.unify_concat_scales, &mut table);
    }
    if !cfg.disable_force_fp32 {
        force_fp32_outputs(net, &compiled, &layers, &mut table);
    }
    if !cfg.disable_cac_unify {
        unify_around_average_pooling(net, &compiled, &mut table);
    }
    for name in &choices.fp32_out {
        if let Some(q) = table.get_mut(name) {
            q.bw_layer_out = Some(32);
            q.scale_out = vec![1.0];
        }
    }
    Ok(table)
}

/// §2.9, Concats in reverse file order: with `-f` the nearest upstream convolutions (walking through
/// INT8-capable types, a Concat ending the walk) share their smallest `scale_out`; with `-t` alone
/// they output FP32. Unlike Intel's tool, an unquantized producer is left alone instead of crashing.
fn concat_producers(
    net: &Net,
    compiled: &Compiled,
    unify: bool,
    table: &mut BTreeMap<String, QuantizationParameter>,
) {
    for (id, l) in net.layers.iter().enumerate().rev() {
        if !matches!(l.kind, LayerKind::Concat { .. })
            || matches!(compiled.roles[id], Role::Absorbed(_))
        {
            continue;
        }
        let convs = upstream_convolutions(net, compiled, id);
        let quantized: Vec<&String> = convs
            .iter()
            .map(|&c| &net.layers[c].name)
            .filter(|n| table.contains_key(*n))
            .collect();
        if unify {
            let widest = quantized
                .iter()
                .filter_map(|n| table[*n].scale_out.first().copied())
                .fold(f32::INFINITY, f32::min);
            for n in &quantized {
                if let Some(q) = table.get_mut(*n)
                    && let Some(s) = q.scale_out.first_mut()
                {
                    *s = widest;
                }
            }
        } else {
            for n in &quantized {
                if let Some(q) = table.get_mut(*n) {
                    q.bw_layer_out = Some(32);
                    q.scale_out = vec![1.0];
                }
            }
        }
    }
}

/// The nearest Convolutions above a Concat, walking producers through INT8-capable types (1.1.3+: a
/// Concat on the way contributes nothing).
fn upstream_convolutions(net: &Net, compiled: &Compiled, concat: LayerId) -> Vec<LayerId> {
    let mut found = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut frontier = vec![concat];
    while let Some(at) = frontier.pop() {
        for b in bottoms(net, compiled, at) {
            for p in producers(net, compiled, &net.values[b].name, at) {
                let k = &net.layers[p].kind;
                if matches!(k, LayerKind::Convolution(_)) {
                    found.insert(p);
                } else if int8_capable(k)
                    && !matches!(k, LayerKind::Concat { .. })
                    && seen.insert(p)
                {
                    frontier.push(p);
                }
            }
        }
    }
    found.into_iter().collect()
}

/// The compiled net's layers (absorbed ones aside) after `after` that read a value named `name`.
fn consumers(net: &Net, compiled: &Compiled, name: &str, after: LayerId) -> Vec<LayerId> {
    (after + 1..net.layers.len())
        .filter(|&c| !matches!(compiled.roles[c], Role::Absorbed(_)))
        .filter(|&c| {
            bottoms(net, compiled, c)
                .iter()
                .any(|&b| net.values[b].name == name)
        })
        .collect()
}

/// The name of a compiled layer's output.
fn output_name<'a>(net: &'a Net, compiled: &Compiled, id: LayerId) -> Option<&'a str> {
    output_value(net, compiled, id).map(|v| net.values[v].name.as_str())
}

/// §2.11 (1.1.6, unless `-ucac`): around an AVE pooling between two quantized layers, the downstream
/// layer's `scale_in` becomes the upstream one's `scale_out` (no requantization around the pooling).
fn unify_around_average_pooling(
    net: &Net,
    compiled: &Compiled,
    table: &mut BTreeMap<String, QuantizationParameter>,
) {
    // The layers a walk passes through: INT8-capable ones that are not quantizable.
    let passes = |k: &LayerKind| int8_capable(k) && !is_quantizable_type(k, true);
    let quantized = |id: LayerId, table: &BTreeMap<String, QuantizationParameter>| {
        table.get(&net.layers[id].name).cloned()
    };
    for (pool, l) in net.layers.iter().enumerate() {
        let LayerKind::Pooling(p) = &l.kind else {
            continue;
        };
        if p.method != crate::model::layer::PoolMethod::Ave
            || matches!(compiled.roles[pool], Role::Absorbed(_))
        {
            continue;
        }
        // Upward: single producers through the passing types to a quantized layer with INT8 output.
        let mut up: Option<f32> = None;
        let mut at = pool;
        loop {
            let ins: Vec<LayerId> = bottoms(net, compiled, at)
                .iter()
                .flat_map(|&b| producers(net, compiled, &net.values[b].name, at))
                .collect();
            if ins.len() != 1 {
                // A Concat with several inputs: its first quantized consumer's input scale.
                if matches!(net.layers[at].kind, LayerKind::Concat { .. })
                    && let Some(name) = output_name(net, compiled, at)
                {
                    up = consumers(net, compiled, name, at)
                        .into_iter()
                        .filter_map(|c| quantized(c, table))
                        .find(|q| q.bw_layer_in() == 8)
                        .and_then(|q| q.scale_in.first().copied());
                }
                break;
            }
            let prev = ins[0];
            if let Some(q) = quantized(prev, table) {
                if q.bw_layer_out() == 8 {
                    up = q.scale_out.first().copied();
                }
                break;
            }
            if !passes(&net.layers[prev].kind) {
                break;
            }
            at = prev;
        }
        // Downward: single consumers through the same types to a quantized layer with INT8 input.
        let mut down = None;
        let mut at = pool;
        while let Some(name) = output_name(net, compiled, at) {
            let outs = consumers(net, compiled, name, at);
            let [next] = outs.as_slice() else {
                break;
            };
            if let Some(q) = quantized(*next, table) {
                down = (q.bw_layer_in() == 8).then_some(*next);
                break;
            }
            if !passes(&net.layers[*next].kind) {
                break;
            }
            at = *next;
        }
        if let (Some(s), Some(d)) = (up, down)
            && let Some(q) = table.get_mut(&net.layers[d].name)
        {
            q.scale_in = vec![s];
        }
    }
}

/// §2.10 (1.1.6a): a quantized layer outputs FP32 unless a consumer of its output can carry INT8
/// (scanning consumers in order, an in-place consumer that cannot forces FP32 first); one without
/// consumers, and the last quantized layer, always do.
fn force_fp32_outputs(
    net: &Net,
    compiled: &Compiled,
    layers: &[LayerId],
    table: &mut BTreeMap<String, QuantizationParameter>,
) {
    let last = layers.iter().copied().max();
    for &id in layers {
        let Some(out) = output_value(net, compiled, id) else {
            continue;
        };
        let mut int8_reader = false;
        for c in consumers(net, compiled, &net.values[out].name, id) {
            let cl = &net.layers[c];
            if int8_capable(&cl.kind) {
                int8_reader = true;
                break;
            }
            if cl.in_place(net, 0) {
                break;
            }
        }
        if (!int8_reader || Some(id) == last)
            && let Some(q) = table.get_mut(&net.layers[id].name)
        {
            q.bw_layer_out = Some(32);
            q.scale_out = vec![1.0];
        }
    }
}
