//! Painting and navigating the laid-out graph: drag to pan, Ctrl+scroll or pinch to zoom (scroll pans),
//! fit to the window, jump to a node. Only nodes and edges inside the visible rectangle are painted, so a
//! 250-layer net stays smooth; text is dropped when it would be too small to read.

use egui::{
    Align2, Color32, CornerRadius, FontId, Pos2, Rect, Sense, Shape, Stroke, StrokeKind, Vec2,
    pos2, vec2,
};

use super::layout::Layout;
use super::model::GraphModel;
use crate::gui::theme::{self, GraphColors};
use crate::model::Net;

/// The view's navigation state; the layout itself is computed elsewhere (off the UI thread).
#[derive(Debug, Clone)]
pub struct GraphView {
    /// Screen offset of the layout's origin from the view's top-left corner.
    pub offset: Vec2,
    pub zoom: f32,
    /// Fit the whole graph on the next frame.
    pub fit_pending: bool,
    /// Centre this node on the next frame.
    pub focus_pending: Option<usize>,
    pub selected: Option<usize>,
    pub hovered: Option<usize>,
    /// Nodes painted in the last frame (for tests and diagnostics).
    pub painted_nodes: usize,
    /// Header colours replacing the category's, per node (after a calibration).
    pub node_colors: Vec<Option<Color32>>,
    /// Ignore the pointer (scripted screenshots: the pointer of a virtual display is not a user's).
    pub ignore_pointer: bool,
}

impl Default for GraphView {
    fn default() -> Self {
        Self {
            offset: Vec2::ZERO,
            zoom: 1.0,
            fit_pending: true,
            focus_pending: None,
            selected: None,
            hovered: None,
            painted_nodes: 0,
            node_colors: Vec::new(),
            ignore_pointer: false,
        }
    }
}

const MIN_ZOOM: f32 = 0.05;
const MAX_ZOOM: f32 = 3.0;
const MARGIN: f32 = 24.0;

impl GraphView {
    /// Selects a node and centres it.
    pub fn jump_to(&mut self, node: usize) {
        self.selected = Some(node);
        self.focus_pending = Some(node);
    }

    /// Fits the graph; when it is too large to read whole, starts at the top, centred on `anchor`'s column.
    fn fit(&mut self, rect: Rect, layout: &Layout, anchor: Option<usize>) {
        let [w, h] = layout.bounds;
        let avail = rect.size() - Vec2::splat(2.0 * MARGIN);
        // Fit, but never so small that nothing can be read: tall nets start at the top instead.
        let fit = (avail.x / w.max(1.0)).min(avail.y / h.max(1.0)).min(1.0);
        self.zoom = fit.max(0.75).clamp(MIN_ZOOM, MAX_ZOOM);
        let drawn = vec2(w, h) * self.zoom;
        let x = match anchor {
            Some(a) if drawn.x > avail.x => rect.width() / 2.0 - layout.centers[a][0] * self.zoom,
            _ => (rect.width() - drawn.x) / 2.0,
        };
        let y = if drawn.y <= avail.y {
            (rect.height() - drawn.y) / 2.0
        } else {
            MARGIN
        };
        self.offset = vec2(x, y);
    }

    fn center_on(&mut self, rect: Rect, p: [f32; 2]) {
        self.zoom = self.zoom.max(0.8);
        self.offset = rect.size() / 2.0 - vec2(p[0], p[1]) * self.zoom;
    }

