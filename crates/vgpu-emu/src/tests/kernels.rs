//! Modules, libraries, launches, function attributes, occupancy and the
//! linker, through the exported entry points, on the nvcc fixtures of the
//! ptx crate (crates/vgpu-ptx/tests/cuda).

use super::{alloc, destroy, mem_info, new_ctx, OK, SERIAL};
use crate::cuda_exports::*;
use cuda_types::cuda::*;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr::{null, null_mut};

const PTX: &str = include_str!("../../../vgpu-ptx/tests/cuda/kernels_sm80.ptx");
const FATBIN: &[u8] = include_bytes!("../../../vgpu-ptx/tests/cuda/kernels.fatbin");
const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;
const ILLEGAL_ADDRESS: CUresult = CUresult::CUDA_ERROR_ILLEGAL_ADDRESS;

/// Globals with initializers and a relocation, a constant, and a kernel that
/// reads them: out[i] = tbl[i] * kf + (*tblp)[i].
const GLOBALS: &str = r#"
.version 8.0
.target sm_90
.address_size 64

.global .align 4 .u32 tbl[4] = {10, 20, 30, 40};
.const .align 4 .f32 kf = 0f40400000;
.global .align 8 .u64 tblp = generic(tbl);

.visible .entry readg(.param .u64 out_p)
{
    .reg .b32 %r<8>;
    .reg .b64 %rd<10>;
    .reg .f32 %f<4>;
    ld.param.u64 %rd1, [out_p];
    cvta.to.global.u64 %rd1, %rd1;
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd2, %r1, 4;
    mov.u64 %rd3, tbl;
    add.s64 %rd4, %rd3, %rd2;
    ld.global.u32 %r2, [%rd4];
    cvt.rn.f32.u32 %f1, %r2;
    ld.const.f32 %f2, [kf];
    mul.f32 %f3, %f1, %f2;
    ld.global.u64 %rd5, [tblp];
    add.s64 %rd6, %rd5, %rd2;
    ld.u32 %r3, [%rd6];
    cvt.rn.f32.u32 %f1, %r3;
    add.f32 %f3, %f3, %f1;
    add.s64 %rd7, %rd1, %rd2;
    st.global.f32 [%rd7], %f3;
    ret;
}
"#;

const UNSUPPORTED: &str = r#"
.version 8.0
.target sm_90
.address_size 64

.visible .entry unsupported(.param .u64 p)
{
    .reg .b32 %r<4>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [p];
    vadd.s32.s32.s32 %r1, %r2, %r3;
    ret;
}
"#;

pub(super) fn load_ptx(text: &str) -> CUmodule {
    let c = CString::new(text).unwrap();
    let mut m = null_mut();
    // SAFETY: NUL-terminated PTX and a local out-slot.
    assert_eq!(unsafe { cuModuleLoadData(&mut m, c.as_ptr().cast()) }, OK);
    m
}

pub(super) fn get_fn(m: CUmodule, name: &str) -> CUfunction {
    let c = CString::new(name).unwrap();
    let mut f = null_mut();
    // SAFETY: a local out-slot and a C string.
    assert_eq!(unsafe { cuModuleGetFunction(&mut f, m, c.as_ptr()) }, OK);
    f
}

pub(super) fn htod<T: Copy>(dst: CUdeviceptr, v: &[T]) {
    // SAFETY: `v` is a live slice of that many bytes.
    let r = unsafe { cuMemcpyHtoD_v2(dst, v.as_ptr().cast(), std::mem::size_of_val(v)) };
    assert_eq!(r, OK);
}

pub(super) fn dtoh<T: Copy + Default>(src: CUdeviceptr, n: usize) -> Vec<T> {
    let mut v = vec![T::default(); n];
    // SAFETY: `v` has room for `n` elements.
    let r = unsafe { cuMemcpyDtoH_v2(v.as_mut_ptr().cast(), src, std::mem::size_of_val(&v[..])) };
    assert_eq!(r, OK);
    v
}

