//! Graph nodes' kinds and parameters ([`Op`]), and the entry points that
//! add nodes and read or change their parameters: the per-kind families
//! (`cuGraphAdd*Node`, `cuGraph*NodeGetParams` / `SetParams`) and the
//! generic `cuGraphAddNode[_v2/_v3]` / `cuGraphNodeGetParams` /
//! `cuGraphNodeSetParams[_v2]` with `CUgraphNodeParams`.
//!
//! Parameters are copied in, as the driver copies them: a kernel node
//! keeps its packed arguments, and `cuGraphKernelNodeGetParams` returns
//! `kernelParams` (or `extra`, whichever the node was given) pointing into
//! those node-owned copies, valid until the node's parameters change. A
//! memcpy node keeps the application's `CUDA_MEMCPY3D` and the copy it
//! resolves to; whether it runs on the host or in the guest follows from
//! it ([`Op::device`]).
//!
//! Node kinds vgpu has no use for — external semaphores, batch memory
//! operations, conditional nodes, memcpy batches — are refused with
//! `CUDA_ERROR_NOT_SUPPORTED`.

use super::mem::{Alloc, GraphMem};
use super::{node_list, Body, Graph, NodeArg, INVALID_VALUE, NOT_SUPPORTED};
use crate::args::{self, Live};
use crate::check::{self, reject};
use crate::context::state::{Context, CtxArg};
use crate::copy2d::{self, Plan3D};
use crate::event::Event;
use crate::launch;
use crate::memory;
use crate::module::{Func, FuncKind, FUNCTIONS};
use cuda_types::cuda::{
    CUDA_HOST_NODE_PARAMS_v2, CUDA_KERNEL_NODE_PARAMS_v1, CUDA_KERNEL_NODE_PARAMS_v3,
    CUDA_MEMSET_NODE_PARAMS_v2, CUcontext, CUevent, CUfunction, CUgraphChildGraphNodeOwnership,
    CUgraphEdgeData, CUgraphNode, CUgraphNodeParams, CUgraphNodeType, CUhostFn, CUkernel,
    CUkernelNodeAttrID, CUkernelNodeAttrValue, CUlaunchAttribute, CUlaunchAttributeID,
    CUlaunchAttributeValue, CUmemAccessDesc, CUresult, CUDA_HOST_NODE_PARAMS,
    CUDA_KERNEL_NODE_PARAMS, CUDA_MEMCPY3D, CUDA_MEMSET_NODE_PARAMS, CUDA_MEM_ALLOC_NODE_PARAMS,
};
use std::ffi::c_void;
use std::sync::Arc;
use vgpu_ffi::{In, Out};
use vgpu_transport::proto::LaunchAttr;

/// A value holding application pointers (descriptors, user data) that the
/// guest keeps for later, as the driver keeps them.
#[derive(Clone, Copy)]
pub struct Raw<T>(pub T);

// SAFETY: the pointers inside are the application's addresses, only used
// when the node runs (from whichever thread launches it), as the API
// contract allows; the guest never shares mutable access to them.
unsafe impl<T> Send for Raw<T> {}
// SAFETY: as above; readers only copy the value.
unsafe impl<T> Sync for Raw<T> {}

/// A node's kind and parameters.
pub enum Op {
    Kernel(Kernel),
    Memcpy(Copy3D),
    Memset(Fill),
    Host(Host),
    /// The embedded graph, owned by the node.
    Child(Arc<Graph>),
    Empty,
    EventRecord(Arc<Event>),
    EventWait(Arc<Event>),
    MemAlloc(Alloc),
    MemFree(Arc<GraphMem>),
}

/// Shares a child graph instead of copying it: cloning a *graph* copies
/// children explicitly ([`Graph::clone_graph`]).
impl Clone for Op {
    fn clone(&self) -> Op {
        match self {
            Op::Kernel(k) => Op::Kernel(k.clone()),
            Op::Memcpy(c) => Op::Memcpy(c.clone()),
            Op::Memset(f) => Op::Memset(f.clone()),
            Op::Host(h) => Op::Host(*h),
            Op::Child(g) => Op::Child(g.clone()),
            Op::Empty => Op::Empty,
            Op::EventRecord(e) => Op::EventRecord(e.clone()),
            Op::EventWait(e) => Op::EventWait(e.clone()),
            Op::MemAlloc(a) => Op::MemAlloc(a.clone()),
            Op::MemFree(m) => Op::MemFree(m.clone()),
        }
    }
}

impl Op {
    pub fn kind(&self) -> CUgraphNodeType {
        match self {
            Op::Kernel(_) => CUgraphNodeType::CU_GRAPH_NODE_TYPE_KERNEL,
            Op::Memcpy(_) => CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEMCPY,
            Op::Memset(_) => CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEMSET,
            Op::Host(_) => CUgraphNodeType::CU_GRAPH_NODE_TYPE_HOST,
            Op::Child(_) => CUgraphNodeType::CU_GRAPH_NODE_TYPE_GRAPH,
            Op::Empty => CUgraphNodeType::CU_GRAPH_NODE_TYPE_EMPTY,
            Op::EventRecord(_) => CUgraphNodeType::CU_GRAPH_NODE_TYPE_EVENT_RECORD,
            Op::EventWait(_) => CUgraphNodeType::CU_GRAPH_NODE_TYPE_WAIT_EVENT,
            Op::MemAlloc(_) => CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEM_ALLOC,
            Op::MemFree(_) => CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEM_FREE,
        }
    }

    /// Whether the node runs in the guest: host functions, and copies with
    /// guest memory on a side (docs/graphs.md, "phases").
    pub fn runs_in_guest(&self) -> bool {
        match self {
            Op::Host(_) => true,
            Op::Memcpy(c) => c.plan.device().is_none(),
            _ => false,
        }
    }

