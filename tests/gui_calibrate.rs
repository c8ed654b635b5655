//! The app's calibration, driven through egui_kittest on the bundled example: Calibrate shows progress
//! and then both accuracies; a selected layer's histogram shows every method's threshold; pinning a
//! layer and re-evaluating changes the INT8 result; the save dialog writes exactly what
//! `int8cal calibrate` writes and refuses the model itself; Cancel ends the run and writes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "common/gui.rs"]
mod gui;

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use gui::{example, harness, open_example, settle, settle_with};
use int8cal::calib::events::Stage;
use int8cal::calib::run::Calibration;
use int8cal::gui::app::App;
use int8cal::gui::app::Tab;
use int8cal::gui::dialogs::FakeDialogs;
use int8cal::gui::tabs::colors::ColorMode;

/// Clicks Calibrate and waits for the end; returns whether a progress bar was seen on the way.
fn calibrate(h: &mut Harness<'static, App>) -> bool {
    h.get_by_label("Calibrate").click();
    let mut saw_progress = false;
    settle_with(h, |h| {
        saw_progress |= h.query_by_label_contains("batches").is_some();
    });
    saw_progress
}

#[test]
fn calibrate_shows_progress_then_both_accuracies() {
    let mut h = harness(FakeDialogs::default());
    open_example(&mut h);
    assert!(
        calibrate(&mut h),
        "no progress bar was shown while calibrating"
    );
    assert_eq!(h.state().tab, Tab::Progress);
    let v = &h.state().calib_view;
    assert!(v.error.is_none(), "{:?}", v.error);
    let (fp32, int8) = (v.fp32.unwrap(), v.int8().unwrap());
    h.get_by_label_contains(&format!("Finished: FP32 {fp32:.4}, INT8 {int8:.4}"));
    // The graph is now coloured by precision.
    h.get_by_label("Graph").click();
    h.run_steps(3);
    assert_eq!(h.state().color_mode, ColorMode::Precision);
    let colors = &h.state().view.node_colors;
    assert!(
        colors.contains(&Some(int8cal::gui::tabs::colors::U8)),
        "{colors:?}"
    );
    // The SQNR heat scale is one click away.
    h.get_by_label("SQNR").click();
    h.run_steps(3);
    assert_eq!(h.state().color_mode, ColorMode::Sqnr);
}

#[test]
fn a_selected_layer_shows_its_histogram_with_every_threshold() {
    let mut h = harness(FakeDialogs::default());
    open_example(&mut h);
    calibrate(&mut h);
    h.get_by_label("Histograms").click();
    h.run_steps(2);
    h.get_by_label("Search layer").focus();
    h.get_by_label("Search layer").type_text("res2_branch2a");
    h.run_steps(4);
    h.get_by_label_contains("res2_branch2a — input");
    h.get_by_label_contains("chosen threshold: direct (max)");
    for method in [
        "direct (max)",
        "KL divergence",
        "percentile",
        "moving average",
        "MSE",
    ] {
        h.get_by_label_contains(&format!("{method}: "));
    }
    h.get_by_label_contains("— chosen");
}

#[test]
fn pinning_a_layer_re_evaluates_int8_without_sampling_again() {
    let mut h = harness(FakeDialogs::default());
    open_example(&mut h);
    calibrate(&mut h);
    h.get_by_label("Compare").click();
    h.run_steps(3);
    let before = h.state().calib_view.int8().unwrap();
    // The images FP32 and INT8 classify differently are listed with both classes.
    let d = &h.state().calib_view.disagreements;
    assert!(!d.is_empty() && d.iter().all(|x| x.fp32 != x.int8));
    h.get_by_label_contains(&format!("Images where FP32 and INT8 disagree: {}", d.len()));
    let first = &d[0];
    h.get_by_label_contains(&format!("FP32 {} · INT8 {}", first.fp32, first.int8));
    // The first row's box pins res1_branch2a.
    let pin = h
        .get_all_by_role_and_label(egui::accesskit::Role::CheckBox, "keep FP32")
        .next();
    pin.unwrap().click();
    h.run_steps(2);
    assert!(h.state().pinned.contains("res1_branch2a"));
    h.get_by_label("Re-evaluate INT8 with pins").click();
    settle(&mut h);
    let v = &h.state().calib_view;
    let (table, after) = v.pinned_result.clone().expect("re-evaluated");
    assert!(!table.contains_key("res1_branch2a"));
    let sampled = v
        .finished_stages
        .iter()
        .filter(|(s, _)| *s == Stage::Sampling)
        .count();
    assert_eq!(sampled, 1, "re-evaluation must not sample again");
    h.get_by_label_contains(&format!("with pins: INT8 {after:.4}"));
    assert!(
        after.is_finite() && (0.0..=1.0).contains(&after),
        "{before} -> {after}"
    );
}

#[test]
fn save_writes_what_the_command_line_writes_and_refuses_the_model() {
    let scratch = common::scratch("gui_save");
    let out = scratch.join("mine.prototxt");
    let mut h = harness(FakeDialogs {
        save: Some(out.clone()),
        ..FakeDialogs::default()
    });
    open_example(&mut h);
    calibrate(&mut h);
    h.get_by_label("Save quantized prototxt…").click();
    settle(&mut h);
    let saved = std::fs::read(&out).expect("the file was saved");
    // The command line's calibration with the same (default) settings.
    let (m, w) = example();
    let cli = scratch.join("cli.prototxt");
    let mut c = Calibration::new(m.clone(), w, h.state().settings.config.clone());
    c.output = Some(cli.clone());
    c.run(&mut |_| {}).unwrap();
    assert_eq!(saved, std::fs::read(&cli).unwrap());
    // The model itself is refused and left as it was.
    let before = std::fs::read(&m).unwrap();
    let r = h.state_mut().save_quantized(&m);
    assert!(r.unwrap_err().contains("overwrite an input"));
    assert_eq!(std::fs::read(&m).unwrap(), before);
}

#[test]
fn cancel_ends_the_run_and_writes_nothing() {
    let mut h = harness(FakeDialogs::default());
    open_example(&mut h);
    let folder = example().0.parent().unwrap().to_path_buf();
    let files_before = std::fs::read_dir(&folder).unwrap().count();
    h.get_by_label("Calibrate").click();
    let mut cancelled = false;
    settle_with(&mut h, |h| {
        if !cancelled && h.query_by_label_contains("batches").is_some() {
            h.get_by_label("Cancel").click();
            cancelled = true;
        }
    });
    assert!(cancelled);
    let v = &h.state().calib_view;
    assert!(v.cancelled && v.outcome.is_none(), "{:?}", v.error);
    h.get_by_label_contains("Cancelled; nothing was written.");
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), files_before);
}
