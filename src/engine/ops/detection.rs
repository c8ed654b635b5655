//! SSD's DetectionOutput as SSD Caffe computes it: each image's location offsets decoded against the
//! priors (CORNER, CENTER_SIZE or CORNER_SIZE, variances from the prior blob unless encoded in the
//! target), per class the scores above the confidence threshold, the best `top_k`, greedy NMS with an
//! adaptive threshold (`eta`), then the best `keep_top_k` over all classes. Rows are
//! [image, label, score, xmin, ymin, xmax, ymax], labels ascending; an output without any detection
//! holds one row [image, −1, …] per image, as SSD Caffe writes it.
//!
//! Intel Caffe's candidate list has a quirk (`Candidates::IntelPadded`, used when running a quantized
//! net as Intel Caffe does): its `GetMaxScoreIndex` sizes the list to the number of priors and fills
//! only the entries above the threshold, so when fewer than `top_k` pass, entries (score 0, prior 0)
//! follow them into NMS and prior 0 comes out with its real score, below the threshold or not.

use std::collections::BTreeMap;

use crate::caffe::DetectionOutputParameter;
use crate::caffe::prior_box_parameter::CodeType;

/// A box in image-relative coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BBox {
    pub xmin: f32,
    pub ymin: f32,
    pub xmax: f32,
    pub ymax: f32,
}

impl BBox {
    fn from(s: &[f32]) -> Self {
        Self {
            xmin: s[0],
            ymin: s[1],
            xmax: s[2],
            ymax: s[3],
        }
    }

    /// Area of a normalized box (0 when inverted).
    pub fn size(&self) -> f32 {
        if self.xmax < self.xmin || self.ymax < self.ymin {
            0.0
        } else {
            (self.xmax - self.xmin) * (self.ymax - self.ymin)
        }
    }
}

/// Intersection over union of two normalized boxes (SSD's `JaccardOverlap`).
pub fn jaccard(a: &BBox, b: &BBox) -> f32 {
    if b.xmin > a.xmax || b.xmax < a.xmin || b.ymin > a.ymax || b.ymax < a.ymin {
        return 0.0;
    }
    let inter = BBox {
        xmin: a.xmin.max(b.xmin),
        ymin: a.ymin.max(b.ymin),
        xmax: a.xmax.min(b.xmax),
        ymax: a.ymax.min(b.ymax),
    };
    let i = inter.size();
    i / (a.size() + b.size() - i)
}

/// Decodes one location offset against its prior and variances (SSD's `DecodeBBox`).
pub fn decode(code: CodeType, encoded_variance: bool, prior: &BBox, var: &[f32], b: &BBox) -> BBox {
    let v = |i: usize| if encoded_variance { 1.0 } else { var[i] };
    let (pw, ph) = (prior.xmax - prior.xmin, prior.ymax - prior.ymin);
    match code {
        CodeType::Corner => BBox {
            xmin: prior.xmin + v(0) * b.xmin,
            ymin: prior.ymin + v(1) * b.ymin,
            xmax: prior.xmax + v(2) * b.xmax,
            ymax: prior.ymax + v(3) * b.ymax,
        },
        CodeType::CenterSize => {
            let (pcx, pcy) = (
                (prior.xmin + prior.xmax) / 2.0,
                (prior.ymin + prior.ymax) / 2.0,
            );
            let cx = v(0) * b.xmin * pw + pcx;
            let cy = v(1) * b.ymin * ph + pcy;
            let w = (v(2) * b.xmax).exp() * pw;
            let h = (v(3) * b.ymax).exp() * ph;
            BBox {
                xmin: cx - w / 2.0,
                ymin: cy - h / 2.0,
                xmax: cx + w / 2.0,
                ymax: cy + h / 2.0,
            }
        }
        CodeType::CornerSize => BBox {
            xmin: prior.xmin + v(0) * b.xmin * pw,
            ymin: prior.ymin + v(1) * b.ymin * ph,
            xmax: prior.xmax + v(2) * b.xmax * pw,
            ymax: prior.ymax + v(3) * b.ymax * ph,
        },
    }
}

/// Indices of the scores above `threshold`, best first (ties in index order), at most `top_k`
/// (all when negative).
pub fn best_scores(scores: &[f32], threshold: f32, top_k: i32) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len())
        .filter(|&i| scores[i] > threshold)
        .collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    if let Ok(k) = usize::try_from(top_k) {
        idx.truncate(k);
    }
    idx
}

