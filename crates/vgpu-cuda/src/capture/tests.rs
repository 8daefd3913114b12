//! The capture rules, without a host: streams, events and contexts are
//! registered directly, and only work that capture keeps in the guest is
//! issued (host functions, event records and waits).
//!
//! Capture state is process-wide (a GLOBAL-mode capture constrains every
//! thread), so these tests run one at a time.

use super::*;
use crate::args::{self, Live};
use crate::context::state::{self, Kind, API_VERSION};
use crate::event::{self, Event};
use crate::graph::{GRAPHS, NODES};
use crate::launch;
use std::ffi::c_void;

static SERIAL: Mutex<()> = Mutex::new(());

const THREAD_LOCAL: CUstreamCaptureMode = CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
const NONE: CUstreamCaptureStatus = CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
const ACTIVE_S: CUstreamCaptureStatus = CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_ACTIVE;
const INVALIDATED_S: CUstreamCaptureStatus =
    CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_INVALIDATED;

/// A context current on this thread, with a (fake) host handle.
struct Ctx(Arc<Context>);

impl Ctx {
    fn new() -> Ctx {
        let c = state::register(Context::new(Kind::Created, 0, 0, 0, API_VERSION));
        c.set_remote(0x77);
        state::push(c.clone());
        Ctx(c)
    }

    fn stream(&self, flags: u32) -> StreamArg {
        StreamArg::Created(stream::test_stream(&self.0, flags))
    }

    fn event(&self) -> Arc<Event> {
        event::test_event(&self.0)
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        state::pop();
        state::unregister(&self.0);
    }
}

fn out<T>(v: &mut T) -> Out<'_, T> {
    // SAFETY: a live local.
    unsafe { vgpu_ffi::from_cuda::<_, Out<T>, CUresult>(v as *mut T) }.unwrap()
}

fn status(s: &StreamArg) -> Result<CUstreamCaptureStatus, CUresult> {
    let mut st = NONE;
    is_capturing(s.clone(), out(&mut st), Null::Legacy)?;
    Ok(st)
}

unsafe extern "C" fn noop(_: *mut c_void) {}

/// A host node on `s` (kept in the guest while capturing).
fn host(s: &StreamArg) -> Result<(), CUresult> {
    launch::launch_host_func(s.clone(), Some(noop), std::ptr::null_mut(), 0, Null::Legacy)
}

fn record(e: &Arc<Event>, s: &StreamArg, flags: u32) -> Result<(), CUresult> {
    event::record(Live(e.clone()), s.clone(), flags, Null::Legacy)
}

fn wait(s: &StreamArg, e: &Arc<Event>, flags: u32) -> Result<(), CUresult> {
    event::stream_wait(s.clone(), Live(e.clone()), flags, Null::Legacy)
}

fn end(s: &StreamArg) -> (Result<(), CUresult>, CUgraph) {
    let mut g: CUgraph = 0x1 as CUgraph;
    let r = end_capture(s.clone(), &mut g, Null::Legacy);
    (r, g)
}

fn graph_of(h: CUgraph) -> Arc<Graph> {
    GRAPHS.get(h as u64).expect("a live graph")
}

/// The graph's edges as pairs of node positions (creation order).
fn edges(g: &Graph) -> Vec<(usize, usize)> {
    let body = g.body();
    let mut e: Vec<(usize, usize)> = body
        .edges
        .iter()
        .map(|(a, b)| (body.find(*a).unwrap(), body.find(*b).unwrap()))
        .collect();
    e.sort_unstable();
    e
}

fn discard(h: CUgraph) {
    graph::discard(&graph_of(h));
}

#[test]
fn capture_records_nodes_in_stream_order() {
    let _serial = SERIAL.lock();
    let c = Ctx::new();
    let s = c.stream(0);
    assert_eq!(status(&s), Ok(NONE));
    begin(s.clone(), GLOBAL, Null::Legacy).unwrap();
    assert_eq!(status(&s), Ok(ACTIVE_S));
    for _ in 0..3 {
        host(&s).unwrap();
    }
    let (r, g) = end(&s);
    r.unwrap();
    assert_eq!(status(&s), Ok(NONE));
    let graph = graph_of(g);
    assert_eq!(graph.body().nodes.len(), 3);
    assert_eq!(edges(&graph), [(0, 1), (1, 2)]);
    assert!(!graph.capturing.load(Ordering::Acquire));
    discard(g);
}

