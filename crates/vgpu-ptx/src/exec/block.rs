//! One block: its threads run one at a time until each blocks at a barrier
//! or a warp collective; then warps execute their collectives together and
//! barriers release.

use super::thread::{St, Thread};
use super::{Launch, X};
use crate::ir::Op;
use crate::ops;

/// Per-worker state: one block at a time.
pub(crate) struct Block<'a, 'l> {
    pub l: &'l Launch<'a>,
    pub shared: Vec<u8>,
    pub ctaid: [u32; 3],
    pub smid: u32,
    /// Backward branches taken, to poll for cancellation now and then.
    pub loops: u64,
    /// Device output (`printf`) of the current block, not yet delivered.
    pub out: String,
    /// Instructions executed since the last report to the launch.
    pub count: u64,
}

impl<'a, 'l> Block<'a, 'l> {
    /// `buf` is reused for the shared memory (it is zeroed per block).
    pub fn new(l: &'l Launch<'a>, mut buf: Vec<u8>, shared: usize, smid: u32) -> Self {
        buf.clear();
        buf.resize(shared, 0);
        Block {
            l,
            shared: buf,
            ctaid: [0; 3],
            smid,
            loops: 0,
            out: String::new(),
            count: 0,
        }
    }

    /// Appends device output of the running block. Like the GPU's printf
    /// buffer (1 MiB by default), a launch keeps at most
    /// [`super::MAX_OUTPUT`] bytes; the rest is dropped.
    pub fn print(&mut self, text: &str) {
        use std::sync::atomic::Ordering;
        let used = self.l.output_bytes.fetch_add(text.len(), Ordering::Relaxed);
        if used + text.len() <= super::MAX_OUTPUT {
            self.out.push_str(text);
        }
    }

    /// Hands the block's output to the launch's sink.
    pub fn flush_output(&mut self) {
        if !self.out.is_empty() {
            if let Some(f) = self.l.output {
                f(&self.out);
            }
            self.out.clear();
        }
    }

    pub fn run_block(&mut self, threads: &mut Vec<Thread>, linear_block: u64) -> X<()> {
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
            t.cc = false;
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
            for w in 0..n.div_ceil(32) {
                self.run_warp(threads, w * 32, (n - w * 32).min(32))?;
            }
            // Everyone is blocked or done. Warp collectives first: a warp
            // whose lanes wait at the same instruction executes it together.
            let mut any = false;
            for w in 0..n.div_ceil(32) {
                let base = w * 32;
                let lanes = (n - base).min(32);
                let mut waiting: u32 = (0..lanes)
                    .filter(|&k| threads[base + k].st == St::Warp)
                    .fold(0, |m, k| m | 1 << k);
                while waiting != 0 {
                    let first = base + waiting.trailing_zeros() as usize;
                    let key = |t: &Thread| (t.func, t.pc, t.stack.len());
                    let k0 = key(&threads[first]);
                    let mut group = [0usize; 32];
                    let mut len = 0;
                    let mut rest = waiting;
                    while rest != 0 {
                        let k = rest.trailing_zeros() as usize;
                        rest &= rest - 1;
                        if key(&threads[base + k]) == k0 {
                            group[len] = base + k;
                            len += 1;
                            waiting &= !(1 << k);
                        }
                    }
                    self.collective(threads, &group[..len])?;
                    any = true;
                }
            }
            if any {
                continue;
            }
            if threads.iter().any(|t| t.st == St::Bar) {
                ops::control::release_barrier(self, threads);
                continue;
            }
            if threads.iter().any(|t| t.st == St::GridBar) {
                // The whole block has arrived: wait for the rest of the grid.
                self.flush_output();
                self.l.grid.wait(self.l)?;
                for t in threads.iter_mut().filter(|t| t.st == St::GridBar) {
                    t.st = St::Run;
                }
                continue;
            }
            return Ok(());
        }
    }

    /// Runs the lanes of a warp in lockstep until each blocks or ends: in
    /// turn, each lane runs up to and including its next memory access, so
    /// the accesses of a converged warp interleave as on the GPU. Lockstep
    /// matters: warp-synchronous code (a lane reading shared memory another
    /// lane of its warp has just written, with no barrier in between, as
    /// ggml's kernels do) relies on the lanes executing together.
    fn run_warp(&mut self, threads: &mut [Thread], base: usize, lanes: usize) -> X<()> {
        let mut live = [0usize; 32];
        let mut n = 0;
        for (k, t) in threads.iter().enumerate().skip(base).take(lanes) {
            if t.st == St::Run {
                live[n] = k;
                n += 1;
            }
        }
        while n > 0 {
            // A lone lane has no one to keep step with.
            let lockstep = n > 1;
            let mut kept = 0;
            for j in 0..n {
                let k = live[j];
                self.run(&mut threads[k], lockstep)?;
                if threads[k].st == St::Run {
                    live[kept] = k;
                    kept += 1;
                }
            }
            n = kept;
        }
        Ok(())
    }

    /// Executes the warp collective at which the lanes in `group` stand,
    /// then moves them past it.
    fn collective(&mut self, threads: &mut [Thread], group: &[usize]) -> X<()> {
        let i = threads[group[0]].inst(self.l.m);
        match i.op {
            Op::Warp(op) => ops::warp::exec(self, threads, group, i, op)?,
            Op::Matrix(op) => ops::matrix::exec(self, threads, group, i, op)?,
            _ => unreachable!("not a collective"),
        }
        for &g in group {
            threads[g].pc += 1;
            threads[g].st = St::Run;
        }
        Ok(())
    }
}
