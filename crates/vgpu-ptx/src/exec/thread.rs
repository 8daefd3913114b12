//! One CUDA thread: its registers and frames, the instruction loop, operand
//! access and the per-thread and per-block memory spaces.

use super::block::Block;
use super::X;
use crate::ir::*;
use crate::memory::MemError;
use crate::ops;
use crate::ExecError;

// Generic-address windows for the per-block and per-thread spaces. Device
// pointers are host user-space addresses (< 2^47), so a top-byte tag never
// collides with them.
pub(crate) const TAG_SHIFT: u32 = 56;
pub(crate) const SHARED_TAG: u64 = 0xF1;
pub(crate) const LOCAL_TAG: u64 = 0xF2;
pub(crate) const PARAM_TAG: u64 = 0xF3;
/// Function "addresses" (`mov.u64 %rd, func;`) for indirect calls.
pub(crate) const FUNC_TAG: u64 = 0xF4;
pub(crate) const WIN_MASK: u64 = (1 << TAG_SHIFT) - 1;

pub(crate) const MAX_CALL_DEPTH: usize = 1024;
pub(crate) const MAX_LOCAL: usize = 1 << 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum St {
    Run,
    /// Stopped at a warp collective (pc points at it).
    Warp,
    /// Stopped at a block barrier (pc points at it).
    Bar,
    /// Stopped in a grid-wide barrier (`cudaCGSynchronize`; pc is past it).
    GridBar,
    Done,
}

pub(crate) struct Frame {
    pub func: u32,
    pub pc: u32,
    pub regs: Vec<u64>,
    pub param_base: u32,
    pub local_base: u32,
    pub call: u32,
}

pub(crate) struct Thread {
    pub regs: Vec<u64>,
    pub func: u32,
    pub pc: u32,
    pub param_base: u32,
    pub local_base: u32,
    pub stack: Vec<Frame>,
    pub spare_regs: Vec<Vec<u64>>,
    /// Param space above the kernel's parameters (call sequences).
    pub params: Vec<u8>,
    pub local: Vec<u8>,
    pub tid: [u32; 3],
    pub linear: u32,
    pub st: St,
    /// The carry flag of `add.cc` / `addc` chains.
    pub cc: bool,
}

impl Thread {
    pub fn new() -> Self {
        Thread {
            regs: Vec::new(),
            func: 0,
            pc: 0,
            param_base: 0,
            local_base: 0,
            stack: Vec::new(),
            spare_regs: Vec::new(),
            params: Vec::new(),
            local: Vec::new(),
            tid: [0; 3],
            linear: 0,
            st: St::Done,
            cc: false,
        }
    }

    /// The instruction the thread stands at.
    pub fn inst<'m>(&self, m: &'m crate::Module) -> &'m Inst {
        &m.funcs[self.func as usize].insts[self.pc as usize]
    }
}

pub(crate) fn unsupported(i: &Inst) -> ExecError {
    ExecError::Unsupported {
        inst: i.text.to_string(),
        line: i.line,
    }
}

pub(crate) fn mem_err(e: MemError, line: u32) -> ExecError {
    match e {
        MemError::IllegalAddress { addr } => ExecError::IllegalAddress { addr, line },
        MemError::MisalignedAddress { addr } => ExecError::MisalignedAddress { addr, line },
    }
}

/// Where an address resolved to.
#[derive(Clone, Copy)]
pub(crate) enum Loc {
    Global(u64),
    Shared(u64),
    Local(u64),
    Param(u64),
}

/// What the instruction loop does after a control instruction.
pub(crate) enum Flow {
    Next,
    /// The thread changed function (call or return): reload the body.
    Switched,
    /// The thread blocked or finished.
    Stop,
}

impl Block<'_, '_> {
    fn sym(&self, t: &Thread, s: Sym) -> u64 {
        match s {
            Sym::Global(g) => self.l.gaddr[g as usize],
            Sym::Shared(v) => self.l.meta.shared_offsets[v as usize] as u64,
            Sym::DynShared => self.l.meta.dyn_base as u64,
            Sym::Local(o) => (t.local_base + o) as u64,
            Sym::Param(o) => (t.param_base + o) as u64,
        }
    }

    /// An operand's value: registers and immediates inline, the rest out
    /// of line.
    #[inline(always)]
    pub(crate) fn get(&self, t: &Thread, o: &Opnd) -> u64 {
        match o {
            Opnd::Reg(r) => t.regs[*r as usize],
            Opnd::Imm(v) => *v,
            _ => self.get_other(t, o),
        }
    }

