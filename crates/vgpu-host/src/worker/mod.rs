//! The worker: one process per guest connection. It loads the driver
//! library, answers the handshake at once, then initializes the driver
//! (cuInit, device enumeration, nvmlInit — many seconds on a cold host with
//! many GPUs) while the guest waits for its first reply, the inventory; it
//! then serves requests one at a time until the guest goes away, and finally
//! returns everything the guest held. A driver that fails to initialize is
//! reported to the guest as a host error on every request, with the reason
//! in this log. What the driver prints for the guest's kernels (device
//! `printf`, assert messages) is captured from the worker's stdout and
//! stderr and sent to the guest ([`output`]); the worker's own log goes to
//! the original stderr.
//!
//! Every op of the protocol is served by one `impl Serve<TheCall> for
//! Session` in its family's module; [`proto::dispatch`], generated from the
//! `calls!` table, decodes a request and calls it, so an op without a
//! handler does not compile. Whether the op is answered, deferred or
//! reports earlier deferred errors is the table's business, applied to
//! every op alike by the request loop ([`batch::serve_loop`]); a handler
//! only returns `Result<Reply, Status>`.
//!
//! # Adding an op
//! After its `calls!` entry (see `vgpu_transport::proto`), the handler in
//! the family's module, e.g. for `25 CtxGetApiVersion [sync] { ctx: u64 } -> u32;`
//! in `context.rs`:
//! ```text
//! impl Serve<CtxGetApiVersion> for Session {
//!     fn serve(&mut self, c: CtxGetApiVersion) -> Result<u32, Status> {
//!         let raw = self.enter(c.ctx)?; // a broken context refuses here
//!         let mut v = 0;
//!         cu!(self, cuCtxGetApiVersion(raw, &mut v))?; // CUresult → Status
//!         Ok(v)
//!     }
//! }
//! ```
//! Nothing else: no registration, no batch list. A new family is a new
//! module with its `impl Serve` blocks, declared below.

pub mod batch;
pub mod bulk;
pub mod context;
pub mod event;
pub mod graph;
pub mod handles;
pub mod inventory;
pub mod launch;
pub mod link;
pub mod memory;
pub mod mempool;
pub mod module;
pub mod nvml;
pub mod output;
pub mod peer;
pub mod ranges;
pub mod stream;
pub mod tensormap;
pub mod vmm;
pub mod watchdog;

use crate::account::{self, Account};
use crate::driver::{Driver, ResolvedDriver};
use crate::principal::Limits;
use cuda_types::cuda::{CUdevice, CUresult};
use cuda_types::nvml::nvmlReturn_t;
use handles::{table, tag, HandleTable};
use std::collections::HashMap;
use std::os::fd::RawFd;
use vgpu_transport::codec::to_bytes;
use vgpu_transport::conn::send_hello_reply;
use vgpu_transport::conn::send_reply;
use vgpu_transport::frame::{read_frame, write_frame, Header, FLAG_NO_REPLY};
use vgpu_transport::proto::{
    self, caps, refusal, DeviceOutput, Hello, HelloReply, HELLO_OP, PROTOCOL_VERSION,
};
use vgpu_transport::{Status, Stream};

/// Calls a CUDA driver-table entry → `Result<(), Status>`; a function the
/// driver does not export is `CUDA_ERROR_NOT_SUPPORTED`.
macro_rules! cu {
    ($s:expr, $f:ident ( $($a:expr),* $(,)? )) => {
        match $s.driver.cuda.$f {
            None => Err(::vgpu_transport::Status::Cuda(
                ::cuda_types::cuda::CUresult::CUDA_ERROR_NOT_SUPPORTED,
            )),
            // SAFETY: the pointer was resolved under this name, so it has the
            // header's prototype; every call site passes arguments valid for
            // it (live out-pointers, handles the driver gave this process).
            Some(f) => unsafe { f($($a),*) }.ok().map_err(::vgpu_transport::Status::Cuda),
        }
    };
}

