//! Helpers of the app tests: the bundled example, a harness around the real `App` with faked
//! dialogs, and stepping frames until the app is no longer busy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use int8cal::gui::app::{App, Persisted};
use int8cal::gui::dialogs::FakeDialogs;

/// The bundled example's test net and weights.
pub fn example() -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/example");
    (dir.join("test.prototxt"), dir.join("weights.caffemodel"))
}

pub fn harness(dialogs: FakeDialogs) -> Harness<'static, App> {
    let app = App::new(Arc::new(dialogs), Persisted::default());
    Harness::builder()
        .with_size(egui::vec2(1400.0, 900.0))
        .build_ui_state(|ui, app: &mut App| app.show(ui), app)
}

/// Steps frames while the app is busy (loading, calibrating, a dialog), calling `each` per frame,
/// for at most three minutes.
pub fn settle_with(
    h: &mut Harness<'static, App>,
    mut each: impl FnMut(&mut Harness<'static, App>),
) {
    let start = Instant::now();
    h.run_steps(2);
    while h.state().busy() {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "the app stayed busy"
        );
        std::thread::sleep(Duration::from_millis(5));
        h.step();
        each(h);
    }
    h.run_steps(3);
}

pub fn settle(h: &mut Harness<'static, App>) {
    settle_with(h, |_| {});
}

/// Opens the example and waits for it; no error may show.
pub fn open_example(h: &mut Harness<'static, App>) {
    let (m, w) = example();
    let ctx = h.ctx.clone();
    h.state_mut().open(m, Some(w), &ctx);
    settle(h);
    assert!(h.state().error.is_none(), "{:?}", h.state().error);
}
