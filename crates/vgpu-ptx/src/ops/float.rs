//! `f32` / `f64` arithmetic: `add sub mul div fma min max abs neg`, the
//! functions `rcp sqrt rsqrt ex2 lg2 sin cos tanh`, `copysign`, `testp`.
//!
//! Results are correctly rounded in every rounding direction: f32 values
//! are combined exactly (or rounded to odd) in f64 and rounded once.

use super::{Decoded, Mods};
use crate::exec::block::Block;
use crate::exec::thread::Thread;
use crate::exec::X;
use crate::ir::{Inst, Op, Rnd, Ty};
use crate::num::{bf32, f32b, f64b, ftz32, round_f32, sat01_32, sat01_64, sum_odd};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatOp {
    Add,
    Sub,
    Mul,
    Div,
    Fma,
    /// `nan`: `.NaN` (a NaN operand gives NaN instead of the other value).
    Min {
        nan: bool,
    },
    Max {
        nan: bool,
    },
    Abs,
    Neg,
    Rcp,
    Sqrt,
    Rsqrt,
    Ex2,
    Lg2,
    Sin,
    Cos,
    Tanh,
    Copysign,
    /// `finite infinite number notanumber normal subnormal`, by index.
    Testp(u8),
}

const TESTP: [&str; 6] = [
    "finite",
    "infinite",
    "number",
    "notanumber",
    "normal",
    "subnormal",
];

pub(crate) fn decode(m: &Mods) -> Option<Decoded> {
    let ty = m.ty();
    if !ty.is_f32_or_f64() {
        return None;
    }
    let op = match m.opcode {
        "add" => FloatOp::Add,
        "sub" => FloatOp::Sub,
        "mul" => FloatOp::Mul,
        "div" => FloatOp::Div,
        "fma" | "mad" => FloatOp::Fma,
        "min" => FloatOp::Min { nan: m.has("NaN") },
        "max" => FloatOp::Max { nan: m.has("NaN") },
        "abs" => FloatOp::Abs,
        "neg" => FloatOp::Neg,
        "rcp" => FloatOp::Rcp,
        "sqrt" => FloatOp::Sqrt,
        "rsqrt" => FloatOp::Rsqrt,
        "ex2" => FloatOp::Ex2,
        "lg2" => FloatOp::Lg2,
        "sin" => FloatOp::Sin,
        "cos" => FloatOp::Cos,
        "tanh" => FloatOp::Tanh,
        "copysign" => FloatOp::Copysign,
        "testp" => match TESTP.iter().position(|k| m.has(k)) {
            Some(k) => FloatOp::Testp(k as u8),
            None => return super::unsupported(ty),
        },
        _ => return None,
    };
    Some(Decoded::new(Op::Float(op), ty).fp(m))
}

/// `x / y` rounded to odd in f64 (for directed f32 rounding).
fn div_odd(x: f64, y: f64) -> f64 {
    let q = x / y;
    if !q.is_finite() || q == 0.0 || q.to_bits() & 1 == 1 {
        return q;
    }
    // The residual of a correctly rounded quotient is exact.
    let r = (-q).mul_add(y, x);
    if r == 0.0 {
        return q;
    }
    let above = (r > 0.0) == (y > 0.0);
    let away = above == (q > 0.0);
    f64::from_bits(if away {
        q.to_bits() + 1
    } else {
        q.to_bits() - 1
    })
}

fn sqrt_odd(x: f64) -> f64 {
    let s = x.sqrt();
    if !s.is_finite() || s == 0.0 || s.to_bits() & 1 == 1 {
        return s;
    }
    let r = (-s).mul_add(s, x);
    if r == 0.0 {
        return s;
    }
    f64::from_bits(if r > 0.0 {
        s.to_bits() + 1
    } else {
        s.to_bits() - 1
    })
}

