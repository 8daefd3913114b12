//! CUDA graphs as guest objects (docs/graphs.md): a `CUgraph` is a
//! [`Graph`] in a registry, owning its nodes ([`Entry`]: a handle and an
//! [`Op`], the node's kind and parameters) and its edges. Everything an
//! application asks of a graph — nodes, roots, edges, dependencies, types,
//! parameters, clones, DOT output — is answered here without a round trip;
//! stream capture ([`crate::capture`]) adds nodes to the same objects. The
//! host sees a graph once, when it is instantiated ([`exec`]).
//!
//! Handles (`CUgraph`, `CUgraphNode`, `CUgraphExec`) are minted by
//! `vgpu_ffi::Shared` registries and resolved by conversions: an unknown or
//! destroyed one is `CUDA_ERROR_INVALID_VALUE`, the code the driver
//! documents for every graph entry point. A node names its graph, so a node
//! of one graph where the same graph is required (dependencies, edges,
//! `cuGraphExec*SetParams`) is refused with the driver's
//! `CUDA_ERROR_INVALID_VALUE`.
//!
//! Child graphs: `cuGraphAddChildGraphNode` clones the child (the driver's
//! rule) into a graph owned by the node — a registered graph, so
//! `cuGraphChildGraphNodeGetGraph` can hand out its handle and changes to
//! it show in the node. It goes when its node or parent goes.
//!
//! Edge data (`CUgraphEdgeData`, CUDA 12.3): only the default (all zero)
//! is accepted; programmatic-dependency ports are refused with
//! `CUDA_ERROR_NOT_SUPPORTED` where they are passed, so every edge here has
//! default data and the `_v2` queries return zeros (never
//! `CUDA_ERROR_LOSSY_QUERY`).

pub mod dot;
pub mod exec;
mod host;
pub mod mem;
pub mod node;

use crate::args::{self, Live};
use crate::check::reject;
use cuda_types::cuda::{CUgraph, CUgraphEdgeData, CUgraphNode, CUgraphNodeType, CUresult};
use node::Op;
use parking_lot::{Mutex, MutexGuard};
use std::collections::{HashMap, HashSet};
use std::ffi::c_uint;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use vgpu_ffi::{FromCuda, Mint, Out, Shared};

pub const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;
pub const NOT_SUPPORTED: CUresult = CUresult::CUDA_ERROR_NOT_SUPPORTED;

/// `cuGraphGetId` / `cuGraphExecGetId`: small numbers, unique per process,
/// the ones the DOT output names.
static NEXT_ID: AtomicU32 = AtomicU32::new(1);

pub fn next_id() -> u32 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

pub struct Graph {
    /// The value the application holds.
    handle: u64,
    pub id: u32,
    body: Mutex<Body>,
    /// A stream capture records into the graph: it may be read and grown,
    /// not destroyed and not have nodes removed (cuStreamGetCaptureInfo).
    pub(crate) capturing: AtomicBool,
    /// Owned by a child graph node (cloned into it, or moved there with
    /// `CU_GRAPH_CHILD_GRAPH_OWNERSHIP_MOVE`): the application may use the
    /// handle but not destroy it.
    embedded: AtomicBool,
}

/// Graphs until `cuGraphDestroy` (child graphs: until their node goes).
pub(crate) static GRAPHS: Shared<Arc<Graph>, CUresult> =
    Shared::new("graph", INVALID_VALUE, Mint::Pointer);
/// Nodes until `cuGraphDestroyNode` or their graph's end.
pub(crate) static NODES: Shared<Arc<NodeRef>, CUresult> =
    Shared::new("graph node", INVALID_VALUE, Mint::Pointer);

/// What a node handle names: the node's handle and its graph.
pub struct NodeRef {
    handle: u64,
    graph: Weak<Graph>,
}

/// One node of a graph's body.
pub struct Entry {
    pub handle: u64,
    /// `cuGraphNodeGetLocalId`: the node's number in its graph.
    pub local: u32,
    pub op: Op,
}

