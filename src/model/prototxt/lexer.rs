//! Tokens of the protobuf text format with their byte spans, as real Caffe prototxt files write it:
//! `#` comments, single- or double-quoted strings with escapes, signed numbers, `{ } < > [ ] : , ;`.
//! A UTF-8 byte-order mark at the start is skipped. Spans are kept because the exporter edits the
//! user's text in place.

use super::{Span, SyntaxError};

/// What a token is; its text is `source[span]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Field names, enum values, `true`/`false`, `inf`, `nan` (an optional leading `-` included).
    Ident,
    /// An integer or floating-point literal (an optional leading `-` included).
    Number,
    /// A quoted string; the span includes the quotes.
    Str,
    Colon,
    Comma,
    Semicolon,
    /// `{` or `<`.
    Open,
    /// `}` or `>`.
    Close,
    LBracket,
    RBracket,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub span: Span,
}

/// Splits `src` into tokens, skipping white space and comments.
pub fn tokenize(src: &str) -> Result<Vec<Token>, SyntaxError> {
    let bytes = src.as_bytes();
    let mut pos = if src.starts_with('\u{feff}') { 3 } else { 0 };
    let mut out = Vec::new();
    while pos < bytes.len() {
        let c = bytes[pos];
        let start = pos;
        let single = |kind| Token {
            kind,
            span: Span::new(start, start + 1),
        };
        match c {
            b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c => pos += 1,
            b'#' => {
                while pos < bytes.len() && bytes[pos] != b'\n' {
                    pos += 1;
                }
            }
            b':' => push(&mut out, &mut pos, single(TokenKind::Colon)),
            b',' => push(&mut out, &mut pos, single(TokenKind::Comma)),
            b';' => push(&mut out, &mut pos, single(TokenKind::Semicolon)),
            b'{' | b'<' => push(&mut out, &mut pos, single(TokenKind::Open)),
            b'}' | b'>' => push(&mut out, &mut pos, single(TokenKind::Close)),
            b'[' => push(&mut out, &mut pos, single(TokenKind::LBracket)),
            b']' => push(&mut out, &mut pos, single(TokenKind::RBracket)),
            b'"' | b'\'' => {
                pos = string_end(bytes, pos)?;
                out.push(Token {
                    kind: TokenKind::Str,
                    span: Span::new(start, pos),
                });
            }
            _ => {
                let signed = c == b'-' || c == b'+';
                let body = if signed { pos + 1 } else { pos };
                let first = bytes.get(body).copied().unwrap_or(b' ');
                let kind = if first.is_ascii_digit() || first == b'.' {
                    TokenKind::Number
                } else if first.is_ascii_alphabetic() || first == b'_' {
                    TokenKind::Ident
                } else {
                    return Err(SyntaxError::new(start, unexpected_char(src, start)));
                };
                pos = body;
                while pos < bytes.len() && is_word_byte(bytes[pos], bytes.get(pos.wrapping_sub(1)))
                {
                    pos += 1;
                }
                out.push(Token {
                    kind,
                    span: Span::new(start, pos),
                });
            }
        }
    }
    Ok(out)
}

fn push(out: &mut Vec<Token>, pos: &mut usize, token: Token) {
    out.push(token);
    *pos = token.span.end;
}

/// Letters, digits, `_`, `.`, and a sign right after an exponent `e`/`E` (as in `1e-5`).
fn is_word_byte(b: u8, prev: Option<&u8>) -> bool {
    b.is_ascii_alphanumeric()
        || b == b'_'
        || b == b'.'
        || ((b == b'-' || b == b'+') && matches!(prev, Some(b'e' | b'E')))
}

/// Index just past the closing quote of the string starting at `start`.
fn string_end(bytes: &[u8], start: usize) -> Result<usize, SyntaxError> {
    let quote = bytes[start];
    let mut pos = start + 1;
    while pos < bytes.len() {
        match bytes[pos] {
            b'\\' => pos += 2,
            b'\n' => break,
            b if b == quote => return Ok(pos + 1),
            _ => pos += 1,
        }
    }
    Err(SyntaxError::new(
        start,
        "string is not closed on its line".to_string(),
    ))
}

fn unexpected_char(src: &str, at: usize) -> String {
    match src[at..].chars().next() {
        Some(c) if c.is_control() => format!("unexpected control character U+{:04X}", c as u32),
        Some(c) => format!("unexpected character '{c}'"),
        None => "unexpected end of file".to_string(),
    }
}

/// The value of a string token (quotes removed, escapes resolved), as protobuf's text format reads it.
pub fn unescape(raw: &str) -> Result<Vec<u8>, String> {
    let inner = raw.get(1..raw.len().saturating_sub(1)).unwrap_or("");
    let b = inner.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let e = *b.get(i + 1).ok_or("string ends with a lone backslash")?;
        i += 2;
        match e {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'v' => out.push(0x0b),
            b'\\' | b'\'' | b'"' | b'?' => out.push(e),
            b'x' => {
                let digits = b[i..]
                    .iter()
                    .take(2)
                    .take_while(|d| d.is_ascii_hexdigit())
                    .count();
                let text = std::str::from_utf8(&b[i..i + digits]).unwrap_or("");
                out.push(u8::from_str_radix(text, 16).map_err(|_| "\\x needs a hex digit")?);
                i += digits;
            }
            b'0'..=b'7' => {
                let digits = 1 + b[i..]
                    .iter()
                    .take(2)
                    .take_while(|d| (b'0'..=b'7').contains(d))
                    .count();
                let text = std::str::from_utf8(&b[i - 1..i - 1 + digits]).unwrap_or("");
                let v = u32::from_str_radix(text, 8).map_err(|_| "bad octal escape")?;
                out.push(u8::try_from(v).map_err(|_| "octal escape above \\377")?);
                i += digits - 1;
            }
            other => return Err(format!("unknown escape '\\{}'", other as char)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<TokenKind> {
        tokenize(src).unwrap().iter().map(|t| t.kind).collect()
    }

    #[test]
    fn signed_numbers_exponents_and_comments() {
        use TokenKind::*;
        assert_eq!(
            kinds("a: -1e-5 # c\nb { x: 'y' }"),
            vec![Ident, Colon, Number, Ident, Open, Ident, Colon, Str, Close]
        );
        let t = tokenize("v: 1.5e+3").unwrap();
        assert_eq!(t[2].span, Span::new(3, 9));
    }

    #[test]
    fn bom_is_skipped_and_unclosed_string_fails() {
        assert_eq!(kinds("\u{feff}a: 1").len(), 3);
        assert!(tokenize("a: \"open\nb: 1").is_err());
    }

    #[test]
    fn escapes() {
        assert_eq!(unescape(r#""a\"b\n\101\x41""#).unwrap(), b"a\"b\nAA");
        assert!(unescape(r#""\q""#).is_err());
    }
}
