//! Stream capture, recorded in the guest (docs/graphs.md, "Where capture
//! state lives"): a capturing stream's work becomes nodes of a guest graph
//! ([`crate::graph`]) and sends nothing; the host sees the graph when it is
//! instantiated. Only the guest knows which application thread made a call,
//! which the mode rules are about, and only guest state can refuse an
//! illegal call at the call, as CUDA does.
//!
//! Every stream-ordered entry point (kernel launches incl. `Ex` and
//! cooperative, async copies and memsets, host functions, event records
//! and waits, `cuMemAllocAsync`/`cuMemFreeAsync`, `cuGraphLaunch`) resolves
//! its stream and asks [`check`] first: `None` — send as usual; a [`Sink`]
//! — append a node after the stream's current dependencies instead. With
//! no capture in the process that is one atomic load.
//!
//! # The rules, and where they come from
//!
//! Sources: the CUDA driver API reference (the pinned `cuda.h` 13.5 doc
//! comments of `cuStreamBeginCapture`, `cuStreamBeginCaptureToGraph`,
//! `cuThreadExchangeStreamCaptureMode`, `cuStreamEndCapture`,
//! `cuStreamIsCapturing`, `cuStreamGetCaptureInfo`,
//! `cuStreamUpdateCaptureDependencies`, `cuStreamAddCallback`,
//! `cuCtxRecordEvent`/`cuCtxWaitEvent`, and the `CUDA_ERROR_STREAM_CAPTURE_*`
//! / `CUDA_ERROR_CAPTURED_EVENT` descriptions), the CUDA Programming
//! Guide's "Prohibited and Unhandled Operations" and "Invalidation"
//! sections, and where those leave a code open, the behaviour AMD's HIP
//! conformance tests assert on NVIDIA hardware (hip-tests
//! `catch/unit/graph/hipStreamBeginCapture.cc`, `hipStreamEndCapture.cc`).
//!
//! * **Begin** (`cuStreamBeginCapture[_v2][_ptsz]`, `...ToGraph`): a mode
//!   outside GLOBAL/THREAD_LOCAL/RELAXED is `INVALID_VALUE`; the legacy
//!   stream (NULL at the non-`_ptsz` entry points, `CU_STREAM_LEGACY`)
//!   cannot capture: `STREAM_CAPTURE_UNSUPPORTED`; a stream already in a
//!   capture (begun there or joined by a fork) is `ILLEGAL_STATE`. The
//!   mode-less v1 `cuStreamBeginCapture` captures in GLOBAL mode, the
//!   default mode.
//! * **Modes** (`cuThreadExchangeStreamCaptureMode`): a thread is
//!   prohibited from *potentially unsafe* calls when it began a capture not
//!   in RELAXED mode (its own mode GLOBAL or THREAD_LOCAL), or when its mode
//!   is GLOBAL and any thread has a capture begun in GLOBAL mode. A
//!   prohibited call fails with `STREAM_CAPTURE_UNSUPPORTED` and
//!   invalidates the captures that prohibited it. The potentially unsafe
//!   calls here are those not ordered on a stream, which capture cannot
//!   record: `cuMemAlloc[Pitch]`, `cuMemFree`, `cuMemAllocHost`,
//!   `cuMemHostAlloc`, `cuMemFreeHost`, `cuMemHostRegister/Unregister`
//!   (the driver names `cudaMalloc` as the example), synchronous copies and
//!   memsets, and `cuStreamSynchronize`/`cuStreamQuery` of a stream that is
//!   not capturing (hip-tests: from another thread, refused only with a
//!   GLOBAL capture). Event queries and synchronizations of events not
//!   recorded in a capture are allowed in every mode (hip-tests).
//! * **Necessarily conflicting** calls fail in every mode and invalidate:
//!   synchronizing or querying a capturing stream
//!   (`STREAM_CAPTURE_UNSUPPORTED`); `cuCtxSynchronize` of a context with a
//!   capture (`STREAM_CAPTURE_UNSUPPORTED`, from any thread — the Guide's
//!   "broader handle"); querying, synchronizing or timing an event last
//!   recorded in an active capture (`CAPTURED_EVENT`);
//!   `cuStreamAddCallback` into a capture (`STREAM_CAPTURE_UNSUPPORTED`: its
//!   doc says callbacks are not supported in capture, unlike
//!   `cuLaunchHostFunc`).
//! * **Legacy stream** (IMPLICIT): while a stream not created with
//!   `CU_STREAM_NON_BLOCKING` (or a per-thread default stream) captures in a
//!   context, any use of that context's legacy stream — work on it,
//!   synchronous copies and memsets (which use it), synchronizing it — is
//!   `STREAM_CAPTURE_IMPLICIT` and invalidates those captures;
//!   `cuStreamIsCapturing`/`GetCaptureInfo` of it return
//!   `STREAM_CAPTURE_IMPLICIT` without invalidating.
//! * **Events**: `cuEventRecord` into a capture makes no node; the event
//!   remembers the capture and the stream's dependency set. A
//!   `cuStreamWaitEvent` on such an event *forks* a stream that is not
//!   capturing into the capture, or adds the set to a stream already in it;
//!   a stream in another capture gets `STREAM_CAPTURE_MERGE` (both
//!   invalidated). A capturing stream waiting for an event not recorded in
//!   a capture gets `STREAM_CAPTURE_ISOLATION` (invalidated) unless the
//!   wait has `CU_EVENT_WAIT_EXTERNAL` (an event wait node); a record with
//!   `CU_EVENT_RECORD_EXTERNAL` is an event record node.
//! * **Invalidation**: once invalidated, work on the capture's streams
//!   fails with `STREAM_CAPTURE_INVALIDATED`; `cuStreamEndCapture` ends it
//!   anyway, returns `STREAM_CAPTURE_INVALIDATED` and a NULL graph, and the
//!   streams are usable again.
//! * **End** (`cuStreamEndCapture[_ptsz]`): not capturing:
//!   `ILLEGAL_STATE` (hip-tests, also with a NULL graph pointer); a stream
//!   that joined but did not begin the capture: `STREAM_CAPTURE_UNMATCHED`;
//!   a capture not begun in RELAXED mode, ended by another thread:
//!   `STREAM_CAPTURE_WRONG_THREAD` (the capture goes on). A fork whose
//!   stream's dependencies do not lead to the origin stream's:
//!   `STREAM_CAPTURE_UNJOINED` (the capture ends, NULL graph). Every stream
//!   of the capture leaves capture mode.
//! * **Queries**: `cuStreamGetCaptureInfo` v2/v3 return the id (unique for
//!   the process), the graph, and the dependency array, which stays valid
//!   until the next capture call on that stream or the end of the capture;
//!   `cuStreamUpdateCaptureDependencies[_v2]` adds to (flags 0/ADD) or
//!   replaces (SET) it, `ILLEGAL_STATE` when not capturing.

