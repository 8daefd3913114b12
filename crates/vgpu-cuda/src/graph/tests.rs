//! The graph model without a host: topology, queries, clones, child
//! graphs, generic parameters, DOT output, phases and executable-graph
//! updates of graphs whose nodes need no device (host, empty nodes).

use super::exec::{self, Exec};
use super::node::{self, Host, Op};
use super::*;
use crate::context::state::{self, Context, Kind, API_VERSION};
use cuda_types::cuda::{
    CUgraphExec, CUgraphExecUpdateResult, CUgraphExecUpdateResultInfo, CUgraphNodeParams,
    CUDA_HOST_NODE_PARAMS,
};
use std::ffi::c_void;

fn out<T>(v: &mut T) -> Out<'_, T> {
    // SAFETY: a live local.
    unsafe { vgpu_ffi::from_cuda::<_, Out<T>, CUresult>(v as *mut T) }.unwrap()
}

fn input<T>(v: &T) -> vgpu_ffi::In<'_, T> {
    // SAFETY: a live local.
    unsafe { vgpu_ffi::from_cuda::<_, vgpu_ffi::In<T>, CUresult>(v as *const T) }.unwrap()
}

unsafe extern "C" fn bump(p: *mut c_void) {
    // SAFETY: the tests pass a live u32.
    unsafe { *p.cast::<u32>() += 1 };
}

unsafe extern "C" fn other(_: *mut c_void) {}

fn host_op(f: unsafe extern "C" fn(*mut c_void), user: usize) -> Op {
    Op::Host(Host {
        func: f,
        user,
        sync_mode: 0,
    })
}

fn h(n: u64) -> CUgraphNode {
    args::handle(n)
}

fn arg(n: u64) -> NodeArg {
    NodeArg::resolve(h(n)).unwrap()
}

/// A diamond: a -> {b, c} -> d.
fn diamond() -> (Arc<Graph>, [u64; 4]) {
    let g = Graph::create();
    let a = g.add(Op::Empty, &[]).unwrap();
    let b = g.add(Op::Empty, &[a]).unwrap();
    let c = g.add(Op::Empty, &[a]).unwrap();
    let d = g.add(Op::Empty, &[b, c]).unwrap();
    (g, [a, b, c, d])
}

fn raw<'a>(p: *mut usize) -> Out<'a, usize> {
    // SAFETY: the caller's live local.
    unsafe { vgpu_ffi::from_cuda::<_, Out<usize>, CUresult>(p) }.unwrap()
}

/// A list query: (count only, then into room for `room` entries).
fn list(f: impl Fn(*mut CUgraphNode, *mut usize), room: usize) -> (usize, Vec<u64>, usize) {
    let mut n = 0usize;
    f(std::ptr::null_mut(), &mut n);
    let mut buf = vec![0x5 as CUgraphNode; room];
    let mut got = room;
    f(buf.as_mut_ptr(), &mut got);
    (n, buf.into_iter().map(|p| p as u64).collect(), got)
}

#[test]
fn topology_queries() {
    let (g, [a, b, c, d]) = diamond();
    // SAFETY: `list` passes buffers as large as the room it says.
    let nodes = |p, n| unsafe { get_nodes(Live(g.clone()), p, raw(n)) }.unwrap();
    let (count, got, written) = list(nodes, 6);
    assert_eq!((count, written), (4, 4));
    assert_eq!(got, [a, b, c, d, 0, 0], "extra room is set to NULL");
    let (_, got, written) = list(nodes, 2);
    assert_eq!((got, written), (vec![a, b], 2));
    // SAFETY: `list` passes buffers as large as the room it says.
    let roots = |p, n| unsafe { get_root_nodes(Live(g.clone()), p, raw(n)) }.unwrap();
    assert_eq!(list(roots, 1), (1, vec![a], 1));
    // SAFETY: `list` passes buffers as large as the room it says.
    let deps = |p, n| unsafe { node_neighbours_v1(arg(d), p, raw(n), false) }.unwrap();
    assert_eq!(list(deps, 2), (2, vec![b, c], 2));
    // SAFETY: `list` passes buffers as large as the room it says.
    let dependents = |p, n| unsafe { node_neighbours_v1(arg(a), p, raw(n), true) }.unwrap();
    assert_eq!(list(dependents, 2), (2, vec![b, c], 2));
    // Edges, v2 with zeroed edge data.
    let (mut from, mut to) = ([std::ptr::null_mut(); 5], [std::ptr::null_mut(); 5]);
    let mut data = [CUgraphEdgeData {
        from_port: 9,
        ..Default::default()
    }; 5];
    let mut n = 5usize;
    // SAFETY: 5 entries each.
    unsafe {
        get_edges(
            Live(g.clone()),
            from.as_mut_ptr(),
            to.as_mut_ptr(),
            data.as_mut_ptr(),
            out(&mut n),
        )
    }
    .unwrap();
    assert_eq!(n, 4);
    let pairs: Vec<(u64, u64)> = (0..4).map(|i| (from[i] as u64, to[i] as u64)).collect();
    assert_eq!(pairs, [(a, b), (a, c), (b, d), (c, d)]);
    assert!(from[4].is_null() && to[4].is_null());
    assert!(data[..4].iter().all(|e| e.from_port == 0));
    // from without to: refused.
    // SAFETY: refused before any write.
    let r = unsafe {
        get_edges(
            Live(g.clone()),
            from.as_mut_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            out(&mut n),
        )
    };
    assert_eq!(r, Err(INVALID_VALUE));
    discard(&g);
    assert!(NODES.get(a).is_err(), "a destroyed graph's nodes are gone");
}

