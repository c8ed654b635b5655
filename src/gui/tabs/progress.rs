//! The Progress tab: each stage with its bar and ETA (sampling with the FP32 pass, INT8 evaluation,
//! tuning step k), the INT8 metric of every tuning step against the FP32 line and the tolerance band,
//! and the steps as a table.

use egui::{Color32, RichText};
use egui_plot::{HLine, Legend, Line, MarkerShape, Plot, PlotPoints, Points, Polygon};

use crate::calib::events::Stage;
use crate::calib::tune::{Action, Step, Stop};
use crate::gui::calib_job::CalibView;

fn stage_name(s: Stage) -> String {
    match s {
        Stage::Sampling => "FP32 pass: statistics and FP32 metric".into(),
        Stage::Int8Eval => "INT8 evaluation".into(),
        Stage::Tuning(k) => format!("tuning step {k}"),
        Stage::Compare => "FP32 and INT8 predictions compared image by image".into(),
    }
}

/// A step's action in a few words.
pub fn action_text(s: &Step) -> String {
    match &s.action {
        Action::Calibrate => "as calibrated".into(),
        Action::Rescale {
            method,
            per_channel,
        } => format!(
            "{} input{}",
            method.label(),
            if *per_channel {
                " + per-channel weights"
            } else {
                ""
            }
        ),
        Action::Revert => "back to FP32".into(),
    }
}

pub fn show(ui: &mut egui::Ui, view: &CalibView, running: bool) {
    status_line(ui, view, running);
    ui.add_space(6.0);
    for line in finished_lines(&view.finished_stages) {
        ui.horizontal(|ui| {
            ui.label(RichText::new("done").color(Color32::from_rgb(0x2e, 0x9e, 0x5a)));
            ui.label(line);
        });
    }
    if let Some(p) = &view.progress {
        let frac = if p.total > 0 {
            p.done as f32 / p.total as f32
        } else {
            0.0
        };
        let eta = p
            .eta()
            .map(|d| format!(", ETA {:.0} s", d.as_secs_f64().ceil()))
            .unwrap_or_default();
        ui.label(stage_name(p.stage));
        ui.add(
            egui::ProgressBar::new(frac)
                .text(format!("{}/{} batches{eta}", p.done, p.total))
                .desired_width(ui.available_width().min(520.0)),
        );
    }
    ui.add_space(8.0);
    chart(ui, view);
    ui.add_space(8.0);
    steps_table(ui, &view.steps);
}

/// Finished stages as lines, the tuning steps summed into one.
fn finished_lines(stages: &[(Stage, f64)]) -> Vec<String> {
    let mut lines = Vec::new();
    let (mut steps, mut tuning) = (0, 0.0);
    for (stage, secs) in stages {
        match stage {
            Stage::Tuning(_) => {
                steps += 1;
                tuning += secs;
            }
            _ => {
                if steps > 0 {
                    lines.push(format!("tuning: {steps} steps — {tuning:.1} s"));
                    steps = 0;
                }
                lines.push(format!("{} — {secs:.1} s", stage_name(*stage)));
            }
        }
    }
    if steps > 0 {
        lines.push(format!("tuning: {steps} steps — {tuning:.1} s"));
    }
    lines
}

/// Why tuning ended, in words.
fn stop_text(stop: Stop) -> &'static str {
    match stop {
        Stop::WithinTolerance => "tuning reached the tolerance",
        Stop::NotTuned => "not tuned",
        Stop::NothingLeft => "tuning tried every layer",
        Stop::MaxSteps => "tuning used its steps",
        Stop::TimeBudget => "tuning used its time",
    }
}

