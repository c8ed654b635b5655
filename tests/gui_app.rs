//! The real app driven through egui_kittest: it opens the example, search selects a layer and the side
//! panel shows its shape, a broken prototxt shows its error with line:column while the app keeps working,
//! and an invalid setting shows its reason and is not applied. Dialogs are faked with paths.

// Test helpers fail loudly by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "common/gui.rs"]
mod gui;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use egui_kittest::kittest::Queryable;
use gui::{harness, open_example, settle};
use int8cal::calib::Setting;
use int8cal::gui::dialogs::FakeDialogs;

#[test]
fn opens_the_example_with_a_node_per_unfolded_layer() {
    let mut h = harness(FakeDialogs::default());
    open_example(&mut h);
    let loaded = h.state().loaded.as_ref().unwrap();
    let net = &loaded.model.net;
    let in_place_folded = net
        .layers
        .iter()
        .filter(|l| {
            matches!(l.type_name.as_str(), "BatchNorm" | "Scale" | "ReLU") && l.in_place(net, 0)
        })
        .count();
    assert_eq!(loaded.graph.nodes.len(), net.layers.len() - in_place_folded);
    assert!(h.state().view.painted_nodes > 0);
    let summary = format!(
        "{} layers · {} nodes",
        net.layers.len(),
        loaded.graph.nodes.len()
    );
    h.get_by_label(&summary);
    // The metric blob is pre-selected as Intel's tool picks it.
    assert_eq!(h.state().settings.config.blob_name, "accuracy");
}

#[test]
fn search_selects_the_layer_and_the_side_panel_shows_its_shape() {
    let mut h = harness(FakeDialogs::default());
    open_example(&mut h);
    h.get_by_label("Search layer").focus();
    h.get_by_label("Search layer").type_text("res2_branch2a");
    h.run_steps(3);
    let selected = h.state().view.selected.expect("a node is selected");
    let loaded = h.state().loaded.as_ref().unwrap();
    assert_eq!(
        loaded.model.net.layers[loaded.graph.nodes[selected].layer].name,
        "res2_branch2a"
    );
    // The convolution and the BatchNorm, Scale and ReLU folded into its node each list the top.
    assert_eq!(h.get_all_by_label("res2_branch2a: 100×32×16×16").count(), 4);
    h.get_by_label_contains("type: Convolution");
}

#[test]
fn broken_prototxt_shows_the_error_and_the_app_keeps_working() {
    let dir = common::scratch("gui_broken");
    let broken = common::write(
        &dir,
        "broken.prototxt",
        "name: \"b\"\nlayer {\n  name: \"x\" type \"ReLU\"\n}\n",
    );
    let mut h = harness(FakeDialogs {
        model: Some(broken),
        ..FakeDialogs::default()
    });
    open_example(&mut h);
    h.get_by_label("Open model…").click();
    settle(&mut h);
    let error = h.state().error.clone().expect("an error is shown");
    assert!(error.contains("broken.prototxt:3:"), "{error}");
    h.get_by_label_contains("Could not load");
    // The example is still loaded and usable.
    assert!(h.state().loaded.is_some());
    h.get_by_label("Search layer").focus();
    h.get_by_label("Search layer").type_text("fc10");
    h.run_steps(3);
    assert!(h.state().view.selected.is_some());
}

#[test]
fn invalid_setting_shows_its_reason_and_is_not_applied() {
    let mut h = harness(FakeDialogs::default());
    open_example(&mut h);
    let field = h.get_by_label("Tolerance");
    field.focus();
    field.set_text_value_accesskit("1.5");
    h.run_steps(3);
    h.get_by_label_contains("outside [0, 1)");
    assert_eq!(h.state().settings.config.accuracy_loss, 0.01);
    assert!(
        h.state()
            .settings
            .errors
            .contains_key(&Setting::AccuracyLoss)
    );
    let field = h.get_by_label("Tolerance");
    field.set_text_value_accesskit("0.02");
    h.run_steps(3);
    assert!(h.state().settings.errors.is_empty());
    assert_eq!(h.state().settings.config.accuracy_loss, 0.02);
}

/// A file dropped on the window (what the windowing integration hands egui).
#[derive(Debug)]
struct Dropped(PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

#[test]
fn dropping_a_prototxt_and_caffemodel_opens_them() {
    let Some(root) = common::fixtures() else {
        return;
    };
    let fx = root.join("lenet_mnist");
    let mut h = harness(FakeDialogs::default());
    h.run_steps(2);
    for p in [fx.join("deploy.prototxt"), fx.join("weights.caffemodel")] {
        h.input_mut().dropped_files.push(Arc::new(Dropped(p)));
    }
    settle(&mut h);
    let loaded = h
        .state()
        .loaded
        .as_ref()
        .expect("the dropped model is loaded");
    assert_eq!(loaded.model.prototxt.path, fx.join("deploy.prototxt"));
    assert_eq!(
        loaded.model.weights.as_deref(),
        Some(fx.join("weights.caffemodel").as_path())
    );
    assert!(
        loaded.model.net.layers.iter().any(|l| !l.blobs.is_empty()),
        "weights are bound"
    );
    // The recent-files list remembers it.
    assert_eq!(
        h.state().persisted.recent.first(),
        Some(&fx.join("deploy.prototxt"))
    );
}
