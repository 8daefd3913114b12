//! Comparisons and selection: `setp`, `set` (all types, including half
//! pairs), `selp`, `slct`.

use super::half::fmt_of;
use super::{is_half, is_int, Decoded, Mods};
use crate::exec::block::Block;
use crate::exec::thread::Thread;
use crate::exec::X;
use crate::ir::{BoolOp, Cmp, Inst, Op, Ty};
use crate::num::{f32b, f64b, mask_bits, sx, Fmt};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Setp {
        cmp: Cmp,
        bop: Option<BoolOp>,
    },
    /// `set`: the result type is `dty`; `Inst::ty` is the compared type.
    Set {
        cmp: Cmp,
        bop: Option<BoolOp>,
        dty: Ty,
    },
    Selp,
    /// `slct`: `fsel` when the selector is `.f32`.
    Slct {
        fsel: bool,
    },
}

pub(crate) fn decode(m: &Mods) -> Option<Decoded> {
    let comparable = |t: Ty| is_int(t) || t.is_f32_or_f64() || is_half(t);
    match m.opcode {
        "setp" | "set" => {
            let (cmp, bop) = (m.cmp(), m.bop());
            let sty = m.ty();
            let d = |op| Decoded::new(Op::Cmp(op), sty).fp(m);
            match (m.opcode, cmp) {
                (_, None) => super::unsupported(sty),
                (_, _) if !comparable(sty) => super::unsupported(sty),
                ("setp", Some(cmp)) => {
                    let mut d = d(CmpOp::Setp { cmp, bop }).imm(4, Ty::Pred);
                    d.pair_dst = true;
                    Some(d)
                }
                (_, Some(cmp)) if m.tys.len() == 2 => {
                    let dty = m.tys[0];
                    Some(d(CmpOp::Set { cmp, bop, dty }).imm(3, Ty::Pred))
                }
                _ => super::unsupported(sty),
            }
        }
        "selp" => Some(Decoded::new(Op::Cmp(CmpOp::Selp), m.ty()).imm(3, Ty::Pred)),
        "slct" if m.tys.len() == 2 => {
            let op = CmpOp::Slct {
                fsel: m.tys[1] == Ty::F32,
            };
            Some(Decoded::new(Op::Cmp(op), m.tys[0]).imm(3, m.tys[1]))
        }
        _ => None,
    }
}

fn float_cmp(cmp: Cmp, a: f64, b: f64) -> bool {
    let un = a.is_nan() || b.is_nan();
    match cmp {
        Cmp::Eq => a == b,
        Cmp::Ne => !un && a != b,
        Cmp::Lt | Cmp::Lo => a < b,
        Cmp::Le | Cmp::Ls => a <= b,
        Cmp::Gt | Cmp::Hi => a > b,
        Cmp::Ge | Cmp::Hs => a >= b,
        Cmp::Equ => un || a == b,
        Cmp::Neu => un || a != b,
        Cmp::Ltu => un || a < b,
        Cmp::Leu => un || a <= b,
        Cmp::Gtu => un || a > b,
        Cmp::Geu => un || a >= b,
        Cmp::Num => !un,
        Cmp::Nan => un,
    }
}

fn int_cmp(cmp: Cmp, ty: Ty, a: u64, b: u64) -> bool {
    let bits = ty.bits();
    let (ua, ub) = (a & mask_bits(bits), b & mask_bits(bits));
    let (sa, sb) = (sx(a, bits), sx(b, bits));
    let signed = ty.is_signed();
    match cmp {
        Cmp::Eq | Cmp::Equ => ua == ub,
        Cmp::Ne | Cmp::Neu => ua != ub,
        Cmp::Lt | Cmp::Ltu if signed => sa < sb,
        Cmp::Le | Cmp::Leu if signed => sa <= sb,
        Cmp::Gt | Cmp::Gtu if signed => sa > sb,
        Cmp::Ge | Cmp::Geu if signed => sa >= sb,
        Cmp::Lt | Cmp::Ltu | Cmp::Lo => ua < ub,
        Cmp::Le | Cmp::Leu | Cmp::Ls => ua <= ub,
        Cmp::Gt | Cmp::Gtu | Cmp::Hi => ua > ub,
        Cmp::Ge | Cmp::Geu | Cmp::Hs => ua >= ub,
        Cmp::Num => true,
        Cmp::Nan => false,
    }
}

