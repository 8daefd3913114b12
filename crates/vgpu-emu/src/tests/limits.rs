//! Context limits, the device heap behind device `malloc`, and how far a
//! kernel may run past an allocation (its granule).

use super::kernels::{arg, dtoh, get_fn, htod, load_ptx};
use super::{alloc, destroy, mem_info, new_ctx, OK, SERIAL};
use crate::cuda_exports::*;
use cuda_types::cuda::*;
use std::ffi::c_void;
use std::ptr::null_mut;

const MIB: usize = 1 << 20;
const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;
const ILLEGAL_ADDRESS: CUresult = CUresult::CUDA_ERROR_ILLEGAL_ADDRESS;

fn get(limit: CUlimit) -> Result<usize, CUresult> {
    let mut v = usize::MAX;
    // SAFETY: a local out-slot.
    unsafe { cuCtxGetLimit(&mut v, limit) }.ok()?;
    Ok(v)
}

fn set(limit: CUlimit, v: usize) -> CUresult {
    // SAFETY: no pointers.
    unsafe { cuCtxSetLimit(limit, v) }
}

fn launch1(f: CUfunction, args: &mut [*mut c_void]) -> CUresult {
    // SAFETY: `args` holds one pointer per parameter, each to a live value
    // of the parameter's size.
    unsafe {
        cuLaunchKernel(
            f,
            1,
            1,
            1,
            1,
            1,
            1,
            0,
            null_mut(),
            args.as_mut_ptr(),
            null_mut(),
        )
    }
}

#[test]
fn every_limit_has_the_drivers_default_and_keeps_what_is_set() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    use CUlimit as L;
    let defaults = [
        (L::CU_LIMIT_STACK_SIZE, 1024),
        (L::CU_LIMIT_PRINTF_FIFO_SIZE, MIB),
        (L::CU_LIMIT_MALLOC_HEAP_SIZE, 8 * MIB),
        (L::CU_LIMIT_DEV_RUNTIME_SYNC_DEPTH, 2),
        (L::CU_LIMIT_DEV_RUNTIME_PENDING_LAUNCH_COUNT, 2048),
        (L::CU_LIMIT_MAX_L2_FETCH_GRANULARITY, 64),
        (L::CU_LIMIT_PERSISTING_L2_CACHE_SIZE, 0),
    ];
    for (l, v) in defaults {
        assert_eq!(get(l), Ok(v), "{l:?}");
    }
    // No CUDA-in-graphics: its limits are unsupported, as on a driver
    // without it (which keeps cuBLAS on kernels that have PTX).
    for l in [
        L::CU_LIMIT_SHMEM_SIZE,
        L::CU_LIMIT_CIG_ENABLED,
        L::CU_LIMIT_CIG_SHMEM_FALLBACK_ENABLED,
        L::CU_LIMIT_PER_BLOCK_MEMORY_SIZE,
    ] {
        assert_eq!(get(l), Err(CUresult::CUDA_ERROR_UNSUPPORTED_LIMIT), "{l:?}");
        assert_eq!(set(l, 1), CUresult::CUDA_ERROR_UNSUPPORTED_LIMIT, "{l:?}");
    }

    for (l, v) in [
        (L::CU_LIMIT_STACK_SIZE, 8192),
        (L::CU_LIMIT_PRINTF_FIFO_SIZE, 4 * MIB),
        (L::CU_LIMIT_MALLOC_HEAP_SIZE, 64 * MIB),
        (L::CU_LIMIT_DEV_RUNTIME_SYNC_DEPTH, 4),
        (L::CU_LIMIT_DEV_RUNTIME_PENDING_LAUNCH_COUNT, 4096),
        (L::CU_LIMIT_MAX_L2_FETCH_GRANULARITY, 32),
        (L::CU_LIMIT_PERSISTING_L2_CACHE_SIZE, MIB),
    ] {
        assert_eq!(set(l, v), OK, "{l:?}");
        assert_eq!(get(l), Ok(v), "{l:?}");
    }
    // Hints are clamped to what the device has.
    assert_eq!(set(L::CU_LIMIT_MAX_L2_FETCH_GRANULARITY, 4096), OK);
    assert_eq!(get(L::CU_LIMIT_MAX_L2_FETCH_GRANULARITY), Ok(128));
    assert_eq!(set(L::CU_LIMIT_PERSISTING_L2_CACHE_SIZE, usize::MAX), OK);
    let mut max = 0;
    // SAFETY: a local out-slot.
    unsafe {
        cuDeviceGetAttribute(
            &mut max,
            CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_PERSISTING_L2_CACHE_SIZE,
            0,
        )
    };
    assert_eq!(get(L::CU_LIMIT_PERSISTING_L2_CACHE_SIZE), Ok(max as usize));
    // Unknown and too large.
    assert_eq!(
        get(CUlimit(99)),
        Err(CUresult::CUDA_ERROR_UNSUPPORTED_LIMIT)
    );
    assert_eq!(set(CUlimit(99), 1), CUresult::CUDA_ERROR_UNSUPPORTED_LIMIT);
    assert_eq!(
        set(L::CU_LIMIT_MALLOC_HEAP_SIZE, usize::MAX),
        CUresult::CUDA_ERROR_OUT_OF_MEMORY
    );
    // SAFETY: a NULL out-pointer is refused.
    let r = unsafe { cuCtxGetLimit(null_mut(), L::CU_LIMIT_STACK_SIZE) };
    assert_eq!(r, INVALID_VALUE);
    // Limits are per context: a new one starts from the defaults.
    let other = new_ctx();
    assert_eq!(get(L::CU_LIMIT_STACK_SIZE), Ok(1024));
    assert_eq!(get(L::CU_LIMIT_MALLOC_HEAP_SIZE), Ok(8 * MIB));
    destroy(other);
    assert_eq!(get(L::CU_LIMIT_STACK_SIZE), Ok(8192));
    destroy(ctx);
    let mut v = 0;
    // SAFETY: a local out-slot; no context is current.
    let r = unsafe { cuCtxGetLimit(&mut v, L::CU_LIMIT_STACK_SIZE) };
    assert_eq!(r, CUresult::CUDA_ERROR_INVALID_CONTEXT);
}