fn launch(f: CUfunction, grid: u32, block: u32, shared: u32, args: &mut [*mut c_void]) -> CUresult {
    // SAFETY: `args` holds one pointer per kernel parameter, each to a live
    // value of the parameter's size (the tests' responsibility).
    unsafe {
        cuLaunchKernel(
            f,
            grid,
            1,
            1,
            block,
            1,
            1,
            shared,
            null_mut(),
            args.as_mut_ptr(),
            null_mut(),
        )
    }
}

pub(super) fn arg<T>(v: &mut T) -> *mut c_void {
    (v as *mut T).cast()
}

/// Runs vadd over `n` floats and checks c = a + b.
fn check_vadd(f: CUfunction) {
    let n = 1000usize;
    let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..n).map(|i| (2 * i) as f32 + 0.5).collect();
    let (mut da, mut db, mut dc) = (alloc(4 * n), alloc(4 * n), alloc(4 * n));
    htod(da, &a);
    htod(db, &b);
    let mut nn = n as c_int;
    let r = launch(
        f,
        n.div_ceil(256) as u32,
        256,
        0,
        &mut [arg(&mut da), arg(&mut db), arg(&mut dc), arg(&mut nn)],
    );
    assert_eq!(r, OK);
    let c: Vec<f32> = dtoh(dc, n);
    for i in 0..n {
        assert_eq!(c[i], a[i] + b[i], "element {i}");
    }
}

#[test]
fn ptx_module_vadd_with_kernel_params_and_extra() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let m = load_ptx(PTX);
    let f = get_fn(m, "vadd");
    check_vadd(f);

    // The same launch with the arguments packed in `extra`, sized as the C
    // struct (with its tail padding) an application would pass.
    #[repr(C)]
    struct Args {
        a: CUdeviceptr,
        b: CUdeviceptr,
        c: CUdeviceptr,
        n: c_int,
    }
    let n = 64usize;
    let (da, db, dc) = (alloc(4 * n), alloc(4 * n), alloc(4 * n));
    htod(da, &vec![1.5f32; n]);
    htod(db, &vec![2.0f32; n]);
    let mut args = Args {
        a: da,
        b: db,
        c: dc,
        n: n as c_int,
    };
    let mut size = std::mem::size_of::<Args>();
    let mut extra = [
        std::ptr::without_provenance_mut(1),
        arg(&mut args),
        std::ptr::without_provenance_mut(2),
        arg(&mut size),
        null_mut(),
    ];
    // SAFETY: `extra` is an END-terminated list of live values.
    let r = unsafe {
        cuLaunchKernel(
            f,
            1,
            1,
            1,
            64,
            1,
            1,
            0,
            null_mut(),
            null_mut(),
            extra.as_mut_ptr(),
        )
    };
    assert_eq!(r, OK);
    assert_eq!(dtoh::<f32>(dc, n), vec![3.5f32; n]);

    // A buffer shorter than the parameters, and both forms at once.
    let mut short = 16usize;
    extra[3] = arg(&mut short);
    // SAFETY: as above.
    let r = unsafe {
        cuLaunchKernel(
            f,
            1,
            1,
            1,
            64,
            1,
            1,
            0,
            null_mut(),
            null_mut(),
            extra.as_mut_ptr(),
        )
    };
    assert_eq!(r, INVALID_VALUE);
    extra[3] = arg(&mut size);
    let mut p = [
        arg(&mut args.a),
        arg(&mut args.b),
        arg(&mut args.c),
        arg(&mut args.n),
    ];
    // SAFETY: both lists are live.
    let r = unsafe {
        cuLaunchKernel(
            f,
            1,
            1,
            1,
            64,
            1,
            1,
            0,
            null_mut(),
            p.as_mut_ptr(),
            extra.as_mut_ptr(),
        )
    };
    assert_eq!(r, INVALID_VALUE);

    // Launch limits.
    assert_eq!(launch(f, 1, 1025, 0, &mut p), INVALID_VALUE);
    assert_eq!(launch(f, 0, 32, 0, &mut p), INVALID_VALUE);
    // SAFETY: as above.
    let r = unsafe {
        cuLaunchKernel(
            f,
            1,
            1,
            1,
            1,
            1,
            65,
            0,
            null_mut(),
            p.as_mut_ptr(),
            null_mut(),
        )
    };
    assert_eq!(r, INVALID_VALUE);
    assert_eq!(launch(f, 1, 32, 48 * 1024 + 1, &mut p), INVALID_VALUE);

    // SAFETY: handles only.
    unsafe {
        assert_eq!(cuModuleUnload(m), OK);
        assert_eq!(cuModuleUnload(m), CUresult::CUDA_ERROR_INVALID_HANDLE);
    }
    assert_eq!(
        launch(f, 1, 32, 0, &mut p),
        CUresult::CUDA_ERROR_INVALID_HANDLE
    );
    destroy(ctx);
}

