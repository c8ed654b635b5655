//! The FP32 engine against the fixtures' references: every reference blob on `reference/input.npy`
//! (OpenCV's and, where present, real Caffe's) within 1e-4·max|ref| + 1e-5, and `eval` over all test
//! images giving the reference accuracies with at most one image's prediction different.

// Test helpers fail loudly by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use int8cal::engine::feed::DataFeed;
use int8cal::engine::session::NoObserver;
use int8cal::engine::{Plan, Session};

fn classification_fixtures() -> Vec<std::path::PathBuf> {
    common::fixture_dirs()
        .into_iter()
        .filter(|d| {
            !std::fs::read_to_string(d.join("test.prototxt"))
                .unwrap()
                .contains("DetectionEvaluate")
        })
        .collect()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn every_reference_blob_agrees() {
    for dir in classification_fixtures() {
        let ours = common::forward_reference(&dir);
        for refs in [dir.join("reference"), dir.join("reference/caffe")] {
            if !refs.join("blobs.npz").is_file() {
                continue;
            }
            for (blob, want) in common::reference_blobs(&refs) {
                let ours = ours
                    .get(&blob)
                    .unwrap_or_else(|| panic!("{}: no blob '{blob}'", dir.display()));
                assert_eq!(ours.shape(), want.shape(), "{}: {blob}", dir.display());
                let (err, bound) = common::error_and_bound(ours, &want);
                assert!(
                    err <= bound,
                    "{} ({}): blob '{blob}' max error {err} > {bound}",
                    dir.display(),
                    refs.display()
                );
            }
        }
    }
}

#[test]
fn eval_over_all_test_images_gives_the_reference_accuracies() {
    for dir in classification_fixtures() {
        let reference = json(&dir.join("reference/accuracy.json"));
        let iterations = reference["iterations"].as_u64().unwrap() as usize;
        let images = reference["images"].as_u64().map_or(
            iterations * reference["batch_size"].as_u64().unwrap() as usize,
            |v| v as usize,
        );
        let model = common::load(
            &dir.join("test.prototxt"),
            Some(&dir.join("weights.caffemodel")),
        )
        .unwrap();
        let plan = Plan::new(&model.net, None).unwrap();
        let mut feed = DataFeed::start(&plan, &dir).unwrap();
        let mut session = Session::new(&plan);
        let blobs: Vec<String> = reference["blobs"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let mut sums = vec![0f64; blobs.len()];
        for _ in 0..iterations {
            session.forward(&mut feed, &mut NoObserver).unwrap();
            for (s, b) in sums.iter_mut().zip(&blobs) {
                *s += f64::from(session.blob(b).unwrap().iter().next().copied().unwrap());
            }
        }
        for (s, b) in sums.iter().zip(&blobs) {
            let ours = s / iterations as f64;
            let want = reference["blobs"][b].as_f64().unwrap();
            // Accuracies may differ by one image's prediction (float rounding near a tie); the loss to rounding.
            let bound = if b.contains("loss") {
                1e-4 * want.abs() + 1e-5
            } else {
                1.0 / images as f64 + 1e-9
            };
            assert!(
                (ours - want).abs() <= bound,
                "{}: {b} ours {ours} reference {want}",
                dir.display()
            );
        }
    }
}
