//! Moves and conversions: `mov` (incl. packing `{a, b}`), `cvt` between all
//! integer and float types in every rounding mode (`.rn .rz .rm .rp`, the
//! integral `.rni .rzi .rmi .rpi`, `.rna` for tf32), `.sat`, `.satfinite`,
//! `.relu`, packed `cvt.f16x2.f32` / `cvt.bf16x2.f32`; `cvta`, `isspacep`.

use super::half::fmt_of;
use super::{is_half, is_int, Decoded, Mods};
use crate::exec::block::Block;
use crate::exec::thread::{Thread, LOCAL_TAG, PARAM_TAG, SHARED_TAG, TAG_SHIFT, WIN_MASK};
use crate::exec::X;
use crate::ir::{Inst, Op, Opnd, Rnd, Space, Ty};
use crate::num::{f32b, f64b, ftz32, is_int_rnd, mask_bits, round_int, sat01_64, sx, Fmt};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CvtOp {
    Mov,
    Cvt {
        dty: Ty,
        sty: Ty,
        relu: bool,
        satfinite: bool,
        /// `.rna`: nearest, ties away from zero (tf32).
        rna: bool,
    },
    Cvta {
        to: bool,
        space: Space,
    },
    Isspacep(Space),
}

pub(crate) fn decode(m: &Mods) -> Option<Decoded> {
    match m.opcode {
        "mov" => Some(Decoded::new(Op::Cvt(CvtOp::Mov), m.ty())),
        "cvt" if m.tys.len() == 2 => {
            let dty = m.tys[0];
            let sty = m.ty();
            let satfinite = m.has("satfinite");
            let op = CvtOp::Cvt {
                dty,
                sty,
                relu: m.has("relu"),
                satfinite,
                rna: m.has("rna"),
            };
            let fp8 = |t: Ty| matches!(t, Ty::E4m3x2 | Ty::E5m2x2);
            let ok = match (dty, sty) {
                (Ty::F16x2, s) if fp8(s) => true,
                (d, Ty::F32 | Ty::F16x2) if fp8(d) => satfinite,
                (_, s) if fp8(s) || matches!(s, Ty::F16x2 | Ty::Bf16x2) => false,
                (Ty::F16x2 | Ty::Bf16x2, s) => s == Ty::F32,
                (d, s) => {
                    let ok = |t: Ty| is_int(t) || t.is_f32_or_f64() || is_half(t) || t == Ty::Tf32;
                    ok(d) && ok(s)
                }
            };
            if !ok {
                return super::unsupported(sty);
            }
            Some(Decoded::new(Op::Cvt(op), sty).fp(m).imm(1, sty).imm(2, sty))
        }
        "cvta" => {
            let op = CvtOp::Cvta {
                to: m.has("to"),
                space: m.space(),
            };
            Some(Decoded::new(Op::Cvt(op), m.ty()))
        }
        "isspacep" => Some(Decoded::new(Op::Cvt(CvtOp::Isspacep(m.space())), m.ty())),
        _ => None,
    }
}

/// The float format of a float type other than f64.
fn fmt(t: Ty) -> Fmt {
    match t {
        Ty::F32 => Fmt::F32,
        Ty::Tf32 => Fmt::Tf32,
        t => fmt_of(t).0,
    }
}

/// An integer value rounded to f64 in direction `rnd`.
fn int_to_f64(v: i128, rnd: Rnd) -> f64 {
    let f = v as f64;
    let err = v - f as i128;
    if err == 0 {
        return f;
    }
    let up = |x: f64| {
        f64::from_bits(if x >= 0.0 {
            x.to_bits() + 1
        } else {
            x.to_bits() - 1
        })
    };
    let down = |x: f64| -up(-x);
    match rnd {
        Rnd::Rz | Rnd::Rzi if (err < 0) == (v > 0) => {
            if v > 0 {
                down(f)
            } else {
                up(f)
            }
        }
        Rnd::Rm | Rnd::Rmi if err < 0 => down(f),
        Rnd::Rp | Rnd::Rpi if err > 0 => up(f),
        _ => f,
    }
}

/// An integer value rounded to odd in f64 (for a second, narrower rounding).
fn int_to_f64_odd(v: i128) -> f64 {
    let f = v as f64;
    let err = v - f as i128;
    if err == 0 || f.to_bits() & 1 == 1 {
        return f;
    }
    let away = (err > 0) == (f > 0.0);
    f64::from_bits(if away {
        f.to_bits() + 1
    } else {
        f.to_bits() - 1
    })
}

fn float_to_int(f: f64, rnd: Rnd, dty: Ty) -> u64 {
    // Round, then saturate (NaN → 0); Rust's `as` casts saturate that way.
    let r = round_int(f, if rnd == Rnd::None { Rnd::Rzi } else { rnd });
    let out = match dty {
        Ty::S8 => r as i8 as u64,
        Ty::S16 => r as i16 as u64,
        Ty::S32 => r as i32 as u64,
        Ty::S64 => r as i64 as u64,
        Ty::U8 => r as u8 as u64,
        Ty::U16 => r as u16 as u64,
        Ty::U32 => r as u32 as u64,
        _ => r as u64,
    };
    out & mask_bits(dty.bits())
}