    /// Shows the graph in the available space; returns the node clicked this frame.
    pub fn show(
        &mut self,
        ui: &mut egui::Ui,
        net: &Net,
        graph: &GraphModel,
        layout: &Layout,
    ) -> Option<usize> {
        let rect = ui.available_rect_before_wrap();
        let response = ui.allocate_rect(rect, Sense::click_and_drag());
        if self.fit_pending {
            let anchor = graph.nodes.iter().position(|n| !n.dimmed);
            self.fit(rect, layout, anchor);
            self.fit_pending = false;
        }
        if let Some(n) = self.focus_pending.take() {
            self.center_on(rect, layout.centers[n]);
        }
        self.navigate(ui, &response, rect);
        let colors = GraphColors::for_visuals(ui.visuals());
        let painter = ui.painter_at(rect);
        painter.rect_filled(rect, CornerRadius::ZERO, colors.background);
        let to_screen = |p: [f32; 2]| rect.min + self.offset + vec2(p[0], p[1]) * self.zoom;
        let visible = Rect::from_min_max(
            pos2((-self.offset.x) / self.zoom, (-self.offset.y) / self.zoom),
            pos2(
                (rect.width() - self.offset.x) / self.zoom,
                (rect.height() - self.offset.y) / self.zoom,
            ),
        )
        .expand(40.0);

        self.paint_edges(&painter, graph, layout, &colors, visible, &to_screen);
        let pointer = response.hover_pos().filter(|_| !self.ignore_pointer);
        self.hovered = None;
        self.painted_nodes = 0;
        for (i, node) in graph.nodes.iter().enumerate() {
            let [cx, cy] = layout.centers[i];
            let [w, h] = layout.sizes[i];
            let world = Rect::from_center_size(pos2(cx, cy), vec2(w, h));
            if !visible.intersects(world) {
                continue;
            }
            self.painted_nodes += 1;
            let screen = Rect::from_min_max(
                to_screen([world.min.x, world.min.y]),
                to_screen([world.max.x, world.max.y]),
            );
            if pointer.is_some_and(|p| screen.contains(p)) {
                self.hovered = Some(i);
            }
            self.paint_node(&painter, net, node, i, screen, &colors);
        }
        let mut clicked = None;
        if response.clicked() {
            clicked = self.hovered;
            self.selected = self.hovered;
        }
        if response.double_clicked() && self.hovered.is_none() {
            self.fit_pending = true;
        }
        if let Some(h) = self.hovered {
            let node = &graph.nodes[h];
            response.on_hover_ui_at_pointer(|ui| hover_details(ui, net, node, graph, h));
        }
        clicked
    }

    fn navigate(&mut self, ui: &egui::Ui, response: &egui::Response, rect: Rect) {
        if response.dragged() {
            self.offset += response.drag_delta();
        }
        if !response.hovered() {
            return;
        }
        let (zoom_delta, scroll) = ui.input(|i| (i.zoom_delta(), i.smooth_scroll_delta()));
        if zoom_delta != 1.0 {
            let anchor = response.hover_pos().unwrap_or(rect.center()) - rect.min;
            let new_zoom = (self.zoom * zoom_delta).clamp(MIN_ZOOM, MAX_ZOOM);
            // Keep the point under the pointer fixed.
            self.offset = anchor - (anchor - self.offset) * (new_zoom / self.zoom);
            self.zoom = new_zoom;
        } else if scroll != Vec2::ZERO {
            self.offset += scroll;
        }
    }

    fn paint_edges(
        &self,
        painter: &egui::Painter,
        graph: &GraphModel,
        layout: &Layout,
        colors: &GraphColors,
        visible: Rect,
        to_screen: &impl Fn([f32; 2]) -> Pos2,
    ) {
        let stroke = Stroke::new((1.3 * self.zoom).clamp(0.6, 2.0), colors.edge);
        let label_font = FontId::proportional(10.5 * self.zoom);
        for (k, edge) in graph.edges.iter().enumerate() {
            let route = &layout.routes[k];
            let bbox = route.iter().fold(Rect::NOTHING, |r, p| {
                r.union(Rect::from_pos(pos2(p[0], p[1])))
            });
            if !visible.intersects(bbox.expand(2.0)) {
                continue;
            }
            let pts: Vec<Pos2> = smooth(route).into_iter().map(to_screen).collect();
            painter.add(Shape::line(pts.clone(), stroke));
            if let Some(&end) = pts.last() {
                let a = 5.0 * self.zoom.clamp(0.5, 1.5);
                painter.add(Shape::convex_polygon(
                    vec![end, end + vec2(-a, -1.8 * a), end + vec2(a, -1.8 * a)],
                    colors.edge,
                    Stroke::NONE,
                ));
            }
            if self.zoom >= 0.5 && !edge.label.is_empty() && route.len() >= 2 {
                // At the middle of the first segment: edges leaving one node diverge there.
                let mid = [
                    (route[0][0] + route[1][0]) / 2.0,
                    (route[0][1] + route[1][1]) / 2.0,
                ];
                painter.text(
                    to_screen(mid) + vec2(5.0, 0.0),
                    Align2::LEFT_CENTER,
                    &edge.label,
                    label_font.clone(),
                    colors.edge_label,
                );
            }
        }
    }

