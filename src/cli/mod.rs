//! The command-line client: argument definitions and dispatch to one module per subcommand.

pub mod bench;
pub mod calibrate;
pub mod eval;
pub mod forward;
pub mod gui;
pub mod inspect;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// int8cal: calibrate Caffe models for 8-bit inference on Intel CPUs.
#[derive(Debug, Parser)]
#[command(name = "int8cal", version, about, long_about = None, infer_long_args = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a model's TEST-phase layers with their top shapes and parameter counts (and, with weights,
    /// each blob's shape and range).
    Inspect(inspect::Args),
    /// One FP32 forward pass on an input .npy; dump every blob as .npy.
    Forward(forward::Args),
    /// Run the TEST net over its data and print the mean of each output blob, as `caffe test` does.
    Eval(eval::Args),
    /// Time the FP32 forward pass.
    Bench(bench::Args),
    /// Calibrate a model for INT8 with Intel's calibrator flags and write the quantized prototxt.
    #[command(after_help = calibrate::EXIT_CODES)]
    Calibrate(calibrate::Args),
    /// Open the desktop app (the default when no subcommand is given), on the bundled example unless a
    /// model is given.
    Gui(gui::Args),
    /// Copy the first N records of an LMDB into a new one (how the bundled example's data was made).
    #[command(hide = true)]
    LmdbSubset {
        /// The source LMDB folder.
        from: PathBuf,
        /// The new LMDB folder (must not exist).
        to: PathBuf,
        /// How many records.
        #[arg(short = 'n', default_value_t = 1000)]
        count: usize,
    },
}

/// Model files shared by the subcommands.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// The model prototxt (text format; V2 `layer` or V1 `layers`).
    #[arg(short = 'm', long = "model", value_name = "PROTOTXT")]
    pub model: PathBuf,
    /// The trained weights (binary caffemodel).
    #[arg(short = 'w', long = "weights", value_name = "CAFFEMODEL")]
    pub weights: Option<PathBuf>,
}

/// Writes a command's output to stdout; a closed pipe (`int8cal inspect ... | head`) is not an error.
pub fn emit(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

impl ModelArgs {
    /// The model's folder, against which its relative data paths resolve.
    pub fn folder(&self) -> PathBuf {
        self.model
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default()
    }
}

/// Runs `f` on a rayon pool of `threads` workers (None: the global pool, one per core).
pub fn with_threads<R: Send>(threads: Option<usize>, f: impl FnOnce() -> R + Send) -> R {
    match threads.map(|n| rayon::ThreadPoolBuilder::new().num_threads(n).build()) {
        Some(Ok(pool)) => pool.install(f),
        _ => f(),
    }
}

/// The plan a command runs: INT8 as Intel Caffe runs it when the net carries `quantization_param`
/// blocks (unless `fp32`), with the notes on what Intel would run differently printed to stderr.
pub fn plan_for(
    net: &crate::model::Net,
    batch: Option<usize>,
    fp32: bool,
) -> anyhow::Result<crate::engine::Plan<'_>> {
    use crate::engine::Plan;
    if fp32 || !Plan::is_quantized(net) {
        return Ok(Plan::new(net, batch)?);
    }
    let plan = Plan::new_int8(net, batch)?;
    for note in plan.int8.iter().flat_map(|p| &p.precision.notes) {
        eprintln!("note: {note}");
    }
    Ok(plan)
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Some(Command::Inspect(args)) => inspect::run(&args),
        Some(Command::Gui(args)) => gui::run(args),
        Some(Command::Forward(args)) => forward::run(&args),
        Some(Command::Eval(args)) => eval::run(&args),
        Some(Command::Bench(args)) => bench::run(&args),
        Some(Command::Calibrate(args)) => calibrate::run(&args),
        None => gui::run(gui::Args::default()),
        Some(Command::LmdbSubset { from, to, count }) => {
            let n =
                crate::data::lmdb::write_subset(&from, &to, count).map_err(anyhow::Error::msg)?;
            println!("wrote {n} records to {}", to.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
