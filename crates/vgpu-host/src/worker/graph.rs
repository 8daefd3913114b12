//! Graphs: the guest records a graph (by capture or the explicit API) and
//! sends it once, at instantiation; this family builds the same graph with
//! the driver's explicit graph API (`cuGraphCreate`, `cuGraphAdd*Node`,
//! `cuGraphInstantiateWithFlags`) and replays it with `cuGraphLaunch`, so a
//! launch is one small message whatever the graph's size (docs/graphs.md).
//!
//! Nodes are named on the wire by their index in the instantiation; the
//! exec's entry in the `graphs` table keeps the driver's graph, exec and
//! node handles, and each node's parameters as last set. Everything a node
//! names is checked like a direct call would be: function, kernel and event
//! handles must be this session's, and every byte a memset or copy node
//! would touch must lie in this session's memory. Those checks are made at
//! instantiation and at every update, and again at every launch and upload,
//! because the session may have freed memory, unloaded a module or
//! destroyed an event since: the driver never runs a node naming something
//! the guest no longer owns.
//!
//! Kernel nodes take the packed argument buffer through `extra`, as
//! launches do; a cooperative node (the driver refuses `extra` for those)
//! gets one pointer per argument from the layout. Their launch attributes
//! are set with `cuGraphKernelNodeSetAttribute` and are fixed once the
//! graph is instantiated (the driver has no per-exec setter).
//!
//! Graph memory (`GraphMemAlloc`) is an ordinary allocation of the session
//! in the guest's view of it: range-checked, counted in the quota, freed at
//! teardown at the latest. Its alloc and free nodes never reach the host.
//!
//! Launches, uploads and updates are deferred ops: their failures surface
//! at the next synchronizing call, like a launch's, and a sticky error
//! breaks the exec's context.

use super::launch::wants_cooperative;
use super::memory::{footprint, footprint_3d, Access, Alloc, AllocKind, INVALID_VALUE};
use super::{cu, Session};
use cuda_abi::launch as abi;
use cuda_types::cuda::{
    CUcontext, CUevent, CUfunction, CUgraph, CUgraphExec, CUgraphNode, CUlaunchAttribute,
    CUmemorytype, CUresult, CUDA_KERNEL_NODE_PARAMS, CUDA_MEMCPY3D, CUDA_MEMSET_NODE_PARAMS,
};
use std::ffi::c_void;
use std::ptr::null_mut;
use vgpu_transport::proto::{
    GraphExecDestroy, GraphExecSetEnabled, GraphExecSetNodes, GraphInstantiate, GraphLaunch,
    GraphMemAlloc, GraphMemFree, GraphNode, GraphUpload, LaunchAttr, Serve,
};
use vgpu_transport::Status;

const INVALID_HANDLE: Status = Status::Cuda(CUresult::CUDA_ERROR_INVALID_HANDLE);
const NOT_SUPPORTED: Status = Status::Cuda(CUresult::CUDA_ERROR_NOT_SUPPORTED);

/// An instantiated graph.
pub struct Exec {
    /// The context handle it was instantiated in.
    pub ctx: u64,
    graph: CUgraph,
    exec: CUgraphExec,
    /// In the order of `GraphInstantiate::nodes`.
    nodes: Vec<Node>,
}

struct Node {
    raw: CUgraphNode,
    /// The parameters as last set.
    desc: GraphNode,
    enabled: bool,
}

/// What a checked node needs besides its wire parameters.
enum Checked {
    Kernel {
        func: CUfunction,
        layout: Vec<(u32, u32)>,
        attrs: Vec<CUlaunchAttribute>,
        cooperative: bool,
    },
    Event(CUevent),
    Other,
}

/// The nodes in an order where every edge goes forward (Kahn's algorithm,
/// lowest index first), or `None` when an index is out of range, an edge
/// repeats or loops on its node, or the edges have a cycle. Also each
/// node's predecessors.
fn topological_order(n: usize, edges: &[(u32, u32)]) -> Option<(Vec<usize>, Vec<Vec<usize>>)> {
    let mut preds = vec![Vec::new(); n];
    let mut succs = vec![Vec::new(); n];
    let mut seen = std::collections::HashSet::with_capacity(edges.len());
    for &(from, to) in edges {
        let (from, to) = (from as usize, to as usize);
        if from >= n || to >= n || from == to || !seen.insert((from, to)) {
            return None;
        }
        preds[to].push(from);
        succs[from].push(to);
    }
    let mut waiting: Vec<usize> = preds.iter().map(Vec::len).collect();
    let mut ready: std::collections::BTreeSet<usize> =
        (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &s in &succs[i] {
            waiting[s] -= 1;
            if waiting[s] == 0 {
                ready.insert(s);
            }
        }
    }
    (order.len() == n).then_some((order, preds))
}

