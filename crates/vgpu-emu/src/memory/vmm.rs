//! Virtual memory management: cuMemCreate / cuMemAddressReserve / cuMemMap /
//! cuMemSetAccess and friends, as Ollama's ggml-cuda and PyTorch's
//! expandable segments use them.
//!
//! A physical allocation is a memfd of its size (sparse, so lazily backed). A
//! reservation is PROT_NONE address space. Mapping places the memfd's pages at
//! the address with MAP_SHARED, so two addresses mapping one handle alias the
//! same bytes, exactly as on the GPU. Access starts at none (the pages stay
//! PROT_NONE) and cuMemSetAccess mprotects them; the table mirrors the
//! protection so copies fail with an error instead of faulting.

use super::{charge, round_up, uncharge, Access, GRANULE, HEAP};
use crate::device::check_device;
use cuda_types::cuda::{
    CUdevice, CUdeviceptr, CUmemAccessDesc, CUmemAccess_flags, CUmemAllocationGranularity_flags,
    CUmemAllocationHandleType, CUmemAllocationProp, CUmemAllocationType,
    CUmemGenericAllocationHandle, CUmemLocation, CUmemLocationType, CUresult,
};
use std::collections::BTreeMap;
use std::ffi::{c_int, c_ulonglong, c_void};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use vgpu_ffi::{In, Mint, Out, Registry};

const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;
const NOT_SUPPORTED: CUresult = CUresult::CUDA_ERROR_NOT_SUPPORTED;
const POSIX_FD: u32 = CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR.0;

/// A physical allocation.
struct Physical {
    fd: OwnedFd,
    size: usize,
    handle_types: u32,
    /// cuMemCreate plus cuMemRetainAllocationHandle, less cuMemRelease.
    refs: u32,
    /// Mapped pieces referring to it; the memory lives until both are 0.
    maps: u32,
    /// The device (CUDA ordinal) it was created on and is charged to;
    /// `None` when imported from a shareable handle, whose exporter already
    /// accounts for it.
    charged: Option<CUdevice>,
}

/// A mapped piece of a reservation. cuMemSetAccess on part of a mapping
/// splits it, so one cuMemMap call may become several pieces; `origin` and
/// `origin_len` remember the call, which cuMemUnmap and cuMemGetAddressRange
/// work in.
struct Piece {
    len: usize,
    handle: u64,
    /// CU_MEM_ACCESS_FLAGS_PROT_*: 0 none, 1 read, 3 read-write.
    access: u32,
    origin: usize,
    origin_len: usize,
}

pub(super) struct Vmm {
    reservations: BTreeMap<usize, usize>,
    pieces: BTreeMap<usize, Piece>,
    /// Physical allocations by `CUmemGenericAllocationHandle`. A plain
    /// registry, not a `Shared` one: it changes together with the address
    /// space, under the heap's lock. An unknown handle is INVALID_VALUE.
    handles: Registry<Physical, CUresult>,
}

impl Default for Vmm {
    fn default() -> Self {
        Vmm {
            reservations: BTreeMap::new(),
            pieces: BTreeMap::new(),
            handles: Registry::new("allocation handle", INVALID_VALUE, Mint::Pointer),
        }
    }
}

/// What pointer attributes need to know about a mapped address.
pub(super) struct PieceInfo {
    pub origin: usize,
    pub origin_len: usize,
    pub access: u32,
    pub handle_types: u32,
    pub handle: u64,
    /// The device the physical memory was created on (an imported handle's
    /// is unknown here: device 0).
    pub device: CUdevice,
}

impl Vmm {
    fn piece(&self, ptr: usize) -> Option<(usize, &Piece)> {
        let (&s, p) = self.pieces.range(..=ptr).next_back()?;
        (ptr < s + p.len).then_some((s, p))
    }

    pub(super) fn is_mapped(&self, ptr: usize) -> bool {
        self.piece(ptr).is_some()
    }

