//! AnnotatedData read from the list SSD's `create_annoset` takes, for users without an LMDB: when
//! `data_param.source` is a text file instead of an LMDB folder, each non-empty line is
//! `image_path box_file` (paths relative to the list's folder), and each line of a box file is
//! `label xmin ymin xmax ymax [difficult]` in pixels of the original image (SSD's `txt` annotation
//! format, with an optional 0/1 difficult flag). Boxes are normalised by the image's size as
//! `create_annoset` does; one outside the image is an error naming the file and line.

use std::path::{Path, PathBuf};

use super::image;
use super::pixels::{ColorMode, Pixels};

/// The list, read and checked before any image is.
#[derive(Debug)]
pub struct AnnotatedList {
    path: PathBuf,
    /// (line number, image, box file).
    entries: Vec<(usize, PathBuf, PathBuf)>,
}

/// One box row: [label, instance, xmin, ymin, xmax, ymax, difficult], normalised.
pub type BoxRow = [f32; 7];

/// Whether a data source names a list file (not an LMDB folder).
pub fn is_list(source: &Path) -> bool {
    source.is_file()
}

impl AnnotatedList {
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("annotated list {}: {e}", path.display()))?;
        let folder = path.parent().unwrap_or(Path::new("."));
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (image, boxes) = line.rsplit_once(char::is_whitespace).ok_or_else(|| {
                format!(
                    "{}:{}: '{line}' is not 'image_path box_file'",
                    path.display(),
                    i + 1
                )
            })?;
            entries.push((i + 1, folder.join(image.trim()), folder.join(boxes)));
        }
        if entries.is_empty() {
            return Err(format!("{}: the list is empty", path.display()));
        }
        Ok(Self {
            path: path.to_path_buf(),
            entries,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// (height, width, channels) of the first image, from its header.
    pub fn first_size(&self) -> Result<(usize, usize, usize), String> {
        let (line, image, _) = &self.entries[0];
        let bytes = std::fs::read(image).map_err(|e| self.at(*line, image, e))?;
        image::header_size(&bytes).map_err(|e| self.at(*line, image, e))
    }

    /// Entry `i`: the decoded image (original size) and its boxes.
    pub fn load(&self, i: usize, color: ColorMode) -> Result<(Pixels, Vec<BoxRow>), String> {
        let (line, image, boxes) = &self.entries[i];
        let bytes = std::fs::read(image).map_err(|e| self.at(*line, image, e))?;
        let pixels = Pixels::decode(&bytes, color).map_err(|e| self.at(*line, image, e))?;
        let text = std::fs::read_to_string(boxes).map_err(|e| self.at(*line, boxes, e))?;
        let rows = parse_boxes(&text, pixels.width, pixels.height)
            .map_err(|e| format!("{}{e}", boxes.display()))?;
        Ok((pixels, rows))
    }

    fn at(&self, line: usize, file: &Path, e: impl std::fmt::Display) -> String {
        format!("{}:{line}: {}: {e}", self.path.display(), file.display())
    }
}

/// A box file's rows, normalised by the image's `width` and `height`; errors start with
/// `:line: `. Instances are numbered per label in file order.
pub fn parse_boxes(text: &str, width: usize, height: usize) -> Result<Vec<BoxRow>, String> {
    let (w, h) = (width as f32, height as f32);
    let mut rows: Vec<BoxRow> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let at = |m: String| format!(":{}: {m}", i + 1);
        if !(5..=6).contains(&fields.len()) {
            return Err(at(format!(
                "'{}' is not 'label xmin ymin xmax ymax [difficult]'",
                line.trim()
            )));
        }
        let label: i32 = fields[0]
            .parse()
            .map_err(|_| at(format!("label '{}' is not an integer", fields[0])))?;
        let mut c = [0.0f32; 4];
        for (v, f) in c.iter_mut().zip(&fields[1..5]) {
            *v = f
                .parse()
                .map_err(|_| at(format!("coordinate '{f}' is not a number")))?;
        }
        let difficult = match fields.get(5) {
            None | Some(&"0") => 0.0,
            Some(&"1") => 1.0,
            Some(f) => return Err(at(format!("difficult '{f}' is not 0 or 1"))),
        };
        let inside = c.iter().all(|v| v.is_finite() && *v >= 0.0)
            && c[0] <= c[2]
            && c[1] <= c[3]
            && c[2] <= w
            && c[3] <= h;
        if !inside {
            return Err(at(format!(
                "box {c:?} is not inside the {width}x{height} image"
            )));
        }
        let instance = rows.iter().filter(|r| r[0] == label as f32).count();
        rows.push([
            label as f32,
            instance as f32,
            c[0] / w,
            c[1] / h,
            c[2] / w,
            c[3] / h,
            difficult,
        ]);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_are_normalised_numbered_per_label_and_checked() {
        let rows = parse_boxes("1 10 20 50 60\n\n2 0 0 100 50 1\n1 0 0 1 1\n", 100, 200).unwrap();
        assert_eq!(rows[0], [1.0, 0.0, 0.1, 0.1, 0.5, 0.3, 0.0]);
        assert_eq!(rows[1], [2.0, 0.0, 0.0, 0.0, 1.0, 0.25, 1.0]);
        assert_eq!(rows[2][..2], [1.0, 1.0]);
        let e = parse_boxes("1 10 20 150 60", 100, 200).unwrap_err();
        assert!(e.starts_with(":1: box") && e.contains("100x200"), "{e}");
        let e = parse_boxes("1 0 0 1 1\nx 0 0 1 1", 100, 200).unwrap_err();
        assert!(e.starts_with(":2: label 'x'"), "{e}");
        assert!(parse_boxes("1 0 0 1", 10, 10).is_err());
        assert!(parse_boxes("1 5 5 1 1", 10, 10).is_err(), "inverted");
        assert!(parse_boxes("1 0 0 1 1 2", 10, 10).is_err(), "difficult");
    }
}
