//! `cuGetErrorName` / `cuGetErrorString`, answered locally and without
//! `cuInit`, like the real driver (apps call them to report a failed cuInit).

use cuda_types::cuda::CUresult;
use std::ffi::{c_char, CStr};
use vgpu_guest::ffi::OutPtr;

/// `(code, name, description)`. Names are the enumerator spellings of
/// cuda.h; descriptions are the texts the NVIDIA driver returns, which
/// tools and users grep for, so they are kept verbatim (typos included).
static ERRORS: &[(u32, &CStr, &CStr)] = &[
    (0, c"CUDA_SUCCESS", c"no error"),
    (1, c"CUDA_ERROR_INVALID_VALUE", c"invalid argument"),
    (2, c"CUDA_ERROR_OUT_OF_MEMORY", c"out of memory"),
    (3, c"CUDA_ERROR_NOT_INITIALIZED", c"initialization error"),
    (4, c"CUDA_ERROR_DEINITIALIZED", c"driver shutting down"),
    (
        5,
        c"CUDA_ERROR_PROFILER_DISABLED",
        c"profiler disabled while using external profiling tool",
    ),
    (
        6,
        c"CUDA_ERROR_PROFILER_NOT_INITIALIZED",
        c"profiler not initialized: call cudaProfilerInitialize()",
    ),
    (
        7,
        c"CUDA_ERROR_PROFILER_ALREADY_STARTED",
        c"profiler already started",
    ),
    (
        8,
        c"CUDA_ERROR_PROFILER_ALREADY_STOPPED",
        c"profiler already stopped",
    ),
    (
        34,
        c"CUDA_ERROR_STUB_LIBRARY",
        c"CUDA driver is a stub library",
    ),
    (
        36,
        c"CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER",
        c"API call is not supported in the installed CUDA driver",
    ),
    (
        46,
        c"CUDA_ERROR_DEVICE_UNAVAILABLE",
        c"CUDA-capable device(s) is/are busy or unavailable",
    ),
    (
        47,
        c"CUDA_ERROR_MULTICAST_RESOURCE_FULL",
        c"multicast resource is full",
    ),
    (
        100,
        c"CUDA_ERROR_NO_DEVICE",
        c"no CUDA-capable device is detected",
    ),
    (101, c"CUDA_ERROR_INVALID_DEVICE", c"invalid device ordinal"),
    (
        102,
        c"CUDA_ERROR_DEVICE_NOT_LICENSED",
        c"device doesn't have valid Grid license",
    ),
    (200, c"CUDA_ERROR_INVALID_IMAGE", c"device kernel image is invalid"),
    (201, c"CUDA_ERROR_INVALID_CONTEXT", c"invalid device context"),
    (
        202,
        c"CUDA_ERROR_CONTEXT_ALREADY_CURRENT",
        c"context already current",
    ),
    (205, c"CUDA_ERROR_MAP_FAILED", c"mapping of buffer object failed"),
    (
        206,
        c"CUDA_ERROR_UNMAP_FAILED",
        c"unmapping of buffer object failed",
    ),
    (207, c"CUDA_ERROR_ARRAY_IS_MAPPED", c"array is mapped"),
    (208, c"CUDA_ERROR_ALREADY_MAPPED", c"resource already mapped"),
    (
        209,
        c"CUDA_ERROR_NO_BINARY_FOR_GPU",
        c"no kernel image is available for execution on the device",
    ),
    (210, c"CUDA_ERROR_ALREADY_ACQUIRED", c"resource already acquired"),
    (211, c"CUDA_ERROR_NOT_MAPPED", c"resource not mapped"),
    (
        212,
        c"CUDA_ERROR_NOT_MAPPED_AS_ARRAY",
        c"resource not mapped as array",
    ),
    (
        213,
        c"CUDA_ERROR_NOT_MAPPED_AS_POINTER",
        c"resource not mapped as pointer",
    ),
    (
        214,
        c"CUDA_ERROR_ECC_UNCORRECTABLE",
        c"uncorrectable ECC error encountered",
    ),
    (
        215,
        c"CUDA_ERROR_UNSUPPORTED_LIMIT",
        c"limit is not supported on this architecture",
    ),
    (
        216,
        c"CUDA_ERROR_CONTEXT_ALREADY_IN_USE",
        c"exclusive-thread device already in use by a different thread",
    ),
    (
        217,
        c"CUDA_ERROR_PEER_ACCESS_UNSUPPORTED",
        c"peer access is not supported between these two devices",
    ),
    (218, c"CUDA_ERROR_INVALID_PTX", c"a PTX JIT compilation failed"),
    (
        219,
        c"CUDA_ERROR_INVALID_GRAPHICS_CONTEXT",
        c"invalid OpenGL or DirectX context",
    ),
    (
        220,
        c"CUDA_ERROR_NVLINK_UNCORRECTABLE",
        c"uncorrectable NVLink error detected during the execution",
    ),
    (
        221,
        c"CUDA_ERROR_JIT_COMPILER_NOT_FOUND",
        c"PTX JIT compiler library not found",
    ),
    (
        222,
        c"CUDA_ERROR_UNSUPPORTED_PTX_VERSION",
        c"the provided PTX was compiled with an unsupported toolchain.",
    ),
    (
        223,
        c"CUDA_ERROR_JIT_COMPILATION_DISABLED",
        c"PTX JIT compilation was disabled",
    ),
    (
        224,
        c"CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY",
        c"the provided execution affinity is not supported",
    ),
    (
        225,
        c"CUDA_ERROR_UNSUPPORTED_DEVSIDE_SYNC",
        c"the provided PTX contains unsupported call to cudaDeviceSynchronize",
    ),
    (
        226,
        c"CUDA_ERROR_CONTAINED",
        c"an exception occurred on the device that is now contained by the GPU's error containment capability",
    ),
    (
        227,
        c"CUDA_ERROR_INSUFFICIENT_LOADER_VERSION",
        c"the installed CUDA driver is older than the CUDA loader",
    ),
    (300, c"CUDA_ERROR_INVALID_SOURCE", c"device kernel image is invalid"),
    (301, c"CUDA_ERROR_FILE_NOT_FOUND", c"file not found"),
    (
        302,
        c"CUDA_ERROR_SHARED_OBJECT_SYMBOL_NOT_FOUND",
        c"shared object symbol not found",
    ),
    (
        303,
        c"CUDA_ERROR_SHARED_OBJECT_INIT_FAILED",
        c"shared object initialization failed",
    ),
    (
        304,
        c"CUDA_ERROR_OPERATING_SYSTEM",
        c"OS call failed or operation not supported on this OS",
    ),
    (400, c"CUDA_ERROR_INVALID_HANDLE", c"invalid resource handle"),
    (
        401,
        c"CUDA_ERROR_ILLEGAL_STATE",
        c"the operation cannot be performed in the present state",
    ),
    (
        402,
        c"CUDA_ERROR_LOSSY_QUERY",
        c"attempted introspection would be semantically lossy",
    ),
    (500, c"CUDA_ERROR_NOT_FOUND", c"named symbol not found"),
    (600, c"CUDA_ERROR_NOT_READY", c"device not ready"),
    (
        700,
        c"CUDA_ERROR_ILLEGAL_ADDRESS",
        c"an illegal memory access was encountered",
    ),
    (
        701,
        c"CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES",
        c"too many resources requested for launch",
    ),
    (
        702,
        c"CUDA_ERROR_LAUNCH_TIMEOUT",
        c"the launch timed out and was terminated",
    ),
    (
        703,
        c"CUDA_ERROR_LAUNCH_INCOMPATIBLE_TEXTURING",
        c"launch uses incompatible texturing mode",
    ),
    (
        704,
        c"CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED",
        c"peer access is already enabled",
    ),
    (
        705,
        c"CUDA_ERROR_PEER_ACCESS_NOT_ENABLED",
        c"peer access has not been enabled",
    ),
    (
        708,
        c"CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE",
        c"cannot set while device is active in this process",
    ),
    (709, c"CUDA_ERROR_CONTEXT_IS_DESTROYED", c"context is destroyed"),
    (710, c"CUDA_ERROR_ASSERT", c"device-side assert triggered"),
    (
        711,
        c"CUDA_ERROR_TOO_MANY_PEERS",
        c"peer mapping resources exhausted",
    ),
    (
        712,
        c"CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED",
        c"part or all of the requested memory range is already mapped",
    ),
    (
        713,
        c"CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED",
        c"pointer does not correspond to a registered memory region",
    ),
    (714, c"CUDA_ERROR_HARDWARE_STACK_ERROR", c"hardware stack error"),
    (
        715,
        c"CUDA_ERROR_ILLEGAL_INSTRUCTION",
        c"an illegal instruction was encountered",
    ),
    (716, c"CUDA_ERROR_MISALIGNED_ADDRESS", c"misaligned address"),
    (
        717,
        c"CUDA_ERROR_INVALID_ADDRESS_SPACE",
        c"operation not supported on global/shared address space",
    ),
    (718, c"CUDA_ERROR_INVALID_PC", c"invalid program counter"),
    (719, c"CUDA_ERROR_LAUNCH_FAILED", c"unspecified launch failure"),
    (
        720,
        c"CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE",
        c"too many blocks in cooperative launch",
    ),
    (
        721,
        c"CUDA_ERROR_TENSOR_MEMORY_LEAK",
        c"tensor memory not completely freed",
    ),
    (800, c"CUDA_ERROR_NOT_PERMITTED", c"operation not permitted"),
    (801, c"CUDA_ERROR_NOT_SUPPORTED", c"operation not supported"),
    (802, c"CUDA_ERROR_SYSTEM_NOT_READY", c"system not yet initialized"),
    (
        803,
        c"CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
        c"system has unsupported display driver / cuda driver combination",
    ),
    (
        804,
        c"CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE",
        c"forward compatibility was attempted on non supported HW",
    ),
    (
        805,
        c"CUDA_ERROR_MPS_CONNECTION_FAILED",
        c"MPS client failed to connect to the MPS control daemon or the MPS server",
    ),
    (
        806,
        c"CUDA_ERROR_MPS_RPC_FAILURE",
        c"the remote procedural call between the MPS server and the MPS client failed",
    ),
    (
        807,
        c"CUDA_ERROR_MPS_SERVER_NOT_READY",
        c"MPS server is not ready to accept new MPS client requests",
    ),
    (
        808,
        c"CUDA_ERROR_MPS_MAX_CLIENTS_REACHED",
        c"the hardware resources required to create MPS client have been exhausted",
    ),
    (
        809,
        c"CUDA_ERROR_MPS_MAX_CONNECTIONS_REACHED",
        c"the hardware resources required to support device connections have been exhausted",
    ),
    (
        810,
        c"CUDA_ERROR_MPS_CLIENT_TERMINATED",
        c"the MPS client has been terminated by the server",
    ),
    (
        811,
        c"CUDA_ERROR_CDP_NOT_SUPPORTED",
        c"is using CUDA Dynamic Parallelism, but the current configuration, like MPS, does not support it",
    ),
    (
        812,
        c"CUDA_ERROR_CDP_VERSION_MISMATCH",
        c"unsupported interaction between different versions of CUDA Dynamic Parallelism",
    ),
    (
        900,
        c"CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED",
        c"operation not permitted when stream is capturing",
    ),
    (
        901,
        c"CUDA_ERROR_STREAM_CAPTURE_INVALIDATED",
        c"operation failed due to a previous error during capture",
    ),
    (
        902,
        c"CUDA_ERROR_STREAM_CAPTURE_MERGE",
        c"operation would result in a merge of separate capture sequences",
    ),
    (
        903,
        c"CUDA_ERROR_STREAM_CAPTURE_UNMATCHED",
        c"capture was not ended in the same stream as it began",
    ),
    (
        904,
        c"CUDA_ERROR_STREAM_CAPTURE_UNJOINED",
        c"capturing stream has unjoined work",
    ),
    (
        905,
        c"CUDA_ERROR_STREAM_CAPTURE_ISOLATION",
        c"dependency created on uncaptured work in another stream",
    ),
    (
        906,
        c"CUDA_ERROR_STREAM_CAPTURE_IMPLICIT",
        c"operation would make the legacy stream depend on a capturing blocking stream",
    ),
    (
        907,
        c"CUDA_ERROR_CAPTURED_EVENT",
        c"operation not permitted on an event last recorded in a capturing stream",
    ),
    (
        908,
        c"CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD",
        c"attempt to terminate a thread-local capture sequence from another thread",
    ),
    (909, c"CUDA_ERROR_TIMEOUT", c"wait operation timed out"),
    (
        910,
        c"CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE",
        c"the graph update was not performed because it included changes which violated constraints specific to instantiated graph update",
    ),
    (
        911,
        c"CUDA_ERROR_EXTERNAL_DEVICE",
        c"an async error has occured in external entity outside of CUDA",
    ),
    (
        912,
        c"CUDA_ERROR_INVALID_CLUSTER_SIZE",
        c"a kernel launch error has occurred due to cluster misconfiguration",
    ),
    (
        913,
        c"CUDA_ERROR_FUNCTION_NOT_LOADED",
        c"the function handle is not loaded when calling an API that requires a loaded function",
    ),
    (
        914,
        c"CUDA_ERROR_INVALID_RESOURCE_TYPE",
        c"one or more resources passed in are not valid resource types for the operation",
    ),
    (
        915,
        c"CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION",
        c"one or more resources are insufficient or non-applicable for the operation",
    ),
    (
        916,
        c"CUDA_ERROR_KEY_ROTATION",
        c"an error happened during the key rotation sequence",
    ),
    (
        917,
        c"CUDA_ERROR_STREAM_DETACHED",
        c"the stream is detached and cannot be used",
    ),
    (
        918,
        c"CUDA_ERROR_GRAPH_RECAPTURE_FAILURE",
        c"the graph could not be recaptured",
    ),
    (
        919,
        c"CUDA_ERROR_FABRIC_NOT_READY",
        c"the fabric is not ready",
    ),
    (999, c"CUDA_ERROR_UNKNOWN", c"unknown error"),
];