/// A graph's nodes and edges, behind the graph's one lock.
#[derive(Default)]
pub struct Body {
    /// In creation order (the order `cuGraphGetNodes` reports and
    /// `cuGraphExecUpdate` pairs nodes by).
    pub nodes: Vec<Entry>,
    index: HashMap<u64, usize>,
    /// `(from, to)` node handles, in creation order.
    pub edges: Vec<(u64, u64)>,
    next_local: u32,
    /// The graph this one was cloned from, and each original node's clone
    /// (child graphs' nodes included): `cuGraphNodeFindInClone`.
    cloned_from: Option<(u64, HashMap<u64, u64>)>,
    /// Executable graphs alive that were instantiated from this graph while
    /// it held memory nodes: at most one may exist.
    pub mem_execs: usize,
}

impl Body {
    pub fn find(&self, h: u64) -> Option<usize> {
        self.index.get(&h).copied()
    }

    pub fn entry(&self, h: u64) -> Option<&Entry> {
        self.find(h).map(|i| &self.nodes[i])
    }

    pub fn entry_mut(&mut self, h: u64) -> Option<&mut Entry> {
        self.find(h).map(move |i| &mut self.nodes[i])
    }

    /// The nodes `h` depends on, in edge order.
    pub fn deps_of(&self, h: u64) -> Vec<u64> {
        self.edges
            .iter()
            .filter(|e| e.1 == h)
            .map(|e| e.0)
            .collect()
    }

    /// The nodes that depend on `h`, in edge order.
    pub fn dependents_of(&self, h: u64) -> Vec<u64> {
        self.edges
            .iter()
            .filter(|e| e.0 == h)
            .map(|e| e.1)
            .collect()
    }

    /// Nodes without dependencies, in creation order.
    pub fn roots(&self) -> Vec<u64> {
        let has_deps: HashSet<u64> = self.edges.iter().map(|e| e.1).collect();
        self.nodes
            .iter()
            .map(|n| n.handle)
            .filter(|h| !has_deps.contains(h))
            .collect()
    }

    /// Whether the graph (or a child graph) holds allocation or free
    /// nodes, which forbid clones, removals and a second instantiation.
    pub fn has_mem_nodes(&self) -> bool {
        self.nodes.iter().any(|n| match &n.op {
            Op::MemAlloc(_) | Op::MemFree(_) => true,
            Op::Child(g) => g.body().has_mem_nodes(),
            _ => false,
        })
    }

    /// Edge indices by destination position: `preds[i]` lists the node
    /// indices node `i` depends on, in edge order.
    pub fn preds(&self) -> Vec<Vec<usize>> {
        let mut preds = vec![Vec::new(); self.nodes.len()];
        for &(a, b) in &self.edges {
            if let (Some(a), Some(b)) = (self.find(a), self.find(b)) {
                preds[b].push(a);
            }
        }
        preds
    }

    /// Every node `from` reaches (itself included).
    pub fn reachable_from(&self, from: &[u64]) -> HashSet<u64> {
        let mut seen: HashSet<u64> = HashSet::new();
        let mut todo: Vec<u64> = from.to_vec();
        while let Some(h) = todo.pop() {
            if seen.insert(h) {
                todo.extend(self.edges.iter().filter(|e| e.0 == h).map(|e| e.1));
            }
        }
        seen
    }

    /// Every node that reaches one of `to` (those included).
    pub fn ancestors_of(&self, to: &[u64]) -> HashSet<u64> {
        let mut seen: HashSet<u64> = HashSet::new();
        let mut todo: Vec<u64> = to.to_vec();
        while let Some(h) = todo.pop() {
            if seen.insert(h) {
                todo.extend(self.edges.iter().filter(|e| e.1 == h).map(|e| e.0));
            }
        }
        seen
    }

    fn reindex(&mut self) {
        self.index = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.handle, i))
            .collect();
    }
}

impl Graph {
    /// A new, empty, registered graph.
    pub fn create() -> Arc<Graph> {
        args::register(&GRAPHS, |handle| Graph {
            handle,
            id: next_id(),
            body: Mutex::new(Body::default()),
            capturing: AtomicBool::new(false),
            embedded: AtomicBool::new(false),
        })
    }

    pub fn handle(&self) -> CUgraph {
        args::handle(self.handle)
    }

    pub fn raw_handle(&self) -> u64 {
        self.handle
    }

