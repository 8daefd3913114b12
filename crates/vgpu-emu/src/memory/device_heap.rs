//! The device heap: what `malloc` and `free` in a kernel allocate from.
//!
//! One heap per context, `CU_LIMIT_MALLOC_HEAP_SIZE` bytes (8 MiB unless
//! the application set another size). As on the driver, the heap is made
//! when a kernel first allocates, its size is fixed from then on, and it
//! is charged to the device (cuMemGetInfo sees it) until the context goes.
//! Its memory is mapped outside the allocation table: device-heap pointers
//! are valid in kernels of the context and, as the driver documents, in no
//! API call. Within the heap, a kernel may touch any byte, as a GPU lets a
//! kernel run past its `malloc` block into the heap around it.
//!
//! Blocks are carved first-fit from a list of free ranges, which stays
//! short because frees coalesce with their neighbours.

use super::{charge, map, round_up, uncharge, GRANULE};
use cuda_types::cuda::{CUdevice, CUresult};
use once_cell::sync::Lazy;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

/// The driver's default `CU_LIMIT_MALLOC_HEAP_SIZE`.
pub const DEFAULT_HEAP_SIZE: usize = 8 << 20;
/// `malloc` blocks are aligned as the driver's are (16 bytes).
const ALIGN: u64 = 16;

pub(crate) struct DeviceHeap {
    ctx: u64,
    state: Mutex<State>,
    /// (base, size) once mapped: kernels check their accesses against it
    /// without taking `state`'s lock.
    span: OnceLock<(u64, u64)>,
}

enum State {
    /// No kernel has allocated yet; the size may still change.
    Unused {
        size: usize,
    },
    Mapped(Arena),
}

struct Arena {
    base: u64,
    size: usize,
    /// Whole mapping, charged to `device`.
    mapped: usize,
    device: CUdevice,
    /// Free ranges, start → length, coalesced.
    free: BTreeMap<u64, u64>,
    /// Live blocks, start → length.
    used: HashMap<u64, u64>,
}

static HEAPS: Lazy<Mutex<HashMap<u64, Arc<DeviceHeap>>>> = Lazy::new(Default::default);

fn heap_of(ctx: u64) -> Arc<DeviceHeap> {
    HEAPS
        .lock()
        .entry(ctx)
        .or_insert_with(|| {
            Arc::new(DeviceHeap {
                ctx,
                state: Mutex::new(State::Unused {
                    size: DEFAULT_HEAP_SIZE,
                }),
                span: OnceLock::new(),
            })
        })
        .clone()
}

/// The heap a launch in context `ctx` allocates from.
pub(crate) fn for_launch(ctx: u64) -> Arc<DeviceHeap> {
    heap_of(ctx)
}

/// `CU_LIMIT_MALLOC_HEAP_SIZE` of context `ctx`.
pub(crate) fn heap_size(ctx: u64) -> usize {
    let Some(h) = HEAPS.lock().get(&ctx).cloned() else {
        return DEFAULT_HEAP_SIZE;
    };
    let s = h.state.lock();
    match &*s {
        State::Unused { size } => *size,
        State::Mapped(a) => a.size,
    }
}

/// Sets the heap size of context `ctx`: CUDA_ERROR_INVALID_VALUE once a
/// kernel has used the heap, as on the driver.
pub(crate) fn set_heap_size(ctx: u64, size: usize) -> Result<(), CUresult> {
    if size as u64 > super::capacity() {
        return Err(CUresult::CUDA_ERROR_OUT_OF_MEMORY);
    }
    let h = heap_of(ctx);
    let mut s = h.state.lock();
    match &mut *s {
        State::Unused { size: cur } => {
            *cur = size;
            Ok(())
        }
        State::Mapped(_) => Err(CUresult::CUDA_ERROR_INVALID_VALUE),
    }
}

