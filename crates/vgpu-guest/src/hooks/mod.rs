//! libc interposition: path-taking calls are redirected into the private tree
//! of [`crate::vfiles`]; everything else goes to the next definition
//! (`dlsym(RTLD_NEXT)`) untouched.
//!
//! The hooks are exported by each cdylib that expands
//! [`shim_glue!`](crate::shim_glue) (or `__vgpu_export_libc_hooks!`), so they
//! take effect when that library precedes libc in the global lookup
//! scope: preloaded (`LD_PRELOAD`, as `vgpu run` does) or linked by the
//! executable ahead of libc. A library merely `dlopen`ed by the application
//! does not interpose.
//!
//! Cost when inactive (no provider, no `VGPU_VFILES_TEST`): one atomic load.
//! When active: absolute paths whose first component is not `proc`, `sys` or
//! `dev` are decided by reading a few bytes; only paths under those are
//! normalized (on the stack) and matched. Relative paths cost a `getcwd`.
//! A relative path against a directory fd other than `AT_FDCWD` is passed
//! through: when that fd was opened through a hook it points into the private
//! tree already, so the kernel resolves it correctly.
//!
//! Opening `/dev/nvidia*` opens `/dev/null` (a real character device cannot be
//! created unprivileged); stat-family calls on those paths are answered with
//! a synthesized character device (major 195, or 510 for nvidia-uvm). `fstat`
//! on such an fd therefore shows /dev/null, and `/proc/self/fd/N` of a
//! redirected file shows the private path.

#[doc(hidden)]
pub mod fs;

/// The names the hooks' signatures use, for the exports a cdylib expands.
#[doc(hidden)]
pub mod export_types {
    pub use libc::{self, mode_t, size_t, ssize_t, DIR, FILE};
    pub use std::ffi::{c_char, c_int, c_void};
}

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicPtr, Ordering};

use crate::vfiles::path::{self, Class, DevNode, StackPath};
use crate::vfiles::{self, state};

thread_local! {
    // const-initialized and without a destructor: no allocation, no
    // registration, usable at any point of the thread's life.
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// Per-thread re-entrancy guard: while held, hooks on this thread pass
/// everything through (the provider, the materialization and the
/// real-hardware scan use hooked functions themselves).
pub struct Guard(());

impl Guard {
    /// `None` when this thread is already inside a hook. (The guard must only
    /// be constructed on success: dropping one clears the flag.)
    pub fn enter() -> Option<Guard> {
        BUSY.try_with(|b| (!b.replace(true)).then(|| Guard(())))
            .ok()
            .flatten()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = BUSY.try_with(|b| b.set(false));
    }
}

/// Looks the real function up once. Tries the default version first, then
/// the base versions glibc keeps compat-only symbols such as `__xstat` under.
///
/// # Safety
/// `name` must be NUL-terminated.
unsafe fn resolve(name: &'static [u8], slot: &AtomicPtr<c_void>) -> *mut c_void {
    let p = slot.load(Ordering::Acquire);
    if !p.is_null() {
        return p;
    }
    // SAFETY: dlsym/dlvsym with NUL-terminated names.
    let mut p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) };
    for v in [c"GLIBC_2.2.5", c"GLIBC_2.17"] {
        if !p.is_null() {
            break;
        }
        // SAFETY: as above.
        p = unsafe { libc::dlvsym(libc::RTLD_NEXT, name.as_ptr().cast(), v.as_ptr()) };
    }
    if p.is_null() {
        // Only reachable if the application called a symbol that no later
        // object defines, which it could not have linked against.
        let msg = b"vgpu: libc hook found no next definition of ";
        // SAFETY: writes of valid buffers to stderr, then abort.
        unsafe {
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::write(2, name.as_ptr().cast(), name.len() - 1);
            libc::write(2, b"\n".as_ptr().cast(), 1);
            libc::abort();
        }
    }
    slot.store(p, Ordering::Release);
    p
}

