//! Decoding a text-format syntax tree into a `caffe::NetParameter` by field name, through the descriptor
//! of `caffe.proto`. As Caffe's own parser, it refuses unknown fields, unknown enum values, values of the
//! wrong kind or out of range and a non-repeated field given twice; every error points at the token and
//! names the field, its message type and the layer it is in.

use std::sync::OnceLock;

use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value,
};

use super::lexer::TokenKind;
use super::parser::{FieldValue, Message, Scalar};
use crate::caffe;

/// A decoding error at a byte offset of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub offset: usize,
    pub message: String,
}

/// The descriptor pool of `caffe.proto`, decoded once.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| match DescriptorPool::decode(caffe::DESCRIPTOR_SET) {
        Ok(pool) => pool,
        // The descriptor set is produced by build.rs from the committed caffe.proto; it cannot be malformed
        // unless the build itself is broken.
        Err(e) => unreachable!("caffe.proto descriptors built by build.rs do not decode: {e}"),
    })
}

/// The descriptor of a `caffe.*` message.
pub fn message_descriptor(name: &str) -> MessageDescriptor {
    match pool().get_message_by_name(&format!("caffe.{name}")) {
        Some(d) => d,
        None => unreachable!("caffe.proto has no message {name}"),
    }
}

/// Decodes the root message of a prototxt as a `NetParameter`.
pub fn net_parameter(root: &Message) -> Result<caffe::NetParameter, DecodeError> {
    let dynamic = decode_message(root, &message_descriptor("NetParameter"), None)?;
    dynamic
        .transcode_to::<caffe::NetParameter>()
        .map_err(|e| DecodeError {
            offset: 0,
            message: format!("internal transcoding error: {e}"),
        })
}

/// Decodes a message body against a descriptor. `layer` names the enclosing layer for messages.
pub fn decode_message(
    body: &Message,
    desc: &MessageDescriptor,
    layer: Option<&str>,
) -> Result<DynamicMessage, DecodeError> {
    let mut msg = DynamicMessage::new(desc.clone());
    for field in &body.fields {
        let Some(fd) = desc.get_field_by_name(&field.name) else {
            return Err(DecodeError {
                offset: field.name_span.start,
                message: format!(
                    "unknown field '{}' in {}{}",
                    field.name,
                    desc.name(),
                    in_layer(layer)
                ),
            });
        };
        // Entering a layer: its name becomes the context of everything inside.
        let inner_layer = match (desc.name(), field.name.as_str(), &field.value) {
            ("NetParameter", "layer" | "layers", FieldValue::Message(m)) => Some(layer_name(m)),
            _ => None,
        };
        let ctx = inner_layer.as_deref().or(layer);
        let items: Vec<&FieldValue> = match &field.value {
            FieldValue::List(items) => {
                if !fd.is_list() {
                    return Err(DecodeError {
                        offset: field.name_span.start,
                        message: format!(
                            "field '{}' of {}{} is not repeated",
                            field.name,
                            desc.name(),
                            in_layer(ctx)
                        ),
                    });
                }
                items.iter().collect()
            }
            single => vec![single],
        };
        for item in items {
            let value = decode_value(item, &fd, ctx)?;
            if fd.is_list() {
                if let Value::List(list) = msg.get_field_mut(&fd) {
                    list.push(value);
                }
            } else if msg.has_field(&fd) {
                return Err(DecodeError {
                    offset: field.name_span.start,
                    message: format!(
                        "field '{}' of {}{} is given twice but is not repeated",
                        field.name,
                        desc.name(),
                        in_layer(ctx)
                    ),
                });
            } else {
                msg.set_field(&fd, value);
            }
        }
    }
    Ok(msg)
}

/// The `name` of a layer block (V0 layers nest it one level down), or a placeholder.
fn layer_name(m: &Message) -> String {
    m.string("name")
        .or_else(|| match m.first("layer").map(|f| &f.value) {
            Some(FieldValue::Message(inner)) => inner.string("name"),
            _ => None,
        })
        .unwrap_or_else(|| "(unnamed)".to_string())
}

fn in_layer(layer: Option<&str>) -> String {
    layer
        .map(|l| format!(" of layer '{l}'"))
        .unwrap_or_default()
}

fn decode_value(
    item: &FieldValue,
    fd: &FieldDescriptor,
    layer: Option<&str>,
) -> Result<Value, DecodeError> {
    match (fd.kind(), item) {
        (Kind::Message(md), FieldValue::Message(m)) => {
            Ok(Value::Message(decode_message(m, &md, layer)?))
        }
        (Kind::Message(md), FieldValue::Scalar(s)) => Err(DecodeError {
            offset: s.span.start,
            message: format!(
                "field '{}'{} is a message ({}): expected '{{'",
                fd.name(),
                in_layer(layer),
                md.name()
            ),
        }),
        (_, FieldValue::Scalar(s)) => scalar_value(s, fd).map_err(|message| DecodeError {
            offset: s.span.start,
            message: format!("field '{}'{}: {message}", fd.name(), in_layer(layer)),
        }),
        (_, FieldValue::Message(m)) => Err(DecodeError {
            offset: m.open.start,
            message: format!(
                "field '{}'{} takes a value, not a block",
                fd.name(),
                in_layer(layer)
            ),
        }),
        (_, FieldValue::List(_)) => Err(DecodeError {
            offset: 0,
            message: format!("nested list in field '{}'", fd.name()),
        }),
    }
}

