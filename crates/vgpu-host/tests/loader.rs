//! The driver loader on the software GPU imitating a CUDA 12.2 driver: the
//! entry points a 12.2 driver lacks load as absent, exactly as `dlsym`
//! would leave them on a real R535 host, while the library itself exports
//! them all.
//!
//! One test in its own binary: the profile is read from the environment
//! once per process, when the software GPU is first asked.

use vgpu_host::driver::{Library, EMU_PROFILE_ENV};
use vgpu_test_support::artifacts;

#[test]
fn a_12_2_driver_table_lacks_what_12_2_lacks() {
    // The only test of this binary: no other thread reads the environment.
    std::env::set_var(EMU_PROFILE_ENV, "h100-cuda12.2");
    let lib = Library::open(&artifacts().emu, c"cuInit").unwrap();
    let t = lib.cuda();
    // Added by 12.3 (names) and 12.4 (parameter info, kernel counts).
    assert!(t.cuFuncGetParamInfo.is_none());
    assert!(t.cuKernelGetParamInfo.is_none());
    assert!(t.cuFuncGetName.is_none());
    assert!(t.cuKernelGetName.is_none());
    assert!(t.cuLibraryGetKernelCount.is_none());
    assert!(t.cuEventElapsedTime_v2.is_none());
    // The library has them; only the imitated driver does not.
    for name in [c"cuFuncGetParamInfo", c"cuKernelGetName"] {
        assert!(!lib.sym(name).is_null());
    }
    // What 12.2 has.
    assert!(t.cuInit.is_some());
    assert!(t.cuLibraryLoadData.is_some());
    assert!(t.cuLaunchKernelEx.is_some());
    assert!(t.cuEventElapsedTime.is_some());
    let mut v = 0;
    // SAFETY: a valid out-pointer; cuDriverGetVersion needs no cuInit.
    let r = unsafe { t.cuDriverGetVersion.unwrap()(&mut v) };
    assert_eq!((r.0, v), (0, 12020));
}