/// out[0] = malloc(n); when it is not NULL, writes its last byte, reads its
/// first (out[1], zero in a fresh block) and frees it.
const HEAP: &str = r#"
.version 8.0
.target sm_90
.address_size 64

.extern .func (.param .b64 func_retval0) malloc(.param .b64 malloc_param_0);
.extern .func free(.param .b64 free_param_0);

.visible .entry heap(.param .u64 out_p, .param .u64 n_p)
{
    .reg .pred %p<2>;
    .reg .b16 %rs<4>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [out_p];
    ld.param.u64 %rd2, [n_p];
    {
    .param .b64 param0;
    st.param.b64 [param0], %rd2;
    .param .b64 retval0;
    call.uni (retval0), malloc, (param0);
    ld.param.b64 %rd3, [retval0];
    }
    st.global.u64 [%rd1], %rd3;
    setp.eq.s64 %p1, %rd3, 0;
    @%p1 bra DONE;
    add.s64 %rd4, %rd3, %rd2;
    sub.s64 %rd4, %rd4, 1;
    mov.u16 %rs1, 7;
    st.u8 [%rd4], %rs1;
    ld.u8 %rs2, [%rd3];
    cvt.u64.u16 %rd5, %rs2;
    st.global.u64 [%rd1+8], %rd5;
    {
    .param .b64 param0;
    st.param.b64 [param0], %rd3;
    call.uni free, (param0);
    }
DONE:
    ret;
}
"#;

