//! `-fu` (first convolution fed u8 by the data layer, spec §2.12/§4.6) on `resnet8_cifar`, which meets
//! Intel's preconditions: the two files we write, evaluated by our INT8 engine, give what Intel Caffe
//! gave for Intel's own pair; the rewritten fields match Intel's file; nets without the preconditions
//! are refused before any work.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use int8cal::calib::run::Calibration;
use int8cal::calib::{CalibConfig, TuningStrategy};

fn json_accuracy(path: &Path) -> f64 {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["blobs"]["accuracy"].as_f64().unwrap()
}

#[test]
fn force_u8_pair_evaluates_as_intels_did() {
    let Some(dir) = common::fixtures().map(|f| f.join("resnet8_cifar")) else {
        return;
    };
    let scratch = common::scratch("calib_force_u8");
    let out = scratch.join("test_quantized.prototxt");
    for (clx, variant) in [(true, "force_u8_clx"), (false, "force_u8")] {
        let cfg = CalibConfig {
            iterations: 1,
            quantize_first_conv: true,
            first_conv_force_u8: true,
            clx,
            tuning: TuningStrategy::None,
            ..CalibConfig::default()
        };
        let mut c = Calibration::new(
            dir.join("test.prototxt"),
            dir.join("weights.caffemodel"),
            cfg,
        );
        c.output = Some(out.clone());
        let files = c.run(&mut |_| {}).unwrap().force_u8.unwrap();
        assert_eq!(
            files.prototxt,
            scratch.join("test_quantized_force_u8.prototxt")
        );
        assert_eq!(files.weights, scratch.join("weights_new.caffemodel"));
        let reference = dir.join("reference/intel_int8/variants").join(variant);
        let want = json_accuracy(&reference.join("accuracy_force_u8.json"));
        let got = common::evaluate(&files.prototxt, &files.weights, "accuracy", 50);
        assert!(
            (got - want).abs() <= 0.003,
            "{variant}: {got} vs Intel Caffe {want}"
        );
        // The rewritten layers as Intel's tool wrote them.
        let ours = common::load(&files.prototxt, None).unwrap();
        let intel =
            common::load(&reference.join("test_quantized_force_u8.prototxt"), None).unwrap();
        for name in ["cifar", "conv1"] {
            let (a, b) = (
                ours.net.layer(name).unwrap(),
                intel.net.layer(name).unwrap(),
            );
            assert_eq!(a.proto.transform_param, b.proto.transform_param, "{name}");
            assert_eq!(
                a.proto.convolution_param, b.proto.convolution_param,
                "{name}"
            );
            let (qa, qb) = (&a.proto.quantization_param, &b.proto.quantization_param);
            assert_eq!(
                qa.as_ref().map(|q| q.force_u8_input),
                qb.as_ref().map(|q| q.force_u8_input)
            );
            let close = |x: &[f32], y: &[f32]| {
                x.len() == y.len()
                    && x.iter()
                        .zip(y)
                        .all(|(a, b)| (a - b).abs() <= 1e-4 * b.abs())
            };
            if let (Some(qa), Some(qb)) = (qa, qb) {
                assert!(
                    close(&qa.scale_params, &qb.scale_params),
                    "{name}: weight scales"
                );
                assert!(close(&qa.scale_in, &qb.scale_in), "{name}: scale_in");
                assert_eq!(qa.is_negative_input, qb.is_negative_input);
            }
        }
    }
}

#[test]
fn force_u8_preconditions_are_checked_before_any_work() {
    let Some(fx) = common::fixtures() else {
        return;
    };
    let scratch = common::scratch("calib_force_u8_refused");
    let cfg = CalibConfig {
        quantize_first_conv: true,
        first_conv_force_u8: true,
        ..CalibConfig::default()
    };
    // LeNet's data layer has a scale but no mean values.
    let dir = fx.join("lenet_mnist");
    let mut c = Calibration::new(
        dir.join("test.prototxt"),
        dir.join("weights.caffemodel"),
        cfg,
    );
    c.output = Some(scratch.join("q.prototxt"));
    let mut events = 0;
    let e = c.run(&mut |_| events += 1).unwrap_err().to_string();
    assert!(e.contains("-fu") && e.contains("mean_value"), "{e}");
    assert_eq!(events, 0, "refused before sampling");
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
}
