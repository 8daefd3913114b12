//! Warp-wide matrix instructions: `mma.sync.aligned` (f16, bf16, tf32, f64,
//! s8/u8 shapes), `ldmatrix`, `stmatrix`, `movmatrix` — with the per-thread
//! fragment layouts of the PTX ISA ("Matrix fragments for mma.m16n8k16"
//! and its siblings).
//!
//! In every layout, a lane's `groupID` is `lane / 4` and its
//! `threadID_in_group` is `lane % 4`.

use super::{Decoded, Mods};
use crate::exec::block::Block;
use crate::exec::thread::{unsupported, Thread};
use crate::exec::X;
use crate::ir::{Inst, Op, Opnd, Rnd, Space, Ty};
use crate::num::{mask_bits, sx, Fmt};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    M16n8k4,
    M16n8k8,
    M16n8k16,
    M16n8k32,
    M8n8k4,
    M8n8k16,
}

impl Shape {
    fn mnk(self) -> (usize, usize, usize) {
        match self {
            Shape::M16n8k4 => (16, 8, 4),
            Shape::M16n8k8 => (16, 8, 8),
            Shape::M16n8k16 => (16, 8, 16),
            Shape::M16n8k32 => (16, 8, 32),
            Shape::M8n8k4 => (8, 8, 4),
            Shape::M8n8k16 => (8, 8, 16),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatrixOp {
    /// `D = A * B + C`; element types of D, A, B, C.
    Mma {
        shape: Shape,
        d: Ty,
        a: Ty,
        b: Ty,
        c: Ty,
        satfinite: bool,
    },
    Ldmatrix {
        num: u8,
        trans: bool,
        space: Space,
    },
    Stmatrix {
        num: u8,
        trans: bool,
        space: Space,
    },
    Movmatrix,
    Wmma(super::wmma::WmmaOp),
}

fn shape_of(s: &str) -> Option<Shape> {
    Some(match s {
        "m16n8k4" => Shape::M16n8k4,
        "m16n8k8" => Shape::M16n8k8,
        "m16n8k16" => Shape::M16n8k16,
        "m16n8k32" => Shape::M16n8k32,
        "m8n8k4" => Shape::M8n8k4,
        "m8n8k16" => Shape::M8n8k16,
        _ => return None,
    })
}

/// Whether this interpreter knows the fragment layout of the combination.
fn mma_supported(shape: Shape, a: Ty, b: Ty) -> bool {
    let half = |t| matches!(t, Ty::F16 | Ty::Bf16);
    let int8 = |t| matches!(t, Ty::S8 | Ty::U8);
    match shape {
        Shape::M16n8k8 | Shape::M16n8k16 if half(a) && a == b => true,
        Shape::M16n8k4 | Shape::M16n8k8 if a == Ty::Tf32 && b == Ty::Tf32 => true,
        Shape::M8n8k16 | Shape::M16n8k16 | Shape::M16n8k32 if int8(a) && int8(b) => true,
        Shape::M8n8k4 => a == Ty::F64 && b == Ty::F64,
        _ => false,
    }
}

fn num_of(m: &Mods) -> Option<u8> {
    m.find(|s| match s {
        "x1" => Some(1),
        "x2" => Some(2),
        "x4" => Some(4),
        _ => None,
    })
}

pub(crate) fn decode(m: &Mods) -> Option<Decoded> {
    let ty = m.ty();
    let op = match m.opcode {
        "mma" => {
            let shape = m.find(shape_of);
            let rowcol = m.has("row") && m.has("col");
            let satfinite = m.has("satfinite");
            match (shape, m.tys.as_slice()) {
                (Some(shape), &[d, a, b, c]) if rowcol && mma_supported(shape, a, b) => {
                    MatrixOp::Mma {
                        shape,
                        d,
                        a,
                        b,
                        c,
                        satfinite,
                    }
                }
                _ => return super::unsupported(ty),
            }
        }
        "ldmatrix" | "stmatrix" => {
            let num = num_of(m);
            let trans = m.has("trans");
            let space = m.space();
            match (num, m.has("m8n8"), ty) {
                (Some(num), true, Ty::B16) if m.opcode == "ldmatrix" => {
                    MatrixOp::Ldmatrix { num, trans, space }
                }
                (Some(num), true, Ty::B16) => MatrixOp::Stmatrix { num, trans, space },
                _ => return super::unsupported(ty),
            }
        }
        "wmma" => return super::wmma::decode(m),
        "movmatrix" => {
            if !(m.has("m8n8") && m.has("trans") && ty == Ty::B16) {
                return super::unsupported(ty);
            }
            MatrixOp::Movmatrix
        }
        _ => return None,
    };
    Some(Decoded::new(Op::Matrix(op), ty))
}

/// (row, column) of fragment element `e` of lane `lane`.
type Layout = fn(usize, usize) -> (usize, usize);

fn gid(lane: usize) -> usize {
    lane >> 2
}
fn tig(lane: usize) -> usize {
    lane & 3
}

/// Fragment layouts of A (M x K), B (K x N, as (k, n)) and C/D (M x N).
fn layouts(shape: Shape, a: Ty) -> (Layout, Layout, Layout) {
    let c16: Layout = |l, e| (gid(l) + 8 * (e >> 1), tig(l) * 2 + (e & 1));
    let c8: Layout = |l, e| (gid(l), tig(l) * 2 + e);
    let int8 = matches!(a, Ty::S8 | Ty::U8);
    match shape {
        Shape::M16n8k16 if int8 => (
            |l, e| (gid(l) + 8 * (e >> 2), tig(l) * 4 + (e & 3)),
            |l, e| (tig(l) * 4 + e, gid(l)),
            c16,
        ),
        Shape::M16n8k16 => (
            |l, e| {
                (
                    gid(l) + 8 * ((e >> 1) & 1),
                    tig(l) * 2 + (e & 1) + 8 * (e >> 2),
                )
            },
            |l, e| (tig(l) * 2 + (e & 1) + 8 * (e >> 1), gid(l)),
            c16,
        ),
        Shape::M16n8k8 if a == Ty::Tf32 => (
            |l, e| (gid(l) + 8 * (e & 1), tig(l) + 4 * (e >> 1)),
            |l, e| (tig(l) + 4 * e, gid(l)),
            c16,
        ),
        Shape::M16n8k8 => (
            |l, e| (gid(l) + 8 * (e >> 1), tig(l) * 2 + (e & 1)),
            |l, e| (tig(l) * 2 + e, gid(l)),
            c16,
        ),
        Shape::M16n8k4 => (
            |l, e| (gid(l) + 8 * e, tig(l)),
            |l, _| (tig(l), gid(l)),
            c16,
        ),
        Shape::M16n8k32 => (
            |l, e| {
                (
                    gid(l) + 8 * ((e >> 2) & 1),
                    tig(l) * 4 + (e & 3) + 16 * (e >> 3),
                )
            },
            |l, e| (tig(l) * 4 + (e & 3) + 16 * (e >> 2), gid(l)),
            c16,
        ),
        Shape::M8n8k16 => (
            |l, e| (gid(l), tig(l) * 4 + e),
            |l, e| (tig(l) * 4 + e, gid(l)),
            c8,
        ),
        Shape::M8n8k4 => (|l, _| (gid(l), tig(l)), |l, _| (tig(l), gid(l)), c8),
    }
}

/// Element `e` of a fragment held in registers `regs` (packed little-end
/// first), as a number.
fn element(regs: &[u64], ty: Ty, e: usize) -> f64 {
    // Elements narrower than 32 bits share a register, low bits first.
    let w = if ty == Ty::F64 {
        64
    } else {
        ty.bits() as usize
    };
    let per = (32 / w).max(1);
    let reg = regs.get(e / per).copied().unwrap_or(0);
    let bits = (reg >> ((e % per) * w)) & mask_bits(w as u32);
    match ty {
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

fn mma(b: &mut Block, threads: &mut [Thread], group: &[usize], i: &Inst, op: MatrixOp) -> X<()> {
    let MatrixOp::Mma {
        shape,
        d: dty,
        a: aty,
        b: bty,
        c: cty,
        satfinite,
    } = op
    else {
        unreachable!()
    };
    let (mm, nn, kk) = shape.mnk();
    let (la, lb, lc) = layouts(shape, aty);
    let na = mm * kk / 32;
    let nb = kk * nn / 32;
    let nc = mm * nn / 32;
    let mut am = vec![0f64; mm * kk];
    let mut bm = vec![0f64; kk * nn];
    let mut cm = vec![0f64; mm * nn];
    let regs = |t: &Thread, o: &Opnd| -> Vec<u64> {
        Block::elems(o).iter().map(|x| b.get(t, x)).collect()
    };
    for &g in group {
        let t = &threads[g];
        let lane = g % 32;
        let (ra, rb, rc) = (regs(t, &i.ops[1]), regs(t, &i.ops[2]), regs(t, &i.ops[3]));
        for e in 0..na {
            let (r, c) = la(lane, e);
            am[r * kk + c] = element(&ra, aty, e);
        }
        for e in 0..nb {
            let (r, c) = lb(lane, e);
            bm[r * nn + c] = element(&rb, bty, e);
        }
        for e in 0..nc {
            let (r, c) = lc(lane, e);
            cm[r * nn + c] = element(&rc, cty, e);
        }
    }
    let int = dty == Ty::S32;
    let mut dm = vec![0u64; mm * nn];
    for r in 0..mm {
        for c in 0..nn {
            dm[r * nn + c] = if int {
                let mut acc = cm[r * nn + c] as i64;
                for k in 0..kk {
                    acc += am[r * kk + k] as i64 * bm[k * nn + c] as i64;
                }
                let v = if satfinite {
                    acc.clamp(i32::MIN as i64, i32::MAX as i64)
                } else {
                    acc as i32 as i64
                };
                v as u64 & 0xffff_ffff
            } else {
                // Products are exact in f64; the sum is accumulated in f64 and
                // rounded once to the destination type.
                let mut acc = cm[r * nn + c];
                for k in 0..kk {
                    acc += am[r * kk + k] * bm[k * nn + c];
                }
                match dty {
                    Ty::F64 => acc.to_bits(),
                    Ty::F16 => Fmt::F16.round(acc, Rnd::Rn),
                    _ => Fmt::F32.round(acc, Rnd::Rn),
                }
            };
        }
    }
    for &g in group {
        let lane = g % 32;
        let dsts = Block::elems(&i.ops[0]);
        let per = if dty == Ty::F16 { 2 } else { 1 };
        let mut vals = vec![0u64; dsts.len()];
        for e in 0..nc {
            let (r, c) = lc(lane, e);
            let v = dm[r * nn + c];
            if let Some(slot) = vals.get_mut(e / per) {
                *slot |= v << ((e % per) * 16);
            }
        }
        let t = &mut threads[g];
        for (d, v) in dsts.iter().zip(vals) {
            Block::set(t, d, v);
        }
    }
    Ok(())
}

/// Reads the eight 16-byte rows of each matrix from the addresses lanes
/// 0-7 (matrix 0), 8-15 (matrix 1), ... hold in operand `ao`.
fn rows(
    b: &mut Block,
    threads: &mut [Thread],
    base: usize,
    num: usize,
    ao: &Opnd,
    space: Space,
    line: u32,
) -> X<Vec<[u16; 8]>> {
    let mut out = vec![[0u16; 8]; num * 8];
    for (k, row) in out.iter_mut().enumerate() {
        let t = &mut threads[base + k];
        let a = b.addr(t, ao);
        if a & 15 != 0 {
            return Err(crate::ExecError::MisalignedAddress { addr: a, line });
        }
        let mut buf = [0u8; 16];
        let loc = b.locate(space, a);
        b.load(t, loc, &mut buf, line)?;
        for (c, v) in row.iter_mut().enumerate() {
            *v = u16::from_le_bytes([buf[2 * c], buf[2 * c + 1]]);
        }
    }
    Ok(out)
}

/// The register of lane `lane` holding 8x8 matrix `m` in fragment form
/// (row `lane / 4`, columns `2 * (lane % 4)` and the next), or of its
/// transpose.
fn fragment(m: &[[u16; 8]], lane: usize, trans: bool) -> u64 {
    let (r, c) = (lane / 4, 2 * (lane % 4));
    let (lo, hi) = if trans {
        (m[c][r], m[c + 1][r])
    } else {
        (m[r][c], m[r][c + 1])
    };
    lo as u64 | (hi as u64) << 16
}

pub(crate) fn exec(
    b: &mut Block,
    threads: &mut [Thread],
    group: &[usize],
    i: &Inst,
    op: MatrixOp,
) -> X<()> {
    // Every lane's registers take part: the instruction needs the whole warp.
    if group.len() != 32 {
        return Err(unsupported(i));
    }
    let base = group[0];
    match op {
        MatrixOp::Mma { .. } => mma(b, threads, group, i, op),
        MatrixOp::Wmma(op) => super::wmma::exec(b, threads, base, i, op),
        MatrixOp::Ldmatrix { num, trans, space } => {
            let num = num as usize;
            let m = rows(b, threads, base, num, &i.ops[1], space, i.line)?;
            for lane in 0..32 {
                let dsts = Block::elems(&i.ops[0]);
                for (j, d) in dsts.iter().enumerate().take(num) {
                    let v = fragment(&m[j * 8..j * 8 + 8], lane, trans);
                    Block::set(&mut threads[base + lane], d, v);
                }
            }
            Ok(())
        }
        MatrixOp::Stmatrix { num, trans, space } => {
            let num = num as usize;
            // Rebuild each matrix from the lanes' fragments.
            let mut m = vec![[0u16; 8]; num * 8];
            for lane in 0..32 {
                let t = &threads[base + lane];
                let srcs = Block::elems(&i.ops[1]);
                for (j, s) in srcs.iter().enumerate().take(num) {
                    let v = b.get(t, s);
                    let (r, c) = (lane / 4, 2 * (lane % 4));
                    let mat = &mut m[j * 8..j * 8 + 8];
                    let (lo, hi) = (v as u16, (v >> 16) as u16);
                    if trans {
                        mat[c][r] = lo;
                        mat[c + 1][r] = hi;
                    } else {
                        mat[r][c] = lo;
                        mat[r][c + 1] = hi;
                    }
                }
            }
            for (k, row) in m.iter().enumerate() {
                let t = &mut threads[base + k];
                let a = b.addr(t, &i.ops[0]);
                if a & 15 != 0 {
                    return Err(crate::ExecError::MisalignedAddress {
                        addr: a,
                        line: i.line,
                    });
                }
                let bytes: Vec<u8> = row.iter().flat_map(|v| v.to_le_bytes()).collect();
                let loc = b.locate(space, a);
                b.store(t, loc, &bytes, i.line)?;
            }
            Ok(())
        }
        MatrixOp::Movmatrix => {
            let mut m = [[0u16; 8]; 8];
            for lane in 0..32 {
                let v = b.get(&threads[base + lane], &i.ops[1]);
                let (r, c) = (lane / 4, 2 * (lane % 4));
                m[r][c] = v as u16;
                m[r][c + 1] = (v >> 16) as u16;
            }
            for lane in 0..32 {
                let v = fragment(&m, lane, true);
                Block::set(&mut threads[base + lane], &i.ops[0], v);
            }
            Ok(())
        }
    }
}
