//! Memory: `ld`/`ldu`/`st` (vectors up to `.v8`), `atom`/`red` (integer,
//! f32/f64, f16/bf16 and their pairs), `cp.async` (executed synchronously,
//! so `commit_group`/`wait_group`/`wait_all` have nothing to wait for), and
//! the hints that change no result (`prefetch`, `fence`, `membar`,
//! `createpolicy`, `discard`, `applypriority`).

use super::half::fmt_of;
use super::{is_half, is_int, Decoded, Mods};
use crate::exec::block::Block;
use crate::exec::thread::{mem_err, Loc, Thread};
use crate::exec::X;
use crate::ir::{AtomOp, Inst, Op, Opnd, Rnd, Space, Ty};
use crate::num::{bf32, f32b, f64b, mask_bits, sum_odd, sx};
use crate::ExecError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemOp {
    Ld {
        space: Space,
    },
    St {
        space: Space,
    },
    /// `atom` (`ret`: with a destination) and `red`.
    Atom {
        space: Space,
        op: AtomOp,
        ret: bool,
    },
    /// `cp.async [dst], [src], cp-size{, src-size | ignore-src}`.
    CpAsync {
        /// The fourth operand is an `ignore-src` predicate.
        ignore_src: bool,
    },
    /// `createpolicy`: an opaque cache policy; 0 serves.
    CreatePolicy,
    /// An instruction that changes no result here.
    Nop,
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

pub(crate) fn decode(m: &Mods) -> Option<Decoded> {
    let ty = m.ty();
    let mem = |op| Some(Decoded::new(Op::Mem(op), ty));
    match m.opcode {
        "ld" | "ldu" => {
            let space = m.space();
            let mut d = Decoded::new(Op::Mem(MemOp::Ld { space }), ty);
            d.vec = m.vec();
            Some(d)
        }
        "st" => {
            let space = m.space();
            let mut d = Decoded::new(Op::Mem(MemOp::St { space }), ty);
            d.vec = m.vec();
            Some(d)
        }
        "atom" | "red" => {
            let space = m.space();
            let Some(op) = m.find(atom_of) else {
                return super::unsupported(ty);
            };
            // `.noftz` is the only form of half atomics.
            m.has("noftz");
            let ok = match ty {
                t if is_int(t) => {
                    matches!(t.bits(), 32 | 64) || (op == AtomOp::Cas && t.bits() == 16)
                }
                Ty::F32 | Ty::F64 => matches!(op, AtomOp::Add | AtomOp::Exch),
                t if is_half(t) => matches!(op, AtomOp::Add | AtomOp::Min | AtomOp::Max),
                _ => false,
            };
            if !ok || m.vec() != 1 {
                return super::unsupported(ty);
            }
            mem(MemOp::Atom {
                space,
                op,
                ret: m.opcode == "atom",
            })
        }
        "cp" if m.has("async") => {
            if m.has("commit_group") || m.has("wait_group") || m.has("wait_all") {
                return mem(MemOp::Nop);
            }
            if m.has("bulk") || m.has("mbarrier") {
                return super::unsupported(ty);
            }
            m.space();
            // The source space, after the destination's.
            m.has("global");
            Some(Decoded::new(
                Op::Mem(MemOp::CpAsync { ignore_src: false }),
                Ty::U32,
            ))
        }
        "createpolicy" => {
            m.has("fractional");
            m.has("range");
            mem(MemOp::CreatePolicy)
        }
        "prefetch" | "prefetchu" | "discard" | "applypriority" | "fence" | "membar" => {
            // Hints and ordering: every modifier is fine.
            m.accept_all();
            mem(MemOp::Nop)
        }
        _ => None,
    }
}

/// Refines a decoded op once its operands are known: whether `cp.async`'s
/// fourth operand is a predicate (`ignore-src`) or a size.
pub(crate) fn refine(op: MemOp, ops: &[Opnd], is_pred: impl Fn(u32) -> bool) -> MemOp {
    match (op, ops.get(3)) {
        (MemOp::CpAsync { .. }, Some(Opnd::Reg(r) | Opnd::NotReg(r))) if is_pred(*r) => {
            MemOp::CpAsync { ignore_src: true }
        }
        _ => op,
    }
}

pub(crate) fn exec(b: &mut Block, t: &mut Thread, i: &Inst, op: MemOp) -> X<()> {
    match op {
        MemOp::Ld { space } => ld(b, t, i, space),
        MemOp::St { space } => st(b, t, i, space),
        MemOp::Atom { space, op, ret } => {
            let old = atomic(b, t, i, space, op, ret)?;
            if ret {
                Block::set(t, &i.ops[0], old);
            }
            Ok(())
        }
        MemOp::CpAsync { ignore_src } => cp_async(b, t, i, ignore_src),
        MemOp::CreatePolicy => {
            Block::set(t, &i.ops[0], 0);
            Ok(())
        }
        MemOp::Nop => Ok(()),
    }
}

fn misaligned(addr: u64, i: &Inst) -> ExecError {
    ExecError::MisalignedAddress { addr, line: i.line }
}

fn ld(b: &mut Block, t: &mut Thread, i: &Inst, space: Space) -> X<()> {
    let a = b.addr(t, &i.ops[1]);
    let es = i.ty.bytes() as usize;
    let n = i.vec as usize;
    let total = es * n;
    if a & (total as u64 - 1) != 0 {
        return Err(misaligned(a, i));
    }
    if let (1, Opnd::Reg(r)) = (n, &i.ops[0]) {
        // One scalar: no vector bookkeeping.
        if es <= 8 {
            let mut buf = [0u8; 8];
            let loc = b.locate(space, a);
            b.load(t, loc, &mut buf[..es], i.line)?;
            let mut v = u64::from_le_bytes(buf);
            if i.ty.is_signed() {
                let rmask = b.l.m.funcs[t.func as usize].reg_mask[*r as usize];
                v = sx(v, i.ty.bits()) as u64 & rmask;
            }
            t.regs[*r as usize] = v;
            return Ok(());
        }
    }
    let mut buf = [0u8; 128];
    let loc = b.locate(space, a);
    b.load(t, loc, &mut buf[..total], i.line)?;
    let rmask = &b.l.m.funcs[t.func as usize].reg_mask;
    let dsts = Block::elems(&i.ops[0]);
    for (k, d) in dsts.iter().enumerate().take(n) {
        if let Opnd::Reg(r) = d {
            let mut w = [0u8; 8];
            let take = es.min(8);
            w[..take].copy_from_slice(&buf[k * es..k * es + take]);
            let mut v = u64::from_le_bytes(w);
            if i.ty.is_signed() {
                v = sx(v, i.ty.bits()) as u64 & rmask[*r as usize];
            }
            t.regs[*r as usize] = v;
        }
    }
    Ok(())
}

fn st(b: &mut Block, t: &mut Thread, i: &Inst, space: Space) -> X<()> {
    let a = b.addr(t, &i.ops[0]);
    let es = i.ty.bytes() as usize;
    let n = i.vec as usize;
    let total = es * n;
    if a & (total as u64 - 1) != 0 {
        return Err(misaligned(a, i));
    }
    if n == 1 && es <= 8 {
        let v = b.get(t, &i.ops[1]).to_le_bytes();
        let loc = b.locate(space, a);
        return b.store(t, loc, &v[..es], i.line);
    }
    let mut buf = [0u8; 128];
    for (k, s) in Block::elems(&i.ops[1]).iter().enumerate().take(n) {
        let v = b.get(t, s);
        let take = es.min(8);
        buf[k * es..k * es + take].copy_from_slice(&v.to_le_bytes()[..take]);
    }
    let loc = b.locate(space, a);
    b.store(t, loc, &buf[..total], i.line)
}

fn cp_async(b: &mut Block, t: &mut Thread, i: &Inst, ignore_src: bool) -> X<()> {
    let dst = b.addr(t, &i.ops[0]);
    let src = b.addr(t, &i.ops[1]);
    let size = b.arg(t, i, 2) as usize;
    if !matches!(size, 4 | 8 | 16) {
        return Err(crate::exec::thread::unsupported(i));
    }
    let src_size = match i.ops.get(3) {
        None => size,
        Some(o) if ignore_src => {
            if b.get(t, o) != 0 {
                0
            } else {
                size
            }
        }
        Some(o) => (b.get(t, o) as usize).min(size),
    };
    if !dst.is_multiple_of(size as u64) {
        return Err(misaligned(dst, i));
    }
    if !src.is_multiple_of(size as u64) {
        return Err(misaligned(src, i));
    }
    // Bytes past `src-size` are zero-filled.
    let mut buf = [0u8; 16];
    if src_size > 0 {
        let loc = b.locate(Space::Global, src);
        b.load(t, loc, &mut buf[..src_size], i.line)?;
    }
    let loc = b.locate(Space::Shared, dst);
    b.store(t, loc, &buf[..size], i.line)
}

/// The new value of an atomic location.
fn atom_apply(op: AtomOp, ty: Ty, old: u64, b: u64, c: u64) -> u64 {
    let bits = ty.bits();
    let m = mask_bits(bits);
    if is_half(ty) {
        let (fmt, pair) = fmt_of(ty);
        let lane = |o: u64, v: u64| {
            let (x, y) = (fmt.to_f64(o & 0xffff), fmt.to_f64(v & 0xffff));
            match op {
                AtomOp::Add => fmt.round(sum_odd(x, y), Rnd::Rn),
                _ => {
                    let r = super::float::minmax(x, y, op == AtomOp::Max, false);
                    fmt.round(r, Rnd::Rn)
                }
            }
        };
        return if pair {
            lane(old, b) | lane(old >> 16, b >> 16) << 16
        } else {
            lane(old, b)
        };
    }
    match op {
        AtomOp::Add => match ty {
            Ty::F32 => bf32(f32b(old) + f32b(b)),
            Ty::F64 => (f64b(old) + f64b(b)).to_bits(),
            _ => old.wrapping_add(b) & m,
        },
        AtomOp::Min => {
            if ty.is_signed() {
                sx(old, bits).min(sx(b, bits)) as u64 & m
            } else {
                (old & m).min(b & m)
            }
        }
        AtomOp::Max => {
            if ty.is_signed() {
                sx(old, bits).max(sx(b, bits)) as u64 & m
            } else {
                (old & m).max(b & m)
            }
        }
        AtomOp::Exch => b & m,
        AtomOp::Cas => {
            if old & m == b & m {
                c & m
            } else {
                old
            }
        }
        AtomOp::And => old & b & m,
        AtomOp::Or => (old | b) & m,
        AtomOp::Xor => (old ^ b) & m,
        AtomOp::Inc => {
            if old & m >= b & m {
                0
            } else {
                (old + 1) & m
            }
        }
        AtomOp::Dec => {
            if old & m == 0 || old & m > b & m {
                b & m
            } else {
                (old - 1) & m
            }
        }
    }
}

fn atomic(b: &mut Block, t: &mut Thread, i: &Inst, space: Space, op: AtomOp, ret: bool) -> X<u64> {
    let base = ret as usize;
    let a = b.addr(t, &i.ops[base]);
    let x = b.get(t, &i.ops[base + 1]);
    let c = i.ops.get(base + 2).map_or(0, |o| b.get(t, o));
    let size = i.ty.bytes() as u64;
    if a & (size - 1) != 0 {
        return Err(misaligned(a, i));
    }
    let loc = b.locate(space, a);
    let Loc::Global(addr) = loc else {
        // Shared/local atomics: the block runs on one OS thread, so a plain
        // read-modify-write is atomic with respect to it.
        let s = Block::slice_mut(&mut b.shared, t, loc, size as usize, i.line)?;
        let mut buf = [0u8; 8];
        buf[..size as usize].copy_from_slice(s);
        let old = u64::from_le_bytes(buf);
        let new = atom_apply(op, i.ty, old, x, c);
        s.copy_from_slice(&new.to_le_bytes()[..size as usize]);
        return Ok(old);
    };
    let mem = b.l.mem;
    let e = |e| mem_err(e, i.line);
    if size == 8 {
        let mut buf = [0u8; 8];
        mem.read(addr, &mut buf).map_err(e)?;
        let mut old = u64::from_le_bytes(buf);
        loop {
            let new = atom_apply(op, i.ty, old, x, c);
            let got = mem.compare_exchange_u64(addr, old, new).map_err(e)?;
            if got == old {
                return Ok(old);
            }
            old = got;
        }
    }
    // 16-bit atomics work on the aligned 32-bit word around them.
    let word = addr & !3;
    let shift = ((addr & 3) * 8) as u32;
    let wmask = mask_bits(size as u32 * 8) << shift;
    let mut buf = [0u8; 4];
    mem.read(word, &mut buf).map_err(e)?;
    let mut cur = u32::from_le_bytes(buf) as u64;
    loop {
        let old = (cur & wmask) >> shift;
        let new = (cur & !wmask) | ((atom_apply(op, i.ty, old, x, c) << shift) & wmask);
        let got = mem
            .compare_exchange_u32(word, cur as u32, new as u32)
            .map_err(e)? as u64;
        if got == cur {
            return Ok(old);
        }
        cur = got;
    }
}
