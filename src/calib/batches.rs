//! The calibration's batches kept in memory: the FP32 pass records what the data layers produced so
//! that every later INT8 measurement (tuning runs dozens) replays the same images without reading and
//! decoding them again. Nets whose `-i` batches would not fit the memory budget are read again instead.

use std::collections::HashMap;

use ndarray::ArrayD;

use crate::engine::Plan;
use crate::engine::session::Feed;
use crate::model::Layer;

/// The most memory the recorded batches may take (bytes).
pub const BUDGET: usize = 2 << 30;

/// The bytes `batches` passes of the plan's data layers take.
pub fn bytes_of(plan: &Plan, batches: usize) -> usize {
    let per_batch: usize = plan
        .net
        .layers
        .iter()
        .filter(|l| l.kind.is_data())
        .flat_map(|l| &l.tops)
        .map(|&t| plan.shapes[t].iter().product::<usize>() * 4)
        .sum();
    per_batch.saturating_mul(batches)
}

/// Each data layer's tops, batch after batch, by layer name.
#[derive(Debug, Default, Clone)]
pub struct Recorded {
    batches: HashMap<String, Vec<Vec<ArrayD<f32>>>>,
}

impl Recorded {
    /// How many whole batches every data layer has.
    pub fn len(&self) -> usize {
        self.batches.values().map(Vec::len).min().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tops of one data layer's batch `i`.
    pub fn batch(&self, layer: &str, i: usize) -> Option<&[ArrayD<f32>]> {
        self.batches.get(layer)?.get(i).map(Vec::as_slice)
    }

    /// A feed replaying the batches from the first.
    pub fn replay(&self) -> Replay<'_> {
        Replay {
            recorded: self,
            next: HashMap::new(),
        }
    }
}

/// Passes an inner feed's batches through, keeping a copy of the first `keep` of each data layer.
pub struct Recorder<'a> {
    pub inner: &'a mut dyn Feed,
    pub keep: usize,
    pub recorded: Recorded,
}

impl std::fmt::Debug for Recorder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("keep", &self.keep)
            .finish_non_exhaustive()
    }
}

impl Feed for Recorder<'_> {
    fn fill(&mut self, layer: &Layer, tops: &mut [ArrayD<f32>]) -> Result<(), String> {
        self.inner.fill(layer, tops)?;
        let kept = self.recorded.batches.entry(layer.name.clone()).or_default();
        if kept.len() < self.keep {
            kept.push(tops.to_vec());
        }
        Ok(())
    }
}

/// Replays recorded batches in order, from the first again after the last.
#[derive(Debug)]
pub struct Replay<'a> {
    recorded: &'a Recorded,
    next: HashMap<String, usize>,
}

impl Feed for Replay<'_> {
    fn fill(&mut self, layer: &Layer, tops: &mut [ArrayD<f32>]) -> Result<(), String> {
        let batches = self
            .recorded
            .batches
            .get(&layer.name)
            .filter(|b| !b.is_empty())
            .ok_or_else(|| "no recorded batch for this data layer".to_string())?;
        let at = self.next.entry(layer.name.clone()).or_default();
        let batch = &batches[*at % batches.len()];
        *at += 1;
        for (top, kept) in tops.iter_mut().zip(batch) {
            if top.shape() == kept.shape() {
                top.assign(kept);
            } else {
                // A top whose shape follows the data (AnnotatedData's boxes).
                top.clone_from(kept);
            }
        }
        Ok(())
    }
}
