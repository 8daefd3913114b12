//! Executable graphs (`CUgraphExec`): instantiation, launch, upload,
//! update, per-node setters and enable flags (docs/graphs.md).
//!
//! **Instantiation** takes a snapshot of the graph (the exec keeps its own
//! copy of every node's parameters, so later changes to the graph do not
//! reach it), inlines child graphs — a child's nodes take the child node's
//! incoming edges at its roots, and an empty join node after its leaves
//! takes the outgoing ones — sorts the result topologically and cuts it
//! into *phases*: a device node's phase is the largest of its device
//! predecessors' phases and its guest-run predecessors' phases plus one; a
//! guest-run node's phase is the largest of its predecessors' phases. Each
//! phase's device nodes travel once, as one host graph ([`host`]).
//!
//! **Launch**: a graph without guest-run nodes is one phase and one host
//! launch, whatever its size. Otherwise the phases run in order; after a
//! phase's host graph the launch waits for the stream, then runs the
//! phase's guest nodes (host functions, copies touching guest memory) in
//! topological order, on the launching thread. Such a launch returns once
//! its guest nodes ran, so a host node that waits for work the application
//! submits only after the launch would deadlock (documented limitation).
//!
//! **Update** (`cuGraphExecUpdate`, `cuGraphExec*NodeSetParams`) is decided
//! here with the driver's rules (same node count, node kinds and
//! dependencies paired by creation order; per-kind limits on what may
//! change), and only the device nodes whose parameters changed travel.
//!
//! `CUDA_GRAPH_INSTANTIATE_FLAG_DEVICE_LAUNCH` is refused with
//! `CUDA_ERROR_NOT_SUPPORTED`: a device-side `cudaGraphLaunch` needs the
//! executable graph on the GPU, which vgpu does not put it. Auto-free,
//! upload and node priority are accepted (priority: nothing to order).

use super::host::HostGraph;
use super::mem::GraphMem;
use super::node::{self, Op};
use super::{Body, Graph, NodeArg, INVALID_VALUE, NOT_SUPPORTED};
use crate::args::{self, Live};
use crate::capture;
use crate::check::{self, reject};
use crate::context::state::Context;
use crate::copy2d::DeviceCopy;
use crate::event::Event;
use crate::memory::Route;
use crate::stream::{self, Null, StreamArg};
use cuda_types::cuda::{
    CUgraphExec, CUgraphExecUpdateResult, CUgraphExecUpdateResultInfo, CUgraphInstantiateResult,
    CUgraphNode, CUgraphNodeParams, CUgraphNodeType, CUresult, CUDA_GRAPH_INSTANTIATE_PARAMS,
    CUDA_HOST_NODE_PARAMS, CUDA_MEMCPY3D, CUDA_MEMSET_NODE_PARAMS,
};
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::ffi::{c_char, c_uint, c_ulonglong, c_void};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use vgpu_ffi::{FromCuda, In, Mint, Out, Shared};
use vgpu_transport::codec::Bytes;
use vgpu_transport::proto::GraphNode;

const AUTO_FREE_ON_LAUNCH: u64 = 1;
const UPLOAD: u64 = 2;
const DEVICE_LAUNCH: u64 = 4;
const USE_NODE_PRIORITY: u64 = 8;

pub struct Exec {
    handle: u64,
    pub id: u32,
    /// The graph instantiated: nodes of it (and only those present then)
    /// name the exec's nodes in the setters.
    graph: Weak<Graph>,
    flags: u64,
    /// Counted in the graph's `mem_execs` (it had memory nodes).
    holds_mem: bool,
    state: Mutex<State>,
}

/// Executable graphs until `cuGraphExecDestroy`.
pub(crate) static EXECS: Shared<Arc<Exec>, CUresult> =
    Shared::new("executable graph", INVALID_VALUE, Mint::Pointer);

impl FromCuda<CUgraphExec, CUresult> for Live<Exec> {
    unsafe fn from_cuda(h: CUgraphExec) -> Result<Self, CUresult> {
        Live::find(&EXECS, h)
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        if self.holds_mem {
            if let Some(g) = self.graph.upgrade() {
                let mut body = g.body();
                body.mem_execs = body.mem_execs.saturating_sub(1);
            }
        }
    }
}

/// The graph as instantiated: its nodes (handles of the original graph)
/// and edges, child graphs nested; parameters live in the flat list.
struct Snap {
    nodes: Vec<SnapNode>,
    /// `(from, to)` indices into `nodes`.
    edges: Vec<(usize, usize)>,
}

struct SnapNode {
    handle: u64,
    kind: CUgraphNodeType,
    child: Option<Snap>,
    /// The node's index in the flat list (a child's: its join node).
    flat: usize,
}

struct Flat {
    op: Op,
    enabled: bool,
    place: Place,
}

#[derive(Clone, Copy)]
enum Place {
    /// Node `pos` of phase `phase`'s host graph.
    Device {
        phase: usize,
        pos: u32,
    },
    Guest,
}

struct Phase {
    host: Option<HostGraph>,
    /// Flat indices, in topological order.
    guest: Vec<usize>,
}

struct State {
    snap: Snap,
    flat: Vec<Flat>,
    phases: Vec<Phase>,
}

// ---- instantiation ----

/// Why an instantiation failed, for `cuGraphInstantiateWithParams`.
struct Failure {
    code: CUresult,
    result: CUgraphInstantiateResult,
    node: u64,
    why: String,
}

impl Failure {
    fn plain(code: CUresult) -> Failure {
        Failure {
            code,
            result: CUgraphInstantiateResult::CUDA_GRAPH_INSTANTIATE_ERROR,
            node: 0,
            why: format!("CUresult {}", code.0),
        }
    }
}

