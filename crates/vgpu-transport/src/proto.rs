//! The calls a guest makes and the replies it gets.
//!
//! Each call is a struct implementing [`Call`]: its op number, its reply
//! type and its [`Meta`] — how it travels ([`Travel`]), whether it reports
//! earlier deferred errors (`collects`), whether it moves bulk data, and
//! which status domain its reply speaks ([`Domain`]). All of it is declared
//! once, in the `calls!` table below; the guest's `send`, the worker's
//! request loop and its dispatch ([`dispatch`]) read it from there. The
//! reply header's status is a [`Status`] (see [`crate::status`]); a reply
//! with a non-zero status carries no payload.
//!
//! # Adding an op
//! One entry in `calls!` here, one guest body, one worker handler. E.g.
//! `cuCtxGetApiVersion` forwarded to the host:
//! ```text
//! // here, in calls! (a free number; `sync`: the guest waits for the reply):
//! 25 CtxGetApiVersion [sync] { ctx: u64 } -> u32;
//! // vgpu-cuda, the entry point's body:
//! let v = check::host(&CtxGetApiVersion { ctx: remote })?;
//! // vgpu-host/src/worker/context.rs:
//! impl Serve<CtxGetApiVersion> for Session {
//!     fn serve(&mut self, c: CtxGetApiVersion) -> Result<u32, Status> {
//!         let raw = self.enter(c.ctx)?;
//!         let mut v = 0;
//!         cu!(self, cuCtxGetApiVersion(raw, &mut v))?;
//!         Ok(v)
//!     }
//! }
//! ```
//! A missing handler fails to compile (`dispatch` needs `Serve` for every
//! op). Work the application only observes at a later synchronization is
//! `[deferred]` (reply `()`, never answered); a call that waits for the
//! device and so must report earlier deferred failures adds `collects`.

use crate::codec::{to_bytes, Bytes, DecodeError, Reader, Wire};
pub use crate::status::{Status, STATUS_BAD_REQUEST, STATUS_HOST_ERROR, STATUS_UNKNOWN_OP};
use crate::{wire_enum, wire_struct};

pub const MAGIC: [u8; 4] = *b"VGPU";
/// Bumped on every incompatible change of frames, handshake or calls.
/// 2: copies and memsets split into sync and `...Async` ops.
/// 3: `LaunchKernel` carries launch attributes; graphs, graph memory,
/// cluster occupancy, dynamic shared memory occupancy and tensor maps.
/// 4: a function's parameter layout may be unknown (`FunctionInfo`).
/// 5: the data plane: shared memory (`ShmAttach`), pipelined copy pieces,
/// staged images.
pub const PROTOCOL_VERSION: u32 = 5;

/// Handshake refusals (the status of the `Hello` reply); the payload is a
/// human-readable reason and the host then closes the connection.
pub mod refusal {
    pub const BAD_MAGIC: u32 = 1;
    pub const VERSION_MISMATCH: u32 = 2;
    pub const BAD_TOKEN: u32 = 3;
    pub const PEER_NOT_ALLOWED: u32 = 4;
    pub const HOST_UNAVAILABLE: u32 = 5;
    /// A limit was reached: pending handshakes, the guest's connections,
    /// or the host's; the reason names which.
    pub const LIMIT_REACHED: u32 = 6;
    /// The guest did not complete its handshake in time.
    pub const TIMED_OUT: u32 = 7;
}

/// Capability bits exchanged in the handshake.
pub mod caps {
    /// The peer can use a shared-memory data plane (Unix sockets only).
    pub const SHM: u64 = 1 << 0;
    /// The peer understands [`crate::frame::FLAG_NO_REPLY`] batching.
    pub const BATCH: u64 = 1 << 1;
    /// Guest: it writes [`super::DeviceOutput`] notices to its stdout and
    /// stderr. Host: it sends them (to a guest that set the bit; another
    /// guest's device output is dropped).
    pub const DEVICE_OUTPUT: u64 = 1 << 2;
}

/// How a call travels between guest and host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Travel {
    /// A round trip: the guest waits for the reply.
    Sync,
    /// Queued by the guest and sent with [`crate::frame::FLAG_NO_REPLY`];
    /// the host never answers it. A failure becomes the session's deferred
    /// error, reported by the next call that `collects` (as CUDA reports
    /// asynchronous errors). The reply type is `()`.
    Deferred,
}

/// Which codes a reply's status field holds (besides protocol codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// `CUresult`.
    Cuda,
    /// `nvmlReturn_t`.
    Nvml,
}

/// What the protocol knows about an op, declared in the `calls!` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub op: u16,
    pub name: &'static str,
    pub travel: Travel,
    /// Reports the first deferred failure not yet reported, instead of its
    /// own success: the call waits for the device (synchronizations,
    /// synchronous copies involving host memory), asks whether work is
    /// done, or exists for it (`Flush`).
    pub collects: bool,
    /// Moves application data of unbounded size (copy payloads, images) in
    /// its request or reply: what a shared-memory data plane would carry.
    pub bulk: bool,
    /// A point where the driver flushes device `printf` output (CUDA:
    /// synchronizations, blocking copies, module load and unload, context
    /// destruction): the host sends the guest the output printed so far
    /// ([`DeviceOutput`]) just before the reply. Every op that `collects`
    /// flushes; the table adds `flushes` for the others.
    pub flushes: bool,
    /// Runs on the default stream though it names none: a synchronous copy
    /// through host memory, which CUDA issues on the legacy default stream.
    /// It collects the deferred failures of the default streams only
    /// ([`Call::stream`] gives the stream of an op that names one).
    pub default_stream: bool,
    pub domain: Domain,
}

impl Meta {
    /// The defaults of a table entry: no flags, CUDA statuses.
    const fn new(op: u16, name: &'static str, travel: Travel) -> Meta {
        Meta {
            op,
            name,
            travel,
            collects: false,
            bulk: false,
            flushes: false,
            default_stream: false,
            domain: Domain::Cuda,
        }
    }

    /// Refuses (at compile time: `META` is a constant) combinations that
    /// mean nothing, and derives what other flags imply.
    const fn checked(mut self) -> Meta {
        assert!(
            !(matches!(self.travel, Travel::Deferred) && self.collects),
            "a deferred call has no reply to report deferred errors in"
        );
        assert!(
            !(matches!(self.travel, Travel::Deferred) && self.flushes),
            "a deferred call has no reply to send device output before"
        );
        assert!(
            !self.default_stream || self.collects,
            "only a collecting call is scoped to the default streams"
        );
        // A call that waits for the device is where CUDA flushes printf.
        self.flushes |= self.collects;
        self
    }

    /// Whether the host answers this op.
    pub fn answered(&self) -> bool {
        self.travel == Travel::Sync
    }
}

/// A call: its op number, what it returns on success and how it travels.
pub trait Call: Wire {
    const OP: u16;
    const NAME: &'static str;
    const META: Meta;
    type Reply: Wire;
    /// The stream the call is ordered on: its field named `stream`, for
    /// every op that has one (derived from the table, not listed). Deferred
    /// failures are kept per stream and collected where that stream is
    /// synchronized (docs/protocol.md "Batching and deferred errors").
    fn stream(&self) -> Option<u64>;
    /// The reply a [`Travel::Deferred`] call stands for as soon as it is
    /// queued (`Some(())`; only `()` type-checks there), `None` for a
    /// [`Travel::Sync`] call, whose reply comes from the host.
    fn unanswered() -> Option<Self::Reply>;
}

/// Serving one op: the worker implements this for every [`Call`], and
/// [`dispatch`] requires all of them, so an op without a handler does not
/// compile.
pub trait Serve<C: Call> {
    fn serve(&mut self, call: C) -> Result<C::Reply, Status>;
}

