//! Stream capture, as far as vgpu has it: no stream is ever capturing
//! (cuStreamBeginCapture is not supported), so the capture queries every
//! framework makes before enqueueing work are answered locally, without a
//! round trip — "not capturing" for any valid stream.

use crate::stream::{self, Null, StreamArg};
use cuda_types::cuda::{
    cuuint64_t, CUgraph, CUgraphEdgeData, CUgraphNode, CUresult, CUstreamCaptureMode,
    CUstreamCaptureStatus,
};
use std::cell::Cell;
use vgpu_ffi::Out;

const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;

/// `cuStreamIsCapturing`, and the answer of every capture query: the
/// stream (already known to be valid) is not capturing.
pub fn is_capturing(
    s: StreamArg,
    status: Out<CUstreamCaptureStatus>,
    null: Null,
) -> Result<(), CUresult> {
    // A default stream still needs a current context, as on the driver.
    stream::target(&s, null)?;
    status.write(CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE);
    Ok(())
}

/// `cuStreamGetCaptureInfo` (v1): with no capture, the id is not written.
pub fn info_v1(
    s: StreamArg,
    status: Out<CUstreamCaptureStatus>,
    _id: *mut cuuint64_t,
    null: Null,
) -> Result<(), CUresult> {
    is_capturing(s, status, null)
}

/// `cuStreamGetCaptureInfo_v2`: the other outputs are only defined while
/// capturing; they are left untouched, as the driver leaves them.
pub fn info_v2(
    s: StreamArg,
    status: Out<CUstreamCaptureStatus>,
    _id: *mut cuuint64_t,
    _graph: *mut CUgraph,
    _deps: *mut *const CUgraphNode,
    _n: *mut usize,
    null: Null,
) -> Result<(), CUresult> {
    is_capturing(s, status, null)
}

#[allow(clippy::too_many_arguments)]
pub fn info_v3(
    s: StreamArg,
    status: Out<CUstreamCaptureStatus>,
    _id: *mut cuuint64_t,
    _graph: *mut CUgraph,
    _deps: *mut *const CUgraphNode,
    _edges: *mut *const CUgraphEdgeData,
    _n: *mut usize,
    null: Null,
) -> Result<(), CUresult> {
    is_capturing(s, status, null)
}

thread_local! {
    static MODE: Cell<CUstreamCaptureMode> =
        const { Cell::new(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL) };
}

/// `cuThreadExchangeStreamCaptureMode`: the per-thread mode is kept (and
/// swapped) as the driver does, though nothing captures. Works before
/// `cuInit`, as it always has here.
pub fn exchange_mode(mode: Out<CUstreamCaptureMode>) -> Result<(), CUresult> {
    let want = mode.read();
    if want.0 > CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED.0 {
        return Err(INVALID_VALUE);
    }
    mode.write(MODE.with(|m| m.replace(want)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuThreadExchangeStreamCaptureMode as exchange;

    #[test]
    fn mode_is_swapped_per_thread() {
        let mut m = CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED;
        // SAFETY: valid locals, or NULL, through the export.
        unsafe {
            assert_eq!(exchange(&mut m), CUresult::CUDA_SUCCESS);
            assert_eq!(m, CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL);
            assert_eq!(exchange(&mut m), CUresult::CUDA_SUCCESS);
            assert_eq!(m, CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED);
            let mut bad = CUstreamCaptureMode(7);
            assert_eq!(exchange(&mut bad), INVALID_VALUE);
            assert_eq!(bad, CUstreamCaptureMode(7), "left as it was");
            assert_eq!(exchange(std::ptr::null_mut()), INVALID_VALUE);
        }
    }
}
