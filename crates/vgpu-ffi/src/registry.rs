//! One registry for every kind of object a C API names by handle: the
//! shims' contexts, streams, events, modules and links, the software GPU's
//! objects, the host worker's per-session tables.
//!
//! A handle is minted by the registry, never derived from an address, and
//! never reused, so a stale or invented handle is simply not found: the
//! lookup fails with the kind's own error (`CUDA_ERROR_INVALID_HANDLE`,
//! `CUDA_ERROR_INVALID_CONTEXT` ...) and nothing is dereferenced. Two ways
//! to mint ([`Mint`]): values that look like the pointers applications
//! expect (cdylibs), or tagged, keyed values a guest cannot guess (the host
//! worker, whose handles cross a trust boundary).
//!
//! [`Registry`] is a plain table; [`Shared`] is the same behind a lock, for
//! the process-wide tables of a cdylib.

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

/// How a registry mints handle values.
#[derive(Debug, Clone, Copy)]
pub enum Mint {
    /// 16-aligned values in a range where user-space pointers live, from
    /// one process-wide counter shared by every registry of the process:
    /// handles of two kinds never coincide, so a stream passed as an event
    /// is not found either.
    Pointer,
    /// `tag << 56 | keyed mix of a counter`: the tag keeps kinds apart and
    /// the key (from /dev/urandom, read at the first mint) makes values
    /// unguessable.
    Keyed { tag: u8 },
}

/// Far above 0x1/0x2 (`CU_STREAM_LEGACY`/`_PER_THREAD`) and any real
/// heap, below the top of the canonical user address space.
const POINTER_BASE: u64 = 0x7e50_0000_0000;
static POINTER_COUNTER: AtomicU64 = AtomicU64::new(1);

#[derive(Debug)]
struct Minter {
    mint: Mint,
    key: Option<[u64; 2]>,
    counter: u64,
}

impl Minter {
    const fn new(mint: Mint) -> Minter {
        Minter {
            mint,
            key: None,
            counter: 0,
        }
    }

    fn next(&mut self) -> u64 {
        match self.mint {
            Mint::Pointer => POINTER_BASE + POINTER_COUNTER.fetch_add(1, Ordering::Relaxed) * 16,
            Mint::Keyed { tag } => {
                let key = *self.key.get_or_insert_with(random_key);
                self.counter += 1;
                let bits = mix(self.counter ^ key[0], key[1]) & ((1 << 56) - 1);
                ((tag as u64) << 56) | bits
            }
        }
    }
}

fn random_key() -> [u64; 2] {
    let mut b = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        // Without urandom, weaker but still per-process entropy: handles
        // stay unique, only harder-to-guess suffers.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        b[..8].copy_from_slice(&t.to_le_bytes());
        b[8..].copy_from_slice(&u64::from(std::process::id()).to_le_bytes());
    }
    let (k0, k1) = b.split_at(8);
    [
        u64::from_le_bytes(k0.try_into().unwrap_or_default()),
        u64::from_le_bytes(k1.try_into().unwrap_or_default()),
    ]
}

/// A keyed bijection of the counter (a splitmix-style finalizer twice):
/// distinct counters give distinct outputs, and the output reveals nothing
/// useful without the key.
fn mix(x: u64, k: u64) -> u64 {
    let mut z = x.wrapping_add(k).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z = z.wrapping_add(k.rotate_left(17));
    z = (z ^ (z >> 33)).wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    z ^ (z >> 33)
}

/// Live objects of one kind by handle. `E` is what a miss fails with.
#[derive(Debug)]
pub struct Registry<T, E> {
    /// For log lines: "stream", "context" ...
    kind: &'static str,
    missing: E,
    minter: Minter,
    live: BTreeMap<u64, T>,
}