    /// The rules a node must pass to join `graph` (body locked).
    pub(super) fn admit(&self, graph: &Graph, body: &Body) -> Result<(), CUresult> {
        match self {
            Op::MemAlloc(_) | Op::MemFree(_)
                if graph.embedded.load(std::sync::atomic::Ordering::Acquire) =>
            {
                Err(reject(
                    INVALID_VALUE,
                    format_args!("graph memory nodes cannot be added to a child graph"),
                ))
            }
            Op::MemFree(m) => m.claim_free(graph.raw_handle(), body),
            _ => Ok(()),
        }
    }
}

// ---- kernel nodes ----

/// A kernel node: the function, its launch shape and a copy of its
/// arguments, packed, with the views `GetParams` hands out.
pub struct Kernel {
    /// As the application named it (function or kernel).
    pub func: Arc<Func>,
    /// A `CUkernel` (however the application passed it — cudart 13 launches
    /// kernels as `CUfunction`s): reported in the `kern` field, as the
    /// driver reports it and cudart expects.
    pub as_kernel: bool,
    pub ctx: Arc<Context>,
    /// The function's host handle in `ctx`.
    pub remote: u64,
    /// Parameter layout of that function.
    layout: Vec<(u32, u32)>,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_mem: u32,
    /// The launch attributes it runs with (`cuLaunchKernelEx` in a
    /// capture, a cooperative launch), as the host's driver will get them.
    pub attrs: Vec<LaunchAttr>,
    args: Box<[u8]>,
    /// The arguments came as an `extra` buffer (and go back out as one).
    from_extra: bool,
    /// `kernelParams` into `args`, as addresses.
    ptrs: Box<[usize]>,
    /// `{BUFFER_POINTER, args, BUFFER_SIZE, &size, END}` as addresses.
    extra: Box<[usize; 5]>,
    /// Only kept alive: `extra` points at it.
    _size: Box<usize>,
}

/// The parts of a kernel node that make one, before its views exist.
pub struct KernelSpec {
    pub func: Arc<Func>,
    pub as_kernel: bool,
    pub ctx: Arc<Context>,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_mem: u32,
    pub attrs: Vec<LaunchAttr>,
    pub args: Vec<u8>,
    pub from_extra: bool,
}

impl Kernel {
    /// The node for a launch of `spec.func` in `spec.ctx` (the host
    /// handle of a kernel's function there may take one round trip).
    pub fn new(spec: KernelSpec) -> Result<Kernel, CUresult> {
        let in_ctx = spec.func.in_context(&spec.ctx)?;
        Ok(Kernel::with_views(
            spec,
            in_ctx.remote,
            in_ctx.params.clone().unwrap_or_default(),
        ))
    }

    fn with_views(spec: KernelSpec, remote: u64, layout: Vec<(u32, u32)>) -> Kernel {
        let mut args = spec.args.into_boxed_slice();
        let mut size = Box::new(args.len());
        let ptrs: Box<[usize]> = cuda_abi::launch::arg_pointers(&mut args, &layout)
            .into_iter()
            .map(|p| p as usize)
            .collect();
        let words =
            cuda_abi::launch::extra_array(args.as_mut_ptr().cast(), &mut *size as *mut usize);
        let extra = Box::new(words.map(|w| w as usize));
        Kernel {
            func: spec.func,
            as_kernel: spec.as_kernel,
            ctx: spec.ctx,
            remote,
            layout,
            grid: spec.grid,
            block: spec.block,
            shared_mem: spec.shared_mem,
            attrs: spec.attrs,
            args,
            from_extra: spec.from_extra,
            ptrs,
            extra,
            _size: size,
        }
    }

    pub fn args(&self) -> &[u8] {
        &self.args
    }

    /// Whether it is a cooperative launch.
    pub fn cooperative(&self) -> bool {
        self.attrs
            .iter()
            .any(|a| matches!(a, LaunchAttr::Cooperative { value } if *value != 0))
    }

    fn kernel_params(&self) -> *mut *mut c_void {
        if self.from_extra {
            std::ptr::null_mut()
        } else {
            self.ptrs.as_ptr() as *mut *mut c_void
        }
    }

    fn extra_params(&self) -> *mut *mut c_void {
        if self.from_extra {
            self.extra.as_ptr() as *mut *mut c_void
        } else {
            std::ptr::null_mut()
        }
    }
}

impl Clone for Kernel {
    /// A copy owns its own arguments (and views of them).
    fn clone(&self) -> Kernel {
        let spec = KernelSpec {
            func: self.func.clone(),
            as_kernel: self.as_kernel,
            ctx: self.ctx.clone(),
            grid: self.grid,
            block: self.block,
            shared_mem: self.shared_mem,
            attrs: self.attrs.clone(),
            args: self.args.to_vec(),
            from_extra: self.from_extra,
        };
        Kernel::with_views(spec, self.remote, self.layout.clone())
    }
}

/// The fields every kernel-node parameter struct has (`_v1` lacks the
/// last two, which read as NULL).
#[derive(Clone, Copy)]
pub struct KernelDesc {
    pub func: CUfunction,
    pub kern: CUkernel,
    pub ctx: CUcontext,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_mem: u32,
    pub kernel_params: *mut *mut c_void,
    pub extra: *mut *mut c_void,
}

/// The three kernel-node parameter structs (`_v1`, `_v2`, `_v3`).
pub trait KernelStruct: Copy {
    fn desc(&self) -> KernelDesc;
    fn from_node(k: &Kernel) -> Self;
}