impl From<CUresult> for Failure {
    fn from(code: CUresult) -> Failure {
        Failure::plain(code)
    }
}

/// Snapshots `body` into `flat` (child graphs inlined), returning the
/// snapshot and, per node, (entry flat indices, exit flat index).
fn build(body: &Body, flat: &mut Vec<Flat>, edges: &mut Vec<(usize, usize)>) -> Snap {
    let mut nodes = Vec::with_capacity(body.nodes.len());
    let mut io: Vec<(Vec<usize>, usize)> = Vec::with_capacity(body.nodes.len());
    for e in &body.nodes {
        match &e.op {
            Op::Child(g) => {
                let cbody = g.body();
                let child = build(&cbody, flat, edges);
                let join = push(flat, Op::Empty);
                let mut has_in = vec![false; child.nodes.len()];
                let mut has_out = vec![false; child.nodes.len()];
                for &(a, b) in &child.edges {
                    has_out[a] = true;
                    has_in[b] = true;
                }
                let mut entry = Vec::new();
                for (k, n) in child.nodes.iter().enumerate() {
                    if !has_in[k] {
                        entry.extend(entry_of(n));
                    }
                    if !has_out[k] {
                        edges.push((n.flat, join));
                    }
                }
                if entry.is_empty() {
                    entry.push(join);
                }
                io.push((entry, join));
                nodes.push(SnapNode {
                    handle: e.handle,
                    kind: e.op.kind(),
                    child: Some(child),
                    flat: join,
                });
            }
            op => {
                let i = push(flat, op.clone());
                io.push((vec![i], i));
                nodes.push(SnapNode {
                    handle: e.handle,
                    kind: op.kind(),
                    child: None,
                    flat: i,
                });
            }
        }
    }
    let mut snap_edges = Vec::with_capacity(body.edges.len());
    for &(a, b) in &body.edges {
        let (Some(a), Some(b)) = (body.find(a), body.find(b)) else {
            continue;
        };
        snap_edges.push((a, b));
        let x = io[a].1;
        for &y in &io[b].0 {
            edges.push((x, y));
        }
    }
    Snap {
        nodes,
        edges: snap_edges,
    }
}

/// Where the work of a snapshot node starts: itself, or a child graph's
/// roots (recursively).
fn entry_of(n: &SnapNode) -> Vec<usize> {
    let Some(child) = &n.child else {
        return vec![n.flat];
    };
    let mut has_in = vec![false; child.nodes.len()];
    for &(_, b) in &child.edges {
        has_in[b] = true;
    }
    let mut out = Vec::new();
    for (k, c) in child.nodes.iter().enumerate() {
        if !has_in[k] {
            out.extend(entry_of(c));
        }
    }
    if out.is_empty() {
        out.push(n.flat);
    }
    out
}

fn push(flat: &mut Vec<Flat>, op: Op) -> usize {
    flat.push(Flat {
        op,
        enabled: true,
        place: Place::Guest,
    });
    flat.len() - 1
}

/// Kahn's algorithm over the flat graph, lowest index first: creation
/// order among independent nodes. `None` for a cycle.
fn topological(n: usize, edges: &[(usize, usize)]) -> Option<(Vec<usize>, Vec<Vec<usize>>)> {
    let mut indegree = vec![0usize; n];
    let mut succ = vec![Vec::new(); n];
    let mut preds = vec![Vec::new(); n];
    for &(a, b) in edges {
        indegree[b] += 1;
        succ[a].push(b);
        preds[b].push(a);
    }
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &j in &succ[i] {
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.insert(j);
            }
        }
    }
    (order.len() == n).then_some((order, preds))
}

/// Each node's phase (see the module doc).
pub fn phases(order: &[usize], preds: &[Vec<usize>], guest: &[bool]) -> Vec<usize> {
    let mut phase = vec![0usize; guest.len()];
    for &i in order {
        phase[i] = preds[i]
            .iter()
            .map(|&p| phase[p] + usize::from(guest[p] && !guest[i]))
            .max()
            .unwrap_or(0);
    }
    phase
}

/// What the host runs for a device node (guest-run kinds never get here;
/// memory nodes are empty on the host).
fn device_op(op: &Op) -> GraphNode {
    match op {
        Op::Kernel(k) => GraphNode::Kernel {
            func: k.remote,
            grid: k.grid,
            block: k.block,
            shared_mem: k.shared_mem,
            params: Bytes(k.args().to_vec()),
            attrs: k.attrs.clone(),
        },
        Op::Memset(f) => GraphNode::Memset {
            dst: f.dst,
            pitch: f.pitch,
            value: f.value,
            elem_size: f.elem,
            width: f.width,
            height: f.height,
        },
        Op::Memcpy(c) => match c.plan.device() {
            Some(d) => GraphNode::Memcpy {
                dst: d.dst,
                dst_pitch: d.dst_pitch,
                dst_height: d.dst_height,
                src: d.src,
                src_pitch: d.src_pitch,
                src_height: d.src_height,
                width: d.width,
                height: d.height,
                depth: d.depth,
            },
            None => GraphNode::Empty {},
        },
        Op::EventRecord(e) => GraphNode::EventRecord { event: e.remote },
        Op::EventWait(e) => GraphNode::EventWait { event: e.remote },
        Op::Host(_) | Op::Child(_) | Op::Empty | Op::MemAlloc(_) | Op::MemFree(_) => {
            GraphNode::Empty {}
        }
    }
}

