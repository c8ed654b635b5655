//! Calibration. So far: the settings a calibration runs with (`config`) and the choice of the metric blob
//! (`metric_blob`), shared by the app's settings panel and the command line; the statistics of a
//! tensor over the sampled batches (`stats`, gathered by `sample`), the scale methods' thresholds
//! (`methods`) and Intel's rules from them to `quantization_param` blocks (`rules`).

pub mod config;
pub mod methods;
pub mod metric_blob;
pub mod rules;
pub mod sample;
pub mod stats;

pub use config::{CalibConfig, ConfigError, ScaleMethod, Setting, TuningStrategy, WeightScaling};