    #[inline(never)]
    fn get_other(&self, t: &Thread, o: &Opnd) -> u64 {
        match o {
            Opnd::Reg(r) => t.regs[*r as usize],
            Opnd::Imm(v) => *v,
            Opnd::NotReg(r) => (t.regs[*r as usize] == 0) as u64,
            Opnd::Sreg(s) => ops::sreg::value(self, t, *s),
            Opnd::Sym(s) => self.sym(t, *s),
            Opnd::Addr(b, off) => self.get(t, b).wrapping_add(*off as u64),
            Opnd::Func(f) => (FUNC_TAG << TAG_SHIFT) | *f as u64,
            _ => 0,
        }
    }

    /// Operand `k` of `i`, or 0 when absent.
    #[inline(always)]
    pub(crate) fn arg(&self, t: &Thread, i: &Inst, k: usize) -> u64 {
        i.ops.get(k).map_or(0, |o| self.get(t, o))
    }

    #[inline(always)]
    pub(crate) fn set(t: &mut Thread, o: &Opnd, v: u64) {
        if let Opnd::Reg(r) = o {
            t.regs[*r as usize] = v;
        }
    }

    /// The registers of a `{a, b, ...}` operand (or the operand itself).
    pub(crate) fn elems(o: &Opnd) -> &[Opnd] {
        match o {
            Opnd::Vec(v) => v,
            o => std::slice::from_ref(o),
        }
    }

    #[inline(always)]
    pub(crate) fn addr(&self, t: &Thread, o: &Opnd) -> u64 {
        match o {
            Opnd::Addr(b, off) => self.get(t, b).wrapping_add(*off as u64),
            o => self.get(t, o),
        }
    }

    pub(crate) fn locate(&self, space: Space, a: u64) -> Loc {
        match space {
            Space::Global | Space::Const => Loc::Global(a),
            Space::Shared => Loc::Shared(a),
            Space::Local => Loc::Local(a),
            Space::Param => Loc::Param(a),
            Space::Generic => match a >> TAG_SHIFT {
                SHARED_TAG => Loc::Shared(a & WIN_MASK),
                LOCAL_TAG => Loc::Local(a & WIN_MASK),
                PARAM_TAG => Loc::Param(a & WIN_MASK),
                _ => Loc::Global(a),
            },
        }
    }

