//! Helpers shared by the integration tests: where the fixtures are, loading a model with the real data
//! shapes, and a scratch folder per test.

// Test helpers fail loudly by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::path::{Path, PathBuf};

use int8cal::data::shapes::data_tops;
use int8cal::model::{Model, ModelError};

/// `../shared/fixtures`, or None with a visible message (a user's clone has no `../shared`; CI fails
/// earlier, in `.ci/run`, when it is missing).
pub fn fixtures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    if dir.is_dir() {
        return Some(dir);
    }
    eprintln!(
        "SKIPPED: {} is absent; fixture tests did not run",
        dir.display()
    );
    None
}

/// Every fixture folder (those with a deploy.prototxt), sorted.
pub fn fixture_dirs() -> Vec<PathBuf> {
    let Some(root) = fixtures() else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("deploy.prototxt").is_file())
        .collect();
    dirs.sort();
    dirs
}

pub fn load(model: &Path, weights: Option<&Path>) -> Result<Model, ModelError> {
    Model::load(model, weights, &data_tops)
}

/// A fresh scratch folder under target/.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn write(dir: &Path, name: &str, text: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A small V2 net with every structural feature the loader handles: Input, conv, in-place ReLU, a blob
/// read twice, pooling, concat, flatten, inner product, softmax.
pub const SMALL_NET: &str = r#"# a small test net
name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 9 dim: 9 } } }
layer {
  name: "conv1"
  type: "Convolution"
  bottom: "data"
  top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 }
}
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "pool2" type: "Pooling" bottom: "conv1" top: "pool2" pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "cat" type: "Concat" bottom: "pool1" bottom: "pool2" top: "cat" }
layer { name: "flat" type: "Flatten" bottom: "cat" top: "flat" }
layer { name: "fc" type: "InnerProduct" bottom: "flat" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"#;

/// The mean of a scalar blob (a metric) of a prototxt with its weights over `iterations` batches,
/// run as `int8cal eval` runs it (INT8 when the file is quantized).
pub fn evaluate(model: &Path, weights: &Path, blob: &str, iterations: usize) -> f64 {
    let m = load(model, Some(weights)).unwrap();
    let plan = int8cal::engine::Plan::new_int8(&m.net, None).unwrap();
    let v = (0..m.net.values.len())
        .rev()
        .find(|&v| m.net.values[v].name == blob)
        .unwrap();
    let base = model.parent().unwrap();
    int8cal::cli::eval::mean_outputs(&plan, base, &[v], iterations, None).unwrap()[0]
}

/// Runs a fixture's deploy net (with weights) on `reference/input.npy` and returns every blob's
/// final value by name.
pub fn forward_reference(dir: &Path) -> std::collections::BTreeMap<String, ndarray::ArrayD<f32>> {
    use int8cal::engine::session::NoObserver;
    use int8cal::engine::{Plan, Session};
    let model = load(
        &dir.join("deploy.prototxt"),
        Some(&dir.join("weights.caffemodel")),
    )
    .unwrap();
    let x: ndarray::ArrayD<f32> = ndarray_npy::read_npy(dir.join("reference/input.npy")).unwrap();
    let plan = Plan::new(&model.net, Some(x.shape()[0])).unwrap();
    let input = model
        .net
        .layers
        .iter()
        .find(|l| matches!(l.kind, int8cal::model::LayerKind::Input { .. }))
        .unwrap()
        .tops[0];
    let mut feed = int8cal::engine::feed::ArrayFeed::default();
    feed.arrays.insert(input, x);
    let mut session = Session::new(&plan);
    session.forward(&mut feed, &mut NoObserver).unwrap();
    model
        .net
        .values
        .iter()
        .filter_map(|v| Some((v.name.clone(), session.blob(&v.name)?.clone())))
        .collect()
}

/// The blobs of a reference folder (`blobs_index.json` + `blobs.npz`), by blob name.
pub fn reference_blobs(refs: &Path) -> Vec<(String, ndarray::ArrayD<f32>)> {
    let index: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(refs.join("blobs_index.json")).unwrap())
            .unwrap();
    let mut npz =
        ndarray_npy::NpzReader::new(std::fs::File::open(refs.join("blobs.npz")).unwrap()).unwrap();
    index
        .into_iter()
        .map(|(blob, key)| {
            let a = npz
                .by_name(&key)
                .or_else(|_| npz.by_name(&format!("{key}.npy")))
                .unwrap();
            (blob, a)
        })
        .collect()
}

/// The largest |ours − want| and the bound the FP32 checks allow: 1e-4·max|want| + 1e-5.
pub fn error_and_bound(ours: &ndarray::ArrayD<f32>, want: &ndarray::ArrayD<f32>) -> (f32, f32) {
    let max_ref = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = ours
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    (err, 1e-4 * max_ref + 1e-5)
}

/// The 11-point mAP of the value named `detection_eval` over `iterations` batches of a plan.
pub fn detection_map(plan: &int8cal::engine::Plan, base: &Path, iterations: usize) -> f64 {
    let net = plan.net;
    let v = (0..net.values.len())
        .rev()
        .find(|&v| net.values[v].name == "detection_eval")
        .unwrap();
    let rows = int8cal::cli::eval::detection_rows(plan, base, v, iterations, None).unwrap();
    rows.map(int8cal::metrics::ap::ApVersion::ElevenPoint).0
}