#[test]
fn fatbin_container_and_wrapper() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let mut m = null_mut();
    // SAFETY: a complete fatbin container and a local out-slot.
    let r = unsafe { cuModuleLoadData(&mut m, FATBIN.as_ptr().cast()) };
    assert_eq!(r, OK);
    check_vadd(get_fn(m, "vadd"));

    // The 24-byte __fatBinC_Wrapper_t cudart registers.
    let mut wrapper = [0u8; 24];
    wrapper[0..4].copy_from_slice(&0x466243B1u32.to_le_bytes());
    wrapper[4..8].copy_from_slice(&1u32.to_le_bytes());
    wrapper[8..16].copy_from_slice(&(FATBIN.as_ptr() as u64).to_le_bytes());
    let mut m2 = null_mut();
    // SAFETY: a wrapper pointing at a live container.
    let r = unsafe { cuModuleLoadFatBinary(&mut m2, wrapper.as_ptr().cast()) };
    assert_eq!(r, OK);
    check_vadd(get_fn(m2, "vadd"));

    // A cubin alone has no PTX to run.
    let elf = [0x7fu8, b'E', b'L', b'F', 2, 1, 1, 0];
    // SAFETY: only the magic is read before the verdict.
    let r = unsafe { cuModuleLoadData(&mut m, elf.as_ptr().cast()) };
    assert_eq!(r, CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU);
    // SAFETY: NUL-terminated.
    let r = unsafe { cuModuleLoadData(&mut m, c"not ptx at all".as_ptr().cast()) };
    assert_eq!(r, CUresult::CUDA_ERROR_INVALID_PTX);
    destroy(ctx);
}

