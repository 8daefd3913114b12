//! Kernel launches, occupancy questions and host functions in streams.
//!
//! A launch is a deferred op (queued by `check::host`): no round trip, its
//! failure reported by the next synchronizing call, as CUDA reports
//! asynchronous errors. What can be checked locally (handles, dimensions,
//! the argument protocol) fails at once.

use crate::args::Live;
use crate::capture;
use crate::check::{self, reject, INVALID_VALUE};
use crate::driver::Device;
use crate::event::{self, Event};
use crate::graph::node::{self, Kernel, KernelSpec, Op};
use crate::module::{self, Func};
use crate::stream::{self, Null, StreamArg};
use cuda_abi::launch::{self as abi, ExtraError, NullArgs, EXTRA_WORDS};
use cuda_types::cuda::{
    CUdevice_attribute, CUevent, CUfunction_attribute, CUhostFn, CUlaunchAttribute,
    CUlaunchAttributeID, CUlaunchConfig, CUoccupancyB2DSize, CUresult, CUstreamCallback,
};
use std::ffi::{c_int, c_uint, c_void};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use vgpu_ffi::{FromCuda, In, Out};
use vgpu_guest::log::Level;
use vgpu_guest::vlog;
use vgpu_transport::codec::Bytes;
use vgpu_transport::proto::{
    LaunchAttr, LaunchKernel, OccupancyAvailableDynamicSMem, OccupancyMaxActiveBlocks,
    OccupancyMaxActiveClusters, OccupancyMaxPotentialBlockSize, OccupancyMaxPotentialClusterSize,
    StreamSynchronize,
};

const INVALID_HANDLE: CUresult = CUresult::CUDA_ERROR_INVALID_HANDLE;

/// The packed buffer an `extra` array describes, both keys required.
///
/// # Safety
/// As [`cuda_abi::launch::parse_extra`] with [`EXTRA_WORDS`]; the buffer
/// holds the size it announces.
#[cfg(test)]
unsafe fn extra_buffer(extra: *const *const c_void) -> Result<Vec<u8>, CUresult> {
    let mut buf = Vec::new();
    // SAFETY: forwarded.
    unsafe { extra_into(&mut buf, extra) }?;
    Ok(buf)
}

/// [`extra_buffer`] into a buffer the caller keeps.
///
/// # Safety
/// As [`extra_buffer`].
unsafe fn extra_into(out: &mut Vec<u8>, extra: *const *const c_void) -> Result<(), CUresult> {
    out.clear();
    let bad = |why: std::fmt::Arguments<'_>| reject(INVALID_VALUE, why);
    // SAFETY: forwarded.
    let found = unsafe { abi::parse_extra(extra, EXTRA_WORDS) }.map_err(|e| match e {
        ExtraError::NullSize => bad(format_args!("launch extra: NULL BUFFER_SIZE")),
        ExtraError::UnknownKey(key) => bad(format_args!("launch extra: unknown key {key:#x}")),
        ExtraError::NoEnd => bad(format_args!("launch extra: no CU_LAUNCH_PARAM_END")),
    })?;
    let (Some(b), Some(s)) = (found.buffer, found.size) else {
        return Err(bad(format_args!(
            "launch extra: needs both BUFFER_POINTER and BUFFER_SIZE"
        )));
    };
    if s == 0 {
        return Ok(());
    }
    if b.is_null() {
        return Err(bad(format_args!("launch extra: NULL buffer of {s} bytes")));
    }
    if s > vgpu_transport::frame::MAX_PAYLOAD as usize / 2 {
        return Err(bad(format_args!("launch extra: {s} bytes of arguments")));
    }
    // SAFETY: the buffer holds `s` bytes (contract).
    out.extend_from_slice(unsafe { std::slice::from_raw_parts(b, s) });
    Ok(())
}

