//! The settings panel: every calibration parameter with a one-line tooltip. Numbers are typed as text;
//! a value that does not parse or validate is shown with its reason beside the field and not applied.

use std::collections::HashMap;

use crate::calib::config::{
    self, CalibConfig, ScaleMethod, Setting, TuningStrategy, WeightScaling,
};
use crate::calib::metric_blob::MetricBlobs;

/// The settings as edited: the applied configuration, the text of each numeric field and its error.
#[derive(Debug, Clone, Default)]
pub struct SettingsForm {
    pub config: CalibConfig,
    texts: HashMap<Setting, String>,
    pub errors: HashMap<Setting, String>,
}

impl SettingsForm {
    pub fn new(config: CalibConfig) -> Self {
        let texts = HashMap::from([
            (Setting::Iterations, config.iterations.to_string()),
            (Setting::AccuracyLoss, config.accuracy_loss.to_string()),
            (
                Setting::SamplingIterations,
                config.sampling_iterations.to_string(),
            ),
            (Setting::Threads, config.threads.to_string()),
        ]);
        Self {
            config,
            texts,
            errors: HashMap::new(),
        }
    }

    /// Parses and validates the typed text of a numeric setting; applies it when valid.
    pub fn apply_text(&mut self, setting: Setting, text: &str) {
        self.texts.insert(setting, text.to_string());
        let t = text.trim();
        let result = match setting {
            Setting::Iterations | Setting::SamplingIterations | Setting::Threads => t
                .parse::<usize>()
                .map_err(|_| format!("'{t}' is not a whole number"))
                .and_then(|n| {
                    match setting {
                        Setting::Threads => config::check_threads(n),
                        _ => config::check_iterations(n, setting),
                    }
                    .map_err(|e| e.reason)?;
                    match setting {
                        Setting::Iterations => self.config.iterations = n,
                        Setting::SamplingIterations => self.config.sampling_iterations = n,
                        _ => self.config.threads = n,
                    }
                    Ok(())
                }),
            Setting::AccuracyLoss => t
                .parse::<f64>()
                .map_err(|_| format!("'{t}' is not a number"))
                .and_then(|l| {
                    config::check_accuracy_loss(l).map_err(|e| e.reason)?;
                    self.config.accuracy_loss = l;
                    Ok(())
                }),
            Setting::BlobName => Ok(()),
        };
        match result {
            Ok(()) => self.errors.remove(&setting),
            Err(reason) => self.errors.insert(setting, reason),
        };
    }

    /// Shows the panel; returns true when an applied value changed.
    pub fn ui(&mut self, ui: &mut egui::Ui, metrics: &MetricBlobs) -> bool {
        let before = self.config.clone();
        egui::Grid::new("settings")
            .num_columns(2)
            .spacing([8.0, 6.0])
            .show(ui, |ui| {
                self.number(
                    ui,
                    Setting::Iterations,
                    "Iterations",
                    "Test batches for each accuracy measurement (-i).",
                );
                ui.end_row();
                self.blob_choice(ui, metrics);
                ui.end_row();
                self.number(
                    ui,
                    Setting::AccuracyLoss,
                    "Tolerance",
                    "Accuracy drop allowed, as a fraction: 0.01 is one point (-l).",
                );
                ui.end_row();
                if !self.errors.contains_key(&Setting::AccuracyLoss) {
                    ui.label("");
                    ui.weak(format!(
                        "= {:.2} % of accuracy",
                        self.config.accuracy_loss * 100.0
                    ));
                    ui.end_row();
                }
                check(
                    ui,
                    &mut self.config.detection,
                    "Detection mode",
                    "Measure mAP from DetectionEvaluate instead of accuracy (-d 1).",
                );
                check(
                    ui,
                    &mut self.config.first_conv_force_u8,
                    "First conv force u8",
                    "Feed the first convolution u8 data prepared by the data layer (-fu).",
                );
                self.number(
                    ui,
                    Setting::SamplingIterations,
                    "Sampling iterations",
                    "Batches whose statistics choose the scales (-s).",
                );
                ui.end_row();
                choice(
                    ui,
                    "Weight scaling",
                    "One weight scale per tensor or per output channel (-c).",
                    &mut self.config.weight_scaling,
                    &WeightScaling::ALL,
                    |w| w.label(),
                );
                choice(
                    ui,
                    "Scale method",
                    "How an activation's range is chosen from its statistics (-a).",
                    &mut self.config.scale_method,
                    &ScaleMethod::ALL,
                    |m| m.label(),
                );
                check(
                    ui,
                    &mut self.config.quantize_first_conv,
                    "Quantize first conv",
                    "Run the first convolution in INT8 too (-1st).",
                );
                check(
                    ui,
                    &mut self.config.int8_inner_product,
                    "INT8 InnerProduct",
                    "Run InnerProduct layers in INT8 (-fc).",
                );
                check(
                    ui,
                    &mut self.config.unify_concat_scales,
                    "Unify concat scales",
                    "Give all inputs of a Concat one scale (-f).",
                );
                check(
                    ui,
                    &mut self.config.concat_fp32,
                    "Concat in FP32",
                    "Layers feeding a Concat output FP32 (-t).",
                );
                choice(
                    ui,
                    "Tuning",
                    "How accuracy above the tolerance is repaired.",
                    &mut self.config.tuning,
                    &TuningStrategy::ALL,
                    |t| t.label(),
                );
                self.number(
                    ui,
                    Setting::Threads,
                    "Worker threads",
                    "Threads for the engine; 0 uses every core.",
                );
                ui.end_row();
            });
        self.config != before
    }

