//! The runtime path: streams, events, async and 2D/3D copies, VMM, memory
//! pools, registered host memory and pointer attributes, through the
//! exported entry points.

use super::{alloc, destroy, mem_info, new_ctx, OK, SERIAL};
use crate::cuda_exports::*;
use cuda_types::cuda::*;
use std::ffi::c_void;
use std::ptr::{null, null_mut};

const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;
const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;
const INVALID_HANDLE: CUresult = CUresult::CUDA_ERROR_INVALID_HANDLE;
const LEGACY: CUstream = 1 as CUstream;
const PER_THREAD: CUstream = 2 as CUstream;

fn stream() -> CUstream {
    let mut s = null_mut();
    // SAFETY: local out-slot.
    assert_eq!(unsafe { cuStreamCreate(&mut s, 0) }, OK);
    s
}

fn event(flags: u32) -> CUevent {
    let mut e = null_mut();
    // SAFETY: local out-slot.
    assert_eq!(unsafe { cuEventCreate(&mut e, flags) }, OK);
    e
}

fn htod(dst: CUdeviceptr, src: &[u8]) -> CUresult {
    // SAFETY: `src` is readable for its length.
    unsafe { cuMemcpyHtoD_v2(dst, src.as_ptr().cast(), src.len()) }
}

fn dtoh(src: CUdeviceptr, n: usize) -> Result<Vec<u8>, CUresult> {
    let mut v = vec![0u8; n];
    // SAFETY: `v` is writable for `n` bytes.
    unsafe { cuMemcpyDtoH_v2(v.as_mut_ptr().cast(), src, n) }.ok()?;
    Ok(v)
}

// ---- streams ------------------------------------------------------------------

#[test]
fn streams_have_real_bookkeeping() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let s = stream();
    let (mut prio, mut flags, mut id, mut id2, mut dev) = (7, 7u32, 0u64, 0u64, -1);
    let mut c = null_mut();
    let (mut least, mut greatest) = (9, 9);
    // SAFETY: local out-slots; handles are validated by the library.
    unsafe {
        assert_eq!(cuCtxGetStreamPriorityRange(&mut least, &mut greatest), OK);
        assert_eq!((least, greatest), (0, -5));
        assert_eq!(cuStreamGetPriority(s, &mut prio), OK);
        assert_eq!(prio, 0);
        assert_eq!(cuStreamGetFlags(s, &mut flags), OK);
        assert_eq!(flags, 0);
        assert_eq!(cuStreamGetCtx(s, &mut c), OK);
        assert_eq!(c, ctx);
        assert_eq!(cuStreamGetDevice(s, &mut dev), OK);
        assert_eq!(dev, 0);
        assert_eq!(cuStreamQuery(s), OK);
        assert_eq!(cuStreamSynchronize(s), OK);

        // Priorities are clamped into the range; flags are kept.
        let mut hi = null_mut();
        assert_eq!(cuStreamCreateWithPriority(&mut hi, 1, -100), OK);
        assert_eq!(cuStreamGetPriority(hi, &mut prio), OK);
        assert_eq!(prio, -5);
        assert_eq!(cuStreamGetFlags(hi, &mut flags), OK);
        assert_eq!(flags, 1);
        assert_eq!(cuStreamGetId(s, &mut id), OK);
        assert_eq!(cuStreamGetId(hi, &mut id2), OK);
        assert_ne!(id, id2);
        assert_eq!(cuStreamCreateWithPriority(&mut hi, 4, 0), INVALID_VALUE);
        assert_eq!(cuStreamCreate(null_mut(), 0), INVALID_VALUE);

        // The built-in streams work everywhere and cannot be destroyed.
        for b in [null_mut(), LEGACY, PER_THREAD] {
            assert_eq!(cuStreamSynchronize(b), OK);
            assert_eq!(cuStreamSynchronize_ptsz(b), OK);
            assert_eq!(cuStreamQuery(b), OK);
            assert_eq!(cuStreamGetCtx(b, &mut c), OK);
            assert_eq!(c, ctx);
            assert_eq!(cuStreamDestroy_v2(b), INVALID_HANDLE);
        }
        let mut green = 1 as CUgreenCtx;
        assert_eq!(cuStreamGetCtx_v2(s, &mut c, &mut green), OK);
        assert!(green.is_null());

        // Forged and destroyed handles are invalid handles.
        let forged = 0xdead_bee0 as CUstream;
        assert_eq!(cuStreamSynchronize(forged), INVALID_HANDLE);
        assert_eq!(cuStreamDestroy_v2(s), OK);
        assert_eq!(cuStreamQuery(s), INVALID_HANDLE);
        assert_eq!(cuStreamDestroy_v2(s), INVALID_HANDLE);
        assert_eq!(cuMemsetD8Async(0, 0, 0, s), INVALID_HANDLE);

        // A context's streams go with it.
        destroy(ctx);
        assert_eq!(cuStreamQuery(hi), INVALID_HANDLE);
    }
}

// ---- events -------------------------------------------------------------------

