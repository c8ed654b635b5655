//! `int8cal bench`: times the forward pass alone, after warm-up, at a batch size and thread count:
//! median, minimum and maximum per batch and images per second; FP32, and with `--int8 FILE` that
//! quantized prototxt in INT8 side by side.

use std::process::ExitCode;
use std::time::{Duration, Instant};

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
    /// Timed passes at least (after warm-up passes: at least 3, for at least 200 ms), in 5 blocks
    /// taking turns with the other model's, lasting at least 1 s in all.
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
    let quantized = match &args.int8 {
        Some(path) => {
            let quantized = Model::load(path, args.files.weights.as_deref(), &data_tops)?;
            if !Plan::is_quantized(&quantized.net) {
                anyhow::bail!("{}: no layer has a quantization_param", path.display());
            }
            Some(quantized)
        }
        None => None,
    };
    let fp32_plan = Plan::new(&model.net, Some(args.batch))?;
    let int8_plan = match &quantized {
        Some(q) => Some(Plan::new_int8(&q.net, Some(args.batch))?),
        None => None,
    };
    let mut subjects = vec![Subject::new(&model, &fp32_plan, Precision::Fp32, args)?];
    if let (Some(q), Some(plan)) = (&quantized, &int8_plan) {
        subjects.push(Subject::new(q, plan, Precision::Int8, args)?);
    }
    super::with_threads(args.threads, || time_in_turns(&mut subjects, args.runs))?;
    if args.profile {
        for s in &mut subjects {
            let report = s.profile(args)?;
            eprint!("{report}");
        }
    }
    let times: Vec<Times> = subjects.iter().map(Subject::times).collect();
    let (fp32, int8) = (&times[0], times.get(1));
    if args.json {
        let mut doc =
            serde_json::json!({ "batch": args.batch, "threads": threads, "fp32": fp32.json(args) });
        if let Some(i) = int8 {
            doc["int8"] = i.json(args);
            doc["speedup"] = serde_json::json!(fp32.median / i.median);
        }
        super::emit(&(serde_json::to_string_pretty(&doc)? + "\n"))?;
    } else {
        let mut text = fp32.line("fp32", args.batch, threads);
        if let Some(i) = int8 {
            text += &i.line("int8", args.batch, threads);
            text += &format!("int8 speedup over fp32: {:.2}x\n", fp32.median / i.median);
        }
        super::emit(&text)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Times of one precision: median, min and max per batch, over how many timed passes.
struct Times {
    median: f64,
    min: f64,
    max: f64,
    runs: usize,
}

impl Times {
    fn json(&self, args: &Args) -> serde_json::Value {
        serde_json::json!({
            "median_ms": self.median, "min_ms": self.min, "max_ms": self.max,
            "images_per_s": args.batch as f64 / (self.median / 1e3), "runs": self.runs
        })
    }

    fn line(&self, what: &str, batch: usize, threads: usize) -> String {
        let per_s = batch as f64 / (self.median / 1e3);
        format!(
            "{what}, batch {batch}, {threads} threads: median {:.2} ms (min {:.2}, max {:.2}) per batch over {} passes, {per_s:.1} images/s\n",
            self.median, self.min, self.max, self.runs
        )
    }
}

/// Untimed passes before the timed ones: at least this many, for at least this long. A pass of a
/// small net takes well under a millisecond, and its first ones after the process starts ran slower
/// while the threads, caches and clock settled: with 3 passes alone, 20 timed ones of ResNet-8 at
/// batch 8 had medians of 1.2-6.3 ms in FP32 where 200 had 1.2-1.3 ms.
const WARM_UP: (usize, Duration) = (3, Duration::from_millis(200));

/// Timed blocks per model. The models take turns, block by block (in alternating order), so that
/// both are timed under the same conditions: a shared machine's speed drifts by 5-15% between
/// seconds, and timing one model after the other put that drift into their ratio.
const ROUNDS: usize = 5;

/// Timed passes per model last at least this long in all, so that the median rests on enough
/// passes for a fast model (ResNet-8's INT8 pass takes half a millisecond).
const MIN_TIMED: Duration = Duration::from_secs(1);

/// What a model is timed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Precision {
    Fp32,
    Int8,
}

