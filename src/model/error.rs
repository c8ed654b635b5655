//! Errors of reading a model: every variant names the file and, where one exists, the line:column, the
//! layer, or both shapes involved.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{}: not a text prototxt: {reason}", path.display())]
    NotText { path: PathBuf, reason: String },

    /// A syntax or decoding error in a prototxt (unknown field, bad value, unbalanced braces...).
    #[error("{}:{line}:{col}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },

    #[error("{}: not a valid caffemodel: {reason}", path.display())]
    Caffemodel { path: PathBuf, reason: String },

    /// The net's structure or shapes: unknown bottoms, cycles, bad dimensions, inconsistent parameters.
    #[error("{at}: layer '{layer}' ({kind}): {message}")]
    Layer {
        at: String,
        layer: String,
        kind: String,
        message: String,
    },

    /// A net-level problem that belongs to no single layer.
    #[error("{at}: {message}")]
    Net { at: String, message: String },

    /// The weights do not fit the net: missing blobs, wrong count or shape.
    #[error("{}: layer '{layer}': {message}", path.display())]
    Weights {
        path: PathBuf,
        layer: String,
        message: String,
    },
}

impl ModelError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
