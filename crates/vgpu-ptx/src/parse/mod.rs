//! PTX text → [`Module`]: a structural pass over tokens (this file), then a
//! decode pass per function body ([`body`]) that resolves every name and
//! hands each instruction to its family in `crate::ops`.

mod body;
mod syntax;

use std::collections::HashMap;

use crate::ir::*;
use crate::lexer::{lex, parse_num, NumVal, Tok, Token};
use crate::{Global, GlobalSpace, Module, PtxError, SharedVar};
use body::Decoder;
use syntax::{P, R};

#[derive(Debug, Clone)]
struct VarDecl {
    name: String,
    space: String,
    align: u32,
    ty: Ty,
    /// Element count; 0 for an unsized `[]` array.
    count: u64,
    init: Option<Vec<InitItem>>,
    is_extern: bool,
    line: u32,
}

#[derive(Debug, Clone)]
enum InitItem {
    Num { neg: bool, text: String },
    Sym(String),
}

#[derive(Debug, Clone)]
struct ParamDecl {
    name: String,
    ty: Ty,
    align: u32,
    count: u64,
}

struct RawFunc {
    name: String,
    is_entry: bool,
    rets: Vec<ParamDecl>,
    params: Vec<ParamDecl>,
    body: Option<(usize, usize)>,
    line: u32,
    reqntid: Option<[u32; 3]>,
    maxntid: Option<[u32; 3]>,
}

pub fn parse_module(text: &str) -> R<Module> {
    let toks = lex(text)?;
    let mut p = P { t: &toks, i: 0 };
    let mut funcs: Vec<RawFunc> = Vec::new();
    let mut vars: Vec<VarDecl> = Vec::new();
    let mut version = String::new();
    let mut target = String::new();
    let mut is_extern = false;
    while let Some(tok) = p.peek() {
        let line = p.line();
        p.i += 1;
        match tok {
            Tok::Dot(d) => match d.as_str() {
                "version" => {
                    if let Some(Tok::Num(v)) = p.peek() {
                        version = v.clone();
                    }
                    p.skip_line();
                }
                "target" => {
                    if let Some(Tok::Ident(v)) = p.peek() {
                        target = v.clone();
                    }
                    p.skip_line();
                }
                "address_size" | "file" | "loc" => p.skip_line(),
                "section" => {
                    while p.peek() != Some(&Tok::Punct('{')) {
                        p.next()?;
                    }
                    p.skip_braces()?;
                }
                "pragma" => p.skip_past(';')?,
                "visible" | "weak" | "common" => {}
                "extern" => {
                    is_extern = true;
                    continue;
                }
                "entry" | "func" => {
                    let f = parse_func_header(&mut p, d == "entry", line)?;
                    funcs.push(f);
                }
                "global" | "const" | "shared" => {
                    let mut v = parse_var(&mut p, d, line)?;
                    v.is_extern = is_extern;
                    vars.push(v);
                }
                "tex" | "texref" | "surfref" | "samplerref" => p.skip_past(';')?,
                other => return p.err(format!("unexpected directive `.{other}`")),
            },
            Tok::Punct(';') => {}
            t => return p.err(format!("unexpected {t:?} at module scope")),
        }
        is_extern = false;
    }
    build_module(&toks, funcs, vars, version, target)
}

fn parse_dims(p: &mut P) -> R<u64> {
    let mut count = 1u64;
    let mut any = false;
    while p.eat('[') {
        any = true;
        if p.eat(']') {
            count = 0;
            continue;
        }
        let n = p.number()?;
        p.expect(']')?;
        count = count.saturating_mul(n);
    }
    Ok(if any { count } else { 1 })
}

fn parse_var(p: &mut P, space: &str, line: u32) -> R<VarDecl> {
    let mut align = 0;
    let mut ty = None;
    let mut vec = 1;
    // In `.param .u64 .ptr .global .align 16 p`, the space and the
    // alignment after `.ptr` describe the pointee, not the parameter.
    let mut pointee = false;
    loop {
        match p.peek() {
            Some(Tok::Dot(d)) => {
                p.i += 1;
                match d.as_str() {
                    "ptr" => pointee = true,
                    "align" if pointee => {
                        p.number()?;
                    }
                    "align" => align = p.number()? as u32,
                    "v2" => vec = 2,
                    "v4" => vec = 4,
                    "v8" => vec = 8,
                    other => {
                        if let Some(t) = Ty::parse(other) {
                            ty = Some(t);
                        }
                        // Attributes such as `.attribute(.managed)` and
                        // `.ptr` qualifiers carry nothing we use.
                    }
                }
            }
            Some(Tok::Ident(_)) => break,
            _ => return p.err("malformed variable declaration"),
        }
    }
    let ty = ty.ok_or_else(|| PtxError::new(line, "variable without a type"))?;
    let name = p.ident()?;
    let count = parse_dims(p)?.saturating_mul(vec);
    let init = if p.eat('=') {
        let mut items = Vec::new();
        parse_init(p, &mut items)?;
        Some(items)
    } else {
        None
    };
    p.expect(';')?;
    if align == 0 {
        align = ty.bytes() * vec as u32;
    }
    Ok(VarDecl {
        name,
        space: space.to_string(),
        align,
        ty,
        count,
        init,
        is_extern: false,
        line,
    })
}

