//! Bit-exact number formats: integer widths, and rounding of exact values
//! to f16 / bf16 / f32 in every IEEE rounding direction.
//!
//! Floating-point results are computed in f64 and rounded once to the
//! destination format. Sums of two values are not always exact in f64, so
//! they are formed with "round to odd" ([`sum_odd`]): rounding a round-to-odd
//! f64 to any format at least two bits narrower gives the correctly rounded
//! result of the exact sum, in every rounding direction. Products of two
//! f32 (or narrower) values are exact in f64.

use crate::ir::Rnd;

/// Low `bits` bits set.
pub(crate) fn mask_bits(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// Sign-extends the low `bits` bits of `v`.
pub(crate) fn sx(v: u64, bits: u32) -> i64 {
    if bits >= 64 {
        v as i64
    } else {
        let s = 64 - bits;
        ((v << s) as i64) >> s
    }
}

pub(crate) fn f32b(v: u64) -> f32 {
    f32::from_bits(v as u32)
}

pub(crate) fn f64b(v: u64) -> f64 {
    f64::from_bits(v)
}

pub(crate) fn bf32(f: f32) -> u64 {
    f.to_bits() as u64
}

/// A binary floating-point format narrower than f64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fmt {
    F16,
    Bf16,
    /// TensorFloat-32: f32 layout with 10 explicit mantissa bits.
    Tf32,
    F32,
}

impl Fmt {
    /// Significand bits including the hidden one.
    fn precision(self) -> i32 {
        match self {
            Fmt::F16 => 11,
            Fmt::Bf16 => 8,
            Fmt::Tf32 => 11,
            Fmt::F32 => 24,
        }
    }

    fn emax(self) -> i32 {
        match self {
            Fmt::F16 => 15,
            _ => 127,
        }
    }

    fn emin(self) -> i32 {
        1 - self.emax()
    }

    /// The value of the format's bit pattern `v`, exactly.
    pub(crate) fn to_f64(self, v: u64) -> f64 {
        match self {
            Fmt::F16 => half::f16::from_bits(v as u16).to_f64(),
            Fmt::Bf16 => half::bf16::from_bits(v as u16).to_f64(),
            Fmt::Tf32 | Fmt::F32 => f32::from_bits(v as u32) as f64,
        }
    }

    /// NVIDIA's canonical NaN in this format.
    pub(crate) fn nan(self) -> u64 {
        match self {
            Fmt::F16 | Fmt::Bf16 => 0x7fff,
            Fmt::Tf32 | Fmt::F32 => 0x7fff_ffff,
        }
    }

    pub(crate) fn is_subnormal(self, v: u64) -> bool {
        let x = self.to_f64(v).abs();
        x != 0.0 && x < f64::from_bits(((self.emin() + 1023) as u64) << 52)
    }

    /// Encodes `x`, which must be representable in the format (or infinite).
    fn encode(self, x: f64) -> u64 {
        match self {
            Fmt::F16 => half::f16::from_f64(x).to_bits() as u64,
            Fmt::Bf16 => half::bf16::from_f64(x).to_bits() as u64,
            Fmt::Tf32 | Fmt::F32 => (x as f32).to_bits() as u64,
        }
    }

    fn max_finite(self) -> f64 {
        let p = self.precision();
        (2.0 - 2f64.powi(1 - p)) * 2f64.powi(self.emax())
    }

    /// Rounds `x` to this format in direction `rnd` (`Rnd::None` and the
    /// integer modes round to nearest even). NaN becomes the canonical NaN.
    pub(crate) fn round(self, x: f64, rnd: Rnd) -> u64 {
        if x.is_nan() {
            return self.nan();
        }
        if x.is_infinite() || x == 0.0 {
            return self.encode(x);
        }
        let e = exponent(x).max(self.emin());
        let quantum = pow2(e - (self.precision() - 1));
        // Exact: scaling by a power of two stays within f64's range here.
        let q = x / quantum;
        let r = match rnd {
            Rnd::Rz | Rnd::Rzi => q.trunc(),
            Rnd::Rm | Rnd::Rmi => q.floor(),
            Rnd::Rp | Rnd::Rpi => q.ceil(),
            _ => q.round_ties_even(),
        } * quantum;
        let max = self.max_finite();
        if r.abs() > max {
            let inf = match rnd {
                Rnd::Rz | Rnd::Rzi => false,
                Rnd::Rm | Rnd::Rmi => x < 0.0,
                Rnd::Rp | Rnd::Rpi => x > 0.0,
                _ => true,
            };
            let m = if inf { f64::INFINITY } else { max };
            return self.encode(m.copysign(x));
        }
        // Keep the sign of a result that rounded to zero.
        self.encode(if r == 0.0 { 0.0f64.copysign(x) } else { r })
    }
}

fn pow2(e: i32) -> f64 {
    f64::from_bits(((e + 1023) as u64) << 52)
}

