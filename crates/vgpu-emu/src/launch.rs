//! Kernel launches, launch attributes, sticky errors and occupancy.
//!
//! A launch runs to completion on the calling thread (blocks spread over
//! worker threads by the interpreter): streams are in order and every stream
//! is always complete, so synchronous execution is a valid schedule.
//!
//! Launch attributes (`cuLaunchKernelEx`, and kernel nodes of graphs) are
//! each validated as the driver documents them, then:
//! - honoured: cooperative launches; clusters of one block (the only size
//!   the interpreter runs: a larger cluster is refused with
//!   `CUDA_ERROR_NOT_SUPPORTED` and a message, since `%clusterid`, cluster
//!   barriers and distributed shared memory are not emulated); priority and
//!   programmatic stream serialization, which only permit an order or an
//!   overlap that synchronous execution in stream order already satisfies;
//!   programmatic and launch-completion events, recorded when the kernel has
//!   finished (no earlier than the driver may record them);
//! - accepted as hints the driver itself may ignore, with a log line the
//!   first time each is seen: the access policy window, cluster scheduling
//!   policy, preferred cluster dimension, memory synchronization domain and
//!   map, shared memory carveout, NVLink-centric scheduling, portable
//!   cluster size mode and shared memory mode;
//! - refused: what is not valid for the target (the synchronization policy
//!   belongs to streams; programmatic serialization and events, completion
//!   events and the carveout to launches; a device-updatable node to
//!   graphs) with `CUDA_ERROR_INVALID_VALUE`, and device-updatable kernel
//!   nodes with `CUDA_ERROR_NOT_SUPPORTED` (no device-side graph updates).
//!
//! A kernel that faults leaves its context unusable, as on a real board:
//! every later call that needs the context returns the fault's error until
//! the context is destroyed or (primary) reset. `context::current` asks
//! [`sticky_error`] for that.

use crate::context::current;
use crate::event::{self, Event};
use crate::ffi::Live;
use crate::module::{self, max_threads, warn, Function, REGS_PER_THREAD, SHARED_OPTIN};
use crate::stream::{self, Stream};
use crate::{memory, profile, sensors};
use cuda_abi::launch::{self as abi, NullArgs};
use cuda_types::cuda::{
    CUdevice_attribute, CUlaunchAttribute, CUlaunchAttributeID as Id, CUlaunchConfig,
    CUoccupancyB2DSize, CUresult,
};
use once_cell::sync::Lazy;
use parking_lot::Mutex;
use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::{c_int, c_uint, c_void};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Dims {
    pub grid: [c_uint; 3],
    pub block: [c_uint; 3],
    pub shared: c_uint,
}

pub(crate) fn check_dims(f: &Function, d: &Dims) -> Result<(), CUresult> {
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
pub(crate) unsafe fn pack_params(
    f: &Function,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> Result<Vec<u8>, CUresult> {
    // SAFETY: forwarded.
    unsafe { params_view(f, params, extra) }.map(Cow::into_owned)
}

/// [`pack_params`] without a copy where there is a packed buffer already
/// (`extra`, which is how the host worker launches): the launch reads it in
/// place for as long as the call lasts.
///
/// # Safety
/// As [`pack_params`]; the `extra` buffer outlives `'a`.
pub(crate) unsafe fn params_view<'a>(
    f: &Function,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> Result<Cow<'a, [u8]>, CUresult> {
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
            return Ok(Cow::Borrowed(&[]));
        }
        let buf = found.buffer.unwrap_or(std::ptr::null());
        if buf.is_null() {
            return Err(INVALID_VALUE);
        }
        // SAFETY: the application says `buf` holds `len >= size` bytes.
        return Ok(Cow::Borrowed(unsafe {
            std::slice::from_raw_parts(buf, size)
        }));
    }
    let layout = k.params.iter().map(|p| (p.offset, p.size));
    // SAFETY: one pointer per parameter, each to a value of its size, per
    // the caller; the layout ends at `param_size`, the buffer's length.
    unsafe { abi::pack(layout, size, params.cast_const().cast(), NullArgs::Reject) }
        .map(Cow::Owned)
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
        // The message (CUDA's "file:line: function: block: [..], thread:
        // [..] Assertion `..` failed.") came through LaunchOptions::output.
        ExecError::Assert { .. } => make_sticky(ctx, R::CUDA_ERROR_ASSERT),
        ExecError::MissingSymbol(_) | ExecError::Internal(_) => {
            warn(format_args!("kernel `{kernel}` failed: {e}"));
            R::CUDA_ERROR_LAUNCH_FAILED
        }
    }
}

