//! The status types of the two C APIs — `CUresult` and `nvmlReturn_t` — as
//! one trait, with their names and texts.
//!
//! Names come from the generated enumerator lists (`cuda_types::with_cuda_results!`,
//! `with_nvml_returns!`), so they are never typed by hand. Texts are what the
//! NVIDIA libraries print for each code (`cuGetErrorString`, `nvmlErrorString`);
//! the headers do not contain them, so they live in the two tables below,
//! keyed by the bindgen constants, and a test checks that every enumerator
//! has one. Tools and people grep for these strings, so they are kept
//! verbatim, typos included.

use cuda_types::cuda::CUresult;
use cuda_types::nvml::nvmlReturn_t;
use std::ffi::CStr;
use std::fmt;

/// A C API's result code, as the boundary, the conversions and the stubs
/// need it.
pub trait Status: Copy + Eq + fmt::Debug + Send + Sync + 'static {
    const SUCCESS: Self;
    /// What an unimplemented entry point returns.
    const NOT_SUPPORTED: Self;
    /// What a Rust panic inside an entry point becomes.
    const INTERNAL: Self;
    /// A NULL where the API needs a pointer, or an argument out of range.
    const INVALID_ARGUMENT: Self;
    /// The API's name for itself in log lines ("CUresult", "nvmlReturn_t").
    const KIND: &'static str;

    fn code(self) -> u32;
    /// The enumerator's name, `None` for a code the header does not define.
    fn name(self) -> Option<&'static CStr>;
    /// The library's description of the code, `None` for an unknown code.
    fn text(self) -> Option<&'static CStr>;

    /// `Ok(())` for success, so `?` works on a returned code.
    fn ok(self) -> Result<(), Self> {
        if self == Self::SUCCESS {
            Ok(())
        } else {
            Err(self)
        }
    }
}

/// Expands a generated enumerator list into a name lookup.
macro_rules! name_lookup {
    ({ $fn_name:ident } $ty:ident $($name:ident = $value:literal;)*) => {
        fn $fn_name(code: u32) -> Option<&'static CStr> {
            match code {
                $($value => Some(
                    // An identifier followed by "\0" has exactly one NUL, at
                    // the end, so the fallback is never taken.
                    match CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
                        Ok(c) => c,
                        Err(_) => c"?",
                    }
                ),)*
                _ => None,
            }
        }
    };
}

cuda_types::with_cuda_results!(name_lookup { cuda_name });
cuda_types::with_nvml_returns!(name_lookup { nvml_name });

impl Status for CUresult {
    const SUCCESS: Self = CUresult::CUDA_SUCCESS;
    const NOT_SUPPORTED: Self = CUresult::CUDA_ERROR_NOT_SUPPORTED;
    const INTERNAL: Self = CUresult::CUDA_ERROR_UNKNOWN;
    const INVALID_ARGUMENT: Self = CUresult::CUDA_ERROR_INVALID_VALUE;
    const KIND: &'static str = "CUresult";

    fn code(self) -> u32 {
        self.0
    }
    fn name(self) -> Option<&'static CStr> {
        cuda_name(self.0)
    }
    fn text(self) -> Option<&'static CStr> {
        cuda_text(self)
    }
}

impl Status for nvmlReturn_t {
    const SUCCESS: Self = nvmlReturn_t::NVML_SUCCESS;
    const NOT_SUPPORTED: Self = nvmlReturn_t::NVML_ERROR_NOT_SUPPORTED;
    const INTERNAL: Self = nvmlReturn_t::NVML_ERROR_UNKNOWN;
    const INVALID_ARGUMENT: Self = nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT;
    const KIND: &'static str = "nvmlReturn_t";

    fn code(self) -> u32 {
        self.0
    }
    fn name(self) -> Option<&'static CStr> {
        nvml_name(self.0)
    }
    fn text(self) -> Option<&'static CStr> {
        nvml_text(self)
    }
}