use crate::args::Live;
use crate::check::reject;
use crate::context::state::Context;
use crate::graph::node::Op;
use crate::graph::{self, Graph};
use crate::stream::{self, Null, StreamArg, Target, PER_THREAD};
use cuda_types::cuda::{
    cuuint64_t, CUgraph, CUgraphEdgeData, CUgraphNode, CUresult, CUstreamCaptureMode,
    CUstreamCaptureStatus,
};
use parking_lot::Mutex;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use vgpu_ffi::Out;

const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;
const ILLEGAL_STATE: CUresult = CUresult::CUDA_ERROR_ILLEGAL_STATE;
pub const UNSUPPORTED: CUresult = CUresult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
const INVALIDATED: CUresult = CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
const MERGE: CUresult = CUresult::CUDA_ERROR_STREAM_CAPTURE_MERGE;
const UNMATCHED: CUresult = CUresult::CUDA_ERROR_STREAM_CAPTURE_UNMATCHED;
const UNJOINED: CUresult = CUresult::CUDA_ERROR_STREAM_CAPTURE_UNJOINED;
const ISOLATION: CUresult = CUresult::CUDA_ERROR_STREAM_CAPTURE_ISOLATION;
const IMPLICIT: CUresult = CUresult::CUDA_ERROR_STREAM_CAPTURE_IMPLICIT;
const CAPTURED_EVENT: CUresult = CUresult::CUDA_ERROR_CAPTURED_EVENT;
const WRONG_THREAD: CUresult = CUresult::CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD;

const GLOBAL: CUstreamCaptureMode = CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL;
const RELAXED: CUstreamCaptureMode = CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED;

/// `CU_STREAM_SET_CAPTURE_DEPENDENCIES` (ADD is 0).
const SET_DEPENDENCIES: u32 = 1;
/// `CU_EVENT_RECORD_EXTERNAL` / `CU_EVENT_WAIT_EXTERNAL`.
const EXTERNAL: u32 = 1;

/// A stream as capture state names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// A created stream, by handle.
    Created(u64),
    /// A thread's per-thread default stream in a context (by id).
    PerThread { thread: u64, ctx: u64 },
}

thread_local! {
    static MODE: Cell<CUstreamCaptureMode> = const { Cell::new(GLOBAL) };
    static THREAD: u64 = {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    };
}

