//! A net compiled for execution at a batch size: every value's shape, and per layer the constants
//! prepared once (convolution geometry, BatchNorm's folded statistics).

use super::error::EngineError;
use super::ops::conv::Geometry;
use super::ops::norm::BatchNormConsts;
use crate::model::layer::LayerKind;
use crate::model::{Net, Shape, shape};

/// Constants a layer needs at every batch.
#[derive(Debug, Clone)]
pub enum Prepared {
    None,
    Conv(Geometry),
    BatchNorm(BatchNormConsts),
}

#[derive(Debug)]
pub struct Plan<'n> {
    pub net: &'n Net,
    /// Shape of every value at this batch size.
    pub shapes: Vec<Shape>,
    pub prepared: Vec<Prepared>,
    pub batch: usize,
}

impl<'n> Plan<'n> {
    /// Plans the net for `batch` images per pass (None: the net's own batch).
    pub fn new(net: &'n Net, batch: Option<usize>) -> Result<Self, EngineError> {
        let mut shapes: Vec<Shape> = vec![Vec::new(); net.values.len()];
        let mut prepared = Vec::with_capacity(net.layers.len());
        let own_batch = net.batch_size().unwrap_or(1);
        let batch = batch.unwrap_or(own_batch);
        for l in &net.layers {
            let err = |m: String| EngineError::layer(l, m);
            let tops: Vec<Shape> = match &l.kind {
                LayerKind::Input { .. } | LayerKind::Data { .. } => l
                    .tops
                    .iter()
                    .map(|&t| {
                        let mut s = net.values[t]
                            .shape
                            .clone()
                            .ok_or_else(|| err("its shape is unknown".into()))?;
                        // Tops that carry the batch (data, labels) follow the planned batch.
                        if s.first() == Some(&own_batch) && !net.values[t].dynamic {
                            s[0] = batch;
                        }
                        Ok(s)
                    })
                    .collect::<Result<_, EngineError>>()?,
                LayerKind::Unsupported(t) => {
                    return Err(err(format!("type '{t}' cannot be run by int8cal")));
                }
                LayerKind::DetectionOutput(_) | LayerKind::DetectionEvaluate(_) => {
                    return Err(err(
                        "detection outputs are not supported by the FP32 engine yet".into(),
                    ));
                }
                kind => {
                    let bottoms: Vec<&[usize]> =
                        l.bottoms.iter().map(|&b| shapes[b].as_slice()).collect();
                    shape::infer(kind, &bottoms, l.tops.len()).map_err(err)?
                }
            };
            for (&t, s) in l.tops.iter().zip(tops) {
                shapes[t] = s;
            }
            prepared.push(match &l.kind {
                LayerKind::Convolution(c) | LayerKind::Deconvolution(c) => {
                    if l.bottoms.first().is_some_and(|&b| shapes[b].len() != 4) || c.axis != 1 {
                        return Err(err("only 2-D convolutions over axis 1 are supported".into()));
                    }
                    Prepared::Conv(Geometry::of(c).map_err(err)?)
                }
                LayerKind::BatchNorm(b) => {
                    if b.use_global_stats == Some(false) {
                        return Err(err("use_global_stats: false normalises with the batch's own statistics, which is training behaviour".into()));
                    }
                    Prepared::BatchNorm(BatchNormConsts::new(&l.blobs, b.eps).map_err(err)?)
                }
                _ => Prepared::None,
            });
        }
        Ok(Self {
            net,
            shapes,
            prepared,
            batch,
        })
    }

    /// Values no layer reads: the net's outputs (what `caffe test` reports).
    pub fn outputs(&self) -> Vec<usize> {
        (0..self.net.values.len())
            .filter(|&v| self.net.values[v].consumers.is_empty())
            .collect()
    }
}
