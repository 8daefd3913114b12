//! Integer arithmetic: `add`/`sub` (with `.sat` and carry chains),
//! `mul`/`mad` (`.lo/.hi/.wide`, carry chains), `mul24`/`mad24`, `sad`,
//! `div`, `rem`, `abs`, `neg`, `min`/`max`, and the dot products
//! `dp4a`/`dp2a`.

use super::{is_int, Decoded, Mods};
use crate::exec::block::Block;
use crate::exec::thread::{unsupported, Thread};
use crate::exec::X;
use crate::ir::{Inst, MulMode, Op, Ty};
use crate::num::{mask_bits, sx};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntOp {
    /// `add`, `add.cc` (`cout`), `addc` (`cin`).
    Add {
        cin: bool,
        cout: bool,
    },
    Sub {
        cin: bool,
        cout: bool,
    },
    Mul(MulMode),
    Mad {
        mode: MulMode,
        cin: bool,
        cout: bool,
    },
    Mul24(MulMode),
    Mad24(MulMode),
    Sad,
    Div,
    Rem,
    Abs,
    Neg,
    Min {
        relu: bool,
    },
    Max {
        relu: bool,
    },
    /// Four-way byte dot product; whether `a` / `b` bytes are signed.
    Dp4a {
        a_signed: bool,
        b_signed: bool,
    },
    /// Two-way: 16-bit halves of `a` times bytes of `b` (`hi`: bytes 2-3).
    Dp2a {
        a_signed: bool,
        b_signed: bool,
        hi: bool,
    },
}

pub(crate) fn decode(m: &Mods) -> Option<Decoded> {
    let ty = m.ty();
    let int_op = |op: IntOp| Some(Decoded::new(Op::Int(op), ty));
    match m.opcode {
        "dp4a" | "dp2a" if m.tys.len() == 2 => {
            let signed = |t: Ty| t == Ty::S32;
            let (a_signed, b_signed) = (signed(m.tys[0]), signed(m.tys[1]));
            let op = if m.opcode == "dp4a" {
                IntOp::Dp4a { a_signed, b_signed }
            } else {
                let hi = m.has("hi");
                if !hi {
                    m.has("lo");
                }
                IntOp::Dp2a {
                    a_signed,
                    b_signed,
                    hi,
                }
            };
            Some(Decoded::new(Op::Int(op), Ty::U32))
        }
        _ if !is_int(ty) => None,
        "add" | "addc" | "sub" | "subc" => {
            let cin = m.opcode.ends_with('c');
            let cout = m.has("cc");
            let sat = m.has("sat");
            if sat && (ty != Ty::S32 || cin || cout) {
                return super::unsupported(ty);
            }
            let op = if m.opcode.starts_with("add") {
                IntOp::Add { cin, cout }
            } else {
                IntOp::Sub { cin, cout }
            };
            let mut d = Decoded::new(Op::Int(op), ty);
            d.sat = sat;
            Some(d)
        }
        "mul" => int_op(IntOp::Mul(m.mulmode())),
        "mad" | "madc" => {
            let mode = m.mulmode();
            let sat = m.has("sat");
            let op = IntOp::Mad {
                mode,
                cin: m.opcode == "madc",
                cout: m.has("cc"),
            };
            if sat {
                return super::unsupported(ty);
            }
            int_op(op)
        }
        "mul24" => int_op(IntOp::Mul24(m.mulmode())),
        "mad24" => int_op(IntOp::Mad24(m.mulmode())),
        "sad" => int_op(IntOp::Sad),
        "div" => int_op(IntOp::Div),
        "rem" => int_op(IntOp::Rem),
        "abs" => int_op(IntOp::Abs),
        "neg" => int_op(IntOp::Neg),
        "min" => int_op(IntOp::Min {
            relu: m.has("relu"),
        }),
        "max" => int_op(IntOp::Max {
            relu: m.has("relu"),
        }),
        _ => None,
    }
}

fn dot(a: u64, b: u64, a_signed: bool, b_signed: bool, pairs: &[(u32, u32, u32)]) -> i64 {
    // (a lane width, a index, b byte index)
    pairs
        .iter()
        .map(|&(w, ai, bi)| {
            let av = (a >> (w * ai)) & mask_bits(w);
            let bv = (b >> (8 * bi)) & 0xff;
            let av = if a_signed { sx(av, w) } else { av as i64 };
            let bv = if b_signed { sx(bv, 8) } else { bv as i64 };
            av * bv
        })
        .sum()
}

