//! Graph memory (docs/graphs.md, "Graph memory"): the allocation behind an
//! allocation node (`cuGraphAddMemAllocNode`, or `cuMemAllocAsync` in a
//! capture) is made when the node is created — one round trip — so its
//! address is known then and is the same at every launch, as the driver
//! promises. It stays allocated until the last graph, node or executable
//! graph holding it is gone: what the driver's graph memory pool does when
//! it never trims. On the host, allocation and free nodes are empty nodes.
//!
//! The driver's bookkeeping of "freed or not" is kept, because it decides
//! errors the application can see: a launch of an executable graph whose
//! allocation from the previous launch was not freed (by a free node, by
//! `cuMemFreeAsync`/`cuMemFree`, or by `AUTO_FREE_ON_LAUNCH`) fails with
//! `CUDA_ERROR_INVALID_VALUE`. Freeing graph memory outside a graph only
//! clears that mark; the memory itself stays with its graph.

use super::node::{access_list, Raw};
use super::{host, Body, INVALID_VALUE};
use crate::check::{self, reject};
use crate::context::state::Context;
use crate::devmem::{self, Kind, Range};
use cuda_types::cuda::{
    CUdevice, CUmemAccessDesc, CUmemAllocationType, CUmemLocationType, CUresult,
    CUDA_MEM_ALLOC_NODE_PARAMS,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

/// Every live graph allocation by address (for free nodes and frees from
/// outside a graph).
static LIVE: Mutex<Option<HashMap<u64, Weak<GraphMem>>>> = Mutex::new(None);
/// `CU_GRAPH_MEM_ATTR_*`: bytes held now, and the high watermark.
static USED: AtomicU64 = AtomicU64::new(0);
static HIGH: AtomicU64 = AtomicU64::new(0);

/// The table's lock, for the fork handlers.
pub(crate) fn live_lock() -> &'static Mutex<Option<HashMap<u64, Weak<GraphMem>>>> {
    &LIVE
}

pub struct GraphMem {
    pub ptr: u64,
    pub size: u64,
    ctx: Arc<Context>,
    pub device: CUdevice,
    /// Allocated by a launch and not freed since.
    pub(crate) unfreed: AtomicBool,
    /// The graph that frees it with a free node, once one does.
    freed_by: Mutex<Option<u64>>,
}

impl GraphMem {
    /// A new allocation of `size` bytes in `ctx` (one round trip).
    pub fn allocate(ctx: Arc<Context>, size: u64) -> Result<Arc<GraphMem>, CUresult> {
        if size == 0 {
            return Err(reject(
                INVALID_VALUE,
                format_args!("graph allocation of 0 bytes"),
            ));
        }
        let remote = ctx.remote()?;
        let ptr = host::mem_alloc(remote, size)?;
        let device = ctx.device;
        devmem::record(Range::new(
            ptr,
            size,
            Kind::Graph,
            Some(ctx.clone()),
            device,
        ));
        let now = USED.fetch_add(size, Ordering::Relaxed) + size;
        HIGH.fetch_max(now, Ordering::Relaxed);
        let m = Arc::new(GraphMem {
            ptr,
            size,
            ctx,
            device,
            unfreed: AtomicBool::new(false),
            freed_by: Mutex::new(None),
        });
        LIVE.lock()
            .get_or_insert_with(HashMap::new)
            .insert(ptr, Arc::downgrade(&m));
        Ok(m)
    }

    /// The live graph allocation starting at `ptr`.
    pub fn find(ptr: u64) -> Option<Arc<GraphMem>> {
        LIVE.lock().as_ref()?.get(&ptr)?.upgrade()
    }

    /// A free node for this allocation may join graph `g` (whose body is
    /// `body`): one free per allocation, by one graph.
    pub(super) fn claim_free(&self, g: u64, body: &Body) -> Result<(), CUresult> {
        let mut by = self.freed_by.lock();
        let twice = body
            .nodes
            .iter()
            .any(|n| matches!(&n.op, super::node::Op::MemFree(m) if m.ptr == self.ptr));
        match *by {
            Some(other) if other != g => Err(reject(
                INVALID_VALUE,
                format_args!("free node: {:#x} is freed by another graph", self.ptr),
            )),
            _ if twice => Err(reject(
                INVALID_VALUE,
                format_args!("free node: {:#x} is freed twice in one graph", self.ptr),
            )),
            _ => {
                *by = Some(g);
                Ok(())
            }
        }
    }
}

impl Drop for GraphMem {
    fn drop(&mut self) {
        if let Some(m) = LIVE.lock().as_mut() {
            m.remove(&self.ptr);
        }
        USED.fetch_sub(self.size, Ordering::Relaxed);
        devmem::take_base(self.ptr, |r| r.kind == Kind::Graph);
        // A destroyed context took the memory with it.
        if let Ok(remote) = self.ctx.remote() {
            let _ = host::mem_free(remote, self.ptr);
        }
    }
}

/// `cuMemFree[Async]` of graph memory from outside a graph: the
/// allocation counts as freed; true when `ptr` is graph memory at all.
pub fn free_outside(ptr: u64) -> bool {
    match GraphMem::find(ptr) {
        Some(m) => {
            m.unfreed.store(false, Ordering::Release);
            true
        }
        None => false,
    }
}

/// An allocation node's parameters: the allocation, and what
/// `cuGraphMemAllocNodeGetParams` returns (the access descriptors are the
/// node's own copy).
#[derive(Clone)]
pub struct Alloc {
    pub mem: Arc<GraphMem>,
    params: Raw<CUDA_MEM_ALLOC_NODE_PARAMS>,
    access: Arc<[CUmemAccessDesc]>,
}

