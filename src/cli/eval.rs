//! `int8cal eval`: runs the TEST net over its data for a number of iterations and prints the mean of
//! each scalar output blob, as `caffe test` does (`accuracy = 0.614`), or JSON with `--json`. A prototxt
//! with `quantization_param` blocks runs as Intel Caffe runs it in INT8 (`--fp32` ignores them).

use std::collections::BTreeMap;
use std::process::ExitCode;

use super::ModelArgs;
use crate::data::shapes::data_tops;
use crate::engine::Session;
use crate::engine::feed::DataFeed;
use crate::engine::session::NoObserver;
use crate::metrics::ap::{ApVersion, MapAccumulator};
use crate::model::Model;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub files: ModelArgs,
    /// Batches to run (Caffe's default is 50).
    #[arg(short = 'i', long = "iterations", default_value_t = 50)]
    pub iterations: usize,
    /// Report only these output blobs (repeatable).
    #[arg(short = 'n', long = "blob_name", value_name = "BLOB")]
    pub blobs: Vec<String>,
    /// Detection mode: mAP from the DetectionEvaluate top, as SSD Caffe's `caffe test` computes it.
    #[arg(short = 'd', long = "detection", default_value_t = 0)]
    pub detection: u8,
    /// With -d 1: how AP integrates the precision-recall curve.
    #[arg(long, value_enum, default_value_t = ApArg::ElevenPoint)]
    pub ap_version: ApArg,
    /// Print `{"iterations": N, "blobs": {...}}`.
    #[arg(long)]
    pub json: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Run a quantized prototxt in FP32, ignoring its `quantization_param` blocks.
    #[arg(long)]
    pub fp32: bool,
    /// For a quantized prototxt, also write each INT8 layer's output SQNR against FP32 on the same
    /// batches (isolated: only that layer in INT8; cumulative: all) to this JSON file.
    #[arg(long, value_name = "FILE.json")]
    pub int8_report: Option<std::path::PathBuf>,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    if args.iterations == 0 {
        anyhow::bail!("-i must be at least 1");
    }
    let model = Model::load(&args.files.model, args.files.weights.as_deref(), &data_tops)?;
    let plan = super::plan_for(&model.net, None, args.fp32)?;
    if args.detection == 1 {
        return detection(args, &model, &plan);
    }
    let scalars: Vec<(String, usize)> = plan
        .outputs()
        .into_iter()
        .filter(|&v| plan.shapes[v].iter().product::<usize>() == 1)
        .map(|v| (model.net.values[v].name.clone(), v))
        .collect();
    let wanted: Vec<(String, usize)> = if args.blobs.is_empty() {
        scalars.clone()
    } else {
        args.blobs
            .iter()
            .map(|b| {
                scalars
                    .iter()
                    .find(|(n, _)| n == b)
                    .cloned()
                    .ok_or_else(|| {
                        let names: Vec<&str> = scalars.iter().map(|(n, _)| n.as_str()).collect();
                        anyhow::anyhow!(
                            "no output blob '{b}'; the net's scalar outputs are: {}",
                            names.join(", ")
                        )
                    })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let base = args.files.folder();
    let values: Vec<usize> = wanted.iter().map(|(_, v)| *v).collect();
    let means = mean_outputs(&plan, &base, &values, args.iterations, args.threads)?;
    let means: BTreeMap<String, f64> = wanted
        .iter()
        .zip(means)
        .map(|((n, _), m)| (n.clone(), m))
        .collect();
    if let Some(path) = &args.int8_report {
        let inputs = [Some(&args.files.model), args.files.weights.as_ref()];
        if inputs
            .into_iter()
            .flatten()
            .any(|i| crate::model::export::same_file(i, path))
        {
            anyhow::bail!(
                "{}: --int8-report would overwrite an input file",
                path.display()
            );
        }
        let mut feed = DataFeed::start(&plan, &base).map_err(anyhow::Error::msg)?;
        let layers = super::with_threads(args.threads, || {
            crate::engine::sqnr::int8_report(&model.net, None, args.iterations, &mut feed)
        })?;
        let doc = serde_json::json!({ "iterations": args.iterations, "batch_size": plan.batch, "layers": layers });
        let text = serde_json::to_string_pretty(&doc)? + "\n";
        crate::model::export::write_atomic(path, text.as_bytes())?;
    }
    if args.json {
        let doc = serde_json::json!({ "iterations": args.iterations, "batch_size": plan.batch, "blobs": means });
        super::emit(&(serde_json::to_string_pretty(&doc)? + "\n"))?;
    } else {
        let text: String = wanted
            .iter()
            .map(|(n, _)| format!("{n} = {}\n", means[n]))
            .collect();
        super::emit(&text)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The mean of each of the scalar `values` over `iterations` batches of the plan's data (read from
/// the start of its source), as `caffe test` reports them.
pub fn mean_outputs(
    plan: &crate::engine::Plan,
    base: &std::path::Path,
    values: &[usize],
    iterations: usize,
    threads: Option<usize>,
) -> anyhow::Result<Vec<f64>> {
    let mut feed = DataFeed::start(plan, base).map_err(anyhow::Error::msg)?;
    let mut session = Session::new(plan);
    session.set_dequantized_views(false);
    let mut sums = vec![0f64; values.len()];
    let bar = indicatif::ProgressBar::new(iterations as u64);
    super::with_threads(threads, || -> anyhow::Result<()> {
        for _ in 0..iterations {
            session.forward(&mut feed, &mut NoObserver)?;
            for (s, v) in sums.iter_mut().zip(values) {
                *s += f64::from(session.value(*v).iter().next().copied().unwrap_or(0.0));
            }
            bar.inc(1);
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok(sums.iter().map(|s| s / iterations as f64).collect())
}

/// `--ap-version`, spelled as SSD Caffe spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ApArg {
    #[value(name = "11point")]
    ElevenPoint,
    #[value(name = "integral", alias = "Integral")]
    Integral,
    #[value(name = "maxintegral", alias = "MaxIntegral")]
    MaxIntegral,
}

impl ApArg {
    fn version(self) -> ApVersion {
        match self {
            Self::ElevenPoint => ApVersion::ElevenPoint,
            Self::Integral => ApVersion::Integral,
            Self::MaxIntegral => ApVersion::MaxIntegral,
        }
    }
}

/// `eval -d 1`: DetectionEvaluate's rows gathered over the iterations, then mAP.
fn detection(args: &Args, model: &Model, plan: &crate::engine::Plan) -> anyhow::Result<ExitCode> {
    let blobs = crate::calib::metric_blob::MetricBlobs::of(&model.net);
    let name = match args.blobs.as_slice() {
        [] => blobs
            .default_blob(true)
            .ok_or_else(|| anyhow::anyhow!("-d 1: the net has no DetectionEvaluate layer"))?
            .to_string(),
        [one] => one.clone(),
        _ => anyhow::bail!("-d 1 evaluates one DetectionEvaluate top; give at most one -n"),
    };
    let value = (0..model.net.values.len())
        .rev()
        .find(|&v| model.net.values[v].name == name)
        .ok_or_else(|| anyhow::anyhow!("-n {name}: no such blob"))?;
    let acc = detection_rows(
        plan,
        &args.files.folder(),
        value,
        args.iterations,
        args.threads,
    )?;
    let version = args.ap_version.version();
    let (map, per_class) = acc.map(version);
    if args.json {
        let per: BTreeMap<String, f64> = per_class
            .iter()
            .map(|(l, ap)| (l.to_string(), *ap))
            .collect();
        let doc = serde_json::json!({
            "iterations": args.iterations,
            "ap_version": version.name(),
            "blobs": { name.as_str(): map },
            "ap_per_class": per,
        });
        super::emit(&(serde_json::to_string_pretty(&doc)? + "\n"))?;
    } else {
        let per: String = per_class
            .iter()
            .map(|(l, ap)| format!("class {l} AP = {ap}\n"))
            .collect();
        super::emit(&format!("{per}{name} = {map}\n"))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// DetectionEvaluate's rows of `value` over `iterations` batches.
pub fn detection_rows(
    plan: &crate::engine::Plan,
    base: &std::path::Path,
    value: usize,
    iterations: usize,
    threads: Option<usize>,
) -> anyhow::Result<MapAccumulator> {
    let mut feed = DataFeed::start(plan, base).map_err(anyhow::Error::msg)?;
    let mut session = Session::new(plan);
    let mut acc = MapAccumulator::default();
    let bar = indicatif::ProgressBar::new(iterations as u64);
    super::with_threads(threads, || -> anyhow::Result<()> {
        for _ in 0..iterations {
            session.forward(&mut feed, &mut NoObserver)?;
            let rows: Vec<f32> = session.value(value).iter().copied().collect();
            acc.add(&rows);
            bar.inc(1);
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok(acc)
}
