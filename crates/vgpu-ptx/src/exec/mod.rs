//! The interpreter: launching a grid, scheduling blocks over worker threads.
//!
//! - [`block`]: one block at a time — its threads, barriers, and the warp
//!   collectives it lines up.
//! - [`thread`]: one CUDA thread — the instruction loop, operands, memory
//!   spaces, calls.
//!
//! What each instruction does lives with its family in `crate::ops`.

pub(crate) mod block;
#[allow(unsafe_code)]
pub(crate) mod pool;
mod scratch;
pub(crate) mod thread;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::memory::Memory;
use crate::{ExecError, KernelMeta, Module};
use block::Block;

pub(crate) type X<T> = Result<T, ExecError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dynamic_shared: u32,
}

const MAX_THREADS_PER_BLOCK: u64 = 1024;
const MAX_SHARED: u64 = 1 << 20;

/// Shared memory the driver reserves for system use at the end of every
/// block's window on sm_80+ (`%reserved_smem_offset_begin`..`_end`).
pub(crate) const RESERVED_SMEM: u32 = 1024;

/// Per-launch state shared by all workers.
pub(crate) struct Launch<'a> {
    pub m: &'a Module,
    pub meta: &'a KernelMeta,
    pub cfg: LaunchConfig,
    pub kparams: &'a [u8],
    /// Kernel params occupy param-space addresses `[0, kparam_len)`.
    pub kparam_len: u32,
    pub mem: &'a dyn Memory,
    pub gaddr: Vec<u64>,
    pub start: Instant,
    pub nsm: u32,
    /// Where the reserved shared region starts in every block's window.
    pub reserved_smem: u32,
    pub envreg: [u32; 32],
    /// All blocks run at once (one OS thread each) and may synchronise.
    pub cooperative: bool,
    /// The cooperative grid's workspace (`cudaCGGetIntrinsicHandle`), or 0.
    pub grid_workspace: u64,
    pub grid: GridBarrier,
    pub output: Option<&'a (dyn Fn(&str) + Sync)>,
    /// Set when a block failed; other blocks stop early.
    pub stop: AtomicBool,
    pub cancel: Option<&'a AtomicBool>,
    /// Instructions executed by finished blocks.
    pub executed: AtomicU64,
    /// Bytes of device output produced so far.
    pub output_bytes: AtomicUsize,
}

impl Launch<'_> {
    pub fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }
}

/// A barrier across the blocks of a cooperative grid. Blocks that finished
/// no longer count.
pub(crate) struct GridBarrier {
    /// (arrived, generation, live blocks)
    state: Mutex<(u64, u64, u64)>,
    cv: Condvar,
}

impl GridBarrier {
    fn new(blocks: u64) -> Self {
        GridBarrier {
            state: Mutex::new((0, 0, blocks)),
            cv: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, u64, u64)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until every live block has arrived.
    pub fn wait(&self, l: &Launch) -> X<()> {
        let mut s = self.lock();
        s.0 += 1;
        if s.0 >= s.2 {
            s.0 = 0;
            s.1 += 1;
            self.cv.notify_all();
            return Ok(());
        }
        let generation = s.1;
        while s.1 == generation {
            if l.should_stop() {
                return Err(ExecError::Cancelled);
            }
            s = self
                .cv
                .wait_timeout(s, Duration::from_millis(20))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(())
    }

    /// A block finished: the others no longer wait for it.
    fn leave(&self) {
        let mut s = self.lock();
        s.2 = s.2.saturating_sub(1);
        if s.0 > 0 && s.0 >= s.2 {
            s.0 = 0;
            s.1 += 1;
            self.cv.notify_all();
        }
    }
}

/// Where `%clock` counts from: one instant for the process (a GPU's cycle
/// counter does not restart per launch either), so that a launch reads no
/// clock.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// What one OS thread keeps between launches (see `launch_counted`).
#[derive(Default)]
struct Spare {
    threads: Vec<thread::Thread>,
    shared: Vec<u8>,
}

thread_local! {
    static SPARE: std::cell::RefCell<Spare> = std::cell::RefCell::new(Spare::default());
    /// The launching thread's buffer for a launch's global addresses.
    static GADDR: std::cell::Cell<Vec<u64>> = const { std::cell::Cell::new(Vec::new()) };
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
#[derive(Clone, Copy, Default)]
pub struct LaunchOptions<'a> {
    /// Worker threads running blocks; 0 means one per available CPU.
    pub workers: usize,
    /// When set to true (e.g. by context teardown), running blocks stop at
    /// their next loop iteration with [`ExecError::Cancelled`]: a kernel
    /// that spins forever must not hold the daemon hostage.
    pub cancel: Option<&'a AtomicBool>,
    /// A cooperative launch (`cuLaunchCooperativeKernel`): every block runs
    /// at once, on its own OS thread, so grid-wide synchronisation works
    /// (`cg::this_grid().sync()`, `cudaCGSynchronize`). The interpreter
    /// provides the grid workspace itself.
    pub cooperative: bool,
    /// Receives the launch's device output (`printf`, and the message of a
    /// failed `assert`), one call per block with that block's text in the
    /// order its threads produced it, as blocks finish. Without it the text
    /// is dropped.
    pub output: Option<&'a (dyn Fn(&str) + Sync)>,
}

impl std::fmt::Debug for LaunchOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchOptions")
            .field("workers", &self.workers)
            .field("cancel", &self.cancel)
            .field("cooperative", &self.cooperative)
            .field("output", &self.output.is_some())
            .finish()
    }
}