impl Alloc {
    /// Allocates for the application's parameters: pinned device memory of
    /// a device this process sees, in the current context.
    ///
    /// # Safety
    /// `accessDescs` holds `accessDescCount` readable entries.
    pub unsafe fn from_params(p: &CUDA_MEM_ALLOC_NODE_PARAMS) -> Result<Alloc, CUresult> {
        let props = &p.poolProps;
        if props.allocType != CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED
            || props.location.type_ != CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE
        {
            return Err(reject(
                INVALID_VALUE,
                format_args!("allocation node: only pinned device memory can be allocated"),
            ));
        }
        let (ctx, _) = check::current()?;
        // SAFETY: the union member a device location uses.
        let dev = unsafe { props.location.__bindgen_anon_1.id };
        if dev != ctx.device {
            return Err(reject(
                INVALID_VALUE,
                format_args!("allocation node: device {dev} is not the current context's"),
            ));
        }
        // SAFETY: forwarded contract.
        let access: Arc<[CUmemAccessDesc]> =
            unsafe { access_list(p.accessDescs, p.accessDescCount)? }.into();
        let mem = GraphMem::allocate(ctx, p.bytesize as u64)?;
        Ok(Alloc::new(mem, *p, access))
    }

    /// The node `cuMemAllocAsync` makes in a capture: default properties.
    pub fn for_capture(mem: Arc<GraphMem>) -> Alloc {
        // SAFETY: all-zero parameters are valid (integers, NULL pointers).
        let mut p: CUDA_MEM_ALLOC_NODE_PARAMS = unsafe { std::mem::zeroed() };
        p.poolProps.allocType = CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED;
        p.poolProps.location.type_ = CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE;
        p.poolProps.location.__bindgen_anon_1.id = mem.device;
        p.bytesize = mem.size as usize;
        Alloc::new(mem, p, Arc::new([]))
    }

    fn new(
        mem: Arc<GraphMem>,
        mut p: CUDA_MEM_ALLOC_NODE_PARAMS,
        access: Arc<[CUmemAccessDesc]>,
    ) -> Alloc {
        p.dptr = mem.ptr;
        p.accessDescCount = access.len();
        p.accessDescs = if access.is_empty() {
            std::ptr::null()
        } else {
            access.as_ptr()
        };
        Alloc {
            mem,
            params: Raw(p),
            access,
        }
    }

    /// The parameters as `cuGraphMemAllocNodeGetParams` returns them.
    pub fn params(&self) -> CUDA_MEM_ALLOC_NODE_PARAMS {
        debug_assert_eq!(self.params.0.accessDescCount, self.access.len());
        self.params.0
    }
}

/// `cuDeviceGetGraphMemAttribute`: used and reserved bytes are the same
/// here (nothing is cached beyond what graphs hold).
///
/// # Safety
/// `value` points at a writable `cuuint64_t`.
pub unsafe fn get_attribute(
    _dev: crate::driver::Device,
    attr: cuda_types::cuda::CUgraphMem_attribute,
    value: vgpu_ffi::Out<std::ffi::c_void>,
) -> Result<(), CUresult> {
    use cuda_types::cuda::CUgraphMem_attribute as A;
    let v = match attr {
        A::CU_GRAPH_MEM_ATTR_USED_MEM_CURRENT | A::CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT => {
            USED.load(Ordering::Relaxed)
        }
        A::CU_GRAPH_MEM_ATTR_USED_MEM_HIGH | A::CU_GRAPH_MEM_ATTR_RESERVED_MEM_HIGH => {
            HIGH.load(Ordering::Relaxed)
        }
        a => {
            return Err(reject(
                INVALID_VALUE,
                format_args!("cuDeviceGetGraphMemAttribute: attribute {}", a.0),
            ))
        }
    };
    // SAFETY: non-NULL (converted); a cuuint64_t per the contract.
    unsafe { value.as_ptr().cast::<u64>().write_unaligned(v) };
    Ok(())
}

/// `cuDeviceSetGraphMemAttribute`: only the high watermarks, only reset to
/// zero (to the current use, here).
///
/// # Safety
/// `value` points at a readable `cuuint64_t`.
pub unsafe fn set_attribute(
    _dev: crate::driver::Device,
    attr: cuda_types::cuda::CUgraphMem_attribute,
    value: vgpu_ffi::In<std::ffi::c_void>,
) -> Result<(), CUresult> {
    use cuda_types::cuda::CUgraphMem_attribute as A;
    // SAFETY: non-NULL (converted); a cuuint64_t per the contract.
    let v = unsafe { value.as_ptr().cast::<u64>().read_unaligned() };
    match attr {
        A::CU_GRAPH_MEM_ATTR_USED_MEM_HIGH | A::CU_GRAPH_MEM_ATTR_RESERVED_MEM_HIGH if v == 0 => {
            HIGH.store(USED.load(Ordering::Relaxed), Ordering::Relaxed);
            Ok(())
        }
        a => Err(reject(
            INVALID_VALUE,
            format_args!("cuDeviceSetGraphMemAttribute: attribute {} to {v}", a.0),
        )),
    }
}

/// `cuDeviceGraphMemTrim`: nothing is cached beyond what graphs hold.
pub fn trim(_dev: crate::driver::Device) -> Result<(), CUresult> {
    Ok(())
}
