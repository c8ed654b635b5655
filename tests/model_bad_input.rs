//! Bad input gets a clear error naming the file and the line:column, layer or record, never a panic.

// Test helpers fail loudly by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use int8cal::caffe::{BlobProto, BlobShape, LayerParameter, NetParameter};
use prost::Message;

fn scratch_net(test: &str, text: &str) -> (PathBuf, PathBuf) {
    let dir = common::scratch(test);
    let p = common::write(&dir, "net.prototxt", text);
    (dir, p)
}

/// The error message of loading `text` (with optional weights).
fn load_err(test: &str, text: &str, weights: Option<&[u8]>) -> String {
    let (dir, p) = scratch_net(test, text);
    let w = weights.map(|b| common::write(&dir, "w.caffemodel", b));
    match common::load(&p, w.as_deref()) {
        Ok(_) => panic!("{test}: loaded without error"),
        Err(e) => e.to_string(),
    }
}

fn contains_all(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "{msg:?} lacks {p:?}");
    }
}

#[test]
fn missing_file() {
    let e = common::load(Path::new("/nonexistent/net.prototxt"), None)
        .unwrap_err()
        .to_string();
    contains_all(&e, &["/nonexistent/net.prototxt", "No such file"]);
    let (_, p) = scratch_net("missing_weights", common::SMALL_NET);
    let e = common::load(&p, Some(Path::new("/nonexistent/w.caffemodel")))
        .unwrap_err()
        .to_string();
    contains_all(&e, &["/nonexistent/w.caffemodel"]);
}

#[test]
fn binary_garbage_as_prototxt() {
    let e = load_err("garbage", "# nothing here\n", None);
    contains_all(&e, &["net.prototxt", "no layers"]);
    let (dir, _) = scratch_net("garbage_bin", "");
    let p = common::write(
        &dir,
        "g.prototxt",
        [0x0a, 0x05, 0x00, 0xff, 0x13, 0x88, 0x00],
    );
    let e = common::load(&p, None).unwrap_err().to_string();
    contains_all(&e, &["g.prototxt", "not a text prototxt", "NUL"]);
    let p = common::write(&dir, "h.prototxt", [b'n', b'a', 0xc3, 0x28]);
    let e = common::load(&p, None).unwrap_err().to_string();
    contains_all(&e, &["h.prototxt", "UTF-8"]);
}

#[test]
fn syntax_error_gives_line_and_column() {
    let text = "name: \"x\"\nlayer {\n  name: \"a\"\n  type \"Input\"\n}\n";
    let e = load_err("syntax", text, None);
    contains_all(&e, &["net.prototxt:4:8:", "expected ':' or '{'"]);
    let e = load_err("syntax_brace", "layer {\n  name: \"a\"\n", None);
    contains_all(&e, &["net.prototxt:3:1:", "'}' is missing"]);
}

#[test]
fn unknown_field_is_named_with_its_layer() {
    let text = common::SMALL_NET.replace(
        "num_output: 4 kernel_size: 3",
        "num_output: 4 kernal_size: 3",
    );
    let e = load_err("unknown_field", &text, None);
    contains_all(
        &e,
        &[
            "net.prototxt:9:37:",
            "unknown field 'kernal_size'",
            "ConvolutionParameter",
            "layer 'conv1'",
        ],
    );
}

#[test]
fn unknown_enum_value() {
    let text = common::SMALL_NET.replace("pool: MAX", "pool: MEDIAN");
    let e = load_err("unknown_enum", &text, None);
    contains_all(
        &e,
        &[
            "net.prototxt:12:",
            "'MEDIAN'",
            "PoolMethod",
            "MAX, AVE, STOCHASTIC",
            "layer 'pool1'",
        ],
    );
}

#[test]
fn truncated_caffemodel() {
    let Some(root) = common::fixtures() else {
        return;
    };
    let bytes = std::fs::read(root.join("lenet_mnist/weights.caffemodel")).unwrap();
    let text = std::fs::read_to_string(root.join("lenet_mnist/deploy.prototxt")).unwrap();
    let e = load_err("truncated", &text, Some(&bytes[..bytes.len() / 2]));
    contains_all(&e, &["w.caffemodel", "not a valid caffemodel", "truncated"]);
    let e = load_err("empty_model", &text, Some(&[]));
    contains_all(&e, &["w.caffemodel", "empty"]);
}

