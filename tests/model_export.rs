//! The quantized-prototxt writer: blocks inserted, replaced and removed in the user's own text, the rest
//! kept byte for byte; relative data paths rebased when writing elsewhere; OpenCV's `clip` dropped; V1
//! written as V2; and reading the output back gives the same net plus the parameters (every fixture).

// Test helpers fail loudly by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use int8cal::caffe::QuantizationParameter;
use int8cal::model::export::{self, QuantTable};
use int8cal::model::{LayerKind, Model, Prototxt};

/// A table quantizing every convolution with distinct, awkward float values.
fn table_for(model: &Model) -> QuantTable {
    let mut table = QuantTable::new();
    for (i, l) in model.net.layers.iter().enumerate() {
        if let LayerKind::Convolution(c) = &l.kind {
            let scale = 1.0 / (i as f32 + 3.0);
            table.insert(
                l.name.clone(),
                Some(QuantizationParameter {
                    bw_layer_in: Some(8),
                    bw_layer_out: Some(8),
                    bw_params: Some(8),
                    scale_in: vec![127.0 / (0.1 + scale)],
                    scale_out: vec![255.0 * scale],
                    scale_params: (0..c.num_output.min(3))
                        .map(|k| 127.0 / (scale + k as f32 * 1e-7))
                        .collect(),
                    is_negative_input: Some(i % 2 == 0),
                    ..Default::default()
                }),
            );
        }
    }
    table
}

fn shapes(model: &Model) -> Vec<(String, String, Option<Vec<usize>>)> {
    let net = &model.net;
    net.values
        .iter()
        .map(|v| {
            (
                net.layers[v.producer].name.clone(),
                v.name.clone(),
                v.shape.clone(),
            )
        })
        .collect()
}

#[test]
fn round_trip_on_every_fixture_to_another_folder() {
    for dir in common::fixture_dirs() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        for net_name in ["deploy", "test"] {
            let path = dir.join(format!("{net_name}.prototxt"));
            let model = common::load(&path, None).unwrap();
            let table = table_for(&model);
            assert!(!table.is_empty());
            let out_dir = common::scratch(&format!("export_{name}_{net_name}"));
            let out = out_dir.join("quantized.prototxt");
            let notes = export::write(&model.prototxt, &table, &out).unwrap();
            let back =
                common::load(&out, None).unwrap_or_else(|e| panic!("{name}/{net_name}: {e}"));
            // Same net, same shapes (data paths still resolve from the new folder), plus the parameters.
            assert_eq!(shapes(&back), shapes(&model), "{name}/{net_name}");
            for l in &back.net.layers {
                assert_eq!(
                    l.proto.quantization_param.as_ref(),
                    table.get(&l.name).and_then(Option::as_ref),
                    "{}",
                    l.name
                );
            }
            if net_name == "test" {
                assert!(
                    notes.iter().any(|n| n.contains("source")),
                    "{name}: {notes:?}"
                );
            }
        }
    }
}

#[test]
fn everything_but_the_blocks_is_kept_as_written() {
    let dir = common::scratch("export_keep");
    let src = common::SMALL_NET.replace(
        "layer { name: \"relu1\"",
        "# keep this comment\nlayer { name: \"relu1\"",
    );
    let path = common::write(&dir, "small.prototxt", &src);
    let proto = Prototxt::read(&path).unwrap();
    let q = QuantizationParameter {
        bw_layer_in: Some(8),
        scale_in: vec![0.1],
        ..Default::default()
    };
    let table = QuantTable::from([
        ("conv1".to_string(), Some(q.clone())),
        ("fc".to_string(), Some(q)),
    ]);
    let out = export::quantized_text(&proto, &table, &dir).unwrap().text;
    assert!(
        out.contains("  quantization_param {\n    bw_layer_in: 8\n    scale_in: 0.1\n  }\n}"),
        "{out}"
    );
    // The one-line fc layer gets the block inline.
    assert!(out.contains("inner_product_param { num_output: 5 } quantization_param { bw_layer_in: 8 scale_in: 0.1 } }"), "{out}");
    assert!(out.contains("# keep this comment"));
    // Removing the inserted blocks gives the original text back exactly.
    let without: String = out
        .replace(
            "  quantization_param {\n    bw_layer_in: 8\n    scale_in: 0.1\n  }\n",
            "",
        )
        .replace("quantization_param { bw_layer_in: 8 scale_in: 0.1 } ", "");
    assert_eq!(without, src);
}