fn parse_init(p: &mut P, out: &mut Vec<InitItem>) -> R<()> {
    if p.eat('{') {
        loop {
            if p.eat('}') {
                break;
            }
            parse_init(p, out)?;
            if !p.eat(',') {
                p.expect('}')?;
                break;
            }
        }
        return Ok(());
    }
    let neg = p.eat('-');
    match p.next()? {
        Tok::Num(s) => out.push(InitItem::Num {
            neg,
            text: s.clone(),
        }),
        Tok::Ident(s) if s == "generic" => {
            p.expect('(')?;
            let n = p.ident()?;
            p.expect(')')?;
            out.push(InitItem::Sym(n));
        }
        Tok::Ident(s) => {
            let s = s.clone();
            // `sym+8` in an initializer: keep it simple and reject offsets.
            if p.peek() == Some(&Tok::Punct('+')) {
                return p.err("symbol offsets in initializers are not supported");
            }
            out.push(InitItem::Sym(s));
        }
        t => return p.err(format!("bad initializer {t:?}")),
    }
    Ok(())
}

fn parse_param_list(p: &mut P) -> R<Vec<ParamDecl>> {
    let mut out = Vec::new();
    p.expect('(')?;
    if p.eat(')') {
        return Ok(out);
    }
    loop {
        let mut align = 0;
        let mut ty = None;
        // After `.ptr`, the space and `.align` describe the pointee (see
        // `parse_var`).
        let mut pointee = false;
        while let Some(Tok::Dot(d)) = p.peek() {
            p.i += 1;
            match d.as_str() {
                "ptr" => pointee = true,
                "align" if pointee => {
                    p.number()?;
                }
                "align" => align = p.number()? as u32,
                other => {
                    if let Some(t) = Ty::parse(other) {
                        ty = Some(t);
                    }
                }
            }
        }
        let ty = ty.ok_or_else(|| PtxError::new(p.line(), "parameter without a type"))?;
        let name = p.ident()?;
        let count = parse_dims(p)?.max(1);
        if align == 0 {
            align = ty.bytes();
        }
        out.push(ParamDecl {
            name,
            ty,
            align,
            count,
        });
        if p.eat(')') {
            return Ok(out);
        }
        p.expect(',')?;
    }
}

fn parse_dim3(p: &mut P) -> R<[u32; 3]> {
    let mut d = [1u32; 3];
    for (k, slot) in d.iter_mut().enumerate() {
        if k > 0 && !p.eat(',') {
            break;
        }
        *slot = p.number()? as u32;
    }
    Ok(d)
}

fn parse_func_header(p: &mut P, is_entry: bool, line: u32) -> R<RawFunc> {
    let mut rets = Vec::new();
    if !is_entry && p.peek() == Some(&Tok::Punct('(')) {
        rets = parse_param_list(p)?;
    }
    let name = p.ident()?;
    let params = if p.peek() == Some(&Tok::Punct('(')) {
        parse_param_list(p)?
    } else {
        Vec::new()
    };
    let mut f = RawFunc {
        name,
        is_entry,
        rets,
        params,
        body: None,
        line,
        reqntid: None,
        maxntid: None,
    };
    loop {
        match p.next()? {
            Tok::Punct(';') => return Ok(f),
            Tok::Punct('{') => {
                p.i -= 1;
                f.body = Some(p.skip_braces()?);
                return Ok(f);
            }
            Tok::Dot(d) => match d.as_str() {
                "maxntid" => f.maxntid = Some(parse_dim3(p)?),
                "reqntid" => f.reqntid = Some(parse_dim3(p)?),
                "pragma" => p.skip_past(';')?,
                _ => {
                    // .minnctapersm N, .maxnreg N, .noreturn, cluster dims...
                    while matches!(p.peek(), Some(Tok::Num(_) | Tok::Punct(','))) {
                        p.i += 1;
                    }
                }
            },
            t => return p.err(format!("unexpected {t:?} in function header")),
        }
    }
}

/// Lays out params C-style: each at the next multiple of its alignment.
fn layout_params(ps: &[ParamDecl], start: u32) -> (Vec<Param>, u32) {
    let mut off = start;
    let mut out = Vec::new();
    for p in ps {
        let size = (p.ty.bytes() as u64 * p.count) as u32;
        off = off.next_multiple_of(p.align.max(1));
        out.push(Param {
            offset: off,
            size,
            align: p.align,
        });
        off += size;
    }
    (out, off)
}