/// The calling thread, as capture ownership names it.
fn me() -> u64 {
    THREAD.with(|t| *t)
}

/// Captures in progress; 0 keeps every check to this one load.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// Every stream in a capture, by key.
static TABLE: Mutex<Option<HashMap<Key, Arc<Capture>>>> = Mutex::new(None);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub struct Capture {
    pub id: u64,
    pub graph: Arc<Graph>,
    pub mode: CUstreamCaptureMode,
    /// The thread that began it.
    thread: u64,
    /// The origin stream's context.
    ctx: Arc<Context>,
    origin: Key,
    /// Begun into an existing graph (`cuStreamBeginCaptureToGraph`): the
    /// graph is the application's, and survives a failed capture.
    into_existing: bool,
    state: Mutex<State>,
}

struct State {
    invalidated: bool,
    ended: bool,
    streams: HashMap<Key, Member>,
}

/// A stream's part in a capture.
struct Member {
    /// What the next node on the stream depends on.
    deps: Vec<u64>,
    /// The stream is blocking towards the legacy stream.
    blocking: bool,
    /// The array `cuStreamGetCaptureInfo` last handed out (valid until the
    /// next capture call on the stream).
    shown: Vec<usize>,
    shown_edges: Vec<CUgraphEdgeData>,
}

impl Member {
    fn new(deps: Vec<u64>, blocking: bool) -> Member {
        Member {
            deps,
            blocking,
            shown: Vec::new(),
            shown_edges: Vec::new(),
        }
    }
}

impl Capture {
    fn invalidate(&self) {
        self.state.lock().invalidated = true;
    }

    fn is_live(&self) -> bool {
        !self.state.lock().ended
    }
}

/// An event's last record, when it was into a capture: the capture and the
/// recording stream's dependencies then.
#[derive(Clone)]
pub struct Mark {
    capture: Weak<Capture>,
    deps: Vec<u64>,
}

impl Mark {
    /// The capture, while it is in progress.
    fn live(&self) -> Option<Arc<Capture>> {
        self.capture.upgrade().filter(|c| c.is_live())
    }
}

fn table() -> parking_lot::MappedMutexGuard<'static, HashMap<Key, Arc<Capture>>> {
    parking_lot::MutexGuard::map(TABLE.lock(), |t| t.get_or_insert_with(HashMap::new))
}

/// Every capture in progress.
fn live() -> Vec<Arc<Capture>> {
    let t = table();
    let mut out: Vec<Arc<Capture>> = Vec::new();
    for c in t.values() {
        if !out.iter().any(|o| Arc::ptr_eq(o, c)) {
            out.push(c.clone());
        }
    }
    out
}

/// How capture names the stream work is going to, or `None` for the legacy
/// stream.
fn key_of(t: &Target) -> Option<Key> {
    match &t.object {
        Some(s) => Some(Key::Created(s.raw_handle())),
        None if t.stream == PER_THREAD => Some(Key::PerThread {
            thread: me(),
            ctx: t.ctx.id,
        }),
        None => None,
    }
}

/// Whether the target stream synchronizes with the legacy stream.
fn blocking(t: &Target) -> bool {
    t.object
        .as_ref()
        .is_none_or(|s| s.flags & stream::FLAG_NON_BLOCKING == 0)
}

/// Captures in `ctx` with a blocking stream: those the legacy stream of
/// `ctx` implicitly depends on.
fn legacy_conflicts(ctx: &Arc<Context>) -> Vec<Arc<Capture>> {
    live()
        .into_iter()
        .filter(|c| Arc::ptr_eq(&c.ctx, ctx))
        .filter(|c| c.state.lock().streams.values().any(|m| m.blocking))
        .collect()
}

/// Where a stream-ordered call's work goes: `None` to the host as usual,
/// a [`Sink`] into a capture. Refuses work on an invalidated capture
/// (`STREAM_CAPTURE_INVALIDATED`) and on a legacy stream a blocking
/// capture depends on (`STREAM_CAPTURE_IMPLICIT`, invalidating it).
pub fn check(t: &Target) -> Result<Option<Sink>, CUresult> {
    if ACTIVE.load(Ordering::Acquire) == 0 {
        return Ok(None);
    }
    let Some(key) = key_of(t) else {
        let hit = legacy_conflicts(&t.ctx);
        if hit.is_empty() {
            return Ok(None);
        }
        for c in &hit {
            c.invalidate();
        }
        return Err(reject(
            IMPLICIT,
            format_args!("the legacy stream is used while a blocking stream captures"),
        ));
    };
    let Some(c) = table().get(&key).cloned() else {
        return Ok(None);
    };
    if c.state.lock().invalidated {
        return Err(reject(
            INVALIDATED,
            format_args!("work on a stream whose capture is invalidated"),
        ));
    }
    Ok(Some(Sink { capture: c, key }))
}

