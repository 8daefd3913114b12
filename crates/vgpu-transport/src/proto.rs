//! The calls a guest makes and the replies it gets.
//!
//! Each call is a struct implementing [`Call`]: its op number, its reply type.
//! The reply header's status is the call's result code — a `CUresult` for
//! driver calls, an `nvmlReturn_t` for NVML calls, or one of the `STATUS_*`
//! protocol errors below (all above any CUDA or NVML code). A reply with a
//! non-zero status carries no payload unless the call says otherwise.

use crate::codec::{Bytes, DecodeError, Reader, Wire};
use crate::wire_struct;

pub const MAGIC: [u8; 4] = *b"VGPU";
/// Bumped on every incompatible change of frames, handshake or calls.
pub const PROTOCOL_VERSION: u32 = 1;

/// The request could not be decoded.
pub const STATUS_BAD_REQUEST: u32 = 0xF000_0001;
/// The op is not one this host knows.
pub const STATUS_UNKNOWN_OP: u32 = 0xF000_0002;
/// The host cannot serve this call (no driver function, worker failure).
pub const STATUS_HOST_ERROR: u32 = 0xF000_0003;

/// Handshake refusals (the status of the `Hello` reply); the payload is a
/// human-readable reason and the host then closes the connection.
pub mod refusal {
    pub const BAD_MAGIC: u32 = 1;
    pub const VERSION_MISMATCH: u32 = 2;
    pub const BAD_TOKEN: u32 = 3;
    pub const PEER_NOT_ALLOWED: u32 = 4;
    pub const HOST_UNAVAILABLE: u32 = 5;
}

/// Capability bits exchanged in the handshake.
pub mod caps {
    /// The peer can use a shared-memory data plane (Unix sockets only).
    pub const SHM: u64 = 1 << 0;
    /// The peer understands [`crate::frame::FLAG_NO_REPLY`] batching.
    pub const BATCH: u64 = 1 << 1;
}

/// A call: its op number and what it returns on success.
pub trait Call: Wire {
    const OP: u16;
    const NAME: &'static str;
    type Reply: Wire;
}

