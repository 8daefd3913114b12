//! Logic, shifts and bit fields: `and or xor not cnot shl shr shf lop3
//! bfe bfi popc clz brev bfind fns prmt bmsk szext`.

use super::{is_int, Decoded, Mods};
use crate::exec::block::Block;
use crate::exec::thread::Thread;
use crate::exec::X;
use crate::ir::{Inst, Op, Ty};
use crate::num::{mask_bits, sx};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitsOp {
    And,
    Or,
    Xor,
    Not,
    Cnot,
    Shl,
    Shr,
    Shf {
        left: bool,
        wrap: bool,
    },
    Lop3,
    Bfe,
    Bfi,
    Popc,
    Clz,
    Brev,
    Bfind {
        shiftamt: bool,
    },
    Fns,
    /// Byte permute; 0 is the default mode, then `f4e b4e rc8 ecl ecr rc16`.
    Prmt(u8),
    Bmsk {
        clamp: bool,
    },
    Szext {
        clamp: bool,
    },
}

const PRMT_MODES: [&str; 6] = ["f4e", "b4e", "rc8", "ecl", "ecr", "rc16"];

pub(crate) fn decode(m: &Mods) -> Option<Decoded> {
    let ty = m.ty();
    if !(is_int(ty) || ty == Ty::Pred) {
        return None;
    }
    let clamp = || {
        let c = m.has("clamp");
        if !c {
            m.has("wrap");
        }
        c
    };
    let (op, imm_from) = match m.opcode {
        "and" => (BitsOp::And, 9),
        "or" => (BitsOp::Or, 9),
        "xor" => (BitsOp::Xor, 9),
        "not" => (BitsOp::Not, 9),
        "cnot" => (BitsOp::Cnot, 9),
        "shl" => (BitsOp::Shl, 2),
        "shr" => (BitsOp::Shr, 2),
        "shf" => {
            let left = m.has("l");
            if !left {
                m.has("r");
            }
            let wrap = m.has("wrap");
            if !wrap {
                m.has("clamp");
            }
            (BitsOp::Shf { left, wrap }, 3)
        }
        "lop3" => (BitsOp::Lop3, 9),
        "bfe" => (BitsOp::Bfe, 2),
        "bfi" => (BitsOp::Bfi, 3),
        "popc" => (BitsOp::Popc, 9),
        "clz" => (BitsOp::Clz, 9),
        "brev" => (BitsOp::Brev, 9),
        "bfind" => (
            BitsOp::Bfind {
                shiftamt: m.has("shiftamt"),
            },
            9,
        ),
        "fns" => (BitsOp::Fns, 1),
        "prmt" => {
            let mode = m
                .find(|s| PRMT_MODES.iter().position(|k| *k == s))
                .map_or(0, |k| k as u8 + 1);
            (BitsOp::Prmt(mode), 9)
        }
        "bmsk" => (BitsOp::Bmsk { clamp: clamp() }, 1),
        "szext" => (BitsOp::Szext { clamp: clamp() }, 2),
        _ => return None,
    };
    let mut d = Decoded::new(Op::Bits(op), ty);
    for k in imm_from..super::MAX_OPERANDS {
        d = d.imm(k, Ty::U32);
    }
    Some(d)
}

fn bfe(a: u64, pos: u32, len: u32, bits: u32, signed: bool) -> u64 {
    let msb = bits - 1;
    let sbit = if signed && len > 0 {
        (a >> (pos + len - 1).min(msb)) & 1
    } else {
        0
    };
    let mut d = 0u64;
    for i in 0..bits {
        let b = if i < len && pos + i <= msb {
            (a >> (pos + i)) & 1
        } else {
            sbit
        };
        d |= b << i;
    }
    d
}

fn bfi(f: u64, b: u64, pos: u32, len: u32, bits: u32) -> u64 {
    let mut d = b;
    let mut i = 0;
    while i < len && pos + i < bits {
        let bit = (f >> i) & 1;
        d = (d & !(1u64 << (pos + i))) | (bit << (pos + i));
        i += 1;
    }
    d & mask_bits(bits)
}

fn prmt(a: u64, b: u64, c: u64, mode: u8) -> u64 {
    let tmp = ((b & 0xffff_ffff) << 32) | (a & 0xffff_ffff);
    let byte = |i: u64| (tmp >> ((i & 7) * 8)) & 0xff;
    if mode == 0 {
        let mut out = 0;
        for i in 0..4 {
            let s = (c >> (4 * i)) & 0xf;
            let mut v = byte(s & 7);
            if s & 8 != 0 {
                // Replicate the byte's sign.
                v = if v & 0x80 != 0 { 0xff } else { 0 };
            }
            out |= v << (8 * i);
        }
        return out;
    }
    let n = c & 3;
    let sel: [u64; 4] = match mode {
        1 => [n, n + 1, n + 2, n + 3],
        2 => [n, n.wrapping_sub(1), n.wrapping_sub(2), n.wrapping_sub(3)],
        3 => [n; 4],
        // Edge clamp left / right.
        4 => [n, n.max(1), n.max(2), n.max(3)],
        5 => [0, n.min(1), n.min(2), n.min(3)],
        _ => {
            let h = (c & 1) * 2;
            [h, h + 1, h, h + 1]
        }
    };
    sel.iter()
        .enumerate()
        .fold(0, |acc, (i, &s)| acc | (byte(s & 7) << (8 * i)))
}