/// The context an exec's host graphs live in: the first node that names
/// one, else the current context.
fn exec_context(flat: &[Flat]) -> Result<Arc<Context>, CUresult> {
    for f in flat {
        let ctx = match &f.op {
            Op::Kernel(k) => &k.ctx,
            Op::Memset(m) => &m.ctx,
            Op::Memcpy(c) => &c.ctx,
            Op::EventRecord(e) | Op::EventWait(e) => &e.ctx,
            _ => continue,
        };
        return Ok(ctx.clone());
    }
    Ok(check::current()?.0)
}

fn instantiate_graph(g: &Arc<Graph>, flags: u64) -> Result<Arc<Exec>, Failure> {
    let bad_flags = |why: &str, code| Failure {
        code,
        result: CUgraphInstantiateResult::CUDA_GRAPH_INSTANTIATE_ERROR,
        node: 0,
        why: why.to_string(),
    };
    if flags & !(AUTO_FREE_ON_LAUNCH | UPLOAD | DEVICE_LAUNCH | USE_NODE_PRIORITY) != 0 {
        return Err(bad_flags("unknown instantiation flags", INVALID_VALUE));
    }
    if flags & DEVICE_LAUNCH != 0 {
        if flags & AUTO_FREE_ON_LAUNCH != 0 {
            return Err(bad_flags(
                "DEVICE_LAUNCH cannot be combined with AUTO_FREE_ON_LAUNCH",
                INVALID_VALUE,
            ));
        }
        return Err(bad_flags(
            "CUDA_GRAPH_INSTANTIATE_FLAG_DEVICE_LAUNCH: device-side graph launch is not supported \
             by vgpu (the executable graph does not live on the GPU)",
            NOT_SUPPORTED,
        ));
    }
    if g.capturing.load(Ordering::Acquire) {
        return Err(bad_flags(
            "the graph is still being captured into",
            INVALID_VALUE,
        ));
    }
    let mut flat = Vec::new();
    let mut edges = Vec::new();
    let (snap, holds_mem) = {
        let mut body = g.body();
        let holds_mem = body.has_mem_nodes();
        if holds_mem && body.mem_execs > 0 {
            return Err(bad_flags(
                "a graph with memory nodes may have one executable graph at a time",
                INVALID_VALUE,
            ));
        }
        let snap = build(&body, &mut flat, &mut edges);
        if holds_mem {
            body.mem_execs += 1;
        }
        (snap, holds_mem)
    };
    // From here on a failure must give the memory-exec count back.
    let undo = |f: Failure| {
        if holds_mem {
            let mut body = g.body();
            body.mem_execs = body.mem_execs.saturating_sub(1);
        }
        f
    };
    let (order, preds) = topological(flat.len(), &edges).ok_or_else(|| {
        undo(Failure {
            code: INVALID_VALUE,
            result: CUgraphInstantiateResult::CUDA_GRAPH_INSTANTIATE_INVALID_STRUCTURE,
            node: snap.nodes.first().map_or(0, |n| n.handle),
            why: "the graph has a cycle".into(),
        })
    })?;
    let guest: Vec<bool> = flat.iter().map(|f| f.op.runs_in_guest()).collect();
    let phase = phases(&order, &preds, &guest);
    let count = phase.iter().copied().max().map_or(0, |m| m + 1);
    let ctx = exec_context(&flat).map_err(|e| undo(e.into()))?;
    let remote = ctx.remote().map_err(|e| undo(e.into()))?;
    let mut device_lists: Vec<Vec<usize>> = vec![Vec::new(); count];
    let mut guest_lists: Vec<Vec<usize>> = vec![Vec::new(); count];
    for &i in &order {
        if guest[i] {
            guest_lists[phase[i]].push(i);
        } else {
            let pos = device_lists[phase[i]].len() as u32;
            device_lists[phase[i]].push(i);
            flat[i].place = Place::Device {
                phase: phase[i],
                pos,
            };
        }
    }
    let mut phases = Vec::with_capacity(count);
    for (k, (device, guest_nodes)) in device_lists.into_iter().zip(guest_lists).enumerate() {
        // A phase of nothing but empty nodes orders nothing on the device:
        // no host graph, no message.
        let idle = device
            .iter()
            .all(|&i| device_op(&flat[i].op) == GraphNode::Empty {});
        let host = if idle {
            None
        } else {
            let pos = |i: usize| match flat[i].place {
                Place::Device { pos, .. } => pos,
                Place::Guest => unreachable!("device nodes have a position"),
            };
            let phase_edges: Vec<(u32, u32)> = edges
                .iter()
                .filter(|&&(a, b)| !guest[a] && !guest[b] && phase[a] == k && phase[b] == k)
                .map(|&(a, b)| (pos(a), pos(b)))
                .collect();
            let ops = device.iter().map(|&i| device_op(&flat[i].op)).collect();
            Some(
                HostGraph::instantiate(remote, ops, &phase_edges, flags)
                    .map_err(|e| undo(e.into()))?,
            )
        };
        phases.push(Phase {
            host,
            guest: guest_nodes,
        });
    }
    let exec = args::register(&EXECS, |handle| Exec {
        handle,
        id: super::next_id(),
        graph: Arc::downgrade(g),
        flags: flags & !UPLOAD,
        holds_mem,
        state: Mutex::new(State { snap, flat, phases }),
    });
    Ok(exec)
}

