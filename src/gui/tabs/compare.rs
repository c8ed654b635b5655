//! The Compare tab: FP32 against INT8 (and INT8 after the user's pins), every layer's SQNR worst
//! first, and the layer table (sortable by any column) where a layer is pinned to FP32 or unpinned.

use std::collections::{BTreeMap, BTreeSet};

use egui::Color32;
use egui_plot::{Bar, BarChart, Legend, Plot};

use crate::calib::boxes::{ImageBoxes, SHOW_SCORE};
use crate::calib::disagree::Thumbnail;
use crate::calib::report::{ClassAp, LayerReport, Precision};
use crate::gui::calib_job::CalibView;
use crate::gui::tabs::colors;

/// What the user asked for in the tab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareAction {
    TogglePin(String),
    Reevaluate,
    Select(String),
}

/// The table's sort column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortBy {
    #[default]
    File,
    Name,
    Precision,
    ScaleIn,
    Method,
    Sqnr,
}

/// The tab's own state: the sort order and the thumbnails' textures.
#[derive(Clone, Default)]
pub struct CompareState {
    pub sort: SortBy,
    pub descending: bool,
    thumbs: Vec<egui::TextureHandle>,
    /// The detector images' textures.
    box_thumbs: Vec<egui::TextureHandle>,
    /// The `CalibView::generation` the textures were made for.
    thumbs_generation: usize,
}

impl std::fmt::Debug for CompareState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompareState")
            .field("sort", &self.sort)
            .field("descending", &self.descending)
            .field("thumbs", &self.thumbs.len())
            .finish()
    }
}

fn precision_text(p: Precision) -> &'static str {
    match p {
        Precision::U8 => "u8",
        Precision::S8 => "s8",
        Precision::Fp32 => "FP32",
    }
}

fn opt(v: Option<f32>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "—".into())
}

pub fn show(
    ui: &mut egui::Ui,
    view: &CalibView,
    pinned: &BTreeSet<String>,
    state: &mut CompareState,
) -> Vec<CompareAction> {
    let mut actions = Vec::new();
    let Some(outcome) = &view.outcome else {
        ui.label("Calibrate first: the comparison needs FP32 and INT8 results.");
        return actions;
    };
    let r = &outcome.report;
    ui.horizontal(|ui| {
        ui.heading(format!(
            "{}: FP32 {:.4}, INT8 {:.4}",
            r.metric_blob, r.fp32_accuracy, r.int8_accuracy
        ));
        if let Some((_, a)) = &view.pinned_result {
            ui.label(format!("· with pins: INT8 {a:.4}"));
        }
    });
    ui.columns(2, |cols| {
        metric_bars(&mut cols[0], view);
        sqnr_chart(&mut cols[1], &r.layers);
    });
    class_aps(ui, &r.ap_per_class, &view.pinned_ap_per_class);
    ui.horizontal(|ui| {
        let changed: BTreeSet<String> = r
            .layers
            .iter()
            .filter(|l| l.pinned)
            .map(|l| l.name.clone())
            .collect();
        let dirty = *pinned != changed || view.pinned_result.is_some();
        if ui
            .add_enabled(dirty, egui::Button::new("Re-evaluate INT8 with pins"))
            .on_hover_text("Runs INT8 again on the kept batches, without sampling again")
            .clicked()
        {
            actions.push(CompareAction::Reevaluate);
        }
        ui.weak(format!("{} layer(s) pinned to FP32", pinned.len()));
    });
    make_textures(ui.ctx(), view, state);
    if view.boxes.is_empty() {
        disagreements(ui, view, state);
    } else {
        detections(ui, view, state);
    }
    layer_table(ui, &r.layers, pinned, state, &mut actions);
    actions
}

