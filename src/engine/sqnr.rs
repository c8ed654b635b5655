//! The error INT8 adds, per layer: the signal-to-quantization-noise ratio of each INT8 layer's output
//! against FP32 on the same batches, with every quantized layer in INT8 (cumulative) and with only that
//! layer in INT8 (isolated). Outputs are captured through the engine's observer as they are written
//! (a sum-fused convolution's buffer is overwritten later by Intel's buffer sharing).

use std::collections::BTreeMap;

use ndarray::{ArrayD, IxDyn};
use serde::Serialize;

use super::error::EngineError;
use super::feed::ArrayFeed;
use super::precision::Exec;
use super::session::{Feed, Observer};
use super::{Plan, Session};
use crate::model::{Layer, Net, ValueId};

/// 10·log10(Σ ref² / Σ (ref − test)²) in dB; infinite when equal, 0 for a zero reference.
pub fn sqnr_db(signal: f64, noise: f64) -> f64 {
    if noise == 0.0 {
        f64::INFINITY
    } else if signal == 0.0 {
        0.0
    } else {
        10.0 * (signal / noise).log10()
    }
}

/// One INT8 layer's error.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LayerError {
    pub layer: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The blob compared (the output of the fused layer).
    pub blob: String,
    /// Only this layer in INT8 (null when it does not run INT8 alone).
    pub isolated_sqnr_db: Option<f64>,
    pub cumulative_sqnr_db: f64,
}

/// Copies the wanted values as the pass writes them.
#[derive(Debug, Default)]
struct Capture {
    wanted: Vec<ValueId>,
    data: BTreeMap<ValueId, ArrayD<f32>>,
}

impl Observer for Capture {
    fn output(&mut self, _: &Layer, value: ValueId, data: &ArrayD<f32>) {
        if self.wanted.contains(&value) {
            self.data.insert(value, data.clone());
        }
    }
}

/// Σ ref² and Σ (ref − test)² of one value, accumulated over batches.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sums {
    pub signal: f64,
    pub noise: f64,
}

impl Sums {
    pub fn db(&self) -> f64 {
        sqnr_db(self.signal, self.noise)
    }

    pub fn add(&mut self, reference: &ArrayD<f32>, test: &ArrayD<f32>) {
        for (&r, &t) in reference.iter().zip(test) {
            let (r, t) = (f64::from(r), f64::from(t));
            self.signal += r * r;
            self.noise += (r - t) * (r - t);
        }
    }
}

/// One pass of a plan on recorded inputs, capturing the wanted values.
pub fn capture(
    plan: &Plan,
    feed: &mut dyn Feed,
    wanted: &[ValueId],
) -> Result<BTreeMap<ValueId, ArrayD<f32>>, EngineError> {
    let mut session = Session::new(plan);
    let mut c = Capture {
        wanted: wanted.to_vec(),
        data: BTreeMap::new(),
    };
    session.forward(feed, &mut c)?;
    Ok(c.data)
}

/// The per-layer report of a quantized net over `batches` batches of its data layers from `feed`.
pub fn int8_report(
    net: &Net,
    batch: Option<usize>,
    batches: usize,
    feed: &mut dyn Feed,
) -> Result<Vec<LayerError>, EngineError> {
    let int8 = Plan::new_int8(net, batch)?;
    let fp32 = Plan::new_unfused(net, batch)?;
    let Some(q) = int8.int8.as_ref() else {
        return Ok(Vec::new());
    };
    // The INT8 layers and the value each one's output stands for.
    let layers: Vec<(usize, ValueId)> = (0..net.layers.len())
        .filter(|&id| matches!(q.precision.exec[id], Exec::Int8 { .. }))
        .filter_map(|id| {
            let own = net.layers[id].tops.first().copied();
            Some((id, q.compiled.fusion(id).map(|f| f.output).or(own)?))
        })
        .collect();
    let wanted: Vec<ValueId> = layers.iter().map(|&(_, v)| v).collect();
    // One net per INT8 layer, with only that layer's quantization_param.
    let alone: Vec<Net> = layers
        .iter()
        .map(|&(keep, _)| {
            let mut n = net.clone();
            for (id, l) in n.layers.iter_mut().enumerate() {
                if id != keep {
                    l.proto.quantization_param = None;
                }
            }
            n
        })
        .collect();
    let alone_plans = alone
        .iter()
        .map(|n| Plan::new_int8_isolated(n, batch))
        .collect::<Result<Vec<_>, _>>()?;
    let runs_alone: Vec<bool> = alone_plans
        .iter()
        .zip(&layers)
        .map(|(p, &(id, _))| {
            p.int8
                .as_ref()
                .is_some_and(|q| matches!(q.precision.exec[id], Exec::Int8 { .. }))
        })
        .collect();
    let mut cumulative = vec![Sums::default(); layers.len()];
    let mut isolated = vec![Sums::default(); layers.len()];
    for _ in 0..batches {
        // This batch of the data layers, replayed to every plan.
        let mut inputs = ArrayFeed::default();
        for l in net.layers.iter().filter(|l| l.kind.is_data()) {
            let mut tops: Vec<ArrayD<f32>> = l
                .tops
                .iter()
                .map(|&t| ArrayD::zeros(IxDyn(&fp32.shapes[t])))
                .collect();
            feed.fill(l, &mut tops)
                .map_err(|m| EngineError::layer(l, m))?;
            inputs.arrays.extend(l.tops.iter().copied().zip(tops));
        }
        let reference = capture(&fp32, &mut inputs, &wanted)?;
        let full = capture(&int8, &mut inputs, &wanted)?;
        for (i, &(_, v)) in layers.iter().enumerate() {
            if let (Some(r), Some(t)) = (reference.get(&v), full.get(&v)) {
                cumulative[i].add(r, t);
            }
            if !runs_alone[i] {
                continue;
            }
            let one = capture(&alone_plans[i], &mut inputs, &[v])?;
            if let (Some(r), Some(t)) = (reference.get(&v), one.get(&v)) {
                isolated[i].add(r, t);
            }
        }
    }
    Ok(layers
        .iter()
        .enumerate()
        .map(|(i, &(id, v))| LayerError {
            layer: net.layers[id].name.clone(),
            kind: net.layers[id].type_name.clone(),
            blob: net.values[v].name.clone(),
            isolated_sqnr_db: runs_alone[i].then(|| sqnr_db(isolated[i].signal, isolated[i].noise)),
            cumulative_sqnr_db: sqnr_db(cumulative[i].signal, cumulative[i].noise),
        })
        .collect())
}
