//! The hooked libc functions. Each either runs the real function on the
//! redirected path or, for the synthesized device nodes, patches its answer.

use std::ffi::{c_char, c_int, c_void, CStr};

use libc::{mode_t, size_t, ssize_t, AT_FDCWD, DIR, FILE};

use super::{hook, redirect, route, worth_routing, Route};
use crate::vfiles::path::{DevNode, StackPath, PATH_MAX};

const _: () = assert!(std::mem::size_of::<libc::stat>() == std::mem::size_of::<libc::stat64>());

const CHR_MODE: u32 = libc::S_IFCHR | 0o666;

/// Turns /dev/null's stat answer into the GPU node's, keeping its owner,
/// times and st_dev, which are those of a real devtmpfs node.
///
/// # Safety
/// `st` points to a filled `struct stat`.
unsafe fn patch_stat(st: *mut libc::stat, d: DevNode) {
    // SAFETY: caller contract.
    unsafe {
        (*st).st_mode = CHR_MODE;
        (*st).st_rdev = libc::makedev(d.major, d.minor);
        (*st).st_ino = d.ino;
    }
}

/// # Safety
/// `st` points to a filled `struct stat64` (same layout on 64-bit Linux).
unsafe fn patch_stat64(st: *mut libc::stat64, d: DevNode) {
    // SAFETY: same layout, asserted above; caller contract.
    unsafe { patch_stat(st.cast(), d) }
}

/// # Safety
/// `st` points to a filled `struct statx`.
unsafe fn patch_statx(st: *mut libc::statx, d: DevNode) {
    // SAFETY: caller contract.
    unsafe {
        (*st).stx_mode = CHR_MODE as u16;
        (*st).stx_rdev_major = d.major;
        (*st).stx_rdev_minor = d.minor;
        (*st).stx_ino = d.ino;
    }
}

/// Runs a stat-like call and patches a successful answer for device nodes.
///
/// # Safety
/// `path` is null or NUL-terminated; `call` and `patch` are sound for it.
#[inline(always)]
unsafe fn stat_like(
    dirfd: c_int,
    path: *const c_char,
    call: impl FnOnce(*const c_char) -> c_int,
    patch: impl FnOnce(DevNode),
) -> c_int {
    // SAFETY: forwarded caller contract.
    unsafe {
        redirect(dirfd, path, |p, dev| {
            let r = call(p);
            if let (0, Some(d)) = (r, dev) {
                patch(d);
            }
            r
        })
    }
}

/// Copies a resolved path out the way realpath does: into the caller's
/// buffer (`cap` bytes) or a fresh malloc'd one.
///
/// # Safety
/// `resolved` is null or valid for `cap` bytes.
unsafe fn emit(bytes: &[u8], resolved: *mut c_char, cap: usize) -> *mut c_char {
    if bytes.len() + 1 > cap {
        // SAFETY: errno location is always valid.
        unsafe { *libc::__errno_location() = libc::ENAMETOOLONG };
        return std::ptr::null_mut();
    }
    let out = if resolved.is_null() {
        // SAFETY: plain allocation; the caller frees it, as with realpath.
        unsafe { libc::malloc(bytes.len() + 1).cast::<c_char>() }
    } else {
        resolved
    };
    if out.is_null() {
        // SAFETY: errno location is always valid.
        unsafe { *libc::__errno_location() = libc::ENOMEM };
        return out;
    }
    // SAFETY: out holds at least len + 1 bytes (checked or allocated above).
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.cast::<u8>(), bytes.len());
        *out.add(bytes.len()) = 0;
    }
    out
}

