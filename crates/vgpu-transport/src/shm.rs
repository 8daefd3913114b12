//! The shared-memory data plane of a same-host guest (see
//! docs/protocol.md, "Shared-memory data plane").
//!
//! The guest creates a memfd, sizes it, seals it against shrinking and
//! growing and hands it to its worker over the Unix socket (SCM_RIGHTS) in
//! the `ShmAttach` frame that follows the handshake. Both map it. Bulk
//! bytes then travel through its slots; the socket carries only
//! descriptors (offset, length) and acknowledgements.
//!
//! Why sealing makes the worker safe: a mapping of a file that later
//! shrinks raises SIGBUS on access past the new end. The worker adopts a
//! region only if the kernel reports `F_SEAL_SHRINK` on it (`F_GET_SEALS`,
//! which also proves it is a memfd) and `fstat` says it is at least as
//! large as announced; seals cannot be removed, so no access inside the
//! mapping can ever fault. What the guest writes into the region at any
//! time is only data: the worker checks every offset and length against
//! the mapping before it touches a byte ([`Region::range`]).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A mapped shared-memory region.
#[derive(Debug)]
pub struct Region {
    ptr: *mut u8,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the region is plain shared memory; who may touch which bytes
// when is the protocol's business (one request in a slot at a time), and
// the pointer itself is valid from any thread until drop.
unsafe impl Send for Region {}

/// The seals a guest puts on its region; the worker requires `SHRINK`.
const SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

impl Region {
    /// The guest's side: a new sealed memfd of `len` bytes, mapped.
    pub fn create(len: usize) -> io::Result<Region> {
        // SAFETY: a NUL-terminated name and valid flags.
        let fd = check(unsafe {
            libc::memfd_create(
                c"vgpu-shm".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        })?;
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: plain calls on a descriptor we own.
        unsafe {
            check(libc::ftruncate(fd.as_raw_fd(), len as libc::off_t))?;
            check(libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS))?;
        }
        Region::map(fd, len)
    }

    /// The worker's side: adopts the guest's descriptor if it is a memfd
    /// sealed against shrinking and holds at least `len` bytes (see the
    /// module docs); anything else is refused with the reason.
    pub fn adopt(fd: OwnedFd, len: u64) -> Result<Region, String> {
        // SAFETY: F_GET_SEALS on a descriptor we own.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 {
            return Err(format!(
                "not a sealable memfd ({})",
                io::Error::last_os_error()
            ));
        }
        if seals & libc::F_SEAL_SHRINK == 0 {
            return Err("not sealed against shrinking (F_SEAL_SHRINK)".into());
        }
        // SAFETY: stat is plain old data; fstat fills it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat into a buffer we own.
        check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }).map_err(|e| e.to_string())?;
        if (st.st_size as u64) < len {
            return Err(format!("holds {} bytes, {len} announced", st.st_size));
        }
        if len == 0 || len > MAX_REGION {
            return Err(format!("size {len} outside 1..={MAX_REGION}"));
        }
        Region::map(fd, len as usize).map_err(|e| format!("mmap: {e}"))
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<Region> {
        // SAFETY: a shared mapping of a descriptor we own; the result is
        // checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Region {
            ptr: p.cast(),
            len,
            fd,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The start of the mapping (for registering it with a driver).
    pub fn base(&self) -> *mut u8 {
        self.ptr
    }

    /// `len` bytes at `offset`, if they lie inside the mapping: the only
    /// way to a pointer into the region from a descriptor that arrived on
    /// the wire.
    pub fn range(&self, offset: u64, len: u64) -> Option<*mut u8> {
        let end = offset.checked_add(len)?;
        if end > self.len as u64 {
            return None;
        }
        // SAFETY: offset <= len of the mapping, checked above.
        Some(unsafe { self.ptr.add(offset as usize) })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped; nothing refers to it
        // any more (the region is dropped).
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// The largest region a worker maps.
pub const MAX_REGION: u64 = 1 << 30;

/// The guest's region: [`SLOTS`] slots of [`SLOT`] bytes.
pub const SLOT: u64 = 4 << 20;
pub const SLOTS: u64 = 4;
pub const REGION: u64 = SLOT * SLOTS;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_adopt_and_bounds() {
        let r = Region::create(1 << 20).unwrap();
        // SAFETY: the descriptor is duplicated, so both own one.
        let dup = unsafe { OwnedFd::from_raw_fd(libc::dup(r.fd())) };
        let w = Region::adopt(dup, 1 << 20).unwrap();
        // SAFETY: both pointers are inside their mappings of one file.
        unsafe {
            *r.range(5, 1).unwrap() = 42;
            assert_eq!(*w.range(5, 1).unwrap(), 42);
        }
        assert!(w.range(1 << 20, 0).is_some());
        assert!(w.range((1 << 20) - 1, 2).is_none());
        assert!(w.range(u64::MAX, 2).is_none());
        // A sealed file cannot shrink under the worker.
        // SAFETY: plain call on our descriptor.
        assert!(unsafe { libc::ftruncate(r.fd(), 10) } < 0);
        // Announcing more than the file holds is refused.
        // SAFETY: as above.
        let dup = unsafe { OwnedFd::from_raw_fd(libc::dup(r.fd())) };
        assert!(Region::adopt(dup, 2 << 20).is_err());
    }

    #[test]
    fn unsealed_or_foreign_descriptors_are_refused() {
        // SAFETY: a fresh memfd without seals.
        let fd = unsafe { libc::memfd_create(c"t".as_ptr(), libc::MFD_CLOEXEC) };
        // SAFETY: we own it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: plain call on our descriptor.
        unsafe { libc::ftruncate(fd.as_raw_fd(), 4096) };
        // (Without MFD_ALLOW_SEALING it is born sealed with F_SEAL_SEAL only.)
        assert!(Region::adopt(fd, 4096).unwrap_err().contains("SHRINK"));
        // Sealable but not sealed.
        // SAFETY: as above.
        let fd = unsafe {
            OwnedFd::from_raw_fd(libc::memfd_create(
                c"t".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            ))
        };
        // SAFETY: as above.
        unsafe { libc::ftruncate(fd.as_raw_fd(), 4096) };
        assert!(Region::adopt(fd, 4096).unwrap_err().contains("SHRINK"));
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(Region::adopt(f.into(), 4096).unwrap_err().contains("memfd"));
    }
}