/// `cuGraphInstantiate` / `_v2` (the 11.x signature): flags 0; a failure
/// names a node (when one is at fault) and writes why into the log
/// buffer.
///
/// # Safety
/// `log` is NULL or holds `size` writable bytes.
pub unsafe fn instantiate_v1(
    out: Out<CUgraphExec>,
    g: Live<Graph>,
    err_node: Option<Out<CUgraphNode>>,
    log: *mut c_char,
    size: usize,
) -> Result<(), CUresult> {
    match instantiate_graph(&g, 0) {
        Ok(e) => {
            out.write(e.handle());
            if let Some(n) = err_node {
                n.write(std::ptr::null_mut());
            }
            Ok(())
        }
        Err(f) => {
            if let Some(n) = err_node {
                n.write(args::handle(f.node));
            }
            if let Some(buf) = std::ptr::NonNull::new(log) {
                // SAFETY: `size` writable bytes (contract).
                unsafe { vgpu_ffi::convert::copy_truncated(buf, size, f.why.as_bytes()) };
            }
            Err(reject(
                f.code,
                format_args!("cuGraphInstantiate: {}", f.why),
            ))
        }
    }
}

/// `cuGraphInstantiateWithFlags`: `UPLOAD` needs a stream, so only the
/// `WithParams` form takes it.
pub fn instantiate_with_flags(
    out: Out<CUgraphExec>,
    g: Live<Graph>,
    flags: c_ulonglong,
) -> Result<(), CUresult> {
    if flags & UPLOAD != 0 {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuGraphInstantiateWithFlags: UPLOAD needs cuGraphInstantiateWithParams"),
        ));
    }
    let e = instantiate_graph(&g, flags).map_err(|f| {
        reject(
            f.code,
            format_args!("cuGraphInstantiateWithFlags: {}", f.why),
        )
    })?;
    out.write(e.handle());
    Ok(())
}

/// `cuGraphInstantiateWithParams[_ptsz]`: result and error node reported
/// in the parameters; `UPLOAD` uploads into `hUploadStream`.
pub fn instantiate_with_params(
    out: Out<CUgraphExec>,
    g: Live<Graph>,
    params: Out<CUDA_GRAPH_INSTANTIATE_PARAMS>,
    null: Null,
) -> Result<(), CUresult> {
    let mut p = params.read();
    let result = instantiate_graph(&g, p.flags).and_then(|e| {
        if p.flags & UPLOAD != 0 {
            let s = StreamArg::resolve(p.hUploadStream)?;
            upload_exec(&e, &s, null).map_err(|code| {
                let _ = EXECS.take(e.handle);
                Failure::plain(code)
            })?;
        }
        Ok(e)
    });
    match result {
        Ok(e) => {
            p.result_out = CUgraphInstantiateResult::CUDA_GRAPH_INSTANTIATE_SUCCESS;
            p.hErrNode_out = std::ptr::null_mut();
            params.write(p);
            out.write(e.handle());
            Ok(())
        }
        Err(f) => {
            p.result_out = f.result;
            p.hErrNode_out = args::handle(f.node);
            params.write(p);
            Err(reject(
                f.code,
                format_args!("cuGraphInstantiateWithParams: {}", f.why),
            ))
        }
    }
}

impl Exec {
    pub fn handle(&self) -> CUgraphExec {
        args::handle(self.handle)
    }
}

pub fn get_flags(e: Live<Exec>, out: Out<u64>) -> Result<(), CUresult> {
    out.write(e.flags);
    Ok(())
}

pub fn get_id(e: Live<Exec>, out: Out<c_uint>) -> Result<(), CUresult> {
    out.write(e.id);
    Ok(())
}

/// `cuGraphExecDestroy`: an exec still running on the host is released
/// there once it completes.
pub fn destroy(h: CUgraphExec) -> Result<(), CUresult> {
    EXECS.take(h as u64).map(drop)
}

// ---- launch ----

fn upload_exec(e: &Exec, s: &StreamArg, null: Null) -> Result<(), CUresult> {
    let t = stream::target(s, null)?;
    if capture::check(&t)?.is_some() {
        return Err(capture::refuse_in_capture(&t, "cuGraphUpload"));
    }
    let st = e.state.lock();
    for p in &st.phases {
        if let Some(h) = &p.host {
            h.upload(t.stream)?;
        }
    }
    Ok(())
}

/// `cuGraphUpload[_ptsz]`.
pub fn upload(e: Live<Exec>, s: StreamArg, null: Null) -> Result<(), CUresult> {
    upload_exec(&e, &s, null)
}

/// `cuGraphLaunch[_ptsz]` (see the module doc). In a capture, the launch
/// becomes a child graph node holding the executable graph's nodes.
pub fn launch(e: Live<Exec>, s: StreamArg, null: Null) -> Result<(), CUresult> {
    let t = stream::target(&s, null)?;
    if let Some(sink) = capture::check(&t)? {
        let child = e.as_graph()?;
        return sink.add(Op::Child(child));
    }
    let st = e.state.lock();
    let allocs: Vec<&Arc<GraphMem>> = st
        .flat
        .iter()
        .filter_map(|f| match &f.op {
            Op::MemAlloc(a) => Some(&a.mem),
            _ => None,
        })
        .collect();
    if e.flags & AUTO_FREE_ON_LAUNCH == 0
        && allocs.iter().any(|m| m.unfreed.load(Ordering::Acquire))
    {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuGraphLaunch: an allocation of the previous launch was not freed"),
        ));
    }
    for p in &st.phases {
        if let Some(h) = &p.host {
            h.launch(t.stream)?;
        }
        if !p.guest.is_empty() {
            stream::wait(&t)?;
            for &i in &p.guest {
                run_guest(&st.flat[i])?;
            }
        }
    }
    // What stays allocated after this launch: allocations without a free
    // node in the same graph; a free node frees whatever it names.
    let freed: Vec<u64> = st
        .flat
        .iter()
        .filter_map(|f| match &f.op {
            Op::MemFree(m) => Some(m.ptr),
            _ => None,
        })
        .collect();
    for m in allocs {
        if !freed.contains(&m.ptr) {
            m.unfreed.store(true, Ordering::Release);
        }
    }
    for ptr in freed {
        super::mem::free_outside(ptr);
    }
    Ok(())
}

