//! A whole calibration, as the command line and the app run it: load, one FP32 pass for the
//! statistics and the FP32 metric (its batches kept in memory for the INT8 runs), Intel's rules, the
//! tuning loop, the quantized prototxt written atomically, and the report. Progress goes out as
//! `Event`s; a cancel flag stops the run within one batch, before anything is written.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::batches::{BUDGET, Recorded, Recorder, bytes_of};
use super::config::{CalibConfig, ConfigError, ScaleMethod, TuningStrategy};
use super::events::{BlobStats, Event, LayerScale, Stage};
use super::force_u8::{ForceU8, ForceU8Files};
use super::measure::NetMeasure;
use super::methods::{gather_for, threshold};
use super::metric::Measured;
use super::metric_blob::MetricBlobs;
use super::quirks;
use super::report::{self, Report};
use super::rules::{Choices, quantizable, sampled_blobs};
use super::sample::{Sampling, sample, without_quantization};
use super::stats::{Gather, TensorStats};
use super::tune::{Limits, Measure, Table, Tuned, tune};
use crate::data::shapes::data_tops;
use crate::engine::Plan;
use crate::engine::compile::Compiled;
use crate::engine::error::EngineError;
use crate::engine::feed::DataFeed;
use crate::model::error::ModelError;
use crate::model::export::QuantTable;
use crate::model::{LayerId, Model, Net};

/// Why a calibration did not finish.
#[derive(Debug, thiserror::Error)]
pub enum CalibError {
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Engine(EngineError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Anything else, with what it concerns.
    #[error("{0}")]
    Invalid(String),
}

impl From<EngineError> for CalibError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Cancelled => Self::Cancelled,
            e => Self::Engine(e),
        }
    }
}

/// What to calibrate and how.
#[derive(Debug, Clone)]
pub struct Calibration {
    pub model: PathBuf,
    pub weights: PathBuf,
    /// Default: `<model stem>_quantized.prototxt` beside the model.
    pub output: Option<PathBuf>,
    pub cfg: CalibConfig,
    /// Tuning steps after the first measurement.
    pub max_steps: usize,
    pub time_budget: Option<Duration>,
    /// Layers the user keeps FP32.
    pub pinned: Vec<String>,
    /// Write the quantized prototxt at the end (the app writes it when the user saves).
    pub write_output: bool,
    /// Only write the quantized prototxt: no metric, no accuracy runs, no tuning (Intel's `-q`).
    pub quantize_only: bool,
    /// Measure every layer's isolated and cumulative SQNR for the report (tuning measures the
    /// layers it ranks anyway).
    pub layer_sqnr: bool,
    pub cancel: Arc<AtomicBool>,
}

/// A finished calibration.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub output: PathBuf,
    pub table: Table,
    pub report: Report,
    /// Notes of the export (blocks the input had that were replaced, …).
    pub notes: Vec<String>,
    /// With `-fu`: the force-u8 prototxt and the new weights.
    pub force_u8: Option<ForceU8Files>,
    /// What re-evaluation after pinning and a later export need.
    pub retained: Arc<Retained>,
}

/// What a finished calibration keeps: the model, its statistics and recorded batches, the choices
/// tuning made, so that pinning layers re-evaluates INT8 without sampling again.
pub struct Retained {
    pub model: Model,
    /// The net without quantization blocks.
    pub net: Net,
    pub stats: BTreeMap<String, TensorStats>,
    pub recorded: Recorded,
    /// The metric values (the first is tuning's).
    pub metrics: Vec<usize>,
    pub base: PathBuf,
    pub choices: Choices,
}

impl std::fmt::Debug for Retained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retained")
            .field("choices", &self.choices)
            .field("recorded", &self.recorded.len())
            .finish_non_exhaustive()
    }
}

impl Retained {
    /// The table of tuning's choices with `pinned` layers kept FP32 as well, and what its INT8
    /// evaluation measured.
    pub fn reevaluate(
        &self,
        cfg: &CalibConfig,
        pinned: &BTreeSet<String>,
        cancel: &AtomicBool,
        events: &mut dyn FnMut(Event),
    ) -> Result<(Table, Measured), String> {
        let mut choices = self.choices.clone();
        choices.fp32.extend(pinned.iter().cloned());
        let mut m = NetMeasure::new(
            &self.net,
            &self.stats,
            cfg,
            self.metrics.clone(),
            self.base.clone(),
            &self.recorded,
            cancel,
            events,
        );
        let table = m.table(&choices)?;
        let measured = m.evaluate(&table)?;
        Ok((table, measured))
    }
}

