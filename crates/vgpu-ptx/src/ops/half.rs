//! Half precision: `.f16`, `.bf16` and their packed pairs `.f16x2`,
//! `.bf16x2` — `add sub mul fma` (`.rn`, `.ftz`, `.sat`, `.relu`),
//! `min max` (`.NaN`), `abs neg`, `ex2.approx`, `tanh.approx`.
//!
//! Each half is computed exactly (or rounded to odd) in f64 and rounded
//! once, so results are bit-exact.

use super::{is_half, Decoded, Mods};
use crate::exec::block::Block;
use crate::exec::thread::Thread;
use crate::exec::X;
use crate::ir::{Inst, Op, Ty};
use crate::num::{sum_odd, Fmt};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HalfKind {
    Add,
    Sub,
    Mul,
    Fma,
    Min,
    Max,
    Abs,
    Neg,
    Ex2,
    Tanh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HalfOp {
    pub kind: HalfKind,
    /// `.relu`: negative results become +0.
    pub relu: bool,
    /// `.NaN` on min/max.
    pub nan: bool,
}

pub(crate) fn decode(m: &Mods) -> Option<Decoded> {
    let ty = m.ty();
    if !is_half(ty) {
        return None;
    }
    let kind = match m.opcode {
        "add" => HalfKind::Add,
        "sub" => HalfKind::Sub,
        "mul" => HalfKind::Mul,
        "fma" => HalfKind::Fma,
        "min" => HalfKind::Min,
        "max" => HalfKind::Max,
        "abs" => HalfKind::Abs,
        "neg" => HalfKind::Neg,
        "ex2" => HalfKind::Ex2,
        "tanh" => HalfKind::Tanh,
        _ => return None,
    };
    let op = HalfOp {
        kind,
        relu: m.has("relu"),
        nan: m.has("NaN"),
    };
    Some(Decoded::new(Op::Half(op), ty).fp(m))
}

/// The format of a half type, and whether it is a packed pair.
pub(crate) fn fmt_of(ty: Ty) -> (Fmt, bool) {
    match ty {
        Ty::F16 => (Fmt::F16, false),
        Ty::F16x2 => (Fmt::F16, true),
        Ty::Bf16 => (Fmt::Bf16, false),
        _ => (Fmt::Bf16, true),
    }
}

fn lane(i: &Inst, op: HalfOp, fmt: Fmt, a: u64, b: u64, c: u64) -> u64 {
    let flush = |v: u64| {
        if i.ftz && fmt.is_subnormal(v) {
            v & 0x8000
        } else {
            v
        }
    };
    let (a, b, c) = (flush(a), flush(b), flush(c));
    let (x, y, z) = (fmt.to_f64(a), fmt.to_f64(b), fmt.to_f64(c));
    let r = match op.kind {
        HalfKind::Abs => return a & 0x7fff,
        HalfKind::Neg => return a ^ 0x8000,
        HalfKind::Min | HalfKind::Max => {
            let r = super::float::minmax(x, y, op.kind == HalfKind::Max, op.nan);
            let bits = fmt.round(r, i.rnd);
            return if op.relu && !r.is_nan() && r < 0.0 {
                0
            } else {
                bits
            };
        }
        HalfKind::Add => fmt.round(sum_odd(x, y), i.rnd),
        HalfKind::Sub => fmt.round(sum_odd(x, -y), i.rnd),
        // Products of two halves are exact in f64.
        HalfKind::Mul => fmt.round(x * y, i.rnd),
        HalfKind::Fma => fmt.round(sum_odd(x * y, z), i.rnd),
        HalfKind::Ex2 => fmt.round(x.exp2(), i.rnd),
        HalfKind::Tanh => fmt.round(x.tanh(), i.rnd),
    };
    let v = fmt.to_f64(r);
    let r = if i.ftz && fmt.is_subnormal(r) {
        r & 0x8000
    } else {
        r
    };
    if v.is_nan() {
        // NaN stays NaN through .relu; .sat makes it +0.
        return if i.sat { 0 } else { fmt.nan() };
    }
    if op.relu && v < 0.0 {
        return 0;
    }
    if i.sat {
        if v < 0.0 {
            return 0;
        }
        if v > 1.0 {
            return fmt.round(1.0, i.rnd);
        }
    }
    r
}

pub(crate) fn exec(b: &mut Block, t: &mut Thread, i: &Inst, op: HalfOp) -> X<()> {
    let (fmt, pair) = fmt_of(i.ty);
    let x = b.arg(t, i, 1);
    let y = b.arg(t, i, 2);
    let z = b.arg(t, i, 3);
    let r = if pair {
        let lo = lane(i, op, fmt, x & 0xffff, y & 0xffff, z & 0xffff);
        let hi = lane(
            i,
            op,
            fmt,
            (x >> 16) & 0xffff,
            (y >> 16) & 0xffff,
            (z >> 16) & 0xffff,
        );
        lo | hi << 16
    } else {
        lane(i, op, fmt, x & 0xffff, y & 0xffff, z & 0xffff)
    };
    Block::set(t, &i.ops[0], r);
    Ok(())
}
