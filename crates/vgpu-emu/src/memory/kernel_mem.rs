//! Device memory as the PTX interpreter sees it: the allocation table decides
//! what a kernel may touch, and the bytes are then accessed in place (device
//! pointer == host address).
//!
//! A launch holds the table's read lock for its whole run. That makes a
//! concurrent cuMemFree / cuMemUnmap wait for the kernel, as a free waits for
//! the device on a real board, and it means no mapping a kernel checked can
//! disappear while a block still uses it.
//!
//! Accesses go through relaxed atomics of the widest naturally aligned size:
//! other blocks (other OS threads) read and write the same bytes concurrently,
//! which plain loads and stores would make a data race. Relaxed atomic loads
//! and stores compile to ordinary moves, so this costs nothing on x86-64.

use super::device_heap::{self, DeviceHeap};
use super::{Access, Heap, HEAP};
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use vgpu_ptx::{MemError, Memory};

/// The view a running kernel has of device memory.
pub(crate) struct KernelMemory<'h> {
    heap: &'h Heap,
    /// The launching context's device heap (`malloc` in a kernel); none
    /// for the driver's own writes (module globals).
    device_heap: Option<Arc<DeviceHeap>>,
}

/// Runs `f` with the device memory locked against unmapping.
pub(crate) fn with_kernel_memory<R>(f: impl FnOnce(&KernelMemory<'_>) -> R) -> R {
    let heap = HEAP.read();
    f(&KernelMemory {
        heap: &heap,
        device_heap: None,
    })
}

/// [`with_kernel_memory`] for a kernel of context `ctx`, whose `malloc`
/// and `free` use the context's device heap.
pub(crate) fn with_launch_memory<R>(ctx: u64, f: impl FnOnce(&KernelMemory<'_>) -> R) -> R {
    let heap = HEAP.read();
    f(&KernelMemory {
        heap: &heap,
        device_heap: Some(device_heap::for_launch(ctx)),
    })
}

impl KernelMemory<'_> {
    /// The host address of `[addr, addr + len)` once the table says the
    /// whole range is device memory usable for `access`.
    fn checked(&self, addr: u64, len: usize, access: Access) -> Result<usize, MemError> {
        if len == 0 {
            return usize::try_from(addr).map_err(|_| MemError::IllegalAddress { addr });
        }
        if self.heap.check_kernel_range(addr, len, access).is_err()
            && !self
                .device_heap
                .as_ref()
                .is_some_and(|h| h.contains(addr, len))
        {
            return Err(MemError::IllegalAddress { addr });
        }
        Ok(addr as usize)
    }
}

/// Widest atomic unit usable at `p` for a transfer of `left` bytes.
fn unit(p: usize, left: usize) -> usize {
    for w in [8, 4, 2] {
        if left >= w && p.is_multiple_of(w) {
            return w;
        }
    }
    1
}

impl Memory for KernelMemory<'_> {
    fn device_alloc(&self, size: u64) -> Option<u64> {
        self.device_heap.as_ref()?.alloc(size)
    }

    fn device_free(&self, addr: u64) {
        if let Some(h) = &self.device_heap {
            h.free(addr);
        }
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let base = self.checked(addr, buf.len(), Access::Read)?;
        let mut off = 0;
        while off < buf.len() {
            let p = base + off;
            let w = unit(p, buf.len() - off);
            let dst = &mut buf[off..off + w];
            // SAFETY: `check_range` proved `base..base + buf.len()` is one
            // live, readable mapping, and the read lock held by
            // `with_kernel_memory` keeps it mapped; `p..p + w` lies inside it
            // and `p` is aligned to `w` (see `unit`), as `from_ptr` requires.
            unsafe {
                match w {
                    8 => dst.copy_from_slice(
                        &AtomicU64::from_ptr(p as *mut u64)
                            .load(Ordering::Relaxed)
                            .to_ne_bytes(),
                    ),
                    4 => dst.copy_from_slice(
                        &AtomicU32::from_ptr(p as *mut u32)
                            .load(Ordering::Relaxed)
                            .to_ne_bytes(),
                    ),
                    2 => dst.copy_from_slice(
                        &AtomicU16::from_ptr(p as *mut u16)
                            .load(Ordering::Relaxed)
                            .to_ne_bytes(),
                    ),
                    _ => dst[0] = AtomicU8::from_ptr(p as *mut u8).load(Ordering::Relaxed),
                }
            }
            off += w;
        }
        Ok(())
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        let base = self.checked(addr, data.len(), Access::Write)?;
        let mut off = 0;
        while off < data.len() {
            let p = base + off;
            let w = unit(p, data.len() - off);
            let src = &data[off..off + w];
            // SAFETY: as in `read`, with `check_range` having proved the
            // range writable (a read-only VMM mapping fails the check instead
            // of faulting here).
            unsafe {
                match w {
                    8 => AtomicU64::from_ptr(p as *mut u64).store(
                        u64::from_ne_bytes(src.try_into().expect("8 bytes")),
                        Ordering::Relaxed,
                    ),
                    4 => AtomicU32::from_ptr(p as *mut u32).store(
                        u32::from_ne_bytes(src.try_into().expect("4 bytes")),
                        Ordering::Relaxed,
                    ),
                    2 => AtomicU16::from_ptr(p as *mut u16).store(
                        u16::from_ne_bytes(src.try_into().expect("2 bytes")),
                        Ordering::Relaxed,
                    ),
                    _ => AtomicU8::from_ptr(p as *mut u8).store(src[0], Ordering::Relaxed),
                }
            }
            off += w;
        }
        Ok(())
    }

    fn compare_exchange_u32(&self, addr: u64, current: u32, new: u32) -> Result<u32, MemError> {
        if !addr.is_multiple_of(4) {
            return Err(MemError::MisalignedAddress { addr });
        }
        let p = self.checked(addr, 4, Access::Write)?;
        // SAFETY: the 4 bytes at `p` are a live writable mapping (checked,
        // and kept mapped by the read lock) and `p` is 4-aligned.
        let a = unsafe { AtomicU32::from_ptr(p as *mut u32) };
        Ok(
            a.compare_exchange(current, new, Ordering::SeqCst, Ordering::SeqCst)
                .unwrap_or_else(|old| old),
        )
    }

    fn compare_exchange_u64(&self, addr: u64, current: u64, new: u64) -> Result<u64, MemError> {
        if !addr.is_multiple_of(8) {
            return Err(MemError::MisalignedAddress { addr });
        }
        let p = self.checked(addr, 8, Access::Write)?;
        // SAFETY: the 8 bytes at `p` are a live writable mapping (checked,
        // and kept mapped by the read lock) and `p` is 8-aligned.
        let a = unsafe { AtomicU64::from_ptr(p as *mut u64) };
        Ok(
            a.compare_exchange(current, new, Ordering::SeqCst, Ordering::SeqCst)
                .unwrap_or_else(|old| old),
        )
    }
}

/// Device memory for a module's variables, owned by the current context (so
/// it goes with the context) and zeroed, as `.global` without initializer
/// must be.
pub(crate) fn alloc_module_block(
    size: usize,
) -> Result<cuda_types::cuda::CUdeviceptr, cuda_types::cuda::CUresult> {
    super::alloc_device(size, None)
}

/// Frees a module's variables at unload. Unlike cuMemFree it needs no
/// current context: cudart unloads libraries at exit, often with none.
pub(crate) fn free_module_block(ptr: cuda_types::cuda::CUdeviceptr) {
    // Modules of a dead context are dropped from the registry with it, so
    // this only runs on live blocks; a failure has nobody to report to.
    let _ = HEAP.write().free(ptr as usize, super::Kind::Device);
}