/// Compares `a` and `b` of scalar type `ty` (a half type compares its low
/// 16 bits). `ftz` flushes subnormal floats to zero first.
fn compare(cmp: Cmp, ty: Ty, a: u64, b: u64, ftz: bool) -> bool {
    let flush = |x: f64, sub: bool| if ftz && sub { 0.0 } else { x };
    match ty {
        Ty::F32 => float_cmp(
            cmp,
            flush(f32b(a) as f64, f32b(a).is_subnormal()),
            flush(f32b(b) as f64, f32b(b).is_subnormal()),
        ),
        Ty::F64 => float_cmp(cmp, f64b(a), f64b(b)),
        t if is_half(t) => {
            let (fmt, _) = fmt_of(t);
            let v = |x: u64| flush(fmt.to_f64(x & 0xffff), fmt.is_subnormal(x & 0xffff));
            float_cmp(cmp, v(a), v(b))
        }
        _ => int_cmp(cmp, ty, a, b),
    }
}

fn bool_op(op: Option<BoolOp>, a: bool, c: bool) -> bool {
    match op {
        None => a,
        Some(BoolOp::And) => a && c,
        Some(BoolOp::Or) => a || c,
        Some(BoolOp::Xor) => a ^ c,
    }
}

/// The "true" value `set` writes for destination type `dty`.
fn set_true(dty: Ty) -> u64 {
    match dty {
        Ty::F32 => 1.0f32.to_bits() as u64,
        Ty::F16 | Ty::F16x2 => Fmt::F16.round(1.0, crate::ir::Rnd::Rn),
        Ty::Bf16 | Ty::Bf16x2 => Fmt::Bf16.round(1.0, crate::ir::Rnd::Rn),
        Ty::U32 | Ty::S32 | Ty::B32 => 0xffff_ffff,
        t => mask_bits(t.bits()),
    }
}

pub(crate) fn exec(b: &mut Block, t: &mut Thread, i: &Inst, op: CmpOp) -> X<()> {
    let ty = i.ty;
    let o = &i.ops;
    let pair = matches!(ty, Ty::F16x2 | Ty::Bf16x2);
    match op {
        CmpOp::Setp { cmp, bop } => {
            let a = b.get(t, &o[2]);
            let c = b.get(t, &o[3]);
            let p = o.get(4).is_none_or(|x| b.get(t, x) != 0);
            if pair {
                // p gets the low halves' result, q the high halves'.
                let lo = compare(cmp, ty, a, c, i.ftz);
                let hi = compare(cmp, ty, a >> 16, c >> 16, i.ftz);
                Block::set(t, &o[0], bool_op(bop, lo, p) as u64);
                Block::set(t, &o[1], bool_op(bop, hi, p) as u64);
            } else {
                let r = compare(cmp, ty, a, c, i.ftz);
                Block::set(t, &o[0], bool_op(bop, r, p) as u64);
                Block::set(t, &o[1], bool_op(bop, !r, p) as u64);
            }
        }
        CmpOp::Set { cmp, bop, dty } => {
            let a = b.get(t, &o[1]);
            let c = b.get(t, &o[2]);
            let p = o.get(3).is_none_or(|x| b.get(t, x) != 0);
            let r = if pair {
                // Each 16-bit half of the result: 1.0 in a half type, all
                // ones in an integer type.
                let one = if is_half(dty) { set_true(dty) } else { 0xffff };
                let lo = bool_op(bop, compare(cmp, ty, a, c, i.ftz), p);
                let hi = bool_op(bop, compare(cmp, ty, a >> 16, c >> 16, i.ftz), p);
                (if lo { one } else { 0 }) | (if hi { one } else { 0 }) << 16
            } else if bool_op(bop, compare(cmp, ty, a, c, i.ftz), p) {
                set_true(dty)
            } else {
                0
            };
            Block::set(t, &o[0], r);
        }
        CmpOp::Selp => {
            let c = b.get(t, &o[3]) != 0;
            let v = b.get(t, &o[if c { 1 } else { 2 }]);
            Block::set(t, &o[0], v);
        }
        CmpOp::Slct { fsel } => {
            let c = b.get(t, &o[3]);
            let pick_a = if fsel {
                // -0.0 >= 0.0 holds, NaN picks b.
                f32b(c) >= 0.0
            } else {
                sx(c, 32) >= 0
            };
            let v = b.get(t, &o[if pick_a { 1 } else { 2 }]);
            Block::set(t, &o[0], v);
        }
    }
    Ok(())
}