/// Which candidates enter NMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidates {
    /// The scores above the threshold, as SSD Caffe and OpenCV.
    Exact,
    /// Those, then prior 0 repeated up to `top_k` entries (or up to the number of priors), as Intel
    /// Caffe.
    IntelPadded,
}

/// `best_scores`, with Intel's padding when asked.
pub fn candidates(scores: &[f32], threshold: f32, top_k: i32, kind: Candidates) -> Vec<usize> {
    let mut idx = best_scores(scores, threshold, top_k);
    if kind == Candidates::IntelPadded {
        let room = usize::try_from(top_k).map_or(scores.len(), |k| k.min(scores.len()));
        idx.resize(room.max(idx.len()), 0);
    }
    idx
}

/// Greedy NMS over candidates best first: a box is kept unless it overlaps a kept one by more than
/// the threshold, which shrinks by `eta` after each kept box while above 0.5 (SSD's `ApplyNMSFast`).
pub fn nms(boxes: &[BBox], candidates: &[usize], threshold: f32, eta: f32) -> Vec<usize> {
    let mut kept: Vec<usize> = Vec::new();
    let mut adaptive = threshold;
    for &i in candidates {
        if kept
            .iter()
            .all(|&k| jaccard(&boxes[i], &boxes[k]) <= adaptive)
        {
            kept.push(i);
            if eta < 1.0 && adaptive > 0.5 {
                adaptive *= eta;
            }
        }
    }
    kept
}

/// The inputs' sizes for `images` images: priors (from the prior blob) and location classes.
fn priors_of(
    p: &DetectionOutputParameter,
    loc: usize,
    conf: usize,
    prior: usize,
    images: usize,
) -> Result<usize, String> {
    let classes = p.num_classes() as usize;
    let priors = prior / 8;
    if classes == 0 {
        return Err("num_classes must be given".into());
    }
    if !prior.is_multiple_of(8) || priors == 0 {
        return Err(format!(
            "the prior blob holds {prior} values, not 2 × priors × 4"
        ));
    }
    if conf != images * priors * classes {
        return Err(format!(
            "num_classes {classes} disagrees with the confidence blob: {conf} values for {images} image(s) × {priors} priors"
        ));
    }
    let loc_classes = if p.share_location() { 1 } else { classes };
    if loc != images * priors * loc_classes * 4 {
        return Err(format!(
            "the location blob holds {loc} values, expected {images} × {priors} priors × {loc_classes} × 4"
        ));
    }
    Ok(priors)
}

