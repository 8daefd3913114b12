//! CUDA graphs: the subset of the driver's explicit graph API the host
//! worker builds graphs with (docs/graphs.md) — graphs of kernel, memset,
//! memcpy, event record/wait and empty nodes; instantiation, launch and
//! upload; per-node updates of an executable graph and enabling/disabling
//! its nodes.
//!
//! A `CUgraph` owns its nodes in creation order, each with its
//! dependencies; nodes are never removed (`cuGraphDestroyNode` is not
//! implemented), so a node is its graph and an index. Parameters are
//! validated and copied when a node is added, as the driver does: kernel
//! arguments are packed then, memsets and copies are range-checked then
//! (and again when they run, since memory may be freed in between).
//!
//! Instantiation snapshots the nodes into a `CUgraphExec` together with a
//! topological order; the exec does not depend on its graph afterwards.
//! Work runs when it is enqueued (see [`crate::stream`]), so a launch runs
//! the enabled nodes one after another in that order on the calling thread:
//! every node starts after all its dependencies finished, which is a valid
//! schedule of the graph. A disabled node behaves as an empty node. The
//! first node that fails ends the launch with its error (a kernel fault is
//! sticky for its context, as for a direct launch).
//!
//! Handles are minted by registries; a stale or foreign graph, node or
//! exec is `CUDA_ERROR_INVALID_VALUE`, the code the driver documents for
//! these calls.

use crate::context::{self, Context, MaybeCtx};
use crate::event::{self, Event};
use crate::ffi::{insert_new, Live};
use crate::launch::{self, Attrs, Dims, Target};
use crate::memory::{self, Association, Run};
use crate::module::Function;
use crate::stream::Stream;
use cuda_types::cuda::{
    CUDA_KERNEL_NODE_PARAMS_v1, CUfunction, CUgraph, CUgraphExec, CUgraphInstantiateResult,
    CUgraphNode, CUkernelNodeAttrID, CUkernelNodeAttrValue, CUlaunchAttribute, CUmemorytype,
    CUresult, CUDA_GRAPH_INSTANTIATE_PARAMS, CUDA_KERNEL_NODE_PARAMS, CUDA_MEMCPY3D,
    CUDA_MEMSET_NODE_PARAMS,
};
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::{c_char, c_uint, c_ulonglong};
use std::sync::Arc;
use vgpu_ffi::{FromCuda, In, Mint, Out, Shared};

const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;

/// `CUgraphInstantiate_flags`: AUTO_FREE_ON_LAUNCH, UPLOAD, DEVICE_LAUNCH,
/// USE_NODE_PRIORITY.
const AUTO_FREE_ON_LAUNCH: u64 = 1;
const UPLOAD: u64 = 2;
const DEVICE_LAUNCH: u64 = 4;
const INSTANTIATE_FLAGS: u64 = 1 | 2 | 4 | 8;

pub struct Graph {
    handle: u64,
    nodes: Mutex<Vec<Node>>,
}

struct Node {
    handle: u64,
    work: Work,
    /// Indices of the nodes it depends on.
    deps: Vec<usize>,
}

/// A node of a graph, named by its handle.
#[derive(Clone)]
pub struct NodeRef {
    graph: Arc<Graph>,
    index: usize,
}

/// What a node does when it runs.
#[derive(Clone)]
enum Work {
    Kernel(KernelWork),
    Memset(MemsetWork),
    Memcpy(CopyWork),
    EventRecord(Arc<Event>),
    /// Nothing to keep: the event was validated, and what it waits for has
    /// always completed (work runs when it is enqueued).
    EventWait,
    Empty,
}

#[derive(Clone)]
struct KernelWork {
    func: Arc<Function>,
    dims: Dims,
    /// The packed argument buffer, copied when the parameters were set.
    args: Vec<u8>,
    /// The arguments came through `extra`, which a cooperative kernel may
    /// not use.
    via_extra: bool,
    attrs: Attrs,
}

