//! The graph and its layout on real nets: every fixture and a generated ResNet-50 (about 230 layers)
//! lay out with no overlapping nodes and every edge pointing down, in-place layers folded.

// Test helpers fail loudly by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "common/resnet50.rs"]
mod resnet50;

use int8cal::gui::graph::layout::{Layout, layout};
use int8cal::gui::graph::model::GraphModel;
use int8cal::gui::loader::layout_input;
use int8cal::model::Model;

fn assert_sane(model: &Model, graph: &GraphModel, l: &Layout) {
    let net = &model.net;
    for i in 0..l.centers.len() {
        for j in i + 1..l.centers.len() {
            let (a, b) = (l.centers[i], l.centers[j]);
            let overlap_x = (a[0] - b[0]).abs() * 2.0 < l.sizes[i][0] + l.sizes[j][0];
            let overlap_y = (a[1] - b[1]).abs() * 2.0 < l.sizes[i][1] + l.sizes[j][1];
            assert!(
                !(overlap_x && overlap_y),
                "{}: nodes {i} and {j} overlap",
                net.name
            );
        }
    }
    for (k, e) in graph.edges.iter().enumerate() {
        assert!(
            l.routes[k].windows(2).all(|w| w[1][1] > w[0][1]),
            "{}: edge {}->{} goes up",
            net.name,
            e.from,
            e.to
        );
    }
}

fn resnet50() -> Model {
    let dir = common::scratch("resnet50");
    let path = common::write(
        &dir,
        "resnet50_deploy.prototxt",
        resnet50::resnet50_prototxt(),
    );
    common::load(&path, None).unwrap()
}

#[test]
fn resnet50_folds_in_place_layers_and_lays_out_cleanly() {
    let model = resnet50();
    let net = &model.net;
    assert!(net.layers.len() > 220, "{} layers", net.layers.len());
    let graph = GraphModel::build(net);
    // Folded: every BatchNorm, Scale and in-place ReLU.
    let folded = net
        .layers
        .iter()
        .filter(|l| matches!(l.type_name.as_str(), "BatchNorm" | "Scale" | "ReLU"))
        .count();
    assert_eq!(graph.nodes.len(), net.layers.len() - folded);
    assert_eq!(
        net.value("fc1000").unwrap().shape.as_deref(),
        Some(&[1, 1000][..])
    );
    let l = layout(&layout_input(net, &graph));
    assert_sane(&model, &graph, &l);
}

#[test]
fn resnet50_layout_takes_under_200_ms() {
    // The bound for laying out a 250-layer net off the UI thread; best of three to ignore a cold start.
    let model = resnet50();
    let graph = GraphModel::build(&model.net);
    let input = layout_input(&model.net, &graph);
    let best = (0..3)
        .map(|_| {
            let t = std::time::Instant::now();
            std::hint::black_box(layout(&input));
            t.elapsed()
        })
        .min()
        .unwrap();
    eprintln!("resnet50 layout: {best:?}");
    assert!(best.as_millis() < 200, "{best:?}");
}

#[test]
fn every_fixture_lays_out_cleanly() {
    for dir in common::fixture_dirs() {
        for net in ["deploy", "test"] {
            let model = common::load(&dir.join(format!("{net}.prototxt")), None).unwrap();
            let graph = GraphModel::build(&model.net);
            let l = layout(&layout_input(&model.net, &graph));
            assert_sane(&model, &graph, &l);
            // Every layer is drawn: as a node or folded into one.
            assert!(graph.node_of_layer.iter().all(|&n| n < graph.nodes.len()));
        }
    }
}
