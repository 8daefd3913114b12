//! The guest's table of device memory: every range the host handed this
//! process (cuMemAlloc*, stream-ordered allocations, VMM mappings).
//!
//! The host is the authority — it checks every range a copy, memset or
//! free names against the session's allocations — but the guest needs its
//! own copy for three things the host cannot do for it:
//! - `cuMemcpy`/`CU_MEMORYTYPE_UNIFIED` must decide whether an address is
//!   device memory (in this table) or guest memory (anything else) before
//!   it knows whether to read guest RAM or ask the host;
//! - `cuPointerGetAttribute(s)` and `cuMemGetAddressRange` are answered
//!   locally;
//! - a copy that starts inside a known allocation and runs past its end is
//!   refused without a round trip.
//!
//! Device memory the guest did not allocate itself (a module's globals, once
//! modules land) must be added here with [`Kind::External`], or unified
//! copies would take it for guest memory.

use crate::contexts::Context;
use cuda_types::cuda::CUdevice;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `cuMemAlloc` / `cuMemAllocPitch`: freed with `cuMemFree`.
    Alloc,
    /// `cuMemAllocAsync`, from `pool` (the host's handle).
    Async { pool: u64 },
    /// A VMM mapping of `handle` at `offset` into that allocation.
    Mapped { handle: u64, offset: u64 },
    /// Device memory known to exist but not freed through memory entry
    /// points (module globals).
    External,
}

#[derive(Clone)]
pub struct Range {
    pub base: u64,
    pub size: u64,
    pub kind: Kind,
    /// The context it was allocated in; `None` for VMM mappings, which
    /// belong to no context.
    pub ctx: Option<Arc<Context>>,
    /// Guest ordinal of the device holding it.
    pub device: CUdevice,
    /// `CU_POINTER_ATTRIBUTE_BUFFER_ID`: unique for the process lifetime.
    pub id: u64,
    /// `CUmemAccess_flags` last granted (VMM); plain allocations are
    /// read-write.
    pub access: u32,
}

impl std::fmt::Debug for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:#x}+{} {:?} on device {}",
            self.base, self.size, self.kind, self.device
        )
    }
}

impl Range {
    pub fn new(
        base: u64,
        size: u64,
        kind: Kind,
        ctx: Option<Arc<Context>>,
        device: CUdevice,
    ) -> Range {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Range {
            base,
            size,
            kind,
            ctx,
            device,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            access: ACCESS_READWRITE,
        }
    }

    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }

    pub fn contains(&self, ptr: u64) -> bool {
        ptr >= self.base && ptr < self.end()
    }
}

/// `CU_MEM_ACCESS_FLAGS_PROT_READWRITE`.
pub const ACCESS_READWRITE: u32 = 3;

/// Where a span `[ptr, ptr + len)` lies relative to the table.
#[derive(Debug, PartialEq, Eq)]
pub enum Span {
    /// Wholly inside one known range.
    Inside,
    /// Starts in a known range and runs past its end.
    Overrun { base: u64, size: u64 },
    /// Starts outside every known range.
    Unknown,
}

/// Non-overlapping ranges by base address.
#[derive(Default)]
pub struct Table {
    map: BTreeMap<u64, Range>,
}

impl Table {
    pub const fn new() -> Table {
        Table {
            map: BTreeMap::new(),
        }
    }

    /// The range holding `ptr`.
    pub fn find(&self, ptr: u64) -> Option<&Range> {
        self.map
            .range(..=ptr)
            .next_back()
            .map(|(_, r)| r)
            .filter(|r| r.contains(ptr))
    }

    pub fn find_mut(&mut self, ptr: u64) -> Option<&mut Range> {
        self.map
            .range_mut(..=ptr)
            .next_back()
            .map(|(_, r)| r)
            .filter(|r| r.contains(ptr))
    }

    pub fn span(&self, ptr: u64, len: u64) -> Span {
        match self.find(ptr) {
            None => Span::Unknown,
            Some(r) if len <= r.end() - ptr => Span::Inside,
            Some(r) => Span::Overrun {
                base: r.base,
                size: r.size,
            },
        }
    }