#[test]
fn library_kernel_used_as_function() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let mut wrapper = [0u8; 24];
    wrapper[0..4].copy_from_slice(&0x466243B1u32.to_le_bytes());
    wrapper[4..8].copy_from_slice(&1u32.to_le_bytes());
    wrapper[8..16].copy_from_slice(&(FATBIN.as_ptr() as u64).to_le_bytes());
    let mut lib = null_mut();
    let mut opt = [CUlibraryOption::CU_LIBRARY_BINARY_IS_PRESERVED];
    let mut val = [std::ptr::without_provenance_mut::<c_void>(1)];
    // SAFETY: the wrapper, one library option, a local out-slot.
    let r = unsafe {
        cuLibraryLoadData(
            &mut lib,
            wrapper.as_ptr().cast(),
            null_mut(),
            null_mut(),
            0,
            opt.as_mut_ptr(),
            val.as_mut_ptr(),
            1,
        )
    };
    assert_eq!(r, OK);
    let mut k = null_mut();
    // SAFETY: local out-slots and C strings throughout.
    unsafe {
        assert_eq!(cuLibraryGetKernel(&mut k, lib, c"vadd".as_ptr()), OK);
        assert_eq!(
            cuLibraryGetKernel(&mut k, lib, c"nope".as_ptr()),
            CUresult::CUDA_ERROR_NOT_FOUND
        );
        assert_eq!(cuLibraryGetKernel(&mut k, lib, c"vadd".as_ptr()), OK);
        let mut name: *const c_char = null();
        assert_eq!(cuKernelGetName(&mut name, k), OK);
        assert_eq!(CStr::from_ptr(name).to_str().unwrap(), "vadd");
        let (mut off, mut size) = (0usize, 0usize);
        assert_eq!(cuKernelGetParamInfo(k, 3, &mut off, &mut size), OK);
        assert_eq!((off, size), (24, 4));
        assert_eq!(
            cuKernelGetParamInfo(k, 4, &mut off, &mut size),
            INVALID_VALUE
        );
        let mut count = 0u32;
        assert_eq!(cuLibraryGetKernelCount(&mut count, lib), OK);
        assert!(count >= 10, "{count} kernels");
    }
    // cudart 13 launches (CUfunction)kernel.
    check_vadd(k as CUfunction);
    // cudart 12 goes through the module of the current context.
    let mut m = null_mut();
    let mut f = null_mut();
    // SAFETY: local out-slots.
    unsafe {
        assert_eq!(cuLibraryGetModule(&mut m, lib), OK);
        assert_eq!(cuKernelGetFunction(&mut f, k), OK);
    }
    assert_eq!(get_fn(m, "vadd"), f);
    check_vadd(f);
    let mut fm = null_mut();
    // SAFETY: local out-slot.
    assert_eq!(unsafe { cuFuncGetModule(&mut fm, k as CUfunction) }, OK);
    assert_eq!(fm, m);

    // SAFETY: handles only.
    unsafe {
        assert_eq!(cuLibraryUnload(lib), OK);
        assert_eq!(cuLibraryUnload(lib), CUresult::CUDA_ERROR_INVALID_HANDLE);
        let mut f2 = null_mut();
        assert_eq!(
            cuKernelGetFunction(&mut f2, k),
            CUresult::CUDA_ERROR_INVALID_HANDLE
        );
    }
    destroy(ctx);
}

#[test]
fn module_globals_are_device_memory() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let m = load_ptx(GLOBALS);
    let f = get_fn(m, "readg");
    let mut out = alloc(16);
    assert_eq!(launch(f, 1, 4, 0, &mut [arg(&mut out)]), OK);
    assert_eq!(dtoh::<f32>(out, 4), vec![40.0, 80.0, 120.0, 160.0]);

    let (mut tbl, mut size) = (0, 0);
    let (mut tblp, mut psize) = (0, 0);
    // SAFETY: local out-slots and C strings.
    unsafe {
        assert_eq!(
            cuModuleGetGlobal_v2(&mut tbl, &mut size, m, c"tbl".as_ptr()),
            OK
        );
        assert_eq!(
            cuModuleGetGlobal_v2(&mut tblp, &mut psize, m, c"tblp".as_ptr()),
            OK
        );
        assert_eq!(
            cuModuleGetGlobal_v2(&mut tbl, &mut size, m, c"nope".as_ptr()),
            CUresult::CUDA_ERROR_NOT_FOUND
        );
    }
    assert_eq!((size, psize), (16, 8));
    // The relocation holds tbl's device address.
    assert_eq!(dtoh::<u64>(tblp, 1), vec![tbl]);
    htod(tbl, &[1u32, 2, 3, 4]);
    assert_eq!(launch(f, 1, 4, 0, &mut [arg(&mut out)]), OK);
    assert_eq!(dtoh::<f32>(out, 4), vec![4.0, 8.0, 12.0, 16.0]);

    let mut v = 0;
    let attr = CUfunction_attribute::CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES;
    // SAFETY: local out-slot.
    let r = unsafe { cuFuncGetAttribute(&mut v, attr, f) };
    assert_eq!(r, OK);
    assert_eq!(v, 4);
    destroy(ctx);
}

