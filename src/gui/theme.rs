//! Colours and spacing of the app, in one place. Node colours follow Netron's palette by layer category;
//! everything else derives from egui's dark or light visuals, which follow the system theme.

use egui::Color32;

use crate::model::Category;

/// Spacing used across panels.
pub const PANEL_WIDTH: f32 = 300.0;
pub const DETAILS_WIDTH: f32 = 320.0;
pub const LOG_HEIGHT: f32 = 110.0;

/// Header colour of a node by layer category (Netron's hues).
pub fn category_color(c: Category) -> Color32 {
    match c {
        Category::Data => Color32::from_rgb(0x5c, 0x6b, 0x73),
        Category::Layer => Color32::from_rgb(0x33, 0x6e, 0xa8),
        Category::Activation => Color32::from_rgb(0x70, 0x28, 0x28),
        Category::Pool => Color32::from_rgb(0x33, 0x55, 0x33),
        Category::Normalization => Color32::from_rgb(0x33, 0x55, 0x77),
        Category::Tensor => Color32::from_rgb(0x6b, 0x52, 0x2e),
        Category::Output => Color32::from_rgb(0x5a, 0x3e, 0x7a),
        Category::Loss => Color32::from_rgb(0x55, 0x55, 0x55),
        Category::Unknown => Color32::from_rgb(0x80, 0x30, 0x60),
    }
}

pub fn category_name(c: Category) -> &'static str {
    match c {
        Category::Data => "data",
        Category::Layer => "layer",
        Category::Activation => "activation",
        Category::Pool => "pooling",
        Category::Normalization => "normalization",
        Category::Tensor => "tensor",
        Category::Output => "output",
        Category::Loss => "loss",
        Category::Unknown => "unknown",
    }
}

/// Colours of the graph that depend on the theme.
#[derive(Debug, Clone, Copy)]
pub struct GraphColors {
    pub background: Color32,
    pub node_body: Color32,
    pub node_text: Color32,
    pub header_text: Color32,
    pub edge: Color32,
    pub edge_label: Color32,
    pub selected: Color32,
    pub hovered: Color32,
}

impl GraphColors {
    pub fn for_visuals(v: &egui::Visuals) -> Self {
        if v.dark_mode {
            Self {
                background: Color32::from_gray(24),
                node_body: Color32::from_gray(48),
                node_text: Color32::from_gray(220),
                header_text: Color32::WHITE,
                edge: Color32::from_gray(150),
                edge_label: Color32::from_gray(175),
                selected: Color32::from_rgb(255, 190, 60),
                hovered: Color32::from_rgb(120, 180, 255),
            }
        } else {
            Self {
                background: Color32::from_gray(246),
                node_body: Color32::WHITE,
                node_text: Color32::from_gray(30),
                header_text: Color32::WHITE,
                edge: Color32::from_gray(110),
                edge_label: Color32::from_gray(70),
                selected: Color32::from_rgb(230, 140, 0),
                hovered: Color32::from_rgb(40, 110, 220),
            }
        }
    }
}

/// A colour faded towards the background (data and loss nodes are dimmed).
pub fn dim(c: Color32, background: Color32) -> Color32 {
    let mix = |a: u8, b: u8| ((u16::from(a) * 2 + u16::from(b) * 3) / 5) as u8;
    Color32::from_rgb(
        mix(c.r(), background.r()),
        mix(c.g(), background.g()),
        mix(c.b(), background.b()),
    )
}

pub fn error_color(v: &egui::Visuals) -> Color32 {
    v.error_fg_color
}

pub fn warn_color(v: &egui::Visuals) -> Color32 {
    v.warn_fg_color
}