macro_rules! kernel_struct {
    ($t:ty, $with_ctx:tt) => {
        impl KernelStruct for $t {
            fn desc(&self) -> KernelDesc {
                KernelDesc {
                    func: self.func,
                    kern: kernel_struct!(@get $with_ctx self kern),
                    ctx: kernel_struct!(@get $with_ctx self ctx),
                    grid: [self.gridDimX, self.gridDimY, self.gridDimZ],
                    block: [self.blockDimX, self.blockDimY, self.blockDimZ],
                    shared_mem: self.sharedMemBytes,
                    kernel_params: self.kernelParams,
                    extra: self.extra,
                }
            }
            #[allow(clippy::needless_update)]
            fn from_node(k: &Kernel) -> Self {
                let named = k.func.handle();
                Self {
                    func: kernel_struct!(@func $with_ctx k named),
                    gridDimX: k.grid[0],
                    gridDimY: k.grid[1],
                    gridDimZ: k.grid[2],
                    blockDimX: k.block[0],
                    blockDimY: k.block[1],
                    blockDimZ: k.block[2],
                    sharedMemBytes: k.shared_mem,
                    kernelParams: k.kernel_params(),
                    extra: k.extra_params(),
                    ..kernel_struct!(@rest $with_ctx k named)
                }
            }
        }
    };
    (@func true $k:ident $named:ident) => {
        if $k.as_kernel { std::ptr::null_mut() } else { $named }
    };
    (@func false $k:ident $named:ident) => { $named };
    (@get true $s:ident $f:ident) => { $s.$f };
    (@get false $s:ident $f:ident) => { std::ptr::null_mut() };
    (@rest true $k:ident $named:ident) => {
        Self {
            kern: if $k.as_kernel { $named.cast() } else { std::ptr::null_mut() },
            ctx: $k.ctx.handle(),
            ..Default::default()
        }
    };
    (@rest false $k:ident $named:ident) => { Default::default() };
}

kernel_struct!(CUDA_KERNEL_NODE_PARAMS_v1, false);
kernel_struct!(CUDA_KERNEL_NODE_PARAMS, true);
kernel_struct!(CUDA_KERNEL_NODE_PARAMS_v3, true);

/// A kernel node from the application's parameters: exactly one of
/// `func` / `kern`, a context (the given one, else the current one),
/// non-zero dimensions, arguments by `kernelParams` or `extra` (not both),
/// copied now.
///
/// # Safety
/// The argument arrays follow the `cuLaunchKernel` contract.
pub unsafe fn kernel_from(d: &KernelDesc) -> Result<Kernel, CUresult> {
    let bad = |why: &str| reject(INVALID_VALUE, format_args!("kernel node: {why}"));
    let func = match (d.func.is_null(), d.kern.is_null()) {
        (false, true) => Live::find(&FUNCTIONS, d.func)?.into_arc(),
        (true, false) => {
            let k = Live::find(&FUNCTIONS, d.kern)?.into_arc();
            if k.kind != FuncKind::Kernel {
                return Err(bad("`kern` names a function"));
            }
            k
        }
        _ => return Err(bad("needs exactly one of func and kern")),
    };
    let as_kernel = func.kind == FuncKind::Kernel;
    let ctx = if d.ctx.is_null() {
        check::current()?.0
    } else {
        crate::context::state::lookup(d.ctx)?
    };
    if d.grid.contains(&0) || d.block.contains(&0) {
        return Err(bad("a zero grid or block dimension"));
    }
    let in_ctx = func.in_context(&ctx)?;
    // SAFETY: forwarded contract.
    let args = unsafe { launch::arguments(&in_ctx, d.kernel_params, d.extra)? };
    let spec = KernelSpec {
        func,
        as_kernel,
        ctx,
        grid: d.grid,
        block: d.block,
        shared_mem: d.shared_mem,
        attrs: Vec::new(),
        args,
        from_extra: !d.extra.is_null(),
    };
    Ok(Kernel::with_views(
        spec,
        in_ctx.remote,
        in_ctx.params.clone().unwrap_or_default(),
    ))
}

// ---- memcpy nodes ----

/// A memcpy node: the descriptor as given, its context, and the copy it
/// resolves to.
#[derive(Clone)]
pub struct Copy3D {
    pub desc: Raw<CUDA_MEMCPY3D>,
    pub ctx: Arc<Context>,
    pub plan: Plan3D,
}

/// A memcpy node from a `CUDA_MEMCPY3D`: validated as `cuMemcpy3D`
/// validates (CUDA arrays are not supported); zero-sized copies are
/// refused, as the driver refuses them in graphs.
pub fn copy_from(desc: &CUDA_MEMCPY3D, ctx: Arc<Context>) -> Result<Copy3D, CUresult> {
    let plan = copy2d::plan3d(desc, "memcpy node")?;
    if plan.is_empty() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("memcpy node: zero-sized copy"),
        ));
    }
    Ok(Copy3D {
        desc: Raw(*desc),
        ctx,
        plan,
    })
}

// ---- memset nodes ----

#[derive(Clone)]
pub struct Fill {
    pub dst: u64,
    /// Bytes between rows (the row's width for one row).
    pub pitch: u64,
    pub value: u32,
    pub elem: u32,
    pub width: u64,
    pub height: u64,
    pub ctx: Arc<Context>,
}

/// A memset node: element size 1, 2 or 4, aligned, non-empty, inside its
/// allocation as far as the guest knows.
pub fn fill_from(
    dst: u64,
    pitch: u64,
    value: u32,
    elem: u32,
    width: u64,
    height: u64,
    ctx: Arc<Context>,
) -> Result<Fill, CUresult> {
    if !matches!(elem, 1 | 2 | 4) || width == 0 || height == 0 {
        return Err(reject(
            INVALID_VALUE,
            format_args!("memset node: element size {elem}, {width}x{height}"),
        ));
    }
    let pitch = memory::memset_extent(dst, pitch, elem, width, height, "memset node")?;
    Ok(Fill {
        dst,
        pitch,
        value,
        elem,
        width,
        height,
        ctx,
    })
}

// ---- host nodes ----

#[derive(Clone, Copy)]
pub struct Host {
    pub func: unsafe extern "C" fn(*mut c_void),
    pub user: usize,
    /// `cuLaunchHostFunc_v2`'s synchronization mode (kept, reported back).
    pub sync_mode: u32,
}