fn scalar_value(s: &Scalar, fd: &FieldDescriptor) -> Result<Value, String> {
    let text = s.text.as_str();
    let is_str = s.kind == TokenKind::Str;
    let expect = |what: &str| format!("expected {what}, found '{text}'");
    match fd.kind() {
        Kind::String if is_str => Ok(Value::String(s.text.clone())),
        Kind::Bytes if is_str => Ok(Value::Bytes(s.text.clone().into_bytes().into())),
        Kind::String | Kind::Bytes => Err(expect("a quoted string")),
        _ if is_str => Err(format!(
            "expected a {} value, found the string \"{text}\"",
            kind_name(&fd.kind())
        )),
        Kind::Bool => match text {
            "true" | "True" | "t" | "1" => Ok(Value::Bool(true)),
            "false" | "False" | "f" | "0" => Ok(Value::Bool(false)),
            _ => Err(expect("true or false")),
        },
        Kind::Float => parse_float(text)
            .map(|v| Value::F32(v as f32))
            .ok_or_else(|| expect("a number")),
        Kind::Double => parse_float(text)
            .map(Value::F64)
            .ok_or_else(|| expect("a number")),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => int_in::<i32>(text).map(Value::I32),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => int_in::<i64>(text).map(Value::I64),
        Kind::Uint32 | Kind::Fixed32 => int_in::<u32>(text).map(Value::U32),
        Kind::Uint64 | Kind::Fixed64 => int_in::<u64>(text).map(Value::U64),
        Kind::Enum(ed) => {
            let by_name = ed.get_value_by_name(text).map(|v| v.number());
            let by_number = parse_int(text)
                .and_then(|n| i32::try_from(n).ok())
                .filter(|n| ed.get_value(*n).is_some());
            by_name.or(by_number).map(Value::EnumNumber).ok_or_else(|| {
                let names: Vec<String> = ed.values().map(|v| v.name().to_string()).collect();
                format!(
                    "unknown value '{text}' of enum {} (one of {})",
                    ed.name(),
                    names.join(", ")
                )
            })
        }
        Kind::Message(_) => Err(expect("a block")),
    }
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Bool => "boolean",
        Kind::Float | Kind::Double => "numeric",
        Kind::Enum(_) => "enum",
        _ => "integer",
    }
}

/// A float literal as protobuf's text format reads it: decimal or exponent forms, an optional `f`
/// suffix, `inf`/`infinity`/`nan` in any case, and integers (including hex).
pub fn parse_float(text: &str) -> Option<f64> {
    let (neg, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let lower = body.to_ascii_lowercase();
    let v = match lower.as_str() {
        "inf" | "infinity" => f64::INFINITY,
        "nan" => f64::NAN,
        _ if lower.starts_with("0x") => parse_int(body)? as f64,
        _ => {
            let digits = lower.strip_suffix('f').unwrap_or(&lower);
            if !digits.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
                return None;
            }
            digits.parse::<f64>().ok()?
        }
    };
    Some(if neg { -v } else { v })
}

/// An integer literal: decimal, `0x` hex or leading-zero octal, with an optional sign.
pub fn parse_int(text: &str) -> Option<i128> {
    let (neg, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let v = if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        i128::from_str_radix(hex, 16).ok()?
    } else if body.len() > 1 && body.starts_with('0') {
        i128::from_str_radix(&body[1..], 8).ok()?
    } else {
        body.parse::<i128>().ok()?
    };
    Some(if neg { -v } else { v })
}

fn int_in<T: TryFrom<i128>>(text: &str) -> Result<T, String> {
    let v = parse_int(text).ok_or_else(|| format!("expected an integer, found '{text}'"))?;
    T::try_from(v).map_err(|_| format!("{v} is out of range for {}", std::any::type_name::<T>()))
}

#[cfg(test)]
mod tests {
    use super::super::parser::parse;
    use super::*;

    fn net(src: &str) -> Result<caffe::NetParameter, DecodeError> {
        net_parameter(&parse(src).unwrap())
    }

    #[test]
    fn decodes_layers_enums_and_repeated_fields() {
        let n = net("name: 'x' layer { name: 'p' type: 'Pooling' pooling_param { pool: AVE kernel_size: 3 } \
                     top: 'a' top: 'b' } input_dim: [1, 3]")
        .unwrap();
        assert_eq!(n.name(), "x");
        let p = n.layer[0].pooling_param.as_ref().unwrap();
        assert_eq!(p.pool(), caffe::pooling_parameter::PoolMethod::Ave);
        assert_eq!(n.layer[0].top, vec!["a", "b"]);
        assert_eq!(n.input_dim, vec![1, 3]);
    }

    #[test]
    fn unknown_field_names_field_message_and_layer() {
        let e = net("layer { name: 'conv1' convolution_param { kernal_size: 3 } }").unwrap_err();
        assert_eq!(
            e.message,
            "unknown field 'kernal_size' in ConvolutionParameter of layer 'conv1'"
        );
    }

    #[test]
    fn bad_values() {
        assert!(
            net("layer { name: 'p' pooling_param { pool: MEDIAN } }")
                .unwrap_err()
                .message
                .contains("MAX, AVE")
        );
        assert!(
            net("layer { name: 'p' pooling_param { kernel_size: -1 } }")
                .unwrap_err()
                .message
                .contains("out of range")
        );
        assert!(
            net("name: 'a' name: 'b'")
                .unwrap_err()
                .message
                .contains("twice")
        );
        assert!(
            net("name: 3")
                .unwrap_err()
                .message
                .contains("quoted string")
        );
        assert!(net("layer { name: 'x' dropout_param { dropout_ratio: 0.5f } }").is_ok());
    }

    #[test]
    fn float_and_int_literals() {
        assert_eq!(parse_float("-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_float("1e-5"), Some(1e-5));
        assert_eq!(parse_float(".5"), Some(0.5));
        assert_eq!(parse_float("abc"), None);
        assert_eq!(parse_int("0x10"), Some(16));
        assert_eq!(parse_int("010"), Some(8));
    }
}
