//! INT8 execution against Intel Caffe's own results (each fixture's reference/intel_int8): the INT8
//! forward of `deploy_quantized.prototxt` on `reference/input.npy` gives the blobs Intel Caffe held
//! (bit for bit where they are INT8 codes; the FP32 layers after the last INT8 one to float rounding),
//! and Intel's `test_quantized.prototxt` evaluates to Intel Caffe's INT8 accuracy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use int8cal::engine::feed::{ArrayFeed, DataFeed};
use int8cal::engine::session::NoObserver;
use int8cal::engine::{Plan, Session};
use int8cal::model::LayerKind;
use ndarray::ArrayD;
use ndarray_npy::{NpzReader, ReadNpyExt};

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn int8_blobs_are_intel_caffes() {
    let mut checked = 0;
    for dir in common::fixture_dirs() {
        let intel = dir.join("reference/intel_int8");
        if !intel.join("blobs.npz").is_file() {
            continue;
        }
        let model = common::load(
            &intel.join("deploy_quantized.prototxt"),
            Some(&dir.join("weights.caffemodel")),
        )
        .unwrap();
        let x =
            ArrayD::<f32>::read_npy(std::fs::File::open(dir.join("reference/input.npy")).unwrap())
                .unwrap();
        let plan = Plan::new_int8(&model.net, Some(x.shape()[0])).unwrap();
        let mut feed = ArrayFeed::default();
        let input = model
            .net
            .layers
            .iter()
            .find(|l| matches!(l.kind, LayerKind::Input { .. }))
            .unwrap();
        feed.arrays.insert(input.tops[0], x);
        let mut session = Session::new(&plan);
        session.forward(&mut feed, &mut NoObserver).unwrap();
        // Without dequantized views (as `eval` and `bench` run), INT8 outputs only a Concat reads
        // go straight into its buffer, a Dropout passes codes on, an FP32 Pooling read only by
        // INT8 convolutions stores their codes, and an FP32 convolution read only by such MAX
        // Poolings stores those codes too (SqueezeNet has all four); the net's outputs must not
        // change.
        let mut lean = Session::new(&plan);
        lean.set_dequantized_views(false);
        lean.forward(&mut feed, &mut NoObserver).unwrap();
        for v in plan.outputs() {
            assert_eq!(
                lean.value(v),
                session.value(v),
                "{}: output {v}",
                dir.display()
            );
        }
        let mut refs =
            NpzReader::new(std::fs::File::open(intel.join("blobs.npz")).unwrap()).unwrap();
        let index = json(&intel.join("blobs_index.json"));
        let mut worst = BTreeMap::new();
        for (blob, key) in index.as_object().unwrap() {
            let want: ArrayD<f32> = refs
                .by_name(&format!("{}.npy", key.as_str().unwrap()))
                .unwrap();
            let got = session
                .blob(blob)
                .unwrap_or_else(|| panic!("{blob} not computed"));
            assert_eq!(got.shape(), want.shape(), "{}: {blob}", dir.display());
            let top = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let diff = got
                .iter()
                .zip(&want)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            // Codes are equal; the FP32 tail (InnerProduct, Softmax) differs by float rounding only.
            assert!(
                diff <= 1e-5 * top.max(1e-6),
                "{}: {blob}: max difference {diff} of {top}",
                dir.display()
            );
            worst.insert(blob.clone(), diff / top.max(1e-30));
        }
        eprintln!(
            "{}: largest difference per blob, relative to its max: {worst:?}",
            dir.display()
        );
        checked += 1;
    }
    assert!(
        checked >= 6 || common::fixtures().is_none(),
        "{checked} fixtures with Intel blobs"
    );
}

/// The mean of each scalar output over Intel's iterations of a quantized TEST prototxt.
fn eval(prototxt: &Path, weights: &Path, iterations: usize) -> BTreeMap<String, f64> {
    let model = common::load(prototxt, Some(weights)).unwrap();
    let plan = Plan::new_int8(&model.net, None).unwrap();
    let mut feed = DataFeed::start(&plan, prototxt.parent().unwrap()).unwrap();
    let mut session = Session::new(&plan);
    let outputs: Vec<usize> = plan
        .outputs()
        .into_iter()
        .filter(|&v| plan.shapes[v].iter().product::<usize>() == 1)
        .collect();
    let mut sums = BTreeMap::new();
    for _ in 0..iterations {
        session.forward(&mut feed, &mut NoObserver).unwrap();
        for &v in &outputs {
            *sums.entry(model.net.values[v].name.clone()).or_insert(0.0) +=
                f64::from(session.value(v).iter().next().copied().unwrap());
        }
    }
    sums.values_mut().for_each(|s| *s /= iterations as f64);
    sums
}