/// floor(log2(|x|)) for finite non-zero `x`.
fn exponent(x: f64) -> i32 {
    let b = x.to_bits();
    let biased = ((b >> 52) & 0x7ff) as i32;
    if biased != 0 {
        biased - 1023
    } else {
        let mant = b & ((1 << 52) - 1);
        (63 - mant.leading_zeros() as i32) - 1074
    }
}

/// `a + b` rounded to odd in f64 (see the module doc).
pub(crate) fn sum_odd(a: f64, b: f64) -> f64 {
    let s = a + b;
    if !s.is_finite() {
        return s;
    }
    // TwoSum: the exact rounding error of `s`.
    let bb = s - a;
    let err = (a - (s - bb)) + (b - bb);
    if err == 0.0 || s.to_bits() & 1 == 1 {
        return s;
    }
    // Inexact with an even last bit: step to the odd neighbour on the
    // side of the exact value.
    let bits = s.to_bits();
    let away = (err > 0.0) == (s > 0.0);
    f64::from_bits(if away { bits + 1 } else { bits - 1 })
}

/// Rounds an f64 to f32 in direction `rnd`, for f64 sources.
pub(crate) fn round_f32(x: f64, rnd: Rnd) -> f32 {
    if x.is_nan() {
        return x as f32;
    }
    f32::from_bits(Fmt::F32.round(x, rnd) as u32)
}

/// Rounds to an integral value in direction `rnd` (nearest even by default).
pub(crate) fn round_int(x: f64, rnd: Rnd) -> f64 {
    match rnd {
        Rnd::Rni | Rnd::Rn | Rnd::None => x.round_ties_even(),
        Rnd::Rmi | Rnd::Rm => x.floor(),
        Rnd::Rpi | Rnd::Rp => x.ceil(),
        Rnd::Rzi | Rnd::Rz => x.trunc(),
    }
}

/// Whether a rounding modifier asks for an integral result (`.rni` etc.).
pub(crate) fn is_int_rnd(rnd: Rnd) -> bool {
    matches!(rnd, Rnd::Rni | Rnd::Rzi | Rnd::Rmi | Rnd::Rpi)
}

pub(crate) fn sat01_32(f: f32) -> f32 {
    if f.is_nan() {
        0.0
    } else {
        f.clamp(0.0, 1.0)
    }
}

pub(crate) fn sat01_64(f: f64) -> f64 {
    if f.is_nan() {
        0.0
    } else {
        f.clamp(0.0, 1.0)
    }
}

pub(crate) fn ftz32(f: f32) -> f32 {
    if f.is_subnormal() {
        0.0f32.copysign(f)
    } else {
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directed_rounding_to_f16() {
        // 1 + 2^-11 lies halfway between 1 and the next f16 (1 + 2^-10).
        let x = 1.0 + 2f64.powi(-11);
        assert_eq!(Fmt::F16.round(x, Rnd::Rn), 0x3c00);
        assert_eq!(Fmt::F16.round(x, Rnd::Rz), 0x3c00);
        assert_eq!(Fmt::F16.round(x, Rnd::Rm), 0x3c00);
        assert_eq!(Fmt::F16.round(x, Rnd::Rp), 0x3c01);
        assert_eq!(Fmt::F16.round(-x, Rnd::Rm), 0xbc01);
        assert_eq!(Fmt::F16.round(-x, Rnd::Rp), 0xbc00);
        // Overflow: 70000 is past f16's 65504.
        assert_eq!(Fmt::F16.round(70000.0, Rnd::Rn), 0x7c00);
        assert_eq!(Fmt::F16.round(70000.0, Rnd::Rz), 0x7bff);
        // Smallest subnormal, 2^-24, and half of it (ties to even: zero).
        assert_eq!(Fmt::F16.round(2f64.powi(-24), Rnd::Rn), 1);
        assert_eq!(Fmt::F16.round(2f64.powi(-25), Rnd::Rn), 0);
        assert_eq!(Fmt::F16.round(2f64.powi(-25), Rnd::Rp), 1);
        assert_eq!(Fmt::Bf16.round(1.0 + 2f64.powi(-8), Rnd::Rn), 0x3f80);
        assert_eq!(Fmt::Bf16.round(1.0 + 2f64.powi(-8), Rnd::Rp), 0x3f81);
    }

    #[test]
    fn round_to_odd_sum_keeps_the_sticky_bit() {
        // 1 + 2^-60 is not representable in f64; round-to-odd keeps it
        // above 1 so that rounding up to f32 sees it.
        let s = sum_odd(1.0, 2f64.powi(-60));
        assert!(s > 1.0);
        assert_eq!(round_f32(s, Rnd::Rp), 1.0 + f32::EPSILON);
        assert_eq!(round_f32(s, Rnd::Rn), 1.0);
        assert_eq!(sum_odd(1.0, 2.0), 3.0);
    }
}
