//! The settings of a calibration: every parameter of Intel's calibrator (iterations, metric blob,
//! tolerance, detection, first-conv force-u8) and of its later versions (sampling iterations, weight
//! scaling, scale method, first conv, INT8 InnerProduct, concat rules), plus ours (tuning strategy,
//! threads). Validation names the setting and the reason, so a UI can show it beside the field.

use serde::{Deserialize, Serialize};

/// How weights are scaled (`-c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum WeightScaling {
    /// One scale per weight tensor (`single`, Intel's default).
    #[default]
    Single,
    /// One scale per output channel (`multiple`).
    Multiple,
}

/// How an activation's threshold is chosen from its statistics (`-a`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ScaleMethod {
    /// The maximum |x| seen (`DIRECT`).
    #[default]
    Direct,
    /// The threshold minimising KL divergence over the histogram (`KL`).
    Kl,
    /// A high percentile of |x| per batch, averaged (`MAXP`).
    Percentile,
    /// A moving average of the per-batch maxima (`MA`).
    MovingAverage,
    /// The threshold minimising quantization mean squared error (ours).
    Mse,
}

/// How accuracy loss above the tolerance is repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum TuningStrategy {
    /// Change methods or revert layers ranked by their measured damage (ours).
    #[default]
    Ranked,
    /// Revert convolutions in file order, as Intel 1.1.0 did.
    Positional,
    /// Measure once, as Intel 1.1.2+ does.
    None,
}

impl WeightScaling {
    pub const ALL: [Self; 2] = [Self::Single, Self::Multiple];

    pub fn label(self) -> &'static str {
        match self {
            Self::Single => "single (per tensor)",
            Self::Multiple => "multiple (per channel)",
        }
    }
}

impl ScaleMethod {
    pub const ALL: [Self; 5] = [
        Self::Direct,
        Self::Kl,
        Self::Percentile,
        Self::MovingAverage,
        Self::Mse,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Direct => "direct (max)",
            Self::Kl => "KL divergence",
            Self::Percentile => "percentile",
            Self::MovingAverage => "moving average",
            Self::Mse => "MSE",
        }
    }
}

impl TuningStrategy {
    pub const ALL: [Self; 3] = [Self::Ranked, Self::Positional, Self::None];

    pub fn label(self) -> &'static str {
        match self {
            Self::Ranked => "ranked",
            Self::Positional => "positional (Intel 1.1.0)",
            Self::None => "none (measure once)",
        }
    }
}

/// Names of the settings, for errors and for the UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Setting {
    Iterations,
    BlobName,
    AccuracyLoss,
    SamplingIterations,
    Threads,
}

/// A refused value: which setting and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting:?}: {reason}")]
pub struct ConfigError {
    pub setting: Setting,
    pub reason: String,
}

/// Everything a calibration run is configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CalibConfig {
    /// Test iterations (batches) of each accuracy measurement (`-i`).
    pub iterations: usize,
    /// The top blob holding the metric (`-n`); empty: picked from the net.
    pub blob_name: String,
    /// Tolerated accuracy drop, as a fraction (`-l`).
    pub accuracy_loss: f64,
    /// Detection mode: the metric is DetectionEvaluate's mAP (`-d 1`).
    pub detection: bool,
    /// Feed the first convolution u8 input prepared by the data layer (`-fu`).
    pub first_conv_force_u8: bool,
    /// With `-fu`: keep the first convolution's weight scales instead of halving them (`-clx`).
    pub clx: bool,
    /// Batches sampled for statistics (`-s`).
    pub sampling_iterations: usize,
    pub weight_scaling: WeightScaling,
    pub scale_method: ScaleMethod,
    /// Quantize the first convolution too (`-1st`).
    pub quantize_first_conv: bool,
    /// Run InnerProduct in INT8 (`-fc`).
    pub int8_inner_product: bool,
    /// Give the producers of a Concat one output scale (`-f`).
    pub unify_concat_scales: bool,
    /// Producers of Concat inputs output FP32 (`-t`).
    pub concat_fp32: bool,
    /// Every quantized layer's output scale is 255/M, ReLU or not (`-u`).
    pub unsigned_outputs: bool,
    /// Statistics from the last of the `-s` batches only (`-ss`).
    pub sampling_single: bool,
    /// Skip the FP32-output rule of §2.10 (`-uff`).
    pub disable_force_fp32: bool,
    /// Skip the scale unification around AVE pooling of §2.11 (`-ucac`).
    pub disable_cac_unify: bool,
    pub tuning: TuningStrategy,
    /// Worker threads; 0 uses every core.
    pub threads: usize,
}