#[derive(Clone)]
struct MemsetWork {
    p: CUDA_MEMSET_NODE_PARAMS,
    ctx: Arc<Context>,
    /// What the destination was when the node was set, which an update
    /// must keep (even if the memory has been freed since).
    dst: Option<Association>,
}

#[derive(Clone)]
struct CopyWork {
    p: Copy3d,
    ctx: Arc<Context>,
    /// Each side's memory type and association when the node was set.
    sides: [Side; 2],
}

/// A copy operand's memory type and what its address belonged to.
type Side = (CUmemorytype, Option<Association>);

/// Host memory has no association; a device or unified address has the
/// one of what it points into (none for plain host memory).
fn side(kind: CUmemorytype, device: u64) -> Side {
    let assoc = (kind != CUmemorytype::CU_MEMORYTYPE_HOST)
        .then(|| memory::association(device))
        .flatten();
    (kind, assoc)
}

/// A copy's descriptor. Its host pointers are the application's, which
/// vouches for them whenever the node runs (as for any async copy).
#[derive(Clone, Copy)]
struct Copy3d(CUDA_MEMCPY3D);

// SAFETY: the descriptor's pointers are addresses the copy checks or the
// application vouches for; nothing here dereferences them outside a copy,
// which runs on whichever thread launches the graph.
unsafe impl Send for Copy3d {}
// SAFETY: as above; the descriptor is never mutated through a shared
// reference.
unsafe impl Sync for Copy3d {}

pub struct Exec {
    body: Mutex<ExecBody>,
}

struct ExecBody {
    /// The nodes at instantiation, by their graph index.
    nodes: Vec<ExecNode>,
    /// Indices in an order where every node follows its dependencies.
    order: Vec<usize>,
    /// Node handle of the graph → index.
    by_handle: HashMap<u64, usize>,
}

struct ExecNode {
    work: Work,
    enabled: bool,
}

static GRAPHS: Shared<Arc<Graph>, CUresult> = Shared::new("graph", INVALID_VALUE, Mint::Pointer);
static NODES: Shared<NodeRef, CUresult> = Shared::new("graph node", INVALID_VALUE, Mint::Pointer);
static EXECS: Shared<Arc<Exec>, CUresult> = Shared::new("graph exec", INVALID_VALUE, Mint::Pointer);

impl FromCuda<CUgraph, CUresult> for Live<Graph> {
    unsafe fn from_cuda(g: CUgraph) -> Result<Self, CUresult> {
        GRAPHS.get(g as u64).map(Live)
    }
}

impl FromCuda<CUgraphNode, CUresult> for NodeRef {
    unsafe fn from_cuda(n: CUgraphNode) -> Result<Self, CUresult> {
        NODES.get(n as u64)
    }
}

impl FromCuda<CUgraphExec, CUresult> for Live<Exec> {
    unsafe fn from_cuda(e: CUgraphExec) -> Result<Self, CUresult> {
        EXECS.get(e as u64).map(Live)
    }
}

/// Kernel node parameters in either layout: `CUDA_KERNEL_NODE_PARAMS_v1`
/// (no `kern`/`ctx`) or the current one, so one body serves both entry
/// points of each kernel-node call.
pub struct KernelParams(CUDA_KERNEL_NODE_PARAMS);

impl FromCuda<*const CUDA_KERNEL_NODE_PARAMS_v1, CUresult> for KernelParams {
    unsafe fn from_cuda(p: *const CUDA_KERNEL_NODE_PARAMS_v1) -> Result<Self, CUresult> {
        if p.is_null() {
            return Err(INVALID_VALUE);
        }
        // SAFETY: non-null and readable per the API.
        let v = unsafe { p.read_unaligned() };
        Ok(KernelParams(CUDA_KERNEL_NODE_PARAMS {
            func: v.func,
            gridDimX: v.gridDimX,
            gridDimY: v.gridDimY,
            gridDimZ: v.gridDimZ,
            blockDimX: v.blockDimX,
            blockDimY: v.blockDimY,
            blockDimZ: v.blockDimZ,
            sharedMemBytes: v.sharedMemBytes,
            kernelParams: v.kernelParams,
            extra: v.extra,
            ..Default::default()
        }))
    }
}

