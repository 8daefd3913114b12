//! The virtual memory management calls (`cuMemCreate`, `cuMemMap` ...),
//! which ggml-cuda and PyTorch import by name. All are forwarded; the
//! allocation handle an application holds is the host's u64 unchanged.
//! Device ordinals in `CUmemLocation`s are translated to the host's indices
//! (CUDA_VISIBLE_DEVICES may reorder them), and every mapping is entered in
//! the device table so copies and pointer attributes treat it as device
//! memory.
//!
//! `CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED` is the host's
//! answer, unless the host turns out unable to serve these calls (an older
//! daemon answers them "unknown op"): then it reads 0, because an
//! application that sees 1 will build its whole allocator on them.

use crate::check::{self, reject, INVALID_VALUE, NOT_SUPPORTED};
use crate::devmem::{self, Kind, Range};
use crate::driver::{self, Device};
use cuda_types::cuda::{
    CUdevice, CUdeviceptr, CUmemAccessDesc, CUmemAllocationGranularity_flags, CUmemAllocationProp,
    CUmemAllocationType, CUmemGenericAllocationHandle, CUmemLocation, CUmemLocationType, CUresult,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::c_ulonglong;
use std::sync::OnceLock;
use vgpu_ffi::{In, Out};
use vgpu_guest::log::Level;
use vgpu_guest::vlog;
use vgpu_transport::proto::{
    MemAccess, MemAddressFree, MemAddressReserve, MemAllocProp, MemCreate, MemGetAccess,
    MemGetAllocationGranularity, MemMap, MemRelease, MemSetAccess, MemUnmap,
};

const ATTR_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED: i32 = 102;

/// What the guest knows of an allocation handle.
#[derive(Debug, Clone, Copy)]
struct Handle {
    size: u64,
    /// Guest ordinal of the device it lives on.
    device: CUdevice,
}

#[derive(Default)]
struct State {
    handles: HashMap<u64, Handle>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> R {
    f(STATE.lock().get_or_insert_with(State::default))
}

/// The id of a location (a device ordinal for device locations).
fn location_id(l: &CUmemLocation) -> i32 {
    // SAFETY: both union members are plain integers over the same bytes;
    // every bit pattern is a valid c_int.
    unsafe { l.__bindgen_anon_1.id }
}

/// A guest location as the host names it: device ordinals become host
/// indices. Host (guest-RAM) locations cannot be served by a remote GPU.
fn wire_location(l: &CUmemLocation, what: &str) -> Result<(u32, i32), CUresult> {
    match l.type_ {
        CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE => {
            let dev = Device::new(location_id(l)).map_err(|e| {
                reject(
                    e,
                    format_args!("{what}: device {} is not visible", location_id(l)),
                )
            })?;
            Ok((l.type_.0, dev.host()))
        }
        CUmemLocationType::CU_MEM_LOCATION_TYPE_HOST
        | CUmemLocationType::CU_MEM_LOCATION_TYPE_HOST_NUMA
        | CUmemLocationType::CU_MEM_LOCATION_TYPE_HOST_NUMA_CURRENT => Err(reject(
            NOT_SUPPORTED,
            format_args!("{what}: host-memory locations cannot be reached by the remote GPU"),
        )),
        t => Err(reject(
            INVALID_VALUE,
            format_args!("{what}: location type {}", t.0),
        )),
    }
}

/// The wire form of an allocation property, and the guest ordinal of its
/// device.
fn wire_prop(
    prop: In<CUmemAllocationProp>,
    what: &str,
) -> Result<(MemAllocProp, CUdevice), CUresult> {
    let p = prop.read();
    if p.type_ != CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED {
        return Err(reject(
            INVALID_VALUE,
            format_args!("{what}: allocation type {}", p.type_.0),
        ));
    }
    let (location_type, location_id) = wire_location(&p.location, what)?;
    Ok((
        MemAllocProp {
            alloc_type: p.type_.0,
            requested_handle_types: p.requestedHandleTypes.0,
            location_type,
            location_id,
            compression_type: p.allocFlags.compressionType,
            gpu_direct_rdma_capable: p.allocFlags.gpuDirectRDMACapable,
            usage: p.allocFlags.usage,
        },
        self::location_id(&p.location),
    ))
}

pub fn get_allocation_granularity(
    out: Out<usize>,
    prop: In<CUmemAllocationProp>,
    option: CUmemAllocationGranularity_flags,
) -> Result<(), CUresult> {
    let (prop, _) = wire_prop(prop, "cuMemGetAllocationGranularity")?;
    if option.0 > 1 {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuMemGetAllocationGranularity: option {}", option.0),
        ));
    }
    let g = check::host(&MemGetAllocationGranularity {
        prop,
        option: option.0,
    })?;
    out.write(g as usize);
    Ok(())
}

