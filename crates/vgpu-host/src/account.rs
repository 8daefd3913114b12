//! What a principal holds across all its connections (docs/security.md,
//! "Guest principals and limits").
//!
//! Design: the supervisor creates one shared page per principal (a memfd)
//! with one row of counters per connection slot. Each of the principal's
//! workers maps it and is given its own slot: after every request it
//! publishes what its session holds (device memory, contexts, streams,
//! events, modules) into its row, and before it creates something it sums
//! the other rows. The supervisor zeroes a row when it reaps the worker, so
//! a killed worker's share comes back however it died — no count is ever
//! carried across a crash. Two connections of one principal allocating at
//! the same instant can each pass the check before seeing the other's
//! allocation, so a limit can be exceeded by at most one allocation per
//! connection in flight at once.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

/// What is counted, in the order of a slot's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    MemoryBytes = 0,
    Contexts = 1,
    Streams = 2,
    Events = 3,
    Modules = 4,
}
pub const KINDS: usize = 5;

/// Connection slots per principal, so the most connections a principal
/// can be allowed.
pub const MAX_SLOTS: usize = 256;

const BYTES: usize = MAX_SLOTS * KINDS * 8;

/// A mapping of a principal's page.
pub struct Account {
    fd: OwnedFd,
    base: *const AtomicU64,
}

// SAFETY: the mapping is only accessed through atomics.
unsafe impl Send for Account {}
// SAFETY: as above.
unsafe impl Sync for Account {}

impl Account {
    /// A new zeroed page (supervisor).
    pub fn create(name: &str) -> std::io::Result<Account> {
        let cname = std::ffi::CString::new(format!("vgpu-account-{name}"))
            .unwrap_or_else(|_| c"vgpu-account".to_owned());
        // SAFETY: a valid C string; MFD_CLOEXEC so only workers we hand it
        // to (clearing the flag in their pre_exec) inherit it.
        let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor we just created and own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ftruncate on our memfd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), BYTES as libc::off_t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Account::map(fd)
    }

    /// Maps an inherited page (worker).
    ///
    /// # Safety
    /// `fd` is the descriptor the supervisor handed over, owned by no one
    /// else in this process.
    pub unsafe fn from_raw_fd(fd: RawFd) -> std::io::Result<Account> {
        // SAFETY: the caller's contract.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `stat` is plain data; all zeroes is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat into a stat we own.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if (st.st_size as usize) < BYTES {
            return Err(std::io::Error::other("account page too small"));
        }
        Account::map(fd)
    }

    fn map(fd: OwnedFd) -> std::io::Result<Account> {
        // SAFETY: a fresh shared mapping of BYTES bytes of the memfd.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Account {
            fd,
            base: p as *const AtomicU64,
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn cell(&self, slot: usize, kind: Kind) -> &AtomicU64 {
        assert!(slot < MAX_SLOTS);
        // SAFETY: within the BYTES-long mapping (slot < MAX_SLOTS, kind <
        // KINDS), 8-aligned (page-aligned base), and only ever accessed
        // atomically by every process mapping it.
        unsafe { &*self.base.add(slot * KINDS + kind as usize) }
    }

    /// Publishes what slot `slot` holds of `kind`.
    pub fn publish(&self, slot: usize, kind: Kind, value: u64) {
        self.cell(slot, kind).store(value, Ordering::Relaxed);
    }

    /// What every slot but `except` holds of `kind`.
    pub fn others(&self, except: usize, kind: Kind) -> u64 {
        (0..MAX_SLOTS)
            .filter(|s| *s != except)
            .map(|s| self.cell(s, kind).load(Ordering::Relaxed))
            .fold(0u64, u64::saturating_add)
    }

    /// What the whole principal holds of `kind`.
    pub fn total(&self, kind: Kind) -> u64 {
        self.others(MAX_SLOTS, kind)
    }

    /// Forgets a slot's row (its worker is gone).
    pub fn clear(&self, slot: usize) {
        for k in [
            Kind::MemoryBytes,
            Kind::Contexts,
            Kind::Streams,
            Kind::Events,
            Kind::Modules,
        ] {
            self.publish(slot, k, 0);
        }
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `map` made.
        unsafe { libc::munmap(self.base as *mut libc::c_void, BYTES) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_between_mappings() {
        let a = Account::create("t").unwrap();
        // SAFETY: dup gives the second mapping its own descriptor.
        let b = unsafe { Account::from_raw_fd(libc::dup(a.raw_fd())) }.unwrap();
        a.publish(3, Kind::MemoryBytes, 100);
        b.publish(7, Kind::MemoryBytes, 20);
        b.publish(7, Kind::Streams, 2);
        assert_eq!(a.total(Kind::MemoryBytes), 120);
        assert_eq!(b.others(7, Kind::MemoryBytes), 100);
        assert_eq!(a.total(Kind::Streams), 2);
        a.clear(7);
        assert_eq!(b.total(Kind::MemoryBytes), 100);
        assert_eq!(b.total(Kind::Streams), 0);
    }
}