/// The detection rows of a batch (7 values per row).
pub fn detection_output(
    p: &DetectionOutputParameter,
    loc: &[f32],
    conf: &[f32],
    prior: &[f32],
    images: usize,
    kind: Candidates,
) -> Result<Vec<f32>, String> {
    let priors = priors_of(p, loc.len(), conf.len(), prior.len(), images)?;
    let classes = p.num_classes() as usize;
    let share = p.share_location();
    let nms_p = p.nms_param.unwrap_or_default();
    let top_k = nms_p.top_k.unwrap_or(-1);
    let threshold = p.confidence_threshold.unwrap_or(f32::MIN);
    let background = p.background_label_id();
    let (prior_boxes, variances) = prior.split_at(priors * 4);
    let loc_classes = if share { 1 } else { classes };
    let mut rows = Vec::new();
    for n in 0..images {
        // Decoded boxes per location class, then per class its kept indices.
        let loc_n = &loc[n * priors * loc_classes * 4..(n + 1) * priors * loc_classes * 4];
        let boxes: Vec<Vec<BBox>> = (0..loc_classes)
            .map(|c| {
                (0..priors)
                    .map(|i| {
                        let b = BBox::from(&loc_n[(i * loc_classes + c) * 4..][..4]);
                        let pb = BBox::from(&prior_boxes[i * 4..][..4]);
                        decode(
                            p.code_type(),
                            p.variance_encoded_in_target(),
                            &pb,
                            &variances[i * 4..][..4],
                            &b,
                        )
                    })
                    .collect()
            })
            .collect();
        let conf_n = &conf[n * priors * classes..(n + 1) * priors * classes];
        let mut kept: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for c in (0..classes).filter(|&c| c as i32 != background) {
            let scores: Vec<f32> = (0..priors).map(|i| conf_n[i * classes + c]).collect();
            let b = &boxes[if share { 0 } else { c }];
            let candidates = candidates(&scores, threshold, top_k, kind);
            kept.insert(c, nms(b, &candidates, nms_p.nms_threshold(), nms_p.eta()));
        }
        let total: usize = kept.values().map(Vec::len).sum();
        if let Ok(keep) = usize::try_from(p.keep_top_k())
            && total > keep
        {
            // The best `keep_top_k` over all classes, each class's in score order.
            let mut all: Vec<(f32, usize, usize)> = kept
                .iter()
                .flat_map(|(&c, idx)| idx.iter().map(move |&i| (conf_n[i * classes + c], c, i)))
                .collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0));
            all.truncate(keep);
            kept.clear();
            for (_, c, i) in all {
                kept.entry(c).or_default().push(i);
            }
        }
        for (&c, idx) in &kept {
            let b = &boxes[if share { 0 } else { c }];
            for &i in idx {
                let d = b[i];
                rows.extend([
                    n as f32,
                    c as f32,
                    conf_n[i * classes + c],
                    d.xmin,
                    d.ymin,
                    d.xmax,
                    d.ymax,
                ]);
            }
        }
    }
    if rows.is_empty() {
        for n in 0..images {
            rows.extend([n as f32, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0]);
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(xmin: f32, ymin: f32, xmax: f32, ymax: f32) -> BBox {
        BBox {
            xmin,
            ymin,
            xmax,
            ymax,
        }
    }

    #[test]
    fn jaccard_of_hand_computed_boxes() {
        // Two unit-area squares overlapping by half: 0.5 / 1.5.
        let (x, y) = (b(0.0, 0.0, 1.0, 1.0), b(0.5, 0.0, 1.5, 1.0));
        assert!((jaccard(&x, &y) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(jaccard(&x, &b(2.0, 2.0, 3.0, 3.0)), 0.0);
        assert_eq!(jaccard(&x, &x), 1.0);
    }

    #[test]
    fn center_size_decoding_with_and_without_encoded_variance() {
        let prior = b(0.2, 0.2, 0.4, 0.6); // centre (0.3, 0.4), size 0.2 × 0.4
        let var = [0.1, 0.1, 0.2, 0.2];
        // Offsets (1, -1) move the centre by var·offset·size; log-size 0 keeps the size.
        let d = decode(
            CodeType::CenterSize,
            false,
            &prior,
            &var,
            &b(1.0, -1.0, 0.0, 0.0),
        );
        let want = b(0.22, 0.16, 0.42, 0.56);
        for (g, w) in [
            (d.xmin, want.xmin),
            (d.ymin, want.ymin),
            (d.xmax, want.xmax),
            (d.ymax, want.ymax),
        ] {
            assert!((g - w).abs() < 1e-6, "{d:?}");
        }
        // Encoded variance: the offsets are used as they are; log-size ln 2 doubles the width.
        let d = decode(
            CodeType::CenterSize,
            true,
            &prior,
            &var,
            &b(0.0, 0.0, 2f32.ln(), 0.0),
        );
        assert!((d.xmax - d.xmin - 0.4).abs() < 1e-6);
        let c = decode(
            CodeType::Corner,
            false,
            &prior,
            &var,
            &b(1.0, 1.0, 1.0, 1.0),
        );
        assert!((c.xmin - 0.3).abs() < 1e-6 && (c.ymax - 0.8).abs() < 1e-6);
    }

    #[test]
    fn scores_sort_best_first_with_ties_in_index_order_and_top_k() {
        let s = [0.1, 0.9, 0.5, 0.9, 0.05];
        assert_eq!(best_scores(&s, 0.08, -1), [1, 3, 2, 0]);
        assert_eq!(best_scores(&s, 0.08, 2), [1, 3]);
        assert!(best_scores(&s, 0.95, -1).is_empty());
    }

    #[test]
    fn nms_drops_overlaps_and_eta_tightens_the_threshold() {
        let boxes = [
            b(0.0, 0.0, 1.0, 1.0),
            b(0.1, 0.0, 1.1, 1.0), // IoU 0.818 with box 0
            b(0.5, 0.0, 1.5, 1.0), // IoU 0.333 with box 0, 0.429 with box 1
            b(3.0, 3.0, 4.0, 4.0),
        ];
        assert_eq!(nms(&boxes, &[0, 1, 2, 3], 0.5, 1.0), [0, 2, 3]);
        // With eta 0.5 the threshold 0.6 drops to 0.3 after box 0: box 2 (0.333) is dropped too.
        assert_eq!(nms(&boxes, &[0, 1, 2, 3], 0.6, 0.5), [0, 3]);
    }

    fn param(keep_top_k: i32) -> DetectionOutputParameter {
        DetectionOutputParameter {
            num_classes: Some(3),
            share_location: Some(true),
            background_label_id: Some(0),
            nms_param: Some(crate::caffe::NonMaximumSuppressionParameter {
                nms_threshold: Some(0.5),
                top_k: Some(10),
                eta: Some(1.0),
            }),
            code_type: Some(CodeType::Corner as i32),
            keep_top_k: Some(keep_top_k),
            confidence_threshold: Some(0.3),
            ..Default::default()
        }
    }

    #[test]
    fn rows_per_class_keep_top_k_and_no_detection() {
        // Two priors, zero offsets, variances 1: the boxes are the priors.
        let prior = [
            0.0, 0.0, 0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
        ];
        let loc = [0.0; 8];
        // Class 1: prior 0 at 0.9, prior 1 at 0.4; class 2: prior 1 at 0.6 (class 0 is background).
        let conf = [0.05, 0.9, 0.05, 0.0, 0.4, 0.6];
        let rows = detection_output(&param(-1), &loc, &conf, &prior, 1, Candidates::Exact).unwrap();
        let labels: Vec<(f32, f32)> = rows.chunks(7).map(|r| (r[1], r[2])).collect();
        assert_eq!(labels, [(1.0, 0.9), (1.0, 0.4), (2.0, 0.6)]);
        // keep_top_k 2 drops the weakest detection (class 1 at 0.4).
        let rows = detection_output(&param(2), &loc, &conf, &prior, 1, Candidates::Exact).unwrap();
        let labels: Vec<(f32, f32)> = rows.chunks(7).map(|r| (r[1], r[2])).collect();
        assert_eq!(labels, [(1.0, 0.9), (2.0, 0.6)]);
        // Nothing above the threshold: one row of −1 per image, with the image's index.
        let low = [0.9, 0.05, 0.05, 0.9, 0.05, 0.05];
        let rows = detection_output(&param(-1), &loc, &low, &prior, 1, Candidates::Exact).unwrap();
        assert_eq!(rows, [0.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0]);
        // A class count that disagrees with the confidence blob is an error naming both.
        let e = detection_output(&param(-1), &loc, &conf[..4], &prior, 1, Candidates::Exact)
            .unwrap_err();
        assert!(e.contains("num_classes 3 disagrees"), "{e}");
    }

    #[test]
    fn intel_padding_brings_prior_zero_in_with_its_real_score() {
        // Priors 0 and 1 far apart; class 1 passes only at prior 1 (0.6), prior 0 scores 0.1.
        let prior = [
            0.0, 0.0, 0.2, 0.2, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
        ];
        let (loc, conf) = ([0.0; 8], [0.85, 0.1, 0.05, 0.35, 0.6, 0.05]);
        let labels = |kind| -> Vec<(f32, f32)> {
            let rows = detection_output(&param(-1), &loc, &conf, &prior, 1, kind).unwrap();
            rows.chunks(7).map(|r| (r[1], r[2])).collect()
        };
        assert_eq!(labels(Candidates::Exact), [(1.0, 0.6)]);
        // Padded (top_k 10, 2 priors): class 1 gains prior 0 at 0.1, and class 2 (nothing above
        // the threshold) gets prior 0 at 0.05; the duplicates of prior 0 overlap it fully.
        assert_eq!(
            labels(Candidates::IntelPadded),
            [(1.0, 0.6), (1.0, 0.1), (2.0, 0.05)]
        );
        assert_eq!(
            candidates(&[0.1, 0.6, 0.2], 0.3, 2, Candidates::IntelPadded),
            [1, 0]
        );
        assert_eq!(
            candidates(&[0.1, 0.6, 0.2], 0.3, -1, Candidates::IntelPadded),
            [1, 0, 0]
        );
    }
}
