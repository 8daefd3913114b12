//! Kernel launches, sticky errors and occupancy.
//!
//! A launch runs to completion on the calling thread (blocks spread over
//! worker threads by the interpreter): streams are in order and every stream
//! is always complete, so synchronous execution is a valid schedule.
//!
//! A kernel that faults leaves its context unusable, as on a real board:
//! every later call that needs the context returns the fault's error until
//! the context is destroyed or (primary) reset. `context::current` asks
//! [`sticky_error`] for that.

use crate::context::current;
use crate::ffi::Live;
use crate::module::{self, max_threads, warn, Function, REGS_PER_THREAD, SHARED_OPTIN};
use crate::stream::{self, Stream};
use crate::{memory, profile, sensors};
use cuda_abi::launch::{self as abi, NullArgs};
use cuda_types::cuda::{CUlaunchAttributeID, CUlaunchConfig, CUoccupancyB2DSize, CUresult};
use once_cell::sync::Lazy;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::{c_int, c_uint, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use vgpu_ffi::{In, Out};
use vgpu_ptx::{ExecError, LaunchConfig, LaunchOptions};

const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;
const INVALID_HANDLE: CUresult = CUresult::CUDA_ERROR_INVALID_HANDLE;

// Hopper limits (the profile's device attributes).
const MAX_BLOCK: [u32; 3] = [1024, 1024, 64];
const MAX_GRID: [u32; 3] = [i32::MAX as u32, 65535, 65535];
const MAX_THREADS_PER_SM: u32 = 2048;
const MAX_BLOCKS_PER_SM: u32 = 32;
const SHARED_PER_SM: u32 = 228 * 1024;
const RESERVED_SHARED_PER_BLOCK: u32 = 1024;
const REGS_PER_SM: u32 = 65536;
/// Registers are allocated per warp in units of 256.
const REG_ALLOC_UNIT: u32 = 256;
/// Kernel parameters may take up to 32764 bytes since CUDA 12.1 on Volta+.
const MAX_PARAM_BYTES: usize = 32764;

// STICKY and CANCEL are per-context state keyed by the context's id, not
// handle registries: no application ever passes these keys, nothing is
// minted for them, and their entries live on their own terms (a primary
// context keeps its id across reset, while its fault and cancel flag must
// go with the reset).
static STICKY: Lazy<Mutex<HashMap<u64, CUresult>>> = Lazy::new(Default::default);
/// Lets the common case (no faulted context) skip the lock on every call.
static ANY_STICKY: AtomicBool = AtomicBool::new(false);
/// Per-context flag that stops the context's running kernels at teardown.
static CANCEL: Lazy<Mutex<HashMap<u64, Arc<AtomicBool>>>> = Lazy::new(Default::default);

/// The error a faulted context answers every call with.
pub fn sticky_error(ctx: u64) -> Result<(), CUresult> {
    if !ANY_STICKY.load(Ordering::Acquire) {
        return Ok(());
    }
    match STICKY.lock().get(&ctx) {
        Some(&e) => Err(e),
        None => Ok(()),
    }
}

fn make_sticky(ctx: u64, e: CUresult) -> CUresult {
    STICKY.lock().entry(ctx).or_insert(e);
    ANY_STICKY.store(true, Ordering::Release);
    e
}

/// Context teardown: stop its kernels, forget its fault, drop its modules.
pub fn release_context(ctx: u64) {
    if let Some(c) = CANCEL.lock().remove(&ctx) {
        c.store(true, Ordering::Relaxed);
    }
    STICKY.lock().remove(&ctx);
    module::release_context(ctx);
}

#[derive(Clone, Copy)]
struct Dims {
    grid: [c_uint; 3],
    block: [c_uint; 3],
    shared: c_uint,
}

fn check_dims(f: &Function, d: &Dims) -> Result<(), CUresult> {
    let name = f.name.to_str().unwrap_or("");
    let k = f.module.ptx.entry(name).ok_or(INVALID_HANDLE)?;
    let bad = |v: &[c_uint; 3], max: &[u32; 3]| v.iter().zip(max).any(|(&v, &m)| v == 0 || v > m);
    if bad(&d.grid, &MAX_GRID) || bad(&d.block, &MAX_BLOCK) {
        return Err(INVALID_VALUE);
    }
    let threads: u32 = d.block.iter().product();
    if threads > max_threads(&k) {
        return Err(INVALID_VALUE);
    }
    if k.reqntid.is_some_and(|r| r != d.block) {
        return Err(INVALID_VALUE);
    }
    let attrs = *f.attrs.lock();
    if d.shared > attrs.max_dynamic_shared
        || d.shared.saturating_add(k.static_shared) > SHARED_OPTIN
    {
        return Err(INVALID_VALUE);
    }
    Ok(())
}

/// The packed parameter buffer from `kernelParams` or `extra`.
///
/// # Safety
/// `params`, when non-null, holds one pointer per kernel parameter, each to a
/// value of that parameter's size; `extra`, when non-null, is a
/// CU_LAUNCH_PARAM_END-terminated list as cuLaunchKernel documents.
unsafe fn pack_params(
    f: &Function,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> Result<Vec<u8>, CUresult> {
    let k = f
        .module
        .ptx
        .entry(f.name.to_str().unwrap_or(""))
        .ok_or(INVALID_HANDLE)?;
    let size = k.param_size as usize;
    if !params.is_null() && !extra.is_null() {
        return Err(INVALID_VALUE);
    }
    if !extra.is_null() {
        // The software GPU walks to END however long the array is, as it
        // always has; only the guest shim bounds the walk.
        // SAFETY: END-terminated, per the caller.
        let found = unsafe { abi::parse_extra(extra.cast_const().cast(), usize::MAX) }
            .map_err(|_| INVALID_VALUE)?;
        let len = found.size.ok_or(INVALID_VALUE)?;
        // The buffer is the argument struct, so trailing padding up to the
        // widest alignment may follow the last parameter.
        if len < size || len > size.next_multiple_of(16).max(16) || len > MAX_PARAM_BYTES {
            return Err(INVALID_VALUE);
        }
        if size == 0 {
            return Ok(Vec::new());
        }
        let buf = found.buffer.unwrap_or(std::ptr::null());
        if buf.is_null() {
            return Err(INVALID_VALUE);
        }
        // SAFETY: the application says `buf` holds `len >= size` bytes.
        return Ok(unsafe { std::slice::from_raw_parts(buf, size) }.to_vec());
    }
    let layout = k.params.iter().map(|p| (p.offset, p.size));
    // SAFETY: one pointer per parameter, each to a value of its size, per
    // the caller; the layout ends at `param_size`, the buffer's length.
    unsafe { abi::pack(layout, size, params.cast_const().cast(), NullArgs::Reject) }
        .map_err(|_| INVALID_VALUE)
}

fn exec_error(ctx: u64, kernel: &str, e: ExecError) -> CUresult {
    use CUresult as R;
    let fault = |code| {
        warn(format_args!("kernel `{kernel}` failed: {e}"));
        make_sticky(ctx, code)
    };
    match &e {
        ExecError::IllegalAddress { .. } => fault(R::CUDA_ERROR_ILLEGAL_ADDRESS),
        ExecError::MisalignedAddress { .. } => fault(R::CUDA_ERROR_MISALIGNED_ADDRESS),
        ExecError::Trap { .. } | ExecError::StackOverflow { .. } => {
            fault(R::CUDA_ERROR_LAUNCH_FAILED)
        }
        ExecError::Unsupported { .. } => {
            warn(format_args!(
                "kernel `{kernel}`: {e} (the software GPU cannot run it)"
            ));
            R::CUDA_ERROR_NOT_SUPPORTED
        }
        ExecError::BadParams { .. } | ExecError::InvalidConfig(_) => INVALID_VALUE,
        ExecError::UnknownKernel(_) => INVALID_HANDLE,
        ExecError::Cancelled => R::CUDA_ERROR_LAUNCH_FAILED,
        ExecError::MissingSymbol(_) | ExecError::Internal(_) => {
            warn(format_args!("kernel `{kernel}` failed: {e}"));
            R::CUDA_ERROR_LAUNCH_FAILED
        }
    }
}

/// # Safety
/// As for [`pack_params`].
unsafe fn launch(
    func: &Function,
    d: Dims,
    s: &Stream,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
    cooperative: bool,
) -> Result<(), CUresult> {
    let ctx = current()?;
    if func.module.ctx != ctx.id || s.ctx.id != ctx.id {
        return Err(CUresult::CUDA_ERROR_INVALID_CONTEXT);
    }
    check_dims(func, &d)?;
    // SAFETY: per the caller.
    let buf = unsafe { pack_params(func, params, extra) }?;
    let name = func.name.to_str().map_err(|_| INVALID_HANDLE)?;
    if cooperative {
        let threads: u32 = d.block.iter().product();
        let per_sm = blocks_per_sm(func, threads, d.shared as usize)?;
        let blocks: u64 = d.grid.iter().map(|&g| u64::from(g)).product();
        if blocks > u64::from(per_sm) * profile::SM_COUNT as u64 {
            return Err(CUresult::CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE);
        }
    }
    let cancel = CANCEL.lock().entry(ctx.id).or_default().clone();
    let cfg = LaunchConfig {
        grid: d.grid,
        block: d.block,
        dynamic_shared: d.shared,
    };
    let opts = LaunchOptions {
        workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cancel: Some(&cancel),
    };
    let started = Instant::now();
    let r = memory::with_kernel_memory(|mem| {
        vgpu_ptx::launch_with(
            &func.module.ptx,
            name,
            &cfg,
            &buf,
            mem,
            &func.module.symbols,
            &opts,
        )
    });
    sensors::record_kernel_busy(started.elapsed());
    r.map_err(|e| exec_error(ctx.id, name, e))
}

/// `cuLaunchKernel`, and `cuLaunchCooperativeKernel` (no `extra`, and
/// `cooperative` set by the list).
#[allow(clippy::too_many_arguments)]
pub unsafe fn launch_kernel(
    f: Live<Function>,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    shared: c_uint,
    stream: Stream,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
    cooperative: bool,
) -> Result<(), CUresult> {
    let d = Dims {
        grid: [gx, gy, gz],
        block: [bx, by, bz],
        shared,
    };
    // SAFETY: forwarded with the caller's guarantees.
    unsafe { launch(&f, d, &stream, params, extra, cooperative) }
}

pub unsafe fn launch_kernel_ex(
    config: In<CUlaunchConfig>,
    f: Live<Function>,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> Result<(), CUresult> {
    let c = config.read();
    if c.numAttrs > 0 && c.attrs.is_null() {
        return Err(INVALID_VALUE);
    }
    let mut cooperative = false;
    for i in 0..c.numAttrs as usize {
        // SAFETY: `attrs` holds `numAttrs` entries per the API.
        let a = unsafe { c.attrs.add(i).read_unaligned() };
        match a.id {
            CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_COOPERATIVE => {
                // SAFETY: the id says `cooperative` is the member set.
                cooperative = unsafe { a.value.cooperative } != 0;
            }
            CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION => {
                // SAFETY: the id says `clusterDim` is the member set.
                let cd = unsafe { a.value.clusterDim };
                if [cd.x, cd.y, cd.z].iter().any(|&v| v > 1) {
                    warn(format_args!(
                        "thread block clusters ({}x{}x{}) are not supported by the software GPU",
                        cd.x, cd.y, cd.z
                    ));
                    return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
                }
            }
            CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PRIORITY => {}
            other => {
                if std::env::var_os("VGPU_LOG").is_some() {
                    warn(format_args!("launch attribute {} ignored", other.0));
                }
            }
        }
    }
    let d = Dims {
        grid: [c.gridDimX, c.gridDimY, c.gridDimZ],
        block: [c.blockDimX, c.blockDimY, c.blockDimZ],
        shared: c.sharedMemBytes,
    };
    // The stream is inside the config, so it is resolved here.
    let s = stream::resolve(c.hStream)?;
    // SAFETY: forwarded with the caller's guarantees.
    unsafe { launch(&f, d, &s, params, extra, cooperative) }
}

// ---- occupancy --------------------------------------------------------------------

/// Resident blocks of `f` per SM at `threads` threads and `dyn_smem` bytes
/// of dynamic shared memory, from the same limits the hardware has.
fn blocks_per_sm(f: &Function, threads: u32, dyn_smem: usize) -> Result<u32, CUresult> {
    let k = f
        .module
        .ptx
        .entry(f.name.to_str().unwrap_or(""))
        .ok_or(INVALID_HANDLE)?;
    let attrs = *f.attrs.lock();
    if threads == 0 || threads > max_threads(&k) || dyn_smem > attrs.max_dynamic_shared as usize {
        return Ok(0);
    }
    let warps = threads.div_ceil(32);
    let by_threads = MAX_THREADS_PER_SM / 32 / warps;
    let regs_per_warp = (REGS_PER_THREAD * 32).next_multiple_of(REG_ALLOC_UNIT);
    let by_regs = REGS_PER_SM / regs_per_warp / warps;
    let smem = dyn_smem as u64 + u64::from(k.static_shared) + u64::from(RESERVED_SHARED_PER_BLOCK);
    let by_smem = (u64::from(SHARED_PER_SM) / smem) as u32;
    Ok(MAX_BLOCKS_PER_SM.min(by_threads).min(by_regs).min(by_smem))
}

fn check_occupancy_flags(flags: c_uint) -> Result<(), CUresult> {
    // CU_OCCUPANCY_DEFAULT or CU_OCCUPANCY_DISABLE_CACHING_OVERRIDE.
    if flags > 1 {
        return Err(INVALID_VALUE);
    }
    Ok(())
}

/// `cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags`, and the form
/// without flags.
pub fn occupancy_max_active_blocks_with_flags(
    out: Out<c_int>,
    f: Live<Function>,
    block: c_int,
    dyn_smem: usize,
    flags: c_uint,
) -> Result<(), CUresult> {
    if block <= 0 {
        return Err(INVALID_VALUE);
    }
    check_occupancy_flags(flags)?;
    current()?;
    out.write(blocks_per_sm(&f, block as u32, dyn_smem)? as c_int);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
/// `cuOccupancyMaxPotentialBlockSizeWithFlags`, and the form without
/// flags.
pub unsafe fn occupancy_max_potential_block_size_with_flags(
    min_grid: Out<c_int>,
    block_size: Out<c_int>,
    func: Live<Function>,
    smem_for_block: CUoccupancyB2DSize,
    dyn_smem: usize,
    limit: c_int,
    flags: c_uint,
) -> Result<(), CUresult> {
    if limit < 0 {
        return Err(INVALID_VALUE);
    }
    check_occupancy_flags(flags)?;
    current()?;
    let k_max = {
        let k = func
            .module
            .ptx
            .entry(func.name.to_str().unwrap_or(""))
            .ok_or(INVALID_HANDLE)?;
        max_threads(&k)
    };
    let cap = match limit {
        0 => k_max,
        l => k_max.min(l as u32),
    };
    // The largest block size reaching the best occupancy, as the CUDA
    // occupancy calculator picks it.
    let (mut best_threads, mut best_blocks, mut best_occ) = (0u32, 0u32, 0u32);
    let mut t = cap.next_multiple_of(32).min(1024);
    while t > 0 {
        let threads = t.min(cap);
        let smem = match smem_for_block {
            // SAFETY: the application's callback, called as documented.
            Some(cb) => unsafe { cb(threads as c_int) },
            None => dyn_smem,
        };
        let blocks = blocks_per_sm(&func, threads, smem)?;
        let occ = blocks * threads;
        if occ > best_occ {
            (best_threads, best_blocks, best_occ) = (threads, blocks, occ);
        }
        t -= 32;
    }
    min_grid.write((best_blocks * profile::SM_COUNT as u32) as c_int);
    block_size.write(best_threads as c_int);
    Ok(())
}

pub fn occupancy_available_dynamic_smem(
    out: Out<usize>,
    func: Live<Function>,
    blocks: c_int,
    block: c_int,
) -> Result<(), CUresult> {
    if blocks <= 0 || block <= 0 {
        return Err(INVALID_VALUE);
    }
    current()?;
    let static_shared = func
        .module
        .ptx
        .entry(func.name.to_str().unwrap_or(""))
        .ok_or(INVALID_HANDLE)?
        .static_shared;
    let avail = if blocks_per_sm(&func, block as u32, 0)? < blocks as u32 {
        0
    } else {
        (SHARED_PER_SM / blocks as u32)
            .saturating_sub(RESERVED_SHARED_PER_BLOCK + static_shared)
            .min(SHARED_OPTIN.saturating_sub(static_shared))
    };
    out.write(avail as usize);
    Ok(())
}
