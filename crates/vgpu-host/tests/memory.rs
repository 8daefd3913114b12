//! End-to-end memory, VMM, stream and mem-pool calls: the real `vgpu`
//! daemon with the software GPU as driver, `vgpu_transport::Client` as guest.
//! The software GPU implements every call here: any error where success is
//! expected, CUDA_ERROR_NOT_SUPPORTED included, fails the test.

use cuda_types::cuda::CUresult;
use std::time::Duration;
use vgpu_test_support::Daemon;
use vgpu_transport::codec::Bytes;
use vgpu_transport::proto::{
    nvml_kind, Call, CtxCreate, CtxDestroy, DeviceGetDefaultMemPool, Flush, GetInventory,
    MemAccess, MemAddressFree, MemAddressReserve, MemAlloc, MemAllocAsync, MemAllocPitch,
    MemAllocProp, MemCreate, MemFree, MemFreeAsync, MemGetAccess, MemGetAddressRange,
    MemGetAllocationGranularity, MemGetInfo, MemMap, MemPoolGetAttribute, MemPoolSetAttribute,
    MemPoolTrimTo, MemRelease, MemSetAccess, MemUnmap, Memcpy2DDtoD, Memcpy2DDtoH, Memcpy2DHtoD,
    MemcpyDtoD, MemcpyDtoH, MemcpyDtoHAsync, MemcpyHtoD, MemcpyHtoDAsync, Memset, MemsetAsync,
    NvmlQuery, PrimaryCtxRetain, StreamCreate, StreamDestroy, StreamQuery, StreamSynchronize,
    COPY_CHUNK,
};
use vgpu_transport::{CallError, Client, Status};

const MIB: u64 = 1 << 20;
const INVALID_VALUE: Status = Status::Cuda(CUresult::CUDA_ERROR_INVALID_VALUE);
const OUT_OF_MEMORY: Status = Status::Cuda(CUresult::CUDA_ERROR_OUT_OF_MEMORY);
const INVALID_HANDLE: Status = Status::Cuda(CUresult::CUDA_ERROR_INVALID_HANDLE);
const NOT_FOUND: Status = Status::Cuda(CUresult::CUDA_ERROR_NOT_FOUND);
const NOT_READY: Status = Status::Cuda(CUresult::CUDA_ERROR_NOT_READY);
const STREAM_LEGACY: u64 = 1;

/// The status of a call that must fail.
#[track_caller]
fn status<T: std::fmt::Debug>(r: Result<T, CallError>) -> Status {
    match r {
        Err(CallError::Status(s)) => s,
        other => panic!("expected an error status, got {other:?}"),
    }
}

/// The status a deferred call failed with: it is queued without a reply,
/// and the next `Flush` reports it.
#[track_caller]
fn deferred<C: Call<Reply = ()>>(c: &mut Client, call: &C) -> Status {
    c.call(call).unwrap();
    status(c.call(&Flush {}))
}

/// The value of a call that must succeed; an error names the driver call.
#[track_caller]
fn ok<T>(r: Result<T, CallError>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e:?}"),
    }
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn ctx(c: &mut Client) -> u64 {
    c.call(&CtxCreate {
        device: 0,
        flags: 0,
    })
    .unwrap()
}

fn alloc(c: &mut Client, ctx: u64, size: u64) -> u64 {
    let p = c.call(&MemAlloc { ctx, size }).unwrap();
    assert_ne!(p, 0);
    p
}

fn htod(c: &mut Client, ctx: u64, dst: u64, data: &[u8]) -> Result<(), CallError> {
    c.call(&MemcpyHtoD {
        ctx,
        dst,
        data: Bytes(data.to_vec()),
    })
}

fn dtoh(c: &mut Client, ctx: u64, src: u64, size: u64) -> Result<Vec<u8>, CallError> {
    c.call(&MemcpyDtoH { ctx, src, size }).map(|b| b.0)
}

