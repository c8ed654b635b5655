//! int8cal: calibrates Caffe models for 8-bit inference as Intel Caffe runs them.
//!
//! Modules follow the flow of `ARCHITECTURE.md`: `caffe` (generated protobuf types) → `model` (reading
//! files, the TEST net, shapes, export) → `data` (records for data layers) → the command-line client `cli`.

pub mod caffe;
pub mod calib;
pub mod cli;
pub mod data;
pub mod engine;
pub mod gui;
pub mod metrics;
pub mod model;