impl Default for CalibConfig {
    fn default() -> Self {
        Self {
            iterations: 10,
            blob_name: String::new(),
            accuracy_loss: 0.01,
            detection: false,
            first_conv_force_u8: false,
            clx: false,
            sampling_iterations: 10,
            weight_scaling: WeightScaling::Single,
            scale_method: ScaleMethod::Direct,
            quantize_first_conv: false,
            int8_inner_product: false,
            unify_concat_scales: false,
            concat_fp32: false,
            unsigned_outputs: false,
            sampling_single: false,
            disable_force_fp32: false,
            disable_cac_unify: false,
            tuning: TuningStrategy::Ranked,
            threads: 0,
        }
    }
}

impl CalibConfig {
    /// Checks every value; the first refused one is returned.
    pub fn validate(&self, metric_blobs: &[String]) -> Result<(), ConfigError> {
        check_iterations(self.iterations, Setting::Iterations)?;
        check_iterations(self.sampling_iterations, Setting::SamplingIterations)?;
        check_accuracy_loss(self.accuracy_loss)?;
        check_threads(self.threads)?;
        if !self.blob_name.is_empty()
            && !metric_blobs.is_empty()
            && !metric_blobs.contains(&self.blob_name)
        {
            return Err(ConfigError {
                setting: Setting::BlobName,
                reason: format!(
                    "'{}' is not a metric top of this net (one of {})",
                    self.blob_name,
                    metric_blobs.join(", ")
                ),
            });
        }
        Ok(())
    }
}

/// Iteration counts must be at least 1 (Intel's tool exits on 0).
pub fn check_iterations(n: usize, setting: Setting) -> Result<(), ConfigError> {
    if n == 0 {
        return Err(ConfigError {
            setting,
            reason: "must be at least 1".into(),
        });
    }
    if n > 1_000_000 {
        return Err(ConfigError {
            setting,
            reason: "more than a million batches is surely a typo".into(),
        });
    }
    Ok(())
}

/// The tolerance is a fraction in [0, 1): 0.01 means one percentage point.
pub fn check_accuracy_loss(l: f64) -> Result<(), ConfigError> {
    if !(0.0..1.0).contains(&l) {
        return Err(ConfigError {
            setting: Setting::AccuracyLoss,
            reason: format!("{l} is outside [0, 1): write 0.01 for one percentage point"),
        });
    }
    Ok(())
}

pub fn check_threads(n: usize) -> Result<(), ConfigError> {
    if n > 1024 {
        return Err(ConfigError {
            setting: Setting::Threads,
            reason: format!("{n} threads is more than any machine has"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_intels_and_validate() {
        let c = CalibConfig::default();
        assert_eq!(
            (c.iterations, c.sampling_iterations, c.accuracy_loss),
            (10, 10, 0.01)
        );
        assert!(c.validate(&[]).is_ok());
    }

    #[test]
    fn refused_values_name_the_setting() {
        let c = CalibConfig {
            accuracy_loss: 1.5,
            ..Default::default()
        };
        assert_eq!(c.validate(&[]).unwrap_err().setting, Setting::AccuracyLoss);
        let c = CalibConfig {
            iterations: 0,
            ..Default::default()
        };
        assert_eq!(c.validate(&[]).unwrap_err().setting, Setting::Iterations);
        let c = CalibConfig {
            blob_name: "acc".into(),
            ..Default::default()
        };
        let e = c.validate(&["accuracy".into()]).unwrap_err();
        assert!(e.reason.contains("accuracy"));
    }
}