#[test]
fn events_time_and_order() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let s = stream();
    let (a, b) = (event(0), event(0));
    let untimed = event(2);
    let mut ms = -1.0f32;
    // SAFETY: local out-slots; handles are validated by the library.
    unsafe {
        // Not yet recorded: complete, but no time to measure.
        assert_eq!(cuEventQuery(a), OK);
        assert_eq!(cuEventElapsedTime(&mut ms, a, b), INVALID_HANDLE);
        assert_eq!(cuEventRecord(a, s), OK);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(cuEventRecordWithFlags(b, LEGACY, 0), OK);
        assert_eq!(cuEventSynchronize(b), OK);
        assert_eq!(cuEventQuery(b), OK);
        assert_eq!(cuEventElapsedTime(&mut ms, a, b), OK);
        assert!(ms >= 4.0, "{ms}");
        let mut back = 0.0f32;
        assert_eq!(cuEventElapsedTime_v2(&mut back, b, a), OK);
        assert!(back <= -4.0, "{back}");
        assert_eq!(cuEventElapsedTime(&mut ms, a, a), OK);
        assert_eq!(ms, 0.0);

        assert_eq!(cuEventRecord_ptsz(untimed, PER_THREAD), OK);
        assert_eq!(cuEventElapsedTime(&mut ms, a, untimed), INVALID_HANDLE);
        assert_eq!(cuEventElapsedTime(null_mut(), a, b), INVALID_VALUE);
        assert_eq!(cuStreamWaitEvent(s, b, 0), OK);
        assert_eq!(cuStreamWaitEvent(null_mut(), b, 0), OK);
        assert_eq!(cuStreamWaitEvent(s, b, 7), INVALID_VALUE);

        // INTERPROCESS requires DISABLE_TIMING; unknown flags are refused.
        let mut e = null_mut();
        assert_eq!(cuEventCreate(&mut e, 4), INVALID_VALUE);
        assert_eq!(cuEventCreate(&mut e, 0x40), INVALID_VALUE);
        assert_eq!(cuEventCreate(&mut e, 6), OK);

        assert_eq!(cuEventDestroy_v2(a), OK);
        assert_eq!(cuEventQuery(a), INVALID_HANDLE);
        assert_eq!(cuEventRecord(a, s), INVALID_HANDLE);
        assert_eq!(cuStreamWaitEvent(s, a, 0), INVALID_HANDLE);
        assert_eq!(cuEventDestroy_v2(a), INVALID_HANDLE);
        destroy(ctx);
        assert_eq!(cuEventQuery(b), INVALID_HANDLE);
    }
}

// ---- handles ------------------------------------------------------------------

/// Every kind's handles come from one registry type minting from one
/// counter, so a live handle of one kind is never a handle of another: each
/// call refuses it with its own kind's error.
#[test]
fn handles_of_one_kind_are_not_another() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let s = stream();
    let e = event(0);
    let mut pool = null_mut();
    let mut m = null_mut();
    let mut prio = 0;
    // SAFETY: local out-slots; every handle is validated by the library.
    unsafe {
        assert_eq!(cuDeviceGetDefaultMemPool(&mut pool, 0), OK);
        assert_eq!(cuEventQuery(s as CUevent), INVALID_HANDLE);
        assert_eq!(cuEventQuery(ctx as CUevent), INVALID_HANDLE);
        assert_eq!(cuStreamQuery(e as CUstream), INVALID_HANDLE);
        assert_eq!(
            cuStreamGetPriority(ctx as CUstream, &mut prio),
            INVALID_HANDLE
        );
        assert_eq!(
            cuCtxPushCurrent_v2(s as CUcontext),
            CUresult::CUDA_ERROR_INVALID_CONTEXT
        );
        assert_eq!(cuMemPoolTrimTo(e as CUmemoryPool, 0), INVALID_VALUE);
        assert_eq!(cuModuleUnload(s as CUmodule), INVALID_HANDLE);
        assert_eq!(cuModuleGetLoadingMode(null_mut()), INVALID_VALUE);
        assert_eq!(
            cuLibraryGetModule(&mut m, pool as CUlibrary),
            INVALID_HANDLE
        );
        assert_eq!(cuLinkDestroy(e as CUlinkState), INVALID_HANDLE);
        // The right kinds still answer.
        assert_eq!(cuStreamQuery(s), OK);
        assert_eq!(cuEventQuery(e), OK);
        assert_eq!(cuMemPoolTrimTo(pool, 0), OK);
    }
    destroy(ctx);
}

// ---- async, 2D, 3D and peer copies -----------------------------------------------

#[test]
fn async_copies_round_trip_in_stream_order() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let s = stream();
    let (d, e) = (alloc(4096), alloc(4096));
    let src: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    let mut back = vec![0u8; 4096];
    // SAFETY: host buffers are live for their lengths.
    unsafe {
        assert_eq!(cuMemcpyHtoDAsync_v2(d, src.as_ptr().cast(), 4096, s), OK);
        assert_eq!(cuMemcpyDtoDAsync_v2_ptsz(e, d, 4096, PER_THREAD), OK);
        assert_eq!(cuMemsetD32Async(e, 0x0102_0304, 4, s), OK);
        assert_eq!(cuMemsetD16Async_ptsz(e + 16, 0xabcd, 2, LEGACY), OK);
        assert_eq!(cuMemsetD8Async(e + 20, 0xee, 1, null_mut()), OK);
        assert_eq!(
            cuMemcpyDtoHAsync_v2(back.as_mut_ptr().cast(), e, 4096, s),
            OK
        );
        assert_eq!(cuStreamSynchronize(s), OK);
        assert_eq!(&back[..4], &[4, 3, 2, 1]);
        assert_eq!(&back[16..21], &[0xcd, 0xab, 0xcd, 0xab, 0xee]);
        assert_eq!(&back[21..], &src[21..]);
        // The unified form with a host destination.
        back.fill(0);
        assert_eq!(
            cuMemcpyAsync(back.as_mut_ptr() as CUdeviceptr, d, 4096, s),
            OK
        );
        assert_eq!(back, src);
        // Range checks and stream checks still apply.
        assert_eq!(
            cuMemcpyHtoDAsync_v2(d + 1, src.as_ptr().cast(), 4096, s),
            INVALID_VALUE
        );
        assert_eq!(
            cuMemcpyHtoDAsync_v2(d, src.as_ptr().cast(), 1, 0x77770 as CUstream),
            INVALID_HANDLE
        );
        // Peer copies with the one device.
        assert_eq!(cuMemcpyPeer(e, ctx, d, ctx, 4096), OK);
        assert_eq!(cuMemcpyPeerAsync(e, ctx, d, ctx, 16, s), OK);
        assert_eq!(
            cuMemcpyPeer(e, null_mut(), d, ctx, 16),
            CUresult::CUDA_ERROR_INVALID_CONTEXT
        );
    }
    assert_eq!(dtoh(e, 4096).unwrap(), src);
    destroy(ctx);
}