/// A capturing stream that work is appended to.
#[derive(Clone)]
pub struct Sink {
    capture: Arc<Capture>,
    key: Key,
}

impl Sink {
    /// Appends `op` after the stream's dependencies; it becomes the
    /// stream's only dependency.
    pub fn add(&self, op: Op) -> Result<(), CUresult> {
        self.add_node(op).map(|_| ())
    }

    /// [`Sink::add`], returning the node.
    pub fn add_node(&self, op: Op) -> Result<u64, CUresult> {
        let mut st = self.capture.state.lock();
        if st.invalidated || st.ended {
            return Err(reject(
                INVALIDATED,
                format_args!("work on a stream whose capture is invalidated"),
            ));
        }
        let m = st.streams.get_mut(&self.key).ok_or(INVALIDATED)?;
        let node = self.capture.graph.add(op, &m.deps)?;
        m.deps = vec![node];
        Ok(node)
    }

    /// The capture's context (graph memory allocated in a capture lives
    /// there).
    pub fn context(&self) -> &Arc<Context> {
        &self.capture.ctx
    }

    /// Refuses the call and invalidates the capture.
    pub fn refuse(&self, code: CUresult, what: &str) -> CUresult {
        self.capture.invalidate();
        reject(
            code,
            format_args!("{what}: not permitted in a stream capture"),
        )
    }
}

/// Refuses a call that cannot be captured on `t` (which [`check`] found
/// capturing), invalidating its capture.
pub fn refuse_in_capture(t: &Target, what: &str) -> CUresult {
    if let Some(c) = key_of(t).and_then(|k| table().get(&k).cloned()) {
        c.invalidate();
    }
    reject(
        UNSUPPORTED,
        format_args!("{what}: not permitted in a stream capture"),
    )
}

/// The potentially unsafe call `what` (see the module doc) by the calling
/// thread: refused, invalidating the captures that prohibit it, when its
/// mode and the captures in progress say so.
pub fn unsafe_call(what: &str) -> Result<(), CUresult> {
    if ACTIVE.load(Ordering::Acquire) == 0 {
        return Ok(());
    }
    let mode = MODE.with(Cell::get);
    if mode == RELAXED {
        return Ok(());
    }
    let me = me();
    let hit: Vec<Arc<Capture>> = live()
        .into_iter()
        .filter(|c| (c.thread == me && c.mode != RELAXED) || (mode == GLOBAL && c.mode == GLOBAL))
        .collect();
    if hit.is_empty() {
        return Ok(());
    }
    for c in &hit {
        c.invalidate();
    }
    Err(reject(
        UNSUPPORTED,
        format_args!("{what}: potentially unsafe during a stream capture (capture mode rules)"),
    ))
}

/// A synchronous copy or memset in the current context (`null` says which
/// default stream it uses).
pub fn sync_work(ctx: &Arc<Context>, null: Null, what: &str) -> Result<(), CUresult> {
    if ACTIVE.load(Ordering::Acquire) == 0 {
        return Ok(());
    }
    let t = Target {
        ctx: ctx.clone(),
        ctx_remote: 0,
        stream: if null == Null::PerThread {
            PER_THREAD
        } else {
            0
        },
        object: None,
    };
    if check(&t)?.is_some() {
        return Err(refuse_in_capture(&t, what));
    }
    unsafe_call(what)
}

/// `cuStreamSynchronize` / `cuStreamQuery` of `t`.
pub fn sync_stream(t: &Target, what: &str) -> Result<(), CUresult> {
    if ACTIVE.load(Ordering::Acquire) == 0 {
        return Ok(());
    }
    if check(t)?.is_some() {
        return Err(refuse_in_capture(t, what));
    }
    unsafe_call(what)
}

/// `cuCtxSynchronize` of `ctx`: refused while any capture is in it.
pub fn sync_context(ctx: &Arc<Context>) -> Result<(), CUresult> {
    if ACTIVE.load(Ordering::Acquire) == 0 {
        return Ok(());
    }
    let hit: Vec<Arc<Capture>> = live()
        .into_iter()
        .filter(|c| Arc::ptr_eq(&c.ctx, ctx))
        .collect();
    if hit.is_empty() {
        return Ok(());
    }
    for c in &hit {
        c.invalidate();
    }
    Err(reject(
        UNSUPPORTED,
        format_args!("cuCtxSynchronize: a stream of the context is capturing"),
    ))
}