/// IEEE minimumNumber / maximumNumber with -0 < +0; `nan` propagates NaN.
pub(crate) fn minmax(x: f64, y: f64, max: bool, nan: bool) -> f64 {
    if x.is_nan() || y.is_nan() {
        return if nan || (x.is_nan() && y.is_nan()) {
            f64::NAN
        } else if x.is_nan() {
            y
        } else {
            x
        };
    }
    if x == y {
        // Equal values differ at most in the sign of zero.
        if x != 0.0 {
            return x;
        }
        let neg = if max {
            x.is_sign_negative() && y.is_sign_negative()
        } else {
            x.is_sign_negative() || y.is_sign_negative()
        };
        return if neg { -0.0 } else { 0.0 };
    }
    if (x > y) == max {
        x
    } else {
        y
    }
}

fn func(op: FloatOp, x: f64) -> f64 {
    match op {
        FloatOp::Rcp => 1.0 / x,
        FloatOp::Sqrt => x.sqrt(),
        FloatOp::Rsqrt => 1.0 / x.sqrt(),
        FloatOp::Ex2 => x.exp2(),
        FloatOp::Lg2 => x.log2(),
        FloatOp::Sin => x.sin(),
        FloatOp::Cos => x.cos(),
        _ => x.tanh(),
    }
}

fn exec_f32(i: &Inst, op: FloatOp, a: u64, b: u64, c: u64) -> u64 {
    let fz = |v: f32| if i.ftz { ftz32(v) } else { v };
    let (x, y, z) = (fz(f32b(a)), fz(f32b(b)), fz(f32b(c)));
    let (xd, yd) = (x as f64, y as f64);
    let rnd = i.rnd;
    let near = !directed(rnd);
    let r = match op {
        // Native f32 arithmetic rounds to nearest even.
        FloatOp::Add if near => x + y,
        FloatOp::Sub if near => x - y,
        FloatOp::Mul if near => x * y,
        FloatOp::Div if near => x / y,
        FloatOp::Fma if near => x.mul_add(y, z),
        FloatOp::Add => round_f32(sum_odd(xd, yd), rnd),
        FloatOp::Sub => round_f32(sum_odd(xd, -yd), rnd),
        // Products of two f32 are exact in f64.
        FloatOp::Mul => round_f32(xd * yd, rnd),
        FloatOp::Div => round_f32(div_odd(xd, yd), rnd),
        FloatOp::Fma => round_f32(sum_odd(xd * yd, z as f64), rnd),
        FloatOp::Min { nan } | FloatOp::Max { nan } => {
            let r = minmax(xd, yd, matches!(op, FloatOp::Max { .. }), nan);
            if r.is_nan() {
                f32::from_bits(0x7fff_ffff)
            } else {
                r as f32
            }
        }
        FloatOp::Abs => x.abs(),
        FloatOp::Neg => -x,
        FloatOp::Copysign => y.copysign(x),
        FloatOp::Rcp => round_f32(div_odd(1.0, xd), rnd),
        FloatOp::Sqrt => round_f32(sqrt_odd(xd), rnd),
        _ => func(op, xd) as f32,
    };
    let r = fz(r);
    bf32(if i.sat { sat01_32(r) } else { r })
}

/// The nearest f64 `r` to an exact result, moved to the directed rounding
/// `rnd`'s choice given the sign of the error `exact - r`.
fn direct64(r: f64, err: f64, rnd: Rnd) -> f64 {
    let up = |x: f64| {
        if x == 0.0 {
            f64::from_bits(1)
        } else if x > 0.0 {
            f64::from_bits(x.to_bits() + 1)
        } else {
            f64::from_bits(x.to_bits() - 1)
        }
    };
    let down = |x: f64| -up(-x);
    if r.is_nan() {
        return r;
    }
    if r.is_infinite() {
        // Overflow: the directions that do not lead away from zero stop
        // at the largest finite value.
        let keep = match rnd {
            Rnd::Rz => false,
            Rnd::Rm => r < 0.0,
            Rnd::Rp => r > 0.0,
            _ => true,
        };
        return if keep { r } else { f64::MAX.copysign(r) };
    }
    if err == 0.0 || err.is_nan() {
        return r;
    }
    match rnd {
        Rnd::Rm if err < 0.0 => down(r),
        Rnd::Rp if err > 0.0 => up(r),
        Rnd::Rz if r > 0.0 && err < 0.0 => down(r),
        Rnd::Rz if r < 0.0 && err > 0.0 => up(r),
        _ => r,
    }
}

