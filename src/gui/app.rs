//! The app window: files and settings on the left, the graph in the centre with the selected layer's
//! details on the right, a log strip below. Loading and file dialogs run off the UI thread; errors show
//! in the window. `App::show` draws everything into a `Ui`, so tests drive the real app without eframe.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};

use egui::{Color32, RichText};

use super::calib_job::{CalibJob, CalibView};
use super::dialogs::{DialogKind, Dialogs, SaveKind};
use super::graph::view::GraphView;
use super::loader::{LoadJob, Loaded};
use super::settings::SettingsForm;
use super::tabs::colors::{self, ColorMode};
use super::tabs::compare::{CompareAction, CompareState};
use super::tabs::{compare, histograms, progress};
use super::{details, theme};
use crate::calib::CalibConfig;
use crate::calib::metric_blob::MetricBlobs;
use crate::calib::run::Calibration;

mod calibration;

/// The tabs of the central area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tab {
    #[default]
    Graph,
    Histograms,
    Progress,
    Compare,
}

impl Tab {
    pub const ALL: [Self; 4] = [Self::Graph, Self::Histograms, Self::Progress, Self::Compare];

    pub fn label(self) -> &'static str {
        match self {
            Self::Graph => "Graph",
            Self::Histograms => "Histograms",
            Self::Progress => "Progress",
            Self::Compare => "Compare",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Info,
    Warning,
    Error,
}

#[derive(Debug, Clone)]
pub struct LogLine {
    pub level: LogLevel,
    pub text: String,
}

/// What is persisted between runs.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Persisted {
    /// Settings per model path.
    pub settings: BTreeMap<String, CalibConfig>,
    pub recent: Vec<PathBuf>,
}

const RECENT_MAX: usize = 8;