/// Refuses a cooperative grid that cannot be resident on the device at
/// once.
pub(crate) fn check_cooperative(func: &Function, d: &Dims) -> Result<(), CUresult> {
    let threads: u32 = d.block.iter().product();
    let per_sm = blocks_per_sm(func, threads, d.shared as usize)?;
    let blocks: u64 = d.grid.iter().map(|&g| u64::from(g)).product();
    if blocks > u64::from(per_sm) * profile::board().sm_count as u64 {
        return Err(CUresult::CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE);
    }
    Ok(())
}

/// Runs a checked kernel with its packed arguments in its module's context
/// (a fault makes that context sticky). A cooperative kernel's blocks all
/// run at once, so grid-wide synchronization works.
pub(crate) fn run(func: &Function, d: Dims, buf: &[u8], cooperative: bool) -> Result<(), CUresult> {
    let ctx = func.module.ctx;
    sticky_error(ctx)?;
    let name = func.name.to_str().map_err(|_| INVALID_HANDLE)?;
    let cancel = CANCEL.lock().entry(ctx).or_default().clone();
    let cfg = LaunchConfig {
        grid: d.grid,
        block: d.block,
        dynamic_shared: d.shared,
    };
    // Device output, printed as a GPU's driver prints it: `printf` text to
    // this process's stdout, a failed assert's message (the last line of its
    // block's text) to stderr. In a host worker both are captured and sent
    // to the guest at its next synchronization (vgpu-host's
    // `worker::output`). Each block's text is written whole and flushed at
    // once, so nothing waits in a buffer when the worker collects.
    let print = |text: &str| {
        use std::io::Write;
        let (printed, assert) = cuda_abi::device_output::split_trailing_assert(text);
        if !printed.is_empty() {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(printed.as_bytes()).and_then(|()| out.flush());
        }
        if let Some(message) = assert {
            let _ = std::io::stderr().lock().write_all(message.as_bytes());
        }
    };
    let opts = LaunchOptions {
        // One per CPU, from the interpreter's persistent pool.
        workers: 0,
        cancel: Some(&cancel),
        cooperative,
        output: Some(&print),
    };
    let started = coarse_ns();
    let r = memory::with_launch_memory(ctx, |mem| {
        vgpu_ptx::launch_with(
            &func.module.ptx,
            name,
            &cfg,
            buf,
            mem,
            &func.module.symbols,
            &opts,
        )
    });
    let busy = coarse_ns().saturating_sub(started);
    if busy > 0 {
        sensors::record_kernel_busy(Duration::from_nanos(busy));
    }
    r.map_err(|e| exec_error(ctx, name, e))
}

/// The coarse monotonic clock (a memory read, no clock source access), in
/// ns. Kernel busy time is the difference of two readings: a kernel
/// shorter than the clock's tick (a few ms) mostly reads as 0 and now and
/// then as one tick, which sums to the right busy time over the many
/// launches a utilization window spans, while a precise clock read per
/// launch cost a noticeable share of an empty kernel's launch.
fn coarse_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
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
    let buf = unsafe { params_view(func, params, extra) }?;
    if cooperative {
        check_cooperative(func, &d)?;
    }
    run(func, d, &buf, cooperative)
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
    // SAFETY: `attrs` holds `numAttrs` entries per the API.
    let attrs = unsafe { config_attrs(&c) }?;
    let mut wanted = Attrs::default();
    for a in &attrs {
        wanted.apply(a, Target::Launch)?;
    }
    let d = Dims {
        grid: [c.gridDimX, c.gridDimY, c.gridDimZ],
        block: [c.blockDimX, c.blockDimY, c.blockDimZ],
        shared: c.sharedMemBytes,
    };
    // The stream is inside the config, so it is resolved here.
    let s = stream::resolve(c.hStream)?;
    for e in &wanted.events {
        // An event records work of its own context only.
        if event::context_of(e) != s.ctx.id {
            return Err(INVALID_HANDLE);
        }
    }
    // SAFETY: forwarded with the caller's guarantees.
    unsafe { launch(&f, d, &s, params, extra, wanted.cooperative) }?;
    for e in &wanted.events {
        event::record_now(e);
    }
    Ok(())
}