#[test]
fn alloc_copy_memset_roundtrip() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let ctx = ctx(&mut c);
    let a = alloc(&mut c, ctx, 16 * MIB);
    let b = alloc(&mut c, ctx, 16 * MIB);

    // A full chunk there and back.
    let data = pattern(COPY_CHUNK as usize, 7);
    htod(&mut c, ctx, a, &data).unwrap();
    assert_eq!(dtoh(&mut c, ctx, a, COPY_CHUNK).unwrap(), data);
    // At an offset, ending exactly at the end of the allocation.
    let tail = pattern(4096, 99);
    htod(&mut c, ctx, a + 16 * MIB - 4096, &tail).unwrap();
    assert_eq!(dtoh(&mut c, ctx, a + 16 * MIB - 4096, 4096).unwrap(), tail);

    // Device to device.
    c.call(&MemcpyDtoD {
        ctx,
        dst: b + 100,
        src: a,
        size: MIB,
    })
    .unwrap();
    assert_eq!(
        dtoh(&mut c, ctx, b + 100, MIB).unwrap(),
        &data[..MIB as usize]
    );

    // Empty copies succeed without touching anything.
    htod(&mut c, ctx, a, &[]).unwrap();
    assert!(dtoh(&mut c, ctx, a, 0).unwrap().is_empty());
    c.call(&MemcpyDtoD {
        ctx,
        dst: 0,
        src: 0,
        size: 0,
    })
    .unwrap();

    // 1D memsets of each element size.
    let set = |c: &mut Client, dst, value, elem_size, width| {
        c.call(&Memset {
            ctx,
            dst,
            pitch: 0,
            value,
            elem_size,
            width,
            height: 1,
        })
    };
    set(&mut c, a, 0xAB, 1, 1000).unwrap();
    assert!(dtoh(&mut c, ctx, a, 1000)
        .unwrap()
        .iter()
        .all(|&x| x == 0xAB));
    set(&mut c, a, 0x1234, 2, 10).unwrap();
    assert_eq!(dtoh(&mut c, ctx, a, 4).unwrap(), [0x34, 0x12, 0x34, 0x12]);
    set(&mut c, a, 0xDEAD_BEEF, 4, 10).unwrap();
    assert_eq!(
        dtoh(&mut c, ctx, a + 36, 4).unwrap(),
        0xDEAD_BEEFu32.to_le_bytes()
    );
    assert_eq!(status(set(&mut c, a, 0, 3, 10)), INVALID_VALUE);

    // 2D memset: 4 rows of 16 bytes, 64 apart, leaves the gaps alone.
    set(&mut c, b, 0, 1, 256).unwrap();
    let r = c.call(&Memset {
        ctx,
        dst: b,
        pitch: 64,
        value: 0x5A,
        elem_size: 1,
        width: 16,
        height: 4,
    });
    ok(r, "cuMemsetD2D8_v2");
    let got = dtoh(&mut c, ctx, b, 256).unwrap();
    for (i, &x) in got.iter().enumerate() {
        assert_eq!(x, if i % 64 < 16 { 0x5A } else { 0 }, "byte {i}");
    }

    // 2D copies with a pitch: packed rows in, pitched on the device, packed out.
    let (w, h, pitch) = (24u64, 5u64, 40u64);
    let rows = pattern((w * h) as usize, 3);
    set(&mut c, b, 0xEE, 1, 1024).unwrap();
    let r = c.call(&Memcpy2DHtoD {
        ctx,
        dst: b,
        dst_pitch: pitch,
        width: w,
        height: h,
        data: Bytes(rows.clone()),
    });
    ok(r, "cuMemcpy2D_v2");
    let raw = dtoh(&mut c, ctx, b, pitch * h).unwrap();
    for y in 0..h as usize {
        let row = &raw[y * pitch as usize..][..w as usize];
        assert_eq!(row, &rows[y * w as usize..][..w as usize], "row {y}");
        assert!(
            raw[y * pitch as usize + w as usize..][..(pitch - w) as usize]
                .iter()
                .all(|&x| x == 0xEE)
        );
    }
    let back = c
        .call(&Memcpy2DDtoH {
            ctx,
            src: b,
            src_pitch: pitch,
            width: w,
            height: h,
        })
        .unwrap();
    assert_eq!(back.0, rows);
    c.call(&Memcpy2DDtoD {
        ctx,
        dst: a,
        dst_pitch: 32,
        src: b,
        src_pitch: pitch,
        width: w,
        height: h,
    })
    .unwrap();
    let packed = c
        .call(&Memcpy2DDtoH {
            ctx,
            src: a,
            src_pitch: 32,
            width: w,
            height: h,
        })
        .unwrap();
    assert_eq!(packed.0, rows);
    // A payload that is not width × height, or rows that overlap.
    let bad = c.call(&Memcpy2DHtoD {
        ctx,
        dst: b,
        dst_pitch: pitch,
        width: w,
        height: h,
        data: Bytes(vec![0; 7]),
    });
    assert_eq!(status(bad), INVALID_VALUE);
    let bad = c.call(&Memcpy2DDtoH {
        ctx,
        src: b,
        src_pitch: w - 1,
        width: w,
        height: h,
    });
    assert_eq!(status(bad), INVALID_VALUE);

    // Address ranges: from inside, the allocation's base and size.
    let (base, size) = c
        .call(&MemGetAddressRange {
            ctx,
            ptr: a + 12345,
        })
        .unwrap();
    assert_eq!((base, size), (a, 16 * MIB));
    assert_eq!(
        status(c.call(&MemGetAddressRange { ctx, ptr: 0x10 })),
        NOT_FOUND
    );

    // Pitched allocations are this session's memory like any other.
    let r = c.call(&MemAllocPitch {
        ctx,
        width: 1000,
        height: 8,
        elem_size: 4,
    });
    let (p, pitch) = ok(r, "cuMemAllocPitch_v2");
    assert!(pitch >= 1000);
    let row = pattern(1000, 1);
    htod(&mut c, ctx, p + 7 * pitch, &row).unwrap();
    assert_eq!(dtoh(&mut c, ctx, p + 7 * pitch, 1000).unwrap(), row);
    c.call(&MemFree { ctx, ptr: p }).unwrap();

    c.call(&MemFree { ctx, ptr: a }).unwrap();
    c.call(&MemFree { ctx, ptr: b }).unwrap();
}