    pub(super) fn info(&self, ptr: usize) -> Option<PieceInfo> {
        let (_, p) = self.piece(ptr)?;
        Some(PieceInfo {
            origin: p.origin,
            origin_len: p.origin_len,
            access: p.access,
            handle_types: self.handles.get(p.handle).map_or(0, |h| h.handle_types),
            handle: p.handle,
            device: self
                .handles
                .get(p.handle)
                .ok()
                .and_then(|h| h.charged)
                .unwrap_or(0),
        })
    }

    pub(super) fn mapping_range(&self, ptr: usize) -> Option<(usize, usize)> {
        self.piece(ptr).map(|(_, p)| (p.origin, p.origin_len))
    }

    /// `ptr..end` lies in contiguous pieces that all grant `access`: one
    /// buffer of a VMM pool may span several cuMemMap calls.
    pub(super) fn check_range(
        &self,
        ptr: usize,
        end: usize,
        access: Access,
    ) -> Result<(), CUresult> {
        let (mut at, _) = self.piece(ptr).ok_or(INVALID_VALUE)?;
        loop {
            let p = self.pieces.get(&at).ok_or(INVALID_VALUE)?;
            let ok = match access {
                Access::Read => p.access & 1 != 0,
                Access::Write => p.access == 3,
            };
            if !ok {
                return Err(INVALID_VALUE);
            }
            at += p.len;
            if end <= at {
                return Ok(());
            }
        }
    }

    pub(super) fn overlaps(&self, start: usize, end: usize) -> bool {
        self.reservations
            .range(..end)
            .next_back()
            .is_some_and(|(&s, &len)| s + len > start)
    }

    /// The reservation holding all of `ptr..ptr+len`.
    fn reserved(&self, ptr: usize, len: usize) -> bool {
        self.reservations
            .range(..=ptr)
            .next_back()
            .is_some_and(|(&s, &l)| ptr + len <= s + l)
    }

    /// Start addresses of the pieces exactly tiling `ptr..ptr+len`.
    fn tiling(&self, ptr: usize, len: usize) -> Result<Vec<usize>, CUresult> {
        let end = ptr.checked_add(len).ok_or(INVALID_VALUE)?;
        let mut out = Vec::new();
        let mut at = ptr;
        while at < end {
            let p = self.pieces.get(&at).ok_or(INVALID_VALUE)?;
            out.push(at);
            at += p.len;
        }
        if at == end {
            Ok(out)
        } else {
            Err(INVALID_VALUE)
        }
    }

    /// Splits the piece containing `at` so a piece starts exactly at `at`.
    fn split_at(&mut self, at: usize) -> Result<(), CUresult> {
        let (s, p) = self.piece(at).ok_or(INVALID_VALUE)?;
        if s == at {
            return Ok(());
        }
        let cut = at - s;
        let tail = Piece {
            len: p.len - cut,
            handle: p.handle,
            access: p.access,
            origin: p.origin,
            origin_len: p.origin_len,
        };
        let handle = p.handle;
        self.pieces.get_mut(&s).expect("found above").len = cut;
        self.pieces.insert(at, tail);
        self.handles
            .get_mut(handle)
            .expect("mapped handles exist")
            .maps += 1;
        Ok(())
    }

    /// Drops one reference (a handle ref or a mapped piece) and frees the
    /// memory when none is left.
    fn settle(&mut self, handle: u64) {
        let done = self
            .handles
            .get(handle)
            .is_ok_and(|h| h.refs == 0 && h.maps == 0);
        if done {
            let h = self.handles.take(handle).expect("checked above");
            if let Some(dev) = h.charged {
                uncharge(dev, h.size);
            }
        }
    }

    /// Puts PROT_NONE reservation back over a piece and forgets it.
    fn unmap_piece(&mut self, at: usize) {
        let p = self.pieces.remove(&at).expect("caller found it");
        restore_reservation(at, p.len);
        if let Ok(h) = self.handles.get_mut(p.handle) {
            h.maps -= 1;
        }
        self.settle(p.handle);
    }
}

