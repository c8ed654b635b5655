//! `int8cal calibrate`: Intel's calibrator flags (spec §1.1; the multi-letter single-dash ones such as
//! `-1st` are accepted as Intel spells them) mapped onto a `calib::run::Calibration`, its progress on
//! stderr, the FP32 metric, each tuning step and the final INT8 metric on stdout, and the report.
//! `-fu` and detection mode are refused with a message until they exist.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::ModelArgs;
use crate::calib::events::{Event, Stage};
use crate::calib::run::{CalibError, Calibration};
use crate::calib::tune::{Action, Step};
use crate::calib::{CalibConfig, ScaleMethod, TuningStrategy, WeightScaling};
use crate::model::export::write_atomic;

/// Intel's multi-letter single-dash flags and the long forms clap reads.
pub const INTEL_FLAGS: &[(&str, &str)] = &[
    ("-1st", "--enable_1st_conv"),
    ("-fc", "--fc_int8"),
    ("-fu", "--first_conv_force_u8"),
    ("-clx", "--is_clx"),
    ("-ss", "--sampling_single"),
    ("-uff", "--disable_force_fp32"),
    ("-ucac", "--disable_cac_unify"),
    ("-wi", "--conv_algo"),
];

/// Rewrites Intel's multi-letter single-dash flags into their long forms.
pub fn intel_spellings(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter()
        .map(|a| {
            INTEL_FLAGS
                .iter()
                .find(|(short, _)| *short == a)
                .map_or(a, |(_, long)| (*long).to_string())
        })
        .collect()
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub files: ModelArgs,
    /// Test iterations (batches) of each accuracy measurement.
    #[arg(short = 'i', long = "iterations", default_value_t = 10)]
    pub iterations: usize,
    /// The top blob holding the metric (default: the Accuracy top with the smallest top_k).
    #[arg(short = 'n', long = "blob_name")]
    pub blob_name: Option<String>,
    /// Tolerated accuracy drop (absolute, one-sided).
    #[arg(short = 'l', long = "accuracy_loss", default_value_t = 0.01)]
    pub accuracy_loss: f64,
    /// 1: detection mode (mAP).
    #[arg(short = 'd', long = "detection", default_value_t = 0)]
    pub detection: u8,
    /// Weight scales per tensor (single) or per output channel (multiple).
    #[arg(short = 'c', long = "weights_channel", default_value = "single", value_parser = ["single", "multiple"])]
    pub weights_channel: String,
    /// Batches sampled for the statistics.
    #[arg(short = 's', long = "sampling_iterations", default_value_t = 10)]
    pub sampling_iterations: usize,
    /// Activation threshold: DIRECT (max), KL, MAXP (percentile), MA (moving average) or MSE (any case).
    #[arg(short = 'a', long = "calibration_algos", default_value = "DIRECT")]
    pub algo: String,
    /// Output scale 255/M for every layer, ReLU or not.
    #[arg(short = 'u', long = "unsigned_range")]
    pub unsigned_range: bool,
    /// Producers of Concat inputs output FP32.
    #[arg(short = 't', long = "concat_use_fp32")]
    pub concat_fp32: bool,
    /// Give the producers of a Concat one output scale.
    #[arg(short = 'f', long = "unify_concat_scales")]
    pub unify_concat_scales: bool,
    /// Also quantize the first convolution (`-1st`).
    #[arg(long = "enable_1st_conv")]
    pub first_conv: bool,
    /// Run InnerProduct layers in INT8 (`-fc`).
    #[arg(long = "fc_int8")]
    pub fc_int8: bool,
    /// Feed the first convolution u8 input prepared by the data layer (`-fu`).
    #[arg(long = "first_conv_force_u8")]
    pub force_u8: bool,
    /// With `-fu`: keep the first convolution's weight scales (`-clx`).
    #[arg(long = "is_clx")]
    pub clx: bool,
    /// Statistics from the last of the `-s` batches only (`-ss`).
    #[arg(long = "sampling_single")]
    pub sampling_single: bool,
    /// Skip Intel 1.1.6's FP32-output rule (`-uff`).
    #[arg(long = "disable_force_fp32")]
    pub disable_force_fp32: bool,
    /// Skip the scale unification around AVE pooling (`-ucac`).
    #[arg(long = "disable_cac_unify")]
    pub disable_cac_unify: bool,
    /// Only write the quantized prototxt: no accuracy runs, no tuning, no metric blob needed.
    #[arg(short = 'q', long = "quantize_model")]
    pub quantize_model: bool,
    /// Write `<model stem>_dummy.prototxt` (every convolution but the first at scale 1) and exit.
    #[arg(short = 'p', long = "performance_model")]
    pub performance_model: bool,
    /// Intel's Caffe build folder: accepted and ignored (int8cal runs the nets itself).
    #[arg(short = 'r', long = "root")]
    pub root: Option<PathBuf>,
    /// Intel's Winograd-aware statistics (`-wi`): refused, it crashes in every Intel version.
    #[arg(long = "conv_algo")]
    pub conv_algo: bool,
    /// How an accuracy loss above `-l` is repaired: ranked, positional or none.
    #[arg(long, default_value = "ranked", value_parser = ["ranked", "positional", "none"])]
    pub tuning: String,
    /// Tuning steps at most after the first INT8 measurement (the best configuration found is kept).
    #[arg(long, default_value_t = 50)]
    pub max_steps: usize,
    /// Seconds tuning may take at most (default: no limit).
    #[arg(long)]
    pub time_budget: Option<f64>,
    /// Keep these layers FP32 (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    pub pin: Vec<String>,
    /// The quantized prototxt to write (default: `<model stem>_quantized.prototxt` beside the model).
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// Write the JSON report here (settings, inputs' SHA-256, steps, per-layer scales and SQNR).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// The scale method of an `-a` value (Intel's spellings, any case).
fn scale_method(a: &str) -> anyhow::Result<ScaleMethod> {
    Ok(match a.to_ascii_uppercase().as_str() {
        "DIRECT" => ScaleMethod::Direct,
        "KL" => ScaleMethod::Kl,
        "MAXP" => ScaleMethod::Percentile,
        "MA" => ScaleMethod::MovingAverage,
        "MSE" => ScaleMethod::Mse,
        _ => anyhow::bail!("-a {a}: the methods are DIRECT, KL, MAXP, MA and MSE"),
    })
}

impl Args {
    fn config(&self) -> anyhow::Result<CalibConfig> {
        let tuning = match self.tuning.as_str() {
            "none" => TuningStrategy::None,
            "positional" => TuningStrategy::Positional,
            _ => TuningStrategy::Ranked,
        };
        let cfg = CalibConfig {
            iterations: self.iterations,
            blob_name: self.blob_name.clone().unwrap_or_default(),
            accuracy_loss: self.accuracy_loss,
            detection: self.detection == 1,
            first_conv_force_u8: self.force_u8,
            clx: self.clx,
            sampling_iterations: self.sampling_iterations,
            weight_scaling: if self.weights_channel == "multiple" {
                WeightScaling::Multiple
            } else {
                WeightScaling::Single
            },
            scale_method: scale_method(&self.algo)?,
            quantize_first_conv: self.first_conv || self.force_u8,
            int8_inner_product: self.fc_int8,
            unify_concat_scales: self.unify_concat_scales,
            concat_fp32: self.concat_fp32,
            unsigned_outputs: self.unsigned_range,
            sampling_single: self.sampling_single,
            disable_force_fp32: self.disable_force_fp32,
            disable_cac_unify: self.disable_cac_unify,
            tuning,
            threads: self.threads.unwrap_or(0),
        };
        if self.conv_algo {
            anyhow::bail!(
                "-wi (Winograd-aware statistics) is refused: Intel's tool crashes with it in every version, so there is no behaviour to reproduce"
            );
        }
        if self.clx && !self.force_u8 {
            anyhow::bail!("-clx only applies with -fu");
        }
        Ok(cfg)
    }

    fn calibration(&self) -> anyhow::Result<Calibration> {
        let Some(weights) = self.files.weights.clone() else {
            anyhow::bail!("-w: calibration needs the trained weights");
        };
        let mut c = Calibration::new(self.files.model.clone(), weights, self.config()?);
        c.output = self.output.clone();
        c.max_steps = self.max_steps;
        c.time_budget = match self.time_budget {
            Some(s) if !(s.is_finite() && s > 0.0) => {
                anyhow::bail!("--time-budget {s}: give a positive number of seconds")
            }
            s => s.map(Duration::from_secs_f64),
        };
        c.pinned = self.pin.clone();
        c.quantize_only = self.quantize_model;
        c.layer_sqnr = self.report.is_some();
        Ok(c)
    }
}

/// What a step did, in a few words.
fn describe(s: &Step) -> String {
    let layer = s.layer.as_deref().unwrap_or("");
    match &s.action {
        Action::Calibrate => "as calibrated".to_string(),
        Action::Rescale {
            method,
            per_channel,
        } => format!(
            "{layer}: {}{} input threshold{}",
            method.label(),
            if *per_channel {
                " + per-channel weights,"
            } else {
                ""
            },
            s.sqnr_db
                .map(|(a, b)| format!(" (SQNR {a:.1} -> {b:.1} dB)"))
                .unwrap_or_default()
        ),
        Action::Revert => format!("{layer}: back to FP32"),
    }
}

/// Shows events on the terminal: a progress bar per stage, a line per tuning step and warning.
struct Terminal {
    bar: Option<indicatif::ProgressBar>,
    blob: String,
}

impl Terminal {
    fn show(&mut self, e: Event) {
        match e {
            Event::Stage(stage) => {
                self.finish_bar();
                let what = match stage {
                    Stage::Sampling => "FP32 pass (statistics, FP32 metric)".to_string(),
                    Stage::Int8Eval => "INT8 evaluation".to_string(),
                    Stage::Tuning(k) => format!("tuning step {k}"),
                    Stage::Compare => "comparing predictions".to_string(),
                };
                let bar = indicatif::ProgressBar::new(0).with_message(what);
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "{msg:40} [{bar:30}] {pos}/{len} ETA {eta}",
                ) {
                    bar.set_style(style.progress_chars("=> "));
                }
                self.bar = Some(bar);
            }
            Event::Progress { done, total } => {
                if let Some(b) = &self.bar {
                    b.set_length(total as u64);
                    b.set_position(done as u64);
                }
            }
            Event::Step(s) => {
                self.finish_bar();
                println!(
                    "step {:2}: {:<60} {}: {:.4}{}",
                    s.step,
                    describe(&s),
                    self.blob,
                    s.accuracy,
                    if s.kept { "" } else { " (undone)" }
                );
            }
            Event::Warning(w) => {
                self.finish_bar();
                eprintln!("warning: {w}");
            }
            Event::Fp32Metric(v) => {
                self.finish_bar();
                println!("{}: FP32 {v:.4}", self.blob);
            }
            Event::LayerStats(_) | Event::Scale(_) | Event::Finished { .. } => {}
        }
    }

    fn finish_bar(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// Exit code when the file is written but the tolerance was not met.
pub const TOLERANCE_NOT_MET: u8 = 3;

/// The exit codes, as `--help` shows them.
pub const EXIT_CODES: &str = "Exit codes:
  0  the quantized prototxt was written and the INT8 metric is within -l of FP32
     (always with --tuning none or -q, which do not tune)
  1  an error: bad input, an unreadable model or data, cancelled; nothing was written
  2  a bad command line
  3  written, but tuning ran out of --max-steps or --time-budget (or of layers to try) before
     reaching -l; the best configuration found was written";

/// `-p`: every Convolution but the first at bit widths 8 and scale 1, for timing only (§2.14).
fn performance_model(args: &Args) -> anyhow::Result<ExitCode> {
    let model =
        crate::model::Model::load(&args.files.model, None, &crate::data::shapes::data_tops)?;
    let one = crate::caffe::QuantizationParameter {
        bw_layer_in: Some(8),
        bw_layer_out: Some(8),
        bw_params: Some(8),
        scale_in: vec![1.0],
        scale_out: vec![1.0],
        scale_params: vec![1.0],
        ..Default::default()
    };
    let mut convs = 0;
    let table: crate::model::export::QuantTable = model
        .net
        .layers
        .iter()
        .map(|l| {
            let conv = matches!(l.kind, crate::model::layer::LayerKind::Convolution(_));
            convs += usize::from(conv);
            (l.name.clone(), (conv && convs > 1).then(|| one.clone()))
        })
        .collect();
    let out = args.output.clone().unwrap_or_else(|| {
        let q = crate::calib::run::default_output(&args.files.model);
        q.with_file_name(
            q.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .replace("_quantized.prototxt", "_dummy.prototxt"),
        )
    });
    crate::model::export::write(&model.prototxt, &table, &out)?;
    println!("wrote {}", out.display());
    Ok(ExitCode::SUCCESS)
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    if args.root.is_some() {
        eprintln!("note: -r is ignored: int8cal runs the nets itself, no Caffe build is needed");
    }
    if args.performance_model {
        return performance_model(args);
    }
    let c = args.calibration()?;
    let mut term = Terminal {
        bar: None,
        blob: c.cfg.blob_name.clone(),
    };
    if term.blob.is_empty() {
        term.blob = "metric".into();
    }
    let outcome = super::with_threads(args.threads, || c.run(&mut |e| term.show(e)));
    term.finish_bar();
    let outcome = match outcome {
        Err(CalibError::Cancelled) => anyhow::bail!("cancelled; nothing was written"),
        r => r?,
    };
    for note in &outcome.notes {
        eprintln!("note: {note}");
    }
    if let Some(f) = &outcome.force_u8 {
        println!(
            "-fu: wrote {} and {} (use them together)",
            f.prototxt.display(),
            f.weights.display()
        );
    }
    let r = &outcome.report;
    let quantized = r.layers.iter().filter(|l| l.scale_in.is_some()).count();
    if c.quantize_only {
        println!(
            "{quantized} of {} layers INT8 (-q: no accuracy runs); wrote {}",
            r.layers.len(),
            outcome.output.display()
        );
    } else {
        for a in &r.ap_per_class {
            println!(
                "class {} AP: FP32 {:.4}, INT8 {:.4}",
                a.label, a.fp32, a.int8
            );
        }
        println!(
            "{}: FP32 {:.4}, INT8 {:.4} ({quantized} of {} layers INT8); wrote {}",
            r.metric_blob,
            r.fp32_accuracy,
            r.int8_accuracy,
            r.layers.len(),
            outcome.output.display()
        );
    }
    if let Some(path) = &args.report {
        let text = serde_json::to_string_pretty(r)?;
        write_atomic(path, format!("{text}\n").as_bytes())?;
    }
    if r.within_tolerance || c.cfg.tuning == TuningStrategy::None || c.quantize_only {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "note: the INT8 loss {:.4} exceeds -l {} ({:?}); the best configuration found was written",
        r.fp32_accuracy - r.int8_accuracy,
        c.cfg.accuracy_loss,
        r.stop
    );
    Ok(ExitCode::from(TOLERANCE_NOT_MET))
}