/// realpath for a routed path: resolve inside the private tree, then map the
/// answer back to the path the application asked about. `None` means the
/// path is not virtual and the caller's real function should run.
///
/// # Safety
/// `path` is null or NUL-terminated; `resolved` null or valid for `cap` bytes.
unsafe fn realpath_virtual(
    path: *const c_char,
    resolved: *mut c_char,
    cap: usize,
) -> Option<*mut c_char> {
    // SAFETY: caller contract.
    if !unsafe { worth_routing(AT_FDCWD, path) } {
        return None;
    }
    let mut sp = StackPath::new();
    // SAFETY: caller contract.
    match unsafe { route(AT_FDCWD, path, &mut sp) } {
        Route::Pass => None,
        // SAFETY: caller contract.
        Route::Dev(_) => Some(unsafe { emit(sp.norm(), resolved, cap) }),
        Route::Tree => {
            let mut tmp = [0 as c_char; PATH_MAX];
            // SAFETY: tmp holds PATH_MAX bytes as realpath requires.
            let r = unsafe { realpath::real()(sp.as_ptr(), tmp.as_mut_ptr()) };
            if r.is_null() {
                return Some(r);
            }
            // SAFETY: realpath NUL-terminated tmp.
            let got = unsafe { CStr::from_ptr(tmp.as_ptr()) }.to_bytes();
            let root = sp.root();
            let mapped = match got.strip_prefix(root) {
                Some(b"") => b"/".as_slice(),
                Some(rest) if rest.first() == Some(&b'/') => rest,
                _ => got,
            };
            // SAFETY: caller contract.
            Some(unsafe { emit(mapped, resolved, cap) })
        }
    }
}