/// Inaccessible, unbacked address space at `addr` (MAP_FIXED), or anywhere.
fn map_none(addr: usize, len: usize, fixed: bool) -> *mut c_void {
    let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    if fixed {
        flags |= libc::MAP_FIXED;
    } else if addr != 0 {
        flags |= libc::MAP_FIXED_NOREPLACE;
    }
    // SAFETY: with MAP_FIXED the caller passes a range of a reservation this
    // module owns (nothing else lives there); otherwise the kernel picks a
    // free range or, with NOREPLACE, refuses to touch an occupied one.
    unsafe { libc::mmap(addr as *mut c_void, len, libc::PROT_NONE, flags, -1, 0) }
}

fn restore_reservation(at: usize, len: usize) {
    // Replacing the shared pages is what drops this address's reference to
    // them; failure would leave memory aliased, so it must not be ignored.
    let p = map_none(at, len, true);
    assert!(
        p != libc::MAP_FAILED,
        "vgpu-emu: cannot restore a VMM reservation"
    );
}

pub(super) fn check_location(loc: &CUmemLocation) -> Result<(), CUresult> {
    match loc.type_ {
        CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE => {
            // SAFETY: `id` is the union member for DEVICE locations; every
            // bit pattern is a valid int.
            check_device(unsafe { loc.__bindgen_anon_1.id })
        }
        // Host-located VMM memory (HOST_VIRTUAL_MEMORY_MANAGEMENT) is not
        // emulated.
        CUmemLocationType::CU_MEM_LOCATION_TYPE_HOST
        | CUmemLocationType::CU_MEM_LOCATION_TYPE_HOST_NUMA
        | CUmemLocationType::CU_MEM_LOCATION_TYPE_HOST_NUMA_CURRENT => Err(NOT_SUPPORTED),
        _ => Err(INVALID_VALUE),
    }
}

fn check_prop(prop: In<CUmemAllocationProp>) -> Result<CUmemAllocationProp, CUresult> {
    let p = prop.read();
    if p.type_ != CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED {
        return Err(INVALID_VALUE);
    }
    check_location(&p.location)?;
    Ok(p)
}

/// Both the minimum and the recommended granularity are the 2 MiB page.
pub fn get_allocation_granularity(
    granularity: Out<usize>,
    prop: In<CUmemAllocationProp>,
    option: CUmemAllocationGranularity_flags,
) -> Result<(), CUresult> {
    if option.0 > 1 {
        return Err(INVALID_VALUE);
    }
    check_prop(prop)?;
    granularity.write(GRANULE);
    Ok(())
}