/// The argument buffer of a launch from one of the two ways to pass it.
///
/// # Safety
/// As [`cuda_abi::launch::pack`] and [`extra_buffer`].
pub(crate) unsafe fn arguments(
    f: &Func,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> Result<Vec<u8>, CUresult> {
    let mut buf = Vec::new();
    // SAFETY: forwarded.
    unsafe { arguments_into(&mut buf, f, kernel_params, extra) }?;
    Ok(buf)
}

/// [`arguments`] into a buffer the caller keeps (launches reuse one per
/// thread, so packing allocates nothing after the first).
///
/// # Safety
/// As [`arguments`].
unsafe fn arguments_into(
    out: &mut Vec<u8>,
    f: &Func,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> Result<(), CUresult> {
    match (kernel_params.is_null(), extra.is_null()) {
        (false, false) => Err(reject(
            INVALID_VALUE,
            format_args!("launch of {:?}: both kernelParams and extra", f.name),
        )),
        // SAFETY: forwarded.
        (true, false) => unsafe { extra_into(out, extra as *const *const c_void) },
        (false, true) => {
            let layout = f.layout()?.iter().copied();
            // SAFETY: forwarded; the array is non-NULL (matched above), and
            // a NULL argument is zeros, so packing cannot fail.
            let packed = unsafe {
                abi::pack_into(
                    out,
                    layout,
                    f.params_size(),
                    kernel_params as *const *const c_void,
                    NullArgs::Zero,
                )
            };
            packed.expect("NullArgs::Zero and a non-NULL array");
            Ok(())
        }
        // No arguments at all: fine for a kernel without parameters; one
        // with parameters reads zeros, as a real launch would read garbage.
        (true, true) => {
            out.clear();
            out.resize(f.params_size(), 0);
            Ok(())
        }
    }
}

thread_local! {
    /// The argument buffer of this thread's last launch, kept for the next
    /// (see [`arguments_into`]).
    static ARGS: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Everything a launch needs besides the function.
struct Shape {
    grid: [u32; 3],
    block: [u32; 3],
    shared_mem: u32,
    stream: StreamArg,
    /// `cuLaunchCooperativeKernel` (`cuLaunchKernelEx` says it with an
    /// attribute instead).
    cooperative: bool,
    attrs: Attrs,
}

/// The launch-configuration errors the driver returns from the launch
/// itself (CUDA_ERROR_INVALID_VALUE): a block or grid beyond the device's
/// limits, more threads per block or more dynamic shared memory than any
/// kernel may have. A launch is deferred, so the host's verdict would only
/// reach the application at its next synchronizing call; these limits are
/// in the inventory. What depends on the kernel (its register and static
/// shared memory use, its own maximum block size) is the host's to check.
fn check_shape(shape: &Shape, dev: &Device) -> Result<(), CUresult> {
    use CUdevice_attribute as A;
    let info = dev.info();
    // A limit the host did not report is not checked here.
    let limit = |a: A| {
        info.attribute(a.0 as i32)
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(u64::MAX)
    };
    let over =
        |dims: &[u32; 3], max: [A; 3]| dims.iter().zip(max).any(|(&d, m)| u64::from(d) > limit(m));
    let threads: u64 = shape.block.iter().map(|&b| u64::from(b)).product();
    let bad = if over(
        &shape.block,
        [
            A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X,
            A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y,
            A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z,
        ],
    ) || threads > limit(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK)
    {
        "block"
    } else if over(
        &shape.grid,
        [
            A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X,
            A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y,
            A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z,
        ],
    ) {
        "grid"
    } else if u64::from(shape.shared_mem)
        > limit(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
    {
        "shared memory"
    } else {
        return Ok(());
    };
    Err(reject(
        INVALID_VALUE,
        format_args!(
            "launch: {bad} beyond the device's limits (grid {:?}, block {:?}, {} bytes of dynamic shared memory)",
            shape.grid, shape.block, shape.shared_mem
        ),
    ))
}

/// # Safety
/// As [`arguments`].
unsafe fn launch(
    f: Live<Func>,
    shape: Shape,
    null: Null,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> Result<(), CUresult> {
    if shape.grid.contains(&0) || shape.block.contains(&0) {
        return Err(reject(
            INVALID_VALUE,
            format_args!("launch: grid {:?} block {:?}", shape.grid, shape.block),
        ));
    }
    let t = stream::target(&shape.stream, null)?;
    check_shape(&shape, &Device::new(t.ctx.device)?)?;
    let sink = capture::check(&t)?;
    let func = f.in_context(&t.ctx)?;
    // The function's own limit (`.maxntid`, its registers), refused by the
    // launch itself as the driver refuses it.
    let threads: u64 = shape.block.iter().map(|&b| u64::from(b)).product();
    if func.max_threads().is_some_and(|max| threads > max) {
        return Err(reject(
            INVALID_VALUE,
            format_args!(
                "launch of {:?}: a block of {threads} threads, more than the function allows",
                func.name
            ),
        ));
    }
    let mut params = ARGS.take();
    // SAFETY: forwarded.
    unsafe { arguments_into(&mut params, &func, kernel_params, extra) }?;
    let Attrs { wire, events } = shape.attrs;
    if let Some(sink) = sink {
        // An event the launch records belongs to the stream's context (the
        // host checks this for a launch it runs).
        if events.iter().any(|e| !Arc::ptr_eq(&e.ctx, &t.ctx)) {
            return Err(reject(
                INVALID_HANDLE,
                format_args!("cuLaunchKernelEx: an attribute's event is of another context"),
            ));
        }
        let mut attrs = node_attrs(wire);
        if shape.cooperative {
            attrs.push(LaunchAttr::Cooperative { value: 1 });
        }
        // Captured: a kernel node with the function as the application
        // named it, in the stream's context.
        let k = Kernel::new(KernelSpec {
            as_kernel: f.kind == module::FuncKind::Kernel,
            func: f.into_arc(),
            ctx: t.ctx.clone(),
            grid: shape.grid,
            block: shape.block,
            shared_mem: shape.shared_mem,
            attrs,
            args: params,
            from_extra: !extra.is_null(),
        })?;
        sink.add(Op::Kernel(k))?;
    } else {
        let call = LaunchKernel {
            ctx: t.ctx_remote,
            func: func.remote,
            grid: shape.grid,
            block: shape.block,
            shared_mem: shape.shared_mem,
            stream: t.stream,
            params: Bytes(params),
            cooperative: shape.cooperative,
            attrs: wire,
        };
        // Queued: encoded into the connection's buffer, nothing sent yet.
        check::host(&call)?;
        ARGS.set(call.params.0);
    }
    // The events are recorded by the launch: on the host, or (captured)
    // with the kernel node as what a wait on them depends on.
    for e in &events {
        event::recorded_by_launch(e, &t)?;
    }
    Ok(())
}

/// `cuLaunchKernel[_ptsz]` (`null` says which) and, with `cooperative`
/// (and no `extra`: the export has none), `cuLaunchCooperativeKernel[_ptsz]`.
///
/// # Safety
/// As [`arguments`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn launch_kernel(
    f: Live<Func>,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    shared_mem: c_uint,
    stream: StreamArg,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
    null: Null,
    cooperative: bool,
) -> Result<(), CUresult> {
    let shape = Shape {
        grid: [gx, gy, gz],
        block: [bx, by, bz],
        shared_mem,
        stream,
        cooperative,
        attrs: Attrs::default(),
    };
    // SAFETY: forwarded caller contract.
    unsafe { launch(f, shape, null, kernel_params, extra) }
}

/// `cuLaunchKernelEx`: every launch attribute travels to the host, which
/// hands them to its driver's `cuLaunchKernelEx` (a captured launch keeps
/// them in its kernel node: see [`node_attrs`]).
///
/// # Safety
/// As [`arguments`]; `config.attrs` holds `numAttrs` entries.
pub unsafe fn launch_kernel_ex(
    config: In<CUlaunchConfig>,
    f: Live<Func>,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
    null: Null,
) -> Result<(), CUresult> {
    let c = config.read();
    let shape = Shape {
        grid: [c.gridDimX, c.gridDimY, c.gridDimZ],
        block: [c.blockDimX, c.blockDimY, c.blockDimZ],
        shared_mem: c.sharedMemBytes,
        stream: StreamArg::resolve(c.hStream)?,
        cooperative: false,
        // SAFETY: numAttrs readable attributes (contract).
        attrs: unsafe { config_attrs(&c, "cuLaunchKernelEx") }?,
    };
    // SAFETY: forwarded caller contract.
    unsafe { launch(f, shape, null, kernel_params, extra) }
}

// ---- launch attributes ----
//
// Every `CUlaunchAttribute` becomes a `LaunchAttr` of the protocol, in the
// application's order, with its events as the host's handles; the host
// gives them to its driver, which validates them (so the codes are the
// driver's). Refused here: an id the protocol does not know (the driver's
// CUDA_ERROR_INVALID_VALUE), and what cuda.h says of the events an
// attribute records (CUDA_ERROR_INVALID_VALUE unless created with
// CU_EVENT_DISABLE_TIMING, not interprocess, and flags 0), which a captured
// launch cannot leave to the host.

/// `CU_EVENT_DISABLE_TIMING` and `CU_EVENT_INTERPROCESS`.
const EVENT_DISABLE_TIMING: u32 = 0x2;
const EVENT_INTERPROCESS: u32 = 0x4;

/// A launch's attributes as the protocol carries them.
#[derive(Default)]
pub(crate) struct Attrs {
    /// Every attribute, in the application's order.
    pub wire: Vec<LaunchAttr>,
    /// The events the launch records (programmatic and launch-completion
    /// events).
    pub events: Vec<Arc<Event>>,
}

/// The attributes of a launch configuration.
///
/// # Safety
/// `c.attrs` holds `c.numAttrs` entries (API contract).
pub(crate) unsafe fn config_attrs(c: &CUlaunchConfig, what: &str) -> Result<Attrs, CUresult> {
    let mut out = Attrs::default();
    if c.numAttrs == 0 {
        return Ok(out);
    }
    if c.attrs.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("{what}: {} attributes at NULL", c.numAttrs),
        ));
    }
    for i in 0..c.numAttrs as usize {
        // SAFETY: numAttrs readable entries (contract); unaligned, as the
        // application's array is only as aligned as it made it.
        let a = unsafe { c.attrs.add(i).read_unaligned() };
        let (wire, event) = wire_attr(&a, what)?;
        out.wire.push(wire);
        out.events.extend(event);
    }
    Ok(out)
}

/// An event an attribute names, as cuda.h requires it.
fn attribute_event(h: CUevent, flags: c_int, what: &str) -> Result<Arc<Event>, CUresult> {
    // SAFETY: a handle, only looked up.
    let Live(e) = unsafe { <Live<Event> as FromCuda<CUevent, CUresult>>::from_cuda(h) }?;
    if flags != 0 || e.flags & EVENT_DISABLE_TIMING == 0 || e.flags & EVENT_INTERPROCESS != 0 {
        return Err(reject(
            INVALID_VALUE,
            format_args!(
                "{what}: an attribute's event must disable timing and not be interprocess, \
                 with flags 0 (event flags {:#x}, record flags {flags:#x})",
                e.flags
            ),
        ));
    }
    Ok(e)
}

/// One attribute in the protocol's form, and the event it records.
pub(crate) fn wire_attr(
    a: &CUlaunchAttribute,
    what: &str,
) -> Result<(LaunchAttr, Option<Arc<Event>>), CUresult> {
    type Id = CUlaunchAttributeID;
    let v = &a.value;
    // SAFETY: the union reads below take the member the id names, which
    // the application set; every member is plain integers, floats and
    // handles, valid for any bit pattern.
    let wire = unsafe {
        match a.id {
            Id::CU_LAUNCH_ATTRIBUTE_IGNORE => LaunchAttr::Ignore {},
            Id::CU_LAUNCH_ATTRIBUTE_ACCESS_POLICY_WINDOW => {
                let w = v.accessPolicyWindow;
                LaunchAttr::AccessPolicyWindow {
                    base_ptr: w.base_ptr as u64,
                    num_bytes: w.num_bytes as u64,
                    hit_ratio_bits: w.hitRatio.to_bits(),
                    hit_prop: w.hitProp.0,
                    miss_prop: w.missProp.0,
                }
            }
            Id::CU_LAUNCH_ATTRIBUTE_COOPERATIVE => LaunchAttr::Cooperative {
                value: v.cooperative,
            },
            Id::CU_LAUNCH_ATTRIBUTE_SYNCHRONIZATION_POLICY => LaunchAttr::SynchronizationPolicy {
                policy: v.syncPolicy.0,
            },
            Id::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION => {
                let d = v.clusterDim;
                LaunchAttr::ClusterDimension {
                    dim: [d.x, d.y, d.z],
                }
            }
            Id::CU_LAUNCH_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE => {
                LaunchAttr::ClusterSchedulingPolicyPreference {
                    policy: v.clusterSchedulingPolicyPreference.0,
                }
            }
            Id::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION => {
                LaunchAttr::ProgrammaticStreamSerialization {
                    allowed: v.programmaticStreamSerializationAllowed,
                }
            }
            Id::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_EVENT => {
                let p = v.programmaticEvent;
                let e = attribute_event(p.event, p.flags, what)?;
                let wire = LaunchAttr::ProgrammaticEvent {
                    event: e.remote,
                    flags: p.flags,
                    trigger_at_block_start: p.triggerAtBlockStart,
                };
                return Ok((wire, Some(e)));
            }
            Id::CU_LAUNCH_ATTRIBUTE_PRIORITY => LaunchAttr::Priority {
                priority: v.priority,
            },
            Id::CU_LAUNCH_ATTRIBUTE_MEM_SYNC_DOMAIN_MAP => {
                let m = v.memSyncDomainMap;
                LaunchAttr::MemSyncDomainMap {
                    default_domain: m.default_,
                    remote_domain: m.remote,
                }
            }
            Id::CU_LAUNCH_ATTRIBUTE_MEM_SYNC_DOMAIN => LaunchAttr::MemSyncDomain {
                domain: v.memSyncDomain.0,
            },
            Id::CU_LAUNCH_ATTRIBUTE_PREFERRED_CLUSTER_DIMENSION => {
                let d = v.preferredClusterDim;
                LaunchAttr::PreferredClusterDimension {
                    dim: [d.x, d.y, d.z],
                }
            }
            Id::CU_LAUNCH_ATTRIBUTE_LAUNCH_COMPLETION_EVENT => {
                let p = v.launchCompletionEvent;
                let e = attribute_event(p.event, p.flags, what)?;
                let wire = LaunchAttr::LaunchCompletionEvent {
                    event: e.remote,
                    flags: p.flags,
                };
                return Ok((wire, Some(e)));
            }
            Id::CU_LAUNCH_ATTRIBUTE_DEVICE_UPDATABLE_KERNEL_NODE => {
                LaunchAttr::DeviceUpdatableKernelNode {
                    device_updatable: v.deviceUpdatableKernelNode.deviceUpdatable,
                }
            }
            Id::CU_LAUNCH_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT => {
                LaunchAttr::PreferredSharedMemoryCarveout {
                    carveout: v.sharedMemCarveout,
                }
            }
            Id::CU_LAUNCH_ATTRIBUTE_NVLINK_UTIL_CENTRIC_SCHEDULING => {
                LaunchAttr::NvlinkUtilCentricScheduling {
                    value: v.nvlinkUtilCentricScheduling,
                }
            }
            Id::CU_LAUNCH_ATTRIBUTE_PORTABLE_CLUSTER_SIZE_MODE => {
                LaunchAttr::PortableClusterSizeMode {
                    mode: v.portableClusterSizeMode.0,
                }
            }
            Id::CU_LAUNCH_ATTRIBUTE_SHARED_MEMORY_MODE => LaunchAttr::SharedMemoryMode {
                mode: v.sharedMemoryMode.0,
            },
            id => {
                return Err(reject(
                    INVALID_VALUE,
                    format_args!(
                        "{what}: launch attribute {} is not one cuda.h defines",
                        id.0
                    ),
                ))
            }
        }
    };
    Ok((wire, None))
}

/// What a kernel node keeps of a captured launch's attributes. cuda.h
/// makes three attributes valid for launches but not for graph nodes; a
/// launch captured with them is honoured by the graph's structure instead
/// (each logged once, so none goes unnoticed):
/// - programmatic stream serialization only *allows* the kernel to overlap
///   the one before it: the node's ordinary dependency on that kernel is a
///   stricter order, which the kernel's programmatic waits also satisfy;
/// - programmatic and launch-completion events are recorded with the node
///   as what a wait on them depends on ([`event::recorded_by_launch`]),
///   i.e. at the kernel's completion, no earlier than the driver may
///   trigger them;
/// - the shared memory carveout is a preference the driver may ignore.
fn node_attrs(wire: Vec<LaunchAttr>) -> Vec<LaunchAttr> {
    static LOGGED: AtomicU32 = AtomicU32::new(0);
    wire.into_iter()
        .filter(|a| {
            let how = match a {
                LaunchAttr::ProgrammaticStreamSerialization { .. } => {
                    "ordered after the previous work by a full dependency"
                }
                LaunchAttr::ProgrammaticEvent { .. } | LaunchAttr::LaunchCompletionEvent { .. } => {
                    "the event is recorded at the kernel node's completion"
                }
                LaunchAttr::PreferredSharedMemoryCarveout { .. } => {
                    "a preference the graph's kernel runs without"
                }
                _ => return true,
            };
            let bit = 1u32 << (a.tag() & 31);
            if LOGGED.fetch_or(bit, Ordering::Relaxed) & bit == 0 {
                vlog!(
                    Level::Info,
                    "captured launch with launch attribute {} (valid for launches, not graph \
                     nodes): {how}",
                    a.tag()
                );
            }
            false
        })
        .collect()
}

// ---- occupancy ----

/// The host handle occupancy questions are about: a kernel's function in
/// the current context.
fn occupancy_func(f: &Live<Func>) -> Result<u64, CUresult> {
    let (ctx, _) = check::current()?;
    Ok(f.in_context(&ctx)?.remote)
}

/// `cuOccupancyMaxActiveBlocksPerMultiprocessor[WithFlags]` (flags 0 for
/// the plain form).
pub fn max_active_blocks(
    out: Out<c_int>,
    f: Live<Func>,
    block_size: c_int,
    dynamic_smem: usize,
    flags: c_uint,
) -> Result<(), CUresult> {
    let func = occupancy_func(&f)?;
    let n = check::host(&OccupancyMaxActiveBlocks {
        func,
        block_size,
        dynamic_smem: dynamic_smem as u64,
        flags,
    })?;
    out.write(n);
    Ok(())
}

/// `cuOccupancyMaxPotentialBlockSize[WithFlags]`.
///
/// With a fixed dynamic shared memory size the host answers in one round
/// trip. With a `blockSizeToDynamicSMemSize` callback — a guest function
/// the host cannot call — the search runs here: for every multiple of the
/// warp size up to the limit, the callback gives the shared memory, the
/// host the resident blocks per SM, and the block size with the most
/// resident threads wins (the larger on a tie, as CUDA's own
/// `cudaOccupancyMaxPotentialBlockSize` template decides). That is one
/// round trip per candidate, at most 32 for 1024-thread blocks.
#[allow(clippy::too_many_arguments)]
pub fn max_potential_block_size(
    min_grid: Out<c_int>,
    block: Out<c_int>,
    f: Live<Func>,
    to_smem: CUoccupancyB2DSize,
    dynamic_smem: usize,
    limit: c_int,
    flags: c_uint,
) -> Result<(), CUresult> {
    let func = occupancy_func(&f)?;
    let (grid, size) = match to_smem {
        None => check::host(&OccupancyMaxPotentialBlockSize {
            func,
            dynamic_smem: dynamic_smem as u64,
            block_size_limit: limit,
            flags,
        })?,
        Some(cb) => {
            let (ctx, _) = check::current()?;
            let dev = Device::new(ctx.device)?.info();
            let attr = |a: CUdevice_attribute| dev.attribute(a.0 as i32).unwrap_or(0);
            let warp = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_WARP_SIZE).max(1);
            let sms = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
            let mut max_threads =
                attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK);
            let fattr = CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK;
            match module::attribute(&f, fattr) {
                Ok(n) if n > 0 => max_threads = max_threads.min(n),
                _ => {}
            }
            if limit > 0 {
                max_threads = max_threads.min(limit);
            }
            let mut best = (0i32, 0i32);
            let mut size = max_threads - max_threads % warp;
            while size > 0 {
                // SAFETY: the application's callback, as CUDA would call it.
                let smem = unsafe { cb(size) };
                let blocks = check::host(&OccupancyMaxActiveBlocks {
                    func,
                    block_size: size,
                    dynamic_smem: smem as u64,
                    flags,
                })?;
                if blocks * size > best.0 * best.1 {
                    best = (blocks, size);
                }
                size -= warp;
            }
            (best.0 * sms, best.1)
        }
    };
    min_grid.write(grid);
    block.write(size);
    Ok(())
}

