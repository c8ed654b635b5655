//! Intel Caffe's net compilation (spec §4.1) on the ResNet-8 fixture, checked against what Intel Caffe
//! itself did (the fixture's reference/intel_int8/notes.md): every BatchNorm/Scale folded, ReLUs fused
//! into their convolutions, and the Eltwise SUMs fused into the convolution that immediately precedes
//! them — the projection conv `res2_branch1` for `res2`, accumulating into `res2_branch2b`'s buffer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use int8cal::engine::compile::{Compiled, Role};

#[test]
fn resnet8_compiles_as_intel_caffe_compiled_it() {
    let Some(fixtures) = common::fixtures() else {
        return;
    };
    let model = common::load(&fixtures.join("resnet8_cifar/test.prototxt"), None).unwrap();
    let net = &model.net;
    let c = Compiled::new(net);
    let id = |name: &str| net.layers.iter().position(|l| l.name == name).unwrap();
    let value_of = |layer: &str| net.layers[id(layer)].tops[0];
    let fusion = |name: &str| {
        c.fusion(id(name))
            .unwrap_or_else(|| panic!("{name} is not fused"))
    };
    // Every convolution has its BatchNorm and Scale folded.
    for conv in [
        "conv1",
        "res1_branch2a",
        "res1_branch2b",
        "res2_branch2a",
        "res2_branch2b",
        "res2_branch1",
    ] {
        let f = fusion(conv);
        let names: Vec<&str> = f
            .folded
            .iter()
            .map(|&l| net.layers[l].name.as_str())
            .collect();
        assert_eq!(
            names,
            [format!("bn_{conv}"), format!("scale_{conv}")],
            "{conv}"
        );
    }
    // Conv + ReLU.
    for (conv, relu) in [
        ("conv1", "conv1_relu"),
        ("res1_branch2a", "res1_branch2a_relu"),
    ] {
        assert_eq!(fusion(conv).relu, Some((id(relu), 0.0)), "{conv}");
        assert_eq!(c.roles[id(relu)], Role::Absorbed(id(conv)));
    }
    // Conv + sum (+ ReLU): res1 into res1_branch2b with conv1's output as the residual...
    let s = fusion("res1_branch2b").sum.as_ref().unwrap();
    assert_eq!(
        (s.eltwise, s.residual),
        (id("res1"), value_of("conv1_relu"))
    );
    assert_eq!(fusion("res1_branch2b").relu, Some((id("res1_relu"), 0.0)));
    assert_eq!(fusion("res1_branch2b").output, value_of("res1_relu"));
    // ...and res2 into the projection res2_branch1, adding into res2_branch2b's buffer.
    let s = fusion("res2_branch1").sum.as_ref().unwrap();
    assert_eq!(
        (s.eltwise, s.residual),
        (id("res2"), value_of("scale_res2_branch2b"))
    );
    assert!(fusion("res2_branch2b").sum.is_none() && fusion("res2_branch2b").relu.is_none());
    // res3's Eltwise follows a Concat: not fused, and its ReLU stays a layer.
    assert_eq!(c.roles[id("res3")], Role::Own);
    assert_eq!(c.roles[id("res3_relu")], Role::Own);
    assert_eq!(c.roles[id("fc10")], Role::Own);
}

/// The BatchNorms of ssd_face_res10 that follow an Eltwise cannot be folded; Intel merges their Scale
/// into them and fuses a following plain ReLU, renaming the output to the ReLU's top (so `fc7`'s
/// producer is `last_bn_h`, which is what makes Intel's calibrator give `conv6_1_h` a u8 input).
#[test]
fn ssd_batch_norms_after_an_eltwise_take_their_scale_and_relu() {
    let Some(fixtures) = common::fixtures() else {
        return;
    };
    let model = common::load(&fixtures.join("ssd_face_res10/test.prototxt"), None).unwrap();
    let net = &model.net;
    let c = Compiled::new(net);
    let id = |name: &str| net.layers.iter().position(|l| l.name == name).unwrap();
    for (bn, scale, relu) in [
        ("layer_256_1_bn1", "layer_256_1_scale1", "layer_256_1_relu1"),
        ("layer_512_1_bn1", "layer_512_1_scale1", "layer_512_1_relu1"),
        ("last_bn_h", "last_scale_h", "last_relu"),
    ] {
        let f = c
            .fusion(id(bn))
            .unwrap_or_else(|| panic!("{bn} is not fused"));
        assert_eq!(f.folded, [id(scale)], "{bn}");
        assert_eq!(f.relu, Some((id(relu), 0.0)), "{bn}");
        assert_eq!(f.output, net.layers[id(relu)].tops[0], "{bn}");
        assert_eq!(c.roles[id(scale)], Role::Absorbed(id(bn)));
    }
    assert_eq!(
        net.values[c.fusion(id("last_bn_h")).unwrap().output].name,
        "fc7"
    );
}