/// Most blocks a cooperative launch may have: each gets an OS thread.
const MAX_COOPERATIVE_BLOCKS: u64 = 4096;

/// Device output one launch may produce (CUDA's default printf FIFO size).
pub(crate) const MAX_OUTPUT: usize = 1 << 20;

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
    launch_counted(module, kernel, cfg, params, mem, global_symbols, opts).map(|_| ())
}

/// [`launch_with`], returning the number of instructions executed.
pub(crate) fn launch_counted(
    module: &Module,
    kernel: &str,
    cfg: &LaunchConfig,
    params: &[u8],
    mem: &dyn Memory,
    global_symbols: &HashMap<String, u64>,
    opts: &LaunchOptions<'_>,
) -> Result<u64, ExecError> {
    let workers = match opts.workers {
        0 => pool::cpus(),
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
    let user_shared = meta.dyn_base as u64 + cfg.dynamic_shared as u64;
    if user_shared > MAX_SHARED {
        return Err(ExecError::InvalidConfig(format!(
            "{user_shared} bytes of shared memory"
        )));
    }
    let reserved_smem = user_shared.next_multiple_of(16) as u32;
    let shared_total = if meta.reserved_smem {
        reserved_smem as u64 + RESERVED_SMEM as u64
    } else {
        user_shared
    };
    // The symbol table's buffer is the launching thread's, kept from its
    // last launch.
    let mut gaddr = GADDR.take();
    gaddr.clear();
    gaddr.resize(module.globals.len(), 0);
    for (k, g) in module.globals.iter().enumerate() {
        match global_symbols.get(&g.name) {
            Some(&a) => gaddr[k] = a,
            None if meta.globals_used.contains(&(k as u32)) => {
                return Err(ExecError::MissingSymbol(g.name.clone()))
            }
            None => {}
        }
    }
    if opts.cooperative && blocks > MAX_COOPERATIVE_BLOCKS {
        return Err(ExecError::InvalidConfig(format!(
            "cooperative launch of {blocks} blocks: at most {MAX_COOPERATIVE_BLOCKS} can run at once"
        )));
    }
    let workers = if opts.cooperative {
        blocks as usize
    } else {
        workers.clamp(1, 64).min(blocks as usize)
    };
    let mut envreg = [0u32; 32];
    // A cooperative grid's workspace lives in the interpreter's own memory.
    let overlay = scratch::Overlay::new(mem);
    let (mem, grid_workspace): (&dyn Memory, u64) = if opts.cooperative {
        (&overlay, scratch::SCRATCH_BASE)
    } else {
        (mem, 0)
    };
    envreg[1] = (grid_workspace >> 32) as u32;
    envreg[2] = grid_workspace as u32;
    let l = Launch {
        m: module,
        meta,
        cfg: *cfg,
        kparams: &params[..kparam_len as usize],
        kparam_len,
        mem,
        gaddr,
        start: epoch(),
        nsm: workers as u32,
        reserved_smem,
        envreg,
        cooperative: opts.cooperative,
        grid_workspace,
        grid: GridBarrier::new(blocks),
        output: opts.output,
        stop: AtomicBool::new(false),
        cancel: opts.cancel,
        executed: AtomicU64::new(0),
        output_bytes: AtomicUsize::new(0),
    };
    let next = AtomicU64::new(0);
    let first_err: Mutex<Option<ExecError>> = Mutex::new(None);
    let work = |smid: u32| {
        // The threads' and the shared memory's buffers are this OS
        // thread's, kept from its last launch: no allocation per launch
        // once they have grown to the kernel's size.
        let mut spare = SPARE.with(|s| std::mem::take(&mut *s.borrow_mut()));
        let mut b = Block::new(
            &l,
            std::mem::take(&mut spare.shared),
            shared_total as usize,
            smid,
        );
        let mut threads = std::mem::take(&mut spare.threads);
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
            b.flush_output();
            l.executed
                .fetch_add(std::mem::take(&mut b.count), Ordering::Relaxed);
            l.grid.leave();
            if let Err(e) = r {
                l.stop.store(true, Ordering::Relaxed);
                let mut fe = first_err.lock().unwrap_or_else(|e| e.into_inner());
                fe.get_or_insert(e);
            }
        }
        spare.shared = b.shared;
        spare.threads = threads;
        SPARE.with(|s| *s.borrow_mut() = spare);
    };
    if opts.cooperative && workers > 1 {
        // Every block at once, each on an OS thread of its own, for as
        // long as grid barriers hold them: not a job for a shared pool.
        std::thread::scope(|s| {
            for w in 0..workers {
                let work = &work;
                s.spawn(move || work(w as u32));
            }
        });
    } else {
        pool::run(workers, &work);
    }
    let executed = l.executed.load(Ordering::Relaxed);
    GADDR.set(l.gaddr);
    match first_err.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(executed),
    }
}