/// `cuOccupancyAvailableDynamicSMemPerBlock` (cuBLAS asks it in
/// `cublasCreate`).
pub fn available_dynamic_smem(
    out: Out<usize>,
    f: Live<Func>,
    num_blocks: c_int,
    block_size: c_int,
) -> Result<(), CUresult> {
    let func = occupancy_func(&f)?;
    let bytes = check::host(&OccupancyAvailableDynamicSMem {
        func,
        num_blocks,
        block_size,
    })?;
    out.write(usize::try_from(bytes).unwrap_or(usize::MAX));
    Ok(())
}

/// A cluster occupancy question: the launch configuration as the
/// protocol carries it. Per cuda.h the context is the config's stream's,
/// or the current one for a NULL (or special) stream.
struct ClusterQuery {
    func: u64,
    grid: [u32; 3],
    block: [u32; 3],
    shared_mem: u32,
    attrs: Vec<LaunchAttr>,
}

/// # Safety
/// `config.attrs` holds `numAttrs` entries (API contract).
unsafe fn cluster_query(
    f: &Live<Func>,
    config: In<CUlaunchConfig>,
    what: &str,
) -> Result<ClusterQuery, CUresult> {
    let c = config.read();
    let ctx = match StreamArg::resolve(c.hStream)? {
        StreamArg::Created(s) => s.ctx.clone(),
        _ => check::current()?.0,
    };
    // SAFETY: forwarded contract.
    let attrs = unsafe { config_attrs(&c, what) }?;
    Ok(ClusterQuery {
        func: f.in_context(&ctx)?.remote,
        grid: [c.gridDimX, c.gridDimY, c.gridDimZ],
        block: [c.blockDimX, c.blockDimY, c.blockDimZ],
        shared_mem: c.sharedMemBytes,
        attrs: attrs.wire,
    })
}