#[test]
fn existing_blocks_are_replaced_or_removed() {
    let Some(root) = common::fixtures() else {
        return;
    };
    let path = root.join("cifar10_quick/reference/intel_int8/test_quantized.prototxt");
    let proto = Prototxt::read(&path).unwrap();
    let layers: Vec<String> = proto
        .param
        .layer
        .iter()
        .filter(|l| l.quantization_param.is_some())
        .map(|l| l.name().to_string())
        .collect();
    assert_eq!(layers.len(), 2);
    let new = QuantizationParameter {
        bw_layer_in: Some(8),
        bw_layer_out: Some(8),
        scale_out: vec![3.25],
        ..Default::default()
    };
    let table = QuantTable::from([
        (layers[0].clone(), Some(new.clone())),
        (layers[1].clone(), None),
    ]);
    let dir = path.parent().unwrap();
    let text = export::quantized_text(&proto, &table, dir).unwrap().text;
    let back = Prototxt::from_text(text.clone(), Path::new("x.prototxt")).unwrap();
    let get = |n: &str| {
        back.param
            .layer
            .iter()
            .find(|l| l.name() == n)
            .unwrap()
            .quantization_param
            .clone()
    };
    assert_eq!(get(&layers[0]), Some(new));
    assert_eq!(get(&layers[1]), None);
    assert_eq!(text.matches("quantization_param").count(), 1);
}

#[test]
fn floats_are_written_so_they_read_back_identically() {
    let dir = common::scratch("export_floats");
    let path = common::write(&dir, "small.prototxt", common::SMALL_NET);
    let proto = Prototxt::read(&path).unwrap();
    let values: Vec<f32> = (1..200)
        .map(|i| (i as f32).powf(1.7) / 7.3 + 1.0 / i as f32)
        .chain([1e-9, 3.4e38, 0.1, 1.0 / 3.0])
        .collect();
    let q = QuantizationParameter {
        scale_params: values.clone(),
        ..Default::default()
    };
    let text = export::quantized_text(
        &proto,
        &QuantTable::from([("conv1".to_string(), Some(q))]),
        &dir,
    )
    .unwrap()
    .text;
    let back = Prototxt::from_text(text, &path).unwrap();
    let got = back.param.layer[1]
        .quantization_param
        .as_ref()
        .unwrap()
        .scale_params
        .clone();
    assert_eq!(
        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        values.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn opencv_clip_is_dropped_with_a_note() {
    let Some(root) = common::fixtures() else {
        return;
    };
    let text = std::fs::read_to_string(root.join("ssd_face_res10/deploy.prototxt")).unwrap();
    let with_clip = text.replacen(
        "detection_output_param {",
        "detection_output_param {\n    clip: 1",
        1,
    );
    let dir = common::scratch("export_clip");
    let path = common::write(&dir, "deploy.prototxt", &with_clip);
    let proto = Prototxt::read(&path).unwrap();
    let exported = export::quantized_text(&proto, &QuantTable::new(), &dir).unwrap();
    assert_eq!(exported.text, text);
    assert!(exported.notes.iter().any(|n| n.contains("clip")));
}

#[test]
fn the_model_is_never_overwritten_and_unknown_layers_are_refused() {
    let dir = common::scratch("export_refuse");
    let path = common::write(&dir, "small.prototxt", common::SMALL_NET);
    let proto = Prototxt::read(&path).unwrap();
    let q = QuantizationParameter::default();
    let err = export::write(
        &proto,
        &QuantTable::from([("conv1".to_string(), Some(q.clone()))]),
        &path,
    )
    .unwrap_err();
    assert!(err.to_string().contains("the model itself"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), common::SMALL_NET);
    let err = export::quantized_text(
        &proto,
        &QuantTable::from([("nope".to_string(), Some(q))]),
        &dir,
    )
    .unwrap_err();
    assert!(err.to_string().contains("'nope'"), "{err}");
    // No temporary files are left behind.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
}
