//! Batches for a `Data` layer: records of an LMDB in key order, decoded and transformed, wrapping around
//! at the end as Caffe's cursor does. Reading runs ahead of compute on a prefetch thread.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use ndarray::{Array1, Array4, Axis};
use prost::Message;

use super::datum::{self, ColorMode};
use super::transform::Transform;
use crate::caffe::{self, AnnotatedDatum, Datum};
use crate::model::layer::{DataSource, LayerKind};
use crate::model::{Layer, Shape};

/// One batch: the data top and the labels.
#[derive(Debug, Clone)]
pub struct Batch {
    pub data: Array4<f32>,
    pub labels: Array1<f32>,
}

/// Reads batches on a worker thread, a few ahead of the consumer.
#[derive(Debug)]
pub struct Prefetcher {
    rx: Receiver<Result<Batch, String>>,
}

impl Prefetcher {
    /// Starts reading batches of `shape` (N×C×H×W) for a Data layer. `base` resolves relative sources.
    pub fn start(layer: &Layer, shape: &Shape, base: &Path) -> Result<Self, String> {
        let LayerKind::Data { source, transform } = &layer.kind else {
            return Err(format!("layer '{}' is not a data layer", layer.name));
        };
        let (param, annotated) = match source {
            DataSource::Db(p) => (p.clone(), false),
            DataSource::Annotated(p, _) => (p.clone(), true),
            _ => {
                return Err(format!(
                    "layer '{}': only LMDB Data sources are read so far",
                    layer.name
                ));
            }
        };
        if param.backend() != caffe::data_parameter::Db::Lmdb {
            return Err(format!(
                "layer '{}': LevelDB sources are not supported; convert to LMDB",
                layer.name
            ));
        }
        let dir = super::resolve(base, param.source());
        if !dir.join("data.mdb").is_file() {
            return Err(format!(
                "layer '{}': data source '{}' not found (looked in {} and the working directory)",
                layer.name,
                param.source(),
                base.display()
            ));
        }
        let transform =
            Transform::new(transform, base).map_err(|e| format!("layer '{}': {e}", layer.name))?;
        let [n, c, h, w] = <[usize; 4]>::try_from(shape.as_slice())
            .map_err(|_| format!("data shape {shape:?} is not 4-D"))?;
        let (tx, rx) = sync_channel(2);
        let name = layer.name.clone();
        std::thread::spawn(move || {
            read_loop(&dir, &transform, annotated, [n, c, h, w], &name, &tx)
        });
        Ok(Self { rx })
    }

    pub fn next(&self) -> Result<Batch, String> {
        self.rx
            .recv()
            .map_err(|_| "the data reader stopped".to_string())?
    }
}

/// Fills batches forever (wrapping around), until the receiver is dropped.
fn read_loop(
    dir: &Path,
    t: &Transform,
    annotated: bool,
    dims: [usize; 4],
    layer: &str,
    tx: &SyncSender<Result<Batch, String>>,
) {
    let [n, c, h, w] = dims;
    let mut batch = Batch {
        data: Array4::zeros((n, c, h, w)),
        labels: Array1::zeros(n),
    };
    let mut filled = 0usize;
    loop {
        let mut stop = false;
        let result = super::lmdb::with_records(dir, |key, value| {
            let item = decode_record(value, annotated, t.color).and_then(|(img, label)| {
                let mut out = batch.data.index_axis_mut(Axis(0), filled);
                t.apply(img.view(), &mut out)?;
                batch.labels[filled] = label;
                Ok(())
            });
            if let Err(e) = item {
                let _ = tx.send(Err(format!(
                    "layer '{layer}': record '{}': {e}",
                    String::from_utf8_lossy(key)
                )));
                stop = true;
                return ControlFlow::Break(());
            }
            filled += 1;
            if filled == n {
                filled = 0;
                if tx.send(Ok(batch.clone())).is_err() {
                    stop = true;
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        match result {
            Err(e) => {
                let _ = tx.send(Err(format!("layer '{layer}': {e}")));
                return;
            }
            Ok(0) => {
                let _ = tx.send(Err(format!("layer '{layer}': the database is empty")));
                return;
            }
            Ok(_) if stop => return,
            Ok(_) => {}
        }
    }
}

fn decode_record(
    value: &[u8],
    annotated: bool,
    color: ColorMode,
) -> Result<(ndarray::Array3<f32>, f32), String> {
    let datum = if annotated {
        AnnotatedDatum::decode(value)
            .map_err(|e| format!("not an AnnotatedDatum: {e}"))?
            .datum
            .unwrap_or_default()
    } else {
        Datum::decode(value).map_err(|e| format!("not a Datum: {e}"))?
    };
    let img = datum::decode(&datum, color)?;
    Ok((img, datum.label() as f32))
}