#[test]
fn begin_and_end_refusals() {
    let _serial = SERIAL.lock();
    let c = Ctx::new();
    let s = c.stream(0);
    assert_eq!(
        begin(s.clone(), CUstreamCaptureMode(3), Null::Legacy),
        Err(INVALID_VALUE)
    );
    // The legacy stream, named either way, cannot capture; the per-thread
    // default stream can.
    assert_eq!(
        begin(StreamArg::Null, GLOBAL, Null::Legacy),
        Err(UNSUPPORTED)
    );
    assert_eq!(
        begin(StreamArg::Legacy, GLOBAL, Null::PerThread),
        Err(UNSUPPORTED)
    );
    // Not capturing: ILLEGAL_STATE, even with a NULL graph pointer.
    assert_eq!(end(&s).0, Err(ILLEGAL_STATE));
    assert_eq!(
        end_capture(s.clone(), std::ptr::null_mut(), Null::Legacy),
        Err(ILLEGAL_STATE)
    );
    begin(s.clone(), GLOBAL, Null::Legacy).unwrap();
    assert_eq!(begin(s.clone(), RELAXED, Null::Legacy), Err(ILLEGAL_STATE));
    // A NULL graph pointer on a capturing stream leaves the capture on.
    assert_eq!(
        end_capture(s.clone(), std::ptr::null_mut(), Null::Legacy),
        Err(INVALID_VALUE)
    );
    assert_eq!(status(&s), Ok(ACTIVE_S));
    let (r, g) = end(&s);
    r.unwrap();
    assert!(graph_of(g).body().nodes.is_empty());
    discard(g);

    let pt = StreamArg::Null;
    begin(pt.clone(), GLOBAL, Null::PerThread).unwrap();
    let mut st = NONE;
    is_capturing(pt.clone(), out(&mut st), Null::PerThread).unwrap();
    assert_eq!(st, ACTIVE_S);
    let mut g: CUgraph = std::ptr::null_mut();
    end_capture(pt, &mut g, Null::PerThread).unwrap();
    discard(g);
}

#[test]
fn fork_and_join_through_events() {
    let _serial = SERIAL.lock();
    let c = Ctx::new();
    let (s1, s2) = (c.stream(0), c.stream(0));
    let (fork, join) = (c.event(), c.event());
    begin(s1.clone(), GLOBAL, Null::Legacy).unwrap();
    host(&s1).unwrap(); // A
    record(&fork, &s1, 0).unwrap();
    assert_eq!(status(&s2), Ok(NONE));
    wait(&s2, &fork, 0).unwrap();
    assert_eq!(
        status(&s2),
        Ok(ACTIVE_S),
        "the wait forks s2 into the capture"
    );
    host(&s2).unwrap(); // B, after A
    host(&s1).unwrap(); // C, after A
    record(&join, &s2, 0).unwrap();
    wait(&s1, &join, 0).unwrap();
    host(&s1).unwrap(); // D, after B and C
                        // Ending on the forked stream is not allowed.
    assert_eq!(end(&s2).0, Err(UNMATCHED));
    let (r, g) = end(&s1);
    r.unwrap();
    assert_eq!(status(&s2), Ok(NONE), "every stream leaves the capture");
    let graph = graph_of(g);
    assert_eq!(
        graph.body().nodes.len(),
        4,
        "records and waits make no nodes"
    );
    assert_eq!(edges(&graph), [(0, 1), (0, 2), (1, 3), (2, 3)]);
    discard(g);
}

#[test]
fn an_unjoined_fork_fails_the_capture() {
    let _serial = SERIAL.lock();
    let c = Ctx::new();
    let (s1, s2) = (c.stream(0), c.stream(0));
    let e = c.event();
    begin(s1.clone(), GLOBAL, Null::Legacy).unwrap();
    host(&s1).unwrap();
    record(&e, &s1, 0).unwrap();
    wait(&s2, &e, 0).unwrap();
    host(&s2).unwrap();
    let graph = {
        let mut g: CUgraph = std::ptr::null_mut();
        let mut st = NONE;
        info_v2(
            s1.clone(),
            out(&mut st),
            None,
            Some(out(&mut g)),
            None,
            None,
            Null::Legacy,
        )
        .unwrap();
        graph_of(g)
    };
    let (r, g) = end(&s1);
    assert_eq!(r, Err(UNJOINED));
    assert!(g.is_null());
    assert_eq!((status(&s1), status(&s2)), (Ok(NONE), Ok(NONE)));
    assert!(
        !GRAPHS.contains(graph.raw_handle()),
        "the failed capture's graph is gone"
    );
    // A fork that added nothing needs no join.
    begin(s1.clone(), GLOBAL, Null::Legacy).unwrap();
    record(&e, &s1, 0).unwrap();
    wait(&s2, &e, 0).unwrap();
    host(&s1).unwrap();
    let (r, g) = end(&s1);
    r.unwrap();
    discard(g);
}

