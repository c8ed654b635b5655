//! Batches for a net's data layer: LMDB records, SSD-style lists of images with box files, Datum
//! decoding (raw and JPEG), Caffe's TEST transform, a prefetching batch reader, image sizes from
//! file headers, and the top shapes of every data layer as Caffe's `DataLayerSetUp` computes them.

pub mod annotated_list;
pub mod batches;
pub mod datum;
pub mod image;
pub mod lmdb;
pub mod pixels;
pub mod resize;
pub mod shapes;
pub mod transform;

use std::path::{Path, PathBuf};

/// A `source`/`mean_file` path of a prototxt: absolute as given, relative ones against the prototxt's
/// folder (the fixtures' convention), falling back to the working directory as Caffe resolves them.
pub fn resolve(base: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    let beside = base.join(p);
    if beside.exists() || !p.exists() {
        beside
    } else {
        p.to_path_buf()
    }
}
