//! Loading a model off the UI thread: reading the files, building the graph and laying it out, then
//! handing the result back through a channel and waking the UI.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, TryRecvError, channel};
use std::time::{Duration, Instant};

use super::graph::layout::{Layout, LayoutInput, layout};
use super::graph::model::GraphModel;
use crate::calib::metric_blob::MetricBlobs;
use crate::data::shapes::data_tops;
use crate::model::{Model, Net};

/// A model ready for display.
#[derive(Debug)]
pub struct Loaded {
    pub model: Model,
    pub graph: GraphModel,
    pub layout: Layout,
    pub metric_blobs: MetricBlobs,
    pub load_time: Duration,
    pub layout_time: Duration,
}

/// A load in progress.
#[derive(Debug)]
pub struct LoadJob {
    pub model: PathBuf,
    pub weights: Option<PathBuf>,
    pub started: Instant,
    rx: Receiver<Result<Box<Loaded>, String>>,
}

impl LoadJob {
    /// Starts loading on a worker thread; `wake` is called when it is done.
    pub fn spawn(
        model: PathBuf,
        weights: Option<PathBuf>,
        wake: impl Fn() + Send + 'static,
    ) -> Self {
        let (tx, rx) = channel();
        let (m, w) = (model.clone(), weights.clone());
        std::thread::spawn(move || {
            let result = load(m, w);
            let _ = tx.send(result);
            wake();
        });
        Self {
            model,
            weights,
            started: Instant::now(),
            rx,
        }
    }

    /// The result once the worker is done.
    pub fn poll(&self) -> Option<Result<Box<Loaded>, String>> {
        match self.rx.try_recv() {
            Ok(r) => Some(r),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                Some(Err("the loading thread stopped unexpectedly".into()))
            }
        }
    }
}

fn load(model: PathBuf, weights: Option<PathBuf>) -> Result<Box<Loaded>, String> {
    let t = Instant::now();
    let model = Model::load(&model, weights.as_deref(), &data_tops).map_err(|e| e.to_string())?;
    let load_time = t.elapsed();
    let t = Instant::now();
    let graph = GraphModel::build(&model.net);
    let layout = layout(&layout_input(&model.net, &graph));
    let layout_time = t.elapsed();
    let metric_blobs = MetricBlobs::of(&model.net);
    Ok(Box::new(Loaded {
        model,
        graph,
        layout,
        metric_blobs,
        load_time,
        layout_time,
    }))
}

/// Node sizes estimated from their text (the view draws text at these proportions).
pub fn layout_input(net: &Net, graph: &GraphModel) -> LayoutInput {
    let sizes = graph
        .nodes
        .iter()
        .map(|n| {
            let title = net.layers[n.layer].name.chars().count() as f32 * 7.6;
            let sub = n.subtitle.chars().count() as f32 * 6.4;
            let weights = n
                .weights
                .iter()
                .map(|w| w.chars().count())
                .max()
                .unwrap_or(0) as f32
                * 6.4;
            let w = title.max(sub).max(weights) + 24.0;
            [w.max(110.0), node_height(n.weights.len())]
        })
        .collect();
    let edges = graph.edges.iter().map(|e| (e.from, e.to)).collect();
    LayoutInput { sizes, edges }
}

/// Title row, subtitle row and one row per weight blob.
pub fn node_height(weight_lines: usize) -> f32 {
    24.0 + 18.0 + 15.0 * weight_lines as f32 + 6.0
}