/// `cuOccupancyMaxActiveClusters`: the cluster size is the config's
/// `CLUSTER_DIMENSION` attribute or the function's required one (the
/// host's driver decides).
///
/// # Safety
/// `config.attrs` holds `numAttrs` entries (API contract).
pub unsafe fn max_active_clusters(
    out: Out<c_int>,
    f: Live<Func>,
    config: In<CUlaunchConfig>,
) -> Result<(), CUresult> {
    // SAFETY: forwarded contract.
    let q = unsafe { cluster_query(&f, config, "cuOccupancyMaxActiveClusters") }?;
    out.write(check::host(&OccupancyMaxActiveClusters {
        func: q.func,
        grid: q.grid,
        block: q.block,
        shared_mem: q.shared_mem,
        attrs: q.attrs,
    })?);
    Ok(())
}

/// `cuOccupancyMaxPotentialClusterSize`.
///
/// # Safety
/// `config.attrs` holds `numAttrs` entries (API contract).
pub unsafe fn max_potential_cluster_size(
    out: Out<c_int>,
    f: Live<Func>,
    config: In<CUlaunchConfig>,
) -> Result<(), CUresult> {
    // SAFETY: forwarded contract.
    let q = unsafe { cluster_query(&f, config, "cuOccupancyMaxPotentialClusterSize") }?;
    out.write(check::host(&OccupancyMaxPotentialClusterSize {
        func: q.func,
        grid: q.grid,
        block: q.block,
        shared_mem: q.shared_mem,
        attrs: q.attrs,
    })?);
    Ok(())
}

