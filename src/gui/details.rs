//! The side panel for the selected node: the layer (and the layers folded into it) with its parameters,
//! its weight blobs with shape and min/max/mean, its top shapes and where it is defined.

use super::graph::model::{GraphNode, dims_text};
use crate::model::Net;
use crate::model::prototxt::print::prost_text;

pub fn show(ui: &mut egui::Ui, net: &Net, node: &GraphNode) {
    for (k, &id) in std::iter::once(&node.layer).chain(&node.folded).enumerate() {
        let l = &net.layers[id];
        if k > 0 {
            ui.separator();
        }
        ui.heading(&l.name);
        ui.label(format!("type: {}", l.type_name));
        ui.weak(&l.location);
        ui.label("Tops");
        for &t in &l.tops {
            let v = &net.values[t];
            let shape = v
                .shape
                .as_deref()
                .map(dims_text)
                .unwrap_or_else(|| "unknown".into());
            let note = if v.dynamic {
                " (initial; set by the data)"
            } else {
                ""
            };
            ui.monospace(format!("{}: {shape}{note}", v.name));
        }
        if !l.blobs.is_empty() {
            ui.label("Weights");
            egui::Grid::new(("blobs", id)).striped(true).show(ui, |ui| {
                for h in ["blob", "shape", "min", "max", "mean"] {
                    ui.strong(h);
                }
                ui.end_row();
                for (i, b) in l.blobs.iter().enumerate() {
                    let (min, max, mean) = b.stats();
                    ui.label(i.to_string());
                    ui.monospace(dims_text(b.shape()));
                    ui.monospace(format!("{min:.4}"));
                    ui.monospace(format!("{max:.4}"));
                    ui.monospace(format!("{mean:.4}"));
                    ui.end_row();
                }
            });
        }
        let params = prost_text(&parameters_only(&l.proto), "LayerParameter", 0);
        if !params.trim().is_empty() {
            egui::CollapsingHeader::new("Parameters")
                .id_salt(("params", id))
                .default_open(true)
                .show(ui, |ui| {
                    ui.monospace(params.trim_end());
                });
        }
    }
}

/// The layer's proto without what the panel already shows (name, type, bottoms, tops).
fn parameters_only(p: &crate::caffe::LayerParameter) -> crate::caffe::LayerParameter {
    crate::caffe::LayerParameter {
        name: None,
        r#type: None,
        bottom: vec![],
        top: vec![],
        blobs: vec![],
        phase: None,
        ..p.clone()
    }
}
