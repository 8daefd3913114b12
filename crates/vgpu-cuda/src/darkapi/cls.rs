//! CONTEXT_LOCAL_STORAGE_INTERFACE_V0301 (3 slots, no size word): where
//! cudart keeps its per-context state. Every runtime call does
//! `cuCtxGetCurrent` + `get`, so this stays in the guest and takes no
//! global lock for the current context (see [`state::with_context`]).
//! The storage lives on the guest context object; its destructors run when
//! the context is destroyed, reset, or released for the last time.
//!
//! These slots are not exports, so they run the export list's steps
//! themselves: the panic boundary, the initialisation check, the
//! out-pointer's conversion.

use super::{fun, Table};
use crate::context::state::{self, ClsDtor};
use crate::driver;
use cuda_types::cuda::{CUcontext, CUresult};
use std::ffi::c_void;
use vgpu_ffi::{boundary as cuda_boundary, from_cuda, Out};

pub static TABLE: Table<3> = Table([fun!(put), fun!(delete), fun!(get)]);

/// Slot 0: `put(ctx, key, value, dtor)`; replaces an existing value.
unsafe extern "C" fn put(
    ctx: CUcontext,
    key: *mut c_void,
    value: *mut c_void,
    dtor: Option<ClsDtor>,
) -> CUresult {
    cuda_boundary("CLS put", || {
        driver::require()?;
        state::with_context(ctx, |c| {
            // Storage on a destroyed context would never be destroyed.
            if c.is_destroyed() {
                return Err(CUresult::CUDA_ERROR_CONTEXT_IS_DESTROYED);
            }
            c.cls_put(key as usize, value as usize, dtor);
            Ok(())
        })?
    })
}

/// Slot 1: `delete(ctx, key)`; the destructor does not run.
unsafe extern "C" fn delete(ctx: CUcontext, key: *mut c_void) -> CUresult {
    cuda_boundary("CLS delete", || {
        driver::require()?;
        if state::with_context(ctx, |c| c.cls_delete(key as usize))? {
            Ok(())
        } else {
            Err(CUresult::CUDA_ERROR_INVALID_HANDLE)
        }
    })
}

/// Slot 2: `get(&value, ctx, key)`. A miss is CUDA_ERROR_INVALID_HANDLE,
/// which cudart takes as "no state for this context yet".
unsafe extern "C" fn get(value: *mut *mut c_void, ctx: CUcontext, key: *mut c_void) -> CUresult {
    cuda_boundary("CLS get", || {
        driver::require()?;
        // SAFETY: the slot's contract: value is NULL or writable.
        let value: Out<*mut c_void> = unsafe { from_cuda::<_, _, CUresult>(value) }?;
        let v = state::with_context(ctx, |c| c.cls_get(key as usize))?
            .ok_or(CUresult::CUDA_ERROR_INVALID_HANDLE)?;
        value.write(v as *mut c_void);
        Ok(())
    })
}
