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
use crate::graph::node::{self, Kernel, KernelSpec, Op};
use crate::module::{self, Func};
use crate::stream::{self, Null, StreamArg};
use cuda_abi::launch::{self as abi, ExtraError, NullArgs, EXTRA_WORDS};
use cuda_types::cuda::{
    CUdevice_attribute, CUfunction_attribute, CUhostFn, CUlaunchAttributeID, CUlaunchConfig,
    CUoccupancyB2DSize, CUresult, CUstreamCallback,
};
use std::ffi::{c_int, c_uint, c_void};
use vgpu_ffi::{In, Out};
use vgpu_guest::log::Level;
use vgpu_guest::vlog;
use vgpu_transport::codec::Bytes;
use vgpu_transport::proto::{
    LaunchKernel, OccupancyMaxActiveBlocks, OccupancyMaxPotentialBlockSize, StreamSynchronize,
};

/// The packed buffer an `extra` array describes, both keys required.
///
/// # Safety
/// As [`cuda_abi::launch::parse_extra`] with [`EXTRA_WORDS`]; the buffer
/// holds the size it announces.
pub unsafe fn extra_buffer(extra: *const *const c_void) -> Result<Vec<u8>, CUresult> {
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
        return Ok(Vec::new());
    }
    if b.is_null() {
        return Err(bad(format_args!("launch extra: NULL buffer of {s} bytes")));
    }
    if s > vgpu_transport::frame::MAX_PAYLOAD as usize / 2 {
        return Err(bad(format_args!("launch extra: {s} bytes of arguments")));
    }
    // SAFETY: the buffer holds `s` bytes (contract).
    Ok(unsafe { std::slice::from_raw_parts(b, s) }.to_vec())
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
    match (kernel_params.is_null(), extra.is_null()) {
        (false, false) => Err(reject(
            INVALID_VALUE,
            format_args!("launch of {:?}: both kernelParams and extra", f.name),
        )),
        // SAFETY: forwarded.
        (true, false) => unsafe { extra_buffer(extra as *const *const c_void) },
        (false, true) => {
            let layout = f.layout()?.iter().copied();
            // SAFETY: forwarded; the array is non-NULL (matched above), and
            // a NULL argument is zeros, so packing cannot fail.
            let packed = unsafe {
                abi::pack(
                    layout,
                    f.params_size(),
                    kernel_params as *const *const c_void,
                    NullArgs::Zero,
                )
            };
            Ok(packed.expect("NullArgs::Zero and a non-NULL array"))
        }
        // No arguments at all: fine for a kernel without parameters; one
        // with parameters reads zeros, as a real launch would read garbage.
        (true, true) => Ok(vec![0; f.params_size()]),
    }
}

/// Everything a launch needs besides the function.
struct Shape {
    grid: [u32; 3],
    block: [u32; 3],
    shared_mem: u32,
    stream: StreamArg,
    cooperative: bool,
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
    let sink = capture::check(&t)?;
    let func = f.in_context(&t.ctx)?;
    // SAFETY: forwarded.
    let params = unsafe { arguments(&func, kernel_params, extra) }?;
    if let Some(sink) = sink {
        // Captured: a kernel node with the function as the application
        // named it, in the stream's context.
        let k = Kernel::new(KernelSpec {
            as_kernel: f.kind == module::FuncKind::Kernel,
            func: f.into_arc(),
            ctx: t.ctx.clone(),
            grid: shape.grid,
            block: shape.block,
            shared_mem: shape.shared_mem,
            cooperative: shape.cooperative,
            args: params,
            from_extra: !extra.is_null(),
        })?;
        return sink.add(Op::Kernel(k));
    }
    let call = LaunchKernel {
        ctx: t.ctx_remote,
        func: func.remote,
        grid: shape.grid,
        block: shape.block,
        shared_mem: shape.shared_mem,
        stream: t.stream,
        params: Bytes(params),
        cooperative: shape.cooperative,
        attrs: Vec::new(),
    };
    check::host(&call)
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
    };
    // SAFETY: forwarded caller contract.
    unsafe { launch(f, shape, null, kernel_params, extra) }
}

/// `cuLaunchKernelEx`: of the launch attributes only `COOPERATIVE` changes
/// what the host does; the others (cluster shape, priority, programmatic
/// serialization, memory sync domains ...) are hints or features the
/// remoted launch does not carry, and are dropped with a Debug line.
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
    let mut cooperative = false;
    if c.numAttrs > 0 {
        if c.attrs.is_null() {
            return Err(reject(
                INVALID_VALUE,
                format_args!("cuLaunchKernelEx: NULL attrs"),
            ));
        }
        // SAFETY: numAttrs readable attributes (contract).
        let attrs = unsafe { std::slice::from_raw_parts(c.attrs, c.numAttrs as usize) };
        for a in attrs {
            if a.id == CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_COOPERATIVE {
                // SAFETY: the union member this id selects.
                cooperative = unsafe { a.value.cooperative } != 0;
            } else if a.id != CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_IGNORE {
                vlog!(
                    Level::Debug,
                    "cuLaunchKernelEx: launch attribute {} not forwarded",
                    a.id.0
                );
            }
        }
    }
    let shape = Shape {
        grid: [c.gridDimX, c.gridDimY, c.gridDimZ],
        block: [c.blockDimX, c.blockDimY, c.blockDimZ],
        shared_mem: c.sharedMemBytes,
        stream: StreamArg::resolve(c.hStream)?,
        cooperative,
    };
    // SAFETY: forwarded caller contract.
    unsafe { launch(f, shape, null, kernel_params, extra) }
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
}