/// The images' textures, made again when the comparison changed.
fn make_textures(ctx: &egui::Context, view: &CalibView, state: &mut CompareState) {
    if state.thumbs_generation == view.generation {
        return;
    }
    // Small classifier inputs keep their pixels; photos are smoothed.
    let texture = |name: String, t: &Thumbnail, options| {
        let img = egui::ColorImage::from_rgb([t.width, t.height], &t.rgb);
        ctx.load_texture(name, img, options)
    };
    state.thumbs = view
        .disagreements
        .iter()
        .map(|d| {
            let name = format!("disagreement {}", d.image);
            texture(name, &d.thumbnail, egui::TextureOptions::NEAREST)
        })
        .collect();
    state.box_thumbs = view
        .boxes
        .iter()
        .map(|b| {
            let name = format!("detections {}", b.image);
            texture(name, &b.thumbnail, egui::TextureOptions::LINEAR)
        })
        .collect();
    state.thumbs_generation = view.generation;
}

/// Each class's AP, FP32 against INT8, and INT8 after the user's pins once re-evaluated
/// (detectors).
fn class_aps(ui: &mut egui::Ui, aps: &[ClassAp], pinned: &BTreeMap<i32, f64>) {
    if aps.is_empty() {
        return;
    }
    egui::CollapsingHeader::new("Average precision per class (11-point)")
        .default_open(true)
        .show(ui, |ui| {
            egui::Grid::new("class aps").striped(true).show(ui, |ui| {
                let mut heads = vec!["class", "FP32 AP", "INT8 AP", "change"];
                if !pinned.is_empty() {
                    heads.push("INT8 with pins");
                }
                for h in heads {
                    ui.strong(h);
                }
                ui.end_row();
                for a in aps {
                    ui.label(a.label.to_string());
                    ui.label(format!("{:.4}", a.fp32));
                    ui.label(format!("{:.4}", a.int8));
                    ui.label(format!("{:+.4}", a.int8 - a.fp32));
                    if let Some(p) = pinned.get(&a.label) {
                        ui.label(format!("{p:.4}"));
                    }
                    ui.end_row();
                }
            });
        });
}

/// A few images with the ground truth and both nets' detections drawn over them.
fn detections(ui: &mut egui::Ui, view: &CalibView, state: &CompareState) {
    let header = format!(
        "Detections on {} images (score ≥ {}), where FP32 and INT8 differ most",
        view.boxes.len(),
        SHOW_SCORE
    );
    egui::CollapsingHeader::new(header)
        .default_open(true)
        .show(ui, |ui| {
            ui.horizontal(|ui| {
                for (text, color) in [
                    ("ground truth", Color32::WHITE),
                    ("FP32", colors::U8),
                    ("INT8", colors::S8),
                ] {
                    let (r, _) =
                        ui.allocate_exact_size(egui::vec2(16.0, 10.0), egui::Sense::hover());
                    let stroke = egui::Stroke::new(2.0, color);
                    ui.painter()
                        .rect_stroke(r, 0.0, stroke, egui::StrokeKind::Inside);
                    ui.label(text);
                }
            });
            egui::ScrollArea::horizontal()
                .id_salt("detections")
                .show(ui, |ui| {
                    ui.horizontal(|ui| {
                        for (b, tex) in view.boxes.iter().zip(&state.box_thumbs) {
                            ui.vertical(|ui| image_with_boxes(ui, b, tex));
                        }
                    });
                });
        });
}

/// One image scaled to a fixed height, its boxes as outlines.
fn image_with_boxes(ui: &mut egui::Ui, b: &ImageBoxes, tex: &egui::TextureHandle) {
    const HEIGHT: f32 = 200.0;
    let t = &b.thumbnail;
    let width = HEIGHT * t.width as f32 / t.height.max(1) as f32;
    let response = ui.add(egui::Image::new(tex).fit_to_exact_size(egui::vec2(width, HEIGHT)));
    let rect = response.rect;
    let to_screen = |r: [f32; 4]| {
        egui::Rect::from_min_max(
            rect.lerp_inside(egui::vec2(r[0], r[1])),
            rect.lerp_inside(egui::vec2(r[2], r[3])),
        )
    };
    let painter = ui.painter_at(rect);
    let outline = |r: [f32; 4], width: f32, color: Color32| {
        let stroke = egui::Stroke::new(width, color);
        painter.rect_stroke(to_screen(r), 0.0, stroke, egui::StrokeKind::Middle);
    };
    for &r in &b.truth {
        outline(r, 1.0, Color32::WHITE);
    }
    for d in &b.fp32 {
        outline(d.rect, 2.0, colors::U8);
    }
    for d in &b.int8 {
        outline(d.rect, 1.5, colors::S8);
    }
    ui.small(format!(
        "#{} · truth {} · FP32 {} · INT8 {}",
        b.image,
        b.truth.len(),
        b.fp32.len(),
        b.int8.len()
    ));
}

