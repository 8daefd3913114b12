//! Warp collectives, executed for the lanes of a warp that stand at the same
//! instruction: `shfl.sync` (up/down/bfly/idx with clamp and segment
//! masks), `vote.sync`, `match.sync`, `redux.sync`, `activemask`,
//! `bar.warp.sync`, `elect.sync`.

use super::{Decoded, Mods};
use crate::exec::block::Block;
use crate::exec::thread::Thread;
use crate::exec::X;
use crate::ir::{Inst, Op};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteMode {
    All,
    Any,
    Uni,
    Ballot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduxOp {
    Add,
    Min,
    Max,
    And,
    Or,
    Xor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarpOp {
    Shfl(ShflMode),
    Vote(VoteMode),
    Activemask,
    MatchAny,
    MatchAll,
    Redux(ReduxOp),
    BarWarp,
    Elect,
}

pub(crate) fn decode(m: &Mods) -> Option<Decoded> {
    let ty = m.ty();
    let op = match m.opcode {
        "shfl" => {
            let mode = m.find(|s| {
                Some(match s {
                    "up" => ShflMode::Up,
                    "down" => ShflMode::Down,
                    "bfly" => ShflMode::Bfly,
                    "idx" => ShflMode::Idx,
                    _ => return None,
                })
            });
            match mode {
                Some(mode) => WarpOp::Shfl(mode),
                None => return super::unsupported(ty),
            }
        }
        "vote" => {
            let mode = m.find(|s| {
                Some(match s {
                    "all" => VoteMode::All,
                    "any" => VoteMode::Any,
                    "uni" => VoteMode::Uni,
                    "ballot" => VoteMode::Ballot,
                    _ => return None,
                })
            });
            match mode {
                Some(mode) => WarpOp::Vote(mode),
                None => return super::unsupported(ty),
            }
        }
        "activemask" => WarpOp::Activemask,
        "match" if m.has("any") => WarpOp::MatchAny,
        "match" if m.has("all") => WarpOp::MatchAll,
        "redux" => {
            let r = m.find(|s| {
                Some(match s {
                    "add" => ReduxOp::Add,
                    "min" => ReduxOp::Min,
                    "max" => ReduxOp::Max,
                    "and" => ReduxOp::And,
                    "or" => ReduxOp::Or,
                    "xor" => ReduxOp::Xor,
                    _ => return None,
                })
            });
            match r {
                Some(r) if !ty.is_float() => WarpOp::Redux(r),
                _ => return super::unsupported(ty),
            }
        }
        "bar" | "barrier" if m.has("warp") => WarpOp::BarWarp,
        "elect" => WarpOp::Elect,
        _ => return None,
    };
    let mut d = Decoded::new(Op::Warp(op), ty);
    d.pair_dst = matches!(op, WarpOp::Shfl(_) | WarpOp::MatchAll | WarpOp::Elect);
    Some(d)
}

pub(crate) fn exec(
    b: &mut Block,
    threads: &mut [Thread],
    group: &[usize],
    i: &Inst,
    op: WarpOp,
) -> X<()> {
    let o = &i.ops;
    let base = group[0] / 32 * 32;
    let gmask: u32 = group.iter().fold(0, |acc, &g| acc | 1 << (g - base));
    let mut vals = [0u64; 32];
    let src = match op {
        WarpOp::Shfl(_) | WarpOp::MatchAll => Some(2),
        WarpOp::BarWarp | WarpOp::Activemask | WarpOp::Elect => None,
        _ => Some(1),
    };
    if let Some(src) = src {
        for &g in group {
            vals[g - base] = b.get(&threads[g], &o[src]);
        }
    }
    let members = |t: &Thread| -> u32 {
        let mm = o.last().map_or(u64::MAX, |x| b.get(t, x)) as u32;
        mm & gmask
    };
    let mut results: [(u64, u64); 32] = [(0, 0); 32];
    for &g in group {
        let t = &threads[g];
        let lane = (g - base) as i64;
        results[g - base] = match op {
            WarpOp::Shfl(mode) => {
                let bv = b.get(t, &o[3]) as i64 & 0x1f;
                let c = b.get(t, &o[4]) as i64;
                let cval = c & 0x1f;
                let segmask = (c >> 8) & 0x1f;
                let max_lane = (lane & segmask) | (cval & !segmask);
                let min_lane = lane & segmask;
                let (j, ok) = match mode {
                    ShflMode::Up => (lane - bv, lane - bv >= max_lane),
                    ShflMode::Down => (lane + bv, lane + bv <= max_lane),
                    ShflMode::Bfly => (lane ^ bv, (lane ^ bv) <= max_lane),
                    ShflMode::Idx => {
                        let j = min_lane | (bv & !segmask);
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
            WarpOp::Vote(mode) => {
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
            WarpOp::Activemask => (gmask as u64, 0),
            WarpOp::MatchAny => {
                let mm = members(t);
                let me = vals[lane as usize];
                let r = (0..32)
                    .filter(|&k| mm & (1 << k) != 0 && vals[k] == me)
                    .fold(0u64, |acc, k| acc | 1 << k);
                (r, 0)
            }
            WarpOp::MatchAll => {
                let mm = members(t);
                let me = vals[lane as usize];
                if (0..32).all(|k| mm & (1 << k) == 0 || vals[k] == me) {
                    (mm as u64, 1)
                } else {
                    (0, 0)
                }
            }
            WarpOp::Redux(r) => {
                let mm = members(t);
                let it = (0..32)
                    .filter(|&k| mm & (1 << k) != 0)
                    .map(|k| vals[k] & 0xffff_ffff);
                let signed = i.ty.is_signed();
                let v = match r {
                    ReduxOp::Add => it.fold(0u64, |a, v| a.wrapping_add(v)) & 0xffff_ffff,
                    ReduxOp::And => it.fold(0xffff_ffff, |a, v| a & v),
                    ReduxOp::Or => it.fold(0, |a, v| a | v),
                    ReduxOp::Xor => it.fold(0, |a, v| a ^ v),
                    ReduxOp::Min if signed => {
                        it.map(|v| v as u32 as i32).min().unwrap_or(0) as u32 as u64
                    }
                    ReduxOp::Max if signed => {
                        it.map(|v| v as u32 as i32).max().unwrap_or(0) as u32 as u64
                    }
                    ReduxOp::Min => it.min().unwrap_or(0),
                    ReduxOp::Max => it.max().unwrap_or(0),
                };
                (v, 0)
            }
            WarpOp::Elect => {
                let mm = members(t);
                let leader = mm.trailing_zeros() as u64;
                (leader & 31, (leader == lane as u64) as u64)
            }
            WarpOp::BarWarp => (0, 0),
        };
    }
    for &g in group {
        let t = &mut threads[g];
        let (v, p) = results[g - base];
        match op {
            WarpOp::BarWarp => {}
            WarpOp::Shfl(_) | WarpOp::MatchAll | WarpOp::Elect => {
                Block::set(t, &o[0], v);
                Block::set(t, &o[1], p);
            }
            _ => Block::set(t, &o[0], v),
        }
    }
    Ok(())
}