pub fn host_from(f: CUhostFn, user: *mut c_void, sync_mode: u32) -> Result<Host, CUresult> {
    let func = f.ok_or_else(|| reject(INVALID_VALUE, format_args!("host node: NULL function")))?;
    Ok(Host {
        func,
        user: user as usize,
        sync_mode,
    })
}

// ---- adding nodes ----

/// Adds `op` to `g` after `deps` and writes the new node's handle.
///
/// # Safety
/// `deps` holds `n` readable handles when `n > 0`.
unsafe fn add(
    out: Out<CUgraphNode>,
    g: &Arc<Graph>,
    deps: *const CUgraphNode,
    n: usize,
    op: Op,
) -> Result<(), CUresult> {
    // SAFETY: forwarded contract.
    let deps = unsafe { node_list(deps, n, "graph node")? };
    let h = g.add(op, &deps)?;
    out.write(args::handle(h));
    Ok(())
}

/// `cuGraphAddKernelNode[_v2]`.
///
/// # Safety
/// As [`add`] and [`kernel_from`].
pub unsafe fn add_kernel_node<P: KernelStruct>(
    out: Out<CUgraphNode>,
    g: Live<Graph>,
    deps: *const CUgraphNode,
    n: usize,
    params: In<P>,
) -> Result<(), CUresult> {
    // SAFETY: forwarded contract.
    let k = unsafe { kernel_from(&params.read().desc())? };
    // SAFETY: forwarded contract.
    unsafe { add(out, &g, deps, n, Op::Kernel(k)) }
}

/// `cuGraphAddMemcpyNode`: `ctx` is the context the copy runs in.
///
/// # Safety
/// As [`add`].
pub unsafe fn add_memcpy_node(
    out: Out<CUgraphNode>,
    g: Live<Graph>,
    deps: *const CUgraphNode,
    n: usize,
    params: In<CUDA_MEMCPY3D>,
    ctx: Live<Context>,
) -> Result<(), CUresult> {
    let c = copy_from(&params.read(), ctx.into_arc())?;
    // SAFETY: forwarded contract.
    unsafe { add(out, &g, deps, n, Op::Memcpy(c)) }
}

/// `cuGraphAddMemsetNode`.
///
/// # Safety
/// As [`add`].
pub unsafe fn add_memset_node(
    out: Out<CUgraphNode>,
    g: Live<Graph>,
    deps: *const CUgraphNode,
    n: usize,
    params: In<CUDA_MEMSET_NODE_PARAMS>,
    ctx: Live<Context>,
) -> Result<(), CUresult> {
    let p = params.read();
    let f = fill_from(
        p.dst,
        p.pitch as u64,
        p.value,
        p.elementSize,
        p.width as u64,
        p.height as u64,
        ctx.into_arc(),
    )?;
    // SAFETY: forwarded contract.
    unsafe { add(out, &g, deps, n, Op::Memset(f)) }
}

/// `cuGraphAddHostNode`.
///
/// # Safety
/// As [`add`].
pub unsafe fn add_host_node(
    out: Out<CUgraphNode>,
    g: Live<Graph>,
    deps: *const CUgraphNode,
    n: usize,
    params: In<CUDA_HOST_NODE_PARAMS>,
) -> Result<(), CUresult> {
    let p = params.read();
    let h = host_from(p.fn_, p.userData, 0)?;
    // SAFETY: forwarded contract.
    unsafe { add(out, &g, deps, n, Op::Host(h)) }
}

/// A child graph node's graph: a copy of `child` (the driver clones), or
/// `child` itself when its ownership moves to the node. Graphs with memory
/// nodes may only move.
fn child_op(child: Arc<Graph>, moved: bool) -> Result<Op, CUresult> {
    if child.capturing.load(std::sync::atomic::Ordering::Acquire) {
        return Err(reject(
            INVALID_VALUE,
            format_args!("child graph node: the graph is being captured into"),
        ));
    }
    if moved {
        if child
            .embedded
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return Err(reject(
                INVALID_VALUE,
                format_args!("child graph node: the graph already belongs to a node"),
            ));
        }
        return Ok(Op::Child(child));
    }
    if child.body().has_mem_nodes() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("child graph node: a graph with memory nodes must be moved, not cloned"),
        ));
    }
    let (copy, _) = child.clone_graph()?;
    super::embed(&copy);
    Ok(Op::Child(copy))
}

/// `cuGraphAddChildGraphNode`: the child is cloned into the node.
///
/// # Safety
/// As [`add`].
pub unsafe fn add_child_graph_node(
    out: Out<CUgraphNode>,
    g: Live<Graph>,
    deps: *const CUgraphNode,
    n: usize,
    child: Live<Graph>,
) -> Result<(), CUresult> {
    if Arc::ptr_eq(&g, &child) {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuGraphAddChildGraphNode: a graph cannot contain itself"),
        ));
    }
    let op = child_op(child.into_arc(), false)?;
    // SAFETY: forwarded contract.
    unsafe { add(out, &g, deps, n, op) }
}

/// `cuGraphAddEmptyNode`.
///
/// # Safety
/// As [`add`].
pub unsafe fn add_empty_node(
    out: Out<CUgraphNode>,
    g: Live<Graph>,
    deps: *const CUgraphNode,
    n: usize,
) -> Result<(), CUresult> {
    // SAFETY: forwarded contract.
    unsafe { add(out, &g, deps, n, Op::Empty) }
}

/// `cuGraphAddEventRecordNode` (`wait` false) and `cuGraphAddEventWaitNode`.
///
/// # Safety
/// As [`add`].
pub unsafe fn add_event_node(
    out: Out<CUgraphNode>,
    g: Live<Graph>,
    deps: *const CUgraphNode,
    n: usize,
    e: Live<Event>,
    wait: bool,
) -> Result<(), CUresult> {
    let e = e.into_arc();
    let op = if wait {
        Op::EventWait(e)
    } else {
        Op::EventRecord(e)
    };
    // SAFETY: forwarded contract.
    unsafe { add(out, &g, deps, n, op) }
}