#[test]
fn device_malloc_allocates_from_a_heap_of_the_limits_size() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let free_start = mem_info().0;
    let f = get_fn(load_ptx(HEAP), "heap");
    let mut out = alloc(16);
    assert_eq!(set(CUlimit::CU_LIMIT_MALLOC_HEAP_SIZE, MIB), OK);
    assert_eq!(get(CUlimit::CU_LIMIT_MALLOC_HEAP_SIZE), Ok(MIB));
    let free0 = mem_info().0;

    let run = |out: &mut CUdeviceptr, n: u64| {
        let mut n = n;
        htod(*out, &[u64::MAX, u64::MAX]);
        assert_eq!(launch1(f, &mut [arg(out), arg(&mut n)]), OK);
        dtoh::<u64>(*out, 2)
    };
    // Fits: a zeroed block; freed by the kernel, so it fits again.
    for _ in 0..3 {
        let r = run(&mut out, 768 * 1024);
        assert_ne!(r[0], 0, "{r:x?}");
        assert_eq!(r[1], 0, "{r:x?}");
    }
    // Larger than the heap: NULL, as on a GPU whose heap is exhausted.
    assert_eq!(run(&mut out, 2 * MIB as u64)[0], 0);
    // The heap is charged to the device while the context lives.
    let used = free0 - mem_info().0;
    assert!(used >= MIB, "{used}");
    // Fixed once a kernel used it.
    assert_eq!(
        set(CUlimit::CU_LIMIT_MALLOC_HEAP_SIZE, 2 * MIB),
        INVALID_VALUE
    );
    assert_eq!(get(CUlimit::CU_LIMIT_MALLOC_HEAP_SIZE), Ok(MIB));
    // Device-heap pointers are valid in kernels, not in API calls.
    let p = run(&mut out, 64)[0];
    let mut b = [0u8; 4];
    // SAFETY: `b` is writable for its length; the source is validated.
    let r = unsafe { cuMemcpyDtoH_v2(b.as_mut_ptr().cast(), p, b.len()) };
    assert_eq!(r, INVALID_VALUE);
    destroy(ctx);
    // The heap went with its context.
    let ctx = new_ctx();
    assert_eq!(mem_info().0, free_start);
    destroy(ctx);
}

/// Stores a u32 at `p + off`.
const POKE: &str = r#"
.version 8.0
.target sm_90
.address_size 64

.visible .entry poke(.param .u64 p, .param .u64 off)
{
    .reg .b32 %r<2>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [p];
    ld.param.u64 %rd2, [off];
    add.s64 %rd3, %rd1, %rd2;
    mov.u32 %r1, 1;
    st.global.u32 [%rd3], %r1;
    ret;
}
"#;

#[test]
fn kernels_may_overrun_an_allocation_within_its_granule() {
    let _g = SERIAL.lock();
    for (len, ok, fault) in [
        // numba's out-of-bounds test: 6 float64 past a 10-element array.
        (80usize, vec![80u64, 124, 508], 512u64),
        (512, vec![508], 512),
        (
            3 * MIB,
            vec![3 * MIB as u64, 4 * MIB as u64 - 4],
            4 * MIB as u64,
        ),
    ] {
        let ctx = new_ctx();
        let f = get_fn(load_ptx(POKE), "poke");
        let mut p = alloc(len);
        for mut off in ok {
            assert_eq!(
                launch1(f, &mut [arg(&mut p), arg(&mut off)]),
                OK,
                "{len} +{off}"
            );
        }
        // API calls are held to the size asked for.
        let bytes = vec![0u8; len + 1];
        // SAFETY: `bytes` is readable for its length; the range is checked.
        let r = unsafe { cuMemcpyHtoD_v2(p, bytes.as_ptr().cast(), bytes.len()) };
        assert_eq!(r, INVALID_VALUE);
        let mut off = fault;
        assert_eq!(
            launch1(f, &mut [arg(&mut p), arg(&mut off)]),
            ILLEGAL_ADDRESS,
            "{len} +{fault}"
        );
        destroy(ctx);
    }
}