/// `cuGetErrorString`'s texts.
fn cuda_text(r: CUresult) -> Option<&'static CStr> {
    Some(match r {
        CUresult::CUDA_SUCCESS => c"no error",
        CUresult::CUDA_ERROR_INVALID_VALUE => c"invalid argument",
        CUresult::CUDA_ERROR_OUT_OF_MEMORY => c"out of memory",
        CUresult::CUDA_ERROR_NOT_INITIALIZED => c"initialization error",
        CUresult::CUDA_ERROR_DEINITIALIZED => c"driver shutting down",
        CUresult::CUDA_ERROR_PROFILER_DISABLED => c"profiler disabled while using external profiling tool",
        CUresult::CUDA_ERROR_PROFILER_NOT_INITIALIZED => c"profiler not initialized: call cudaProfilerInitialize()",
        CUresult::CUDA_ERROR_PROFILER_ALREADY_STARTED => c"profiler already started",
        CUresult::CUDA_ERROR_PROFILER_ALREADY_STOPPED => c"profiler already stopped",
        CUresult::CUDA_ERROR_STUB_LIBRARY => c"CUDA driver is a stub library",
        CUresult::CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER => c"API call is not supported in the installed CUDA driver",
        CUresult::CUDA_ERROR_DEVICE_UNAVAILABLE => c"CUDA-capable device(s) is/are busy or unavailable",
        CUresult::CUDA_ERROR_MULTICAST_RESOURCE_FULL => c"multicast resource is full",
        CUresult::CUDA_ERROR_NO_DEVICE => c"no CUDA-capable device is detected",
        CUresult::CUDA_ERROR_INVALID_DEVICE => c"invalid device ordinal",
        CUresult::CUDA_ERROR_DEVICE_NOT_LICENSED => c"device doesn't have valid Grid license",
        CUresult::CUDA_ERROR_INVALID_IMAGE => c"device kernel image is invalid",
        CUresult::CUDA_ERROR_INVALID_CONTEXT => c"invalid device context",
        CUresult::CUDA_ERROR_CONTEXT_ALREADY_CURRENT => c"context already current",
        CUresult::CUDA_ERROR_MAP_FAILED => c"mapping of buffer object failed",
        CUresult::CUDA_ERROR_UNMAP_FAILED => c"unmapping of buffer object failed",
        CUresult::CUDA_ERROR_ARRAY_IS_MAPPED => c"array is mapped",
        CUresult::CUDA_ERROR_ALREADY_MAPPED => c"resource already mapped",
        CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU => c"no kernel image is available for execution on the device",
        CUresult::CUDA_ERROR_ALREADY_ACQUIRED => c"resource already acquired",
        CUresult::CUDA_ERROR_NOT_MAPPED => c"resource not mapped",
        CUresult::CUDA_ERROR_NOT_MAPPED_AS_ARRAY => c"resource not mapped as array",
        CUresult::CUDA_ERROR_NOT_MAPPED_AS_POINTER => c"resource not mapped as pointer",
        CUresult::CUDA_ERROR_ECC_UNCORRECTABLE => c"uncorrectable ECC error encountered",
        CUresult::CUDA_ERROR_UNSUPPORTED_LIMIT => c"limit is not supported on this architecture",
        CUresult::CUDA_ERROR_CONTEXT_ALREADY_IN_USE => c"exclusive-thread device already in use by a different thread",
        CUresult::CUDA_ERROR_PEER_ACCESS_UNSUPPORTED => c"peer access is not supported between these two devices",
        CUresult::CUDA_ERROR_INVALID_PTX => c"a PTX JIT compilation failed",
        CUresult::CUDA_ERROR_INVALID_GRAPHICS_CONTEXT => c"invalid OpenGL or DirectX context",
        CUresult::CUDA_ERROR_NVLINK_UNCORRECTABLE => c"uncorrectable NVLink error detected during the execution",
        CUresult::CUDA_ERROR_JIT_COMPILER_NOT_FOUND => c"PTX JIT compiler library not found",
        CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION => c"the provided PTX was compiled with an unsupported toolchain.",
        CUresult::CUDA_ERROR_JIT_COMPILATION_DISABLED => c"PTX JIT compilation was disabled",
        CUresult::CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY => c"the provided execution affinity is not supported",
        CUresult::CUDA_ERROR_UNSUPPORTED_DEVSIDE_SYNC => c"the provided PTX contains unsupported call to cudaDeviceSynchronize",
        CUresult::CUDA_ERROR_CONTAINED => c"an exception occurred on the device that is now contained by the GPU's error containment capability",
        CUresult::CUDA_ERROR_INSUFFICIENT_LOADER_VERSION => c"the installed CUDA driver is older than the CUDA loader",
        CUresult::CUDA_ERROR_INVALID_SOURCE => c"device kernel image is invalid",
        CUresult::CUDA_ERROR_FILE_NOT_FOUND => c"file not found",
        CUresult::CUDA_ERROR_SHARED_OBJECT_SYMBOL_NOT_FOUND => c"shared object symbol not found",
        CUresult::CUDA_ERROR_SHARED_OBJECT_INIT_FAILED => c"shared object initialization failed",
        CUresult::CUDA_ERROR_OPERATING_SYSTEM => c"OS call failed or operation not supported on this OS",
        CUresult::CUDA_ERROR_INVALID_HANDLE => c"invalid resource handle",
        CUresult::CUDA_ERROR_ILLEGAL_STATE => c"the operation cannot be performed in the present state",
        CUresult::CUDA_ERROR_LOSSY_QUERY => c"attempted introspection would be semantically lossy",
        CUresult::CUDA_ERROR_NOT_FOUND => c"named symbol not found",
        CUresult::CUDA_ERROR_NOT_READY => c"device not ready",
        CUresult::CUDA_ERROR_ILLEGAL_ADDRESS => c"an illegal memory access was encountered",
        CUresult::CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES => c"too many resources requested for launch",
        CUresult::CUDA_ERROR_LAUNCH_TIMEOUT => c"the launch timed out and was terminated",
        CUresult::CUDA_ERROR_LAUNCH_INCOMPATIBLE_TEXTURING => c"launch uses incompatible texturing mode",
        CUresult::CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED => c"peer access is already enabled",
        CUresult::CUDA_ERROR_PEER_ACCESS_NOT_ENABLED => c"peer access has not been enabled",
        CUresult::CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE => c"cannot set while device is active in this process",
        CUresult::CUDA_ERROR_CONTEXT_IS_DESTROYED => c"context is destroyed",
        CUresult::CUDA_ERROR_ASSERT => c"device-side assert triggered",
        CUresult::CUDA_ERROR_TOO_MANY_PEERS => c"peer mapping resources exhausted",
        CUresult::CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED => c"part or all of the requested memory range is already mapped",
        CUresult::CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED => c"pointer does not correspond to a registered memory region",
        CUresult::CUDA_ERROR_HARDWARE_STACK_ERROR => c"hardware stack error",
        CUresult::CUDA_ERROR_ILLEGAL_INSTRUCTION => c"an illegal instruction was encountered",
        CUresult::CUDA_ERROR_MISALIGNED_ADDRESS => c"misaligned address",
        CUresult::CUDA_ERROR_INVALID_ADDRESS_SPACE => c"operation not supported on global/shared address space",
        CUresult::CUDA_ERROR_INVALID_PC => c"invalid program counter",
        CUresult::CUDA_ERROR_LAUNCH_FAILED => c"unspecified launch failure",
        CUresult::CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE => c"too many blocks in cooperative launch",
        CUresult::CUDA_ERROR_TENSOR_MEMORY_LEAK => c"tensor memory not completely freed",
        CUresult::CUDA_ERROR_NOT_PERMITTED => c"operation not permitted",
        CUresult::CUDA_ERROR_NOT_SUPPORTED => c"operation not supported",
        CUresult::CUDA_ERROR_SYSTEM_NOT_READY => c"system not yet initialized",
        CUresult::CUDA_ERROR_SYSTEM_DRIVER_MISMATCH => c"system has unsupported display driver / cuda driver combination",
        CUresult::CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE => c"forward compatibility was attempted on non supported HW",
        CUresult::CUDA_ERROR_MPS_CONNECTION_FAILED => c"MPS client failed to connect to the MPS control daemon or the MPS server",
        CUresult::CUDA_ERROR_MPS_RPC_FAILURE => c"the remote procedural call between the MPS server and the MPS client failed",
        CUresult::CUDA_ERROR_MPS_SERVER_NOT_READY => c"MPS server is not ready to accept new MPS client requests",
        CUresult::CUDA_ERROR_MPS_MAX_CLIENTS_REACHED => c"the hardware resources required to create MPS client have been exhausted",
        CUresult::CUDA_ERROR_MPS_MAX_CONNECTIONS_REACHED => c"the hardware resources required to support device connections have been exhausted",
        CUresult::CUDA_ERROR_MPS_CLIENT_TERMINATED => c"the MPS client has been terminated by the server",
        CUresult::CUDA_ERROR_CDP_NOT_SUPPORTED => c"is using CUDA Dynamic Parallelism, but the current configuration, like MPS, does not support it",
        CUresult::CUDA_ERROR_CDP_VERSION_MISMATCH => c"unsupported interaction between different versions of CUDA Dynamic Parallelism",
        CUresult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED => c"operation not permitted when stream is capturing",
        CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED => c"operation failed due to a previous error during capture",
        CUresult::CUDA_ERROR_STREAM_CAPTURE_MERGE => c"operation would result in a merge of separate capture sequences",
        CUresult::CUDA_ERROR_STREAM_CAPTURE_UNMATCHED => c"capture was not ended in the same stream as it began",
        CUresult::CUDA_ERROR_STREAM_CAPTURE_UNJOINED => c"capturing stream has unjoined work",
        CUresult::CUDA_ERROR_STREAM_CAPTURE_ISOLATION => c"dependency created on uncaptured work in another stream",
        CUresult::CUDA_ERROR_STREAM_CAPTURE_IMPLICIT => c"operation would make the legacy stream depend on a capturing blocking stream",
        CUresult::CUDA_ERROR_CAPTURED_EVENT => c"operation not permitted on an event last recorded in a capturing stream",
        CUresult::CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD => c"attempt to terminate a thread-local capture sequence from another thread",
        CUresult::CUDA_ERROR_TIMEOUT => c"wait operation timed out",
        CUresult::CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE => c"the graph update was not performed because it included changes which violated constraints specific to instantiated graph update",
        CUresult::CUDA_ERROR_EXTERNAL_DEVICE => c"an async error has occured in external entity outside of CUDA",
        CUresult::CUDA_ERROR_INVALID_CLUSTER_SIZE => c"a kernel launch error has occurred due to cluster misconfiguration",
        CUresult::CUDA_ERROR_FUNCTION_NOT_LOADED => c"the function handle is not loaded when calling an API that requires a loaded function",
        CUresult::CUDA_ERROR_INVALID_RESOURCE_TYPE => c"one or more resources passed in are not valid resource types for the operation",
        CUresult::CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION => c"one or more resources are insufficient or non-applicable for the operation",
        CUresult::CUDA_ERROR_KEY_ROTATION => c"an error happened during the key rotation sequence",
        CUresult::CUDA_ERROR_STREAM_DETACHED => c"the stream is detached and cannot be used",
        CUresult::CUDA_ERROR_GRAPH_RECAPTURE_FAILURE => c"the graph could not be recaptured",
        CUresult::CUDA_ERROR_FABRIC_NOT_READY => c"the fabric is not ready",
        CUresult::CUDA_ERROR_UNKNOWN => c"unknown error",
        _ => return None,
    })
}

