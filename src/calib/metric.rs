//! A metric blob's value over batches, as `caffe test` reports it: the mean of a scalar top
//! (Accuracy), or, for a DetectionEvaluate top, the mAP of its rows gathered over every batch.

use std::collections::BTreeMap;

use ndarray::ArrayD;

use crate::metrics::ap::{ApVersion, MapAccumulator};
use crate::model::layer::LayerKind;
use crate::model::{Net, ValueId};

/// One metric's running state.
#[derive(Debug, Clone)]
enum Part {
    Mean { sum: f64, batches: usize },
    Map(MapAccumulator),
}

/// What one evaluation measured: each metric's value (the first is tuning's) and, when a metric is
/// a DetectionEvaluate mAP, the 11-point AP of each class of the first one, by label.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measured {
    pub values: Vec<f64>,
    pub ap_per_class: BTreeMap<i32, f64>,
}

/// Several metrics gathered together.
#[derive(Debug, Clone)]
pub struct MetricSums {
    parts: Vec<Part>,
}

/// Whether a value is written by a DetectionEvaluate layer.
pub fn is_detection(net: &Net, v: ValueId) -> bool {
    net.layers
        .get(net.values[v].producer)
        .is_some_and(|l| matches!(l.kind, LayerKind::DetectionEvaluate(_)))
}

impl MetricSums {
    pub fn new(net: &Net, values: &[ValueId]) -> Self {
        let parts = values
            .iter()
            .map(|&v| match is_detection(net, v) {
                true => Part::Map(MapAccumulator::default()),
                false => Part::Mean {
                    sum: 0.0,
                    batches: 0,
                },
            })
            .collect();
        Self { parts }
    }

    /// Adds metric `i`'s output of one batch.
    pub fn add(&mut self, i: usize, data: &ArrayD<f32>) {
        match &mut self.parts[i] {
            Part::Mean { sum, batches } => {
                *sum += f64::from(data.iter().next().copied().unwrap_or(0.0));
                *batches += 1;
            }
            Part::Map(acc) => acc.add(&data.iter().copied().collect::<Vec<f32>>()),
        }
    }

    /// Each metric's value (the mean, or the 11-point mAP, SSD Caffe's default), and each class's AP
    /// of the first detection metric.
    pub fn measured(&self) -> Measured {
        let mut values = Vec::with_capacity(self.parts.len());
        let mut first_classes = None;
        for p in &self.parts {
            values.push(match p {
                Part::Mean { sum, batches } => sum / (*batches).max(1) as f64,
                Part::Map(acc) => {
                    let (map, per_class) = acc.map(ApVersion::ElevenPoint);
                    first_classes.get_or_insert(per_class);
                    map
                }
            });
        }
        Measured {
            values,
            ap_per_class: first_classes.unwrap_or_default(),
        }
    }
}