    pub fn body(&self) -> MutexGuard<'_, Body> {
        self.body.lock()
    }

    /// Adds a node that depends on `deps` (handles of this graph's nodes,
    /// no duplicates) and returns its handle.
    pub fn add(self: &Arc<Self>, op: Op, deps: &[u64]) -> Result<u64, CUresult> {
        let mut body = self.body();
        self.add_locked(&mut body, op, deps)
    }

    /// [`Graph::add`] with the body already locked.
    pub fn add_locked(
        self: &Arc<Self>,
        body: &mut Body,
        op: Op,
        deps: &[u64],
    ) -> Result<u64, CUresult> {
        let mut seen = HashSet::new();
        for &d in deps {
            if body.find(d).is_none() {
                return Err(reject(
                    INVALID_VALUE,
                    format_args!("graph node: dependency {d:#x} is not a node of this graph"),
                ));
            }
            if !seen.insert(d) {
                return Err(reject(
                    INVALID_VALUE,
                    format_args!("graph node: dependency {d:#x} listed twice"),
                ));
            }
        }
        op.admit(self, body)?;
        let weak = Arc::downgrade(self);
        let node = NODES.insert_with(|handle| {
            Arc::new(NodeRef {
                handle,
                graph: weak,
            })
        });
        let local = body.next_local;
        body.next_local += 1;
        body.index.insert(node, body.nodes.len());
        body.nodes.push(Entry {
            handle: node,
            local,
            op,
        });
        body.edges.extend(deps.iter().map(|&d| (d, node)));
        Ok(node)
    }

    /// Takes the graph's nodes (and child graphs, recursively) out of the
    /// registries; what they hold is released with them.
    fn unregister_contents(&self) {
        let nodes = std::mem::take(&mut self.body().nodes);
        for n in nodes {
            let _ = NODES.take(n.handle);
            if let Op::Child(child) = &n.op {
                let _ = GRAPHS.take(child.handle);
                child.unregister_contents();
            }
        }
    }

    /// A registered deep copy (child graphs copied too), and the map from
    /// each original node to its copy. Refused for graphs with memory
    /// nodes (the driver's rule).
    pub fn clone_graph(&self) -> Result<(Arc<Graph>, HashMap<u64, u64>), CUresult> {
        let body = self.body();
        if body.has_mem_nodes() {
            return Err(reject(
                INVALID_VALUE,
                format_args!("cuGraphClone: the graph has memory allocation or free nodes"),
            ));
        }
        let copy = Graph::create();
        let mut map = HashMap::new();
        {
            let mut cbody = copy.body();
            for n in &body.nodes {
                let op = match &n.op {
                    Op::Child(child) => {
                        let (cc, cmap) = child.clone_graph()?;
                        cc.embedded.store(true, Ordering::Relaxed);
                        map.extend(cmap);
                        Op::Child(cc)
                    }
                    other => other.clone(),
                };
                let h = copy.add_locked(&mut cbody, op, &[])?;
                map.insert(n.handle, h);
            }
            cbody.edges = body.edges.iter().map(|(a, b)| (map[a], map[b])).collect();
            cbody.cloned_from = Some((self.handle, map.clone()));
        }
        Ok((copy, map))
    }
}

/// A `CUgraph` argument: a live graph.
impl FromCuda<CUgraph, CUresult> for Live<Graph> {
    unsafe fn from_cuda(h: CUgraph) -> Result<Self, CUresult> {
        Live::find(&GRAPHS, h)
    }
}

/// A `CUgraphNode` argument: a live node and its graph.
pub struct NodeArg {
    pub handle: u64,
    pub graph: Arc<Graph>,
}

impl NodeArg {
    pub fn resolve(h: CUgraphNode) -> Result<NodeArg, CUresult> {
        let n = NODES.get(h as u64)?;
        let graph = n.graph.upgrade().ok_or_else(|| {
            reject(
                INVALID_VALUE,
                format_args!("graph node {h:p}: its graph is destroyed"),
            )
        })?;
        Ok(NodeArg {
            handle: n.handle,
            graph,
        })
    }

    pub fn raw(&self) -> CUgraphNode {
        args::handle(self.handle)
    }
}

