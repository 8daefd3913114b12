//! Parameter layouts from PTX `.entry` signatures.
//!
//! Only the signatures are read: the text is split into tokens (comments
//! and string literals dropped), and at brace depth 0 every `.entry name (
//! params )` that is followed by its body or a `;` is read; kernel bodies
//! are skipped by counting braces. Each parameter is
//!
//! ```text
//! .param [.align A] [.v2|.v4|.v8] .type [.ptr [.space] [.align P]] name [ '[' N ']' ]*
//! ```
//!
//! Its size is the type's width × the vector length × every array
//! dimension; its alignment is `A` when given, else the width × the vector
//! length; it starts at the previous parameter's end rounded up to that
//! alignment (PTX ISA, "Kernel Function Parameters"; docs/call-path.md "Kernel parameters").
//! The `.align P` after `.ptr` is the pointee's alignment, not the
//! parameter's. Structs by value are `.align A .b8 name[N]`.
//!
//! The reader works on bytes and never panics: anything it cannot follow
//! is an error for that kernel (or for the text, when no kernel name was
//! read), never a guess.

use super::{KernelLayouts, Layout, LayoutError};

/// The layouts of every `.entry` of PTX text. The text ends at its first
/// NUL, if any.
pub fn ptx_layouts(text: &[u8]) -> Result<KernelLayouts, LayoutError> {
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    let mut toks = Lexer::new(&text[..end]).peekable();
    let mut out = KernelLayouts::new();
    let mut depth = 0usize;
    while let Some(t) = toks.next() {
        match t.tok {
            Tok::Punct(b'{') => depth += 1,
            Tok::Punct(b'}') => depth = depth.saturating_sub(1),
            Tok::Word(b".entry") if depth == 0 => {
                let name = match toks.next() {
                    Some(Token {
                        tok: Tok::Word(w), ..
                    }) if is_name(w) => String::from_utf8_lossy(w).into_owned(),
                    other => {
                        return Err(LayoutError::Ptx {
                            line: other.map_or(t.line, |o| o.line),
                            what: "no kernel name after .entry",
                        })
                    }
                };
                let layout = if toks.peek().map(|n| n.tok) == Some(Tok::Punct(b'(')) {
                    toks.next();
                    params(&mut toks, t.line)
                } else {
                    // `.entry name { ... }`: no parameter list at all.
                    Ok(Vec::new())
                };
                // Only a signature followed by its body (or a `;`) is
                // whole: text cut short after a name or a parameter must
                // not read as a kernel with fewer parameters.
                let layout = layout.and_then(|l| body(&mut toks, &mut depth, t.line).map(|()| l));
                match out.get(&name) {
                    // A declaration and a definition of the same kernel.
                    Some(prev) if prev != &layout => {
                        out.insert(name, Err(LayoutError::Conflicting));
                    }
                    Some(_) => {}
                    None => {
                        out.insert(name, layout);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// What follows a signature up to its body's `{` (counted in `depth`) or a
/// declaration's `;`: performance directives, skipped.
fn body(
    toks: &mut std::iter::Peekable<Lexer<'_>>,
    depth: &mut usize,
    mut line: u32,
) -> Result<(), LayoutError> {
    let err = |line, what| LayoutError::Ptx { line, what };
    loop {
        match toks.peek().map(|t| (t.tok, t.line)) {
            None => return Err(err(line, "the text ends before the kernel's body")),
            Some((Tok::Word(b".entry"), line)) => {
                return Err(err(line, "another .entry before the kernel's body"))
            }
            Some((tok, l)) => {
                line = l;
                toks.next();
                match tok {
                    Tok::Punct(b'{') => {
                        *depth += 1;
                        return Ok(());
                    }
                    Tok::Punct(b';') => return Ok(()),
                    _ => {}
                }
            }
        }
    }
}

/// A parameter list after its `(`, through its `)`. On an error the rest of
/// the list is left to the caller's scan, which only looks for braces and
/// `.entry`.
fn params<'a>(toks: &mut std::iter::Peekable<Lexer<'a>>, line: u32) -> Result<Layout, LayoutError> {
    let mut layout = Vec::new();
    let mut end = 0u32;
    let mut line = line;
    let err = |line, what| LayoutError::Ptx { line, what };
    loop {
        let Some(t) = toks.next() else {
            return Err(err(line, "the text ends inside a parameter list"));
        };
        line = t.line;
        match t.tok {
            Tok::Punct(b')') if layout.is_empty() => return Ok(layout),
            Tok::Word(b".param") => {}
            _ => return Err(err(line, "a kernel parameter that is not .param")),
        }
        let (size, align) = param(toks, &mut line)?;
        let offset = end
            .checked_next_multiple_of(align)
            .ok_or(err(line, "parameters past 4 GiB"))?;
        end = offset
            .checked_add(size)
            .ok_or(err(line, "parameters past 4 GiB"))?;
        layout.push((offset, size));
        match toks.next().map(|t| t.tok) {
            Some(Tok::Punct(b',')) => {}
            Some(Tok::Punct(b')')) => return Ok(layout),
            _ => return Err(err(line, "expected ',' or ')' after a parameter")),
        }
    }
}

/// One parameter after its `.param`: (size, alignment).
fn param(
    toks: &mut std::iter::Peekable<Lexer<'_>>,
    line: &mut u32,
) -> Result<(u32, u32), LayoutError> {
    let mut align = None;
    let mut vector = 1u32;
    let mut width = None;
    let mut pointer = false;
    let err = |line, what| LayoutError::Ptx { line, what };
    // Qualifiers up to the name.
    let name_line = loop {
        let Some(t) = toks.next() else {
            return Err(err(*line, "the text ends inside a parameter"));
        };
        *line = t.line;
        let Tok::Word(w) = t.tok else {
            return Err(err(t.line, "unexpected punctuation in a parameter"));
        };
        if is_name(w) {
            break t.line;
        }
        match w {
            b".align" => {
                let n = number(toks.next().map(|t| t.tok))
                    .filter(|n| n.is_power_of_two())
                    .ok_or(err(t.line, ".align without a power of two"))?;
                // After .ptr it is the pointee's alignment.
                if !pointer {
                    if align.is_some() {
                        return Err(err(t.line, "two .align for one parameter"));
                    }
                    align = Some(n);
                }
            }
            b".v2" | b".v4" | b".v8" => {
                if vector != 1 {
                    return Err(err(t.line, "two vector sizes for one parameter"));
                }
                vector = u32::from(w[2] - b'0');
            }
            b".ptr" => pointer = true,
            // The pointee's state space.
            b".global" | b".const" | b".shared" | b".local" if pointer => {}
            _ => {
                let Some(wd) = type_width(w) else {
                    return Err(err(t.line, "unknown parameter type or qualifier"));
                };
                if width.is_some() {
                    return Err(err(t.line, "two types for one parameter"));
                }
                width = Some(wd);
            }
        }
    };
    let width = width.ok_or(err(name_line, "a parameter without a type"))?;
    let mut size = width * vector;
    let align = align.unwrap_or(size);
    // Array dimensions.
    while toks.peek().map(|t| t.tok) == Some(Tok::Punct(b'[')) {
        toks.next();
        let n = number(toks.next().map(|t| t.tok))
            .filter(|&n| n > 0)
            .ok_or(err(name_line, "an array parameter without a positive size"))?;
        if toks.next().map(|t| t.tok) != Some(Tok::Punct(b']')) {
            return Err(err(name_line, "an array size without ']'"));
        }
        size = size
            .checked_mul(n)
            .ok_or(err(name_line, "a parameter past 4 GiB"))?;
    }
    Ok((size, align))
}

/// Bytes of a scalar parameter type; `None` for anything else (`.pred`,
/// `.texref` and the other opaque types are not sizes the reader knows).
fn type_width(t: &[u8]) -> Option<u32> {
    Some(match t {
        b".b8" | b".s8" | b".u8" => 1,
        b".b16" | b".s16" | b".u16" | b".f16" | b".bf16" => 2,
        b".b32" | b".s32" | b".u32" | b".f32" | b".f16x2" | b".bf16x2" => 4,
        b".b64" | b".s64" | b".u64" | b".f64" => 8,
        b".b128" => 16,
        _ => return None,
    })
}

/// PTX identifiers: a letter followed by letters, digits, `_` and `$`, or
/// `_`, `$` or `%` followed by at least one of those.
fn is_name(w: &[u8]) -> bool {
    let more = |r: &[u8]| {
        r.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'$')
    };
    match w {
        [c, rest @ ..] if c.is_ascii_alphabetic() => more(rest),
        [b'_' | b'$' | b'%', rest @ ..] if !rest.is_empty() => more(rest),
        _ => false,
    }
}

/// A decimal or `0x` hexadecimal integer literal, with PTX's optional `U`.
fn number(t: Option<Tok<'_>>) -> Option<u32> {
    let Some(Tok::Word(w)) = t else {
        return None;
    };
    let w = w.strip_suffix(b"U").unwrap_or(w);
    let s = std::str::from_utf8(w).ok()?;
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None if s.bytes().all(|c| c.is_ascii_digit()) => s.parse().ok(),
        None => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    /// A directive or type (`.param`, from its dot), an identifier or a
    /// number.
    Word(&'a [u8]),
    /// Any other single byte that is not whitespace.
    Punct(u8),
}

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    tok: Tok<'a>,
    line: u32,
}

/// PTX tokens without comments and string literals. A `.` always starts a
/// new word, so `.ptr.global.align` is three.
struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
    line: u32,
}

impl<'a> Lexer<'a> {
    fn new(s: &'a [u8]) -> Self {
        Lexer { s, i: 0, line: 1 }
    }

    /// Skips to just past `end` (or to the end of the text), counting the
    /// lines skipped, `end`'s own included.
    fn skip_past(&mut self, end: &[u8]) {
        let rest = &self.s[self.i..];
        let skip = rest
            .windows(end.len())
            .position(|w| w == end)
            .map_or(rest.len(), |p| p + end.len());
        let lines = rest[..skip].iter().filter(|&&b| b == b'\n').count();
        self.line = self
            .line
            .saturating_add(u32::try_from(lines).unwrap_or(u32::MAX));
        self.i += skip;
    }
}

fn word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'$' | b'%')
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        loop {
            let c = *self.s.get(self.i)?;
            let rest = &self.s[self.i..];
            if c == b'\n' {
                self.line = self.line.saturating_add(1);
                self.i += 1;
            } else if c.is_ascii_whitespace() {
                self.i += 1;
            } else if rest.starts_with(b"//") {
                self.skip_past(b"\n");
            } else if rest.starts_with(b"/*") {
                self.i += 2;
                self.skip_past(b"*/");
            } else if c == b'"' {
                self.i += 1;
                while let Some(&b) = self.s.get(self.i) {
                    self.i += 1;
                    match b {
                        b'"' => break,
                        b'\\' => self.i += 1,
                        b'\n' => self.line = self.line.saturating_add(1),
                        _ => {}
                    }
                }
                self.i = self.i.min(self.s.len());
            } else {
                let line = self.line;
                let start = self.i;
                if c == b'.' || word_byte(c) {
                    self.i += 1;
                    while self.s.get(self.i).is_some_and(|&b| word_byte(b)) {
                        self.i += 1;
                    }
                    return Some(Token {
                        tok: Tok::Word(&self.s[start..self.i]),
                        line,
                    });
                }
                self.i += 1;
                return Some(Token {
                    tok: Tok::Punct(c),
                    line,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(ptx: &str) -> Result<Layout, LayoutError> {
        let mut all = ptx_layouts(ptx.as_bytes()).expect("a kernel name");
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove("k").expect("kernel k")
    }

    #[test]
    fn scalars_align_to_their_width() {
        let l = one(
            ".visible .entry k(.param .u8 a, .param .u16 b, .param .u8 c, \
                     .param .f64 d, .param .b32 e)\n{ ret; }",
        );
        assert_eq!(l, Ok(vec![(0, 1), (2, 2), (4, 1), (8, 8), (16, 4)]));
    }

    #[test]
    fn aligned_byte_arrays_are_structs_by_value() {
        let l = one(".entry k(\n .param .u8 c,\n .param .align 16 .b8 s[32],\n .param .align 4 .b8 t[12]\n)\n{}");
        assert_eq!(l, Ok(vec![(0, 1), (16, 32), (48, 12)]));
    }

    #[test]
    fn vectors_arrays_and_pointer_attributes() {
        let l = one(".entry k(.param .v4 .f32 v, .param .u32 .ptr .global .align 16 p, \
                     .param .u64 .ptr.const.align 8 q, .param .v2 .u16 w[3], .param .b32 m[2][3])\n{}");
        // v: 16 bytes aligned 16; p: a u32 whose pointee alignment does not
        // count; q: u64; w: 3 × 4 bytes aligned 4; m: 2 × 3 × 4.
        assert_eq!(l, Ok(vec![(0, 16), (16, 4), (24, 8), (32, 12), (44, 24)]));
    }

    #[test]
    fn comments_strings_and_bodies_are_skipped() {
        let ptx = r#"
            .version 8.8 // a comment with .entry fake(.param .u8 x)
            .target sm_80
            .file 1 "dir/{odd}.cu"
            /* .entry hidden(.param .u64 z) */
            .visible .entry first /* between */ (
                .param .u64 a, // trailing
                .param .u32 b
            )
            .maxntid 128, 1, 1
            {
                { .reg .b32 %r; }
                ret;
            }
            .visible .entry _Z6secondPfi(.param .u64 p, .param .u32 n) { ret; }
            .entry none() { }
            .entry bare { }
        "#;
        let all = ptx_layouts(ptx.as_bytes()).unwrap();
        assert_eq!(all.len(), 4, "{all:?}");
        assert_eq!(all["first"], Ok(vec![(0, 8), (8, 4)]));
        assert_eq!(all["_Z6secondPfi"], Ok(vec![(0, 8), (8, 4)]));
        assert_eq!(all["none"], Ok(vec![]));
        assert_eq!(all["bare"], Ok(vec![]));
    }

    #[test]
    fn a_declaration_and_a_definition_must_agree() {
        let same = ".extern .entry k(.param .u32 a);\n.entry k(.param .u32 a) {}";
        assert_eq!(one(same), Ok(vec![(0, 4)]));
        let differ = ".extern .entry k(.param .u32 a);\n.entry k(.param .u64 a) {}";
        assert_eq!(one(differ), Err(LayoutError::Conflicting));
    }

    #[test]
    fn what_the_reader_cannot_follow_is_an_error_with_its_line() {
        let cases: &[(&str, u32, &str)] = &[
            (
                ".entry k(.param .pred p) {}",
                1,
                "unknown parameter type or qualifier",
            ),
            (
                ".entry k(.param .texref t) {}",
                1,
                "unknown parameter type or qualifier",
            ),
            (
                ".entry k(\n.param .align 3 .b8 s[4]) {}",
                2,
                ".align without a power of two",
            ),
            (
                ".entry k(.param .b8 s[]) {}",
                1,
                "an array parameter without a positive size",
            ),
            (
                ".entry k(.param .b8 s[0]) {}",
                1,
                "an array parameter without a positive size",
            ),
            (
                ".entry k(.param .u32 a .param .u32 b) {}",
                1,
                "expected ',' or ')' after a parameter",
            ),
            (".entry k(.param a) {}", 1, "a parameter without a type"),
            (
                ".entry k(.param .u32 .u64 a) {}",
                1,
                "two types for one parameter",
            ),
            (
                ".entry k(.reg .u32 a) {}",
                1,
                "a kernel parameter that is not .param",
            ),
            (
                ".entry k(.param .u32 a,\n\n",
                1,
                "the text ends inside a parameter list",
            ),
            (
                ".entry k(.param .u32 a; {}",
                1,
                "expected ',' or ')' after a parameter",
            ),
            (
                ".entry k(.param .u32 a)\n.maxntid 1, 1, 1",
                2,
                "the text ends before the kernel's body",
            ),
            (".entry k", 1, "the text ends before the kernel's body"),
            (
                ".entry k(.param .b8 big[4294967295], .param .u32 x) {}",
                1,
                "parameters past 4 GiB",
            ),
        ];
        for &(ptx, line, what) in cases {
            assert_eq!(one(ptx), Err(LayoutError::Ptx { line, what }), "{ptx}");
        }
        assert_eq!(
            ptx_layouts(b"\n.entry (.param .u32 a) {}"),
            Err(LayoutError::Ptx {
                line: 2,
                what: "no kernel name after .entry"
            })
        );
    }

    #[test]
    fn a_signature_without_a_body_does_not_swallow_the_next_kernel() {
        let all = ptx_layouts(b".entry a(.param .u32 x)\n.entry b(.param .u64 y) {}").unwrap();
        assert_eq!(
            all["a"],
            Err(LayoutError::Ptx {
                line: 2,
                what: "another .entry before the kernel's body"
            })
        );
        assert_eq!(all["b"], Ok(vec![(0, 8)]));
    }

    #[test]
    fn a_broken_kernel_does_not_hide_the_next() {
        let ptx = ".entry bad(.param .pred p) { ret; }\n.entry good(.param .u64 p) { ret; }";
        let all = ptx_layouts(ptx.as_bytes()).unwrap();
        assert!(all["bad"].is_err());
        assert_eq!(all["good"], Ok(vec![(0, 8)]));
    }

    #[test]
    fn the_text_ends_at_its_nul() {
        let all = ptx_layouts(b".entry a(.param .u32 x) {}\0.entry b() {}").unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), ["a"]);
    }
}
