//! SSD's DetectionEvaluate: detections matched to the ground truth of their image and label, best
//! score first; a detection is a true positive when its best overlap (IoU ≥ the threshold) is a box
//! not yet taken, a false positive otherwise; one matched to a difficult box is neither when
//! difficult boxes are not evaluated. Rows of 5: first per class (background aside)
//! [−1, label, ground-truth count, −1, −1], then per detection [image, label, score, tp, fp].

use std::collections::BTreeMap;

use super::detection::{BBox, jaccard};
use crate::caffe::DetectionEvaluateParameter;

/// A ground-truth box of one image.
#[derive(Debug, Clone, Copy)]
struct Truth {
    label: i32,
    bbox: BBox,
    difficult: bool,
}

/// A detection of one image.
#[derive(Debug, Clone, Copy)]
struct Found {
    label: i32,
    score: f32,
    bbox: BBox,
}

fn bbox(r: &[f32]) -> BBox {
    BBox {
        xmin: r[0],
        ymin: r[1],
        xmax: r[2],
        ymax: r[3],
    }
}

/// The rows of one batch: `detections` as DetectionOutput writes them (7 per row), `truth` as
/// AnnotatedData writes labels (8 per row: image, label, instance, xmin, ymin, xmax, ymax, difficult).
pub fn detection_evaluate(
    p: &DetectionEvaluateParameter,
    detections: &[f32],
    truth: &[f32],
) -> Result<Vec<f32>, String> {
    if p.name_size_file.is_some() {
        return Err("name_size_file (evaluation in original image sizes) is not supported".into());
    }
    if !detections.len().is_multiple_of(7) || !truth.len().is_multiple_of(8) {
        return Err(format!(
            "expects detections of 7 values and labels of 8 per row, got {} and {} values",
            detections.len(),
            truth.len()
        ));
    }
    let mut gts: BTreeMap<i32, Vec<Truth>> = BTreeMap::new();
    for r in truth.chunks_exact(8) {
        if r[0] < 0.0 {
            continue;
        }
        gts.entry(r[0] as i32).or_default().push(Truth {
            label: r[1] as i32,
            bbox: bbox(&r[3..7]),
            difficult: r[7] != 0.0,
        });
    }
    let mut found: BTreeMap<i32, Vec<Found>> = BTreeMap::new();
    for r in detections.chunks_exact(7) {
        if r[0] < 0.0 || r[1] < 0.0 {
            continue;
        }
        found.entry(r[0] as i32).or_default().push(Found {
            label: r[1] as i32,
            score: r[2],
            bbox: bbox(&r[3..7]),
        });
    }
    let background = p.background_label_id() as i32;
    let mut rows = Vec::new();
    for c in (0..p.num_classes() as i32).filter(|&c| c != background) {
        let n = gts
            .values()
            .flatten()
            .filter(|t| t.label == c && (p.evaluate_difficult_gt() || !t.difficult))
            .count();
        rows.extend([-1.0, c as f32, n as f32, -1.0, -1.0]);
    }
    let none = Vec::new();
    for (&image, dets) in &found {
        let truths = gts.get(&image).unwrap_or(&none);
        let mut labels: Vec<i32> = dets.iter().map(|d| d.label).collect();
        labels.sort_unstable();
        labels.dedup();
        for label in labels {
            let mut mine: Vec<&Found> = dets.iter().filter(|d| d.label == label).collect();
            mine.sort_by(|a, b| b.score.total_cmp(&a.score));
            let boxes: Vec<&Truth> = truths.iter().filter(|t| t.label == label).collect();
            let mut taken = vec![false; boxes.len()];
            for d in mine {
                let best = boxes
                    .iter()
                    .enumerate()
                    .map(|(j, t)| (j, jaccard(&d.bbox, &t.bbox)))
                    .fold(None, |b: Option<(usize, f32)>, (j, o)| match b {
                        Some((_, bo)) if bo >= o => b,
                        _ => Some((j, o)),
                    });
                let (tp, fp) = match best {
                    Some((j, o)) if o >= p.overlap_threshold() => {
                        if !p.evaluate_difficult_gt() && boxes[j].difficult {
                            (0.0, 0.0)
                        } else if taken[j] {
                            (0.0, 1.0)
                        } else {
                            taken[j] = true;
                            (1.0, 0.0)
                        }
                    }
                    _ => (0.0, 1.0),
                };
                rows.extend([image as f32, label as f32, d.score, tp, fp]);
            }
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(difficult: bool) -> DetectionEvaluateParameter {
        DetectionEvaluateParameter {
            num_classes: Some(3),
            background_label_id: Some(0),
            overlap_threshold: Some(0.5),
            evaluate_difficult_gt: Some(difficult),
            ..Default::default()
        }
    }

    #[test]
    fn matches_best_first_counts_duplicates_and_ignores_difficult_matches() {
        // Image 0: two boxes of label 1 (the second difficult); image 1: none.
        let truth = [
            0.0, 1.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.0, //
            0.0, 1.0, 1.0, 0.5, 0.5, 1.0, 1.0, 1.0,
        ];
        let det = [
            0.0, 1.0, 0.6, 0.0, 0.0, 0.5, 0.5, // duplicate of the first box (lower score)
            0.0, 1.0, 0.9, 0.0, 0.0, 0.5, 0.5, // the first box
            0.0, 1.0, 0.8, 0.5, 0.5, 1.0, 1.0, // the difficult box
            0.0, 1.0, 0.7, 0.2, 0.7, 0.3, 0.9, // nothing
            1.0, 2.0, 0.5, 0.0, 0.0, 1.0, 1.0, // image without ground truth
        ];
        let rows = detection_evaluate(&param(false), &det, &truth).unwrap();
        let r: Vec<&[f32]> = rows.chunks(5).collect();
        // Counts: label 1 has one box that is not difficult, label 2 none.
        assert_eq!(r[0], [-1.0, 1.0, 1.0, -1.0, -1.0]);
        assert_eq!(r[1], [-1.0, 2.0, 0.0, -1.0, -1.0]);
        let tp_fp: Vec<(f32, f32, f32)> = r[2..].iter().map(|x| (x[2], x[3], x[4])).collect();
        assert_eq!(
            tp_fp,
            [
                (0.9, 1.0, 0.0),
                (0.8, 0.0, 0.0),
                (0.7, 0.0, 1.0),
                (0.6, 0.0, 1.0),
                (0.5, 0.0, 1.0)
            ]
        );
        // Evaluating difficult boxes: it counts, and its detection is a true positive.
        let rows = detection_evaluate(&param(true), &det, &truth).unwrap();
        assert_eq!(&rows[..5], [-1.0, 1.0, 2.0, -1.0, -1.0]);
        assert_eq!(&rows[10 + 5..10 + 10], [0.0, 1.0, 0.8, 1.0, 0.0]);
    }

    #[test]
    fn bad_rows_are_refused() {
        let e = detection_evaluate(&param(true), &[0.0; 6], &[]).unwrap_err();
        assert!(e.contains("7 values"), "{e}");
    }
}