/// Calls an NVML table entry → `Result<(), Status>`; a missing function is
/// `NVML_ERROR_FUNCTION_NOT_FOUND`.
macro_rules! nv {
    ($s:expr, $f:ident ( $($a:expr),* $(,)? )) => {
        match $s.driver.nvml.$f {
            None => Err(::vgpu_transport::Status::Nvml(
                ::cuda_types::nvml::nvmlReturn_t::NVML_ERROR_FUNCTION_NOT_FOUND,
            )),
            // SAFETY: as in `cu!`, for NVML's header.
            Some(f) => unsafe { f($($a),*) }.ok().map_err(::vgpu_transport::Status::Nvml),
        }
    };
}
pub(crate) use {cu, nv};

/// The guest principal's memory limit (`vgpu host --guest-memory-mib`, or
/// `memory_mib` of its guest file), counted over all its connections.
/// Allocations consult `check_alloc`; memory reports go through `report`.
#[derive(Default, Clone)]
pub struct Quota {
    /// Bytes the principal may hold; `None` = the whole device.
    pub limit: Option<u64>,
    /// Bytes currently allocated by this session (linear, pitched, pool and
    /// VMM physical allocations; kept by those families).
    pub used: u64,
    /// The principal's other connections, when it has an account.
    pub tenant: Option<Tenant>,
}

/// This session's row in its principal's account (see
/// `crate::account`).
#[derive(Clone)]
pub struct Tenant {
    pub account: std::sync::Arc<Account>,
    pub slot: usize,
}

impl Tenant {
    /// What the principal's other connections hold of `kind`.
    pub fn others(&self, kind: account::Kind) -> u64 {
        self.account.others(self.slot, kind)
    }
}

impl Quota {
    /// What the whole principal holds, this session's current count
    /// included.
    fn principal_used(&self) -> u64 {
        let others = self
            .tenant
            .as_ref()
            .map_or(0, |t| t.others(account::Kind::MemoryBytes));
        self.used.saturating_add(others)
    }

    /// Whether `bytes` more may be allocated.
    pub fn check_alloc(&self, bytes: u64) -> Result<(), Status> {
        match self.limit {
            Some(l) if self.principal_used().saturating_add(bytes) > l => {
                Err(Status::Cuda(CUresult::CUDA_ERROR_OUT_OF_MEMORY))
            }
            _ => Ok(()),
        }
    }

    /// `(free, total)` as this guest may see them: under a limit, the
    /// limit is the device's size and what the principal holds on all its
    /// connections is in use.
    pub fn report(&self, free: u64, total: u64) -> (u64, u64) {
        match self.limit {
            Some(l) => {
                let total = total.min(l);
                (free.min(total.saturating_sub(self.principal_used())), total)
            }
            None => (free, total),
        }
    }
}

/// Everything one guest connection owns in this worker.
pub struct Session {
    pub id: u64,
    pub guest_pid: u32,
    pub driver: Driver,
    /// CUDA device handles by ordinal (the guest's device numbers).
    pub devices: Vec<CUdevice>,
    pub contexts: HandleTable<context::Ctx>,
    /// Primary contexts this session retained, by ordinal.
    pub primary: HashMap<i32, context::Primary>,
    /// NVML handle per CUDA ordinal, resolved on first use.
    pub nvml_devices: Option<Vec<Option<cuda_types::nvml::nvmlDevice_t>>>,
    /// Why NVML is unusable, as the `nvmlReturn_t` to answer with.
    pub nvml_error: Option<Status>,
    pub quota: Quota,
    /// The principal's limits (memory is in `quota`).
    pub limits: Limits,
    pub mem: memory::MemState,
    pub streams: HandleTable<stream::Strm>,
    /// `cuMemCreate` allocations.
    pub physical: HandleTable<vmm::Physical>,
    pub vmm: vmm::VmmState,
    pub pools: HandleTable<mempool::Pool>,
    /// Modules, libraries, kernels and functions.
    pub code: module::Code,
    pub events: HandleTable<event::Event>,
    /// Instantiated graphs.
    pub graphs: HandleTable<graph::Exec>,
    /// Tensor map descriptors this session encoded.
    pub tensor_maps: tensormap::Known,
    /// Deferred errors of deferred calls, and broken contexts.
    pub batch: batch::Batch,
    /// The worker's captured stdout and stderr (`None`: not captured).
    pub output: Option<output::Capture>,
    /// The guest takes device output (`caps::DEVICE_OUTPUT`); otherwise
    /// it is dropped.
    pub output_to_guest: bool,
    /// The data plane: shared-memory region, staged image, reply buffer.
    pub plane: bulk::Plane,
}

