//! Streams. Only the built-in streams exist so far; work on them runs
//! synchronously, which is a valid schedule for in-order streams.

use cuda_types::cuda::{CUresult, CUstream};

/// `CU_STREAM_LEGACY` and `CU_STREAM_PER_THREAD` from cuda.h.
const LEGACY: usize = 0x1;
const PER_THREAD: usize = 0x2;

pub fn check(stream: CUstream) -> Result<(), CUresult> {
    match stream as usize {
        0 | LEGACY | PER_THREAD => Ok(()),
        _ => Err(CUresult::CUDA_ERROR_INVALID_HANDLE),
    }
}
