//! `nvmlErrorString`: static text, so it works before `nvmlInit`, after a
//! failed one (Ollama calls it exactly then) and after `nvmlShutdown`.

use cuda_types::nvml::nvmlReturn_t;
use std::ffi::{c_char, CStr};

/// The text libnvidia-ml gives each code; tools match on some of these
/// (e.g. "Driver/library version mismatch", "Driver Not Loaded"). Codes 0-21
/// are the long-established strings; the texts of the newer codes were not
/// checked against a real library.
pub fn message(result: nvmlReturn_t) -> &'static CStr {
    match result.0 {
        0 => c"Success",
        1 => c"Uninitialized",
        2 => c"Invalid Argument",
        3 => c"Not Supported",
        4 => c"Insufficient Permissions",
        5 => c"Already Initialized",
        6 => c"Not Found",
        7 => c"Insufficient Size",
        8 => c"Insufficient External Power",
        9 => c"Driver Not Loaded",
        10 => c"Timeout",
        11 => c"Interrupt request issue",
        12 => c"NVML Shared Library Not Found",
        13 => c"Function Not Found",
        14 => c"Corrupted infoROM",
        15 => c"GPU is lost",
        16 => c"GPU requires restart",
        17 => c"The operating system has blocked the request.",
        18 => c"Driver/library version mismatch",
        19 => c"In use by another client",
        20 => c"Insufficient Memory",
        21 => c"No data",
        22 => c"The requested vgpu operation is not available on target device, becasue ECC is enabled",
        23 => c"Ran out of critical resources, other than memory",
        24 => c"Frequency not supported",
        25 => c"Argument version mismatch",
        26 => c"Deprecated",
        27 => c"Not Ready",
        28 => c"GPU not found",
        29 => c"Invalid state",
        30 => c"Reset type not supported",
        _ => c"Unknown Error",
    }
}

pub fn error_string(result: nvmlReturn_t) -> *const c_char {
    message(result).as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_text() {
        for code in 0..=30u32 {
            assert!(!message(nvmlReturn_t(code)).is_empty());
            if code > 0 {
                assert_ne!(message(nvmlReturn_t(code)), c"Unknown Error", "{code}");
            }
        }
        assert_eq!(message(nvmlReturn_t::NVML_ERROR_UNKNOWN), c"Unknown Error");
        assert_eq!(message(nvmlReturn_t(12345)), c"Unknown Error");
        assert_eq!(
            message(nvmlReturn_t::NVML_ERROR_DRIVER_NOT_LOADED),
            c"Driver Not Loaded"
        );
    }
}