#[test]
fn merge_and_isolation_invalidate() {
    let _serial = SERIAL.lock();
    let c = Ctx::new();
    let (s1, s2) = (c.stream(0), c.stream(0));
    let (e, plain) = (c.event(), c.event());
    begin(s1.clone(), GLOBAL, Null::Legacy).unwrap();
    begin(s2.clone(), GLOBAL, Null::Legacy).unwrap();
    record(&e, &s1, 0).unwrap();
    assert_eq!(wait(&s2, &e, 0), Err(MERGE));
    assert_eq!(status(&s1), Ok(INVALIDATED_S));
    assert_eq!(status(&s2), Ok(INVALIDATED_S));
    assert_eq!(host(&s1), Err(INVALIDATED));
    assert_eq!(end(&s1), (Err(INVALIDATED), std::ptr::null_mut()));
    assert_eq!(end(&s2).0, Err(INVALIDATED));
    // Usable afterwards.
    assert_eq!(status(&s1), Ok(NONE));

    begin(s1.clone(), GLOBAL, Null::Legacy).unwrap();
    // An event never recorded in this capture: an EXTERNAL wait is a node,
    // a plain one crosses the capture's boundary.
    wait(&s1, &plain, EXTERNAL).unwrap();
    record(&plain, &s1, EXTERNAL).unwrap();
    {
        let mut g: CUgraph = std::ptr::null_mut();
        let mut st = NONE;
        info_v2(
            s1.clone(),
            out(&mut st),
            None,
            Some(out(&mut g)),
            None,
            None,
            Null::Legacy,
        )
        .unwrap();
        let kinds: Vec<_> = graph_of(g)
            .body()
            .nodes
            .iter()
            .map(|n| n.op.kind())
            .collect();
        assert_eq!(
            kinds,
            [
                cuda_types::cuda::CUgraphNodeType::CU_GRAPH_NODE_TYPE_WAIT_EVENT,
                cuda_types::cuda::CUgraphNodeType::CU_GRAPH_NODE_TYPE_EVENT_RECORD
            ]
        );
    }
    assert_eq!(wait(&s1, &plain, 0), Err(ISOLATION));
    assert_eq!(end(&s1).0, Err(INVALIDATED));
}

#[test]
fn synchronizing_a_capture_invalidates_it_and_the_stream_recovers() {
    let _serial = SERIAL.lock();
    let c = Ctx::new();
    let s = c.stream(0);
    let e = c.event();
    for illegal in 0..4 {
        begin(s.clone(), RELAXED, Null::Legacy).unwrap();
        host(&s).unwrap();
        let r = match illegal {
            0 => stream::synchronize(s.clone(), Null::Legacy),
            1 => stream::query(s.clone(), Null::Legacy),
            2 => {
                record(&e, &s, 0).unwrap();
                event::synchronize(Live(e.clone()))
            }
            _ => crate::context::synchronize(state::CtxArg::Null),
        };
        let want = if illegal == 2 {
            CAPTURED_EVENT
        } else {
            UNSUPPORTED
        };
        assert_eq!(r, Err(want), "case {illegal}");
        assert_eq!(status(&s), Ok(INVALIDATED_S));
        assert_eq!(host(&s), Err(INVALIDATED));
        assert_eq!(end(&s), (Err(INVALIDATED), std::ptr::null_mut()));
        assert_eq!(status(&s), Ok(NONE));
    }
    // Once the capture is over the event is an ordinary one again (the
    // query would go to the host; capture has no objection).
    assert_eq!(event_use(e.mark(), "t"), Ok(()));
}

#[test]
fn callbacks_cannot_be_captured() {
    let _serial = SERIAL.lock();
    let c = Ctx::new();
    let s = c.stream(0);
    unsafe extern "C" fn cb(_: cuda_types::cuda::CUstream, _: CUresult, _: *mut c_void) {}
    begin(s.clone(), GLOBAL, Null::Legacy).unwrap();
    assert_eq!(
        launch::add_callback(s.clone(), Some(cb), std::ptr::null_mut(), 0, Null::Legacy),
        Err(UNSUPPORTED)
    );
    assert_eq!(end(&s).0, Err(INVALIDATED));
}

