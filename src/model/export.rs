//! Writing a quantized prototxt that Intel Caffe 1.1.6 reads: `quantization_param` blocks inserted into (or
//! replaced in, or removed from) the user's own text, everything else kept as written. Relative data paths
//! are rewritten when the output goes to another folder, OpenCV's `clip` field is dropped (Intel Caffe
//! rejects it), and a V1 file is written upgraded to V2. Files are written to a temporary file in the
//! target folder and renamed; the model itself is never overwritten.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use super::error::ModelError;
use super::prototxt::print::{prost_text, quote};
use super::prototxt::{FieldValue, Message, Span, line_col};
use super::{Format, Prototxt};
use crate::caffe::QuantizationParameter;

/// What to do with each layer's `quantization_param`, by layer name: `Some` writes this block, `None`
/// removes any block (the layer runs in FP32). Layers not named keep what the file has.
pub type QuantTable = BTreeMap<String, Option<QuantizationParameter>>;

/// The exported text and what the user should be told about it.
#[derive(Debug, Clone)]
pub struct Exported {
    pub text: String,
    pub notes: Vec<String>,
}

/// `(layer-parameter message, field)` pairs whose string values are paths of files the net reads.
const PATH_FIELDS: &[(&str, &str)] = &[
    ("data_param", "source"),
    ("data_param", "mean_file"),
    ("transform_param", "mean_file"),
    ("image_data_param", "source"),
    ("image_data_param", "mean_file"),
    ("image_data_param", "root_folder"),
    ("hdf5_data_param", "source"),
    ("window_data_param", "source"),
    ("window_data_param", "mean_file"),
    ("window_data_param", "root_folder"),
    ("annotated_data_param", "label_map_file"),
    ("detection_evaluate_param", "name_size_file"),
    ("infogain_loss_param", "source"),
    ("video_data_param", "video_file"),
];

/// The quantized text of `proto` for an output written to `out_dir`.
pub fn quantized_text(
    proto: &Prototxt,
    table: &QuantTable,
    out_dir: &Path,
) -> Result<Exported, ModelError> {
    let mut notes = Vec::new();
    check_names(proto, table)?;
    let model_dir = proto
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let text = match proto.format {
        Format::V2 => edit_in_place(proto, table, &[], (&model_dir, out_dir), &mut notes)?,
        Format::V1 => {
            notes.push("the model uses the V1 'layers' format; it is written upgraded to V2 (comments are not kept)".into());
            let (mut param, _) = proto.upgraded();
            for layer in &mut param.layer {
                if let Some(q) = table.get(layer.name()) {
                    layer.quantization_param = q.clone();
                }
                if let Some(d) = &mut layer.detection_output_param {
                    d.clip = None;
                }
            }
            let upgraded = Prototxt::from_text(prost_text(&param, "NetParameter", 0), &proto.path)?;
            edit_in_place(
                &upgraded,
                &QuantTable::new(),
                &[],
                (&model_dir, out_dir),
                &mut notes,
            )?
        }
    };
    Ok(Exported { text, notes })
}

/// Writes the quantized prototxt to `out` (temp file + rename). Refuses to overwrite the model.
pub fn write(proto: &Prototxt, table: &QuantTable, out: &Path) -> Result<Vec<String>, ModelError> {
    if same_file(&proto.path, out) {
        return Err(ModelError::Io {
            path: out.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "this is the model itself; choose another output file",
            ),
        });
    }
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let exported = quantized_text(proto, table, dir)?;
    write_atomic(out, exported.text.as_bytes())?;
    Ok(exported.notes)
}

/// Writes bytes to a temporary file beside `path` and renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ModelError::io(path, e)
    })
}

/// Whether two paths name the same existing file.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn check_names(proto: &Prototxt, table: &QuantTable) -> Result<(), ModelError> {
    let (param, _) = proto.upgraded();
    for name in table.keys() {
        if !param.layer.iter().any(|l| l.name() == name) {
            return Err(ModelError::Net {
                at: proto.path.display().to_string(),
                message: format!(
                    "the quantization table names layer '{name}', which the model does not have"
                ),
            });
        }
    }
    Ok(())
}

/// A scalar field of a layer's parameter message to set: every `param.key` of the layer replaced by
/// one `key: value` line per value, where the first one was (or at the end of `param`).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldEdit {
    pub layer: String,
    pub param: &'static str,
    pub key: &'static str,
    pub values: Vec<String>,
}

/// `proto`'s own text (V2) with these blocks and field edits, for a file in the same folder.
pub fn edited_text(
    proto: &Prototxt,
    table: &QuantTable,
    fields: &[FieldEdit],
) -> Result<String, ModelError> {
    check_names(proto, table)?;
    if proto.format != Format::V2 {
        return Err(ModelError::Net {
            at: proto.path.display().to_string(),
            message: "field edits need a V2 prototxt".into(),
        });
    }
    let dir = proto
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    edit_in_place(proto, table, fields, (&dir, &dir), &mut Vec::new())
}