    /// Bytes of a per-block or per-thread space, bounds-checked.
    pub(crate) fn slice_mut<'s>(
        shared: &'s mut [u8],
        t: &'s mut Thread,
        loc: Loc,
        len: usize,
        line: u32,
    ) -> X<&'s mut [u8]> {
        let (buf, off, tag) = match loc {
            Loc::Shared(o) => (shared, o, SHARED_TAG),
            Loc::Local(o) => (&mut t.local[..], o, LOCAL_TAG),
            Loc::Param(o) => (&mut t.params[..], o, PARAM_TAG),
            Loc::Global(_) => unreachable!("global memory goes through Memory"),
        };
        let ill = ExecError::IllegalAddress {
            addr: (tag << TAG_SHIFT) | (off & WIN_MASK),
            line,
        };
        let o = usize::try_from(off).map_err(|_| ill.clone())?;
        match o.checked_add(len) {
            Some(e) if e <= buf.len() => Ok(&mut buf[o..e]),
            _ => Err(ill),
        }
    }

    pub(crate) fn load(&mut self, t: &mut Thread, loc: Loc, buf: &mut [u8], line: u32) -> X<()> {
        match loc {
            Loc::Global(a) => self.l.mem.read(a, buf).map_err(|e| mem_err(e, line)),
            Loc::Param(o) if o < self.l.kparam_len as u64 => {
                let o = o as usize;
                match self.l.kparams.get(o..o + buf.len()) {
                    Some(s) => {
                        buf.copy_from_slice(s);
                        Ok(())
                    }
                    None => Err(ExecError::IllegalAddress {
                        addr: (PARAM_TAG << TAG_SHIFT) | o as u64,
                        line,
                    }),
                }
            }
            Loc::Param(o) => {
                let o = o - self.l.kparam_len as u64;
                let s = Self::slice_mut(&mut self.shared, t, Loc::Param(o), buf.len(), line)?;
                buf.copy_from_slice(s);
                Ok(())
            }
            _ => {
                let s = Self::slice_mut(&mut self.shared, t, loc, buf.len(), line)?;
                buf.copy_from_slice(s);
                Ok(())
            }
        }
    }

    pub(crate) fn store(&mut self, t: &mut Thread, loc: Loc, data: &[u8], line: u32) -> X<()> {
        match loc {
            Loc::Global(a) => self.l.mem.write(a, data).map_err(|e| mem_err(e, line)),
            Loc::Param(o) if o < self.l.kparam_len as u64 => Err(ExecError::IllegalAddress {
                addr: (PARAM_TAG << TAG_SHIFT) | o,
                line,
            }),
            Loc::Param(o) => {
                let o = o - self.l.kparam_len as u64;
                Self::slice_mut(&mut self.shared, t, Loc::Param(o), data.len(), line)?
                    .copy_from_slice(data);
                Ok(())
            }
            _ => {
                Self::slice_mut(&mut self.shared, t, loc, data.len(), line)?.copy_from_slice(data);
                Ok(())
            }
        }
    }

    /// Runs one thread until it blocks (barrier, warp collective) or ends —
    /// or, with `lockstep`, until it has executed one instruction that other
    /// threads can observe (a memory access or a call), so that the lanes
    /// of a warp interleave those in program order.
    pub(crate) fn run(&mut self, t: &mut Thread, lockstep: bool) -> X<()> {
        let m = self.l.m;
        let mut insts: &[Inst] = &m.funcs[t.func as usize].insts;
        loop {
            self.count += 1;
            let Some(i) = insts.get(t.pc as usize) else {
                // Falling off the end of a body is an implicit return.
                if !self.ret(t, 0)? {
                    t.st = St::Done;
                    return Ok(());
                }
                insts = &m.funcs[t.func as usize].insts;
                continue;
            };
            if let Some((p, neg)) = i.guard {
                if (t.regs[p as usize] != 0) == neg {
                    t.pc += 1;
                    continue;
                }
            }
            t.pc += 1;
            match i.op {
                Op::Int(op) => ops::int::exec(self, t, i, op)?,
                Op::Float(op) => ops::float::exec(self, t, i, op)?,
                Op::Half(op) => ops::half::exec(self, t, i, op)?,
                Op::Bits(op) => ops::bits::exec(self, t, i, op)?,
                Op::Cmp(op) => ops::compare::exec(self, t, i, op)?,
                Op::Cvt(op) => ops::convert::exec(self, t, i, op)?,
                Op::Mem(op) => {
                    ops::memory::exec(self, t, i, op)?;
                    if lockstep {
                        return Ok(());
                    }
                }
                Op::Ctl(op) => match ops::control::exec(self, t, i, op)? {
                    Flow::Next => {}
                    // A call may run a runtime function (printf) in place.
                    Flow::Switched if lockstep => return Ok(()),
                    Flow::Switched => insts = &m.funcs[t.func as usize].insts,
                    Flow::Stop => return Ok(()),
                },
                Op::Warp(_) | Op::Matrix(_) => {
                    // The block scheduler runs it with the rest of the warp.
                    t.pc -= 1;
                    t.st = St::Warp;
                    return Ok(());
                }
                Op::Unsupported => return Err(unsupported(i)),
            }
        }
    }

    /// Calls a function, or runs a runtime builtin in place. Returns false
    /// when the thread must stop (a builtin's grid barrier).
    pub(crate) fn call(&mut self, t: &mut Thread, i: &Inst) -> X<bool> {
        let idx = self.get(t, &i.ops[0]) as u32;
        let m = self.l.m;
        let ci = &m.funcs[t.func as usize].calls[idx as usize];
        let target = match &ci.callee {
            Callee::Direct(f) => *f,
            Callee::Indirect(o) => {
                let a = self.get(t, o);
                let f = (a & WIN_MASK) as usize;
                let ok = a >> TAG_SHIFT == FUNC_TAG
                    && m.funcs.get(f).is_some_and(|f| {
                        !f.is_entry
                            && (f.defined || f.builtin.is_some())
                            && f.params.len() == ci.args.len()
                            && f.rets.len() >= ci.rets.len()
                    });
                if !ok {
                    return Err(ExecError::IllegalAddress {
                        addr: a,
                        line: i.line,
                    });
                }
                f as u32
            }
        };
        let callee = &m.funcs[target as usize];
        if let Some(builtin) = callee.builtin {
            return self.call_builtin(t, i, ci, callee, builtin);
        }
        if t.stack.len() >= MAX_CALL_DEPTH {
            return Err(ExecError::StackOverflow { line: i.line });
        }
        // New frame's param area sits above everything the caller uses.
        let caller_top = t.param_base + m.funcs[t.func as usize].param_frame;
        let new_pbase = caller_top.max(self.l.kparam_len).next_multiple_of(8);
        let new_lbase = (t.local_base + m.funcs[t.func as usize].local_frame).next_multiple_of(16);
        let pend = (new_pbase - self.l.kparam_len + callee.param_frame) as usize;
        let lend = (new_lbase + callee.local_frame) as usize;
        if lend > MAX_LOCAL || pend > MAX_LOCAL {
            return Err(ExecError::StackOverflow { line: i.line });
        }
        if t.params.len() < pend {
            t.params.resize(pend, 0);
        }
        if t.local.len() < lend {
            t.local.resize(lend, 0);
        }
        for (arg, p) in ci.args.iter().zip(&callee.params) {
            let dst = Loc::Param((new_pbase + p.offset) as u64);
            let mut buf = vec![0u8; p.size as usize];
            match arg {
                Opnd::Sym(Sym::Param(_)) => {
                    let src = Loc::Param(self.get(t, arg));
                    self.load(t, src, &mut buf, i.line)?;
                }
                o => {
                    let v = self.get(t, o).to_le_bytes();
                    let n = buf.len().min(8);
                    buf[..n].copy_from_slice(&v[..n]);
                }
            }
            self.store(t, dst, &buf, i.line)?;
        }
        let mut regs = t.spare_regs.pop().unwrap_or_default();
        regs.clear();
        regs.resize(callee.nregs as usize, 0);
        let saved = Frame {
            func: t.func,
            pc: t.pc,
            regs: std::mem::replace(&mut t.regs, regs),
            param_base: t.param_base,
            local_base: t.local_base,
            call: idx,
        };
        t.stack.push(saved);
        t.func = target;
        t.pc = 0;
        t.param_base = new_pbase;
        t.local_base = new_lbase;
        Ok(true)
    }

    /// The value of call argument `arg` for a parameter of `size` bytes.
    fn arg_value(&mut self, t: &mut Thread, arg: &Opnd, size: u32, line: u32) -> X<u64> {
        match arg {
            Opnd::Sym(Sym::Param(_)) => {
                let mut buf = [0u8; 8];
                let src = Loc::Param(self.get(t, arg));
                let n = (size as usize).min(8);
                self.load(t, src, &mut buf[..n], line)?;
                Ok(u64::from_le_bytes(buf))
            }
            o => Ok(self.get(t, o)),
        }
    }

    fn call_builtin(
        &mut self,
        t: &mut Thread,
        i: &Inst,
        ci: &CallInfo,
        callee: &Function,
        builtin: crate::runtime::Builtin,
    ) -> X<bool> {
        let mut args = [0u64; 8];
        for (k, (arg, p)) in ci.args.iter().zip(&callee.params).enumerate().take(8) {
            args[k] = self.arg_value(t, arg, p.size, i.line)?;
        }
        let n = ci.args.len().min(8);
        let (ret, go_on) = match crate::runtime::call(self, t, builtin, &args[..n], i.line)? {
            crate::runtime::After::Return(v) => (v, true),
            crate::runtime::After::GridSync => (0, false),
        };
        if let (Some(dst), Some(p)) = (ci.rets.first(), callee.rets.first()) {
            match dst {
                Opnd::Sym(Sym::Param(_)) => {
                    let d = Loc::Param(self.get(t, dst));
                    let bytes = ret.to_le_bytes();
                    self.store(t, d, &bytes[..(p.size as usize).min(8)], i.line)?;
                }
                o => Self::set(t, o, ret),
            }
        }
        if !go_on {
            t.st = St::GridBar;
        }
        Ok(go_on)
    }

    /// Returns false when the thread's kernel frame returned.
    pub(crate) fn ret(&mut self, t: &mut Thread, line: u32) -> X<bool> {
        let Some(fr) = t.stack.pop() else {
            return Ok(false);
        };
        let m = self.l.m;
        let callee = &m.funcs[t.func as usize];
        let ci = &m.funcs[fr.func as usize].calls[fr.call as usize];
        let callee_pbase = t.param_base;
        let callee_regs = std::mem::replace(&mut t.regs, fr.regs);
        t.spare_regs.push(callee_regs);
        t.func = fr.func;
        t.pc = fr.pc;
        t.param_base = fr.param_base;
        t.local_base = fr.local_base;
        for (dst, p) in ci.rets.iter().zip(&callee.rets) {
            let mut buf = vec![0u8; p.size as usize];
            self.load(
                t,
                Loc::Param((callee_pbase + p.offset) as u64),
                &mut buf,
                line,
            )?;
            match dst {
                Opnd::Sym(Sym::Param(_)) => {
                    let d = Loc::Param(self.get(t, dst));
                    self.store(t, d, &buf, line)?;
                }
                o => {
                    let mut w = [0u8; 8];
                    let n = buf.len().min(8);
                    w[..n].copy_from_slice(&buf[..n]);
                    Self::set(t, o, u64::from_le_bytes(w));
                }
            }
        }
        Ok(true)
    }
}