/// Thumbnails of the images FP32 and INT8 classify differently, with both top classes.
fn disagreements(ui: &mut egui::Ui, view: &CalibView, state: &CompareState) {
    let n = view.disagreements.len();
    egui::CollapsingHeader::new(format!(
        "Images where FP32 and INT8 disagree: {n}{}",
        if n >= 24 { " (the first 24)" } else { "" }
    ))
    .default_open(true)
    .show(ui, |ui| {
        egui::ScrollArea::horizontal()
            .id_salt("thumbs")
            .show(ui, |ui| {
                ui.horizontal(|ui| {
                    for (d, tex) in view.disagreements.iter().zip(&state.thumbs) {
                        ui.vertical(|ui| {
                            let side = 72.0;
                            ui.add(egui::Image::new(tex).fit_to_exact_size(egui::vec2(side, side)));
                            let label = d.label.map_or("?".into(), |l| l.to_string());
                            ui.small(format!("#{} label {label}", d.image));
                            ui.small(format!("FP32 {} · INT8 {}", d.fp32, d.int8));
                        });
                    }
                });
            });
    });
}

/// FP32 and INT8 side by side for every metric blob (and INT8 with pins for tuning's metric).
fn metric_bars(ui: &mut egui::Ui, view: &CalibView) {
    let Some(o) = &view.outcome else { return };
    let r = &o.report;
    let (mut fp32, mut int8) = (Vec::new(), Vec::new());
    for (i, m) in r.metrics.iter().enumerate() {
        let x = i as f64 * 3.0;
        fp32.push(Bar::new(x, m.fp32).name(format!("{} FP32 {:.4}", m.blob, m.fp32)));
        int8.push(Bar::new(x + 1.0, m.int8).name(format!("{} INT8 {:.4}", m.blob, m.int8)));
    }
    let names: Vec<&str> = r.metrics.iter().map(|m| m.blob.as_str()).collect();
    let right = (r.metrics.len() as f64 * 3.0 - 1.2).max(2.2);
    Plot::new("metric bars")
        .height(220.0)
        .legend(Legend::default())
        .allow_scroll(false)
        .allow_drag(false)
        .include_x(-0.8)
        .include_x(right)
        .include_y(0.0)
        .include_y(1.0)
        .x_axis_label(format!("left to right: {}", names.join(", ")))
        .x_axis_formatter(|_, _| String::new())
        .show(ui, |p| {
            p.bar_chart(BarChart::new("FP32", fp32).color(colors::U8).width(0.8));
            p.bar_chart(BarChart::new("INT8", int8).color(colors::S8).width(0.8));
            if let Some((_, a)) = &view.pinned_result {
                let bar = Bar::new(2.0, *a).name(format!("INT8 with pins {a:.4}"));
                p.bar_chart(
                    BarChart::new("INT8 with pins", vec![bar])
                        .color(colors::PINNED)
                        .width(0.8),
                );
            }
        });
}

/// Isolated SQNR per quantized layer, worst first.
fn sqnr_chart(ui: &mut egui::Ui, layers: &[LayerReport]) {
    let mut v: Vec<(&str, f64)> = layers
        .iter()
        .filter_map(|l| Some((l.name.as_str(), l.sqnr_db_isolated?)))
        .collect();
    v.sort_by(|a, b| a.1.total_cmp(&b.1));
    let bars: Vec<Bar> = v
        .iter()
        .enumerate()
        .map(|(i, (name, db))| Bar::new(i as f64, *db).name(*name).fill(colors::heat(*db)))
        .collect();
    Plot::new("sqnr chart")
        .height(220.0)
        .y_axis_label("isolated SQNR dB (worst first)")
        .allow_scroll(false)
        .show(ui, |p| p.bar_chart(BarChart::new("SQNR", bars).width(0.8)));
}