#[test]
fn ranges_outside_the_session_are_refused() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let ctx = ctx(&mut c);
    let size = 4 * MIB;
    let a = alloc(&mut c, ctx, size);
    let end = a + size;

    // One byte past the end, in every direction.
    assert_eq!(status(htod(&mut c, ctx, end - 1, &[1, 2])), INVALID_VALUE);
    assert_eq!(status(htod(&mut c, ctx, end, &[1])), INVALID_VALUE);
    assert_eq!(status(htod(&mut c, ctx, a - 1, &[1])), INVALID_VALUE);
    assert_eq!(status(dtoh(&mut c, ctx, end - 10, 11)), INVALID_VALUE);
    let dd = |c: &mut Client, dst, src, size| {
        c.call(&MemcpyDtoD {
            ctx,
            dst,
            src,
            size,
        })
    };
    assert_eq!(status(dd(&mut c, a, end - 10, 11)), INVALID_VALUE);
    assert_eq!(status(dd(&mut c, end - 10, a, 11)), INVALID_VALUE);
    let ms = c.call(&Memset {
        ctx,
        dst: end - 8,
        pitch: 0,
        value: 0,
        elem_size: 4,
        width: 3,
        height: 1,
    });
    assert_eq!(status(ms), INVALID_VALUE);
    // A 2D footprint whose last row runs one byte past the end.
    let ms = c.call(&Memset {
        ctx,
        dst: a + 1,
        pitch: MIB,
        value: 0,
        elem_size: 1,
        width: MIB,
        height: 4,
    });
    assert_eq!(status(ms), INVALID_VALUE);
    // Addresses that wrap, and address 0.
    assert_eq!(status(dtoh(&mut c, ctx, u64::MAX - 3, 8)), INVALID_VALUE);
    assert_eq!(status(htod(&mut c, ctx, 0, &[0; 16])), INVALID_VALUE);

    // Payloads above the chunk size.
    let big = vec![0u8; (COPY_CHUNK + MIB) as usize];
    assert_eq!(status(htod(&mut c, ctx, a, &big)), INVALID_VALUE);
    assert_eq!(status(dtoh(&mut c, ctx, a, COPY_CHUNK + 1)), INVALID_VALUE);

    // Another session's allocation. Its worker is another process, whose
    // addresses may coincide with ours; one that lies inside our range would
    // rightly be ours to use, so allocate until one lies outside it.
    let mut other = d.connect();
    let octx = self::ctx(&mut other);
    let _pad = alloc(&mut other, octx, 64 * MIB);
    let theirs = (0..8)
        .map(|_| alloc(&mut other, octx, MIB))
        .find(|&p| p + MIB <= a || p >= end)
        .expect("eight allocations of the other session all inside this session's range");
    htod(&mut other, octx, theirs, &[42; 64]).unwrap();
    assert_eq!(status(htod(&mut c, ctx, theirs, &[0; 64])), INVALID_VALUE);
    assert_eq!(status(dtoh(&mut c, ctx, theirs, 64)), INVALID_VALUE);
    assert_eq!(status(c.call(&MemFree { ctx, ptr: theirs })), INVALID_VALUE);
    assert_eq!(dtoh(&mut other, octx, theirs, 64).unwrap(), vec![42; 64]);

    // Frees: an interior pointer, a never-allocated one, a double free.
    assert_eq!(status(c.call(&MemFree { ctx, ptr: a + 8 })), INVALID_VALUE);
    assert_eq!(
        status(c.call(&MemFree {
            ctx,
            ptr: 0xdead_0000
        })),
        INVALID_VALUE
    );
    c.call(&MemFree { ctx, ptr: a }).unwrap();
    assert_eq!(status(c.call(&MemFree { ctx, ptr: a })), INVALID_VALUE);
    // Freed memory is no longer the session's.
    assert_eq!(status(htod(&mut c, ctx, a, &[1])), INVALID_VALUE);

    // Memory of a destroyed context went with it.
    let ctx2 = self::ctx(&mut c);
    let p = alloc(&mut c, ctx2, MIB);
    htod(&mut c, ctx2, p, &[1; 8]).unwrap();
    c.call(&CtxDestroy { ctx: ctx2 }).unwrap();
    assert_eq!(status(htod(&mut c, ctx, p, &[1; 8])), INVALID_VALUE);

    // The session is intact after all that.
    let q = alloc(&mut c, ctx, MIB);
    htod(&mut c, ctx, q, &[9; 9]).unwrap();
    assert_eq!(dtoh(&mut c, ctx, q, 9).unwrap(), vec![9; 9]);
    let log = d.wait_log(&["outside this session's memory"], Duration::from_secs(5));
    assert!(log.contains("refused"), "{log}");
}

