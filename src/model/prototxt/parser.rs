//! The syntax tree of a text-format message: fields in file order, each with its name, value and the
//! byte ranges they occupy. `field: value`, `field { }`, `field: { }`, `field < >`, list syntax
//! `field: [a, b]` and repeated fields given one per line are all accepted, with optional `;`/`,`
//! separators, as protobuf's own text parser does.

use super::lexer::{Token, TokenKind, tokenize};
use super::{Span, SyntaxError};

/// A message body: its fields in the order written.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message {
    pub fields: Vec<Field>,
    /// The `{` token (empty at the top level).
    pub open: Span,
    /// The `}` token (for the top level, the end of the text).
    pub close: Span,
}

impl Message {
    /// Fields with this name, in file order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Field> + 'a {
        self.fields.iter().filter(move |f| f.name == name)
    }

    /// The first field with this name.
    pub fn first(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The decoded text of the first string field with this name (e.g. a layer's `name`).
    pub fn string(&self, name: &str) -> Option<String> {
        match &self.first(name)?.value {
            FieldValue::Scalar(s) if s.kind == TokenKind::Str => Some(s.text.clone()),
            _ => None,
        }
    }
}

/// One `name: value` or `name { ... }` occurrence.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub name_span: Span,
    pub value: FieldValue,
    /// From the name to the end of the value (a trailing `;` or `,` excluded).
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Scalar(Scalar),
    Message(Message),
    /// `[v1, v2]`: each element is a scalar or a message.
    List(Vec<FieldValue>),
}

/// A scalar literal: for strings `text` is the decoded value (adjacent strings concatenated),
/// otherwise the literal as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    pub kind: TokenKind,
    pub text: String,
    pub span: Span,
}

/// Parses a whole text-format message.
pub fn parse(src: &str) -> Result<Message, SyntaxError> {
    let tokens = tokenize(src)?;
    let mut p = Parser {
        src,
        tokens: &tokens,
        pos: 0,
    };
    let fields = p.fields(None)?;
    Ok(Message {
        fields,
        open: Span::default(),
        close: Span::new(src.len(), src.len()),
    })
}

