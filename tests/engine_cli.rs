//! The engine's commands and their bad input: a missing data source names both places looked at, an
//! LMDB of other records names the record, an input of the wrong shape or dtype is refused, `-n` lists
//! the blobs that exist, and `forward --dump` writes every blob with an index (and nothing on failure).

// Test helpers fail loudly by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use clap::Parser;
use int8cal::cli::{Cli, run};

fn int8cal<S: AsRef<str>>(args: &[S]) -> anyhow::Result<std::process::ExitCode> {
    let cli =
        Cli::try_parse_from(std::iter::once("int8cal").chain(args.iter().map(AsRef::as_ref)))?;
    run(cli)
}

fn err<S: AsRef<str>>(args: &[S]) -> String {
    format!("{:#}", int8cal(args).expect_err("the command should fail"))
}

/// `forward` on a fixture's deploy net and weights, with an input, a dump folder and extra arguments.
fn forward(fx: &Path, input: &Path, dump: &Path, extra: &[&str]) -> Vec<String> {
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let mut args = vec![
        "forward".to_string(),
        "-m".into(),
        path(&fx.join("deploy.prototxt")),
        "-w".into(),
        path(&fx.join("weights.caffemodel")),
        "--input".into(),
        path(input),
        "--dump".into(),
        path(dump),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn forward_dumps_every_blob_with_an_index() {
    let Some(root) = common::fixtures() else {
        return;
    };
    let fx = root.join("lenet_mnist");
    let dump = common::scratch("forward_dump");
    int8cal(&forward(&fx, &fx.join("reference/input.npy"), &dump, &[])).unwrap();
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dump.join("index.json")).unwrap()).unwrap();
    let index = index.as_object().unwrap();
    assert!(
        index.contains_key("prob") && index.contains_key("conv1"),
        "{index:?}"
    );
    for file in index.values() {
        assert!(dump.join(file.as_str().unwrap()).is_file());
    }
}

#[test]
fn wrong_inputs_are_refused() {
    let Some(root) = common::fixtures() else {
        return;
    };
    let fx = root.join("lenet_mnist");
    let dir = common::scratch("bad_inputs");
    let wrong_shape = dir.join("wrong_shape.npy");
    ndarray_npy::write_npy(&wrong_shape, &ndarray::Array4::<f32>::zeros((2, 3, 28, 28))).unwrap();
    let e = err(&forward(&fx, &wrong_shape, &dir.join("d"), &[]));
    assert!(
        e.contains("[2, 3, 28, 28]") && e.contains("does not fit"),
        "{e}"
    );
    let wrong_dtype = dir.join("f64.npy");
    ndarray_npy::write_npy(&wrong_dtype, &ndarray::Array4::<f64>::zeros((1, 1, 28, 28))).unwrap();
    let e = err(&forward(&fx, &wrong_dtype, &dir.join("d"), &[]));
    assert!(e.contains("f64.npy") && e.contains("float32"), "{e}");
    assert!(!dir.join("d").join("index.json").exists());
}

#[test]
fn unknown_metric_blob_lists_the_outputs() {
    let Some(root) = common::fixtures() else {
        return;
    };
    let fx = root.join("lenet_mnist");
    let (m, w) = (fx.join("test.prototxt"), fx.join("weights.caffemodel"));
    let e = err(&[
        "eval",
        "-m",
        m.to_str().unwrap(),
        "-w",
        w.to_str().unwrap(),
        "-i",
        "1",
        "-n",
        "acc",
    ]);
    assert!(
        e.contains("no output blob 'acc'") && e.contains("accuracy") && e.contains("loss"),
        "{e}"
    );
}

#[test]
fn missing_data_source_names_both_places() {
    let dir = common::scratch("missing_source");
    let text = "layer { name: 'd' type: 'Data' top: 'data' top: 'label' data_param { source: 'nowhere_lmdb' batch_size: 2 backend: LMDB } }\n\
                layer { name: 'r' type: 'ReLU' bottom: 'data' top: 'r' }";
    let p = common::write(&dir, "net.prototxt", text);
    let e = err(&["eval", "-m", p.to_str().unwrap(), "-i", "1"]);
    let dir = dir.display().to_string();
    assert!(
        e.contains("layer 'd'")
            && e.contains("'nowhere_lmdb' not found")
            && e.contains(&dir)
            && e.contains("working directory"),
        "{e}"
    );
}

#[test]
fn records_that_are_not_datums_name_the_record() {
    let Some(root) = common::fixtures() else {
        return;
    };
    let fx = root.join("ssd_face_res10");
    // An LMDB of AnnotatedDatum read by a plain Data layer: the first record is not a plain Datum image.
    let dir = common::scratch("not_datum");
    let lmdb = fx.join("data/test_lmdb");
    let text = format!(
        "layer {{ name: 'd' type: 'Data' top: 'data' top: 'label' data_param {{ source: '{}' batch_size: 1 backend: LMDB }} }}\n\
         layer {{ name: 'r' type: 'ReLU' bottom: 'data' top: 'r' }}",
        lmdb.display()
    );
    let p = common::write(&dir, "net.prototxt", text);
    let e = err(&["eval", "-m", p.to_str().unwrap(), "-i", "1"]);
    assert!(
        e.contains("layer 'd'") && e.contains("record '00000000_") && e.contains("is not a Datum"),
        "{e}"
    );
}

#[test]
fn a_folder_of_jpegs_is_transformed_as_the_reference_input() {
    let Some(root) = common::fixtures() else {
        return;
    };
    let fx = root.join("resnet8_cifar");
    // The first 8 records' JPEG bytes, named so that file-name order is key order.
    let images = common::scratch("jpeg_folder");
    let mut n = 0;
    int8cal::data::lmdb::with_records(&fx.join("data/test_lmdb"), |_, v| {
        let datum = <int8cal::caffe::Datum as prost::Message>::decode(v).unwrap();
        std::fs::write(images.join(format!("{n:02}.jpg")), datum.data()).unwrap();
        n += 1;
        if n == 8 {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    })
    .unwrap();
    let dump = common::scratch("jpeg_folder_dump");
    let test = fx.join("test.prototxt").to_string_lossy().into_owned();
    int8cal(&forward(&fx, &images, &dump, &["--transform-from", &test])).unwrap();
    let ours: ndarray::ArrayD<f32> = ndarray_npy::read_npy(dump.join("data.npy")).unwrap();
    let reference: ndarray::ArrayD<f32> =
        ndarray_npy::read_npy(fx.join("reference/input.npy")).unwrap();
    assert_eq!(ours.shape(), reference.shape());
    let diff = ours
        .iter()
        .zip(&reference)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff <= 1e-6, "max difference {diff}");
    // A folder without JPEGs is refused with its name.
    let empty = common::scratch("no_jpegs");
    let e = err(&forward(&fx, &empty, &dump, &[]));
    assert!(e.contains("no .jpg") && e.contains("no_jpegs"), "{e}");
}
