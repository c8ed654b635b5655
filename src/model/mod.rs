//! Reading the user's files: the prototxt (span-aware text format), the caffemodel (V2 and V1), the
//! TEST-phase `Net` with typed layers and shapes, and `export` (writing `quantization_param` blocks into
//! the user's own text).

pub mod blob;
pub mod caffemodel;
pub mod error;
pub mod export;
pub mod layer;
pub mod net;
pub mod prototxt;
pub mod quant;
pub mod shape;
pub mod upgrade;

use std::path::{Path, PathBuf};

pub use blob::Blob;
pub use error::ModelError;
pub use layer::{Category, LayerKind};
pub use net::{Layer, LayerId, Net, Value, ValueId};
pub use shape::Shape;

use crate::caffe::NetParameter;
use prototxt::{FieldValue, Span};

/// Which layer list a prototxt uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `layer { type: "Convolution" }`
    V2,
    /// `layers { type: CONVOLUTION }` (upgraded on reading).
    V1,
}

/// A prototxt as read: its text, syntax tree and decoded (not yet upgraded) parameters.
#[derive(Debug, Clone)]
pub struct Prototxt {
    pub path: PathBuf,
    pub text: String,
    pub tree: prototxt::Message,
    pub param: NetParameter,
    pub format: Format,
}

impl Prototxt {
    /// Reads and decodes a prototxt file.
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        Self::from_bytes(bytes, path)
    }

    /// Decodes prototxt bytes; `path` names the file in messages.
    pub fn from_bytes(bytes: Vec<u8>, path: &Path) -> Result<Self, ModelError> {
        let not_text = |reason: String| ModelError::NotText {
            path: path.to_path_buf(),
            reason,
        };
        if let Some(at) = bytes.iter().position(|&b| b == 0) {
            return Err(not_text(format!(
                "it contains a NUL byte at offset {at} (a binary file? caffemodels go in the weights field)"
            )));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            not_text(format!(
                "invalid UTF-8 at byte {}",
                e.utf8_error().valid_up_to()
            ))
        })?;
        Self::from_text(text, path)
    }

    pub fn from_text(text: String, path: &Path) -> Result<Self, ModelError> {
        let syntax = |offset: usize, message: String| {
            let (line, col) = prototxt::line_col(&text, offset);
            ModelError::Syntax {
                path: path.to_path_buf(),
                line,
                col,
                message,
            }
        };
        let tree = prototxt::parser::parse(&text).map_err(|e| syntax(e.offset, e.message))?;
        let param =
            prototxt::decode::net_parameter(&tree).map_err(|e| syntax(e.offset, e.message))?;
        let format = if param.layers.is_empty() {
            Format::V2
        } else {
            Format::V1
        };
        if !param.layer.is_empty() && !param.layers.is_empty() {
            let at = tree.first("layers").map_or(0, |f| f.span.start);
            return Err(syntax(
                at,
                "the file mixes V2 'layer' and V1 'layers' lists; Caffe reads only one".into(),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            text,
            tree,
            param,
            format,
        })
    }

    /// The spans of the file's layer blocks, in order (`layer` or `layers`).
    pub fn layer_spans(&self) -> Vec<Span> {
        let name = match self.format {
            Format::V2 => "layer",
            Format::V1 => "layers",
        };
        self.tree
            .all(name)
            .filter(|f| matches!(f.value, FieldValue::Message(_)))
            .map(|f| f.span)
            .collect()
    }

    /// "file:line:col" of a byte offset.
    pub fn location(&self, offset: usize) -> String {
        let (line, col) = prototxt::line_col(&self.text, offset);
        format!("{}:{line}:{col}", self.path.display())
    }

    /// The parameters upgraded to V2 (V1 layers converted, deprecated inputs as an `Input` layer), with the
    /// location of each resulting layer.
    pub fn upgraded(&self) -> (NetParameter, Vec<String>) {
        let mut param = self.param.clone();
        let has_input = !param.input.is_empty();
        upgrade::upgrade(&mut param);
        let mut locations: Vec<String> = self
            .layer_spans()
            .iter()
            .map(|s| self.location(s.start))
            .collect();
        if has_input {
            let at = self.tree.first("input").map_or(0, |f| f.span.start);
            locations.insert(0, self.location(at));
        }
        (param, locations)
    }
}

/// A loaded model: the prototxt as read and the TEST net with shapes (and weights when given).
#[derive(Debug, Clone)]
pub struct Model {
    pub prototxt: Prototxt,
    pub net: Net,
    pub weights: Option<PathBuf>,
}

/// A data-layer shape source: given a data layer and the prototxt's folder, the shapes of its tops.
pub type DataTops<'a> = &'a dyn Fn(&Layer, &Path) -> Result<Vec<Shape>, String>;

impl Model {
    /// Reads the prototxt, builds the TEST net, infers shapes (data layers through `data_tops`) and binds
    /// the weights if a caffemodel is given.
    pub fn load(
        model: &Path,
        weights: Option<&Path>,
        data_tops: DataTops,
    ) -> Result<Self, ModelError> {
        let prototxt = Prototxt::read(model)?;
        let (param, locations) = prototxt.upgraded();
        let mut net = Net::build(&param, &locations, &model.display().to_string())?;
        let base = model.parent().map(Path::to_path_buf).unwrap_or_default();
        net.infer_shapes(&|layer| data_tops(layer, &base))?;
        if let Some(w) = weights {
            let weights = caffemodel::read(w)?;
            net.bind_weights(&weights)?;
        }
        Ok(Self {
            prototxt,
            net,
            weights: weights.map(Path::to_path_buf),
        })
    }
}