#[test]
fn intels_quantized_files_evaluate_to_intel_caffes_int8_accuracy() {
    // SqueezeNet's top-1 depends on the summation order of its FP32 `conv1` (two of 500 images):
    // Caffe's order gives 0.588, MKL-DNN's (`SumOrder::MklDnn`) Intel's 0.584.
    for name in [
        "lenet_mnist",
        "cifar10_quick",
        "resnet8_cifar",
        "mobilenet_cifar",
        "squeezenet_v1.0_dc",
    ] {
        let Some(fixtures) = common::fixtures() else {
            return;
        };
        let dir = fixtures.join(name);
        let intel = dir.join("reference/intel_int8");
        let want = json(&intel.join("accuracy.json"));
        let iterations = want["iterations"].as_u64().unwrap() as usize;
        let got = eval(
            &intel.join("test_quantized.prototxt"),
            &dir.join("weights.caffemodel"),
            iterations,
        );
        for (blob, v) in want["blobs"].as_object().unwrap() {
            let (want, got) = (v.as_f64().unwrap(), got[blob]);
            let tolerance = if blob == "loss" {
                0.003 * want.abs().max(1.0)
            } else {
                0.003
            };
            assert!(
                (got - want).abs() <= tolerance,
                "{name}: {blob} {got} against Intel Caffe's {want}"
            );
        }
    }
}

#[test]
fn the_int8_report_gives_isolated_and_cumulative_sqnr_per_int8_layer() {
    let Some(fixtures) = common::fixtures() else {
        return;
    };
    let dir = fixtures.join("resnet8_cifar");
    let prototxt = dir.join("reference/intel_int8/test_quantized.prototxt");
    let model = common::load(&prototxt, Some(&dir.join("weights.caffemodel"))).unwrap();
    let plan = Plan::new_int8(&model.net, None).unwrap();
    let mut feed = DataFeed::start(&plan, prototxt.parent().unwrap()).unwrap();
    let report = int8cal::engine::sqnr::int8_report(&model.net, None, 1, &mut feed).unwrap();
    // The 7 layers Intel ran in INT8, each compared at the output it stands for.
    let names: Vec<&str> = report.iter().map(|l| l.layer.as_str()).collect();
    assert_eq!(names.len(), 7, "{names:?}");
    assert_eq!(
        report[3].blob, "res2",
        "res2_branch1 stands for the fused res2"
    );
    for l in &report {
        assert!(
            l.cumulative_sqnr_db.is_finite() && l.cumulative_sqnr_db > 10.0,
            "{l:?}"
        );
    }
    // Nothing before the first INT8 layer is quantized: both measures are the same.
    assert_eq!(
        report[0].isolated_sqnr_db,
        Some(report[0].cumulative_sqnr_db)
    );
    // Alone, res2_branch1 would add an FP32 residual, which Intel runs in FP32: no isolated figure.
    assert_eq!(report[3].isolated_sqnr_db, None);
}

#[test]
fn bad_quantization_parameters_name_the_layer_and_foreign_ones_run_fp32() {
    let Some(fixtures) = common::fixtures() else {
        return;
    };
    let dir = fixtures.join("lenet_mnist");
    let text = std::fs::read_to_string(dir.join("reference/intel_int8/deploy_quantized.prototxt"))
        .unwrap();
    let scratch = common::scratch("int8_bad_params");
    let plan_error = |name: &str, edited: String| -> Option<String> {
        let path = common::write(&scratch, name, edited);
        let model = common::load(&path, Some(&dir.join("weights.caffemodel"))).unwrap();
        Plan::new_int8(&model.net, None)
            .err()
            .map(|e| e.to_string())
    };
    for (what, from, to) in [
        ("zero scale", "scale_in: 48.89236", "scale_in: 0"),
        ("NaN scale", "scale_params: 401.6109", "scale_params: nan"),
        (
            "two weight scales for 50 outputs",
            "scale_params: 401.6109",
            "scale_params: 1 scale_params: 2",
        ),
        ("16 bits", "bw_layer_out: 32", "bw_layer_out: 16"),
    ] {
        assert!(text.contains(from));
        let err = plan_error("bad.prototxt", text.replace(from, to))
            .unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(
            err.contains("layer 'conv2'") && err.contains("quantization_param"),
            "{what}: {err}"
        );
    }
    // A block on a pooling layer: Intel runs it in FP32, and so do we, with a note.
    let on_pool = text.replacen(
        "  pooling_param {",
        "  quantization_param { bw_layer_in: 8 bw_layer_out: 8 scale_in: 1 scale_out: 1 scale_params: 1 }\n  pooling_param {",
        1,
    );
    let path = common::write(&scratch, "pool.prototxt", on_pool);
    let model = common::load(&path, Some(&dir.join("weights.caffemodel"))).unwrap();
    let plan = Plan::new_int8(&model.net, None).unwrap();
    let notes = &plan.int8.as_ref().unwrap().precision.notes;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("layer 'pool1'") && n.contains("FP32")),
        "{notes:?}"
    );
}

