//! Instruction families. Each module owns one family's operations: how the
//! opcode and its modifiers decode into an [`Op`], and how it executes.
//!
//! Decoding is strict: every modifier an instruction carries must be one its
//! family asked about (through [`Mods`]) or one that cannot change a result
//! in this interpreter ([`IGNORED`]). Anything else decodes to
//! [`Op::Unsupported`], which fails the launch with the instruction's text
//! when reached — never a silently wrong result.

pub(crate) mod bits;
pub(crate) mod compare;
pub(crate) mod control;
pub(crate) mod convert;
pub(crate) mod float;
pub(crate) mod half;
pub(crate) mod int;
pub(crate) mod matrix;
pub(crate) mod memory;
pub(crate) mod sreg;
pub(crate) mod warp;
pub(crate) mod wmma;

use std::cell::Cell;

use crate::ir::{BoolOp, Cmp, MulMode, Op, Rnd, Space, Ty};

/// Modifiers with no effect on results here: synchronisation and alignment
/// promises (the scheduler already lines warps up), memory-ordering scopes
/// (loads and stores are sequentially consistent per location), cache
/// hints, and `.approx` (approximate functions are computed accurately).
pub(crate) const IGNORED: &[&str] = &[
    "sync", "aligned", "uni", "approx", "full", "nc", "volatile", "relaxed", "acquire", "release",
    "acq_rel", "weak", "mmio", "sc", "gpu", "cta", "sys", "cluster", "ca", "cg", "cs", "lu", "cv",
    "wb", "wt",
];

/// An instruction's opcode and modifiers, with a record of which modifiers
/// the decoder looked at.
pub(crate) struct Mods<'a> {
    pub opcode: &'a str,
    mods: Vec<&'a str>,
    /// Types among the modifiers, in order.
    pub tys: Vec<Ty>,
    used: Cell<u64>,
}

impl<'a> Mods<'a> {
    pub fn new(opcode: &'a str, mods: &'a [String]) -> Self {
        let mods: Vec<&str> = mods.iter().map(|s| s.as_str()).collect();
        let mut used = 0u64;
        let mut tys = Vec::new();
        for (k, m) in mods.iter().enumerate() {
            if let Some(t) = Ty::parse(m) {
                tys.push(t);
                used |= 1 << k.min(63);
            }
            if IGNORED.contains(m) || m.starts_with("L1::") || m.starts_with("L2::") {
                used |= 1 << k.min(63);
            }
        }
        Mods {
            opcode,
            mods,
            tys,
            used: Cell::new(used),
        }
    }

    fn mark(&self, k: usize) {
        self.used.set(self.used.get() | 1 << k.min(63));
    }

    /// Whether modifier `s` is present (and marks every occurrence handled).
    pub fn has(&self, s: &str) -> bool {
        let mut found = false;
        for (k, m) in self.mods.iter().enumerate() {
            if *m == s {
                self.mark(k);
                found = true;
            }
        }
        found
    }

    /// The first modifier that `f` recognises.
    pub fn find<T>(&self, f: impl Fn(&str) -> Option<T>) -> Option<T> {
        self.mods.iter().enumerate().find_map(|(k, m)| {
            let v = f(m)?;
            self.mark(k);
            Some(v)
        })
    }

    /// Marks every modifier handled (for instructions no modifier changes).
    pub fn accept_all(&self) {
        self.used.set(u64::MAX);
    }

    /// Modifiers nobody asked about.
    pub fn unhandled(&self) -> Vec<&'a str> {
        let used = self.used.get();
        self.mods
            .iter()
            .enumerate()
            .filter(|(k, _)| used & (1 << (*k).min(63)) == 0)
            .map(|(_, m)| *m)
            .collect()
    }

    /// The instruction type: the last type modifier (`.b32` when none).
    pub fn ty(&self) -> Ty {
        self.tys.last().copied().unwrap_or(Ty::B32)
    }

    pub fn space(&self) -> Space {
        self.find(space_of).unwrap_or(Space::Generic)
    }

    pub fn rnd(&self) -> Rnd {
        self.find(|m| {
            Some(match m {
                "rn" => Rnd::Rn,
                "rz" => Rnd::Rz,
                "rm" => Rnd::Rm,
                "rp" => Rnd::Rp,
                "rni" => Rnd::Rni,
                "rzi" => Rnd::Rzi,
                "rmi" => Rnd::Rmi,
                "rpi" => Rnd::Rpi,
                _ => return None,
            })
        })
        .unwrap_or(Rnd::None)
    }

    pub fn vec(&self) -> u8 {
        self.find(|m| match m {
            "v2" => Some(2),
            "v4" => Some(4),
            "v8" => Some(8),
            _ => None,
        })
        .unwrap_or(1)
    }

    pub fn mulmode(&self) -> MulMode {
        if self.has("hi") {
            MulMode::Hi
        } else if self.has("wide") {
            MulMode::Wide
        } else {
            self.has("lo");
            MulMode::Lo
        }
    }

    pub fn bop(&self) -> Option<BoolOp> {
        self.find(|m| match m {
            "and" => Some(BoolOp::And),
            "or" => Some(BoolOp::Or),
            "xor" => Some(BoolOp::Xor),
            _ => None,
        })
    }

    pub fn cmp(&self) -> Option<Cmp> {
        self.find(cmp_of)
    }
}