impl FromCuda<CUgraphNode, CUresult> for NodeArg {
    unsafe fn from_cuda(h: CUgraphNode) -> Result<Self, CUresult> {
        NodeArg::resolve(h)
    }
}

/// An array of `n` node handles the application passed (NULL only when
/// `n` is 0), as handles of `graph`'s nodes.
///
/// # Safety
/// `p` holds `n` readable handles when `n > 0`.
pub unsafe fn node_list(p: *const CUgraphNode, n: usize, what: &str) -> Result<Vec<u64>, CUresult> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("{what}: NULL array of {n} nodes"),
        ));
    }
    // SAFETY: n readable handles (contract).
    let raw = unsafe { std::slice::from_raw_parts(p, n) };
    Ok(raw.iter().map(|&h| h as u64).collect())
}

/// Resolves handles to nodes of `graph`.
pub fn nodes_of(graph: &Graph, hs: &[u64], what: &str) -> Result<(), CUresult> {
    for &h in hs {
        let n = NODES
            .get(h)
            .map_err(|e| reject(e, format_args!("{what}: {h:#x} is not a graph node")))?;
        if !std::ptr::eq(n.graph.as_ptr(), graph) {
            return Err(reject(
                INVALID_VALUE,
                format_args!("{what}: node {h:#x} belongs to another graph"),
            ));
        }
    }
    Ok(())
}

/// Optional edge data for `n` edges: NULL or all default is accepted;
/// anything else (programmatic ports) is not supported by vgpu.
///
/// # Safety
/// `p` is NULL or holds `n` readable entries.
pub unsafe fn default_edges(
    p: *const CUgraphEdgeData,
    n: usize,
    what: &str,
) -> Result<(), CUresult> {
    if p.is_null() || n == 0 {
        return Ok(());
    }
    // SAFETY: n readable entries (contract).
    let data = unsafe { std::slice::from_raw_parts(p, n) };
    if data
        .iter()
        .any(|d| d.from_port != 0 || d.to_port != 0 || d.type_ != 0 || d.reserved != [0; 5])
    {
        return Err(reject(
            NOT_SUPPORTED,
            format_args!("{what}: non-default edge data (programmatic dependencies)"),
        ));
    }
    Ok(())
}

// ---- entry points: graphs ----

/// `cuGraphCreate`: flags must be 0.
pub fn create(out: Out<CUgraph>, flags: c_uint) -> Result<(), CUresult> {
    if flags != 0 {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuGraphCreate: flags {flags:#x}"),
        ));
    }
    out.write(Graph::create().handle());
    Ok(())
}

/// `cuGraphDestroy`: a graph being captured into, or one a child node
/// owns, cannot be destroyed by the application.
pub fn destroy(g: Live<Graph>) -> Result<(), CUresult> {
    if g.capturing.load(Ordering::Acquire) {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuGraphDestroy: a stream capture is recording into the graph"),
        ));
    }
    if g.embedded.load(Ordering::Acquire) {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuGraphDestroy: the graph belongs to a child graph node"),
        ));
    }
    let g = GRAPHS.take(g.handle)?;
    g.unregister_contents();
    Ok(())
}

/// Destroys a graph nothing else may use any more (a failed capture's).
pub fn discard(g: &Graph) {
    if GRAPHS.take(g.handle).is_ok() {
        g.unregister_contents();
    }
}

pub fn clone(out: Out<CUgraph>, g: Live<Graph>) -> Result<(), CUresult> {
    let (copy, _) = g.clone_graph()?;
    out.write(copy.handle());
    Ok(())
}

/// `cuGraphNodeFindInClone`: `clone` must have been cloned from the
/// original node's graph, and the node must have been in it then.
pub fn find_in_clone(
    out: Out<CUgraphNode>,
    n: NodeArg,
    clone: Live<Graph>,
) -> Result<(), CUresult> {
    let body = clone.body();
    let found = body
        .cloned_from
        .as_ref()
        .and_then(|(_, map)| map.get(&n.handle).copied())
        .filter(|h| NODES.contains(*h))
        .ok_or_else(|| {
            reject(
                INVALID_VALUE,
                format_args!("cuGraphNodeFindInClone: the node has no copy in that graph"),
            )
        })?;
    out.write(args::handle(found));
    Ok(())
}