#[test]
fn streams_and_async_copies() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let ctx = ctx(&mut c);
    let a = alloc(&mut c, ctx, MIB);

    // A stream handle that was never minted.
    let bogus = MemcpyHtoDAsync {
        ctx,
        stream: 0x5700_0000_0000_1234,
        dst: a,
        data: Bytes(vec![1; 8]),
    };
    assert_eq!(deferred(&mut c, &bogus), INVALID_HANDLE);
    assert_eq!(
        status(c.call(&StreamSynchronize { stream: 12345 })),
        INVALID_HANDLE
    );

    // The legacy default stream.
    let data = pattern(64 * 1024, 5);
    // Queued: whether it worked is the next collecting call's answer.
    let r = c
        .call(&MemcpyHtoDAsync {
            ctx,
            stream: STREAM_LEGACY,
            dst: a,
            data: Bytes(data.clone()),
        })
        .and_then(|()| c.call(&Flush {}));
    ok(r, "async copy on CU_STREAM_LEGACY");
    let back = c
        .call(&MemcpyDtoHAsync {
            ctx,
            stream: STREAM_LEGACY,
            src: a,
            size: data.len() as u64,
        })
        .unwrap();
    assert_eq!(back.0, data);
    // The built-in streams (and 0) can be waited for and polled; these
    // calls name no context, so the session's contexts all answer.
    for builtin in [0, STREAM_LEGACY, 2] {
        c.call(&StreamSynchronize { stream: builtin }).unwrap();
        match c.call(&StreamQuery { stream: builtin }) {
            Ok(()) | Err(CallError::Status(NOT_READY)) => {}
            other => panic!("stream {builtin}: {other:?}"),
        }
    }

    let s = ok(
        c.call(&StreamCreate {
            ctx,
            flags: 0,
            priority: 0,
        }),
        "cuStreamCreateWithPriority",
    );
    assert_eq!(s >> 56, 0x57, "stream handles carry the stream tag");
    let data = pattern(MIB as usize, 11);
    c.call(&MemcpyHtoDAsync {
        ctx,
        stream: s,
        dst: a,
        data: Bytes(data.clone()),
    })
    .unwrap();
    c.call(&MemsetAsync {
        ctx,
        stream: s,
        dst: a,
        pitch: 0,
        value: 0x77,
        elem_size: 1,
        width: 16,
        height: 1,
    })
    .unwrap();
    c.call(&StreamSynchronize { stream: s }).unwrap();
    match c.call(&StreamQuery { stream: s }) {
        Ok(()) => {}
        Err(CallError::Status(NOT_READY)) => {}
        other => panic!("{other:?}"),
    }
    let back = c
        .call(&MemcpyDtoHAsync {
            ctx,
            stream: s,
            src: a,
            size: MIB,
        })
        .unwrap();
    assert_eq!(&back.0[..16], &[0x77; 16]);
    assert_eq!(&back.0[16..], &data[16..]);
    // Range checks hold on streams too.
    let past = c.call(&MemcpyDtoHAsync {
        ctx,
        stream: s,
        src: a + 1,
        size: MIB,
    });
    assert_eq!(status(past), INVALID_VALUE);
    c.call(&StreamDestroy { stream: s }).unwrap();
    assert_eq!(status(c.call(&StreamQuery { stream: s })), INVALID_HANDLE);
    assert_eq!(status(c.call(&StreamDestroy { stream: s })), INVALID_HANDLE);
    // A stream goes with its context.
    let ctx2 = self::ctx(&mut c);
    let s2 = c
        .call(&StreamCreate {
            ctx: ctx2,
            flags: 1,
            priority: 0,
        })
        .unwrap();
    c.call(&StreamSynchronize { stream: s2 }).unwrap();
    c.call(&CtxDestroy { ctx: ctx2 }).unwrap();
    assert_eq!(
        status(c.call(&StreamSynchronize { stream: s2 })),
        INVALID_HANDLE
    );
}