pub(crate) fn exec(b: &mut Block, t: &mut Thread, i: &Inst, op: IntOp) -> X<()> {
    let ty = i.ty;
    let bits = ty.bits();
    let m = mask_bits(bits);
    // The common forms first: no carry, no saturation, two sources.
    match op {
        IntOp::Add {
            cin: false,
            cout: false,
        } if !i.sat => {
            let r = b.arg(t, i, 1).wrapping_add(b.arg(t, i, 2)) & m;
            Block::set(t, &i.ops[0], r);
            return Ok(());
        }
        IntOp::Sub {
            cin: false,
            cout: false,
        } if !i.sat => {
            let r = b.arg(t, i, 1).wrapping_sub(b.arg(t, i, 2)) & m;
            Block::set(t, &i.ops[0], r);
            return Ok(());
        }
        IntOp::Mul(MulMode::Lo) => {
            let r = b.arg(t, i, 1).wrapping_mul(b.arg(t, i, 2)) & m;
            Block::set(t, &i.ops[0], r);
            return Ok(());
        }
        _ => {}
    }
    let signed = ty.is_signed();
    let x = b.arg(t, i, 1);
    let y = b.arg(t, i, 2);
    let z = b.arg(t, i, 3);
    let r = match op {
        IntOp::Add { cin, cout } => {
            if i.sat {
                (x as u32 as i32).saturating_add(y as u32 as i32) as u32 as u64
            } else {
                let c = (cin && t.cc) as u128;
                let full = (x & m) as u128 + (y & m) as u128 + c;
                if cout {
                    t.cc = full >> bits != 0;
                }
                full as u64 & m
            }
        }
        IntOp::Sub { cin, cout } => {
            if i.sat {
                (x as u32 as i32).saturating_sub(y as u32 as i32) as u32 as u64
            } else {
                let c = (cin && t.cc) as u128;
                let sub = (y & m) as u128 + c;
                if cout {
                    t.cc = ((x & m) as u128) < sub;
                }
                ((x & m) as u128).wrapping_sub(sub) as u64 & m
            }
        }
        IntOp::Mul(mode) => mul(x, y, bits, signed, mode),
        IntOp::Mad { mode, cin, cout } => {
            let p = mul(x, y, bits, signed, mode);
            let wbits = if mode == MulMode::Wide {
                bits * 2
            } else {
                bits
            };
            let wm = mask_bits(wbits);
            let c = (cin && t.cc) as u128;
            let full = (p & wm) as u128 + (z & wm) as u128 + c;
            if cout {
                t.cc = full >> wbits != 0;
            }
            full as u64 & wm
        }
        IntOp::Mul24(mode) | IntOp::Mad24(mode) => {
            let (x, y) = if signed {
                (sx(x, 24), sx(y, 24))
            } else {
                ((x & 0xff_ffff) as i64, (y & 0xff_ffff) as i64)
            };
            let p = x.wrapping_mul(y) as u64;
            let r = if mode == MulMode::Hi { p >> 16 } else { p };
            let add = if matches!(op, IntOp::Mad24(_)) { z } else { 0 };
            r.wrapping_add(add) & m
        }
        IntOp::Sad => {
            let d = if signed {
                sx(x, bits).abs_diff(sx(y, bits))
            } else {
                (x & m).abs_diff(y & m)
            };
            z.wrapping_add(d) & m
        }
        IntOp::Div | IntOp::Rem => {
            let div = op == IntOp::Div;
            if y & m == 0 {
                // Undefined on hardware; all ones avoids a Rust panic.
                m
            } else if signed {
                let (p, q) = (sx(x, bits), sx(y, bits));
                let r = if div {
                    p.wrapping_div(q)
                } else {
                    p.wrapping_rem(q)
                };
                r as u64 & m
            } else if div {
                (x & m) / (y & m)
            } else {
                (x & m) % (y & m)
            }
        }
        IntOp::Abs => sx(x, bits).wrapping_abs() as u64 & m,
        IntOp::Neg => sx(x, bits).wrapping_neg() as u64 & m,
        IntOp::Min { relu } | IntOp::Max { relu } => {
            let min = matches!(op, IntOp::Min { .. });
            if signed {
                let (p, q) = (sx(x, bits), sx(y, bits));
                let v = if min { p.min(q) } else { p.max(q) };
                (if relu { v.max(0) } else { v }) as u64 & m
            } else if min {
                (x & m).min(y & m)
            } else {
                (x & m).max(y & m)
            }
        }
        IntOp::Dp4a { a_signed, b_signed } => {
            let pairs = [(8, 0, 0), (8, 1, 1), (8, 2, 2), (8, 3, 3)];
            (z as i64).wrapping_add(dot(x, y, a_signed, b_signed, &pairs)) as u64 & 0xffff_ffff
        }
        IntOp::Dp2a {
            a_signed,
            b_signed,
            hi,
        } => {
            let o = if hi { 2 } else { 0 };
            let pairs = [(16, 0, o), (16, 1, o + 1)];
            (z as i64).wrapping_add(dot(x, y, a_signed, b_signed, &pairs)) as u64 & 0xffff_ffff
        }
    };
    if bits > 64 {
        return Err(unsupported(i));
    }
    Block::set(t, &i.ops[0], r);
    Ok(())
}

fn mul(x: u64, y: u64, bits: u32, signed: bool, mode: MulMode) -> u64 {
    let m = mask_bits(bits);
    let wide = if signed {
        (sx(x, bits) as i128 * sx(y, bits) as i128) as u128
    } else {
        (x & m) as u128 * (y & m) as u128
    };
    match mode {
        MulMode::Lo => wide as u64 & m,
        MulMode::Hi => (wide >> bits) as u64 & m,
        MulMode::Wide => wide as u64 & mask_bits(bits * 2),
    }
}