#[test]
fn pitched_2d_and_3d_copies_and_memsets() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let (w, h) = (100usize, 8usize);
    let (mut d, mut pitch) = (0, 0);
    // SAFETY: local out-slots.
    unsafe {
        assert_eq!(cuMemAllocPitch_v2(&mut d, &mut pitch, w, h, 4), OK);
        assert_eq!(
            cuMemAllocPitch_v2(&mut d, &mut pitch, w, h, 3),
            INVALID_VALUE
        );
        assert_eq!(cuMemAllocPitch_v2(&mut d, &mut pitch, w, h, 4), OK);
    }
    assert_eq!(pitch, 512);
    let host: Vec<u8> = (0..w * h).map(|i| i as u8).collect();
    let mut c = CUDA_MEMCPY2D {
        srcMemoryType: CUmemorytype::CU_MEMORYTYPE_HOST,
        srcHost: host.as_ptr().cast(),
        srcPitch: w,
        dstMemoryType: CUmemorytype::CU_MEMORYTYPE_DEVICE,
        dstDevice: d,
        dstPitch: pitch,
        WidthInBytes: w,
        Height: h,
        ..Default::default()
    };
    // SAFETY: the descriptor names live buffers of the stated shapes.
    unsafe {
        assert_eq!(cuMemcpy2D_v2(&c), OK);
        // Clear columns 10..20 of rows 2..5 with a 2D memset.
        assert_eq!(
            cuMemsetD2D8_v2(d + 2 * pitch as u64 + 10, pitch, 0xff, 10, 3),
            OK
        );
        assert_eq!(cuMemsetD2D32_v2(d + 2, pitch, 0, 1, 1), INVALID_VALUE);
        assert_eq!(cuMemsetD2D16Async(d, pitch, 0x1111, 2, h, null_mut()), OK);
    }
    // Read back through a device-to-host 2D copy into a tight buffer.
    let mut out = vec![0u8; w * h];
    let back = CUDA_MEMCPY2D {
        srcMemoryType: CUmemorytype::CU_MEMORYTYPE_DEVICE,
        srcDevice: d,
        srcPitch: pitch,
        dstMemoryType: CUmemorytype::CU_MEMORYTYPE_UNIFIED,
        dstDevice: out.as_mut_ptr() as CUdeviceptr,
        dstPitch: w,
        WidthInBytes: w,
        Height: h,
        ..Default::default()
    };
    // SAFETY: as above.
    unsafe { assert_eq!(cuMemcpy2DAsync_v2(&back, LEGACY), OK) };
    for y in 0..h {
        for x in 0..w {
            let want = if x < 4 {
                0x11
            } else if (2..5).contains(&y) && (10..20).contains(&x) {
                0xff
            } else {
                (y * w + x) as u8
            };
            assert_eq!(out[y * w + x], want, "({x},{y})");
        }
    }
    // Bad shapes: a pitch narrower than the row, a box past the end, arrays.
    c.srcPitch = w - 1;
    // SAFETY: rejected before any byte moves.
    unsafe { assert_eq!(cuMemcpy2D_v2(&c), INVALID_VALUE) };
    c.srcPitch = w;
    c.dstY = h;
    // SAFETY: rejected before any byte moves.
    unsafe { assert_eq!(cuMemcpy2DUnaligned_v2(&c), INVALID_VALUE) };
    c.dstY = 0;
    c.dstMemoryType = CUmemorytype::CU_MEMORYTYPE_ARRAY;
    // SAFETY: rejected before any byte moves.
    unsafe {
        assert_eq!(cuMemcpy2D_v2(&c), CUresult::CUDA_ERROR_NOT_SUPPORTED);
        assert_eq!(cuMemcpy2D_v2(null()), INVALID_VALUE);
    }

    // 3D: a 4x3x2 box out of a 16x4x3 device volume into a packed host box.
    let vol = alloc(16 * 4 * 3);
    let src: Vec<u8> = (0..16 * 4 * 3).map(|i| i as u8).collect();
    assert_eq!(htod(vol, &src), OK);
    let mut boxed = vec![0u8; 4 * 3 * 2];
    let c3 = CUDA_MEMCPY3D {
        srcXInBytes: 2,
        srcY: 1,
        srcZ: 1,
        srcMemoryType: CUmemorytype::CU_MEMORYTYPE_DEVICE,
        srcDevice: vol,
        srcPitch: 16,
        srcHeight: 4,
        dstMemoryType: CUmemorytype::CU_MEMORYTYPE_HOST,
        dstHost: boxed.as_mut_ptr().cast(),
        dstPitch: 4,
        dstHeight: 3,
        WidthInBytes: 4,
        Height: 3,
        Depth: 2,
        ..Default::default()
    };
    // SAFETY: the descriptor names live buffers of the stated shapes.
    unsafe { assert_eq!(cuMemcpy3D_v2(&c3), OK) };
    for z in 0..2 {
        for y in 0..3 {
            for x in 0..4 {
                let s = (z + 1) * 64 + (y + 1) * 16 + x + 2;
                assert_eq!(boxed[z * 12 + y * 4 + x], s as u8);
            }
        }
    }
    let mut past = c3;
    past.Depth = 3;
    // SAFETY: rejected before any byte moves.
    unsafe { assert_eq!(cuMemcpy3DAsync_v2(&past, null_mut()), INVALID_VALUE) };
    destroy(ctx);
}