#[test]
fn dependencies_are_checked() {
    let (g, [a, b, _c, d]) = diamond();
    let (other, [x, ..]) = diamond();
    // Another graph's node as a dependency.
    assert_eq!(g.add(Op::Empty, &[x]).err(), Some(INVALID_VALUE));
    assert_eq!(g.add(Op::Empty, &[a, a]).err(), Some(INVALID_VALUE));
    let add = |f: u64, t: u64| {
        let (f, t) = (h(f), h(t));
        // SAFETY: one handle each.
        unsafe { add_dependencies_v1(Live(g.clone()), &f, &t, 1) }
    };
    assert_eq!(add(a, b), Err(INVALID_VALUE), "exists already");
    assert_eq!(add(d, d), Err(INVALID_VALUE), "self edge");
    assert_eq!(add(x, d), Err(INVALID_VALUE), "another graph's node");
    add(a, d).unwrap();
    let remove = |f: u64, t: u64| {
        let (f, t) = (h(f), h(t));
        // SAFETY: one handle each.
        unsafe { remove_dependencies_v1(Live(g.clone()), &f, &t, 1) }
    };
    remove(a, d).unwrap();
    assert_eq!(remove(a, d), Err(INVALID_VALUE), "gone already");
    // Edge data other than the default is not supported.
    let data = CUgraphEdgeData {
        type_: 1,
        ..Default::default()
    };
    let (f, t) = (h(a), h(d));
    // SAFETY: one entry each.
    let r = unsafe { add_dependencies(Live(g.clone()), &f, &t, &data, 1) };
    assert_eq!(r, Err(NOT_SUPPORTED));
    // Destroying a node takes its edges.
    destroy_node(arg(b)).unwrap();
    assert_eq!(g.body().nodes.len(), 3);
    assert_eq!(g.body().deps_of(d).len(), 1);
    assert!(NodeArg::resolve(h(b)).is_err());
    discard(&g);
    discard(&other);
}

#[test]
fn clones_are_independent_and_findable() {
    let (g, [a, _, _, d]) = diamond();
    let mut ch: CUgraph = std::ptr::null_mut();
    clone(out(&mut ch), Live(g.clone())).unwrap();
    let copy: Arc<Graph> = GRAPHS.get(ch as u64).unwrap();
    let mut found: CUgraphNode = std::ptr::null_mut();
    find_in_clone(out(&mut found), arg(d), Live(copy.clone())).unwrap();
    let found = found as u64;
    assert_ne!(found, d);
    assert_eq!(copy.body().deps_of(found).len(), 2);
    g.add(Op::Empty, &[d]).unwrap();
    assert_eq!(copy.body().nodes.len(), 4, "the copy does not change");
    // A node of a graph not cloned into `copy` has no copy there.
    let (third, [t, ..]) = diamond();
    let r = find_in_clone(out(&mut std::ptr::null_mut()), arg(t), Live(copy.clone()));
    assert_eq!(r, Err(INVALID_VALUE));
    let _ = a;
    for x in [g, copy, third] {
        discard(&x);
    }
}

