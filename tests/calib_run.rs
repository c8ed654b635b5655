//! A whole calibration through `calib::run::Calibration`: the documented event sequence, a cancel
//! that ends the run within one batch and writes nothing, tuning that repairs a loss the calibrated
//! configuration has (its export evaluating to the reported metric), and refused settings.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use int8cal::calib::events::{Event, Stage};
use int8cal::calib::run::{CalibError, Calibration};
use int8cal::calib::tune::{Action, Stop};
use int8cal::calib::{CalibConfig, TuningStrategy};

fn fixture(name: &str) -> Option<PathBuf> {
    common::fixtures().map(|f| f.join(name))
}

fn calibration(dir: &Path, out: &Path, cfg: CalibConfig) -> Calibration {
    let mut c = Calibration::new(
        dir.join("test.prototxt"),
        dir.join("weights.caffemodel"),
        cfg,
    );
    c.output = Some(out.to_path_buf());
    c
}

#[test]
fn events_follow_the_documented_order() {
    let Some(dir) = fixture("lenet_mnist") else {
        return;
    };
    let scratch = common::scratch("calib_events");
    let out = scratch.join("q.prototxt");
    let cfg = CalibConfig {
        iterations: 12,
        sampling_iterations: 3,
        ..CalibConfig::default()
    };
    let mut c = calibration(&dir, &out, cfg);
    c.layer_sqnr = true;
    let mut events = Vec::new();
    let outcome = c.run(&mut |e| events.push(e)).unwrap();
    // Sampling with one progress per batch, the FP32 metric, statistics, the INT8 run, steps,
    // scales, finished.
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e {
            Event::Stage(Stage::Sampling) => "sampling",
            Event::Stage(Stage::Int8Eval) => "int8",
            Event::Stage(Stage::Tuning(_)) => "tuning",
            Event::Stage(Stage::Compare) => "compare",
            Event::Progress { .. } => "progress",
            Event::Fp32Metric(_) => "fp32",
            Event::LayerStats(_) => "stats",
            Event::Scale(_) => "scale",
            Event::Step(_) => "step",
            Event::Warning(_) => "warning",
            Event::Finished { .. } => "finished",
        })
        .collect();
    let mut squeezed: Vec<&str> = kinds.clone();
    squeezed.dedup();
    assert_eq!(
        squeezed,
        [
            "sampling", "progress", "fp32", "stats", "int8", "progress", "step", "scale",
            "finished"
        ],
        "{kinds:?}"
    );
    assert_eq!(kinds.iter().filter(|k| **k == "progress").count(), 12 + 12);
    let Some(Event::Finished { fp32, int8 }) = events.last() else {
        panic!("no Finished last");
    };
    assert_eq!(
        (*fp32, *int8),
        (outcome.report.fp32_accuracy, outcome.report.int8_accuracy)
    );
    // Histograms reach the app with every method's threshold.
    let stats = events.iter().find_map(|e| match e {
        Event::LayerStats(s) => Some(s),
        _ => None,
    });
    let stats = stats.unwrap();
    assert!(stats.histogram.is_some() && stats.thresholds.len() == 5);
    assert!(out.is_file());
    let layer = &outcome.report.layers[0];
    assert!(layer.sqnr_db_isolated.is_some_and(|s| s > 20.0));
    assert!(layer.sqnr_db_cumulative.is_some());
}

#[test]
fn cancel_stops_within_one_batch_and_writes_nothing() {
    let Some(dir) = fixture("cifar10_quick") else {
        return;
    };
    let scratch = common::scratch("calib_cancel");
    let out = scratch.join("q.prototxt");
    let c = calibration(&dir, &out, CalibConfig::default());
    let cancel = c.cancel.clone();
    let mut batches_after = 0;
    let r = c.run(&mut |e| {
        if let Event::Progress { done, .. } = e {
            if cancel.load(Ordering::Relaxed) {
                batches_after += 1;
            }
            if done == 2 {
                cancel.store(true, Ordering::Relaxed);
            }
        }
    });
    assert!(matches!(r, Err(CalibError::Cancelled)), "{r:?}");
    assert_eq!(batches_after, 0);
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
}

