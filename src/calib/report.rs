//! The calibration report (`--report FILE.json`, the app's "Save report…"): settings, the inputs'
//! SHA-256, the metric before and after, every tuning step, and per quantizable layer its precisions,
//! scales, method, SQNR and whether tuning reverted it. Maps are sorted and layers in file order, so
//! two runs diff cleanly.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::config::{CalibConfig, ScaleMethod};
use super::force_u8::ForceU8Files;
use super::measure::with_table;
use super::quirks::Fix;
use super::run::{CalibError, Calibration};
use super::tune::{Step, Stop, Tuned};
use crate::engine::Plan;
use crate::engine::precision::{Exec, Repr};
use crate::engine::quant::IntType;
use crate::model::error::ModelError;
use crate::model::{LayerId, Net};

#[derive(Debug, Clone, Serialize)]
pub struct Tool {
    pub name: &'static str,
    pub version: &'static str,
}

/// Every setting of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    #[serde(flatten)]
    pub cfg: CalibConfig,
    pub max_steps: usize,
    pub time_budget_seconds: Option<f64>,
    pub pinned: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Input {
    pub path: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Inputs {
    pub model: Input,
    pub weights: Input,
}

/// Seconds per stage.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Timings {
    pub sampling: f64,
    /// The FP32 batches past the sampled ones (the first `-s` are both sampled and evaluated).
    pub fp32_eval: f64,
    pub int8_eval: f64,
    pub tuning: f64,
}

/// A storage type as the report names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    U8,
    S8,
    Fp32,
}

/// One quantizable layer.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub precision_in: Precision,
    pub precision_out: Precision,
    pub scale_in: Option<f32>,
    pub scale_out: Option<f32>,
    pub weight_scale_min: Option<f32>,
    pub weight_scale_max: Option<f32>,
    pub per_channel_weights: bool,
    pub method: Option<ScaleMethod>,
    pub sqnr_db_isolated: Option<f64>,
    pub sqnr_db_cumulative: Option<f64>,
    /// FP32 by tuning's choice (or because its input was all zero or NaN).
    pub reverted: bool,
    /// FP32 because the user pinned it.
    pub pinned: bool,
    /// Kept FP32, or given FP32 output, so that Intel Caffe's harmful quirks are not met.
    pub avoids_quirk: bool,
}

/// One class's AP (detection), FP32 and final INT8.
#[derive(Debug, Clone, Serialize)]
pub struct ClassAp {
    pub label: i32,
    pub fp32: f64,
    pub int8: f64,
}

/// One metric blob's FP32 and final INT8 value.
#[derive(Debug, Clone, Serialize)]
pub struct MetricPair {
    pub blob: String,
    pub fp32: f64,
    pub int8: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ForceU8Paths {
    pub prototxt: String,
    pub weights: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: Tool,
    pub settings: Settings,
    pub inputs: Inputs,
    pub output: String,
    /// With `-fu`: the force-u8 prototxt and the new weights.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force_u8: Option<ForceU8Paths>,
    pub metric_blob: String,
    pub fp32_accuracy: f64,
    pub int8_accuracy: f64,
    /// Every metric blob of the net, FP32 and INT8 (the first is the one tuning reads).
    pub metrics: Vec<MetricPair>,
    /// Detection: each class's 11-point AP of the first metric (empty otherwise).
    pub ap_per_class: Vec<ClassAp>,
    /// Changes made so that Intel Caffe's harmful runtime quirks are not met (one line each).
    pub avoided_quirks: Vec<String>,
    pub within_tolerance: bool,
    pub stop: Stop,
    pub steps: Vec<Step>,
    pub layers: Vec<LayerReport>,
    pub timings: Timings,
}

/// What a report is made of.
#[derive(Debug)]
pub struct Parts<'a> {
    pub calibration: &'a Calibration,
    pub net: &'a Net,
    pub layers: &'a [LayerId],
    pub metric_blob: &'a str,
    /// Every metric blob: name, FP32, INT8 (tuning's first).
    pub metrics: Vec<(String, f64, f64)>,
    /// Detection: label, FP32 AP, INT8 AP.
    pub ap_per_class: Vec<(i32, f64, f64)>,
    pub avoided_quirks: &'a [Fix],
    pub fp32: f64,
    pub tuned: &'a Tuned,
    /// Isolated and cumulative SQNR per quantized layer, when measured.
    pub sqnr: Option<&'a BTreeMap<String, (f64, f64)>>,
    pub timings: Timings,
    pub output: &'a Path,
    pub force_u8: Option<&'a ForceU8Files>,
}

