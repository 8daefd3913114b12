//! Pre-decoded PTX: what the interpreter executes. Names are resolved to
//! register indices, frame offsets and symbol-table slots at parse time so
//! the hot loop never touches strings.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ty {
    B8,
    B16,
    B32,
    B64,
    B128,
    U8,
    U16,
    U32,
    U64,
    S8,
    S16,
    S32,
    S64,
    F16,
    F16x2,
    Bf16,
    Bf16x2,
    /// TensorFloat-32, held in 32 bits (`cvt`, `mma`).
    Tf32,
    /// Pairs of 8-bit floats (OCP FP8), held in 16 bits (`cvt`).
    E4m3x2,
    E5m2x2,
    F32,
    F64,
    Pred,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bits,
    Unsigned,
    Signed,
    Float,
    Pred,
}

impl Ty {
    pub fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "b8" => Ty::B8,
            "b16" => Ty::B16,
            "b32" => Ty::B32,
            "b64" => Ty::B64,
            "b128" => Ty::B128,
            "u8" => Ty::U8,
            "u16" => Ty::U16,
            "u32" => Ty::U32,
            "u64" => Ty::U64,
            "s8" => Ty::S8,
            "s16" => Ty::S16,
            "s32" => Ty::S32,
            "s64" => Ty::S64,
            "f16" => Ty::F16,
            "f16x2" => Ty::F16x2,
            "bf16" => Ty::Bf16,
            "bf16x2" => Ty::Bf16x2,
            "tf32" => Ty::Tf32,
            "e4m3x2" => Ty::E4m3x2,
            "e5m2x2" => Ty::E5m2x2,
            "f32" => Ty::F32,
            "f64" => Ty::F64,
            "pred" => Ty::Pred,
            _ => return None,
        })
    }

    pub fn bytes(self) -> u32 {
        match self {
            Ty::B8 | Ty::U8 | Ty::S8 => 1,
            Ty::B16 | Ty::U16 | Ty::S16 | Ty::F16 | Ty::Bf16 | Ty::E4m3x2 | Ty::E5m2x2 => 2,
            Ty::B32 | Ty::U32 | Ty::S32 | Ty::F32 | Ty::F16x2 | Ty::Bf16x2 | Ty::Tf32 => 4,
            Ty::B64 | Ty::U64 | Ty::S64 | Ty::F64 => 8,
            Ty::B128 => 16,
            // Predicates have no memory form; 1 keeps layout arithmetic sane.
            Ty::Pred => 1,
        }
    }

    pub fn bits(self) -> u32 {
        self.bytes() * 8
    }

    pub fn kind(self) -> Kind {
        match self {
            Ty::B8 | Ty::B16 | Ty::B32 | Ty::B64 | Ty::B128 => Kind::Bits,
            Ty::U8 | Ty::U16 | Ty::U32 | Ty::U64 => Kind::Unsigned,
            Ty::S8 | Ty::S16 | Ty::S32 | Ty::S64 => Kind::Signed,
            Ty::F16
            | Ty::F16x2
            | Ty::Bf16
            | Ty::Bf16x2
            | Ty::Tf32
            | Ty::E4m3x2
            | Ty::E5m2x2
            | Ty::F32
            | Ty::F64 => Kind::Float,
            Ty::Pred => Kind::Pred,
        }
    }

    pub fn is_signed(self) -> bool {
        self.kind() == Kind::Signed
    }

    pub fn is_float(self) -> bool {
        self.kind() == Kind::Float
    }

    /// Floats the interpreter computes with natively.
    pub fn is_f32_or_f64(self) -> bool {
        matches!(self, Ty::F32 | Ty::F64)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    Generic,
    Global,
    Shared,
    Local,
    Param,
    Const,
}

pub use crate::ops::sreg::Sreg;

