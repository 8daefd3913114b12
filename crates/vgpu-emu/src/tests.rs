//! Tests through the exported C entry points, called the way the worker calls
//! them. The driver is process-global state, so tests that look at global
//! numbers (memory accounting, NVML's process list, primary context) or that
//! create contexts (which NVML's process list sees) take `SERIAL`.

use crate::cuda_exports::*;
use crate::nvml_exports::*;
use cuda_types::cuda::{CUcontext, CUdevice, CUdevice_attribute, CUdeviceptr, CUresult, CUuuid};
use cuda_types::nvml::*;
use parking_lot::Mutex;
use std::ffi::{c_char, c_uint, c_void, CStr};
use std::ptr::null_mut;

static SERIAL: Mutex<()> = Mutex::new(());

const GIB: usize = 1 << 30;
const OK: CUresult = CUresult::CUDA_SUCCESS;
const NV_OK: nvmlReturn_t = nvmlReturn_t::NVML_SUCCESS;

fn init() {
    // SAFETY: no pointers.
    assert_eq!(unsafe { cuInit(0) }, OK);
}

/// A fresh context, current on this thread.
fn new_ctx() -> CUcontext {
    init();
    let mut ctx = null_mut();
    // SAFETY: `ctx` is a local out-slot.
    assert_eq!(unsafe { cuCtxCreate_v2(&mut ctx, 0, 0) }, OK);
    ctx
}

fn destroy(ctx: CUcontext) {
    // SAFETY: no pointers besides the handle, which is validated.
    assert_eq!(unsafe { cuCtxDestroy_v2(ctx) }, OK);
}

fn mem_info() -> (usize, usize) {
    let (mut free, mut total) = (0, 0);
    // SAFETY: local out-slots.
    assert_eq!(unsafe { cuMemGetInfo_v2(&mut free, &mut total) }, OK);
    (free, total)
}

fn alloc(n: usize) -> CUdeviceptr {
    let mut p = 0;
    // SAFETY: local out-slot.
    assert_eq!(unsafe { cuMemAlloc_v2(&mut p, n) }, OK);
    p
}

fn cstr(buf: &[c_char]) -> String {
    // SAFETY: the library NUL-terminated the buffer.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_str()
        .unwrap()
        .to_owned()
}

// ---- initialization and devices ---------------------------------------------

/// Runs in a child process (see `not_initialized_before_cuinit`), where no
/// other test has called cuInit yet.
#[test]
fn pre_init_child() {
    if std::env::var_os("VGPU_EMU_PRE_INIT_CHILD").is_none() {
        return;
    }
    let mut n = 0;
    let mut dev = 0;
    let mut v = 0;
    // SAFETY: local out-slots.
    unsafe {
        assert_eq!(
            cuDeviceGetCount(&mut n),
            CUresult::CUDA_ERROR_NOT_INITIALIZED
        );
        assert_eq!(
            cuDeviceGet(&mut dev, 0),
            CUresult::CUDA_ERROR_NOT_INITIALIZED
        );
        // The version is answered before cuInit, as on the real driver,
        // and so are the error names.
        assert_eq!(cuDriverGetVersion(&mut v), OK);
        assert_eq!(v, 13050);
        let mut name = std::ptr::null();
        assert_eq!(
            cuGetErrorName(CUresult::CUDA_ERROR_NOT_INITIALIZED, &mut name),
            OK
        );
        assert_eq!(CStr::from_ptr(name), c"CUDA_ERROR_NOT_INITIALIZED");
        // NVML: its own version and the CUDA version before nvmlInit, the
        // driver's version and the devices only after.
        let mut buf = [0 as c_char; 32];
        let mut count = 0u32;
        assert_eq!(nvmlSystemGetNVMLVersion(buf.as_mut_ptr(), 32), NV_OK);
        assert_eq!(cstr(&buf), "13.590.48.01");
        let mut cv = 0;
        assert_eq!(nvmlSystemGetCudaDriverVersion(&mut cv), NV_OK);
        assert_eq!(cv, 13050);
        assert_eq!(
            nvmlSystemGetDriverVersion(buf.as_mut_ptr(), 32),
            nvmlReturn_t::NVML_ERROR_UNINITIALIZED
        );
        assert_eq!(
            nvmlDeviceGetCount_v2(&mut count),
            nvmlReturn_t::NVML_ERROR_UNINITIALIZED
        );
        assert_eq!(cuInit(1), CUresult::CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuInit(0), OK);
        assert_eq!(cuDeviceGetCount(&mut n), OK);
    }
    assert_eq!(n, 1);
}

#[test]
fn not_initialized_before_cuinit() {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--exact", "tests::pre_init_child", "--test-threads=1"])
        .env("VGPU_EMU_PRE_INIT_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 passed"), "{stdout}");
}