#[test]
fn child_graphs_are_copied_and_owned() {
    let (child, _) = diamond();
    let parent = Graph::create();
    let mut n: CUgraphNode = std::ptr::null_mut();
    // SAFETY: no dependencies.
    unsafe {
        node::add_child_graph_node(
            out(&mut n),
            Live(parent.clone()),
            std::ptr::null(),
            0,
            Live(child.clone()),
        )
    }
    .unwrap();
    let mut embedded: CUgraph = std::ptr::null_mut();
    child_graph_node_get_graph(arg(n as u64), out(&mut embedded)).unwrap();
    assert_ne!(embedded, child.handle(), "the child is cloned");
    let inner: Arc<Graph> = GRAPHS.get(embedded as u64).unwrap();
    assert_eq!(inner.body().nodes.len(), 4);
    assert_eq!(
        destroy(Live(inner.clone())),
        Err(INVALID_VALUE),
        "owned by the node"
    );
    // A graph cannot contain itself.
    // SAFETY: no dependencies.
    let r = unsafe {
        node::add_child_graph_node(
            out(&mut n),
            Live(parent.clone()),
            std::ptr::null(),
            0,
            Live(parent.clone()),
        )
    };
    assert_eq!(r, Err(INVALID_VALUE));
    destroy(Live(parent.clone())).unwrap();
    assert!(!GRAPHS.contains(inner.raw_handle()), "gone with its parent");
    discard(&child);
}

#[test]
fn node_parameters_by_kind_and_generically() {
    let g = Graph::create();
    let mut counter = 0u32;
    let mut n: CUgraphNode = std::ptr::null_mut();
    let p = CUDA_HOST_NODE_PARAMS {
        fn_: Some(bump),
        userData: (&mut counter as *mut u32).cast(),
    };
    // SAFETY: no dependencies.
    unsafe { node::add_host_node(out(&mut n), Live(g.clone()), std::ptr::null(), 0, input(&p)) }
        .unwrap();
    let mut back = CUDA_HOST_NODE_PARAMS::default();
    node::host_get_params(arg(n as u64), out(&mut back)).unwrap();
    assert_eq!(back.userData, p.userData);
    let mut ty = CUgraphNodeType(99);
    node_get_type(arg(n as u64), out(&mut ty)).unwrap();
    assert_eq!(ty, CUgraphNodeType::CU_GRAPH_NODE_TYPE_HOST);
    // Asking a host node for memset parameters is the wrong kind.
    let mut m = Default::default();
    assert_eq!(
        node::memset_get_params(arg(n as u64), out(&mut m)),
        Err(INVALID_VALUE)
    );
    // The generic form: an empty node, then the host node's parameters.
    // SAFETY: all-zero parameters are valid.
    let mut gp: CUgraphNodeParams = unsafe { std::mem::zeroed() };
    gp.type_ = CUgraphNodeType::CU_GRAPH_NODE_TYPE_EMPTY;
    let mut e: CUgraphNode = std::ptr::null_mut();
    let dep = n;
    // SAFETY: one dependency.
    unsafe { node::add_node_v1(out(&mut e), Live(g.clone()), &dep, 1, out(&mut gp)) }.unwrap();
    let mut q: CUgraphNodeParams = node::params_of(&Op::Empty);
    node::node_get_params(arg(n as u64), out(&mut q)).unwrap();
    assert_eq!(q.type_, CUgraphNodeType::CU_GRAPH_NODE_TYPE_HOST);
    // SAFETY: the member the type selects.
    assert_eq!(unsafe { q.__bindgen_anon_1.host.userData }, p.userData);
    // Setting an empty node with host parameters: wrong kind.
    assert_eq!(
        // SAFETY: valid parameters.
        unsafe { node::node_set_params(arg(e as u64), input(&q)) },
        Err(INVALID_VALUE)
    );
    // Reserved bytes must be zero; unknown kinds are not supported.
    gp.reserved0[1] = 1;
    // SAFETY: refused before use.
    let r = unsafe {
        node::add_node_v1(
            out(&mut e),
            Live(g.clone()),
            std::ptr::null(),
            0,
            out(&mut gp),
        )
    };
    assert_eq!(r, Err(INVALID_VALUE));
    gp.reserved0[1] = 0;
    gp.type_ = CUgraphNodeType::CU_GRAPH_NODE_TYPE_CONDITIONAL;
    // SAFETY: refused before use.
    let r = unsafe {
        node::add_node_v1(
            out(&mut e),
            Live(g.clone()),
            std::ptr::null(),
            0,
            out(&mut gp),
        )
    };
    assert_eq!(r, Err(NOT_SUPPORTED));
    discard(&g);
}

