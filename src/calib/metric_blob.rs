//! Which top blob holds the metric a calibration measures: the candidates of a net (the tops of
//! Accuracy and DetectionEvaluate layers) and the default Intel's tool picks (spec §2.1): the top of the
//! Accuracy layer with the smallest `top_k` (a later layer wins a tie), or the DetectionEvaluate top.

use crate::model::{LayerKind, Net};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricKind {
    Accuracy { top_k: usize },
    Detection,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricBlob {
    pub name: String,
    pub layer: String,
    pub kind: MetricKind,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricBlobs {
    pub candidates: Vec<MetricBlob>,
}

impl MetricBlobs {
    pub fn of(net: &Net) -> Self {
        let mut candidates = Vec::new();
        for l in &net.layers {
            let kind = match &l.kind {
                LayerKind::Accuracy { top_k, .. } => MetricKind::Accuracy { top_k: *top_k },
                LayerKind::DetectionEvaluate(_) => MetricKind::Detection,
                _ => continue,
            };
            if let Some(&top) = l.tops.first() {
                candidates.push(MetricBlob {
                    name: net.values[top].name.clone(),
                    layer: l.name.clone(),
                    kind,
                });
            }
        }
        Self { candidates }
    }

    /// True when the net evaluates detections (detection mode is pre-set).
    pub fn is_detection(&self) -> bool {
        self.candidates
            .iter()
            .any(|c| c.kind == MetricKind::Detection)
    }

    pub fn names(&self) -> Vec<String> {
        self.candidates.iter().map(|c| c.name.clone()).collect()
    }

    /// The blob Intel's tool picks when `-n` is not given.
    pub fn default_blob(&self, detection: bool) -> Option<&str> {
        if detection {
            return self
                .candidates
                .iter()
                .find(|c| c.kind == MetricKind::Detection)
                .map(|c| c.name.as_str());
        }
        let mut best: Option<(usize, &str)> = None;
        for c in &self.candidates {
            if let MetricKind::Accuracy { top_k } = c.kind
                && best.is_none_or(|(k, _)| top_k <= k)
            {
                best = Some((top_k, c.name.as_str()));
            }
        }
        best.map(|(_, n)| n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs(v: &[(&str, MetricKind)]) -> MetricBlobs {
        MetricBlobs {
            candidates: v
                .iter()
                .map(|(n, k)| MetricBlob {
                    name: n.to_string(),
                    layer: n.to_string(),
                    kind: k.clone(),
                })
                .collect(),
        }
    }

    #[test]
    fn smallest_top_k_wins_and_later_layers_win_ties() {
        let b = blobs(&[
            ("top5", MetricKind::Accuracy { top_k: 5 }),
            ("a", MetricKind::Accuracy { top_k: 1 }),
            ("b", MetricKind::Accuracy { top_k: 1 }),
        ]);
        assert_eq!(b.default_blob(false), Some("b"));
        assert!(!b.is_detection());
        let d = blobs(&[("detection_eval", MetricKind::Detection)]);
        assert_eq!(d.default_blob(true), Some("detection_eval"));
        assert_eq!(d.default_blob(false), None);
    }
}
