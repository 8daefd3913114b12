//! Small helpers the memory, stream and VMM entry points share: every
//! refusal and every host failure leaves one Debug line saying why, so an
//! application's mysterious CUresult can be traced with `VGPU_LOG=debug`.

use crate::context::state::{self, Context};
use crate::driver;
use cuda_types::cuda::CUresult;
use std::sync::Arc;
use vgpu_guest::log::Level;
use vgpu_guest::vlog;
use vgpu_transport::Call;

pub const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;
pub const NOT_SUPPORTED: CUresult = CUresult::CUDA_ERROR_NOT_SUPPORTED;

/// `code`, after logging why it is returned.
pub fn reject(code: CUresult, why: std::fmt::Arguments<'_>) -> CUresult {
    vlog!(Level::Debug, "{why} (CUresult {})", code.0);
    code
}

/// One call to the host; a refusal is logged with the call's name (the
/// transport already logs lost connections at Error).
pub fn host<C: Call>(c: &C) -> Result<C::Reply, CUresult> {
    driver::call(c).inspect_err(|&e| {
        // NOT_READY is an answer (StreamQuery), not a failure.
        if e != CUresult::CUDA_ERROR_NOT_READY {
            vlog!(
                Level::Debug,
                "{}: the host answered CUresult {}",
                C::NAME,
                e.0
            );
        }
    })
}

/// The calling thread's current context and its host handle (work needs
/// one that is active).
pub fn current() -> Result<(Arc<Context>, u64), CUresult> {
    state::current_remote().inspect_err(|e| {
        vlog!(Level::Debug, "no usable current context (CUresult {})", e.0);
    })
}

/// `ptr + len`, or INVALID_VALUE when the span wraps the address space.
pub fn end_of(ptr: u64, len: u64, what: &str) -> Result<u64, CUresult> {
    ptr.checked_add(len).ok_or_else(|| {
        reject(
            INVALID_VALUE,
            format_args!("{what}: {len} bytes at {ptr:#x} wrap around"),
        )
    })
}
