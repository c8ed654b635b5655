//! Reading a binary `.caffemodel`: a `NetParameter` decoded with prost (unknown fields skipped, packed and
//! unpacked floats accepted), V2 `layer`, V1 `layers` and V0-in-V1 layers, reduced to the weight blobs of
//! each named layer in file order. Caffe binds weights to the net by layer name.

use std::path::{Path, PathBuf};

use prost::Message;

use super::blob::{self, Blob};
use super::error::ModelError;
use super::upgrade::v1_type_name;
use crate::caffe::NetParameter;

/// The layers of a caffemodel that carry blobs, by name, in file order.
#[derive(Debug, Clone, Default)]
pub struct Weights {
    pub path: PathBuf,
    pub layers: Vec<LayerWeights>,
}

#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub name: String,
    pub type_name: String,
    pub blobs: Vec<Blob>,
}

impl Weights {
    pub fn get(&self, layer: &str) -> Option<&LayerWeights> {
        self.layers.iter().find(|l| l.name == layer)
    }
}

/// Reads and decodes a caffemodel file.
pub fn read(path: &Path) -> Result<Weights, ModelError> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    decode(&bytes, path)
}

/// Decodes caffemodel bytes; `path` is only used in messages.
pub fn decode(bytes: &[u8], path: &Path) -> Result<Weights, ModelError> {
    let bad = |reason: String| ModelError::Caffemodel {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.is_empty() {
        return Err(bad("the file is empty".into()));
    }
    let net = NetParameter::decode(bytes).map_err(|e| {
        bad(format!(
            "protobuf decoding failed ({e}); truncated or not a caffemodel"
        ))
    })?;
    let mut layers = Vec::new();
    for l in net.layer {
        layers.push((
            l.name.unwrap_or_default(),
            l.r#type.unwrap_or_default(),
            l.blobs,
        ));
    }
    for l in net.layers {
        let ty = v1_type_name(l.r#type()).to_string();
        let (name, blobs) = match l.layer {
            Some(v0) if l.blobs.is_empty() => (l.name.or(v0.name).unwrap_or_default(), v0.blobs),
            _ => (l.name.unwrap_or_default(), l.blobs),
        };
        layers.push((name, ty, blobs));
    }
    if layers.is_empty() {
        return Err(bad("it holds no layers".into()));
    }
    let layers = layers
        .into_iter()
        .map(|(name, type_name, protos)| {
            let blobs = protos
                .into_iter()
                .enumerate()
                .map(|(i, p)| {
                    blob::from_proto(p).map_err(|e| bad(format!("layer '{name}', blob {i}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(LayerWeights {
                name,
                type_name,
                blobs,
            })
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    Ok(Weights {
        path: path.to_path_buf(),
        layers,
    })
}

/// A blob to replace in a caffemodel copy: the layer, the blob's index, its new values.
#[derive(Debug, Clone)]
pub struct BlobEdit {
    pub layer: String,
    pub blob: usize,
    pub values: Vec<f32>,
}

/// Writes a copy of the caffemodel at `src` to `dst` (temp file + rename) with blobs replaced; each
/// keeps its shape and its storage (`double_data` stays double). Unknown fields are not kept.
pub fn write_edited(src: &Path, dst: &Path, edits: &[BlobEdit]) -> Result<(), ModelError> {
    let bad = |reason: String| ModelError::Caffemodel {
        path: src.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(src).map_err(|e| ModelError::io(src, e))?;
    let mut net = NetParameter::decode(bytes.as_slice())
        .map_err(|e| bad(format!("protobuf decoding failed ({e})")))?;
    for e in edits {
        let blobs = net
            .layer
            .iter_mut()
            .find(|l| l.name() == e.layer)
            .map(|l| &mut l.blobs)
            .or_else(|| {
                net.layers
                    .iter_mut()
                    .find(|l| l.name() == e.layer)
                    .map(|l| &mut l.blobs)
            })
            .ok_or_else(|| bad(format!("no layer '{}'", e.layer)))?;
        let b = blobs
            .get_mut(e.blob)
            .ok_or_else(|| bad(format!("layer '{}' has no blob {}", e.layer, e.blob)))?;
        let (n, double) = match (b.data.len(), b.double_data.len()) {
            (0, d) if d > 0 => (d, true),
            (f, _) => (f, false),
        };
        if n != e.values.len() {
            return Err(bad(format!(
                "layer '{}', blob {}: {} values for a blob of {n}",
                e.layer,
                e.blob,
                e.values.len()
            )));
        }
        if double {
            b.double_data = e.values.iter().map(|&v| f64::from(v)).collect();
        } else {
            b.data.clone_from(&e.values);
        }
    }
    super::export::write_atomic(dst, &net.encode_to_vec())
}