/// `cuGraphAddMemAllocNode`: the allocation is made now, in the current
/// context (one round trip), and its address written to
/// `nodeParams->dptr`; it is the same at every launch.
///
/// # Safety
/// As [`add`]; `params` points at writable parameters whose `accessDescs`
/// holds `accessDescCount` entries.
pub unsafe fn add_mem_alloc_node(
    out: Out<CUgraphNode>,
    g: Live<Graph>,
    deps: *const CUgraphNode,
    n: usize,
    params: Out<CUDA_MEM_ALLOC_NODE_PARAMS>,
) -> Result<(), CUresult> {
    // SAFETY: forwarded contract.
    let a = unsafe { Alloc::from_params(&params.read())? };
    let ptr = a.mem.ptr;
    // SAFETY: forwarded contract.
    unsafe { add(out, &g, deps, n, Op::MemAlloc(a))? };
    let mut p = params.read();
    p.dptr = ptr;
    params.write(p);
    Ok(())
}

/// `cuGraphAddMemFreeNode`: `dptr` must come from an allocation node, and
/// be freed once, by one graph.
///
/// # Safety
/// As [`add`].
pub unsafe fn add_mem_free_node(
    out: Out<CUgraphNode>,
    g: Live<Graph>,
    deps: *const CUgraphNode,
    n: usize,
    dptr: u64,
) -> Result<(), CUresult> {
    let mem = GraphMem::find(dptr).ok_or_else(|| {
        reject(
            INVALID_VALUE,
            format_args!("cuGraphAddMemFreeNode: {dptr:#x} was not allocated by a graph"),
        )
    })?;
    // SAFETY: forwarded contract.
    unsafe { add(out, &g, deps, n, Op::MemFree(mem)) }
}

// ---- reading and changing a node's parameters ----

/// Runs `f` on node `n`'s op (its graph locked).
pub fn with_op<R>(
    n: &NodeArg,
    f: impl FnOnce(&mut Op) -> Result<R, CUresult>,
) -> Result<R, CUresult> {
    let mut body = n.graph.body();
    let e = body.entry_mut(n.handle).ok_or(INVALID_VALUE)?;
    f(&mut e.op)
}

fn wrong_kind(what: &str) -> CUresult {
    reject(
        INVALID_VALUE,
        format_args!("{what}: the node is of another kind"),
    )
}

/// `cuGraphKernelNodeGetParams[_v2]`.
pub fn kernel_get_params<P: KernelStruct>(n: NodeArg, out: Out<P>) -> Result<(), CUresult> {
    with_op(&n, |op| match op {
        Op::Kernel(k) => {
            out.write(P::from_node(k));
            Ok(())
        }
        _ => Err(wrong_kind("cuGraphKernelNodeGetParams")),
    })
}

/// `cuGraphKernelNodeSetParams[_v2]`.
///
/// # Safety
/// As [`kernel_from`].
pub unsafe fn kernel_set_params<P: KernelStruct>(n: NodeArg, p: In<P>) -> Result<(), CUresult> {
    // SAFETY: forwarded contract.
    let mut k = unsafe { kernel_from(&p.read().desc())? };
    with_op(&n, |op| match op {
        Op::Kernel(old) => {
            // Attributes are not parameters: they stay.
            k.attrs = std::mem::take(&mut old.attrs);
            *op = Op::Kernel(k);
            Ok(())
        }
        _ => Err(wrong_kind("cuGraphKernelNodeSetParams")),
    })
}

// ---- kernel node attributes ----
//
// A kernel node's attributes are launch attributes in the protocol's form
// ([`Kernel::attrs`]); the host's driver gets them at instantiation, so
// reading and changing them is the guest's business.

/// Whether cuda.h makes attribute `id` valid for graph kernel nodes (the
/// "valid for" notes of `CUlaunchAttributeID`): the synchronization policy
/// is for streams only; programmatic serialization, the two events and the
/// shared memory carveout are for launches only.
fn valid_for_nodes(id: CUlaunchAttributeID, what: &str) -> Result<(), CUresult> {
    type Id = CUlaunchAttributeID;
    match id {
        Id::CU_LAUNCH_ATTRIBUTE_SYNCHRONIZATION_POLICY
        | Id::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
        | Id::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_EVENT
        | Id::CU_LAUNCH_ATTRIBUTE_LAUNCH_COMPLETION_EVENT
        | Id::CU_LAUNCH_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT => Err(reject(
            INVALID_VALUE,
            format_args!(
                "{what}: launch attribute {} is not valid for graph nodes",
                id.0
            ),
        )),
        _ => Ok(()),
    }
}

/// The application's form of a kept attribute. Events are never kept by
/// nodes ([`valid_for_nodes`]), so no handle needs translating back.
fn attribute_value(a: &LaunchAttr) -> CUlaunchAttributeValue {
    let no_event = |_| Ok::<CUevent, std::convert::Infallible>(std::ptr::null_mut());
    match a.to_cuda(no_event) {
        Ok(attr) => attr.value,
        Err(never) => match never {},
    }
}

/// `cuGraphKernelNodeSetAttribute`: replaces the node's attribute of that
/// id (validated as a launch's; the host's driver checks the value against
/// the device at instantiation, as the driver itself does).
pub fn kernel_set_attribute(
    n: NodeArg,
    id: CUkernelNodeAttrID,
    value: In<CUkernelNodeAttrValue>,
) -> Result<(), CUresult> {
    const WHAT: &str = "cuGraphKernelNodeSetAttribute";
    valid_for_nodes(id, WHAT)?;
    let a = CUlaunchAttribute {
        id,
        value: value.read(),
        ..Default::default()
    };
    // No event-carrying attribute is valid here, so no event is returned.
    let (wire, _) = launch::wire_attr(&a, WHAT)?;
    with_op(&n, |op| match op {
        Op::Kernel(k) => {
            k.attrs.retain(|kept| kept.tag() != wire.tag());
            if !matches!(wire, LaunchAttr::Ignore {}) {
                k.attrs.push(wire);
            }
            Ok(())
        }
        _ => Err(wrong_kind(WHAT)),
    })
}