/// Runs `f` on a new thread whose capture mode is `mode`.
fn on_thread<R: Send + 'static>(
    mode: CUstreamCaptureMode,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    std::thread::spawn(move || {
        let mut m = mode;
        exchange_mode(out(&mut m)).unwrap();
        f()
    })
    .join()
    .unwrap()
}

#[test]
fn capture_modes_decide_unsafe_calls() {
    let _serial = SERIAL.lock();
    let c = Ctx::new();
    let s = c.stream(0);
    let unsafe_ok = || unsafe_call("cuMemAlloc").is_ok();
    for (capture_mode, mine, global_other, relaxed_other) in [
        // (capture mode, own thread refused?, another GLOBAL thread
        // refused?, another RELAXED thread refused?)
        (GLOBAL, true, true, false),
        (THREAD_LOCAL, true, false, false),
        (RELAXED, false, false, false),
    ] {
        begin(s.clone(), capture_mode, Null::Legacy).unwrap();
        assert_eq!(
            on_thread(GLOBAL, move || !unsafe_ok()),
            global_other,
            "{capture_mode:?}"
        );
        assert_eq!(
            on_thread(RELAXED, move || !unsafe_ok()),
            relaxed_other,
            "{capture_mode:?}"
        );
        assert_eq!(
            status(&s),
            Ok(if global_other {
                INVALIDATED_S
            } else {
                ACTIVE_S
            })
        );
        assert_eq!(!unsafe_ok(), mine, "{capture_mode:?}");
        let expect = if mine || global_other {
            Err(INVALIDATED)
        } else {
            Ok(())
        };
        let (r, g) = end(&s);
        assert_eq!(r, expect, "{capture_mode:?}");
        if r.is_ok() {
            discard(g);
        }
    }
    // A thread in RELAXED mode may do anything, even during its own
    // GLOBAL capture.
    begin(s.clone(), GLOBAL, Null::Legacy).unwrap();
    let mut m = RELAXED;
    exchange_mode(out(&mut m)).unwrap();
    assert!(unsafe_ok());
    exchange_mode(out(&mut m)).unwrap();
    assert_eq!(m, RELAXED, "the exchange hands back the previous mode");
    let (r, g) = end(&s);
    r.unwrap();
    discard(g);
}

#[test]
fn ending_on_another_thread() {
    let _serial = SERIAL.lock();
    let c = Ctx::new();
    let s = c.stream(0);
    begin(s.clone(), THREAD_LOCAL, Null::Legacy).unwrap();
    let s2 = s.clone();
    let r = on_thread(GLOBAL, move || {
        let mut g: CUgraph = std::ptr::null_mut();
        end_capture(s2, &mut g, Null::Legacy)
    });
    assert_eq!(r, Err(WRONG_THREAD));
    assert_eq!(status(&s), Ok(ACTIVE_S), "the capture goes on");
    end(&s).0.unwrap();

    begin(s.clone(), RELAXED, Null::Legacy).unwrap();
    let s2 = s.clone();
    let g = on_thread(GLOBAL, move || {
        let mut g: CUgraph = std::ptr::null_mut();
        end_capture(s2, &mut g, Null::Legacy).map(|_| g as u64)
    });
    discard(g.unwrap() as CUgraph);
}

#[test]
fn the_legacy_stream_depends_on_blocking_captures() {
    let _serial = SERIAL.lock();
    let c = Ctx::new();
    let legacy = stream::target(&StreamArg::Null, Null::Legacy).unwrap();
    for (flags, implicit) in [(stream::FLAG_NON_BLOCKING, false), (0, true)] {
        let s = c.stream(flags);
        begin(s.clone(), RELAXED, Null::Legacy).unwrap();
        let mut st = NONE;
        let q = is_capturing(StreamArg::Null, out(&mut st), Null::Legacy);
        assert_eq!(q, if implicit { Err(IMPLICIT) } else { Ok(()) });
        assert_eq!(status(&s), Ok(ACTIVE_S), "queries do not invalidate");
        let r = check(&legacy).map(|s| s.is_none());
        assert_eq!(r, if implicit { Err(IMPLICIT) } else { Ok(true) });
        let r = sync_work(&c.0, Null::Legacy, "cuMemcpy");
        assert_eq!(r, if implicit { Err(IMPLICIT) } else { Ok(()) });
        let (r, g) = end(&s);
        if implicit {
            assert_eq!(r, Err(INVALIDATED));
        } else {
            r.unwrap();
            discard(g);
        }
    }
}

