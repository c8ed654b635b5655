//! Top shapes of data layers as Caffe's `DataLayerSetUp` computes them: the first record's image size
//! (decoded from the header for encoded images), then the TEST transform's resize and crop; the batch
//! from the layer's parameters; the label as `[batch]` (or SSD's initial `[1, 1, 1, 8]`).

use std::path::Path;

use prost::Message;

use super::annotated_list::{AnnotatedList, is_list};
use super::{image, lmdb, resolve};
use crate::caffe::{self, TransformationParameter, resize_parameter::ResizeMode};
use crate::model::layer::{DataSource, LayerKind};
use crate::model::{Layer, Shape, shape};

/// The shapes of a data layer's tops. `base` is the prototxt's folder.
pub fn data_tops(layer: &Layer, base: &Path) -> Result<Vec<Shape>, String> {
    let LayerKind::Data { source, transform } = &layer.kind else {
        return Err("not a data layer".into());
    };
    let n_tops = layer.tops.len();
    let mut tops = match source {
        DataSource::Db(p) | DataSource::Box(p) => {
            let (c, h, w, encoded) = db_record_size(p, base, false)?;
            let (h, w) = transformed(transform, h, w, encoded);
            vec![
                vec![batch(p.batch_size)?, c, h, w],
                vec![batch(p.batch_size)?],
            ]
        }
        DataSource::Annotated(p, anno) => {
            let source = resolve(base, p.source());
            let (c, h, w, encoded) = match is_list(&source) {
                true => {
                    let (h, w, c) = AnnotatedList::read(&source)?.first_size()?;
                    (c, h, w, true)
                }
                false => db_record_size(p, base, true)?,
            };
            let (h, w) = transformed(transform, h, w, encoded);
            let label = if anno.anno_type.is_some() || n_tops > 1 {
                vec![1, 1, 1, 8]
            } else {
                vec![batch(p.batch_size)?]
            };
            vec![vec![batch(p.batch_size)?, c, h, w], label]
        }
        DataSource::ImageList(p) => {
            let (c, h, w) = image_list_size(p, base)?;
            let (h, w) = transformed(transform, h, w, true);
            vec![
                vec![batch(p.batch_size)?, c, h, w],
                vec![batch(p.batch_size)?],
            ]
        }
        DataSource::Memory(p) => {
            let n = batch(p.batch_size)?;
            let dims = [p.channels(), p.height(), p.width()].map(|d| d as usize);
            vec![vec![n, dims[0], dims[1], dims[2]], vec![n]]
        }
        DataSource::Dummy(p) => dummy(p, n_tops)?,
        DataSource::Hdf5(_) | DataSource::Window(_) | DataSource::Video(_) => {
            return Err(
                "int8cal cannot read this kind of data source, so its shapes are unknown".into(),
            );
        }
    };
    tops.truncate(n_tops);
    for t in &tops {
        if t.contains(&0) {
            return Err(format!("top shape {t:?} has a zero dimension"));
        }
        shape::count(t)?;
    }
    Ok(tops)
}

fn batch(b: Option<u32>) -> Result<usize, String> {
    match b {
        Some(n) if n > 0 => Ok(n as usize),
        _ => Err("batch_size must be positive".into()),
    }
}

/// (channels, height, width, encoded) of the first record of an LMDB of `Datum` (or
/// `AnnotatedDatum`).
fn db_record_size(
    p: &caffe::DataParameter,
    base: &Path,
    annotated: bool,
) -> Result<(usize, usize, usize, bool), String> {
    if p.backend() == caffe::data_parameter::Db::Leveldb && p.backend.is_some() {
        return Err("LevelDB sources are not supported; convert the database to LMDB".into());
    }
    let dir = resolve(base, p.source());
    if !dir.join("data.mdb").is_file() {
        return Err(format!(
            "data source '{}' not found (looked in {} and in the working directory)",
            p.source(),
            base.display()
        ));
    }
    let (key, bytes) = lmdb::first(&dir)?;
    let datum = if annotated {
        caffe::AnnotatedDatum::decode(bytes.as_slice())
            .map_err(|e| {
                format!(
                    "{}: record '{key}' is not an AnnotatedDatum: {e}",
                    dir.display()
                )
            })?
            .datum
            .unwrap_or_default()
    } else {
        caffe::Datum::decode(bytes.as_slice())
            .map_err(|e| format!("{}: record '{key}' is not a Datum: {e}", dir.display()))?
    };
    if datum.encoded() {
        return image::header_size(datum.data())
            .map(|(h, w, c)| (c, h, w, true))
            .map_err(|e| format!("{}: record '{key}': {e}", dir.display()));
    }
    let dims = [datum.channels(), datum.height(), datum.width()];
    if dims.iter().any(|&d| d <= 0) {
        return Err(format!(
            "{}: record '{key}' has channels/height/width {dims:?}",
            dir.display()
        ));
    }
    Ok((dims[0] as usize, dims[1] as usize, dims[2] as usize, false))
}

