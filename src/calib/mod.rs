//! Calibration. So far: the settings a calibration runs with (`config`) and the choice of the metric blob
//! (`metric_blob`), shared by the app's settings panel and the command line.

pub mod config;
pub mod metric_blob;

pub use config::{CalibConfig, ConfigError, ScaleMethod, Setting, TuningStrategy, WeightScaling};
