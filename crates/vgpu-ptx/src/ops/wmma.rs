//! `wmma.load`, `wmma.mma`, `wmma.store`: warp-level matrix multiply with
//! opaque fragments. The PTX ISA leaves the distribution of matrix elements
//! over a warp's fragment registers unspecified — a program may only move
//! fragments between these three instructions and apply element-wise
//! operations — so this interpreter uses its own: element `e` of lane `l`
//! holds the matrix's row-major element `(32 e + l) mod (rows x cols)`.
//! Fragments with more slots than elements hold duplicates.

use super::matrix::MatrixOp;
use super::{Decoded, Mods};
use crate::exec::block::Block;
use crate::exec::thread::{unsupported, Thread};
use crate::exec::X;
use crate::ir::{Inst, Op, Rnd, Space, Ty};
use crate::num::{mask_bits, sx, Fmt};
use crate::ExecError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    A,
    B,
    C,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WmmaOp {
    /// `wmma.load.{a,b,c}` / `wmma.store.d` (`store`); `row`: row-major in
    /// memory; `ety`: element type.
    Access {
        which: Which,
        store: bool,
        row: bool,
        mnk: (u8, u8, u8),
        ety: Ty,
        space: Space,
    },
    Mma {
        mnk: (u8, u8, u8),
        d: Ty,
        a: Ty,
        b: Ty,
        c: Ty,
        satfinite: bool,
    },
}

fn shape(s: &str) -> Option<(u8, u8, u8)> {
    Some(match s {
        "m16n16k16" => (16, 16, 16),
        "m32n8k16" => (32, 8, 16),
        "m8n32k16" => (8, 32, 16),
        "m16n16k8" => (16, 16, 8),
        "m8n8k4" => (8, 8, 4),
        _ => return None,
    })
}

/// Whether the shape exists for these multiplicand types.
fn valid(mnk: (u8, u8, u8), a: Ty) -> bool {
    match mnk {
        (16, 16, 8) => a == Ty::Tf32,
        (8, 8, 4) => a == Ty::F64,
        _ => matches!(a, Ty::F16 | Ty::Bf16 | Ty::S8 | Ty::U8),
    }
}

pub(crate) fn decode(m: &Mods) -> Option<Decoded> {
    let ty = m.ty();
    let mnk = m.find(shape);
    let row = m.has("row");
    let col = m.has("col");
    let space = m.space();
    let load = m.has("load");
    let store = !load && m.has("store");
    let op = if load || store {
        if store {
            m.has("d");
        }
        let which = if m.has("a") {
            Which::A
        } else if m.has("b") {
            Which::B
        } else {
            m.has("c");
            Which::C
        };
        match mnk {
            Some(mnk) if row != col && m.tys.len() == 1 => WmmaOp::Access {
                which,
                store,
                row,
                mnk,
                ety: ty,
                space,
            },
            _ => return super::unsupported(ty),
        }
    } else if m.has("mma") {
        let satfinite = m.has("satfinite");
        let (d, a, b, c) = match *m.tys.as_slice() {
            // f16 multiplicands: only the accumulator types are written.
            [d, c] => (d, Ty::F16, Ty::F16, c),
            [d, a, b, c] => (d, a, b, c),
            _ => return super::unsupported(ty),
        };
        match mnk {
            Some(mnk) if row || col => WmmaOp::Mma {
                mnk,
                d,
                a,
                b,
                c,
                satfinite,
            },
            _ => return super::unsupported(ty),
        }
    } else {
        return super::unsupported(ty);
    };
    let ok = match op {
        WmmaOp::Access {
            mnk, ety, which, ..
        } => which == Which::C || valid(mnk, ety),
        WmmaOp::Mma { mnk, a, b, .. } => valid(mnk, a) && a == b,
    };
    if !ok {
        return super::unsupported(ty);
    }
    Some(Decoded::new(Op::Matrix(MatrixOp::Wmma(op)), ty).imm(2, Ty::U32))
}

/// Rows and columns of a fragment's matrix.
fn dims(mnk: (u8, u8, u8), which: Which) -> (usize, usize) {
    let (m, n, k) = (mnk.0 as usize, mnk.1 as usize, mnk.2 as usize);
    match which {
        Which::A => (m, k),
        Which::B => (k, n),
        Which::C => (m, n),
    }
}

/// Bits of one element in a fragment register.
fn width(t: Ty) -> usize {
    match t {
        Ty::F16 | Ty::Bf16 => 16,
        Ty::S8 | Ty::U8 => 8,
        Ty::F64 => 64,
        _ => 32,
    }
}

fn value(t: Ty, bits: u64) -> f64 {
    match t {
        Ty::F16 => Fmt::F16.to_f64(bits),
        Ty::Bf16 => Fmt::Bf16.to_f64(bits),
        // Tensor cores read the 19 tf32 bits of an f32 pattern.
        Ty::Tf32 => Fmt::F32.to_f64(bits & 0xffff_e000),
        Ty::F32 => Fmt::F32.to_f64(bits),
        Ty::F64 => f64::from_bits(bits),
        Ty::S8 => sx(bits, 8) as f64,
        Ty::S32 => sx(bits, 32) as f64,
        _ => bits as f64,
    }
}

/// A lane's fragment as a list of element bit patterns.
fn unpack(regs: &[u64], t: Ty) -> Vec<u64> {
    let w = width(t);
    let per = (32 / w).max(1);
    regs.iter()
        .flat_map(|&r| (0..per).map(move |k| (r >> (k * w)) & mask_bits(w as u32)))
        .collect()
}

