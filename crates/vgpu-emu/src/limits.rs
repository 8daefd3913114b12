//! Context limits (`cuCtxGetLimit` / `cuCtxSetLimit`), one set per context.
//!
//! The defaults are an H100's under a CUDA 12/13 driver. What the software
//! GPU does with each (docs/software-gpu.md, "Context limits"):
//! - `MALLOC_HEAP_SIZE` is the size of the context's device heap, which
//!   device `malloc` allocates from (`memory::device_heap`, which keeps
//!   it); like the driver, it can only change until a kernel has used the
//!   heap.
//! - The others are kept and reported: the interpreter's per-thread stack,
//!   the `printf` buffer (text is collected per block, never dropped) and
//!   the L2 hints have no fixed sizes to apply them to, and the device
//!   runtime (device-side launches) is not emulated.
//! - `SHMEM_SIZE`, `CIG_ENABLED` and `CIG_SHMEM_FALLBACK_ENABLED` belong
//!   to CUDA-in-graphics, which the software GPU does not have
//!   (`cuCtxCreate_v4` refuses CIG parameters): they are
//!   CUDA_ERROR_UNSUPPORTED_LIMIT, as on a driver without CIG. cuBLAS
//!   depends on it: told "not a CIG context" it picks CUTLASS kernels that
//!   its library ships as SASS only, which the interpreter cannot run;
//!   told the limits are unsupported it keeps to kernels with PTX.

use crate::context::MaybeCtx;
use crate::profile;
use cuda_types::cuda::{CUdevice_attribute as A, CUlimit, CUresult};
use vgpu_ffi::Out;

const UNSUPPORTED_LIMIT: CUresult = CUresult::CUDA_ERROR_UNSUPPORTED_LIMIT;

/// The settable limits of one context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub stack_size: usize,
    pub printf_fifo_size: usize,
    pub dev_runtime_sync_depth: usize,
    pub dev_runtime_pending_launch_count: usize,
    pub max_l2_fetch_granularity: usize,
    pub persisting_l2_cache_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            stack_size: 1024,
            printf_fifo_size: 1 << 20,
            dev_runtime_sync_depth: 2,
            dev_runtime_pending_launch_count: 2048,
            max_l2_fetch_granularity: 64,
            persisting_l2_cache_size: 0,
        }
    }
}

/// The largest `MAX_L2_FETCH_GRANULARITY` (bytes), per the driver's docs.
const MAX_L2_FETCH: usize = 128;

fn attribute(a: A) -> Result<usize, CUresult> {
    Ok(usize::try_from(profile::attribute(a)?).unwrap_or(0))
}

/// `cuCtxGetLimit` in the current context. The CIG limits and
/// `CU_LIMIT_PER_BLOCK_MEMORY_SIZE` (CUDA 13), like unknown values, fall to
/// the `_` arm: unsupported.
pub fn get_limit(value: Out<usize>, limit: CUlimit) -> Result<(), CUresult> {
    let c = MaybeCtx::NULL.or_current()?;
    let l = *c.limits.lock();
    let v = match limit {
        CUlimit::CU_LIMIT_STACK_SIZE => l.stack_size,
        CUlimit::CU_LIMIT_PRINTF_FIFO_SIZE => l.printf_fifo_size,
        CUlimit::CU_LIMIT_MALLOC_HEAP_SIZE => crate::memory::device_heap_size(c.id),
        CUlimit::CU_LIMIT_DEV_RUNTIME_SYNC_DEPTH => l.dev_runtime_sync_depth,
        CUlimit::CU_LIMIT_DEV_RUNTIME_PENDING_LAUNCH_COUNT => l.dev_runtime_pending_launch_count,
        CUlimit::CU_LIMIT_MAX_L2_FETCH_GRANULARITY => l.max_l2_fetch_granularity,
        CUlimit::CU_LIMIT_PERSISTING_L2_CACHE_SIZE => l.persisting_l2_cache_size,
        _ => return Err(UNSUPPORTED_LIMIT),
    };
    value.write(v);
    Ok(())
}

/// `cuCtxSetLimit` in the current context. Out-of-range hints are clamped,
/// as the driver documents it may ("the application can use cuCtxGetLimit
/// to find out exactly what the limit has been set to").
pub fn set_limit(limit: CUlimit, value: usize) -> Result<(), CUresult> {
    let c = MaybeCtx::NULL.or_current()?;
    let mut l = c.limits.lock();
    match limit {
        CUlimit::CU_LIMIT_STACK_SIZE => l.stack_size = value,
        CUlimit::CU_LIMIT_PRINTF_FIFO_SIZE => l.printf_fifo_size = value,
        // The heap is made by the first kernel that allocates; after that
        // its size is fixed (CUDA_ERROR_INVALID_VALUE, as the driver
        // documents).
        CUlimit::CU_LIMIT_MALLOC_HEAP_SIZE => crate::memory::set_device_heap_size(c.id, value)?,
        CUlimit::CU_LIMIT_DEV_RUNTIME_SYNC_DEPTH => l.dev_runtime_sync_depth = value,
        CUlimit::CU_LIMIT_DEV_RUNTIME_PENDING_LAUNCH_COUNT => {
            l.dev_runtime_pending_launch_count = value
        }
        CUlimit::CU_LIMIT_MAX_L2_FETCH_GRANULARITY => {
            l.max_l2_fetch_granularity = value.min(MAX_L2_FETCH)
        }
        CUlimit::CU_LIMIT_PERSISTING_L2_CACHE_SIZE => {
            let max = attribute(A::CU_DEVICE_ATTRIBUTE_MAX_PERSISTING_L2_CACHE_SIZE)?;
            l.persisting_l2_cache_size = value.min(max);
        }
        _ => return Err(UNSUPPORTED_LIMIT),
    }
    Ok(())
}