impl Session {
    /// Initializes the driver (cuInit, nvmlInit) and lists devices. An error
    /// is the reason the guest is refused.
    pub fn start(id: u64, guest_pid: u32, driver: Driver) -> Result<Session, String> {
        let mut s = Session {
            id,
            guest_pid,
            driver,
            devices: Vec::new(),
            contexts: table(
                "context",
                tag::CONTEXT,
                Status::Cuda(CUresult::CUDA_ERROR_INVALID_CONTEXT),
            ),
            primary: HashMap::new(),
            nvml_devices: None,
            nvml_error: None,
            quota: Quota::default(),
            limits: Limits::default(),
            mem: memory::MemState::default(),
            streams: table(
                "stream",
                tag::STREAM,
                Status::Cuda(CUresult::CUDA_ERROR_INVALID_HANDLE),
            ),
            physical: table(
                "memory allocation handle",
                tag::MEM_HANDLE,
                Status::Cuda(CUresult::CUDA_ERROR_INVALID_VALUE),
            ),
            vmm: vmm::VmmState::default(),
            pools: table(
                "memory pool",
                tag::MEM_POOL,
                Status::Cuda(CUresult::CUDA_ERROR_INVALID_VALUE),
            ),
            code: module::Code::default(),
            events: table(
                "event",
                tag::EVENT,
                Status::Cuda(CUresult::CUDA_ERROR_INVALID_HANDLE),
            ),
            graphs: table(
                "graph exec",
                tag::GRAPH_EXEC,
                Status::Cuda(CUresult::CUDA_ERROR_INVALID_VALUE),
            ),
            tensor_maps: tensormap::Known::default(),
            batch: batch::Batch::default(),
            output: None,
            output_to_guest: false,
            plane: bulk::Plane::default(),
        };
        cu!(s, cuInit(0)).map_err(|e| format!("cuInit failed: {e}"))?;
        let mut n: i32 = 0;
        cu!(s, cuDeviceGetCount(&mut n)).map_err(|e| format!("cuDeviceGetCount failed: {e}"))?;
        for i in 0..n {
            let mut d: CUdevice = 0;
            cu!(s, cuDeviceGet(&mut d, i)).map_err(|e| format!("cuDeviceGet({i}) failed: {e}"))?;
            s.devices.push(d);
        }
        // `vgpu host --devices` arrives as the driver's CUDA_VISIBLE_DEVICES,
        // whose list silently ends at its first entry naming no device.
        if let Ok(sel) = std::env::var("CUDA_VISIBLE_DEVICES") {
            let asked = sel.split(',').count();
            if (n as usize) < asked {
                tracing::warn!(
                    "CUDA_VISIBLE_DEVICES={sel}: only the first {n} of {asked} entries name a \
                     device (the list ends at the first that names none, or a repeat)"
                );
            }
        }
        match nv!(s, nvmlInit_v2()) {
            Ok(()) => s.driver.nvml_ok = true,
            Err(e) => {
                tracing::warn!("nvmlInit_v2 failed ({e}); NVML queries will fail");
                let missing = Status::Nvml(nvmlReturn_t::NVML_ERROR_FUNCTION_NOT_FOUND);
                s.nvml_error = Some(if e == missing {
                    Status::Nvml(nvmlReturn_t::NVML_ERROR_LIBRARY_NOT_FOUND)
                } else {
                    e
                });
            }
        }
        Ok(s)
    }

    /// What this session holds of each counted kind.
    fn holdings(&self) -> [(account::Kind, u64); 5] {
        use account::Kind::*;
        [
            (MemoryBytes, self.quota.used),
            (Contexts, self.contexts.len() as u64),
            (Streams, self.streams.len() as u64),
            (Events, self.events.len() as u64),
            (
                Modules,
                (self.code.modules.len() + self.code.libraries.len()) as u64,
            ),
        ]
    }