#[test]
fn dot_output_names_nodes_and_edges() {
    let (g, _) = diamond();
    g.add(host_op(other, 7), &[]).unwrap();
    let text = dot::render(&g, 1);
    let id = g.id;
    assert!(text.starts_with("digraph dot {"), "{text}");
    assert!(
        text.contains(&format!("subgraph cluster_{id} {{")),
        "{text}"
    );
    assert!(
        text.contains(&format!("\"graph_{id}_node_0\" -> \"graph_{id}_node_1\";")),
        "{text}"
    );
    assert!(
        text.contains(&format!("\"graph_{id}_node_2\" -> \"graph_{id}_node_3\";")),
        "{text}"
    );
    assert!(
        text.contains("EMPTY") && text.contains("HOST\\nfn"),
        "{text}"
    );
    assert_eq!(text.matches(" -> ").count(), 4);
    let path = std::env::temp_dir().join(format!("vgpu-dot-{}.dot", std::process::id()));
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    dot::debug_dot_print(Live(g.clone()), &c, 0).unwrap();
    assert!(std::fs::read_to_string(&path).unwrap().contains("EMPTY"));
    let _ = std::fs::remove_file(&path);
    let bad = std::ffi::CString::new("/nonexistent-dir/x.dot").unwrap();
    assert_eq!(
        dot::debug_dot_print(Live(g.clone()), &bad, 0),
        Err(CUresult::CUDA_ERROR_OPERATING_SYSTEM)
    );
    discard(&g);
}

#[test]
fn phases_follow_guest_nodes() {
    // 0 (device) -> 1 (guest) -> 2 (device) -> 3 (guest); 4 (device) alone;
    // 5 (guest) after 0 only.
    let guest = [false, true, false, true, false, true];
    let preds = vec![vec![], vec![0], vec![1], vec![2], vec![], vec![0]];
    let order = [0, 1, 2, 3, 4, 5];
    assert_eq!(exec::phases(&order, &preds, &guest), [0, 0, 1, 1, 0, 0]);
}

/// A context current on this thread with a fake host handle, for
/// instantiation (which names the host context).
struct Current(Arc<Context>);

impl Current {
    fn new() -> Current {
        let c = state::register(Context::new(Kind::Created, 0, 0, 0, API_VERSION));
        c.set_remote(0x99);
        state::push(c.clone());
        Current(c)
    }
}

impl Drop for Current {
    fn drop(&mut self) {
        state::pop();
        state::unregister(&self.0);
    }
}

fn instantiate(g: &Arc<Graph>, flags: u64) -> Result<Arc<Exec>, CUresult> {
    let mut e: CUgraphExec = std::ptr::null_mut();
    exec::instantiate_with_flags(out(&mut e), Live(g.clone()), flags)?;
    Ok(exec::EXECS.get(e as u64).unwrap())
}

#[test]
fn instantiation_cuts_phases_and_checks_flags() {
    let _ctx = Current::new();
    let g = Graph::create();
    let a = g.add(Op::Empty, &[]).unwrap();
    let b = g.add(host_op(other, 0), &[a]).unwrap();
    let c = g.add(Op::Empty, &[b]).unwrap();
    g.add(Op::Empty, &[]).unwrap();
    let e = instantiate(&g, 0).unwrap();
    // Phase 0: two device nodes, then the host node; phase 1: one. Empty
    // nodes alone need no host graph.
    assert_eq!(exec::shape(&e), [(2, 1, 0), (1, 0, 0)]);
    let mut flags = 0u64;
    exec::get_flags(Live(e.clone()), out(&mut flags)).unwrap();
    assert_eq!(flags, 0);
    assert_eq!(
        instantiate(&g, 4).err(),
        Some(NOT_SUPPORTED),
        "DEVICE_LAUNCH"
    );
    assert_eq!(
        instantiate(&g, 5).err(),
        Some(INVALID_VALUE),
        "with AUTO_FREE"
    );
    assert_eq!(
        instantiate(&g, 0x40).err(),
        Some(INVALID_VALUE),
        "unknown flag"
    );
    assert_eq!(
        instantiate(&g, 2).err(),
        Some(INVALID_VALUE),
        "UPLOAD needs WithParams"
    );
    instantiate(&g, 1 | 8).unwrap();
    // A cycle is an invalid structure.
    let (f, t) = (h(c), h(a));
    // SAFETY: one handle each.
    unsafe { add_dependencies_v1(Live(g.clone()), &f, &t, 1) }.unwrap();
    let mut ex: CUgraphExec = std::ptr::null_mut();
    let mut err: CUgraphNode = std::ptr::null_mut();
    let mut log = [0 as std::ffi::c_char; 64];
    // SAFETY: 64 writable bytes.
    let r = unsafe {
        exec::instantiate_v1(
            out(&mut ex),
            Live(g.clone()),
            Some(out(&mut err)),
            log.as_mut_ptr(),
            log.len(),
        )
    };
    assert_eq!(r, Err(INVALID_VALUE));
    assert!(!err.is_null());
    // SAFETY: NUL-terminated by the call.
    let msg = unsafe { std::ffi::CStr::from_ptr(log.as_ptr()) };
    assert!(msg.to_string_lossy().contains("cycle"), "{msg:?}");
    discard(&g);
}