/// A query, synchronization or timing of an event: refused while its last
/// record is in a capture in progress.
pub fn event_use(mark: Option<Mark>, what: &str) -> Result<(), CUresult> {
    if let Some(c) = mark.as_ref().and_then(Mark::live) {
        c.invalidate();
        return Err(reject(
            CAPTURED_EVENT,
            format_args!("{what}: the event was last recorded in a stream capture"),
        ));
    }
    Ok(())
}

/// What a `cuEventRecord` does.
pub enum Record {
    /// Not in a capture: the host records it.
    Send,
    /// Into a capture: the event remembers it (no node).
    Mark(Mark),
    /// An `EXTERNAL` record in a capture: an event record node was added.
    Node,
}

/// `cuEventRecord[WithFlags]` on `t`.
pub fn record_event(
    t: &Target,
    flags: u32,
    event: &Arc<crate::event::Event>,
) -> Result<Record, CUresult> {
    let Some(sink) = check(t)? else {
        return Ok(Record::Send);
    };
    if flags & EXTERNAL != 0 {
        sink.add(Op::EventRecord(event.clone()))?;
        return Ok(Record::Node);
    }
    let st = sink.capture.state.lock();
    let deps = st
        .streams
        .get(&sink.key)
        .map(|m| m.deps.clone())
        .unwrap_or_default();
    Ok(Record::Mark(Mark {
        capture: Arc::downgrade(&sink.capture),
        deps,
    }))
}

/// `cuStreamWaitEvent` of `t` on an event with `mark`: `Ok(true)` when it
/// was handled by capture (fork, join, wait node), `Ok(false)` to send.
pub fn wait_event(
    t: &Target,
    mark: Option<Mark>,
    flags: u32,
    event: &Arc<crate::event::Event>,
) -> Result<bool, CUresult> {
    let captured = mark
        .as_ref()
        .and_then(|m| m.live().map(|c| (c, m.deps.clone())));
    if ACTIVE.load(Ordering::Acquire) == 0 {
        return Ok(false);
    }
    let sink = check(t)?;
    match (captured, sink) {
        (None, None) => Ok(false),
        (None, Some(sink)) => {
            if flags & EXTERNAL != 0 {
                sink.add(Op::EventWait(event.clone()))?;
                Ok(true)
            } else {
                Err(sink.refuse(
                    ISOLATION,
                    "cuStreamWaitEvent on an event not recorded in the capture",
                ))
            }
        }
        (Some((c, deps)), Some(sink)) => {
            if !Arc::ptr_eq(&c, &sink.capture) {
                c.invalidate();
                return Err(sink.refuse(MERGE, "cuStreamWaitEvent joining two captures"));
            }
            let mut st = c.state.lock();
            if st.invalidated {
                return Err(reject(INVALIDATED, format_args!("cuStreamWaitEvent")));
            }
            let m = st.streams.get_mut(&sink.key).ok_or(INVALIDATED)?;
            for d in deps {
                if !m.deps.contains(&d) {
                    m.deps.push(d);
                }
            }
            Ok(true)
        }
        (Some((c, deps)), None) => {
            let Some(key) = key_of(t) else {
                c.invalidate();
                return Err(reject(
                    UNSUPPORTED,
                    format_args!("cuStreamWaitEvent: the legacy stream cannot join a capture"),
                ));
            };
            let mut st = c.state.lock();
            if st.invalidated {
                return Err(reject(INVALIDATED, format_args!("cuStreamWaitEvent")));
            }
            st.streams.insert(key, Member::new(deps, blocking(t)));
            drop(st);
            table().insert(key, c);
            Ok(true)
        }
    }
}

/// A destroyed stream leaves its capture; a capture losing its origin
/// stream can never end, so it is invalidated and dropped.
pub fn forget_stream(handle: u64) {
    if ACTIVE.load(Ordering::Acquire) == 0 {
        return;
    }
    let key = Key::Created(handle);
    let Some(c) = table().remove(&key) else {
        return;
    };
    let origin = c.origin == key;
    let mut st = c.state.lock();
    st.streams.remove(&key);
    st.invalidated = true;
    if origin {
        drop(st);
        end(&c);
    }
}

// ---- entry points ----

fn check_mode(mode: CUstreamCaptureMode) -> Result<(), CUresult> {
    if mode.0 > RELAXED.0 {
        return Err(reject(
            INVALID_VALUE,
            format_args!("stream capture mode {}", mode.0),
        ));
    }
    Ok(())
}