impl FromCuda<*const CUDA_KERNEL_NODE_PARAMS, CUresult> for KernelParams {
    unsafe fn from_cuda(p: *const CUDA_KERNEL_NODE_PARAMS) -> Result<Self, CUresult> {
        if p.is_null() {
            return Err(INVALID_VALUE);
        }
        // SAFETY: non-null and readable per the API.
        Ok(KernelParams(unsafe { p.read_unaligned() }))
    }
}

/// The function a kernel node launches: `func`, else `kern` in `ctx` (the
/// current context when NULL).
///
/// # Safety
/// Only handles are read; none is dereferenced.
unsafe fn node_function(p: &CUDA_KERNEL_NODE_PARAMS) -> Result<Arc<Function>, CUresult> {
    let resolve = |f: CUfunction| {
        // SAFETY: a handle is looked up, never dereferenced.
        unsafe { <Live<Function> as FromCuda<_, CUresult>>::from_cuda(f) }.map(|l| l.0)
    };
    if !p.func.is_null() {
        return resolve(p.func);
    }
    if p.kern.is_null() {
        return Err(INVALID_VALUE);
    }
    // A CUkernel is accepted wherever a CUfunction is, in the current
    // context; for another context, that one is made current meanwhile.
    let as_func = p.kern as CUfunction;
    if p.ctx.is_null() {
        return resolve(as_func);
    }
    // SAFETY: as above.
    let ctx = unsafe { <Live<Context> as FromCuda<_, CUresult>>::from_cuda(p.ctx) }?;
    context::ctx_push_current(ctx)?;
    let r = resolve(as_func);
    let _ = context::ctx_pop_current(None);
    r
}

/// Checks kernel node parameters and packs the arguments.
///
/// # Safety
/// `kernelParams` / `extra` as for `cuLaunchKernel`.
unsafe fn kernel_work(p: &CUDA_KERNEL_NODE_PARAMS, attrs: Attrs) -> Result<KernelWork, CUresult> {
    // SAFETY: per the caller.
    let func = unsafe { node_function(p) }?;
    let dims = Dims {
        grid: [p.gridDimX, p.gridDimY, p.gridDimZ],
        block: [p.blockDimX, p.blockDimY, p.blockDimZ],
        shared: p.sharedMemBytes,
    };
    launch::check_dims(&func, &dims)?;
    // SAFETY: per the caller.
    let args = unsafe { launch::pack_params(&func, p.kernelParams, p.extra) }?;
    let work = KernelWork {
        func,
        dims,
        args,
        via_extra: !p.extra.is_null(),
        attrs,
    };
    check_kernel(&work)?;
    Ok(work)
}

/// What a kernel node's attributes and arguments must agree on.
fn check_kernel(k: &KernelWork) -> Result<(), CUresult> {
    if k.attrs.cooperative {
        // The driver refuses `extra` for a cooperative kernel.
        if k.via_extra {
            return Err(INVALID_VALUE);
        }
        launch::check_cooperative(&k.func, &k.dims)?;
    }
    Ok(())
}

fn memset_work(p: CUDA_MEMSET_NODE_PARAMS, ctx: MaybeCtx) -> Result<MemsetWork, CUresult> {
    let ctx = ctx.or_current()?;
    memory::memset_node(
        p.dst,
        p.pitch,
        p.value,
        p.elementSize,
        p.width,
        p.height,
        Run::CheckOnly,
    )?;
    Ok(MemsetWork {
        p,
        ctx,
        dst: memory::association(p.dst),
    })
}

fn copy_work(p: CUDA_MEMCPY3D, ctx: MaybeCtx) -> Result<CopyWork, CUresult> {
    let ctx = ctx.or_current()?;
    memory::copy_3d_desc(&p, Run::CheckOnly, false)?;
    Ok(CopyWork {
        p: Copy3d(p),
        ctx,
        sides: [
            side(p.srcMemoryType, p.srcDevice),
            side(p.dstMemoryType, p.dstDevice),
        ],
    })
}