hook! {
    unsafe fn open(path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
        // SAFETY: path comes from the caller as for open(2).
        unsafe { redirect(AT_FDCWD, path, |p, _| open::real()(p, flags, mode)) }
    }
    unsafe fn open64(path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
        // SAFETY: as for open.
        unsafe { redirect(AT_FDCWD, path, |p, _| open64::real()(p, flags, mode)) }
    }
    unsafe fn openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
        // SAFETY: as for open.
        unsafe { redirect(dirfd, path, |p, _| openat::real()(dirfd, p, flags, mode)) }
    }
    unsafe fn openat64(dirfd: c_int, path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
        // SAFETY: as for open.
        unsafe { redirect(dirfd, path, |p, _| openat64::real()(dirfd, p, flags, mode)) }
    }
    unsafe fn __open_2(path: *const c_char, flags: c_int) -> c_int {
        // SAFETY: as for open.
        unsafe { redirect(AT_FDCWD, path, |p, _| __open_2::real()(p, flags)) }
    }
    unsafe fn __open64_2(path: *const c_char, flags: c_int) -> c_int {
        // SAFETY: as for open.
        unsafe { redirect(AT_FDCWD, path, |p, _| __open64_2::real()(p, flags)) }
    }
    unsafe fn __openat_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
        // SAFETY: as for open.
        unsafe { redirect(dirfd, path, |p, _| __openat_2::real()(dirfd, p, flags)) }
    }
    unsafe fn __openat64_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
        // SAFETY: as for open.
        unsafe { redirect(dirfd, path, |p, _| __openat64_2::real()(dirfd, p, flags)) }
    }

    unsafe fn fopen(path: *const c_char, mode: *const c_char) -> *mut FILE {
        // SAFETY: as for open; mode is passed on unchanged.
        unsafe { redirect(AT_FDCWD, path, |p, _| fopen::real()(p, mode)) }
    }
    unsafe fn fopen64(path: *const c_char, mode: *const c_char) -> *mut FILE {
        // SAFETY: as for fopen.
        unsafe { redirect(AT_FDCWD, path, |p, _| fopen64::real()(p, mode)) }
    }
    unsafe fn freopen(path: *const c_char, mode: *const c_char, stream: *mut FILE) -> *mut FILE {
        // SAFETY: as for fopen; a null path (mode change only) passes through.
        unsafe { redirect(AT_FDCWD, path, |p, _| freopen::real()(p, mode, stream)) }
    }
    unsafe fn freopen64(path: *const c_char, mode: *const c_char, stream: *mut FILE) -> *mut FILE {
        // SAFETY: as for freopen.
        unsafe { redirect(AT_FDCWD, path, |p, _| freopen64::real()(p, mode, stream)) }
    }

    unsafe fn stat(path: *const c_char, buf: *mut libc::stat) -> c_int {
        // SAFETY: buf is the caller's stat buffer, filled before patching.
        unsafe { stat_like(AT_FDCWD, path, |p| stat::real()(p, buf), |d| patch_stat(buf, d)) }
    }
    unsafe fn stat64(path: *const c_char, buf: *mut libc::stat64) -> c_int {
        // SAFETY: as for stat.
        unsafe { stat_like(AT_FDCWD, path, |p| stat64::real()(p, buf), |d| patch_stat64(buf, d)) }
    }
    unsafe fn lstat(path: *const c_char, buf: *mut libc::stat) -> c_int {
        // SAFETY: as for stat.
        unsafe { stat_like(AT_FDCWD, path, |p| lstat::real()(p, buf), |d| patch_stat(buf, d)) }
    }
    unsafe fn lstat64(path: *const c_char, buf: *mut libc::stat64) -> c_int {
        // SAFETY: as for stat.
        unsafe { stat_like(AT_FDCWD, path, |p| lstat64::real()(p, buf), |d| patch_stat64(buf, d)) }
    }
    unsafe fn fstatat(dirfd: c_int, path: *const c_char, buf: *mut libc::stat, flags: c_int) -> c_int {
        // SAFETY: as for stat.
        unsafe {
            stat_like(dirfd, path, |p| fstatat::real()(dirfd, p, buf, flags), |d| patch_stat(buf, d))
        }
    }
    unsafe fn fstatat64(dirfd: c_int, path: *const c_char, buf: *mut libc::stat64, flags: c_int) -> c_int {
        // SAFETY: as for stat.
        unsafe {
            stat_like(dirfd, path, |p| fstatat64::real()(dirfd, p, buf, flags), |d| patch_stat64(buf, d))
        }
    }
    // glibc before 2.33 compiled stat() into calls of these; binaries built
    // then still call them. `ver` selects the struct layout, which on 64-bit
    // Linux is struct stat itself.
    unsafe fn __xstat(ver: c_int, path: *const c_char, buf: *mut libc::stat) -> c_int {
        // SAFETY: as for stat.
        unsafe { stat_like(AT_FDCWD, path, |p| __xstat::real()(ver, p, buf), |d| patch_stat(buf, d)) }
    }
    unsafe fn __xstat64(ver: c_int, path: *const c_char, buf: *mut libc::stat64) -> c_int {
        // SAFETY: as for stat.
        unsafe {
            stat_like(AT_FDCWD, path, |p| __xstat64::real()(ver, p, buf), |d| patch_stat64(buf, d))
        }
    }
    unsafe fn __lxstat(ver: c_int, path: *const c_char, buf: *mut libc::stat) -> c_int {
        // SAFETY: as for stat.
        unsafe { stat_like(AT_FDCWD, path, |p| __lxstat::real()(ver, p, buf), |d| patch_stat(buf, d)) }
    }
    unsafe fn __lxstat64(ver: c_int, path: *const c_char, buf: *mut libc::stat64) -> c_int {
        // SAFETY: as for stat.
        unsafe {
            stat_like(AT_FDCWD, path, |p| __lxstat64::real()(ver, p, buf), |d| patch_stat64(buf, d))
        }
    }
    unsafe fn __fxstatat(ver: c_int, dirfd: c_int, path: *const c_char, buf: *mut libc::stat, flags: c_int) -> c_int {
        // SAFETY: as for stat.
        unsafe {
            stat_like(dirfd, path, |p| __fxstatat::real()(ver, dirfd, p, buf, flags), |d| patch_stat(buf, d))
        }
    }
    unsafe fn __fxstatat64(ver: c_int, dirfd: c_int, path: *const c_char, buf: *mut libc::stat64, flags: c_int) -> c_int {
        // SAFETY: as for stat.
        unsafe {
            stat_like(dirfd, path, |p| __fxstatat64::real()(ver, dirfd, p, buf, flags), |d| {
                patch_stat64(buf, d)
            })
        }
    }
    unsafe fn statx(dirfd: c_int, path: *const c_char, flags: c_int, mask: u32, buf: *mut libc::statx) -> c_int {
        // SAFETY: as for stat.
        unsafe {
            stat_like(dirfd, path, |p| statx::real()(dirfd, p, flags, mask, buf), |d| patch_statx(buf, d))
        }
    }

    unsafe fn access(path: *const c_char, mode: c_int) -> c_int {
        // SAFETY: as for open. /dev/null answers like a 0666 GPU node would.
        unsafe { redirect(AT_FDCWD, path, |p, _| access::real()(p, mode)) }
    }
    unsafe fn faccessat(dirfd: c_int, path: *const c_char, mode: c_int, flags: c_int) -> c_int {
        // SAFETY: as for access.
        unsafe { redirect(dirfd, path, |p, _| faccessat::real()(dirfd, p, mode, flags)) }
    }
    unsafe fn euidaccess(path: *const c_char, mode: c_int) -> c_int {
        // SAFETY: as for access.
        unsafe { redirect(AT_FDCWD, path, |p, _| euidaccess::real()(p, mode)) }
    }
    unsafe fn eaccess(path: *const c_char, mode: c_int) -> c_int {
        // SAFETY: as for access.
        unsafe { redirect(AT_FDCWD, path, |p, _| eaccess::real()(p, mode)) }
    }

    // A listing of /sys/bus/pci/devices opens the merged directory of the
    // private tree, so readdir itself needs no hook.
    unsafe fn opendir(path: *const c_char) -> *mut DIR {
        // SAFETY: as for open.
        unsafe { redirect(AT_FDCWD, path, |p, _| opendir::real()(p)) }
    }
    unsafe fn scandir(path: *const c_char, list: *mut c_void, filter: *const c_void, compar: *const c_void) -> c_int {
        // SAFETY: as for open; the callbacks are passed on unchanged.
        unsafe { redirect(AT_FDCWD, path, |p, _| scandir::real()(p, list, filter, compar)) }
    }
    unsafe fn scandir64(path: *const c_char, list: *mut c_void, filter: *const c_void, compar: *const c_void) -> c_int {
        // SAFETY: as for scandir.
        unsafe { redirect(AT_FDCWD, path, |p, _| scandir64::real()(p, list, filter, compar)) }
    }
    // Lets `cd /sys/bus/pci/devices/<bdf>` followed by relative opens work:
    // the cwd is then inside the private tree and the kernel resolves them.
    unsafe fn chdir(path: *const c_char) -> c_int {
        // SAFETY: as for open.
        unsafe { redirect(AT_FDCWD, path, |p, _| chdir::real()(p)) }
    }

    unsafe fn readlink(path: *const c_char, buf: *mut c_char, size: size_t) -> ssize_t {
        // SAFETY: as for open; buf/size are passed on unchanged.
        unsafe { redirect(AT_FDCWD, path, |p, _| readlink::real()(p, buf, size)) }
    }
    unsafe fn readlinkat(dirfd: c_int, path: *const c_char, buf: *mut c_char, size: size_t) -> ssize_t {
        // SAFETY: as for readlink.
        unsafe { redirect(dirfd, path, |p, _| readlinkat::real()(dirfd, p, buf, size)) }
    }
    // glibc's realpath resolves links with internal calls no hook sees, so it
    // is answered here: resolved within the private tree and mapped back, so
    // that e.g. the device directory resolves to /sys/devices/pci.../<bdf>.
    unsafe fn realpath(path: *const c_char, resolved: *mut c_char) -> *mut c_char {
        // SAFETY: resolved is null or PATH_MAX bytes, per realpath(3).
        match unsafe { realpath_virtual(path, resolved, PATH_MAX) } {
            Some(r) => r,
            // SAFETY: untouched pass-through.
            None => unsafe { realpath::real()(path, resolved) },
        }
    }
    unsafe fn __realpath_chk(path: *const c_char, resolved: *mut c_char, resolved_len: size_t) -> *mut c_char {
        // SAFETY: the fortified caller states the buffer size.
        match unsafe { realpath_virtual(path, resolved, resolved_len) } {
            Some(r) => r,
            // SAFETY: untouched pass-through.
            None => unsafe { __realpath_chk::real()(path, resolved, resolved_len) },
        }
    }
    unsafe fn canonicalize_file_name(path: *const c_char) -> *mut c_char {
        // SAFETY: a null buffer makes realpath_virtual allocate.
        match unsafe { realpath_virtual(path, std::ptr::null_mut(), usize::MAX) } {
            Some(r) => r,
            // SAFETY: untouched pass-through.
            None => unsafe { canonicalize_file_name::real()(path) },
        }
    }
}