pub(crate) fn space_of(m: &str) -> Option<Space> {
    Some(match m.split("::").next().unwrap_or(m) {
        "global" => Space::Global,
        "shared" => Space::Shared,
        "local" => Space::Local,
        "param" => Space::Param,
        "const" => Space::Const,
        _ => return None,
    })
}

fn cmp_of(m: &str) -> Option<Cmp> {
    Some(match m {
        "eq" => Cmp::Eq,
        "ne" => Cmp::Ne,
        "lt" => Cmp::Lt,
        "le" => Cmp::Le,
        "gt" => Cmp::Gt,
        "ge" => Cmp::Ge,
        "lo" => Cmp::Lo,
        "ls" => Cmp::Ls,
        "hi" => Cmp::Hi,
        "hs" => Cmp::Hs,
        "equ" => Cmp::Equ,
        "neu" => Cmp::Neu,
        "ltu" => Cmp::Ltu,
        "leu" => Cmp::Leu,
        "gtu" => Cmp::Gtu,
        "geu" => Cmp::Geu,
        "num" => Cmp::Num,
        "nan" => Cmp::Nan,
        _ => return None,
    })
}

/// Operands an instruction has (destinations first), as decoded.
pub(crate) const MAX_OPERANDS: usize = 6;

/// What a family's decoder produces.
#[derive(Debug, Clone)]
pub(crate) struct Decoded {
    pub op: Op,
    /// The type the instruction computes in (`Inst::ty`).
    pub ty: Ty,
    pub rnd: Rnd,
    pub ftz: bool,
    pub sat: bool,
    pub vec: u8,
    /// The type immediates in operand `k` are read in, where it is not `ty`.
    pub imm: [Option<Ty>; MAX_OPERANDS],
    /// The first operand may be a `p|q` pair whose second half is optional:
    /// a lone destination gets an explicit sink as operand 1.
    pub pair_dst: bool,
}

impl Decoded {
    pub fn new(op: Op, ty: Ty) -> Self {
        Decoded {
            op,
            ty,
            rnd: Rnd::None,
            ftz: false,
            sat: false,
            vec: 1,
            imm: [None; MAX_OPERANDS],
            pair_dst: false,
        }
    }

    pub fn imm(mut self, k: usize, ty: Ty) -> Self {
        if k < MAX_OPERANDS {
            self.imm[k] = Some(ty);
        }
        self
    }

    /// Reads the rounding, `.ftz` and `.sat` modifiers.
    pub fn fp(mut self, m: &Mods) -> Self {
        self.rnd = m.rnd();
        self.ftz = m.has("ftz");
        self.sat = m.has("sat");
        self
    }
}

/// Decodes an instruction through the families in turn. `None`: no family
/// knows the opcode.
pub(crate) fn decode(m: &Mods) -> Option<Decoded> {
    let d = int::decode(m)
        .or_else(|| float::decode(m))
        .or_else(|| half::decode(m))
        .or_else(|| bits::decode(m))
        .or_else(|| compare::decode(m))
        .or_else(|| convert::decode(m))
        .or_else(|| memory::decode(m))
        .or_else(|| control::decode(m))
        .or_else(|| warp::decode(m))
        .or_else(|| matrix::decode(m))?;
    if d.op != Op::Unsupported && !m.unhandled().is_empty() {
        return Some(Decoded::new(Op::Unsupported, d.ty));
    }
    Some(d)
}

/// A decoded form for types a family does not implement.
pub(crate) fn unsupported(ty: Ty) -> Option<Decoded> {
    Some(Decoded::new(Op::Unsupported, ty))
}

/// Integer types up to 64 bits (`.b`, `.u`, `.s`).
pub(crate) fn is_int(t: Ty) -> bool {
    matches!(
        t.kind(),
        crate::ir::Kind::Bits | crate::ir::Kind::Unsigned | crate::ir::Kind::Signed
    ) && t.bits() <= 64
}

/// Half-precision types, scalar and packed.
pub(crate) fn is_half(t: Ty) -> bool {
    matches!(t, Ty::F16 | Ty::F16x2 | Ty::Bf16 | Ty::Bf16x2)
}