/// Converts one value. `op` must be `CvtOp::Cvt`.
fn cvt(i: &Inst, v: u64, dty: Ty, sty: Ty, relu: bool, satfinite: bool, rna: bool) -> u64 {
    let rnd = i.rnd;
    if is_int(sty) {
        let sbits = sty.bits();
        let iv: i128 = if sty.is_signed() {
            sx(v, sbits) as i128
        } else {
            (v & mask_bits(sbits)) as i128
        };
        if is_int(dty) {
            let db = dty.bits();
            return if i.sat {
                let (lo, hi): (i128, i128) = if dty.is_signed() {
                    (-(1i128 << (db - 1)), (1i128 << (db - 1)) - 1)
                } else {
                    (0, (1i128 << db) - 1)
                };
                (iv.clamp(lo, hi) as u64) & mask_bits(db)
            } else {
                (iv as u64) & mask_bits(db)
            };
        }
        if dty == Ty::F64 {
            let f = int_to_f64(iv, rnd);
            return (if i.sat { sat01_64(f) } else { f }).to_bits();
        }
        let f = fmt(dty).to_f64(fmt(dty).round(int_to_f64_odd(iv), rnd));
        return from_f64(i, f, dty, Rnd::Rn, relu, satfinite);
    }
    // Float source: its exact value.
    let f = match sty {
        Ty::F64 => f64b(v),
        Ty::F32 => {
            let x = f32b(v);
            (if i.ftz { ftz32(x) } else { x }) as f64
        }
        t => fmt(t).to_f64(v),
    };
    if is_int(dty) {
        return float_to_int(f, rnd, dty);
    }
    if dty == Ty::Tf32 {
        let bits = v as u32;
        if f.is_nan() {
            return 0x7fff_ffff;
        }
        return if rna {
            (bits.wrapping_add(0x1000) & !0x1fff) as u64
        } else {
            fmt(Ty::Tf32).round(f, rnd)
        };
    }
    // Integral rounding (same-size `cvt.rzi.f32.f32` and the like).
    let (f, rnd) = if is_int_rnd(rnd) {
        (round_int(f, rnd), Rnd::Rn)
    } else {
        (f, rnd)
    };
    from_f64(i, f, dty, rnd, relu, satfinite)
}

/// Rounds `f` to the float type `dty` and applies `.relu`, `.satfinite`,
/// `.sat` and `.ftz`.
fn from_f64(i: &Inst, f: f64, dty: Ty, rnd: Rnd, relu: bool, satfinite: bool) -> u64 {
    if dty == Ty::F64 {
        return (if i.sat { sat01_64(f) } else { f }).to_bits();
    }
    let fm = fmt(dty);
    if f.is_nan() {
        return if i.sat {
            0
        } else if dty == Ty::F32 {
            // An f32 NaN keeps its payload through f64.
            (f as f32).to_bits() as u64
        } else {
            fm.nan()
        };
    }
    let mut r = fm.round(f, rnd);
    let mut v = fm.to_f64(r);
    if satfinite && v.is_infinite() {
        let max = fm.round(f64::MAX, Rnd::Rz);
        r = fm.round(fm.to_f64(max).copysign(v), Rnd::Rn);
        v = fm.to_f64(r);
    }
    if (relu || i.sat) && v < 0.0 {
        return 0;
    }
    if i.sat && v > 1.0 {
        return fm.round(1.0, Rnd::Rn);
    }
    if i.ftz && dty == Ty::F32 && f32b(r).is_subnormal() {
        return r & 0x8000_0000;
    }
    r
}

pub(crate) fn exec(b: &mut Block, t: &mut Thread, i: &Inst, op: CvtOp) -> X<()> {
    let r = match op {
        CvtOp::Mov => {
            mov(b, t, i);
            return Ok(());
        }
        CvtOp::Cvt {
            dty,
            sty,
            relu,
            satfinite,
            rna,
        } => {
            let a = b.arg(t, i, 1);
            if let Some(r) = cvt_fp8(dty, sty, relu, a, b.arg(t, i, 2)) {
                r
            } else if matches!(dty, Ty::F16x2 | Ty::Bf16x2) {
                // `a` goes to the upper half, `b` to the lower.
                let half = if dty == Ty::F16x2 { Ty::F16 } else { Ty::Bf16 };
                let c = b.arg(t, i, 2);
                let hi = cvt(i, a, half, sty, relu, satfinite, rna);
                let lo = cvt(i, c, half, sty, relu, satfinite, rna);
                lo | hi << 16
            } else {
                cvt(i, a, dty, sty, relu, satfinite, rna)
            }
        }
        CvtOp::Cvta { to, space } => {
            let a = b.arg(t, i, 1);
            let tag = match space {
                Space::Shared => SHARED_TAG,
                Space::Local => LOCAL_TAG,
                Space::Param => PARAM_TAG,
                _ => a >> TAG_SHIFT,
            };
            if matches!(space, Space::Global | Space::Const | Space::Generic) {
                a
            } else if to {
                (a & WIN_MASK) & mask_bits(i.ty.bits())
            } else {
                (tag << TAG_SHIFT) | (a & WIN_MASK)
            }
        }
        CvtOp::Isspacep(space) => {
            let tag = b.arg(t, i, 1) >> TAG_SHIFT;
            (match space {
                Space::Shared => tag == SHARED_TAG,
                Space::Local => tag == LOCAL_TAG,
                Space::Param => tag == PARAM_TAG,
                _ => !matches!(tag, SHARED_TAG | LOCAL_TAG | PARAM_TAG),
            }) as u64
        }
    };
    Block::set(t, &i.ops[0], r);
    Ok(())
}

