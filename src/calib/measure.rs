//! The tuning loop's measurements on a real net: quantization tables from the sampled statistics, the
//! INT8 metric over the `-i` batches (replayed from memory when they were recorded), and a layer's
//! isolated SQNR on a probe of the first calibration images against FP32 outputs captured once.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use ndarray::{ArrayD, Axis, IxDyn, Slice};

use super::batches::Recorded;
use super::config::CalibConfig;
use super::events::{Event, Stage};
use super::metric::{Measured, MetricSums};
use super::rules::{Choices, quantization_table};
use super::stats::TensorStats;
use super::tune::{Measure, Table};
use crate::caffe::QuantizationParameter;
use crate::engine::compile::Compiled;
use crate::engine::error::EngineError;
use crate::engine::feed::{ArrayFeed, DataFeed};
use crate::engine::session::{Feed, NoObserver};
use crate::engine::sqnr::{Sums, capture};
use crate::engine::{Plan, Session};
use crate::model::{LayerId, Net, ValueId};

/// Images of the SQNR probe (fewer when the batch is smaller).
pub const PROBE_IMAGES: usize = 16;

/// The net with this table's blocks (and no others).
pub fn with_table(net: &Net, table: &Table) -> Net {
    let mut n = net.clone();
    for l in &mut n.layers {
        l.proto.quantization_param = table.get(&l.name).cloned();
    }
    n
}

/// The FP32 reference of the probe: its inputs and every quantizable layer's output.
#[derive(Debug)]
struct Probe {
    images: usize,
    inputs: HashMap<ValueId, ArrayD<f32>>,
    /// Each quantizable layer's compared value and its FP32 data.
    outputs: BTreeMap<String, (ValueId, ArrayD<f32>)>,
}

/// Measurements of one calibration.
pub struct NetMeasure<'a> {
    /// The net without quantization blocks.
    pub net: &'a Net,
    pub stats: &'a BTreeMap<String, TensorStats>,
    pub cfg: &'a CalibConfig,
    /// The metric's value and the prototxt's folder (data sources are relative to it).
    /// The metric values: the first is the one tuning reads, the others are reported.
    pub metrics: Vec<ValueId>,
    pub base: PathBuf,
    pub recorded: &'a Recorded,
    pub cancel: &'a AtomicBool,
    pub events: &'a mut dyn FnMut(Event),
    probe: Option<Probe>,
    /// What each table's evaluation measured, by table (its Debug text), for the report.
    measured: BTreeMap<String, Measured>,
    /// INT8 evaluations run so far: the first is the calibrated configuration's, the others are
    /// tuning steps.
    runs: usize,
}

impl std::fmt::Debug for NetMeasure<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetMeasure")
            .field("metrics", &self.metrics)
            .field("recorded", &self.recorded.len())
            .finish_non_exhaustive()
    }
}

impl<'a> NetMeasure<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        net: &'a Net,
        stats: &'a BTreeMap<String, TensorStats>,
        cfg: &'a CalibConfig,
        metrics: Vec<ValueId>,
        base: PathBuf,
        recorded: &'a Recorded,
        cancel: &'a AtomicBool,
        events: &'a mut dyn FnMut(Event),
    ) -> Self {
        Self {
            net,
            stats,
            cfg,
            metrics,
            base,
            recorded,
            cancel,
            events,
            probe: None,
            measured: BTreeMap::new(),
            runs: 0,
        }
    }

    /// What the evaluation of `table` measured (None when it was not measured).
    pub fn measured(&self, table: &Table) -> Option<&Measured> {
        self.measured.get(&format!("{table:?}"))
    }

    /// Evaluates the INT8 net of `table` over `-i` batches and keeps what it measured.
    pub fn evaluate(&mut self, table: &Table) -> Result<Measured, String> {
        let net = with_table(self.net, table);
        let all = self.metrics_of(&net).map_err(|e| e.to_string())?;
        self.measured.insert(format!("{table:?}"), all.clone());
        Ok(all)
    }

    /// The INT8 metrics of a net over `-i` batches, with progress and cancellation per batch.
    fn metrics_of(&mut self, net: &Net) -> Result<Measured, EngineError> {
        if self.metrics.is_empty() {
            return Err(EngineError::Input("no metric blob to measure".into()));
        }
        (self.events)(Event::Stage(match self.runs {
            0 => Stage::Int8Eval,
            k => Stage::Tuning(k),
        }));
        self.runs += 1;
        let plan = Plan::new_int8(net, None)?;
        let mut replay = self.recorded.replay();
        let mut read;
        let iterations = self.cfg.iterations;
        let feed: &mut dyn Feed = if self.recorded.len() >= iterations {
            &mut replay
        } else {
            read = DataFeed::start(&plan, &self.base).map_err(EngineError::Input)?;
            &mut read
        };
        let mut session = Session::new(&plan);
        session.set_dequantized_views(false);
        let mut sums = MetricSums::new(net, &self.metrics);
        for done in 1..=iterations {
            session.forward(feed, &mut NoObserver)?;
            for (i, &v) in self.metrics.iter().enumerate() {
                sums.add(i, session.value(v));
            }
            if self.cancel.load(Ordering::Relaxed) {
                return Err(EngineError::Cancelled);
            }
            (self.events)(Event::Progress {
                done,
                total: iterations,
            });
        }
        Ok(sums.measured())
    }

    /// The probe, made on first use: the first recorded images (or a batch read afresh) and the
    /// FP32 outputs of every quantizable layer.
    fn probe(&mut self) -> Result<&Probe, EngineError> {
        if self.probe.is_none() {
            self.probe = Some(self.make_probe()?);
        }
        self.probe
            .as_ref()
            .ok_or_else(|| EngineError::Plan("no probe".into()))
    }

    fn make_probe(&self) -> Result<Probe, EngineError> {
        let full = Plan::new(self.net, None)?;
        let data: Vec<_> = self
            .net
            .layers
            .iter()
            .filter(|l| l.kind.is_data())
            .collect();
        let batch = data
            .first()
            .and_then(|l| full.shapes[l.tops[0]].first().copied())
            .unwrap_or(1);
        let images = batch.min(PROBE_IMAGES);
        // One whole batch of every data layer, cut to the probe's images.
        let mut replay = self.recorded.replay();
        let mut read;
        let feed: &mut dyn Feed = if self.recorded.is_empty() {
            read = DataFeed::start(&full, &self.base).map_err(EngineError::Input)?;
            &mut read
        } else {
            &mut replay
        };
        let mut inputs = HashMap::new();
        for l in data {
            let mut tops: Vec<ArrayD<f32>> = l
                .tops
                .iter()
                .map(|&t| ArrayD::zeros(IxDyn(&full.shapes[t])))
                .collect();
            feed.fill(l, &mut tops)
                .map_err(|m| EngineError::layer(l, m))?;
            for (&t, a) in l.tops.iter().zip(tops) {
                let cut = a.slice_axis(Axis(0), Slice::from(0..images)).to_owned();
                inputs.insert(t, cut);
            }
        }
        let compiled = Compiled::new(self.net);
        let wanted: BTreeMap<String, ValueId> =
            super::rules::quantizable(self.net, &all_layers(self.cfg))
                .into_iter()
                .filter_map(|id| {
                    Some((
                        self.net.layers[id].name.clone(),
                        output_of(self.net, &compiled, id)?,
                    ))
                })
                .collect();
        let values: Vec<ValueId> = wanted.values().copied().collect();
        let plan = Plan::new_unfused(self.net, Some(images))?;
        let mut reference = capture(
            &plan,
            &mut ArrayFeed {
                arrays: inputs.clone(),
            },
            &values,
        )?;
        let outputs = wanted
            .into_iter()
            .filter_map(|(name, v)| Some((name, (v, reference.remove(&v)?))))
            .collect();
        Ok(Probe {
            images,
            inputs,
            outputs,
        })
    }
}