    fn number(&mut self, ui: &mut egui::Ui, setting: Setting, label: &str, tip: &str) {
        let l = ui.label(label).on_hover_text(tip);
        ui.vertical(|ui| {
            let mut text = self.texts.get(&setting).cloned().unwrap_or_default();
            let r = ui
                .add(egui::TextEdit::singleline(&mut text).desired_width(90.0))
                .labelled_by(l.id)
                .on_hover_text(tip);
            if r.changed() {
                self.apply_text(setting, &text);
            }
            if let Some(e) = self.errors.get(&setting) {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
        });
    }

    fn blob_choice(&mut self, ui: &mut egui::Ui, metrics: &MetricBlobs) {
        let tip = "The top blob that holds the metric (-n); the default is Intel's choice.";
        let label = ui.label("Metric blob").on_hover_text(tip);
        let shown = if self.config.blob_name.is_empty() {
            "(none in this net)".to_string()
        } else {
            self.config.blob_name.clone()
        };
        let r = egui::ComboBox::from_id_salt("metric_blob")
            .selected_text(shown)
            .show_ui(ui, |ui| {
                for c in &metrics.candidates {
                    ui.selectable_value(
                        &mut self.config.blob_name,
                        c.name.clone(),
                        format!("{} ({})", c.name, c.layer),
                    );
                }
            });
        r.response.labelled_by(label.id).on_hover_text(tip);
    }
}

fn check(ui: &mut egui::Ui, value: &mut bool, label: &str, tip: &str) {
    let l = ui.label(label).on_hover_text(tip);
    ui.checkbox(value, "").labelled_by(l.id).on_hover_text(tip);
    ui.end_row();
}

fn choice<T: Copy + PartialEq>(
    ui: &mut egui::Ui,
    label: &str,
    tip: &str,
    value: &mut T,
    all: &[T],
    name: impl Fn(T) -> &'static str,
) {
    let l = ui.label(label).on_hover_text(tip);
    let r = egui::ComboBox::from_id_salt(label)
        .selected_text(name(*value))
        .show_ui(ui, |ui| {
            for &v in all {
                ui.selectable_value(value, v, name(v));
            }
        });
    r.response.labelled_by(l.id).on_hover_text(tip);
    ui.end_row();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_text_is_refused_with_a_reason_and_not_applied() {
        let mut f = SettingsForm::new(CalibConfig::default());
        f.apply_text(Setting::AccuracyLoss, "1.5");
        assert!(f.errors[&Setting::AccuracyLoss].contains("outside [0, 1)"));
        assert_eq!(f.config.accuracy_loss, 0.01);
        f.apply_text(Setting::AccuracyLoss, "0.02");
        assert!(f.errors.is_empty());
        assert_eq!(f.config.accuracy_loss, 0.02);
        f.apply_text(Setting::Iterations, "ten");
        assert!(f.errors[&Setting::Iterations].contains("whole number"));
        f.apply_text(Setting::Iterations, "0");
        assert!(f.errors[&Setting::Iterations].contains("at least 1"));
        assert_eq!(f.config.iterations, 10);
    }
}