/// The value of an 8-bit float (OCP FP8: E4M3 without infinities, or E5M2).
fn fp8_value(bits: u8, e5m2: bool) -> f64 {
    let (ebits, mbits, bias) = if e5m2 { (5, 2, 15) } else { (4, 3, 7) };
    let sign = if bits & 0x80 != 0 { -1.0 } else { 1.0 };
    let e = ((bits >> mbits) & ((1 << ebits) - 1)) as i32;
    let m = (bits & ((1 << mbits) - 1)) as f64;
    let emax = (1 << ebits) - 1;
    if e5m2 && e == emax {
        return if m == 0.0 {
            sign * f64::INFINITY
        } else {
            f64::NAN
        };
    }
    if !e5m2 && e == emax && m == 7.0 {
        return f64::NAN;
    }
    let scale = 2f64.powi(mbits);
    if e == 0 {
        sign * m / scale * 2f64.powi(1 - bias)
    } else {
        sign * (1.0 + m / scale) * 2f64.powi(e - bias)
    }
}

/// Rounds `x` to the nearest 8-bit float (ties to even), saturating to the
/// largest finite value (`.satfinite`).
fn fp8_encode(x: f64, e5m2: bool, relu: bool) -> u8 {
    if x.is_nan() {
        return 0x7f;
    }
    let x = if relu && x < 0.0 { 0.0 } else { x };
    let mut best = 0u8;
    let mut dist = f64::INFINITY;
    for b in (0..=0x7fu8).filter(|&b| fp8_value(b, e5m2).is_finite()) {
        let v = fp8_value(b, e5m2);
        let d = (v - x.abs()).abs();
        if d < dist || (d == dist && b & 1 == 0) {
            best = b;
            dist = d;
        }
    }
    // Nearest among finite values is the saturated result beyond the top.
    best | if x < 0.0 && best != 0 { 0x80 } else { 0 }
}

/// `cvt` to or from a pair of 8-bit floats; `None` for other types.
fn cvt_fp8(dty: Ty, sty: Ty, relu: bool, a: u64, b: u64) -> Option<u64> {
    match (dty, sty) {
        (Ty::F16x2, Ty::E4m3x2 | Ty::E5m2x2) => {
            let e5 = sty == Ty::E5m2x2;
            let h = |v: u8| Fmt::F16.round(fp8_value(v, e5), Rnd::Rn);
            Some(h(a as u8) | h((a >> 8) as u8) << 16)
        }
        (Ty::E4m3x2 | Ty::E5m2x2, Ty::F32) => {
            let e5 = dty == Ty::E5m2x2;
            // `a` goes to the upper byte, `b` to the lower.
            let hi = fp8_encode(f32b(a) as f64, e5, relu) as u64;
            let lo = fp8_encode(f32b(b) as f64, e5, relu) as u64;
            Some(lo | hi << 8)
        }
        (Ty::E4m3x2 | Ty::E5m2x2, Ty::F16x2) => {
            let e5 = dty == Ty::E5m2x2;
            let v = |x: u64| Fmt::F16.to_f64(x & 0xffff);
            let lo = fp8_encode(v(a), e5, relu) as u64;
            let hi = fp8_encode(v(a >> 16), e5, relu) as u64;
            Some(lo | hi << 8)
        }
        _ => None,
    }
}

fn mov(b: &Block, t: &mut Thread, i: &Inst) {
    let bits = i.ty.bits();
    match (&i.ops[0], &i.ops[1]) {
        (Opnd::Vec(d), s) => {
            let v = b.get(t, s);
            let w = bits / d.len() as u32;
            for (k, e) in d.iter().enumerate() {
                Block::set(t, e, (v >> (w * k as u32)) & mask_bits(w));
            }
        }
        (d, Opnd::Vec(s)) => {
            let w = bits / s.len() as u32;
            let mut v = 0u64;
            for (k, e) in s.iter().enumerate() {
                v |= (b.get(t, e) & mask_bits(w)) << (w * k as u32);
            }
            Block::set(t, d, v);
        }
        (d, s) => {
            let v = b.get(t, s);
            let v = if i.ty == Ty::Pred {
                (v != 0) as u64
            } else {
                v & mask_bits(bits)
            };
            Block::set(t, d, v);
        }
    }
}
