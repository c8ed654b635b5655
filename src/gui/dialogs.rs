//! File dialogs behind a trait, so tests pass paths and the real dialogs (rfd) run off the UI thread.

use std::path::{Path, PathBuf};

/// What a dialog is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogKind {
    OpenModel,
    OpenWeights,
}

/// What a save dialog saves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveKind {
    QuantizedPrototxt,
    Report,
}

/// Shows a file dialog and returns the chosen path (None: cancelled). Called on a worker thread.
pub trait Dialogs: Send + Sync {
    fn pick(&self, kind: DialogKind) -> Option<PathBuf>;
    /// A save dialog starting at `default` (its folder and file name).
    fn save(&self, kind: SaveKind, default: &Path) -> Option<PathBuf>;
}

/// The system's dialogs through rfd (xdg-desktop-portal or zenity; None where neither exists).
#[derive(Debug, Default)]
pub struct SystemDialogs;

impl Dialogs for SystemDialogs {
    fn pick(&self, kind: DialogKind) -> Option<PathBuf> {
        let dialog = match kind {
            DialogKind::OpenModel => rfd::FileDialog::new()
                .set_title("Open model prototxt")
                .add_filter("Caffe prototxt", &["prototxt", "pt", "txt"]),
            DialogKind::OpenWeights => rfd::FileDialog::new()
                .set_title("Open weights")
                .add_filter("Caffe weights", &["caffemodel"]),
        };
        dialog.add_filter("All files", &["*"]).pick_file()
    }

    fn save(&self, kind: SaveKind, default: &Path) -> Option<PathBuf> {
        let (title, filter, ext) = match kind {
            SaveKind::QuantizedPrototxt => {
                ("Save quantized prototxt", "Caffe prototxt", "prototxt")
            }
            SaveKind::Report => ("Save calibration report", "JSON", "json"),
        };
        let mut dialog = rfd::FileDialog::new()
            .set_title(title)
            .add_filter(filter, &[ext]);
        if let Some(dir) = default.parent() {
            dialog = dialog.set_directory(dir);
        }
        if let Some(name) = default.file_name() {
            dialog = dialog.set_file_name(name.to_string_lossy());
        }
        dialog.save_file()
    }
}

/// Dialogs that answer with fixed paths (tests).
#[derive(Debug, Default, Clone)]
pub struct FakeDialogs {
    pub model: Option<PathBuf>,
    pub weights: Option<PathBuf>,
    /// The answer of every save dialog.
    pub save: Option<PathBuf>,
}

impl Dialogs for FakeDialogs {
    fn pick(&self, kind: DialogKind) -> Option<PathBuf> {
        match kind {
            DialogKind::OpenModel => self.model.clone(),
            DialogKind::OpenWeights => self.weights.clone(),
        }
    }

    fn save(&self, _: SaveKind, _: &Path) -> Option<PathBuf> {
        self.save.clone()
    }
}
