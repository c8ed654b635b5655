//! The central tabs that show a calibration: its progress (`progress`), the selected layer's
//! histogram with every method's threshold (`histograms`), FP32 against INT8 with the layer table and
//! pinning (`compare`), and the colours the graph takes after a run (`colors`).

pub mod colors;
pub mod compare;
pub mod histograms;
pub mod progress;