#[test]
fn concurrent_copies_on_two_threads() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let d = alloc(64 * MIB);
    let threads: Vec<_> = (0..2u8)
        .map(|t| {
            let ctx = ctx as usize;
            std::thread::spawn(move || {
                // SAFETY: the context handle is validated by the library.
                assert_eq!(unsafe { cuCtxSetCurrent(ctx as CUcontext) }, OK);
                let half = d + u64::from(t) * 32 * MIB as u64;
                let data = vec![t + 1; 32 * MIB];
                for _ in 0..4 {
                    assert_eq!(htod(half, &data), OK);
                    assert_eq!(dtoh(half, 32 * MIB).unwrap(), data);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    destroy(ctx);
}

// ---- VMM ----------------------------------------------------------------------

fn device_prop(handle_types: CUmemAllocationHandleType) -> CUmemAllocationProp {
    let mut p = CUmemAllocationProp {
        type_: CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED,
        requestedHandleTypes: handle_types,
        ..Default::default()
    };
    p.location.type_ = CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE;
    p.location.__bindgen_anon_1.id = 0;
    p
}

fn rw_desc() -> CUmemAccessDesc {
    let mut d = CUmemAccessDesc {
        flags: CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
        ..Default::default()
    };
    d.location.type_ = CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE;
    d
}

fn mem_create(size: usize, prop: &CUmemAllocationProp) -> CUmemGenericAllocationHandle {
    let mut h = 0;
    // SAFETY: local out-slot and descriptor.
    assert_eq!(unsafe { cuMemCreate(&mut h, size, prop, 0) }, OK);
    h
}

fn reserve(size: usize, hint: CUdeviceptr) -> CUdeviceptr {
    let mut p = 0;
    // SAFETY: local out-slot.
    assert_eq!(unsafe { cuMemAddressReserve(&mut p, size, 0, hint, 0) }, OK);
    p
}

#[test]
fn vmm_reserve_map_access_alias_and_release() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let prop = device_prop(CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_NONE);
    let (mut min, mut rec) = (0, 0);
    // SAFETY: local out-slots and descriptors.
    unsafe {
        assert_eq!(
            cuMemGetAllocationGranularity(&mut min, &prop, CUmemAllocationGranularity_flags(0)),
            OK
        );
        assert_eq!(
            cuMemGetAllocationGranularity(&mut rec, &prop, CUmemAllocationGranularity_flags(1)),
            OK
        );
    }
    assert_eq!((min, rec), (2 * MIB, 2 * MIB));
    let (free0, _) = mem_info();

    let va = reserve(GIB, 0);
    assert_eq!(va % (2 * MIB) as u64, 0);
    let chunk = 64 * MIB;
    let (h1, h2) = (mem_create(chunk, &prop), mem_create(chunk, &prop));
    // Physical memory is device memory in use.
    assert_eq!(mem_info().0, free0 - 2 * chunk);
    // SAFETY: addresses inside the reservation; handles are validated.
    unsafe {
        assert_eq!(cuMemMap(va, chunk, 0, h1, 0), OK);
        assert_eq!(cuMemMap(va + chunk as u64, chunk, 0, h2, 0), OK);
        // Overlapping, unaligned, out-of-handle and unreserved maps fail.
        assert_eq!(cuMemMap(va, chunk, 0, h2, 0), INVALID_VALUE);
        assert_eq!(cuMemMap(va + 4096, chunk, 0, h2, 0), INVALID_VALUE);
        assert_eq!(
            cuMemMap(va + 2 * chunk as u64, chunk, 2 * MIB, h2, 0),
            INVALID_VALUE
        );
        assert_eq!(
            cuMemMap(va + 2 * GIB as u64, chunk, 0, h2, 0),
            INVALID_VALUE
        );
    }
    // Mapped but not yet accessible: copies fail instead of faulting.
    let data: Vec<u8> = (0..2 * chunk).map(|i| (i % 251) as u8).collect();
    assert_eq!(htod(va, &data[..16]), INVALID_VALUE);
    let desc = rw_desc();
    // SAFETY: a mapped range and a local descriptor.
    unsafe { assert_eq!(cuMemSetAccess(va, 2 * chunk, &desc, 1), OK) };
    // One copy spans both mappings.
    assert_eq!(htod(va, &data), OK);
    assert_eq!(
        dtoh(va + chunk as u64 - 8, 16).unwrap(),
        data[chunk - 8..chunk + 8]
    );
    // Past the mapped end is still refused.
    assert_eq!(htod(va + 2 * chunk as u64 - 8, &data[..16]), INVALID_VALUE);

    // A second address for h2 aliases the same bytes.
    let va2 = reserve(chunk, 0);
    // SAFETY: as above.
    unsafe {
        assert_eq!(cuMemMap(va2, chunk, 0, h2, 0), OK);
        assert_eq!(cuMemSetAccess(va2, chunk, &desc, 1), OK);
    }
    assert_eq!(dtoh(va2, 64).unwrap(), data[chunk..chunk + 64]);
    assert_eq!(htod(va2 + 100, &[9, 9, 9]), OK);
    assert_eq!(dtoh(va + chunk as u64 + 100, 3).unwrap(), [9, 9, 9]);
    // SAFETY: direct host access is what device pointer == host address means.
    assert_eq!(unsafe { *((va + chunk as u64 + 101) as *const u8) }, 9);

    // Access queries, address ranges and a read-only sub-range.
    let mut flags = 0u64;
    let mut base = 0;
    let mut size = 0;
    let mut ro = desc;
    ro.flags = CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_READ;
    // SAFETY: local out-slots and descriptors.
    unsafe {
        assert_eq!(cuMemGetAccess(&mut flags, &desc.location, va + 5), OK);
        assert_eq!(flags, 3);
        assert_eq!(
            cuMemGetAddressRange_v2(&mut base, &mut size, va + chunk as u64 + 7),
            OK
        );
        assert_eq!((base, size), (va + chunk as u64, chunk));
        assert_eq!(cuMemSetAccess(va + 2 * MIB as u64, 2 * MIB, &ro, 1), OK);
        assert_eq!(
            cuMemGetAccess(&mut flags, &desc.location, va + 2 * MIB as u64),
            OK
        );
        assert_eq!(flags, 1);
        // Splitting for access leaves the mapping whole for the range query.
        assert_eq!(
            cuMemGetAddressRange_v2(&mut base, &mut size, va + 3 * MIB as u64),
            OK
        );
        assert_eq!((base, size), (va, chunk));
        let mut retained = 0;
        assert_eq!(
            cuMemRetainAllocationHandle(&mut retained, (va + 7) as *mut c_void),
            OK
        );
        assert_eq!(retained, h1);
        assert_eq!(cuMemRelease(retained), OK);
        let mut got = CUmemAllocationProp::default();
        assert_eq!(cuMemGetAllocationPropertiesFromHandle(&mut got, h1), OK);
        assert_eq!(
            got.type_,
            CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED
        );
        assert_eq!(
            got.location.type_,
            CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE
        );
    }
    assert_eq!(
        dtoh(va + 2 * MIB as u64, 4).unwrap(),
        data[2 * MIB..2 * MIB + 4]
    );
    assert_eq!(htod(va + 2 * MIB as u64, &[1]), INVALID_VALUE);
    assert_eq!(htod(va + 4 * MIB as u64, &[1]), OK);

    // Releasing a mapped handle keeps its memory until the last unmap.
    // SAFETY: ranges and handles from above.
    unsafe {
        assert_eq!(cuMemRelease(h2), OK);
        assert_eq!(cuMemRelease(h2), INVALID_VALUE);
        assert_eq!(mem_info().0, free0 - 2 * chunk);
        assert_eq!(cuMemUnmap(va2, chunk), OK);
        assert_eq!(dtoh(va + chunk as u64 + 100, 3).unwrap(), [9, 9, 9]);
        // Unmapping must cover whole mappings.
        assert_eq!(cuMemUnmap(va, 2 * MIB), INVALID_VALUE);
        assert_eq!(cuMemUnmap(va, 2 * chunk), OK);
        assert_eq!(mem_info().0, free0 - chunk);
        assert_eq!(htod(va, &[1]), INVALID_VALUE);
        assert_eq!(cuMemRelease(h1), OK);
        assert_eq!(mem_info().0, free0);
        assert_eq!(cuMemAddressFree(va, GIB - 1), INVALID_VALUE);
        assert_eq!(cuMemAddressFree(va, GIB), OK);
        assert_eq!(cuMemAddressFree(va2, chunk), OK);
        assert_eq!(cuMemAddressFree(va2, chunk), INVALID_VALUE);
    }
    destroy(ctx);
}

#[test]
fn vmm_64_gib_reserve_on_a_small_machine() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let prop = device_prop(CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_NONE);
    let va = reserve(64 * GIB, 0);
    // A fixed-address hint is honoured when that range is free.
    let hinted = reserve(2 * MIB, va + 64 * GIB as u64 + 16 * GIB as u64);
    let h = mem_create(8 * MIB, &prop);
    let desc = rw_desc();
    let offsets = [
        0u64,
        16 * GIB as u64,
        40 * GIB as u64,
        64 * GIB as u64 - 2 * MIB as u64,
    ];
    // SAFETY: addresses inside the reservation; the handle is validated.
    unsafe {
        for (i, &o) in offsets.iter().enumerate() {
            assert_eq!(cuMemMap(va + o, 2 * MIB, i * 2 * MIB, h, 0), OK);
            assert_eq!(cuMemSetAccess(va + o, 2 * MIB, &desc, 1), OK);
            assert_eq!(htod(va + o + 4096, &[i as u8 + 1; 8]), OK);
        }
        for (i, &o) in offsets.iter().enumerate() {
            assert_eq!(dtoh(va + o + 4096, 8).unwrap(), [i as u8 + 1; 8]);
        }
        // Addresses between the chunks are reserved, not memory, for the
        // unified copy too (which must not take them for host memory).
        assert_eq!(htod(va + GIB as u64, &[1]), INVALID_VALUE);
        let one = [1u8];
        assert_eq!(
            cuMemcpy(va + GIB as u64, one.as_ptr() as CUdeviceptr, 1),
            INVALID_VALUE
        );
        for &o in &offsets {
            assert_eq!(cuMemUnmap(va + o, 2 * MIB), OK);
        }
        assert_eq!(cuMemRelease(h), OK);
        assert_eq!(cuMemAddressFree(va, 64 * GIB), OK);
        assert_eq!(cuMemAddressFree(hinted, 2 * MIB), OK);
    }
    destroy(ctx);
}

#[test]
fn vmm_posix_fd_export_import_aliases() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let prop = device_prop(CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
    let h = mem_create(2 * MIB, &prop);
    let plain = mem_create(
        2 * MIB,
        &device_prop(CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_NONE),
    );
    let fd_type = CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
    let mut fd: i32 = -1;
    let mut imported = 0;
    let desc = rw_desc();
    let (a, b) = (reserve(2 * MIB, 0), reserve(2 * MIB, 0));
    // SAFETY: local out-slots; the fd travels in the pointer argument.
    unsafe {
        assert_eq!(
            cuMemExportToShareableHandle((&mut fd as *mut i32).cast(), plain, fd_type, 0),
            INVALID_VALUE
        );
        assert_eq!(
            cuMemExportToShareableHandle((&mut fd as *mut i32).cast(), h, fd_type, 0),
            OK
        );
        assert!(fd >= 0);
        assert_eq!(
            cuMemImportFromShareableHandle(&mut imported, fd as usize as *mut c_void, fd_type),
            OK
        );
        libc::close(fd);
        for (va, hh) in [(a, h), (b, imported)] {
            assert_eq!(cuMemMap(va, 2 * MIB, 0, hh, 0), OK);
            assert_eq!(cuMemSetAccess(va, 2 * MIB, &desc, 1), OK);
        }
        let mut types = 0u64;
        assert_eq!(
            cuPointerGetAttribute(
                (&mut types as *mut u64).cast(),
                CUpointer_attribute::CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES,
                a
            ),
            OK
        );
        assert_eq!(types, 1);
    }
    assert_eq!(htod(a + 10, b"shared"), OK);
    assert_eq!(dtoh(b + 10, 6).unwrap(), b"shared");
    // SAFETY: ranges and handles from above.
    unsafe {
        for (va, hh) in [(a, h), (b, imported), (0, plain)] {
            if va != 0 {
                assert_eq!(cuMemUnmap(va, 2 * MIB), OK);
                assert_eq!(cuMemAddressFree(va, 2 * MIB), OK);
            }
            assert_eq!(cuMemRelease(hh), OK);
        }
    }
    destroy(ctx);
}

// ---- stream-ordered allocation ------------------------------------------------------

fn pool_u64(pool: CUmemoryPool, attr: CUmemPool_attribute) -> u64 {
    let mut v = 0u64;
    // SAFETY: a local u64 for a 64-bit attribute.
    let r = unsafe { cuMemPoolGetAttribute(pool, attr, (&mut v as *mut u64).cast()) };
    assert_eq!(r, OK);
    v
}

#[test]
fn mem_pools_allocate_in_stream_order() {
    use CUmemPool_attribute as P;
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let s = stream();
    let (mut def, mut cur) = (null_mut(), null_mut());
    // SAFETY: local out-slots.
    unsafe {
        assert_eq!(cuDeviceGetDefaultMemPool(&mut def, 0), OK);
        assert_eq!(cuDeviceGetMemPool(&mut cur, 0), OK);
        assert_eq!(
            cuDeviceGetDefaultMemPool(&mut def, 3),
            CUresult::CUDA_ERROR_INVALID_DEVICE
        );
    }
    assert_eq!(def, cur);
    let (free0, _) = mem_info();
    let mut d = 0;
    // SAFETY: local out-slots.
    unsafe { assert_eq!(cuMemAllocAsync(&mut d, 3 * MIB, s), OK) };
    assert_eq!(mem_info().0, free0 - 4 * MIB);
    assert_eq!(
        pool_u64(def, P::CU_MEMPOOL_ATTR_USED_MEM_CURRENT),
        3 * MIB as u64
    );
    assert_eq!(
        pool_u64(def, P::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT),
        4 * MIB as u64
    );
    assert_eq!(htod(d + 5, b"pool"), OK);
    assert_eq!(dtoh(d + 5, 4).unwrap(), b"pool");
    let mut mp = null_mut();
    // SAFETY: local out-slots.
    unsafe {
        let mut got = 0usize;
        assert_eq!(
            cuPointerGetAttribute(
                (&mut mp as *mut CUmemoryPool).cast(),
                CUpointer_attribute::CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE,
                d
            ),
            OK
        );
        assert_eq!(mp, def);
        assert_eq!(cuMemFreeAsync(d, s), OK);
        assert_eq!(cuMemFreeAsync(d, s), INVALID_VALUE);
        assert_eq!(
            cuPointerGetAttribute(
                (&mut got as *mut usize).cast(),
                CUpointer_attribute::CU_POINTER_ATTRIBUTE_RANGE_SIZE,
                d
            ),
            INVALID_VALUE
        );
    }
    assert_eq!(mem_info().0, free0);
    assert_eq!(pool_u64(def, P::CU_MEMPOOL_ATTR_USED_MEM_CURRENT), 0);
    assert_eq!(
        pool_u64(def, P::CU_MEMPOOL_ATTR_USED_MEM_HIGH),
        3 * MIB as u64
    );

    // Attributes: threshold, reuse flags, watermark reset, read-only ones.
    let mut th = u64::MAX;
    let mut zero = 0u64;
    let mut flag = 0i32;
    // SAFETY: locals of the attribute's type.
    unsafe {
        let set = |a, v: *mut c_void| cuMemPoolSetAttribute(def, a, v);
        assert_eq!(
            set(
                P::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&mut th as *mut u64).cast()
            ),
            OK
        );
        assert_eq!(
            set(
                P::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                (&mut zero as *mut u64).cast()
            ),
            OK
        );
        assert_eq!(
            set(
                P::CU_MEMPOOL_ATTR_USED_MEM_CURRENT,
                (&mut zero as *mut u64).cast()
            ),
            INVALID_VALUE
        );
        assert_eq!(
            set(
                P::CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC,
                (&mut flag as *mut i32).cast()
            ),
            OK
        );
        let mut back = 7i32;
        assert_eq!(
            cuMemPoolGetAttribute(
                def,
                P::CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC,
                (&mut back as *mut i32).cast()
            ),
            OK
        );
        assert_eq!(back, 0);
        assert_eq!(cuMemPoolTrimTo(def, 0), OK);
    }
    assert_eq!(
        pool_u64(def, P::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD),
        u64::MAX
    );
    assert_eq!(pool_u64(def, P::CU_MEMPOOL_ATTR_USED_MEM_HIGH), 0);

    // A created pool: limits, current-pool switching, destroy.
    let mut props = CUmemPoolProps {
        allocType: CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED,
        maxSize: 4 * MIB,
        ..Default::default()
    };
    props.location.type_ = CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE;
    let mut pool = null_mut();
    // SAFETY: local out-slots and descriptors.
    unsafe {
        assert_eq!(cuMemPoolCreate(&mut pool, &props), OK);
        assert_eq!(cuDeviceSetMemPool(0, pool), OK);
        assert_eq!(cuMemAllocAsync_ptsz(&mut d, MIB, PER_THREAD), OK);
        let mut e = 0;
        assert_eq!(
            cuMemAllocFromPoolAsync(&mut e, 4 * MIB, pool, s),
            CUresult::CUDA_ERROR_OUT_OF_MEMORY
        );
        assert_eq!(cuMemAllocFromPoolAsync(&mut e, MIB, def, s), OK);
        assert_eq!(
            pool_u64(pool, P::CU_MEMPOOL_ATTR_USED_MEM_CURRENT),
            MIB as u64
        );
        assert_eq!(cuMemFree_v2(e), OK);
        assert_eq!(cuMemFreeAsync_ptsz(d, PER_THREAD), OK);
        assert_eq!(cuMemPoolDestroy(def), INVALID_VALUE);
        assert_eq!(cuMemPoolDestroy(pool), OK);
        assert_eq!(cuDeviceGetMemPool(&mut cur, 0), OK);
        assert_eq!(cur, def);
        assert_eq!(cuMemPoolTrimTo(pool, 0), INVALID_VALUE);
        props.handleTypes = CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
        assert_eq!(
            cuMemPoolCreate(&mut pool, &props),
            CUresult::CUDA_ERROR_NOT_SUPPORTED
        );
    }
    assert_eq!(mem_info().0, free0);
    destroy(ctx);
}

// ---- host memory and pointer attributes --------------------------------------------

fn attr_u32(attr: CUpointer_attribute, p: CUdeviceptr) -> Result<u32, CUresult> {
    let mut v = 0u32;
    // SAFETY: a local of the attribute's (32-bit) type.
    unsafe { cuPointerGetAttribute((&mut v as *mut u32).cast(), attr, p) }.ok()?;
    Ok(v)
}

fn attr_word(attr: CUpointer_attribute, p: CUdeviceptr) -> Result<usize, CUresult> {
    let mut v = 0usize;
    // SAFETY: a local of the attribute's (pointer-sized) type.
    unsafe { cuPointerGetAttribute((&mut v as *mut usize).cast(), attr, p) }.ok()?;
    Ok(v)
}

#[test]
fn registered_host_memory_and_pointer_attributes() {
    use CUpointer_attribute as A;
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let host = CUmemorytype::CU_MEMORYTYPE_HOST.0;
    let device = CUmemorytype::CU_MEMORYTYPE_DEVICE.0;

    // Device memory.
    let d = alloc(1000);
    assert_eq!(
        attr_u32(A::CU_POINTER_ATTRIBUTE_MEMORY_TYPE, d + 10),
        Ok(device)
    );
    assert_eq!(
        attr_word(A::CU_POINTER_ATTRIBUTE_CONTEXT, d),
        Ok(ctx as usize)
    );
    assert_eq!(
        attr_word(A::CU_POINTER_ATTRIBUTE_DEVICE_POINTER, d + 10),
        Ok(d as usize + 10)
    );
    assert_eq!(
        attr_word(A::CU_POINTER_ATTRIBUTE_HOST_POINTER, d),
        Err(INVALID_VALUE)
    );
    assert_eq!(
        attr_word(A::CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, d + 999),
        Ok(d as usize)
    );
    assert_eq!(attr_word(A::CU_POINTER_ATTRIBUTE_RANGE_SIZE, d), Ok(1000));
    assert_eq!(attr_u32(A::CU_POINTER_ATTRIBUTE_IS_MANAGED, d), Ok(0));
    assert_eq!(attr_u32(A::CU_POINTER_ATTRIBUTE_MAPPED, d), Ok(1));
    assert_eq!(attr_u32(A::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, d), Ok(0));
    assert_eq!(attr_u32(A::CU_POINTER_ATTRIBUTE_ACCESS_FLAGS, d), Ok(3));
    assert_eq!(attr_word(A::CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE, d), Ok(0));
    let e = alloc(8);
    assert_ne!(
        attr_word(A::CU_POINTER_ATTRIBUTE_BUFFER_ID, d),
        attr_word(A::CU_POINTER_ATTRIBUTE_BUFFER_ID, e)
    );
    // Unknown addresses: an error from the single query ...
    assert_eq!(
        attr_u32(A::CU_POINTER_ATTRIBUTE_MEMORY_TYPE, d + 1000),
        Err(INVALID_VALUE)
    );
    assert_eq!(
        attr_u32(A::CU_POINTER_ATTRIBUTE_MEMORY_TYPE, 0),
        Err(INVALID_VALUE)
    );
    // ... and zeros from the batch query.
    let stack = 5u64;
    let (mut ty, mut dp, mut ord) = (9u32, 9usize, 9i32);
    let mut attrs = [
        A::CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
        A::CU_POINTER_ATTRIBUTE_DEVICE_POINTER,
        A::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
    ];
    let mut slots: [*mut c_void; 3] = [
        (&mut ty as *mut u32).cast(),
        (&mut dp as *mut usize).cast(),
        (&mut ord as *mut i32).cast(),
    ];
    // SAFETY: three attributes and three slots of the matching types.
    unsafe {
        let at = &stack as *const u64 as CUdeviceptr;
        assert_eq!(
            cuPointerGetAttributes(3, attrs.as_mut_ptr(), slots.as_mut_ptr(), at),
            OK
        );
        assert_eq!((ty, dp, ord), (0, 0, -1));
        assert_eq!(
            cuPointerGetAttributes(3, attrs.as_mut_ptr(), slots.as_mut_ptr(), d),
            OK
        );
        assert_eq!((ty, dp, ord), (device, d as usize, 0));
    }

    // Pinned host memory.
    let mut pinned = null_mut();
    let mut flags = 0;
    let mut dev_ptr = 0;
    // SAFETY: local out-slots.
    unsafe {
        assert_eq!(cuMemHostAlloc(&mut pinned, 5000, 2), OK);
        assert_eq!(cuMemHostGetFlags(&mut flags, pinned), OK);
        assert_eq!(flags, 2);
        assert_eq!(
            cuMemHostGetDevicePointer_v2(&mut dev_ptr, pinned.add(8), 0),
            OK
        );
        assert_eq!(dev_ptr, pinned as u64 + 8);
    }
    let p = pinned as CUdeviceptr;
    assert_eq!(attr_u32(A::CU_POINTER_ATTRIBUTE_MEMORY_TYPE, p), Ok(host));
    assert_eq!(
        attr_word(A::CU_POINTER_ATTRIBUTE_HOST_POINTER, p + 4),
        Ok(p as usize + 4)
    );

    // Registered host memory: device pointer == host pointer.
    let mut buf = vec![0u8; 3 * 4096 + 17];
    let r = buf.as_mut_ptr().cast::<c_void>();
    let rp = r as CUdeviceptr;
    // SAFETY: `buf` outlives its registration; out-slots are locals.
    unsafe {
        assert_eq!(cuMemHostRegister_v2(r, buf.len(), 1), OK);
        assert_eq!(
            cuMemHostRegister_v2(r, 10, 0),
            CUresult::CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED
        );
        assert_eq!(
            cuMemHostRegister_v2(r, 10, 8),
            CUresult::CUDA_ERROR_NOT_SUPPORTED
        );
        assert_eq!(cuMemHostRegister_v2(r, 10, 0x100), INVALID_VALUE);
        assert_eq!(cuMemHostGetFlags(&mut flags, r), OK);
        assert_eq!(flags, 1);
        assert_eq!(cuMemHostGetDevicePointer_v2(&mut dev_ptr, r, 0), OK);
        assert_eq!(dev_ptr, rp);
    }
    assert_eq!(
        attr_u32(A::CU_POINTER_ATTRIBUTE_MEMORY_TYPE, rp + 5),
        Ok(host)
    );
    assert_eq!(
        attr_word(A::CU_POINTER_ATTRIBUTE_RANGE_SIZE, rp),
        Ok(buf.len())
    );
    // The device can copy into it through its device pointer.
    assert_eq!(htod(d, &[7; 100]), OK);
    // SAFETY: device-to-device between two tracked ranges.
    unsafe { assert_eq!(cuMemcpyDtoD_v2(rp + 1, d, 100), OK) };
    // SAFETY: the registration is over: the host reads its own buffer.
    unsafe {
        assert_eq!(cuMemHostUnregister(r), OK);
        assert_eq!(
            cuMemHostUnregister(r),
            CUresult::CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED
        );
        assert_eq!(
            cuMemHostGetDevicePointer_v2(&mut dev_ptr, r, 0),
            INVALID_VALUE
        );
    }
    assert_eq!(buf[0], 0);
    assert_eq!(&buf[1..101], &[7; 100]);
    // Unmapped memory cannot be registered.
    // SAFETY: the range is never touched: registration refuses it.
    unsafe {
        assert_eq!(
            cuMemHostRegister_v2(8192 as *mut c_void, 4096, 0),
            INVALID_VALUE
        )
    };

    // VMM ranges.
    let prop = device_prop(CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_NONE);
    let va = reserve(4 * MIB, 0);
    let h = mem_create(2 * MIB, &prop);
    // SAFETY: a reserved range and a handle from above.
    unsafe { assert_eq!(cuMemMap(va, 2 * MIB, 0, h, 0), OK) };
    assert_eq!(attr_u32(A::CU_POINTER_ATTRIBUTE_ACCESS_FLAGS, va), Ok(0));
    assert_eq!(
        attr_u32(A::CU_POINTER_ATTRIBUTE_MEMORY_TYPE, va + 9),
        Ok(device)
    );
    assert_eq!(
        attr_word(A::CU_POINTER_ATTRIBUTE_RANGE_SIZE, va + 9),
        Ok(2 * MIB)
    );
    assert_eq!(
        attr_u32(A::CU_POINTER_ATTRIBUTE_MEMORY_TYPE, va + 2 * MIB as u64),
        Err(INVALID_VALUE)
    );
    let desc = rw_desc();
    // SAFETY: as above.
    unsafe {
        assert_eq!(cuMemSetAccess(va, 2 * MIB, &desc, 1), OK);
        assert_eq!(attr_u32(A::CU_POINTER_ATTRIBUTE_ACCESS_FLAGS, va), Ok(3));
        assert_eq!(cuMemUnmap(va, 2 * MIB), OK);
        assert_eq!(cuMemRelease(h), OK);
        assert_eq!(cuMemAddressFree(va, 4 * MIB), OK);
        assert_eq!(cuMemFreeHost(pinned), OK);
    }
    destroy(ctx);
}