/// Unmaps the heap of a context that is going away. The caller holds the
/// allocation table's write lock, so no kernel is running.
pub(crate) fn release_context(ctx: u64) {
    let Some(h) = HEAPS.lock().remove(&ctx) else {
        return;
    };
    let mut s = h.state.lock();
    if let State::Mapped(a) = &*s {
        // SAFETY: `base..base+mapped` is the mapping `Arena::new` made for
        // this heap; the heap has just left the registry and no kernel runs
        // (the table's write lock), so nothing can reach it any more.
        unsafe { libc::munmap(a.base as *mut libc::c_void, a.mapped) };
        uncharge(a.device, a.mapped);
    }
    *s = State::Unused {
        size: DEFAULT_HEAP_SIZE,
    };
}

impl Arena {
    fn new(ctx: u64, size: usize) -> Option<Arena> {
        let device = crate::context::device_of(ctx)?;
        let mapped = round_up(size.max(1), GRANULE)?;
        charge(device, mapped).ok()?;
        let base = match map(mapped, true) {
            Ok(b) => b as u64,
            Err(_) => {
                uncharge(device, mapped);
                return None;
            }
        };
        let mut free = BTreeMap::new();
        if size > 0 {
            free.insert(base, size as u64);
        }
        Some(Arena {
            base,
            size,
            mapped,
            device,
            free,
            used: HashMap::new(),
        })
    }

    fn alloc(&mut self, n: u64) -> Option<u64> {
        let n = n.max(1).checked_next_multiple_of(ALIGN)?;
        let (&start, &len) = self.free.iter().find(|(_, &len)| len >= n)?;
        self.free.remove(&start);
        if len > n {
            self.free.insert(start + n, len - n);
        }
        self.used.insert(start, n);
        Some(start)
    }

    fn free(&mut self, p: u64) -> bool {
        let Some(n) = self.used.remove(&p) else {
            return false;
        };
        let (mut start, mut len) = (p, n);
        if let Some((&s, &l)) = self.free.range(..p).next_back() {
            if s + l == p {
                self.free.remove(&s);
                start = s;
                len += l;
            }
        }
        if let Some(l) = self.free.remove(&(p + n)) {
            len += l;
        }
        self.free.insert(start, len);
        true
    }
}

impl DeviceHeap {
    /// Device `malloc`: a zeroed, 16-byte aligned block, or `None` (NULL to
    /// the kernel) when the heap has no room or cannot be made.
    pub(crate) fn alloc(&self, n: u64) -> Option<u64> {
        let mut s = self.state.lock();
        if let State::Unused { size } = &*s {
            let arena = Arena::new(self.ctx, *size);
            match arena {
                Some(a) => {
                    let _ = self.span.set((a.base, a.size as u64));
                    *s = State::Mapped(a);
                }
                None => {
                    crate::module::warn(format_args!(
                        "device malloc: the heap of context {} ({size} bytes) cannot be made",
                        self.ctx
                    ));
                    return None;
                }
            }
        }
        let State::Mapped(a) = &mut *s else {
            return None;
        };
        let p = a.alloc(n)?;
        let len = a.used[&p];
        // SAFETY: `p..p+len` lies inside the arena's live mapping (carved
        // from its free list) and belongs to no other block; a kernel of this
        // context may touch the heap concurrently, but not this fresh block
        // (no pointer to it has been handed out yet).
        unsafe { std::ptr::write_bytes(p as *mut u8, 0, len as usize) };
        Some(p)
    }

    /// Device `free`; freeing NULL or an unknown pointer does nothing.
    pub(crate) fn free(&self, p: u64) {
        if let State::Mapped(a) = &mut *self.state.lock() {
            a.free(p);
        }
    }

    /// Whether `addr..addr+len` lies inside the heap.
    pub(crate) fn contains(&self, addr: u64, len: usize) -> bool {
        self.span.get().is_some_and(|&(base, size)| {
            addr >= base
                && addr
                    .checked_add(len as u64)
                    .is_some_and(|end| end <= base + size)
        })
    }
}
