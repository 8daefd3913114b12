//! Decoding a function body: declarations, labels, and each instruction's
//! operands resolved to registers, symbols and branch targets.

use std::collections::HashMap;

use super::syntax::{parse_inst, ROp, RawInst, P, R};
use super::{add_var, imm_bits, parse_var, var_size, RawFunc, VarDecl};
use crate::ir::*;
use crate::lexer::{Tok, Token};
use crate::ops;
use crate::ops::control::CtlOp;
use crate::{Module, PtxError};

#[derive(Clone, Copy)]
enum Name {
    Reg(u32),
    Sym(Sym),
}

pub(super) struct Decoder<'m> {
    m: &'m mut Module,
    fi: u32,
    scopes: Vec<HashMap<String, Name>>,
    nregs: u32,
    reg_mask: Vec<u64>,
    /// Declared type of each register.
    reg_ty: Vec<Ty>,
    param_frame: u32,
    local_frame: u32,
    insts: Vec<Inst>,
    calls: Vec<CallInfo>,
    labels: HashMap<String, u32>,
    fixups: Vec<(usize, usize, String, u32)>,
}

impl<'m> Decoder<'m> {
    pub(super) fn new(m: &'m mut Module, fi: u32, raw: &RawFunc) -> Self {
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
            reg_ty: Vec::new(),
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
        self.reg_ty.push(ty);
        self.reg_mask.push(match ty.bits() {
            64 | 128 => u64::MAX,
            b => (1u64 << b) - 1,
        });
        self.declare(name, Name::Reg(r));
    }

    pub(super) fn decode_body(&mut self, toks: &[Token]) -> R<()> {
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
                Tok::Ident(_)
                    if p.peek_at(1) == Some(&Tok::Punct(':'))
                        && matches!(p.peek_at(2), Some(Tok::Dot(d)) if d == "callprototype" || d == "calltargets") =>
                {
                    // `Fproto: .callprototype ...;` names an indirect call's
                    // signature; calls check the callee's own at run time.
                    p.skip_past(';')?;
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

impl Decoder<'_> {
    fn decode_inst(&mut self, ri: RawInst) -> R<Inst> {
        let line = ri.line;
        let text: Box<str> = std::iter::once(ri.opcode.as_str())
            .chain(ri.mods.iter().map(|s| s.as_str()))
            .collect::<Vec<_>>()
            .join(".")
            .into();
        let m = ops::Mods::new(&ri.opcode, &ri.mods);
        let d = ops::decode(&m).unwrap_or_else(|| ops::Decoded::new(Op::Unsupported, m.ty()));
        let guard = match &ri.guard {
            Some((n, neg)) => match self.lookup(n) {
                Some(Name::Reg(r)) => Some((r, *neg)),
                _ => return Err(PtxError::new(line, format!("unknown predicate `{n}`"))),
            },
            None => None,
        };
        let ii = self.insts.len();
        let mut ops = Vec::with_capacity(ri.ops.len());
        if d.op == Op::Ctl(CtlOp::Call) {
            ops.push(self.decode_call(&ri)?);
        } else if d.op != Op::Unsupported {
            for (oi, r) in ri.ops.iter().enumerate() {
                // Each operand's immediate is read in the type it feeds.
                let imm_ty = d.imm.get(oi).copied().flatten().unwrap_or(d.ty);
                match r {
                    ROp::Pair(a, b) => {
                        ops.push(self.operand(a, imm_ty, ii, ops.len(), line)?);
                        ops.push(self.operand(b, imm_ty, ii, ops.len(), line)?);
                    }
                    _ => ops.push(self.operand(r, imm_ty, ii, ops.len(), line)?),
                }
            }
            // `p[|q]` destinations: make an omitted second one explicit.
            if d.pair_dst && !matches!(ri.ops.first(), Some(ROp::Pair(..))) && !ops.is_empty() {
                ops.insert(1, Opnd::Sink);
            }
        }
        let op = match d.op {
            Op::Mem(mo) => Op::Mem(ops::memory::refine(mo, &ops, |r| {
                self.reg_ty.get(r as usize) == Some(&Ty::Pred)
            })),
            op => op,
        };
        Ok(Inst {
            op,
            ty: d.ty,
            rnd: d.rnd,
            ftz: d.ftz,
            sat: d.sat,
            vec: d.vec,
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
        // call (rets), target, (args)[, prototype | calltargets | table]
        let mut it = ri.ops.iter().peekable();
        let mut rets = Vec::new();
        if let Some(ROp::List(l)) = it.peek() {
            rets = l.clone();
            it.next();
        }
        let callee = match it.next() {
            Some(ROp::Name(n)) => match (self.m.func_index.get(n), self.lookup(n)) {
                (Some(&f), _) => Callee::Direct(f),
                (None, Some(Name::Reg(r))) => Callee::Indirect(Opnd::Reg(r)),
                _ => return Err(PtxError::new(line, format!("call to unknown target `{n}`"))),
            },
            _ => return Err(PtxError::new(line, "malformed call")),
        };
        let args = match it.next() {
            Some(ROp::List(l)) => l.clone(),
            // The prototype of an indirect call without arguments.
            Some(ROp::Name(_)) | None => Vec::new(),
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
        // An indirect target's signature is checked when it is called.
        if let Callee::Direct(callee) = info.callee {
            let f = &self.m.funcs[callee as usize];
            if info.args.len() != f.params.len() || info.rets.len() > f.rets.len() {
                return Err(PtxError::new(
                    line,
                    format!("call to `{}` with the wrong number of arguments", f.name),
                ));
            }
        }
        self.calls.push(info);
        Ok(Opnd::Imm(self.calls.len() as u64 - 1))
    }
}