fn edit_in_place(
    proto: &Prototxt,
    table: &QuantTable,
    fields: &[FieldEdit],
    (model_dir, out_dir): (&Path, &Path),
    notes: &mut Vec<String>,
) -> Result<String, ModelError> {
    let src = &proto.text;
    let mut edits: Vec<(Span, String)> = Vec::new();
    for field in proto.tree.all("layer") {
        let FieldValue::Message(layer) = &field.value else {
            continue;
        };
        let name = layer.string("name").unwrap_or_default();
        if let Some(q) = table.get(&name) {
            edits.extend(quant_edit(src, layer, q.as_ref()));
        }
        for f in fields.iter().filter(|f| f.layer == name) {
            edits.extend(field_edits(src, layer, f).map_err(|m| ModelError::Net {
                at: proto.path.display().to_string(),
                message: format!("layer '{name}': {m}"),
            })?);
        }
        for (param, key) in PATH_FIELDS {
            for p in layer.all(param) {
                let FieldValue::Message(m) = &p.value else {
                    continue;
                };
                for f in m.all(key) {
                    let FieldValue::Scalar(s) = &f.value else {
                        continue;
                    };
                    if let Some(new) = rebased(&s.text, model_dir, out_dir) {
                        notes.push(format!("layer '{name}': {param}.{key} \"{}\" is written as \"{new}\" so that it points at the same file", s.text));
                        edits.push((s.span, quote(&new)));
                    }
                }
            }
        }
        for p in layer.all("detection_output_param") {
            let FieldValue::Message(m) = &p.value else {
                continue;
            };
            for f in m.all("clip") {
                notes.push(format!("layer '{name}': detection_output_param.clip (OpenCV's extension) is left out: Intel Caffe rejects it"));
                edits.push((whole_lines(src, f.span), String::new()));
            }
        }
    }
    apply(src, edits).map_err(|m| ModelError::Net {
        at: proto.path.display().to_string(),
        message: m,
    })
}

/// The edit that sets (or removes) a layer's quantization block.
fn quant_edit(
    src: &str,
    layer: &Message,
    q: Option<&QuantizationParameter>,
) -> Option<(Span, String)> {
    let existing = layer.first("quantization_param");
    let indent = field_indent(src, layer);
    let block = q.map(|q| block_text(q, &indent));
    match (existing, block) {
        (Some(f), Some(b)) => Some((f.span, b.trim_start().trim_end_matches('\n').to_string())),
        (Some(f), None) => Some((whole_lines(src, f.span), String::new())),
        (None, Some(b)) => {
            let close = layer.close.start;
            let line_start = src[..close].rfind('\n').map_or(0, |i| i + 1);
            if src[line_start..close].trim().is_empty() {
                // The closing brace is on its own line: insert whole lines before it.
                Some((Span::new(line_start, line_start), b))
            } else {
                // A one-line layer: insert the block inline before the brace.
                let inline = b.split_whitespace().collect::<Vec<_>>().join(" ");
                Some((Span::new(close, close), format!("{inline} ")))
            }
        }
        (None, None) => None,
    }
}

/// The edits that give a layer's `param.key` the edit's values.
fn field_edits(src: &str, layer: &Message, f: &FieldEdit) -> Result<Vec<(Span, String)>, String> {
    let Some(FieldValue::Message(m)) = layer.first(f.param).map(|p| &p.value) else {
        return Err(format!("no {} to set {} in", f.param, f.key));
    };
    let indent = field_indent(src, m);
    let lines: Vec<String> = f.values.iter().map(|v| format!("{}: {v}", f.key)).collect();
    let mut existing = m.all(f.key);
    let mut edits = Vec::new();
    match existing.next() {
        Some(first) if !lines.is_empty() => {
            edits.push((first.span, lines.join(&format!("\n{indent}"))));
        }
        Some(first) => edits.push((whole_lines(src, first.span), String::new())),
        None => {
            let close = m.close.start;
            let line_start = src[..close].rfind('\n').map_or(0, |i| i + 1);
            let text = if src[line_start..close].trim().is_empty() {
                let body: String = lines.iter().map(|l| format!("{indent}{l}\n")).collect();
                return Ok(vec![(Span::new(line_start, line_start), body)]);
            } else {
                format!("{} ", lines.join(" "))
            };
            edits.push((Span::new(close, close), text));
        }
    }
    edits.extend(existing.map(|e| (whole_lines(src, e.span), String::new())));
    Ok(edits)
}

/// `quantization_param { ... }` as lines at the given indentation.
fn block_text(q: &QuantizationParameter, indent: &str) -> String {
    let body = prost_text(q, "QuantizationParameter", 1);
    let body: String = body.lines().map(|l| format!("{indent}{l}\n")).collect();
    format!("{indent}quantization_param {{\n{body}{indent}}}\n")
}