/// (channels, height, width) of the first image of an ImageData list, after `new_height`/`new_width`.
fn image_list_size(
    p: &caffe::ImageDataParameter,
    base: &Path,
) -> Result<(usize, usize, usize), String> {
    let list = resolve(base, p.source());
    let text = std::fs::read_to_string(&list).map_err(|e| format!("{}: {e}", list.display()))?;
    let (line, first) = text
        .lines()
        .enumerate()
        .find(|(_, l)| !l.trim().is_empty())
        .ok_or_else(|| format!("{}: the list is empty", list.display()))?;
    let (file, _) = super::batches::parse_list_line(first)
        .map_err(|e| format!("{}:{}: {e}", list.display(), line + 1))?;
    let path = resolve(base, &format!("{}{file}", p.root_folder()));
    let bytes = std::fs::read(&path).map_err(|e| {
        format!(
            "{} (first image of {}): {e}",
            path.display(),
            list.display()
        )
    })?;
    let (h, w, _) = image::header_size(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let c = if p.is_color() { 3 } else { 1 };
    match (p.new_height(), p.new_width()) {
        (0, 0) => Ok((c, h, w)),
        (nh, nw) if nh > 0 && nw > 0 => Ok((c, nh as usize, nw as usize)),
        _ => Err("new_height and new_width must be given together".into()),
    }
}

/// Height and width after the TEST transform: SSD's resize, the centre crop, then Intel's `pad` on
/// each side for images decoded through OpenCV (`through_opencv`; raw datums ignore it, spec §4.6).
fn transformed(
    t: &TransformationParameter,
    h: usize,
    w: usize,
    through_opencv: bool,
) -> (usize, usize) {
    let (h, w) = cropped(t, h, w);
    let pad = if through_opencv { t.pad() as usize } else { 0 };
    (h + 2 * pad, w + 2 * pad)
}

/// Height and width after SSD's resize and the centre crop.
fn cropped(t: &TransformationParameter, h: usize, w: usize) -> (usize, usize) {
    let (mut h, mut w) = (h, w);
    if let Some(r) = &t.resize_param
        && r.prob() > 0.0
    {
        let (rh, rw) = (r.height() as usize, r.width() as usize);
        match r.resize_mode() {
            ResizeMode::Warp | ResizeMode::FitLargeSizeAndPad if rh > 0 && rw > 0 => {
                (h, w) = (rh, rw)
            }
            ResizeMode::FitSmallSize if rh > 0 && rw > 0 => {
                // Scale so that the image fits the box, keeping the aspect ratio.
                let scale = (rh as f32 / h as f32).min(rw as f32 / w as f32);
                (h, w) = ((h as f32 * scale) as usize, (w as f32 * scale) as usize);
            }
            _ => {}
        }
    }
    let crop = t.crop_size() as usize;
    let (ch, cw) = (t.crop_h() as usize, t.crop_w() as usize);
    if crop > 0 {
        (crop, crop)
    } else if ch > 0 && cw > 0 {
        (ch, cw)
    } else {
        (h, w)
    }
}

fn dummy(p: &caffe::DummyDataParameter, n_tops: usize) -> Result<Vec<Shape>, String> {
    let pick = |i: usize| {
        if p.shape.len() == 1 {
            &p.shape[0]
        } else {
            &p.shape[i]
        }
    };
    if !p.shape.is_empty() {
        if p.shape.len() != 1 && p.shape.len() != n_tops {
            return Err(format!("{} shapes for {n_tops} tops", p.shape.len()));
        }
        return (0..n_tops).map(|i| shape::declared(&pick(i).dim)).collect();
    }
    let lists = [&p.num, &p.channels, &p.height, &p.width];
    (0..n_tops)
        .map(|i| {
            let dims: Vec<i64> = lists
                .iter()
                .map(|l| match l.len() {
                    1 => i64::from(l[0]),
                    _ => l.get(i).map_or(0, |&v| i64::from(v)),
                })
                .collect();
            shape::declared(&dims)
        })
        .collect()
}
