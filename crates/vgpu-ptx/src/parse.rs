//! PTX text → [`Module`]: a structural pass over tokens, then a decode pass
//! per function body that resolves every name.

use std::collections::HashMap;

use crate::ir::*;
use crate::lexer::{lex, parse_num, NumVal, Tok, Token};
use crate::{Global, GlobalSpace, Module, PtxError, SharedVar};

type R<T> = Result<T, PtxError>;

/// Operand as written, names unresolved.
#[derive(Debug, Clone)]
enum ROp {
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

struct RawInst {
    guard: Option<(String, bool)>,
    opcode: String,
    mods: Vec<String>,
    ops: Vec<ROp>,
    line: u32,
}

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

struct P<'t> {
    t: &'t [Token],
    i: usize,
}

impl<'t> P<'t> {
    fn peek(&self) -> Option<&'t Tok> {
        self.t.get(self.i).map(|t| &t.tok)
    }
    fn peek_at(&self, k: usize) -> Option<&'t Tok> {
        self.t.get(self.i + k).map(|t| &t.tok)
    }
    fn line(&self) -> u32 {
        self.t
            .get(self.i)
            .or_else(|| self.t.last())
            .map_or(0, |t| t.line)
    }
    fn next(&mut self) -> R<&'t Tok> {
        let t = self
            .t
            .get(self.i)
            .ok_or_else(|| PtxError::new(self.line(), "unexpected end of input"))?;
        self.i += 1;
        Ok(&t.tok)
    }
    fn err<T>(&self, msg: impl Into<String>) -> R<T> {
        Err(PtxError::new(self.line(), msg))
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Punct(c)) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: char) -> R<()> {
        if self.eat(c) {
            Ok(())
        } else {
            self.err(format!("expected `{c}`, found {:?}", self.peek()))
        }
    }
    fn ident(&mut self) -> R<String> {
        match self.next()? {
            Tok::Ident(s) => Ok(s.clone()),
            t => {
                self.i -= 1;
                self.err(format!("expected a name, found {t:?}"))
            }
        }
    }
    fn number(&mut self) -> R<u64> {
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
    fn skip_line(&mut self) {
        let l = self.t[self.i - 1].line;
        while self.i < self.t.len() && self.t[self.i].line == l {
            self.i += 1;
        }
    }
    fn skip_past(&mut self, c: char) -> R<()> {
        while self.next()? != &Tok::Punct(c) {}
        Ok(())
    }
    /// Skips a balanced `{ ... }` starting at the current `{`.
    fn skip_braces(&mut self) -> R<(usize, usize)> {
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
    fn dotted(&mut self, first: &str) -> String {
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
    loop {
        match p.peek() {
            Some(Tok::Dot(d)) => {
                p.i += 1;
                match d.as_str() {
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
        while let Some(Tok::Dot(d)) = p.peek() {
            p.i += 1;
            match d.as_str() {
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

#[derive(Clone, Copy)]
enum Name {
    Reg(u32),
    Sym(Sym),
}

struct Decoder<'m> {
    m: &'m mut Module,
    fi: u32,
    scopes: Vec<HashMap<String, Name>>,
    nregs: u32,
    reg_mask: Vec<u64>,
    param_frame: u32,
    local_frame: u32,
    insts: Vec<Inst>,
    calls: Vec<CallInfo>,
    labels: HashMap<String, u32>,
    fixups: Vec<(usize, usize, String, u32)>,
}

impl<'m> Decoder<'m> {
    fn new(m: &'m mut Module, fi: u32, raw: &RawFunc) -> Self {
        let f = &m.funcs[fi as usize];
        let mut top = HashMap::new();
        for (d, p) in raw.rets.iter().zip(&f.rets) {
            top.insert(d.name.clone(), Name::Sym(Sym::Param(p.offset)));
        }
        for (d, p) in raw.params.iter().zip(&f.params) {
            top.insert(d.name.clone(), Name::Sym(Sym::Param(p.offset)));
        }
        let param_frame = f.param_frame;
        Decoder {
            m,
            fi,
            scopes: vec![top],
            nregs: 0,
            reg_mask: Vec::new(),
            param_frame,
            local_frame: 0,
            insts: Vec::new(),
            calls: Vec::new(),
            labels: HashMap::new(),
            fixups: Vec::new(),
        }
    }

    fn lookup(&self, n: &str) -> Option<Name> {
        for s in self.scopes.iter().rev() {
            if let Some(&v) = s.get(n) {
                return Some(v);
            }
        }
        if let Some(&g) = self.m.global_index.get(n) {
            return Some(Name::Sym(Sym::Global(g)));
        }
        if let Some(&s) = self.m.shared_index.get(n) {
            return Some(Name::Sym(Sym::Shared(s)));
        }
        None
    }

    fn declare(&mut self, n: String, v: Name) {
        self.scopes.last_mut().unwrap().insert(n, v);
    }

    fn new_reg(&mut self, name: String, ty: Ty) {
        let r = self.nregs;
        self.nregs += 1;
        self.reg_mask.push(match ty.bits() {
            64 | 128 => u64::MAX,
            b => (1u64 << b) - 1,
        });
        self.declare(name, Name::Reg(r));
    }

    fn decode_body(&mut self, toks: &[Token]) -> R<()> {
        let mut p = P { t: toks, i: 0 };
        while let Some(tok) = p.peek() {
            let line = p.line();
            match tok {
                Tok::Punct('{') => {
                    p.i += 1;
                    self.scopes.push(HashMap::new());
                }
                Tok::Punct('}') => {
                    p.i += 1;
                    if self.scopes.len() > 1 {
                        self.scopes.pop();
                    }
                }
                Tok::Punct(';') => p.i += 1,
                Tok::Dot(d) => {
                    p.i += 1;
                    match d.as_str() {
                        "reg" => self.reg_decl(&mut p)?,
                        "loc" | "file" => p.skip_line(),
                        "pragma" => p.skip_past(';')?,
                        "local" | "shared" | "param" | "global" | "const" => {
                            let v = parse_var(&mut p, d, line)?;
                            self.var_decl(v)?;
                        }
                        other => return p.err(format!("unexpected directive `.{other}` in body")),
                    }
                }
                Tok::Ident(n) if p.peek_at(1) == Some(&Tok::Punct(':')) => {
                    self.labels.insert(n.clone(), self.insts.len() as u32);
                    p.i += 2;
                }
                Tok::Ident(_) | Tok::Punct('@') => {
                    let ri = parse_inst(&mut p)?;
                    let inst = self.decode_inst(ri)?;
                    self.insts.push(inst);
                }
                t => return p.err(format!("unexpected {t:?} in function body")),
            }
        }
        for (ii, oi, name, line) in std::mem::take(&mut self.fixups) {
            let target = *self
                .labels
                .get(&name)
                .ok_or_else(|| PtxError::new(line, format!("unknown label or symbol `{name}`")))?;
            self.insts[ii].ops[oi] = Opnd::Label(target);
        }
        let f = &mut self.m.funcs[self.fi as usize];
        f.insts = std::mem::take(&mut self.insts);
        f.calls = std::mem::take(&mut self.calls);
        f.nregs = self.nregs;
        f.reg_mask = std::mem::take(&mut self.reg_mask);
        f.param_frame = self.param_frame.next_multiple_of(8);
        f.local_frame = self.local_frame.next_multiple_of(8);
        Ok(())
    }

    fn reg_decl(&mut self, p: &mut P) -> R<()> {
        let mut ty = None;
        let mut vec = 1;
        while let Some(Tok::Dot(d)) = p.peek() {
            p.i += 1;
            match d.as_str() {
                "v2" => vec = 2,
                "v4" => vec = 4,
                other => ty = Ty::parse(other),
            }
        }
        let ty = ty.ok_or_else(|| PtxError::new(p.line(), "register without a type"))?;
        if vec != 1 {
            return p.err("vector registers are not supported");
        }
        loop {
            let name = p.ident()?;
            if p.eat('<') {
                let n = p.number()?;
                p.expect('>')?;
                if n > 1 << 20 {
                    return p.err("too many registers");
                }
                for k in 0..n {
                    self.new_reg(format!("{name}{k}"), ty);
                }
            } else {
                self.new_reg(name, ty);
            }
            if p.eat(';') {
                return Ok(());
            }
            p.expect(',')?;
        }
    }

    fn var_decl(&mut self, v: VarDecl) -> R<()> {
        let size = var_size(&v);
        let size32 =
            u32::try_from(size).map_err(|_| PtxError::new(v.line, "variable too large"))?;
        match v.space.as_str() {
            "local" => {
                let off = self.local_frame.next_multiple_of(v.align.max(1));
                self.local_frame = off + size32;
                self.declare(v.name, Name::Sym(Sym::Local(off)));
            }
            "param" => {
                let off = self.param_frame.next_multiple_of(v.align.max(1));
                self.param_frame = off + size32;
                self.declare(v.name, Name::Sym(Sym::Param(off)));
            }
            _ => {
                // Function-scope shared/global/const: module storage under a
                // name unique to the function.
                let mut v2 = v.clone();
                v2.name = format!("{}::{}", self.m.funcs[self.fi as usize].name, v.name);
                let idx = add_var(self.m, &v2)?;
                let sym = if v.space == "shared" {
                    Sym::Shared(idx)
                } else {
                    Sym::Global(idx)
                };
                self.declare(v.name, Name::Sym(sym));
            }
        }
        Ok(())
    }
}

fn sreg(name: &str, comp: Option<&str>) -> Option<Sreg> {
    let c = match comp {
        Some("x") => 0,
        Some("y") => 1,
        Some("z") => 2,
        _ => 3,
    };
    let dim = |f: fn(u8) -> Sreg| if c < 3 { Some(f(c)) } else { None };
    match name {
        "%tid" => dim(Sreg::Tid),
        "%ntid" => dim(Sreg::Ntid),
        "%ctaid" => dim(Sreg::Ctaid),
        "%nctaid" => dim(Sreg::Nctaid),
        "%laneid" => Some(Sreg::Laneid),
        "%warpid" => Some(Sreg::Warpid),
        "%nwarpid" => Some(Sreg::Nwarpid),
        "%smid" => Some(Sreg::Smid),
        "%nsmid" => Some(Sreg::Nsmid),
        "%gridid" => Some(Sreg::Gridid),
        "%clock" => Some(Sreg::Clock),
        "%clock64" => Some(Sreg::Clock64),
        "%globaltimer" => Some(Sreg::Globaltimer),
        "%lanemask_eq" => Some(Sreg::LanemaskEq),
        "%lanemask_lt" => Some(Sreg::LanemaskLt),
        "%lanemask_le" => Some(Sreg::LanemaskLe),
        "%lanemask_gt" => Some(Sreg::LanemaskGt),
        "%lanemask_ge" => Some(Sreg::LanemaskGe),
        "%dynamic_smem_size" => Some(Sreg::DynamicSmemSize),
        "%total_smem_size" => Some(Sreg::TotalSmemSize),
        "WARP_SZ" => Some(Sreg::WarpSz),
        _ => None,
    }
}

fn parse_operand(p: &mut P) -> R<ROp> {
    let op = parse_operand1(p)?;
    if p.eat('|') {
        let q = parse_operand1(p)?;
        return Ok(ROp::Pair(Box::new(op), Box::new(q)));
    }
    Ok(op)
}

fn parse_operand1(p: &mut P) -> R<ROp> {
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
            if let Some(r) = sreg(s, comp) {
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

fn parse_inst(p: &mut P) -> R<RawInst> {
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

fn space_of(m: &str) -> Option<Space> {
    Some(match m.split("::").next().unwrap_or(m) {
        "global" => Space::Global,
        "shared" => Space::Shared,
        "local" => Space::Local,
        "param" => Space::Param,
        "const" => Space::Const,
        _ => return None,
    })
}

fn cmp_of(m: &str) -> Option<Cmp> {
    Some(match m {
        "eq" => Cmp::Eq,
        "ne" => Cmp::Ne,
        "lt" => Cmp::Lt,
        "le" => Cmp::Le,
        "gt" => Cmp::Gt,
        "ge" => Cmp::Ge,
        "lo" => Cmp::Lo,
        "ls" => Cmp::Ls,
        "hi" => Cmp::Hi,
        "hs" => Cmp::Hs,
        "equ" => Cmp::Equ,
        "neu" => Cmp::Neu,
        "ltu" => Cmp::Ltu,
        "leu" => Cmp::Leu,
        "gtu" => Cmp::Gtu,
        "geu" => Cmp::Geu,
        "num" => Cmp::Num,
        "nan" => Cmp::Nan,
        _ => return None,
    })
}

fn atom_of(m: &str) -> Option<AtomOp> {
    Some(match m {
        "add" => AtomOp::Add,
        "min" => AtomOp::Min,
        "max" => AtomOp::Max,
        "exch" => AtomOp::Exch,
        "cas" => AtomOp::Cas,
        "and" => AtomOp::And,
        "or" => AtomOp::Or,
        "xor" => AtomOp::Xor,
        "inc" => AtomOp::Inc,
        "dec" => AtomOp::Dec,
        _ => return None,
    })
}

fn redux_of(m: &str) -> Option<ReduxOp> {
    Some(match m {
        "add" => ReduxOp::Add,
        "min" => ReduxOp::Min,
        "max" => ReduxOp::Max,
        "and" => ReduxOp::And,
        "or" => ReduxOp::Or,
        "xor" => ReduxOp::Xor,
        "popc" => ReduxOp::Popc,
        _ => return None,
    })
}

impl Decoder<'_> {
    fn decode_inst(&mut self, ri: RawInst) -> R<Inst> {
        let line = ri.line;
        let text: Box<str> = std::iter::once(ri.opcode.as_str())
            .chain(ri.mods.iter().map(|s| s.as_str()))
            .collect::<Vec<_>>()
            .join(".")
            .into();
        let mods: Vec<&str> = ri.mods.iter().map(|s| s.as_str()).collect();
        let has = |s: &str| mods.contains(&s);
        let tys: Vec<Ty> = mods.iter().filter_map(|m| Ty::parse(m)).collect();
        let ty = tys.last().copied().unwrap_or(Ty::B32);
        let space = mods
            .iter()
            .find_map(|m| space_of(m))
            .unwrap_or(Space::Generic);
        let rnd = mods
            .iter()
            .find_map(|m| {
                Some(match *m {
                    "rn" => Rnd::Rn,
                    "rz" => Rnd::Rz,
                    "rm" => Rnd::Rm,
                    "rp" => Rnd::Rp,
                    "rni" => Rnd::Rni,
                    "rzi" => Rnd::Rzi,
                    "rmi" => Rnd::Rmi,
                    "rpi" => Rnd::Rpi,
                    _ => return None,
                })
            })
            .unwrap_or(Rnd::None);
        let vec = if has("v2") {
            2
        } else if has("v4") {
            4
        } else if has("v8") {
            8
        } else {
            1
        };
        let mulmode = if has("hi") {
            MulMode::Hi
        } else if has("wide") {
            MulMode::Wide
        } else {
            MulMode::Lo
        };
        let bop = if has("and") {
            Some(BoolOp::And)
        } else if has("or") {
            Some(BoolOp::Or)
        } else if has("xor") {
            Some(BoolOp::Xor)
        } else {
            None
        };
        let cmp = mods.iter().find_map(|m| cmp_of(m));
        let mut ity = ty;
        let float_ok = |t: Ty| t.is_f32_or_f64();
        let int_ok = |t: Ty| {
            matches!(t.kind(), Kind::Bits | Kind::Unsigned | Kind::Signed) && t.bits() <= 64
        };
        let arith_ok = |t: Ty| float_ok(t) || int_ok(t);
        let mut unsupported = false;
        let op = match ri.opcode.as_str() {
            "add" | "sub" if has("cc") || ri.opcode.ends_with('c') => {
                unsupported = true;
                Op::Unsupported
            }
            "add" => Op::Add,
            "sub" => Op::Sub,
            "mul" if ty.is_float() => Op::Mul(MulMode::Lo),
            "mul" => Op::Mul(mulmode),
            "mad" | "fma" if ty.is_float() => Op::Fma,
            "mad" => Op::Mad(mulmode),
            "mul24" => Op::Mul24(mulmode),
            "mad24" => Op::Mad24(mulmode),
            "sad" => Op::Sad,
            "div" => Op::Div,
            "rem" => Op::Rem,
            "abs" => Op::Abs,
            "neg" => Op::Neg,
            "min" => Op::Min,
            "max" => Op::Max,
            "rcp" => Op::Rcp,
            "sqrt" => Op::Sqrt,
            "rsqrt" => Op::Rsqrt,
            "ex2" => Op::Ex2,
            "lg2" => Op::Lg2,
            "sin" => Op::Sin,
            "cos" => Op::Cos,
            "tanh" => Op::Tanh,
            "copysign" => Op::Copysign,
            "testp" => {
                let k = [
                    "finite",
                    "infinite",
                    "number",
                    "notanumber",
                    "normal",
                    "subnormal",
                ]
                .iter()
                .position(|k| has(k));
                match k {
                    Some(k) => Op::Testp(k as u8),
                    None => {
                        unsupported = true;
                        Op::Unsupported
                    }
                }
            }
            "and" => Op::And,
            "or" => Op::Or,
            "xor" => Op::Xor,
            "not" => Op::Not,
            "cnot" => Op::Cnot,
            "shl" => Op::Shl,
            "shr" => Op::Shr,
            "bfe" => Op::Bfe,
            "bfi" => Op::Bfi,
            "popc" => Op::Popc,
            "clz" => Op::Clz,
            "brev" => Op::Brev,
            "bfind" => Op::Bfind {
                shiftamt: has("shiftamt"),
            },
            "prmt" => {
                let mode = ["f4e", "b4e", "rc8", "ecl", "ecr", "rc16"]
                    .iter()
                    .position(|k| has(k))
                    .map_or(0, |k| k as u8 + 1);
                Op::Prmt(mode)
            }
            "lop3" => Op::Lop3,
            "shf" => Op::Shf {
                left: has("l"),
                wrap: has("wrap"),
            },
            "setp" => match cmp {
                Some(cmp) => Op::Setp { cmp, bop },
                None => {
                    unsupported = true;
                    Op::Unsupported
                }
            },
            "set" if tys.len() == 2 && cmp.is_some() => {
                ity = tys[1];
                Op::Set {
                    cmp: cmp.unwrap(),
                    bop,
                    dty: tys[0],
                }
            }
            "selp" => Op::Selp,
            "slct" if tys.len() == 2 => {
                ity = tys[0];
                Op::Slct {
                    fsel: tys[1] == Ty::F32,
                }
            }
            "cvt" if tys.len() == 2 => {
                ity = tys[1];
                Op::Cvt {
                    dty: tys[0],
                    sty: tys[1],
                }
            }
            "cvta" => Op::Cvta {
                to: has("to"),
                space,
            },
            "isspacep" => Op::Isspacep(space),
            "mov" => Op::Mov,
            "ld" | "ldu" => Op::Ld { space },
            "st" => Op::St { space },
            "atom" | "red" => match mods.iter().find_map(|m| atom_of(m)) {
                Some(aop) => {
                    if ri.opcode == "atom" {
                        Op::Atom { space, op: aop }
                    } else {
                        Op::Red { space, op: aop }
                    }
                }
                None => {
                    unsupported = true;
                    Op::Unsupported
                }
            },
            "bra" => Op::Bra,
            "call" => Op::Call,
            "ret" => Op::Ret,
            "exit" => Op::Exit,
            "bar" | "barrier" if has("warp") => Op::BarWarp,
            "bar" | "barrier" if has("arrive") => Op::BarArrive,
            "bar" | "barrier" if has("red") => {
                let r = if has("popc") {
                    ReduxOp::Popc
                } else if has("and") {
                    ReduxOp::And
                } else {
                    ReduxOp::Or
                };
                Op::Bar { red: Some(r) }
            }
            "bar" | "barrier" => Op::Bar { red: None },
            "shfl" => {
                if has("up") {
                    Op::Shfl(ShflMode::Up)
                } else if has("down") {
                    Op::Shfl(ShflMode::Down)
                } else if has("bfly") {
                    Op::Shfl(ShflMode::Bfly)
                } else {
                    Op::Shfl(ShflMode::Idx)
                }
            }
            "vote" => {
                if has("ballot") {
                    Op::Vote(VoteMode::Ballot)
                } else if has("all") {
                    Op::Vote(VoteMode::All)
                } else if has("any") {
                    Op::Vote(VoteMode::Any)
                } else {
                    Op::Vote(VoteMode::Uni)
                }
            }
            "activemask" => Op::Activemask,
            "match" if has("any") => Op::MatchAny,
            "match" if has("all") => Op::MatchAll,
            "redux" => match mods.iter().find_map(|m| redux_of(m)) {
                Some(r) => Op::Redux(r),
                None => {
                    unsupported = true;
                    Op::Unsupported
                }
            },
            "membar" | "fence" | "prefetch" | "prefetchu" | "nanosleep" | "pmevent" | "discard"
            | "applypriority" => Op::Nop,
            "trap" => Op::Trap,
            "brkpt" => Op::Brkpt,
            _ => {
                unsupported = true;
                Op::Unsupported
            }
        };
        // Types the arithmetic paths don't implement become a clear
        // runtime error rather than silently wrong results.
        let type_ok = match op {
            Op::Add | Op::Sub | Op::Min | Op::Max | Op::Abs | Op::Neg | Op::Div | Op::Rem => {
                arith_ok(ty)
            }
            Op::Mul(_) | Op::Mad(_) | Op::Mul24(_) | Op::Mad24(_) | Op::Sad => arith_ok(ty),
            Op::Fma
            | Op::Rcp
            | Op::Sqrt
            | Op::Rsqrt
            | Op::Ex2
            | Op::Lg2
            | Op::Sin
            | Op::Cos
            | Op::Tanh
            | Op::Copysign
            | Op::Testp(_) => float_ok(ty),
            Op::Setp { .. } | Op::Set { .. } => arith_ok(ity),
            Op::Cvt { dty, sty } => {
                let ok = |t: Ty| arith_ok(t) || matches!(t, Ty::F16 | Ty::Bf16);
                ok(dty) && ok(sty)
            }
            Op::Atom { op: aop, .. } | Op::Red { op: aop, .. } => {
                matches!(ty.bits(), 32 | 64)
                    && (!ty.is_float() || aop == AtomOp::Add || aop == AtomOp::Exch)
            }
            _ => true,
        };
        let op = if unsupported || !type_ok {
            Op::Unsupported
        } else {
            op
        };
        let guard = match &ri.guard {
            Some((n, neg)) => match self.lookup(n) {
                Some(Name::Reg(r)) => Some((r, *neg)),
                _ => return Err(PtxError::new(line, format!("unknown predicate `{n}`"))),
            },
            None => None,
        };
        let ii = self.insts.len();
        let mut ops = Vec::with_capacity(ri.ops.len());
        if op == Op::Call {
            ops.push(self.decode_call(&ri)?);
        } else if op != Op::Unsupported {
            for (oi, r) in ri.ops.iter().enumerate() {
                // Each operand's immediate is read in the type it feeds.
                let imm_ty = match op {
                    Op::Cvt { sty, .. } if oi == 1 => sty,
                    Op::Set { .. } | Op::Slct { .. } if oi > 0 => ity,
                    Op::Shl | Op::Shr if oi == 2 => Ty::U32,
                    Op::Bfe | Op::Bfi if oi >= 2 => Ty::U32,
                    _ => ty,
                };
                match r {
                    ROp::Pair(a, b) => {
                        ops.push(self.operand(a, imm_ty, ii, ops.len(), line)?);
                        ops.push(self.operand(b, imm_ty, ii, ops.len(), line)?);
                    }
                    _ => ops.push(self.operand(r, imm_ty, ii, ops.len(), line)?),
                }
            }
            // setp/shfl/match.all with one destination: make the optional
            // second destination explicit.
            let single_dst = matches!(
                (op, ri.ops.first()),
                (Op::Setp { .. } | Op::Shfl(_) | Op::MatchAll, Some(r)) if !matches!(r, ROp::Pair(..))
            );
            if single_dst {
                ops.insert(1, Opnd::Sink);
            }
        }
        Ok(Inst {
            op,
            ty: ity,
            rnd,
            ftz: has("ftz"),
            sat: has("sat"),
            vec,
            guard,
            ops: ops.into_boxed_slice(),
            line,
            text,
        })
    }

    fn operand(&mut self, r: &ROp, ty: Ty, ii: usize, oi: usize, line: u32) -> R<Opnd> {
        Ok(match r {
            ROp::Name(n) => match self.lookup(n) {
                Some(Name::Reg(r)) => Opnd::Reg(r),
                Some(Name::Sym(s)) => Opnd::Sym(self.resolve_dyn(s)),
                None => {
                    if let Some(&f) = self.m.func_index.get(n) {
                        Opnd::Func(f)
                    } else {
                        self.fixups.push((ii, oi, n.clone(), line));
                        Opnd::Label(u32::MAX)
                    }
                }
            },
            ROp::Not(n) => match self.lookup(n) {
                Some(Name::Reg(r)) => Opnd::NotReg(r),
                _ => return Err(PtxError::new(line, format!("`!{n}` is not a register"))),
            },
            ROp::Num { neg, text } => Opnd::Imm(
                imm_bits(*neg, text, ty)
                    .ok_or_else(|| PtxError::new(line, format!("bad literal `{text}`")))?,
            ),
            ROp::Sreg(s) => Opnd::Sreg(*s),
            ROp::Addr(b, off) => {
                Opnd::Addr(Box::new(self.operand(b, Ty::U64, ii, oi, line)?), *off)
            }
            ROp::Vec(v) => Opnd::Vec(
                v.iter()
                    .map(|e| self.operand(e, ty, ii, oi, line))
                    .collect::<R<_>>()?,
            ),
            ROp::List(_) | ROp::Pair(..) => {
                return Err(PtxError::new(line, "unexpected operand list"));
            }
            ROp::Sink => Opnd::Sink,
        })
    }

    fn resolve_dyn(&self, s: Sym) -> Sym {
        match s {
            Sym::Shared(i) if self.m.shared[i as usize].dynamic => Sym::DynShared,
            s => s,
        }
    }

    fn decode_call(&mut self, ri: &RawInst) -> R<Opnd> {
        let line = ri.line;
        // call (rets), func, (args)[, prototype]
        let mut it = ri.ops.iter().peekable();
        let mut rets = Vec::new();
        if let Some(ROp::List(l)) = it.peek() {
            rets = l.clone();
            it.next();
        }
        let callee = match it.next() {
            Some(ROp::Name(n)) => match self.m.func_index.get(n) {
                Some(&f) => f,
                None => {
                    return Err(PtxError::new(
                        line,
                        format!("call to unknown or indirect target `{n}`"),
                    ))
                }
            },
            _ => return Err(PtxError::new(line, "malformed call")),
        };
        let args = match it.next() {
            Some(ROp::List(l)) => l.clone(),
            None => Vec::new(),
            _ => return Err(PtxError::new(line, "malformed call arguments")),
        };
        let conv = |d: &mut Self, v: &[ROp]| -> R<Vec<Opnd>> {
            v.iter()
                .map(|r| d.operand(r, Ty::B64, 0, 0, line))
                .collect()
        };
        let info = CallInfo {
            callee,
            args: conv(self, &args)?,
            rets: conv(self, &rets)?,
        };
        let f = &self.m.funcs[callee as usize];
        if info.args.len() != f.params.len() || info.rets.len() > f.rets.len() {
            return Err(PtxError::new(
                line,
                format!("call to `{}` with the wrong number of arguments", f.name),
            ));
        }
        self.calls.push(info);
        Ok(Opnd::Imm(self.calls.len() as u64 - 1))
    }
}