#[test]
fn updates_pair_nodes_and_apply_the_rules() {
    let _ctx = Current::new();
    let make = |f: unsafe extern "C" fn(*mut c_void), extra: bool| {
        let g = Graph::create();
        let a = g.add(Op::Empty, &[]).unwrap();
        let b = g.add(host_op(f, 1), &[a]).unwrap();
        if extra {
            g.add(Op::Empty, &[b]).unwrap();
        }
        (g, a, b)
    };
    let (g1, _, b1) = make(bump, false);
    let e = instantiate(&g1, 0).unwrap();
    let (g2, _, b2) = make(other, false);
    let mut info = CUgraphExecUpdateResultInfo::default();
    exec::update_v2(Live(e.clone()), Live(g2.clone()), out(&mut info)).unwrap();
    assert_eq!(
        info.result,
        CUgraphExecUpdateResult::CU_GRAPH_EXEC_UPDATE_SUCCESS
    );
    // Another node count: topology changed, no node named.
    let (g3, ..) = make(other, true);
    let r = exec::update_v2(Live(e.clone()), Live(g3.clone()), out(&mut info));
    assert_eq!(r, Err(CUresult::CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE));
    assert_eq!(
        info.result,
        CUgraphExecUpdateResult::CU_GRAPH_EXEC_UPDATE_ERROR_TOPOLOGY_CHANGED
    );
    assert!(info.errorNode.is_null());
    // A node of another kind: named.
    let g4 = Graph::create();
    let a4 = g4.add(Op::Empty, &[]).unwrap();
    let b4 = g4.add(Op::Empty, &[a4]).unwrap();
    let mut res = CUgraphExecUpdateResult(0);
    let mut bad: CUgraphNode = std::ptr::null_mut();
    let r = exec::update_v1(
        Live(e.clone()),
        Live(g4.clone()),
        Some(out(&mut bad)),
        out(&mut res),
    );
    assert_eq!(r, Err(CUresult::CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE));
    assert_eq!(
        res,
        CUgraphExecUpdateResult::CU_GRAPH_EXEC_UPDATE_ERROR_NODE_TYPE_CHANGED
    );
    assert_eq!(bad as u64, b4);
    // Edges that differ: topology, naming the node and its dependency.
    let g5 = Graph::create();
    let a5 = g5.add(Op::Empty, &[]).unwrap();
    let b5 = g5.add(host_op(other, 1), &[]).unwrap();
    let (f, t) = (h(b5), h(a5));
    // SAFETY: one handle each.
    unsafe { add_dependencies_v1(Live(g5.clone()), &f, &t, 1) }.unwrap();
    let r = exec::update_v2(Live(e.clone()), Live(g5.clone()), out(&mut info));
    assert_eq!(r, Err(CUresult::CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE));
    assert_eq!(
        info.result,
        CUgraphExecUpdateResult::CU_GRAPH_EXEC_UPDATE_ERROR_TOPOLOGY_CHANGED
    );
    assert_eq!(info.errorNode as u64, a5);
    // Per-node setters take nodes of the instantiated graph only.
    let p = CUDA_HOST_NODE_PARAMS {
        fn_: Some(other),
        userData: std::ptr::null_mut(),
    };
    exec::host_set_params(Live(e.clone()), arg(b1), input(&p)).unwrap();
    assert_eq!(
        exec::host_set_params(Live(e.clone()), arg(b2), input(&p)),
        Err(INVALID_VALUE)
    );
    // Enable flags: kernel, memset and memcpy nodes only.
    assert_eq!(
        exec::set_enabled(Live(e.clone()), arg(b1), 0),
        Err(INVALID_VALUE)
    );
    exec::destroy(e.handle()).unwrap();
    assert_eq!(exec::destroy(e.handle()), Err(INVALID_VALUE));
    for g in [g1, g2, g3, g4, g5] {
        discard(&g);
    }
}
