//! Steering around Intel Caffe's harmful runtime quirks (ours: Intel's tool walks into them). The
//! engine reproduces both, so the accuracy measured here is the deployment's:
//! - a BatchNorm left unfolded (after an Eltwise) whose input holds INT8 codes normalises the raw
//!   codes (`Exec::OnCodes`). Fixed by having the INT8 producers of its input (the sum-fused
//!   convolution and its residual's producer) output FP32, so the BatchNorm reads real values;
//! - an INT8 convolution with FP32 output that absorbed a SUM reads an FP32 residual made by an FP32
//!   convolution in the wrong layout (`ResidualRead::BlockedAsNhwc`). Fixed by running that
//!   convolution in FP32.

use crate::engine::compile::{Compiled, Role};
use crate::engine::int8_plan::{ResidualRead, residual_read};
use crate::engine::precision::{Exec, Precision, Repr};
use crate::model::{LayerId, Net, Shape, ValueId};

use super::measure::with_table;
use super::rules::Choices;
use super::tune::Table;

/// One change that avoids a quirk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fix {
    /// The layer stays quantized but outputs FP32 (`bw_layer_out: 32`).
    OutputFp32 { layer: String, reason: String },
    /// The layer runs FP32.
    KeepFp32 { layer: String, reason: String },
}

impl Fix {
    /// Records the fix in `choices`; false when it was already there.
    pub fn apply(&self, choices: &mut Choices) -> bool {
        match self {
            Self::OutputFp32 { layer, .. } => choices.fp32_out.insert(layer.clone()),
            Self::KeepFp32 { layer, .. } => choices.fp32.insert(layer.clone()),
        }
    }

    /// The layer it changes.
    pub fn layer(&self) -> &str {
        match self {
            Self::OutputFp32 { layer, .. } | Self::KeepFp32 { layer, .. } => layer,
        }
    }

    /// A line for the log and the report.
    pub fn describe(&self) -> String {
        match self {
            Self::OutputFp32 { layer, reason } => {
                format!("layer \"{layer}\": output kept FP32, because {reason}")
            }
            Self::KeepFp32 { layer, reason } => {
                format!("layer \"{layer}\": kept FP32, because {reason}")
            }
        }
    }
}

/// The fixes the quantized table needs, in net order.
pub fn fixes(net: &Net, table: &Table) -> Vec<Fix> {
    let q = with_table(net, table);
    let compiled = Compiled::new(&q);
    let Ok(precision) = Precision::new(&q, &compiled) else {
        return Vec::new();
    };
    let shapes: Vec<Shape> = q
        .values
        .iter()
        .map(|v| v.shape.clone().unwrap_or_default())
        .collect();
    let mut out = Vec::new();
    for (id, l) in q.layers.iter().enumerate() {
        match &precision.exec[id] {
            Exec::OnCodes => {
                let reason = format!(
                    "Intel Caffe would run BatchNorm \"{}\" on the raw int8 codes of its input",
                    l.name
                );
                let Some(&input) = l.bottoms.first() else {
                    continue;
                };
                let producer = int8_producer(&q, &compiled, &precision, input);
                let residual = producer
                    .and_then(|p| compiled.fusion(p)?.sum.as_ref())
                    .and_then(|s| int8_producer(&q, &compiled, &precision, s.residual));
                for p in [producer, residual].into_iter().flatten() {
                    out.push(Fix::OutputFp32 {
                        layer: q.layers[p].name.clone(),
                        reason: reason.clone(),
                    });
                }
            }
            Exec::Int8 {
                output: Repr::F32, ..
            } => {
                let Some(sum) = compiled.fusion(id).and_then(|f| f.sum.as_ref()) else {
                    continue;
                };
                let read = residual_read(&q, &compiled, &precision, &shapes, sum.residual);
                if read == ResidualRead::BlockedAsNhwc {
                    out.push(Fix::KeepFp32 {
                        layer: l.name.clone(),
                        reason: format!(
                            "Intel Caffe's INT8 kernel would read its FP32 residual \"{}\" in the \
                             wrong memory layout",
                            q.values[sum.residual].name
                        ),
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// Applies fixes to `choices` until the table built from them (`table_of`) needs none, a few rounds
/// at most (a fix can expose another); `locked` (a `-fu` first convolution) is never changed.
/// Returns the fixes applied.
pub fn steer(
    net: &Net,
    choices: &mut Choices,
    locked: Option<&str>,
    mut table_of: impl FnMut(&Choices) -> Result<Table, String>,
) -> Result<Vec<Fix>, String> {
    const ROUNDS: usize = 4;
    let mut applied = Vec::new();
    for _ in 0..ROUNDS {
        let table = table_of(choices)?;
        let new: Vec<Fix> = fixes(net, &table)
            .into_iter()
            .filter(|f| Some(f.layer()) != locked)
            .filter(|f| f.apply(choices))
            .collect();
        if new.is_empty() {
            break;
        }
        applied.extend(new);
    }
    Ok(applied)
}

/// The INT8 layer whose codes a value holds, through layers that pass codes on.
fn int8_producer(
    net: &Net,
    compiled: &Compiled,
    precision: &Precision,
    mut v: ValueId,
) -> Option<LayerId> {
    loop {
        let mut p = net.values[v].producer;
        if let Role::Absorbed(into) = compiled.roles[p] {
            p = into;
        }
        match precision.exec[p] {
            Exec::Int8 { .. } => return Some(p),
            Exec::PassInt8 => v = *net.layers[p].bottoms.first()?,
            _ => return None,
        }
    }
}
