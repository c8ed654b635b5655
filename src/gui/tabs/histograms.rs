//! The Histograms tab for the selected layer: its input's histogram (counts on a log scale) with a
//! vertical line at every scale method's threshold, the chosen one drawn heavier, and the SQNR each
//! threshold would give that histogram; below, the weights' scales per output channel.

use egui::{Color32, Stroke};
use egui_plot::{Bar, BarChart, Legend, Line, Plot, PlotPoints, VLine};

use crate::calib::ScaleMethod;
use crate::calib::events::BlobStats;
use crate::calib::methods::histogram_sqnr;
use crate::gui::calib_job::CalibView;
use crate::model::{LayerId, Net};

fn method_color(m: ScaleMethod) -> Color32 {
    match m {
        ScaleMethod::Direct => Color32::from_rgb(0xe0, 0x50, 0x50),
        ScaleMethod::Kl => Color32::from_rgb(0x4c, 0x9b, 0xe8),
        ScaleMethod::Percentile => Color32::from_rgb(0xe8, 0xb0, 0x30),
        ScaleMethod::MovingAverage => Color32::from_rgb(0xb0, 0x70, 0xe0),
        ScaleMethod::Mse => Color32::from_rgb(0x40, 0xc0, 0x80),
    }
}

pub fn show(ui: &mut egui::Ui, net: &Net, layer: Option<LayerId>, view: &CalibView) {
    let Some(id) = layer else {
        ui.label("Select a layer in the graph or in the Compare tab's table.");
        return;
    };
    let l = &net.layers[id];
    let Some(blob) = l.bottoms.first().map(|&b| net.values[b].name.clone()) else {
        ui.label(format!("{} has no input.", l.name));
        return;
    };
    let Some(stats) = view.blobs.get(&blob) else {
        ui.label(format!(
            "No statistics for {} (input \"{blob}\"): only the inputs and outputs of quantizable layers are sampled, after a calibration.",
            l.name
        ));
        return;
    };
    let chosen = view.scales.get(&l.name).map(|s| s.method);
    ui.heading(format!("{} — input \"{blob}\"", l.name));
    ui.label(format!(
        "range [{:.4}, {:.4}]; {}",
        stats.min + 0.0,
        stats.max + 0.0,
        match chosen {
            Some(m) => format!("chosen threshold: {}", m.label()),
            None => "kept FP32 (no threshold in use)".into(),
        }
    ));
    activation_plot(ui, stats, chosen);
    ui.add_space(8.0);
    weight_plot(ui, l.name.as_str(), view);
}

/// The histogram as a step line of log10(1 + count), and one line per method's threshold.
fn activation_plot(ui: &mut egui::Ui, stats: &BlobStats, chosen: Option<ScaleMethod>) {
    let Some((counts, lo, w)) = &stats.histogram else {
        ui.label("No histogram was gathered for this blob (it is gathered with tuning or KL/MSE).");
        return;
    };
    let unsigned = stats.min >= 0.0;
    let points: Vec<[f64; 2]> = counts
        .iter()
        .enumerate()
        .flat_map(|(i, &c)| {
            let y = (1.0 + c).log10();
            let x0 = lo + i as f64 * w;
            [[x0, y], [x0 + w, y]]
        })
        .collect();
    Plot::new("activation histogram")
        .height(300.0)
        .legend(Legend::default().position(egui_plot::Corner::RightTop))
        .x_axis_label("value")
        .y_axis_label("log10(1 + count)")
        .allow_scroll(false)
        .show(ui, |p| {
            p.line(
                Line::new("histogram", PlotPoints::from(points))
                    .color(Color32::from_gray(170))
                    .fill(0.0),
            );
            for &(m, t) in &stats.thresholds {
                let db = histogram_sqnr(counts, *lo, *w, f64::from(t), unsigned);
                let is_chosen = Some(m) == chosen;
                let name = format!(
                    "{}: {t:.4} (SQNR {db:.1} dB){}",
                    m.label(),
                    if is_chosen { " — chosen" } else { "" }
                );
                let stroke = Stroke::new(if is_chosen { 3.5 } else { 1.5 }, method_color(m));
                p.vline(VLine::new(name.clone(), f64::from(t)).stroke(stroke));
                if !unsigned {
                    p.vline(VLine::new(name, -f64::from(t)).stroke(stroke));
                }
            }
        });
}

/// The layer's weight scales (127 / max |w| per output channel, or one per tensor).
fn weight_plot(ui: &mut egui::Ui, layer: &str, view: &CalibView) {
    let Some(q) = view.table().and_then(|t| t.get(layer)) else {
        return;
    };
    let bars: Vec<Bar> = q
        .scale_params
        .iter()
        .enumerate()
        .map(|(c, &s)| Bar::new(c as f64, f64::from(s)).width(0.8))
        .collect();
    let what = if bars.len() > 1 {
        "per output channel"
    } else {
        "one for the whole tensor"
    };
    ui.label(format!("Weight scales ({what}): 127 / max |w|"));
    let n = bars.len() as f64;
    Plot::new("weight scales")
        .height(180.0)
        .include_x(-1.0)
        .include_x(n.max(8.0))
        .include_y(0.0)
        .x_axis_label("output channel")
        .y_axis_label("scale")
        .allow_scroll(false)
        .show(ui, |p| {
            p.bar_chart(
                BarChart::new("weight scale", bars).color(Color32::from_rgb(0x4c, 0x9b, 0xe8)),
            );
        });
}
