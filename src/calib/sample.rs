//! Sampling (spec §2.3): FP32 passes over the net as Intel Caffe compiles it (BatchNorm and Scale
//! folded, ReLU and Eltwise SUM fused, the sum accumulated in its residual's buffer), each sampled blob
//! read by name after the whole pass as Intel's pycaffe sampling reads it, so that a blob whose buffer a
//! fused sum overwrote reports the sum, as it does for Intel.

use std::collections::BTreeMap;

use super::stats::TensorStats;
use crate::engine::error::EngineError;
use crate::engine::session::{Feed, NoObserver};
use crate::engine::{Plan, Session};
use crate::model::Net;

/// The net without its `quantization_param` blocks: what the calibrator samples and measures FP32 on.
pub fn without_quantization(net: &Net) -> Net {
    let mut n = net.clone();
    for l in &mut n.layers {
        l.proto.quantization_param = None;
    }
    n
}

/// Runs `batches` FP32 passes of `plan` (a compiled plan of an unquantized net, `Plan::new_int8`) and
/// gathers the statistics of each named blob. A name the net does not have is an error.
pub fn sample(
    plan: &Plan,
    feed: &mut dyn Feed,
    blobs: &[String],
    batches: usize,
) -> Result<BTreeMap<String, TensorStats>, EngineError> {
    let mut session = Session::new(plan);
    let mut stats: BTreeMap<String, TensorStats> = blobs
        .iter()
        .map(|b| (b.clone(), TensorStats::default()))
        .collect();
    for _ in 0..batches {
        session.forward(feed, &mut NoObserver)?;
        for (name, s) in &mut stats {
            let v = session
                .blob(name)
                .ok_or_else(|| EngineError::Plan(format!("no blob named \"{name}\" to sample")))?;
            match v.as_slice() {
                Some(x) => s.add_batch(x),
                None => s.add_batch(&v.iter().copied().collect::<Vec<f32>>()),
            }
        }
    }
    Ok(stats)
}
