//! Tokenizer for PTX text.

use crate::PtxError;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// Identifier, register (`%r1`), label (`$L__BB0_1`), or keyword.
    Ident(String),
    /// `.name` (directive, type or modifier), without the dot.
    Dot(String),
    /// Numeric literal as written (sign is a separate `Punct('-')`).
    Num(String),
    Str(String),
    Punct(char),
}

#[derive(Debug, Clone)]
pub struct Token {
    pub tok: Tok,
    pub line: u32,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == '$' || c == '%'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '$'
}

pub fn lex(src: &str) -> Result<Vec<Token>, PtxError> {
    let b: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut line = 1u32;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        if c == '\n' {
            line += 1;
            i += 1;
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '/' && b.get(i + 1) == Some(&'/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '/' && b.get(i + 1) == Some(&'*') {
            i += 2;
            while i < b.len() && !(b[i] == '*' && b.get(i + 1) == Some(&'/')) {
                if b[i] == '\n' {
                    line += 1;
                }
                i += 1;
            }
            i += 2;
            continue;
        }
        let start = i;
        if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\n' {
                    line += 1;
                }
                i += 1;
            }
            i += 1;
            let s: String = b[start + 1..(i - 1).min(b.len())].iter().collect();
            out.push(Token {
                tok: Tok::Str(s),
                line,
            });
            continue;
        }
        // `.name`, and modifiers that start with a digit right after an
        // opcode (`tex.1d`, `.2d`), which a number would otherwise swallow.
        let glued = i > 0 && is_ident_char(b[i - 1]);
        if c == '.'
            && b.get(i + 1)
                .is_some_and(|&n| is_ident_start(n) || (glued && n.is_ascii_digit()))
        {
            i += 1;
            while i < b.len() && is_ident_char(b[i]) {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Dot(b[start + 1..i].iter().collect()),
                line,
            });
            continue;
        }
        if is_ident_start(c) {
            i += 1;
            while i < b.len() && is_ident_char(b[i]) {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Ident(b[start..i].iter().collect()),
                line,
            });
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && b.get(i + 1).is_some_and(|n| n.is_ascii_digit())) {
            i += 1;
            let hexish = c == '0' && matches!(b.get(i), Some('x' | 'X' | 'f' | 'F' | 'd' | 'D'));
            while i < b.len() {
                let n = b[i];
                let exp_sign = !hexish && (n == '+' || n == '-') && matches!(b[i - 1], 'e' | 'E');
                if n.is_ascii_alphanumeric() || n == '.' || exp_sign {
                    i += 1;
                } else {
                    break;
                }
            }
            out.push(Token {
                tok: Tok::Num(b[start..i].iter().collect()),
                line,
            });
            continue;
        }
        if "{}()[];:,+-!@<>=|".contains(c) {
            out.push(Token {
                tok: Tok::Punct(c),
                line,
            });
            i += 1;
            continue;
        }
        return Err(PtxError::new(line, format!("unexpected character `{c}`")));
    }
    Ok(out)
}

/// Value of a numeric literal: integers (decimal, hex, octal, binary, with an
/// optional `U` suffix) as 64-bit patterns, floats as `f64`.
pub enum NumVal {
    Int(u64),
    F32Bits(u32),
    F64Bits(u64),
    Float(f64),
}

pub fn parse_num(s: &str) -> Option<NumVal> {
    let t = s.trim_end_matches(['U', 'u']);
    if let Some(h) = t.strip_prefix("0f").or_else(|| t.strip_prefix("0F")) {
        return u32::from_str_radix(h, 16).ok().map(NumVal::F32Bits);
    }
    if let Some(h) = t.strip_prefix("0d").or_else(|| t.strip_prefix("0D")) {
        return u64::from_str_radix(h, 16).ok().map(NumVal::F64Bits);
    }
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u64::from_str_radix(h, 16).ok().map(NumVal::Int);
    }
    if let Some(h) = t.strip_prefix("0b").or_else(|| t.strip_prefix("0B")) {
        return u64::from_str_radix(h, 2).ok().map(NumVal::Int);
    }
    if t.contains(['.', 'e', 'E']) {
        return t.parse::<f64>().ok().map(NumVal::Float);
    }
    if t.len() > 1 && t.starts_with('0') {
        return u64::from_str_radix(&t[1..], 8).ok().map(NumVal::Int);
    }
    t.parse::<u64>().ok().map(NumVal::Int)
}