fn entry(code: CUresult) -> Option<&'static (u32, &'static CStr, &'static CStr)> {
    // Sorted by code, so a lookup costs a handful of comparisons.
    ERRORS
        .binary_search_by_key(&code.0, |e| e.0)
        .ok()
        .map(|i| &ERRORS[i])
}

/// The enumerator name of `code`, e.g. `CUDA_ERROR_INVALID_VALUE`.
pub fn name_of(code: CUresult) -> Option<&'static CStr> {
    entry(code).map(|e| e.1)
}

/// The driver's description of `code`.
pub fn string_of(code: CUresult) -> Option<&'static CStr> {
    entry(code).map(|e| e.2)
}

/// Writes the text or, for a code the driver does not know, NULL — callers
/// print `*pStr` unchecked more often than they check the return value.
unsafe fn answer(text: Option<&'static CStr>, p_str: *mut *const c_char) -> Result<(), CUresult> {
    let ptr = text.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: cuGetErrorName/String's contract: pStr is writable or null.
    unsafe { p_str.write_or(ptr, CUresult::CUDA_ERROR_INVALID_VALUE)? };
    match text {
        Some(_) => Ok(()),
        None => Err(CUresult::CUDA_ERROR_INVALID_VALUE),
    }
}

pub unsafe fn get_error_name(error: CUresult, p_str: *mut *const c_char) -> Result<(), CUresult> {
    // SAFETY: forwarded caller contract.
    unsafe { answer(name_of(error), p_str) }
}