    /// Publishes what this session holds to its principal's account.
    pub fn publish(&self) {
        if let Some(t) = &self.quota.tenant {
            for (k, v) in self.holdings() {
                t.account.publish(t.slot, k, v);
            }
        }
    }

    /// Whether one more object of `kind` (contexts, streams, events,
    /// modules) stays within the principal's limit, counted over all its
    /// connections. Past it the driver's answer to running out of
    /// resources: `CUDA_ERROR_OUT_OF_MEMORY`, and a log line.
    pub fn admit_object(&self, kind: account::Kind) -> Result<(), Status> {
        let limit = match kind {
            account::Kind::Contexts => self.limits.contexts,
            account::Kind::Streams => self.limits.streams,
            account::Kind::Events => self.limits.events,
            account::Kind::Modules => self.limits.modules,
            account::Kind::MemoryBytes => None,
        };
        let Some(limit) = limit else { return Ok(()) };
        let mine = self
            .holdings()
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, v)| *v);
        let others = self.quota.tenant.as_ref().map_or(0, |t| t.others(kind));
        if mine + others + 1 > limit {
            tracing::warn!(
                "session {}: the guest's limit of {limit} {kind:?} is reached",
                self.id
            );
            return Err(Status::Cuda(CUresult::CUDA_ERROR_OUT_OF_MEMORY));
        }
        Ok(())
    }

    /// The driver's device for a guest ordinal.
    pub fn device(&self, ordinal: i32) -> Result<CUdevice, Status> {
        usize::try_from(ordinal)
            .ok()
            .and_then(|i| self.devices.get(i).copied())
            .ok_or(Status::Cuda(CUresult::CUDA_ERROR_INVALID_DEVICE))
    }

    /// Returns everything the guest still holds to the driver.
    pub fn teardown(&mut self) {
        // Every context must reach the driver to give back what it holds.
        self.batch.forgive_all();
        // Nothing may still be running on memory about to be freed.
        let live: Vec<u64> = self
            .contexts
            .iter()
            .filter(|(_, c)| c.live)
            .map(|(h, _)| h)
            .collect();
        for h in live {
            if let Err(e) = self.enter(h).and_then(|_| cu!(self, cuCtxSynchronize())) {
                tracing::debug!("session {}: synchronize before teardown: {e}", self.id);
            }
        }
        // Graphs name events, functions and memory: they go first.
        let graphs = self.release_graphs(None);
        tracing::info!("session {}: destroyed {graphs} graph exec(s)", self.id);
        let allocs = self.release_allocs();
        let events = self.release_events();
        let (modules, libraries) = self.release_code();
        tracing::info!(
            "session {}: destroyed {events} event(s), unloaded {modules} module(s) and \
             {libraries} library(ies)",
            self.id
        );
        let streams = self.release_streams();
        let (unmapped, released, reservations) = self.release_vmm();
        self.pools.take_all();
        tracing::info!(
            "session {}: freed {allocs} allocation(s), destroyed {streams} stream(s), \
             unmapped {unmapped} VMM mapping(s), released {released} VMM allocation(s), \
             freed {reservations} address reservation(s)",
            self.id
        );
        let (ctxs, prims) = self.release_contexts();
        if self.driver.nvml_ok {
            let _ = nv!(self, nvmlShutdown());
        }
        tracing::info!(
            "session {}: released {ctxs} context(s), {prims} primary-context retain(s)",
            self.id
        );
    }
}

/// What the supervisor hands a worker.
pub struct WorkerConfig {
    pub fd: RawFd,
    pub driver: ResolvedDriver,
    pub session: u64,
    pub hello: Hello,
    /// The guest principal (for logs).
    pub principal: String,
    /// Its account page and this connection's slot in it.
    pub account: Option<(RawFd, usize)>,
    pub limits: Limits,
}