#[test]
fn tuning_repairs_what_the_calibrated_configuration_loses() {
    // MobileNet with Intel's defaults loses about 12 points; a few tuning steps must recover
    // some of it, each kept step never worse than the one before.
    let Some(dir) = fixture("mobilenet_cifar") else {
        return;
    };
    let scratch = common::scratch("calib_tuning");
    let out = scratch.join("q.prototxt");
    let cfg = CalibConfig {
        iterations: 4,
        sampling_iterations: 4,
        blob_name: "accuracy".into(),
        ..CalibConfig::default()
    };
    let mut c = calibration(&dir, &out, cfg);
    c.max_steps = 4;
    let outcome = c.run(&mut |_| {}).unwrap();
    let r = &outcome.report;
    assert_eq!(r.steps[0].action, Action::Calibrate);
    assert!(r.steps.len() <= 5);
    assert!(
        r.int8_accuracy > r.steps[0].accuracy + 0.01,
        "{:?}",
        r.steps
    );
    let mut best = r.steps[0].accuracy;
    for s in r.steps.iter().skip(1).filter(|s| s.kept) {
        assert!(s.accuracy >= best - 1e-6, "{:?}", r.steps);
        best = s.accuracy;
    }
    assert_eq!(best, r.int8_accuracy);
    assert!(matches!(r.stop, Stop::MaxSteps | Stop::WithinTolerance));
    let got = common::evaluate(&out, &dir.join("weights.caffemodel"), "accuracy", 4);
    assert!(
        (got - r.int8_accuracy).abs() < 1e-9,
        "{got} vs {}",
        r.int8_accuracy
    );
}

#[test]
fn tuning_none_measures_once_with_intels_rules() {
    let Some(dir) = fixture("cifar10_quick") else {
        return;
    };
    let scratch = common::scratch("calib_none");
    let out = scratch.join("q.prototxt");
    let cfg = CalibConfig {
        iterations: 3,
        tuning: TuningStrategy::None,
        accuracy_loss: 0.0,
        ..CalibConfig::default()
    };
    let outcome = calibration(&dir, &out, cfg).run(&mut |_| {}).unwrap();
    assert_eq!(outcome.report.steps.len(), 1);
    assert_eq!(outcome.report.stop, Stop::NotTuned);
}

#[test]
fn refused_settings_name_the_problem() {
    let Some(dir) = fixture("lenet_mnist") else {
        return;
    };
    let scratch = common::scratch("calib_refused");
    let out = scratch.join("q.prototxt");
    let run = |cfg: CalibConfig, out: &Path| {
        calibration(&dir, out, cfg)
            .run(&mut |_| {})
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let e = run(
        CalibConfig {
            iterations: 0,
            ..CalibConfig::default()
        },
        &out,
    );
    assert!(e.contains("Iterations"), "{e}");
    let e = run(
        CalibConfig {
            blob_name: "acc".into(),
            ..CalibConfig::default()
        },
        &out,
    );
    assert!(e.contains("accuracy"), "candidates listed: {e}");
    let e = run(
        CalibConfig {
            accuracy_loss: 1.0,
            ..CalibConfig::default()
        },
        &out,
    );
    assert!(e.contains("AccuracyLoss"), "{e}");
    // The model itself as the output.
    let e = run(CalibConfig::default(), &dir.join("test.prototxt"));
    assert!(e.contains("overwrite an input"), "{e}");
    // An output folder that does not exist: nothing is written anywhere.
    let e = run(CalibConfig::default(), &scratch.join("missing/q.prototxt"));
    assert!(e.contains("missing"), "{e}");
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
}

#[test]
fn a_layer_whose_input_is_all_zero_is_kept_fp32_with_a_warning() {
    // LeNet with conv1's weights and bias zeroed: conv2 reads only zeros.
    let Some(dir) = fixture("lenet_mnist") else {
        return;
    };
    let scratch = common::scratch("calib_zero");
    let weights = scratch.join("zero.caffemodel");
    let m = common::load(
        &dir.join("test.prototxt"),
        Some(&dir.join("weights.caffemodel")),
    )
    .unwrap();
    let conv1 = m.net.layer("conv1").unwrap();
    let edits: Vec<_> = conv1
        .blobs
        .iter()
        .enumerate()
        .map(|(i, b)| int8cal::model::caffemodel::BlobEdit {
            layer: "conv1".into(),
            blob: i,
            values: vec![0.0; b.data.len()],
        })
        .collect();
    int8cal::model::caffemodel::write_edited(&dir.join("weights.caffemodel"), &weights, &edits)
        .unwrap();
    let cfg = CalibConfig {
        iterations: 2,
        sampling_iterations: 2,
        tuning: TuningStrategy::None,
        ..CalibConfig::default()
    };
    let mut c = Calibration::new(dir.join("test.prototxt"), weights, cfg);
    c.output = Some(scratch.join("q.prototxt"));
    let mut warnings = Vec::new();
    let outcome = c
        .run(&mut |e| {
            if let Event::Warning(w) = e {
                warnings.push(w);
            }
        })
        .unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("conv2") && w.contains("all zero")),
        "{warnings:?}"
    );
    assert!(outcome.table.is_empty());
    assert!(outcome.report.layers.iter().all(|l| l.scale_in.is_none()));
}