/// Starts a capture on `t` into `graph` after `deps`.
fn start(
    t: &Target,
    mode: CUstreamCaptureMode,
    graph: Arc<Graph>,
    deps: Vec<u64>,
    into_existing: bool,
) -> Result<(), CUresult> {
    let Some(key) = key_of(t) else {
        return Err(reject(
            UNSUPPORTED,
            format_args!("cuStreamBeginCapture: the legacy stream cannot capture"),
        ));
    };
    let mut tab = table();
    if tab.contains_key(&key) {
        return Err(reject(
            ILLEGAL_STATE,
            format_args!("cuStreamBeginCapture: the stream is already capturing"),
        ));
    }
    if graph.capturing.swap(true, Ordering::AcqRel) {
        return Err(reject(
            ILLEGAL_STATE,
            format_args!("cuStreamBeginCaptureToGraph: another capture records into the graph"),
        ));
    }
    let mut streams = HashMap::new();
    streams.insert(key, Member::new(deps, blocking(t)));
    let c = Arc::new(Capture {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        graph,
        mode,
        thread: me(),
        ctx: t.ctx.clone(),
        origin: key,
        into_existing,
        state: Mutex::new(State {
            invalidated: false,
            ended: false,
            streams,
        }),
    });
    tab.insert(key, c);
    ACTIVE.fetch_add(1, Ordering::AcqRel);
    Ok(())
}

/// `cuStreamBeginCapture[_v2][_ptsz]` (the v1 forms pass GLOBAL).
pub fn begin(s: StreamArg, mode: CUstreamCaptureMode, null: Null) -> Result<(), CUresult> {
    check_mode(mode)?;
    let t = stream::target(&s, null)?;
    let graph = Graph::create();
    start(&t, mode, graph.clone(), Vec::new(), false).inspect_err(|_| {
        let _ = graph::GRAPHS.take(graph.raw_handle());
    })
}

/// `cuStreamBeginCaptureToGraph[_ptsz]`: capture into the application's
/// graph, the first node after `deps` (nodes of that graph).
///
/// # Safety
/// `deps` holds `n` handles and `data` is NULL or holds `n` entries.
pub unsafe fn begin_to_graph(
    s: StreamArg,
    g: Live<Graph>,
    deps: *const CUgraphNode,
    data: *const CUgraphEdgeData,
    n: usize,
    mode: CUstreamCaptureMode,
    null: Null,
) -> Result<(), CUresult> {
    check_mode(mode)?;
    let what = "cuStreamBeginCaptureToGraph";
    // SAFETY: forwarded contract.
    let deps = unsafe { graph::node_list(deps, n, what)? };
    // SAFETY: forwarded contract.
    unsafe { graph::default_edges(data, n, what)? };
    graph::nodes_of(&g, &deps, what)?;
    let t = stream::target(&s, null)?;
    start(&t, mode, g.into_arc(), deps, true)
}

/// Takes every stream of `c` out of capture and releases its graph.
fn end(c: &Arc<Capture>) {
    let mut st = c.state.lock();
    if st.ended {
        return;
    }
    st.ended = true;
    let keys: Vec<Key> = st.streams.keys().copied().collect();
    drop(st);
    let mut tab = table();
    for k in keys {
        if tab.get(&k).is_some_and(|x| Arc::ptr_eq(x, c)) {
            tab.remove(&k);
        }
    }
    drop(tab);
    c.graph.capturing.store(false, Ordering::Release);
    ACTIVE.fetch_sub(1, Ordering::AcqRel);
}

/// Whether every fork's dependencies lead to the origin stream's: each
/// node some other stream would depend on must be an ancestor of (or one
/// of) the origin's dependencies.
fn joined(c: &Capture, st: &State) -> bool {
    let Some(origin) = st.streams.get(&c.origin) else {
        return false;
    };
    let body = c.graph.body();
    let ancestors = body.ancestors_of(&origin.deps);
    st.streams
        .iter()
        .filter(|(k, _)| **k != c.origin)
        .all(|(_, m)| {
            m.deps
                .iter()
                .all(|d| ancestors.contains(d) || body.find(*d).is_none())
        })
}

