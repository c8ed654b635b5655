//! Scale parity with Intel's calibrator 1.1.6, flag for flag: for each fixture's default run
//! (`reference/intel_int8/`) and every stored variant (`variants/*/command.txt`; `-fu` aside, it
//! rewrites weights), sampling the compiled FP32 net and applying the rules gives Intel's
//! `quantization_param` blocks: the same layers, bit widths and `is_negative_input`, DIRECT scales
//! within 1e-4 relative and the histogram-based methods' within 2%.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use int8cal::caffe::QuantizationParameter;
use int8cal::calib::rules::{quantizable, quantization_table, sampled_blobs};
use int8cal::calib::sample::{Sampling, sample, without_quantization};
use int8cal::calib::stats::Gather;
use int8cal::calib::{CalibConfig, ScaleMethod, WeightScaling};
use int8cal::engine::Plan;
use int8cal::engine::compile::Compiled;
use int8cal::engine::feed::DataFeed;

/// Intel's flags from a stored command line, as a configuration (None with `-fu`).
fn config(command: &str) -> Option<CalibConfig> {
    let mut cfg = CalibConfig::default();
    let args: Vec<&str> = command.split_whitespace().collect();
    for (i, a) in args.iter().enumerate() {
        let value = || args.get(i + 1).copied().unwrap_or("");
        match *a {
            "-a" => {
                cfg.scale_method = match value() {
                    "KL" => ScaleMethod::Kl,
                    "MAXP" => ScaleMethod::Percentile,
                    "MA" => ScaleMethod::MovingAverage,
                    _ => ScaleMethod::Direct,
                }
            }
            "-c" if value() == "multiple" => cfg.weight_scaling = WeightScaling::Multiple,
            "-1st" => cfg.quantize_first_conv = true,
            "-fc" => cfg.int8_inner_product = true,
            "-u" => cfg.unsigned_outputs = true,
            "-fu" => return None,
            _ => {}
        }
    }
    Some(cfg)
}

/// Every run of Intel's calibrator stored for a fixture: (label, its quantized prototxt, command).
fn runs(dir: &Path) -> Vec<(String, PathBuf, String)> {
    let base = dir.join("reference/intel_int8");
    let mut out = Vec::new();
    if let Ok(notes) = std::fs::read_to_string(base.join("notes.md"))
        && let Some(line) = notes
            .lines()
            .find(|l| l.starts_with("python3 calibrator.py"))
    {
        out.push((
            "default".into(),
            base.join("test_quantized.prototxt"),
            line.into(),
        ));
    }
    let mut variants: Vec<PathBuf> = std::fs::read_dir(base.join("variants"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    variants.sort();
    for v in variants {
        let (cmd, q) = (v.join("command.txt"), v.join("test_quantized.prototxt"));
        if let (Ok(c), true) = (std::fs::read_to_string(&cmd), q.is_file()) {
            let label = v.file_name().unwrap().to_string_lossy().to_string();
            out.push((label, q, c.trim().to_string()));
        }
    }
    out
}

fn intel_table(prototxt: &Path) -> BTreeMap<String, QuantizationParameter> {
    let theirs = common::load(prototxt, None).unwrap();
    theirs
        .net
        .layers
        .iter()
        .filter_map(|l| Some((l.name.clone(), l.proto.quantization_param.clone()?)))
        .collect()
}

#[test]
fn scales_are_intels_flag_for_flag() {
    let mut checked = 0;
    for dir in common::fixture_dirs() {
        let deploy = std::fs::read_to_string(dir.join("deploy.prototxt")).unwrap();
        if runs(&dir).is_empty() || deploy.contains("\"DetectionOutput\"") {
            continue;
        }
        let test = dir.join("test.prototxt");
        let model = common::load(&test, Some(&dir.join("weights.caffemodel"))).unwrap();
        let net = without_quantization(&model.net);
        let plan = Plan::new_int8(&net, None).unwrap();
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        // One sampling serves every run: all of them sample 10 batches of every layer's blobs.
        let all = CalibConfig {
            quantize_first_conv: true,
            int8_inner_product: true,
            ..CalibConfig::default()
        };
        let layers = quantizable(&net, &all);
        let blobs = sampled_blobs(&net, &Compiled::new(&net), &layers);
        let mut feed = DataFeed::start(&plan, &dir).unwrap();
        let sampling = Sampling {
            blobs: &blobs,
            batches: all.sampling_iterations,
            wants: Gather::ALL,
            metrics: &[],
            iterations: 0,
            last_only: false,
        };
        let (stats, _) = sample(&plan, &mut feed, &sampling, &mut |_, _| Ok(())).unwrap();
        for (label, prototxt, command) in runs(&dir) {
            let Some(cfg) = config(&command) else {
                continue;
            };
            let tolerance = if cfg.scale_method == ScaleMethod::Direct {
                1e-4
            } else {
                0.02
            };
            let ours = quantization_table(&net, &stats, &cfg, &Default::default()).unwrap();
            let want = intel_table(&prototxt);
            let at = format!("{name}/{label}");
            assert_eq!(
                ours.keys().collect::<Vec<_>>(),
                want.keys().collect::<Vec<_>>(),
                "{at}: quantized layers"
            );
            let mut worst = 0.0f64;
            for (layer, w) in &want {
                let o = &ours[layer];
                let at = format!("{at}/{layer}");
                assert_eq!(o.bw_layer_in(), w.bw_layer_in(), "{at}: bw_layer_in");
                assert_eq!(o.bw_layer_out(), w.bw_layer_out(), "{at}: bw_layer_out");
                assert_eq!(o.bw_params(), w.bw_params(), "{at}: bw_params");
                assert_eq!(
                    o.is_negative_input(),
                    w.is_negative_input(),
                    "{at}: is_negative_input"
                );
                for (field, a, b) in [
                    ("scale_in", &o.scale_in, &w.scale_in),
                    ("scale_out", &o.scale_out, &w.scale_out),
                    ("scale_params", &o.scale_params, &w.scale_params),
                ] {
                    assert_eq!(a.len(), b.len(), "{at}: {field} count");
                    for (&x, &y) in a.iter().zip(b) {
                        let rel =
                            (f64::from(x) - f64::from(y)).abs() / f64::from(y.abs()).max(1e-30);
                        worst = worst.max(rel);
                        assert!(rel <= tolerance, "{at}: {field} {x} against Intel's {y}");
                    }
                }
            }
            eprintln!(
                "{at}: {} layers, largest relative scale difference {worst:e}",
                want.len()
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 5 || common::fixtures().is_none(),
        "{checked} fixtures"
    );
}