/// Racing unloads of one module: one succeeds, the others find the handle
/// gone, and the module's variables are freed once.
#[test]
fn racing_unloads_act_once() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let free0 = mem_info().0;
    let m = load_ptx(GLOBALS);
    let f = get_fn(m, "readg");
    assert!(mem_info().0 < free0, "the module's variables take memory");
    let handle = m as usize;
    let start = std::sync::Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                // SAFETY: no pointers; the handle is validated.
                unsafe { cuModuleUnload(handle as CUmodule) }
            })
        })
        .collect();
    let results: Vec<CUresult> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        results.iter().filter(|r| **r == OK).count(),
        1,
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .all(|r| *r == OK || *r == CUresult::CUDA_ERROR_INVALID_HANDLE),
        "{results:?}"
    );
    assert_eq!(mem_info().0, free0);
    let mut n = 0;
    // SAFETY: a local out-slot; the handles are validated.
    unsafe {
        assert_eq!(
            cuFuncGetParamCount(f, &mut n),
            CUresult::CUDA_ERROR_INVALID_HANDLE
        );
        assert_eq!(cuModuleUnload(m), CUresult::CUDA_ERROR_INVALID_HANDLE);
    }
    destroy(ctx);
}

#[test]
fn kernel_fault_is_sticky_for_its_context_only() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let m = load_ptx(PTX);
    let f = get_fn(m, "oob_write");
    let mut out = alloc(1024);
    let mut n: c_int = 1 << 28;
    assert_eq!(
        launch(f, 1, 32, 0, &mut [arg(&mut out), arg(&mut n)]),
        ILLEGAL_ADDRESS
    );
    // Every later call on the context reports the fault.
    let mut p = 0;
    // SAFETY: local out-slot, handles.
    unsafe {
        assert_eq!(cuMemAlloc_v2(&mut p, 16), ILLEGAL_ADDRESS);
        assert_eq!(cuCtxSynchronize(), ILLEGAL_ADDRESS);
    }
    n = 0;
    assert_eq!(
        launch(f, 1, 32, 0, &mut [arg(&mut out), arg(&mut n)]),
        ILLEGAL_ADDRESS
    );

    // Another context is unaffected.
    let ctx2 = new_ctx();
    let m2 = load_ptx(PTX);
    check_vadd(get_fn(m2, "vadd"));
    destroy(ctx2);

    // SAFETY: handles only.
    unsafe {
        assert_eq!(cuCtxPushCurrent_v2(ctx), OK);
        assert_eq!(cuCtxSynchronize(), ILLEGAL_ADDRESS);
    }
    destroy(ctx);
}

#[test]
fn unsupported_instruction_is_not_supported() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let m = load_ptx(UNSUPPORTED);
    let f = get_fn(m, "unsupported");
    let mut p = alloc(64);
    assert_eq!(
        launch(f, 1, 1, 0, &mut [arg(&mut p)]),
        CUresult::CUDA_ERROR_NOT_SUPPORTED
    );
    // Not a device fault: the context goes on.
    // SAFETY: no pointers.
    assert_eq!(unsafe { cuCtxSynchronize() }, OK);
    destroy(ctx);
}

fn attr(f: CUfunction, a: CUfunction_attribute) -> c_int {
    let mut v = -7;
    // SAFETY: local out-slot.
    assert_eq!(unsafe { cuFuncGetAttribute(&mut v, a, f) }, OK);
    v
}

unsafe extern "C" fn four_bytes_per_thread(block: c_int) -> usize {
    block as usize * 4
}