/// Runs a worker to completion; the value is the process exit code.
pub fn run(cfg: WorkerConfig) -> i32 {
    tracing::info!("driver: {} (session {})", cfg.driver, cfg.session);
    // Before the driver is loaded, so all it prints is captured. The log
    // must then go through `output::log_writer`.
    let capture = match output::Capture::install(cfg.session) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(
                "session {}: device output cannot be captured ({e}); the guest will not see it",
                cfg.session
            );
            None
        }
    };
    let to_guest = capture.is_some() && cfg.hello.capabilities & caps::DEVICE_OUTPUT != 0;
    // SAFETY: the supervisor passed this descriptor to us alone; nothing
    // else in this process owns or closes it.
    let mut stream = match unsafe { Stream::from_raw_fd(cfg.fd) } {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("fd {}: not a connected socket: {e}", cfg.fd);
            return 2;
        }
    };
    // Loading the library is quick and its failure final: refuse then.
    let driver = match Driver::load(&cfg.driver) {
        Ok(d) => d,
        Err(why) => {
            tracing::error!("session {}: driver unavailable: {why}", cfg.session);
            let h = Header {
                op: HELLO_OP,
                status: refusal::HOST_UNAVAILABLE,
                ..Default::default()
            };
            let _ = write_frame(&mut stream, h, &to_bytes(&format!("host driver: {why}")));
            return 1;
        }
    };
    // Answered before the driver initializes: the guest's short handshake
    // deadline measures whether a host is there, its inventory deadline
    // (VGPU_INIT_TIMEOUT) how long initialization may take.
    // Shared memory for a guest on this machine that asks for it, unless
    // the host is told not to (`VGPU_SHM=0`).
    let shm = cfg.hello.capabilities & caps::SHM != 0
        && matches!(stream, Stream::Unix(_))
        && std::env::var("VGPU_SHM").map_or(true, |v| v != "0");
    let reply = HelloReply {
        version: PROTOCOL_VERSION,
        build_id: vgpu_transport::BUILD_ID.to_string(),
        // NO_REPLY batching (see worker::batch), device output when it is
        // captured, the shared-memory plane (worker::bulk).
        capabilities: caps::BATCH
            | if capture.is_some() {
                caps::DEVICE_OUTPUT
            } else {
                0
            }
            | if shm { caps::SHM } else { 0 },
        driver_kind: driver.kind.as_str().to_string(),
        session: cfg.session,
    };
    if let Err(e) = send_hello_reply(&mut stream, &reply) {
        tracing::info!("session {}: guest left during handshake: {e}", cfg.session);
        return 0;
    }
    let region = if shm {
        let _ = stream.set_timeouts(Some(std::time::Duration::from_secs(5)));
        let got = vgpu_transport::conn::accept_shm(&mut stream);
        let _ = stream.set_timeouts(None);
        match got {
            Ok((Some(r), what)) => {
                tracing::info!("session {}: shared-memory region of {what}", cfg.session);
                Some(r)
            }
            Ok((None, why)) => {
                tracing::info!(
                    "session {}: no shared-memory region ({why}); bulk bytes use the socket",
                    cfg.session
                );
                None
            }
            Err(e) => {
                tracing::info!("session {}: guest left during handshake: {e}", cfg.session);
                return 0;
            }
        }
    } else {
        None
    };
    stream.tune_for_bulk();
    let started = std::time::Instant::now();
    let mut session = match Session::start(cfg.session, cfg.hello.pid, driver) {
        Ok(mut s) => {
            s.quota.limit = cfg.limits.memory_bytes();
            s.limits = cfg.limits.clone();
            if let Some((fd, slot)) = cfg.account {
                // SAFETY: the supervisor handed this descriptor to us alone.
                match unsafe { Account::from_raw_fd(fd) } {
                    Ok(a) if slot < account::MAX_SLOTS => {
                        s.quota.tenant = Some(Tenant {
                            account: std::sync::Arc::new(a),
                            slot,
                        })
                    }
                    Ok(_) => tracing::error!("session {}: bad account slot {slot}", cfg.session),
                    Err(e) => tracing::error!("session {}: account page: {e}", cfg.session),
                }
            }
            s.output = capture;
            s.output_to_guest = to_guest;
            s.plane.region = region;
            s
        }
        Err(why) => {
            tracing::error!("session {}: driver unavailable: {why}", cfg.session);
            refuse_requests(&mut stream, cfg.session);
            return 1;
        }
    };
    tracing::info!(
        "session {}: driver initialized in {:.1}s",
        cfg.session,
        started.elapsed().as_secs_f64()
    );
    tracing::info!(
        "session {}: serving guest {} pid {} ({} device(s))",
        cfg.session,
        cfg.principal,
        cfg.hello.pid,
        session.devices.len()
    );
    let limit = cfg
        .limits
        .kernel_time_ms
        .filter(|ms| *ms > 0)
        .map(std::time::Duration::from_millis);
    watchdog::start(cfg.session, cfg.fd, limit);
    let code = serve(&mut session, &mut stream);
    {
        let _busy = watchdog::Busy::teardown();
        session.teardown();
    }
    // Printed after the guest's last flushing call: natively lost too when
    // a process exits without synchronizing.
    let left: usize = session
        .output
        .as_ref()
        .map_or(0, |c| c.collect().iter().map(|o| o.data.0.len()).sum());
    if left > 0 {
        tracing::debug!(
            "session {}: {left} byte(s) of device output printed after the guest's last \
             synchronization were not delivered",
            cfg.session
        );
    }
    code
}