/// Runs a guest node on the calling thread (after its phase's device work).
fn run_guest(f: &Flat) -> Result<(), CUresult> {
    match &f.op {
        Op::Host(h) => {
            // SAFETY: the application's host function with its own data,
            // called as the driver calls it (once per launch, in order).
            unsafe { (h.func)(h.user as *mut c_void) };
            Ok(())
        }
        Op::Memcpy(c) if f.enabled => {
            let route = Route {
                ctx: c.ctx.remote()?,
                stream: 0,
                asynchronous: false,
                capture: None,
            };
            // SAFETY: the guest addresses of the node's descriptor, valid
            // when the graph runs (the API contract).
            unsafe { c.plan.run(&route, "graph memcpy node") }
        }
        _ => Ok(()),
    }
}

impl Exec {
    /// The executable graph's current nodes as a new child graph (a
    /// captured `cuGraphLaunch`); graphs with memory nodes cannot be
    /// nested this way.
    fn as_graph(&self) -> Result<Arc<Graph>, CUresult> {
        let st = self.state.lock();
        if st
            .flat
            .iter()
            .any(|f| matches!(f.op, Op::MemAlloc(_) | Op::MemFree(_)))
        {
            return Err(reject(
                CUresult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,
                format_args!("cuGraphLaunch in a capture: the graph has memory nodes"),
            ));
        }
        let g = Graph::create();
        super::embed(&g);
        let mut handles = Vec::with_capacity(st.flat.len());
        {
            let mut body = g.body();
            for f in &st.flat {
                let op = if f.enabled { f.op.clone() } else { Op::Empty };
                handles.push(g.add_locked(&mut body, op, &[])?);
            }
            let (_, preds) =
                topological(st.flat.len(), &flat_edges(&st)).expect("instantiated acyclic");
            for (b, ps) in preds.iter().enumerate() {
                for &a in ps {
                    body.edges.push((handles[a], handles[b]));
                }
            }
        }
        Ok(g)
    }
}

/// The flat graph's edges, rebuilt from the snapshot.
fn flat_edges(st: &State) -> Vec<(usize, usize)> {
    fn walk(s: &Snap, edges: &mut Vec<(usize, usize)>) {
        for n in &s.nodes {
            if let Some(c) = &n.child {
                walk(c, edges);
                let mut has_out = vec![false; c.nodes.len()];
                for &(a, _) in &c.edges {
                    has_out[a] = true;
                }
                for (k, cn) in c.nodes.iter().enumerate() {
                    if !has_out[k] {
                        edges.push((cn.flat, n.flat));
                    }
                }
            }
        }
        for &(a, b) in &s.edges {
            for y in entry_of(&s.nodes[b]) {
                edges.push((s.nodes[a].flat, y));
            }
        }
    }
    let mut edges = Vec::new();
    walk(&st.snap, &mut edges);
    edges
}

// ---- update ----

/// A refused update: the result code and the nodes it names.
struct Refusal {
    result: CUgraphExecUpdateResult,
    node: u64,
    from: u64,
}

fn refuse(result: CUgraphExecUpdateResult, node: u64) -> Refusal {
    Refusal {
        result,
        node,
        from: 0,
    }
}

/// Whether `new` may replace `old` in an executable graph (the driver's
/// per-kind rules, cuGraphExecUpdate).
fn compatible(old: &Op, new: &Op) -> Result<(), CUgraphExecUpdateResult> {
    use CUgraphExecUpdateResult as R;
    match (old, new) {
        (Op::Kernel(a), Op::Kernel(b)) => {
            if !Arc::ptr_eq(&a.ctx, &b.ctx) {
                return Err(R::CU_GRAPH_EXEC_UPDATE_ERROR_UNSUPPORTED_FUNCTION_CHANGE);
            }
            if a.cooperative() != b.cooperative() {
                return Err(R::CU_GRAPH_EXEC_UPDATE_ERROR_PARAMETERS_CHANGED);
            }
            // The host's graph keeps the attributes it was instantiated
            // with: other ones cannot take effect by an update.
            if a.attrs != b.attrs {
                return Err(R::CU_GRAPH_EXEC_UPDATE_ERROR_ATTRIBUTES_CHANGED);
            }
            Ok(())
        }
        (Op::Memset(a), Op::Memset(b)) => {
            let two_d = a.height > 1 || b.height > 1;
            let same_shape =
                (a.width, a.height, a.elem, a.pitch) == (b.width, b.height, b.elem, b.pitch);
            if !Arc::ptr_eq(&a.ctx, &b.ctx)
                || device_of(a.dst) != device_of(b.dst)
                || (two_d && !same_shape)
            {
                return Err(R::CU_GRAPH_EXEC_UPDATE_ERROR_PARAMETERS_CHANGED);
            }
            Ok(())
        }
        (Op::Memcpy(a), Op::Memcpy(b)) => {
            let (x, y) = (&a.desc.0, &b.desc.0);
            let same_types =
                x.srcMemoryType == y.srcMemoryType && x.dstMemoryType == y.dstMemoryType;
            let (da, db) = (a.plan.device(), b.plan.device());
            let same_place = da.is_some() == db.is_some();
            // The host updates a device copy with the driver's
            // cuGraphExecMemcpyNodeSetParams, which takes 1D copies only.
            let flat = |d: &DeviceCopy| d.height == 1 && d.depth == 1;
            let reshaped = match (da, db) {
                (Some(x), Some(y)) => x != y && !(flat(&x) && flat(&y)),
                _ => false,
            };
            if !Arc::ptr_eq(&a.ctx, &b.ctx) || !same_types || !same_place || reshaped {
                return Err(R::CU_GRAPH_EXEC_UPDATE_ERROR_PARAMETERS_CHANGED);
            }
            Ok(())
        }
        (Op::Host(_), Op::Host(_))
        | (Op::Empty, Op::Empty)
        | (Op::EventWait(_), Op::EventWait(_)) => Ok(()),
        (Op::EventRecord(a), Op::EventRecord(b)) => {
            if Arc::ptr_eq(&a.ctx, &b.ctx) {
                Ok(())
            } else {
                Err(R::CU_GRAPH_EXEC_UPDATE_ERROR_PARAMETERS_CHANGED)
            }
        }
        (Op::MemAlloc(a), Op::MemAlloc(b)) if Arc::ptr_eq(&a.mem, &b.mem) => Ok(()),
        (Op::MemFree(a), Op::MemFree(b)) if Arc::ptr_eq(a, b) => Ok(()),
        (Op::MemAlloc(_), Op::MemAlloc(_)) | (Op::MemFree(_), Op::MemFree(_)) => {
            Err(R::CU_GRAPH_EXEC_UPDATE_ERROR_NOT_SUPPORTED)
        }
        _ => Err(R::CU_GRAPH_EXEC_UPDATE_ERROR_NODE_TYPE_CHANGED),
    }
}

