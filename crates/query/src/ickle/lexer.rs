//! Tokenizer for the Ickle subset. Positions are byte offsets into the query string, reported
//! to clients as 1-based columns.

use super::IckleError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// An identifier or keyword (keywords are recognised by the parser, case-insensitively).
    Ident(String),
    /// `:name`
    Param(String),
    Str(String),
    Int(i128),
    Float(f64),
    LParen,
    RParen,
    Comma,
    Dot,
    Star,
    Minus,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    AndAnd,
    OrOr,
    Bang,
    Eof,
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub tok: Tok,
    pub pos: usize,
}

pub(crate) fn tokenize(text: &str) -> Result<Vec<Token>, IckleError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let simple = |tok| Token { tok, pos: start };
        match c {
            b'(' => {
                out.push(simple(Tok::LParen));
                i += 1;
            }
            b')' => {
                out.push(simple(Tok::RParen));
                i += 1;
            }
            b',' => {
                out.push(simple(Tok::Comma));
                i += 1;
            }
            b'.' if !bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                out.push(simple(Tok::Dot));
                i += 1;
            }
            b'*' => {
                out.push(simple(Tok::Star));
                i += 1;
            }
            b'-' => {
                out.push(simple(Tok::Minus));
                i += 1;
            }
            b'=' => {
                // `==` is accepted by Ickle as a synonym of `=`.
                i += if bytes.get(i + 1) == Some(&b'=') {
                    2
                } else {
                    1
                };
                out.push(simple(Tok::Eq));
            }
            b'!' => {
                if bytes.get(i + 1) == Some(&b'=') {
                    out.push(simple(Tok::Ne));
                    i += 2;
                } else {
                    out.push(simple(Tok::Bang));
                    i += 1;
                }
            }
            b'<' => match bytes.get(i + 1) {
                Some(b'=') => {
                    out.push(simple(Tok::Le));
                    i += 2;
                }
                Some(b'>') => {
                    out.push(simple(Tok::Ne));
                    i += 2;
                }
                _ => {
                    out.push(simple(Tok::Lt));
                    i += 1;
                }
            },
            b'>' => {
                if bytes.get(i + 1) == Some(&b'=') {
                    out.push(simple(Tok::Ge));
                    i += 2;
                } else {
                    out.push(simple(Tok::Gt));
                    i += 1;
                }
            }
            b'&' if bytes.get(i + 1) == Some(&b'&') => {
                out.push(simple(Tok::AndAnd));
                i += 2;
            }
            b'|' if bytes.get(i + 1) == Some(&b'|') => {
                out.push(simple(Tok::OrOr));
                i += 2;
            }
            b'\'' | b'"' => {
                let (s, next) = string_literal(text, i)?;
                out.push(simple(Tok::Str(s)));
                i = next;
            }
            b':' => {
                let name_start = i + 1;
                let mut j = name_start;
                while j < bytes.len() && is_ident_byte(bytes[j]) {
                    j += 1;
                }
                if j == name_start || bytes[name_start].is_ascii_digit() {
                    // Not `:name`: Ickle's full-text operator (`e.title : 'term'`), which needs
                    // an analyzed index; say so rather than report a bad parameter.
                    return Err(IckleError::unsupported(
                        start,
                        "full-text queries (field : term) are not supported",
                    ));
                }
                out.push(simple(Tok::Param(text[name_start..j].to_string())));
                i = j;
            }
            c if c.is_ascii_digit() || c == b'.' => {
                let (tok, next) = number(text, i)?;
                out.push(simple(tok));
                i = next;
            }
            c if is_ident_start(c) => {
                let mut j = i + 1;
                while j < bytes.len() && is_ident_byte(bytes[j]) {
                    j += 1;
                }
                out.push(simple(Tok::Ident(text[i..j].to_string())));
                i = j;
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or('?');
                return Err(IckleError::syntax(
                    start,
                    format!("unexpected character '{ch}'"),
                ));
            }
        }
    }
    out.push(Token {
        tok: Tok::Eof,
        pos: text.len(),
    });
    Ok(out)
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b'$'
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$'
}

/// A quoted string; the quote character is doubled to escape it (`'it''s'`), as in JPQL.
fn string_literal(text: &str, start: usize) -> Result<(String, usize), IckleError> {
    let bytes = text.as_bytes();
    let quote = bytes[start];
    let mut out = String::new();
    let mut i = start + 1;
    let mut run = i;
    loop {
        match bytes.get(i) {
            None => return Err(IckleError::syntax(start, "unterminated string literal")),
            Some(&b) if b == quote => {
                out.push_str(&text[run..i]);
                if bytes.get(i + 1) == Some(&quote) {
                    out.push(quote as char);
                    i += 2;
                    run = i;
                } else {
                    return Ok((out, i + 1));
                }
            }
            Some(_) => i += 1,
        }
    }
}

fn number(text: &str, start: usize) -> Result<(Tok, usize), IckleError> {
    let bytes = text.as_bytes();
    let mut i = start;
    let mut is_float = false;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    if bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
        is_float = true;
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(bytes.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if bytes.get(j).is_some_and(u8::is_ascii_digit) {
            is_float = true;
            i = j;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    // Java-style type suffixes (1L, 2.5d, 3f) are part of the literal.
    let digits = &text[start..i];
    if matches!(bytes.get(i), Some(b'l' | b'L')) && !is_float {
        i += 1;
    } else if matches!(bytes.get(i), Some(b'd' | b'D' | b'f' | b'F')) {
        is_float = true;
        i += 1;
    }
    if bytes.get(i).copied().is_some_and(is_ident_byte) {
        return Err(IckleError::syntax(
            start,
            format!("malformed number '{}'", &text[start..=i]),
        ));
    }
    let tok =
        if is_float {
            Tok::Float(
                digits.parse().map_err(|_| {
                    IckleError::syntax(start, format!("malformed number '{digits}'"))
                })?,
            )
        } else {
            Tok::Int(digits.parse().map_err(|_| {
                IckleError::syntax(start, format!("number '{digits}' is out of range"))
            })?)
        };
    Ok((tok, i))
}