fn lop3(a: u64, b: u64, c: u64, lut: u64) -> u64 {
    let mut r = 0u64;
    for i in 0..8u64 {
        if lut & (1 << i) != 0 {
            let ma = if i & 4 != 0 { a } else { !a };
            let mb = if i & 2 != 0 { b } else { !b };
            let mc = if i & 1 != 0 { c } else { !c };
            r |= ma & mb & mc;
        }
    }
    r & 0xffff_ffff
}

fn fns(mask: u64, base: u64, offset: u64) -> u64 {
    let base = base as u32 as i64;
    let offset = offset as u32 as i32 as i64;
    let set = |p: i64| (0..32).contains(&p) && (mask >> p) & 1 == 1;
    if offset == 0 {
        return if set(base) { base as u64 } else { 0xffff_ffff };
    }
    let inc = if offset > 0 { 1 } else { -1 };
    let mut count = offset.abs() - 1;
    let mut pos = base;
    while (0..32).contains(&pos) {
        if set(pos) {
            if count == 0 {
                return pos as u64;
            }
            count -= 1;
        }
        pos += inc;
    }
    0xffff_ffff
}

pub(crate) fn exec(b: &mut Block, t: &mut Thread, i: &Inst, op: BitsOp) -> X<()> {
    let ty = i.ty;
    let bits = ty.bits();
    let m = mask_bits(bits);
    let pred = ty == Ty::Pred;
    let a = b.arg(t, i, 1);
    let arg = |k: usize| b.arg(t, i, k);
    let r = match op {
        BitsOp::And if pred => ((a != 0) && (arg(2) != 0)) as u64,
        BitsOp::Or if pred => ((a != 0) || (arg(2) != 0)) as u64,
        BitsOp::Xor if pred => ((a != 0) ^ (arg(2) != 0)) as u64,
        BitsOp::Not if pred => (a == 0) as u64,
        BitsOp::And => a & arg(2) & m,
        BitsOp::Or => (a | arg(2)) & m,
        BitsOp::Xor => (a ^ arg(2)) & m,
        BitsOp::Not => !a & m,
        BitsOp::Cnot => (a & m == 0) as u64,
        BitsOp::Shl => {
            let n = arg(2) as u32;
            if n >= bits {
                0
            } else {
                (a << n) & m
            }
        }
        BitsOp::Shr => {
            let n = arg(2) as u32;
            if ty.is_signed() {
                (sx(a, bits) >> n.min(bits - 1).min(63)) as u64 & m
            } else if n >= bits {
                0
            } else {
                (a & m) >> n
            }
        }
        BitsOp::Shf { left, wrap } => {
            let c = arg(3) as u32;
            let n = if wrap { c & 31 } else { c.min(32) };
            let v = ((arg(2) & 0xffff_ffff) << 32) | (a & 0xffff_ffff);
            if left {
                ((v << n) >> 32) & 0xffff_ffff
            } else {
                (v >> n) & 0xffff_ffff
            }
        }
        BitsOp::Lop3 => lop3(a, arg(2), arg(3), arg(4) & 0xff),
        BitsOp::Bfe => bfe(
            a & m,
            arg(2) as u32 & 0xff,
            arg(3) as u32 & 0xff,
            bits,
            ty.is_signed(),
        ),
        BitsOp::Bfi => bfi(a, arg(2), arg(3) as u32 & 0xff, arg(4) as u32 & 0xff, bits),
        BitsOp::Popc => (a & m).count_ones() as u64,
        BitsOp::Clz => ((a & m).leading_zeros() - (64 - bits)) as u64,
        BitsOp::Brev => (a & m).reverse_bits() >> (64 - bits),
        BitsOp::Bfind { shiftamt } => {
            let v = if ty.is_signed() && sx(a, bits) < 0 {
                !a & m
            } else {
                a & m
            };
            if v == 0 {
                0xffff_ffff
            } else {
                let idx = 63 - v.leading_zeros() as u64;
                if shiftamt {
                    bits as u64 - 1 - idx
                } else {
                    idx
                }
            }
        }
        BitsOp::Fns => fns(a, arg(2), arg(3)),
        BitsOp::Prmt(mode) => prmt(a, arg(2), arg(3), mode),
        BitsOp::Bmsk { clamp } => {
            let (a, bw) = (a as u32, arg(2) as u32);
            let (a1, b1) = (a & 31, bw & 31);
            let sum = a1 + b1;
            let mut mask0 = u32::MAX << a1;
            let pos_over = clamp && a >= 32;
            if pos_over {
                mask0 = 0;
            }
            let width_over = clamp && bw >= 32;
            let mask1 = if sum >= 32 || pos_over || width_over {
                0
            } else if b1 == 0 {
                u32::MAX
            } else {
                u32::MAX << sum
            };
            (mask0 & !mask1) as u64
        }
        BitsOp::Szext { clamp } => {
            let (a, bw) = (a as u32, arg(2) as u32);
            let b1 = bw & 31;
            let too_large = clamp && bw >= 32;
            let mask = if too_large { 0 } else { u32::MAX << b1 };
            let sign = !(b1 == 0 || too_large || ty != Ty::S32)
                && (a >> (b1.wrapping_sub(1) & 31)) & 1 == 1;
            ((a & !mask) | if sign { mask } else { 0 }) as u64
        }
    };
    Block::set(t, &i.ops[0], r);
    Ok(())
}