#[test]
fn async_copy_errors_are_reported_where_cuda_reports_them() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let ctx = ctx(&mut c);
    let a = alloc(&mut c, ctx, MIB);
    let s = c
        .call(&StreamCreate {
            ctx,
            flags: 0,
            priority: 0,
        })
        .unwrap();
    // An async copy running past the allocation is queued without a reply
    // (a reply would throw the next call's sequence off) ...
    c.call(&MemcpyHtoDAsync {
        ctx,
        stream: s,
        dst: a + MIB - 4,
        data: Bytes(vec![1; 8]),
    })
    .unwrap();
    // ... not reported by a call that does not synchronize ...
    c.call(&MemGetInfo { ctx }).unwrap();
    // ... but by the next synchronize, once.
    assert_eq!(
        status(c.call(&StreamSynchronize { stream: s })),
        INVALID_VALUE
    );
    c.call(&StreamSynchronize { stream: s }).unwrap();

    // A synchronous copy through host memory reports an earlier deferred
    // error; a device-side one does not.
    let memset = MemsetAsync {
        ctx,
        stream: s,
        dst: a + MIB,
        pitch: 0,
        value: 0,
        elem_size: 1,
        width: 16,
        height: 1,
    };
    c.call(&memset).unwrap();
    c.call(&MemcpyDtoD {
        ctx,
        dst: a + 64,
        src: a,
        size: 16,
    })
    .unwrap();
    assert_eq!(status(dtoh(&mut c, ctx, a, 16)), INVALID_VALUE);
    assert_eq!(dtoh(&mut c, ctx, a, 16).unwrap().len(), 16);
    c.call(&memset).unwrap();
    assert_eq!(status(htod(&mut c, ctx, a, &[5; 16])), INVALID_VALUE);
    htod(&mut c, ctx, a, &[5; 16]).unwrap();
    assert_eq!(dtoh(&mut c, ctx, a, 16).unwrap(), vec![5; 16]);
}

fn device_prop() -> MemAllocProp {
    MemAllocProp {
        alloc_type: 1,    // CU_MEM_ALLOCATION_TYPE_PINNED
        location_type: 1, // CU_MEM_LOCATION_TYPE_DEVICE
        location_id: 0,
        ..Default::default()
    }
}

#[test]
fn vmm_sequence() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let ctx = c.call(&PrimaryCtxRetain { device: 0 }).unwrap();
    let g = ok(
        c.call(&MemGetAllocationGranularity {
            prop: device_prop(),
            option: 0,
        }),
        "VMM (cuMemGetAllocationGranularity)",
    );
    assert!(g.is_power_of_two(), "granularity {g}");
    let size = 2 * g;
    let va = ok(
        c.call(&MemAddressReserve {
            size: 2 * size,
            alignment: 0,
            addr: 0,
            flags: 0,
        }),
        "cuMemAddressReserve",
    );
    let h = ok(
        c.call(&MemCreate {
            size,
            prop: device_prop(),
            flags: 0,
        }),
        "cuMemCreate",
    );
    // A device that does not exist is refused before the driver sees it.
    let bad = c.call(&MemCreate {
        size,
        prop: MemAllocProp {
            location_id: 9,
            ..device_prop()
        },
        flags: 0,
    });
    assert_eq!(
        status(bad),
        Status::Cuda(CUresult::CUDA_ERROR_INVALID_DEVICE)
    );

    // Mapping: only inside the reservation, never over another mapping.
    let outside = c.call(&MemMap {
        ptr: va + 2 * size - g,
        size,
        offset: 0,
        handle: h,
        flags: 0,
    });
    assert_eq!(status(outside), INVALID_VALUE);
    assert_eq!(
        status(c.call(&MemMap {
            ptr: va,
            size,
            offset: 0,
            handle: h ^ 1,
            flags: 0
        })),
        INVALID_VALUE
    );
    c.call(&MemMap {
        ptr: va,
        size,
        offset: 0,
        handle: h,
        flags: 0,
    })
    .unwrap();
    assert_eq!(
        status(c.call(&MemMap {
            ptr: va + g,
            size: g,
            offset: 0,
            handle: h,
            flags: 0
        })),
        INVALID_VALUE
    );

    // Mapped but not yet accessible: copies are refused.
    assert_eq!(status(htod(&mut c, ctx, va, &[1; 16])), INVALID_VALUE);
    assert_eq!(status(dtoh(&mut c, ctx, va, 16)), INVALID_VALUE);

    let rw = MemAccess {
        location_type: 1,
        location_id: 0,
        flags: 3,
    };
    c.call(&MemSetAccess {
        ptr: va,
        size,
        access: vec![rw.clone()],
    })
    .unwrap();
    let flags = c
        .call(&MemGetAccess {
            location_type: 1,
            location_id: 0,
            ptr: va,
        })
        .unwrap();
    assert_eq!(flags, 3);
    // Access on the unmapped half of the reservation is refused.
    assert_eq!(
        status(c.call(&MemSetAccess {
            ptr: va + size,
            size,
            access: vec![rw]
        })),
        INVALID_VALUE
    );

    let data = pattern(size.min(COPY_CHUNK) as usize, 17);
    htod(&mut c, ctx, va, &data).unwrap();
    assert_eq!(dtoh(&mut c, ctx, va, data.len() as u64).unwrap(), data);
    // The unmapped rest of the reservation is not memory.
    assert_eq!(
        status(htod(&mut c, ctx, va + size - 1, &[0, 0])),
        INVALID_VALUE
    );

    // Unmap: whole mappings only; then the range is gone for copies.
    assert_eq!(
        status(c.call(&MemUnmap { ptr: va, size: g })),
        INVALID_VALUE
    );
    // The address range cannot be freed while mapped.
    assert_eq!(
        status(c.call(&MemAddressFree {
            ptr: va,
            size: 2 * size
        })),
        INVALID_VALUE
    );
    c.call(&MemUnmap { ptr: va, size }).unwrap();
    assert_eq!(status(dtoh(&mut c, ctx, va, 16)), INVALID_VALUE);
    assert_eq!(status(c.call(&MemUnmap { ptr: va, size })), INVALID_VALUE);
    c.call(&MemRelease { handle: h }).unwrap();
    assert_eq!(status(c.call(&MemRelease { handle: h })), INVALID_VALUE);
    assert_eq!(
        status(c.call(&MemAddressFree { ptr: va, size })),
        INVALID_VALUE,
        "must match the reservation"
    );
    c.call(&MemAddressFree {
        ptr: va,
        size: 2 * size,
    })
    .unwrap();
    assert_eq!(
        status(c.call(&MemAddressFree {
            ptr: va,
            size: 2 * size
        })),
        INVALID_VALUE
    );
}

