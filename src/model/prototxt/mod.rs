//! The protobuf text format as Caffe prototxt files use it: a span-keeping lexer, a syntax tree of fields
//! with the byte ranges they occupy, decoding into `caffe::NetParameter` by field name through the
//! descriptor of `caffe.proto`, and a Caffe-style printer.

pub mod decode;
pub mod lexer;
pub mod parser;
pub mod print;

pub use parser::{Field, FieldValue, Message, Scalar};

/// A byte range `[start, end)` in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }
}

/// A syntax error at a byte offset; the caller turns the offset into line:column for its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub offset: usize,
    pub message: String,
}

impl SyntaxError {
    pub fn new(offset: usize, message: String) -> Self {
        Self { offset, message }
    }
}

/// 1-based line and column (in characters) of a byte offset in `src`.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..]
        .trim_start_matches('\u{feff}')
        .chars()
        .count()
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters_and_crlf() {
        let src = "a: 1\r\nbé: x";
        assert_eq!(line_col(src, 0), (1, 1));
        let x = src.find('x').unwrap();
        assert_eq!(line_col(src, x), (2, 5));
    }
}
