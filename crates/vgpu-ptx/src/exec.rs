//! The interpreter: block scheduling, per-thread execution, warp collectives.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::ir::*;
use crate::memory::{MemError, Memory};
use crate::{ExecError, KernelMeta, Module};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dynamic_shared: u32,
}

// Generic-address windows for the per-block and per-thread spaces. Device
// pointers are host user-space addresses (< 2^47), so a top-byte tag never
// collides with them.
const TAG_SHIFT: u32 = 56;
const SHARED_TAG: u64 = 0xF1;
const LOCAL_TAG: u64 = 0xF2;
const PARAM_TAG: u64 = 0xF3;
const WIN_MASK: u64 = (1 << TAG_SHIFT) - 1;

const MAX_THREADS_PER_BLOCK: u64 = 1024;
const MAX_SHARED: u64 = 1 << 20;
const MAX_CALL_DEPTH: usize = 1024;
const MAX_LOCAL: usize = 1 << 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Run,
    /// Stopped at a warp collective (pc points at it).
    Warp,
    /// Stopped at a block barrier (pc points at it).
    Bar,
    Done,
}

struct Frame {
    func: u32,
    pc: u32,
    regs: Vec<u64>,
    param_base: u32,
    local_base: u32,
    call: u32,
}

struct Thread {
    regs: Vec<u64>,
    func: u32,
    pc: u32,
    param_base: u32,
    local_base: u32,
    stack: Vec<Frame>,
    spare_regs: Vec<Vec<u64>>,
    /// Param space above the kernel's parameters (call sequences).
    params: Vec<u8>,
    local: Vec<u8>,
    tid: [u32; 3],
    linear: u32,
    st: St,
}

impl Thread {
    fn new() -> Self {
        Thread {
            regs: Vec::new(),
            func: 0,
            pc: 0,
            param_base: 0,
            local_base: 0,
            stack: Vec::new(),
            spare_regs: Vec::new(),
            params: Vec::new(),
            local: Vec::new(),
            tid: [0; 3],
            linear: 0,
            st: St::Done,
        }
    }
}

/// Per-launch state shared by all workers.
struct Launch<'a> {
    m: &'a Module,
    meta: &'a KernelMeta,
    cfg: LaunchConfig,
    kparams: &'a [u8],
    /// Kernel params occupy param-space addresses `[0, kparam_len)`.
    kparam_len: u32,
    mem: &'a dyn Memory,
    gaddr: Vec<u64>,
    start: Instant,
    nsm: u32,
    /// Set when a block failed; other blocks stop early.
    stop: AtomicBool,
    cancel: Option<&'a AtomicBool>,
}

impl Launch<'_> {
    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }
}

/// Per-worker state: one block at a time.
struct Block<'a, 'l> {
    l: &'l Launch<'a>,
    shared: Vec<u8>,
    ctaid: [u32; 3],
    smid: u32,
    /// Backward branches taken, to poll for cancellation now and then.
    loops: u64,
}

type X<T> = Result<T, ExecError>;

fn mask_bits(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

fn sx(v: u64, bits: u32) -> i64 {
    if bits >= 64 {
        v as i64
    } else {
        let s = 64 - bits;
        ((v << s) as i64) >> s
    }
}

fn f32b(v: u64) -> f32 {
    f32::from_bits(v as u32)
}
fn f64b(v: u64) -> f64 {
    f64::from_bits(v)
}
fn bf32(f: f32) -> u64 {
    f.to_bits() as u64
}

fn next_up32(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f32::from_bits(1);
    }
    let b = x.to_bits();
    f32::from_bits(if x > 0.0 { b + 1 } else { b - 1 })
}

fn next_down32(x: f32) -> f32 {
    -next_up32(-x)
}

/// Rounds an f64 to f32 in the given direction (f32 arithmetic done in f64
/// is exact or correctly rounded for +,-,*,/,sqrt, so this gives the PTX
/// directed-rounding results).
fn round_f32(x: f64, rnd: Rnd) -> f32 {
    let r = x as f32;
    if r.is_nan() || r.is_infinite() && x.is_infinite() {
        return r;
    }
    let rf = r as f64;
    match rnd {
        Rnd::Rz | Rnd::Rzi => {
            if rf.abs() > x.abs() {
                if x > 0.0 {
                    next_down32(r)
                } else {
                    next_up32(r)
                }
            } else {
                r
            }
        }
        Rnd::Rm | Rnd::Rmi if rf > x => next_down32(r),
        Rnd::Rp | Rnd::Rpi if rf < x => next_up32(r),
        _ => r,
    }
}

fn sat01_32(f: f32) -> f32 {
    if f.is_nan() {
        0.0
    } else {
        f.clamp(0.0, 1.0)
    }
}
fn sat01_64(f: f64) -> f64 {
    if f.is_nan() {
        0.0
    } else {
        f.clamp(0.0, 1.0)
    }
}

fn ftz32(f: f32) -> f32 {
    if f.is_subnormal() {
        0.0f32.copysign(f)
    } else {
        f
    }
}