/// `cuGraphKernelNodeGetAttribute`: the value set (by a capture's launch
/// or `SetAttribute`), or the attribute's default, zero.
pub fn kernel_get_attribute(
    n: NodeArg,
    id: CUkernelNodeAttrID,
    out: Out<CUkernelNodeAttrValue>,
) -> Result<(), CUresult> {
    const WHAT: &str = "cuGraphKernelNodeGetAttribute";
    valid_for_nodes(id, WHAT)?;
    let value = with_op(&n, |op| match op {
        Op::Kernel(k) => Ok(k
            .attrs
            .iter()
            .find(|a| a.tag() == id.0)
            .map(attribute_value)),
        _ => Err(wrong_kind(WHAT)),
    })?;
    // SAFETY: the value union is plain integers and handles: all zeros is
    // a valid value, every member's default.
    out.write(value.unwrap_or_else(|| unsafe { std::mem::zeroed() }));
    Ok(())
}

/// `cuGraphKernelNodeCopyAttributes`: both kernel nodes of one context.
pub fn kernel_copy_attributes(dst: NodeArg, src: NodeArg) -> Result<(), CUresult> {
    const WHAT: &str = "cuGraphKernelNodeCopyAttributes";
    let (attrs, ctx) = with_op(&src, |op| match op {
        Op::Kernel(k) => Ok((k.attrs.clone(), k.ctx.clone())),
        _ => Err(wrong_kind(WHAT)),
    })?;
    with_op(&dst, |op| match op {
        Op::Kernel(k) if !Arc::ptr_eq(&k.ctx, &ctx) => Err(reject(
            CUresult::CUDA_ERROR_INVALID_CONTEXT,
            format_args!("{WHAT}: the nodes' kernels belong to different contexts"),
        )),
        Op::Kernel(k) => {
            k.attrs = attrs;
            Ok(())
        }
        _ => Err(wrong_kind(WHAT)),
    })
}

pub fn memcpy_get_params(n: NodeArg, out: Out<CUDA_MEMCPY3D>) -> Result<(), CUresult> {
    with_op(&n, |op| match op {
        Op::Memcpy(c) => {
            out.write(c.desc.0);
            Ok(())
        }
        _ => Err(wrong_kind("cuGraphMemcpyNodeGetParams")),
    })
}

/// `cuGraphMemcpyNodeSetParams`: the node keeps its context.
pub fn memcpy_set_params(n: NodeArg, p: In<CUDA_MEMCPY3D>) -> Result<(), CUresult> {
    with_op(&n, |op| match op {
        Op::Memcpy(c) => {
            *c = copy_from(&p.read(), c.ctx.clone())?;
            Ok(())
        }
        _ => Err(wrong_kind("cuGraphMemcpyNodeSetParams")),
    })
}

pub fn memset_get_params(n: NodeArg, out: Out<CUDA_MEMSET_NODE_PARAMS>) -> Result<(), CUresult> {
    with_op(&n, |op| match op {
        Op::Memset(f) => {
            out.write(CUDA_MEMSET_NODE_PARAMS {
                dst: f.dst,
                pitch: f.pitch as usize,
                value: f.value,
                elementSize: f.elem,
                width: f.width as usize,
                height: f.height as usize,
            });
            Ok(())
        }
        _ => Err(wrong_kind("cuGraphMemsetNodeGetParams")),
    })
}

pub fn memset_set_params(n: NodeArg, p: In<CUDA_MEMSET_NODE_PARAMS>) -> Result<(), CUresult> {
    let p = p.read();
    with_op(&n, |op| match op {
        Op::Memset(f) => {
            *f = fill_from(
                p.dst,
                p.pitch as u64,
                p.value,
                p.elementSize,
                p.width as u64,
                p.height as u64,
                f.ctx.clone(),
            )?;
            Ok(())
        }
        _ => Err(wrong_kind("cuGraphMemsetNodeSetParams")),
    })
}

pub fn host_get_params(n: NodeArg, out: Out<CUDA_HOST_NODE_PARAMS>) -> Result<(), CUresult> {
    with_op(&n, |op| match op {
        Op::Host(h) => {
            out.write(CUDA_HOST_NODE_PARAMS {
                fn_: Some(h.func),
                userData: h.user as *mut c_void,
            });
            Ok(())
        }
        _ => Err(wrong_kind("cuGraphHostNodeGetParams")),
    })
}

pub fn host_set_params(n: NodeArg, p: In<CUDA_HOST_NODE_PARAMS>) -> Result<(), CUresult> {
    let p = p.read();
    let h = host_from(p.fn_, p.userData, 0)?;
    with_op(&n, |op| match op {
        Op::Host(old) => {
            *old = h;
            Ok(())
        }
        _ => Err(wrong_kind("cuGraphHostNodeSetParams")),
    })
}

/// `cuGraphEventRecordNodeGetEvent` (`wait` false) and
/// `cuGraphEventWaitNodeGetEvent`.
pub fn event_get(n: NodeArg, out: Out<CUevent>, wait: bool) -> Result<(), CUresult> {
    with_op(&n, |op| match (op, wait) {
        (Op::EventRecord(e), false) | (Op::EventWait(e), true) => {
            out.write(e.handle());
            Ok(())
        }
        _ => Err(wrong_kind("cuGraphEvent*NodeGetEvent")),
    })
}

pub fn event_set(n: NodeArg, e: Live<Event>, wait: bool) -> Result<(), CUresult> {
    with_op(&n, |op| match (op, wait) {
        (Op::EventRecord(old), false) | (Op::EventWait(old), true) => {
            *old = e.into_arc();
            Ok(())
        }
        _ => Err(wrong_kind("cuGraphEvent*NodeSetEvent")),
    })
}

