//! A calibration (or a re-evaluation after pinning) running on a worker thread for the app: its
//! events are gathered into what the views draw — the stage with progress and ETA, the tuning steps,
//! each blob's statistics, the chosen scales, warnings — and its outcome or error. The UI polls; the
//! worker wakes it on every event, so the window never waits for the engine.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use crate::calib::CalibConfig;
use crate::calib::boxes::{ImageBoxes, compare_boxes};
use crate::calib::disagree::{Disagreement, disagreements};
use crate::calib::events::{BlobStats, Event, LayerScale, Stage};
use crate::calib::metric::Measured;
use crate::calib::run::{CalibError, Calibration, Outcome, Retained};
use crate::calib::tune::{Step, Table};

/// What the worker sends.
enum Msg {
    Event(Event),
    Done(Box<Result<Outcome, CalibError>>),
    Reevaluated(Result<(Table, Measured), String>),
    /// The images the two disagree on (classifiers) and the detections drawn (detectors).
    Compared(Vec<Disagreement>, Vec<ImageBoxes>),
}

/// Disagreeing images kept for the Compare tab.
const MAX_DISAGREEMENTS: usize = 24;

/// Images whose detections the Compare tab draws.
const MAX_BOX_IMAGES: usize = 6;

/// Compares FP32 and INT8 predictions for `table` and sends what disagrees, or for a detector the
/// boxes of a few images (errors go to the log as a warning: the comparison is a view, not the
/// calibration).
fn send_comparison(
    retained: &Retained,
    table: &Table,
    send: &mut dyn FnMut(Event),
    tx: &Sender<Msg>,
) {
    send(Event::Stage(Stage::Compare));
    let compared = disagreements(retained, table, MAX_DISAGREEMENTS).and_then(|d| {
        let boxes = match d.is_empty() {
            true => compare_boxes(retained, table, MAX_BOX_IMAGES)?,
            false => Vec::new(),
        };
        Ok((d, boxes))
    });
    match compared {
        Ok((d, b)) => {
            let _ = tx.send(Msg::Compared(d, b));
        }
        Err(e) => send(Event::Warning(format!("comparing predictions: {e}"))),
    }
}

/// The progress of the current stage.
#[derive(Debug, Clone, Copy)]
pub struct StageProgress {
    pub stage: Stage,
    pub done: usize,
    pub total: usize,
    pub started: Instant,
}

impl StageProgress {
    /// Time left at the pace so far (None before the first batch).
    pub fn eta(&self) -> Option<Duration> {
        (self.done > 0 && self.total >= self.done).then(|| {
            self.started
                .elapsed()
                .mul_f64((self.total - self.done) as f64 / self.done as f64)
        })
    }
}

/// Everything the views show of a calibration, gathered from its events.
#[derive(Debug, Default, Clone)]
pub struct CalibView {
    pub progress: Option<StageProgress>,
    /// Stages finished, in order, with their seconds.
    pub finished_stages: Vec<(Stage, f64)>,
    pub fp32: Option<f64>,
    pub steps: Vec<Step>,
    pub blobs: BTreeMap<String, BlobStats>,
    pub scales: BTreeMap<String, LayerScale>,
    pub warnings: Vec<String>,
    pub outcome: Option<Outcome>,
    pub error: Option<String>,
    pub cancelled: bool,
    /// INT8 metric and table after the user's pins (None until re-evaluated).
    pub pinned_result: Option<(Table, f64)>,
    /// A detector's AP per class after the user's pins (empty until re-evaluated).
    pub pinned_ap_per_class: BTreeMap<i32, f64>,
    pub tolerance: f64,
    /// Images FP32 and INT8 classify differently (for the table in effect).
    pub disagreements: Vec<Disagreement>,
    /// A detector's FP32 and INT8 detections on a few images (for the table in effect).
    pub boxes: Vec<ImageBoxes>,
    /// Counts updates of `disagreements` and `boxes` (the views cache their thumbnails by it).
    pub generation: usize,
}

impl CalibView {
    fn apply(&mut self, e: Event) {
        match e {
            Event::Stage(stage) => {
                if let Some(p) = self.progress.take() {
                    self.finished_stages
                        .push((p.stage, p.started.elapsed().as_secs_f64()));
                }
                self.progress = Some(StageProgress {
                    stage,
                    done: 0,
                    total: 0,
                    started: Instant::now(),
                });
            }
            Event::Progress { done, total } => {
                if let Some(p) = &mut self.progress {
                    (p.done, p.total) = (done, total);
                }
            }
            Event::Fp32Metric(v) => self.fp32 = Some(v),
            Event::LayerStats(s) => {
                self.blobs.insert(s.blob.clone(), *s);
            }
            Event::Scale(s) => {
                self.scales.insert(s.layer.clone(), s);
            }
            Event::Step(s) => self.steps.push(s),
            Event::Warning(w) => self.warnings.push(w),
            Event::Finished { .. } => {
                if let Some(p) = self.progress.take() {
                    self.finished_stages
                        .push((p.stage, p.started.elapsed().as_secs_f64()));
                }
            }
        }
    }

