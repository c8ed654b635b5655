//! The desktop app (eframe): window setup, the renderer choice (wgpu first, glow when wgpu cannot start),
//! persistence of settings and recent files, and headless screenshots. The UI itself is `app::App`.

pub mod app;
pub mod details;
pub mod dialogs;
pub mod graph;
pub mod loader;
pub mod screenshot;
pub mod settings;
pub mod theme;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use app::{App, LogLevel, Persisted, Tab};
use dialogs::SystemDialogs;
use screenshot::ScreenshotPlan;

/// How the window starts.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    pub model: Option<PathBuf>,
    pub weights: Option<PathBuf>,
    /// Save a PNG of the window once everything is loaded, then exit.
    pub screenshot: Option<PathBuf>,
    pub tab: Tab,
}

/// The renderers eframe can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RendererChoice {
    Wgpu,
    Glow,
}

/// Set in the environment of the re-started process when wgpu could not start.
const RENDERER_ENV: &str = "INT8CAL_RENDERER";
const STORAGE_KEY: &str = "int8cal";

/// Opens the window and runs until it closes. Exit code 0, or 1 when a screenshot run failed.
pub fn run(options: StartOptions) -> anyhow::Result<ExitCode> {
    let renderer = match std::env::var(RENDERER_ENV).as_deref() {
        Ok("glow") => RendererChoice::Glow,
        _ => RendererChoice::Wgpu,
    };
    let status: Arc<Mutex<Option<Result<(), String>>>> = Arc::new(Mutex::new(None));
    match run_with(renderer, options, Arc::clone(&status)) {
        Ok(()) => {}
        Err(e) if renderer == RendererChoice::Wgpu => {
            // winit cannot make a second event loop in one process: start again with glow.
            eprintln!("renderer: wgpu could not start ({e}); starting again with glow");
            let code = std::process::Command::new(std::env::current_exe()?)
                .args(std::env::args_os().skip(1))
                .env(RENDERER_ENV, "glow")
                .status()?;
            return Ok(if code.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Err(e) => anyhow::bail!("the window could not start with glow either: {e}"),
    }
    let outcome = status.lock().map(|s| s.clone()).unwrap_or(None);
    match outcome {
        Some(Err(e)) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

fn run_with(
    renderer: RendererChoice,
    options: StartOptions,
    status: Arc<Mutex<Option<Result<(), String>>>>,
) -> Result<(), String> {
    let native = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_inner_size([1400.0, 880.0])
            .with_min_inner_size([800.0, 500.0])
            .with_title("int8cal")
            .with_drag_and_drop(true),
        renderer: match renderer {
            RendererChoice::Wgpu => eframe::Renderer::Wgpu,
            RendererChoice::Glow => eframe::Renderer::Glow,
        },
        // Screenshot runs must not read or change the user's saved state.
        persist_window: options.screenshot.is_none(),
        ..Default::default()
    };
    eframe::run_native(
        "int8cal",
        native,
        Box::new(move |cc| {
            let backend = describe_renderer(renderer, cc);
            eprintln!("renderer: {backend}");
            Ok(Box::new(Window::new(cc, options, status, backend)))
        }),
    )
    .map_err(|e| e.to_string())
}

fn describe_renderer(renderer: RendererChoice, cc: &eframe::CreationContext<'_>) -> String {
    match renderer {
        RendererChoice::Wgpu => match &cc.wgpu_render_state {
            Some(rs) => {
                let info = rs.adapter.get_info();
                format!("wgpu ({:?} on {})", info.backend, info.name)
            }
            None => "wgpu".into(),
        },
        RendererChoice::Glow => "glow (OpenGL)".into(),
    }
}

/// The eframe app: the UI plus persistence and the screenshot plan.
struct Window {
    app: App,
    screenshot: Option<ScreenshotPlan>,
    status: Arc<Mutex<Option<Result<(), String>>>>,
}

impl Window {
    fn new(
        cc: &eframe::CreationContext<'_>,
        options: StartOptions,
        status: Arc<Mutex<Option<Result<(), String>>>>,
        backend: String,
    ) -> Self {
        let screenshot = options.screenshot.clone().map(ScreenshotPlan::new);
        let persisted = match (&screenshot, cc.storage) {
            (None, Some(storage)) => {
                eframe::get_value::<Persisted>(storage, STORAGE_KEY).unwrap_or_default()
            }
            _ => Persisted::default(),
        };
        let mut app = App::new(Arc::new(SystemDialogs), persisted);
        app.tab = options.tab;
        app.log(LogLevel::Info, format!("renderer: {backend}"));
        if let Some(model) = options.model {
            app.open(model, options.weights, &cc.egui_ctx);
        }
        Self {
            app,
            screenshot,
            status,
        }
    }
}

impl eframe::App for Window {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.app.show(ui);
        let ready = !self.app.busy();
        if let Some(plan) = &mut self.screenshot
            && plan.frame(ui.ctx(), ready)
        {
            let saved = plan
                .outcome
                .lock()
                .ok()
                .and_then(|o| o.clone())
                .unwrap_or(Ok(()));
            // A failed load is a failure of the run even though the window showed it.
            let result = saved.and(match &self.app.error {
                Some(e) => Err(e.clone()),
                None => Ok(()),
            });
            if let Ok(mut s) = self.status.lock() {
                *s = Some(result);
            }
            ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
        }
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        if self.screenshot.is_none() {
            eframe::set_value(storage, STORAGE_KEY, &self.app.persisted);
        }
    }
}