#[test]
fn capture_info_and_dependency_updates() {
    let _serial = SERIAL.lock();
    let c = Ctx::new();
    let s = c.stream(0);
    let mut st = NONE;
    let mut id: cuuint64_t = 0;
    info_v1(s.clone(), out(&mut st), Some(out(&mut id)), Null::Legacy).unwrap();
    assert_eq!(
        (st, id),
        (NONE, 0),
        "nothing else is written when not capturing"
    );
    begin(s.clone(), GLOBAL, Null::Legacy).unwrap();
    let mut g: CUgraph = std::ptr::null_mut();
    let mut deps: *const CUgraphNode = std::ptr::dangling();
    let mut edges: *const CUgraphEdgeData = std::ptr::null();
    let mut n = 99usize;
    info_v3(
        s.clone(),
        out(&mut st),
        Some(out(&mut id)),
        Some(out(&mut g)),
        Some(out(&mut deps)),
        Some(out(&mut edges)),
        Some(out(&mut n)),
        Null::Legacy,
    )
    .unwrap();
    assert_eq!((st, n), (ACTIVE_S, 0));
    assert!(deps.is_null());
    let first_id = id;
    host(&s).unwrap();
    host(&s).unwrap();
    info_v3(
        s.clone(),
        out(&mut st),
        Some(out(&mut id)),
        None,
        Some(out(&mut deps)),
        Some(out(&mut edges)),
        Some(out(&mut n)),
        Null::Legacy,
    )
    .unwrap();
    assert_eq!((id, n), (first_id, 1));
    let graph = graph_of(g);
    let nodes: Vec<u64> = graph.body().nodes.iter().map(|n| n.handle).collect();
    // SAFETY: the array holds `n` handles until the next capture call.
    let shown = unsafe { std::slice::from_raw_parts(deps, n) };
    assert_eq!(shown[0] as u64, nodes[1]);
    // SAFETY: as above.
    let e0 = unsafe { *edges };
    assert_eq!((e0.from_port, e0.to_port, e0.type_), (0, 0, 0));
    // Add the first node to the set, then replace the set by it.
    let mut first = args::handle::<cuda_types::cuda::CUgraphNode_st>(nodes[0]);
    // SAFETY: one live handle.
    unsafe { update_dependencies_v1(s.clone(), &mut first, 1, 0, Null::Legacy) }.unwrap();
    info_v2(
        s.clone(),
        out(&mut st),
        None,
        None,
        Some(out(&mut deps)),
        Some(out(&mut n)),
        Null::Legacy,
    )
    .unwrap();
    assert_eq!(n, 2);
    // SAFETY: one live handle.
    unsafe { update_dependencies_v1(s.clone(), &mut first, 1, SET_DEPENDENCIES, Null::Legacy) }
        .unwrap();
    host(&s).unwrap();
    let last = nodes_last(&graph);
    assert_eq!(graph.body().deps_of(last), vec![nodes[0]]);
    // SAFETY: as above.
    let bad_flags = unsafe { update_dependencies_v1(s.clone(), &mut first, 1, 2, Null::Legacy) };
    assert_eq!(bad_flags, Err(INVALID_VALUE));
    // Another graph's node is not a dependency of this capture.
    let other = Graph::create();
    let foreign = other.add(Op::Empty, &[]).unwrap();
    let mut f = args::handle::<cuda_types::cuda::CUgraphNode_st>(foreign);
    // SAFETY: one live handle.
    let r = unsafe { update_dependencies_v1(s.clone(), &mut f, 1, 0, Null::Legacy) };
    assert_eq!(r, Err(INVALID_VALUE));
    graph::discard(&other);
    let (r, g2) = end(&s);
    r.unwrap();
    assert_eq!(g2, g);
    // Second capture, new id.
    begin(s.clone(), GLOBAL, Null::Legacy).unwrap();
    info_v1(s.clone(), out(&mut st), Some(out(&mut id)), Null::Legacy).unwrap();
    assert_ne!(id, first_id);
    let (_, g3) = end(&s);
    discard(g3);
    discard(g);
    // Not capturing: ILLEGAL_STATE.
    // SAFETY: as above.
    let r = unsafe { update_dependencies_v1(s.clone(), &mut first, 1, 0, Null::Legacy) };
    assert_eq!(r, Err(ILLEGAL_STATE));
}