#[test]
fn mem_pool_alloc_and_free_async() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let ctx = ctx(&mut c);
    assert_eq!(
        status(c.call(&DeviceGetDefaultMemPool { device: 3 })),
        Status::Cuda(CUresult::CUDA_ERROR_INVALID_DEVICE)
    );
    assert_eq!(
        status(c.call(&MemPoolTrimTo {
            pool: 0x9e00_0000_0000_0001,
            keep: 0
        })),
        INVALID_HANDLE
    );
    let pool = ok(
        c.call(&DeviceGetDefaultMemPool { device: 0 }),
        "cuDeviceGetDefaultMemPool",
    );
    assert_eq!(
        c.call(&DeviceGetDefaultMemPool { device: 0 }).unwrap(),
        pool
    );
    let p = ok(
        c.call(&MemAllocAsync {
            ctx,
            stream: 0,
            size: 2 * MIB,
        }),
        "cuMemAllocAsync",
    );
    let data = pattern(4096, 23);
    htod(&mut c, ctx, p + MIB, &data).unwrap();
    assert_eq!(dtoh(&mut c, ctx, p + MIB, 4096).unwrap(), data);
    assert_eq!(status(htod(&mut c, ctx, p + 2 * MIB, &[1])), INVALID_VALUE);

    // 8-byte attribute (release threshold) round-trips; unknown ones refused.
    ok(
        c.call(&MemPoolSetAttribute {
            pool,
            attr: 4,
            value: 64 * MIB,
        }),
        "cuMemPoolSetAttribute",
    );
    assert_eq!(
        c.call(&MemPoolGetAttribute { pool, attr: 4 }).unwrap(),
        64 * MIB
    );
    assert_eq!(
        status(c.call(&MemPoolGetAttribute { pool, attr: 999 })),
        INVALID_VALUE
    );
    // A 4-byte attribute cannot take a value wider than 32 bits.
    assert_eq!(
        status(c.call(&MemPoolSetAttribute {
            pool,
            attr: 2,
            value: 1 << 40
        })),
        INVALID_VALUE
    );

    // Plain allocations may be freed in stream order too; interior and
    // foreign pointers may not.
    let plain = alloc(&mut c, ctx, MIB);
    assert_eq!(
        deferred(
            &mut c,
            &MemFreeAsync {
                ctx,
                stream: 0,
                ptr: plain + 16
            }
        ),
        INVALID_VALUE
    );
    c.call(&MemFreeAsync {
        ctx,
        stream: 0,
        ptr: plain,
    })
    .unwrap();
    assert_eq!(status(htod(&mut c, ctx, plain, &[1])), INVALID_VALUE);
    c.call(&MemFreeAsync {
        ctx,
        stream: 0,
        ptr: p,
    })
    .unwrap();
    assert_eq!(status(htod(&mut c, ctx, p, &[1])), INVALID_VALUE);
    assert_eq!(
        deferred(
            &mut c,
            &MemFreeAsync {
                ctx,
                stream: 0,
                ptr: p
            }
        ),
        INVALID_VALUE
    );
    ok(c.call(&MemPoolTrimTo { pool, keep: 0 }), "cuMemPoolTrimTo");
}

