//! Errors of running a net: which layer, and why.

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("layer '{layer}' ({kind}): {message}")]
    Layer {
        layer: String,
        kind: String,
        message: String,
    },
    #[error("{0}")]
    Input(String),
    /// A quantized net that cannot be planned (names the layer).
    #[error("{0}")]
    Plan(String),
    /// The caller asked the run to stop.
    #[error("cancelled")]
    Cancelled,
}

impl EngineError {
    pub fn layer(l: &crate::model::Layer, message: impl Into<String>) -> Self {
        Self::Layer {
            layer: l.name.clone(),
            kind: l.type_name.clone(),
            message: message.into(),
        }
    }
}