fn sort_key(l: &LayerReport, by: SortBy) -> (String, f64) {
    match by {
        SortBy::File => (String::new(), 0.0),
        SortBy::Name => (l.name.clone(), 0.0),
        SortBy::Precision => (precision_text(l.precision_in).into(), 0.0),
        SortBy::ScaleIn => (String::new(), l.scale_in.map_or(-1.0, f64::from)),
        SortBy::Method => (
            l.method.map(|m| m.label().to_string()).unwrap_or_default(),
            0.0,
        ),
        SortBy::Sqnr => (String::new(), l.sqnr_db_isolated.unwrap_or(f64::INFINITY)),
    }
}

fn layer_table(
    ui: &mut egui::Ui,
    layers: &[LayerReport],
    pinned: &BTreeSet<String>,
    state: &mut CompareState,
    actions: &mut Vec<CompareAction>,
) {
    let mut rows: Vec<&LayerReport> = layers.iter().collect();
    rows.sort_by(|a, b| {
        let (ka, kb) = (sort_key(a, state.sort), sort_key(b, state.sort));
        ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
    });
    if state.descending {
        rows.reverse();
    }
    egui::Grid::new("layer table").striped(true).show(ui, |ui| {
        let headers = [
            ("#", SortBy::File),
            ("layer", SortBy::Name),
            ("in", SortBy::Precision),
            ("out", SortBy::Precision),
            ("scale_in", SortBy::ScaleIn),
            ("scale_out", SortBy::ScaleIn),
            ("weight scales", SortBy::ScaleIn),
            ("method", SortBy::Method),
            ("SQNR iso / cum dB", SortBy::Sqnr),
            ("state", SortBy::Precision),
            ("pin", SortBy::Precision),
        ];
        for (h, by) in headers {
            let mark = if state.sort == by {
                if state.descending {
                    " (desc)"
                } else {
                    " (asc)"
                }
            } else {
                ""
            };
            if ui.button(format!("{h}{mark}")).clicked() {
                state.descending = state.sort == by && !state.descending;
                state.sort = by;
            }
        }
        ui.end_row();
        for l in rows {
            let index = layers.iter().position(|x| x.name == l.name).unwrap_or(0);
            ui.label(index.to_string());
            if ui.link(&l.name).clicked() {
                actions.push(CompareAction::Select(l.name.clone()));
            }
            ui.label(precision_text(l.precision_in));
            ui.label(precision_text(l.precision_out));
            ui.label(opt(l.scale_in));
            ui.label(opt(l.scale_out));
            ui.label(match (l.weight_scale_min, l.weight_scale_max) {
                (Some(a), Some(b)) if a != b => format!("{a:.1} – {b:.1}"),
                (Some(a), _) => format!("{a:.1}"),
                _ => "—".into(),
            });
            ui.label(l.method.map(|m| m.label()).unwrap_or("—"));
            ui.label(match (l.sqnr_db_isolated, l.sqnr_db_cumulative) {
                (Some(a), Some(b)) => format!("{a:.1} / {b:.1}"),
                _ => "—".into(),
            });
            let (state_text, color) = match (l.pinned, l.reverted, l.precision_in) {
                (true, _, _) => ("pinned", colors::PINNED),
                (_, true, _) => ("reverted", colors::REVERTED),
                (_, _, Precision::Fp32) if l.avoids_quirk => ("FP32: avoids a quirk", colors::FP32),
                (_, _, Precision::Fp32) => ("FP32 at run time", colors::FP32),
                _ if l.avoids_quirk => ("INT8, FP32 out: avoids a quirk", colors::U8),
                _ => ("INT8", colors::U8),
            };
            ui.colored_label(color, state_text);
            let mut pin = pinned.contains(&l.name);
            if ui
                .checkbox(&mut pin, "keep FP32")
                .on_hover_text("Keep this layer FP32")
                .changed()
            {
                actions.push(CompareAction::TogglePin(l.name.clone()));
            }
            ui.end_row();
        }
    });
}
