//! The validation images on which FP32 and INT8 disagree: both nets run over the recorded batches,
//! the top class of the Accuracy layer's input compared per image, and each disagreeing image kept
//! as a small RGB thumbnail (the data layer's output scaled back to 0-255, BGR shown as RGB).

use std::ops::ControlFlow;

use ndarray::{ArrayD, Axis};

use super::measure::with_table;
use super::run::Retained;
use super::tune::Table;
use crate::engine::session::{Feed, NoObserver};
use crate::engine::{Plan, Session};
use crate::model::layer::LayerKind;
use crate::model::{Net, ValueId};

/// An image FP32 and INT8 classify differently.
#[derive(Debug, Clone, PartialEq)]
pub struct Disagreement {
    /// Its index among the evaluated images.
    pub image: usize,
    pub label: Option<usize>,
    pub fp32: usize,
    pub int8: usize,
    pub thumbnail: Thumbnail,
}

/// An RGB image, row by row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Thumbnail {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

/// The scores and the label read by the Accuracy layer whose top is `metric`.
fn accuracy_inputs(net: &Net, metric: ValueId) -> Option<(ValueId, Option<ValueId>)> {
    let l = net
        .layers
        .iter()
        .find(|l| matches!(l.kind, LayerKind::Accuracy { .. }) && l.tops.contains(&metric))?;
    Some((*l.bottoms.first()?, l.bottoms.get(1).copied()))
}

/// The index of the largest score of each row (image) of an N×… array.
fn top_classes(scores: &ArrayD<f32>) -> Vec<usize> {
    scores
        .axis_iter(Axis(0))
        .map(|row| {
            row.iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                )
                .0
        })
        .collect()
}

/// One image of a data batch (C×H×W) as an RGB thumbnail, min-max scaled.
pub(crate) fn thumbnail(data: &ArrayD<f32>, n: usize) -> Option<Thumbnail> {
    let img = data.index_axis(Axis(0), n);
    let shape = img.shape().to_vec();
    let [c, h, w] = shape.as_slice() else {
        return None;
    };
    let (lo, hi) = img
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let byte = |v: f32| (((v - lo) / span) * 255.0).round().clamp(0.0, 255.0) as u8;
    let mut rgb = Vec::with_capacity(h * w * 3);
    for y in 0..*h {
        for x in 0..*w {
            for k in 0..3 {
                // Caffe's colour images are BGR: channel 2 is red.
                let ch = if *c >= 3 { 2 - k } else { 0 };
                rgb.push(byte(img[[ch, y, x]]));
            }
        }
    }
    Some(Thumbnail {
        width: *w,
        height: *h,
        rgb,
    })
}

/// Runs the FP32 net and the net quantized by `table` side by side over the recorded batches,
/// handing `visit` each batch's index and both sessions after their pass, until it breaks.
pub(crate) fn side_by_side(
    retained: &Retained,
    table: &Table,
    mut visit: impl FnMut(usize, &Session, &Session) -> ControlFlow<()>,
) -> Result<(), String> {
    let net = &retained.net;
    let quantized = with_table(net, table);
    let fp32_plan = Plan::new_int8(net, None).map_err(|e| e.to_string())?;
    let int8_plan = Plan::new_int8(&quantized, None).map_err(|e| e.to_string())?;
    let (mut fp32, mut int8) = (Session::new(&fp32_plan), Session::new(&int8_plan));
    let (mut feed_a, mut feed_b) = (retained.recorded.replay(), retained.recorded.replay());
    for b in 0..retained.recorded.len() {
        fp32.forward(&mut feed_a as &mut dyn Feed, &mut NoObserver)
            .map_err(|e| e.to_string())?;
        int8.forward(&mut feed_b as &mut dyn Feed, &mut NoObserver)
            .map_err(|e| e.to_string())?;
        if visit(b, &fp32, &int8).is_break() {
            break;
        }
    }
    Ok(())
}

/// The first `max` disagreeing images over the recorded batches (none when the metric is not an
/// Accuracy layer or nothing was recorded).
pub fn disagreements(
    retained: &Retained,
    table: &Table,
    max: usize,
) -> Result<Vec<Disagreement>, String> {
    let net = &retained.net;
    let Some(&metric) = retained.metrics.first() else {
        return Ok(Vec::new());
    };
    let Some((scores, label)) = accuracy_inputs(net, metric) else {
        return Ok(Vec::new());
    };
    let Some(data_layer) = net.layers.iter().find(|l| l.kind.is_data()) else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    let mut image = 0;
    side_by_side(retained, table, |b, fp32, int8| {
        let (a, q) = (
            top_classes(fp32.value(scores)),
            top_classes(int8.value(scores)),
        );
        let labels: Vec<Option<usize>> = match label {
            Some(v) => fp32.value(v).iter().map(|&x| Some(x as usize)).collect(),
            None => vec![None; a.len()],
        };
        for (n, (&fa, &qa)) in a.iter().zip(&q).enumerate() {
            if fa != qa && found.len() < max {
                let data = retained
                    .recorded
                    .batch(&data_layer.name, b)
                    .and_then(|tops| tops.first());
                if let Some(thumb) = data.and_then(|d| thumbnail(d, n)) {
                    found.push(Disagreement {
                        image: image + n,
                        label: labels.get(n).copied().flatten(),
                        fp32: fa,
                        int8: qa,
                        thumbnail: thumb,
                    });
                }
            }
        }
        image += a.len();
        match found.len() >= max {
            true => ControlFlow::Break(()),
            false => ControlFlow::Continue(()),
        }
    })?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    #[test]
    fn top_class_per_row_and_bgr_thumbnails() {
        let s = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![0.1, 0.7, 0.2, 0.9, 0.0, 0.1]).unwrap();
        assert_eq!(top_classes(&s), [1, 0]);
        // One 1×1 BGR pixel (blue 0, green 1, red 2): red comes first in RGB, scaled to 255.
        let d = ArrayD::from_shape_vec(IxDyn(&[1, 3, 1, 1]), vec![0.0, 1.0, 2.0]).unwrap();
        let t = thumbnail(&d, 0).unwrap();
        assert_eq!((t.width, t.height, t.rgb), (1, 1, vec![255, 128, 0]));
    }
}