fn run(work: &Work) -> Result<(), CUresult> {
    match work {
        Work::Kernel(k) => {
            // The node keeps its function; its module may be gone.
            if !k.func.is_loaded() {
                return Err(INVALID_VALUE);
            }
            check_kernel(k)?;
            launch::run(&k.func, k.dims, &k.args, k.attrs.cooperative)
        }
        Work::Memset(m) => {
            launch::sticky_error(m.ctx.id)?;
            let p = &m.p;
            memory::memset_node(
                p.dst,
                p.pitch,
                p.value,
                p.elementSize,
                p.width,
                p.height,
                Run::Yes,
            )
        }
        Work::Memcpy(c) => {
            launch::sticky_error(c.ctx.id)?;
            memory::copy_3d_desc(&c.p.0, Run::Yes, false)
        }
        Work::EventRecord(e) => {
            event::record_now(e);
            Ok(())
        }
        Work::EventWait | Work::Empty => Ok(()),
    }
}

// ---- graphs and nodes ---------------------------------------------------------

pub fn graph_create(out: Out<CUgraph>, flags: c_uint) -> Result<(), CUresult> {
    if flags != 0 {
        return Err(INVALID_VALUE);
    }
    let g = insert_new(&GRAPHS, |handle| Graph {
        handle,
        nodes: Mutex::new(Vec::new()),
    });
    out.write(g.handle as CUgraph);
    Ok(())
}

/// Destroys a graph and its nodes; executable graphs made from it stay.
pub fn graph_destroy(g: CUgraph) -> Result<(), CUresult> {
    let g = GRAPHS.take(g as u64)?;
    NODES.take_unless(|_, n| !Arc::ptr_eq(&n.graph, &g));
    Ok(())
}

/// The dependency list of a new node: nodes of `g`, no duplicates.
///
/// # Safety
/// `deps` holds `n` handles when non-null.
unsafe fn dependencies(
    g: &Arc<Graph>,
    deps: *const CUgraphNode,
    n: usize,
) -> Result<Vec<usize>, CUresult> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if deps.is_null() {
        return Err(INVALID_VALUE);
    }
    let mut seen = HashSet::with_capacity(n);
    (0..n)
        .map(|i| {
            // SAFETY: `n` readable handles per the caller.
            let h = unsafe { deps.add(i).read_unaligned() };
            let node = NODES.get(h as u64)?;
            if !Arc::ptr_eq(&node.graph, g) || !seen.insert(node.index) {
                return Err(INVALID_VALUE);
            }
            Ok(node.index)
        })
        .collect()
}

/// Adds a node doing `work` after `deps`.
///
/// # Safety
/// As for [`dependencies`].
unsafe fn add(
    out: Out<CUgraphNode>,
    g: Live<Graph>,
    deps: *const CUgraphNode,
    n: usize,
    work: Work,
) -> Result<(), CUresult> {
    let g = g.0;
    // SAFETY: per the caller.
    let deps = unsafe { dependencies(&g, deps, n) }?;
    let mut nodes = g.nodes.lock();
    let index = nodes.len();
    let handle = NODES.insert(NodeRef {
        graph: g.clone(),
        index,
    });
    nodes.push(Node { handle, work, deps });
    out.write(handle as CUgraphNode);
    Ok(())
}

/// `cuGraphAddKernelNode` and `_v2`.
pub unsafe fn add_kernel_node(
    out: Out<CUgraphNode>,
    g: Live<Graph>,
    deps: *const CUgraphNode,
    n: usize,
    params: KernelParams,
) -> Result<(), CUresult> {
    // SAFETY: the application's parameters, per the API.
    let work = unsafe { kernel_work(&params.0, Attrs::default()) }?;
    // SAFETY: per the API.
    unsafe { add(out, g, deps, n, Work::Kernel(work)) }
}

