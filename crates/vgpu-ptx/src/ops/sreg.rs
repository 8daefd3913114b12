//! Special registers: names and values.
//!
//! `%envreg1:%envreg2` hold the high and low halves of the cooperative
//! launch's grid workspace (CUDA's `cg::this_grid().sync()` reads them and
//! uses the 32-bit barrier word at offset 4); the others read 0.
//! `%reserved_smem_offset_*` describe the 1 KiB of shared memory reserved
//! for system use after the block's own shared memory.

use crate::exec::block::Block;
use crate::exec::thread::Thread;
use crate::exec::RESERVED_SMEM;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sreg {
    Tid(u8),
    Ntid(u8),
    Ctaid(u8),
    Nctaid(u8),
    Laneid,
    Warpid,
    Nwarpid,
    Smid,
    Nsmid,
    Gridid,
    Clock,
    ClockHi,
    Clock64,
    Globaltimer,
    GlobaltimerLo,
    GlobaltimerHi,
    LanemaskEq,
    LanemaskLt,
    LanemaskLe,
    LanemaskGt,
    LanemaskGe,
    DynamicSmemSize,
    TotalSmemSize,
    AggrSmemSize,
    WarpSz,
    Envreg(u8),
    ReservedSmemBegin,
    ReservedSmemEnd,
    ReservedSmemCap,
    /// `%reserved_smem_offset_0`, `_1`.
    ReservedSmemOffset(u8),
    /// Cluster registers of a launch without clusters: every block is its
    /// own cluster of one.
    ClusterCtaid(u8),
    ClusterNctaid(u8),
    Clusterid(u8),
    Nclusterid(u8),
    ClusterCtarank,
    ClusterNctarank,
    IsExplicitCluster,
    /// `%pm0`..`%pm7` and their 64-bit forms: performance counters read 0.
    Pm,
}

/// The special register `name` (with component `comp` for vectors).
pub(crate) fn parse(name: &str, comp: Option<&str>) -> Option<Sreg> {
    let c = match comp {
        Some("x") => 0,
        Some("y") => 1,
        Some("z") => 2,
        _ => 3,
    };
    let dim = |f: fn(u8) -> Sreg| if c < 3 { Some(f(c)) } else { None };
    if let Some(n) = name.strip_prefix("%envreg") {
        return n.parse::<u8>().ok().filter(|&n| n < 32).map(Sreg::Envreg);
    }
    if let Some(n) = name.strip_prefix("%reserved_smem_offset_") {
        return match n {
            "begin" => Some(Sreg::ReservedSmemBegin),
            "end" => Some(Sreg::ReservedSmemEnd),
            "cap" => Some(Sreg::ReservedSmemCap),
            "0" | "1" => Some(Sreg::ReservedSmemOffset(n.parse().ok()?)),
            _ => None,
        };
    }
    if let Some(n) = name.strip_prefix("%pm") {
        let n = n.strip_suffix("_64").unwrap_or(n);
        return n.parse::<u8>().ok().filter(|&n| n < 8).map(|_| Sreg::Pm);
    }
    match name {
        "%tid" => dim(Sreg::Tid),
        "%ntid" => dim(Sreg::Ntid),
        "%ctaid" => dim(Sreg::Ctaid),
        "%nctaid" => dim(Sreg::Nctaid),
        "%cluster_ctaid" => dim(Sreg::ClusterCtaid),
        "%cluster_nctaid" => dim(Sreg::ClusterNctaid),
        "%clusterid" => dim(Sreg::Clusterid),
        "%nclusterid" => dim(Sreg::Nclusterid),
        "%cluster_ctarank" => Some(Sreg::ClusterCtarank),
        "%cluster_nctarank" => Some(Sreg::ClusterNctarank),
        "%is_explicit_cluster" => Some(Sreg::IsExplicitCluster),
        "%laneid" => Some(Sreg::Laneid),
        "%warpid" => Some(Sreg::Warpid),
        "%nwarpid" => Some(Sreg::Nwarpid),
        "%smid" => Some(Sreg::Smid),
        "%nsmid" => Some(Sreg::Nsmid),
        "%gridid" => Some(Sreg::Gridid),
        "%clock" => Some(Sreg::Clock),
        "%clock_hi" => Some(Sreg::ClockHi),
        "%clock64" => Some(Sreg::Clock64),
        "%globaltimer" => Some(Sreg::Globaltimer),
        "%globaltimer_lo" => Some(Sreg::GlobaltimerLo),
        "%globaltimer_hi" => Some(Sreg::GlobaltimerHi),
        "%lanemask_eq" => Some(Sreg::LanemaskEq),
        "%lanemask_lt" => Some(Sreg::LanemaskLt),
        "%lanemask_le" => Some(Sreg::LanemaskLe),
        "%lanemask_gt" => Some(Sreg::LanemaskGt),
        "%lanemask_ge" => Some(Sreg::LanemaskGe),
        "%dynamic_smem_size" => Some(Sreg::DynamicSmemSize),
        "%total_smem_size" => Some(Sreg::TotalSmemSize),
        "%aggr_smem_size" => Some(Sreg::AggrSmemSize),
        "WARP_SZ" => Some(Sreg::WarpSz),
        _ => None,
    }
}

