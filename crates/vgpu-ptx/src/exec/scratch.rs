//! A few bytes of device memory the interpreter owns for a launch, seen by
//! the kernel at a synthetic global address: the cooperative grid workspace
//! that `%envreg1:%envreg2` point at. It overlays the caller's [`Memory`],
//! so loads, stores and atomics reach it like any global memory, and the
//! driver needs no allocation of its own.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::memory::{MemError, Memory};

/// Where the overlay lives: a top byte no device pointer (a host user-space
/// address) and no interpreter window (`0xF1`..`0xF4`) uses.
pub(crate) const SCRATCH_BASE: u64 = 0xF5 << 56;

/// Bytes in the overlay.
pub(crate) const SCRATCH_BYTES: u64 = 16;

pub(crate) struct Overlay<'a> {
    pub inner: &'a dyn Memory,
    words: [AtomicU64; (SCRATCH_BYTES / 8) as usize],
}

impl<'a> Overlay<'a> {
    pub fn new(inner: &'a dyn Memory) -> Self {
        Overlay {
            inner,
            words: Default::default(),
        }
    }

    /// The offset of `[addr, addr + len)` in the overlay, if it lies there;
    /// an access that only partly does is illegal.
    fn offset(addr: u64, len: usize) -> Option<Result<usize, MemError>> {
        let end = SCRATCH_BASE + SCRATCH_BYTES;
        if addr < SCRATCH_BASE || addr >= end {
            return None;
        }
        Some(if addr + len as u64 <= end {
            Ok((addr - SCRATCH_BASE) as usize)
        } else {
            Err(MemError::IllegalAddress { addr })
        })
    }

    fn byte(&self, off: usize) -> u8 {
        (self.words[off / 8].load(Ordering::SeqCst) >> (8 * (off % 8))) as u8
    }

    /// Replaces bits `mask` of word `w` with `val` when they equal `cur`;
    /// returns the bits found.
    fn cas_bits(&self, w: usize, mask: u64, cur: u64, val: u64) -> u64 {
        let mut old = self.words[w].load(Ordering::SeqCst);
        loop {
            if old & mask != cur & mask {
                return old & mask;
            }
            let new = (old & !mask) | (val & mask);
            match self.words[w].compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return cur & mask,
                Err(o) => old = o,
            }
        }
    }
}

impl Memory for Overlay<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        match Self::offset(addr, buf.len()) {
            None => self.inner.read(addr, buf),
            Some(off) => {
                let off = off?;
                for (k, b) in buf.iter_mut().enumerate() {
                    *b = self.byte(off + k);
                }
                Ok(())
            }
        }
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        match Self::offset(addr, data.len()) {
            None => self.inner.write(addr, data),
            Some(off) => {
                let off = off?;
                for (k, b) in data.iter().enumerate() {
                    let (w, shift) = ((off + k) / 8, 8 * ((off + k) % 8));
                    let mask = 0xffu64 << shift;
                    let val = (*b as u64) << shift;
                    loop {
                        let cur = self.words[w].load(Ordering::SeqCst);
                        if self.cas_bits(w, mask, cur, val) == cur & mask {
                            break;
                        }
                    }
                }
                Ok(())
            }
        }
    }

    fn compare_exchange_u32(&self, addr: u64, current: u32, new: u32) -> Result<u32, MemError> {
        match Self::offset(addr, 4) {
            None => self.inner.compare_exchange_u32(addr, current, new),
            Some(off) => {
                let off = off?;
                let shift = 8 * (off % 8) as u32;
                let mask = 0xffff_ffffu64 << shift;
                let got = self.cas_bits(
                    off / 8,
                    mask,
                    (current as u64) << shift,
                    (new as u64) << shift,
                );
                Ok((got >> shift) as u32)
            }
        }
    }

    fn compare_exchange_u64(&self, addr: u64, current: u64, new: u64) -> Result<u64, MemError> {
        match Self::offset(addr, 8) {
            None => self.inner.compare_exchange_u64(addr, current, new),
            Some(off) => Ok(self.cas_bits(off? / 8, u64::MAX, current, new)),
        }
    }

    fn device_alloc(&self, size: u64) -> Option<u64> {
        self.inner.device_alloc(size)
    }

    fn device_free(&self, addr: u64) {
        self.inner.device_free(addr)
    }
}
