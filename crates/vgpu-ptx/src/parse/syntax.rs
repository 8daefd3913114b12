//! Instruction syntax: a token cursor, and instructions and operands as
//! written (names unresolved).

use crate::ir::Sreg;
use crate::lexer::{parse_num, NumVal, Tok, Token};
use crate::PtxError;

pub(super) type R<T> = Result<T, PtxError>;

/// Operand as written, names unresolved.
#[derive(Debug, Clone)]
pub(super) enum ROp {
    Name(String),
    Not(String),
    Num { neg: bool, text: String },
    Sreg(Sreg),
    Addr(Box<ROp>, i64),
    Vec(Vec<ROp>),
    List(Vec<ROp>),
    Pair(Box<ROp>, Box<ROp>),
    Sink,
}

pub(super) struct RawInst {
    pub guard: Option<(String, bool)>,
    pub opcode: String,
    pub mods: Vec<String>,
    pub ops: Vec<ROp>,
    pub line: u32,
}

pub(super) struct P<'t> {
    pub t: &'t [Token],
    pub i: usize,
}

impl<'t> P<'t> {
    pub(super) fn peek(&self) -> Option<&'t Tok> {
        self.t.get(self.i).map(|t| &t.tok)
    }
    pub(super) fn peek_at(&self, k: usize) -> Option<&'t Tok> {
        self.t.get(self.i + k).map(|t| &t.tok)
    }
    pub(super) fn line(&self) -> u32 {
        self.t
            .get(self.i)
            .or_else(|| self.t.last())
            .map_or(0, |t| t.line)
    }
    pub(super) fn next(&mut self) -> R<&'t Tok> {
        let t = self
            .t
            .get(self.i)
            .ok_or_else(|| PtxError::new(self.line(), "unexpected end of input"))?;
        self.i += 1;
        Ok(&t.tok)
    }
    pub(super) fn err<T>(&self, msg: impl Into<String>) -> R<T> {
        Err(PtxError::new(self.line(), msg))
    }
    pub(super) fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Punct(c)) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    pub(super) fn expect(&mut self, c: char) -> R<()> {
        if self.eat(c) {
            Ok(())
        } else {
            self.err(format!("expected `{c}`, found {:?}", self.peek()))
        }
    }
    pub(super) fn ident(&mut self) -> R<String> {
        match self.next()? {
            Tok::Ident(s) => Ok(s.clone()),
            t => {
                self.i -= 1;
                self.err(format!("expected a name, found {t:?}"))
            }
        }
    }
    pub(super) fn number(&mut self) -> R<u64> {
        match self.next()? {
            Tok::Num(s) => match parse_num(s) {
                Some(NumVal::Int(v)) => Ok(v),
                _ => self.err(format!("bad integer `{s}`")),
            },
            t => {
                self.i -= 1;
                self.err(format!("expected a number, found {t:?}"))
            }
        }
    }
    pub(super) fn skip_line(&mut self) {
        let l = self.t[self.i - 1].line;
        while self.i < self.t.len() && self.t[self.i].line == l {
            self.i += 1;
        }
    }
    pub(super) fn skip_past(&mut self, c: char) -> R<()> {
        while self.next()? != &Tok::Punct(c) {}
        Ok(())
    }
    /// Skips a balanced `{ ... }` starting at the current `{`.
    pub(super) fn skip_braces(&mut self) -> R<(usize, usize)> {
        self.expect('{')?;
        let start = self.i;
        let mut depth = 1;
        loop {
            match self.next()? {
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok((start, self.i - 1));
                    }
                }
                _ => {}
            }
        }
    }
    /// `.dot` followed by `::word` parts (e.g. `.shared::cta`, `.L2::256B`).
    pub(super) fn dotted(&mut self, first: &str) -> String {
        let mut s = first.to_string();
        while self.peek() == Some(&Tok::Punct(':')) && self.peek_at(1) == Some(&Tok::Punct(':')) {
            self.i += 2;
            s.push_str("::");
            match self.peek() {
                Some(Tok::Ident(w) | Tok::Num(w)) => {
                    s.push_str(w);
                    self.i += 1;
                }
                _ => break,
            }
        }
        s
    }
}