macro_rules! calls {
    ($(
        $(#[$m:meta])*
        $op:literal $name:ident { $($f:ident : $t:ty),* $(,)? } -> $reply:ty;
    )*) => {
        $(
            wire_struct! { $(#[$m])* pub struct $name { $(pub $f: $t),* } }
            impl Call for $name {
                const OP: u16 = $op;
                const NAME: &'static str = stringify!($name);
                type Reply = $reply;
            }
        )*
        /// Every op and its name, for logs and for the decoder's op check.
        pub const OPS: &[(u16, &str)] = &[$(($op, stringify!($name))),*];
    };
}

/// Name of an op, or `None` for one this version does not know.
pub fn op_name(op: u16) -> Option<&'static str> {
    OPS.iter().find(|(o, _)| *o == op).map(|(_, n)| *n)
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
    2 Ping {} -> ();
    /// The device inventory (see [`Inventory`]).
    3 GetInventory {} -> Inventory;
    /// A live NVML value; the reply status is the `nvmlReturn_t`.
    4 NvmlQuery { device: u32, kind: u32, arg0: u32, arg1: u32 } -> NvmlAnswer;

    /// `cuCtxCreate*`; returns the host's handle for the new context.
    16 CtxCreate { device: i32, flags: u32 } -> u64;
    17 CtxDestroy { ctx: u64 } -> ();
    /// Retains the device's primary context; returns its handle (the same
    /// handle for every retain of one device within a session).
    18 PrimaryCtxRetain { device: i32 } -> u64;
    19 PrimaryCtxRelease { device: i32 } -> ();
    20 PrimaryCtxReset { device: i32 } -> ();
    21 PrimaryCtxSetFlags { device: i32, flags: u32 } -> ();
    /// → (flags, active).
    22 PrimaryCtxGetState { device: i32 } -> (u32, bool);
    23 CtxSynchronize { ctx: u64 } -> ();
    /// `cuMemGetInfo` in that context → (free, total).
    24 MemGetInfo { ctx: u64 } -> (u64, u64);

    // ---- memory (device addresses are the host driver's real values; the
    // worker checks every range against this session's allocations) ----
    /// `cuMemAlloc` → device pointer.
    32 MemAlloc { ctx: u64, size: u64 } -> u64;
    /// `cuMemAllocPitch` → (pointer, pitch).
    33 MemAllocPitch { ctx: u64, width: u64, height: u64, elem_size: u32 } -> (u64, u64);
    34 MemFree { ctx: u64, ptr: u64 } -> ();
    /// `cuMemGetAddressRange` → (base, size).
    35 MemGetAddressRange { ctx: u64, ptr: u64 } -> (u64, u64);
    /// Host to device, at most [`COPY_CHUNK`] bytes per call. `stream` 0 is
    /// a synchronous copy; otherwise the copy is ordered on that stream
    /// (a [`StreamCreate`] handle, or `CU_STREAM_LEGACY`/`CU_STREAM_PER_THREAD`).
    36 MemcpyHtoD { ctx: u64, stream: u64, dst: u64, data: Bytes } -> ();
    /// Device to host, at most [`COPY_CHUNK`] bytes per call → the bytes.
    37 MemcpyDtoH { ctx: u64, stream: u64, src: u64, size: u64 } -> Bytes;
    38 MemcpyDtoD { ctx: u64, stream: u64, dst: u64, src: u64, size: u64 } -> ();
    /// `cuMemsetD8/16/32[2D]`: `height` rows of `width` elements of
    /// `elem_size` (1, 2, 4) bytes, rows `pitch` bytes apart (1D: height 1).
    39 Memset { ctx: u64, stream: u64, dst: u64, pitch: u64, value: u32, elem_size: u32, width: u64, height: u64 } -> ();
    /// A 2D copy to device: `height` rows of `width` bytes, packed in `data`,
    /// written `dst_pitch` apart. At most [`COPY_CHUNK`] bytes per call.
    40 Memcpy2DHtoD { ctx: u64, stream: u64, dst: u64, dst_pitch: u64, width: u64, height: u64, data: Bytes } -> ();
    /// A 2D copy from device → `height` rows of `width` bytes, packed.
    41 Memcpy2DDtoH { ctx: u64, stream: u64, src: u64, src_pitch: u64, width: u64, height: u64 } -> Bytes;
    42 Memcpy2DDtoD { ctx: u64, stream: u64, dst: u64, dst_pitch: u64, src: u64, src_pitch: u64, width: u64, height: u64 } -> ();

    // ---- virtual memory management ----
    /// `cuMemGetAllocationGranularity` → bytes.
    48 MemGetAllocationGranularity { prop: MemAllocProp, option: u32 } -> u64;
    /// `cuMemCreate` → allocation handle.
    49 MemCreate { size: u64, prop: MemAllocProp, flags: u64 } -> u64;
    50 MemRelease { handle: u64 } -> ();
    /// `cuMemAddressReserve` → start of the reserved range.
    51 MemAddressReserve { size: u64, alignment: u64, addr: u64, flags: u64 } -> u64;
    52 MemAddressFree { ptr: u64, size: u64 } -> ();
    53 MemMap { ptr: u64, size: u64, offset: u64, handle: u64, flags: u64 } -> ();
    54 MemUnmap { ptr: u64, size: u64 } -> ();
    55 MemSetAccess { ptr: u64, size: u64, access: Vec<MemAccess> } -> ();
    /// `cuMemGetAccess` → `CUmemAccess_flags`.
    56 MemGetAccess { location_type: u32, location_id: i32, ptr: u64 } -> u64;

    // ---- streams and stream-ordered allocation ----
    /// `cuStreamCreateWithPriority` → stream handle.
    64 StreamCreate { ctx: u64, flags: u32, priority: i32 } -> u64;
    65 StreamDestroy { stream: u64 } -> ();
    66 StreamSynchronize { stream: u64 } -> ();
    /// The status is `CUDA_ERROR_NOT_READY` while work is pending.
    67 StreamQuery { stream: u64 } -> ();
    /// `cuMemAllocAsync` → device pointer.
    72 MemAllocAsync { ctx: u64, stream: u64, size: u64 } -> u64;
    73 MemFreeAsync { ctx: u64, stream: u64, ptr: u64 } -> ();
    /// `cuDeviceGetDefaultMemPool` → pool handle.
    74 DeviceGetDefaultMemPool { device: i32 } -> u64;
    /// `cuMemPoolGetAttribute` → the value widened to u64.
    75 MemPoolGetAttribute { pool: u64, attr: u32 } -> u64;
    76 MemPoolSetAttribute { pool: u64, attr: u32, value: u64 } -> ();
    77 MemPoolTrimTo { pool: u64, keep: u64 } -> ();

    // ---- modules, kernels, launches ----
    /// `cuModuleLoadData[Ex]` / `cuModuleLoadFatBinary`: `image` is the
    /// exact bytes (fatbin container, cubin ELF or NUL-terminated PTX).
    80 ModuleLoadData { ctx: u64, image: Bytes } -> u64;
    81 ModuleUnload { module: u64 } -> ();
    /// `cuModuleGetFunction` → the function and its parameter layout.
    82 ModuleGetFunction { module: u64, name: String } -> FunctionInfo;
    /// `cuModuleGetGlobal` → (device pointer, size).
    83 ModuleGetGlobal { module: u64, name: String } -> (u64, u64);
    /// `cuLibraryLoadData` (in the current context of the call) → library.
    84 LibraryLoadData { ctx: u64, image: Bytes } -> u64;
    85 LibraryUnload { library: u64 } -> ();
    /// `cuLibraryGetKernel` → the kernel and its parameter layout.
    86 LibraryGetKernel { library: u64, name: String } -> FunctionInfo;
    /// `cuLibraryGetModule` → the library's module in context `ctx`.
    87 LibraryGetModule { ctx: u64, library: u64 } -> u64;
    /// `cuLibraryGetGlobal` → (device pointer, size) in context `ctx`.
    88 LibraryGetGlobal { ctx: u64, library: u64, name: String } -> (u64, u64);
    /// `cuKernelGetFunction` → the kernel's function in context `ctx`.
    89 KernelGetFunction { ctx: u64, kernel: u64 } -> FunctionInfo;
    /// `cuFuncGetAttribute` (also for kernels: `func` may be a kernel handle).
    90 FuncGetAttribute { func: u64, attr: i32 } -> i32;
    91 FuncSetAttribute { func: u64, attr: i32, value: i32 } -> ();
    92 FuncSetCacheConfig { func: u64, config: u32 } -> ();
    /// `cuLaunchKernel[Ex]`, `cuLaunchCooperativeKernel`: `params` is the
    /// packed argument buffer (as in `CU_LAUNCH_PARAM_BUFFER_POINTER`).
    /// Normally sent with `FLAG_NO_REPLY`: a failure is reported by the next
    /// synchronizing call.
    93 LaunchKernel { ctx: u64, func: u64, grid: [u32; 3], block: [u32; 3], shared_mem: u32, stream: u64, params: Bytes, cooperative: bool } -> ();
    /// `cuOccupancyMaxActiveBlocksPerMultiprocessor[WithFlags]`.
    94 OccupancyMaxActiveBlocks { func: u64, block_size: i32, dynamic_smem: u64, flags: u32 } -> i32;
    /// `cuOccupancyMaxPotentialBlockSize[WithFlags]` with a fixed dynamic
    /// shared memory size → (min grid size, block size).
    95 OccupancyMaxPotentialBlockSize { func: u64, dynamic_smem: u64, block_size_limit: i32, flags: u32 } -> (i32, i32);
    /// `cuLink*` done in one step on the host: the guest collects the inputs
    /// and `cuLinkComplete` asks for the linked image.
    96 LinkComplete { ctx: u64, inputs: Vec<LinkInput> } -> Bytes;

    // ---- events ----
    100 EventCreate { ctx: u64, flags: u32 } -> u64;
    101 EventDestroy { event: u64 } -> ();
    /// Normally sent with `FLAG_NO_REPLY`.
    102 EventRecord { event: u64, stream: u64, flags: u32 } -> ();
    /// The status is `CUDA_ERROR_NOT_READY` while the event is pending.
    103 EventQuery { event: u64 } -> ();
    104 EventSynchronize { event: u64 } -> ();
    /// → milliseconds as `f32::to_bits`.
    105 EventElapsedTime { start: u64, end: u64 } -> u32;
    /// `cuStreamWaitEvent`; normally sent with `FLAG_NO_REPLY`.
    106 StreamWaitEvent { stream: u64, event: u64, flags: u32 } -> ();
    /// Ends a batch: replies with the first deferred error of the batches
    /// sent since the last `Flush` (0 if none) without synchronizing.
    107 Flush {} -> ();
}

wire_struct! {
    /// A function or kernel handle and what the guest needs to pack
    /// `kernelParams`: each parameter's (offset, size) in the argument buffer.
    pub struct FunctionInfo {
        pub handle: u64,
        pub params: Vec<(u32, u32)>,
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

    #[test]
    fn op_numbers_are_unique_and_not_the_handshake() {
        let mut seen = std::collections::BTreeSet::new();
        for (op, name) in OPS {
            assert_ne!(*op, HELLO_OP, "{name}");
            assert!(seen.insert(*op), "op {op} ({name}) used twice");
        }
        assert_eq!(op_name(<MemAlloc as Call>::OP), Some("MemAlloc"));
        assert_eq!(op_name(0xffff), None);
    }

    #[test]
    fn copy_chunks_fit_in_a_frame() {
        let call = MemcpyHtoD {
            data: Bytes(vec![0; COPY_CHUNK as usize]),
            ..Default::default()
        };
        assert!(crate::codec::to_bytes(&call).len() <= crate::frame::MAX_PAYLOAD as usize);
    }
}