struct Parser<'a> {
    src: &'a str,
    tokens: &'a [Token],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<Token> {
        self.tokens.get(self.pos).copied()
    }

    fn text(&self, t: Token) -> &str {
        &self.src[t.span.start..t.span.end]
    }

    fn end_offset(&self) -> usize {
        self.src.len()
    }

    fn error(&self, at: Option<Token>, expected: &str) -> SyntaxError {
        match at {
            Some(t) => SyntaxError::new(
                t.span.start,
                format!("expected {expected}, found '{}'", self.text(t)),
            ),
            None => SyntaxError::new(
                self.end_offset(),
                format!("expected {expected}, found the end of the file"),
            ),
        }
    }

    /// Fields until the closing token (`close` is None at the top level, which ends at end of input).
    fn fields(&mut self, open: Option<Token>) -> Result<Vec<Field>, SyntaxError> {
        let mut fields = Vec::new();
        loop {
            match self.peek() {
                None if open.is_none() => return Ok(fields),
                None => {
                    let at = open.map_or(0, |t| t.span.start);
                    return Err(SyntaxError::new(
                        self.end_offset(),
                        format!(
                            "the file ends inside the block opened at byte {at}: a '}}' is missing"
                        ),
                    ));
                }
                Some(t) if t.kind == TokenKind::Close => {
                    if open.is_some() {
                        return Ok(fields);
                    }
                    return Err(SyntaxError::new(
                        t.span.start,
                        "'}' without a matching '{'".to_string(),
                    ));
                }
                Some(t) if t.kind == TokenKind::Ident => {
                    fields.push(self.field()?);
                    if let Some(sep) = self.peek()
                        && matches!(sep.kind, TokenKind::Semicolon | TokenKind::Comma)
                    {
                        self.pos += 1;
                    }
                }
                other => return Err(self.error(other, "a field name")),
            }
        }
    }

    fn field(&mut self) -> Result<Field, SyntaxError> {
        let name_tok = self.tokens[self.pos];
        self.pos += 1;
        let name = self.text(name_tok).to_string();
        if name.starts_with('-') || name.starts_with('+') {
            return Err(SyntaxError::new(
                name_tok.span.start,
                format!("'{name}' is not a field name"),
            ));
        }
        let colon = self.peek().is_some_and(|t| t.kind == TokenKind::Colon);
        if colon {
            self.pos += 1;
        }
        let value = match self.peek() {
            Some(t) if t.kind == TokenKind::Open => self.message()?,
            Some(t) if t.kind == TokenKind::LBracket => self.list()?,
            Some(_) if !colon => {
                return Err(self.error(self.peek(), &format!("':' or '{{' after '{name}'")));
            }
            _ => FieldValue::Scalar(self.scalar()?),
        };
        let end = self.tokens[self.pos - 1].span.end;
        Ok(Field {
            name,
            name_span: name_tok.span,
            value,
            span: Span::new(name_tok.span.start, end),
        })
    }

    fn message(&mut self) -> Result<FieldValue, SyntaxError> {
        let open = self.tokens[self.pos];
        self.pos += 1;
        let fields = self.fields(Some(open))?;
        let close = self.tokens[self.pos];
        let (o, c) = (self.text(open), self.text(close));
        if (o == "{") != (c == "}") {
            return Err(SyntaxError::new(
                close.span.start,
                format!("'{o}' closed by '{c}'"),
            ));
        }
        self.pos += 1;
        Ok(FieldValue::Message(Message {
            fields,
            open: open.span,
            close: close.span,
        }))
    }

    fn list(&mut self) -> Result<FieldValue, SyntaxError> {
        self.pos += 1;
        let mut items = Vec::new();
        if self.peek().is_some_and(|t| t.kind == TokenKind::RBracket) {
            self.pos += 1;
            return Ok(FieldValue::List(items));
        }
        loop {
            let item = match self.peek() {
                Some(t) if t.kind == TokenKind::Open => self.message()?,
                _ => FieldValue::Scalar(self.scalar()?),
            };
            items.push(item);
            match self.peek() {
                Some(t) if t.kind == TokenKind::Comma => self.pos += 1,
                Some(t) if t.kind == TokenKind::RBracket => {
                    self.pos += 1;
                    return Ok(FieldValue::List(items));
                }
                other => return Err(self.error(other, "',' or ']' in a list")),
            }
        }
    }

    fn scalar(&mut self) -> Result<Scalar, SyntaxError> {
        let t = match self.peek() {
            Some(t)
                if matches!(
                    t.kind,
                    TokenKind::Ident | TokenKind::Number | TokenKind::Str
                ) =>
            {
                t
            }
            other => return Err(self.error(other, "a value")),
        };
        self.pos += 1;
        if t.kind != TokenKind::Str {
            return Ok(Scalar {
                kind: t.kind,
                text: self.text(t).to_string(),
                span: t.span,
            });
        }
        // Adjacent string literals are one value, as in C.
        let mut bytes = Vec::new();
        let mut end = t.span.end;
        let mut tok = t;
        loop {
            let part = super::lexer::unescape(self.text(tok))
                .map_err(|m| SyntaxError::new(tok.span.start, m))?;
            bytes.extend(part);
            end = end.max(tok.span.end);
            match self.peek() {
                Some(n) if n.kind == TokenKind::Str => {
                    tok = n;
                    self.pos += 1;
                }
                _ => break,
            }
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| SyntaxError::new(t.span.start, "string is not valid UTF-8".to_string()))?;
        Ok(Scalar {
            kind: TokenKind::Str,
            text,
            span: Span::new(t.span.start, end),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_field_forms() {
        let src = "name: \"n\"\nlayer { top: 'a' top: \"b\" }\nlayer: { x: [1, 2] }\nl < y: 3 >;";
        let m = parse(src).unwrap();
        assert_eq!(m.fields.len(), 4);
        assert_eq!(m.string("name").as_deref(), Some("n"));
        let FieldValue::Message(l) = &m.fields[1].value else {
            panic!()
        };
        assert_eq!(l.all("top").count(), 2);
        assert_eq!(
            &src[m.fields[1].span.start..m.fields[1].span.end],
            "layer { top: 'a' top: \"b\" }"
        );
        let FieldValue::Message(l2) = &m.fields[2].value else {
            panic!()
        };
        assert!(matches!(&l2.fields[0].value, FieldValue::List(v) if v.len() == 2));
    }

    #[test]
    fn errors_point_at_the_offending_token() {
        let e = parse("a: 1\nb 2").unwrap_err();
        assert_eq!(e.offset, 7);
        assert!(e.message.contains("':' or '{'"), "{}", e.message);
        assert!(
            parse("a { b: 1")
                .unwrap_err()
                .message
                .contains("'}' is missing")
        );
        assert!(parse("}").is_err());
        assert!(parse("a { b: 1 >").is_err());
    }
}