// ---- host functions ----
//
// A host function must run after everything queued before it on its
// stream, and before anything queued after it. vgpu runs it on the calling
// thread: it waits for the stream (a round trip, which also sends the
// queue), calls the function, and only then returns, so later work cannot
// overtake it. CUDA runs callbacks on a driver thread, but promises no
// particular one, and they may not call CUDA anyway. The cost: the
// enqueueing thread blocks until the stream drains.

/// Waits for the stream a host function goes into.
fn drain(s: &StreamArg, null: Null) -> Result<(), CUresult> {
    let t = stream::target(s, null)?;
    check::host(&StreamSynchronize { stream: t.stream })
}

/// `cuLaunchHostFunc`: per CUDA, not called when the context has failed;
/// the failure is returned instead. The 13.x `_v2` adds a synchronization
/// mode (0 for the v1 export), which only says how the function may
/// overlap later work: running it inline satisfies every mode.
pub fn launch_host_func(
    s: StreamArg,
    f: CUhostFn,
    user: *mut c_void,
    mode: c_uint,
    null: Null,
) -> Result<(), CUresult> {
    let f = f.ok_or_else(|| reject(INVALID_VALUE, format_args!("cuLaunchHostFunc: NULL fn")))?;
    let t = stream::target(&s, null)?;
    if let Some(sink) = capture::check(&t)? {
        return sink.add(Op::Host(node::host_from(Some(f), user, mode)?));
    }
    drain(&s, null)?;
    // SAFETY: the application's function with its own argument.
    unsafe { f(user) };
    Ok(())
}