/// Declares hooks: for each, a C function with the body given, a module of
/// the same name whose `real()` returns the next definition, and a line in
/// [`__vgpu_export_libc_hooks`](crate::__vgpu_export_libc_hooks), which a
/// cdylib expands to export it under the libc name.
/// Variadic libc functions (`open`) are declared with their optional argument
/// as a fixed one, which the x86_64 and aarch64 Linux calling conventions pass
/// in the same register either way.
///
/// The unmangled exports are made by the cdylib, not here: this crate is also
/// a dependency of the `vgpu` executable, where an `open` symbol would bind
/// the executable's own calls (std's included) at link time. A cargo feature
/// cannot keep them out, since features are unified across every package of
/// one `cargo build`.
macro_rules! hook {
    ($(
        unsafe fn $name:ident($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty $body:block
    )*) => {$(
        #[allow(non_snake_case)]
        pub(crate) mod $name {
            #[allow(unused_imports)]
            use super::*;
            pub(crate) type Real = unsafe extern "C" fn($($ty),*) -> $ret;
            static SLOT: std::sync::atomic::AtomicPtr<std::ffi::c_void> =
                std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());
            #[inline]
            pub(crate) fn real() -> Real {
                // SAFETY: the symbol of this name has this C signature in
                // every libc that defines it.
                unsafe {
                    std::mem::transmute::<*mut std::ffi::c_void, Real>(
                        $crate::hooks::resolve(concat!(stringify!($name), "\0").as_bytes(), &SLOT),
                    )
                }
            }
        }

        /// # Safety
        /// Same contract as the libc function of this name.
        #[inline]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret $body
    )*

        #[doc(hidden)]
        #[macro_export]
        macro_rules! __vgpu_export_libc_hooks {
            () => {
                #[doc(hidden)]
                pub mod __vgpu_libc_hooks {
                    #[allow(unused_imports)]
                    use $crate::hooks::export_types::*;
                    $(
                        /// # Safety
                        /// Same contract as the libc function of this name.
                        #[no_mangle]
                        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
                            // SAFETY: the caller keeps the libc contract,
                            // which is the hook's contract.
                            unsafe { $crate::hooks::fs::$name($($arg),*) }
                        }
                    )*
                }
            };
        }
    };
}
pub(crate) use hook;

/// Where a call should go.
pub(crate) enum Route {
    /// Untouched.
    Pass,
    /// The private tree: the `StackPath` holds root + path.
    Tree,
    /// A synthesized device node: operate on /dev/null; the `StackPath`
    /// holds the normalized path.
    Dev(DevNode),
}

pub(crate) const DEV_NULL: *const c_char = c"/dev/null".as_ptr();

/// The cheap part of the decision, on raw arguments: true when the path may
/// be virtual and the full routing must run.
///
/// # Safety
/// `path` is null or NUL-terminated.
#[inline(always)]
unsafe fn worth_routing(dirfd: c_int, path: *const c_char) -> bool {
    if path.is_null() || !vfiles::enabled() {
        return false;
    }
    // SAFETY: non-null and NUL-terminated per the caller.
    match unsafe { *path } as u8 {
        0 => false,
        // SAFETY: as above.
        b'/' => unsafe { path::absolute_may_be_virtual(path) },
        _ => dirfd == libc::AT_FDCWD,
    }
}

fn errno() -> c_int {
    // SAFETY: the thread's errno location is always valid.
    unsafe { *libc::__errno_location() }
}

fn set_errno(e: c_int) {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = e }
}

/// Full routing. Leaves errno as it found it, so a passed-through call
/// reports only its own errors.
///
/// # Safety
/// `path` is null or NUL-terminated.
pub(crate) unsafe fn route(dirfd: c_int, path: *const c_char, sp: &mut StackPath) -> Route {
    // SAFETY: forwarded caller contract.
    if !unsafe { worth_routing(dirfd, path) } {
        return Route::Pass;
    }
    let saved = errno();
    // SAFETY: non-null, NUL-terminated.
    let bytes = unsafe { std::ffi::CStr::from_ptr(path) }.to_bytes();
    let r = route_slow(bytes, sp);
    set_errno(saved);
    r
}

fn route_slow(bytes: &[u8], sp: &mut StackPath) -> Route {
    let ok = if bytes.first() == Some(&b'/') {
        sp.normalize(None, bytes)
    } else {
        sp.normalize_from_cwd(bytes)
    };
    if !ok || !path::may_be_virtual(sp.norm()) {
        return Route::Pass;
    }
    let Some(_g) = Guard::enter() else {
        return Route::Pass;
    };
    let Some(a) = state::active() else {
        return Route::Pass;
    };
    match a.layout.classify(sp.norm()) {
        None => Route::Pass,
        Some(Class::Dev(d)) => Route::Dev(d),
        Some(Class::Tree) => {
            if sp.prepend(&a.root) {
                Route::Tree
            } else {
                Route::Pass
            }
        }
    }
}

/// Runs `f` on the path the call should really use, and tells it when the
/// path is a synthesized device.
///
/// # Safety
/// `path` is null or NUL-terminated.
#[inline(always)]
pub(crate) unsafe fn redirect<R>(
    dirfd: c_int,
    path: *const c_char,
    f: impl FnOnce(*const c_char, Option<DevNode>) -> R,
) -> R {
    // SAFETY: forwarded caller contract.
    if !unsafe { worth_routing(dirfd, path) } {
        return f(path, None);
    }
    let mut sp = StackPath::new();
    // SAFETY: forwarded caller contract.
    match unsafe { route(dirfd, path, &mut sp) } {
        Route::Pass => f(path, None),
        Route::Tree => f(sp.as_ptr(), None),
        Route::Dev(d) => f(DEV_NULL, Some(d)),
    }
}