/// After the handshake, a driver that did not initialize: every request
/// that wants an answer gets a host error (the reason is in this log) until
/// the guest hangs up.
fn refuse_requests(stream: &mut Stream, session: u64) {
    while let Ok(f) = read_frame(stream) {
        if f.header.flags & FLAG_NO_REPLY != 0 {
            continue;
        }
        if send_reply(stream, &f.header, Status::HOST_ERROR.code(), &[]).is_err() {
            break;
        }
    }
    tracing::info!("session {session}: guest left");
}

/// The request loop. Returns the exit code: 0 when the guest hung up.
/// Whether a call is answered, and with what, is [`batch::serve_loop`]'s
/// decision (deferred calls, deferred and sticky errors); this only runs
/// the handler the table names.
fn serve(session: &mut Session, stream: &mut Stream) -> i32 {
    batch::serve_loop(session, stream, |session, op, payload| {
        // A bug in one handler must not take the guest's other state down
        // with it: report it as a host error and keep serving.
        let busy = watchdog::Busy::op(op);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            session
                .serve_in_place(op, payload)
                .unwrap_or_else(|| proto::dispatch(session, op, payload))
        }));
        drop(busy);
        // The principal's other connections check against this at once.
        session.publish();
        r.unwrap_or_else(|_| {
            tracing::error!(
                "session {}: handler for {} panicked",
                session.id,
                proto::op_name(op).unwrap_or("?")
            );
            Err(Status::HOST_ERROR)
        })
    })
}

impl batch::Served for Session {
    fn id(&self) -> u64 {
        self.id
    }
    fn batch(&mut self) -> &mut batch::Batch {
        &mut self.batch
    }
    fn recycle(&mut self, buf: Vec<u8>) {
        Session::recycle(self, buf)
    }
    fn non_blocking(&self, stream: u64) -> bool {
        self.streams.find(stream).is_some_and(|s| s.non_blocking)
    }
    fn device_output(&mut self) -> Vec<DeviceOutput> {
        let Some(c) = &self.output else {
            return Vec::new();
        };
        let out = c.collect();
        if self.output_to_guest || out.is_empty() {
            return out;
        }
        let bytes: u64 = out.iter().map(|o| o.data.0.len() as u64 + o.dropped).sum();
        tracing::debug!(
            "session {}: dropped {bytes} byte(s) of device output (the guest does not take it)",
            self.id
        );
        Vec::new()
    }
}

/// A NUL-terminated C buffer as a String (lossy; stops at the first NUL).
pub fn c_buf_to_string(b: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = b
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_hook() {
        let q = Quota {
            limit: Some(100),
            used: 60,
            tenant: None,
        };
        assert!(q.check_alloc(40).is_ok());
        assert!(q.check_alloc(41).is_err());
        assert_eq!(q.report(1000, 2000), (40, 100));
        assert_eq!(Quota::default().report(5, 9), (5, 9));
    }
}
