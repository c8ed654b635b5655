//! Measuring how smooth the graph view is: once the model is shown, the view is panned and zoomed
//! continuously for a number of frames and the time between frames is reported (mean, 95th percentile,
//! frames per second). Used by `int8cal gui --measure-frames N` under Xvfb.

use std::time::Instant;

use super::graph::view::GraphView;

#[derive(Debug)]
pub struct FrameMeter {
    frames: usize,
    times_ms: Vec<f64>,
    last: Option<Instant>,
}

impl FrameMeter {
    pub fn new(frames: usize) -> Self {
        Self {
            frames,
            times_ms: Vec::with_capacity(frames),
            last: None,
        }
    }

    /// Records a frame and moves the view; returns the report when enough frames were measured.
    pub fn frame(&mut self, ctx: &egui::Context, view: &mut GraphView) -> Option<String> {
        ctx.request_repaint();
        let now = Instant::now();
        if let Some(last) = self.last {
            self.times_ms.push((now - last).as_secs_f64() * 1e3);
        }
        self.last = Some(now);
        // Pan down and back up, zooming out and in, so every frame paints a different part of the graph.
        let k = self.times_ms.len();
        let phase = (k / 60).is_multiple_of(2);
        view.offset.y += if phase { -25.0 } else { 25.0 };
        view.zoom = (view.zoom * if phase { 0.995 } else { 1.005 }).clamp(0.3, 2.0);
        (k >= self.frames).then(|| self.report())
    }

    fn report(&self) -> String {
        let mut sorted = self.times_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len().max(1);
        let mean = sorted.iter().sum::<f64>() / n as f64;
        let p95 = sorted[((n as f64 * 0.95) as usize).min(n - 1)];
        format!(
            "frames: {n}, mean {mean:.1} ms, p95 {p95:.1} ms, {:.0} fps (mean)",
            1e3 / mean
        )
    }
}