#[test]
fn quota_caps_allocations_and_reports() {
    let d = Daemon::start(&["--quota-mib", "1024"]);
    let mut c = d.connect();
    let inv = c.call(&GetInventory {}).unwrap();
    assert_eq!(inv.devices[0].total_mem, 1024 * MIB);
    let m = c
        .call(&NvmlQuery {
            device: 0,
            kind: nvml_kind::MEMORY,
            arg0: 0,
            arg1: 0,
        })
        .unwrap();
    assert_eq!(m.ints[0], 1024 * MIB);

    let ctx = ctx(&mut c);
    let (free, total) = c.call(&MemGetInfo { ctx }).unwrap();
    assert_eq!(total, 1024 * MIB);
    assert_eq!(free, 1024 * MIB);
    assert_eq!(
        status(c.call(&MemAlloc {
            ctx,
            size: 2048 * MIB
        })),
        OUT_OF_MEMORY
    );
    let a = alloc(&mut c, ctx, 768 * MIB);
    let (free, total) = c.call(&MemGetInfo { ctx }).unwrap();
    assert_eq!((free, total), (256 * MIB, 1024 * MIB));
    assert_eq!(
        status(c.call(&MemAlloc {
            ctx,
            size: 257 * MIB
        })),
        OUT_OF_MEMORY
    );
    let b = alloc(&mut c, ctx, 256 * MIB);
    assert_eq!(status(c.call(&MemAlloc { ctx, size: MIB })), OUT_OF_MEMORY);
    // Every kind of allocation counts against the same cap.
    let pooled = c.call(&MemAllocAsync {
        ctx,
        stream: 0,
        size: MIB,
    });
    assert_eq!(status(pooled), OUT_OF_MEMORY);
    let vmm = c.call(&MemCreate {
        size: 2 * MIB,
        prop: device_prop(),
        flags: 0,
    });
    assert_eq!(status(vmm), OUT_OF_MEMORY);
    c.call(&MemFree { ctx, ptr: a }).unwrap();
    c.call(&MemFree { ctx, ptr: b }).unwrap();
    let (free, _) = c.call(&MemGetInfo { ctx }).unwrap();
    assert_eq!(free, 1024 * MIB);

    // Pool and VMM allocations are charged until they are really gone: a
    // released physical allocation that is still mapped is still memory.
    let p = c
        .call(&MemAllocAsync {
            ctx,
            stream: 0,
            size: 100 * MIB,
        })
        .unwrap();
    let h = c
        .call(&MemCreate {
            size: 200 * MIB,
            prop: device_prop(),
            flags: 0,
        })
        .unwrap();
    assert_eq!(c.call(&MemGetInfo { ctx }).unwrap().0, 724 * MIB);
    let va = c
        .call(&MemAddressReserve {
            size: 200 * MIB,
            alignment: 0,
            addr: 0,
            flags: 0,
        })
        .unwrap();
    c.call(&MemMap {
        ptr: va,
        size: 200 * MIB,
        offset: 0,
        handle: h,
        flags: 0,
    })
    .unwrap();
    c.call(&MemRelease { handle: h }).unwrap();
    assert_eq!(c.call(&MemGetInfo { ctx }).unwrap().0, 724 * MIB);
    c.call(&MemUnmap {
        ptr: va,
        size: 200 * MIB,
    })
    .unwrap();
    c.call(&MemFreeAsync {
        ctx,
        stream: 0,
        ptr: p,
    })
    .unwrap();
    assert_eq!(c.call(&MemGetInfo { ctx }).unwrap().0, 1024 * MIB);
    // Without a quota option the whole device is there.
    let d2 = Daemon::start(&[]);
    let mut c2 = d2.connect();
    let ctx2 = self::ctx(&mut c2);
    assert!(c2.call(&MemGetInfo { ctx: ctx2 }).unwrap().1 > 1024 * MIB);
}

#[test]
fn disconnect_returns_everything() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let session = c.hello.session;
    let ctx = ctx(&mut c);
    let (free0, _) = c.call(&MemGetInfo { ctx }).unwrap();
    let a = alloc(&mut c, ctx, 512 * MIB);
    alloc(&mut c, ctx, 256 * MIB);
    htod(&mut c, ctx, a, &[1; 4096]).unwrap();
    let (free1, _) = c.call(&MemGetInfo { ctx }).unwrap();
    assert!(free1 <= free0 - 768 * MIB, "{free0} -> {free1}");
    // Left behind too: a stream with a pool allocation ordered on it, and
    // two mapped, accessible VMM allocations in one reservation.
    let s = c
        .call(&StreamCreate {
            ctx,
            flags: 0,
            priority: 0,
        })
        .unwrap();
    c.call(&MemAllocAsync {
        ctx,
        stream: s,
        size: 4 * MIB,
    })
    .unwrap();
    let g = c
        .call(&MemGetAllocationGranularity {
            prop: device_prop(),
            option: 0,
        })
        .unwrap();
    let va = c
        .call(&MemAddressReserve {
            size: 4 * g,
            alignment: 0,
            addr: 0,
            flags: 0,
        })
        .unwrap();
    for i in 0..2 {
        let h = c
            .call(&MemCreate {
                size: g,
                prop: device_prop(),
                flags: 0,
            })
            .unwrap();
        c.call(&MemMap {
            ptr: va + i * g,
            size: g,
            offset: 0,
            handle: h,
            flags: 0,
        })
        .unwrap();
    }
    c.call(&MemSetAccess {
        ptr: va,
        size: 2 * g,
        access: vec![MemAccess {
            location_type: 1,
            location_id: 0,
            flags: 3,
        }],
    })
    .unwrap();
    // One copy across both mappings: adjacent mappings form one range.
    htod(&mut c, ctx, va + g - 8, &[5; 16]).unwrap();
    assert_eq!(dtoh(&mut c, ctx, va + g - 8, 16).unwrap(), vec![5; 16]);
    drop(c);
    let line = d.wait_log(
        &[&format!("session {session}: freed 3 allocation(s)")],
        Duration::from_secs(10),
    );
    assert!(
        line.contains(
            "destroyed 1 stream(s), unmapped 2 VMM mapping(s), released 2 VMM \
             allocation(s), freed 1 address reservation(s)"
        ),
        "{line}"
    );
    d.wait_log(
        &[&format!("session {session}: released 1 context(s)")],
        Duration::from_secs(10),
    );
    let mut c = d.connect();
    let ctx = self::ctx(&mut c);
    let (free2, _) = c.call(&MemGetInfo { ctx }).unwrap();
    assert_eq!(free2, free0);
}