fn nodes_last(g: &Graph) -> u64 {
    g.body().nodes.last().unwrap().handle
}

#[test]
fn capture_into_an_existing_graph() {
    let _serial = SERIAL.lock();
    let c = Ctx::new();
    let s = c.stream(0);
    let g = Graph::create();
    let root = g.add(Op::Empty, &[]).unwrap();
    let dep = args::handle::<cuda_types::cuda::CUgraphNode_st>(root);
    // SAFETY: one live handle, no edge data.
    unsafe {
        begin_to_graph(
            s.clone(),
            Live(g.clone()),
            &dep,
            std::ptr::null(),
            1,
            GLOBAL,
            Null::Legacy,
        )
    }
    .unwrap();
    // Destroying or trimming a graph being captured into is refused.
    assert_eq!(graph::destroy(Live(g.clone())), Err(INVALID_VALUE));
    host(&s).unwrap();
    let (r, out_g) = end(&s);
    r.unwrap();
    assert_eq!(out_g, g.handle());
    assert_eq!(edges(&g), [(0, 1)]);
    assert!(NODES.get(root).is_ok());
    graph::discard(&g);
}

#[test]
fn a_destroyed_origin_stream_ends_its_capture() {
    let _serial = SERIAL.lock();
    let c = Ctx::new();
    let s = c.stream(0);
    begin(s.clone(), GLOBAL, Null::Legacy).unwrap();
    let before = ACTIVE.load(Ordering::Acquire);
    let StreamArg::Created(obj) = &s else {
        unreachable!()
    };
    forget_stream(obj.raw_handle());
    assert_eq!(ACTIVE.load(Ordering::Acquire), before - 1);
    assert_eq!(status(&s), Ok(NONE));
}

#[test]
fn a_captured_graph_launch_is_a_child_graph_node() {
    let _serial = SERIAL.lock();
    let c = Ctx::new();
    let s = c.stream(0);
    // An executable graph of guest-only work: empty -> host.
    let inner = Graph::create();
    let a = inner.add(Op::Empty, &[]).unwrap();
    inner
        .add(
            Op::Host(crate::graph::node::Host {
                func: noop,
                user: 0,
                sync_mode: 0,
            }),
            &[a],
        )
        .unwrap();
    let mut e: cuda_types::cuda::CUgraphExec = std::ptr::null_mut();
    crate::graph::exec::instantiate_with_flags(out(&mut e), Live(inner.clone()), 0).unwrap();
    let exec = crate::graph::exec::EXECS.get(e as u64).unwrap();
    begin(s.clone(), GLOBAL, Null::Legacy).unwrap();
    host(&s).unwrap();
    crate::graph::exec::launch(Live(exec.clone()), s.clone(), Null::Legacy).unwrap();
    let (r, g) = end(&s);
    r.unwrap();
    let outer = graph_of(g);
    let body = outer.body();
    assert_eq!(body.nodes.len(), 2);
    let Op::Child(child) = &body.nodes[1].op else {
        panic!("the launch is a child graph node");
    };
    assert_eq!(child.body().nodes.len(), 2);
    assert_eq!(child.body().edges.len(), 1);
    assert_eq!(
        body.deps_of(body.nodes[1].handle),
        vec![body.nodes[0].handle]
    );
    drop(body);
    crate::graph::exec::destroy(e).unwrap();
    discard(g);
    graph::discard(&inner);
}

#[test]
fn mode_exchange_through_the_export() {
    use crate::cuThreadExchangeStreamCaptureMode as exchange;
    // A fresh thread: the default mode is GLOBAL.
    std::thread::spawn(|| {
        let mut m = RELAXED;
        // SAFETY: valid locals, or NULL, through the export.
        unsafe {
            assert_eq!(exchange(&mut m), CUresult::CUDA_SUCCESS);
            assert_eq!(m, GLOBAL);
            assert_eq!(exchange(&mut m), CUresult::CUDA_SUCCESS);
            assert_eq!(m, RELAXED);
            let mut bad = CUstreamCaptureMode(7);
            assert_eq!(exchange(&mut bad), INVALID_VALUE);
            assert_eq!(bad, CUstreamCaptureMode(7), "left as it was");
            assert_eq!(exchange(std::ptr::null_mut()), INVALID_VALUE);
        }
    })
    .join()
    .unwrap();
}