impl Session {
    /// Checks what a node names: handles of this session, bytes it may
    /// touch. Used at instantiation, update, launch and upload.
    fn check_node_refs(&self, op: &str, n: &GraphNode) -> Result<(), Status> {
        match n {
            GraphNode::Kernel { func, attrs, .. } => {
                self.callable(*func)?;
                for a in attrs {
                    if let LaunchAttr::ProgrammaticEvent { event, .. }
                    | LaunchAttr::LaunchCompletionEvent { event, .. } = a
                    {
                        self.graph_event(*event)?;
                    }
                }
                Ok(())
            }
            GraphNode::Memset {
                dst,
                pitch,
                elem_size,
                width,
                height,
                ..
            } => {
                if !matches!(elem_size, 1 | 2 | 4) {
                    return Err(INVALID_VALUE);
                }
                let row = width
                    .checked_mul(u64::from(*elem_size))
                    .ok_or(INVALID_VALUE)?;
                match footprint(row, *height, *pitch)? {
                    Some(len) => self.check_range(op, *dst, len, Access::Write),
                    None => Ok(()),
                }
            }
            GraphNode::Memcpy {
                dst,
                dst_pitch,
                dst_height,
                src,
                src_pitch,
                src_height,
                width,
                height,
                depth,
            } => {
                let src_len = footprint_3d(*width, *height, *depth, *src_pitch, *src_height)?;
                let dst_len = footprint_3d(*width, *height, *depth, *dst_pitch, *dst_height)?;
                if let (Some(s), Some(d)) = (src_len, dst_len) {
                    self.check_range(op, *src, s, Access::Read)?;
                    self.check_range(op, *dst, d, Access::Write)?;
                }
                Ok(())
            }
            GraphNode::EventRecord { event } | GraphNode::EventWait { event } => {
                self.graph_event(*event).map(drop)
            }
            GraphNode::Empty {} => Ok(()),
        }
    }

    fn graph_event(&self, h: u64) -> Result<CUevent, Status> {
        match self.events.find(h) {
            Some(e) => Ok(e.raw),
            None => {
                tracing::debug!("session {}: graph node names unknown event {h:#x}", self.id);
                Err(INVALID_HANDLE)
            }
        }
    }

    /// Everything [`Session::check_node_refs`] checks, and for a kernel its
    /// function in `ctx` (current), parameter layout and driver attributes.
    fn check_node(&mut self, op: &str, ctx: u64, n: &GraphNode) -> Result<Checked, Status> {
        self.check_node_refs(op, n)?;
        match n {
            GraphNode::Kernel {
                func,
                params,
                attrs,
                ..
            } => {
                let callable = self.callable(*func)?;
                let f = self.function_in(callable, ctx)?;
                let layout = self.layout_of(callable, *func);
                let need = abi::params_size(&layout);
                if params.0.len() < need {
                    tracing::debug!(
                        "session {}: {op}: kernel node with {} argument bytes, the kernel takes \
                         {need}",
                        self.id,
                        params.0.len()
                    );
                    return Err(INVALID_VALUE);
                }
                Ok(Checked::Kernel {
                    func: f,
                    layout,
                    attrs: self.driver_attrs(attrs)?,
                    cooperative: wants_cooperative(attrs),
                })
            }
            GraphNode::EventRecord { event } | GraphNode::EventWait { event } => {
                Ok(Checked::Event(self.graph_event(*event)?))
            }
            _ => Ok(Checked::Other),
        }
    }