fn round_int_f64(x: f64, rnd: Rnd) -> f64 {
    match rnd {
        Rnd::Rni | Rnd::Rn => x.round_ties_even(),
        Rnd::Rmi | Rnd::Rm => x.floor(),
        Rnd::Rpi | Rnd::Rp => x.ceil(),
        _ => x.trunc(),
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

fn compare(cmp: Cmp, ty: Ty, a: u64, b: u64) -> bool {
    match ty {
        Ty::F32 => float_cmp(cmp, f32b(a) as f64, f32b(b) as f64),
        Ty::F64 => float_cmp(cmp, f64b(a), f64b(b)),
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

fn half_to_f64(v: u64, ty: Ty) -> f64 {
    match ty {
        Ty::F16 => half::f16::from_bits(v as u16).to_f64(),
        _ => half::bf16::from_bits(v as u16).to_f64(),
    }
}

fn cvt(v: u64, dty: Ty, sty: Ty, rnd: Rnd, sat: bool, ftz: bool) -> u64 {
    let sbits = sty.bits();
    if !sty.is_float() {
        let signed = sty.is_signed();
        let iv: i128 = if signed {
            sx(v, sbits) as i128
        } else {
            (v & mask_bits(sbits)) as i128
        };
        return match dty {
            Ty::F32 => {
                let f = if signed {
                    iv as i64 as f32
                } else {
                    iv as u64 as f32
                };
                bf32(if sat { sat01_32(f) } else { f })
            }
            Ty::F64 => {
                let f = if signed {
                    iv as i64 as f64
                } else {
                    iv as u64 as f64
                };
                (if sat { sat01_64(f) } else { f }).to_bits()
            }
            Ty::F16 => half::f16::from_f64(iv as f64).to_bits() as u64,
            Ty::Bf16 => half::bf16::from_f64(iv as f64).to_bits() as u64,
            _ => {
                let db = dty.bits();
                if sat {
                    let (lo, hi): (i128, i128) = if dty.is_signed() {
                        (-(1i128 << (db - 1)), (1i128 << (db - 1)) - 1)
                    } else {
                        (0, (1i128 << db) - 1)
                    };
                    (iv.clamp(lo, hi) as u64) & mask_bits(db)
                } else {
                    (iv as u64) & mask_bits(db)
                }
            }
        };
    }
    let f: f64 = match sty {
        Ty::F32 => {
            let x = f32b(v);
            (if ftz { ftz32(x) } else { x }) as f64
        }
        Ty::F64 => f64b(v),
        _ => half_to_f64(v, sty),
    };
    match dty {
        Ty::F32 => {
            let r = match rnd {
                Rnd::Rni | Rnd::Rzi | Rnd::Rmi | Rnd::Rpi => round_int_f64(f, rnd) as f32,
                _ if sty == Ty::F64 => round_f32(f, rnd),
                _ => f as f32,
            };
            let r = if ftz { ftz32(r) } else { r };
            bf32(if sat { sat01_32(r) } else { r })
        }
        Ty::F64 => {
            let r = match rnd {
                Rnd::Rni | Rnd::Rzi | Rnd::Rmi | Rnd::Rpi => round_int_f64(f, rnd),
                _ => f,
            };
            (if sat { sat01_64(r) } else { r }).to_bits()
        }
        Ty::F16 => half::f16::from_f64(f).to_bits() as u64,
        Ty::Bf16 => half::bf16::from_f64(f).to_bits() as u64,
        _ => {
            // Float to integer: round, then saturate (NaN → 0); Rust's `as`
            // casts saturate exactly that way.
            let r = round_int_f64(f, rnd);
            let db = dty.bits();
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
            out & mask_bits(db)
        }
    }
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

fn prmt(a: u64, b: u64, c: u64, mode: u8) -> Option<u64> {
    let tmp = ((b & 0xffff_ffff) << 32) | (a & 0xffff_ffff);
    let byte = |i: u64| (tmp >> ((i & 7) * 8)) & 0xff;
    let n = c & 3;
    let sel: [u64; 4] = match mode {
        0 => {
            let mut out = 0;
            for i in 0..4 {
                let s = (c >> (4 * i)) & 0xf;
                let mut v = byte(s & 7);
                if s & 8 != 0 {
                    v = if v & 0x80 != 0 { 0xff } else { 0 };
                }
                out |= v << (8 * i);
            }
            return Some(out);
        }
        1 => [n, n + 1, n + 2, n + 3],
        2 => [n, n.wrapping_sub(1), n.wrapping_sub(2), n.wrapping_sub(3)],
        3 => [n; 4],
        6 => {
            let h = (c & 1) * 2;
            [h, h + 1, h, h + 1]
        }
        _ => return None,
    };
    Some(
        sel.iter()
            .enumerate()
            .fold(0, |acc, (i, &s)| acc | (byte(s & 7) << (8 * i))),
    )
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

fn atom_apply(op: AtomOp, ty: Ty, old: u64, b: u64, c: u64) -> u64 {
    let bits = ty.bits();
    let m = mask_bits(bits);
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

fn unsupported(i: &Inst) -> ExecError {
    ExecError::Unsupported {
        inst: i.text.to_string(),
        line: i.line,
    }
}

fn mem_err(e: MemError, line: u32) -> ExecError {
    match e {
        MemError::IllegalAddress { addr } => ExecError::IllegalAddress { addr, line },
        MemError::MisalignedAddress { addr } => ExecError::MisalignedAddress { addr, line },
    }
}

/// Where an address resolved to.
#[derive(Clone, Copy)]
enum Loc {
    Global(u64),
    Shared(u64),
    Local(u64),
    Param(u64),
}

impl<'a, 'l> Block<'a, 'l> {
    fn sreg(&self, t: &Thread, s: Sreg) -> u64 {
        let cfg = &self.l.cfg;
        let lane = t.linear % 32;
        match s {
            Sreg::Tid(d) => t.tid[d as usize] as u64,
            Sreg::Ntid(d) => cfg.block[d as usize] as u64,
            Sreg::Ctaid(d) => self.ctaid[d as usize] as u64,
            Sreg::Nctaid(d) => cfg.grid[d as usize] as u64,
            Sreg::Laneid => lane as u64,
            Sreg::Warpid => (t.linear / 32) as u64,
            Sreg::Nwarpid => {
                let n = cfg.block[0] * cfg.block[1] * cfg.block[2];
                n.div_ceil(32) as u64
            }
            Sreg::Smid => self.smid as u64,
            Sreg::Nsmid => self.l.nsm as u64,
            Sreg::Gridid => 1,
            Sreg::Clock => (self.l.start.elapsed().as_nanos() as u64) & 0xffff_ffff,
            Sreg::Clock64 => self.l.start.elapsed().as_nanos() as u64,
            Sreg::Globaltimer => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            Sreg::LanemaskEq => 1u64 << lane,
            Sreg::LanemaskLt => (1u64 << lane) - 1,
            Sreg::LanemaskLe => (1u64 << (lane + 1)) - 1,
            Sreg::LanemaskGt => !((1u64 << (lane + 1)) - 1) & 0xffff_ffff,
            Sreg::LanemaskGe => !((1u64 << lane) - 1) & 0xffff_ffff,
            Sreg::DynamicSmemSize => cfg.dynamic_shared as u64,
            Sreg::TotalSmemSize => self.shared.len() as u64,
            Sreg::WarpSz => 32,
        }
    }

    fn sym(&self, t: &Thread, s: Sym) -> u64 {
        match s {
            Sym::Global(g) => self.l.gaddr[g as usize],
            Sym::Shared(v) => self.l.meta.shared_offsets[v as usize] as u64,
            Sym::DynShared => self.l.meta.dyn_base as u64,
            Sym::Local(o) => (t.local_base + o) as u64,
            Sym::Param(o) => (t.param_base + o) as u64,
        }
    }

    #[inline]
    fn get(&self, t: &Thread, o: &Opnd) -> u64 {
        match o {
            Opnd::Reg(r) => t.regs[*r as usize],
            Opnd::Imm(v) => *v,
            Opnd::NotReg(r) => (t.regs[*r as usize] == 0) as u64,
            Opnd::Sreg(s) => self.sreg(t, *s),
            Opnd::Sym(s) => self.sym(t, *s),
            Opnd::Addr(b, off) => self.get(t, b).wrapping_add(*off as u64),
            _ => 0,
        }
    }

    #[inline]
    fn set(t: &mut Thread, o: &Opnd, v: u64) {
        if let Opnd::Reg(r) = o {
            t.regs[*r as usize] = v;
        }
    }

    fn addr(&self, t: &Thread, o: &Opnd) -> u64 {
        match o {
            Opnd::Addr(b, off) => self.get(t, b).wrapping_add(*off as u64),
            o => self.get(t, o),
        }
    }

    fn locate(&self, space: Space, a: u64) -> Loc {
        match space {
            Space::Global | Space::Const => Loc::Global(a),
            Space::Shared => Loc::Shared(a),
            Space::Local => Loc::Local(a),
            Space::Param => Loc::Param(a),
            Space::Generic => match a >> TAG_SHIFT {
                SHARED_TAG => Loc::Shared(a & WIN_MASK),
                LOCAL_TAG => Loc::Local(a & WIN_MASK),
                PARAM_TAG => Loc::Param(a & WIN_MASK),
                _ => Loc::Global(a),
            },
        }
    }

    /// Bytes of a per-block or per-thread space, bounds-checked.
    fn slice_mut<'s>(
        shared: &'s mut [u8],
        t: &'s mut Thread,
        loc: Loc,
        len: usize,
        line: u32,
    ) -> X<&'s mut [u8]> {
        let (buf, off, tag) = match loc {
            Loc::Shared(o) => (shared, o, SHARED_TAG),
            Loc::Local(o) => (&mut t.local[..], o, LOCAL_TAG),
            Loc::Param(o) => (&mut t.params[..], o, PARAM_TAG),
            Loc::Global(_) => unreachable!("global memory goes through Memory"),
        };
        let ill = ExecError::IllegalAddress {
            addr: (tag << TAG_SHIFT) | (off & WIN_MASK),
            line,
        };
        let o = usize::try_from(off).map_err(|_| ill.clone())?;
        match o.checked_add(len) {
            Some(e) if e <= buf.len() => Ok(&mut buf[o..e]),
            _ => Err(ill),
        }
    }

    fn load(&mut self, t: &mut Thread, loc: Loc, buf: &mut [u8], line: u32) -> X<()> {
        match loc {
            Loc::Global(a) => self.l.mem.read(a, buf).map_err(|e| mem_err(e, line)),
            Loc::Param(o) if o < self.l.kparam_len as u64 => {
                let o = o as usize;
                match self.l.kparams.get(o..o + buf.len()) {
                    Some(s) => {
                        buf.copy_from_slice(s);
                        Ok(())
                    }
                    None => Err(ExecError::IllegalAddress {
                        addr: (PARAM_TAG << TAG_SHIFT) | o as u64,
                        line,
                    }),
                }
            }
            Loc::Param(o) => {
                let o = o - self.l.kparam_len as u64;
                let s = Self::slice_mut(&mut self.shared, t, Loc::Param(o), buf.len(), line)?;
                buf.copy_from_slice(s);
                Ok(())
            }
            _ => {
                let s = Self::slice_mut(&mut self.shared, t, loc, buf.len(), line)?;
                buf.copy_from_slice(s);
                Ok(())
            }
        }
    }

    fn store(&mut self, t: &mut Thread, loc: Loc, data: &[u8], line: u32) -> X<()> {
        match loc {
            Loc::Global(a) => self.l.mem.write(a, data).map_err(|e| mem_err(e, line)),
            Loc::Param(o) if o < self.l.kparam_len as u64 => Err(ExecError::IllegalAddress {
                addr: (PARAM_TAG << TAG_SHIFT) | o,
                line,
            }),
            Loc::Param(o) => {
                let o = o - self.l.kparam_len as u64;
                Self::slice_mut(&mut self.shared, t, Loc::Param(o), data.len(), line)?
                    .copy_from_slice(data);
                Ok(())
            }
            _ => {
                Self::slice_mut(&mut self.shared, t, loc, data.len(), line)?.copy_from_slice(data);
                Ok(())
            }
        }
    }

    fn atomic(&mut self, t: &mut Thread, i: &Inst, space: Space, op: AtomOp) -> X<Option<u64>> {
        let has_dst = matches!(i.op, Op::Atom { .. });
        let base = if has_dst { 1 } else { 0 };
        let a = self.addr(t, &i.ops[base]);
        let b = self.get(t, &i.ops[base + 1]);
        let c = i.ops.get(base + 2).map_or(0, |o| self.get(t, o));
        let size = i.ty.bytes() as u64;
        if a & (size - 1) != 0 {
            return Err(ExecError::MisalignedAddress {
                addr: a,
                line: i.line,
            });
        }
        let loc = self.locate(space, a);
        let old = match loc {
            Loc::Global(addr) => {
                let mem = self.l.mem;
                let e = |e| mem_err(e, i.line);
                if size == 4 {
                    let mut buf = [0u8; 4];
                    mem.read(addr, &mut buf).map_err(e)?;
                    let mut old = u32::from_le_bytes(buf);
                    loop {
                        let new = atom_apply(op, i.ty, old as u64, b, c) as u32;
                        let got = mem.compare_exchange_u32(addr, old, new).map_err(e)?;
                        if got == old {
                            break old as u64;
                        }
                        old = got;
                    }
                } else {
                    let mut buf = [0u8; 8];
                    mem.read(addr, &mut buf).map_err(e)?;
                    let mut old = u64::from_le_bytes(buf);
                    loop {
                        let new = atom_apply(op, i.ty, old, b, c);
                        let got = mem.compare_exchange_u64(addr, old, new).map_err(e)?;
                        if got == old {
                            break old;
                        }
                        old = got;
                    }
                }
            }
            _ => {
                // Shared/local atomics: the block runs on one OS thread, so a
                // plain read-modify-write is atomic with respect to it.
                let s = Self::slice_mut(&mut self.shared, t, loc, size as usize, i.line)?;
                let mut buf = [0u8; 8];
                buf[..size as usize].copy_from_slice(s);
                let old = u64::from_le_bytes(buf);
                let new = atom_apply(op, i.ty, old, b, c);
                s.copy_from_slice(&new.to_le_bytes()[..size as usize]);
                old
            }
        };
        Ok(if has_dst { Some(old) } else { None })
    }

    fn ld(&mut self, t: &mut Thread, i: &Inst, space: Space) -> X<()> {
        let a = self.addr(t, &i.ops[1]);
        let es = i.ty.bytes() as usize;
        let n = i.vec as usize;
        let total = es * n;
        if a & (total as u64 - 1) != 0 {
            return Err(ExecError::MisalignedAddress {
                addr: a,
                line: i.line,
            });
        }
        let mut buf = [0u8; 64];
        let loc = self.locate(space, a);
        self.load(t, loc, &mut buf[..total], i.line)?;
        let dsts: &[Opnd] = match &i.ops[0] {
            Opnd::Vec(v) => v,
            o => std::slice::from_ref(o),
        };
        let rmask = &self.l.m.funcs[t.func as usize].reg_mask;
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

    fn st(&mut self, t: &mut Thread, i: &Inst, space: Space) -> X<()> {
        let a = self.addr(t, &i.ops[0]);
        let es = i.ty.bytes() as usize;
        let n = i.vec as usize;
        let total = es * n;
        if a & (total as u64 - 1) != 0 {
            return Err(ExecError::MisalignedAddress {
                addr: a,
                line: i.line,
            });
        }
        let srcs: &[Opnd] = match &i.ops[1] {
            Opnd::Vec(v) => v,
            o => std::slice::from_ref(o),
        };
        let mut buf = [0u8; 64];
        for (k, s) in srcs.iter().enumerate().take(n) {
            let v = self.get(t, s);
            let take = es.min(8);
            buf[k * es..k * es + take].copy_from_slice(&v.to_le_bytes()[..take]);
        }
        let loc = self.locate(space, a);
        self.store(t, loc, &buf[..total], i.line)
    }

    fn call(&mut self, t: &mut Thread, i: &Inst) -> X<()> {
        let idx = self.get(t, &i.ops[0]) as u32;
        let m = self.l.m;
        let ci = &m.funcs[t.func as usize].calls[idx as usize];
        let callee = &m.funcs[ci.callee as usize];
        if t.stack.len() >= MAX_CALL_DEPTH {
            return Err(ExecError::StackOverflow { line: i.line });
        }
        // New frame's param area sits above everything the caller uses.
        let caller_top = t.param_base + m.funcs[t.func as usize].param_frame;
        let new_pbase = caller_top.max(self.l.kparam_len).next_multiple_of(8);
        let new_lbase = (t.local_base + m.funcs[t.func as usize].local_frame).next_multiple_of(16);
        let pend = (new_pbase - self.l.kparam_len + callee.param_frame) as usize;
        let lend = (new_lbase + callee.local_frame) as usize;
        if lend > MAX_LOCAL || pend > MAX_LOCAL {
            return Err(ExecError::StackOverflow { line: i.line });
        }
        if t.params.len() < pend {
            t.params.resize(pend, 0);
        }
        if t.local.len() < lend {
            t.local.resize(lend, 0);
        }
        for (arg, p) in ci.args.iter().zip(&callee.params) {
            let dst = Loc::Param((new_pbase + p.offset) as u64);
            let mut buf = vec![0u8; p.size as usize];
            match arg {
                Opnd::Sym(Sym::Param(_)) => {
                    let src = Loc::Param(self.get(t, arg));
                    self.load(t, src, &mut buf, i.line)?;
                }
                o => {
                    let v = self.get(t, o).to_le_bytes();
                    let n = buf.len().min(8);
                    buf[..n].copy_from_slice(&v[..n]);
                }
            }
            self.store(t, dst, &buf, i.line)?;
        }
        let mut regs = t.spare_regs.pop().unwrap_or_default();
        regs.clear();
        regs.resize(callee.nregs as usize, 0);
        let saved = Frame {
            func: t.func,
            pc: t.pc,
            regs: std::mem::replace(&mut t.regs, regs),
            param_base: t.param_base,
            local_base: t.local_base,
            call: idx,
        };
        t.stack.push(saved);
        t.func = ci.callee;
        t.pc = 0;
        t.param_base = new_pbase;
        t.local_base = new_lbase;
        Ok(())
    }

    /// Returns false when the thread's kernel frame returned.
    fn ret(&mut self, t: &mut Thread, line: u32) -> X<bool> {
        let Some(fr) = t.stack.pop() else {
            return Ok(false);
        };
        let m = self.l.m;
        let callee = &m.funcs[t.func as usize];
        let ci = &m.funcs[fr.func as usize].calls[fr.call as usize];
        let callee_pbase = t.param_base;
        let callee_regs = std::mem::replace(&mut t.regs, fr.regs);
        t.spare_regs.push(callee_regs);
        t.func = fr.func;
        t.pc = fr.pc;
        t.param_base = fr.param_base;
        t.local_base = fr.local_base;
        for (dst, p) in ci.rets.iter().zip(&callee.rets) {
            let mut buf = vec![0u8; p.size as usize];
            self.load(
                t,
                Loc::Param((callee_pbase + p.offset) as u64),
                &mut buf,
                line,
            )?;
            match dst {
                Opnd::Sym(Sym::Param(_)) => {
                    let d = Loc::Param(self.get(t, dst));
                    self.store(t, d, &buf, line)?;
                }
                o => {
                    let mut w = [0u8; 8];
                    let n = buf.len().min(8);
                    w[..n].copy_from_slice(&buf[..n]);
                    Self::set(t, o, u64::from_le_bytes(w));
                }
            }
        }
        Ok(true)
    }

    /// Runs one thread until it blocks (barrier, warp collective) or ends.
    fn run(&mut self, t: &mut Thread) -> X<()> {
        let m = self.l.m;
        let mut insts: &[Inst] = &m.funcs[t.func as usize].insts;
        loop {
            let Some(i) = insts.get(t.pc as usize) else {
                // Falling off the end of a body is an implicit return.
                if !self.ret(t, 0)? {
                    t.st = St::Done;
                    return Ok(());
                }
                insts = &m.funcs[t.func as usize].insts;
                continue;
            };
            if let Some((p, neg)) = i.guard {
                if (t.regs[p as usize] != 0) == neg {
                    t.pc += 1;
                    continue;
                }
            }
            if i.op.is_warp_collective() {
                t.st = St::Warp;
                return Ok(());
            }
            t.pc += 1;
            let ty = i.ty;
            let o = &i.ops;
            match i.op {
                Op::Bra => {
                    if let Opnd::Label(l) = o[0] {
                        if l < t.pc {
                            self.loops += 1;
                            if self.loops & 0xffff == 0 && self.l.should_stop() {
                                return Err(ExecError::Cancelled);
                            }
                        }
                        t.pc = l;
                    }
                }
                Op::Mov => self.mov(t, i),
                Op::Ld { space } => self.ld(t, i, space)?,
                Op::St { space } => self.st(t, i, space)?,
                Op::Add | Op::Sub | Op::Min | Op::Max | Op::Div | Op::Rem | Op::Mul(_) => {
                    let a = self.get(t, &o[1]);
                    let b = self.get(t, &o[2]);
                    let r = self.binop(i, a, b)?;
                    Self::set(t, &o[0], r);
                }
                Op::Fma | Op::Mad(_) | Op::Mad24(_) | Op::Sad | Op::Mul24(_) => {
                    let a = self.get(t, &o[1]);
                    let b = self.get(t, &o[2]);
                    let c = o.get(3).map_or(0, |x| self.get(t, x));
                    let r = self.ternop(i, a, b, c)?;
                    Self::set(t, &o[0], r);
                }
                Op::Setp { cmp, bop } => {
                    let a = self.get(t, &o[2]);
                    let b = self.get(t, &o[3]);
                    let c = o.get(4).is_none_or(|x| self.get(t, x) != 0);
                    let r = compare(cmp, ty, a, b);
                    Self::set(t, &o[0], bool_op(bop, r, c) as u64);
                    Self::set(t, &o[1], bool_op(bop, !r, c) as u64);
                }
                Op::Selp => {
                    let c = self.get(t, &o[3]) != 0;
                    let v = self.get(t, &o[if c { 1 } else { 2 }]);
                    Self::set(t, &o[0], v);
                }
                Op::Cvt { dty, sty } => {
                    let v = self.get(t, &o[1]);
                    Self::set(t, &o[0], cvt(v, dty, sty, i.rnd, i.sat, i.ftz));
                }
                Op::Call => {
                    self.call(t, i)?;
                    insts = &m.funcs[t.func as usize].insts;
                }
                Op::Ret => {
                    if !self.ret(t, i.line)? {
                        t.st = St::Done;
                        return Ok(());
                    }
                    insts = &m.funcs[t.func as usize].insts;
                }
                Op::Exit => {
                    t.st = St::Done;
                    return Ok(());
                }
                Op::Bar { .. } => {
                    t.pc -= 1;
                    t.st = St::Bar;
                    return Ok(());
                }
                Op::Atom { space, op } => {
                    let old = self.atomic(t, i, space, op)?;
                    if let Some(v) = old {
                        Self::set(t, &o[0], v);
                    }
                }
                Op::Red { space, op } => {
                    self.atomic(t, i, space, op)?;
                }
                Op::Nop | Op::BarArrive => {}
                Op::Trap | Op::Brkpt => return Err(ExecError::Trap { line: i.line }),
                Op::Unsupported => return Err(unsupported(i)),
                _ => {
                    let r = self.misc(t, i)?;
                    Self::set(t, &o[0], r);
                }
            }
        }
    }

    fn mov(&self, t: &mut Thread, i: &Inst) {
        let bits = i.ty.bits();
        match (&i.ops[0], &i.ops[1]) {
            (Opnd::Vec(d), s) => {
                let v = self.get(t, s);
                let w = bits / d.len() as u32;
                for (k, e) in d.iter().enumerate() {
                    Self::set(t, e, (v >> (w * k as u32)) & mask_bits(w));
                }
            }
            (d, Opnd::Vec(s)) => {
                let w = bits / s.len() as u32;
                let mut v = 0u64;
                for (k, e) in s.iter().enumerate() {
                    v |= (self.get(t, e) & mask_bits(w)) << (w * k as u32);
                }
                Self::set(t, d, v);
            }
            (d, s) => {
                let v = self.get(t, s);
                let v = if i.ty == Ty::Pred {
                    (v != 0) as u64
                } else {
                    v & mask_bits(bits)
                };
                Self::set(t, d, v);
            }
        }
    }

    fn binop(&self, i: &Inst, a: u64, b: u64) -> X<u64> {
        let ty = i.ty;
        let bits = ty.bits();
        let m = mask_bits(bits);
        let signed = ty.is_signed();
        Ok(match ty {
            Ty::F32 => {
                let (x, y) = (f32b(a), f32b(b));
                let (x, y) = if i.ftz { (ftz32(x), ftz32(y)) } else { (x, y) };
                let directed = matches!(i.rnd, Rnd::Rz | Rnd::Rm | Rnd::Rp);
                let r = match i.op {
                    Op::Add if directed => round_f32(x as f64 + y as f64, i.rnd),
                    Op::Sub if directed => round_f32(x as f64 - y as f64, i.rnd),
                    Op::Mul(_) if directed => round_f32(x as f64 * y as f64, i.rnd),
                    Op::Div if directed => round_f32(x as f64 / y as f64, i.rnd),
                    Op::Add => x + y,
                    Op::Sub => x - y,
                    Op::Mul(_) => x * y,
                    Op::Div => x / y,
                    Op::Min => x.min(y),
                    Op::Max => x.max(y),
                    _ => return Err(unsupported(i)),
                };
                let r = if i.ftz { ftz32(r) } else { r };
                bf32(if i.sat { sat01_32(r) } else { r })
            }
            Ty::F64 => {
                let (x, y) = (f64b(a), f64b(b));
                let r = match i.op {
                    Op::Add => x + y,
                    Op::Sub => x - y,
                    Op::Mul(_) => x * y,
                    Op::Div => x / y,
                    Op::Min => x.min(y),
                    Op::Max => x.max(y),
                    _ => return Err(unsupported(i)),
                };
                (if i.sat { sat01_64(r) } else { r }).to_bits()
            }
            _ => match i.op {
                Op::Add if i.sat && ty == Ty::S32 => {
                    (a as u32 as i32).saturating_add(b as u32 as i32) as u32 as u64
                }
                Op::Sub if i.sat && ty == Ty::S32 => {
                    (a as u32 as i32).saturating_sub(b as u32 as i32) as u32 as u64
                }
                Op::Add => a.wrapping_add(b) & m,
                Op::Sub => a.wrapping_sub(b) & m,
                Op::Mul(MulMode::Lo) => a.wrapping_mul(b) & m,
                Op::Mul(MulMode::Hi) => {
                    if signed {
                        ((sx(a, bits) as i128 * sx(b, bits) as i128) >> bits) as u64 & m
                    } else {
                        (((a & m) as u128 * (b & m) as u128) >> bits) as u64 & m
                    }
                }
                Op::Mul(MulMode::Wide) => {
                    if signed {
                        (sx(a, bits) as i128 * sx(b, bits) as i128) as u64 & mask_bits(bits * 2)
                    } else {
                        ((a & m) as u128 * (b & m) as u128) as u64 & mask_bits(bits * 2)
                    }
                }
                Op::Div | Op::Rem => {
                    let div = i.op == Op::Div;
                    if b & m == 0 {
                        // Undefined on hardware; all ones avoids a Rust panic.
                        m
                    } else if signed {
                        let (x, y) = (sx(a, bits), sx(b, bits));
                        let r = if div {
                            x.wrapping_div(y)
                        } else {
                            x.wrapping_rem(y)
                        };
                        r as u64 & m
                    } else {
                        let (x, y) = (a & m, b & m);
                        if div {
                            x / y
                        } else {
                            x % y
                        }
                    }
                }
                Op::Min if signed => sx(a, bits).min(sx(b, bits)) as u64 & m,
                Op::Max if signed => sx(a, bits).max(sx(b, bits)) as u64 & m,
                Op::Min => (a & m).min(b & m),
                Op::Max => (a & m).max(b & m),
                _ => return Err(unsupported(i)),
            },
        })
    }

    fn ternop(&self, i: &Inst, a: u64, b: u64, c: u64) -> X<u64> {
        let ty = i.ty;
        let bits = ty.bits();
        let m = mask_bits(bits);
        let signed = ty.is_signed();
        Ok(match i.op {
            Op::Fma => match ty {
                Ty::F32 => {
                    let (x, y, z) = (f32b(a), f32b(b), f32b(c));
                    let (x, y, z) = if i.ftz {
                        (ftz32(x), ftz32(y), ftz32(z))
                    } else {
                        (x, y, z)
                    };
                    let r = match i.rnd {
                        Rnd::Rz | Rnd::Rm | Rnd::Rp => {
                            round_f32((x as f64).mul_add(y as f64, z as f64), i.rnd)
                        }
                        _ => x.mul_add(y, z),
                    };
                    let r = if i.ftz { ftz32(r) } else { r };
                    bf32(if i.sat { sat01_32(r) } else { r })
                }
                _ => {
                    let r = f64b(a).mul_add(f64b(b), f64b(c));
                    (if i.sat { sat01_64(r) } else { r }).to_bits()
                }
            },
            Op::Mad(MulMode::Lo) => a.wrapping_mul(b).wrapping_add(c) & m,
            Op::Mad(MulMode::Hi) => {
                let hi = if signed {
                    ((sx(a, bits) as i128 * sx(b, bits) as i128) >> bits) as u64
                } else {
                    (((a & m) as u128 * (b & m) as u128) >> bits) as u64
                };
                hi.wrapping_add(c) & m
            }
            Op::Mad(MulMode::Wide) => {
                let w = if signed {
                    (sx(a, bits) as i128 * sx(b, bits) as i128) as u64
                } else {
                    ((a & m) as u128 * (b & m) as u128) as u64
                };
                w.wrapping_add(c) & mask_bits(bits * 2)
            }
            Op::Mul24(mode) | Op::Mad24(mode) => {
                let (x, y) = if signed {
                    (sx(a, 24), sx(b, 24))
                } else {
                    ((a & 0xff_ffff) as i64, (b & 0xff_ffff) as i64)
                };
                let p = x.wrapping_mul(y) as u64;
                let r = if mode == MulMode::Hi { p >> 16 } else { p };
                let add = if matches!(i.op, Op::Mad24(_)) { c } else { 0 };
                r.wrapping_add(add) & m
            }
            Op::Sad => {
                let d = if signed {
                    sx(a, bits).abs_diff(sx(b, bits))
                } else {
                    (a & m).abs_diff(b & m)
                };
                c.wrapping_add(d) & m
            }
            _ => return Err(unsupported(i)),
        })
    }

    /// Everything with one destination in `ops[0]` not handled inline.
    fn misc(&self, t: &mut Thread, i: &Inst) -> X<u64> {
        let ty = i.ty;
        let bits = ty.bits();
        let m = mask_bits(bits);
        let o = &i.ops;
        let a = o.get(1).map_or(0, |x| self.get(t, x));
        let arg = |k: usize| o.get(k).map_or(0, |x| self.get(t, x));
        Ok(match i.op {
            Op::Abs | Op::Neg => match ty {
                Ty::F32 => {
                    let x = f32b(a);
                    let x = if i.ftz { ftz32(x) } else { x };
                    bf32(if i.op == Op::Abs { x.abs() } else { -x })
                }
                Ty::F64 => {
                    let x = f64b(a);
                    (if i.op == Op::Abs { x.abs() } else { -x }).to_bits()
                }
                _ => {
                    let x = sx(a, bits);
                    (if i.op == Op::Abs {
                        x.wrapping_abs()
                    } else {
                        x.wrapping_neg()
                    }) as u64
                        & m
                }
            },
            Op::Rcp | Op::Sqrt | Op::Rsqrt | Op::Ex2 | Op::Lg2 | Op::Sin | Op::Cos | Op::Tanh => {
                let f = |x: f64| -> f64 {
                    match i.op {
                        Op::Rcp => 1.0 / x,
                        Op::Sqrt => x.sqrt(),
                        Op::Rsqrt => 1.0 / x.sqrt(),
                        Op::Ex2 => x.exp2(),
                        Op::Lg2 => x.log2(),
                        Op::Sin => x.sin(),
                        Op::Cos => x.cos(),
                        _ => x.tanh(),
                    }
                };
                if ty == Ty::F32 {
                    let x = f32b(a);
                    let x = if i.ftz { ftz32(x) } else { x };
                    let r = match i.op {
                        Op::Rcp | Op::Sqrt if matches!(i.rnd, Rnd::Rz | Rnd::Rm | Rnd::Rp) => {
                            round_f32(f(x as f64), i.rnd)
                        }
                        Op::Sqrt => x.sqrt(),
                        Op::Rcp => 1.0 / x,
                        _ => f(x as f64) as f32,
                    };
                    bf32(if i.ftz { ftz32(r) } else { r })
                } else {
                    f(f64b(a)).to_bits()
                }
            }
            Op::Copysign => match ty {
                Ty::F32 => bf32(f32b(arg(2)).copysign(f32b(a))),
                _ => f64b(arg(2)).copysign(f64b(a)).to_bits(),
            },
            Op::Testp(k) => {
                let x = if ty == Ty::F32 {
                    f32b(a) as f64
                } else {
                    f64b(a)
                };
                let sub = if ty == Ty::F32 {
                    f32b(a).is_subnormal()
                } else {
                    x.is_subnormal()
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
            Op::And => {
                if ty == Ty::Pred {
                    ((a != 0) && (arg(2) != 0)) as u64
                } else {
                    a & arg(2) & m
                }
            }
            Op::Or => {
                if ty == Ty::Pred {
                    ((a != 0) || (arg(2) != 0)) as u64
                } else {
                    (a | arg(2)) & m
                }
            }
            Op::Xor => {
                if ty == Ty::Pred {
                    ((a != 0) ^ (arg(2) != 0)) as u64
                } else {
                    (a ^ arg(2)) & m
                }
            }
            Op::Not => {
                if ty == Ty::Pred {
                    (a == 0) as u64
                } else {
                    !a & m
                }
            }
            Op::Cnot => (a & m == 0) as u64,
            Op::Shl => {
                let n = arg(2) as u32;
                if n >= bits {
                    0
                } else {
                    (a << n) & m
                }
            }
            Op::Shr => {
                let n = arg(2) as u32;
                if ty.is_signed() {
                    (sx(a, bits) >> n.min(bits - 1).min(63)) as u64 & m
                } else if n >= bits {
                    0
                } else {
                    (a & m) >> n
                }
            }
            Op::Bfe => bfe(
                a & m,
                arg(2) as u32 & 0xff,
                arg(3) as u32 & 0xff,
                bits,
                ty.is_signed(),
            ),
            Op::Bfi => bfi(a, arg(2), arg(3) as u32 & 0xff, arg(4) as u32 & 0xff, bits),
            Op::Popc => (a & m).count_ones() as u64,
            Op::Clz => ((a & m).leading_zeros() - (64 - bits)) as u64,
            Op::Brev => (a & m).reverse_bits() >> (64 - bits),
            Op::Bfind { shiftamt } => {
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
            Op::Prmt(mode) => prmt(a, arg(2), arg(3), mode).ok_or_else(|| unsupported(i))?,
            Op::Lop3 => lop3(a, arg(2), arg(3), arg(4) & 0xff),
            Op::Shf { left, wrap } => {
                let c = arg(3) as u32;
                let n = if wrap { c & 31 } else { c.min(32) };
                let v = ((arg(2) & 0xffff_ffff) << 32) | (a & 0xffff_ffff);
                if left {
                    ((v << n) >> 32) & 0xffff_ffff
                } else {
                    (v >> n) & 0xffff_ffff
                }
            }
            Op::Set { cmp, bop, dty } => {
                let c = o.get(4).is_none_or(|x| self.get(t, x) != 0);
                let r = bool_op(bop, compare(cmp, ty, a, arg(2)), c);
                match (r, dty) {
                    (false, _) => 0,
                    (true, Ty::F32) => bf32(1.0),
                    (true, _) => 0xffff_ffff,
                }
            }
            Op::Slct { fsel } => {
                let c = arg(3);
                let pick_a = if fsel {
                    f32b(c) >= 0.0 || f32b(c) == 0.0
                } else {
                    sx(c, 32) >= 0
                };
                if pick_a {
                    a
                } else {
                    arg(2)
                }
            }
            Op::Cvta { to, space } => {
                let tag = match space {
                    Space::Shared => SHARED_TAG,
                    Space::Local => LOCAL_TAG,
                    Space::Param => PARAM_TAG,
                    _ => return Ok(a),
                };
                if to {
                    (a & WIN_MASK) & m
                } else {
                    (tag << TAG_SHIFT) | (a & WIN_MASK)
                }
            }
            Op::Isspacep(space) => {
                let tag = a >> TAG_SHIFT;
                (match space {
                    Space::Shared => tag == SHARED_TAG,
                    Space::Local => tag == LOCAL_TAG,
                    Space::Param => tag == PARAM_TAG,
                    _ => !matches!(tag, SHARED_TAG | LOCAL_TAG | PARAM_TAG),
                }) as u64
            }
            _ => return Err(unsupported(i)),
        })
    }

    /// Executes the warp collective at which the lanes in `group` stand.
    fn collective(&self, threads: &mut [Thread], group: &[usize]) -> X<()> {
        let t0 = &threads[group[0]];
        let f = &self.l.m.funcs[t0.func as usize];
        let i = &f.insts[t0.pc as usize];
        let o = &i.ops;
        let base = group[0] / 32 * 32;
        let gmask: u32 = group.iter().fold(0, |acc, &g| acc | 1 << (g - base));
        let mut vals = [0u64; 32];
        let src = match i.op {
            Op::Shfl(_) => 2,
            Op::MatchAll => 2,
            _ => 1,
        };
        if !matches!(i.op, Op::BarWarp | Op::Activemask) {
            for &g in group {
                vals[g - base] = self.get(&threads[g], &o[src]);
            }
        }
        let members = |t: &Thread| -> u32 {
            let mm = o.last().map_or(u64::MAX, |x| self.get(t, x)) as u32;
            mm & gmask
        };
        let mut results: [(u64, u64); 32] = [(0, 0); 32];
        for &g in group {
            let t = &threads[g];
            let lane = (g - base) as i64;
            results[g - base] = match i.op {
                Op::Shfl(mode) => {
                    let b = self.get(t, &o[3]) as i64 & 0x1f;
                    let c = self.get(t, &o[4]) as i64;
                    let cval = c & 0x1f;
                    let segmask = (c >> 8) & 0x1f;
                    let max_lane = (lane & segmask) | (cval & !segmask);
                    let min_lane = lane & segmask;
                    let (j, ok) = match mode {
                        ShflMode::Up => (lane - b, lane - b >= max_lane),
                        ShflMode::Down => (lane + b, lane + b <= max_lane),
                        ShflMode::Bfly => (lane ^ b, (lane ^ b) <= max_lane),
                        ShflMode::Idx => {
                            let j = min_lane | (b & !segmask);
                            (j, j <= max_lane)
                        }
                    };
                    let j = if ok { j } else { lane };
                    // A source lane that isn't participating gives an
                    // undefined value on hardware; use the lane's own.
                    let v = if (0..32).contains(&j) && gmask & (1 << j) != 0 {
                        vals[j as usize]
                    } else {
                        vals[lane as usize]
                    };
                    (v & 0xffff_ffff, ok as u64)
                }
                Op::Vote(mode) => {
                    let mm = members(t);
                    let ballot: u32 = (0..32)
                        .filter(|&k| mm & (1 << k) != 0 && vals[k] != 0)
                        .fold(0, |acc, k| acc | 1 << k);
                    let v = match mode {
                        VoteMode::Ballot => ballot as u64,
                        VoteMode::All => (ballot == mm) as u64,
                        VoteMode::Any => (ballot != 0) as u64,
                        VoteMode::Uni => (ballot == 0 || ballot == mm) as u64,
                    };
                    (v, 0)
                }
                Op::Activemask => (gmask as u64, 0),
                Op::MatchAny => {
                    let mm = members(t);
                    let me = vals[lane as usize];
                    let r = (0..32)
                        .filter(|&k| mm & (1 << k) != 0 && vals[k] == me)
                        .fold(0u64, |acc, k| acc | 1 << k);
                    (r, 0)
                }
                Op::MatchAll => {
                    let mm = members(t);
                    let me = vals[lane as usize];
                    let all = (0..32).all(|k| mm & (1 << k) == 0 || vals[k] == me);
                    if all {
                        (mm as u64, 1)
                    } else {
                        (0, 0)
                    }
                }
                Op::Redux(r) => {
                    let mm = members(t);
                    let it = (0..32)
                        .filter(|&k| mm & (1 << k) != 0)
                        .map(|k| vals[k] & 0xffff_ffff);
                    let v = match r {
                        ReduxOp::Add => it.fold(0u64, |a, v| a.wrapping_add(v)) & 0xffff_ffff,
                        ReduxOp::And => it.fold(0xffff_ffff, |a, v| a & v),
                        ReduxOp::Or => it.fold(0, |a, v| a | v),
                        ReduxOp::Xor => it.fold(0, |a, v| a ^ v),
                        ReduxOp::Min if i.ty.is_signed() => {
                            it.map(|v| v as u32 as i32).min().unwrap_or(0) as u32 as u64
                        }
                        ReduxOp::Max if i.ty.is_signed() => {
                            it.map(|v| v as u32 as i32).max().unwrap_or(0) as u32 as u64
                        }
                        ReduxOp::Min => it.min().unwrap_or(0),
                        ReduxOp::Max => it.max().unwrap_or(0),
                        ReduxOp::Popc => it.filter(|&v| v != 0).count() as u64,
                    };
                    (v, 0)
                }
                _ => (0, 0),
            };
        }
        for &g in group {
            let t = &mut threads[g];
            let (v, p) = results[g - base];
            match i.op {
                Op::BarWarp => {}
                Op::Shfl(_) | Op::MatchAll => {
                    Self::set(t, &o[0], v);
                    Self::set(t, &o[1], p);
                }
                _ => Self::set(t, &o[0], v),
            }
            t.pc += 1;
            t.st = St::Run;
        }
        Ok(())
    }

    /// Releases a block barrier: every live thread is waiting at one.
    fn release_barrier(&self, threads: &mut [Thread]) {
        // bar.red: reduce each waiting thread's predicate over the block.
        let (mut count, mut all, mut any) = (0u64, true, false);
        let mut has_red = false;
        for t in threads.iter().filter(|t| t.st == St::Bar) {
            let i = &self.l.m.funcs[t.func as usize].insts[t.pc as usize];
            if let Op::Bar { red: Some(_) } = i.op {
                has_red = true;
                let p = i.ops.last().is_some_and(|x| self.get(t, x) != 0);
                count += p as u64;
                all &= p;
                any |= p;
            }
        }
        for t in threads.iter_mut().filter(|t| t.st == St::Bar) {
            if has_red {
                let i = &self.l.m.funcs[t.func as usize].insts[t.pc as usize];
                if let Op::Bar { red: Some(r) } = i.op {
                    let v = match r {
                        ReduxOp::Popc => count,
                        ReduxOp::And => all as u64,
                        _ => any as u64,
                    };
                    Self::set(t, &i.ops[0], v);
                }
            }
            t.pc += 1;
            t.st = St::Run;
        }
    }

    fn run_block(&mut self, threads: &mut Vec<Thread>, linear_block: u64) -> X<()> {
        let cfg = self.l.cfg;
        let g = cfg.grid;
        let lb = linear_block;
        self.ctaid = [
            (lb % g[0] as u64) as u32,
            (lb / g[0] as u64 % g[1] as u64) as u32,
            (lb / (g[0] as u64 * g[1] as u64)) as u32,
        ];
        let [bx, by, bz] = cfg.block;
        let n = (bx * by * bz) as usize;
        if threads.len() < n {
            threads.resize_with(n, Thread::new);
        }
        threads.truncate(n);
        let kf = &self.l.m.funcs[self.l.meta.func as usize];
        let kparam_extra = (kf.param_frame.saturating_sub(self.l.kparam_len)) as usize;
        for (k, t) in threads.iter_mut().enumerate() {
            let k32 = k as u32;
            t.tid = [k32 % bx, k32 / bx % by, k32 / (bx * by)];
            t.linear = k32;
            t.regs.clear();
            t.regs.resize(kf.nregs as usize, 0);
            t.func = self.l.meta.func;
            t.pc = 0;
            t.param_base = 0;
            t.local_base = 0;
            while let Some(f) = t.stack.pop() {
                t.spare_regs.push(f.regs);
            }
            if t.params.len() < kparam_extra {
                t.params.resize(kparam_extra, 0);
            }
            if t.local.len() < kf.local_frame as usize {
                t.local.resize(kf.local_frame as usize, 0);
            }
            t.st = St::Run;
        }
        self.shared.iter_mut().for_each(|b| *b = 0);
        loop {
            for t in threads.iter_mut() {
                if t.st == St::Run {
                    self.run(t)?;
                }
            }
            // Everyone is blocked or done. Warp collectives first: a warp
            // whose lanes wait at the same instruction executes it together.
            let mut any = false;
            for w in 0..n.div_ceil(32) {
                let lanes = w * 32..(w * 32 + 32).min(n);
                let mut waiting: Vec<usize> =
                    lanes.filter(|&k| threads[k].st == St::Warp).collect();
                while let Some(&first) = waiting.first() {
                    let key = (
                        threads[first].func,
                        threads[first].pc,
                        threads[first].stack.len(),
                    );
                    let (group, rest): (Vec<usize>, Vec<usize>) = waiting.iter().partition(|&&k| {
                        (threads[k].func, threads[k].pc, threads[k].stack.len()) == key
                    });
                    self.collective(threads, &group)?;
                    waiting = rest;
                    any = true;
                }
            }
            if any {
                continue;
            }
            if threads.iter().any(|t| t.st == St::Bar) {
                self.release_barrier(threads);
                continue;
            }
            return Ok(());
        }
    }
}

/// Runs `kernel` over the grid. `params` is the packed parameter buffer
/// (layout from [`crate::Kernel::params`]); `global_symbols` maps each module
/// global (see [`Module::globals`]) to its device address.
pub fn launch(
    module: &Module,
    kernel: &str,
    cfg: &LaunchConfig,
    params: &[u8],
    mem: &dyn Memory,
    global_symbols: &HashMap<String, u64>,
) -> Result<(), ExecError> {
    launch_with(
        module,
        kernel,
        cfg,
        params,
        mem,
        global_symbols,
        &LaunchOptions::default(),
    )
}

/// Knobs of a launch beyond the CUDA configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct LaunchOptions<'a> {
    /// Worker threads running blocks; 0 means one per available CPU.
    pub workers: usize,
    /// When set to true (e.g. by context teardown), running blocks stop at
    /// their next loop iteration with [`ExecError::Cancelled`]: a kernel
    /// that spins forever must not hold the daemon hostage.
    pub cancel: Option<&'a AtomicBool>,
}

/// [`launch`] with [`LaunchOptions`].
pub fn launch_with(
    module: &Module,
    kernel: &str,
    cfg: &LaunchConfig,
    params: &[u8],
    mem: &dyn Memory,
    global_symbols: &HashMap<String, u64>,
    opts: &LaunchOptions<'_>,
) -> Result<(), ExecError> {
    let workers = match opts.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        w => w,
    };
    let meta = module
        .kernels
        .get(kernel)
        .ok_or_else(|| ExecError::UnknownKernel(kernel.to_string()))?;
    let kf = &module.funcs[meta.func as usize];
    let kparam_len = kf.params.last().map_or(0, |p| p.offset + p.size);
    if params.len() < kparam_len as usize {
        return Err(ExecError::BadParams {
            expected: kparam_len as usize,
            got: params.len(),
        });
    }
    let threads = cfg.block.iter().map(|&d| d as u64).product::<u64>();
    let blocks = cfg.grid.iter().map(|&d| d as u64).product::<u64>();
    if threads == 0 || blocks == 0 || threads > MAX_THREADS_PER_BLOCK {
        return Err(ExecError::InvalidConfig(format!(
            "grid {:?} block {:?}",
            cfg.grid, cfg.block
        )));
    }
    let shared_total = meta.dyn_base as u64 + cfg.dynamic_shared as u64;
    if shared_total > MAX_SHARED {
        return Err(ExecError::InvalidConfig(format!(
            "{shared_total} bytes of shared memory"
        )));
    }
    let mut gaddr = vec![0u64; module.globals.len()];
    for (k, g) in module.globals.iter().enumerate() {
        match global_symbols.get(&g.name) {
            Some(&a) => gaddr[k] = a,
            None if meta.globals_used.contains(&(k as u32)) => {
                return Err(ExecError::MissingSymbol(g.name.clone()))
            }
            None => {}
        }
    }
    let workers = workers.clamp(1, 64).min(blocks as usize);
    let l = Launch {
        m: module,
        meta,
        cfg: *cfg,
        kparams: &params[..kparam_len as usize],
        kparam_len,
        mem,
        gaddr,
        start: Instant::now(),
        nsm: workers as u32,
        stop: AtomicBool::new(false),
        cancel: opts.cancel,
    };
    let next = AtomicU64::new(0);
    let first_err: Mutex<Option<ExecError>> = Mutex::new(None);
    let work = |smid: u32| {
        let mut b = Block {
            l: &l,
            shared: vec![0u8; shared_total as usize],
            ctaid: [0; 3],
            smid,
            loops: 0,
        };
        let mut threads = Vec::new();
        while !l.should_stop() {
            let blk = next.fetch_add(1, Ordering::Relaxed);
            if blk >= blocks {
                break;
            }
            let r = catch_unwind(AssertUnwindSafe(|| b.run_block(&mut threads, blk)))
                .unwrap_or_else(|p| {
                    let msg = p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "panic".into());
                    // A panic leaves per-thread state inconsistent: start over.
                    threads = Vec::new();
                    Err(ExecError::Internal(msg))
                });
            if let Err(e) = r {
                l.stop.store(true, Ordering::Relaxed);
                let mut fe = first_err.lock().unwrap_or_else(|e| e.into_inner());
                fe.get_or_insert(e);
            }
        }
    };
    if workers == 1 {
        work(0);
    } else {
        std::thread::scope(|s| {
            for w in 0..workers {
                let work = &work;
                s.spawn(move || work(w as u32));
            }
        });
    }
    match first_err.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