pub unsafe fn add_memset_node(
    out: Out<CUgraphNode>,
    g: Live<Graph>,
    deps: *const CUgraphNode,
    n: usize,
    params: In<CUDA_MEMSET_NODE_PARAMS>,
    ctx: MaybeCtx,
) -> Result<(), CUresult> {
    let work = memset_work(params.read(), ctx)?;
    // SAFETY: per the API.
    unsafe { add(out, g, deps, n, Work::Memset(work)) }
}

pub unsafe fn add_memcpy_node(
    out: Out<CUgraphNode>,
    g: Live<Graph>,
    deps: *const CUgraphNode,
    n: usize,
    params: In<CUDA_MEMCPY3D>,
    ctx: MaybeCtx,
) -> Result<(), CUresult> {
    let work = copy_work(params.read(), ctx)?;
    // SAFETY: per the API.
    unsafe { add(out, g, deps, n, Work::Memcpy(work)) }
}

pub unsafe fn add_event_record_node(
    out: Out<CUgraphNode>,
    g: Live<Graph>,
    deps: *const CUgraphNode,
    n: usize,
    e: Live<Event>,
) -> Result<(), CUresult> {
    // SAFETY: per the API.
    unsafe { add(out, g, deps, n, Work::EventRecord(e.0)) }
}

pub unsafe fn add_event_wait_node(
    out: Out<CUgraphNode>,
    g: Live<Graph>,
    deps: *const CUgraphNode,
    n: usize,
    _event: Live<Event>,
) -> Result<(), CUresult> {
    // The event was validated by its conversion (see `Work::EventWait`).
    // SAFETY: per the API.
    unsafe { add(out, g, deps, n, Work::EventWait) }
}

pub unsafe fn add_empty_node(
    out: Out<CUgraphNode>,
    g: Live<Graph>,
    deps: *const CUgraphNode,
    n: usize,
) -> Result<(), CUresult> {
    // SAFETY: per the API.
    unsafe { add(out, g, deps, n, Work::Empty) }
}

/// `cuGraphKernelNodeSetAttribute`: validated as for a graph node (see
/// [`crate::launch`] for what each attribute does here).
pub fn kernel_node_set_attribute(
    node: NodeRef,
    attr: CUkernelNodeAttrID,
    value: In<CUkernelNodeAttrValue>,
) -> Result<(), CUresult> {
    let mut nodes = node.graph.nodes.lock();
    let Work::Kernel(k) = &mut nodes[node.index].work else {
        return Err(INVALID_VALUE);
    };
    let a = CUlaunchAttribute {
        id: attr,
        value: value.read(),
        ..Default::default()
    };
    let mut attrs = k.attrs.clone();
    attrs.apply(&a, Target::Node)?;
    let updated = KernelWork { attrs, ..k.clone() };
    check_kernel(&updated)?;
    *k = updated;
    Ok(())
}

// ---- instantiation ------------------------------------------------------------

/// The nodes in dependency order (lowest index first among the ready
/// ones). Dependencies always name earlier nodes, so there is no cycle.
fn order(nodes: &[Node]) -> Vec<usize> {
    let mut waiting: Vec<usize> = nodes.iter().map(|n| n.deps.len()).collect();
    let mut dependents = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        for &d in &n.deps {
            dependents[d].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..nodes.len()).filter(|&i| waiting[i] == 0).collect();
    let mut out = Vec::with_capacity(nodes.len());
    while let Some(i) = ready.pop_first() {
        out.push(i);
        for &d in &dependents[i] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.insert(d);
            }
        }
    }
    out
}

fn instantiate(g: &Graph, flags: u64) -> Result<CUgraphExec, CUresult> {
    if flags & !INSTANTIATE_FLAGS != 0
        || (flags & DEVICE_LAUNCH != 0 && flags & AUTO_FREE_ON_LAUNCH != 0)
    {
        return Err(INVALID_VALUE);
    }
    let nodes = g.nodes.lock();
    let body = ExecBody {
        order: order(&nodes),
        by_handle: nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.handle, i))
            .collect(),
        nodes: nodes
            .iter()
            .map(|n| ExecNode {
                work: n.work.clone(),
                enabled: true,
            })
            .collect(),
    };
    let e = Arc::new(Exec {
        body: Mutex::new(body),
    });
    Ok(EXECS.insert(e) as CUgraphExec)
}