    /// Calls `f` with a kernel node's driver parameters, which point into
    /// buffers that live until `f` returns (the driver copies them).
    fn with_kernel_params(
        &self,
        n: &GraphNode,
        checked: &Checked,
        f: impl FnOnce(&CUDA_KERNEL_NODE_PARAMS) -> Result<(), Status>,
    ) -> Result<(), Status> {
        let (
            GraphNode::Kernel {
                grid,
                block,
                shared_mem,
                params,
                ..
            },
            Checked::Kernel {
                func,
                layout,
                cooperative,
                ..
            },
        ) = (n, checked)
        else {
            return Err(INVALID_VALUE);
        };
        let mut buf = params.0.clone();
        let mut size = buf.len();
        let mut extra = abi::extra_array(buf.as_mut_ptr().cast(), &mut size);
        let mut ptrs: Vec<*mut c_void> = Vec::new();
        let mut p = CUDA_KERNEL_NODE_PARAMS {
            func: *func,
            gridDimX: grid[0],
            gridDimY: grid[1],
            gridDimZ: grid[2],
            blockDimX: block[0],
            blockDimY: block[1],
            blockDimZ: block[2],
            sharedMemBytes: *shared_mem,
            ..Default::default()
        };
        if *cooperative {
            ptrs = self.argument_pointers(&mut buf, layout)?;
            if !ptrs.is_empty() {
                p.kernelParams = ptrs.as_mut_ptr();
            }
        } else if !buf.is_empty() {
            p.extra = extra.as_mut_ptr();
        }
        let r = f(&p);
        // The pointers above refer to these until here.
        drop((ptrs, extra, buf));
        r
    }

    fn memset_params(n: &GraphNode) -> CUDA_MEMSET_NODE_PARAMS {
        match *n {
            GraphNode::Memset {
                dst,
                pitch,
                value,
                elem_size,
                width,
                height,
            } => CUDA_MEMSET_NODE_PARAMS {
                dst,
                pitch: pitch as usize,
                value,
                elementSize: elem_size,
                width: width as usize,
                height: height as usize,
            },
            _ => CUDA_MEMSET_NODE_PARAMS::default(),
        }
    }

    fn memcpy_params(n: &GraphNode) -> CUDA_MEMCPY3D {
        match *n {
            GraphNode::Memcpy {
                dst,
                dst_pitch,
                dst_height,
                src,
                src_pitch,
                src_height,
                width,
                height,
                depth,
            } => CUDA_MEMCPY3D {
                srcMemoryType: CUmemorytype::CU_MEMORYTYPE_DEVICE,
                srcDevice: src,
                srcPitch: src_pitch as usize,
                // One slice needs no slice height; the driver may still
                // want one at least as tall as the copy.
                srcHeight: if depth == 1 {
                    src_height.max(height)
                } else {
                    src_height
                } as usize,
                dstMemoryType: CUmemorytype::CU_MEMORYTYPE_DEVICE,
                dstDevice: dst,
                dstPitch: dst_pitch as usize,
                dstHeight: if depth == 1 {
                    dst_height.max(height)
                } else {
                    dst_height
                } as usize,
                WidthInBytes: width as usize,
                Height: height as usize,
                Depth: depth as usize,
                ..Default::default()
            },
            _ => CUDA_MEMCPY3D::default(),
        }
    }

    /// Adds one checked node to `graph` after `deps`.
    fn add_node(
        &self,
        graph: CUgraph,
        deps: &[CUgraphNode],
        ctx: CUcontext,
        n: &GraphNode,
        checked: &Checked,
    ) -> Result<CUgraphNode, Status> {
        let mut node: CUgraphNode = null_mut();
        let (d, nd) = if deps.is_empty() {
            (std::ptr::null(), 0)
        } else {
            (deps.as_ptr(), deps.len())
        };
        match (n, checked) {
            (GraphNode::Kernel { .. }, Checked::Kernel { attrs, .. }) => {
                self.with_kernel_params(n, checked, |p| {
                    cu!(self, cuGraphAddKernelNode_v2(&mut node, graph, d, nd, p))
                })?;
                for a in attrs {
                    cu!(self, cuGraphKernelNodeSetAttribute(node, a.id, &a.value))?;
                }
            }
            (GraphNode::Memset { .. }, _) => {
                let p = Self::memset_params(n);
                cu!(self, cuGraphAddMemsetNode(&mut node, graph, d, nd, &p, ctx))?;
            }
            (GraphNode::Memcpy { .. }, _) => {
                let p = Self::memcpy_params(n);
                cu!(self, cuGraphAddMemcpyNode(&mut node, graph, d, nd, &p, ctx))?;
            }
            (GraphNode::EventRecord { .. }, Checked::Event(e)) => {
                cu!(self, cuGraphAddEventRecordNode(&mut node, graph, d, nd, *e))?;
            }
            (GraphNode::EventWait { .. }, Checked::Event(e)) => {
                cu!(self, cuGraphAddEventWaitNode(&mut node, graph, d, nd, *e))?;
            }
            (GraphNode::Empty {}, _) => cu!(self, cuGraphAddEmptyNode(&mut node, graph, d, nd))?,
            _ => return Err(INVALID_VALUE),
        }
        Ok(node)
    }