/// `cuStreamEndCapture[_ptsz]`.
pub fn end_capture(s: StreamArg, out: *mut CUgraph, null: Null) -> Result<(), CUresult> {
    let t = stream::target(&s, null)?;
    let c = key_of(&t).and_then(|k| table().get(&k).cloned().map(|c| (k, c)));
    let Some((key, c)) = c else {
        return Err(reject(
            ILLEGAL_STATE,
            format_args!("cuStreamEndCapture: the stream is not capturing"),
        ));
    };
    if c.origin != key {
        return Err(reject(
            UNMATCHED,
            format_args!("cuStreamEndCapture: the capture was not begun on this stream"),
        ));
    }
    if c.mode != RELAXED && c.thread != me() {
        return Err(reject(
            WRONG_THREAD,
            format_args!("cuStreamEndCapture: the capture was begun by another thread"),
        ));
    }
    if out.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuStreamEndCapture: NULL graph pointer"),
        ));
    }
    let (invalidated, unjoined) = {
        let st = c.state.lock();
        (st.invalidated, !st.invalidated && !joined(&c, &st))
    };
    end(&c);
    let write = |g: CUgraph| {
        // SAFETY: non-NULL (checked), a writable CUgraph (contract).
        unsafe { out.write(g) }
    };
    if invalidated || unjoined {
        if !c.into_existing {
            graph::discard(&c.graph);
        }
        write(std::ptr::null_mut());
        return Err(if invalidated {
            reject(
                INVALIDATED,
                format_args!("cuStreamEndCapture: the capture was invalidated"),
            )
        } else {
            reject(
                UNJOINED,
                format_args!("cuStreamEndCapture: a forked stream was not joined back"),
            )
        });
    }
    write(c.graph.handle());
    Ok(())
}

/// The capture a queried stream is in, or the legacy stream's IMPLICIT
/// answer (which invalidates nothing).
fn query(t: &Target) -> Result<Option<(Key, Arc<Capture>)>, CUresult> {
    if ACTIVE.load(Ordering::Acquire) == 0 {
        return Ok(None);
    }
    let Some(key) = key_of(t) else {
        if legacy_conflicts(&t.ctx).is_empty() {
            return Ok(None);
        }
        return Err(reject(
            IMPLICIT,
            format_args!("capture query of the legacy stream while a blocking stream captures"),
        ));
    };
    Ok(table().get(&key).cloned().map(|c| (key, c)))
}

fn status_of(c: &Capture) -> CUstreamCaptureStatus {
    if c.state.lock().invalidated {
        CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_INVALIDATED
    } else {
        CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_ACTIVE
    }
}

/// `cuStreamIsCapturing[_ptsz]`.
pub fn is_capturing(
    s: StreamArg,
    status: Out<CUstreamCaptureStatus>,
    null: Null,
) -> Result<(), CUresult> {
    let t = stream::target(&s, null)?;
    let st = query(&t)?.map_or(
        CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE,
        |(_, c)| status_of(&c),
    );
    status.write(st);
    Ok(())
}

/// The capture state queries share: status always; id, graph and the
/// dependency array (with zero edge data) only for an active capture.
#[allow(clippy::too_many_arguments)]
fn info(
    s: StreamArg,
    status: Out<CUstreamCaptureStatus>,
    id: Option<Out<cuuint64_t>>,
    graph_out: Option<Out<CUgraph>>,
    deps_out: Option<Out<*const CUgraphNode>>,
    edges_out: Option<Out<*const CUgraphEdgeData>>,
    n_out: Option<Out<usize>>,
    null: Null,
) -> Result<(), CUresult> {
    if edges_out.is_some() && deps_out.is_none() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuStreamGetCaptureInfo: edge data without dependencies"),
        ));
    }
    let t = stream::target(&s, null)?;
    let Some((key, c)) = query(&t)? else {
        status.write(CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE);
        return Ok(());
    };
    let now = status_of(&c);
    status.write(now);
    if now != CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_ACTIVE {
        return Ok(());
    }
    if let Some(id) = id {
        id.write(c.id);
    }
    if let Some(g) = graph_out {
        g.write(c.graph.handle());
    }
    let mut st = c.state.lock();
    let Some(m) = st.streams.get_mut(&key) else {
        return Ok(());
    };
    m.shown = m.deps.iter().map(|&h| h as usize).collect();
    m.shown_edges = vec![CUgraphEdgeData::default(); m.deps.len()];
    if let Some(d) = deps_out {
        d.write(if m.shown.is_empty() {
            std::ptr::null()
        } else {
            m.shown.as_ptr().cast()
        });
    }
    if let Some(e) = edges_out {
        e.write(if m.shown_edges.is_empty() {
            std::ptr::null()
        } else {
            m.shown_edges.as_ptr()
        });
    }
    if let Some(n) = n_out {
        n.write(m.shown.len());
    }
    Ok(())
}