/// The configuration with every quantizable type and the first layer included (the probe covers
/// any layer tuning or the user may touch).
fn all_layers(cfg: &CalibConfig) -> CalibConfig {
    CalibConfig {
        quantize_first_conv: true,
        ..cfg.clone()
    }
}

/// The value a compiled layer's output stands for (the Eltwise's top after a sum fusion).
fn output_of(net: &Net, compiled: &Compiled, id: LayerId) -> Option<ValueId> {
    compiled
        .fusion(id)
        .map(|f| f.output)
        .or_else(|| net.layers[id].tops.first().copied())
}

impl NetMeasure<'_> {
    /// Each quantized layer's output SQNR with the whole table in INT8, on the probe.
    pub fn cumulative_sqnr(&mut self, table: &Table) -> Result<BTreeMap<String, f64>, String> {
        let net = with_table(self.net, table);
        let probe = self.probe().map_err(|e| e.to_string())?;
        let plan = Plan::new_int8(&net, Some(probe.images)).map_err(|e| e.to_string())?;
        let compared: Vec<(&String, &(ValueId, ArrayD<f32>))> = probe
            .outputs
            .iter()
            .filter(|(name, _)| table.contains_key(*name))
            .collect();
        let values: Vec<ValueId> = compared.iter().map(|(_, (v, _))| *v).collect();
        let mut feed = ArrayFeed {
            arrays: probe.inputs.clone(),
        };
        let got = capture(&plan, &mut feed, &values).map_err(|e| e.to_string())?;
        Ok(compared
            .into_iter()
            .filter_map(|(name, (v, reference))| {
                let mut sums = Sums::default();
                sums.add(reference, got.get(v)?);
                Some((name.clone(), sums.db()))
            })
            .collect())
    }
}

impl Measure for NetMeasure<'_> {
    fn table(&mut self, choices: &Choices) -> Result<Table, String> {
        quantization_table(self.net, self.stats, self.cfg, choices)
    }

    fn accuracy(&mut self, table: &Table) -> Result<f64, String> {
        let all = self.evaluate(table)?;
        Ok(all.values.first().copied().unwrap_or(f64::NAN))
    }

    fn isolated_sqnr(&mut self, layer: &str, q: &QuantizationParameter) -> Result<f64, String> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(EngineError::Cancelled.to_string());
        }
        let table = Table::from([(layer.to_string(), q.clone())]);
        let net = with_table(self.net, &table);
        let probe = self.probe().map_err(|e| e.to_string())?;
        let Some((v, reference)) = probe.outputs.get(layer) else {
            return Err(format!("layer \"{layer}\" has no output to compare"));
        };
        let plan = Plan::new_int8_isolated(&net, Some(probe.images)).map_err(|e| e.to_string())?;
        let mut feed = ArrayFeed {
            arrays: probe.inputs.clone(),
        };
        let got = capture(&plan, &mut feed, &[*v]).map_err(|e| e.to_string())?;
        let mut sums = Sums::default();
        if let Some(t) = got.get(v) {
            sums.add(reference, t);
        }
        Ok(sums.db())
    }

    fn input_blob(&self, layer: &str) -> Option<String> {
        let l = self.net.layers.iter().find(|l| l.name == layer)?;
        l.bottoms.first().map(|&b| self.net.values[b].name.clone())
    }
}
