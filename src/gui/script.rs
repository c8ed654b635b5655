//! The scripted run (`int8cal gui --autorun --export FILE --screenshot-dir DIR --exit-when-done`):
//! once the model is loaded the calibration starts with the default settings; when it finishes a
//! PNG of each tab is saved (the first quantized layer selected for the histograms), the quantized
//! prototxt is exported, and the window closes. Everything happens in the window, frame by frame, as
//! a user would see it.

use crate::calib::events::Stage;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::app::{App, Tab};
use super::screenshot::ScreenshotPlan;

/// Where the script is.
#[derive(Debug)]
enum Phase {
    WaitLoad,
    Calibrating,
    /// Taking the screenshot of `Tab::ALL[i]`.
    Shot(usize, Option<ScreenshotPlan>),
    Export,
    Done,
}

/// The script's settings and progress.
#[derive(Debug)]
pub struct Script {
    pub export: Option<PathBuf>,
    pub screenshot_dir: Option<PathBuf>,
    pub exit_when_done: bool,
    phase: Phase,
    /// The run's outcome once it ended (Err: why it failed).
    pub result: Option<Result<(), String>>,
    /// Time between frames while the calibration ran (the UI must stay responsive), with the stage
    /// the calibration was in.
    pub frame_times: Vec<Duration>,
    frame_stages: Vec<Option<Stage>>,
    last_frame: Option<Instant>,
}

/// Count, mean, 95th percentile and maximum of frame times, in milliseconds.
pub fn frame_summary(times: &[Duration]) -> Option<(usize, f64, f64, f64)> {
    if times.is_empty() {
        return None;
    }
    let mut ms: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    let p95 = ms[((ms.len() - 1) as f64 * 0.95).round() as usize];
    Some((ms.len(), mean, p95, ms[ms.len() - 1]))
}

impl Script {
    pub fn new(
        export: Option<PathBuf>,
        screenshot_dir: Option<PathBuf>,
        exit_when_done: bool,
    ) -> Self {
        Self {
            export,
            screenshot_dir,
            exit_when_done,
            phase: Phase::WaitLoad,
            result: None,
            frame_times: Vec::new(),
            frame_stages: Vec::new(),
            last_frame: None,
        }
    }

    /// The `n` slowest frames with the stage each came in, slowest first.
    fn slowest(&self, n: usize) -> String {
        let mut frames: Vec<(Duration, Option<Stage>)> = self
            .frame_times
            .iter()
            .copied()
            .zip(self.frame_stages.iter().copied())
            .collect();
        frames.sort_by_key(|f| std::cmp::Reverse(f.0));
        let text: Vec<String> = frames
            .iter()
            .take(n)
            .map(|(d, s)| format!("{:.1} ms ({s:?})", d.as_secs_f64() * 1e3))
            .collect();
        text.join(", ")
    }

    fn fail(&mut self, why: String) {
        self.result = Some(Err(why));
        self.phase = Phase::Done;
    }

    /// Advances the script by one frame. Returns true when the window should close.
    pub fn frame(&mut self, app: &mut App, ctx: &egui::Context) -> bool {
        ctx.request_repaint();
        match &mut self.phase {
            Phase::WaitLoad => {
                if let Some(e) = &app.error {
                    let e = e.clone();
                    self.fail(format!("could not load: {e}"));
                } else if app.loaded.is_some() && !app.busy() {
                    if !app.can_calibrate() {
                        self.fail("the model has no weights to calibrate".into());
                    } else {
                        app.start_calibration(ctx);
                        self.phase = Phase::Calibrating;
                    }
                }
            }
            Phase::Calibrating => {
                let now = Instant::now();
                if let Some(t) = self.last_frame.replace(now) {
                    self.frame_times.push(now - t);
                    let stage = app.calib_view.progress.as_ref().map(|p| p.stage);
                    self.frame_stages.push(stage);
                }
                if !app.calibrating() {
                    if let Some((n, mean, p95, max)) = frame_summary(&self.frame_times) {
                        println!(
                            "UI frame time while calibrating: {n} frames, mean {mean:.1} ms, p95 {p95:.1} ms, max {max:.1} ms; slowest: {}",
                            self.slowest(3)
                        );
                    }
                    let v = &app.calib_view;
                    if let Some(e) = &v.error {
                        let e = e.clone();
                        self.fail(format!("calibration failed: {e}"));
                    } else if v.outcome.is_none() {
                        self.fail("calibration ended without a result".into());
                    } else {
                        select_first_quantized(app);
                        app.view.ignore_pointer = true;
                        app.view.fit_pending = true;
                        self.phase = Phase::Shot(0, None);
                    }
                }
            }
            Phase::Shot(i, plan) => {
                let Some(dir) = self.screenshot_dir.clone() else {
                    self.phase = Phase::Export;
                    return false;
                };
                let tab = Tab::ALL[*i];
                app.tab = tab;
                let plan = plan.get_or_insert_with(|| {
                    ScreenshotPlan::new(dir.join(format!("{}.png", tab.label().to_lowercase())))
                });
                if plan.frame(ctx, !app.busy()) {
                    let saved = plan.outcome.lock().ok().and_then(|o| o.clone());
                    if let Some(Err(e)) = saved {
                        self.fail(format!("screenshot of the {} tab: {e}", tab.label()));
                    } else if *i + 1 < Tab::ALL.len() {
                        self.phase = Phase::Shot(*i + 1, None);
                    } else {
                        self.phase = Phase::Export;
                    }
                }
            }
            Phase::Export => {
                let r = match self.export.clone() {
                    Some(p) => app.save_quantized(&p).map(|m| println!("{m}")),
                    None => Ok(()),
                };
                app.export_status = Some(r.clone().map(|()| "exported".into()));
                self.result = Some(r);
                self.phase = Phase::Done;
            }
            Phase::Done => return self.exit_when_done,
        }
        false
    }
}

/// Selects the graph node of the first quantized layer, so the histogram tab has something to show.
fn select_first_quantized(app: &mut App) {
    let first = app
        .calib_view
        .outcome
        .as_ref()
        .and_then(|o| o.report.layers.iter().find(|l| l.scale_in.is_some()))
        .map(|l| l.name.clone());
    if let Some(name) = first {
        app.search = name;
        app.search_now();
    }
}
