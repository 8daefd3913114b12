//! CONTEXT_CHECKS (cudart 12.4+; 13.x refuses to start without it): 9
//! slots, slot 0 = 72.

use super::{fun, stubs, Slot, Table, T_CHECKS};
use cuda_types::cuda::{CUcontext, CUresult};
use std::ffi::c_void;

pub static TABLE: Table<9> = {
    let s = stubs!(T_CHECKS; 1 4 5 6 7 8);
    Table([
        Slot::word(72),
        s[0],
        fun!(context_check),
        fun!(init_check),
        s[1],
        s[2],
        s[3],
        s[4],
        s[5],
    ])
};

/// Slot 2, `(CUcontext, uint32_t *out, void **)`: called on a context's
/// first use and (13.x) in every cudaDeviceSynchronize. 0 in `*out` is
/// "nothing to report".
unsafe extern "C" fn context_check(
    _ctx: CUcontext,
    out: *mut u32,
    _: *mut *mut c_void,
) -> CUresult {
    if !out.is_null() {
        // SAFETY: non-null; writable by the slot's contract.
        unsafe { out.write_unaligned(0) };
    }
    CUresult::CUDA_SUCCESS
}

/// Slot 3, `uint32_t (void)`: called once at init.
extern "C" fn init_check() -> u32 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots() {
        let mut v = 7u32;
        // SAFETY: valid local; NULLs allowed.
        unsafe {
            assert_eq!(
                context_check(std::ptr::null_mut(), &mut v, std::ptr::null_mut()),
                CUresult::CUDA_SUCCESS
            );
            context_check(
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
        }
        assert_eq!(v, 0);
        assert_eq!(init_check(), 0);
        assert_eq!(TABLE.0[3].addr(), init_check as *const () as usize);
    }
}
