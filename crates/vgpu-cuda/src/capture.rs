//! Stream capture, as far as vgpu has it: no stream is ever capturing
//! (cuStreamBeginCapture is not supported), so the capture queries every
//! framework makes before enqueueing work are answered locally, without a
//! round trip — "not capturing" for any valid stream.

use crate::stream::{self, Null};
use cuda_types::cuda::{
    cuuint64_t, CUgraph, CUgraphEdgeData, CUgraphNode, CUresult, CUstream, CUstreamCaptureMode,
    CUstreamCaptureStatus,
};
use std::cell::Cell;
use vgpu_guest::ffi::OutPtr;

const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;

/// # Safety
/// `status` is NULL or writable.
pub unsafe fn is_capturing(
    h: CUstream,
    status: *mut CUstreamCaptureStatus,
    null: Null,
) -> Result<(), CUresult> {
    // Validates the handle: an unknown stream is INVALID_HANDLE as usual.
    stream::target(h, null)?;
    // SAFETY: the caller's contract.
    unsafe {
        status.write_or(
            CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE,
            INVALID_VALUE,
        )
    }
}

/// `cuStreamGetCaptureInfo` (v1): with no capture, the id is not written.
///
/// # Safety
/// `status` is NULL or writable.
pub unsafe fn info_v1(
    h: CUstream,
    status: *mut CUstreamCaptureStatus,
    _id: *mut cuuint64_t,
    null: Null,
) -> Result<(), CUresult> {
    // SAFETY: forwarded.
    unsafe { is_capturing(h, status, null) }
}

/// `cuStreamGetCaptureInfo_v2`: the other outputs are only defined while
/// capturing; they are left untouched, as the driver leaves them.
///
/// # Safety
/// `status` is NULL or writable.
pub unsafe fn info_v2(
    h: CUstream,
    status: *mut CUstreamCaptureStatus,
    _id: *mut cuuint64_t,
    _graph: *mut CUgraph,
    _deps: *mut *const CUgraphNode,
    _n: *mut usize,
    null: Null,
) -> Result<(), CUresult> {
    // SAFETY: forwarded.
    unsafe { is_capturing(h, status, null) }
}

/// # Safety
/// `status` is NULL or writable.
#[allow(clippy::too_many_arguments)]
pub unsafe fn info_v3(
    h: CUstream,
    status: *mut CUstreamCaptureStatus,
    _id: *mut cuuint64_t,
    _graph: *mut CUgraph,
    _deps: *mut *const CUgraphNode,
    _edges: *mut *const CUgraphEdgeData,
    _n: *mut usize,
    null: Null,
) -> Result<(), CUresult> {
    // SAFETY: forwarded.
    unsafe { is_capturing(h, status, null) }
}

thread_local! {
    static MODE: Cell<CUstreamCaptureMode> =
        const { Cell::new(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL) };
}

/// `cuThreadExchangeStreamCaptureMode`: the per-thread mode is kept (and
/// swapped) as the driver does, though nothing captures.
///
/// # Safety
/// `mode` is NULL or valid for reading and writing.
pub unsafe fn exchange_mode(mode: *mut CUstreamCaptureMode) -> Result<(), CUresult> {
    if mode.is_null() {
        return Err(INVALID_VALUE);
    }
    // SAFETY: non-null, readable and writable by contract.
    let want = unsafe { mode.read_unaligned() };
    if want.0 > CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED.0 {
        return Err(INVALID_VALUE);
    }
    let old = MODE.with(|m| m.replace(want));
    // SAFETY: as above.
    unsafe { mode.write_unaligned(old) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_is_swapped_per_thread() {
        let mut m = CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED;
        // SAFETY: a valid local.
        unsafe { exchange_mode(&mut m) }.unwrap();
        assert_eq!(m, CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL);
        // SAFETY: a valid local.
        unsafe { exchange_mode(&mut m) }.unwrap();
        assert_eq!(m, CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED);
        let mut bad = CUstreamCaptureMode(7);
        // SAFETY: a valid local.
        assert_eq!(unsafe { exchange_mode(&mut bad) }, Err(INVALID_VALUE));
        // SAFETY: NULL is refused before any access.
        assert_eq!(
            unsafe { exchange_mode(std::ptr::null_mut()) },
            Err(INVALID_VALUE)
        );
    }
}
