//! `int8cal forward`: one FP32 forward pass of a deploy net on an input `.npy`, every blob as it stands at
//! the end of the pass written as a float32 `.npy` with an `index.json` (blob name -> file name).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ndarray::ArrayD;

use super::ModelArgs;
use crate::data::pixels::Pixels;
use crate::data::shapes::data_tops;
use crate::data::transform::Transform;
use crate::engine::Session;
use crate::engine::feed::ArrayFeed;
use crate::engine::session::NoObserver;
use crate::model::layer::LayerKind;
use crate::model::{Model, Net, Prototxt, ValueId};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub files: ModelArgs,
    /// The input: a float32 N×C×H×W `.npy` (already transformed; its batch may differ from the net's), or
    /// a JPEG or PNG file, or a folder of them (in file-name order, one image each).
    #[arg(long, value_name = "X.npy|IMAGE|DIR")]
    pub input: PathBuf,
    /// Transform images as this TEST prototxt's data layer does (`transform_param`: crop, mean, scale).
    #[arg(long, value_name = "TEST.prototxt")]
    pub transform_from: Option<PathBuf>,
    /// Write every blob here as `<name>.npy` plus `index.json` (the folder may exist).
    #[arg(long, value_name = "DIR")]
    pub dump: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Run a quantized prototxt in FP32, ignoring its `quantization_param` blocks.
    #[arg(long)]
    pub fp32: bool,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let model = Model::load(&args.files.model, args.files.weights.as_deref(), &data_tops)?;
    let (input_value, x) = read_input(&model.net, &args.input, args.transform_from.as_deref())?;
    let batch = x.shape()[0];
    let plan = super::plan_for(&model.net, Some(batch), args.fp32)?;
    let mut session = Session::new(&plan);
    let mut feed = ArrayFeed::default();
    feed.arrays.insert(input_value, x);
    super::with_threads(args.threads, || session.forward(&mut feed, &mut NoObserver))?;
    dump(&model.net, &session, &args.dump)?;
    Ok(ExitCode::SUCCESS)
}

/// The net's single Input top and the array for it, checked against the net's C×H×W.
pub fn read_input(
    net: &Net,
    path: &Path,
    transform_from: Option<&Path>,
) -> anyhow::Result<(ValueId, ArrayD<f32>)> {
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
    let want = net.values[*top].shape.clone().unwrap_or_default();
    if let Some(images) = image_files(path)? {
        return Ok((*top, read_images(&images, &want, transform_from)?));
    }
    let x: ArrayD<f32> = ndarray_npy::read_npy(path)
        .map_err(|e| anyhow::anyhow!("{}: {e} (a float32 .npy is expected)", path.display()))?;
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

fn is_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        ["jpg", "jpeg", "png"]
            .iter()
            .any(|x| e.eq_ignore_ascii_case(x))
    })
}

/// The image files an `--input` names (the file, or a folder's JPEGs and PNGs sorted by name); None for
/// a `.npy`.
fn image_files(path: &Path) -> anyhow::Result<Option<Vec<PathBuf>>> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_image(p))
            .collect();
        files.sort();
        if files.is_empty() {
            anyhow::bail!(
                "{}: the folder has no .jpg, .jpeg or .png files",
                path.display()
            );
        }
        return Ok(Some(files));
    }
    Ok(is_image(path).then(|| vec![path.to_path_buf()]))
}

/// Decodes and transforms images into an N×C×H×W batch for an input of shape `want`.
fn read_images(
    files: &[PathBuf],
    want: &[usize],
    transform_from: Option<&Path>,
) -> anyhow::Result<ArrayD<f32>> {
    let [_, c, h, w] = <[usize; 4]>::try_from(want)
        .map_err(|_| anyhow::anyhow!("the net's input {want:?} is not N×C×H×W"))?;
    let transform = match transform_from {
        Some(p) => data_transform(p)?,
        None => Transform::new(&Default::default(), Path::new(".")).map_err(anyhow::Error::msg)?,
    };
    let mut batch = ndarray::Array4::<f32>::zeros((files.len(), c, h, w));
    for (i, f) in files.iter().enumerate() {
        let bytes = std::fs::read(f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        let img = Pixels::decode(&bytes, transform.color)
            .map(|p| p.to_chw())
            .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        let mut out = batch.index_axis_mut(ndarray::Axis(0), i);
        transform
            .apply(img.view(), &mut out, true)
            .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
    }
    Ok(batch.into_dyn())
}

/// The `transform_param` of the first data layer of a TEST prototxt (mean files resolve beside it).
fn data_transform(test: &Path) -> anyhow::Result<Transform> {
    let proto = Prototxt::read(test)?;
    let (param, _) = proto.upgraded();
    let layer = param
        .layer
        .iter()
        .find(|l| l.transform_param.is_some())
        .ok_or_else(|| anyhow::anyhow!("{}: no layer has a transform_param", test.display()))?;
    let base = test.parent().map(Path::to_path_buf).unwrap_or_default();
    Transform::new(
        layer
            .transform_param
            .as_ref()
            .unwrap_or(&Default::default()),
        &base,
    )
    .map_err(|e| anyhow::anyhow!("{}: layer '{}': {e}", test.display(), layer.name()))
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
        // Walking the values backwards meets each blob name first at its last write: what the blob
        // holds at the end of the pass.
        for (v, value) in net.values.iter().enumerate().rev() {
            let name = value.name.as_str();
            if index.contains_key(name) {
                continue;
            }
            let value = session.value(v);
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
