//! A set of device address ranges, kept as disjoint, coalesced half-open
//! intervals. The memory families record here which bytes a guest may read
//! and write; because touching intervals are merged, "is [a, b) allowed" is
//! one ordered-map lookup, and a copy that spans two adjacent allocations or
//! VMM mappings of the same session is allowed while one that leaves them by
//! a single byte is not.

use std::collections::BTreeMap;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RangeSet {
    /// start → end, disjoint and never touching.
    map: BTreeMap<u64, u64>,
}

impl RangeSet {
    pub fn new() -> RangeSet {
        RangeSet::default()
    }

    /// Adds [start, end); an empty range is ignored.
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        if let Some((&ps, &pe)) = self.map.range(..=s).next_back() {
            if pe >= s {
                s = ps;
                e = e.max(pe);
                self.map.remove(&ps);
            }
        }
        while let Some((&ns, &ne)) = self.map.range(s..).next() {
            if ns > e {
                break;
            }
            e = e.max(ne);
            self.map.remove(&ns);
        }
        self.map.insert(s, e);
    }

    /// Takes [start, end) out, splitting intervals that straddle its ends.
    pub fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        if let Some((&ps, &pe)) = self.map.range(..start).next_back() {
            if pe > start {
                self.map.insert(ps, start);
                if pe > end {
                    self.map.insert(end, pe);
                    return;
                }
            }
        }
        let inside: Vec<(u64, u64)> = self.map.range(start..end).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in inside {
            self.map.remove(&s);
            if e > end {
                self.map.insert(end, e);
            }
        }
    }

    /// Whether every byte of [start, end) is in the set. `start >= end`
    /// (nothing to touch) is false: callers decide about empty ranges
    /// before asking.
    pub fn covers(&self, start: u64, end: u64) -> bool {
        if start >= end {
            return false;
        }
        matches!(self.map.range(..=start).next_back(), Some((_, &e)) if e >= end)
    }

    /// Whether any byte of [start, end) is in the set.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        if start >= end {
            return false;
        }
        if matches!(self.map.range(..start).next_back(), Some((_, &e)) if e > start) {
            return true;
        }
        self.map.range(start..end).next().is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }
}

/// `[ptr, ptr + len)` as (start, end), or `None` when it wraps the address
/// space (which no allocation can contain).
pub fn span(ptr: u64, len: u64) -> Option<(u64, u64)> {
    ptr.checked_add(len).map(|end| (ptr, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_coalesces_and_covers() {
        let mut r = RangeSet::new();
        r.insert(100, 200);
        r.insert(300, 400);
        assert!(r.covers(100, 200));
        assert!(r.covers(150, 160));
        assert!(!r.covers(150, 201));
        assert!(!r.covers(99, 101));
        assert!(!r.covers(250, 260));
        assert!(!r.covers(100, 100));
        // Touching intervals merge, so a span across both is covered.
        r.insert(200, 300);
        assert!(r.covers(100, 400));
        assert_eq!(r.map.len(), 1);
        // Overlapping inserts of a range already present change nothing.
        r.insert(120, 380);
        assert_eq!(r.map, BTreeMap::from([(100, 400)]));
    }

    #[test]
    fn remove_splits() {
        let mut r = RangeSet::new();
        r.insert(0, 1000);
        r.remove(100, 200);
        assert!(r.covers(0, 100));
        assert!(!r.covers(99, 101));
        assert!(!r.overlaps(100, 200));
        assert!(r.overlaps(199, 201));
        assert!(r.covers(200, 1000));
        r.insert(500, 1500);
        r.remove(50, 1400);
        assert_eq!(r.map, BTreeMap::from([(0, 50), (1400, 1500)]));
        r.remove(0, 2000);
        assert!(r.is_empty());
        // Removing what is not there is a no-op.
        r.remove(5, 10);
        assert!(r.is_empty());
    }

    #[test]
    fn span_rejects_wrap() {
        assert_eq!(span(10, 5), Some((10, 15)));
        assert_eq!(span(u64::MAX, 1), None);
        assert_eq!(span(u64::MAX, 0), Some((u64::MAX, u64::MAX)));
    }
}
