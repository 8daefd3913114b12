//! Handle values the worker gives guests instead of driver pointers.
//!
//! A handle is `tag << 56 | 56 random-looking bits`. The tag makes a handle
//! of one kind useless as another (a stream handle passed as a context is
//! simply not in the context table); the random part makes handles
//! unguessable, so a guest cannot probe for another kind's objects or reuse a
//! stale value and hit a recycled one. Bits come from a keyed mix of a
//! counter: the key is read once from /dev/urandom, the counter makes every
//! value distinct.

use std::collections::HashMap;
use std::io::Read;

/// Per-kind tags (top byte). Later families add theirs here.
pub mod tag {
    pub const CONTEXT: u8 = 0xC7;
    pub const STREAM: u8 = 0x57;
    pub const EVENT: u8 = 0xE7;
    pub const MODULE: u8 = 0x3D;
    pub const FUNCTION: u8 = 0xF7;
    pub const LIBRARY: u8 = 0x1B;
    pub const KERNEL: u8 = 0x6E;
    /// A `cuMemCreate` physical allocation.
    pub const MEM_HANDLE: u8 = 0x4D;
    pub const MEM_POOL: u8 = 0x9E;
}

const RANDOM_BITS: u64 = (1 << 56) - 1;

/// Mints handle values for one session.
pub struct Minter {
    key: [u64; 2],
    counter: u64,
}

impl Minter {
    pub fn new() -> Minter {
        let mut b = [0u8; 16];
        if std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .is_err()
        {
            // Without urandom, fall back to weaker but still per-process
            // entropy: handles stay unique, only harder-to-guess suffers.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            b[..8].copy_from_slice(&t.to_le_bytes());
            b[8..].copy_from_slice(&(std::process::id() as u64).to_le_bytes());
        }
        let mut k0 = [0u8; 8];
        let mut k1 = [0u8; 8];
        k0.copy_from_slice(&b[..8]);
        k1.copy_from_slice(&b[8..]);
        Minter {
            key: [u64::from_le_bytes(k0), u64::from_le_bytes(k1)],
            counter: 0,
        }
    }

    /// A fresh value with `tag` in the top byte; never 0.
    pub fn mint(&mut self, tag: u8) -> u64 {
        self.counter += 1;
        let bits = mix(self.counter ^ self.key[0], self.key[1]) & RANDOM_BITS;
        ((tag as u64) << 56) | bits
    }
}

impl Default for Minter {
    fn default() -> Self {
        Minter::new()
    }
}

/// A keyed bijection of the counter (two rounds of a splitmix-style
/// finalizer): distinct counters give distinct outputs before masking, and
/// the output reveals nothing useful without the key.
fn mix(x: u64, k: u64) -> u64 {
    let mut z = x.wrapping_add(k).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z = z.wrapping_add(k.rotate_left(17));
    z = (z ^ (z >> 33)).wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    z ^ (z >> 33)
}

/// Handles of one kind mapped to what they stand for.
pub struct HandleTable<T> {
    tag: u8,
    map: HashMap<u64, T>,
}

impl<T> HandleTable<T> {
    pub fn new(tag: u8) -> Self {
        HandleTable {
            tag,
            map: HashMap::new(),
        }
    }

    /// Stores `v` under a fresh handle.
    pub fn insert(&mut self, minter: &mut Minter, v: T) -> u64 {
        loop {
            // Masking to 56 bits could in principle collide; retry then.
            let h = minter.mint(self.tag);
            if let std::collections::hash_map::Entry::Vacant(e) = self.map.entry(h) {
                e.insert(v);
                return h;
            }
        }
    }

    pub fn get(&self, h: u64) -> Option<&T> {
        self.map.get(&h)
    }

    pub fn get_mut(&mut self, h: u64) -> Option<&mut T> {
        self.map.get_mut(&h)
    }

    pub fn remove(&mut self, h: u64) -> Option<T> {
        self.map.remove(&h)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.map.iter().map(|(k, v)| (*k, v))
    }

    /// Empties the table (session teardown).
    pub fn drain(&mut self) -> impl Iterator<Item = (u64, T)> + '_ {
        self.map.drain()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_tagged_distinct_and_unpredictable() {
        let mut m = Minter::new();
        let mut t = HandleTable::new(tag::CONTEXT);
        let hs: Vec<u64> = (0..1000).map(|i| t.insert(&mut m, i)).collect();
        assert!(hs.iter().all(|h| (h >> 56) as u8 == tag::CONTEXT));
        let set: std::collections::HashSet<_> = hs.iter().collect();
        assert_eq!(set.len(), 1000);
        // Consecutive handles are not consecutive numbers.
        assert!(hs.windows(2).all(|w| w[1].wrapping_sub(w[0]) != 1));
        // Two sessions mint different values.
        let mut m2 = Minter::new();
        assert_ne!(m2.mint(tag::CONTEXT), hs[0]);
        assert_eq!(t.get(hs[7]), Some(&7));
        assert_eq!(t.get(hs[7] ^ 1), None);
        assert_eq!(t.remove(hs[7]), Some(7));
        assert_eq!(t.get(hs[7]), None);
    }
}