pub struct App {
    dialogs: Arc<dyn Dialogs>,
    dialog: Option<(DialogKind, Receiver<Option<PathBuf>>)>,
    job: Option<LoadJob>,
    pub loaded: Option<Box<Loaded>>,
    /// The last load error, shown in the window until the next load.
    pub error: Option<String>,
    pub log: Vec<LogLine>,
    pub settings: SettingsForm,
    pub persisted: Persisted,
    pub view: GraphView,
    pub search: String,
    pub tab: Tab,
    title: String,
    /// Paths of the files to load next (the weights go with the model).
    weights_for_next: Option<PathBuf>,
    /// A layer to select once the next load finishes.
    pub select_after_load: Option<String>,
    /// The running calibration or re-evaluation, and what the views show of the last one.
    calib: Option<CalibJob>,
    pub calib_view: CalibView,
    /// The settings the shown calibration ran with (its export repeats them).
    last_calibration: Option<Calibration>,
    /// Layers the user keeps FP32.
    pub pinned: BTreeSet<String>,
    pub color_mode: ColorMode,
    compare: CompareState,
    save_dialog: Option<(SaveKind, Receiver<Option<PathBuf>>)>,
    /// The last export's outcome, shown under the buttons.
    pub export_status: Option<Result<String, String>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("loaded", &self.loaded.is_some())
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl App {
    pub fn new(dialogs: Arc<dyn Dialogs>, persisted: Persisted) -> Self {
        Self {
            dialogs,
            dialog: None,
            job: None,
            loaded: None,
            error: None,
            log: Vec::new(),
            settings: SettingsForm::new(CalibConfig::default()),
            persisted,
            view: GraphView::default(),
            search: String::new(),
            tab: Tab::Graph,
            title: String::new(),
            weights_for_next: None,
            select_after_load: None,
            calib: None,
            calib_view: CalibView::default(),
            last_calibration: None,
            pinned: BTreeSet::new(),
            color_mode: ColorMode::Category,
            compare: CompareState::default(),
            save_dialog: None,
            export_status: None,
        }
    }

    pub fn log(&mut self, level: LogLevel, text: impl Into<String>) {
        let text = text.into();
        if level != LogLevel::Info {
            eprintln!(
                "{}: {text}",
                if level == LogLevel::Error {
                    "error"
                } else {
                    "warning"
                }
            );
        }
        self.log.push(LogLine { level, text });
    }

    /// Starts loading a model (and weights) in the background; `wake` repaints the UI when done.
    pub fn open(&mut self, model: PathBuf, weights: Option<PathBuf>, ctx: &egui::Context) {
        let what = match &weights {
            Some(w) => format!("loading {} with {}", model.display(), w.display()),
            None => format!("loading {}", model.display()),
        };
        self.log(LogLevel::Info, what);
        let ctx = ctx.clone();
        self.job = Some(LoadJob::spawn(model, weights, move || {
            ctx.request_repaint()
        }));
    }

    /// True while a load, a calibration or a dialog is pending.
    pub fn busy(&self) -> bool {
        self.job.is_some()
            || self.dialog.is_some()
            || self.calibrating()
            || self.save_dialog.is_some()
    }

    /// True while a calibration or re-evaluation runs.
    pub fn calibrating(&self) -> bool {
        self.calib.as_ref().is_some_and(CalibJob::running)
    }

    /// The model currently shown.
    pub fn model_path(&self) -> Option<&Path> {
        self.loaded
            .as_ref()
            .map(|l| l.model.prototxt.path.as_path())
    }

    fn poll(&mut self, ctx: &egui::Context) {
        self.poll_calibration();
        self.poll_save_dialog();
        if let Some(job) = &self.job
            && let Some(result) = job.poll()
        {
            let job = self.job.take();
            match result {
                Ok(loaded) => self.finish_load(loaded),
                Err(e) => {
                    self.log(LogLevel::Error, e.clone());
                    self.error = Some(e);
                    if let Some(job) = job {
                        self.remember_recent(&job.model);
                    }
                }
            }
        }
        if let Some((kind, rx)) = &self.dialog
            && let Ok(choice) = rx.try_recv()
        {
            let kind = *kind;
            self.dialog = None;
            match (kind, choice) {
                (_, None) => self.log(LogLevel::Info, "no file chosen"),
                (DialogKind::OpenModel, Some(p)) => {
                    let w = self.weights_for_next.take();
                    self.open(p, w, ctx);
                }
                (DialogKind::OpenWeights, Some(w)) => {
                    match self.model_path().map(Path::to_path_buf) {
                        Some(m) => self.open(m, Some(w), ctx),
                        None => {
                            self.log(
                                LogLevel::Info,
                                format!("weights {} will load with the next model", w.display()),
                            );
                            self.weights_for_next = Some(w);
                        }
                    }
                }
            }
        }
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .collect()
        });
        if !dropped.is_empty() {
            self.open_dropped(dropped, ctx);
        }
    }

    /// Dropped files: a `.caffemodel` is weights, anything else a model prototxt.
    pub fn open_dropped(&mut self, files: Vec<PathBuf>, ctx: &egui::Context) {
        let is_weights = |p: &PathBuf| {
            p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("caffemodel"))
        };
        let weights = files.iter().find(|p| is_weights(p)).cloned();
        let model = files.iter().find(|p| !is_weights(p)).cloned();
        match (model, weights) {
            (Some(m), w) => self.open(m, w.or_else(|| self.current_weights()), ctx),
            (None, Some(w)) => match self.model_path().map(Path::to_path_buf) {
                Some(m) => self.open(m, Some(w), ctx),
                None => self.weights_for_next = Some(w),
            },
            (None, None) => {}
        }
    }

    fn current_weights(&self) -> Option<PathBuf> {
        self.loaded.as_ref().and_then(|l| l.model.weights.clone())
    }

    fn finish_load(&mut self, loaded: Box<Loaded>) {
        let net = &loaded.model.net;
        self.log(
            LogLevel::Info,
            format!(
                "loaded '{}': {} layers, {} nodes in {:.0} ms, layout in {:.0} ms",
                display_name(&loaded.model),
                net.layers.len(),
                loaded.graph.nodes.len(),
                loaded.load_time.as_secs_f64() * 1e3,
                loaded.layout_time.as_secs_f64() * 1e3
            ),
        );
        for w in net.warnings.clone() {
            self.log(LogLevel::Warning, w);
        }
        let path = loaded.model.prototxt.path.clone();
        let key = path.display().to_string();
        let config = self
            .persisted
            .settings
            .get(&key)
            .cloned()
            .unwrap_or_else(|| {
                let detection = loaded.metric_blobs.is_detection();
                let blob_name = loaded
                    .metric_blobs
                    .default_blob(detection)
                    .unwrap_or_default()
                    .to_string();
                CalibConfig {
                    detection,
                    blob_name,
                    ..CalibConfig::default()
                }
            });
        self.settings = SettingsForm::new(config);
        self.remember_recent(&path);
        self.error = None;
        self.view = GraphView::default();
        self.loaded = Some(loaded);
        if let Some(name) = self.select_after_load.take() {
            self.search = name;
            self.search_now();
        }
    }

    fn remember_recent(&mut self, path: &Path) {
        let recent = &mut self.persisted.recent;
        recent.retain(|p| p != path);
        recent.insert(0, path.to_path_buf());
        recent.truncate(RECENT_MAX);
    }

    fn ask(&mut self, kind: DialogKind) {
        let (tx, rx) = channel();
        let dialogs = Arc::clone(&self.dialogs);
        std::thread::spawn(move || {
            let _ = tx.send(dialogs.pick(kind));
        });
        self.dialog = Some((kind, rx));
    }

    /// Selects the first layer matching the search text and centres it.
    pub fn search_now(&mut self) {
        let Some(loaded) = &self.loaded else { return };
        match loaded.graph.find(&loaded.model.net, &self.search) {
            Some(n) => self.view.jump_to(n),
            None if !self.search.trim().is_empty() => {
                let msg = format!("no layer matches '{}'", self.search.trim());
                self.log(LogLevel::Info, msg);
            }
            None => {}
        }
    }

    /// Draws the whole app into `ui`.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        self.poll(&ctx);
        self.update_title(&ctx);
        if self.busy() {
            ctx.request_repaint_after(std::time::Duration::from_millis(50));
        }
        egui::Panel::left("files")
            .default_size(theme::PANEL_WIDTH)
            .resizable(true)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| self.left_panel(ui, &ctx));
            });
        egui::Panel::bottom("log")
            .default_size(theme::LOG_HEIGHT)
            .resizable(true)
            .show(ui, |ui| self.log_panel(ui));
        if let Some(n) = self.view.selected
            && self.tab == Tab::Graph
            && let Some(l) = &self.loaded
            && let Some(node) = l.graph.nodes.get(n)
        {
            let name = l.model.net.layers[node.layer].name.clone();
            let pinnable = self
                .calib_view
                .outcome
                .as_ref()
                .is_some_and(|o| o.report.layers.iter().any(|r| r.name == name));
            let mut toggle = false;
            egui::Panel::right("details")
                .default_size(theme::DETAILS_WIDTH)
                .resizable(true)
                .show(ui, |ui| {
                    if pinnable {
                        let pinned = self.pinned.contains(&name);
                        let label = if pinned {
                            "Unpin (back to INT8)"
                        } else {
                            "Pin to FP32"
                        };
                        toggle = ui
                            .button(label)
                            .on_hover_text("Then \"Re-evaluate INT8 with pins\" in the Compare tab")
                            .clicked();
                        ui.separator();
                    }
                    egui::ScrollArea::vertical()
                        .show(ui, |ui| details::show(ui, &l.model.net, node));
                });
            if toggle {
                self.toggle_pin(&name);
            }
        }
        egui::CentralPanel::default().show(ui, |ui| self.central(ui));
        let hovering = ctx.input(|i| !i.raw.hovered_files.is_empty());
        if hovering {
            let rect = ctx.content_rect();
            ui.painter()
                .rect_filled(rect, 0.0, Color32::from_black_alpha(140));
            ui.painter().text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                "Drop a .prototxt and/or .caffemodel",
                egui::FontId::proportional(24.0),
                Color32::WHITE,
            );
        }
    }

    fn update_title(&mut self, ctx: &egui::Context) {
        let title = match &self.loaded {
            Some(l) => format!(
                "int8cal — {} ({})",
                display_name(&l.model),
                l.model.prototxt.path.display()
            ),
            None => "int8cal".to_string(),
        };
        if title != self.title {
            ctx.send_viewport_cmd(egui::ViewportCommand::Title(title.clone()));
            self.title = title;
        }
    }

    fn left_panel(&mut self, ui: &mut egui::Ui, ctx: &egui::Context) {
        ui.heading("Model");
        ui.horizontal(|ui| {
            let enabled = self.dialog.is_none();
            if ui
                .add_enabled(enabled, egui::Button::new("Open model…"))
                .on_hover_text("Choose a .prototxt (or drop one on the window)")
                .clicked()
            {
                self.ask(DialogKind::OpenModel);
            }
            if ui
                .add_enabled(enabled, egui::Button::new("Open weights…"))
                .on_hover_text("Choose a .caffemodel for the open model")
                .clicked()
            {
                self.ask(DialogKind::OpenWeights);
            }
        });
        if let Some(l) = &self.loaded {
            file_line(ui, "prototxt", Some(&l.model.prototxt.path));
            file_line(ui, "weights", l.model.weights.as_deref());
        }
        if let Some(job) = &self.job {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(format!(
                    "Loading {}…",
                    job.model
                        .file_name()
                        .map(|n| n.to_string_lossy())
                        .unwrap_or_default()
                ));
            });
        }
        if !self.persisted.recent.is_empty() {
            let mut open = None;
            egui::CollapsingHeader::new("Recent files")
                .default_open(false)
                .show(ui, |ui| {
                    for p in &self.persisted.recent {
                        let name = p
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        if ui
                            .link(name)
                            .on_hover_text(p.display().to_string())
                            .clicked()
                        {
                            open = Some(p.clone());
                        }
                    }
                });
            if let Some(p) = open {
                let w = self.weights_for_next.take();
                self.open(p, w, ctx);
            }
        }
        ui.separator();
        ui.heading("Settings");
        let no_metrics = MetricBlobs::default();
        let metrics = self
            .loaded
            .as_ref()
            .map_or(&no_metrics, |l| &l.metric_blobs);
        if self.settings.ui(ui, metrics)
            && let Some(path) = self.model_path()
        {
            let key = path.display().to_string();
            self.persisted
                .settings
                .insert(key, self.settings.config.clone());
        }
        ui.separator();
        self.run_buttons(ui, ctx);
    }

    /// Calibrate / Cancel, and the saves once a calibration finished.
    fn run_buttons(&mut self, ui: &mut egui::Ui, ctx: &egui::Context) {
        ui.horizontal(|ui| {
            if ui
                .add_enabled(self.can_calibrate(), egui::Button::new("Calibrate"))
                .on_hover_text(
                    "Sample, calibrate and tune with these settings (runs in the background)",
                )
                .clicked()
            {
                self.start_calibration(ctx);
            }
            if ui
                .add_enabled(self.calibrating(), egui::Button::new("Cancel"))
                .on_hover_text("Stop within one batch; nothing is written")
                .clicked()
            {
                self.cancel_calibration();
            }
            if self.calibrating() {
                ui.spinner();
            }
        });
        let done =
            self.calib_view.outcome.is_some() && self.save_dialog.is_none() && !self.calibrating();
        if ui
            .add_enabled(done, egui::Button::new("Save quantized prototxt…"))
            .clicked()
        {
            self.ask_save(SaveKind::QuantizedPrototxt);
        }
        if ui
            .add_enabled(done, egui::Button::new("Save report…"))
            .clicked()
        {
            self.ask_save(SaveKind::Report);
        }
        match &self.export_status {
            Some(Ok(m)) => {
                ui.weak(m);
            }
            Some(Err(e)) => {
                ui.colored_label(theme::error_color(ui.visuals()), e);
            }
            None => {}
        }
    }

    fn central(&mut self, ui: &mut egui::Ui) {
        ui.horizontal_wrapped(|ui| {
            for t in Tab::ALL {
                ui.selectable_value(&mut self.tab, t, t.label());
            }
            if matches!(self.tab, Tab::Graph | Tab::Histograms) {
                ui.separator();
                self.search_box(ui);
            }
            if self.tab == Tab::Graph {
                self.graph_controls(ui);
            }
        });
        if let Some(e) = &self.error {
            egui::Frame::new()
                .fill(ui.visuals().extreme_bg_color)
                .inner_margin(8.0)
                .show(ui, |ui| {
                    ui.colored_label(
                        theme::error_color(ui.visuals()),
                        RichText::new(format!("Could not load: {e}")).strong(),
                    );
                });
        }
        match &self.loaded {
            Some(_) if self.tab != Tab::Graph => self.calibration_tab(ui),
            Some(l) => {
                let l = l.as_ref();
                self.view.node_colors = match &self.calib_view.outcome {
                    Some(o) => colors::node_colors(
                        &l.model.net,
                        &l.graph,
                        &o.report.layers,
                        &self.pinned,
                        self.color_mode,
                    ),
                    None => Vec::new(),
                };
                let rect = ui.available_rect_before_wrap();
                self.view.show(ui, &l.model.net, &l.graph, &l.layout);
                if self.calib_view.outcome.is_some() {
                    colors::legend(ui, rect, self.color_mode);
                }
            }
            None if self.job.is_some() => {
                ui.centered_and_justified(|ui| ui.spinner());
            }
            None => {
                ui.centered_and_justified(|ui| {
                    ui.label("Open a model prototxt, or drop one on the window.")
                });
            }
        }
    }

    /// The layer search (it selects the layer in the graph and the histograms).
    fn search_box(&mut self, ui: &mut egui::Ui) {
        let label = ui.label("Search layer");
        let r = ui
            .add(
                egui::TextEdit::singleline(&mut self.search)
                    .hint_text("name")
                    .desired_width(180.0),
            )
            .labelled_by(label.id);
        if r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter))
            || r.changed() && !self.search.is_empty()
        {
            self.search_now();
        }
    }

    /// Fit, the colour mode after a calibration, and the net's size.
    fn graph_controls(&mut self, ui: &mut egui::Ui) {
        if ui
            .button("Fit")
            .on_hover_text("Fit the graph to the window (or double-click the background)")
            .clicked()
        {
            self.view.fit_pending = true;
        }
        if self.calib_view.outcome.is_some() {
            ui.separator();
            ui.label("Colour");
            ui.selectable_value(&mut self.color_mode, ColorMode::Category, "type");
            ui.selectable_value(&mut self.color_mode, ColorMode::Precision, "precision");
            ui.selectable_value(&mut self.color_mode, ColorMode::Sqnr, "SQNR");
        }
        if let Some(l) = &self.loaded {
            ui.weak(format!(
                "{} layers · {} nodes",
                l.model.net.layers.len(),
                l.graph.nodes.len()
            ));
        }
    }

    /// The Histograms, Progress and Compare tabs.
    fn calibration_tab(&mut self, ui: &mut egui::Ui) {
        let Some(l) = &self.loaded else { return };
        let ctx = ui.ctx().clone();
        match self.tab {
            Tab::Graph => {}
            Tab::Progress => {
                egui::ScrollArea::vertical().show(ui, |ui| {
                    progress::show(ui, &self.calib_view, self.calibrating());
                });
            }
            Tab::Histograms => {
                let layer = self
                    .view
                    .selected
                    .and_then(|n| l.graph.nodes.get(n))
                    .map(|n| n.layer);
                egui::ScrollArea::vertical().show(ui, |ui| {
                    histograms::show(ui, &l.model.net, layer, &self.calib_view);
                });
            }
            Tab::Compare => {
                let actions = egui::ScrollArea::vertical()
                    .show(ui, |ui| {
                        compare::show(ui, &self.calib_view, &self.pinned, &mut self.compare)
                    })
                    .inner;
                for a in actions {
                    match a {
                        CompareAction::TogglePin(name) => self.toggle_pin(&name),
                        CompareAction::Reevaluate => self.reevaluate(&ctx),
                        CompareAction::Select(name) => {
                            self.search = name;
                            self.search_now();
                            self.tab = Tab::Histograms;
                        }
                    }
                }
            }
        }
    }

    fn log_panel(&mut self, ui: &mut egui::Ui) {
        egui::ScrollArea::vertical()
            .stick_to_bottom(true)
            .auto_shrink([false, false])
            .show(ui, |ui| {
                for line in &self.log {
                    let color = match line.level {
                        LogLevel::Info => ui.visuals().text_color(),
                        LogLevel::Warning => theme::warn_color(ui.visuals()),
                        LogLevel::Error => theme::error_color(ui.visuals()),
                    };
                    ui.colored_label(color, &line.text);
                }
            });
    }
}

/// The net's name, or its file name when the prototxt gives none.
fn display_name(model: &crate::model::Model) -> String {
    if model.net.name.is_empty() {
        model
            .prototxt
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        model.net.name.clone()
    }
}

fn file_line(ui: &mut egui::Ui, what: &str, path: Option<&Path>) {
    ui.horizontal(|ui| {
        ui.weak(what);
        match path {
            Some(p) => {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                ui.label(name).on_hover_text(p.display().to_string());
            }
            None => {
                ui.weak("none");
            }
        }
    });
}