    /// Builds the graph's nodes in `order`, each after its predecessors.
    fn build(
        &self,
        graph: CUgraph,
        ctx: CUcontext,
        nodes: &[GraphNode],
        checked: &[Checked],
        order: &[usize],
        preds: &[Vec<usize>],
    ) -> Result<Vec<CUgraphNode>, Status> {
        let mut raw: Vec<CUgraphNode> = vec![null_mut(); nodes.len()];
        for &i in order {
            let deps: Vec<CUgraphNode> = preds[i].iter().map(|&p| raw[p]).collect();
            raw[i] = self.add_node(graph, &deps, ctx, &nodes[i], &checked[i])?;
        }
        Ok(raw)
    }

    fn destroy_graph(&self, graph: CUgraph) {
        if let Err(e) = cu!(self, cuGraphDestroy(graph)) {
            tracing::warn!("session {}: cuGraphDestroy: {e}", self.id);
        }
    }

    /// The exec behind a handle: (context handle, driver exec).
    fn exec(&self, h: u64) -> Result<(u64, CUgraphExec), Status> {
        match self.graphs.find(h) {
            Some(e) => Ok((e.ctx, e.exec)),
            // The driver's code for a bad CUgraphExec.
            None => {
                tracing::debug!("session {}: unknown graph exec handle {h:#x}", self.id);
                Err(INVALID_VALUE)
            }
        }
    }

    /// Checks every enabled node of an exec again (see the module docs).
    fn recheck(&self, op: &str, h: u64) -> Result<(), Status> {
        let e = self.graphs.find(h).ok_or(INVALID_VALUE)?;
        for (i, n) in e.nodes.iter().enumerate() {
            if n.enabled {
                if let Err(s) = self.check_node_refs(op, &n.desc) {
                    tracing::warn!(
                        "session {}: {op}: node {i} names what this session no longer owns; \
                         refused",
                        self.id
                    );
                    return Err(s);
                }
            }
        }
        Ok(())
    }
}

impl Serve<GraphInstantiate> for Session {
    fn serve(&mut self, c: GraphInstantiate) -> Result<u64, Status> {
        self.enter(c.ctx)?;
        let Some((order, preds)) = topological_order(c.nodes.len(), &c.edges) else {
            tracing::warn!(
                "session {}: GraphInstantiate: edges are not a DAG over {} node(s) (an index \
                 out of range, a repeated edge or a cycle); refused",
                self.id,
                c.nodes.len()
            );
            return Err(INVALID_VALUE);
        };
        let mut checked = Vec::with_capacity(c.nodes.len());
        for n in &c.nodes {
            checked.push(self.check_node("GraphInstantiate", c.ctx, n)?);
        }
        // Kernels' functions may have been obtained in between, which
        // enters the same context; make sure it is the current one.
        let raw_ctx = self.enter(c.ctx)?;
        let mut graph: CUgraph = null_mut();
        cu!(self, cuGraphCreate(&mut graph, 0))?;
        let raw = match self.build(graph, raw_ctx, &c.nodes, &checked, &order, &preds) {
            Ok(r) => r,
            Err(e) => {
                self.destroy_graph(graph);
                return Err(e);
            }
        };
        let mut exec: CUgraphExec = null_mut();
        let inst = if self.driver.cuda.cuGraphInstantiateWithFlags.is_none() && c.flags == 0 {
            cu!(
                self,
                cuGraphInstantiate_v2(&mut exec, graph, null_mut(), null_mut(), 0)
            )
        } else {
            cu!(self, cuGraphInstantiateWithFlags(&mut exec, graph, c.flags))
        };
        if let Err(e) = inst {
            self.destroy_graph(graph);
            return Err(e);
        }
        let nodes = raw
            .into_iter()
            .zip(c.nodes)
            .map(|(raw, desc)| Node {
                raw,
                desc,
                enabled: true,
            })
            .collect();
        Ok(self.graphs.insert(Exec {
            ctx: c.ctx,
            graph,
            exec,
            nodes,
        }))
    }
}

