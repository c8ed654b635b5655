//! Detection average precision as SSD Caffe computes it from DetectionEvaluate's rows: per class the
//! detections' (score, true positive) records over every batch and the number of ground-truth boxes
//! counted (difficult ones aside unless evaluated), precision and recall cumulated best score first,
//! then AP the VOC2007 way (11 recall points, the default), the VOC2012 way (`MaxIntegral`: the area
//! under the precision envelope) or as the plain integral. mAP averages the classes DetectionEvaluate
//! reported a ground-truth count for.

use std::collections::BTreeMap;

/// How AP integrates the precision-recall curve (`--ap-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum ApVersion {
    /// VOC2007: the mean of the best precision at recall ≥ 0, 0.1, …, 1.
    #[default]
    ElevenPoint,
    /// VOC2012 / ILSVRC: the area under the precision envelope.
    MaxIntegral,
    /// Σ precision × recall step.
    Integral,
}

impl ApVersion {
    /// SSD Caffe's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::ElevenPoint => "11point",
            Self::MaxIntegral => "MaxIntegral",
            Self::Integral => "Integral",
        }
    }
}

/// Recall steps below this are no step (SSD's epsilon).
const EPS: f64 = 1e-6;

/// Precision and recall after each detection, best score first (ties keep their order).
fn curve(records: &[(f32, bool)], num_pos: usize) -> Vec<(f64, f64)> {
    let mut sorted: Vec<&(f32, bool)> = records.iter().collect();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut fp) = (0usize, 0usize);
    sorted
        .iter()
        .map(|&&(_, hit)| {
            if hit {
                tp += 1;
            } else {
                fp += 1;
            }
            // Precision and recall are single floats in SSD Caffe.
            let prec = f64::from(tp as f32 / (tp + fp) as f32);
            let rec = f64::from(tp as f32 / num_pos as f32);
            (prec, rec)
        })
        .collect()
}

/// The AP of one class from its detections' (score, true positive) and its ground-truth count.
pub fn average_precision(records: &[(f32, bool)], num_pos: usize, version: ApVersion) -> f64 {
    if records.is_empty() || num_pos == 0 {
        return 0.0;
    }
    let pr = curve(records, num_pos);
    match version {
        ApVersion::ElevenPoint => (0..=10)
            .map(|j| {
                let at = f64::from(j) / 10.0;
                pr.iter()
                    .filter(|(_, r)| *r >= at)
                    .fold(0.0f64, |m, (p, _)| m.max(*p))
            })
            .map(|p| f64::from(p as f32 / 11.0))
            .sum(),
        ApVersion::MaxIntegral => {
            // From the highest recall down, the running maximum of precision times each step.
            let Some(&(mut prec, mut rec)) = pr.last() else {
                return 0.0;
            };
            let mut ap = 0.0;
            for &(p, r) in pr.iter().rev().skip(1) {
                prec = prec.max(p);
                if (rec - r).abs() > EPS {
                    ap += prec * (rec - r).abs();
                }
                rec = r;
            }
            ap + rec * prec
        }
        ApVersion::Integral => {
            let mut prev = 0.0;
            let mut ap = 0.0;
            for &(p, r) in &pr {
                if (r - prev).abs() > EPS {
                    ap += p * (r - prev).abs();
                }
                prev = r;
            }
            ap
        }
    }
}

/// DetectionEvaluate's rows gathered over batches.
#[derive(Debug, Clone, Default)]
pub struct MapAccumulator {
    /// Ground-truth boxes per label.
    pub num_pos: BTreeMap<i32, usize>,
    /// (score, true positive) per label.
    pub records: BTreeMap<i32, Vec<(f32, bool)>>,
}

impl MapAccumulator {
    /// Adds one output of DetectionEvaluate: rows of [image, label, score or count, tp, fp]; a
    /// row with image −1 counts a label's ground truth; a detection matched to an ignored difficult
    /// box (tp = fp = 0) is left out.
    pub fn add(&mut self, rows: &[f32]) {
        for r in rows.chunks_exact(5) {
            let label = r[1] as i32;
            if r[0] as i32 == -1 {
                *self.num_pos.entry(label).or_default() += r[2].max(0.0) as usize;
            } else if r[3] != 0.0 || r[4] != 0.0 {
                self.records
                    .entry(label)
                    .or_default()
                    .push((r[2], r[3] != 0.0));
            }
        }
    }