/// The attributes of a launch configuration, copied out.
///
/// # Safety
/// `c.attrs` holds `c.numAttrs` entries, as the API requires.
unsafe fn config_attrs(c: &CUlaunchConfig) -> Result<Vec<CUlaunchAttribute>, CUresult> {
    if c.numAttrs == 0 {
        return Ok(Vec::new());
    }
    if c.attrs.is_null() {
        return Err(INVALID_VALUE);
    }
    // SAFETY: per the caller; read unaligned, as the application's array
    // is only as aligned as it made it.
    Ok((0..c.numAttrs as usize)
        .map(|i| unsafe { c.attrs.add(i).read_unaligned() })
        .collect())
}

// ---- launch attributes --------------------------------------------------------------

/// Where an attribute is applied: each is valid for streams, launches or
/// graph nodes, or several (cuda.h, `CUlaunchAttributeID`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Target {
    Launch,
    Node,
}

/// What a launch's (or kernel node's) attributes ask of it.
#[derive(Clone, Default)]
pub(crate) struct Attrs {
    pub cooperative: bool,
    /// Recorded once the kernel has finished: programmatic events and
    /// launch-completion events, which the driver may only record later
    /// than their blocks start, and completion is later still.
    pub events: Vec<Arc<Event>>,
}

/// Logs, once per attribute id, that a hint was accepted without effect.
fn hint(id: Id, what: &str) {
    static SEEN: AtomicU32 = AtomicU32::new(0);
    let bit = 1u32 << (id.0 & 31);
    if SEEN.fetch_or(bit, Ordering::Relaxed) & bit == 0 {
        warn(format_args!(
            "launch attribute {what} ({}) accepted: a hint with no effect on the software GPU",
            id.0
        ));
    }
}

/// An event an attribute names: one the driver records on the device's
/// behalf, so it may not time or be interprocess; record flags are none.
fn attribute_event(ev: cuda_types::cuda::CUevent, flags: c_int) -> Result<Arc<Event>, CUresult> {
    // SAFETY: a handle is only looked up, never dereferenced.
    let Live(e) = unsafe { <Live<Event> as vgpu_ffi::FromCuda<_, CUresult>>::from_cuda(ev) }?;
    if flags != 0 || !event::usable_by_device(&e) {
        return Err(INVALID_VALUE);
    }
    Ok(e)
}

fn cluster_dims(v: [c_uint; 3]) -> Result<[c_uint; 3], CUresult> {
    if v.contains(&0) {
        return Err(INVALID_VALUE);
    }
    Ok(v)
}

