//! What a running calibration tells its caller (the app's progress view, the command line's progress
//! bar), in this order: `Stage(Sampling)` with `Progress` per batch (the FP32 evaluation rides on the
//! same pass) and `Fp32Metric`, one `LayerStats` per sampled blob, one `Scale` per quantized layer, `Stage(Int8Eval)`
//! with `Progress`, then per tuning step `Stage(Tuning)`, `Progress` and `Step`; `Warning`s whenever
//! they arise; `Finished` last, unless the run failed or was cancelled.

use serde::Serialize;

use super::config::ScaleMethod;
use super::tune::Step;

/// A stage of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The FP32 pass: statistics over the first `-s` batches and the FP32 metric over `-i`.
    Sampling,
    /// The INT8 metric of the calibrated configuration.
    Int8Eval,
    /// A tuning step's INT8 metric (step number from 1).
    Tuning(usize),
    /// The app comparing FP32 and INT8 predictions image by image.
    Compare,
}

/// One blob's statistics: its histogram (when gathered) and every method's threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlobStats {
    pub blob: String,
    /// Counts, lower edge and bin width of the 2048-bin histogram (KL's range).
    pub histogram: Option<(Vec<f64>, f64, f64)>,
    pub min: f32,
    pub max: f32,
    /// Each method's threshold M (scale 255/M or 127/M), for the blob as it is stored.
    pub thresholds: Vec<(ScaleMethod, f32)>,
}

/// A quantized layer's scales as chosen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerScale {
    pub layer: String,
    pub scale_in: f32,
    /// None: the layer outputs FP32.
    pub scale_out: Option<f32>,
    pub method: ScaleMethod,
}

/// A message from a running calibration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Event {
    Stage(Stage),
    /// The FP32 metric, once the FP32 pass is over.
    Fp32Metric(f64),
    /// Batches done of the current stage.
    Progress {
        done: usize,
        total: usize,
    },
    LayerStats(Box<BlobStats>),
    Scale(LayerScale),
    Step(Step),
    Warning(String),
    /// FP32 and final INT8 metric.
    Finished {
        fp32: f64,
        int8: f64,
    },
}