fn device_of(ptr: u64) -> Option<i32> {
    crate::devmem::find(ptr).map(|r| r.device)
}

/// Pairs `body` with the snapshot `snap` node by node (creation order) and
/// collects the new parameters of every node, by flat index.
fn pair(
    snap: &Snap,
    st_flat: &[Flat],
    body: &Body,
    out: &mut Vec<(usize, Op)>,
) -> Result<(), Refusal> {
    use CUgraphExecUpdateResult as R;
    if body.nodes.len() != snap.nodes.len() {
        return Err(refuse(R::CU_GRAPH_EXEC_UPDATE_ERROR_TOPOLOGY_CHANGED, 0));
    }
    for (s, e) in snap.nodes.iter().zip(&body.nodes) {
        if s.kind != e.op.kind() {
            return Err(refuse(
                R::CU_GRAPH_EXEC_UPDATE_ERROR_NODE_TYPE_CHANGED,
                e.handle,
            ));
        }
    }
    let new_preds = body.preds();
    let mut old_preds = vec![Vec::new(); snap.nodes.len()];
    for &(a, b) in &snap.edges {
        old_preds[b].push(a);
    }
    for (i, e) in body.nodes.iter().enumerate() {
        let (mut o, mut n) = (old_preds[i].clone(), new_preds[i].clone());
        if o.len() != n.len() {
            return Err(refuse(
                R::CU_GRAPH_EXEC_UPDATE_ERROR_TOPOLOGY_CHANGED,
                e.handle,
            ));
        }
        o.sort_unstable();
        n.sort_unstable();
        if let Some(k) = (0..n.len()).find(|&k| o[k] != n[k]) {
            return Err(Refusal {
                result: R::CU_GRAPH_EXEC_UPDATE_ERROR_TOPOLOGY_CHANGED,
                node: e.handle,
                from: body.nodes[n[k]].handle,
            });
        }
    }
    for (s, e) in snap.nodes.iter().zip(&body.nodes) {
        match (&s.child, &e.op) {
            (Some(child), Op::Child(g)) => pair(child, st_flat, &g.body(), out)?,
            (None, op) => {
                compatible(&st_flat[s.flat].op, op).map_err(|r| refuse(r, e.handle))?;
                out.push((s.flat, op.clone()));
            }
            _ => {
                return Err(refuse(
                    R::CU_GRAPH_EXEC_UPDATE_ERROR_NODE_TYPE_CHANGED,
                    e.handle,
                ))
            }
        }
    }
    Ok(())
}

impl State {
    /// Installs new parameters; device nodes whose host form changed are
    /// sent, per phase, as one update.
    fn apply(&mut self, changes: Vec<(usize, Op)>) -> Result<(), CUresult> {
        let mut per_phase: Vec<Vec<(u32, GraphNode)>> = vec![Vec::new(); self.phases.len()];
        for (i, op) in changes {
            if let Place::Device { phase, pos } = self.flat[i].place {
                let new = device_op(&op);
                if new != device_op(&self.flat[i].op) {
                    per_phase[phase].push((pos, new));
                }
            }
            self.flat[i].op = op;
        }
        for (p, updates) in self.phases.iter_mut().zip(per_phase) {
            if let (Some(h), false) = (p.host.as_mut(), updates.is_empty()) {
                h.set_nodes(updates)?;
            }
        }
        Ok(())
    }
}

fn update(e: &Exec, g: &Graph) -> Result<(), Refusal> {
    let mut st = e.state.lock();
    let mut changes = Vec::new();
    {
        let body = g.body();
        pair(&st.snap, &st.flat, &body, &mut changes)?;
    }
    st.apply(changes)
        .map_err(|_| refuse(CUgraphExecUpdateResult::CU_GRAPH_EXEC_UPDATE_ERROR, 0))
}