/// Decodes one request, serves it, encodes the reply; an undecodable
/// payload is `STATUS_BAD_REQUEST` and the server never sees it.
fn serve_one<C: Call, S: Serve<C> + ?Sized>(
    server: &mut S,
    payload: &[u8],
) -> Result<Vec<u8>, Status> {
    let call = decode_call::<C>(payload).map_err(|_| Status::BAD_REQUEST)?;
    server.serve(call).map(|reply| to_bytes(&reply))
}

macro_rules! call_travel {
    (sync) => {
        Travel::Sync
    };
    (deferred) => {
        Travel::Deferred
    };
}

macro_rules! call_unanswered {
    (sync) => {
        fn unanswered() -> Option<Self::Reply> {
            None
        }
    };
    (deferred) => {
        fn unanswered() -> Option<Self::Reply> {
            Some(())
        }
    };
}

macro_rules! call_flag {
    ($m:ident, collects) => {
        $m.collects = true;
    };
    ($m:ident, bulk) => {
        $m.bulk = true;
    };
    ($m:ident, flushes) => {
        $m.flushes = true;
    };
    ($m:ident, nvml) => {
        $m.domain = Domain::Nvml;
    };
    ($m:ident, default_stream) => {
        $m.default_stream = true;
    };
}

/// `Some(self.stream)` when one of the field names is `stream`, else `None`.
macro_rules! stream_field {
    ($self:ident;) => {
        None
    };
    ($self:ident; stream $($rest:ident)*) => {
        Some($self.stream)
    };
    ($self:ident; $first:ident $($rest:ident)*) => {
        stream_field!($self; $($rest)*)
    };
}