fn build_module(
    toks: &[Token],
    raw: Vec<RawFunc>,
    vars: Vec<VarDecl>,
    version: String,
    target: String,
) -> R<Module> {
    let mut m = Module {
        version,
        target,
        funcs: Vec::new(),
        func_index: HashMap::new(),
        globals: Vec::new(),
        global_index: HashMap::new(),
        shared: Vec::new(),
        shared_index: HashMap::new(),
        kernels: HashMap::new(),
    };
    for v in &vars {
        add_var(&mut m, v)?;
    }
    // Functions may be declared (prototype) and later defined: merge by name.
    let mut merged: Vec<RawFunc> = Vec::new();
    for f in raw {
        if let Some(&i) = m.func_index.get(&f.name) {
            let i = i as usize;
            if f.body.is_some() {
                merged[i] = f;
            }
        } else {
            m.func_index.insert(f.name.clone(), merged.len() as u32);
            merged.push(f);
        }
    }
    for f in &merged {
        let (rets, end) = layout_params(&f.rets, 0);
        let (params, end) = layout_params(&f.params, end.next_multiple_of(8));
        m.funcs.push(Function {
            name: f.name.clone(),
            is_entry: f.is_entry,
            params,
            rets,
            param_frame: end,
            local_frame: 0,
            nregs: 0,
            reg_mask: Vec::new(),
            insts: Vec::new(),
            calls: Vec::new(),
            defined: f.body.is_some(),
            builtin: if f.body.is_none() {
                crate::runtime::Builtin::from_name(&f.name)
            } else {
                None
            },
            line: f.line,
            reqntid: f.reqntid,
            maxntid: f.maxntid,
        });
    }
    // Kernel params must start at offset 0 of the frame: they are the packed
    // launch buffer. Entries have no return values, so that holds already.
    for (fi, f) in merged.iter().enumerate() {
        if let Some((s, e)) = f.body {
            let mut d = Decoder::new(&mut m, fi as u32, f);
            d.decode_body(&toks[s..e])?;
        }
    }
    crate::finish_module(&mut m)?;
    Ok(m)
}

fn var_size(v: &VarDecl) -> u64 {
    v.ty.bytes() as u64 * v.count
}

fn add_var(m: &mut Module, v: &VarDecl) -> R<u32> {
    match v.space.as_str() {
        "shared" => {
            let idx = m.shared.len() as u32;
            m.shared.push(SharedVar {
                name: v.name.clone(),
                size: var_size(v),
                align: v.align.max(1),
                dynamic: v.count == 0,
            });
            m.shared_index.insert(v.name.clone(), idx);
            Ok(idx)
        }
        _ => {
            let size = var_size(v);
            let mut init = Vec::new();
            let mut relocs = Vec::new();
            if let Some(items) = &v.init {
                let w = v.ty.bytes() as usize;
                for it in items {
                    match it {
                        InitItem::Num { neg, text } => {
                            let bits = imm_bits(*neg, text, v.ty).ok_or_else(|| {
                                PtxError::new(v.line, format!("bad initializer `{text}`"))
                            })?;
                            init.extend_from_slice(&bits.to_le_bytes()[..w.min(8)]);
                        }
                        InitItem::Sym(s) => {
                            relocs.push((init.len() as u64, s.clone()));
                            init.extend_from_slice(&[0u8; 8][..w.min(8)]);
                        }
                    }
                }
                init.resize(size as usize, 0);
            }
            let idx = m.globals.len() as u32;
            m.globals.push(Global {
                name: v.name.clone(),
                space: if v.space == "const" {
                    GlobalSpace::Const
                } else {
                    GlobalSpace::Global
                },
                size,
                align: v.align.max(1),
                init,
                relocs,
                is_extern: v.is_extern,
            });
            m.global_index.insert(v.name.clone(), idx);
            Ok(idx)
        }
    }
}

/// Bit pattern of a literal in the context of type `ty`.
fn imm_bits(neg: bool, text: &str, ty: Ty) -> Option<u64> {
    let v = parse_num(text)?;
    let bits = match (v, ty) {
        (NumVal::Int(i), _) => {
            if neg {
                (i as i64).wrapping_neg() as u64
            } else {
                i
            }
        }
        (NumVal::F32Bits(b), Ty::F64) => {
            let f = f32::from_bits(b) as f64;
            (if neg { -f } else { f }).to_bits()
        }
        (NumVal::F32Bits(b), _) => (b ^ if neg { 0x8000_0000 } else { 0 }) as u64,
        (NumVal::F64Bits(b), Ty::F32) => {
            let f = f64::from_bits(b) as f32;
            (if neg { -f } else { f }).to_bits() as u64
        }
        (NumVal::F64Bits(b), _) => b ^ if neg { 1 << 63 } else { 0 },
        (NumVal::Float(f), t) => {
            let f = if neg { -f } else { f };
            if t == Ty::F32 {
                (f as f32).to_bits() as u64
            } else {
                f.to_bits()
            }
        }
    };
    Some(bits)
}