    /// The table in effect: after pinning, else the calibration's.
    pub fn table(&self) -> Option<&Table> {
        self.pinned_result
            .as_ref()
            .map(|(t, _)| t)
            .or(self.outcome.as_ref().map(|o| &o.table))
    }

    /// The INT8 metric in effect.
    pub fn int8(&self) -> Option<f64> {
        self.pinned_result
            .as_ref()
            .map(|(_, a)| *a)
            .or(self.outcome.as_ref().map(|o| o.report.int8_accuracy))
    }
}

/// A running job and what it has reported so far.
pub struct CalibJob {
    rx: Receiver<Msg>,
    pub cancel: Arc<AtomicBool>,
    running: bool,
}

impl std::fmt::Debug for CalibJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CalibJob")
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

/// How much lower than the window's the calibration threads' scheduling priority is (a nice value).
const BACKGROUND_NICE: i32 = 10;

/// Runs `f` on a pool of `threads` workers (0: one per core, the settings' "Worker threads") whose
/// threads, like the calling one, run at a lower scheduling priority: the calibration keeps every
/// core busy, and the window (and the renderer's threads) must still get a core at once for each
/// frame. Without a pool (it cannot be built), `f` runs on the global one.
fn in_background_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    lower_priority();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("int8cal-calibration-{i}"))
        .start_handler(|_| lower_priority())
        .build();
    match pool {
        Ok(pool) => pool.install(f),
        Err(_) => f(),
    }
}

/// Lowers the calling thread's scheduling priority (Linux keeps a nice value per thread: `who` 0
/// is the calling thread). A failure only costs responsiveness, so it is ignored.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn lower_priority() {
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, BACKGROUND_NICE) };
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

/// Sends events to the UI and wakes it.
fn sender(tx: Sender<Msg>, wake: Arc<dyn Fn() + Send + Sync>) -> impl FnMut(Event) {
    move |e| {
        let _ = tx.send(Msg::Event(e));
        wake();
    }
}

impl CalibJob {
    /// Starts a whole calibration (it does not write: the app saves on request).
    pub fn start(mut c: Calibration, wake: Arc<dyn Fn() + Send + Sync>) -> Self {
        let (tx, rx) = channel();
        c.write_output = false;
        c.layer_sqnr = true;
        let cancel = Arc::clone(&c.cancel);
        std::thread::spawn(move || {
            let threads = c.cfg.threads;
            in_background_pool(threads, || {
                let mut send = sender(tx.clone(), Arc::clone(&wake));
                let result = c.run(&mut send);
                if let Ok(o) = &result {
                    send_comparison(&o.retained, &o.table, &mut send, &tx);
                    send(Event::Finished {
                        fp32: o.report.fp32_accuracy,
                        int8: o.report.int8_accuracy,
                    });
                }
                let _ = tx.send(Msg::Done(Box::new(result)));
                wake();
            });
        });
        Self {
            rx,
            cancel,
            running: true,
        }
    }

    /// Re-evaluates INT8 with `pinned` layers kept FP32, on the retained statistics and batches.
    pub fn reevaluate(
        retained: Arc<Retained>,
        cfg: CalibConfig,
        pinned: BTreeSet<String>,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Self {
        let (tx, rx) = channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cancel);
        std::thread::spawn(move || {
            in_background_pool(cfg.threads, || {
                let mut send = sender(tx.clone(), Arc::clone(&wake));
                let result = retained.reevaluate(&cfg, &pinned, &flag, &mut send);
                if let Ok((table, _)) = &result {
                    send_comparison(&retained, table, &mut send, &tx);
                }
                let _ = tx.send(Msg::Reevaluated(result));
                wake();
            });
        });
        Self {
            rx,
            cancel,
            running: true,
        }
    }

    pub fn running(&self) -> bool {
        self.running
    }

    /// Asks the worker to stop (within one batch).
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Moves what arrived into `view`; true when the job ended this call.
    pub fn poll(&mut self, view: &mut CalibView) -> bool {
        let mut ended = false;
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Event(e) => view.apply(e),
                Msg::Compared(d, b) => {
                    view.disagreements = d;
                    view.boxes = b;
                    view.generation += 1;
                }
                Msg::Done(r) => {
                    ended = true;
                    match *r {
                        Ok(o) => view.outcome = Some(o),
                        Err(CalibError::Cancelled) => view.cancelled = true,
                        Err(e) => view.error = Some(e.to_string()),
                    }
                }
                Msg::Reevaluated(r) => {
                    ended = true;
                    if let Some(p) = view.progress.take() {
                        view.finished_stages
                            .push((p.stage, p.started.elapsed().as_secs_f64()));
                    }
                    match r {
                        Ok((table, measured)) => {
                            let metric = measured.values.first().copied().unwrap_or(f64::NAN);
                            view.pinned_result = Some((table, metric));
                            view.pinned_ap_per_class = measured.ap_per_class;
                        }
                        Err(e) if self.cancel.load(Ordering::Relaxed) => {
                            view.cancelled = true;
                            let _ = e;
                        }
                        Err(e) => view.error = Some(e),
                    }
                }
            }
        }
        if ended {
            self.running = false;
        }
        ended
    }
}