/// A symbol whose address an instruction takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sym {
    /// Module-scope `.global`/`.const`, by index into `Module::globals`;
    /// the address comes from the launch's symbol map.
    Global(u32),
    /// Shared-space offset (static shared vars are laid out per module).
    Shared(u32),
    /// Offset in the current frame's local area.
    Local(u32),
    /// Offset in the current frame's param area.
    Param(u32),
    /// Dynamic shared memory (`.extern .shared`): starts after static shared.
    DynShared,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Opnd {
    Reg(u32),
    /// `!%p` as a source.
    NotReg(u32),
    Imm(u64),
    Sreg(Sreg),
    Sym(Sym),
    /// `[base + off]`
    Addr(Box<Opnd>, i64),
    Vec(Vec<Opnd>),
    /// `_` sink destination.
    Sink,
    /// Branch target: instruction index.
    Label(u32),
    /// Called function: index in `Module::funcs`.
    Func(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rnd {
    None,
    Rn,
    Rz,
    Rm,
    Rp,
    /// Round to integer variants (`.rni` etc.) used by cvt.
    Rni,
    Rzi,
    Rmi,
    Rpi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Lo,
    Ls,
    Hi,
    Hs,
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoolOp {
    And,
    Or,
    Xor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomOp {
    Add,
    Min,
    Max,
    Exch,
    Cas,
    And,
    Or,
    Xor,
    Inc,
    Dec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MulMode {
    Lo,
    Hi,
    Wide,
}

/// A decoded instruction, by family. Each family's operations, decoding and
/// execution live in one module under `ops/`, so adding an instruction
/// touches only that family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Integer arithmetic (`add`, `mad`, `div`, carry chains, `dp4a`...).
    Int(crate::ops::int::IntOp),
    /// `f32`/`f64` arithmetic and transcendentals.
    Float(crate::ops::float::FloatOp),
    /// `f16`/`bf16` arithmetic, scalar and packed pairs.
    Half(crate::ops::half::HalfOp),
    /// Logic, shifts and bit-field instructions.
    Bits(crate::ops::bits::BitsOp),
    /// `setp`, `set`, `selp`, `slct`.
    Cmp(crate::ops::compare::CmpOp),
    /// `mov`, `cvt`, `cvta`, `isspacep`.
    Cvt(crate::ops::convert::CvtOp),
    /// Loads, stores, atomics, asynchronous copies.
    Mem(crate::ops::memory::MemOp),
    /// Branches, calls, barriers, traps and no-ops.
    Ctl(crate::ops::control::CtlOp),
    /// Warp collectives (`shfl`, `vote`, `match`, `redux`...).
    Warp(crate::ops::warp::WarpOp),
    /// Warp-wide matrix instructions (`mma`, `ldmatrix`, `movmatrix`...).
    Matrix(crate::ops::matrix::MatrixOp),
    /// Decoded but not executable; the text is in `Inst::text`.
    Unsupported,
}

#[derive(Debug, Clone)]
pub struct Inst {
    pub op: Op,
    pub ty: Ty,
    pub rnd: Rnd,
    pub ftz: bool,
    pub sat: bool,
    /// `.v2`/`.v4` element count for ld/st (1 otherwise).
    pub vec: u8,
    pub guard: Option<(u32, bool)>,
    pub ops: Box<[Opnd]>,
    pub line: u32,
    /// Opcode with modifiers as written, for error messages.
    pub text: Box<str>,
}

/// What a call site calls.
#[derive(Debug, Clone, PartialEq)]
pub enum Callee {
    /// Index in `Module::funcs`.
    Direct(u32),
    /// Through a register holding a function address (`.callprototype`).
    Indirect(Opnd),
}

/// A call site: how arguments and results move between frames.
#[derive(Debug, Clone)]
pub struct CallInfo {
    pub callee: Callee,
    pub args: Vec<Opnd>,
    pub rets: Vec<Opnd>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    /// Offset in the packed kernel-parameter buffer (or callee frame).
    pub offset: u32,
    pub size: u32,
    pub align: u32,
}

#[derive(Debug, Clone)]
pub struct Function {
    pub name: String,
    pub is_entry: bool,
    pub params: Vec<Param>,
    pub rets: Vec<Param>,
    /// Bytes of param-space storage a frame needs (params, rets, callseq decls).
    pub param_frame: u32,
    pub local_frame: u32,
    pub nregs: u32,
    /// Value mask per register (from its declared width).
    pub reg_mask: Vec<u64>,
    pub insts: Vec<Inst>,
    /// Side table for `Op::Call` instructions; `Inst::ops[0]` holds `Imm(index)`.
    pub calls: Vec<CallInfo>,
    /// Whether the body was given (not just a prototype).
    pub defined: bool,
    /// A body-less runtime function the interpreter provides.
    pub builtin: Option<crate::runtime::Builtin>,
    pub line: u32,
    /// `.reqntid` / `.maxntid`, when given.
    pub reqntid: Option<[u32; 3]>,
    pub maxntid: Option<[u32; 3]>,
}
