//! The engine on the detection fixtures: every FP32 blob of `reference/blobs.npz` on
//! `reference/input.npy`, `detection_out` compared as rows sorted by image and score (boxes within
//! 1e-4), the other blobs within 1e-4·max|ref| + 1e-5; the mAP of the TEST nets in FP32, and of
//! Intel's quantized TEST nets run as Intel Caffe runs them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use int8cal::engine::Plan;
use ndarray::ArrayD;

/// Rows of a detection output with image ≥ 0, sorted by image then score (best first).
fn rows(a: &ArrayD<f32>) -> Vec<[f32; 7]> {
    let mut r: Vec<[f32; 7]> = a
        .iter()
        .copied()
        .collect::<Vec<f32>>()
        .chunks(7)
        .map(|c| <[f32; 7]>::try_from(c).unwrap())
        .filter(|r| r[0] >= 0.0)
        .collect();
    r.sort_by(|a, b| a[0].total_cmp(&b[0]).then(b[2].total_cmp(&a[2])));
    r
}

#[test]
fn every_reference_blob_of_the_detectors_agrees() {
    let detectors: Vec<_> = common::fixture_dirs()
        .into_iter()
        .filter(|d| {
            std::fs::read_to_string(d.join("deploy.prototxt"))
                .unwrap()
                .contains("DetectionOutput")
        })
        .collect();
    for dir in detectors {
        let all = common::forward_reference(&dir);
        let mut detections = 0;
        for (blob, want) in common::reference_blobs(&dir.join("reference")) {
            let ours = &all[&blob];
            if blob == "detection_out" {
                let (a, b) = (rows(ours), rows(&want));
                assert_eq!(a.len(), b.len(), "{}: detection rows", dir.display());
                for (r, w) in a.iter().zip(&b) {
                    let err = r.iter().zip(w).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                    assert!(err <= 1e-4, "{}: row {r:?} vs {w:?}", dir.display());
                }
                detections = a.len();
                continue;
            }
            assert_eq!(ours.shape(), want.shape(), "{}: {blob}", dir.display());
            let (err, bound) = common::error_and_bound(ours, &want);
            assert!(err <= bound, "{}: {blob} max error {err}", dir.display());
        }
        assert!(
            detections > 0,
            "{}: no detection rows compared",
            dir.display()
        );
    }
}

#[test]
fn detection_map_matches_the_reference_for_every_ap_version() {
    use int8cal::metrics::ap::ApVersion;
    let detectors: Vec<_> = common::fixture_dirs()
        .into_iter()
        .filter(|d| d.join("reference/accuracy.json").is_file())
        .filter(|d| {
            std::fs::read_to_string(d.join("test.prototxt"))
                .unwrap()
                .contains("DetectionEvaluate")
        })
        .collect();
    assert!(common::fixtures().is_none() || !detectors.is_empty());
    for dir in detectors {
        let acc: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("reference/accuracy.json")).unwrap(),
        )
        .unwrap();
        let model = common::load(
            &dir.join("test.prototxt"),
            Some(&dir.join("weights.caffemodel")),
        )
        .unwrap();
        let plan = Plan::new(&model.net, None).unwrap();
        let value = (0..model.net.values.len())
            .rev()
            .find(|&v| model.net.values[v].name == "detection_eval")
            .unwrap();
        let iterations = acc["iterations"].as_u64().unwrap() as usize;
        let rows =
            int8cal::cli::eval::detection_rows(&plan, &dir, value, iterations, None).unwrap();
        let want = [
            (
                ApVersion::ElevenPoint,
                acc["blobs"]["detection_eval"].as_f64(),
            ),
            (
                ApVersion::Integral,
                acc["other_ap_versions"]["Integral"].as_f64(),
            ),
            (
                ApVersion::MaxIntegral,
                acc["other_ap_versions"]["MaxIntegral"].as_f64(),
            ),
        ];
        for (version, want) in want {
            let (map, _) = rows.map(version);
            let want = want.unwrap();
            assert!(
                (map - want).abs() <= 0.002,
                "{}: {version:?} {map} vs {want}",
                dir.display()
            );
        }
    }
}

/// Intel's quantized detectors evaluate to Intel Caffe's INT8 mAP: its BatchNorms on raw int8 codes,
/// its scrambled FP32 residual and its NMS padding reproduced (ssd_face_res10 equal to 1e-6,
/// faces_wider 0.4043 against 0.4053).
#[test]
fn intels_quantized_detectors_evaluate_to_intel_caffes_map() {
    for name in ["ssd_face_res10", "faces_wider"] {
        let Some(fixtures) = common::fixtures() else {
            return;
        };
        let dir = fixtures.join(name);
        let intel = dir.join("reference/intel_int8");
        let want: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(intel.join("accuracy.json")).unwrap())
                .unwrap();
        let model = common::load(
            &intel.join("test_quantized.prototxt"),
            Some(&dir.join("weights.caffemodel")),
        )
        .unwrap();
        let plan = Plan::new_int8(&model.net, None).unwrap();
        let iterations = want["iterations"].as_u64().unwrap() as usize;
        let map = common::detection_map(&plan, &intel, iterations);
        let want = want["blobs"]["detection_eval"].as_f64().unwrap();
        assert!(
            (map - want).abs() <= 0.005,
            "{name}: INT8 mAP {map} against Intel Caffe's {want}"
        );
    }
}