fn pack(elems: &[u64], t: Ty, nregs: usize) -> Vec<u64> {
    let w = width(t);
    let per = (32 / w).max(1);
    (0..nregs)
        .map(|r| {
            (0..per).fold(0u64, |acc, k| {
                acc | elems.get(r * per + k).copied().unwrap_or(0) << (k * w)
            })
        })
        .collect()
}

pub(crate) fn exec(
    b: &mut Block,
    threads: &mut [Thread],
    base: usize,
    i: &Inst,
    op: WmmaOp,
) -> X<()> {
    match op {
        WmmaOp::Access {
            which,
            store,
            row,
            mnk,
            ety,
            space,
        } => access(b, threads, base, i, (which, store, row), mnk, ety, space),
        WmmaOp::Mma {
            mnk,
            d,
            a,
            b: bt,
            c,
            satfinite,
        } => mma(b, threads, base, i, mnk, [d, a, bt, c], satfinite),
    }
}

/// `wmma.load` / `wmma.store`: each lane moves its fragment's elements.
#[allow(clippy::too_many_arguments)]
fn access(
    b: &mut Block,
    threads: &mut [Thread],
    base: usize,
    i: &Inst,
    (which, store, row): (Which, bool, bool),
    mnk: (u8, u8, u8),
    ety: Ty,
    space: Space,
) -> X<()> {
    let (rows, cols) = dims(mnk, which);
    let total = rows * cols;
    let esize = (width(ety) / 8).max(1) as u64;
    let (frag, addr) = if store { (1, 0) } else { (0, 1) };
    for lane in 0..32 {
        let t = &mut threads[base + lane];
        let p = b.addr(t, &i.ops[addr]);
        let stride = match i.ops.get(2) {
            Some(o) => b.get(t, o) as u32 as usize,
            None if row => cols,
            None => rows,
        };
        let dsts = Block::elems(&i.ops[frag]).to_vec();
        let slots = dsts.len() * (32 / width(ety)).max(1);
        let mut elems = if store {
            let regs: Vec<u64> = dsts.iter().map(|o| b.get(t, o)).collect();
            unpack(&regs, ety)
        } else {
            vec![0u64; slots]
        };
        for (e, v) in elems.iter_mut().enumerate().take(slots) {
            let idx = (32 * e + lane) % total;
            let (r, c) = (idx / cols, idx % cols);
            let off = if row { r * stride + c } else { c * stride + r } as u64;
            let a = p.wrapping_add(off * esize);
            if !a.is_multiple_of(esize) {
                return Err(ExecError::MisalignedAddress {
                    addr: a,
                    line: i.line,
                });
            }
            let loc = b.locate(space, a);
            if store {
                b.store(t, loc, &v.to_le_bytes()[..esize as usize], i.line)?;
            } else {
                let mut buf = [0u8; 8];
                b.load(t, loc, &mut buf[..esize as usize], i.line)?;
                *v = u64::from_le_bytes(buf);
            }
        }
        if !store {
            for (d, v) in dsts.iter().zip(pack(&elems, ety, dsts.len())) {
                Block::set(t, d, v);
            }
        }
    }
    Ok(())
}

/// `wmma.mma`: gathers the three matrices from the warp's fragments,
/// multiplies, and scatters D.
fn mma(
    b: &mut Block,
    threads: &mut [Thread],
    base: usize,
    i: &Inst,
    mnk: (u8, u8, u8),
    [d, a, bt, c]: [Ty; 4],
    satfinite: bool,
) -> X<()> {
    let (m, n, k) = (mnk.0 as usize, mnk.1 as usize, mnk.2 as usize);
    let mut mats = [vec![0f64; m * k], vec![0f64; k * n], vec![0f64; m * n]];
    let kinds = [(Which::A, a), (Which::B, bt), (Which::C, c)];
    for (slot, (which, ty)) in kinds.iter().enumerate() {
        let opnd = slot + 1;
        let (rows, cols) = dims(mnk, *which);
        let total = rows * cols;
        for lane in 0..32 {
            let t = &threads[base + lane];
            let regs: Vec<u64> = Block::elems(&i.ops[opnd])
                .iter()
                .map(|o| b.get(t, o))
                .collect();
            for (e, v) in unpack(&regs, *ty).iter().enumerate() {
                let idx = (32 * e + lane) % total;
                mats[slot][idx] = value(*ty, *v);
            }
        }
    }
    let [am, bm, cm] = &mats;
    let mut dm = vec![0u64; m * n];
    for r in 0..m {
        for col in 0..n {
            let acc = (0..k).fold(cm[r * n + col], |s, x| s + am[r * k + x] * bm[x * n + col]);
            dm[r * n + col] = match d {
                Ty::S32 if satfinite => {
                    (acc as i64).clamp(i32::MIN as i64, i32::MAX as i64) as u32 as u64
                }
                Ty::S32 => (acc as i64) as u32 as u64,
                Ty::F16 => Fmt::F16.round(acc, Rnd::Rn),
                Ty::F64 => acc.to_bits(),
                Ty::F32 => Fmt::F32.round(acc, Rnd::Rn),
                _ => return Err(unsupported(i)),
            };
        }
    }
    for lane in 0..32 {
        let dsts = Block::elems(&i.ops[0]).to_vec();
        let slots = dsts.len() * (32 / width(d)).max(1);
        let elems: Vec<u64> = (0..slots).map(|e| dm[(32 * e + lane) % (m * n)]).collect();
        let t = &mut threads[base + lane];
        for (o, v) in dsts.iter().zip(pack(&elems, d, dsts.len())) {
            Block::set(t, o, v);
        }
    }
    Ok(())
}
