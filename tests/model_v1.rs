//! Legacy formats written by the project itself: a V1 prototxt (enum layer types, `input_dim`) and a V1
//! caffemodel with legacy 4-D blob shapes, so a clone without `../shared` tests the upgrade path.

// Test helpers fail loudly by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use int8cal::caffe::{BlobProto, NetParameter, V1LayerParameter, v1_layer_parameter::LayerType};
use int8cal::model::export::{self, QuantTable};
use int8cal::model::{Format, LayerKind};
use prost::Message;

fn v1_prototxt() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/lenet_v1.prototxt")
}

fn legacy_blob(n: i32, c: i32, h: i32, w: i32, seed: f32) -> BlobProto {
    let count = (n * c * h * w) as usize;
    BlobProto {
        num: Some(n),
        channels: Some(c),
        height: Some(h),
        width: Some(w),
        data: (0..count)
            .map(|i| ((i as f32 + seed) * 0.37).sin())
            .collect(),
        ..Default::default()
    }
}

/// A V1 caffemodel for lenet_v1.prototxt: conv 4x1x5x5 + bias, ip 10x(4*12*12) as 1x1x10x576 + bias.
fn v1_caffemodel(dir: &Path) -> PathBuf {
    let layer = |name: &str, t: LayerType, blobs: Vec<BlobProto>| V1LayerParameter {
        name: Some(name.into()),
        r#type: Some(t as i32),
        blobs,
        ..Default::default()
    };
    let net = NetParameter {
        name: Some("LeNetV1".into()),
        layers: vec![
            layer(
                "conv1",
                LayerType::Convolution,
                vec![legacy_blob(4, 1, 5, 5, 0.0), legacy_blob(1, 1, 1, 4, 1.0)],
            ),
            layer("pool1", LayerType::Pooling, vec![]),
            layer(
                "ip1",
                LayerType::InnerProduct,
                vec![
                    legacy_blob(1, 1, 10, 576, 2.0),
                    legacy_blob(1, 1, 1, 10, 3.0),
                ],
            ),
        ],
        ..Default::default()
    };
    common::write(dir, "lenet_v1.caffemodel", net.encode_to_vec())
}

#[test]
fn v1_prototxt_and_caffemodel_load_upgraded() {
    let dir = common::scratch("v1_load");
    let weights = v1_caffemodel(&dir);
    let model = common::load(&v1_prototxt(), Some(&weights)).unwrap();
    assert_eq!(model.prototxt.format, Format::V1);
    let net = &model.net;
    let names: Vec<&str> = net.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        ["input", "conv1", "pool1", "ip1", "relu1", "prob"],
        "TRAIN-only loss filtered out"
    );
    assert_eq!(net.layers[1].type_name, "Convolution");
    assert!(matches!(net.layers[4].kind, LayerKind::Activation(_)));
    assert_eq!(
        net.value("ip1").unwrap().shape.as_deref(),
        Some(&[2, 10][..])
    );
    assert_eq!(
        net.value("pool1").unwrap().shape.as_deref(),
        Some(&[2, 4, 12, 12][..])
    );
    // Legacy shapes are bound to the modern ones.
    assert_eq!(net.layers[3].blobs[0].shape(), &[10, 576]);
    assert_eq!(net.layers[3].blobs[1].shape(), &[10]);
    assert_eq!(net.layers[1].blobs[0].shape(), &[4, 1, 5, 5]);
    // V1 learning-rate multipliers become ParamSpecs.
    assert_eq!(net.layers[1].proto.param[1].lr_mult, Some(2.0));
}

#[test]
fn v1_is_exported_as_v2_and_reads_back() {
    let dir = common::scratch("v1_export");
    let model = common::load(&v1_prototxt(), None).unwrap();
    let q = int8cal::caffe::QuantizationParameter {
        bw_layer_in: Some(8),
        scale_in: vec![12.5],
        ..Default::default()
    };
    let out = dir.join("lenet_quantized.prototxt");
    let notes = export::write(
        &model.prototxt,
        &QuantTable::from([("conv1".to_string(), Some(q.clone()))]),
        &out,
    )
    .unwrap();
    assert!(notes.iter().any(|n| n.contains("V1")), "{notes:?}");
    let back = common::load(&out, None).unwrap();
    assert_eq!(back.prototxt.format, Format::V2);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.contains("type: \"Convolution\"") && !text.contains("layers {"),
        "{text}"
    );
    let same = |m: &int8cal::model::Model| {
        m.net
            .values
            .iter()
            .map(|v| (v.name.clone(), v.shape.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(same(&back), same(&model));
    assert_eq!(
        back.net.layer("conv1").unwrap().proto.quantization_param,
        Some(q)
    );
}
