//! What the software GPU tells the program that loads it (the host's driver
//! loader), beyond the driver's own C ABI: which profiles exist, and which
//! entry points the imitated driver exports.
//!
//! The library exports every function of the pinned headers, but a real
//! driver of an older release lacks the newer ones: `dlsym` finds nothing
//! and the loader's table entry stays empty. The loader asks
//! [`vgpu_emu_exports`] for each name and treats a 0 as that empty entry,
//! so code above it sees exactly what a real old driver would give it.

use crate::profile;
use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::OnceLock;

/// 1 if the driver of the profile in force (`VGPU_EMU_PROFILE`) exports
/// `name`, else 0. NULL is 0.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn vgpu_emu_exports(name: *const c_char) -> c_int {
    if name.is_null() {
        return 0;
    }
    // SAFETY: non-NULL and NUL-terminated per the contract.
    let name = unsafe { CStr::from_ptr(name) };
    name.to_str()
        .map_or(0, |n| c_int::from(profile::exports(n)))
}

/// The profile names, comma-separated, default first; a static string. The
/// supervisor checks `--profile` against it without initializing anything.
#[no_mangle]
pub extern "C" fn vgpu_emu_profiles() -> *const c_char {
    static NAMES: OnceLock<CString> = OnceLock::new();
    NAMES
        .get_or_init(|| CString::new(profile::names()).expect("names have no NUL"))
        .as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_by_name() {
        // SAFETY: NUL-terminated literals and NULL.
        unsafe {
            assert_eq!(vgpu_emu_exports(c"cuInit".as_ptr()), 1);
            // The default profile's 13.5 driver has everything.
            assert_eq!(vgpu_emu_exports(c"cuFuncGetParamInfo".as_ptr()), 1);
            assert_eq!(vgpu_emu_exports(std::ptr::null()), 0);
        }
        // SAFETY: a static NUL-terminated string.
        let names = unsafe { CStr::from_ptr(vgpu_emu_profiles()) };
        let names = names.to_str().unwrap();
        assert!(names.starts_with("h100-pcie, "), "{names}");
        assert!(names.contains("2x-h100"), "{names}");
    }
}
