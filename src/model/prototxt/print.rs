//! Writing messages in Caffe's text style: two-space indentation, `field: value` one per line (a repeated
//! field once per value), `field {` blocks, fields in field-number order as protobuf's printer does,
//! enums by name and floats in the shortest form that reads back as the same `f32`.

use std::fmt::Write;

use prost_reflect::{DynamicMessage, Kind, ReflectMessage, Value};

/// The text of a message's fields, each line indented by `indent` levels.
pub fn message_text(msg: &DynamicMessage, indent: usize) -> String {
    let mut out = String::new();
    write_fields(&mut out, msg, indent);
    out
}

/// The text of any prost message of `caffe.proto` (through its descriptor).
pub fn prost_text<M: prost::Message + Default>(msg: &M, type_name: &str, indent: usize) -> String {
    let desc = super::decode::message_descriptor(type_name);
    match DynamicMessage::decode(desc, msg.encode_to_vec().as_slice()) {
        Ok(dynamic) => message_text(&dynamic, indent),
        // Encoding a prost value of the same schema always decodes.
        Err(e) => unreachable!("re-decoding a {type_name} failed: {e}"),
    }
}

fn write_fields(out: &mut String, msg: &DynamicMessage, indent: usize) {
    let mut fields: Vec<_> = msg.fields().collect();
    fields.sort_by_key(|(fd, _)| fd.number());
    let pad = "  ".repeat(indent);
    for (fd, value) in fields {
        let values: Vec<&Value> = match value {
            Value::List(items) => items.iter().collect(),
            single => vec![single],
        };
        for v in values {
            match v {
                Value::Message(m) => {
                    let _ = writeln!(out, "{pad}{} {{", fd.name());
                    write_fields(out, m, indent + 1);
                    let _ = writeln!(out, "{pad}}}");
                }
                scalar => {
                    let _ = writeln!(
                        out,
                        "{pad}{}: {}",
                        fd.name(),
                        scalar_text(scalar, &fd.kind())
                    );
                }
            }
        }
    }
}

fn scalar_text(v: &Value, kind: &Kind) -> String {
    match v {
        Value::Bool(b) => b.to_string(),
        Value::I32(x) => x.to_string(),
        Value::I64(x) => x.to_string(),
        Value::U32(x) => x.to_string(),
        Value::U64(x) => x.to_string(),
        Value::F32(x) => format_f32(*x),
        Value::F64(x) => format_f64(*x),
        Value::String(s) => quote(s),
        Value::Bytes(b) => quote(&String::from_utf8_lossy(b)),
        Value::EnumNumber(n) => match kind {
            Kind::Enum(ed) => ed
                .get_value(*n)
                .map_or_else(|| n.to_string(), |e| e.name().to_string()),
            _ => n.to_string(),
        },
        Value::Message(m) => format!("{{ {} }}", m.descriptor().name()),
        Value::List(_) | Value::Map(_) => String::new(),
    }
}

/// A quoted string with the escapes protobuf's text format reads.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\{:03o}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The shortest decimal text that reads back as exactly `x` (Rust's float formatting guarantees the
/// round trip); exponent form for very small or large magnitudes, `inf`/`-inf`/`nan` as protobuf writes.
pub fn format_f32(x: f32) -> String {
    format_float(
        f64::from(x),
        x.is_finite(),
        || format!("{x}"),
        || format!("{x:e}"),
    )
}

pub fn format_f64(x: f64) -> String {
    format_float(x, x.is_finite(), || format!("{x}"), || format!("{x:e}"))
}

fn format_float(
    x: f64,
    finite: bool,
    plain: impl Fn() -> String,
    exp: impl Fn() -> String,
) -> String {
    if !finite {
        return if x.is_nan() {
            "nan".into()
        } else if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let a = x.abs();
    if a == 0.0 || (1e-5..1e16).contains(&a) {
        plain()
    } else {
        exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_round_trip_as_f32() {
        for x in [
            0.1f32,
            1.0 / 3.0,
            12345.678,
            1e-7,
            3.4e38,
            -2.5e-12,
            0.0,
            127.0 / 0.0314,
        ] {
            let s = format_f32(x);
            assert_eq!(s.parse::<f32>().unwrap(), x, "{s}");
        }
        assert_eq!(format_f32(0.5), "0.5");
        assert_eq!(format_f32(1e-7), "1e-7");
        assert_eq!(format_f32(3.0), "3");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
    }
}