#[test]
fn an_int8_inner_product_computes_the_integer_definition() {
    use int8cal::engine::quant::{IntType, quantize, quantize_bias, quantize_weight};
    let Some(fixtures) = common::fixtures() else {
        return;
    };
    let dir = fixtures.join("lenet_mnist");
    let text = std::fs::read_to_string(dir.join("reference/intel_int8/deploy_quantized.prototxt"))
        .unwrap();
    // ip2 (10 outputs over ip1's 500 ReLU values) in INT8 with an FP32 output.
    let (s_in, s_w) = (20.5f32, 300.25f32);
    let edited = text.replace(
        "  inner_product_param {\n    num_output: 10\n  }",
        &format!("  inner_product_param {{\n    num_output: 10\n  }}\n  quantization_param {{ bw_layer_in: 8 bw_layer_out: 32 bw_params: 8 scale_in: {s_in} scale_out: 1 scale_params: {s_w} }}"),
    );
    assert_ne!(edited, text);
    let scratch = common::scratch("int8_ip");
    let path = common::write(&scratch, "ip.prototxt", edited);
    let model = common::load(&path, Some(&dir.join("weights.caffemodel"))).unwrap();
    let x = ArrayD::<f32>::read_npy(std::fs::File::open(dir.join("reference/input.npy")).unwrap())
        .unwrap();
    let plan = Plan::new_int8(&model.net, Some(x.shape()[0])).unwrap();
    assert_eq!(
        plan.int8
            .as_ref()
            .unwrap()
            .precision
            .gemm_layers(&model.net),
        (4, 2)
    );
    let mut feed = ArrayFeed::default();
    feed.arrays.insert(model.net.layers[0].tops[0], x);
    let mut session = Session::new(&plan);
    session.forward(&mut feed, &mut NoObserver).unwrap();
    let ip1 = session.blob("ip1").unwrap().clone();
    let ip2 = session.blob("ip2").unwrap();
    let l = model.net.layers.iter().find(|l| l.name == "ip2").unwrap();
    let (w, b) = (&l.blobs[0].data, &l.blobs[1].data);
    let k = 500;
    for (n, row) in ip1.as_slice().unwrap().chunks(k).enumerate() {
        for o in 0..10 {
            let acc: i32 = (0..k)
                .map(|p| {
                    quantize(row[p], s_in, IntType::U8)
                        * i32::from(quantize_weight(w.as_slice().unwrap()[o * k + p], s_w))
                })
                .sum();
            let q_b = quantize_bias(b.as_slice().unwrap()[o], s_in, s_w);
            let want = (acc as f32 + q_b as f32) * (1.0 / (s_in * s_w));
            assert_eq!(ip2[[n, o]], want, "image {n} output {o}");
        }
    }
}

/// References for SQNR are captured as each layer writes its value: a value that a BatchNorm then
/// normalises in place is seen before it is (the FP32 plan folds such layers into the producer).
#[test]
fn references_see_a_value_before_an_in_place_batch_norm_rewrites_it() {
    use int8cal::caffe::{BlobProto, BlobShape, LayerParameter, NetParameter};
    use prost::Message;
    let dir = common::scratch("unfused_reference");
    let text = r#"name: "sum_bn"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 1 dim: 2 } } }
layer { name: "sum" type: "Eltwise" bottom: "data" bottom: "data" top: "sum" }
layer { name: "bn" type: "BatchNorm" bottom: "sum" top: "sum" }
"#;
    let prototxt = common::write(&dir, "net.prototxt", text);
    // Mean 1, variance 4 (ε aside), factor 1: the BatchNorm maps 2x to (2x − 1)/2.
    let blob = |v: Vec<f32>| BlobProto {
        shape: Some(BlobShape {
            dim: vec![v.len() as i64],
        }),
        data: v,
        ..Default::default()
    };
    let weights = NetParameter {
        layer: vec![LayerParameter {
            name: Some("bn".into()),
            r#type: Some("BatchNorm".into()),
            blobs: vec![blob(vec![1.0, 1.0]), blob(vec![4.0, 4.0]), blob(vec![1.0])],
            ..Default::default()
        }],
        ..Default::default()
    };
    let w = common::write(&dir, "net.caffemodel", weights.encode_to_vec());
    let model = common::load(&prototxt, Some(&w)).unwrap();
    let net = &model.net;
    let sum = net.layers[1].tops[0];
    let x =
        ArrayD::from_shape_vec(ndarray::IxDyn(&[1, 2, 1, 2]), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    let feed = || ArrayFeed {
        arrays: [(net.layers[0].tops[0], x.clone())].into(),
    };
    let plan = Plan::new_unfused(net, None).unwrap();
    let seen = int8cal::engine::sqnr::capture(&plan, &mut feed(), &[sum]).unwrap();
    assert_eq!(
        seen[&sum].iter().copied().collect::<Vec<_>>(),
        [2.0, 4.0, 6.0, 8.0]
    );
    // The folded plan gives the same net output.
    let folded = Plan::new(net, None).unwrap();
    let mut a = Session::new(&plan);
    let mut b = Session::new(&folded);
    a.forward(&mut feed(), &mut NoObserver).unwrap();
    b.forward(&mut feed(), &mut NoObserver).unwrap();
    let out = net.layers[2].tops[0];
    assert_eq!(a.value(out), b.value(out));
}