pub fn get_id(g: Live<Graph>, out: Out<c_uint>) -> Result<(), CUresult> {
    out.write(g.id);
    Ok(())
}

/// Writes a list as the driver's queries do: with `out` NULL only the
/// count; else up to `*count` entries, the rest of the caller's `*count`
/// set to NULL, and the number written back in `*count`.
///
/// Returns the number of entries written.
///
/// # Safety
/// `out` is NULL or holds `*count` writable entries.
pub unsafe fn write_list(out: *mut CUgraphNode, count: Out<usize>, items: &[u64]) -> usize {
    if out.is_null() {
        count.write(items.len());
        return 0;
    }
    let room = count.read();
    for i in 0..room {
        let v = items
            .get(i)
            .map_or(std::ptr::null_mut(), |&h| args::handle(h));
        // SAFETY: `room` writable entries (contract).
        unsafe { out.add(i).write(v) };
    }
    let n = room.min(items.len());
    count.write(n);
    n
}

/// Zeroes (default) edge data for the entries a list query wrote.
///
/// # Safety
/// `data` is NULL or holds `n` writable entries.
unsafe fn write_default_edges(data: *mut CUgraphEdgeData, n: usize) {
    if data.is_null() {
        return;
    }
    for i in 0..n {
        // SAFETY: n writable entries (contract).
        unsafe { data.add(i).write(CUgraphEdgeData::default()) };
    }
}

/// `cuGraphGetNodes`.
///
/// # Safety
/// As [`write_list`].
pub unsafe fn get_nodes(
    g: Live<Graph>,
    out: *mut CUgraphNode,
    count: Out<usize>,
) -> Result<(), CUresult> {
    let items: Vec<u64> = g.body().nodes.iter().map(|n| n.handle).collect();
    // SAFETY: forwarded contract.
    unsafe { write_list(out, count, &items) };
    Ok(())
}

/// `cuGraphGetRootNodes`.
///
/// # Safety
/// As [`write_list`].
pub unsafe fn get_root_nodes(
    g: Live<Graph>,
    out: *mut CUgraphNode,
    count: Out<usize>,
) -> Result<(), CUresult> {
    let items = g.body().roots();
    // SAFETY: forwarded contract.
    unsafe { write_list(out, count, &items) };
    Ok(())
}

/// `cuGraphGetEdges[_v2]` (v1 passes no edge data): `from` and `to` both
/// NULL for the count, both non-NULL otherwise; edge data needs both.
///
/// # Safety
/// Non-NULL arrays hold `*count` writable entries.
pub unsafe fn get_edges(
    g: Live<Graph>,
    from: *mut CUgraphNode,
    to: *mut CUgraphNode,
    data: *mut CUgraphEdgeData,
    count: Out<usize>,
) -> Result<(), CUresult> {
    if from.is_null() != to.is_null() || (!data.is_null() && from.is_null()) {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuGraphGetEdges: from, to and edgeData must be given together"),
        ));
    }
    let edges = g.body().edges.clone();
    if from.is_null() {
        count.write(edges.len());
        return Ok(());
    }
    let room = count.read();
    for i in 0..room {
        let (a, b) = edges
            .get(i)
            .map_or((std::ptr::null_mut(), std::ptr::null_mut()), |&(a, b)| {
                (args::handle(a), args::handle(b))
            });
        // SAFETY: `room` writable entries in each array (contract).
        unsafe {
            from.add(i).write(a);
            to.add(i).write(b);
        }
    }
    let n = room.min(edges.len());
    // SAFETY: as above.
    unsafe { write_default_edges(data, n) };
    count.write(n);
    Ok(())
}

/// `cuGraphNodeGetDependencies[_v2]` and, with `dependents`,
/// `cuGraphNodeGetDependentNodes[_v2]`.
///
/// # Safety
/// Non-NULL arrays hold `*count` writable entries.
pub unsafe fn node_neighbours(
    n: NodeArg,
    out: *mut CUgraphNode,
    data: *mut CUgraphEdgeData,
    count: Out<usize>,
    dependents: bool,
) -> Result<(), CUresult> {
    if !data.is_null() && out.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("graph node query: edgeData without a node array"),
        ));
    }
    let items = {
        let body = n.graph.body();
        if dependents {
            body.dependents_of(n.handle)
        } else {
            body.deps_of(n.handle)
        }
    };
    // SAFETY: forwarded contract.
    let written = unsafe { write_list(out, count, &items) };
    // SAFETY: as above.
    unsafe { write_default_edges(data, written) };
    Ok(())
}