    /// Adds `r`; one that overlaps a range already present comes back
    /// (the host handed out an address twice — a host bug the guest must
    /// not paper over by losing the older entry).
    pub fn insert(&mut self, r: Range) -> Result<(), Range> {
        let overlaps_prev = self
            .map
            .range(..=r.base)
            .next_back()
            .is_some_and(|(_, p)| p.end() > r.base);
        let overlaps_next = self
            .map
            .range(r.base..)
            .next()
            .is_some_and(|(&b, _)| b < r.end());
        if r.size == 0 || overlaps_prev || overlaps_next {
            return Err(r);
        }
        self.map.insert(r.base, r);
        Ok(())
    }

    /// Removes the range starting exactly at `base` if `pick` accepts it.
    pub fn remove_base(&mut self, base: u64, pick: impl Fn(&Range) -> bool) -> Option<Range> {
        if self.map.get(&base).is_some_and(pick) {
            self.map.remove(&base)
        } else {
            None
        }
    }

    /// Removes every range starting in `[lo, hi)` that `pick` accepts.
    pub fn remove_within(&mut self, lo: u64, hi: u64, pick: impl Fn(&Range) -> bool) -> Vec<Range> {
        let bases: Vec<u64> = self
            .map
            .range(lo..hi)
            .filter(|(_, r)| pick(r))
            .map(|(&b, _)| b)
            .collect();
        bases.iter().filter_map(|b| self.map.remove(b)).collect()
    }

