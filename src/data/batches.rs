//! Batches for a data layer: records of an LMDB in key order (`Data`, `AnnotatedData`), or the images
//! of a list file in its order (`ImageData`, `AnnotatedData` from a list of box files), decoded,
//! resized as OpenCV does and transformed, wrapping around at the end as Caffe's readers do. Reading
//! runs ahead of compute on a prefetch thread.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use ndarray::{Array1, Array3, Array4, Axis};
use prost::Message;

use super::annotated_list::{AnnotatedList, is_list};
use super::datum;
use super::pixels::{ColorMode, Pixels};
use super::transform::Transform;
use crate::caffe::{self, AnnotatedDatum, Datum};
use crate::model::layer::{DataSource, LayerKind};
use crate::model::{Layer, Shape};

/// One batch: the data top and the labels (for AnnotatedData, its boxes).
#[derive(Debug, Clone)]
pub struct Batch {
    pub data: Array4<f32>,
    pub labels: Array1<f32>,
    /// AnnotatedData's label rows: [image in batch, label, instance, xmin, ymin, xmax, ymax,
    /// difficult]; None for other sources.
    pub boxes: Option<Vec<[f32; 8]>>,
}

/// One decoded record: the image, its label, whether it went through OpenCV (encoded), and its
/// boxes rows without the image index (AnnotatedDatum only).
pub(crate) struct Record {
    img: Array3<f32>,
    label: f32,
    through_opencv: bool,
    boxes: Option<Vec<[f32; 7]>>,
}

/// Reads batches on a worker thread, a few ahead of the consumer. Dropping it stops the thread and
/// waits for it, so its database is closed before the same source can be opened again.
#[derive(Debug)]
pub struct Prefetcher {
    rx: Option<Receiver<Result<Batch, String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        // The reader's next send fails once the receiver is gone, and it returns.
        self.rx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Prefetcher {
    /// Starts reading batches of `shape` (N×C×H×W) for a data layer. `base` resolves relative sources.
    pub fn start(layer: &Layer, shape: &Shape, base: &Path) -> Result<Self, String> {
        let LayerKind::Data { source, transform } = &layer.kind else {
            return Err(format!("layer '{}' is not a data layer", layer.name));
        };
        let in_layer = |e: String| format!("layer '{}': {e}", layer.name);
        let resize = warp_size(transform).map_err(in_layer)?;
        let transform = Transform::new(transform, base).map_err(in_layer)?;
        let dims = <[usize; 4]>::try_from(shape.as_slice())
            .map_err(|_| format!("data shape {shape:?} is not 4-D"))?;
        let reader = match source {
            DataSource::Db(p) => Reader::Db(db_dir(p, base).map_err(in_layer)?, false),
            DataSource::Annotated(p, _) => match super::resolve(base, p.source()) {
                list if is_list(&list) => {
                    Reader::AnnotatedList(AnnotatedList::read(&list).map_err(in_layer)?)
                }
                _ => Reader::Db(db_dir(p, base).map_err(in_layer)?, true),
            },
            DataSource::ImageList(p) => Reader::List(ImageList::read(p, base).map_err(in_layer)?),
            _ => {
                return Err(in_layer(
                    "only LMDB Data and ImageData sources are read".into(),
                ));
            }
        };
        let (tx, rx) = sync_channel(2);
        let name = layer.name.clone();
        let thread = std::thread::spawn(move || {
            let mut batches = Batches::new(dims);
            match &reader {
                Reader::Db(dir, annotated) => {
                    let how = Decode {
                        annotated: *annotated,
                        color: transform.color,
                        resize,
                    };
                    db_loop(dir, &transform, how, &name, &mut batches, &tx)
                }
                Reader::List(list) => {
                    let record = |i| image_record(list, i);
                    list_loop(
                        list.entries.len(),
                        record,
                        &transform,
                        &name,
                        &mut batches,
                        &tx,
                    )
                }
                Reader::AnnotatedList(list) => {
                    let how = Decode {
                        annotated: true,
                        color: transform.color,
                        resize,
                    };
                    let record = |i| annotated_record(list, how, i);
                    list_loop(list.len(), record, &transform, &name, &mut batches, &tx)
                }
            }
        });
        Ok(Self {
            rx: Some(rx),
            thread: Some(thread),
        })
    }

    pub fn next(&self) -> Result<Batch, String> {
        self.rx
            .as_ref()
            .ok_or("the data reader stopped")?
            .recv()
            .map_err(|_| "the data reader stopped".to_string())?
    }
}

/// Where a reader's images come from.
enum Reader {
    /// An LMDB folder, of `AnnotatedDatum` when true.
    Db(PathBuf, bool),
    List(ImageList),
    /// Images with box files, listed (`annotated_list`).
    AnnotatedList(AnnotatedList),
}

/// The LMDB folder of a Data layer, checked to exist.
fn db_dir(p: &caffe::DataParameter, base: &Path) -> Result<PathBuf, String> {
    if p.backend() != caffe::data_parameter::Db::Lmdb {
        return Err("LevelDB sources are not supported; convert to LMDB".into());
    }
    let dir = super::resolve(base, p.source());
    if !dir.join("data.mdb").is_file() {
        return Err(format!(
            "data source '{}' not found (looked in {} and the working directory)",
            p.source(),
            base.display()
        ));
    }
    Ok(dir)
}

/// The batch being filled; `push` hands back each one that is full.
struct Batches {
    batch: Batch,
    filled: usize,
}

impl Batches {
    fn new([n, c, h, w]: [usize; 4]) -> Self {
        Self {
            batch: Batch {
                data: Array4::zeros((n, c, h, w)),
                labels: Array1::zeros(n),
                boxes: None,
            },
            filled: 0,
        }
    }