#[test]
fn detection_calibration_avoids_intels_quirks_and_the_export_gives_its_map() {
    // Intel's rules give mAP 0.774 on the 9 photos when run as Intel Caffe runs them (BatchNorms on
    // raw int8 codes, a residual read in the wrong layout); steering around both keeps 1.0.
    let Some(dir) = fixture("ssd_face_res10") else {
        return;
    };
    let scratch = common::scratch("calib_detection");
    let out = scratch.join("q.prototxt");
    let cfg = CalibConfig {
        iterations: 9,
        detection: true,
        ..CalibConfig::default()
    };
    let outcome = calibration(&dir, &out, cfg).run(&mut |_| {}).unwrap();
    let r = &outcome.report;
    assert_eq!(r.metric_blob, "detection_eval");
    assert!((r.fp32_accuracy - 1.0).abs() < 1e-6, "{}", r.fp32_accuracy);
    let avoided = r.avoided_quirks.join("\n");
    for (layer, because) in [
        ("layer_64_1_conv2_h", "wrong memory layout"),
        ("layer_128_1_conv2", "BatchNorm \"layer_256_1_bn1\""),
        ("layer_256_1_conv2", "BatchNorm \"layer_512_1_bn1\""),
        ("layer_512_1_conv2_h", "BatchNorm \"last_bn_h\""),
    ] {
        assert!(
            avoided
                .lines()
                .any(|l| l.contains(&format!("\"{layer}\"")) && l.contains(because)),
            "{layer}: {avoided}"
        );
    }
    let layer = |name: &str| r.layers.iter().find(|l| l.name == name).unwrap();
    assert!(layer("layer_64_1_conv2_h").avoids_quirk && !layer("layer_64_1_conv2_h").reverted);
    assert!(
        layer("layer_128_1_conv2").avoids_quirk && layer("layer_128_1_conv2").scale_in.is_some()
    );
    assert!(r.steps[0].accuracy > 0.99, "{:?}", r.steps);
    let classes: Vec<(i32, f64)> = r.ap_per_class.iter().map(|a| (a.label, a.fp32)).collect();
    assert_eq!(classes.len(), 1);
    assert_eq!(classes[0].0, 1);
    assert!((r.ap_per_class[0].int8 - r.int8_accuracy).abs() < 1e-9);
    assert!(
        r.fp32_accuracy - r.int8_accuracy <= 0.01,
        "{}",
        r.int8_accuracy
    );
    // The written file, evaluated afresh, gives the reported mAP.
    let m = common::load(&out, Some(&dir.join("weights.caffemodel"))).unwrap();
    let plan = int8cal::engine::Plan::new_int8(&m.net, None).unwrap();
    let map = common::detection_map(&plan, &scratch, 9);
    assert!(
        (map - r.int8_accuracy).abs() < 1e-9,
        "{map} vs {}",
        r.int8_accuracy
    );
    // Re-evaluating with a pin measures the AP per class again.
    let cfg = CalibConfig {
        iterations: 9,
        detection: true,
        ..CalibConfig::default()
    };
    let pins = ["layer_64_1_conv1_h".to_string()].into();
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let (table, m) = outcome
        .retained
        .reevaluate(&cfg, &pins, &cancel, &mut |_| {})
        .unwrap();
    assert!(!table.contains_key("layer_64_1_conv1_h"));
    assert_eq!(m.ap_per_class.keys().copied().collect::<Vec<_>>(), [1]);
    assert!((m.ap_per_class[&1] - m.values[0]).abs() < 1e-12);
}