impl<T, E: Copy> Registry<T, E> {
    pub const fn new(kind: &'static str, missing: E, mint: Mint) -> Self {
        Registry {
            kind,
            missing,
            minter: Minter::new(mint),
            live: BTreeMap::new(),
        }
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Stores the value `make` builds from its fresh handle; returns the
    /// handle.
    pub fn insert_with(&mut self, make: impl FnOnce(u64) -> T) -> u64 {
        let h = loop {
            // A keyed value is masked to 56 bits, so two counters could in
            // principle meet; never hand out a value that is live.
            let h = self.minter.next();
            if h != 0 && !self.live.contains_key(&h) {
                break h;
            }
        };
        self.live.insert(h, make(h));
        h
    }

    pub fn insert(&mut self, v: T) -> u64 {
        self.insert_with(|_| v)
    }

    pub fn get(&self, h: u64) -> Result<&T, E> {
        self.live
            .get(&h)
            .ok_or_else(|| miss(self.kind, h, self.missing))
    }

    pub fn get_mut(&mut self, h: u64) -> Result<&mut T, E> {
        let (kind, missing) = (self.kind, self.missing);
        self.live.get_mut(&h).ok_or_else(|| miss(kind, h, missing))
    }

    /// Removes and returns the object; a second take of the same handle
    /// fails, so racing destroys act once.
    pub fn take(&mut self, h: u64) -> Result<T, E> {
        self.live
            .remove(&h)
            .ok_or_else(|| miss(self.kind, h, self.missing))
    }

    /// The object, where absence is an ordinary answer rather than the
    /// caller's error (no log line).
    pub fn find(&self, h: u64) -> Option<&T> {
        self.live.get(&h)
    }

    pub fn find_mut(&mut self, h: u64) -> Option<&mut T> {
        self.live.get_mut(&h)
    }

    /// [`Registry::take`] where absence is an ordinary answer.
    pub fn remove(&mut self, h: u64) -> Option<T> {
        self.live.remove(&h)
    }

    pub fn contains(&self, h: u64) -> bool {
        self.live.contains_key(&h)
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.live.iter().map(|(h, v)| (*h, v))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u64, &mut T)> {
        self.live.iter_mut().map(|(h, v)| (*h, v))
    }

    /// Keeps the objects `keep` accepts; returns the others.
    pub fn take_unless(&mut self, mut keep: impl FnMut(u64, &T) -> bool) -> Vec<(u64, T)> {
        let gone: Vec<u64> = self
            .live
            .iter()
            .filter(|(h, v)| !keep(**h, v))
            .map(|(h, _)| *h)
            .collect();
        gone.into_iter()
            .filter_map(|h| self.live.remove(&h).map(|v| (h, v)))
            .collect()
    }

    /// Empties the registry (teardown), oldest handle first for `Pointer`
    /// handles.
    pub fn take_all(&mut self) -> Vec<(u64, T)> {
        std::mem::take(&mut self.live).into_iter().collect()
    }
}

/// A lookup that found nothing: one Debug line saying which handle of
/// which kind, so `VGPU_LOG=debug` explains an INVALID_HANDLE.
fn miss<E>(kind: &str, h: u64, missing: E) -> E {
    crate::vlog!(
        crate::log::Level::Debug,
        "{h:#x} is not a live {kind} of this process"
    );
    missing
}

/// A [`Registry`] behind a read-write lock: a cdylib's process-wide table.
/// Lookups clone the value (an `Arc`, usually) so no lock is held while
/// the caller uses it.
#[derive(Debug)]
pub struct Shared<T, E>(RwLock<Registry<T, E>>);

impl<T: Clone, E: Copy> Shared<T, E> {
    pub const fn new(kind: &'static str, missing: E, mint: Mint) -> Self {
        Shared(RwLock::new(Registry::new(kind, missing, mint)))
    }

    pub fn insert_with(&self, make: impl FnOnce(u64) -> T) -> u64 {
        self.0.write().insert_with(make)
    }

    pub fn insert(&self, v: T) -> u64 {
        self.0.write().insert(v)
    }

    pub fn get(&self, h: u64) -> Result<T, E> {
        self.0.read().get(h).cloned()
    }