pub(super) fn parse_operand(p: &mut P) -> R<ROp> {
    let op = parse_operand1(p)?;
    if p.eat('|') {
        let q = parse_operand1(p)?;
        return Ok(ROp::Pair(Box::new(op), Box::new(q)));
    }
    Ok(op)
}

pub(super) fn parse_operand1(p: &mut P) -> R<ROp> {
    match p.next()? {
        Tok::Punct('!') => Ok(ROp::Not(p.ident()?)),
        Tok::Punct('-') => match p.next()? {
            Tok::Num(s) => Ok(ROp::Num {
                neg: true,
                text: s.clone(),
            }),
            t => p.err(format!("expected a number after `-`, found {t:?}")),
        },
        Tok::Num(s) => Ok(ROp::Num {
            neg: false,
            text: s.clone(),
        }),
        Tok::Ident(s) if s == "_" => Ok(ROp::Sink),
        Tok::Ident(s) => {
            let comp = match p.peek() {
                Some(Tok::Dot(c)) if matches!(c.as_str(), "x" | "y" | "z" | "w") => {
                    p.i += 1;
                    Some(c.as_str())
                }
                _ => None,
            };
            if let Some(r) = crate::ops::sreg::parse(s, comp) {
                return Ok(ROp::Sreg(r));
            }
            if comp.is_some() {
                return p.err(format!("unknown special register `{s}`"));
            }
            Ok(ROp::Name(s.clone()))
        }
        Tok::Punct('[') => {
            let base = match p.peek() {
                Some(Tok::Punct('-')) | Some(Tok::Num(_)) => None,
                _ => Some(parse_operand1(p)?),
            };
            let mut off: i64 = 0;
            if let (Some(b), Some(Tok::Punct(','))) = (&base, p.peek()) {
                // Texture/surface operands `[tex, {coords}]`: only the
                // (unsupported) tex/suld family uses them; keep the base.
                let mut depth = 0;
                loop {
                    match p.next()? {
                        Tok::Punct('{') => depth += 1,
                        Tok::Punct('}') => depth -= 1,
                        Tok::Punct(']') if depth == 0 => break,
                        _ => {}
                    }
                }
                return Ok(ROp::Addr(Box::new(b.clone()), 0));
            }
            if base.is_none() || p.peek() != Some(&Tok::Punct(']')) {
                let mut neg = false;
                if base.is_some() {
                    if p.eat('-') {
                        neg = true;
                    } else {
                        p.expect('+')?;
                    }
                }
                if p.eat('-') {
                    neg = !neg;
                }
                let n = p.number()? as i64;
                off = if neg { n.wrapping_neg() } else { n };
            }
            p.expect(']')?;
            let base = base.unwrap_or(ROp::Num {
                neg: false,
                text: "0".into(),
            });
            Ok(ROp::Addr(Box::new(base), off))
        }
        Tok::Punct('{') => {
            let mut v = Vec::new();
            loop {
                v.push(parse_operand1(p)?);
                if p.eat('}') {
                    return Ok(ROp::Vec(v));
                }
                p.expect(',')?;
            }
        }
        Tok::Punct('(') => {
            let mut v = Vec::new();
            if p.eat(')') {
                return Ok(ROp::List(v));
            }
            loop {
                v.push(parse_operand1(p)?);
                if p.eat(')') {
                    return Ok(ROp::List(v));
                }
                p.expect(',')?;
            }
        }
        t => p.err(format!("unexpected {t:?} in operand")),
    }
}

pub(super) fn parse_inst(p: &mut P) -> R<RawInst> {
    let line = p.line();
    let mut guard = None;
    if p.eat('@') {
        let neg = p.eat('!');
        guard = Some((p.ident()?, neg));
    }
    let opcode = p.ident()?;
    let mut mods = Vec::new();
    while let Some(Tok::Dot(d)) = p.peek() {
        p.i += 1;
        let d = d.clone();
        mods.push(p.dotted(&d));
    }
    let mut ops = Vec::new();
    if !p.eat(';') {
        loop {
            ops.push(parse_operand(p)?);
            if p.eat(';') {
                break;
            }
            p.expect(',')?;
        }
    }
    Ok(RawInst {
        guard,
        opcode,
        mods,
        ops,
        line,
    })
}