    /// Transforms one image into the next slot; a full batch is returned (and filling starts over).
    fn push(&mut self, t: &Transform, r: Record) -> Result<Option<Batch>, String> {
        let mut out = self.batch.data.index_axis_mut(Axis(0), self.filled);
        t.apply(r.img.view(), &mut out, r.through_opencv)?;
        self.batch.labels[self.filled] = r.label;
        if let Some(rows) = r.boxes {
            let n = self.filled as f32;
            let all = self.batch.boxes.get_or_insert_with(Vec::new);
            all.extend(
                rows.iter()
                    .map(|b| [n, b[0], b[1], b[2], b[3], b[4], b[5], b[6]]),
            );
        }
        self.filled += 1;
        if self.filled < self.batch.labels.len() {
            return Ok(None);
        }
        self.filled = 0;
        let full = self.batch.clone();
        if let Some(b) = &mut self.batch.boxes {
            b.clear();
        }
        Ok(Some(full))
    }
}

/// Fills batches from an LMDB forever (wrapping around), until the receiver is dropped.
fn db_loop(
    dir: &Path,
    t: &Transform,
    how: Decode,
    layer: &str,
    batches: &mut Batches,
    tx: &SyncSender<Result<Batch, String>>,
) {
    loop {
        let mut stop = false;
        let result = super::lmdb::with_records(dir, |key, value| {
            let item = decode_record(value, &how).and_then(|record| batches.push(t, record));
            let sent = match item {
                Ok(None) => return ControlFlow::Continue(()),
                Ok(Some(batch)) => tx.send(Ok(batch)).is_ok(),
                Err(e) => {
                    let key = String::from_utf8_lossy(key);
                    let _ = tx.send(Err(format!("layer '{layer}': record '{key}': {e}")));
                    false
                }
            };
            stop = !sent;
            if sent {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
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

/// An ImageData list, read and checked before any image is.
#[derive(Debug)]
struct ImageList {
    /// The list file, for messages.
    path: PathBuf,
    /// (line number, image path resolved, label).
    entries: Vec<(usize, PathBuf, i32)>,
    /// `new_height`, `new_width` when both are set.
    resize: Option<(usize, usize)>,
    color: ColorMode,
}

impl ImageList {
    fn read(p: &caffe::ImageDataParameter, base: &Path) -> Result<Self, String> {
        let path = super::resolve(base, p.source());
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "image list '{}' cannot be read (looked in {} and the working directory): {e}",
                p.source(),
                base.display()
            )
        })?;
        let entries = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, line)| {
                let (file, label) = parse_list_line(line)
                    .map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
                let image = super::resolve(base, &format!("{}{file}", p.root_folder()));
                Ok((i + 1, image, label))
            })
            .collect::<Result<Vec<_>, String>>()?;
        if entries.is_empty() {
            return Err(format!("{}: the list is empty", path.display()));
        }
        let resize = match (p.new_height(), p.new_width()) {
            (0, 0) => None,
            (h, w) if h > 0 && w > 0 => Some((h as usize, w as usize)),
            _ => return Err("new_height and new_width must be given together".into()),
        };
        let color = if p.is_color() {
            ColorMode::Color
        } else {
            ColorMode::Gray
        };
        Ok(Self {
            path,
            entries,
            resize,
            color,
        })
    }

    /// Entry `i`: the image decoded (and resized) to C×H×W, and its label.
    fn load(&self, i: usize) -> Result<(Array3<f32>, f32), String> {
        let (line, image, label) = &self.entries[i];
        let at = || format!("{}:{line}: {}", self.path.display(), image.display());
        let bytes = std::fs::read(image).map_err(|e| format!("{}: {e}", at()))?;
        let mut pixels =
            Pixels::decode(&bytes, self.color).map_err(|e| format!("{}: {e}", at()))?;
        if let Some((h, w)) = self.resize {
            pixels = pixels.resized(h, w);
        }
        Ok((pixels.to_chw(), *label as f32))
    }
}

/// A list line as Caffe splits it: the file name before the last space, an integer label after it.
pub(crate) fn parse_list_line(line: &str) -> Result<(&str, i32), String> {
    let line = line.trim_end();
    let (file, label) = line
        .rsplit_once(' ')
        .ok_or_else(|| format!("'{line}' has no label (expected 'path label')"))?;
    let label = label
        .parse()
        .map_err(|_| format!("label '{label}' of '{file}' is not an integer"))?;
    Ok((file, label))
}

/// Fills batches from the records of a list, in its order forever (wrapping around), until the
/// receiver is dropped. (`shuffle` and `rand_skip` are training options; the order here is the
/// list's.)
fn list_loop(
    len: usize,
    record: impl Fn(usize) -> Result<Record, String>,
    t: &Transform,
    layer: &str,
    batches: &mut Batches,
    tx: &SyncSender<Result<Batch, String>>,
) {
    for i in (0..len).cycle() {
        let item = record(i).and_then(|r| batches.push(t, r));
        let sent = match item {
            Ok(None) => continue,
            Ok(Some(batch)) => tx.send(Ok(batch)).is_ok(),
            Err(e) => {
                let _ = tx.send(Err(format!("layer '{layer}': {e}")));
                false
            }
        };
        if !sent {
            return;
        }
    }
}

/// Entry `i` of an ImageData list as a record.
fn image_record(list: &ImageList, i: usize) -> Result<Record, String> {
    let (img, label) = list.load(i)?;
    Ok(Record {
        img,
        label,
        through_opencv: true,
        boxes: None,
    })
}

/// Entry `i` of an annotated list as a record, WARP-resized as `how` says.
fn annotated_record(list: &AnnotatedList, how: Decode, i: usize) -> Result<Record, String> {
    let (pixels, boxes) = list.load(i, how.color)?;
    let pixels = match how.resize {
        Some((h, w)) => pixels.resized(h, w),
        None => pixels,
    };
    Ok(Record {
        img: pixels.to_chw(),
        label: 0.0,
        through_opencv: true,
        boxes: Some(boxes),
    })
}

/// How an LMDB's records are decoded.
#[derive(Debug, Clone, Copy)]
struct Decode {
    /// `AnnotatedDatum` records (with boxes).
    annotated: bool,
    color: ColorMode,
    /// SSD's WARP resize (height, width) before the transform.
    resize: Option<(usize, usize)>,
}

/// SSD's TEST `resize_param`: WARP to (height, width) as `cv::resize` with linear interpolation; the
/// other modes and interpolations are refused.
fn warp_size(t: &caffe::TransformationParameter) -> Result<Option<(usize, usize)>, String> {
    use caffe::resize_parameter::{InterpMode, ResizeMode};
    let Some(r) = t.resize_param.as_ref().filter(|r| r.prob() > 0.0) else {
        return Ok(None);
    };
    if r.resize_mode() != ResizeMode::Warp {
        return Err(format!(
            "resize_mode {:?} is not supported (WARP is)",
            r.resize_mode()
        ));
    }
    if r.interp_mode
        .iter()
        .any(|&m| m != InterpMode::Linear as i32)
    {
        return Err("resize_param interp_mode other than LINEAR is not supported".into());
    }
    match (r.height() as usize, r.width() as usize) {
        (0, _) | (_, 0) => Err("resize_param needs height and width".into()),
        hw => Ok(Some(hw)),
    }
}

fn decode_record(value: &[u8], how: &Decode) -> Result<Record, String> {
    let (datum, groups) = if how.annotated {
        let a = AnnotatedDatum::decode(value).map_err(|e| format!("not an AnnotatedDatum: {e}"))?;
        (a.datum.unwrap_or_default(), Some(a.annotation_group))
    } else {
        let d = Datum::decode(value).map_err(|e| format!("not a Datum: {e}"))?;
        (d, None)
    };
    let img = match how.resize {
        Some((h, w)) if datum.encoded() => Pixels::decode(datum.data(), how.color)?
            .resized(h, w)
            .to_chw(),
        Some(_) => return Err("resize_param needs encoded images".into()),
        None => datum::decode(&datum, how.color)?,
    };
    let boxes = groups.map(|g| annotation_rows(&g)).transpose()?;
    Ok(Record {
        img,
        label: datum.label() as f32,
        through_opencv: datum.encoded(),
        boxes,
    })
}

/// The boxes of an AnnotatedDatum as [label, instance, xmin, ymin, xmax, ymax, difficult]; a box
/// outside [0, 1] or inverted is an error.
fn annotation_rows(groups: &[caffe::AnnotationGroup]) -> Result<Vec<[f32; 7]>, String> {
    let mut rows = Vec::new();
    for g in groups {
        for a in &g.annotation {
            let b = a.bbox.unwrap_or_default();
            let c = [b.xmin(), b.ymin(), b.xmax(), b.ymax()];
            if c.iter().any(|v| !(0.0..=1.0).contains(v)) || c[2] < c[0] || c[3] < c[1] {
                return Err(format!(
                    "annotation {} of label {}: box {c:?} is not inside [0, 1]",
                    a.instance_id(),
                    g.group_label()
                ));
            }
            let difficult = if b.difficult() { 1.0 } else { 0.0 };
            rows.push([
                g.group_label() as f32,
                a.instance_id() as f32,
                c[0],
                c[1],
                c[2],
                c[3],
                difficult,
            ]);
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(label: i32, boxes: &[[f32; 4]]) -> caffe::AnnotationGroup {
        caffe::AnnotationGroup {
            group_label: Some(label),
            annotation: boxes
                .iter()
                .enumerate()
                .map(|(i, b)| caffe::Annotation {
                    instance_id: Some(i as i32),
                    bbox: Some(caffe::NormalizedBBox {
                        xmin: Some(b[0]),
                        ymin: Some(b[1]),
                        xmax: Some(b[2]),
                        ymax: Some(b[3]),
                        difficult: Some(i == 1),
                        ..Default::default()
                    }),
                })
                .collect(),
        }
    }

    #[test]
    fn annotations_become_rows_and_a_box_outside_the_image_is_refused() {
        // No annotation at all is an image without ground truth (SSD Caffe's -1 row comes later).
        assert_eq!(annotation_rows(&[]), Ok(Vec::new()));
        let rows = annotation_rows(&[group(3, &[[0.1, 0.2, 0.3, 0.4], [0.0, 0.0, 1.0, 1.0]])]);
        assert_eq!(
            rows,
            Ok(vec![
                [3.0, 0.0, 0.1, 0.2, 0.3, 0.4, 0.0],
                [3.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
            ])
        );
        for bad in [
            [0.1, 0.2, 1.2, 0.4],
            [-0.1, 0.2, 0.3, 0.4],
            [0.5, 0.2, 0.3, 0.4],
        ] {
            let e = annotation_rows(&[group(7, &[bad])]).unwrap_err();
            assert!(
                e.contains("of label 7") && e.contains("not inside [0, 1]"),
                "{e}"
            );
        }
    }

    #[test]
    fn list_lines_split_at_the_last_space_as_caffe_does() {
        assert_eq!(parse_list_line("a b/c.jpg 7"), Ok(("a b/c.jpg", 7)));
        assert_eq!(parse_list_line("x.png -1\r"), Ok(("x.png", -1)));
        assert!(parse_list_line("x.png").unwrap_err().contains("no label"));
        assert!(
            parse_list_line("x.png cat")
                .unwrap_err()
                .contains("not an integer")
        );
    }
}
