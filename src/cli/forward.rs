//! `int8cal forward`: one FP32 forward pass of a deploy net on an input `.npy`, every blob as it stands at
//! the end of the pass written as a float32 `.npy` with an `index.json` (blob name -> file name).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ndarray::ArrayD;

use super::ModelArgs;
use crate::data::shapes::data_tops;
use crate::engine::feed::ArrayFeed;
use crate::engine::session::NoObserver;
use crate::engine::{Plan, Session};
use crate::model::layer::LayerKind;
use crate::model::{Model, Net, ValueId};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub files: ModelArgs,
    /// The input: a float32 N×C×H×W `.npy` (already transformed). Its batch may differ from the net's.
    #[arg(long, value_name = "X.npy")]
    pub input: PathBuf,
    /// Write every blob here as `<name>.npy` plus `index.json` (the folder may exist).
    #[arg(long, value_name = "DIR")]
    pub dump: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let model = Model::load(&args.files.model, args.files.weights.as_deref(), &data_tops)?;
    let (input_value, x) = read_input(&model.net, &args.input)?;
    let batch = x.shape()[0];
    let plan = Plan::new(&model.net, Some(batch))?;
    let mut session = Session::new(&plan);
    let mut feed = ArrayFeed::default();
    feed.arrays.insert(input_value, x);
    super::with_threads(args.threads, || session.forward(&mut feed, &mut NoObserver))?;
    dump(&model.net, &session, &args.dump)?;
    Ok(ExitCode::SUCCESS)
}

/// The net's single Input top and the array for it, checked against the net's C×H×W.
pub fn read_input(net: &Net, path: &Path) -> anyhow::Result<(ValueId, ArrayD<f32>)> {
    let tops: Vec<ValueId> = net
        .layers
        .iter()
        .filter(|l| matches!(l.kind, LayerKind::Input { .. }))
        .flat_map(|l| l.tops.iter().copied())
        .collect();
    let [top] = tops.as_slice() else {
        anyhow::bail!(
            "the net has {} Input tops; --input feeds a net with exactly one (use a deploy prototxt)",
            tops.len()
        );
    };
    let x: ArrayD<f32> = ndarray_npy::read_npy(path)
        .map_err(|e| anyhow::anyhow!("{}: {e} (a float32 .npy is expected)", path.display()))?;
    let want = net.values[*top].shape.clone().unwrap_or_default();
    if x.ndim() != want.len() || x.shape()[1..] != want[1..] || x.shape().first() == Some(&0) {
        anyhow::bail!(
            "{}: shape {:?} does not fit the net's input {:?} (only the batch may differ)",
            path.display(),
            x.shape(),
            want
        );
    }
    Ok((*top, x))
}

/// A blob name as a file name: characters outside `[A-Za-z0-9._-]` become `_`.
pub fn file_name(blob: &str) -> String {
    blob.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        + ".npy"
}

/// Writes every blob's final value; on failure removes the files it wrote.
fn dump(net: &Net, session: &Session, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let mut written: Vec<PathBuf> = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        let mut index = std::collections::BTreeMap::new();
        let mut names: Vec<&str> = net.values.iter().map(|v| v.name.as_str()).collect();
        names.dedup();
        let mut seen = std::collections::HashSet::new();
        for name in names {
            if !seen.insert(name) {
                continue;
            }
            let Some(value) = session.blob(name) else {
                continue;
            };
            let file = file_name(name);
            let path = dir.join(&file);
            written.push(path.clone());
            ndarray_npy::write_npy(&path, value)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            index.insert(name.to_string(), file);
        }
        let path = dir.join("index.json");
        written.push(path.clone());
        crate::model::export::write_atomic(
            &path,
            serde_json::to_string_pretty(&index)?.as_bytes(),
        )?;
        Ok(())
    })();
    if result.is_err() {
        for p in written {
            let _ = std::fs::remove_file(p);
        }
    }
    result
}