pub fn mem_alloc_get_params(
    n: NodeArg,
    out: Out<CUDA_MEM_ALLOC_NODE_PARAMS>,
) -> Result<(), CUresult> {
    with_op(&n, |op| match op {
        Op::MemAlloc(a) => {
            out.write(a.params());
            Ok(())
        }
        _ => Err(wrong_kind("cuGraphMemAllocNodeGetParams")),
    })
}

pub fn mem_free_get_params(n: NodeArg, out: Out<u64>) -> Result<(), CUresult> {
    with_op(&n, |op| match op {
        Op::MemFree(m) => {
            out.write(m.ptr);
            Ok(())
        }
        _ => Err(wrong_kind("cuGraphMemFreeNodeGetParams")),
    })
}

// ---- the generic forms: CUgraphNodeParams ----

/// An op from a `CUgraphNodeParams` (`ctx_default`: the context nodes
/// without one run in). `alloc_out` receives an allocation's address.
///
/// # Safety
/// The union member `type_` selects is initialised and follows its own
/// API contract.
pub unsafe fn op_from_params(p: &CUgraphNodeParams) -> Result<Op, CUresult> {
    if p.reserved0 != [0; 3] || p.reserved2 != 0 {
        return Err(reject(
            INVALID_VALUE,
            format_args!("CUgraphNodeParams: reserved fields are not zero"),
        ));
    }
    let u = &p.__bindgen_anon_1;
    let ctx_or_current = |c: CUcontext| -> Result<Arc<Context>, CUresult> {
        // SAFETY: a plain handle value.
        let arg = unsafe { vgpu_ffi::from_cuda::<_, CtxArg, CUresult>(c)? };
        arg.or_current()
    };
    // SAFETY (every union read below): the member `type_` selects.
    Ok(match p.type_ {
        CUgraphNodeType::CU_GRAPH_NODE_TYPE_KERNEL => {
            // SAFETY: as above; the arrays follow the launch contract.
            Op::Kernel(unsafe { kernel_from(&u.kernel.desc())? })
        }
        CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEMCPY => {
            // SAFETY: as above.
            let m = unsafe { u.memcpy };
            Op::Memcpy(copy_from(&m.copyParams, ctx_or_current(m.copyCtx)?)?)
        }
        CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEMSET => {
            // SAFETY: as above.
            let m: CUDA_MEMSET_NODE_PARAMS_v2 = unsafe { u.memset };
            Op::Memset(fill_from(
                m.dst,
                m.pitch as u64,
                m.value,
                m.elementSize,
                m.width as u64,
                m.height as u64,
                ctx_or_current(m.ctx)?,
            )?)
        }
        CUgraphNodeType::CU_GRAPH_NODE_TYPE_HOST => {
            // SAFETY: as above.
            let h: CUDA_HOST_NODE_PARAMS_v2 = unsafe { u.host };
            Op::Host(host_from(h.fn_, h.userData, h.syncMode)?)
        }
        CUgraphNodeType::CU_GRAPH_NODE_TYPE_GRAPH => {
            // SAFETY: as above.
            let c = unsafe { u.graph };
            let child = Live::find(&super::GRAPHS, c.graph)?.into_arc();
            let moved = match c.ownership {
                CUgraphChildGraphNodeOwnership::CU_GRAPH_CHILD_GRAPH_OWNERSHIP_CLONE => false,
                CUgraphChildGraphNodeOwnership::CU_GRAPH_CHILD_GRAPH_OWNERSHIP_MOVE => true,
                o => {
                    return Err(reject(
                        INVALID_VALUE,
                        format_args!("child graph node: ownership {}", o.0),
                    ))
                }
            };
            child_op(child, moved)?
        }
        CUgraphNodeType::CU_GRAPH_NODE_TYPE_EMPTY => Op::Empty,
        CUgraphNodeType::CU_GRAPH_NODE_TYPE_EVENT_RECORD => {
            // SAFETY: as above.
            let e = unsafe { u.eventRecord.event };
            Op::EventRecord(event_arg(e)?)
        }
        CUgraphNodeType::CU_GRAPH_NODE_TYPE_WAIT_EVENT => {
            // SAFETY: as above.
            let e = unsafe { u.eventWait.event };
            Op::EventWait(event_arg(e)?)
        }
        CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEM_ALLOC => {
            // SAFETY: as above.
            let v2 = unsafe { u.alloc };
            let v1 = CUDA_MEM_ALLOC_NODE_PARAMS {
                poolProps: v2.poolProps,
                accessDescs: v2.accessDescs,
                accessDescCount: v2.accessDescCount,
                bytesize: v2.bytesize,
                dptr: v2.dptr,
            };
            // SAFETY: accessDescs per the contract.
            Op::MemAlloc(unsafe { Alloc::from_params(&v1)? })
        }
        CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEM_FREE => {
            // SAFETY: as above.
            let dptr = unsafe { u.free.dptr };
            Op::MemFree(GraphMem::find(dptr).ok_or_else(|| {
                reject(
                    INVALID_VALUE,
                    format_args!("free node: {dptr:#x} was not allocated by a graph"),
                )
            })?)
        }
        t => {
            return Err(reject(
                NOT_SUPPORTED,
                format_args!("graph node type {} is not supported by vgpu", t.0),
            ))
        }
    })
}

fn event_arg(e: CUevent) -> Result<Arc<Event>, CUresult> {
    // SAFETY: a plain handle value.
    unsafe { vgpu_ffi::from_cuda::<_, Live<Event>, CUresult>(e) }.map(Live::into_arc)
}