impl Serve<GraphLaunch> for Session {
    fn serve(&mut self, c: GraphLaunch) -> Result<(), Status> {
        let (ctx, exec) = self.exec(c.exec)?;
        self.recheck("GraphLaunch", c.exec)?;
        let stream = self.enter_stream(ctx, c.stream)?;
        cu!(self, cuGraphLaunch(exec, stream))
    }
}

impl Serve<GraphUpload> for Session {
    fn serve(&mut self, c: GraphUpload) -> Result<(), Status> {
        let (ctx, exec) = self.exec(c.exec)?;
        self.recheck("GraphUpload", c.exec)?;
        let stream = self.enter_stream(ctx, c.stream)?;
        cu!(self, cuGraphUpload(exec, stream))
    }
}

impl Serve<GraphExecDestroy> for Session {
    fn serve(&mut self, c: GraphExecDestroy) -> Result<(), Status> {
        let (ctx, exec) = self.exec(c.exec)?;
        self.enter(ctx)?;
        cu!(self, cuGraphExecDestroy(exec))?;
        if let Some(e) = self.graphs.remove(c.exec) {
            self.destroy_graph(e.graph);
        }
        Ok(())
    }
}

impl Serve<GraphExecSetNodes> for Session {
    fn serve(&mut self, c: GraphExecSetNodes) -> Result<(), Status> {
        let (ctx, exec) = self.exec(c.exec)?;
        let raw_ctx = self.enter(ctx)?;
        // Everything is checked before anything changes.
        let mut plan = Vec::with_capacity(c.updates.len());
        for (index, new) in &c.updates {
            let old = self
                .graphs
                .find(c.exec)
                .and_then(|e| e.nodes.get(*index as usize))
                .map(|n| (n.raw, n.desc.clone()));
            let Some((raw, old)) = old else {
                tracing::debug!("session {}: GraphExecSetNodes: no node {index}", self.id);
                return Err(INVALID_VALUE);
            };
            if old.tag() != new.tag() {
                tracing::debug!(
                    "session {}: GraphExecSetNodes: node {index} is a {:?} node, the update \
                     another kind",
                    self.id,
                    old.tag()
                );
                return Err(INVALID_VALUE);
            }
            if let (GraphNode::Kernel { attrs: was, .. }, GraphNode::Kernel { attrs: now, .. }) =
                (&old, new)
            {
                if was != now {
                    tracing::warn!(
                        "session {}: GraphExecSetNodes: node {index}'s launch attributes are \
                         fixed at instantiation; refused",
                        self.id
                    );
                    return Err(NOT_SUPPORTED);
                }
            }
            plan.push((
                *index as usize,
                raw,
                self.check_node("GraphExecSetNodes", ctx, new)?,
            ));
        }
        self.enter(ctx)?;
        for ((index, raw, checked), (_, new)) in plan.into_iter().zip(c.updates) {
            match (&new, &checked) {
                (GraphNode::Kernel { .. }, _) => self.with_kernel_params(&new, &checked, |p| {
                    cu!(self, cuGraphExecKernelNodeSetParams_v2(exec, raw, p))
                })?,
                (GraphNode::Memset { .. }, _) => {
                    let p = Self::memset_params(&new);
                    cu!(self, cuGraphExecMemsetNodeSetParams(exec, raw, &p, raw_ctx))?
                }
                (GraphNode::Memcpy { .. }, _) => {
                    let p = Self::memcpy_params(&new);
                    cu!(self, cuGraphExecMemcpyNodeSetParams(exec, raw, &p, raw_ctx))?
                }
                (GraphNode::EventRecord { .. }, Checked::Event(e)) => {
                    cu!(self, cuGraphExecEventRecordNodeSetEvent(exec, raw, *e))?
                }
                (GraphNode::EventWait { .. }, Checked::Event(e)) => {
                    cu!(self, cuGraphExecEventWaitNodeSetEvent(exec, raw, *e))?
                }
                (GraphNode::Empty {}, _) => {}
                _ => return Err(INVALID_VALUE),
            }
            if let Some(n) = self
                .graphs
                .find_mut(c.exec)
                .and_then(|e| e.nodes.get_mut(index))
            {
                n.desc = new;
            }
        }
        Ok(())
    }
}