#[test]
fn function_attributes_and_occupancy() {
    use CUfunction_attribute as A;
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let m = load_ptx(PTX);
    let vadd = get_fn(m, "vadd");
    let matmul = get_fn(m, "matmul");
    let rev = get_fn(m, "reverse_dyn");
    assert_eq!(attr(vadd, A::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK), 1024);
    assert_eq!(attr(vadd, A::CU_FUNC_ATTRIBUTE_NUM_REGS), 32);
    assert_eq!(attr(vadd, A::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES), 0);
    assert_eq!(
        attr(matmul, A::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES),
        2 * 16 * 16 * 4
    );
    assert_eq!(attr(vadd, A::CU_FUNC_ATTRIBUTE_PTX_VERSION), 80);
    assert_eq!(attr(vadd, A::CU_FUNC_ATTRIBUTE_BINARY_VERSION), 90);
    assert_eq!(
        attr(matmul, A::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES),
        48 * 1024 - 2048
    );
    let mut name: *const c_char = null();
    let (mut off, mut size) = (0usize, 0usize);
    // SAFETY: local out-slots.
    unsafe {
        assert_eq!(cuFuncGetName(&mut name, vadd), OK);
        assert_eq!(CStr::from_ptr(name).to_str().unwrap(), "vadd");
        assert_eq!(cuFuncGetParamInfo(vadd, 2, &mut off, &mut size), OK);
        assert_eq!((off, size), (16, 8));
    }

    // Dynamic shared memory beyond 48 KiB needs the attribute.
    let n = 100 * 1024 / 4;
    let data: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let mut d = alloc(4 * n);
    htod(d, &data);
    let big = (4 * 1024) as u32;
    assert_eq!(
        launch(rev, 1, 1024, 100 * 1024, &mut [arg(&mut d)]),
        INVALID_VALUE
    );
    let set = |v| {
        // SAFETY: handle and value only.
        unsafe { cuFuncSetAttribute(rev, A::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, v) }
    };
    assert_eq!(set(228 * 1024), INVALID_VALUE);
    assert_eq!(set(100 * 1024), OK);
    assert_eq!(
        attr(rev, A::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES),
        100 * 1024
    );
    assert_eq!(launch(rev, 25, 1024, big, &mut [arg(&mut d)]), OK);
    let back: Vec<f32> = dtoh(d, 1024);
    assert_eq!(back[0], 1023.0);
    assert_eq!(back[1023], 0.0);

    // Occupancy at 32 registers per thread: the thread limit binds.
    let occ = |f, block, smem| {
        let mut b = -1;
        // SAFETY: local out-slot.
        let r = unsafe { cuOccupancyMaxActiveBlocksPerMultiprocessor(&mut b, f, block, smem) };
        assert_eq!(r, OK);
        b
    };
    assert_eq!(occ(vadd, 256, 0), 8);
    assert_eq!(occ(vadd, 1024, 0), 2);
    assert_eq!(occ(vadd, 32, 0), 32);
    assert_eq!(occ(vadd, 1025, 0), 0);
    // Shared memory binds: (40 KiB + 1 KiB reserved) per block in 228 KiB.
    assert_eq!(occ(vadd, 64, 40 * 1024), 5);

    let (mut grid, mut block) = (0, 0);
    // SAFETY: local out-slots; the callback is a plain function.
    unsafe {
        assert_eq!(
            cuOccupancyMaxPotentialBlockSize(&mut grid, &mut block, vadd, None, 0, 0),
            OK
        );
        assert_eq!((grid, block), (2 * 114, 1024));
        assert_eq!(
            cuOccupancyMaxPotentialBlockSize(&mut grid, &mut block, vadd, None, 0, 128),
            OK
        );
        assert_eq!((grid, block), (16 * 114, 128));
        assert_eq!(
            cuOccupancyMaxPotentialBlockSize(
                &mut grid,
                &mut block,
                vadd,
                Some(four_bytes_per_thread),
                0,
                0
            ),
            OK
        );
        assert!(block > 0 && grid > 0);
        let mut avail = 0usize;
        assert_eq!(
            cuOccupancyAvailableDynamicSMemPerBlock(&mut avail, vadd, 2, 256),
            OK
        );
        assert_eq!(avail, 228 * 1024 / 2 - 1024);
    }
    destroy(ctx);
}

