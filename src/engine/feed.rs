//! Where the tops of Input and data layers come from: arrays given by the caller (a `.npy` input), or a
//! data layer's records read ahead on a prefetch thread.

use std::collections::HashMap;
use std::path::Path;

use ndarray::ArrayD;

use super::plan::Plan;
use super::session::Feed;
use crate::data::batches::Prefetcher;
use crate::model::layer::LayerKind;
use crate::model::{Layer, ValueId};

/// Fixed arrays for the tops of Input layers (by value), e.g. from `--input X.npy`.
#[derive(Debug, Default)]
pub struct ArrayFeed {
    pub arrays: HashMap<ValueId, ArrayD<f32>>,
}

impl Feed for ArrayFeed {
    fn fill(&mut self, layer: &Layer, tops: &mut [ArrayD<f32>]) -> Result<(), String> {
        for (i, (&t, top)) in layer.tops.iter().zip(tops.iter_mut()).enumerate() {
            let a = self
                .arrays
                .get(&t)
                .ok_or_else(|| format!("no input was given for its top (value {t})"))?;
            // A data layer's label top follows the data (AnnotatedData's boxes): any shape.
            if i > 0 && matches!(layer.kind, LayerKind::Data { .. }) {
                top.clone_from(a);
                continue;
            }
            if a.shape() != top.shape() {
                return Err(format!(
                    "the input has shape {:?}, the net expects {:?}",
                    a.shape(),
                    top.shape()
                ));
            }
            // One copy of the whole buffer when both are contiguous (`assign` goes element by element).
            match (top.as_slice_mut(), a.as_slice()) {
                (Some(t), Some(s)) => t.copy_from_slice(s),
                _ => top.assign(a),
            }
        }
        Ok(())
    }
}

/// Batches from the net's data layers, read ahead; Input layers are not expected.
#[derive(Debug)]
pub struct DataFeed {
    readers: HashMap<String, Prefetcher>,
}

impl DataFeed {
    /// Starts a reader for every data layer of the plan. `base` is the prototxt's folder.
    pub fn start(plan: &Plan, base: &Path) -> Result<Self, String> {
        let mut readers = HashMap::new();
        for l in &plan.net.layers {
            if let LayerKind::Data { .. } = l.kind {
                let shape = &plan.shapes[l.tops[0]];
                readers.insert(l.name.clone(), Prefetcher::start(l, shape, base)?);
            }
        }
        Ok(Self { readers })
    }
}

impl Feed for DataFeed {
    fn fill(&mut self, layer: &Layer, tops: &mut [ArrayD<f32>]) -> Result<(), String> {
        let reader = self
            .readers
            .get(&layer.name)
            .ok_or("an Input layer needs --input")?;
        let batch = reader.next()?;
        let [data, rest @ ..] = tops else {
            return Ok(());
        };
        if data.shape() != batch.data.shape() {
            return Err(format!(
                "the batch is {:?}, the plan expects {:?}",
                batch.data.shape(),
                data.shape()
            ));
        }
        data.assign(&batch.data.into_dyn());
        if let (Some(labels), Some(boxes)) = (rest.first_mut(), &batch.boxes) {
            // SSD's label top: every box of the batch, or one row of −1 when there is none.
            let rows: Vec<f32> = match boxes.is_empty() {
                true => vec![-1.0; 8],
                false => boxes.iter().flatten().copied().collect(),
            };
            let n = rows.len() / 8;
            *labels = ArrayD::from_shape_vec(ndarray::IxDyn(&[1, 1, n, 8]), rows)
                .map_err(|e| e.to_string())?;
            return Ok(());
        }
        if let Some(labels) = rest.first_mut() {
            if labels.len() != batch.labels.len() {
                return Err(format!(
                    "{} labels for a label top of {:?}",
                    batch.labels.len(),
                    labels.shape()
                ));
            }
            labels
                .as_slice_mut()
                .ok_or("non-contiguous labels")?
                .copy_from_slice(batch.labels.as_slice().unwrap_or(&[]));
        }
        Ok(())
    }
}