/// `nvmlErrorString`'s texts. Codes up to NVML_ERROR_NO_DATA are the
/// long-established strings; the newer codes' texts were not checked
/// against a real library.
fn nvml_text(r: nvmlReturn_t) -> Option<&'static CStr> {
    Some(match r {
        nvmlReturn_t::NVML_SUCCESS => c"Success",
        nvmlReturn_t::NVML_ERROR_UNINITIALIZED => c"Uninitialized",
        nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT => c"Invalid Argument",
        nvmlReturn_t::NVML_ERROR_NOT_SUPPORTED => c"Not Supported",
        nvmlReturn_t::NVML_ERROR_NO_PERMISSION => c"Insufficient Permissions",
        nvmlReturn_t::NVML_ERROR_ALREADY_INITIALIZED => c"Already Initialized",
        nvmlReturn_t::NVML_ERROR_NOT_FOUND => c"Not Found",
        nvmlReturn_t::NVML_ERROR_INSUFFICIENT_SIZE => c"Insufficient Size",
        nvmlReturn_t::NVML_ERROR_INSUFFICIENT_POWER => c"Insufficient External Power",
        nvmlReturn_t::NVML_ERROR_DRIVER_NOT_LOADED => c"Driver Not Loaded",
        nvmlReturn_t::NVML_ERROR_TIMEOUT => c"Timeout",
        nvmlReturn_t::NVML_ERROR_IRQ_ISSUE => c"Interrupt request issue",
        nvmlReturn_t::NVML_ERROR_LIBRARY_NOT_FOUND => c"NVML Shared Library Not Found",
        nvmlReturn_t::NVML_ERROR_FUNCTION_NOT_FOUND => c"Function Not Found",
        nvmlReturn_t::NVML_ERROR_CORRUPTED_INFOROM => c"Corrupted infoROM",
        nvmlReturn_t::NVML_ERROR_GPU_IS_LOST => c"GPU is lost",
        nvmlReturn_t::NVML_ERROR_RESET_REQUIRED => c"GPU requires restart",
        nvmlReturn_t::NVML_ERROR_OPERATING_SYSTEM => c"The operating system has blocked the request.",
        nvmlReturn_t::NVML_ERROR_LIB_RM_VERSION_MISMATCH => c"Driver/library version mismatch",
        nvmlReturn_t::NVML_ERROR_IN_USE => c"In use by another client",
        nvmlReturn_t::NVML_ERROR_MEMORY => c"Insufficient Memory",
        nvmlReturn_t::NVML_ERROR_NO_DATA => c"No data",
        nvmlReturn_t::NVML_ERROR_VGPU_ECC_NOT_SUPPORTED => c"The requested vgpu operation is not available on target device, becasue ECC is enabled",
        nvmlReturn_t::NVML_ERROR_INSUFFICIENT_RESOURCES => c"Ran out of critical resources, other than memory",
        nvmlReturn_t::NVML_ERROR_FREQ_NOT_SUPPORTED => c"Frequency not supported",
        nvmlReturn_t::NVML_ERROR_ARGUMENT_VERSION_MISMATCH => c"Argument version mismatch",
        nvmlReturn_t::NVML_ERROR_DEPRECATED => c"Deprecated",
        nvmlReturn_t::NVML_ERROR_NOT_READY => c"Not Ready",
        nvmlReturn_t::NVML_ERROR_GPU_NOT_FOUND => c"GPU not found",
        nvmlReturn_t::NVML_ERROR_INVALID_STATE => c"Invalid state",
        nvmlReturn_t::NVML_ERROR_RESET_TYPE_NOT_SUPPORTED => c"Reset type not supported",
        nvmlReturn_t::NVML_ERROR_UNKNOWN => c"Unknown Error",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! every_code_has_text {
        ({ $test:ident } $ty:ident $($name:ident = $value:literal;)*) => {
            #[test]
            fn $test() {
                $(
                    let code = $ty($value);
                    assert_eq!(code.name().and_then(|n| n.to_str().ok()), Some(stringify!($name)));
                    assert!(code.text().is_some(), "{} has no text", stringify!($name));
                )*
            }
        };
    }
    cuda_types::with_cuda_results!(every_code_has_text {
        every_cuda_result_has_name_and_text
    });
    cuda_types::with_nvml_returns!(every_code_has_text {
        every_nvml_return_has_name_and_text
    });

    #[test]
    fn unknown_codes_have_neither() {
        assert_eq!(CUresult(12345).name(), None);
        assert_eq!(CUresult(12345).text(), None);
        assert_eq!(nvmlReturn_t(12345).text(), None);
        assert_eq!(
            CUresult::CUDA_ERROR_INVALID_VALUE.text(),
            Some(c"invalid argument")
        );
        assert_eq!(
            nvmlReturn_t::NVML_ERROR_LIB_RM_VERSION_MISMATCH.text(),
            Some(c"Driver/library version mismatch")
        );
        assert_eq!(
            CUresult::CUDA_ERROR_NOT_READY.ok(),
            Err(CUresult::CUDA_ERROR_NOT_READY)
        );
        assert_eq!(CUresult::CUDA_SUCCESS.ok(), Ok(()));
    }
}