fn status_line(ui: &mut egui::Ui, view: &CalibView, running: bool) {
    let text = if let Some(e) = &view.error {
        RichText::new(format!("Calibration failed: {e}")).color(Color32::from_rgb(0xd0, 0x40, 0x40))
    } else if view.cancelled {
        RichText::new("Cancelled; nothing was written.")
    } else if running {
        RichText::new("Calibrating…")
    } else if let (Some(fp32), Some(int8)) = (view.fp32, view.int8()) {
        let within = fp32 - int8 <= view.tolerance + 1e-12;
        let stop = view
            .outcome
            .as_ref()
            .map_or("", |o| stop_text(o.report.stop));
        RichText::new(format!(
            "Finished: FP32 {fp32:.4}, INT8 {int8:.4} ({:+.4}; {} the tolerance {}; {stop})",
            int8 - fp32,
            if within { "within" } else { "outside" },
            view.tolerance
        ))
        .strong()
    } else {
        RichText::new("Not calibrated yet: press Calibrate.")
    };
    ui.label(text);
}

/// INT8 metric per step (kept: filled, undone: hollow), the best so far, FP32 and the tolerance band.
fn chart(ui: &mut egui::Ui, view: &CalibView) {
    let steps = &view.steps;
    let right = steps.len().max(1) as f64 - 0.5;
    let kept: Vec<[f64; 2]> = steps
        .iter()
        .filter(|s| s.kept)
        .map(|s| [s.step as f64, s.accuracy])
        .collect();
    let undone: Vec<[f64; 2]> = steps
        .iter()
        .filter(|s| !s.kept)
        .map(|s| [s.step as f64, s.accuracy])
        .collect();
    let mut best = f64::NEG_INFINITY;
    let best_line: Vec<[f64; 2]> = steps
        .iter()
        .map(|s| {
            if s.kept {
                best = s.accuracy;
            }
            [s.step as f64, best]
        })
        .collect();
    Plot::new("tuning")
        .height(260.0)
        .include_x(-0.5)
        .include_x(right.max(4.5))
        .legend(Legend::default())
        .x_axis_label("tuning step")
        .y_axis_label("metric")
        .allow_scroll(false)
        .show(ui, |p| {
            if let Some(fp32) = view.fp32 {
                let low = fp32 - view.tolerance;
                p.polygon(
                    Polygon::new(
                        "tolerance band",
                        PlotPoints::from(vec![
                            [-0.5, low],
                            [right, low],
                            [right, fp32],
                            [-0.5, fp32],
                        ]),
                    )
                    .fill_color(Color32::from_rgba_unmultiplied(0x2e, 0x9e, 0x5a, 40)),
                );
                p.hline(HLine::new("FP32", fp32).color(Color32::from_rgb(0x2e, 0x9e, 0x5a)));
            }
            p.line(Line::new("INT8 kept", PlotPoints::from(best_line)));
            p.points(
                Points::new("INT8 (kept)", PlotPoints::from(kept))
                    .radius(4.0)
                    .shape(MarkerShape::Circle)
                    .filled(true),
            );
            p.points(
                Points::new("INT8 (undone)", PlotPoints::from(undone))
                    .radius(4.0)
                    .shape(MarkerShape::Circle)
                    .filled(false),
            );
        });
}

fn steps_table(ui: &mut egui::Ui, steps: &[Step]) {
    if steps.is_empty() {
        return;
    }
    egui::ScrollArea::vertical()
        .max_height(240.0)
        .show(ui, |ui| {
            egui::Grid::new("steps").striped(true).show(ui, |ui| {
                for h in ["step", "layer", "change", "SQNR dB", "metric", ""] {
                    ui.strong(h);
                }
                ui.end_row();
                for s in steps {
                    ui.label(s.step.to_string());
                    ui.label(s.layer.as_deref().unwrap_or("—"));
                    ui.label(action_text(s));
                    ui.label(
                        s.sqnr_db
                            .map(|(a, b)| format!("{a:.1} -> {b:.1}"))
                            .unwrap_or_default(),
                    );
                    ui.label(format!("{:.4}", s.accuracy));
                    ui.label(if s.kept { "kept" } else { "undone" });
                    ui.end_row();
                }
            });
        });
}
