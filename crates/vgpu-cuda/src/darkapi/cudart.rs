//! CUDART_INTERFACE (13 slots, slot 0 = 104): the primary context handle
//! and cudart 11's way of loading the fatbins it registered.

use super::{fun, stubs, Slot, Table, T_CUDART};
use crate::driver::{self, Device};
use cuda_types::cuda::{CUcontext, CUdevice, CUjit_option, CUmodule, CUresult};
use std::ffi::{c_char, c_uint, c_void};
use vgpu_ffi::{boundary as cuda_boundary, from_cuda, Out};

pub static TABLE: Table<13> = {
    let s = stubs!(T_CUDART; 3 4 5 9 10 11 12);
    Table([
        Slot::word(104),
        fun!(load_fatbin),
        fun!(primary_context),
        s[0],
        s[1],
        s[2],
        fun!(load_fatbin_with_symbols),
        fun!(fatbin_unregistered),
        fun!(load_image),
        s[3],
        s[4],
        s[5],
        // 13.5 calls slot 12 once after cuModuleGetLoadingMode (the real
        // driver loads its PTX compiler there); 0 is accepted.
        s[6],
    ])
};

/// Slot 2: the device's primary context handle, neither retained nor made
/// current. cudart sets it current, then retains it itself, and releases
/// once at exit; a retain here would be a reference nobody returns.
unsafe extern "C" fn primary_context(pctx: *mut CUcontext, dev: CUdevice) -> CUresult {
    cuda_boundary("CUDART_INTERFACE[2]", || {
        let p = Device::new(dev)?.primary();
        // SAFETY: the slot's contract: pctx is NULL or writable.
        let pctx: Out<CUcontext> = unsafe { from_cuda::<_, _, CUresult>(pctx) }?;
        pctx.write(p.handle());
        Ok(())
    })
}

// Slots 1, 6 and 8 load a module from a fatbin wrapper or an image: cudart
// 11.x does so at the first launch of a kernel (12+ uses cuLibraryLoadData).

/// Slot 1: `(CUmodule*, const void *fatbinWrapper)`.
/// A NULL `out` is refused before anything is loaded.
unsafe extern "C" fn load_fatbin(out: *mut CUmodule, wrapper: *const c_void) -> CUresult {
    cuda_boundary("CUDART_INTERFACE[1]", || {
        driver::require()?;
        // SAFETY: the slot's contract: `out` is NULL or writable.
        let out: Out<CUmodule> = unsafe { from_cuda::<_, _, CUresult>(out) }?;
        out.write(crate::module::load_module_from_wrapper(wrapper)?);
        Ok(())
    })
}

/// Slot 6: `(CUmodule*, const void *wrapper, const char **names, void
/// **addrs, unsigned count)`. The symbol arrays describe host-side shadows
/// of device variables (cudart 11.8 passes none); the module is the point.
unsafe extern "C" fn load_fatbin_with_symbols(
    out: *mut CUmodule,
    wrapper: *const c_void,
    _names: *const *const c_char,
    _addrs: *const *mut c_void,
    _count: c_uint,
) -> CUresult {
    // SAFETY: forwarded caller contract.
    unsafe { load_fatbin(out, wrapper) }
}

/// Slot 8: `(const void *image, CUmodule*, CUjit_option*, void**, unsigned)`:
/// `cuModuleLoadDataEx` with its first two arguments swapped.
unsafe extern "C" fn load_image(
    image: *const c_void,
    out: *mut CUmodule,
    options: *mut CUjit_option,
    values: *mut *mut c_void,
    n: c_uint,
) -> CUresult {
    cuda_boundary("CUDART_INTERFACE[8]", || {
        driver::require()?;
        // SAFETY: the slot's contract: `out` is NULL or writable, the rest
        // as for cuModuleLoadDataEx.
        unsafe {
            let out = from_cuda::<_, Out<CUmodule>, CUresult>(out)?;
            crate::module::load_data(out, image, n, options, values)
        }
    })
}

/// Slot 7: cudart 11.8 says a fatbin wrapper is gone (at exit). Nothing is
/// cached per wrapper yet.
extern "C" fn fatbin_unregistered(_wrapper: *const c_void) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots() {
        assert_eq!(TABLE.0[0].addr(), 104);
        assert_eq!(TABLE.0[2].addr(), primary_context as *const () as usize);
        assert!(TABLE.0.iter().all(|s| s.addr() != 0));
        // SAFETY: NULL image and out-pointer: refused before anything is read.
        let r = unsafe {
            load_image(
                std::ptr::null(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
        assert_ne!(r, CUresult::CUDA_SUCCESS);
        fatbin_unregistered(std::ptr::null());
        // Before cuInit there is no primary context to hand out.
        let mut ctx: CUcontext = std::ptr::null_mut();
        if driver::get().is_err() {
            // SAFETY: a valid local.
            let r = unsafe { primary_context(&mut ctx, 0) };
            assert_eq!(r, CUresult::CUDA_ERROR_NOT_INITIALIZED);
        }
    }
}