#[test]
fn launch_kernel_ex_with_attributes() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let m = load_ptx(PTX);
    let f = get_fn(m, "vadd");
    let n = 128usize;
    let (mut a, mut b, mut c) = (alloc(4 * n), alloc(4 * n), alloc(4 * n));
    htod(a, &vec![1.0f32; n]);
    htod(b, &vec![2.0f32; n]);
    let mut nn = n as c_int;
    let mut args = [arg(&mut a), arg(&mut b), arg(&mut c), arg(&mut nn)];
    let mut attrs = [CUlaunchAttribute::default(), CUlaunchAttribute::default()];
    attrs[0].id = CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_COOPERATIVE;
    attrs[0].value.cooperative = 1;
    attrs[1].id = CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
    attrs[1].value.clusterDim.x = 1;
    attrs[1].value.clusterDim.y = 1;
    attrs[1].value.clusterDim.z = 1;
    let mut cfg = CUlaunchConfig {
        gridDimX: 2,
        gridDimY: 1,
        gridDimZ: 1,
        blockDimX: 64,
        blockDimY: 1,
        blockDimZ: 1,
        sharedMemBytes: 0,
        hStream: null_mut(),
        attrs: attrs.as_mut_ptr(),
        numAttrs: 2,
    };
    // SAFETY: a live config and argument list.
    unsafe {
        assert_eq!(cuLaunchKernelEx(&cfg, f, args.as_mut_ptr(), null_mut()), OK);
        assert_eq!(dtoh::<f32>(c, n), vec![3.0f32; n]);
        attrs[1].value.clusterDim.x = 2;
        cfg.attrs = attrs.as_mut_ptr();
        assert_eq!(
            cuLaunchKernelEx(&cfg, f, args.as_mut_ptr(), null_mut()),
            CUresult::CUDA_ERROR_NOT_SUPPORTED
        );
        // Cooperative grids must fit on the device at once.
        cfg.numAttrs = 1;
        cfg.gridDimX = 100_000;
        assert_eq!(
            cuLaunchKernelEx(&cfg, f, args.as_mut_ptr(), null_mut()),
            CUresult::CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE
        );
        assert_eq!(
            cuLaunchCooperativeKernel(f, 2, 1, 1, 64, 1, 1, 0, null_mut(), args.as_mut_ptr()),
            OK
        );
    }
    destroy(ctx);
}