/// The indentation of a layer's fields (two spaces when it cannot be seen).
fn field_indent(src: &str, layer: &Message) -> String {
    let Some(first) = layer.fields.first() else {
        return "  ".into();
    };
    let line_start = src[..first.span.start].rfind('\n').map_or(0, |i| i + 1);
    let prefix = &src[line_start..first.span.start];
    if prefix.trim().is_empty() {
        prefix.to_string()
    } else {
        "  ".into()
    }
}

/// The span extended to whole lines when the field is alone on its line(s), so removing it leaves no gap.
fn whole_lines(src: &str, span: Span) -> Span {
    let start = src[..span.start].rfind('\n').map_or(0, |i| i + 1);
    let end = src[span.end..]
        .find('\n')
        .map_or(src.len(), |i| span.end + i + 1);
    let alone = src[start..span.start].trim().is_empty()
        && src[span.end..end].trim().trim_end_matches(';').is_empty();
    if alone { Span::new(start, end) } else { span }
}

/// Applies non-overlapping edits.
fn apply(src: &str, mut edits: Vec<(Span, String)>) -> Result<String, String> {
    edits.sort_by_key(|(s, _)| (s.start, s.end));
    let mut out =
        String::with_capacity(src.len() + edits.iter().map(|(_, t)| t.len()).sum::<usize>());
    let mut pos = 0;
    for (span, text) in edits {
        if span.start < pos {
            let (line, col) = line_col(src, span.start);
            return Err(format!("overlapping edits at {line}:{col}"));
        }
        out.push_str(&src[pos..span.start]);
        out.push_str(&text);
        pos = span.end;
    }
    out.push_str(&src[pos..]);
    Ok(out)
}

/// A relative path of the model's folder, rewritten relative to the output folder; None when it needs
/// no change (absolute, empty, or the folders are the same).
fn rebased(path: &str, model_dir: &Path, out_dir: &Path) -> Option<String> {
    if path.is_empty() || Path::new(path).is_absolute() {
        return None;
    }
    let to_dir = absolute(model_dir);
    if absolute(out_dir) == to_dir {
        return None;
    }
    // Absolute, so that the same model exported to any folder gives the same text.
    let mut s = normalize(&to_dir.join(path)).to_string_lossy().into_owned();
    if path.ends_with('/') && !s.ends_with('/') {
        s.push('/');
    }
    Some(s)
}

fn absolute(p: &Path) -> PathBuf {
    let p = if p.as_os_str().is_empty() {
        Path::new(".")
    } else {
        p
    };
    p.canonicalize()
        .unwrap_or_else(|_| normalize(&std::env::current_dir().unwrap_or_default().join(p)))
}

/// Removes `.` and folds `..` lexically.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `to` relative to the folder `from` (both absolute and normalized).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_rebased_to_absolute_ones_only_for_another_folder() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        let (m, o) = (Path::new("/a/m"), Path::new("/a/out"));
        assert_eq!(rebased("data/x", m, o).as_deref(), Some("/a/m/data/x"));
        assert_eq!(rebased("../d/", m, o).as_deref(), Some("/a/d/"));
        assert_eq!(rebased("data/x", m, m), None);
        assert_eq!(rebased("/abs/x", m, o), None);
    }

    #[test]
    fn field_edits_replace_in_place_remove_extra_and_append_missing() {
        let text = "layer {\n  name: \"d\"\n  type: \"Data\"\n  transform_param {\n    mean_value: 1\n    scale: 0.5\n    mean_value: 2\n  }\n}\n";
        let proto = Prototxt::from_text(text.to_string(), Path::new("/m/t.prototxt")).unwrap();
        let edit = |key, values: &[&str]| FieldEdit {
            layer: "d".into(),
            param: "transform_param",
            key,
            values: values.iter().map(|v| v.to_string()).collect(),
        };
        let out = edited_text(
            &proto,
            &QuantTable::new(),
            &[edit("mean_value", &["-3", "-4", "-5"]), edit("pad", &["1"])],
        )
        .unwrap();
        assert_eq!(
            out,
            "layer {\n  name: \"d\"\n  type: \"Data\"\n  transform_param {\n    mean_value: -3\n    mean_value: -4\n    mean_value: -5\n    scale: 0.5\n    pad: 1\n  }\n}\n"
        );
        let missing = FieldEdit {
            param: "convolution_param",
            ..edit("pad", &["0"])
        };
        let e = edited_text(&proto, &QuantTable::new(), &[missing]).unwrap_err();
        assert!(e.to_string().contains("no convolution_param"), "{e}");
    }

    #[test]
    fn edits_apply_in_order_and_refuse_overlap() {
        let out = apply(
            "abcdef",
            vec![(Span::new(4, 5), "X".into()), (Span::new(1, 2), "Y".into())],
        )
        .unwrap();
        assert_eq!(out, "aYcdXf");
        assert!(
            apply(
                "abc",
                vec![(Span::new(0, 2), "".into()), (Span::new(1, 3), "".into())]
            )
            .is_err()
        );
    }
}
