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

use crate::context::state::Context;
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
    /// Graph memory (an allocation node's): it stays with its graph;
    /// freeing it outside the graph ends one launch's use of it.
    Graph,
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
    /// The guest pages this range keeps reserved (see [`shadow`]).
    shadow: Option<(u64, u64)>,
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
            shadow: None,
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
    pub fn forget_context(&mut self, ctx: &Arc<Context>) -> Vec<Range> {
        let bases: Vec<u64> = self
            .map
            .values()
            .filter(|r| r.ctx.as_ref().is_some_and(|c| Arc::ptr_eq(c, ctx)))
            .map(|r| r.base)
            .collect();
        bases.iter().filter_map(|b| self.map.remove(b)).collect()
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

// ---- guest address-space shadows ----
//
// Unified addressing only works if no guest buffer can sit at an address
// that is also device memory. A local driver guarantees that by reserving
// every device range in the process; the guest does the same with
// inaccessible, unbacked mappings (PROT_NONE, MAP_NORESERVE: address space
// only). A range whose addresses are already guest memory cannot be
// shadowed — that is logged, and unified copies there are ambiguous.

fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *PAGE.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => 4096,
    })
}

/// The pages of `[base, end)` that no other range of `t` touches.
fn own_pages(t: &Table, base: u64, end: u64) -> Option<(u64, u64)> {
    let page = page_size();
    let mut lo = base & !(page - 1);
    let mut hi = end.checked_next_multiple_of(page)?;
    if t.map
        .range(..base)
        .next_back()
        .is_some_and(|(_, r)| r.end() > lo)
    {
        lo += page;
    }
    if t.map.range(end..).next().is_some_and(|(&b, _)| b < hi) {
        hi -= page;
    }
    (lo < hi).then_some((lo, hi))
}

/// Reserves `[lo, hi)` in the guest unless something is already there.
fn shadow(lo: u64, hi: u64) -> Option<(u64, u64)> {
    let len = (hi - lo) as usize;
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; a new
    // PROT_NONE mapping of free address space touches nothing else.
    let p = unsafe {
        libc::mmap(
            lo as *mut libc::c_void,
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE
                | libc::MAP_ANONYMOUS
                | libc::MAP_NORESERVE
                | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    if p as u64 != lo {
        // A kernel without MAP_FIXED_NOREPLACE took it as a hint.
        // SAFETY: the mapping just made, at the address the kernel chose.
        unsafe { libc::munmap(p, len) };
        return None;
    }
    Some((lo, hi))
}

/// Releases what `shadow` reserved, except pages a remaining range of `t`
/// still touches (they stay reserved).
fn unshadow(t: &Table, r: &Range) {
    let (Some((lo, hi)), Some((own_lo, own_hi))) = (r.shadow, own_pages(t, r.base, r.end())) else {
        return;
    };
    let (lo, hi) = (lo.max(own_lo), hi.min(own_hi));
    if lo < hi {
        // SAFETY: pages of a PROT_NONE mapping this module made for `r`
        // and that no other range needs.
        unsafe { libc::munmap(lo as *mut libc::c_void, (hi - lo) as usize) };
    }
}

/// Takes the range starting at `base` (if `pick` accepts it) out of the
/// table and releases its shadow.
pub fn take_base(base: u64, pick: impl Fn(&Range) -> bool) -> Option<Range> {
    let mut t = TABLE.write();
    let r = t.remove_base(base, pick)?;
    unshadow(&t, &r);
    Some(r)
}

/// Takes every range starting in `[lo, hi)` that `pick` accepts.
pub fn take_within(lo: u64, hi: u64, pick: impl Fn(&Range) -> bool) -> Vec<Range> {
    let mut t = TABLE.write();
    let gone = t.remove_within(lo, hi, pick);
    for r in &gone {
        unshadow(&t, r);
    }
    gone
}

/// VMM address reservations: base → (size, the guest shadow). Reserved
/// space is device address space even where nothing is mapped: a unified
/// copy naming it must go to the host (and fail there), never be read as
/// guest memory.
type Reservations = BTreeMap<u64, (u64, Option<(u64, u64)>)>;
static RESERVED: RwLock<Reservations> = RwLock::new(BTreeMap::new());

fn reserved(ptr: u64) -> bool {
    RESERVED
        .read()
        .range(..=ptr)
        .next_back()
        .is_some_and(|(&b, &(s, _))| ptr - b < s)
}

pub fn reserve(base: u64, size: u64) {
    let page = page_size();
    let hi = base
        .checked_add(size)
        .and_then(|e| e.checked_next_multiple_of(page));
    let sh = hi.and_then(|hi| shadow(base & !(page - 1), hi));
    RESERVED.write().insert(base, (size, sh));
}

/// Forgets the reservation `[base, base + size)`; false when there is no
/// such reservation (the exact pair is required, as by the driver).
pub fn unreserve(base: u64, size: u64) -> bool {
    let mut r = RESERVED.write();
    match r.get(&base) {
        Some(&(s, sh)) if s == size => {
            r.remove(&base);
            if let Some((lo, hi)) = sh {
                // SAFETY: the PROT_NONE mapping `reserve` made for it.
                unsafe { libc::munmap(lo as *mut libc::c_void, (hi - lo) as usize) };
            }
            true
        }
        _ => false,
    }
}

pub fn is_reservation(base: u64, size: u64) -> bool {
    RESERVED.read().get(&base).is_some_and(|&(s, _)| s == size)
}

/// Whether unified addressing should treat `ptr` as device memory.
pub fn is_device(ptr: u64) -> bool {
    TABLE.read().find(ptr).is_some() || reserved(ptr)
}

/// Records what the host just handed out, reserving its addresses in the
/// guest.
pub fn record(mut r: Range) {
    let (base, size) = (r.base, r.size);
    let mut t = TABLE.write();
    // A mapping inside a VMM reservation is covered by the reservation's.
    if !reserved(base) {
        r.shadow = own_pages(&t, base, r.end()).and_then(|(lo, hi)| shadow(lo, hi));
        if r.shadow.is_none() {
            vgpu_guest::vlog!(
                vgpu_guest::log::Level::Warn,
                "device range {base:#x}+{size} is guest memory too; unified copies there are ambiguous"
            );
        }
    }
    if t.insert(r).is_err() {
        vgpu_guest::vlog!(
            vgpu_guest::log::Level::Warn,
            "device range {base:#x}+{size} overlaps one the guest already knows; not tracked"
        );
    }
}

/// Forgets everything of a destroyed or reset context.
pub fn forget_context(ctx: &Arc<Context>) {
    let mut t = TABLE.write();
    for r in t.forget_context(ctx) {
        unshadow(&t, &r);
    }
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
        use crate::context::state::{register, Kind as CtxKind, API_VERSION};
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