    fn paint_node(
        &self,
        painter: &egui::Painter,
        net: &Net,
        node: &super::model::GraphNode,
        index: usize,
        rect: Rect,
        colors: &GraphColors,
    ) {
        let z = self.zoom;
        let radius = CornerRadius::same((5.0 * z).clamp(1.0, 8.0) as u8);
        let mut header = self
            .node_colors
            .get(index)
            .copied()
            .flatten()
            .unwrap_or_else(|| theme::category_color(node.category));
        let mut body = colors.node_body;
        let mut text = colors.node_text;
        if node.dimmed {
            header = theme::dim(header, colors.background);
            body = theme::dim(body, colors.background);
            text = theme::dim(text, colors.background);
        }
        painter.rect_filled(rect, radius, body);
        let header_rect =
            Rect::from_min_size(rect.min, vec2(rect.width(), (24.0 * z).min(rect.height())));
        painter.rect_filled(
            header_rect,
            CornerRadius {
                nw: radius.nw,
                ne: radius.ne,
                sw: 0,
                se: 0,
            },
            header,
        );
        let outline = if self.selected == Some(index) {
            Stroke::new(2.5, colors.selected)
        } else if self.hovered == Some(index) {
            Stroke::new(2.0, colors.hovered)
        } else {
            Stroke::new(1.0, header)
        };
        painter.rect_stroke(rect, radius, outline, StrokeKind::Outside);
        if z < 0.3 {
            return;
        }
        let name = &net.layers[node.layer].name;
        painter.text(
            header_rect.left_center() + vec2(8.0 * z, 0.0),
            Align2::LEFT_CENTER,
            name,
            FontId::proportional(13.0 * z),
            colors.header_text,
        );
        let mut y = header_rect.bottom() + 3.0 * z;
        let small = FontId::proportional(11.0 * z);
        painter.text(
            pos2(rect.left() + 8.0 * z, y),
            Align2::LEFT_TOP,
            &node.subtitle,
            small.clone(),
            text,
        );
        y += 18.0 * z;
        let mono = FontId::monospace(10.5 * z);
        for w in &node.weights {
            painter.text(
                pos2(rect.left() + 8.0 * z, y),
                Align2::LEFT_TOP,
                w,
                mono.clone(),
                Color32::from_gray(140),
            );
            y += 15.0 * z;
        }
    }
}

/// A polyline through the route's points with rounded bends (a few points per quadratic corner).
fn smooth(route: &[[f32; 2]]) -> Vec<[f32; 2]> {
    if route.len() <= 2 {
        return route.to_vec();
    }
    let mut out = vec![route[0]];
    for w in route.windows(3) {
        let (a, b, c) = (w[0], w[1], w[2]);
        let p0 = [(a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0];
        let p2 = [(b[0] + c[0]) / 2.0, (b[1] + c[1]) / 2.0];
        for k in 0..=6 {
            let t = k as f32 / 6.0;
            let u = 1.0 - t;
            out.push([
                u * u * p0[0] + 2.0 * u * t * b[0] + t * t * p2[0],
                u * u * p0[1] + 2.0 * u * t * b[1] + t * t * p2[1],
            ]);
        }
    }
    out.push(route[route.len() - 1]);
    out
}

fn hover_details(
    ui: &mut egui::Ui,
    net: &Net,
    node: &super::model::GraphNode,
    graph: &GraphModel,
    index: usize,
) {
    let l = &net.layers[node.layer];
    ui.strong(&l.name);
    ui.label(&node.subtitle);
    for &t in &l.tops {
        let v = &net.values[t];
        let shape = v
            .shape
            .as_deref()
            .map(super::model::dims_text)
            .unwrap_or_else(|| "?".into());
        ui.label(format!("-> {}: {shape}", v.name));
    }
    for w in &node.weights {
        ui.monospace(w);
    }
    let inputs = graph.edges.iter().filter(|e| e.to == index).count();
    ui.weak(format!(
        "{inputs} input(s) · {}",
        theme::category_name(node.category)
    ));
}
