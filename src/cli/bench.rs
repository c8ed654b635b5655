//! `int8cal bench`: times the forward pass alone, after warm-up, at a batch size and thread count:
//! median, minimum and maximum per batch and images per second; FP32, and with `--int8 FILE` that
//! quantized prototxt in INT8 side by side.

use std::process::ExitCode;
use std::time::Instant;

use ndarray::{ArrayD, Axis, IxDyn};

use super::ModelArgs;
use crate::data::shapes::data_tops;
use crate::engine::feed::{ArrayFeed, DataFeed};
use crate::engine::session::{Feed, NoObserver};
use crate::engine::{Plan, Session};
use crate::model::Model;
use crate::model::layer::LayerKind;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub files: ModelArgs,
    /// Images per batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Input for an Input net, tiled to the batch (default: seeded random values).
    #[arg(long, value_name = "X.npy")]
    pub input: Option<std::path::PathBuf>,
    /// Timed passes, after warm-up passes (at least 3, for at least 200 ms).
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Also print where the time goes, per layer type and slowest layers (mean of `--runs` extra passes).
    #[arg(long)]
    pub profile: bool,
    /// Print `{"batch": B, "threads": T, "fp32": {"median_ms": …, "min_ms": …}}` (and `"int8"`).
    #[arg(long)]
    pub json: bool,
    /// Also time this quantized prototxt (same weights) in INT8 as Intel Caffe runs it, side by side.
    #[arg(long, value_name = "QUANTIZED.prototxt")]
    pub int8: Option<std::path::PathBuf>,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    if args.batch == 0 || args.runs == 0 {
        anyhow::bail!("--batch and --runs must be at least 1");
    }
    let threads = args.threads.unwrap_or_else(rayon::current_num_threads);
    let model = Model::load(&args.files.model, args.files.weights.as_deref(), &data_tops)?;
    let fp32 = time_model(&model, args, false)?;
    let int8 = match &args.int8 {
        Some(path) => {
            let quantized = Model::load(path, args.files.weights.as_deref(), &data_tops)?;
            if !Plan::is_quantized(&quantized.net) {
                anyhow::bail!("{}: no layer has a quantization_param", path.display());
            }
            Some(time_model(&quantized, args, true)?)
        }
        None => None,
    };
    if args.json {
        let mut doc =
            serde_json::json!({ "batch": args.batch, "threads": threads, "fp32": fp32.json(args) });
        if let Some(i) = &int8 {
            doc["int8"] = i.json(args);
            doc["speedup"] = serde_json::json!(fp32.median / i.median);
        }
        super::emit(&(serde_json::to_string_pretty(&doc)? + "\n"))?;
    } else {
        let mut text = fp32.line("fp32", args.batch, threads);
        if let Some(i) = &int8 {
            text += &i.line("int8", args.batch, threads);
            text += &format!("int8 speedup over fp32: {:.2}x\n", fp32.median / i.median);
        }
        super::emit(&text)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Times of one precision: median, min and max per batch.
struct Times {
    median: f64,
    min: f64,
    max: f64,
}

impl Times {
    fn json(&self, args: &Args) -> serde_json::Value {
        serde_json::json!({
            "median_ms": self.median, "min_ms": self.min, "max_ms": self.max,
            "images_per_s": args.batch as f64 / (self.median / 1e3), "runs": args.runs
        })
    }

    fn line(&self, what: &str, batch: usize, threads: usize) -> String {
        let per_s = batch as f64 / (self.median / 1e3);
        format!(
            "{what}, batch {batch}, {threads} threads: median {:.2} ms (min {:.2}, max {:.2}) per batch, {per_s:.1} images/s\n",
            self.median, self.min, self.max
        )
    }
}

/// Untimed passes before the timed ones: at least this many, for at least this long. A pass of a
/// small net takes well under a millisecond, and its first ones after the process starts (or after
/// the other precision's passes) ran slower while the threads, caches and clock settled: with 3
/// passes alone, 20 timed ones of ResNet-8 at batch 8 had medians of 1.2-6.3 ms in FP32 where 200
/// had 1.2-1.3 ms.
const WARM_UP: (usize, std::time::Duration) = (3, std::time::Duration::from_millis(200));

/// Times the forward pass of a model (INT8 as Intel runs it when `int8`), after the warm-up passes
/// (`WARM_UP`), with the per-layer profile on stderr when asked.
fn time_model(model: &Model, args: &Args, int8: bool) -> anyhow::Result<Times> {
    // A data layer's relative sources resolve beside the prototxt that names them.
    let base = model
        .prototxt
        .path
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let plan = if int8 {
        Plan::new_int8(&model.net, Some(args.batch))?
    } else {
        Plan::new(&model.net, Some(args.batch))?
    };
    let mut feed = fixed_inputs(model, &plan, args, &base)?;
    let mut session = Session::new(&plan);
    session.set_dequantized_views(false);
    let mut times = super::with_threads(args.threads, || -> anyhow::Result<Vec<f64>> {
        let start = Instant::now();
        for pass in 0.. {
            if pass >= WARM_UP.0 && start.elapsed() >= WARM_UP.1 {
                break;
            }
            session.forward(&mut feed, &mut NoObserver)?;
        }
        (0..args.runs)
            .map(|_| {
                let t = Instant::now();
                session.forward(&mut feed, &mut NoObserver)?;
                Ok(t.elapsed().as_secs_f64() * 1e3)
            })
            .collect()
    })?;
    if args.profile {
        let mut timer = LayerTimer {
            last: Instant::now(),
            by_type: std::collections::BTreeMap::new(),
            by_layer: std::collections::BTreeMap::new(),
        };
        super::with_threads(args.threads, || -> anyhow::Result<()> {
            for _ in 0..args.runs {
                timer.last = Instant::now();
                session.forward(&mut feed, &mut timer)?;
            }
            Ok(())
        })?;
        timer.scale(1.0 / args.runs as f64);
        eprint!("{}", timer.report(if int8 { "int8" } else { "fp32" }));
    }
    times.sort_by(f64::total_cmp);
    Ok(Times {
        median: times[times.len() / 2],
        min: times[0],
        max: times[times.len() - 1],
    })
}

/// Attributes the time between consecutive outputs to the layer type that produced the later one.
struct LayerTimer {
    last: Instant,
    by_type: std::collections::BTreeMap<String, f64>,
    by_layer: std::collections::BTreeMap<String, f64>,
}

impl crate::engine::Observer for LayerTimer {
    fn output(&mut self, layer: &crate::model::Layer, _: usize, _: &ArrayD<f32>) {
        let now = Instant::now();
        let ms = (now - self.last).as_secs_f64() * 1e3;
        *self.by_type.entry(layer.type_name.clone()).or_default() += ms;
        *self.by_layer.entry(layer.name.clone()).or_default() += ms;
        self.last = now;
    }

    /// Timing only: INT8 values are not dequantized for it (as in the timed passes).
    fn wants_values(&self) -> bool {
        false
    }
}

impl LayerTimer {
    /// Time per layer type, then the slowest layers.
    fn report(self, what: &str) -> String {
        let total: f64 = self.by_type.values().sum();
        let mut rows: Vec<_> = self.by_type.into_iter().collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1));
        let text: String = rows
            .iter()
            .map(|(t, ms)| format!("{t:>20} {ms:8.3} ms {:5.1} %\n", 100.0 * ms / total))
            .collect();
        let mut layers: Vec<_> = self.by_layer.into_iter().collect();
        layers.sort_by(|a, b| b.1.total_cmp(&a.1));
        let slowest: String = layers
            .iter()
            .take(40)
            .map(|(n, ms)| format!("  {n:>28} {ms:8.3} ms\n"))
            .collect();
        format!("{what}:\n{text}slowest layers:\n{slowest}")
    }

    fn scale(&mut self, factor: f64) {
        let all = self.by_type.values_mut().chain(self.by_layer.values_mut());
        all.for_each(|ms| *ms *= factor);
    }
}