// The 11.x forms without edge data: the data parameter sits before the
// count, so the export list cannot append it as a constant.

/// `cuGraphGetEdges` (no edge data).
///
/// # Safety
/// As [`get_edges`].
pub unsafe fn get_edges_v1(
    g: Live<Graph>,
    from: *mut CUgraphNode,
    to: *mut CUgraphNode,
    count: Out<usize>,
) -> Result<(), CUresult> {
    // SAFETY: forwarded contract.
    unsafe { get_edges(g, from, to, std::ptr::null_mut(), count) }
}

/// `cuGraphNodeGetDependencies` / `cuGraphNodeGetDependentNodes`.
///
/// # Safety
/// As [`node_neighbours`].
pub unsafe fn node_neighbours_v1(
    n: NodeArg,
    out: *mut CUgraphNode,
    count: Out<usize>,
    dependents: bool,
) -> Result<(), CUresult> {
    // SAFETY: forwarded contract.
    unsafe { node_neighbours(n, out, std::ptr::null_mut(), count, dependents) }
}

/// `cuGraphAddDependencies` (no edge data).
///
/// # Safety
/// As [`add_dependencies`].
pub unsafe fn add_dependencies_v1(
    g: Live<Graph>,
    from: *const CUgraphNode,
    to: *const CUgraphNode,
    n: usize,
) -> Result<(), CUresult> {
    // SAFETY: forwarded contract.
    unsafe { add_dependencies(g, from, to, std::ptr::null(), n) }
}

/// `cuGraphRemoveDependencies` (no edge data).
///
/// # Safety
/// As [`remove_dependencies`].
pub unsafe fn remove_dependencies_v1(
    g: Live<Graph>,
    from: *const CUgraphNode,
    to: *const CUgraphNode,
    n: usize,
) -> Result<(), CUresult> {
    // SAFETY: forwarded contract.
    unsafe { remove_dependencies(g, from, to, std::ptr::null(), n) }
}

/// The arrays of an edge list call, resolved: pairs of nodes of `g`.
///
/// # Safety
/// `from` and `to` hold `n` readable handles when `n > 0`; `data` is NULL
/// or holds `n` entries.
unsafe fn edge_list(
    g: &Graph,
    from: *const CUgraphNode,
    to: *const CUgraphNode,
    data: *const CUgraphEdgeData,
    n: usize,
    what: &str,
) -> Result<Vec<(u64, u64)>, CUresult> {
    // SAFETY: forwarded contract.
    let (a, b) = unsafe { (node_list(from, n, what)?, node_list(to, n, what)?) };
    // SAFETY: forwarded contract.
    unsafe { default_edges(data, n, what)? };
    nodes_of(g, &a, what)?;
    nodes_of(g, &b, what)?;
    Ok(a.into_iter().zip(b).collect())
}

/// `cuGraphAddDependencies[_v2]`: an edge that exists already, a self
/// edge, or one listed twice is refused, and nothing is added.
///
/// # Safety
/// As [`edge_list`].
pub unsafe fn add_dependencies(
    g: Live<Graph>,
    from: *const CUgraphNode,
    to: *const CUgraphNode,
    data: *const CUgraphEdgeData,
    n: usize,
) -> Result<(), CUresult> {
    let what = "cuGraphAddDependencies";
    // SAFETY: forwarded contract.
    let pairs = unsafe { edge_list(&g, from, to, data, n, what)? };
    let mut body = g.body();
    let mut seen: HashSet<(u64, u64)> = body.edges.iter().copied().collect();
    for &(a, b) in &pairs {
        if a == b || !seen.insert((a, b)) {
            return Err(reject(
                INVALID_VALUE,
                format_args!("{what}: edge {a:#x} -> {b:#x} exists or is a self edge"),
            ));
        }
    }
    body.edges.extend(pairs);
    Ok(())
}

