//! Sampling (spec §2.3): FP32 passes over the net as Intel Caffe compiles it (BatchNorm and Scale
//! folded, ReLU and Eltwise SUM fused, the sum accumulated in its residual's buffer), each sampled blob
//! read by name after the whole pass as Intel's pycaffe sampling reads it, so that a blob whose buffer a
//! fused sum overwrote reports the sum, as it does for Intel.

use std::collections::BTreeMap;

use rayon::prelude::*;

use super::metric::{Measured, MetricSums};
use super::stats::{Gather, TensorStats};
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

/// What a sampling pass gathers: the statistics of `blobs` over the first `batches` passes (`wants`:
/// beyond the maxima), and the means of scalar metric values over its first `iterations` (so that the
/// FP32 evaluation and the sampling are one pass).
#[derive(Debug, Clone)]
pub struct Sampling<'a> {
    pub blobs: &'a [String],
    pub batches: usize,
    pub wants: Gather,
    pub metrics: &'a [usize],
    pub iterations: usize,
    /// Only the last of the `batches` passes is recorded (`-ss`).
    pub last_only: bool,
}

/// Runs FP32 passes of `plan` (a compiled plan of an unquantized net, `Plan::new_int8`): the
/// statistics of each named blob and what the metrics measured. A name the net does not have is an
/// error. `after_pass` sees each finished pass's number and the total, and stops the run with an
/// error (e.g. `Cancelled`).
pub fn sample(
    plan: &Plan,
    feed: &mut dyn Feed,
    s: &Sampling,
    after_pass: &mut dyn FnMut(usize, usize) -> Result<(), EngineError>,
) -> Result<(BTreeMap<String, TensorStats>, Measured), EngineError> {
    let mut session = Session::new(plan);
    let mut stats: BTreeMap<String, TensorStats> = s
        .blobs
        .iter()
        .map(|b| (b.clone(), TensorStats::gathering(s.wants)))
        .collect();
    if let Some(name) = s.blobs.iter().find(|b| !has_blob(plan, b)) {
        return Err(EngineError::Plan(format!(
            "no blob named \"{name}\" to sample"
        )));
    }
    let iterations = if s.metrics.is_empty() {
        0
    } else {
        s.iterations
    };
    let mut sums = MetricSums::new(plan.net, s.metrics);
    let passes = s.batches.max(iterations);
    for pass in 0..passes {
        session.forward(feed, &mut NoObserver)?;
        if pass < iterations {
            for (i, &v) in s.metrics.iter().enumerate() {
                sums.add(i, session.value(v));
            }
        }
        if pass >= s.batches || (s.last_only && pass + 1 < s.batches) {
            after_pass(pass + 1, passes)?;
            continue;
        }
        // One tensor per task: the statistics of different blobs are independent.
        let session = &session;
        stats.par_iter_mut().for_each(|(name, st)| {
            if let Some(v) = session.blob(name) {
                match v.as_slice() {
                    Some(x) => st.add_batch(x),
                    None => st.add_batch(&v.iter().copied().collect::<Vec<f32>>()),
                }
            }
        });
        after_pass(pass + 1, passes)?;
    }
    Ok((stats, sums.measured()))
}

fn has_blob(plan: &Plan, name: &str) -> bool {
    plan.net.values.iter().any(|v| v.name == name)
}