/// The table: `op Name [travel flags] { fields } -> Reply;`. Travel is
/// `sync` or `deferred`; flags are `collects`, `bulk`, `flushes`,
/// `default_stream` and `nvml`
/// (see [`Meta`]). Generates each struct and its [`Call`] impl, [`OPS`],
/// [`meta`] and [`dispatch`].
macro_rules! calls {
    ($(
        $(#[$m:meta])*
        $op:literal $name:ident [$travel:ident $($flag:ident)*]
            { $($f:ident : $t:ty),* $(,)? } -> $reply:ty;
    )*) => {
        $(
            wire_struct! { $(#[$m])* pub struct $name { $(pub $f: $t),* } }
            impl Call for $name {
                const OP: u16 = $op;
                const NAME: &'static str = stringify!($name);
                const META: Meta = {
                    #[allow(unused_mut)]
                    let mut m = Meta::new($op, stringify!($name), call_travel!($travel));
                    $(call_flag!(m, $flag);)*
                    m.checked()
                };
                type Reply = $reply;
                fn stream(&self) -> Option<u64> {
                    stream_field!(self; $($f)*)
                }
                call_unanswered!($travel);
            }
        )*

        /// The stream a request of `op` is ordered on ([`Call::stream`]),
        /// decoded from its payload; `None` for an op without one or a
        /// payload that does not decode.
        pub fn stream_of(op: u16, payload: &[u8]) -> Option<u64> {
            match op {
                $($op => decode_call::<$name>(payload).ok().and_then(|c| c.stream()),)*
                _ => None,
            }
        }

        /// Every op's metadata, in table order.
        pub const OPS: &[Meta] = &[$(<$name as Call>::META),*];

        /// The metadata of an op, or `None` for one this version does not know.
        pub fn meta(op: u16) -> Option<Meta> {
            match op {
                $($op => Some(<$name as Call>::META),)*
                _ => None,
            }
        }

        /// Whether each op's reply type is `()`, found by type identity
        /// (not by the table's own travel class), for the tests.
        #[cfg(test)]
        fn replies_are_unit() -> Vec<(Meta, bool)> {
            use std::any::TypeId;
            vec![$((<$name as Call>::META, TypeId::of::<$reply>() == TypeId::of::<()>())),*]
        }

        /// Decodes a request of `op`, has `server` serve it and encodes the
        /// reply. Unknown op → `STATUS_UNKNOWN_OP`; undecodable payload →
        /// `STATUS_BAD_REQUEST`. Whether and how the reply is sent is the
        /// caller's business (see [`Meta`]).
        pub fn dispatch<S>(server: &mut S, op: u16, payload: &[u8]) -> Result<Vec<u8>, Status>
        where
            S: ?Sized,
            $(S: Serve<$name>,)*
        {
            match op {
                $($op => serve_one::<$name, S>(server, payload),)*
                _ => Err(Status::UNKNOWN_OP),
            }
        }
    };
}

/// Name of an op, or `None` for one this version does not know.
pub fn op_name(op: u16) -> Option<&'static str> {
    meta(op).map(|m| m.name)
}

wire_struct! {
    /// Everything the guest needs to answer device queries locally, fetched
    /// once per connection.
    pub struct Inventory {
        /// "nvidia" (a real driver) or "emulated" (the software GPU).
        pub driver_kind: String,
        /// `cuDriverGetVersion` of the host driver.
        pub cuda_driver_version: i32,
        /// `nvmlSystemGetDriverVersion`, e.g. "590.48.01".
        pub system_driver_version: String,
        /// `nvmlSystemGetNVMLVersion`.
        pub nvml_version: String,
        pub devices: Vec<DeviceInfo>,
    }
}

wire_struct! {
    /// One device as the host driver reports it. PCI fields are the host's;
    /// the guest substitutes its own guest-visible address.
    pub struct DeviceInfo {
        pub name: String,
        pub uuid: [u8; 16],
        pub total_mem: u64,
        /// `(attribute, value)` for every `CUdevice_attribute` the driver
        /// answered; attributes it refused are absent.
        pub attributes: Vec<(i32, i32)>,
        /// Host PCI bus id as NVML prints it, e.g. "00000000:01:00.0".
        pub host_pci_bus_id: String,
        /// NVML `pciDeviceId` (device << 16 | vendor) and `pciSubSystemId`.
        pub pci_device_id: u32,
        pub pci_subsystem_id: u32,
        pub serial: String,
        pub minor_number: u32,
        pub vbios_version: String,
        pub brand: i32,
        pub architecture: u32,
        /// NVML `(major, minor)` compute capability.
        pub nvml_cc: (i32, i32),
        /// What this device can do with each other device of the guest.
        pub peers: Vec<PeerInfo>,
    }
}

wire_struct! {
    /// The link from one device to another (`cuDeviceCanAccessPeer`,
    /// `cuDeviceGetP2PAttribute`); static, so it travels in the inventory.
    pub struct PeerInfo {
        /// The other device's guest ordinal (host order, before the guest's
        /// `CUDA_VISIBLE_DEVICES`).
        pub peer: u32,
        pub can_access: bool,
        /// `(CUdevice_P2PAttribute, value)` for every attribute the driver
        /// answered.
        pub attributes: Vec<(i32, i32)>,
    }
}

wire_struct! {
    pub struct ProcessInfo {
        pub pid: u32,
        pub used_gpu_memory: u64,
        pub gpu_instance_id: u32,
        pub compute_instance_id: u32,
    }
}

wire_struct! {
    /// The answer to an [`NvmlQuery`]; which fields are set depends on the
    /// kind (see [`nvml_kind`]).
    pub struct NvmlAnswer {
        pub ints: Vec<u64>,
        pub text: String,
        pub processes: Vec<ProcessInfo>,
    }
}

/// Kinds of [`NvmlQuery`]: one per NVML getter family whose value changes
/// while the device runs, so it is asked of the host on every call. Static
/// facts travel once, in [`Inventory`].
pub mod nvml_kind {
    /// arg0 = `nvmlTemperatureSensors_t` → ints[0] = °C.
    pub const TEMPERATURE: u32 = 1;
    /// → ints[0] = mW.
    pub const POWER_USAGE: u32 = 2;
    /// `nvmlDeviceGetPowerManagementLimit` → ints[0] = mW.
    pub const POWER_LIMIT: u32 = 3;
    /// → ints[0] = mW.
    pub const ENFORCED_POWER_LIMIT: u32 = 4;
    /// → ints[0] = mW.
    pub const POWER_DEFAULT_LIMIT: u32 = 5;
    /// → ints = [min mW, max mW].
    pub const POWER_LIMIT_CONSTRAINTS: u32 = 6;
    /// arg0 = `nvmlClockType_t` → ints[0] = MHz.
    pub const CLOCK_INFO: u32 = 7;
    /// arg0 = `nvmlClockType_t` → ints[0] = MHz.
    pub const MAX_CLOCK_INFO: u32 = 8;
    /// arg0 = `nvmlClockType_t`, arg1 = `nvmlClockId_t` → ints[0] = MHz.
    pub const CLOCK: u32 = 9;
    /// → ints = [gpu %, memory %].
    pub const UTILIZATION: u32 = 10;
    /// → ints = [%, sampling period µs].
    pub const ENCODER_UTILIZATION: u32 = 11;
    /// → ints = [%, sampling period µs].
    pub const DECODER_UTILIZATION: u32 = 12;
    /// → ints = [total, free, used] bytes (`nvmlMemory_t`).
    pub const MEMORY: u32 = 13;
    /// → ints = [total, reserved, free, used] bytes (`nvmlMemory_v2_t`).
    pub const MEMORY_V2: u32 = 14;
    /// → ints[0] = `nvmlPstates_t`.
    pub const PERFORMANCE_STATE: u32 = 15;
    /// → ints[0] = %.
    pub const FAN_SPEED: u32 = 16;
    /// → ints[0] = `nvmlEnableState_t`.
    pub const PERSISTENCE_MODE: u32 = 17;
    /// → ints[0] = `nvmlComputeMode_t`.
    pub const COMPUTE_MODE: u32 = 18;
    /// → ints = [current, pending].
    pub const MIG_MODE: u32 = 19;
    /// → ints[0] = `nvmlEnableState_t`.
    pub const DISPLAY_MODE: u32 = 20;
    /// → ints[0] = `nvmlEnableState_t`.
    pub const DISPLAY_ACTIVE: u32 = 21;
    /// → ints = [current, pending].
    pub const ECC_MODE: u32 = 22;
    /// arg0 = `nvmlMemoryErrorType_t`, arg1 = `nvmlEccCounterType_t` → ints[0].
    pub const TOTAL_ECC_ERRORS: u32 = 23;
    /// → processes.
    pub const COMPUTE_PROCESSES: u32 = 24;
    /// → processes.
    pub const GRAPHICS_PROCESSES: u32 = 25;
    /// arg0 = `nvmlTemperatureThresholds_t` → ints[0] = °C.
    pub const TEMPERATURE_THRESHOLD: u32 = 26;
    /// → ints[0] = `nvmlClocksEventReasons` bitmask.
    pub const CLOCKS_EVENT_REASONS: u32 = 27;
    /// → ints[0] = PCIe throughput KB/s; arg0 = `nvmlPcieUtilCounter_t`.
    pub const PCIE_THROUGHPUT: u32 = 28;
    /// → ints = [current link gen, max link gen, current width, max width].
    pub const PCIE_LINK: u32 = 29;
    /// → ints[0] = total energy consumption, mJ.
    pub const TOTAL_ENERGY: u32 = 30;
}

calls! {
    /// Liveness probe; also used by `vgpu doctor`.
    2 Ping [sync] {} -> ();
    /// The device inventory (see [`Inventory`]).
    3 GetInventory [sync] {} -> Inventory;
    /// A live NVML value; the reply status is the `nvmlReturn_t`.
    4 NvmlQuery [sync nvml] { device: u32, kind: u32, arg0: u32, arg1: u32 } -> NvmlAnswer;

    /// `cuCtxCreate*`; returns the host's handle for the new context.
    16 CtxCreate [sync] { device: i32, flags: u32 } -> u64;
    17 CtxDestroy [sync flushes] { ctx: u64 } -> ();
    /// Retains the device's primary context; returns its handle (the same
    /// handle for every retain of one device within a session).
    18 PrimaryCtxRetain [sync] { device: i32 } -> u64;
    19 PrimaryCtxRelease [sync] { device: i32 } -> ();
    20 PrimaryCtxReset [sync flushes] { device: i32 } -> ();
    21 PrimaryCtxSetFlags [sync] { device: i32, flags: u32 } -> ();
    /// → (flags, active).
    22 PrimaryCtxGetState [sync] { device: i32 } -> (u32, bool);
    23 CtxSynchronize [sync collects] { ctx: u64 } -> ();
    /// `cuMemGetInfo` in that context → (free, total).
    24 MemGetInfo [sync] { ctx: u64 } -> (u64, u64);
    /// `cuCtxEnablePeerAccess` in `ctx` (the caller's current context) for
    /// `peer`'s memory.
    26 CtxEnablePeerAccess [sync] { ctx: u64, peer: u64, flags: u32 } -> ();
    27 CtxDisablePeerAccess [sync] { ctx: u64, peer: u64 } -> ();
    /// `cuCtxGetLimit` in `ctx`; `limit` is the `CUlimit` → its value.
    140 CtxGetLimit [sync] { ctx: u64, limit: u32 } -> u64;
    /// `cuCtxSetLimit` in `ctx`.
    141 CtxSetLimit [sync] { ctx: u64, limit: u32, value: u64 } -> ();

    // ---- memory (device addresses are the host driver's real values; the
    // worker checks every range against this session's allocations) ----
    /// `cuMemAlloc` → device pointer.
    32 MemAlloc [sync] { ctx: u64, size: u64 } -> u64;
    /// `cuMemAllocPitch` → (pointer, pitch).
    33 MemAllocPitch [sync] { ctx: u64, width: u64, height: u64, elem_size: u32 } -> (u64, u64);
    34 MemFree [sync] { ctx: u64, ptr: u64 } -> ();
    /// `cuMemGetAddressRange` → (base, size).
    35 MemGetAddressRange [sync] { ctx: u64, ptr: u64 } -> (u64, u64);
    /// Synchronous host to device, at most [`COPY_CHUNK`] bytes per call.
    36 MemcpyHtoD [sync collects default_stream bulk] { ctx: u64, dst: u64, data: Bytes } -> ();
    /// Synchronous device to host, at most [`COPY_CHUNK`] bytes → the bytes.
    37 MemcpyDtoH [sync collects default_stream bulk] { ctx: u64, src: u64, size: u64 } -> Bytes;
    38 MemcpyDtoD [sync] { ctx: u64, dst: u64, src: u64, size: u64 } -> ();
    /// `cuMemsetD8/16/32[2D]`: `height` rows of `width` elements of
    /// `elem_size` (1, 2, 4) bytes, rows `pitch` bytes apart (1D: height 1).
    39 Memset [sync] { ctx: u64, dst: u64, pitch: u64, value: u32, elem_size: u32, width: u64, height: u64 } -> ();
    /// A 2D copy to device: `height` rows of `width` bytes, packed in `data`,
    /// written `dst_pitch` apart. At most [`COPY_CHUNK`] bytes per call.
    40 Memcpy2DHtoD [sync collects default_stream bulk] { ctx: u64, dst: u64, dst_pitch: u64, width: u64, height: u64, data: Bytes } -> ();
    /// A 2D copy from device → `height` rows of `width` bytes, packed.
    41 Memcpy2DDtoH [sync collects default_stream bulk] { ctx: u64, src: u64, src_pitch: u64, width: u64, height: u64 } -> Bytes;
    42 Memcpy2DDtoD [sync] { ctx: u64, dst: u64, dst_pitch: u64, src: u64, src_pitch: u64, width: u64, height: u64 } -> ();
    /// `cuMemcpyPeer`, issued in `ctx`: `size` bytes from `src` (memory of
    /// context `src_ctx`) to `dst` (of `dst_ctx`).
    43 MemcpyPeer [sync] { ctx: u64, dst: u64, dst_ctx: u64, src: u64, src_ctx: u64, size: u64 } -> ();
    /// `cuMemcpyPeerAsync`, ordered on `stream` (see the `...Async` ops).
    44 MemcpyPeerAsync [deferred] { ctx: u64, stream: u64, dst: u64, dst_ctx: u64, src: u64, src_ctx: u64, size: u64 } -> ();

    // ---- virtual memory management ----
    /// `cuMemGetAllocationGranularity` → bytes.
    48 MemGetAllocationGranularity [sync] { prop: MemAllocProp, option: u32 } -> u64;
    /// `cuMemCreate` → allocation handle.
    49 MemCreate [sync] { size: u64, prop: MemAllocProp, flags: u64 } -> u64;
    50 MemRelease [sync] { handle: u64 } -> ();
    /// `cuMemAddressReserve` → start of the reserved range.
    51 MemAddressReserve [sync] { size: u64, alignment: u64, addr: u64, flags: u64 } -> u64;
    52 MemAddressFree [sync] { ptr: u64, size: u64 } -> ();
    53 MemMap [sync] { ptr: u64, size: u64, offset: u64, handle: u64, flags: u64 } -> ();
    54 MemUnmap [sync] { ptr: u64, size: u64 } -> ();
    55 MemSetAccess [sync] { ptr: u64, size: u64, access: Vec<MemAccess> } -> ();
    /// `cuMemGetAccess` → `CUmemAccess_flags`.
    56 MemGetAccess [sync] { location_type: u32, location_id: i32, ptr: u64 } -> u64;

    // ---- streams and stream-ordered allocation ----
    /// `cuStreamCreateWithPriority` → stream handle.
    64 StreamCreate [sync] { ctx: u64, flags: u32, priority: i32 } -> u64;
    65 StreamDestroy [sync] { stream: u64 } -> ();
    66 StreamSynchronize [sync collects] { stream: u64 } -> ();
    /// The status is `CUDA_ERROR_NOT_READY` while work is pending.
    67 StreamQuery [sync collects] { stream: u64 } -> ();
    /// `cuMemAllocAsync` → device pointer.
    72 MemAllocAsync [sync] { ctx: u64, stream: u64, size: u64 } -> u64;
    73 MemFreeAsync [deferred] { ctx: u64, stream: u64, ptr: u64 } -> ();
    /// `cuDeviceGetDefaultMemPool` → pool handle.
    74 DeviceGetDefaultMemPool [sync] { device: i32 } -> u64;
    /// `cuMemPoolGetAttribute` → the value widened to u64.
    75 MemPoolGetAttribute [sync] { pool: u64, attr: u32 } -> u64;
    76 MemPoolSetAttribute [sync] { pool: u64, attr: u32, value: u64 } -> ();
    77 MemPoolTrimTo [sync] { pool: u64, keep: u64 } -> ();
    /// `cuMemAllocFromPoolAsync` → device pointer.
    78 MemAllocFromPoolAsync [sync] { ctx: u64, stream: u64, pool: u64, size: u64 } -> u64;

    // ---- modules, kernels, launches ----
    /// `cuModuleLoadData[Ex]` / `cuModuleLoadFatBinary`: `image` is the
    /// exact bytes (fatbin container, cubin ELF or NUL-terminated PTX).
    80 ModuleLoadData [sync bulk flushes] { ctx: u64, image: Bytes } -> u64;
    81 ModuleUnload [sync flushes] { module: u64 } -> ();
    /// `cuModuleGetFunction` → the function and its parameter layout.
    82 ModuleGetFunction [sync] { module: u64, name: String } -> FunctionInfo;
    /// `cuModuleGetGlobal` → (device pointer, size).
    83 ModuleGetGlobal [sync] { module: u64, name: String } -> (u64, u64);
    /// `cuLibraryLoadData` (in the current context of the call, or 0 when
    /// the guest has none) → library.
    84 LibraryLoadData [sync bulk flushes] { ctx: u64, image: Bytes } -> u64;
    85 LibraryUnload [sync flushes] { library: u64 } -> ();
    /// `cuLibraryGetKernel` → the kernel and its parameter layout.
    86 LibraryGetKernel [sync] { library: u64, name: String } -> FunctionInfo;
    /// `cuLibraryGetModule` → the library's module in context `ctx`.
    87 LibraryGetModule [sync] { ctx: u64, library: u64 } -> u64;
    /// `cuLibraryGetGlobal` → (device pointer, size) in context `ctx`.
    88 LibraryGetGlobal [sync] { ctx: u64, library: u64, name: String } -> (u64, u64);
    /// `cuKernelGetFunction` → the kernel's function in context `ctx`.
    89 KernelGetFunction [sync] { ctx: u64, kernel: u64 } -> FunctionInfo;
    /// `cuFuncGetAttribute` (also for kernels: `func` may be a kernel handle).
    90 FuncGetAttribute [sync] { func: u64, attr: i32 } -> i32;
    91 FuncSetAttribute [sync] { func: u64, attr: i32, value: i32 } -> ();
    92 FuncSetCacheConfig [sync] { func: u64, config: u32 } -> ();
    /// `cuLaunchKernel[Ex]`, `cuLaunchCooperativeKernel`: `params` is the
    /// packed argument buffer (as in `CU_LAUNCH_PARAM_BUFFER_POINTER`);
    /// `attrs` are every attribute of a `cuLaunchKernelEx` config, in its
    /// order (empty: a plain or, with `cooperative`, cooperative launch).
    93 LaunchKernel [deferred] { ctx: u64, func: u64, grid: [u32; 3], block: [u32; 3], shared_mem: u32, stream: u64, params: Bytes, cooperative: bool, attrs: Vec<LaunchAttr> } -> ();
    /// `cuOccupancyMaxActiveBlocksPerMultiprocessor[WithFlags]`.
    94 OccupancyMaxActiveBlocks [sync] { func: u64, block_size: i32, dynamic_smem: u64, flags: u32 } -> i32;
    /// `cuOccupancyMaxPotentialBlockSize[WithFlags]` with a fixed dynamic
    /// shared memory size → (min grid size, block size).
    95 OccupancyMaxPotentialBlockSize [sync] { func: u64, dynamic_smem: u64, block_size_limit: i32, flags: u32 } -> (i32, i32);
    /// `cuLink*` done in one step on the host: the guest collects the inputs
    /// and `cuLinkComplete` asks for the linked image.
    96 LinkComplete [sync bulk] { ctx: u64, inputs: Vec<LinkInput> } -> Bytes;
    /// `cuOccupancyMaxActiveClusters` for a launch of `func` shaped so;
    /// the cluster size comes from a `ClusterDimension` in `attrs` (or the
    /// function's required cluster size).
    97 OccupancyMaxActiveClusters [sync] { func: u64, grid: [u32; 3], block: [u32; 3], shared_mem: u32, attrs: Vec<LaunchAttr> } -> i32;
    /// `cuOccupancyMaxPotentialClusterSize` (cluster dimensions in `attrs`
    /// are ignored, as by the driver).
    98 OccupancyMaxPotentialClusterSize [sync] { func: u64, grid: [u32; 3], block: [u32; 3], shared_mem: u32, attrs: Vec<LaunchAttr> } -> i32;
    /// `cuOccupancyAvailableDynamicSMemPerBlock` → bytes.
    99 OccupancyAvailableDynamicSMem [sync] { func: u64, num_blocks: i32, block_size: i32 } -> u64;

    // ---- events ----
    100 EventCreate [sync] { ctx: u64, flags: u32 } -> u64;
    101 EventDestroy [sync] { event: u64 } -> ();
    102 EventRecord [deferred] { event: u64, stream: u64, flags: u32 } -> ();
    /// The status is `CUDA_ERROR_NOT_READY` while the event is pending.
    103 EventQuery [sync collects] { event: u64 } -> ();
    104 EventSynchronize [sync collects] { event: u64 } -> ();
    /// → milliseconds as `f32::to_bits`.
    105 EventElapsedTime [sync] { start: u64, end: u64 } -> u32;
    /// `cuStreamWaitEvent`.
    106 StreamWaitEvent [deferred] { stream: u64, event: u64, flags: u32 } -> ();
    /// Ends a batch: replies with the first deferred error of the batches
    /// sent since the last `Flush` (0 if none) without synchronizing.
    107 Flush [sync collects] {} -> ();

    // ---- stream-ordered copies and memsets: the `...Async` twins of the
    // synchronous ops above, ordered on `stream` (a [`StreamCreate`] handle,
    // 0 for the context's NULL stream, or `CU_STREAM_LEGACY` /
    // `CU_STREAM_PER_THREAD` as 1 / 2). Those with a host buffer finish
    // before the host answers or takes the next request (the buffer lives
    // in the request); the reply-bearing ones are therefore `sync`. ----
    112 MemcpyHtoDAsync [deferred bulk] { ctx: u64, stream: u64, dst: u64, data: Bytes } -> ();
    113 MemcpyDtoHAsync [sync bulk] { ctx: u64, stream: u64, src: u64, size: u64 } -> Bytes;
    114 MemcpyDtoDAsync [deferred] { ctx: u64, stream: u64, dst: u64, src: u64, size: u64 } -> ();
    115 MemsetAsync [deferred] { ctx: u64, stream: u64, dst: u64, pitch: u64, value: u32, elem_size: u32, width: u64, height: u64 } -> ();
    116 Memcpy2DHtoDAsync [deferred bulk] { ctx: u64, stream: u64, dst: u64, dst_pitch: u64, width: u64, height: u64, data: Bytes } -> ();
    117 Memcpy2DDtoHAsync [sync bulk] { ctx: u64, stream: u64, src: u64, src_pitch: u64, width: u64, height: u64 } -> Bytes;
    118 Memcpy2DDtoDAsync [deferred] { ctx: u64, stream: u64, dst: u64, dst_pitch: u64, src: u64, src_pitch: u64, width: u64, height: u64 } -> ();

    // ---- graphs (docs/graphs.md): the guest records and keeps the graph;
    // the host builds the same one with the driver's graph API once, at
    // instantiation, and replays it. Nodes are named by their index in
    // `GraphInstantiate::nodes`. ----
    /// `cuGraphInstantiateWithFlags` of a graph with only host-run nodes
    /// (see [`GraphNode`]) in context `ctx`; `edges` are (from, to) node
    /// indices and must form a DAG; `flags` are
    /// `CUgraphInstantiate_flags`. → an exec handle.
    120 GraphInstantiate [sync] { ctx: u64, nodes: Vec<GraphNode>, edges: Vec<(u32, u32)>, flags: u64 } -> u64;
    /// `cuGraphLaunch`: one message whatever the graph's size. `stream` as
    /// for the `...Async` ops.
    121 GraphLaunch [deferred] { exec: u64, stream: u64 } -> ();
    /// `cuGraphUpload`.
    122 GraphUpload [deferred] { exec: u64, stream: u64 } -> ();
    /// `cuGraphExecDestroy` (and the host's copy of the graph with it).
    123 GraphExecDestroy [sync] { exec: u64 } -> ();
    /// `cuGraphExec{Kernel,Memset,Memcpy}NodeSetParams` and
    /// `cuGraphExecEvent{Record,Wait}NodeSetEvent`, one per (node index,
    /// new parameters); each node keeps its kind, and a kernel node its
    /// attributes (they are fixed at instantiation).
    124 GraphExecSetNodes [deferred] { exec: u64, updates: Vec<(u32, GraphNode)> } -> ();
    /// `cuGraphNodeSetEnabled` of node `index` (kernel, memset and memcpy
    /// nodes only, as on the driver).
    125 GraphExecSetEnabled [deferred] { exec: u64, index: u32, enabled: bool } -> ();
    /// Graph memory (`cuMemAllocAsync` during capture,
    /// `cuGraphAddMemAllocNode`): a device allocation of this session,
    /// counted in its quota, until `GraphMemFree`. → device pointer.
    126 GraphMemAlloc [sync] { ctx: u64, size: u64 } -> u64;
    /// Returns graph memory; only pointers `GraphMemAlloc` returned.
    127 GraphMemFree [sync] { ctx: u64, ptr: u64 } -> ();

    // ---- tensor maps (TMA descriptors, compute capability 9.0): encoded
    // by the host's driver in context `ctx`; the reply is the 128-byte
    // `CUtensorMap` the guest copies out. The whole tensor must lie in
    // this session's memory. Enums travel as their C values. ----
    /// `cuTensorMapEncodeTiled`; `global_strides` has `rank - 1` entries,
    /// the other arrays `rank`.
    128 TensorMapEncodeTiled [sync] { ctx: u64, data_type: u32, rank: u32, global_address: u64, global_dim: Vec<u64>, global_strides: Vec<u64>, box_dim: Vec<u32>, element_strides: Vec<u32>, interleave: u32, swizzle: u32, l2_promotion: u32, oob_fill: u32 } -> Bytes;
    /// `cuTensorMapEncodeIm2col`; the corners have `rank - 2` entries.
    129 TensorMapEncodeIm2col [sync] { ctx: u64, data_type: u32, rank: u32, global_address: u64, global_dim: Vec<u64>, global_strides: Vec<u64>, lower_corner: Vec<i32>, upper_corner: Vec<i32>, channels_per_pixel: u32, pixels_per_column: u32, element_strides: Vec<u32>, interleave: u32, swizzle: u32, l2_promotion: u32, oob_fill: u32 } -> Bytes;
    /// `cuTensorMapReplaceAddress` of a descriptor this session had
    /// encoded (the host knows what it spans) → the new descriptor.
    130 TensorMapReplaceAddress [sync] { ctx: u64, map: Bytes, global_address: u64 } -> Bytes;

    // ---- the data plane (docs/protocol.md, "Bulk transfers"): pieces of
    // large copies and images. Over the socket a piece carries its bytes;
    // through the shared-memory region (`caps::SHM`) it names a slot
    // (`offset`, `len`), and its reply tells the guest the slot is free
    // again (HtoD, images) or filled (DtoH). ----
    /// A piece of a synchronous host-to-device copy over the socket, other
    /// than the last: queued, so pieces stream without a round trip each;
    /// the last piece travels as [`MemcpyHtoD`], whose reply reports a
    /// failure of any piece (it collects).
    201 MemcpyHtoDPart [deferred bulk] { ctx: u64, dst: u64, data: Bytes } -> ();
    /// A piece of a synchronous host-to-device copy from the region.
    202 ShmHtoD [sync collects] { ctx: u64, dst: u64, offset: u64, len: u64 } -> ();
    /// A piece of a stream-ordered host-to-device copy from the region; the
    /// reply means the host has taken the bytes (the copy stays ordered on
    /// the stream, as a driver stages a pageable source).
    203 ShmHtoDAsync [sync] { ctx: u64, stream: u64, dst: u64, offset: u64, len: u64 } -> ();
    /// A piece of a synchronous device-to-host copy into the region.
    204 ShmDtoH [sync collects] { ctx: u64, src: u64, offset: u64, len: u64 } -> ();
    /// A piece of a stream-ordered device-to-host copy into the region
    /// (complete when answered, as `MemcpyDtoHAsync`).
    205 ShmDtoHAsync [sync] { ctx: u64, stream: u64, src: u64, offset: u64, len: u64 } -> ();
    /// Appends bytes to the session's staged image (an image too large for
    /// one frame, sent in pieces). A failure poisons the staged image, so
    /// the load that follows reports it.
    206 ImageStage [deferred bulk] { data: Bytes } -> ();
    /// [`ImageStage`] from a slot of the region.
    207 ImageStageShm [sync] { offset: u64, len: u64 } -> ();
    /// `ModuleLoadData` of the staged image, which it consumes.
    208 ModuleLoadStaged [sync bulk flushes] { ctx: u64 } -> u64;
    /// `LibraryLoadData` of the staged image, which it consumes.
    209 LibraryLoadStaged [sync bulk flushes] { ctx: u64 } -> u64;
}

/// The frame a guest sends right after a handshake in which both sides set
/// [`caps::SHM`]: a [`ShmAttach`], with the region's memfd attached
/// (SCM_RIGHTS). Outside the `calls!` table, like [`HELLO_OP`]; the worker
/// answers it before anything else (status 0: the region is in use; any
/// other: it is not, the payload says why, and the socket carries
/// everything).
pub const SHM_ATTACH_OP: u16 = 200;

wire_struct! {
    /// The guest's shared-memory region: its size and how it is cut.
    pub struct ShmAttach {
        pub size: u64,
        pub slot: u64,
    }
}

/// Largest staged image (an image sent in pieces) a worker accepts.
pub const MAX_STAGED_IMAGE: u64 = 4 << 30;

/// Size of a `CUtensorMap`.
pub const TENSOR_MAP_BYTES: usize = 128;

wire_enum! {
    /// One `CUlaunchAttribute` of `cuLaunchKernelEx` or of a kernel node;
    /// the tag is its `CUlaunchAttributeID` and the fields are the members
    /// of `CUlaunchAttributeValue` that id selects. Events are event
    /// handles of the session (the host translates them); `f32`s travel as
    /// their bits.
    pub enum LaunchAttr {
        0 Ignore {},
        1 AccessPolicyWindow { base_ptr: u64, num_bytes: u64, hit_ratio_bits: u32, hit_prop: u32, miss_prop: u32 },
        2 Cooperative { value: i32 },
        3 SynchronizationPolicy { policy: u32 },
        4 ClusterDimension { dim: [u32; 3] },
        5 ClusterSchedulingPolicyPreference { policy: u32 },
        6 ProgrammaticStreamSerialization { allowed: i32 },
        7 ProgrammaticEvent { event: u64, flags: i32, trigger_at_block_start: i32 },
        8 Priority { priority: i32 },
        9 MemSyncDomainMap { default_domain: u8, remote_domain: u8 },
        10 MemSyncDomain { domain: u32 },
        11 PreferredClusterDimension { dim: [u32; 3] },
        12 LaunchCompletionEvent { event: u64, flags: i32 },
        /// Only `device_updatable`: the `devNode` the driver would return
        /// is not carried back, so the host refuses a non-zero value.
        13 DeviceUpdatableKernelNode { device_updatable: i32 },
        14 PreferredSharedMemoryCarveout { carveout: u32 },
        16 NvlinkUtilCentricScheduling { value: u32 },
        17 PortableClusterSizeMode { mode: u32 },
        18 SharedMemoryMode { mode: u32 },
    }
}

wire_enum! {
    /// One node of a graph the host runs, the tag its `CUgraphNodeType`.
    /// Host-function nodes and copies touching guest memory run in the
    /// guest, child graphs are inlined, and graph-memory alloc/free nodes
    /// are `Empty` (their memory is [`GraphMemAlloc`]'s), so no other kind
    /// travels.
    pub enum GraphNode {
        /// `func` is a function or kernel handle of this session; `params`
        /// the packed argument buffer, as for [`LaunchKernel`].
        0 Kernel { func: u64, grid: [u32; 3], block: [u32; 3], shared_mem: u32, params: Bytes, attrs: Vec<LaunchAttr> },
        /// Device to device, `depth` slices of `height` rows of `width`
        /// bytes; rows `*_pitch` bytes apart, slices `*_height` rows apart
        /// (unused when `depth` is 1). `dst`/`src` are the first byte
        /// copied (the guest folds `X/Y/Z` offsets into them).
        1 Memcpy { dst: u64, dst_pitch: u64, dst_height: u64, src: u64, src_pitch: u64, src_height: u64, width: u64, height: u64, depth: u64 },
        /// As [`Memset`]'s fields (`CUDA_MEMSET_NODE_PARAMS`).
        2 Memset { dst: u64, pitch: u64, value: u32, elem_size: u32, width: u64, height: u64 },
        5 Empty {},
        /// `event` is an event handle of this session.
        6 EventWait { event: u64 },
        7 EventRecord { event: u64 },
    }
}

impl GraphNode {
    /// Whether `cuGraphNodeSetEnabled` applies to nodes of this kind.
    pub fn can_disable(&self) -> bool {
        matches!(
            self,
            GraphNode::Kernel { .. } | GraphNode::Memcpy { .. } | GraphNode::Memset { .. }
        )
    }
}

/// A synchronous copy or memset whose stream-ordered twin is the
/// `...Async` op: the same fields plus `stream`. Lets the guest build one
/// struct and send it either way, and the worker serve both with one
/// method.
pub trait OnStream: Call + Sized {
    type Async: Call<Reply = Self::Reply>;
    /// The same work ordered on `stream`.
    fn on_stream(self, stream: u64) -> Self::Async;
    /// The synchronous form of a twin, and its stream.
    fn split(twin: Self::Async) -> (Self, u64);
}

/// Pairs each synchronous op with its twin. The field lists are checked by
/// the compiler: a missing or extra field does not destructure.
macro_rules! on_stream {
    ($($sync:ident / $twin:ident { $($f:ident),* };)*) => {$(
        impl OnStream for $sync {
            type Async = $twin;
            fn on_stream(self, stream: u64) -> $twin {
                let $sync { $($f),* } = self;
                $twin { stream, $($f),* }
            }
            fn split(twin: $twin) -> ($sync, u64) {
                let $twin { stream, $($f),* } = twin;
                ($sync { $($f),* }, stream)
            }
        }
    )*};
}

on_stream! {
    MemcpyHtoD / MemcpyHtoDAsync { ctx, dst, data };
    MemcpyDtoH / MemcpyDtoHAsync { ctx, src, size };
    MemcpyDtoD / MemcpyDtoDAsync { ctx, dst, src, size };
    Memset / MemsetAsync { ctx, dst, pitch, value, elem_size, width, height };
    Memcpy2DHtoD / Memcpy2DHtoDAsync { ctx, dst, dst_pitch, width, height, data };
    Memcpy2DDtoH / Memcpy2DDtoHAsync { ctx, src, src_pitch, width, height };
    Memcpy2DDtoD / Memcpy2DDtoDAsync { ctx, dst, dst_pitch, src, src_pitch, width, height };
    MemcpyPeer / MemcpyPeerAsync { ctx, dst, dst_ctx, src, src_ctx, size };
}

wire_struct! {
    /// A function or kernel handle and what the guest needs to pack
    /// `kernelParams`: each parameter's (offset, size) in the argument
    /// buffer, `None` when neither the host driver nor the module image can
    /// tell (the host log says why).
    pub struct FunctionInfo {
        pub handle: u64,
        pub params: Option<Vec<(u32, u32)>>,
    }
}

wire_struct! {
    /// One `cuLinkAddData` input.
    pub struct LinkInput {
        /// `CUjitInputType`.
        pub input_type: u32,
        pub name: String,
        pub data: Bytes,
    }
}

/// Largest bulk payload of one copy call: big copies are cut into chunks of
/// this size, so no message holds a whole large buffer.
pub const COPY_CHUNK: u64 = 8 * 1024 * 1024;

wire_struct! {
    /// `CUmemAllocationProp`, the fields that cross the wire.
    pub struct MemAllocProp {
        /// `CUmemAllocationType`.
        pub alloc_type: u32,
        /// `CUmemAllocationHandleType` bits.
        pub requested_handle_types: u32,
        /// `CUmemLocation`: type and id (device ordinal).
        pub location_type: u32,
        pub location_id: i32,
        pub compression_type: u8,
        pub gpu_direct_rdma_capable: u8,
        pub usage: u16,
    }
}

wire_struct! {
    /// One `CUmemAccessDesc`.
    pub struct MemAccess {
        pub location_type: u32,
        pub location_id: i32,
        /// `CUmemAccess_flags`.
        pub flags: u32,
    }
}

wire_struct! {
    /// First frame from the guest (op [`HELLO_OP`]).
    pub struct Hello {
        pub magic: [u8; 4],
        pub version: u32,
        pub build_id: String,
        pub capabilities: u64,
        /// Required for TCP connections from anywhere but loopback.
        pub token: Option<String>,
        /// The guest process, for the host's logs and NVML process lists.
        pub pid: u32,
    }
}

wire_struct! {
    /// The host's answer to [`Hello`] when it accepts.
    pub struct HelloReply {
        pub version: u32,
        pub build_id: String,
        pub capabilities: u64,
        /// "nvidia" or "emulated".
        pub driver_kind: String,
        /// Identifies the worker serving this connection, for logs.
        pub session: u64,
    }
}

pub const HELLO_OP: u16 = 1;

/// The op of a [`DeviceOutput`] notice (a frame flagged
/// [`crate::frame::FLAG_NOTICE`]); no call has this number.
pub const DEVICE_OUTPUT_OP: u16 = 15;

wire_struct! {
    /// Text the device printed for the guest's kernels, host to guest: what
    /// the driver wrote to the worker's stdout (`fd` 1: device `printf`) or
    /// the device assert messages it wrote to its stderr (`fd` 2), in the
    /// order written, sent before the reply of a call that [`Meta::flushes`].
    /// The guest writes `data` to that descriptor of its own and nothing
    /// else: the bytes are the kernel's, never interpreted.
    pub struct DeviceOutput {
        pub fd: u8,
        pub data: Bytes,
        /// Bytes of this descriptor's output the host dropped since the
        /// previous notice, past its bound on output held between flushes;
        /// they belonged before `data`.
        pub dropped: u64,
    }
}

impl Hello {
    pub fn new(build_id: &str, capabilities: u64, token: Option<String>) -> Hello {
        Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            build_id: build_id.to_string(),
            capabilities,
            token,
            pid: std::process::id(),
        }
    }
}

/// Decodes a call's payload; a decode failure becomes `STATUS_BAD_REQUEST`.
pub fn decode_call<C: Call>(payload: &[u8]) -> Result<C, DecodeError> {
    let mut r = Reader::new(payload);
    let c = C::decode(&mut r)?;
    r.finish()?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn an_ops_stream_is_its_stream_field() {
        let sync = StreamSynchronize { stream: 0x77 };
        assert_eq!(sync.stream(), Some(0x77));
        assert_eq!(
            stream_of(StreamSynchronize::OP, &to_bytes(&sync)),
            Some(0x77)
        );
        assert_eq!(Ping {}.stream(), None);
        assert_eq!(CtxSynchronize { ctx: 1 }.stream(), None);
        // Undecodable or unknown: no stream.
        assert_eq!(stream_of(StreamSynchronize::OP, &[1, 2]), None);
        assert_eq!(stream_of(0x7777, &[]), None);
        // Every deferred op that takes a stream reports it.
        let copy = MemsetAsync {
            ctx: 1,
            stream: 9,
            dst: 0,
            pitch: 0,
            value: 0,
            elem_size: 1,
            width: 1,
            height: 1,
        };
        assert_eq!(stream_of(MemsetAsync::OP, &to_bytes(&copy)), Some(9));
        // Only synchronous copies are scoped to the default streams.
        let scoped: Vec<&str> = OPS
            .iter()
            .filter(|m| m.default_stream)
            .map(|m| m.name)
            .collect();
        assert_eq!(
            scoped,
            ["MemcpyHtoD", "MemcpyDtoH", "Memcpy2DHtoD", "Memcpy2DDtoH"]
        );
    }

    #[test]
    fn op_numbers_are_unique_and_not_the_handshake() {
        let mut seen = BTreeSet::new();
        for m in OPS {
            assert_ne!(m.op, HELLO_OP, "{}", m.name);
            assert!(seen.insert(m.op), "op {} ({}) used twice", m.op, m.name);
            assert_eq!(meta(m.op), Some(*m), "{}", m.name);
        }
        assert_eq!(op_name(<MemAlloc as Call>::OP), Some("MemAlloc"));
        assert_eq!(op_name(0xffff), None);
        assert_eq!(meta(HELLO_OP), None);
    }

    #[test]
    fn every_op_travels_one_way_and_deferred_ones_reply_unit() {
        for (m, unit) in replies_are_unit() {
            match m.travel {
                Travel::Deferred => {
                    assert!(unit, "{} is deferred but has a reply", m.name);
                    assert!(!m.collects, "{} is deferred and collects", m.name);
                    assert!(!m.answered());
                }
                Travel::Sync => assert!(m.answered()),
            }
        }
        // `unanswered` agrees with the travel class for every kind of reply.
        assert_eq!(<LaunchKernel as Call>::unanswered(), Some(()));
        assert_eq!(<MemcpyHtoDAsync as Call>::unanswered(), Some(()));
        assert_eq!(<MemcpyHtoD as Call>::unanswered(), None);
        assert_eq!(<MemAlloc as Call>::unanswered(), None);
    }

    #[test]
    fn the_synchronizing_calls_collect_and_no_others() {
        // cuda.h: these wait for (or ask about) the device, so CUDA reports
        // earlier asynchronous errors through them; Flush exists to collect.
        let expected: BTreeSet<&str> = [
            "CtxSynchronize",
            "StreamSynchronize",
            "StreamQuery",
            "EventSynchronize",
            "EventQuery",
            "Flush",
            "MemcpyHtoD",
            "MemcpyDtoH",
            "Memcpy2DHtoD",
            "Memcpy2DDtoH",
            "ShmHtoD",
            "ShmDtoH",
        ]
        .into();
        let collectors: BTreeSet<&str> =
            OPS.iter().filter(|m| m.collects).map(|m| m.name).collect();
        assert_eq!(collectors, expected);
        // Copies through a host buffer on a stream are not synchronizing.
        assert!(!meta(MemcpyDtoHAsync::OP).unwrap().collects);
        assert_eq!(<NvmlQuery as Call>::META.domain, Domain::Nvml);
        assert_eq!(<CtxSynchronize as Call>::META.domain, Domain::Cuda);
    }

    #[test]
    fn device_output_goes_out_where_cuda_flushes_printf() {
        // The CUDA C++ Programming Guide's flush points ("Formatted
        // Output"): synchronizations, blocking copies, module load and
        // unload, context destruction; and every call that collects, since
        // each waits for (or asks about) the device.
        let expected: BTreeSet<&str> = [
            "CtxSynchronize",
            "StreamSynchronize",
            "StreamQuery",
            "EventSynchronize",
            "EventQuery",
            "Flush",
            "MemcpyHtoD",
            "MemcpyDtoH",
            "Memcpy2DHtoD",
            "Memcpy2DDtoH",
            "ModuleLoadData",
            "ModuleUnload",
            "LibraryLoadData",
            "LibraryUnload",
            "CtxDestroy",
            "PrimaryCtxReset",
            "ShmHtoD",
            "ShmDtoH",
            "ModuleLoadStaged",
            "LibraryLoadStaged",
        ]
        .into();
        let flushing: BTreeSet<&str> = OPS.iter().filter(|m| m.flushes).map(|m| m.name).collect();
        assert_eq!(flushing, expected);
        assert!(OPS.iter().all(|m| !m.flushes || m.answered()));
        // The notice's op is no call's, so a reply can never be taken for it.
        assert_eq!(meta(DEVICE_OUTPUT_OP), None);
        assert_ne!(DEVICE_OUTPUT_OP, HELLO_OP);
    }

    #[test]
    fn copy_chunks_fit_in_a_frame() {
        let call = MemcpyHtoDAsync {
            data: Bytes(vec![0; COPY_CHUNK as usize]),
            ..Default::default()
        };
        assert!(crate::codec::to_bytes(&call).len() <= crate::frame::MAX_PAYLOAD as usize);
        assert!(meta(MemcpyHtoDAsync::OP).unwrap().bulk);
        assert!(!meta(LaunchKernel::OP).unwrap().bulk);
    }

    #[test]
    fn twins_keep_every_field() {
        let sync = Memcpy2DDtoD {
            ctx: 1,
            dst: 2,
            dst_pitch: 3,
            src: 4,
            src_pitch: 5,
            width: 6,
            height: 7,
        };
        let twin = sync.clone().on_stream(9);
        assert_eq!(twin.stream, 9);
        assert_eq!((twin.ctx, twin.height), (1, 7));
        assert_eq!(Memcpy2DDtoD::split(twin), (sync, 9));
    }

    #[test]
    fn launch_attribute_tags_are_every_attribute_id() {
        use cuda_types::cuda::CUlaunchAttributeID as Id;
        // Every id below MAX the header defines has a variant, and no
        // variant has an id the header does not define (15 is unused).
        let defined: BTreeSet<u32> = (0..Id::CU_LAUNCH_ATTRIBUTE_MAX.0)
            .filter(|&i| i != 15)
            .collect();
        let tags: BTreeSet<u32> = LaunchAttr::TAGS.iter().copied().collect();
        assert_eq!(tags.len(), LaunchAttr::TAGS.len(), "a tag is used twice");
        assert_eq!(tags, defined);
        assert_eq!(
            LaunchAttr::ClusterDimension { dim: [2, 1, 1] }.tag(),
            Id::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION.0
        );
        assert_eq!(
            LaunchAttr::LaunchCompletionEvent { event: 1, flags: 0 }.tag(),
            Id::CU_LAUNCH_ATTRIBUTE_LAUNCH_COMPLETION_EVENT.0
        );
        assert_eq!(
            LaunchAttr::SharedMemoryMode { mode: 0 }.tag(),
            Id::CU_LAUNCH_ATTRIBUTE_SHARED_MEMORY_MODE.0
        );
    }

    #[test]
    fn graph_node_tags_are_node_types() {
        use cuda_types::cuda::CUgraphNodeType as T;
        let cases = [
            (
                GraphNode::Kernel {
                    func: 1,
                    grid: [1; 3],
                    block: [1; 3],
                    shared_mem: 0,
                    params: Bytes(vec![1]),
                    attrs: vec![],
                },
                T::CU_GRAPH_NODE_TYPE_KERNEL,
            ),
            (
                GraphNode::Memcpy {
                    dst: 1,
                    dst_pitch: 0,
                    dst_height: 0,
                    src: 2,
                    src_pitch: 0,
                    src_height: 0,
                    width: 4,
                    height: 1,
                    depth: 1,
                },
                T::CU_GRAPH_NODE_TYPE_MEMCPY,
            ),
            (
                GraphNode::Memset {
                    dst: 1,
                    pitch: 0,
                    value: 0,
                    elem_size: 1,
                    width: 1,
                    height: 1,
                },
                T::CU_GRAPH_NODE_TYPE_MEMSET,
            ),
            (GraphNode::Empty {}, T::CU_GRAPH_NODE_TYPE_EMPTY),
            (
                GraphNode::EventWait { event: 3 },
                T::CU_GRAPH_NODE_TYPE_WAIT_EVENT,
            ),
            (
                GraphNode::EventRecord { event: 3 },
                T::CU_GRAPH_NODE_TYPE_EVENT_RECORD,
            ),
        ];
        assert_eq!(cases.len(), GraphNode::TAGS.len());
        for (node, ty) in cases {
            assert_eq!(node.tag(), ty.0, "{node:?}");
            assert_eq!(
                node.can_disable(),
                matches!(
                    ty,
                    T::CU_GRAPH_NODE_TYPE_KERNEL
                        | T::CU_GRAPH_NODE_TYPE_MEMCPY
                        | T::CU_GRAPH_NODE_TYPE_MEMSET
                )
            );
            assert_eq!(
                crate::codec::from_bytes::<GraphNode>(&to_bytes(&node)),
                Ok(node)
            );
        }
        // A host node (3) or a child graph (4) never travels.
        for t in [3u32, 4, 8, 10, 99] {
            assert_eq!(
                crate::codec::from_bytes::<GraphNode>(&to_bytes(&t)),
                Err(DecodeError::BadTag(t))
            );
        }
    }

    #[test]
    fn a_graph_instantiation_round_trips_and_a_launch_is_small() {
        let node = |i: u64| GraphNode::Kernel {
            func: 0xF700 + i,
            grid: [4, 1, 1],
            block: [128, 1, 1],
            shared_mem: 0,
            params: Bytes(i.to_le_bytes().to_vec()),
            attrs: vec![
                LaunchAttr::Priority { priority: -1 },
                LaunchAttr::ProgrammaticEvent {
                    event: 7,
                    flags: 0,
                    trigger_at_block_start: 1,
                },
            ],
        };
        let g = GraphInstantiate {
            ctx: 1,
            nodes: (0..256).map(node).collect(),
            edges: (0..255).map(|i| (i, i + 1)).collect(),
            flags: 0,
        };
        let b = to_bytes(&g);
        assert_eq!(decode_call::<GraphInstantiate>(&b), Ok(g));
        // A launch names the exec only: its size does not depend on the graph.
        assert_eq!(to_bytes(&GraphLaunch { exec: 1, stream: 2 }).len(), 16);
        assert_eq!(<GraphLaunch as Call>::META.travel, Travel::Deferred);
        assert_eq!(<GraphInstantiate as Call>::META.travel, Travel::Sync);
        // A node of an unknown kind inside an otherwise valid request.
        let mut bad = to_bytes(&1u64);
        bad.extend_from_slice(&to_bytes(&1u32));
        bad.extend_from_slice(&to_bytes(&3u32));
        assert_eq!(
            decode_call::<GraphInstantiate>(&bad),
            Err(DecodeError::BadTag(3))
        );
    }

    /// Answers every call with its reply type's default value and counts.
    #[derive(Default)]
    struct Defaults {
        served: Vec<u16>,
    }

    impl<C: Call> Serve<C> for Defaults
    where
        C::Reply: Default,
    {
        fn serve(&mut self, _: C) -> Result<C::Reply, Status> {
            self.served.push(C::OP);
            if C::OP == <MemFree as Call>::OP {
                return Err(Status::Cuda(
                    cuda_types::cuda::CUresult::CUDA_ERROR_INVALID_VALUE,
                ));
            }
            Ok(C::Reply::default())
        }
    }

    #[test]
    fn dispatch_decodes_serves_or_refuses() {
        let mut s = Defaults::default();
        let ok = dispatch(&mut s, MemGetInfo::OP, &to_bytes(&MemGetInfo { ctx: 5 }));
        assert_eq!(ok, Ok(to_bytes(&(0u64, 0u64))));
        let err = dispatch(&mut s, MemFree::OP, &to_bytes(&MemFree::default()));
        assert_eq!(
            err,
            Err(Status::Cuda(
                cuda_types::cuda::CUresult::CUDA_ERROR_INVALID_VALUE
            ))
        );
        // Short, and one byte too long: the handler never sees either.
        assert_eq!(
            dispatch(&mut s, MemGetInfo::OP, &[1, 2, 3]),
            Err(Status::BAD_REQUEST)
        );
        let mut long = to_bytes(&MemGetInfo { ctx: 5 });
        long.push(0);
        assert_eq!(
            dispatch(&mut s, MemGetInfo::OP, &long),
            Err(Status::BAD_REQUEST)
        );
        assert_eq!(dispatch(&mut s, 0xfffe, &[]), Err(Status::UNKNOWN_OP));
        assert_eq!(dispatch(&mut s, HELLO_OP, &[]), Err(Status::UNKNOWN_OP));
        assert_eq!(s.served, vec![MemGetInfo::OP, MemFree::OP]);
    }
}