/// f64 arithmetic in a directed rounding mode: the nearest result and the
/// sign of its exact error.
fn directed64(op: FloatOp, x: f64, y: f64, z: f64, rnd: Rnd) -> Option<f64> {
    let (r, err) = match op {
        FloatOp::Add | FloatOp::Sub => {
            let y = if op == FloatOp::Sub { -y } else { y };
            let s = x + y;
            let bb = s - x;
            (s, (x - (s - bb)) + (y - bb))
        }
        FloatOp::Mul => {
            let p = x * y;
            (p, x.mul_add(y, -p))
        }
        FloatOp::Div => {
            let q = x / y;
            let res = (-q).mul_add(y, x);
            (q, if y < 0.0 { -res } else { res })
        }
        FloatOp::Rcp => {
            let q = 1.0 / x;
            let res = (-q).mul_add(x, 1.0);
            (q, if x < 0.0 { -res } else { res })
        }
        FloatOp::Sqrt => {
            let s = x.sqrt();
            (s, (-s).mul_add(s, x))
        }
        FloatOp::Fma => {
            let r = x.mul_add(y, z);
            // exact = ph + pl + z; its difference from r, summed with
            // error-free transformations.
            let ph = x * y;
            let pl = x.mul_add(y, -ph);
            let s = ph + z;
            let bb = s - ph;
            let e1 = (ph - (s - bb)) + (z - bb);
            let s2 = s + pl;
            let bb2 = s2 - s;
            let e2 = (s - (s2 - bb2)) + (pl - bb2);
            (r, ((s2 - r) + e2) + e1)
        }
        _ => return None,
    };
    Some(direct64(r, err, rnd))
}

fn exec_f64(i: &Inst, op: FloatOp, a: u64, b: u64, c: u64) -> u64 {
    let (x, y, z) = (f64b(a), f64b(b), f64b(c));
    if directed(i.rnd) {
        if let Some(r) = directed64(op, x, y, z, i.rnd) {
            return (if i.sat { sat01_64(r) } else { r }).to_bits();
        }
    }
    let r = match op {
        FloatOp::Add => x + y,
        FloatOp::Sub => x - y,
        FloatOp::Mul => x * y,
        FloatOp::Div => x / y,
        FloatOp::Fma => x.mul_add(y, z),
        FloatOp::Min { nan } | FloatOp::Max { nan } => {
            minmax(x, y, matches!(op, FloatOp::Max { .. }), nan)
        }
        FloatOp::Abs => x.abs(),
        FloatOp::Neg => -x,
        FloatOp::Copysign => y.copysign(x),
        _ => func(op, x),
    };
    (if i.sat { sat01_64(r) } else { r }).to_bits()
}

fn testp(k: u8, ty: Ty, a: u64) -> u64 {
    let (x, sub) = if ty == Ty::F32 {
        (f32b(a) as f64, f32b(a).is_subnormal())
    } else {
        (f64b(a), f64b(a).is_subnormal())
    };
    (match k {
        0 => x.is_finite(),
        1 => x.is_infinite(),
        2 => !x.is_nan(),
        3 => x.is_nan(),
        4 => x.is_normal() && !sub,
        _ => sub,
    }) as u64
}

pub(crate) fn exec(b: &mut Block, t: &mut Thread, i: &Inst, op: FloatOp) -> X<()> {
    let x = b.arg(t, i, 1);
    let y = b.arg(t, i, 2);
    let z = b.arg(t, i, 3);
    let r = match op {
        FloatOp::Testp(k) => testp(k, i.ty, x),
        _ if i.ty == Ty::F32 => exec_f32(i, op, x, y, z),
        _ => exec_f64(i, op, x, y, z),
    };
    Block::set(t, &i.ops[0], r);
    Ok(())
}

/// Whether a rounding direction other than nearest is requested.
fn directed(rnd: Rnd) -> bool {
    matches!(rnd, Rnd::Rz | Rnd::Rm | Rnd::Rp)
}