    /// Drops every range of a context that is gone (the host freed them
    /// with it).
    pub fn forget_context(&mut self, ctx: &Arc<Context>) {
        self.map
            .retain(|_, r| !r.ctx.as_ref().is_some_and(|c| Arc::ptr_eq(c, ctx)));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

pub static TABLE: RwLock<Table> = RwLock::new(Table::new());

/// The known range holding `ptr`, if any.
pub fn find(ptr: u64) -> Option<Range> {
    TABLE.read().find(ptr).cloned()
}

/// VMM address reservations, base → size. Reserved space is device
/// address space even where nothing is mapped: a unified copy naming it
/// must go to the host (and fail there), never be read as guest memory.
static RESERVED: RwLock<BTreeMap<u64, u64>> = RwLock::new(BTreeMap::new());

fn reserved(ptr: u64) -> bool {
    RESERVED
        .read()
        .range(..=ptr)
        .next_back()
        .is_some_and(|(&b, &s)| ptr - b < s)
}

pub fn reserve(base: u64, size: u64) {
    RESERVED.write().insert(base, size);
}

/// Forgets the reservation `[base, base + size)`; false when there is no
/// such reservation (the exact pair is required, as by the driver).
pub fn unreserve(base: u64, size: u64) -> bool {
    let mut r = RESERVED.write();
    if r.get(&base) == Some(&size) {
        r.remove(&base);
        true
    } else {
        false
    }
}

pub fn is_reservation(base: u64, size: u64) -> bool {
    RESERVED.read().get(&base) == Some(&size)
}

/// Whether unified addressing should treat `ptr` as device memory.
pub fn is_device(ptr: u64) -> bool {
    TABLE.read().find(ptr).is_some() || reserved(ptr)
}

/// Records what the host just handed out.
pub fn record(r: Range) {
    let (base, size) = (r.base, r.size);
    if TABLE.write().insert(r).is_err() {
        vgpu_guest::vlog!(
            vgpu_guest::log::Level::Warn,
            "device range {base:#x}+{size} overlaps one the guest already knows; not tracked"
        );
    }
}

/// Forgets everything of a destroyed or reset context.
pub fn forget_context(ctx: &Arc<Context>) {
    TABLE.write().forget_context(ctx);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(base: u64, size: u64, kind: Kind) -> Range {
        Range::new(base, size, kind, None, 0)
    }

    #[test]
    fn find_and_span() {
        let mut t = Table::new();
        t.insert(r(0x1000, 0x100, Kind::Alloc)).unwrap();
        t.insert(r(0x2000, 0x1000, Kind::Async { pool: 7 }))
            .unwrap();
        assert!(t.find(0xfff).is_none());
        assert_eq!(t.find(0x1000).unwrap().base, 0x1000);
        assert_eq!(t.find(0x10ff).unwrap().base, 0x1000);
        assert!(t.find(0x1100).is_none());
        assert_eq!(t.find(0x2fff).unwrap().kind, Kind::Async { pool: 7 });
        assert!(t.find(0x3000).is_none());
        assert_eq!(t.span(0x1000, 0x100), Span::Inside);
        assert_eq!(t.span(0x10ff, 1), Span::Inside);
        assert_eq!(t.span(0x1080, 0), Span::Inside);
        assert_eq!(
            t.span(0x1080, 0x81),
            Span::Overrun {
                base: 0x1000,
                size: 0x100
            }
        );
        assert_eq!(t.span(0x1100, 4), Span::Unknown);
        assert_eq!(t.span(u64::MAX, 4), Span::Unknown);
    }

    #[test]
    fn overlaps_are_refused() {
        let mut t = Table::new();
        t.insert(r(0x1000, 0x100, Kind::Alloc)).unwrap();
        assert!(t.insert(r(0x1000, 0x10, Kind::Alloc)).is_err());
        assert!(t.insert(r(0x10ff, 0x10, Kind::Alloc)).is_err());
        assert!(t.insert(r(0xf00, 0x101, Kind::Alloc)).is_err());
        assert!(t.insert(r(0x800, 0x10000, Kind::Alloc)).is_err());
        assert!(t.insert(r(0x5000, 0, Kind::Alloc)).is_err());
        t.insert(r(0xf00, 0x100, Kind::Alloc)).unwrap();
        t.insert(r(0x1100, 0x100, Kind::Alloc)).unwrap();
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn removal() {
        let mut t = Table::new();
        t.insert(r(0x1000, 0x100, Kind::Alloc)).unwrap();
        let m = |h| Kind::Mapped {
            handle: h,
            offset: 0,
        };
        t.insert(r(0x10000, 0x1000, m(1))).unwrap();
        t.insert(r(0x11000, 0x1000, m(2))).unwrap();
        t.insert(r(0x12000, 0x1000, m(3))).unwrap();
        // Only a base, and only of the kind asked for.
        assert!(t.remove_base(0x1001, |_| true).is_none());
        assert!(t
            .remove_base(0x1000, |r| matches!(r.kind, Kind::Mapped { .. }))
            .is_none());
        assert!(t.remove_base(0x1000, |r| r.kind == Kind::Alloc).is_some());
        assert!(t.remove_base(0x1000, |_| true).is_none());
        let gone = t.remove_within(0x10000, 0x12000, |_| true);
        assert_eq!(gone.len(), 2);
        assert!(t.find(0x12000).is_some());
        assert!(t.find(0x10000).is_none());
    }

    #[test]
    fn reservations_are_device_space() {
        let base = 0x7a00_0000_0000;
        assert!(!is_device(base));
        reserve(base, 0x1000);
        assert!(is_device(base) && is_device(base + 0xfff));
        assert!(!is_device(base + 0x1000));
        assert!(!unreserve(base, 0x800));
        assert!(unreserve(base, 0x1000));
        assert!(!is_device(base));
    }

    #[test]
    fn contexts_take_their_ranges_along() {
        use crate::contexts::{register, Kind as CtxKind, API_VERSION};
        let a = register(Context::new(CtxKind::Created, 0, 0, 0, API_VERSION));
        let b = register(Context::new(CtxKind::Created, 0, 0, 0, API_VERSION));
        let mut t = Table::new();
        t.insert(Range::new(0x1000, 16, Kind::Alloc, Some(a.clone()), 0))
            .unwrap();
        t.insert(Range::new(0x2000, 16, Kind::Alloc, Some(b.clone()), 0))
            .unwrap();
        t.insert(r(
            0x3000,
            16,
            Kind::Mapped {
                handle: 1,
                offset: 0,
            },
        ))
        .unwrap();
        t.forget_context(&a);
        assert!(t.find(0x1000).is_none());
        assert!(t.find(0x2000).is_some());
        assert!(t.find(0x3000).is_some());
    }
}