    pub fn take(&self, h: u64) -> Result<T, E> {
        self.0.write().take(h)
    }

    pub fn contains(&self, h: u64) -> bool {
        self.0.read().contains(h)
    }

    pub fn len(&self) -> usize {
        self.0.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.read().is_empty()
    }

    /// Every live object, in handle order.
    pub fn values(&self) -> Vec<T> {
        self.0.read().iter().map(|(_, v)| v.clone()).collect()
    }

    pub fn take_unless(&self, keep: impl FnMut(u64, &T) -> bool) -> Vec<(u64, T)> {
        self.0.write().take_unless(keep)
    }

    pub fn take_all(&self) -> Vec<(u64, T)> {
        self.0.write().take_all()
    }

    /// Direct access for the rare caller that must act under the lock
    /// (check-and-remove in one step).
    pub fn write(&self) -> parking_lot::RwLockWriteGuard<'_, Registry<T, E>> {
        self.0.write()
    }

    pub fn read(&self) -> parking_lot::RwLockReadGuard<'_, Registry<T, E>> {
        self.0.read()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cuda_types::cuda::CUresult;

    const INVALID_HANDLE: CUresult = CUresult::CUDA_ERROR_INVALID_HANDLE;

    #[test]
    fn insert_get_take() {
        let mut r: Registry<&str, CUresult> =
            Registry::new("stream", INVALID_HANDLE, Mint::Pointer);
        let a = r.insert("a");
        let b = r.insert_with(|h| if h == 0 { "zero" } else { "b" });
        assert_ne!(a, b);
        assert_eq!(a % 16, 0);
        assert!(a > 2);
        assert_eq!(r.get(a), Ok(&"a"));
        assert_eq!(r.get(b), Ok(&"b"));
        assert_eq!(r.take(a), Ok("a"));
        assert_eq!(r.take(a), Err(INVALID_HANDLE), "taken once");
        assert_eq!(r.get(a), Err(INVALID_HANDLE), "stale");
        assert_eq!(r.get(12345), Err(INVALID_HANDLE), "invented");
        assert_eq!(r.len(), 1);
        let c = r.insert("c");
        assert_ne!(c, a, "never reused");
        assert_eq!(r.take_unless(|_, v| *v == "c"), vec![(b, "b")]);
        assert_eq!(r.take_all(), vec![(c, "c")]);
        assert!(r.is_empty());
    }

    #[test]
    fn pointer_handles_of_different_kinds_never_coincide() {
        let mut s: Registry<u8, u32> = Registry::new("stream", 1, Mint::Pointer);
        let mut e: Registry<u8, u32> = Registry::new("event", 2, Mint::Pointer);
        let hs: Vec<u64> = (0..100).map(|_| s.insert(0)).collect();
        let he: Vec<u64> = (0..100).map(|_| e.insert(0)).collect();
        for h in &hs {
            assert_eq!(e.get(*h), Err(2));
        }
        for h in &he {
            assert_eq!(s.get(*h), Err(1));
        }
    }

    #[test]
    fn keyed_handles_carry_their_tag_and_differ() {
        let mut r: Registry<u32, u32> = Registry::new("context", 9, Mint::Keyed { tag: 0xC7 });
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..1000 {
            let h = r.insert(i);
            assert_eq!(h >> 56, 0xC7);
            assert!(seen.insert(h));
        }
        assert_eq!(r.get(0xC700_0000_0000_0001), Err(9));
    }

    #[test]
    fn shared_clones_out() {
        static S: Shared<std::sync::Arc<u32>, CUresult> =
            Shared::new("event", INVALID_HANDLE, Mint::Pointer);
        let h = S.insert(std::sync::Arc::new(5));
        assert_eq!(*S.get(h).unwrap(), 5);
        assert_eq!(S.values().len(), 1);
        assert_eq!(*S.take(h).unwrap(), 5);
        assert!(S.get(h).is_err());
    }
}