const UPDATE_FAILURE: CUresult = CUresult::CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE;

/// `cuGraphExecUpdate_v2`.
pub fn update_v2(
    e: Live<Exec>,
    g: Live<Graph>,
    info: Out<CUgraphExecUpdateResultInfo>,
) -> Result<(), CUresult> {
    let r = update(&e, &g);
    let (result, node, from) = match &r {
        Ok(()) => (CUgraphExecUpdateResult::CU_GRAPH_EXEC_UPDATE_SUCCESS, 0, 0),
        Err(f) => (f.result, f.node, f.from),
    };
    info.write(CUgraphExecUpdateResultInfo {
        result,
        errorNode: args::handle(node),
        errorFromNode: args::handle(from),
    });
    r.map_err(|f| {
        reject(
            UPDATE_FAILURE,
            format_args!("cuGraphExecUpdate: result {}", f.result.0),
        )
    })
}

/// `cuGraphExecUpdate` (the 11.x signature: error node and result).
pub fn update_v1(
    e: Live<Exec>,
    g: Live<Graph>,
    err_node: Option<Out<CUgraphNode>>,
    result: Out<CUgraphExecUpdateResult>,
) -> Result<(), CUresult> {
    let r = update(&e, &g);
    let (code, node) = match &r {
        Ok(()) => (CUgraphExecUpdateResult::CU_GRAPH_EXEC_UPDATE_SUCCESS, 0),
        Err(f) => (f.result, f.node),
    };
    result.write(code);
    if let Some(n) = err_node {
        n.write(args::handle(node));
    }
    r.map_err(|f| {
        reject(
            UPDATE_FAILURE,
            format_args!("cuGraphExecUpdate: result {}", f.result.0),
        )
    })
}

// ---- per-node setters ----

/// The snapshot node `n` names: a node of the graph `e` was instantiated
/// from, present then.
fn snap_node<'a>(e: &Exec, st: &'a State, n: &NodeArg) -> Result<&'a SnapNode, CUresult> {
    let ours = e.graph.as_ptr() == Arc::as_ptr(&n.graph);
    st.snap
        .nodes
        .iter()
        .find(|s| ours && s.handle == n.handle)
        .ok_or_else(|| {
            reject(
                INVALID_VALUE,
                format_args!(
                    "executable graph: {:p} is not a node it was instantiated with",
                    n.raw()
                ),
            )
        })
}

/// Replaces node `n`'s parameters in `e` by `new`, under the update rules.
fn set_node(e: &Exec, n: &NodeArg, new: Op, what: &str) -> Result<(), CUresult> {
    let mut st = e.state.lock();
    let s = snap_node(e, &st, n)?;
    if s.child.is_some() || s.kind != new.kind() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("{what}: the node is of another kind"),
        ));
    }
    let i = s.flat;
    compatible(&st.flat[i].op, &new).map_err(|r| {
        reject(
            INVALID_VALUE,
            format_args!(
                "{what}: change not allowed in an executable graph ({})",
                r.0
            ),
        )
    })?;
    st.apply(vec![(i, new)])
}

/// `cuGraphExecKernelNodeSetParams[_v2]`.
///
/// # Safety
/// As [`node::kernel_from`].
pub unsafe fn kernel_set_params<P: node::KernelStruct>(
    e: Live<Exec>,
    n: NodeArg,
    p: In<P>,
) -> Result<(), CUresult> {
    // SAFETY: forwarded contract.
    let mut k = unsafe { node::kernel_from(&p.read().desc())? };
    if let Some(Op::Kernel(old)) = current_op(&e, &n) {
        k.attrs = old.attrs;
    }
    set_node(&e, &n, Op::Kernel(k), "cuGraphExecKernelNodeSetParams")
}

fn current_op(e: &Exec, n: &NodeArg) -> Option<Op> {
    let st = e.state.lock();
    let s = snap_node(e, &st, n).ok()?;
    Some(st.flat[s.flat].op.clone())
}

fn node_ctx(e: &Exec, n: &NodeArg) -> Option<Arc<Context>> {
    match current_op(e, n)? {
        Op::Memcpy(c) => Some(c.ctx),
        Op::Memset(f) => Some(f.ctx),
        _ => None,
    }
}

/// `cuGraphExecMemcpyNodeSetParams`.
pub fn memcpy_set_params(
    e: Live<Exec>,
    n: NodeArg,
    p: In<CUDA_MEMCPY3D>,
    ctx: Live<Context>,
) -> Result<(), CUresult> {
    let c = node::copy_from(&p.read(), ctx.into_arc())?;
    set_node(&e, &n, Op::Memcpy(c), "cuGraphExecMemcpyNodeSetParams")
}

/// `cuGraphExecMemsetNodeSetParams`.
pub fn memset_set_params(
    e: Live<Exec>,
    n: NodeArg,
    p: In<CUDA_MEMSET_NODE_PARAMS>,
    ctx: Live<Context>,
) -> Result<(), CUresult> {
    let p = p.read();
    let f = node::fill_from(
        p.dst,
        p.pitch as u64,
        p.value,
        p.elementSize,
        p.width as u64,
        p.height as u64,
        ctx.into_arc(),
    )?;
    set_node(&e, &n, Op::Memset(f), "cuGraphExecMemsetNodeSetParams")
}

/// `cuGraphExecHostNodeSetParams`.
pub fn host_set_params(
    e: Live<Exec>,
    n: NodeArg,
    p: In<CUDA_HOST_NODE_PARAMS>,
) -> Result<(), CUresult> {
    let p = p.read();
    let h = node::host_from(p.fn_, p.userData, 0)?;
    set_node(&e, &n, Op::Host(h), "cuGraphExecHostNodeSetParams")
}

