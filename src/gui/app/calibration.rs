//! The app's side of a calibration: starting and cancelling it with the settings panel's values,
//! taking in its events, pinning layers and re-evaluating, and saving the quantized prototxt and the
//! report through the save dialog (never over an input file; atomic writes).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::channel;

use super::{App, LogLevel, Tab};
use crate::calib::run::Calibration;
use crate::gui::calib_job::{CalibJob, CalibView};
use crate::gui::dialogs::SaveKind;
use crate::gui::tabs::colors::ColorMode;
use crate::model::export::{same_file, write_atomic};

impl App {
    /// Whether "Calibrate" can start: a model with weights, nothing running.
    pub fn can_calibrate(&self) -> bool {
        self.loaded
            .as_ref()
            .is_some_and(|l| l.model.weights.is_some())
            && self.calib.is_none()
            && self.job.is_none()
    }

    /// Starts a calibration of the loaded model with the settings panel's values.
    pub fn start_calibration(&mut self, ctx: &egui::Context) {
        let Some(l) = &self.loaded else { return };
        let Some(weights) = l.model.weights.clone() else {
            self.log(
                LogLevel::Error,
                "calibration needs weights: open a .caffemodel",
            );
            return;
        };
        let mut c = Calibration::new(
            l.model.prototxt.path.clone(),
            weights,
            self.settings.config.clone(),
        );
        c.pinned = self.pinned.iter().cloned().collect();
        self.calib_view = CalibView {
            tolerance: c.cfg.accuracy_loss,
            ..CalibView::default()
        };
        self.export_status = None;
        self.last_calibration = Some(c.clone());
        self.log(LogLevel::Info, "calibration started");
        let ctx = ctx.clone();
        self.calib = Some(CalibJob::start(c, Arc::new(move || ctx.request_repaint())));
        self.tab = Tab::Progress;
    }

    /// Asks the running job to stop within one batch.
    pub fn cancel_calibration(&mut self) {
        if let Some(j) = &self.calib {
            j.cancel();
            self.log(LogLevel::Info, "cancelling…");
        }
    }

    /// Takes in what the job reported; logs its end.
    pub(super) fn poll_calibration(&mut self) {
        let Some(job) = &mut self.calib else { return };
        let warned = self.calib_view.warnings.len();
        let ended = job.poll(&mut self.calib_view);
        let new: Vec<String> = self
            .calib_view
            .warnings
            .iter()
            .skip(warned)
            .cloned()
            .collect();
        for w in new {
            self.log(LogLevel::Warning, w);
        }
        if !ended {
            return;
        }
        self.calib = None;
        let v = &self.calib_view;
        let line = if let Some(e) = v.error.clone() {
            (LogLevel::Error, format!("calibration failed: {e}"))
        } else if v.cancelled {
            (
                LogLevel::Info,
                "calibration cancelled; nothing was written".to_string(),
            )
        } else {
            let (fp32, int8) = (v.fp32.unwrap_or(f64::NAN), v.int8().unwrap_or(f64::NAN));
            (
                LogLevel::Info,
                format!("calibrated: FP32 {fp32:.4}, INT8 {int8:.4}"),
            )
        };
        if self.calib_view.outcome.is_some() && self.color_mode == ColorMode::Category {
            self.color_mode = ColorMode::Precision;
        }
        self.log(line.0, line.1);
    }

    /// Pins a layer to FP32, or unpins it.
    pub fn toggle_pin(&mut self, layer: &str) {
        if !self.pinned.remove(layer) {
            self.pinned.insert(layer.to_string());
        }
    }

    /// Re-evaluates INT8 with the current pins on the last calibration's statistics and batches.
    pub fn reevaluate(&mut self, ctx: &egui::Context) {
        let Some(o) = &self.calib_view.outcome else {
            return;
        };
        if self.calib.is_some() {
            return;
        }
        let retained = Arc::clone(&o.retained);
        let cfg = self.settings.config.clone();
        let ctx = ctx.clone();
        self.log(
            LogLevel::Info,
            format!(
                "re-evaluating INT8 with {} pinned layer(s)",
                self.pinned.len()
            ),
        );
        self.calib = Some(CalibJob::reevaluate(
            retained,
            cfg,
            self.pinned.clone(),
            Arc::new(move || ctx.request_repaint()),
        ));
    }

    /// The default name of a save: `<model stem>_quantized.prototxt` (or `_report.json`) beside it.
    fn default_save_path(&self, kind: SaveKind) -> Option<PathBuf> {
        let model = self.model_path()?;
        let stem = model.file_stem()?.to_string_lossy().into_owned();
        let name = match kind {
            SaveKind::QuantizedPrototxt => format!("{stem}_quantized.prototxt"),
            SaveKind::Report => format!("{stem}_report.json"),
        };
        Some(model.with_file_name(name))
    }

    /// Opens a save dialog off the UI thread.
    pub fn ask_save(&mut self, kind: SaveKind) {
        let Some(default) = self.default_save_path(kind) else {
            return;
        };
        let (tx, rx) = channel();
        let dialogs = Arc::clone(&self.dialogs);
        std::thread::spawn(move || {
            let _ = tx.send(dialogs.save(kind, &default));
        });
        self.save_dialog = Some((kind, rx));
    }

    pub(super) fn poll_save_dialog(&mut self) {
        let Some((kind, rx)) = &self.save_dialog else {
            return;
        };
        let Ok(choice) = rx.try_recv() else { return };
        let kind = *kind;
        self.save_dialog = None;
        match choice {
            None => self.log(LogLevel::Info, "not saved"),
            Some(p) => {
                let r = match kind {
                    SaveKind::QuantizedPrototxt => self.save_quantized(&p),
                    SaveKind::Report => self.save_report(&p),
                };
                self.finish_save(r);
            }
        }
    }

    fn finish_save(&mut self, r: Result<String, String>) {
        match &r {
            Ok(m) => self.log(LogLevel::Info, m.clone()),
            Err(e) => self.log(LogLevel::Error, e.clone()),
        }
        self.export_status = Some(r);
    }

    /// Writes the quantized prototxt of the current table (pins included) to `path`, exactly as
    /// `int8cal calibrate` writes it (and with `-fu` the force-u8 pair beside it).
    pub fn save_quantized(&mut self, path: &Path) -> Result<String, String> {
        let (Some(c), Some(o)) = (&self.last_calibration, &self.calib_view.outcome) else {
            return Err("nothing to save: calibrate first".into());
        };
        let table = self.calib_view.table().cloned().unwrap_or_default();
        let (notes, fu) = c
            .export(&o.retained.model, &table, path)
            .map_err(|e| e.to_string())?;
        for n in notes {
            self.log(LogLevel::Info, n);
        }
        let mut msg = format!("saved {}", path.display());
        if let Some(f) = fu {
            msg += &format!(" and {} + {}", f.prototxt.display(), f.weights.display());
        }
        Ok(msg)
    }

    /// Writes the calibration's JSON report to `path`.
    pub fn save_report(&mut self, path: &Path) -> Result<String, String> {
        let (Some(c), Some(o)) = (&self.last_calibration, &self.calib_view.outcome) else {
            return Err("nothing to save: calibrate first".into());
        };
        if [&c.model, &c.weights].iter().any(|i| same_file(i, path)) {
            return Err(format!(
                "{}: that is an input file; choose another name",
                path.display()
            ));
        }
        let text = serde_json::to_string_pretty(&o.report).map_err(|e| e.to_string())?;
        write_atomic(path, format!("{text}\n").as_bytes()).map_err(|e| e.to_string())?;
        Ok(format!("saved {}", path.display()))
    }
}