#[test]
fn caffemodel_of_another_net_names_the_first_mismatching_layer() {
    let Some(root) = common::fixtures() else {
        return;
    };
    let other = std::fs::read(root.join("cifar10_quick/weights.caffemodel")).unwrap();
    let text = std::fs::read_to_string(root.join("lenet_mnist/deploy.prototxt")).unwrap();
    let e = load_err("other_net", &text, Some(&other));
    contains_all(
        &e,
        &[
            "w.caffemodel",
            "layer 'conv1'",
            "blob 0 has shape",
            "the net expects [20, 1, 5, 5]",
        ],
    );
    // A caffemodel whose layer names do not match at all.
    let renamed = NetParameter {
        layer: vec![LayerParameter {
            name: Some("something_else".into()),
            blobs: vec![BlobProto {
                shape: Some(BlobShape { dim: vec![1] }),
                data: vec![1.0],
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let e = load_err("renamed", common::SMALL_NET, Some(&renamed.encode_to_vec()));
    contains_all(&e, &["layer 'conv1'", "has no weights", "something_else"]);
}

#[test]
fn wrong_blob_count_names_the_layer() {
    let model = NetParameter {
        layer: vec![LayerParameter {
            name: Some("fc".into()),
            blobs: vec![BlobProto {
                shape: Some(BlobShape { dim: vec![5, 64] }),
                data: vec![0.0; 320],
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let e = load_err(
        "blob_count",
        common::SMALL_NET,
        Some(&model.encode_to_vec()),
    );
    contains_all(&e, &["layer 'conv1'"]);
}

#[test]
fn bottom_never_produced() {
    let text = common::SMALL_NET.replace(
        "bottom: \"pool2\" top: \"cat\"",
        "bottom: \"pool3\" top: \"cat\"",
    );
    let e = load_err("no_bottom", &text, None);
    contains_all(
        &e,
        &[
            "net.prototxt:14:1",
            "layer 'cat'",
            "bottom 'pool3' is not produced by any layer",
        ],
    );
    let train_only = "layer { name: 'd' type: 'Input' top: 'x' include { phase: TRAIN } input_param { shape { dim: 1 } } }\n\
                      layer { name: 'r' type: 'ReLU' bottom: 'x' top: 'y' }";
    let e = load_err("train_only", train_only, None);
    contains_all(
        &e,
        &[
            "layer 'r'",
            "only by layer 'd', which is not in the TEST phase",
        ],
    );
}

#[test]
fn cycle_is_reported_as_a_path() {
    let text = "layer { name: 'a' type: 'ReLU' bottom: 'y' top: 'x' }\nlayer { name: 'b' type: 'ReLU' bottom: 'x' top: 'y' }\n";
    let e = load_err("cycle", text, None);
    contains_all(
        &e,
        &["net.prototxt:1:1", "layer 'a'", "cycle", "a -> b -> a"],
    );
}

#[test]
fn zero_and_negative_dimensions() {
    let e = load_err(
        "zero_dim",
        &common::SMALL_NET.replace("dim: 2 dim: 3", "dim: 0 dim: 3"),
        None,
    );
    contains_all(
        &e,
        &[
            "net.prototxt:3:1",
            "layer 'data'",
            "dimension 0",
            "not positive",
        ],
    );
    let e = load_err(
        "neg_dim",
        &common::SMALL_NET.replace("dim: 9 dim: 9", "dim: -9 dim: 9"),
        None,
    );
    contains_all(&e, &["layer 'data'", "dimension -9"]);
    let e = load_err(
        "kernel_too_big",
        &common::SMALL_NET.replace("kernel_size: 3 stride: 2", "kernel_size: 30 stride: 2"),
        None,
    );
    contains_all(&e, &["layer 'conv1'", "does not fit input size"]);
}

#[test]
fn two_gigabyte_dimension_product() {
    let text = common::SMALL_NET.replace(
        "dim: 2 dim: 3 dim: 9 dim: 9",
        "dim: 64 dim: 512 dim: 256 dim: 256",
    );
    let e = load_err("huge", &text, None);
    contains_all(&e, &["layer 'data'", "more than 2147483647 elements"]);
    // A conv that grows an acceptable input past the limit is caught at the conv.
    let text = common::SMALL_NET
        .replace(
            "dim: 2 dim: 3 dim: 9 dim: 9",
            "dim: 1 dim: 3 dim: 16384 dim: 16384",
        )
        .replace("num_output: 4", "num_output: 64")
        .replace("stride: 2 pad: 1", "stride: 1 pad: 1");
    let e = load_err("huge_conv", &text, None);
    contains_all(&e, &["layer 'conv1'", "more than 2147483647 elements"]);
}

#[test]
fn duplicate_top_and_duplicate_layer_name() {
    let text = common::SMALL_NET
        .replace("top: \"pool2\"", "top: \"pool1\"")
        .replace("bottom: \"pool2\"", "bottom: \"pool1\"");
    let e = load_err("dup_top", &text, None);
    contains_all(&e, &["layer 'pool2'", "top 'pool1' is already produced"]);
    let text = common::SMALL_NET.replace("name: \"pool2\"", "name: \"pool1\"");
    let e = load_err("dup_name", &text, None);
    contains_all(&e, &["layer 'pool1'", "used by an earlier layer"]);
}

#[test]
fn unreadable_data_source_is_a_warning_not_a_failure() {
    let text = "layer { name: 'd' type: 'Data' top: 'data' top: 'label' data_param { source: 'nowhere' batch_size: 4 backend: LMDB } }\n\
                layer { name: 'r' type: 'ReLU' bottom: 'data' top: 'r' }";
    let (_, p) = scratch_net("no_source", text);
    let model = common::load(&p, None).unwrap();
    assert!(
        model
            .net
            .warnings
            .iter()
            .any(|w| w.contains("nowhere") && w.contains("layer 'd'")),
        "{:?}",
        model.net.warnings
    );
    assert_eq!(model.net.value("r").unwrap().shape, None);
}

#[test]
fn unsupported_type_loads_for_viewing() {
    let text = common::SMALL_NET.replace("type: \"Softmax\"", "type: \"FancyNewLayer\"");
    let (_, p) = scratch_net("unsupported", &text);
    let model = common::load(&p, None).unwrap();
    let l = model.net.layer("prob").unwrap();
    assert_eq!(
        l.kind,
        int8cal::model::LayerKind::Unsupported("FancyNewLayer".into())
    );
    assert!(
        model
            .net
            .warnings
            .iter()
            .any(|w| w.contains("FancyNewLayer"))
    );
}

#[test]
fn prior_box_without_min_size_names_the_layer_and_its_line() {
    let text = r#"name: "pb"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 32 dim: 32 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "prior" type: "PriorBox" bottom: "conv" bottom: "data" top: "prior" prior_box_param { aspect_ratio: 2 } }
"#;
    let e = load_err("prior_box_min_size", text, None);
    contains_all(&e, &["net.prototxt:4:1", "'prior'", "min_size is required"]);
}