pub fn create(
    out: Out<CUmemGenericAllocationHandle>,
    size: usize,
    prop: In<CUmemAllocationProp>,
    flags: c_ulonglong,
) -> Result<(), CUresult> {
    let (prop, device) = wire_prop(prop, "cuMemCreate")?;
    if size == 0 || flags != 0 {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuMemCreate: {size} bytes, flags {flags:#x}"),
        ));
    }
    let h = check::host(&MemCreate {
        size: size as u64,
        prop,
        flags,
    })?;
    with_state(|s| {
        s.handles.insert(
            h,
            Handle {
                size: size as u64,
                device,
            },
        )
    });
    out.write(h);
    Ok(())
}

/// Mappings keep the physical memory alive on the host after a release;
/// the guest keeps their own table entries, so forgetting the handle here
/// loses nothing they need.
pub fn release(handle: CUmemGenericAllocationHandle) -> Result<(), CUresult> {
    let known = with_state(|s| s.handles.remove(&handle));
    let Some(h) = known else {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuMemRelease: {handle:#x} is not a live allocation handle"),
        ));
    };
    check::host(&MemRelease { handle }).inspect_err(|_| {
        with_state(|s| s.handles.insert(handle, h));
    })
}

pub fn address_reserve(
    out: Out<CUdeviceptr>,
    size: usize,
    alignment: usize,
    addr: CUdeviceptr,
    flags: c_ulonglong,
) -> Result<(), CUresult> {
    if size == 0 || (alignment != 0 && !alignment.is_power_of_two()) {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuMemAddressReserve: {size} bytes, alignment {alignment}"),
        ));
    }
    let base = check::host(&MemAddressReserve {
        size: size as u64,
        alignment: alignment as u64,
        addr,
        flags,
    })?;
    devmem::reserve(base, size as u64);
    out.write(base);
    Ok(())
}

pub fn address_free(ptr: CUdeviceptr, size: usize) -> Result<(), CUresult> {
    if !devmem::is_reservation(ptr, size as u64) {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuMemAddressFree: {ptr:#x}+{size} is not a reservation"),
        ));
    }
    check::host(&MemAddressFree {
        ptr,
        size: size as u64,
    })?;
    devmem::unreserve(ptr, size as u64);
    Ok(())
}

pub fn map(
    ptr: CUdeviceptr,
    size: usize,
    offset: usize,
    handle: CUmemGenericAllocationHandle,
    flags: c_ulonglong,
) -> Result<(), CUresult> {
    let h = with_state(|s| s.handles.get(&handle).copied()).ok_or_else(|| {
        reject(
            INVALID_VALUE,
            format_args!("cuMemMap: {handle:#x} is not a live allocation handle"),
        )
    })?;
    let fits = (offset as u64)
        .checked_add(size as u64)
        .is_some_and(|end| end <= h.size);
    if size == 0 || flags != 0 || !fits {
        return Err(reject(
            INVALID_VALUE,
            format_args!(
                "cuMemMap: {size} bytes at offset {offset} of a {}-byte allocation, flags {flags:#x}",
                h.size
            ),
        ));
    }
    check::end_of(ptr, size as u64, "cuMemMap")?;
    check::host(&MemMap {
        ptr,
        size: size as u64,
        offset: offset as u64,
        handle,
        flags,
    })?;
    let mut r = Range::new(
        ptr,
        size as u64,
        Kind::Mapped {
            handle,
            offset: offset as u64,
        },
        None,
        h.device,
    );
    // No device may touch a mapping until cuMemSetAccess grants it.
    r.access = 0;
    devmem::record(r);
    Ok(())
}

