//! The network as the graph view shows it: one node per layer, with in-place ReLU / BatchNorm / Scale /
//! Bias / PReLU / Dropout layers folded into the node of the layer whose output they modify (as Netron
//! does), and one edge per value read by another node, labelled with the value's shape.

use crate::model::layer::{Activation, LayerKind};
use crate::model::{Category, LayerId, Net, ValueId};

#[derive(Debug, Clone)]
pub struct GraphNode {
    /// The layer that heads the node.
    pub layer: LayerId,
    /// In-place layers folded into it, in order.
    pub folded: Vec<LayerId>,
    pub category: Category,
    /// Data and loss layers are drawn dimmed.
    pub dimmed: bool,
    /// "Convolution + BatchNorm + Scale + ReLU".
    pub subtitle: String,
    /// Weight shapes, one line per blob ("W 16×3×3×3").
    pub weights: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct GraphEdge {
    pub from: usize,
    pub to: usize,
    pub value: ValueId,
    /// The value's shape ("100×16×32×32"), empty when unknown.
    pub label: String,
}

#[derive(Debug, Clone, Default)]
pub struct GraphModel {
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
    /// The node each layer is drawn in.
    pub node_of_layer: Vec<usize>,
}

/// Whether a layer is folded into its producer's node: an in-place elementwise layer.
fn foldable(net: &Net, id: LayerId) -> bool {
    let l = &net.layers[id];
    let kind_ok = matches!(
        l.kind,
        LayerKind::Activation(
            Activation::ReLU { .. }
                | Activation::Elu { .. }
                | Activation::Sigmoid
                | Activation::TanH
        ) | LayerKind::BatchNorm(_)
            | LayerKind::Scale(_)
            | LayerKind::Bias(_)
            | LayerKind::PReLU { .. }
            | LayerKind::Identity(_)
    );
    kind_ok && l.bottoms.len() == 1 && l.tops.len() == 1 && l.in_place(net, 0)
}

/// "16×3×3×3"
pub fn dims_text(shape: &[usize]) -> String {
    if shape.is_empty() {
        return "scalar".into();
    }
    shape
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("×")
}

impl GraphModel {
    pub fn build(net: &Net) -> Self {
        let mut g = GraphModel {
            node_of_layer: vec![usize::MAX; net.layers.len()],
            ..Default::default()
        };
        for (id, l) in net.layers.iter().enumerate() {
            if foldable(net, id) {
                let producer = net.values[l.bottoms[0]].producer;
                let node = g.node_of_layer[producer];
                g.node_of_layer[id] = node;
                g.nodes[node].folded.push(id);
                continue;
            }
            g.node_of_layer[id] = g.nodes.len();
            let category = l.kind.category();
            g.nodes.push(GraphNode {
                layer: id,
                folded: Vec::new(),
                category,
                dimmed: matches!(category, Category::Data | Category::Loss),
                subtitle: String::new(),
                weights: Vec::new(),
            });
        }
        for node in &mut g.nodes {
            let types: Vec<&str> = std::iter::once(node.layer)
                .chain(node.folded.iter().copied())
                .map(|i| net.layers[i].type_name.as_str())
                .collect();
            node.subtitle = types.join(" + ");
            node.weights = weight_lines(net, node.layer);
        }
        for (id, l) in net.layers.iter().enumerate() {
            let to = g.node_of_layer[id];
            for &v in &l.bottoms {
                let from = g.node_of_layer[net.values[v].producer];
                if from == to
                    || g.edges
                        .iter()
                        .any(|e| e.from == from && e.to == to && e.value == v)
                {
                    continue;
                }
                let label = net.values[v]
                    .shape
                    .as_deref()
                    .map(dims_text)
                    .unwrap_or_default();
                g.edges.push(GraphEdge {
                    from,
                    to,
                    value: v,
                    label,
                });
            }
        }
        g
    }

    /// The first node whose layer (or a folded layer) name matches: exact first, then containing, ignoring case.
    pub fn find(&self, net: &Net, query: &str) -> Option<usize> {
        let q = query.trim().to_lowercase();
        if q.is_empty() {
            return None;
        }
        let names = |n: &GraphNode| -> Vec<String> {
            std::iter::once(n.layer)
                .chain(n.folded.iter().copied())
                .map(|i| net.layers[i].name.to_lowercase())
                .collect()
        };
        self.nodes
            .iter()
            .position(|n| names(n).contains(&q))
            .or_else(|| {
                self.nodes
                    .iter()
                    .position(|n| names(n).iter().any(|s| s.contains(&q)))
            })
    }
}

/// "W 16×3×3×3", "b 16" lines for a layer's weights (bound blobs, or expected shapes without weights).
fn weight_lines(net: &Net, layer: LayerId) -> Vec<String> {
    let l = &net.layers[layer];
    let shapes: Vec<Vec<usize>> = if l.blobs.is_empty() {
        net.expected_blobs(layer)
            .ok()
            .flatten()
            .map(|e| e.required)
            .unwrap_or_default()
    } else {
        l.blobs.iter().map(|b| b.shape().to_vec()).collect()
    };
    let names = ["W", "b", "c", "d", "e"];
    shapes
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{} {}", names.get(i).unwrap_or(&"·"), dims_text(s)))
        .collect()
}