#[test]
fn every_fixture_compiles_to_a_consistent_view() {
    for dir in common::fixture_dirs() {
        let model = common::load(&dir.join("test.prototxt"), None).unwrap();
        let c = Compiled::new(&model.net);
        for (i, role) in c.roles.iter().enumerate() {
            if let Role::Absorbed(into) = role {
                // Absorbed layers point at a fused layer that lists them, after them in no case before.
                let f = c
                    .fusion(*into)
                    .unwrap_or_else(|| panic!("{}: {i} into a non-fused layer", dir.display()));
                let listed = f.folded.contains(&i)
                    || f.relu.is_some_and(|(r, _)| r == i)
                    || f.sum.as_ref().is_some_and(|s| s.eltwise == i);
                assert!(listed && *into < i, "{}: layer {i}", dir.display());
            }
        }
    }
}

#[test]
fn folded_weights_give_the_batch_norm_and_scale_of_the_convolution() {
    let Some(fixtures) = common::fixtures() else {
        return;
    };
    let dir = fixtures.join("resnet8_cifar");
    let model = common::load(
        &dir.join("test.prototxt"),
        Some(&dir.join("weights.caffemodel")),
    )
    .unwrap();
    let net = &model.net;
    let c = Compiled::new(net);
    let blob =
        |l: usize, i: usize| -> Vec<f32> { net.layers[l].blobs[i].data.iter().copied().collect() };
    let mut checked = 0;
    for (id, l) in net.layers.iter().enumerate() {
        let Some(f) = c.fusion(id).filter(|f| !f.folded.is_empty()) else {
            continue;
        };
        let (w, b) = int8cal::engine::compile::folded_weights(net, id, &f.folded).unwrap();
        let orig = blob(id, 0);
        let outputs = b.len();
        let k = orig.len() / outputs;
        let x: Vec<f32> = (0..k).map(|i| ((i * 13 % 17) as f32 - 8.0) * 0.1).collect();
        let (bn, scale) = (f.folded[0], f.folded[1]);
        let eps = match &net.layers[bn].kind {
            int8cal::model::LayerKind::BatchNorm(p) => p.eps,
            _ => unreachable!(),
        };
        let sf = 1.0 / blob(bn, 2)[0];
        for o in 0..outputs {
            let dot = |w: &[f32]| -> f32 {
                w[o * k..(o + 1) * k]
                    .iter()
                    .zip(&x)
                    .map(|(a, b)| a * b)
                    .sum()
            };
            let conv_bias = if l.blobs.len() > 1 {
                blob(id, 1)[o]
            } else {
                0.0
            };
            // Caffe's chain: convolution, BatchNorm with the stored factor, Scale.
            let y = dot(&orig) + conv_bias;
            let y = (y - blob(bn, 0)[o] * sf) / (blob(bn, 1)[o] * sf + eps).sqrt();
            let y = y * blob(scale, 0)[o] + blob(scale, 1)[o];
            let folded = dot(&w) + b[o];
            assert!(
                (folded - y).abs() <= 1e-4 * y.abs().max(1.0),
                "{} channel {o}: {folded} vs {y}",
                l.name
            );
        }
        checked += 1;
    }
    assert_eq!(
        checked, 9,
        "every convolution of ResNet-8 has a BatchNorm and a Scale"
    );
}

/// "N layers carry quantization_param; of the E convolution / inner-product executions in one forward,
/// X used INT8 kernels" from a fixture's Intel notes: (E, X).
fn intel_counts(notes: &str) -> Option<(usize, usize)> {
    let at = notes.find("convolution / inner-product executions")?;
    let before: Vec<&str> = notes[..at].split_whitespace().collect();
    let executions = before.last()?.parse().ok()?;
    let after = &notes[at..];
    let int8 = after
        .split(", ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((executions, int8))
}

#[test]
fn the_layers_that_run_int8_are_those_intel_caffe_ran_in_int8() {
    use int8cal::engine::precision::Precision;
    let mut checked = 0;
    for dir in common::fixture_dirs() {
        let intel = dir.join("reference/intel_int8");
        let Ok(notes) = std::fs::read_to_string(intel.join("notes.md")) else {
            continue;
        };
        let deploy = intel.join("deploy_quantized.prototxt");
        let Some(want) = intel_counts(&notes).filter(|_| deploy.is_file()) else {
            continue;
        };
        let model = common::load(&deploy, None).unwrap();
        let compiled = Compiled::new(&model.net);
        let p = Precision::new(&model.net, &compiled).unwrap();
        assert_eq!(
            p.gemm_layers(&model.net),
            want,
            "{}: {:?}",
            dir.display(),
            p.notes
        );
        checked += 1;
    }
    assert!(
        checked >= 5 || common::fixtures().is_none(),
        "{checked} fixtures checked"
    );
}