/// `cuGraphInstantiateWithFlags`. `UPLOAD` needs the stream only
/// `cuGraphInstantiateWithParams` has, so it is refused here, as by the
/// driver.
pub fn instantiate_with_flags(
    out: Out<CUgraphExec>,
    g: Live<Graph>,
    flags: c_ulonglong,
) -> Result<(), CUresult> {
    if flags & UPLOAD != 0 {
        return Err(INVALID_VALUE);
    }
    out.write(instantiate(&g, flags)?);
    Ok(())
}

/// `cuGraphInstantiate` and `_v2`: no flags; on success there is no error
/// node to report and the log is an empty string.
pub unsafe fn instantiate_logged(
    out: Out<CUgraphExec>,
    g: Live<Graph>,
    _error_node: *mut CUgraphNode,
    log: *mut c_char,
    log_size: usize,
) -> Result<(), CUresult> {
    out.write(instantiate(&g, 0)?);
    if !log.is_null() && log_size > 0 {
        // SAFETY: the application's buffer of `log_size` bytes.
        unsafe { log.write(0) };
    }
    Ok(())
}

/// `cuGraphInstantiateWithParams`: the flags, an upload to the given
/// stream with `UPLOAD`, and the result in the parameters.
pub unsafe fn instantiate_with_params(
    out: Out<CUgraphExec>,
    g: Live<Graph>,
    params: Out<CUDA_GRAPH_INSTANTIATE_PARAMS>,
) -> Result<(), CUresult> {
    let mut p = params.read();
    let r = (|| {
        if p.flags & UPLOAD != 0 {
            // SAFETY: a stream handle is only looked up.
            unsafe { <Stream as FromCuda<_, CUresult>>::from_cuda(p.hUploadStream) }?;
        }
        instantiate(&g, p.flags)
    })();
    p.hErrNode_out = std::ptr::null_mut();
    p.result_out = if r.is_ok() {
        CUgraphInstantiateResult::CUDA_GRAPH_INSTANTIATE_SUCCESS
    } else {
        CUgraphInstantiateResult::CUDA_GRAPH_INSTANTIATE_ERROR
    };
    params.write(p);
    out.write(r?);
    Ok(())
}

pub fn exec_destroy(e: CUgraphExec) -> Result<(), CUresult> {
    EXECS.take(e as u64).map(drop)
}

/// `cuGraphLaunch`: runs the enabled nodes in dependency order, now.
pub fn launch(e: Live<Exec>, _stream: Stream) -> Result<(), CUresult> {
    let body = e.body.lock();
    for &i in &body.order {
        let n = &body.nodes[i];
        if n.enabled {
            run(&n.work)?;
        }
    }
    Ok(())
}

/// `cuGraphUpload`: nothing to prepare ahead of a launch here.
pub fn upload(_e: Live<Exec>, _stream: Stream) -> Result<(), CUresult> {
    Ok(())
}

// ---- executable graph updates -------------------------------------------------

/// The exec's node for a node handle of its graph, with the lock held.
fn exec_node<R>(
    e: &Exec,
    node: CUgraphNode,
    f: impl FnOnce(&mut ExecNode) -> Result<R, CUresult>,
) -> Result<R, CUresult> {
    let mut body = e.body.lock();
    let i = *body.by_handle.get(&(node as u64)).ok_or(INVALID_VALUE)?;
    f(&mut body.nodes[i])
}

/// `cuGraphExecKernelNodeSetParams` and `_v2`: everything may change but
/// the function's context; the node keeps its attributes.
pub unsafe fn exec_kernel_node_set_params(
    e: Live<Exec>,
    node: CUgraphNode,
    params: KernelParams,
) -> Result<(), CUresult> {
    exec_node(&e, node, |n| {
        let Work::Kernel(old) = &n.work else {
            return Err(INVALID_VALUE);
        };
        // SAFETY: the application's parameters, per the API.
        let new = unsafe { kernel_work(&params.0, old.attrs.clone()) }?;
        if new.func.module.ctx != old.func.module.ctx {
            return Err(INVALID_VALUE);
        }
        n.work = Work::Kernel(new);
        Ok(())
    })
}