#[test]
fn hostile_arguments_are_errors_not_crashes() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let ctx = ctx(&mut c);
    let a = alloc(&mut c, ctx, MIB);
    let max = u64::MAX;
    let mut fails: Vec<(&str, Status)> = Vec::new();
    macro_rules! refused {
        ($call:expr) => {{
            let r = c.call(&$call);
            fails.push((stringify!($call), status(r)));
        }};
    }
    refused!(MemAlloc { ctx, size: max });
    refused!(MemAllocPitch {
        ctx,
        width: max,
        height: 2,
        elem_size: 4
    });
    refused!(MemcpyDtoD {
        ctx,
        dst: a,
        src: a,
        size: max
    });
    refused!(MemcpyDtoD {
        ctx,
        dst: max,
        src: a,
        size: 2
    });
    refused!(Memset {
        ctx,
        dst: a,
        pitch: 0,
        value: 0,
        elem_size: 4,
        width: max,
        height: 1
    });
    refused!(Memset {
        ctx,
        dst: a,
        pitch: max,
        value: 0,
        elem_size: 1,
        width: 1,
        height: 3
    });
    refused!(Memcpy2DDtoH {
        ctx,
        src: a,
        src_pitch: 1 << 32,
        width: 1 << 32,
        height: 1 << 32
    });
    refused!(Memcpy2DDtoH {
        ctx,
        src: a,
        src_pitch: COPY_CHUNK,
        width: COPY_CHUNK,
        height: 2
    });
    refused!(Memcpy2DDtoD {
        ctx,
        dst: a,
        dst_pitch: 16,
        src: a,
        src_pitch: max,
        width: 16,
        height: 2
    });
    refused!(MemGetAddressRange { ctx, ptr: max });
    refused!(MemMap {
        ptr: max - 10,
        size: max,
        offset: max,
        handle: max,
        flags: 0
    });
    refused!(MemUnmap { ptr: a, size: 0 });
    refused!(MemUnmap { ptr: a, size: MIB });
    refused!(MemAddressFree { ptr: 0, size: 0 });
    refused!(MemSetAccess {
        ptr: a,
        size: MIB,
        access: vec![MemAccess {
            location_type: 1,
            location_id: -1,
            flags: 3
        }]
    });
    refused!(MemGetAccess {
        location_type: 1,
        location_id: 0,
        ptr: max
    });
    refused!(MemGetAllocationGranularity {
        prop: MemAllocProp {
            location_id: 1000,
            ..device_prop()
        },
        option: 0
    });
    refused!(MemCreate {
        size: max,
        prop: device_prop(),
        flags: 0
    });
    refused!(MemRelease { handle: 0 });
    refused!(StreamDestroy { stream: 0 });
    refused!(StreamQuery { stream: 3 });
    refused!(MemAllocAsync {
        ctx,
        stream: 0,
        size: max
    });
    let free = MemFreeAsync {
        ctx,
        stream: 0,
        ptr: a + 1,
    };
    fails.push(("MemFreeAsync", deferred(&mut c, &free)));
    refused!(MemPoolGetAttribute { pool: 0, attr: 4 });
    refused!(MemPoolSetAttribute {
        pool: max,
        attr: 0,
        value: 0
    });
    // A foreign kind of handle where a context is expected.
    let s = c
        .call(&StreamCreate {
            ctx,
            flags: 0,
            priority: 0,
        })
        .unwrap();
    refused!(MemAlloc { ctx: s, size: 16 });
    refused!(MemcpyDtoH {
        ctx: s,
        src: a,
        size: 1
    });
    refused!(MemcpyDtoHAsync {
        ctx,
        stream: ctx,
        src: a,
        size: 1
    });
    // Refused by CUDA's rules, never by a handler failing (HOST_ERROR).
    for (what, st) in &fails {
        assert!(matches!(st, Status::Cuda(_)), "{what}: {st}");
    }
    // The worker is unharmed and the allocation intact.
    htod(&mut c, ctx, a, &[3; 3]).unwrap();
    assert_eq!(dtoh(&mut c, ctx, a, 3).unwrap(), vec![3; 3]);
    assert!(!d.logs().contains("panicked"), "{}", d.logs());
}