/// `cuStreamGetCaptureInfo` (v1): status and id.
pub fn info_v1(
    s: StreamArg,
    status: Out<CUstreamCaptureStatus>,
    id: Option<Out<cuuint64_t>>,
    null: Null,
) -> Result<(), CUresult> {
    info(s, status, id, None, None, None, None, null)
}

/// `cuStreamGetCaptureInfo_v2`.
pub fn info_v2(
    s: StreamArg,
    status: Out<CUstreamCaptureStatus>,
    id: Option<Out<cuuint64_t>>,
    graph: Option<Out<CUgraph>>,
    deps: Option<Out<*const CUgraphNode>>,
    n: Option<Out<usize>>,
    null: Null,
) -> Result<(), CUresult> {
    info(s, status, id, graph, deps, None, n, null)
}

/// `cuStreamGetCaptureInfo_v3` (and the 13.x `cuStreamGetCaptureInfo`).
#[allow(clippy::too_many_arguments)]
pub fn info_v3(
    s: StreamArg,
    status: Out<CUstreamCaptureStatus>,
    id: Option<Out<cuuint64_t>>,
    graph: Option<Out<CUgraph>>,
    deps: Option<Out<*const CUgraphNode>>,
    edges: Option<Out<*const CUgraphEdgeData>>,
    n: Option<Out<usize>>,
    null: Null,
) -> Result<(), CUresult> {
    info(s, status, id, graph, deps, edges, n, null)
}

/// `cuStreamUpdateCaptureDependencies[_v2][_ptsz]` (v1 passes no edge
/// data).
///
/// # Safety
/// `deps` holds `n` handles; `data` is NULL or holds `n` entries.
pub unsafe fn update_dependencies(
    s: StreamArg,
    deps: *mut CUgraphNode,
    data: *const CUgraphEdgeData,
    n: usize,
    flags: u32,
    null: Null,
) -> Result<(), CUresult> {
    let what = "cuStreamUpdateCaptureDependencies";
    if flags > SET_DEPENDENCIES {
        return Err(reject(
            INVALID_VALUE,
            format_args!("{what}: flags {flags:#x}"),
        ));
    }
    // SAFETY: forwarded contract.
    let list = unsafe { graph::node_list(deps, n, what)? };
    // SAFETY: forwarded contract.
    unsafe { graph::default_edges(data, n, what)? };
    let t = stream::target(&s, null)?;
    let Some((key, c)) = query(&t)? else {
        return Err(reject(
            ILLEGAL_STATE,
            format_args!("{what}: the stream is not capturing"),
        ));
    };
    graph::nodes_of(&c.graph, &list, what)?;
    let mut st = c.state.lock();
    if st.invalidated {
        return Err(reject(INVALIDATED, format_args!("{what}")));
    }
    let m = st.streams.get_mut(&key).ok_or(ILLEGAL_STATE)?;
    if flags == SET_DEPENDENCIES {
        m.deps.clear();
    }
    for d in list {
        if !m.deps.contains(&d) {
            m.deps.push(d);
        }
    }
    Ok(())
}

/// `cuStreamUpdateCaptureDependencies[_ptsz]` (no edge data; it sits
/// before the count, so the export list cannot append it).
///
/// # Safety
/// As [`update_dependencies`].
pub unsafe fn update_dependencies_v1(
    s: StreamArg,
    deps: *mut CUgraphNode,
    n: usize,
    flags: u32,
    null: Null,
) -> Result<(), CUresult> {
    // SAFETY: forwarded contract.
    unsafe { update_dependencies(s, deps, std::ptr::null(), n, flags, null) }
}

/// The mode of the mode-less `cuStreamBeginCapture` (CUDA 10.0's): the
/// default mode.
pub const DEFAULT_MODE: CUstreamCaptureMode = GLOBAL;

/// `cuThreadExchangeStreamCaptureMode`: swaps the calling thread's mode,
/// which decides what it may call during captures (module doc). Works
/// before `cuInit`, as it always has here.
pub fn exchange_mode(mode: Out<CUstreamCaptureMode>) -> Result<(), CUresult> {
    let want = mode.read();
    check_mode(want)?;
    mode.write(MODE.with(|m| m.replace(want)));
    Ok(())
}

/// In a forked child: the parent's captures are forgotten (their graphs
/// belong to the parent's session; the table itself is emptied by the
/// driver's fork handler).
pub(crate) fn fork_child() {
    ACTIVE.store(0, Ordering::Release);
}

/// The capture table's lock, for the fork handlers.
pub(crate) fn table_lock() -> &'static Mutex<Option<HashMap<Key, Arc<Capture>>>> {
    &TABLE
}

#[cfg(test)]
mod tests;
