//! Graph node colours after a calibration: by the precision each layer runs in (u8 / s8 input, FP32
//! reverted by tuning, pinned by the user), or by its output SQNR on a heat scale, with the legend.

use std::collections::{BTreeMap, BTreeSet};

use egui::Color32;

use crate::calib::report::{LayerReport, Precision};
use crate::gui::graph::model::GraphModel;
use crate::model::Net;
use crate::model::layer::LayerKind;

/// What the graph's node headers show after a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorMode {
    /// The layer category (before any run).
    #[default]
    Category,
    Precision,
    Sqnr,
}

pub const U8: Color32 = Color32::from_rgb(0x2e, 0x9e, 0x5a);
pub const S8: Color32 = Color32::from_rgb(0x1f, 0xa5, 0xb8);
pub const REVERTED: Color32 = Color32::from_rgb(0xd9, 0x82, 0x2b);
pub const PINNED: Color32 = Color32::from_rgb(0x8e, 0x4e, 0xc6);
pub const FP32: Color32 = Color32::from_rgb(0x70, 0x70, 0x70);

/// SQNR at the ends of the heat scale (dB).
pub const SQNR_LOW: f64 = 10.0;
pub const SQNR_HIGH: f64 = 40.0;

/// The precision legend: (label, colour).
pub const PRECISION_LEGEND: [(&str, Color32); 5] = [
    ("INT8, u8 input", U8),
    ("INT8, s8 input", S8),
    ("FP32 as Intel Caffe runs it", FP32),
    ("FP32, reverted by tuning", REVERTED),
    ("FP32, pinned", PINNED),
];

/// A colour from red (low) through yellow to green (high) for an SQNR in dB.
pub fn heat(db: f64) -> Color32 {
    let t = ((db - SQNR_LOW) / (SQNR_HIGH - SQNR_LOW)).clamp(0.0, 1.0) as f32;
    let (r, g) = if t < 0.5 {
        (1.0, t * 2.0)
    } else {
        (2.0 - t * 2.0, 1.0)
    };
    Color32::from_rgb((r * 210.0) as u8, (g * 180.0) as u8, 60)
}

fn precision_color(l: &LayerReport, pinned: bool) -> Color32 {
    match (pinned, l.reverted, l.precision_in) {
        (true, _, _) => PINNED,
        (_, true, _) => REVERTED,
        (_, _, Precision::U8) => U8,
        (_, _, Precision::S8) => S8,
        (_, _, Precision::Fp32) => FP32,
    }
}

/// One optional colour per graph node: quantizable layers coloured, the rest left as they are.
pub fn node_colors(
    net: &Net,
    graph: &GraphModel,
    layers: &[LayerReport],
    pinned: &BTreeSet<String>,
    mode: ColorMode,
) -> Vec<Option<Color32>> {
    let by_name: BTreeMap<&str, &LayerReport> =
        layers.iter().map(|l| (l.name.as_str(), l)).collect();
    graph
        .nodes
        .iter()
        .map(|n| {
            let layer = &net.layers[n.layer];
            let Some(l) = by_name.get(layer.name.as_str()) else {
                // A convolution or InnerProduct the rules leave FP32 (the first one, IP without -fc).
                let weighted = matches!(
                    layer.kind,
                    LayerKind::Convolution(_) | LayerKind::InnerProduct(_)
                );
                return (weighted && mode != ColorMode::Category).then_some(FP32);
            };
            match mode {
                ColorMode::Category => None,
                ColorMode::Precision => Some(precision_color(l, pinned.contains(&l.name))),
                ColorMode::Sqnr => Some(l.sqnr_db_isolated.map_or(FP32, heat)),
            }
        })
        .collect()
}

/// Draws the legend of `mode` in the top-left corner of `rect`.
pub fn legend(ui: &egui::Ui, rect: egui::Rect, mode: ColorMode) {
    let painter = ui.painter_at(rect);
    let font = egui::FontId::proportional(12.0);
    let text = ui.visuals().text_color();
    let mut y = rect.top() + 10.0;
    let x = rect.left() + 10.0;
    let bg = egui::Rect::from_min_size(egui::pos2(x - 6.0, y - 6.0), egui::vec2(220.0, 118.0));
    painter.rect_filled(bg, 4.0, ui.visuals().extreme_bg_color.gamma_multiply(0.9));
    match mode {
        ColorMode::Category => {}
        ColorMode::Precision => {
            for (label, c) in PRECISION_LEGEND {
                painter.rect_filled(
                    egui::Rect::from_min_size(egui::pos2(x, y), egui::vec2(14.0, 14.0)),
                    2.0,
                    c,
                );
                painter.text(
                    egui::pos2(x + 20.0, y),
                    egui::Align2::LEFT_TOP,
                    label,
                    font.clone(),
                    text,
                );
                y += 20.0;
            }
        }
        ColorMode::Sqnr => {
            painter.text(
                egui::pos2(x, y),
                egui::Align2::LEFT_TOP,
                "isolated SQNR",
                font.clone(),
                text,
            );
            y += 20.0;
            for k in 0..=30 {
                let db = SQNR_LOW + (SQNR_HIGH - SQNR_LOW) * f64::from(k) / 30.0;
                painter.rect_filled(
                    egui::Rect::from_min_size(
                        egui::pos2(x + k as f32 * 6.0, y),
                        egui::vec2(6.0, 14.0),
                    ),
                    0.0,
                    heat(db),
                );
            }
            y += 18.0;
            painter.text(
                egui::pos2(x, y),
                egui::Align2::LEFT_TOP,
                format!("≤{SQNR_LOW} dB"),
                font.clone(),
                text,
            );
            painter.text(
                egui::pos2(x + 180.0, y),
                egui::Align2::RIGHT_TOP,
                format!("≥{SQNR_HIGH} dB"),
                font,
                text,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heat_runs_from_red_to_green() {
        assert_eq!(heat(0.0), heat(SQNR_LOW));
        assert!(heat(SQNR_LOW).r() > heat(SQNR_LOW).g());
        assert!(heat(SQNR_HIGH).g() > heat(SQNR_HIGH).r());
        assert_eq!(heat(100.0), heat(SQNR_HIGH));
    }
}