pub unsafe fn get_error_string(error: CUresult, p_str: *mut *const c_char) -> Result<(), CUresult> {
    // SAFETY: forwarded caller contract.
    unsafe { answer(string_of(error), p_str) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `CUresult` enumerator of the pinned header, read from the
    /// generated bindings so a header bump cannot leave a code unnamed.
    fn header_codes() -> Vec<(u32, String)> {
        let src = include_str!("../../cuda-types/src/generated/cuda.rs");
        let mut out = Vec::new();
        for line in src.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("pub const ") else {
                continue;
            };
            let Some((name, value)) = rest.split_once(": cudaError_enum = cudaError_enum(") else {
                continue;
            };
            let value = value.trim_end_matches(");").parse().expect("numeric code");
            out.push((value, name.to_string()));
        }
        out
    }

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(ERRORS.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn every_header_code_has_its_name_and_a_string() {
        let codes = header_codes();
        assert!(codes.len() > 100, "parsed {} codes", codes.len());
        for (code, name) in &codes {
            let got = name_of(CUresult(*code)).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(got.to_str().unwrap(), name);
            assert!(!string_of(CUresult(*code)).unwrap().is_empty());
        }
        // And nothing invented beyond the header.
        assert_eq!(codes.len(), ERRORS.len());
    }

    #[test]
    fn unknown_code_gives_null_and_invalid_value() {
        let mut p: *const c_char = c"sentinel".as_ptr();
        // SAFETY: a valid local out-pointer.
        let r = unsafe { get_error_string(CUresult(12345), &mut p) };
        assert_eq!(r, Err(CUresult::CUDA_ERROR_INVALID_VALUE));
        assert!(p.is_null());
        // SAFETY: as above.
        let r = unsafe { get_error_name(CUresult::CUDA_ERROR_INVALID_CONTEXT, &mut p) };
        assert_eq!(r, Ok(()));
        // SAFETY: set to a static C string just above.
        assert_eq!(unsafe { CStr::from_ptr(p) }, c"CUDA_ERROR_INVALID_CONTEXT");
        // SAFETY: null out-pointer is rejected before any write.
        let r = unsafe { get_error_name(CUresult(0), std::ptr::null_mut()) };
        assert_eq!(r, Err(CUresult::CUDA_ERROR_INVALID_VALUE));
    }
}