/// The lowercase hex SHA-256 of a file, read in chunks.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn input(path: &Path) -> Result<Input, ModelError> {
    Ok(Input {
        path: path.display().to_string(),
        sha256: sha256_file(path)?,
    })
}

fn storage(ty: IntType) -> Precision {
    match ty {
        IntType::U8 => Precision::U8,
        IntType::S8 => Precision::S8,
    }
}

/// Builds the report; the final net is planned once to read each layer's storage types.
pub fn build(p: &Parts) -> Result<Report, CalibError> {
    let c = p.calibration;
    let quantized = with_table(p.net, &p.tuned.table);
    let plan = Plan::new_int8(&quantized, None)?;
    let exec = plan
        .int8
        .as_ref()
        .map(|q| q.precision.exec.as_slice())
        .unwrap_or_default();
    let layers = p
        .layers
        .iter()
        .map(|&id| {
            let l = &p.net.layers[id];
            let q = p.tuned.table.get(&l.name);
            let (precision_in, precision_out) = match exec.get(id) {
                Some(Exec::Int8 { input, output, .. }) => (
                    storage(*input),
                    match output {
                        Repr::Int { ty, .. } => storage(*ty),
                        Repr::F32 => Precision::Fp32,
                    },
                ),
                _ => (Precision::Fp32, Precision::Fp32),
            };
            let weights = q.map(|q| &q.scale_params);
            let pinned = c.pinned.contains(&l.name);
            let avoids_quirk = p.avoided_quirks.iter().any(|f| f.layer() == l.name);
            let input_blob = l.bottoms.first().map(|&b| &p.net.values[b].name);
            LayerReport {
                name: l.name.clone(),
                kind: l.type_name.clone(),
                precision_in,
                precision_out,
                scale_in: q.and_then(|q| q.scale_in.first().copied()),
                scale_out: q
                    .filter(|q| q.bw_layer_out() == 8)
                    .and_then(|q| q.scale_out.first().copied()),
                weight_scale_min: weights.and_then(|w| w.iter().copied().reduce(f32::min)),
                weight_scale_max: weights.and_then(|w| w.iter().copied().reduce(f32::max)),
                per_channel_weights: weights.is_some_and(|w| w.len() > 1),
                method: q.map(|_| {
                    input_blob
                        .and_then(|b| p.tuned.choices.methods.get(b).copied())
                        .unwrap_or(c.cfg.scale_method)
                }),
                sqnr_db_isolated: p.sqnr.and_then(|s| s.get(&l.name)).map(|s| s.0),
                sqnr_db_cumulative: p.sqnr.and_then(|s| s.get(&l.name)).map(|s| s.1),
                reverted: q.is_none() && !pinned && !avoids_quirk,
                pinned,
                avoids_quirk,
            }
        })
        .collect();
    Ok(Report {
        tool: Tool {
            name: env!("CARGO_PKG_NAME"),
            version: env!("CARGO_PKG_VERSION"),
        },
        settings: Settings {
            cfg: c.cfg.clone(),
            max_steps: c.max_steps,
            time_budget_seconds: c.time_budget.map(|d| d.as_secs_f64()),
            pinned: c.pinned.clone(),
        },
        inputs: Inputs {
            model: input(&c.model)?,
            weights: input(&c.weights)?,
        },
        output: p.output.display().to_string(),
        force_u8: p.force_u8.map(|f| ForceU8Paths {
            prototxt: f.prototxt.display().to_string(),
            weights: f.weights.display().to_string(),
        }),
        metric_blob: p.metric_blob.to_string(),
        metrics: p
            .metrics
            .iter()
            .map(|(blob, fp32, int8)| MetricPair {
                blob: blob.clone(),
                fp32: *fp32,
                int8: *int8,
            })
            .collect(),
        ap_per_class: p
            .ap_per_class
            .iter()
            .map(|&(label, fp32, int8)| ClassAp { label, fp32, int8 })
            .collect(),
        avoided_quirks: p.avoided_quirks.iter().map(Fix::describe).collect(),
        fp32_accuracy: p.fp32,
        int8_accuracy: p.tuned.accuracy,
        within_tolerance: p.fp32 - p.tuned.accuracy <= c.cfg.accuracy_loss,
        stop: p.tuned.stop,
        steps: p.tuned.steps.clone(),
        layers,
        timings: p.timings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_a_known_text() {
        let dir = std::env::temp_dir().join(format!("int8cal_sha_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("abc.txt");
        std::fs::write(&f, b"abc").unwrap();
        assert_eq!(
            sha256_file(&f).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