impl Calibration {
    pub fn new(model: PathBuf, weights: PathBuf, cfg: CalibConfig) -> Self {
        Self {
            model,
            weights,
            output: None,
            cfg,
            max_steps: 50,
            time_budget: None,
            pinned: Vec::new(),
            write_output: true,
            quantize_only: false,
            layer_sqnr: false,
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Where the quantized prototxt goes.
    pub fn output_path(&self) -> PathBuf {
        self.output
            .clone()
            .unwrap_or_else(|| default_output(&self.model))
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Runs the calibration; `events` sees its progress.
    pub fn run(&self, events: &mut dyn FnMut(Event)) -> Result<Outcome, CalibError> {
        let cfg = &self.cfg;
        let out = self.output_path();
        self.check_output(&out)?;
        let model = Model::load(&self.model, Some(&self.weights), &data_tops)?;
        let metric_blobs = MetricBlobs::of(&model.net);
        cfg.validate(&metric_blobs.names())?;
        let blob = self.metric_blob(&metric_blobs)?;
        let force_u8 = match cfg.first_conv_force_u8 {
            true => Some(ForceU8::check(&model.net).map_err(CalibError::Invalid)?),
            false => None,
        };
        let net = without_quantization(&model.net);
        // The metric tuning reads first, then the net's other metric blobs (reported).
        let mut metric_names = Vec::new();
        if !self.quantize_only {
            metric_names.push(blob.clone());
            metric_names.extend(metric_blobs.names().into_iter().filter(|n| *n != blob));
        }
        let metrics = metric_names
            .iter()
            .map(|n| metric_value(&net, n))
            .collect::<Result<Vec<_>, _>>()?;
        let layers = quantizable(&net, cfg);
        if layers.is_empty() {
            return Err(CalibError::Invalid(
                "nothing to quantize: the net has no Convolution (or InnerProduct with -fc) past the first"
                    .into(),
            ));
        }
        let names: Vec<&str> = layers
            .iter()
            .map(|&id| net.layers[id].name.as_str())
            .collect();
        if let Some(p) = self.pinned.iter().find(|p| !names.contains(&p.as_str())) {
            return Err(CalibError::Invalid(format!(
                "--pin {p}: not a quantizable layer of this net (they are {})",
                names.join(", ")
            )));
        }
        let base = self
            .model
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let t = Instant::now();
        let pass = self.fp32_pass(&net, &metrics, &base, events)?;
        let sampling_seconds = t.elapsed().as_secs_f64();
        let Fp32Pass {
            stats,
            metrics: fp32_all,
            recorded,
            sampling_seconds: sampling_only,
        } = pass;
        let fp32 = fp32_all.values.first().copied().unwrap_or(f64::NAN);
        if !metrics.is_empty() {
            events(Event::Fp32Metric(fp32));
        }
        for s in blob_stats(
            &stats,
            cfg.tuning != TuningStrategy::None || cfg.scale_method != ScaleMethod::Direct,
        ) {
            events(Event::LayerStats(Box::new(s)));
        }
        let start = self.start_choices(&net, &layers, &stats, events);
        // Tuning may change every quantized layer but a -fu first convolution, which must stay INT8.
        let locked = force_u8.as_ref().map(|f| net.layers[f.conv].name.clone());
        if let Some(name) = locked.as_ref().filter(|n| start.fp32.contains(*n)) {
            return Err(CalibError::Invalid(format!(
                "-fu: the first convolution '{name}' must run INT8, but it is pinned or its input is unusable"
            )));
        }
        let order: Vec<String> = layers
            .iter()
            .map(|&id| net.layers[id].name.clone())
            .filter(|n| Some(n) != locked.as_ref())
            .collect();
        let t = Instant::now();
        // The measurements and the loop both report: one sink shared by both.
        let sink = RefCell::new(events);
        let mut on_event = |e: Event| (sink.borrow_mut())(e);
        let mut m = NetMeasure::new(
            &net,
            &stats,
            cfg,
            metrics.clone(),
            base.clone(),
            &recorded,
            &self.cancel,
            &mut on_event,
        );
        let limits = Limits {
            strategy: cfg.tuning,
            fp32,
            tolerance: cfg.accuracy_loss,
            max_steps: self.max_steps,
            time_budget: self.time_budget,
        };
        // Ours: with tuning, the table never walks into Intel Caffe's harmful runtime quirks.
        let mut start = start;
        let mut avoided = Vec::new();
        if cfg.tuning != TuningStrategy::None {
            let fixes = quirks::steer(&net, &mut start, locked.as_deref(), |c| m.table(c))
                .map_err(CalibError::Invalid)?;
            for f in fixes {
                (sink.borrow_mut())(Event::Warning(f.describe()));
                avoided.push(f);
            }
        }
        let tuned = if self.quantize_only {
            Tuned::untested(m.table(&start).map_err(CalibError::Invalid)?, start)
        } else {
            tune(&mut m, &limits, start, &order, &mut |s| {
                (sink.borrow_mut())(Event::Step(s.clone()));
            })
            .map_err(|e| self.failure(e))?
        };
        let sqnr = match self.layer_sqnr {
            true => Some(layer_sqnr(&mut m, &tuned).map_err(|e| self.failure(e))?),
            false => None,
        };
        let int8_all = m.measured(&tuned.table).cloned();
        drop(m);
        let events = sink.into_inner();
        let tuning_seconds = t.elapsed().as_secs_f64();
        for s in chosen_scales(&net, &tuned, cfg) {
            events(Event::Scale(s));
        }
        if self.cancelled() {
            return Err(CalibError::Cancelled);
        }
        let (notes, force_u8) = match self.write_output {
            true => self.export(&model, &tuned.table, &out)?,
            false => (Vec::new(), None),
        };
        let int8 = tuned.accuracy;
        events(Event::Finished { fp32, int8 });
        let first = tuned.steps.first().map_or(0.0, |s| s.seconds);
        let timings = report::Timings {
            sampling: sampling_only.min(sampling_seconds),
            fp32_eval: (sampling_seconds - sampling_only).max(0.0),
            int8_eval: first,
            tuning: (tuning_seconds - first).max(0.0),
        };
        let int8_all = int8_all.unwrap_or_default();
        let ap_per_class = fp32_all
            .ap_per_class
            .iter()
            .map(|(&label, &f)| {
                let int8 = int8_all.ap_per_class.get(&label).copied();
                (label, f, int8.unwrap_or(f64::NAN))
            })
            .collect();
        let report = report::build(&report::Parts {
            calibration: self,
            net: &net,
            layers: &layers,
            metric_blob: &blob,
            metrics: metric_names
                .iter()
                .zip(&fp32_all.values)
                .enumerate()
                .map(|(i, (n, &f))| {
                    let int8 = int8_all.values.get(i).copied();
                    (n.clone(), f, int8.unwrap_or(f64::NAN))
                })
                .collect(),
            ap_per_class,
            avoided_quirks: &avoided,
            fp32,
            tuned: &tuned,
            sqnr: sqnr.as_ref(),
            timings,
            output: &out,
            force_u8: force_u8.as_ref(),
        })?;
        let retained = Retained {
            net,
            stats,
            recorded,
            metrics,
            base,
            choices: tuned.choices,
            model,
        };
        Ok(Outcome {
            output: out,
            force_u8,
            table: tuned.table,
            report,
            notes,
            retained: Arc::new(retained),
        })
    }

    /// Writes the quantized prototxt of `table` to `out` (with `-fu` also the force-u8 pair beside
    /// it): what `run` writes, for the app's "Save" after the run.
    pub fn export(
        &self,
        model: &Model,
        table: &Table,
        out: &Path,
    ) -> Result<(Vec<String>, Option<ForceU8Files>), CalibError> {
        self.refuse_inputs(out)?;
        let full: QuantTable = model
            .net
            .layers
            .iter()
            .map(|l| (l.name.clone(), table.get(&l.name).cloned()))
            .collect();
        let notes = crate::model::export::write(&model.prototxt, &full, out)?;
        let force_u8 = match self.cfg.first_conv_force_u8 {
            true => Some(
                ForceU8::check(&model.net)
                    .and_then(|f| f.write(&model.net, table, out, &self.weights, self.cfg.clx))
                    .map_err(CalibError::Invalid)?,
            ),
            false => None,
        };
        Ok((notes, force_u8))
    }

    /// Refuses an output that is an input file, or (when writing) in a missing or read-only folder.
    fn check_output(&self, out: &Path) -> Result<(), CalibError> {
        self.refuse_inputs(out)?;
        if self.write_output {
            writable_folder(out)?;
        }
        Ok(())
    }

    /// Refuses an output that is the model or the weights.
    fn refuse_inputs(&self, out: &Path) -> Result<(), CalibError> {
        match [&self.model, &self.weights]
            .into_iter()
            .any(|input| crate::model::export::same_file(input, out))
        {
            true => Err(CalibError::Invalid(format!(
                "{}: the output would overwrite an input file",
                out.display()
            ))),
            false => Ok(()),
        }
    }

    /// The metric blob: `-n`, else Intel's choice (none with `-q`).
    fn metric_blob(&self, metric_blobs: &MetricBlobs) -> Result<String, CalibError> {
        Ok(match self.cfg.blob_name.as_str() {
            _ if self.quantize_only => String::new(),
            "" => metric_blobs
                .default_blob(self.cfg.detection)
                .map(str::to_string)
                .ok_or_else(|| {
                    CalibError::Invalid("the net has no Accuracy layer; give -n".into())
                })?,
            b => b.to_string(),
        })
    }

    /// The configuration tuning starts from: the user's pins, and every layer whose input was all
    /// zero or held NaN kept FP32 with a warning.
    fn start_choices(
        &self,
        net: &Net,
        layers: &[LayerId],
        stats: &BTreeMap<String, TensorStats>,
        events: &mut dyn FnMut(Event),
    ) -> Choices {
        let mut start = Choices {
            fp32: self.pinned.iter().cloned().collect(),
            ..Choices::default()
        };
        for &id in layers {
            let l = &net.layers[id];
            let Some(b) = l.bottoms.first().map(|&b| &net.values[b].name) else {
                continue;
            };
            if let Some(why) = stats.get(b).and_then(unusable) {
                events(Event::Warning(format!(
                    "layer \"{}\": its input \"{b}\" {why} over the sampled batches; kept FP32",
                    l.name
                )));
                start.fp32.insert(l.name.clone());
            }
        }
        start
    }

    /// A measurement's error: cancellation when the flag is set, else the message.
    fn failure(&self, message: String) -> CalibError {
        if self.cancelled() {
            CalibError::Cancelled
        } else {
            CalibError::Invalid(message)
        }
    }

    /// The FP32 pass: statistics over `-s` batches, the metric over `-i`, the batches recorded when
    /// they fit the budget. Also returns the seconds the first `-s` batches took.
    fn fp32_pass(
        &self,
        net: &Net,
        metrics: &[usize],
        base: &Path,
        events: &mut dyn FnMut(Event),
    ) -> Result<Fp32Pass, CalibError> {
        let cfg = &self.cfg;
        let plan = Plan::new_int8(net, None)?;
        let layers = quantizable(net, cfg);
        let blobs = sampled_blobs(net, &Compiled::new(net), &layers);
        let mut feed = DataFeed::start(&plan, base).map_err(CalibError::Invalid)?;
        let keep = if !metrics.is_empty() && bytes_of(&plan, cfg.iterations) <= BUDGET {
            cfg.iterations
        } else {
            0
        };
        let mut recorder = Recorder {
            inner: &mut feed,
            keep,
            recorded: Recorded::default(),
        };
        // Tuning may try any method: gather what all of them need.
        let wants = match cfg.tuning {
            TuningStrategy::None => gather_for(cfg.scale_method),
            _ => Gather::ALL,
        };
        let sampling = Sampling {
            blobs: &blobs,
            batches: cfg.sampling_iterations,
            wants,
            metrics,
            iterations: cfg.iterations,
            last_only: cfg.sampling_single,
        };
        events(Event::Stage(Stage::Sampling));
        let t = Instant::now();
        let mut sampling_only = 0.0;
        let (stats, fp32_all) = sample(&plan, &mut recorder, &sampling, &mut |done, total| {
            if self.cancelled() {
                return Err(EngineError::Cancelled);
            }
            if done == cfg.sampling_iterations {
                sampling_only = t.elapsed().as_secs_f64();
            }
            events(Event::Progress { done, total });
            Ok(())
        })?;
        Ok(Fp32Pass {
            stats,
            metrics: fp32_all,
            recorded: recorder.recorded,
            sampling_seconds: sampling_only,
        })
    }
}

/// What the FP32 pass gives: the statistics, what its metrics measured, the recorded batches, and
/// the seconds its first `-s` batches took.
struct Fp32Pass {
    stats: BTreeMap<String, TensorStats>,
    metrics: Measured,
    recorded: Recorded,
    sampling_seconds: f64,
}

/// `<model stem>_quantized.prototxt` beside the model (stem: the file name without its extension;
/// Intel's cut at the first dot of the whole path is a bug, spec §2.14).
pub fn default_output(model: &Path) -> PathBuf {
    let stem = model.file_stem().unwrap_or_default().to_string_lossy();
    model
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
        .join(format!("{stem}_quantized.prototxt"))
}

/// Refuses an output whose folder is missing or not writable before any work is done (a probe file
/// is created and removed).
fn writable_folder(out: &Path) -> Result<(), CalibError> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(CalibError::Invalid(format!(
            "{}: the output folder {} does not exist",
            out.display(),
            dir.display()
        )));
    }
    let probe = dir.join(format!(".int8cal-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| CalibError::Invalid(format!("{}: cannot write there: {e}", dir.display())))
}

/// The last value named `blob` (the metric's).
fn metric_value(net: &Net, blob: &str) -> Result<usize, CalibError> {
    (0..net.values.len())
        .rev()
        .find(|&v| net.values[v].name == blob)
        .ok_or_else(|| CalibError::Invalid(format!("-n {blob}: the net has no blob of that name")))
}

/// Each quantized layer's scales and its input's method, as tuning left them.
fn chosen_scales(net: &Net, tuned: &Tuned, cfg: &CalibConfig) -> Vec<LayerScale> {
    tuned
        .table
        .iter()
        .map(|(name, q)| {
            let input = net.layer(name).and_then(|l| l.bottoms.first());
            let method = input
                .and_then(|&b| tuned.choices.methods.get(&net.values[b].name).copied())
                .unwrap_or(cfg.scale_method);
            LayerScale {
                layer: name.clone(),
                scale_in: q.scale_in.first().copied().unwrap_or(0.0),
                scale_out: (q.bw_layer_out() == 8)
                    .then(|| q.scale_out.first().copied().unwrap_or(0.0)),
                method,
            }
        })
        .collect()
}

/// Why a tensor cannot be quantized, if it cannot: all zero or holding NaN.
fn unusable(s: &TensorStats) -> Option<&'static str> {
    if s.nans > 0 {
        Some("held NaN")
    } else if s.max_abs == 0.0 {
        Some("was all zero")
    } else {
        None
    }
}

/// Every sampled blob's statistics and thresholds (with `all`, every method's; else DIRECT's).
fn blob_stats(stats: &BTreeMap<String, TensorStats>, all: bool) -> Vec<BlobStats> {
    stats
        .iter()
        .map(|(name, s)| {
            let unsigned = s.min >= 0.0;
            let methods: &[ScaleMethod] = if all {
                &ScaleMethod::ALL
            } else {
                &[ScaleMethod::Direct]
            };
            BlobStats {
                blob: name.clone(),
                histogram: s.histogram(2048),
                min: s.min,
                max: s.max,
                thresholds: methods
                    .iter()
                    .map(|&m| (m, threshold(m, s, unsigned)))
                    .collect(),
            }
        })
        .collect()
}

/// Each quantized layer's isolated SQNR (measured by tuning, or now) and cumulative SQNR.
fn layer_sqnr(m: &mut NetMeasure, tuned: &Tuned) -> Result<BTreeMap<String, (f64, f64)>, String> {
    let cumulative = m.cumulative_sqnr(&tuned.table)?;
    let mut r = BTreeMap::new();
    for (name, q) in &tuned.table {
        let isolated = match tuned.isolated.get(name) {
            Some(&s) => s,
            None => m.isolated_sqnr(name, q)?,
        };
        let c = cumulative.get(name).copied().unwrap_or(f64::NAN);
        r.insert(name.clone(), (isolated, c));
    }
    Ok(r)
}
