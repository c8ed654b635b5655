//! The desktop app (eframe): window setup, the renderer choice (wgpu first, glow when wgpu cannot start),
//! persistence of settings and recent files, and headless screenshots. The UI itself is `app::App`.

pub mod app;
pub mod calib_job;
pub mod details;
pub mod dialogs;
pub mod frames;
pub mod graph;
pub mod loader;
pub mod screenshot;
pub mod script;
pub mod settings;
pub mod tabs;
pub mod theme;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use app::{App, LogLevel, Persisted, Tab};
use dialogs::SystemDialogs;
use frames::FrameMeter;
use screenshot::ScreenshotPlan;
use script::Script;

/// How the window starts.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    pub model: Option<PathBuf>,
    pub weights: Option<PathBuf>,
    /// Save a PNG of the window once everything is loaded, then exit.
    pub screenshot: Option<PathBuf>,
    pub tab: Tab,
    /// Select this layer (and centre it) once loaded.
    pub select: Option<String>,
    /// Measure this many frames of continuous panning once loaded, print the frame times and exit.
    pub measure_frames: Option<usize>,
    /// Calibrate on open with the default settings (`--autorun`), then export and screenshot.
    pub autorun: bool,
    pub export: Option<PathBuf>,
    pub screenshot_dir: Option<PathBuf>,
    pub exit_when_done: bool,
}

/// The renderers eframe can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RendererChoice {
    Wgpu,
    Glow,
}

/// Set in the environment of the re-started process when wgpu could not start.
const RENDERER_ENV: &str = "INT8CAL_RENDERER";
/// Why the re-started process uses glow (shown in its log).
const RENDERER_WHY_ENV: &str = "INT8CAL_RENDERER_WHY";
const STORAGE_KEY: &str = "int8cal";

/// Opens the window and runs until it closes. Exit code 0, or 1 when a screenshot run failed.
///
/// wgpu is tried first, on a hardware adapter; where the only adapter is a software rasterizer (llvmpipe,
/// lavapipe: Xvfb, VMs without a GPU) wgpu counts as unable to start and glow is used, because glow drew
/// the graph 4.6x faster there (62 against 13 frames per second, measured with `--measure-frames`).
/// `INT8CAL_RENDERER=glow|wgpu` forces one.
pub fn run(options: StartOptions) -> anyhow::Result<ExitCode> {
    let forced = std::env::var(RENDERER_ENV).ok();
    let renderer = match forced.as_deref() {
        Some("glow") => RendererChoice::Glow,
        _ => RendererChoice::Wgpu,
    };
    let allow_software = forced.as_deref() == Some("wgpu");
    let status: Arc<Mutex<Option<Result<(), String>>>> = Arc::new(Mutex::new(None));
    match run_with(renderer, allow_software, options, Arc::clone(&status)) {
        Ok(()) => {}
        Err(e) if renderer == RendererChoice::Wgpu => {
            // winit cannot make a second event loop in one process: start again with glow.
            eprintln!("renderer: wgpu not used ({e}); starting again with glow");
            let code = std::process::Command::new(std::env::current_exe()?)
                .args(std::env::args_os().skip(1))
                .env(RENDERER_ENV, "glow")
                .env(RENDERER_WHY_ENV, format!("wgpu not used: {e}"))
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

/// wgpu settings whose adapter choice refuses software rasterizers unless `allow_software`.
fn wgpu_options(allow_software: bool) -> eframe::egui_wgpu::WgpuConfiguration {
    use eframe::egui_wgpu::WgpuSetup;
    use eframe::wgpu::DeviceType;
    let mut config = eframe::egui_wgpu::WgpuConfiguration::default();
    if let WgpuSetup::CreateNew(setup) = &mut config.wgpu_setup {
        setup.native_adapter_selector = Some(Arc::new(move |adapters, surface| {
            let rank = |t: DeviceType| match t {
                DeviceType::DiscreteGpu => 0,
                DeviceType::IntegratedGpu => 1,
                DeviceType::VirtualGpu | DeviceType::Other => 2,
                DeviceType::Cpu => 3,
            };
            let usable = adapters
                .iter()
                .filter(|a| surface.is_none_or(|s| a.is_surface_supported(s)))
                .filter(|a| allow_software || a.get_info().device_type != DeviceType::Cpu);
            match usable.min_by_key(|a| rank(a.get_info().device_type)) {
                Some(a) => Ok(a.clone()),
                None => {
                    let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
                    Err(format!(
                        "no hardware adapter, only software ones: {}",
                        names.join(", ")
                    ))
                }
            }
        }));
    }
    config
}

fn run_with(
    renderer: RendererChoice,
    allow_software: bool,
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
        // Scripted runs must not read or change the user's saved state.
        persist_window: !options.scripted(),
        wgpu_options: wgpu_options(allow_software),
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
        RendererChoice::Glow => match std::env::var(RENDERER_WHY_ENV) {
            Ok(why) => format!("glow (OpenGL); {why}"),
            Err(_) => "glow (OpenGL)".into(),
        },
    }
}

impl StartOptions {
    /// A run driven by options rather than a user: it neither reads nor saves persisted state.
    fn scripted(&self) -> bool {
        self.screenshot.is_some() || self.measure_frames.is_some() || self.autorun
    }
}

/// The eframe app: the UI plus persistence, the screenshot plan and the script.
struct Window {
    app: App,
    screenshot: Option<ScreenshotPlan>,
    meter: Option<FrameMeter>,
    script: Option<Script>,
    status: Arc<Mutex<Option<Result<(), String>>>>,
}

impl Window {
    fn new(
        cc: &eframe::CreationContext<'_>,
        options: StartOptions,
        status: Arc<Mutex<Option<Result<(), String>>>>,
        backend: String,
    ) -> Self {
        let scripted = options.scripted();
        let screenshot = options.screenshot.clone().map(ScreenshotPlan::new);
        let meter = options.measure_frames.map(FrameMeter::new);
        let script = options.autorun.then(|| {
            Script::new(
                options.export.clone(),
                options.screenshot_dir.clone(),
                options.exit_when_done,
            )
        });
        let persisted = match (scripted, cc.storage) {
            (false, Some(storage)) => {
                eframe::get_value::<Persisted>(storage, STORAGE_KEY).unwrap_or_default()
            }
            _ => Persisted::default(),
        };
        let mut app = App::new(Arc::new(SystemDialogs), persisted);
        app.tab = options.tab;
        app.select_after_load = options.select;
        app.log(LogLevel::Info, format!("renderer: {backend}"));
        if let Some(model) = options.model {
            app.open(model, options.weights, &cc.egui_ctx);
        }
        Self {
            app,
            screenshot,
            meter,
            script,
            status,
        }
    }
}

impl eframe::App for Window {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.app.show(ui);
        if let Some(script) = &mut self.script {
            let close = script.frame(&mut self.app, ui.ctx());
            if let Some(r) = &script.result
                && let Ok(mut s) = self.status.lock()
            {
                *s = Some(r.clone());
            }
            if close {
                ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
            }
        }
        let ready = !self.app.busy();
        if let Some(meter) = &mut self.meter
            && ready
            && self.app.loaded.is_some()
            && let Some(report) = meter.frame(ui.ctx(), &mut self.app.view)
        {
            println!("{report}");
            self.meter = None;
            ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
        }
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
        if self.screenshot.is_none() && self.meter.is_none() && self.script.is_none() {
            eframe::set_value(storage, STORAGE_KEY, &self.app.persisted);
        }
    }
}