    /// AP per label with a ground-truth count, and their mean.
    pub fn map(&self, version: ApVersion) -> (f64, BTreeMap<i32, f64>) {
        let aps: BTreeMap<i32, f64> = self
            .num_pos
            .iter()
            .map(|(&label, &n)| {
                let records = self.records.get(&label).map_or(&[][..], Vec::as_slice);
                (label, average_precision(records, n, version))
            })
            .collect();
        let mean = if aps.is_empty() {
            0.0
        } else {
            aps.values().sum::<f64>() / aps.len() as f64
        };
        (mean, aps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn hand_computed_precision_recall_areas() {
        // 3 ground-truth boxes; detections by score: hit, miss, hit (precision 1, 1/2, 2/3 at
        // recall 1/3, 1/3, 2/3).
        let r = [(0.9, true), (0.8, false), (0.7, true)];
        // 11-point: recall ≥ 0, .1, .2, .3 → 1; ≥ .4 … .6 → 2/3; ≥ .7 … 1 → 0.
        let eleven = (4.0 * 1.0 + 3.0 * (2.0 / 3.0)) / 11.0;
        assert!(close(
            average_precision(&r, 3, ApVersion::ElevenPoint),
            eleven
        ));
        // Integral: 1 × 1/3 + (2/3) × 1/3.
        assert!(close(
            average_precision(&r, 3, ApVersion::Integral),
            1.0 / 3.0 + 2.0 / 9.0
        ));
        // MaxIntegral: the envelope is 1 up to recall 1/3, then 2/3 up to 2/3: the same here.
        assert!(close(
            average_precision(&r, 3, ApVersion::MaxIntegral),
            1.0 / 3.0 + 2.0 / 9.0
        ));
        // No detections, or no ground truth: 0.
        assert_eq!(average_precision(&[], 3, ApVersion::ElevenPoint), 0.0);
        assert_eq!(average_precision(&r, 0, ApVersion::Integral), 0.0);
    }

    #[test]
    fn max_integral_takes_the_envelope() {
        // miss then two hits over 2 boxes: precision 0, 1/2, 2/3 at recall 0, 1/2, 1. The
        // envelope is 2/3 everywhere: AP 2/3; the plain integral is 1/2·1/2 + 2/3·1/2.
        let r = [(0.9, false), (0.8, true), (0.7, true)];
        assert!(close(
            average_precision(&r, 2, ApVersion::MaxIntegral),
            2.0 / 3.0
        ));
        assert!(close(
            average_precision(&r, 2, ApVersion::Integral),
            0.25 + 1.0 / 3.0
        ));
    }

    #[test]
    fn ties_keep_their_order() {
        // Equal scores: the order given decides (a miss first lowers the first precision).
        let hit_first = [(0.5, true), (0.5, false)];
        let miss_first = [(0.5, false), (0.5, true)];
        let a = average_precision(&hit_first, 1, ApVersion::Integral);
        let b = average_precision(&miss_first, 1, ApVersion::Integral);
        assert!(close(a, 1.0) && close(b, 0.5), "{a} {b}");
    }

    #[test]
    fn rows_accumulate_over_batches_and_difficult_matches_are_ignored() {
        let mut m = MapAccumulator::default();
        // Batch 1: label 1 has 2 boxes, label 2 has 1 and no detection; a hit, a miss, and a
        // detection matched to a difficult box (0, 0).
        m.add(&[
            -1.0, 1.0, 2.0, -1.0, -1.0, //
            -1.0, 2.0, 1.0, -1.0, -1.0, //
            0.0, 1.0, 0.9, 1.0, 0.0, //
            0.0, 1.0, 0.8, 0.0, 1.0, //
            0.0, 1.0, 0.7, 0.0, 0.0,
        ]);
        // Batch 2: one more box of label 1, found.
        m.add(&[-1.0, 1.0, 1.0, -1.0, -1.0, 1.0, 1.0, 0.6, 1.0, 0.0]);
        assert_eq!(m.num_pos, BTreeMap::from([(1, 3), (2, 1)]));
        assert_eq!(m.records[&1].len(), 3);
        let (mean, aps) = m.map(ApVersion::Integral);
        // Label 1: hit, miss, hit over 3 boxes = 1/3 + 2/9; label 2: no detection = 0.
        assert!(close(aps[&1], 1.0 / 3.0 + 2.0 / 9.0));
        assert_eq!(aps[&2], 0.0);
        assert!(close(mean, (1.0 / 3.0 + 2.0 / 9.0) / 2.0));
    }
}