/// `cuGraphRemoveDependencies[_v2]`: every edge must exist; not allowed in
/// graphs with memory nodes or while captured into.
///
/// # Safety
/// As [`edge_list`].
pub unsafe fn remove_dependencies(
    g: Live<Graph>,
    from: *const CUgraphNode,
    to: *const CUgraphNode,
    data: *const CUgraphEdgeData,
    n: usize,
) -> Result<(), CUresult> {
    let what = "cuGraphRemoveDependencies";
    // SAFETY: forwarded contract.
    let pairs = unsafe { edge_list(&g, from, to, data, n, what)? };
    let mut body = g.body();
    if body.has_mem_nodes() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("{what}: the graph has memory allocation or free nodes"),
        ));
    }
    let mut edges = body.edges.clone();
    for pair in &pairs {
        let Some(i) = edges.iter().position(|e| e == pair) else {
            return Err(reject(
                INVALID_VALUE,
                format_args!("{what}: no edge {:#x} -> {:#x}", pair.0, pair.1),
            ));
        };
        edges.remove(i);
    }
    body.edges = edges;
    Ok(())
}

/// `cuGraphDestroyNode`: with its edges; refused in graphs with memory
/// nodes and in graphs a capture records into.
pub fn destroy_node(n: NodeArg) -> Result<(), CUresult> {
    if n.graph.capturing.load(Ordering::Acquire) {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuGraphDestroyNode: a stream capture is recording into the graph"),
        ));
    }
    let removed = {
        let mut body = n.graph.body();
        if body.has_mem_nodes() {
            return Err(reject(
                INVALID_VALUE,
                format_args!("cuGraphDestroyNode: the graph has memory allocation or free nodes"),
            ));
        }
        let i = body.find(n.handle).ok_or(INVALID_VALUE)?;
        let e = body.nodes.remove(i);
        body.edges.retain(|&(a, b)| a != n.handle && b != n.handle);
        body.reindex();
        e
    };
    let _ = NODES.take(n.handle);
    if let Op::Child(child) = &removed.op {
        let _ = GRAPHS.take(child.handle);
        child.unregister_contents();
    }
    Ok(())
}

pub fn node_get_type(n: NodeArg, out: Out<CUgraphNodeType>) -> Result<(), CUresult> {
    let t = n
        .graph
        .body()
        .entry(n.handle)
        .ok_or(INVALID_VALUE)?
        .op
        .kind();
    out.write(t);
    Ok(())
}

pub fn node_get_containing_graph(n: NodeArg, out: Out<CUgraph>) -> Result<(), CUresult> {
    out.write(n.graph.handle());
    Ok(())
}

pub fn node_get_local_id(n: NodeArg, out: Out<c_uint>) -> Result<(), CUresult> {
    let local = n.graph.body().entry(n.handle).ok_or(INVALID_VALUE)?.local;
    out.write(local);
    Ok(())
}

/// `cuGraphNodeGetToolsId`: unique per process — the graph's id and the
/// node's local id, as the DOT output names the node.
pub fn node_get_tools_id(n: NodeArg, out: Out<u64>) -> Result<(), CUresult> {
    let local = n.graph.body().entry(n.handle).ok_or(INVALID_VALUE)?.local;
    out.write((u64::from(n.graph.id) << 32) | u64::from(local));
    Ok(())
}

/// `cuGraphChildGraphNodeGetGraph`: the node's own graph, not a copy.
pub fn child_graph_node_get_graph(n: NodeArg, out: Out<CUgraph>) -> Result<(), CUresult> {
    match &n.graph.body().entry(n.handle).ok_or(INVALID_VALUE)?.op {
        Op::Child(child) => {
            out.write(child.handle());
            Ok(())
        }
        _ => Err(reject(
            INVALID_VALUE,
            format_args!("cuGraphChildGraphNodeGetGraph: not a child graph node"),
        )),
    }
}

/// Marks a graph as owned by a child node (see [`Graph::embedded`]).
pub fn embed(g: &Graph) {
    g.embedded.store(true, Ordering::Release);
}

#[cfg(test)]
mod tests;