impl Precision {
    fn label(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
        }
    }
}

/// One model being timed: its session, its fixed inputs and the times of its passes so far.
struct Subject<'p, 'n> {
    precision: Precision,
    session: Session<'p, 'n>,
    feed: ArrayFeed,
    times: Vec<f64>,
}

impl<'p, 'n> Subject<'p, 'n> {
    fn new(
        model: &Model,
        plan: &'p Plan<'n>,
        precision: Precision,
        args: &Args,
    ) -> anyhow::Result<Self> {
        // A data layer's relative sources resolve beside the prototxt that names them.
        let base = model
            .prototxt
            .path
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        let feed = fixed_inputs(model, plan, args, &base)?;
        let mut session = Session::new(plan);
        session.set_dequantized_views(false);
        Ok(Self {
            precision,
            session,
            feed,
            times: Vec::new(),
        })
    }

    /// One forward pass, in milliseconds.
    fn pass(&mut self) -> anyhow::Result<f64> {
        let t = Instant::now();
        self.session.forward(&mut self.feed, &mut NoObserver)?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    }

    fn warm_up(&mut self) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut passes = 0;
        while passes < WARM_UP.0 || start.elapsed() < WARM_UP.1 {
            self.pass()?;
            passes += 1;
        }
        Ok(())
    }

    /// One untimed pass (its caches again its own after the other model's block), then timed
    /// passes: at least `passes`, for at least `span`.
    fn block(&mut self, passes: usize, span: Duration) -> anyhow::Result<()> {
        self.pass()?;
        let (start, mut done) = (Instant::now(), 0);
        while done < passes || start.elapsed() < span {
            let ms = self.pass()?;
            self.times.push(ms);
            done += 1;
        }
        Ok(())
    }

    fn times(&self) -> Times {
        let mut t = self.times.clone();
        t.sort_by(f64::total_cmp);
        Times {
            median: t.get(t.len() / 2).copied().unwrap_or(f64::NAN),
            min: t.first().copied().unwrap_or(f64::NAN),
            max: t.last().copied().unwrap_or(f64::NAN),
            runs: t.len(),
        }
    }

    /// Where the time goes: the mean per layer type and layer over `--runs` extra passes.
    fn profile(&mut self, args: &Args) -> anyhow::Result<String> {
        let mut timer = LayerTimer {
            last: Instant::now(),
            by_type: std::collections::BTreeMap::new(),
            by_layer: std::collections::BTreeMap::new(),
        };
        super::with_threads(args.threads, || -> anyhow::Result<()> {
            for _ in 0..args.runs {
                timer.last = Instant::now();
                self.session.forward(&mut self.feed, &mut timer)?;
            }
            Ok(())
        })?;
        timer.scale(1.0 / args.runs as f64);
        Ok(timer.report(self.precision.label()))
    }
}

/// Warms every model up, then times them in `ROUNDS` rounds of one block each, the order reversed
/// every other round: each model gets at least `runs` timed passes lasting at least `MIN_TIMED`.
fn time_in_turns(subjects: &mut [Subject], runs: usize) -> anyhow::Result<()> {
    for s in subjects.iter_mut() {
        s.warm_up()?;
    }
    let (passes, span) = (runs.div_ceil(ROUNDS), MIN_TIMED / ROUNDS as u32);
    let count = subjects.len();
    for round in 0..ROUNDS {
        for i in 0..count {
            let turn = if round % 2 == 0 { i } else { count - 1 - i };
            subjects[turn].block(passes, span)?;
        }
    }
    Ok(())
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