pub fn unmap(ptr: CUdeviceptr, size: usize) -> Result<(), CUresult> {
    let end = check::end_of(ptr, size as u64, "cuMemUnmap")?;
    if size == 0 {
        return Err(reject(INVALID_VALUE, format_args!("cuMemUnmap: 0 bytes")));
    }
    check::host(&MemUnmap {
        ptr,
        size: size as u64,
    })?;
    devmem::take_within(ptr, end, |r| matches!(r.kind, Kind::Mapped { .. }));
    Ok(())
}

/// # Safety
/// `desc` holds `count` readable descriptors (API contract).
pub unsafe fn set_access(
    ptr: CUdeviceptr,
    size: usize,
    desc: In<CUmemAccessDesc>,
    count: usize,
) -> Result<(), CUresult> {
    let desc = desc.as_ptr();
    if count == 0 || size == 0 || count > 1024 {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuMemSetAccess: {count} descriptors, {size} bytes"),
        ));
    }
    let end = check::end_of(ptr, size as u64, "cuMemSetAccess")?;
    let mut access = Vec::with_capacity(count);
    for i in 0..count {
        // SAFETY: the app passes `count` readable descriptors (API contract).
        let d = unsafe { desc.add(i).read_unaligned() };
        let (location_type, location_id) = wire_location(&d.location, "cuMemSetAccess")?;
        if d.flags.0 > 3 || d.flags.0 == 2 {
            return Err(reject(
                INVALID_VALUE,
                format_args!("cuMemSetAccess: flags {}", d.flags.0),
            ));
        }
        access.push(MemAccess {
            location_type,
            location_id,
            flags: d.flags.0,
        });
    }
    let granted = access.iter().map(|a| a.flags).max().unwrap_or(0);
    check::host(&MemSetAccess {
        ptr,
        size: size as u64,
        access,
    })?;
    let mut t = devmem::TABLE.write();
    let mut at = ptr;
    while let Some(r) = t.find_mut(at).filter(|_| at < end) {
        r.access = granted;
        at = r.end();
    }
    Ok(())
}

pub fn get_access(
    out: Out<c_ulonglong>,
    location: In<CUmemLocation>,
    ptr: CUdeviceptr,
) -> Result<(), CUresult> {
    let (location_type, location_id) = wire_location(&location.read(), "cuMemGetAccess")?;
    let flags = check::host(&MemGetAccess {
        location_type,
        location_id,
        ptr,
    })?;
    out.write(flags);
    Ok(())
}

/// Whether the host serves the VMM calls at all, asked once: a
/// granularity query for `dev` must succeed.
fn host_serves_vmm(dev: CUdevice) -> bool {
    static SERVED: OnceLock<bool> = OnceLock::new();
    *SERVED.get_or_init(|| {
        let Ok(host) = Device::new(dev).map(|d| d.host()) else {
            return false;
        };
        let probe = MemGetAllocationGranularity {
            prop: MemAllocProp {
                alloc_type: CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED.0,
                location_type: CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE.0,
                location_id: host,
                ..Default::default()
            },
            option: 0,
        };
        match driver::call(&probe) {
            Ok(_) => true,
            Err(e) => {
                vlog!(
                    Level::Info,
                    "the host cannot serve VMM calls (CUresult {}); reporting \
                     VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED = 0",
                    e.0
                );
                false
            }
        }
    })
}

/// The guest's one correction to the host's device attributes: VMM when
/// the host cannot serve it. (What a remote GPU cannot do for guest memory
/// the host masks for every guest: `MASKED` in its inventory.)
pub fn adjust_attribute(dev: CUdevice, attr: i32, value: i32) -> i32 {
    match attr {
        ATTR_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED if value != 0 && !host_serves_vmm(dev) => 0,
        _ => value,
    }
}