impl Attrs {
    /// Validates one attribute for `target` and notes what it asks.
    pub(crate) fn apply(&mut self, a: &CUlaunchAttribute, target: Target) -> Result<(), CUresult> {
        let launch_only = || {
            if target == Target::Launch {
                Ok(())
            } else {
                Err(INVALID_VALUE)
            }
        };
        let v = &a.value;
        // SAFETY (every union read below): the id says which member the
        // application set; all members are plain integers, floats and
        // handles, valid for any bit pattern.
        match a.id {
            Id::CU_LAUNCH_ATTRIBUTE_IGNORE => {}
            Id::CU_LAUNCH_ATTRIBUTE_ACCESS_POLICY_WINDOW => {
                // SAFETY: the id names the member read (see above).
                let w = unsafe { v.accessPolicyWindow };
                let max = profile::attribute(
                    CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_ACCESS_POLICY_WINDOW_SIZE,
                )? as usize;
                // CU_ACCESS_PROPERTY_NORMAL, _STREAMING, _PERSISTING.
                if !(0.0..=1.0).contains(&w.hitRatio)
                    || w.hitProp.0 > 2
                    || w.missProp.0 > 2
                    || w.num_bytes > max
                {
                    return Err(INVALID_VALUE);
                }
                hint(a.id, "access policy window");
            }
            Id::CU_LAUNCH_ATTRIBUTE_COOPERATIVE => {
                // SAFETY: the id names the member read (see above).
                self.cooperative = unsafe { v.cooperative } != 0;
            }
            // Valid for streams only.
            Id::CU_LAUNCH_ATTRIBUTE_SYNCHRONIZATION_POLICY => return Err(INVALID_VALUE),
            Id::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION => {
                // SAFETY: the id names the member read (see above).
                let c = unsafe { v.clusterDim };
                let dims = cluster_dims([c.x, c.y, c.z])?;
                if dims != [1, 1, 1] {
                    warn(format_args!(
                        "thread block clusters ({}x{}x{}) are not supported by the software GPU \
                         (only clusters of one block: no %clusterid, cluster barriers or \
                         distributed shared memory)",
                        c.x, c.y, c.z
                    ));
                    return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
                }
            }
            Id::CU_LAUNCH_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE => {
                // DEFAULT, SPREAD, LOAD_BALANCING.
                // SAFETY: the id names the member read (see above).
                if unsafe { v.clusterSchedulingPolicyPreference }.0 > 2 {
                    return Err(INVALID_VALUE);
                }
                hint(a.id, "cluster scheduling policy");
            }
            // Kernels run one after the other in stream order, which is
            // what an allowed-but-not-taken overlap looks like.
            Id::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION => launch_only()?,
            Id::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_EVENT => {
                launch_only()?;
                // SAFETY: the id names the member read (see above).
                let e = unsafe { v.programmaticEvent };
                self.events.push(attribute_event(e.event, e.flags)?);
            }
            // One queue: every priority is served in submission order.
            Id::CU_LAUNCH_ATTRIBUTE_PRIORITY => {}
            Id::CU_LAUNCH_ATTRIBUTE_MEM_SYNC_DOMAIN_MAP => {
                // SAFETY: the id names the member read (see above).
                let m = unsafe { v.memSyncDomainMap };
                let domains = profile::attribute(
                    CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MEM_SYNC_DOMAIN_COUNT,
                )?;
                if i32::from(m.default_) >= domains || i32::from(m.remote) >= domains {
                    return Err(INVALID_VALUE);
                }
                hint(a.id, "memory synchronization domain map");
            }
            Id::CU_LAUNCH_ATTRIBUTE_MEM_SYNC_DOMAIN => {
                // CU_LAUNCH_MEM_SYNC_DOMAIN_DEFAULT or _REMOTE.
                // SAFETY: the id names the member read (see above).
                if unsafe { v.memSyncDomain }.0 > 1 {
                    return Err(INVALID_VALUE);
                }
                hint(a.id, "memory synchronization domain");
            }
            Id::CU_LAUNCH_ATTRIBUTE_PREFERRED_CLUSTER_DIMENSION => {
                // A preference the device may decline for the regular
                // cluster dimension, which here is one block.
                // SAFETY: the id names the member read (see above).
                let c = unsafe { v.preferredClusterDim };
                cluster_dims([c.x, c.y, c.z])?;
                hint(a.id, "preferred cluster dimension");
            }
            Id::CU_LAUNCH_ATTRIBUTE_LAUNCH_COMPLETION_EVENT => {
                launch_only()?;
                // SAFETY: the id names the member read (see above).
                let e = unsafe { v.launchCompletionEvent };
                self.events.push(attribute_event(e.event, e.flags)?);
            }
            Id::CU_LAUNCH_ATTRIBUTE_DEVICE_UPDATABLE_KERNEL_NODE => {
                // SAFETY: the id names the member read (see above).
                let u = unsafe { v.deviceUpdatableKernelNode }.deviceUpdatable;
                // Graphs only: a launch outside capture is an error.
                if target == Target::Launch || !(0..=1).contains(&u) {
                    return Err(INVALID_VALUE);
                }
                if u == 1 {
                    warn(format_args!(
                        "device-updatable kernel nodes are not supported by the software GPU"
                    ));
                    return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
                }
            }
            Id::CU_LAUNCH_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT => {
                launch_only()?;
                // A percentage, or -1 for the default, as the function
                // attribute takes it.
                // SAFETY: the id names the member read (see above).
                let c = unsafe { v.sharedMemCarveout };
                if c > 100 && c != u32::MAX {
                    return Err(INVALID_VALUE);
                }
                hint(a.id, "shared memory carveout");
            }
            Id::CU_LAUNCH_ATTRIBUTE_NVLINK_UTIL_CENTRIC_SCHEDULING => {
                // SAFETY: the id names the member read (see above).
                if unsafe { v.nvlinkUtilCentricScheduling } > 1 {
                    return Err(INVALID_VALUE);
                }
                hint(a.id, "NVLink-centric scheduling");
            }
            Id::CU_LAUNCH_ATTRIBUTE_PORTABLE_CLUSTER_SIZE_MODE => {
                // DEFAULT, REQUIRE_PORTABLE, ALLOW_NON_PORTABLE.
                // SAFETY: the id names the member read (see above).
                if unsafe { v.portableClusterSizeMode }.0 > 2 {
                    return Err(INVALID_VALUE);
                }
                hint(a.id, "portable cluster size mode");
            }
            Id::CU_LAUNCH_ATTRIBUTE_SHARED_MEMORY_MODE => {
                // DEFAULT .. PREFER_OVERSIZED_SHARED_MEMORY.
                // SAFETY: the id names the member read (see above).
                if unsafe { v.sharedMemoryMode }.0 > 4 {
                    return Err(INVALID_VALUE);
                }
                hint(a.id, "shared memory mode");
            }
            _ => return Err(INVALID_VALUE),
        }
        Ok(())
    }
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
    min_grid.write((best_blocks * profile::board().sm_count as u32) as c_int);
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

// ---- clusters ---------------------------------------------------------------

/// The cluster shape a configuration asks for: its `CLUSTER_DIMENSION`
/// attribute, else the function's required cluster size; `None` if
/// neither says.
fn config_cluster(
    f: &Function,
    attrs: &[CUlaunchAttribute],
) -> Result<Option<[c_uint; 3]>, CUresult> {
    let required = f.attrs.lock().required_cluster;
    let required = (!required.contains(&0)).then(|| required.map(|v| v as c_uint));
    let mut asked = None;
    for a in attrs {
        if a.id == Id::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION {
            // SAFETY: the id says `clusterDim` is the member set.
            let c = unsafe { a.value.clusterDim };
            asked = Some(cluster_dims([c.x, c.y, c.z])?);
        }
    }
    match (required, asked) {
        (Some(r), Some(a)) if r != a => Err(CUresult::CUDA_ERROR_INVALID_CLUSTER_SIZE),
        (r, a) => Ok(a.or(r)),
    }
}

/// `cuOccupancyMaxActiveClusters`: for clusters of one block, the blocks
/// the device holds at once; a larger cluster never runs here, so none of
/// it fits (0, with a message).
pub unsafe fn occupancy_max_active_clusters(
    out: Out<c_int>,
    f: Live<Function>,
    config: In<CUlaunchConfig>,
) -> Result<(), CUresult> {
    let c = config.read();
    // SAFETY: `attrs` holds `numAttrs` entries per the API.
    let attrs = unsafe { config_attrs(&c) }?;
    current()?;
    let block = [c.blockDimX, c.blockDimY, c.blockDimZ];
    if block.contains(&0) {
        return Err(INVALID_VALUE);
    }
    let cluster = config_cluster(&f, &attrs)?.ok_or(CUresult::CUDA_ERROR_INVALID_CLUSTER_SIZE)?;
    if cluster != [1, 1, 1] {
        // Libraries ask this for every candidate shape (cuBLAS's heuristics
        // per GEMM): said once per process, not per call.
        static SAID: AtomicBool = AtomicBool::new(false);
        if !SAID.swap(true, Ordering::Relaxed) {
            warn(format_args!(
                "cuOccupancyMaxActiveClusters: clusters of {}x{}x{} blocks never run on the \
                 software GPU; 0 fit (said once; later sizes are not logged)",
                cluster[0], cluster[1], cluster[2]
            ));
        }
        out.write(0);
        return Ok(());
    }
    let threads: u32 = block.iter().product();
    let per_sm = blocks_per_sm(&f, threads, c.sharedMemBytes as usize)?;
    out.write((per_sm * profile::board().sm_count as u32) as c_int);
    Ok(())
}

/// `cuOccupancyMaxPotentialClusterSize`: the configuration's cluster
/// dimensions are ignored (as by the driver); the largest cluster the
/// software GPU runs is one block.
pub unsafe fn occupancy_max_potential_cluster_size(
    out: Out<c_int>,
    f: Live<Function>,
    config: In<CUlaunchConfig>,
) -> Result<(), CUresult> {
    let c = config.read();
    // SAFETY: `attrs` holds `numAttrs` entries per the API.
    unsafe { config_attrs(&c) }?;
    current()?;
    if [c.blockDimX, c.blockDimY, c.blockDimZ].contains(&0) {
        return Err(INVALID_VALUE);
    }
    let required = f.attrs.lock().required_cluster;
    out.write(if required.contains(&0) {
        1
    } else {
        required.iter().product()
    });
    Ok(())
}