/// `cuGraphExecEventRecordNodeSetEvent` (`wait` false) and
/// `cuGraphExecEventWaitNodeSetEvent`.
pub fn event_set(e: Live<Exec>, n: NodeArg, ev: Live<Event>, wait: bool) -> Result<(), CUresult> {
    let ev = ev.into_arc();
    let op = if wait {
        Op::EventWait(ev)
    } else {
        Op::EventRecord(ev)
    };
    set_node(&e, &n, op, "cuGraphExecEvent*NodeSetEvent")
}

/// `cuGraphExecChildGraphNodeSetParams`: `child` must match the node's
/// graph node for node; its parameters replace the inlined nodes'.
pub fn child_set_params(e: Live<Exec>, n: NodeArg, child: Live<Graph>) -> Result<(), CUresult> {
    let mut st = e.state.lock();
    let s = snap_node(&e, &st, &n)?;
    let Some(snap) = &s.child else {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuGraphExecChildGraphNodeSetParams: not a child graph node"),
        ));
    };
    let mut changes = Vec::new();
    pair(snap, &st.flat, &child.body(), &mut changes).map_err(|r| {
        reject(
            INVALID_VALUE,
            format_args!(
                "cuGraphExecChildGraphNodeSetParams: refused ({})",
                r.result.0
            ),
        )
    })?;
    st.apply(changes)
}

/// `cuGraphExecNodeSetParams`: the generic form of the setters above.
///
/// # Safety
/// As [`node::op_from_params`].
pub unsafe fn node_set_params(
    e: Live<Exec>,
    n: NodeArg,
    p: In<CUgraphNodeParams>,
) -> Result<(), CUresult> {
    let p = p.read();
    match p.type_ {
        CUgraphNodeType::CU_GRAPH_NODE_TYPE_GRAPH => {
            // SAFETY: the member `type_` selects.
            let g = unsafe { p.__bindgen_anon_1.graph.graph };
            // SAFETY: a plain handle value.
            let g = unsafe { vgpu_ffi::from_cuda::<_, Live<Graph>, CUresult>(g)? };
            child_set_params(e, n, g)
        }
        CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEM_ALLOC
        | CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEM_FREE => Err(reject(
            NOT_SUPPORTED,
            format_args!("cuGraphExecNodeSetParams: allocation and free nodes cannot change"),
        )),
        _ => {
            // SAFETY: forwarded contract.
            let mut op = unsafe { node::op_from_params(&p)? };
            // A memcpy or memset without a context keeps the node's.
            match (&mut op, node_ctx(&e, &n)) {
                (Op::Memcpy(c), Some(ctx)) if p_ctx_is_null(&p) => c.ctx = ctx,
                (Op::Memset(f), Some(ctx)) if p_ctx_is_null(&p) => f.ctx = ctx,
                _ => {}
            }
            if let (Op::Kernel(k), Some(Op::Kernel(old))) = (&mut op, current_op(&e, &n)) {
                k.attrs = old.attrs;
            }
            set_node(&e, &n, op, "cuGraphExecNodeSetParams")
        }
    }
}

fn p_ctx_is_null(p: &CUgraphNodeParams) -> bool {
    // SAFETY: only read for the memcpy and memset members `type_` selects.
    unsafe {
        match p.type_ {
            CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEMCPY => {
                p.__bindgen_anon_1.memcpy.copyCtx.is_null()
            }
            CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEMSET => p.__bindgen_anon_1.memset.ctx.is_null(),
            _ => false,
        }
    }
}

/// `cuGraphNodeSetEnabled`: kernel, memset and memcpy nodes only.
pub fn set_enabled(e: Live<Exec>, n: NodeArg, on: c_uint) -> Result<(), CUresult> {
    let mut st = e.state.lock();
    let s = snap_node(&e, &st, &n)?;
    if s.child.is_some() || !enable_kind(s.kind) {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuGraphNodeSetEnabled: only kernel, memset and memcpy nodes"),
        ));
    }
    let i = s.flat;
    let on = on != 0;
    if let Place::Device { phase, pos } = st.flat[i].place {
        if let Some(h) = st.phases[phase].host.as_mut() {
            h.set_enabled(pos, on)?;
        }
    }
    st.flat[i].enabled = on;
    Ok(())
}

pub fn get_enabled(e: Live<Exec>, n: NodeArg, out: Out<c_uint>) -> Result<(), CUresult> {
    let st = e.state.lock();
    let s = snap_node(&e, &st, &n)?;
    if s.child.is_some() || !enable_kind(s.kind) {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuGraphNodeGetEnabled: only kernel, memset and memcpy nodes"),
        ));
    }
    out.write(c_uint::from(st.flat[s.flat].enabled));
    Ok(())
}

fn enable_kind(k: CUgraphNodeType) -> bool {
    matches!(
        k,
        CUgraphNodeType::CU_GRAPH_NODE_TYPE_KERNEL
            | CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEMSET
            | CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEMCPY
    )
}

/// Per phase: its device nodes, its guest nodes, and the size of its
/// host graph (0 when it has none).
#[cfg(test)]
pub(crate) fn shape(e: &Exec) -> Vec<(usize, usize, usize)> {
    let st = e.state.lock();
    st.phases
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let devices = st
                .flat
                .iter()
                .filter(|f| matches!(f.place, Place::Device { phase, .. } if phase == k))
                .count();
            (
                devices,
                p.guest.len(),
                p.host.as_ref().map_or(0, |h| h.len()),
            )
        })
        .collect()
}