fn memfd(size: usize) -> Result<OwnedFd, CUresult> {
    // SAFETY: the name is a NUL-terminated literal; no memory is touched.
    let fd = unsafe { libc::memfd_create(c"vgpu-vmm".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(CUresult::CUDA_ERROR_OUT_OF_MEMORY);
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // Sizing a memfd allocates nothing: pages appear when first touched.
    // SAFETY: a valid fd; ftruncate only changes the file's size.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) } != 0 {
        return Err(CUresult::CUDA_ERROR_OUT_OF_MEMORY);
    }
    Ok(fd)
}

pub fn mem_create(
    handle: Out<CUmemGenericAllocationHandle>,
    size: usize,
    prop: In<CUmemAllocationProp>,
    flags: c_ulonglong,
) -> Result<(), CUresult> {
    if flags != 0 {
        return Err(INVALID_VALUE);
    }
    let p = check_prop(prop)?;
    if size == 0 || !size.is_multiple_of(GRANULE) {
        return Err(INVALID_VALUE);
    }
    let types = p.requestedHandleTypes.0;
    if types & !POSIX_FD != 0 {
        return Err(NOT_SUPPORTED);
    }
    // Tile pools and hardware decompression are Blackwell features.
    if p.allocFlags.usage != 0 {
        return Err(NOT_SUPPORTED);
    }
    // SAFETY: check_prop accepted a DEVICE location, whose union member is
    // `id`; every bit pattern is a valid int.
    let dev = unsafe { p.location.__bindgen_anon_1.id };
    charge(dev, size)?;
    let fd = memfd(size).inspect_err(|_| uncharge(dev, size))?;
    let h = HEAP.write().vmm.handles.insert(Physical {
        fd,
        size,
        handle_types: types,
        refs: 1,
        maps: 0,
        charged: Some(dev),
    });
    handle.write(h);
    Ok(())
}

/// The memory itself goes once every mapping of it is unmapped too.
pub fn mem_release(handle: CUmemGenericAllocationHandle) -> Result<(), CUresult> {
    let mut heap = HEAP.write();
    let h = heap.vmm.handles.get_mut(handle)?;
    if h.refs == 0 {
        return Err(INVALID_VALUE);
    }
    h.refs -= 1;
    heap.vmm.settle(handle);
    Ok(())
}

pub fn retain_allocation_handle(
    handle: Out<CUmemGenericAllocationHandle>,
    addr: *mut c_void,
) -> Result<(), CUresult> {
    let mut heap = HEAP.write();
    let (_, p) = heap.vmm.piece(addr as usize).ok_or(INVALID_VALUE)?;
    let h = p.handle;
    heap.vmm
        .handles
        .get_mut(h)
        .expect("mapped handles exist")
        .refs += 1;
    handle.write(h);
    Ok(())
}

pub fn get_allocation_properties_from_handle(
    prop: Out<CUmemAllocationProp>,
    handle: CUmemGenericAllocationHandle,
) -> Result<(), CUresult> {
    let heap = HEAP.read();
    // A handle still counts while it is mapped, even once released.
    let h = heap.vmm.handles.get(handle)?;
    let mut p = CUmemAllocationProp {
        type_: CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED,
        requestedHandleTypes: CUmemAllocationHandleType(h.handle_types),
        ..Default::default()
    };
    p.location.type_ = CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE;
    p.location.__bindgen_anon_1.id = 0;
    prop.write(p);
    Ok(())
}

pub fn address_reserve(
    ptr: Out<CUdeviceptr>,
    size: usize,
    alignment: usize,
    addr: CUdeviceptr,
    flags: c_ulonglong,
) -> Result<(), CUresult> {
    if flags != 0 || size == 0 || !size.is_multiple_of(GRANULE) {
        return Err(INVALID_VALUE);
    }
    if alignment != 0 && !alignment.is_power_of_two() {
        return Err(INVALID_VALUE);
    }
    let align = alignment.max(GRANULE);
    let hint = addr as usize;
    let mut heap = HEAP.write();
    // Honour the hint when it is aligned and free, as the driver does.
    let mut start = None;
    if hint != 0 && hint.is_multiple_of(align) {
        let p = map_none(hint, size, false);
        if p as usize == hint {
            start = Some(hint);
        } else if p != libc::MAP_FAILED {
            // SAFETY: a mapping just made here that nothing else knows of.
            unsafe { libc::munmap(p, size) };
        }
    }
    let start = match start {
        Some(s) => s,
        None => {
            // Over-reserve, then trim to the aligned window.
            let total = size.checked_add(align).ok_or(INVALID_VALUE)?;
            let p = map_none(0, total, false);
            if p == libc::MAP_FAILED {
                return Err(CUresult::CUDA_ERROR_OUT_OF_MEMORY);
            }
            let base = p as usize;
            let s = round_up(base, align).expect("fits: inside the mapping");
            // SAFETY: head and tail are parts of the mapping just made,
            // outside the window that is kept.
            unsafe {
                if s > base {
                    libc::munmap(p, s - base);
                }
                let tail = base + total - (s + size);
                if tail > 0 {
                    libc::munmap((s + size) as *mut c_void, tail);
                }
            }
            s
        }
    };
    heap.vmm.reservations.insert(start, size);
    ptr.write(start as CUdeviceptr);
    Ok(())
}

/// Mappings still inside are unmapped with the reservation.
pub fn address_free(ptr: CUdeviceptr, size: usize) -> Result<(), CUresult> {
    let start = ptr as usize;
    let mut heap = HEAP.write();
    let vmm = &mut heap.vmm;
    if vmm.reservations.get(&start) != Some(&size) {
        return Err(INVALID_VALUE);
    }
    let inside: Vec<usize> = vmm
        .pieces
        .range(start..start + size)
        .map(|(&s, _)| s)
        .collect();
    for at in inside {
        vmm.unmap_piece(at);
    }
    vmm.reservations.remove(&start);
    // SAFETY: the whole reservation belongs to this module and no piece of it
    // is in the table any more (write lock held), so nothing reaches it.
    unsafe { libc::munmap(start as *mut c_void, size) };
    Ok(())
}

pub fn mem_map(
    ptr: CUdeviceptr,
    size: usize,
    offset: usize,
    handle: CUmemGenericAllocationHandle,
    flags: c_ulonglong,
) -> Result<(), CUresult> {
    if flags != 0 || size == 0 {
        return Err(INVALID_VALUE);
    }
    let at = ptr as usize;
    if !at.is_multiple_of(GRANULE)
        || !size.is_multiple_of(GRANULE)
        || !offset.is_multiple_of(GRANULE)
    {
        return Err(INVALID_VALUE);
    }
    let mut heap = HEAP.write();
    let vmm = &mut heap.vmm;
    let h = vmm.handles.get(handle)?;
    if h.refs == 0 {
        return Err(INVALID_VALUE);
    }
    if offset.checked_add(size).is_none_or(|e| e > h.size) {
        return Err(INVALID_VALUE);
    }
    if !vmm.reserved(at, size) {
        return Err(INVALID_VALUE);
    }
    let taken = vmm
        .pieces
        .range(..at + size)
        .next_back()
        .is_some_and(|(&s, p)| s + p.len > at);
    if taken {
        return Err(INVALID_VALUE);
    }
    // SAFETY: `at..at+size` is PROT_NONE reservation owned by this module
    // (checked: reserved, not mapped); the fd is a live memfd at least
    // `offset + size` long.
    let p = unsafe {
        libc::mmap(
            at as *mut c_void,
            size,
            libc::PROT_NONE,
            libc::MAP_SHARED | libc::MAP_FIXED,
            h.fd.as_raw_fd(),
            offset as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(CUresult::CUDA_ERROR_OUT_OF_MEMORY);
    }
    vmm.handles.get_mut(handle).expect("found above").maps += 1;
    vmm.pieces.insert(
        at,
        Piece {
            len: size,
            handle,
            access: 0,
            origin: at,
            origin_len: size,
        },
    );
    Ok(())
}

pub fn mem_unmap(ptr: CUdeviceptr, size: usize) -> Result<(), CUresult> {
    let mut heap = HEAP.write();
    let vmm = &mut heap.vmm;
    let (start, pieces) = (ptr as usize, vmm.tiling(ptr as usize, size)?);
    // Whole cuMemMap calls only, even where access changes split them.
    let whole = pieces.iter().all(|at| {
        let p = &vmm.pieces[at];
        p.origin >= start && p.origin + p.origin_len <= start + size
    });
    if !whole {
        return Err(INVALID_VALUE);
    }
    for at in pieces {
        vmm.unmap_piece(at);
    }
    Ok(())
}

/// `desc` holds `count` descriptors.
pub unsafe fn set_access(
    ptr: CUdeviceptr,
    size: usize,
    desc: In<CUmemAccessDesc>,
    count: usize,
) -> Result<(), CUresult> {
    if count == 0 || size == 0 {
        return Err(INVALID_VALUE);
    }
    let mut access = None;
    for i in 0..count {
        // SAFETY: the caller passes `count` readable descriptors.
        let d = unsafe { desc.as_ptr().add(i).read_unaligned() };
        if d.location.type_ != CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE {
            return Err(INVALID_VALUE);
        }
        check_location(&d.location)?;
        access = Some(match d.flags {
            CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_NONE => 0,
            CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_READ => 1,
            CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_READWRITE => 3,
            _ => return Err(INVALID_VALUE),
        });
    }
    let access = access.expect("count > 0");
    let at = ptr as usize;
    if !at.is_multiple_of(GRANULE) || !size.is_multiple_of(GRANULE) {
        return Err(INVALID_VALUE);
    }
    let end = at.checked_add(size).ok_or(INVALID_VALUE)?;
    let mut heap = HEAP.write();
    let vmm = &mut heap.vmm;
    // The whole range must be mapped before any of it changes.
    covered(vmm, at, end)?;
    vmm.split_at(at)?;
    if vmm.is_mapped(end) {
        vmm.split_at(end)?;
    }
    let prot = match access {
        0 => libc::PROT_NONE,
        1 => libc::PROT_READ,
        _ => libc::PROT_READ | libc::PROT_WRITE,
    };
    // SAFETY: the range is exactly mapped pieces owned by this module (write
    // lock held, so no copy is using it).
    if unsafe { libc::mprotect(at as *mut c_void, size, prot) } != 0 {
        return Err(CUresult::CUDA_ERROR_UNKNOWN);
    }
    for s in vmm.tiling(at, size)? {
        vmm.pieces.get_mut(&s).expect("tiled").access = access;
    }
    Ok(())
}

/// `at..end` is covered by contiguous pieces, whatever their access.
fn covered(vmm: &Vmm, at: usize, end: usize) -> Result<(), CUresult> {
    let (mut cur, _) = vmm.piece(at).ok_or(INVALID_VALUE)?;
    while cur < end {
        cur += vmm.pieces.get(&cur).ok_or(INVALID_VALUE)?.len;
    }
    Ok(())
}

pub fn get_access(
    flags: Out<c_ulonglong>,
    location: In<CUmemLocation>,
    ptr: CUdeviceptr,
) -> Result<(), CUresult> {
    let loc = location.read();
    if loc.type_ != CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE {
        return Err(INVALID_VALUE);
    }
    check_location(&loc)?;
    let heap = HEAP.read();
    let (_, p) = heap.vmm.piece(ptr as usize).ok_or(INVALID_VALUE)?;
    flags.write(u64::from(p.access));
    Ok(())
}

/// A POSIX file descriptor for the allocation: a duplicate of its memfd,
/// which another process can map to share the bytes.
/// `out` receives the handle type's representation (an int for POSIX_FD).
pub unsafe fn export_to_shareable_handle(
    out: Out<c_void>,
    handle: CUmemGenericAllocationHandle,
    kind: CUmemAllocationHandleType,
    flags: c_ulonglong,
) -> Result<(), CUresult> {
    if flags != 0 {
        return Err(INVALID_VALUE);
    }
    if kind.0 != POSIX_FD {
        return Err(NOT_SUPPORTED);
    }
    let heap = HEAP.read();
    let h = heap.vmm.handles.get(handle)?;
    if h.refs == 0 {
        return Err(INVALID_VALUE);
    }
    // Only what was requested at creation may be exported.
    if h.handle_types & POSIX_FD == 0 {
        return Err(INVALID_VALUE);
    }
    // SAFETY: duplicating a live fd this module owns.
    let fd = unsafe { libc::dup(h.fd.as_raw_fd()) };
    if fd < 0 {
        return Err(CUresult::CUDA_ERROR_OPERATING_SYSTEM);
    }
    // SAFETY: non-null; for POSIX_FD the caller passes an int slot.
    unsafe { out.as_ptr().cast::<c_int>().write_unaligned(fd) };
    Ok(())
}

/// The fd travels in the pointer argument itself, as cuda.h specifies.
pub fn import_from_shareable_handle(
    handle: Out<CUmemGenericAllocationHandle>,
    os_handle: *mut c_void,
    kind: CUmemAllocationHandleType,
) -> Result<(), CUresult> {
    if kind.0 != POSIX_FD {
        return Err(NOT_SUPPORTED);
    }
    let raw = c_int::try_from(os_handle as usize).map_err(|_| INVALID_VALUE)?;
    // SAFETY: dup only reads the descriptor table; a bad fd fails cleanly.
    let fd = unsafe { libc::dup(raw) };
    if fd < 0 {
        return Err(INVALID_VALUE);
    }
    // SAFETY: `fd` was just duplicated and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `st` is a local of the right type for fstat to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and a writable stat buffer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(INVALID_VALUE);
    }
    let size = usize::try_from(st.st_size).map_err(|_| INVALID_VALUE)?;
    if size == 0 || !size.is_multiple_of(GRANULE) {
        return Err(INVALID_VALUE);
    }
    let h = HEAP.write().vmm.handles.insert(Physical {
        fd,
        size,
        handle_types: POSIX_FD,
        refs: 1,
        maps: 0,
        charged: None,
    });
    handle.write(h);
    Ok(())
}