/// `cuGraphAddNode` (no edge data) and `cuGraphAddNode_v2`/`_v3`. An
/// allocation node's address is written back into `nodeParams`.
///
/// # Safety
/// As [`op_from_params`] and [`add`]; `data` is NULL or holds `n` entries.
pub unsafe fn add_node(
    out: Out<CUgraphNode>,
    g: Live<Graph>,
    deps: *const CUgraphNode,
    data: *const CUgraphEdgeData,
    n: usize,
    params: Out<CUgraphNodeParams>,
) -> Result<(), CUresult> {
    // SAFETY: forwarded contract.
    unsafe { super::default_edges(data, n, "cuGraphAddNode")? };
    let p = params.read();
    // SAFETY: forwarded contract.
    let op = unsafe { op_from_params(&p)? };
    let alloc = match &op {
        Op::MemAlloc(a) => Some(a.mem.ptr),
        _ => None,
    };
    // SAFETY: forwarded contract.
    unsafe { add(out, &g, deps, n, op)? };
    if let Some(ptr) = alloc {
        let mut p = params.read();
        p.__bindgen_anon_1.alloc.dptr = ptr;
        params.write(p);
    }
    Ok(())
}

/// `cuGraphAddNode` (12.2: no edge data; it sits before the count, so the
/// export list cannot append it).
///
/// # Safety
/// As [`add_node`].
pub unsafe fn add_node_v1(
    out: Out<CUgraphNode>,
    g: Live<Graph>,
    deps: *const CUgraphNode,
    n: usize,
    params: Out<CUgraphNodeParams>,
) -> Result<(), CUresult> {
    // SAFETY: forwarded contract.
    unsafe { add_node(out, g, deps, std::ptr::null(), n, params) }
}

/// The parameters of an op as a `CUgraphNodeParams`; pointers in it are
/// the node's own copies.
pub fn params_of(op: &Op) -> CUgraphNodeParams {
    // SAFETY: an all-zero CUgraphNodeParams is valid (integers, nullable
    // pointers and options).
    let mut p: CUgraphNodeParams = unsafe { std::mem::zeroed() };
    p.type_ = op.kind();
    let u = &mut p.__bindgen_anon_1;
    match op {
        Op::Kernel(k) => u.kernel = CUDA_KERNEL_NODE_PARAMS_v3::from_node(k),
        Op::Memcpy(c) => {
            u.memcpy.copyCtx = c.ctx.handle();
            u.memcpy.copyParams = c.desc.0;
        }
        Op::Memset(f) => {
            u.memset = CUDA_MEMSET_NODE_PARAMS_v2 {
                dst: f.dst,
                pitch: f.pitch as usize,
                value: f.value,
                elementSize: f.elem,
                width: f.width as usize,
                height: f.height as usize,
                ctx: f.ctx.handle(),
            }
        }
        Op::Host(h) => {
            u.host.fn_ = Some(h.func);
            u.host.userData = h.user as *mut c_void;
            u.host.syncMode = h.sync_mode;
        }
        Op::Child(g) => {
            u.graph.graph = g.handle();
            u.graph.ownership =
                CUgraphChildGraphNodeOwnership::CU_GRAPH_CHILD_GRAPH_OWNERSHIP_CLONE;
        }
        Op::Empty => {}
        Op::EventRecord(e) => u.eventRecord.event = e.handle(),
        Op::EventWait(e) => u.eventWait.event = e.handle(),
        Op::MemAlloc(a) => {
            let v1 = a.params();
            u.alloc.poolProps = v1.poolProps;
            u.alloc.accessDescs = v1.accessDescs;
            u.alloc.accessDescCount = v1.accessDescCount;
            u.alloc.bytesize = v1.bytesize;
            u.alloc.dptr = v1.dptr;
        }
        Op::MemFree(m) => u.free.dptr = m.ptr,
    }
    p
}

pub fn node_get_params(n: NodeArg, out: Out<CUgraphNodeParams>) -> Result<(), CUresult> {
    with_op(&n, |op| {
        out.write(params_of(op));
        Ok(())
    })
}

/// `cuGraphNodeSetParams[_v2]`: same kind only; allocation and free nodes
/// cannot change (the driver's rule), nor can a child node's graph be
/// replaced by one with memory nodes.
///
/// # Safety
/// As [`op_from_params`].
pub unsafe fn node_set_params(n: NodeArg, p: In<CUgraphNodeParams>) -> Result<(), CUresult> {
    let p = p.read();
    let kind = with_op(&n, |op| Ok(op.kind()))?;
    if p.type_ != kind {
        return Err(wrong_kind("cuGraphNodeSetParams"));
    }
    if matches!(
        kind,
        CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEM_ALLOC
            | CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEM_FREE
    ) {
        return Err(reject(
            NOT_SUPPORTED,
            format_args!("cuGraphNodeSetParams: allocation and free nodes cannot change"),
        ));
    }
    // SAFETY: forwarded contract.
    let new = unsafe { op_from_params(&p)? };
    let old = with_op(&n, |op| {
        if let (Op::Kernel(old), Op::Kernel(_)) = (&mut *op, &new) {
            let attrs = std::mem::take(&mut old.attrs);
            *op = new;
            if let Op::Kernel(k) = op {
                k.attrs = attrs;
            }
            return Ok(None);
        }
        Ok(Some(std::mem::replace(op, new)))
    })?;
    // A replaced child graph goes with its node's old parameters.
    if let Some(Op::Child(child)) = old {
        let _ = super::GRAPHS.take(child.raw_handle());
        child.unregister_contents();
    }
    Ok(())
}

/// The application's access descriptors, copied.
///
/// # Safety
/// `p` holds `n` readable entries when `n > 0`.
pub unsafe fn access_list(
    p: *const CUmemAccessDesc,
    n: usize,
) -> Result<Box<[CUmemAccessDesc]>, CUresult> {
    if n == 0 {
        return Ok(Box::new([]));
    }
    if p.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("allocation node: NULL accessDescs"),
        ));
    }
    // SAFETY: n readable entries (contract).
    Ok(unsafe { std::slice::from_raw_parts(p, n) }.into())
}