#[test]
fn device_queries() {
    init();
    let mut n = 0;
    let mut dev: CUdevice = -1;
    let mut name = [0 as c_char; 64];
    let mut total = 0usize;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: every pointer is a local of the right type and size.
    unsafe {
        assert_eq!(cuDeviceGetCount(&mut n), OK);
        assert_eq!(n, 1);
        assert_eq!(
            cuDeviceGetCount(null_mut()),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(cuDeviceGet(&mut dev, 0), OK);
        assert_eq!(dev, 0);
        assert_eq!(
            cuDeviceGet(&mut dev, 1),
            CUresult::CUDA_ERROR_INVALID_DEVICE
        );
        assert_eq!(
            cuDeviceGet(&mut dev, -1),
            CUresult::CUDA_ERROR_INVALID_DEVICE
        );
        assert_eq!(
            cuDeviceGet(null_mut(), 0),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );

        assert_eq!(cuDeviceGetName(name.as_mut_ptr(), 64, 0), OK);
        assert_eq!(cstr(&name), "NVIDIA H100 PCIe");
        assert_eq!(cuDeviceGetName(name.as_mut_ptr(), 7, 0), OK);
        assert_eq!(cstr(&name), "NVIDIA");
        assert_eq!(
            cuDeviceGetName(name.as_mut_ptr(), 64, 3),
            CUresult::CUDA_ERROR_INVALID_DEVICE
        );
        assert_eq!(
            cuDeviceGetName(null_mut(), 64, 0),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );

        assert_eq!(cuDeviceTotalMem_v2(&mut total, 0), OK);
        assert_eq!(total, 81559 * 1024 * 1024);
        assert_eq!(cuDeviceComputeCapability(&mut major, &mut minor, 0), OK);
        assert_eq!((major, minor), (9, 0));

        let mut bus = [0 as c_char; 32];
        assert_eq!(cuDeviceGetPCIBusId(bus.as_mut_ptr(), 32, 0), OK);
        assert_eq!(cstr(&bus), "0000:01:00.0");
        let mut found: CUdevice = -1;
        assert_eq!(cuDeviceGetByPCIBusId(&mut found, bus.as_ptr()), OK);
        assert_eq!(found, 0);
        assert_eq!(
            cuDeviceGetByPCIBusId(&mut found, c"0000:02:00.0".as_ptr()),
            CUresult::CUDA_ERROR_INVALID_DEVICE
        );

        let mut prop = std::mem::zeroed();
        assert_eq!(cuDeviceGetProperties(&mut prop, 0), OK);
        assert_eq!(prop.maxThreadsPerBlock, 1024);
        assert_eq!(prop.maxThreadsDim, [1024, 1024, 64]);
        assert_eq!(prop.SIMDWidth, 32);
    }
}

#[test]
fn every_attribute_is_answered() {
    init();
    let mut v = 0;
    for a in 1..CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX.0 {
        // SAFETY: local out-slot.
        let r = unsafe { cuDeviceGetAttribute(&mut v, CUdevice_attribute(a), 0) };
        assert_eq!(r, OK, "attribute {a}");
    }
    let get = |a: CUdevice_attribute| {
        let mut v = -7;
        // SAFETY: local out-slot.
        assert_eq!(unsafe { cuDeviceGetAttribute(&mut v, a, 0) }, OK);
        v
    };
    use CUdevice_attribute as A;
    assert_eq!(get(A::CU_DEVICE_ATTRIBUTE_WARP_SIZE), 32);
    assert_eq!(get(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT), 114);
    assert_eq!(get(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X), 2147483647);
    assert_eq!(get(A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE), 1755000);
    assert_eq!(get(A::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID), 1);
    assert_eq!(get(A::CU_DEVICE_ATTRIBUTE_GPU_PCI_DEVICE_ID), 0x233110DE);
    // SAFETY: local out-slot / deliberately null.
    unsafe {
        assert_eq!(
            cuDeviceGetAttribute(&mut v, A::CU_DEVICE_ATTRIBUTE_MAX, 0),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(
            cuDeviceGetAttribute(&mut v, A(0), 0),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(
            cuDeviceGetAttribute(&mut v, A::CU_DEVICE_ATTRIBUTE_WARP_SIZE, 1),
            CUresult::CUDA_ERROR_INVALID_DEVICE
        );
        assert_eq!(
            cuDeviceGetAttribute(null_mut(), A::CU_DEVICE_ATTRIBUTE_WARP_SIZE, 0),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
    }
}

#[test]
fn uuid_is_stable_and_matches_nvml() {
    let _g = SERIAL.lock();
    init();
    let mut a: CUuuid = CUuuid { bytes: [0; 16] };
    let mut b: CUuuid = CUuuid { bytes: [0; 16] };
    let mut s = [0 as c_char; 96];
    let mut dev: nvmlDevice_t = null_mut();
    // SAFETY: locals of the right types and sizes.
    unsafe {
        assert_eq!(cuDeviceGetUuid(&mut a, 0), OK);
        assert_eq!(cuDeviceGetUuid_v2(&mut b, 0), OK);
        assert_eq!(nvmlInit_v2(), NV_OK);
        assert_eq!(nvmlDeviceGetHandleByIndex_v2(0, &mut dev), NV_OK);
        assert_eq!(nvmlDeviceGetUUID(dev, s.as_mut_ptr(), 96), NV_OK);
        assert_eq!(nvmlShutdown(), NV_OK);
    }
    assert_eq!(a.bytes, b.bytes);
    assert!(a.bytes.iter().any(|&x| x != 0));
    let hex: String = a
        .bytes
        .iter()
        .map(|&x| format!("{:02x}", x as u8))
        .collect();
    let want = format!(
        "GPU-{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    );
    assert_eq!(cstr(&s), want);
}

// ---- contexts -----------------------------------------------------------------

fn current() -> CUcontext {
    let mut c = null_mut();
    // SAFETY: local out-slot.
    assert_eq!(unsafe { cuCtxGetCurrent(&mut c) }, OK);
    c
}

#[test]
fn context_stack() {
    let _g = SERIAL.lock();
    init();
    let a = new_ctx();
    assert_eq!(current(), a);
    let mut dev = -1;
    let (mut id_a, mut id_b) = (0u64, 0u64);
    let mut flags = 99;
    // SAFETY: locals and handles the library validates.
    unsafe {
        assert_eq!(cuCtxGetDevice(&mut dev), OK);
        assert_eq!(dev, 0);
        assert_eq!(cuCtxGetFlags(&mut flags), OK);
        assert_eq!(flags, 0);
        let b = new_ctx();
        assert_eq!(current(), b);
        assert_eq!(cuCtxGetId(a, &mut id_a), OK);
        assert_eq!(cuCtxGetId(null_mut(), &mut id_b), OK);
        assert_ne!(id_a, id_b);
        let mut popped = null_mut();
        assert_eq!(cuCtxPopCurrent_v2(&mut popped), OK);
        assert_eq!(popped, b);
        assert_eq!(current(), a);
        assert_eq!(cuCtxPushCurrent_v2(b), OK);
        assert_eq!(current(), b);
        // Destroying the current context pops it.
        destroy(b);
        assert_eq!(current(), a);
        assert_eq!(cuCtxDestroy_v2(b), CUresult::CUDA_ERROR_INVALID_CONTEXT);
        assert_eq!(cuCtxPushCurrent_v2(b), CUresult::CUDA_ERROR_INVALID_CONTEXT);
        let forged = 0xdead_beef_usize as CUcontext;
        assert_eq!(
            cuCtxPushCurrent_v2(forged),
            CUresult::CUDA_ERROR_INVALID_CONTEXT
        );
        assert_eq!(
            cuCtxSetCurrent(forged),
            CUresult::CUDA_ERROR_INVALID_CONTEXT
        );
        assert_eq!(
            cuCtxDestroy_v2(forged),
            CUresult::CUDA_ERROR_INVALID_CONTEXT
        );
        assert_eq!(
            cuCtxGetId(forged, &mut id_a),
            CUresult::CUDA_ERROR_INVALID_CONTEXT
        );
        assert_eq!(cuCtxSynchronize(), OK);
        assert_eq!(cuCtxSetCurrent(null_mut()), OK);
        assert_eq!(current(), null_mut());
        assert_eq!(cuCtxSynchronize(), CUresult::CUDA_ERROR_INVALID_CONTEXT);
        assert_eq!(
            cuCtxGetDevice(&mut dev),
            CUresult::CUDA_ERROR_INVALID_CONTEXT
        );
        assert_eq!(
            cuCtxPopCurrent_v2(null_mut()),
            CUresult::CUDA_ERROR_INVALID_CONTEXT
        );
        assert_eq!(cuCtxSetCurrent(a), OK);
        let mut v = 0;
        assert_eq!(cuCtxGetApiVersion(a, &mut v), OK);
        assert!(v > 0);
        destroy(a);
        assert_eq!(current(), null_mut());
    }
}

#[test]
fn context_creation_errors() {
    let _g = SERIAL.lock();
    init();
    let mut c = null_mut();
    // SAFETY: locals; the handles are validated.
    unsafe {
        assert_eq!(
            cuCtxCreate_v2(null_mut(), 0, 0),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(
            cuCtxCreate_v2(&mut c, 0, 5),
            CUresult::CUDA_ERROR_INVALID_DEVICE
        );
        // Two scheduling policies at once.
        assert_eq!(
            cuCtxCreate_v2(&mut c, 3, 0),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(
            cuCtxCreate_v2(&mut c, 0x1000, 0),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(cuCtxCreate_v3(&mut c, null_mut(), 0, 4, 0), OK);
        let mut flags = 0;
        assert_eq!(cuCtxGetFlags(&mut flags), OK);
        assert_eq!(flags, 4);
        destroy(c);
        assert_eq!(cuCtxCreate_v4(&mut c, null_mut(), 0, 0), OK);
        destroy(c);
    }
}

#[test]
fn destroyed_elsewhere_is_reported() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let handle = ctx as usize;
    // SAFETY: no pointers.
    unsafe { assert_eq!(cuCtxPopCurrent_v2(null_mut()), OK) };
    let (to_worker, from_main) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        // SAFETY: the handle is validated by the library.
        assert_eq!(unsafe { cuCtxSetCurrent(handle as CUcontext) }, OK);
        from_main.recv().unwrap();
        // SAFETY: no pointers.
        unsafe { cuCtxSynchronize() }
    });
    // Give the worker time to make it current, then destroy it under it.
    std::thread::sleep(std::time::Duration::from_millis(50));
    destroy(ctx);
    to_worker.send(()).unwrap();
    assert_eq!(
        worker.join().unwrap(),
        CUresult::CUDA_ERROR_CONTEXT_IS_DESTROYED
    );
}

#[test]
fn primary_context_refcounts_and_reset() {
    let _g = SERIAL.lock();
    init();
    let (mut flags, mut active) = (99, 99);
    let (mut p1, mut p2) = (null_mut(), null_mut());
    // SAFETY: locals; handles are validated.
    unsafe {
        assert_eq!(cuDevicePrimaryCtxGetState(0, &mut flags, &mut active), OK);
        assert_eq!(active, 0);
        assert_eq!(cuDevicePrimaryCtxRetain(&mut p1, 0), OK);
        assert_eq!(cuDevicePrimaryCtxRetain(&mut p2, 0), OK);
        assert_eq!(p1, p2);
        // Retaining does not make it current.
        assert_ne!(current(), p1);
        assert_eq!(cuDevicePrimaryCtxGetState(0, &mut flags, &mut active), OK);
        assert_eq!(active, 1);
        assert_eq!(cuDevicePrimaryCtxSetFlags_v2(0, 4), OK);
        assert_eq!(cuDevicePrimaryCtxGetState(0, &mut flags, &mut active), OK);
        assert_eq!(flags, 4);
        // The primary context is not cuCtxDestroy's to destroy.
        assert_eq!(cuCtxDestroy_v2(p1), CUresult::CUDA_ERROR_INVALID_CONTEXT);
        assert_eq!(cuDevicePrimaryCtxRelease_v2(0), OK);
        assert_eq!(cuDevicePrimaryCtxGetState(0, &mut flags, &mut active), OK);
        assert_eq!(active, 1);
        assert_eq!(cuDevicePrimaryCtxRelease_v2(0), OK);
        assert_eq!(cuDevicePrimaryCtxGetState(0, &mut flags, &mut active), OK);
        assert_eq!(active, 0);
        assert_eq!(
            cuDevicePrimaryCtxRelease_v2(0),
            CUresult::CUDA_ERROR_INVALID_CONTEXT
        );
        assert_eq!(
            cuDevicePrimaryCtxRetain(&mut p1, 1),
            CUresult::CUDA_ERROR_INVALID_DEVICE
        );

        // Reset frees what the primary context allocated.
        let (free0, _) = {
            let c = new_ctx();
            let r = mem_info();
            destroy(c);
            r
        };
        assert_eq!(cuDevicePrimaryCtxRetain(&mut p1, 0), OK);
        assert_eq!(cuCtxSetCurrent(p1), OK);
        let p = alloc(64 << 20);
        assert_eq!(mem_info().0, free0 - (64 << 20));
        assert_eq!(cuDevicePrimaryCtxReset_v2(0), OK);
        assert_eq!(cuCtxSynchronize(), CUresult::CUDA_ERROR_INVALID_CONTEXT);
        assert_eq!(cuDevicePrimaryCtxRetain(&mut p2, 0), OK);
        assert_eq!(p1, p2);
        assert_eq!(mem_info().0, free0);
        assert_eq!(cuMemFree_v2(p), CUresult::CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuDevicePrimaryCtxRelease_v2(0), OK);
        assert_eq!(cuCtxSetCurrent(null_mut()), OK);
    }
}

// ---- memory -------------------------------------------------------------------

#[test]
fn huge_allocation_is_lazy() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let (free0, total) = mem_info();
    assert_eq!(total, 81559 << 20);
    assert_eq!(free0, (81559 - 500) << 20);
    // 64 GiB on a machine with far less RAM: only touched pages are real.
    let p = alloc(64 * GIB);
    assert_eq!(mem_info().0, free0 - 64 * GIB);
    let pattern = [0xA5u8; 16];
    let mut back = [0u8; 16];
    // SAFETY: local buffers of the sizes passed.
    unsafe {
        let end = p + (64 * GIB - 16) as u64;
        assert_eq!(cuMemcpyHtoD_v2(end, pattern.as_ptr().cast(), 16), OK);
        assert_eq!(cuMemcpyDtoH_v2(back.as_mut_ptr().cast(), end, 16), OK);
        assert_eq!(cuMemFree_v2(p), OK);
        assert_eq!(cuMemFree_v2(p), CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    assert_eq!(back, pattern);
    assert_eq!(mem_info().0, free0);
    destroy(ctx);
}

#[test]
fn out_of_memory_past_capacity() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let (free0, _) = mem_info();
    let mut p = 0;
    // SAFETY: local out-slot.
    unsafe {
        assert_eq!(
            cuMemAlloc_v2(&mut p, free0 + 1),
            CUresult::CUDA_ERROR_OUT_OF_MEMORY
        );
        let a = alloc(60 * GIB);
        assert_eq!(
            cuMemAlloc_v2(&mut p, 60 * GIB),
            CUresult::CUDA_ERROR_OUT_OF_MEMORY
        );
        assert_eq!(cuMemAlloc_v2(&mut p, 0), CUresult::CUDA_ERROR_INVALID_VALUE);
        assert_eq!(
            cuMemAlloc_v2(null_mut(), 16),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(cuMemFree_v2(a), OK);
    }
    // Destroying a context returns what it still held.
    alloc(GIB);
    destroy(ctx);
    let c = new_ctx();
    assert_eq!(mem_info().0, free0);
    destroy(c);
}

#[test]
fn copies_are_byte_exact_and_checked() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let n = 1 << 20;
    let src: Vec<u8> = (0..n).map(|i| (i * 31 + 7) as u8).collect();
    let mut dst = vec![0u8; n];
    let a = alloc(n);
    let b = alloc(n);
    // SAFETY: host buffers are `n` bytes; device ranges are validated.
    unsafe {
        assert_eq!(cuMemcpyHtoD_v2(a, src.as_ptr().cast(), n), OK);
        assert_eq!(cuMemcpyDtoD_v2(b, a, n), OK);
        assert_eq!(cuMemcpyDtoH_v2(dst.as_mut_ptr().cast(), b, n), OK);
        assert_eq!(dst, src);

        // Unified and async forms.
        dst.fill(0);
        assert_eq!(cuMemcpy(a, src.as_ptr() as CUdeviceptr, n), OK);
        assert_eq!(
            cuMemcpyAsync(dst.as_mut_ptr() as CUdeviceptr, a, n, null_mut()),
            OK
        );
        assert_eq!(dst, src);
        assert_eq!(
            cuMemcpyHtoDAsync_v2(a, src.as_ptr().cast(), n, null_mut()),
            OK
        );
        assert_eq!(
            cuMemcpyHtoDAsync_v2(a, src.as_ptr().cast(), n, 0x1234 as _),
            CUresult::CUDA_ERROR_INVALID_HANDLE
        );

        // Out of range: one byte past the end, an unknown address, null.
        assert_eq!(
            cuMemcpyHtoD_v2(a + 8, src.as_ptr().cast(), n),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(
            cuMemcpyDtoH_v2(dst.as_mut_ptr().cast(), a + n as u64, 1),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(
            cuMemcpyDtoD_v2(b, a + 1, n),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(
            cuMemcpyHtoD_v2(0x10, src.as_ptr().cast(), 4),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(cuMemcpy(a, 0, 4), CUresult::CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuMemcpy(a + 1, a, n), CUresult::CUDA_ERROR_INVALID_VALUE);

        // Address ranges, from an interior pointer.
        let (mut base, mut size) = (0, 0);
        assert_eq!(cuMemGetAddressRange_v2(&mut base, &mut size, a + 100), OK);
        assert_eq!((base, size), (a, n));
        assert_eq!(
            cuMemGetAddressRange_v2(&mut base, &mut size, 0x10),
            CUresult::CUDA_ERROR_NOT_FOUND
        );

        assert_eq!(cuMemFree_v2(a + 1), CUresult::CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuMemFree_v2(a), OK);
        assert_eq!(cuMemFree_v2(b), OK);
        assert_eq!(
            cuMemcpyDtoH_v2(dst.as_mut_ptr().cast(), a, 1),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
    }
    destroy(ctx);
}

#[test]
fn memsets() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let a = alloc(4096);
    let mut back = [0u8; 4096];
    let read = |back: &mut [u8; 4096]| {
        // SAFETY: `back` is 4096 bytes.
        let r = unsafe { cuMemcpyDtoH_v2(back.as_mut_ptr().cast(), a, 4096) };
        assert_eq!(r, OK);
    };
    // SAFETY: device ranges are validated by the library.
    unsafe {
        assert_eq!(cuMemsetD8_v2(a, 0xAB, 4096), OK);
        read(&mut back);
        assert!(back.iter().all(|&b| b == 0xAB));
        assert_eq!(cuMemsetD16_v2(a + 2, 0x1234, 3), OK);
        read(&mut back);
        assert_eq!(
            &back[..10],
            &[0xAB, 0xAB, 0x34, 0x12, 0x34, 0x12, 0x34, 0x12, 0xAB, 0xAB]
        );
        assert_eq!(cuMemsetD32_v2(a, 0xDEADBEEF, 1024), OK);
        read(&mut back);
        assert!(back.chunks(4).all(|c| c == 0xDEADBEEFu32.to_le_bytes()));
        assert_eq!(cuMemsetD32Async(a + 4, 7, 2, null_mut()), OK);
        read(&mut back);
        assert_eq!(&back[4..12], &[7, 0, 0, 0, 7, 0, 0, 0]);
        assert_eq!(
            cuMemsetD32_v2(a + 2, 0, 1),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(
            cuMemsetD16_v2(a + 1, 0, 1),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(
            cuMemsetD32_v2(a, 0, 1025),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(
            cuMemsetD8_v2(a + 4096, 0, 1),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(cuMemFree_v2(a), OK);
    }
    destroy(ctx);
}

#[test]
fn pinned_host_memory() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let mut h: *mut c_void = null_mut();
    let mut h2: *mut c_void = null_mut();
    // SAFETY: local out-slots; the pinned buffer is 4096 bytes.
    unsafe {
        assert_eq!(cuMemAllocHost_v2(&mut h, 4096), OK);
        assert_eq!(cuMemHostAlloc(&mut h2, 100, 0x2), OK);
        assert_eq!(
            cuMemHostAlloc(&mut h2, 100, 0x80),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
        std::ptr::write_bytes(h.cast::<u8>(), 0x5A, 4096);
        let d = alloc(4096);
        assert_eq!(cuMemcpyHtoD_v2(d, h, 4096), OK);
        // With unified addressing, a pinned host pointer is a device address.
        assert_eq!(cuMemsetD8_v2(h as CUdeviceptr, 1, 4096), OK);
        assert_eq!(cuMemcpyDtoH_v2(h, d, 4096), OK);
        assert_eq!(*h.cast::<u8>().add(4095), 0x5A);
        assert_eq!(
            cuMemFree_v2(h as CUdeviceptr),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(
            cuMemFreeHost(d as *mut c_void),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(cuMemFreeHost(h), OK);
        assert_eq!(cuMemFreeHost(h), CUresult::CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuMemFree_v2(d), OK);
    }
    destroy(ctx);
}

#[test]
fn memory_needs_a_context() {
    init();
    let worker = std::thread::spawn(|| {
        let (mut p, mut f, mut t) = (0, 0, 0);
        // SAFETY: local out-slots.
        unsafe { (cuMemAlloc_v2(&mut p, 16), cuMemGetInfo_v2(&mut f, &mut t)) }
    });
    let (a, b) = worker.join().unwrap();
    assert_eq!(a, CUresult::CUDA_ERROR_INVALID_CONTEXT);
    assert_eq!(b, CUresult::CUDA_ERROR_INVALID_CONTEXT);
}

// ---- errors and stubs -------------------------------------------------------

#[test]
fn error_strings_and_stubs() {
    let mut p: *const c_char = std::ptr::null();
    // SAFETY: local out-slot; returned strings are static.
    unsafe {
        assert_eq!(
            cuGetErrorName(CUresult::CUDA_ERROR_INVALID_CONTEXT, &mut p),
            OK
        );
        assert_eq!(
            CStr::from_ptr(p).to_str().unwrap(),
            "CUDA_ERROR_INVALID_CONTEXT"
        );
        assert_eq!(cuGetErrorString(CUresult::CUDA_ERROR_NO_DEVICE, &mut p), OK);
        assert_eq!(
            CStr::from_ptr(p).to_str().unwrap(),
            "no CUDA-capable device is detected"
        );
        assert_eq!(
            cuGetErrorName(CUresult(77777), &mut p),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(
            CStr::from_ptr(nvmlErrorString(nvmlReturn_t::NVML_ERROR_INSUFFICIENT_SIZE))
                .to_str()
                .unwrap(),
            "Insufficient Size"
        );
        // Unimplemented entry points exist and say so.
        assert_eq!(
            cuDeviceGetByPCIBusId(null_mut(), c"x".as_ptr()),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(
            cuArrayCreate_v2(null_mut(), std::ptr::null()),
            CUresult::CUDA_ERROR_NOT_SUPPORTED
        );
        let mut speed = 0;
        assert_eq!(
            nvmlDeviceGetFanSpeed(null_mut(), &mut speed),
            nvmlReturn_t::NVML_ERROR_NOT_SUPPORTED
        );
    }
    assert!(exported_cuda_symbol(b"cuInit").is_some());
    assert!(exported_nvml_symbol(b"nvmlInit_v2").is_some());
    assert!(exported_cuda_symbol(b"cuNoSuchThing").is_none());
    assert!(crate::cuda_exports::IMPLEMENTED.contains(&"cuCtxCreate_v3"));
}

// ---- NVML ---------------------------------------------------------------------

fn nvml_device() -> nvmlDevice_t {
    let mut d = null_mut();
    // SAFETY: local out-slot.
    assert_eq!(unsafe { nvmlDeviceGetHandleByIndex_v2(0, &mut d) }, NV_OK);
    d
}

#[test]
fn nvml_inventory_and_telemetry() {
    let _g = SERIAL.lock();
    let mut n = 0u32;
    let mut buf = [0 as c_char; 96];
    // SAFETY: locals of the right types and sizes.
    unsafe {
        assert_eq!(
            nvmlDeviceGetCount_v2(&mut n),
            nvmlReturn_t::NVML_ERROR_UNINITIALIZED
        );
        assert_eq!(nvmlInit_v2(), NV_OK);
        assert_eq!(nvmlDeviceGetCount_v2(&mut n), NV_OK);
        assert_eq!(n, 1);
        let d = nvml_device();
        let mut other = null_mut();
        assert_eq!(
            nvmlDeviceGetHandleByIndex_v2(1, &mut other),
            nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT
        );
        let mut idx = 9;
        assert_eq!(
            nvmlDeviceGetIndex(0x1234 as nvmlDevice_t, &mut idx),
            nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT
        );

        assert_eq!(nvmlSystemGetDriverVersion(buf.as_mut_ptr(), 80), NV_OK);
        assert_eq!(cstr(&buf), "590.48.01");
        assert_eq!(nvmlSystemGetNVMLVersion(buf.as_mut_ptr(), 80), NV_OK);
        assert_eq!(cstr(&buf), "13.590.48.01");
        let mut cv = 0;
        assert_eq!(nvmlSystemGetCudaDriverVersion_v2(&mut cv), NV_OK);
        assert_eq!(cv, 13050);

        assert_eq!(nvmlDeviceGetName(d, buf.as_mut_ptr(), 96), NV_OK);
        assert_eq!(cstr(&buf), "NVIDIA H100 PCIe");
        assert_eq!(
            nvmlDeviceGetName(d, buf.as_mut_ptr(), 5),
            nvmlReturn_t::NVML_ERROR_INSUFFICIENT_SIZE
        );

        assert_eq!(nvmlDeviceGetUUID(d, buf.as_mut_ptr(), 96), NV_OK);
        let uuid = cstr(&buf);
        assert_eq!(uuid.len(), 40);
        let mut found = null_mut();
        let c_uuid = std::ffi::CString::new(uuid).unwrap();
        assert_eq!(
            nvmlDeviceGetHandleByUUID(c_uuid.as_ptr(), &mut found),
            NV_OK
        );
        assert_eq!(found, d);
        assert_eq!(
            nvmlDeviceGetHandleByUUID(
                c"GPU-00000000-0000-0000-0000-000000000000".as_ptr(),
                &mut found
            ),
            nvmlReturn_t::NVML_ERROR_NOT_FOUND
        );
        assert_eq!(nvmlDeviceGetSerial(d, buf.as_mut_ptr(), 30), NV_OK);
        let serial = std::ffi::CString::new(cstr(&buf)).unwrap();
        assert_eq!(serial.as_bytes().len(), 13);
        assert_eq!(
            nvmlDeviceGetHandleBySerial(serial.as_ptr(), &mut found),
            NV_OK
        );

        let mut pci: nvmlPciInfo_t = std::mem::zeroed();
        assert_eq!(nvmlDeviceGetPciInfo_v3(d, &mut pci), NV_OK);
        assert_eq!(cstr(&pci.busId), "00000000:01:00.0");
        assert_eq!(cstr(&pci.busIdLegacy), "0000:01:00.0");
        assert_eq!(pci.pciDeviceId, 0x233110DE);
        assert_eq!(pci.pciSubSystemId, 0x16C110DE);
        assert_eq!(
            nvmlDeviceGetHandleByPciBusId_v2(pci.busId.as_ptr(), &mut found),
            NV_OK
        );

        let (mut major, mut minor) = (0, 0);
        assert_eq!(
            nvmlDeviceGetCudaComputeCapability(d, &mut major, &mut minor),
            NV_OK
        );
        assert_eq!((major, minor), (9, 0));
        let mut arch = 0;
        assert_eq!(nvmlDeviceGetArchitecture(d, &mut arch), NV_OK);
        assert_eq!(arch, NVML_DEVICE_ARCH_HOPPER);

        let mut m1: nvmlMemory_t = std::mem::zeroed();
        assert_eq!(nvmlDeviceGetMemoryInfo(d, &mut m1), NV_OK);
        assert_eq!(m1.total, 81559 << 20);
        assert_eq!(m1.free + m1.used, m1.total);
        let mut m2: nvmlMemory_v2_t = std::mem::zeroed();
        assert_eq!(
            nvmlDeviceGetMemoryInfo_v2(d, &mut m2),
            nvmlReturn_t::NVML_ERROR_ARGUMENT_VERSION_MISMATCH
        );
        m2.version = std::mem::size_of::<nvmlMemory_v2_t>() as c_uint | 2 << 24;
        assert_eq!(nvmlDeviceGetMemoryInfo_v2(d, &mut m2), NV_OK);
        assert_eq!(m2.reserved, 500 << 20);
        assert_eq!(m2.free + m2.used + m2.reserved, m2.total);

        let mut t = 0;
        assert_eq!(
            nvmlDeviceGetTemperature(d, nvmlTemperatureSensors_t::NVML_TEMPERATURE_GPU, &mut t),
            NV_OK
        );
        assert!((20..=90).contains(&t), "{t}");
        let mut tv = nvmlTemperature_t {
            version: std::mem::size_of::<nvmlTemperature_t>() as c_uint | 1 << 24,
            sensorType: nvmlTemperatureSensors_t::NVML_TEMPERATURE_GPU,
            temperature: 0,
        };
        assert_eq!(nvmlDeviceGetTemperatureV(d, &mut tv), NV_OK);
        assert!((20..=90).contains(&tv.temperature));

        let (mut p, mut lim, mut lo, mut hi) = (0, 0, 0, 0);
        assert_eq!(nvmlDeviceGetPowerUsage(d, &mut p), NV_OK);
        assert!((20_000..=350_000).contains(&p), "{p}");
        assert_eq!(nvmlDeviceGetEnforcedPowerLimit(d, &mut lim), NV_OK);
        assert_eq!(lim, 350_000);
        assert_eq!(
            nvmlDeviceGetPowerManagementLimitConstraints(d, &mut lo, &mut hi),
            NV_OK
        );
        assert_eq!((lo, hi), (200_000, 350_000));

        let mut u: nvmlUtilization_t = std::mem::zeroed();
        assert_eq!(nvmlDeviceGetUtilizationRates(d, &mut u), NV_OK);
        // Kernels other tests of this process ran in the last second count.
        assert!(u.gpu <= 100, "{}", u.gpu);

        let mut mhz = 0;
        assert_eq!(
            nvmlDeviceGetMaxClockInfo(d, nvmlClockType_t::NVML_CLOCK_SM, &mut mhz),
            NV_OK
        );
        assert_eq!(mhz, 1755);
        assert_eq!(
            nvmlDeviceGetClockInfo(d, nvmlClockType_t::NVML_CLOCK_MEM, &mut mhz),
            NV_OK
        );
        assert_eq!(mhz, 1593);
        assert_eq!(
            nvmlDeviceGetClock(
                d,
                nvmlClockType_t::NVML_CLOCK_GRAPHICS,
                nvmlClockId_t::NVML_CLOCK_ID_APP_CLOCK_DEFAULT,
                &mut mhz
            ),
            NV_OK
        );
        assert_eq!(mhz, 1755);

        let (mut cur, mut pend) = (9, 9);
        assert_eq!(nvmlDeviceGetMigMode(d, &mut cur, &mut pend), NV_OK);
        assert_eq!((cur, pend), (0, 0));
        let mut speed = 0;
        assert_eq!(
            nvmlDeviceGetFanSpeed(d, &mut speed),
            nvmlReturn_t::NVML_ERROR_NOT_SUPPORTED
        );
        let mut e1 = nvmlEnableState_t::NVML_FEATURE_DISABLED;
        let mut e2 = nvmlEnableState_t::NVML_FEATURE_DISABLED;
        assert_eq!(nvmlDeviceGetEccMode(d, &mut e1, &mut e2), NV_OK);
        assert_eq!(e1, nvmlEnableState_t::NVML_FEATURE_ENABLED);
        assert_eq!(nvmlShutdown(), NV_OK);
        assert_eq!(
            nvmlDeviceGetCount_v2(&mut n),
            nvmlReturn_t::NVML_ERROR_UNINITIALIZED
        );
        assert_eq!(nvmlShutdown(), nvmlReturn_t::NVML_ERROR_UNINITIALIZED);
    }
}

#[test]
fn nvml_process_list_protocol() {
    let _g = SERIAL.lock();
    // SAFETY: no pointers.
    assert_eq!(unsafe { nvmlInit_v2() }, NV_OK);
    let d = nvml_device();
    let mut count = 0u32;
    let mut infos = [nvmlProcessInfo_t {
        pid: 0,
        usedGpuMemory: 0,
        gpuInstanceId: 0,
        computeInstanceId: 0,
    }; 4];
    // SAFETY: `infos` holds `count` entries at every call.
    unsafe {
        assert_eq!(
            nvmlDeviceGetComputeRunningProcesses_v3(d, &mut count, null_mut()),
            NV_OK
        );
        assert_eq!(count, 0);

        let ctx = new_ctx();
        let a = alloc(8 << 20);
        count = 0;
        assert_eq!(
            nvmlDeviceGetComputeRunningProcesses_v3(d, &mut count, null_mut()),
            nvmlReturn_t::NVML_ERROR_INSUFFICIENT_SIZE
        );
        assert_eq!(count, 1);
        count = 4;
        assert_eq!(
            nvmlDeviceGetComputeRunningProcesses_v3(d, &mut count, infos.as_mut_ptr()),
            NV_OK
        );
        assert_eq!(count, 1);
        assert_eq!(infos[0].pid, std::process::id());
        assert_eq!(infos[0].usedGpuMemory, 8 << 20);
        assert_eq!(infos[0].gpuInstanceId, u32::MAX);
        assert_eq!(
            nvmlDeviceGetComputeRunningProcesses_v3(d, null_mut(), infos.as_mut_ptr()),
            nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT
        );
        count = 0;
        assert_eq!(
            nvmlDeviceGetGraphicsRunningProcesses_v3(d, &mut count, null_mut()),
            NV_OK
        );
        assert_eq!(count, 0);

        assert_eq!(cuMemFree_v2(a), OK);
        destroy(ctx);
        count = 4;
        assert_eq!(
            nvmlDeviceGetComputeRunningProcesses(d, &mut count, null_mut()),
            NV_OK
        );
        assert_eq!(count, 0);
        assert_eq!(nvmlShutdown(), NV_OK);
    }
}

/// The built cdylib exports every name of both headers. Skipped (with a note)
/// when the .so or `nm` is not at hand, e.g. under a custom test runner.
#[test]
fn cdylib_exports_every_symbol() {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test binary> -> target/<profile>/libvgpu_emu.so
    let Some(so) = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("libvgpu_emu.so"))
        .filter(|p| p.exists())
    else {
        eprintln!("libvgpu_emu.so not built next to the test binary; skipping");
        return;
    };
    let Ok(out) = std::process::Command::new("nm")
        .arg("-D")
        .arg("--defined-only")
        .arg(&so)
        .output()
    else {
        eprintln!("nm not available; skipping");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let names: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    let missing: Vec<&&str> = crate::cuda_exports::IMPLEMENTED
        .iter()
        .chain(crate::cuda_exports::NOT_SUPPORTED)
        .chain(crate::nvml_exports::IMPLEMENTED)
        .chain(crate::nvml_exports::NOT_SUPPORTED)
        .filter(|n| !names.contains(**n))
        .collect();
    assert!(missing.is_empty(), "not exported: {missing:?}");
}

mod graphs;
mod kernels;
mod limits;
mod runtime;