#[test]
fn linker_passes_ptx_through() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let mut err_log = [0 as c_char; 256];
    let mut opts = [
        CUjit_option::CU_JIT_ERROR_LOG_BUFFER,
        CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
    ];
    let mut vals = [err_log.as_mut_ptr().cast::<c_void>(), 256 as *mut c_void];
    let mut link = null_mut();
    let text = CString::new(PTX).unwrap();
    let mut image: *mut c_void = null_mut();
    let mut size = 0usize;
    // SAFETY: live option arrays, the PTX with its size, local out-slots.
    unsafe {
        assert_eq!(
            cuLinkCreate_v2(2, opts.as_mut_ptr(), vals.as_mut_ptr(), &mut link),
            OK
        );
        let r = cuLinkAddData_v2(
            link,
            CUjitInputType::CU_JIT_INPUT_PTX,
            text.as_ptr() as *mut c_void,
            PTX.len() + 1,
            c"kernels.ptx".as_ptr(),
            0,
            null_mut(),
            null_mut(),
        );
        assert_eq!(r, OK);
        let cubin = [0x7fu8, b'E', b'L', b'F'];
        let r = cuLinkAddData_v2(
            link,
            CUjitInputType::CU_JIT_INPUT_CUBIN,
            cubin.as_ptr() as *mut c_void,
            4,
            null(),
            0,
            null_mut(),
            null_mut(),
        );
        assert_eq!(r, CUresult::CUDA_ERROR_NOT_SUPPORTED);
        assert_eq!(cuLinkComplete(link, &mut image, &mut size), OK);
        assert_eq!(size, PTX.len() + 2);
        let mut m = null_mut();
        assert_eq!(cuModuleLoadData(&mut m, image), OK);
        check_vadd(get_fn(m, "vadd"));
        assert_eq!(cuLinkDestroy(link), OK);

        // A PTX error reaches the error log. The driver wrote the bytes it
        // used into the size slot; the buffer is 256 bytes again.
        assert_eq!(vals[1] as usize, 1);
        vals[1] = 256 as *mut c_void;
        assert_eq!(
            cuLinkCreate_v2(2, opts.as_mut_ptr(), vals.as_mut_ptr(), &mut link),
            OK
        );
        let bad = c".version 8.0\n.target sm_90\n.address_size 64\n.visible .entry x() { ret;";
        let r = cuLinkAddData_v2(
            link,
            CUjitInputType::CU_JIT_INPUT_PTX,
            bad.as_ptr() as *mut c_void,
            bad.to_bytes().len(),
            null(),
            0,
            null_mut(),
            null_mut(),
        );
        assert_eq!(r, OK);
        assert_eq!(
            cuLinkComplete(link, &mut image, &mut size),
            CUresult::CUDA_ERROR_INVALID_PTX
        );
        assert!(CStr::from_ptr(err_log.as_ptr())
            .to_str()
            .unwrap()
            .contains("invalid PTX"));
        assert_eq!(cuLinkDestroy(link), OK);
    }
    destroy(ctx);
}

/// nvcc 13 emits a second fatbin holding only a cubin; cudart may load it
/// eagerly, so the load succeeds and only a kernel lookup fails.
#[test]
fn library_without_ptx_loads_empty() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    // A container with one ELF entry: 16-byte header, 64-byte entry header,
    // an 8-byte payload.
    let mut c = Vec::new();
    c.extend_from_slice(&0xBA55ED50u32.to_le_bytes());
    c.extend_from_slice(&1u16.to_le_bytes());
    c.extend_from_slice(&16u16.to_le_bytes());
    c.extend_from_slice(&72u64.to_le_bytes());
    let mut e = [0u8; 64];
    e[0..2].copy_from_slice(&2u16.to_le_bytes());
    e[2..4].copy_from_slice(&0x0101u16.to_le_bytes());
    e[4..8].copy_from_slice(&64u32.to_le_bytes());
    e[8..16].copy_from_slice(&8u64.to_le_bytes());
    e[28..32].copy_from_slice(&80u32.to_le_bytes());
    e[40..48].copy_from_slice(&0x11u64.to_le_bytes());
    c.extend_from_slice(&e);
    c.extend_from_slice(&[0x7f, b'E', b'L', b'F', 0, 0, 0, 0]);
    let (mut lib, mut m, mut k, mut f) = (null_mut(), null_mut(), null_mut(), null_mut());
    // SAFETY: a complete container, local out-slots, C strings.
    unsafe {
        let r = cuModuleLoadData(&mut m, c.as_ptr().cast());
        assert_eq!(r, CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU);
        let r = cuLibraryLoadData(
            &mut lib,
            c.as_ptr().cast(),
            null_mut(),
            null_mut(),
            0,
            null_mut(),
            null_mut(),
            0,
        );
        assert_eq!(r, OK);
        assert_eq!(cuLibraryGetModule(&mut m, lib), OK);
        assert_eq!(
            cuModuleGetFunction(&mut f, m, c"vadd".as_ptr()),
            CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU
        );
        assert_eq!(
            cuLibraryGetKernel(&mut k, lib, c"vadd".as_ptr()),
            CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU
        );
        assert_eq!(cuLibraryUnload(lib), OK);
    }
    destroy(ctx);
}
