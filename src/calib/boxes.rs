//! FP32 and INT8 detections of the same images, for the app's comparison: both nets run over the
//! recorded batches, each image's DetectionOutput rows above a display score kept with its ground
//! truth boxes and a thumbnail, and the images where the two disagree most picked first.

use std::borrow::Cow;
use std::ops::ControlFlow;

use ndarray::ArrayD;

use super::disagree::{Thumbnail, side_by_side, thumbnail};
use super::run::Retained;
use super::tune::Table;
use crate::engine::ops::detection::{BBox, jaccard};
use crate::model::layer::LayerKind;
use crate::model::{Net, ValueId};

/// Detections scoring below this are not drawn (SSD's usual display threshold).
pub const SHOW_SCORE: f32 = 0.5;

/// Two boxes of one label overlapping at least this much are the same detection.
const SAME_BOX: f32 = 0.5;

/// One detection: its label, score and box (normalised corners).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub label: i32,
    pub score: f32,
    pub rect: [f32; 4],
}

/// One image with its ground truth and both nets' detections.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageBoxes {
    /// Its index among the evaluated images.
    pub image: usize,
    pub thumbnail: Thumbnail,
    /// Ground-truth boxes (normalised corners).
    pub truth: Vec<[f32; 4]>,
    pub fp32: Vec<Detection>,
    pub int8: Vec<Detection>,
    /// Detections of one net that the other has no match for.
    pub unmatched: usize,
}

/// An array's values in order, borrowed when they are contiguous.
fn flat(a: &ArrayD<f32>) -> Cow<'_, [f32]> {
    a.as_slice()
        .map_or_else(|| Cow::Owned(a.iter().copied().collect()), Cow::Borrowed)
}

/// Rows [image, label, score, xmin, ymin, xmax, ymax] of image `n` scoring at least `SHOW_SCORE`.
fn detections_of(rows: &[f32], n: usize) -> Vec<Detection> {
    rows.chunks_exact(7)
        .filter(|r| r[0] >= 0.0 && r[0] as usize == n && r[1] >= 0.0 && r[2] >= SHOW_SCORE)
        .map(|r| Detection {
            label: r[1] as i32,
            score: r[2],
            rect: [r[3], r[4], r[5], r[6]],
        })
        .collect()
}

/// Ground-truth rows [item, label, instance, xmin, ymin, xmax, ymax, difficult] of image `n`.
fn truth_of(labels: &[f32], n: usize) -> Vec<[f32; 4]> {
    labels
        .chunks_exact(8)
        .filter(|r| r[0] >= 0.0 && r[0] as usize == n)
        .map(|r| [r[3], r[4], r[5], r[6]])
        .collect()
}

fn bbox(r: [f32; 4]) -> BBox {
    BBox {
        xmin: r[0],
        ymin: r[1],
        xmax: r[2],
        ymax: r[3],
    }
}

/// Detections in `a` with no box of the same label in `b` overlapping by `SAME_BOX`.
fn unmatched(a: &[Detection], b: &[Detection]) -> usize {
    a.iter()
        .filter(|d| {
            !b.iter()
                .any(|e| e.label == d.label && jaccard(&bbox(d.rect), &bbox(e.rect)) >= SAME_BOX)
        })
        .count()
}

/// The DetectionOutput top of a net.
fn detection_output(net: &Net) -> Option<ValueId> {
    let l = net
        .layers
        .iter()
        .find(|l| matches!(l.kind, LayerKind::DetectionOutput(_)))?;
    l.tops.first().copied()
}

/// Up to `max` images, those where FP32 and INT8 disagree most first (then in image order), shown
/// in image order; empty when the net has no DetectionOutput or nothing was recorded.
pub fn compare_boxes(
    retained: &Retained,
    table: &Table,
    max: usize,
) -> Result<Vec<ImageBoxes>, String> {
    let net = &retained.net;
    let (Some(out), Some(data_layer)) = (
        detection_output(net),
        net.layers.iter().find(|l| l.kind.is_data()),
    ) else {
        return Ok(Vec::new());
    };
    // Every image's detections first; thumbnails only for the ones kept.
    let mut all: Vec<(usize, usize, ImageBoxes)> = Vec::new();
    let mut image = 0;
    side_by_side(retained, table, |b, fp32, int8| {
        let tops = retained.recorded.batch(&data_layer.name, b).unwrap_or(&[]);
        let Some(data) = tops.first() else {
            return ControlFlow::Continue(());
        };
        let (rows_a, rows_q) = (flat(fp32.value(out)), flat(int8.value(out)));
        let truth = tops.get(1).map(flat).unwrap_or_default();
        let images = data.shape().first().copied().unwrap_or(0);
        for n in 0..images {
            let (a, q) = (detections_of(&rows_a, n), detections_of(&rows_q, n));
            let boxes = ImageBoxes {
                image: image + n,
                thumbnail: Thumbnail::default(),
                truth: truth_of(&truth, n),
                unmatched: unmatched(&a, &q) + unmatched(&q, &a),
                fp32: a,
                int8: q,
            };
            all.push((b, n, boxes));
        }
        image += images;
        ControlFlow::Continue(())
    })?;
    // Most different first (stable: earlier images win ties), then back to image order.
    all.sort_by_key(|(.., x)| std::cmp::Reverse(x.unmatched));
    all.truncate(max);
    all.sort_by_key(|(.., x)| x.image);
    Ok(all
        .into_iter()
        .filter_map(|(b, n, boxes)| {
            let data = retained.recorded.batch(&data_layer.name, b)?.first()?;
            Some(ImageBoxes {
                thumbnail: thumbnail(data, n)?,
                ..boxes
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    #[test]
    fn rows_split_by_image_and_score_and_matches_need_label_and_overlap() {
        let rows = ArrayD::from_shape_vec(
            IxDyn(&[1, 1, 3, 7]),
            vec![
                0.0, 1.0, 0.9, 0.1, 0.1, 0.5, 0.5, // image 0, shown
                0.0, 1.0, 0.3, 0.6, 0.6, 0.9, 0.9, // image 0, below the display score
                1.0, 2.0, 0.8, 0.2, 0.2, 0.4, 0.4, // image 1
            ],
        )
        .unwrap();
        let a = detections_of(&flat(&rows), 0);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].rect, [0.1, 0.1, 0.5, 0.5]);
        assert_eq!(detections_of(&flat(&rows), 1)[0].label, 2);
        // Shifted a little: matched; other label or far away: not.
        let near = Detection {
            rect: [0.12, 0.1, 0.52, 0.5],
            ..a[0]
        };
        let other = Detection { label: 2, ..near };
        assert_eq!(unmatched(&a, &[near]), 0);
        assert_eq!(unmatched(&a, &[other]), 1);
        assert_eq!(unmatched(&[near, other], &a), 1);
        let truth = ArrayD::from_shape_vec(
            IxDyn(&[1, 1, 2, 8]),
            vec![
                0.0, 1.0, 0.0, 0.1, 0.2, 0.3, 0.4, 0.0, //
                1.0, 1.0, 0.0, 0.5, 0.5, 0.6, 0.6, 1.0,
            ],
        )
        .unwrap();
        assert_eq!(truth_of(&flat(&truth), 1), [[0.5, 0.5, 0.6, 0.6]]);
    }
}
