//! `int8cal calibrate` as Intel's users type it: multi-letter single-dash flags, unique prefixes of
//! long options, `-p`, `-q`, `-f`/`-t` on a net with Concats, the report's shape, and the flags
//! refused with a reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use clap::Parser;
use int8cal::caffe::QuantizationParameter;
use int8cal::cli::calibrate::intel_spellings;
use int8cal::cli::{Cli, run};

fn int8cal(args: &[String]) -> anyhow::Result<std::process::ExitCode> {
    let all = std::iter::once("int8cal".to_string()).chain(args.iter().cloned());
    run(Cli::try_parse_from(intel_spellings(all))?)
}

fn args(dir: &Path, extra: &[&str]) -> Vec<String> {
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let mut a = vec![
        "calibrate".to_string(),
        "-m".into(),
        path(&dir.join("test.prototxt")),
        "-w".into(),
        path(&dir.join("weights.caffemodel")),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// The blocks of a written prototxt, by layer name.
fn blocks(path: &Path) -> Vec<(String, QuantizationParameter)> {
    let m = common::load(path, None).unwrap();
    m.net
        .layers
        .iter()
        .filter_map(|l| Some((l.name.clone(), l.proto.quantization_param.clone()?)))
        .collect()
}

#[test]
fn intel_spellings_and_prefixes_are_accepted() {
    let Some(dir) = common::fixtures().map(|f| f.join("lenet_mnist")) else {
        return;
    };
    let scratch = common::scratch("calib_cli_spellings");
    let out = scratch.join("q.prototxt");
    let o = out.to_string_lossy().into_owned();
    // -1st quantizes conv1 too; -q needs no metric blob and runs no accuracy.
    let code = int8cal(&args(
        &dir,
        &[
            "--iter",
            "2",
            "--sampling_it",
            "2",
            "-1st",
            "-ss",
            "-uff",
            "-ucac",
            "-q",
            "-r",
            "/x",
            "-o",
            &o,
        ],
    ))
    .unwrap();
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    let names: Vec<String> = blocks(&out).into_iter().map(|b| b.0).collect();
    assert_eq!(names, ["conv1", "conv2"]);
}

#[test]
fn performance_model_sets_every_convolution_but_the_first_to_scale_one() {
    let Some(dir) = common::fixtures().map(|f| f.join("cifar10_quick")) else {
        return;
    };
    let scratch = common::scratch("calib_cli_p");
    let out = scratch.join("dummy.prototxt");
    let mut a = args(&dir, &["-p", "-o", &out.to_string_lossy()]);
    a.drain(3..5); // -p needs no weights
    int8cal(&a).unwrap();
    let b = blocks(&out);
    assert_eq!(b.len(), 2);
    for (_, q) in b {
        assert_eq!(
            (q.scale_in, q.scale_out, q.scale_params),
            (vec![1.0], vec![1.0], vec![1.0])
        );
    }
}

#[test]
fn concat_flags_act_on_the_producers_of_each_concat() {
    let Some(dir) = common::fixtures().map(|f| f.join("squeezenet_v1.0_dc")) else {
        return;
    };
    let scratch = common::scratch("calib_cli_concat");
    let run_with = |flag: &str| {
        let out = scratch.join(format!("q{flag}.prototxt"));
        let o = out.to_string_lossy().into_owned();
        let mut extra = vec!["-s", "1", "-q", "-o", &o];
        if !flag.is_empty() {
            extra.push(flag);
        }
        int8cal(&args(&dir, &extra)).unwrap();
        blocks(&out)
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let plain = run_with("");
    let fp32 = run_with("-t");
    let unified = run_with("-f");
    let pair = ["fire5/conv1x1_2", "fire5/conv3x3_2"];
    // Without a flag the two expand convolutions feeding fire5's Concat keep their own scales.
    let out = |t: &std::collections::BTreeMap<String, QuantizationParameter>, n: &str| {
        (t[n].bw_layer_out(), t[n].scale_out[0])
    };
    assert_ne!(out(&plain, pair[0]).1, out(&plain, pair[1]).1);
    for n in pair {
        assert_eq!(out(&fp32, n), (32, 1.0), "-t: {n}");
    }
    let widest = out(&plain, pair[0]).1.min(out(&plain, pair[1]).1);
    for n in pair {
        assert_eq!(out(&unified, n), (8, widest), "-f: {n}");
    }
    // Layers that feed no Concat are untouched.
    assert_eq!(plain["fire5/conv1x1_1"], unified["fire5/conv1x1_1"]);
    assert_eq!(plain["fire5/conv1x1_1"], fp32["fire5/conv1x1_1"]);
}

#[test]
fn report_has_the_documented_shape() {
    let Some(dir) = common::fixtures().map(|f| f.join("lenet_mnist")) else {
        return;
    };
    let scratch = common::scratch("calib_cli_report");
    let out = scratch.join("q.prototxt");
    let report = scratch.join("r.json");
    let extra = [
        "-i",
        "3",
        "-o",
        &out.to_string_lossy(),
        "--report",
        &report.to_string_lossy(),
    ]
    .map(String::from);
    let mut a = args(&dir, &[]);
    a.extend(extra);
    int8cal(&a).unwrap();
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    for key in [
        "tool",
        "settings",
        "inputs",
        "metric_blob",
        "fp32_accuracy",
        "int8_accuracy",
        "steps",
        "layers",
        "timings",
    ] {
        assert!(r.get(key).is_some(), "no {key} in {r}");
    }
    assert_eq!(r["metric_blob"], "accuracy");
    // Every metric blob of the net, tuning's first, each with FP32 and INT8.
    assert_eq!(r["metrics"][0]["blob"], "accuracy");
    assert_eq!(r["metrics"][0]["int8"], r["int8_accuracy"]);
    assert!(
        r["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["fp32"].is_f64())
    );
    assert_eq!(r["inputs"]["model"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(r["steps"][0]["action"], "calibrate");
    let layer = &r["layers"][0];
    for key in [
        "name",
        "type",
        "precision_in",
        "precision_out",
        "scale_in",
        "scale_out",
        "weight_scale_min",
        "weight_scale_max",
        "method",
        "sqnr_db_isolated",
        "sqnr_db_cumulative",
        "reverted",
    ] {
        assert!(layer.get(key).is_some(), "no {key} in {layer}");
    }
    for key in ["sampling", "fp32_eval", "int8_eval", "tuning"] {
        assert!(r["timings"][key].as_f64().is_some(), "no timing {key}");
    }
}

#[test]
fn refused_flags_say_why() {
    let Some(dir) = common::fixtures().map(|f| f.join("lenet_mnist")) else {
        return;
    };
    let e = |extra: &[&str]| format!("{:#}", int8cal(&args(&dir, extra)).unwrap_err());
    assert!(e(&["-wi"]).contains("crashes"));
    let bad = e(&["-a", "entropy"]);
    assert!(bad.contains("DIRECT, KL, MAXP, MA and MSE"), "{bad}");
    assert!(e(&["-c", "multipe"]).contains("multiple"));
    assert!(e(&["--time-budget", "0"]).contains("positive"));
    let pin = e(&["--pin", "conv9"]);
    assert!(pin.contains("conv9") && pin.contains("conv2"), "{pin}");
}