impl Serve<GraphExecSetEnabled> for Session {
    fn serve(&mut self, c: GraphExecSetEnabled) -> Result<(), Status> {
        let (ctx, exec) = self.exec(c.exec)?;
        let node = self
            .graphs
            .find(c.exec)
            .and_then(|e| e.nodes.get(c.index as usize))
            .map(|n| (n.raw, n.desc.can_disable()));
        let raw = match node {
            Some((raw, true)) => raw,
            // The driver only toggles kernel, memset and memcpy nodes.
            _ => return Err(INVALID_VALUE),
        };
        self.enter(ctx)?;
        cu!(self, cuGraphNodeSetEnabled(exec, raw, u32::from(c.enabled)))?;
        if let Some(n) = self
            .graphs
            .find_mut(c.exec)
            .and_then(|e| e.nodes.get_mut(c.index as usize))
        {
            n.enabled = c.enabled;
        }
        Ok(())
    }
}

impl Serve<GraphMemAlloc> for Session {
    fn serve(&mut self, c: GraphMemAlloc) -> Result<u64, Status> {
        self.enter(c.ctx)?;
        self.quota.check_alloc(c.size)?;
        let mut p = 0;
        cu!(self, cuMemAlloc_v2(&mut p, c.size as usize))?;
        self.add_alloc(
            p,
            Alloc {
                size: c.size,
                ctx: c.ctx,
                kind: AllocKind::Graph,
            },
        );
        Ok(p)
    }
}

impl Serve<GraphMemFree> for Session {
    fn serve(&mut self, c: GraphMemFree) -> Result<(), Status> {
        self.enter(c.ctx)?;
        if !matches!(self.mem.allocs.get(&c.ptr), Some(a) if a.kind == AllocKind::Graph) {
            tracing::warn!(
                "session {}: GraphMemFree of {:#x}, which is not graph memory of this session; \
                 refused",
                self.id,
                c.ptr
            );
            return Err(INVALID_VALUE);
        }
        cu!(self, cuMemFree_v2(c.ptr))?;
        self.drop_alloc(c.ptr);
        Ok(())
    }
}

impl Session {
    /// Destroys the execs (and graphs) of context `ctx`, or of every
    /// context, while their contexts still exist: before a context is
    /// destroyed, reset or released for the last time, and at teardown.
    /// Returns how many the driver took back.
    pub(super) fn release_graphs(&mut self, ctx: Option<u64>) -> usize {
        let mine: Vec<u64> = self
            .graphs
            .iter()
            .filter(|(_, e)| ctx.is_none_or(|c| c == e.ctx))
            .map(|(h, _)| h)
            .collect();
        let mut n = 0;
        for h in mine {
            let Some(e) = self.graphs.remove(h) else {
                continue;
            };
            if self.enter(e.ctx).is_ok() {
                match cu!(self, cuGraphExecDestroy(e.exec)) {
                    Ok(()) => n += 1,
                    Err(err) => tracing::warn!("session {}: cuGraphExecDestroy: {err}", self.id),
                }
            }
            self.destroy_graph(e.graph);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_topological_and_bad_edges_refused() {
        // 0 → 2, 1 → 2, 2 → 3: lowest ready index first.
        let (order, preds) = topological_order(4, &[(2, 3), (0, 2), (1, 2)]).unwrap();
        assert_eq!(order, vec![0, 1, 2, 3]);
        assert_eq!(preds[2], vec![0, 1]);
        // Edges backwards against the indices are fine as long as acyclic.
        let (order, _) = topological_order(3, &[(2, 1), (1, 0)]).unwrap();
        assert_eq!(order, vec![2, 1, 0]);
        assert_eq!(topological_order(0, &[]).unwrap().0, Vec::<usize>::new());
        assert!(topological_order(2, &[(0, 2)]).is_none());
        assert!(topological_order(2, &[(1, 1)]).is_none());
        assert!(topological_order(2, &[(0, 1), (0, 1)]).is_none());
        assert!(topological_order(3, &[(0, 1), (1, 2), (2, 0)]).is_none());
    }
}
