//! `int8cal gui` (and `int8cal` with no arguments): the desktop app, on the given files or on the
//! bundled example.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::gui::app::Tab;
use crate::gui::{self, StartOptions};

#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// The model prototxt to open (default: the bundled example).
    #[arg(short = 'm', long = "model", value_name = "PROTOTXT")]
    pub model: Option<PathBuf>,
    /// Its weights (default: the example's, when the example is opened).
    #[arg(short = 'w', long = "weights", value_name = "CAFFEMODEL")]
    pub weights: Option<PathBuf>,
    /// Save a PNG of the whole window once loading and layout are done, then exit (non-zero on any error).
    #[arg(long, value_name = "FILE.png")]
    pub screenshot: Option<PathBuf>,
    /// Select this layer (and centre the graph on it) once the model is loaded.
    #[arg(long, value_name = "LAYER")]
    pub select: Option<String>,
    /// Pan and zoom through the graph for N frames once loaded, print the frame times and exit.
    #[arg(long, value_name = "N", hide = true)]
    pub measure_frames: Option<usize>,
    /// The tab to show.
    #[arg(long, value_enum, default_value_t = TabArg::Graph)]
    pub tab: TabArg,
    /// Start calibrating once the model is loaded, with the default settings (not the saved ones).
    #[arg(long)]
    pub autorun: bool,
    /// With --autorun: save the quantized prototxt here when the calibration finishes.
    #[arg(long, value_name = "FILE", requires = "autorun")]
    pub export: Option<PathBuf>,
    /// With --autorun: save graph.png, histograms.png, progress.png and compare.png here when done.
    #[arg(long, value_name = "DIR", requires = "autorun")]
    pub screenshot_dir: Option<PathBuf>,
    /// With --autorun: close the window when everything is saved (exit 0, or 1 on any failure).
    #[arg(long, requires = "autorun")]
    pub exit_when_done: bool,
}

#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum TabArg {
    #[default]
    Graph,
    Histograms,
    Progress,
    Compare,
}

/// The bundled example: `assets/example` of the source tree, or beside the executable.
pub fn example_dir() -> Option<PathBuf> {
    let mut candidates = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/example")];
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(
            exe.ancestors()
                .skip(1)
                .take(3)
                .map(|d| d.join("assets/example")),
        );
    }
    candidates
        .into_iter()
        .find(|d| d.join("test.prototxt").is_file())
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (model, weights) = match args.model {
        Some(m) => (Some(m), args.weights),
        None => match example_dir() {
            Some(dir) => (
                Some(dir.join("test.prototxt")),
                args.weights.or(Some(dir.join("weights.caffemodel"))),
            ),
            None => {
                eprintln!(
                    "note: the bundled example (assets/example) was not found; opening an empty window"
                );
                (None, args.weights)
            }
        },
    };
    let tab = match args.tab {
        TabArg::Graph => Tab::Graph,
        TabArg::Histograms => Tab::Histograms,
        TabArg::Progress => Tab::Progress,
        TabArg::Compare => Tab::Compare,
    };
    if let Some(dir) = &args.screenshot_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("--screenshot-dir {}: {e}", dir.display()))?;
    }
    gui::run(StartOptions {
        model,
        weights,
        screenshot: args.screenshot,
        tab,
        measure_frames: args.measure_frames,
        select: args.select,
        autorun: args.autorun,
        export: args.export,
        screenshot_dir: args.screenshot_dir,
        exit_when_done: args.exit_when_done,
    })
}
