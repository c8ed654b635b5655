//! Headless screenshots: once loading and layout are done and a few frames have been painted, the
//! window's pixels are read back, written as a PNG (temp file + rename) and the window closes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::model::export::write_atomic;

/// Frames painted after everything is ready, before the screenshot is taken (layout settles, fonts load).
const SETTLE_FRAMES: u32 = 3;

#[derive(Debug)]
pub struct ScreenshotPlan {
    path: PathBuf,
    ready_frames: u32,
    requested: bool,
    /// Set by the screenshot callback: the outcome of writing the file.
    pub outcome: Arc<Mutex<Option<Result<(), String>>>>,
}

impl ScreenshotPlan {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            ready_frames: 0,
            requested: false,
            outcome: Arc::new(Mutex::new(None)),
        }
    }

    /// Called once per frame; `ready` is true when nothing is loading. Returns true when the window may close.
    pub fn frame(&mut self, ctx: &egui::Context, ready: bool) -> bool {
        if let Ok(done) = self.outcome.lock()
            && done.is_some()
        {
            return true;
        }
        ctx.request_repaint();
        if !ready {
            self.ready_frames = 0;
            return false;
        }
        self.ready_frames += 1;
        if self.ready_frames >= SETTLE_FRAMES && !self.requested {
            self.requested = true;
            let path = self.path.clone();
            let outcome = Arc::clone(&self.outcome);
            let wake = ctx.clone();
            ctx.request_screenshot(move |image| {
                let result = save_png(&path, &image);
                if let Ok(mut o) = outcome.lock() {
                    *o = Some(result);
                }
                wake.request_repaint();
            });
        }
        false
    }
}

/// Writes an egui image as an 8-bit RGBA PNG.
pub fn save_png(path: &Path, image: &egui::ColorImage) -> Result<(), String> {
    let [w, h] = image.size;
    let mut bytes = Vec::with_capacity(w * h * 4);
    for p in &image.pixels {
        bytes.extend_from_slice(&p.to_srgba_unmultiplied());
    }
    let mut png_data = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut png_data, w as u32, h as u32);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&bytes).map_err(|e| e.to_string())?;
    }
    write_atomic(path, &png_data).map_err(|e| e.to_string())
}