pub(crate) fn value(b: &Block, t: &Thread, s: Sreg) -> u64 {
    let l = b.l;
    let cfg = &l.cfg;
    let lane = t.linear % 32;
    let timer = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    };
    let user_smem = l.reserved_smem as u64;
    match s {
        Sreg::Tid(d) => t.tid[d as usize] as u64,
        Sreg::Ntid(d) => cfg.block[d as usize] as u64,
        Sreg::Ctaid(d) | Sreg::Clusterid(d) => b.ctaid[d as usize] as u64,
        Sreg::Nctaid(d) | Sreg::Nclusterid(d) => cfg.grid[d as usize] as u64,
        Sreg::ClusterCtaid(_) | Sreg::ClusterCtarank | Sreg::IsExplicitCluster | Sreg::Pm => 0,
        Sreg::ClusterNctaid(_) | Sreg::ClusterNctarank => 1,
        Sreg::Laneid => lane as u64,
        Sreg::Warpid => (t.linear / 32) as u64,
        Sreg::Nwarpid => {
            let n = cfg.block[0] * cfg.block[1] * cfg.block[2];
            n.div_ceil(32) as u64
        }
        Sreg::Smid => b.smid as u64,
        Sreg::Nsmid => l.nsm as u64,
        Sreg::Gridid => 1,
        Sreg::Clock => (l.start.elapsed().as_nanos() as u64) & 0xffff_ffff,
        Sreg::ClockHi => (l.start.elapsed().as_nanos() as u64) >> 32,
        Sreg::Clock64 => l.start.elapsed().as_nanos() as u64,
        Sreg::Globaltimer => timer(),
        Sreg::GlobaltimerLo => timer() & 0xffff_ffff,
        Sreg::GlobaltimerHi => timer() >> 32,
        Sreg::LanemaskEq => 1u64 << lane,
        Sreg::LanemaskLt => (1u64 << lane) - 1,
        Sreg::LanemaskLe => (1u64 << (lane + 1)) - 1,
        Sreg::LanemaskGt => !((1u64 << (lane + 1)) - 1) & 0xffff_ffff,
        Sreg::LanemaskGe => !((1u64 << lane) - 1) & 0xffff_ffff,
        Sreg::DynamicSmemSize => cfg.dynamic_shared as u64,
        Sreg::TotalSmemSize | Sreg::AggrSmemSize => b.shared.len() as u64,
        Sreg::WarpSz => 32,
        Sreg::Envreg(n) => l.envreg[n as usize] as u64,
        Sreg::ReservedSmemBegin => user_smem,
        Sreg::ReservedSmemEnd => user_smem + RESERVED_SMEM as u64,
        Sreg::ReservedSmemCap => RESERVED_SMEM as u64,
        Sreg::ReservedSmemOffset(k) => user_smem + 8 * k as u64,
    }
}
