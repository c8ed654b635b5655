//! The network graph: the model of nodes and edges (`model`), the layered layout (`layout`) and the
//! interactive view that paints it (`view`).

pub mod layout;
pub mod model;
pub mod view;
