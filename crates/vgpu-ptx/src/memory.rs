//! Global memory as the interpreter sees it.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, RwLock};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemError {
    /// No allocation covers the whole access.
    IllegalAddress {
        addr: u64,
    },
    MisalignedAddress {
        addr: u64,
    },
}

/// Device global memory, addressed by 64-bit device pointers.
///
/// The interpreter checks natural alignment before calling; an implementation
/// checks that `[addr, addr + len)` lies inside one live allocation and
/// returns `IllegalAddress` otherwise. Many blocks call concurrently.
///
/// Atomics are built by the interpreter from `compare_exchange_*`, so an
/// implementation only needs a true hardware CAS on naturally aligned words
/// (for host memory: `AtomicU32`/`AtomicU64` on the address).
pub trait Memory: Sync {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError>;
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError>;
    /// Atomically: if `*addr == current` store `new`. Returns the previous value.
    fn compare_exchange_u32(&self, addr: u64, current: u32, new: u32) -> Result<u32, MemError>;
    fn compare_exchange_u64(&self, addr: u64, current: u64, new: u64) -> Result<u64, MemError>;

    /// Allocates `size` zeroed bytes of device memory, 16-byte aligned, for
    /// the device heap (`malloc` in a kernel). `None` when there is no room
    /// (`malloc` then returns NULL, as on a GPU whose heap is exhausted).
    /// The default has no heap at all.
    fn device_alloc(&self, size: u64) -> Option<u64> {
        let _ = size;
        None
    }

    /// Frees what [`Memory::device_alloc`] returned (device `free`).
    fn device_free(&self, addr: u64) {
        let _ = addr;
    }
}

/// A simple, safe [`Memory`]: regions at synthetic addresses backed by byte
/// atomics. For tests and tools; vgpu-emu uses its own mmap-backed map.
pub struct ArenaMemory {
    regions: RwLock<Vec<Region>>,
    /// Serialises the read-modify-write of compare-exchange; plain loads and
    /// stores stay lock-free.
    cas_lock: Mutex<()>,
}

struct Region {
    base: u64,
    bytes: Box<[AtomicU8]>,
}

/// First synthetic address; far from 0 so null-ish pointers fault.
const ARENA_BASE: u64 = 0x7000_0000_0000;

impl Default for ArenaMemory {
    fn default() -> Self {
        Self::new()
    }
}

impl ArenaMemory {
    pub fn new() -> Self {
        ArenaMemory {
            regions: RwLock::new(Vec::new()),
            cas_lock: Mutex::new(()),
        }
    }

    /// Allocates `size` zeroed bytes at a 256-byte aligned address.
    pub fn alloc(&self, size: usize) -> u64 {
        let mut r = self.regions.write().unwrap_or_else(|e| e.into_inner());
        let base = r.last().map_or(ARENA_BASE, |l| {
            // A gap between regions makes off-by-a-little accesses fault.
            (l.base + l.bytes.len() as u64 + 4096).next_multiple_of(256)
        });
        let bytes: Box<[AtomicU8]> = (0..size).map(|_| AtomicU8::new(0)).collect();
        r.push(Region { base, bytes });
        base
    }

    pub fn alloc_init(&self, data: &[u8]) -> u64 {
        let a = self.alloc(data.len());
        self.write(a, data).expect("fresh region");
        a
    }

    fn with_region<T>(
        &self,
        addr: u64,
        len: usize,
        f: impl FnOnce(&[AtomicU8]) -> T,
    ) -> Result<T, MemError> {
        let r = self.regions.read().unwrap_or_else(|e| e.into_inner());
        let i = r.partition_point(|g| g.base <= addr);
        if i == 0 {
            return Err(MemError::IllegalAddress { addr });
        }
        let g = &r[i - 1];
        let off = (addr - g.base) as usize;
        match off.checked_add(len) {
            Some(e) if e <= g.bytes.len() => Ok(f(&g.bytes[off..e])),
            _ => Err(MemError::IllegalAddress { addr }),
        }
    }

    pub fn read_vec(&self, addr: u64, len: usize) -> Result<Vec<u8>, MemError> {
        let mut v = vec![0; len];
        self.read(addr, &mut v)?;
        Ok(v)
    }

    pub fn read_f32s(&self, addr: u64, n: usize) -> Vec<f32> {
        self.read_vec(addr, n * 4)
            .expect("read_f32s")
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    pub fn read_u32s(&self, addr: u64, n: usize) -> Vec<u32> {
        self.read_vec(addr, n * 4)
            .expect("read_u32s")
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
}

impl Memory for ArenaMemory {
    fn device_alloc(&self, size: u64) -> Option<u64> {
        Some(self.alloc(usize::try_from(size).ok()?.max(1)))
    }

    fn device_free(&self, addr: u64) {
        let mut r = self.regions.write().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = r.iter().position(|g| g.base == addr) {
            r.remove(k);
        }
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.with_region(addr, buf.len(), |r| {
            for (b, s) in buf.iter_mut().zip(r) {
                *b = s.load(Ordering::Relaxed);
            }
        })
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        self.with_region(addr, data.len(), |r| {
            for (b, s) in data.iter().zip(r) {
                s.store(*b, Ordering::Relaxed);
            }
        })
    }

    fn compare_exchange_u32(&self, addr: u64, current: u32, new: u32) -> Result<u32, MemError> {
        let _g = self.cas_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        let old = u32::from_le_bytes(b);
        if old == current {
            self.write(addr, &new.to_le_bytes())?;
        }
        Ok(old)
    }

    fn compare_exchange_u64(&self, addr: u64, current: u64, new: u64) -> Result<u64, MemError> {
        let _g = self.cas_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        let old = u64::from_le_bytes(b);
        if old == current {
            self.write(addr, &new.to_le_bytes())?;
        }
        Ok(old)
    }
}
