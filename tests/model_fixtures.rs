//! Every fixture's deploy and test nets load with their weights, and every top shape equals the
//! reference `shapes.json` (except the data-dependent tops, which get Caffe's initial shapes).

// Test helpers fail loudly by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use int8cal::model::LayerKind;

#[test]
fn every_fixture_loads_with_reference_shapes() {
    let dirs = common::fixture_dirs();
    for dir in &dirs {
        let reference: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("reference/shapes.json")).unwrap(),
        )
        .unwrap();
        for net_name in ["deploy", "test"] {
            let model = common::load(
                &dir.join(format!("{net_name}.prototxt")),
                Some(&dir.join("weights.caffemodel")),
            )
            .unwrap_or_else(|e| panic!("{}/{net_name}: {e}", dir.display()));
            let net = &model.net;
            let expected = reference[net_name].as_object().unwrap();
            let mut compared = 0;
            for (blob, dims) in expected {
                let value = net
                    .value(blob)
                    .unwrap_or_else(|| panic!("{net_name}: no blob '{blob}'"));
                if value.dynamic {
                    continue;
                }
                let want: Vec<usize> = dims
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect();
                assert_eq!(
                    value.shape.as_deref(),
                    Some(want.as_slice()),
                    "{}/{net_name}: blob '{blob}'",
                    dir.display()
                );
                compared += 1;
            }
            assert!(
                compared >= expected.len() - 3,
                "{}/{net_name}: compared only {compared}",
                dir.display()
            );
            assert!(
                net.warnings.is_empty(),
                "{}/{net_name}: {:?}",
                dir.display(),
                net.warnings
            );
            // Every layer with parameters got its weights.
            for l in &net.layers {
                if matches!(
                    l.kind,
                    LayerKind::Convolution(_)
                        | LayerKind::InnerProduct(_)
                        | LayerKind::BatchNorm(_)
                ) {
                    assert!(
                        !l.blobs.is_empty(),
                        "{net_name}: layer '{}' has no weights",
                        l.name
                    );
                }
            }
        }
    }
}

#[test]
fn batch_norm_scale_factor_blob_is_kept() {
    let Some(root) = common::fixtures() else {
        return;
    };
    let dir = root.join("resnet8_cifar");
    let model = common::load(
        &dir.join("deploy.prototxt"),
        Some(&dir.join("weights.caffemodel")),
    )
    .unwrap();
    let bn = model
        .net
        .layers
        .iter()
        .find(|l| matches!(l.kind, LayerKind::BatchNorm(_)))
        .unwrap();
    assert_eq!(bn.blobs.len(), 3);
    let factor = bn.blobs[2].data.iter().next().copied().unwrap();
    assert!((factor - 999.982).abs() < 1e-3, "{factor}");
}

#[test]
fn in_place_layers_get_distinct_values_and_shared_blobs_keep_their_producer() {
    let Some(root) = common::fixtures() else {
        return;
    };
    let dir = root.join("resnet8_cifar");
    let model = common::load(&dir.join("deploy.prototxt"), None).unwrap();
    let net = &model.net;
    let relu = net.layers.iter().find(|l| l.type_name == "ReLU").unwrap();
    assert!(relu.in_place(net, 0));
    assert_ne!(relu.bottoms[0], relu.tops[0]);
    // A residual block reads the same value in two places (Caffe's Split).
    assert!(net.values.iter().any(|v| v.consumers.len() >= 2));
}

#[test]
fn opencv_clip_field_loads_with_a_warning() {
    let Some(root) = common::fixtures() else {
        return;
    };
    let dir = root.join("ssd_face_res10");
    let text = std::fs::read_to_string(dir.join("deploy.prototxt")).unwrap();
    let with_clip = text.replacen(
        "detection_output_param {",
        "detection_output_param {\n    clip: 1",
        1,
    );
    assert_ne!(with_clip, text);
    let scratch = common::scratch("clip");
    let path = common::write(&scratch, "deploy.prototxt", &with_clip);
    let model = common::load(&path, None).unwrap();
    assert!(
        model
            .net
            .warnings
            .iter()
            .any(|w| w.contains("clip") && w.contains("OpenCV")),
        "{:?}",
        model.net.warnings
    );
}