/// The same inputs for every pass: the given array tiled to the batch, seeded random values, or one
/// batch read from the net's data layer.
fn fixed_inputs(
    model: &Model,
    plan: &Plan,
    args: &Args,
    base: &std::path::Path,
) -> anyhow::Result<ArrayFeed> {
    let mut feed = ArrayFeed::default();
    let net = &model.net;
    if net
        .layers
        .iter()
        .any(|l| matches!(l.kind, LayerKind::Data { .. }))
    {
        let mut data = DataFeed::start(plan, base).map_err(anyhow::Error::msg)?;
        for l in net
            .layers
            .iter()
            .filter(|l| matches!(l.kind, LayerKind::Data { .. }))
        {
            let mut tops: Vec<ArrayD<f32>> = l
                .tops
                .iter()
                .map(|&t| ArrayD::zeros(IxDyn(&plan.shapes[t])))
                .collect();
            data.fill(l, &mut tops).map_err(anyhow::Error::msg)?;
            feed.arrays.extend(l.tops.iter().copied().zip(tops));
        }
        return Ok(feed);
    }
    for l in net
        .layers
        .iter()
        .filter(|l| matches!(l.kind, LayerKind::Input { .. }))
    {
        for &t in &l.tops {
            let shape = &plan.shapes[t];
            let array = match &args.input {
                Some(path) => {
                    let (_, x) = super::forward::read_input(net, path, None)?;
                    let n = x.shape()[0];
                    let parts: Vec<_> = (0..shape[0])
                        .map(|i| x.index_axis(Axis(0), i % n).insert_axis(Axis(0)))
                        .collect();
                    ndarray::concatenate(Axis(0), &parts)?
                }
                None => {
                    let mut state = 0x2545_f491_4f6c_dd1du64;
                    ArrayD::from_shape_fn(IxDyn(shape), |_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
                    })
                }
            };
            feed.arrays.insert(t, array);
        }
    }
    Ok(feed)
}