/// `cuStreamAddCallback`: unlike a host function, the callback also runs
/// after a failure, and is told the status.
pub fn add_callback(
    s: StreamArg,
    cb: CUstreamCallback,
    user: *mut c_void,
    flags: c_uint,
    null: Null,
) -> Result<(), CUresult> {
    let cb = cb.ok_or_else(|| reject(INVALID_VALUE, format_args!("cuStreamAddCallback: NULL")))?;
    if flags != 0 {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuStreamAddCallback: flags {flags}"),
        ));
    }
    // An invalid handle is the caller's error, not the stream's status
    // (it was refused as the argument converted); so is a default stream
    // without a current context.
    let t = stream::target(&s, null)?;
    if let Some(sink) = capture::check(&t)? {
        // Its doc: not supported with stream capture, unlike
        // cuLaunchHostFunc.
        return Err(sink.refuse(capture::UNSUPPORTED, "cuStreamAddCallback"));
    }
    let status = match drain(&s, null) {
        Ok(()) => CUresult::CUDA_SUCCESS,
        Err(e) => e,
    };
    // SAFETY: the application's callback with its own stream and argument.
    unsafe { cb(s.handle(), status, user) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extra(items: &[usize]) -> Result<Vec<u8>, CUresult> {
        let v: Vec<*const c_void> = items.iter().map(|&i| i as *const c_void).collect();
        // SAFETY: test arrays follow the protocol or end in END within 16.
        unsafe { extra_buffer(v.as_ptr()) }
    }

    #[test]
    fn extra_protocol() {
        let args = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let size: usize = 8;
        let (a, s) = (args.as_ptr() as usize, &size as *const usize as usize);
        assert_eq!(extra(&[1, a, 2, s, 0]), Ok(args.to_vec()));
        assert_eq!(extra(&[2, s, 1, a, 0]), Ok(args.to_vec()));
        let e = Err(INVALID_VALUE);
        assert_eq!(extra(&[1, a, 0]), e);
        assert_eq!(extra(&[2, s, 0]), e);
        assert_eq!(extra(&[0]), e);
        assert_eq!(extra(&[3, a, 2, s, 0]), e);
        assert_eq!(extra(&[1, a, 2, 0, 0]), e);
        assert_eq!(extra(&[1, 0, 2, s, 0]), e);
        let zero: usize = 0;
        assert_eq!(
            extra(&[1, 0, 2, &zero as *const usize as usize, 0]),
            Ok(vec![])
        );
        let endless: Vec<usize> = [1, a].repeat(9);
        assert_eq!(extra(&endless), e);
    }

    fn attr(
        id: CUlaunchAttributeID,
        set: impl FnOnce(&mut CUlaunchAttribute),
    ) -> CUlaunchAttribute {
        let mut a = CUlaunchAttribute {
            id,
            ..Default::default()
        };
        set(&mut a);
        a
    }

    #[test]
    fn attributes_take_the_member_their_id_names() {
        type Id = CUlaunchAttributeID;
        let wire = |a: CUlaunchAttribute| wire_attr(&a, "test").map(|(w, e)| (w, e.is_none()));
        assert_eq!(
            wire(attr(Id::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION, |a| {
                a.value.clusterDim.x = 2;
                a.value.clusterDim.y = 3;
                a.value.clusterDim.z = 4;
            })),
            Ok((LaunchAttr::ClusterDimension { dim: [2, 3, 4] }, true))
        );
        assert_eq!(
            wire(attr(Id::CU_LAUNCH_ATTRIBUTE_PRIORITY, |a| a
                .value
                .priority =
                -3)),
            Ok((LaunchAttr::Priority { priority: -3 }, true))
        );
        assert_eq!(
            wire(attr(Id::CU_LAUNCH_ATTRIBUTE_ACCESS_POLICY_WINDOW, |a| {
                a.value.accessPolicyWindow.base_ptr = 0x1000 as *mut c_void;
                a.value.accessPolicyWindow.num_bytes = 256;
                a.value.accessPolicyWindow.hitRatio = 0.25;
                a.value.accessPolicyWindow.hitProp.0 = 2;
            })),
            Ok((
                LaunchAttr::AccessPolicyWindow {
                    base_ptr: 0x1000,
                    num_bytes: 256,
                    hit_ratio_bits: 0.25f32.to_bits(),
                    hit_prop: 2,
                    miss_prop: 0,
                },
                true
            ))
        );
        assert_eq!(
            wire(attr(Id::CU_LAUNCH_ATTRIBUTE_MEM_SYNC_DOMAIN_MAP, |a| {
                a.value.memSyncDomainMap.default_ = 1;
                a.value.memSyncDomainMap.remote = 0;
            })),
            Ok((
                LaunchAttr::MemSyncDomainMap {
                    default_domain: 1,
                    remote_domain: 0
                },
                true
            ))
        );
        assert_eq!(
            wire(attr(Id::CU_LAUNCH_ATTRIBUTE_COOPERATIVE, |a| a
                .value
                .cooperative =
                1)),
            Ok((LaunchAttr::Cooperative { value: 1 }, true))
        );
        // Every id cuda.h defines has its protocol tag, the others none.
        for id in 0..=Id::CU_LAUNCH_ATTRIBUTE_MAX.0 {
            let known = LaunchAttr::TAGS.contains(&id);
            let events = matches!(
                CUlaunchAttributeID(id),
                Id::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_EVENT
                    | Id::CU_LAUNCH_ATTRIBUTE_LAUNCH_COMPLETION_EVENT
            );
            match wire(attr(CUlaunchAttributeID(id), |_| {})) {
                Ok((w, _)) => assert_eq!(w.tag(), id),
                // A NULL event is not a live event.
                Err(e) if events => assert_eq!(e, INVALID_HANDLE),
                Err(e) => {
                    assert!(!known, "attribute {id}");
                    assert_eq!(e, INVALID_VALUE);
                }
            }
        }
    }

    #[test]
    fn nodes_keep_the_attributes_nodes_take() {
        let all = vec![
            LaunchAttr::Priority { priority: 1 },
            LaunchAttr::ProgrammaticStreamSerialization { allowed: 1 },
            LaunchAttr::LaunchCompletionEvent { event: 5, flags: 0 },
            LaunchAttr::ProgrammaticEvent {
                event: 6,
                flags: 0,
                trigger_at_block_start: 1,
            },
            LaunchAttr::PreferredSharedMemoryCarveout { carveout: 50 },
            LaunchAttr::Cooperative { value: 1 },
            LaunchAttr::ClusterDimension { dim: [1, 1, 1] },
        ];
        assert_eq!(
            node_attrs(all),
            vec![
                LaunchAttr::Priority { priority: 1 },
                LaunchAttr::Cooperative { value: 1 },
                LaunchAttr::ClusterDimension { dim: [1, 1, 1] },
            ]
        );
    }
}