/// `cuGraphExecMemsetNodeSetParams`: the value and address may change
/// (to the same kind of memory of the same context); a 2D memset keeps
/// its shape, a 1D one its height; nothing may become empty.
pub fn exec_memset_node_set_params(
    e: Live<Exec>,
    node: CUgraphNode,
    params: In<CUDA_MEMSET_NODE_PARAMS>,
    ctx: MaybeCtx,
) -> Result<(), CUresult> {
    let p = params.read();
    exec_node(&e, node, |n| {
        let Work::Memset(old) = &n.work else {
            return Err(INVALID_VALUE);
        };
        let o = &old.p;
        let same_shape = (p.width, p.height, p.elementSize, p.pitch)
            == (o.width, o.height, o.elementSize, o.pitch);
        if p.width == 0 || p.height == 0 || p.height != o.height || (o.height > 1 && !same_shape) {
            return Err(INVALID_VALUE);
        }
        let new = memset_work(p, ctx)?;
        if new.dst != old.dst {
            return Err(INVALID_VALUE);
        }
        n.work = Work::Memset(new);
        Ok(())
    })
}

/// `cuGraphExecMemcpyNodeSetParams`: 1D copies only, before and after,
/// with each side in the same kind of memory of the same context.
pub fn exec_memcpy_node_set_params(
    e: Live<Exec>,
    node: CUgraphNode,
    params: In<CUDA_MEMCPY3D>,
    ctx: MaybeCtx,
) -> Result<(), CUresult> {
    let p = params.read();
    let one_d = |c: &CUDA_MEMCPY3D| c.Height <= 1 && c.Depth <= 1 && c.WidthInBytes > 0;
    exec_node(&e, node, |n| {
        let Work::Memcpy(old) = &n.work else {
            return Err(INVALID_VALUE);
        };
        if !one_d(&old.p.0) || !one_d(&p) {
            return Err(INVALID_VALUE);
        }
        let new = copy_work(p, ctx)?;
        if new.sides != old.sides {
            return Err(INVALID_VALUE);
        }
        n.work = Work::Memcpy(new);
        Ok(())
    })
}

pub fn exec_event_record_node_set_event(
    e: Live<Exec>,
    node: CUgraphNode,
    ev: Live<Event>,
) -> Result<(), CUresult> {
    exec_node(&e, node, |n| match n.work {
        Work::EventRecord(_) => {
            n.work = Work::EventRecord(ev.0);
            Ok(())
        }
        _ => Err(INVALID_VALUE),
    })
}

/// The event is validated by its conversion; a wait keeps nothing of it.
pub fn exec_event_wait_node_set_event(
    e: Live<Exec>,
    node: CUgraphNode,
    _event: Live<Event>,
) -> Result<(), CUresult> {
    exec_node(&e, node, |n| match n.work {
        Work::EventWait => Ok(()),
        _ => Err(INVALID_VALUE),
    })
}

/// Kernel, memset and memcpy nodes may be disabled (the driver's list).
fn can_disable(w: &Work) -> bool {
    matches!(w, Work::Kernel(_) | Work::Memset(_) | Work::Memcpy(_))
}

pub fn node_set_enabled(e: Live<Exec>, node: CUgraphNode, enabled: c_uint) -> Result<(), CUresult> {
    exec_node(&e, node, |n| {
        if !can_disable(&n.work) {
            return Err(INVALID_VALUE);
        }
        n.enabled = enabled != 0;
        Ok(())
    })
}

pub fn node_get_enabled(
    e: Live<Exec>,
    node: CUgraphNode,
    out: Out<c_uint>,
) -> Result<(), CUresult> {
    exec_node(&e, node, |n| {
        if !can_disable(&n.work) {
            return Err(INVALID_VALUE);
        }
        out.write(c_uint::from(n.enabled));
        Ok(())
    })
}
