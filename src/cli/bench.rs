//! `int8cal bench`: times the FP32 forward pass alone, after warm-up, at a batch size and thread count:
//! median, minimum and maximum per batch and images per second.

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
    /// Timed passes after 3 warm-up passes.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Also print where the time goes, per layer type and slowest layers (mean of `--runs` extra passes).
    #[arg(long)]
    pub profile: bool,
    /// Print `{"batch": B, "threads": T, "fp32": {"median_ms": …, "min_ms": …}}`.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    if args.batch == 0 || args.runs == 0 {
        anyhow::bail!("--batch and --runs must be at least 1");
    }
    let model = Model::load(&args.files.model, args.files.weights.as_deref(), &data_tops)?;
    let plan = Plan::new(&model.net, Some(args.batch))?;
    let mut feed = fixed_inputs(&model, &plan, args)?;
    let mut session = Session::new(&plan);
    let threads = args.threads.unwrap_or_else(rayon::current_num_threads);
    let mut times = super::with_threads(args.threads, || -> anyhow::Result<Vec<f64>> {
        for _ in 0..3 {
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
        let total: f64 = timer.by_type.values().sum();
        let mut rows: Vec<_> = timer.by_type.into_iter().collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1));
        let text: String = rows
            .iter()
            .map(|(t, ms)| format!("{t:>20} {ms:8.2} ms {:5.1} %\n", 100.0 * ms / total))
            .collect();
        let mut layers: Vec<_> = timer.by_layer.into_iter().collect();
        layers.sort_by(|a, b| b.1.total_cmp(&a.1));
        let slowest: String = layers
            .iter()
            .take(80)
            .map(|(n, ms)| format!("  {n:>28} {ms:8.2} ms\n"))
            .collect();
        eprint!("{text}slowest layers:\n{slowest}");
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let (min, max) = (times[0], times[times.len() - 1]);
    let per_s = args.batch as f64 / (median / 1e3);
    if args.json {
        let doc = serde_json::json!({
            "batch": args.batch, "threads": threads,
            "fp32": { "median_ms": median, "min_ms": min, "max_ms": max, "images_per_s": per_s, "runs": args.runs }
        });
        super::emit(&(serde_json::to_string_pretty(&doc)? + "\n"))?;
    } else {
        super::emit(&format!(
            "fp32, batch {}, {threads} threads: median {median:.2} ms (min {min:.2}, max {max:.2}) per batch, {per_s:.1} images/s\n",
            args.batch
        ))?;
    }
    Ok(ExitCode::SUCCESS)
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
}

impl LayerTimer {
    fn scale(&mut self, factor: f64) {
        let all = self.by_type.values_mut().chain(self.by_layer.values_mut());
        all.for_each(|ms| *ms *= factor);
    }
}

/// The same inputs for every pass: the given array tiled to the batch, seeded random values, or one
/// batch read from the net's data layer.
fn fixed_inputs(model: &Model, plan: &Plan, args: &Args) -> anyhow::Result<ArrayFeed> {
    let mut feed = ArrayFeed::default();
    let net = &model.net;
    if net
        .layers
        .iter()
        .any(|l| matches!(l.kind, LayerKind::Data { .. }))
    {
        let base = args.files.folder();
        let mut data = DataFeed::start(plan, &base).map_err(anyhow::Error::msg)?;
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
