//! Calibration: the settings (`config`) and metric blob (`metric_blob`) shared by the app and the
//! command line; the FP32 pass (`sample`) gathering each tensor's statistics (`stats`) over batches it
//! keeps in memory (`batches`); the scale methods (`methods`) and Intel's rules (`rules`) from them to
//! `quantization_param` blocks, steered around Intel Caffe's harmful runtime quirks (`quirks`); the
//! tuning loop (`tune`) on real measurements (`measure`); the whole
//! run with its events and cancel flag (`run`, `events`) and its report (`report`).

pub mod batches;
pub mod boxes;
pub mod config;
pub mod disagree;
pub mod events;
pub mod force_u8;
pub mod measure;
pub mod methods;
pub mod metric;
pub mod metric_blob;
pub mod quirks;
pub mod report;
pub mod rules;
pub mod run;
pub mod sample;
pub mod stats;
pub mod tune;

pub use config::{CalibConfig, ConfigError, ScaleMethod, Setting, TuningStrategy, WeightScaling};
