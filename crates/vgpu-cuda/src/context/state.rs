//! The state behind the context entry points ([`crate::context`]): context
//! objects, the registry of live ones, and each thread's context stack —
//! everything about contexts that is answered without the host.
//!
//! A `CUcontext` handed to an application is a handle the registry minted
//! for a [`Context`]. A `CUcontext` argument converts to a [`Live`] context
//! (NULL or unknown: `CUDA_ERROR_INVALID_CONTEXT`) or, where NULL has a
//! meaning, to a [`CtxArg`]; a stale or invented handle is never
//! dereferenced.
//!
//! A thread's stack holds `Arc`s, so a context destroyed by another thread
//! stays readable here; its `destroyed` flag makes later work on it fail with
//! `CUDA_ERROR_CONTEXT_IS_DESTROYED`, as the driver documents.

use crate::args::{self, Live};
use cuda_types::cuda::{CUcontext, CUdevice, CUresult};
use parking_lot::{Mutex, RwLock};
use std::cell::RefCell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use vgpu_ffi::{FromCuda, Mint, Shared};

/// What `cuCtxGetApiVersion` reports: every context made through the
/// `_v2`-and-later entry points, and primary contexts, are API 3020.
pub const API_VERSION: u32 = 3020;
/// Contexts from the pre-3.2 `cuCtxCreate`.
pub const API_VERSION_LEGACY: u32 = 3010;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The device's primary context: one per device for the whole process,
    /// active while its retain count is non-zero.
    Primary,
    /// Made by `cuCtxCreate*`, gone after `cuCtxDestroy`.
    Created,
}

pub struct Context {
    /// The value the application holds (0 until registered).
    handle: u64,
    /// `cuCtxGetId`: unique for the process lifetime, never reused.
    pub id: u64,
    /// Ordinal as the application sees it (after CUDA_VISIBLE_DEVICES).
    pub device: CUdevice,
    /// The host's index of the same device, what calls to the host carry.
    pub host_device: i32,
    pub kind: Kind,
    pub api_version: u32,
    flags: AtomicU32,
    /// The host's handle; 0 while there is none (an inactive primary
    /// context, a destroyed created one).
    remote: AtomicU64,
    destroyed: AtomicBool,
    /// Primary contexts: the retain count. Held across the host call of a
    /// retain/release/reset so the count and the host's state move together.
    pub(crate) primary: Mutex<u32>,
    /// Context-local storage (the CLS export table). cudart reads it on
    /// every runtime call, from every thread, so readers share the lock.
    cls: RwLock<Vec<ClsEntry>>,
}

/// A CLS destructor: `(ctx, key, value)`, run when the context goes away.
pub type ClsDtor = unsafe extern "C" fn(CUcontext, *mut c_void, *mut c_void);

/// One `(key → value, destructor)`. Keys and values are the caller's
/// opaque pointers, kept as integers; vgpu never dereferences them.
#[derive(Clone, Copy)]
struct ClsEntry {
    key: usize,
    value: usize,
    dtor: Option<ClsDtor>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Context {
    pub fn new(kind: Kind, device: CUdevice, host_device: i32, flags: u32, api: u32) -> Context {
        Context {
            handle: 0,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            device,
            host_device,
            kind,
            api_version: api,
            flags: AtomicU32::new(flags),
            remote: AtomicU64::new(0),
            destroyed: AtomicBool::new(false),
            primary: Mutex::new(0),
            cls: RwLock::new(Vec::new()),
        }
    }

    /// The value the application holds.
    pub fn handle(&self) -> CUcontext {
        args::handle(self.handle)
    }

    pub fn flags(&self) -> u32 {
        self.flags.load(Ordering::Relaxed)
    }

    pub fn set_flags(&self, flags: u32) {
        self.flags.store(flags, Ordering::Relaxed);
    }

    /// The host handle for work in this context. A primary context that
    /// nobody retained is, in the driver's words, "a primary context which
    /// has not yet been initialized": CONTEXT_IS_DESTROYED, like a
    /// destroyed one.
    pub fn remote(&self) -> Result<u64, CUresult> {
        if self.destroyed.load(Ordering::Acquire) {
            return Err(CUresult::CUDA_ERROR_CONTEXT_IS_DESTROYED);
        }
        match self.remote.load(Ordering::Acquire) {
            0 => Err(CUresult::CUDA_ERROR_CONTEXT_IS_DESTROYED),
            h => Ok(h),
        }
    }

    pub fn set_remote(&self, handle: u64) {
        self.remote.store(handle, Ordering::Release);
    }

    pub fn is_destroyed(&self) -> bool {
        self.destroyed.load(Ordering::Acquire)
    }

    /// Stores `value` under `key`, replacing an earlier value (whose
    /// destructor then does not run: the caller replaced it knowingly).
    pub fn cls_put(&self, key: usize, value: usize, dtor: Option<ClsDtor>) {
        let mut cls = self.cls.write();
        let entry = ClsEntry { key, value, dtor };
        match cls.iter_mut().find(|e| e.key == key) {
            Some(e) => *e = entry,
            None => cls.push(entry),
        }
    }

    /// A handful of keys at most (one per runtime copy in the process), so
    /// a scan beats hashing.
    pub fn cls_get(&self, key: usize) -> Option<usize> {
        self.cls
            .read()
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value)
    }

    /// Removes `key` without running its destructor: the owner deletes its
    /// own entry (cudart, at exit) after cleaning up itself.
    pub fn cls_delete(&self, key: usize) -> bool {
        let mut cls = self.cls.write();
        let before = cls.len();
        cls.retain(|e| e.key != key);
        cls.len() != before
    }

    /// The context is going away (destroyed, or a primary context reset or
    /// released for the last time): empties the storage and runs each
    /// destructor, outside the lock, so a destructor may use CLS and other
    /// driver calls again.
    pub fn cls_destroy(&self) {
        let entries = std::mem::take(&mut *self.cls.write());
        for e in entries {
            if let Some(dtor) = e.dtor {
                // SAFETY: the owner registered this destructor for exactly
                // these values; the context handle is still valid memory.
                unsafe { dtor(self.handle(), e.key as *mut c_void, e.value as *mut c_void) };
            }
        }
    }

    fn mark_destroyed(&self) {
        self.destroyed.store(true, Ordering::Release);
        self.remote.store(0, Ordering::Release);
    }
}

/// Live contexts: every primary context (from `cuInit` on) and every
/// created one until `cuCtxDestroy`.
pub(crate) static CONTEXTS: Shared<Arc<Context>, CUresult> = Shared::new(
    "context",
    CUresult::CUDA_ERROR_INVALID_CONTEXT,
    Mint::Pointer,
);

/// Makes `ctx` known under a fresh handle.
pub fn register(ctx: Context) -> Arc<Context> {
    args::register(&CONTEXTS, |handle| Context { handle, ..ctx })
}

/// Removes a created context from the registry and marks it destroyed; the
/// memory stays while a thread still has it on its stack. False when it was
/// not registered (any more): of racing destroys, one wins.
pub fn unregister(ctx: &Context) -> bool {
    let removed = CONTEXTS.take(ctx.handle).is_ok();
    ctx.mark_destroyed();
    removed
}

/// The live context behind an application's handle. NULL and unknown
/// handles are `CUDA_ERROR_INVALID_CONTEXT`.
pub fn lookup(handle: CUcontext) -> Result<Arc<Context>, CUresult> {
    Live::find(&CONTEXTS, handle).map(Live::into_arc)
}

/// A `CUcontext` that must name a live context.
impl FromCuda<CUcontext, CUresult> for Live<Context> {
    unsafe fn from_cuda(handle: CUcontext) -> Result<Self, CUresult> {
        Live::find(&CONTEXTS, handle)
    }
}

/// A `CUcontext` argument where NULL has a meaning: "the calling thread's
/// current context" for the `(..., CUcontext ctx)` queries, "none" for
/// `cuCtxSetCurrent`. Anything else must be live.
pub enum CtxArg {
    Null,
    Given(Arc<Context>),
}

impl CtxArg {
    /// NULL as the current context (none: INVALID_CONTEXT).
    pub fn or_current(self) -> Result<Arc<Context>, CUresult> {
        match self {
            CtxArg::Null => current().ok_or(CUresult::CUDA_ERROR_INVALID_CONTEXT),
            CtxArg::Given(c) => Ok(c),
        }
    }
}

impl FromCuda<CUcontext, CUresult> for CtxArg {
    unsafe fn from_cuda(handle: CUcontext) -> Result<Self, CUresult> {
        if handle.is_null() {
            Ok(CtxArg::Null)
        } else {
            lookup(handle).map(CtxArg::Given)
        }
    }
}

thread_local! {
    /// Bottom first; the last element is the current context. `const`
    /// initialisation keeps the first access free of allocation.
    static STACK: RefCell<Vec<Arc<Context>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's stack; during thread teardown (the TLS is
/// already gone) the stack reads as empty and changes are dropped.
fn with_stack<R>(f: impl FnOnce(&mut Vec<Arc<Context>>) -> R) -> R {
    let mut f = Some(f);
    let r = STACK.try_with(|s| {
        let f = f.take().expect("called once");
        f(&mut s.borrow_mut())
    });
    match r {
        Ok(r) => r,
        Err(_) => (f.take().expect("not called"))(&mut Vec::new()),
    }
}

/// Runs `f` on the context behind `handle` (NULL: the calling thread's
/// current one). When that is the current context — what cudart passes on
/// every runtime call — neither the registry lock nor a reference count is
/// touched. `f` must not use this thread's stack.
pub fn with_context<R>(
    handle: CUcontext,
    f: impl FnOnce(&Arc<Context>) -> R,
) -> Result<R, CUresult> {
    let mut f = Some(f);
    let fast = with_stack(|s| match s.last() {
        Some(top) if handle.is_null() || top.handle() == handle => {
            Some((f.take().expect("called once"))(top))
        }
        _ => None,
    });
    match fast {
        Some(r) => Ok(r),
        None if handle.is_null() => Err(CUresult::CUDA_ERROR_INVALID_CONTEXT),
        None => Ok((f.take().expect("not called"))(&lookup(handle)?)),
    }
}

/// In a forked child (the registry is emptied by the driver's fork
/// handler): the forking thread, the child's only one, starts with an
/// empty stack.
pub(crate) fn fork_child() {
    with_stack(|s| s.clear());
}

/// The calling thread's current context, if any.
pub fn current() -> Option<Arc<Context>> {
    with_stack(|s| s.last().cloned())
}

/// The current context's handle without touching its reference count:
/// `cuCtxGetCurrent` is on every runtime call's path.
pub fn current_handle() -> CUcontext {
    with_stack(|s| s.last().map_or(std::ptr::null_mut(), |c| c.handle()))
}

/// `cuCtxSetCurrent`: replaces the top of the stack, or pushes onto an
/// empty one; `None` pops.
pub fn set_current(ctx: Option<Arc<Context>>) {
    with_stack(|s| {
        s.pop();
        if let Some(c) = ctx {
            s.push(c);
        }
    })
}

pub fn push(ctx: Arc<Context>) {
    with_stack(|s| s.push(ctx));
}

pub fn pop() -> Option<Arc<Context>> {
    with_stack(|s| s.pop())
}

/// After `cuCtxDestroy(ctx)`: the driver pops it if it is current on the
/// calling thread (other threads keep it, and see CONTEXT_IS_DESTROYED).
pub fn pop_if_current(ctx: &Arc<Context>) {
    with_stack(|s| {
        if s.last().is_some_and(|top| Arc::ptr_eq(top, ctx)) {
            s.pop();
        }
    });
}

/// The current context for work that needs the host: none is
/// INVALID_CONTEXT, an inactive or destroyed one CONTEXT_IS_DESTROYED.
pub fn current_remote() -> Result<(Arc<Context>, u64), CUresult> {
    let ctx = current().ok_or(CUresult::CUDA_ERROR_INVALID_CONTEXT)?;
    let remote = ctx.remote()?;
    Ok((ctx, remote))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created() -> Arc<Context> {
        register(Context::new(Kind::Created, 0, 0, 0, API_VERSION))
    }

    #[test]
    fn lookup_rejects_unknown_and_destroyed() {
        let c = created();
        assert!(Arc::ptr_eq(&lookup(c.handle()).unwrap(), &c));
        assert_eq!(
            lookup(std::ptr::null_mut()).err(),
            Some(CUresult::CUDA_ERROR_INVALID_CONTEXT)
        );
        assert_eq!(
            lookup(0xdead_beef as CUcontext).err(),
            Some(CUresult::CUDA_ERROR_INVALID_CONTEXT)
        );
        let h = c.handle();
        assert!(unregister(&c));
        assert!(!unregister(&c));
        assert_eq!(lookup(h).err(), Some(CUresult::CUDA_ERROR_INVALID_CONTEXT));
        assert_eq!(c.remote(), Err(CUresult::CUDA_ERROR_CONTEXT_IS_DESTROYED));
    }

    #[test]
    fn context_arguments() {
        let conv = |h: CUcontext| {
            // SAFETY: plain handle values; nothing is dereferenced.
            unsafe {
                (
                    vgpu_ffi::from_cuda::<_, Live<Context>, CUresult>(h).map(|c| c.id),
                    vgpu_ffi::from_cuda::<_, CtxArg, CUresult>(h).map(|a| match a {
                        CtxArg::Null => None,
                        CtxArg::Given(c) => Some(c.id),
                    }),
                )
            }
        };
        const INVALID: CUresult = CUresult::CUDA_ERROR_INVALID_CONTEXT;
        let c = created();
        assert_eq!(conv(c.handle()), (Ok(c.id), Ok(Some(c.id))));
        assert_eq!(conv(std::ptr::null_mut()), (Err(INVALID), Ok(None)));
        assert_eq!(conv(0x40 as CUcontext), (Err(INVALID), Err(INVALID)));
        let h = c.handle();
        assert!(unregister(&c));
        assert_eq!(conv(h), (Err(INVALID), Err(INVALID)));
    }

    #[test]
    fn stack_semantics() {
        std::thread::spawn(|| {
            let a = created();
            let b = created();
            assert!(current_handle().is_null());
            set_current(None);
            assert!(current_handle().is_null());
            set_current(Some(a.clone()));
            assert_eq!(current_handle(), a.handle());
            push(b.clone());
            assert_eq!(current_handle(), b.handle());
            set_current(Some(a.clone()));
            assert_eq!(current_handle(), a.handle());
            assert!(Arc::ptr_eq(&pop().unwrap(), &a));
            assert_eq!(current_handle(), a.handle());
            pop_if_current(&b);
            assert_eq!(current_handle(), a.handle());
            pop_if_current(&a);
            assert!(current().is_none());
            assert!(pop().is_none());
        })
        .join()
        .unwrap();
    }

    static DTOR_CALLS: AtomicU32 = AtomicU32::new(0);

    unsafe extern "C" fn count_dtor(_: CUcontext, key: *mut c_void, value: *mut c_void) {
        assert_eq!((key as usize, value as usize), (1, 22));
        DTOR_CALLS.fetch_add(1, Ordering::Relaxed);
    }

    #[test]
    fn cls_storage() {
        let c = created();
        assert_eq!(c.cls_get(1), None);
        c.cls_put(1, 11, Some(count_dtor));
        c.cls_put(2, 20, None);
        c.cls_put(1, 22, Some(count_dtor));
        assert_eq!(c.cls_get(1), Some(22));
        assert_eq!(c.cls_get(2), Some(20));
        assert!(c.cls_delete(2));
        assert!(!c.cls_delete(2));
        assert_eq!(c.cls_get(2), None);
        c.cls_destroy();
        assert_eq!(DTOR_CALLS.load(Ordering::Relaxed), 1);
        assert_eq!(c.cls_get(1), None);
        c.cls_destroy();
        assert_eq!(DTOR_CALLS.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn with_context_fast_and_slow_paths() {
        std::thread::spawn(|| {
            let a = created();
            let b = created();
            assert_eq!(
                with_context(std::ptr::null_mut(), |_| ()).err(),
                Some(CUresult::CUDA_ERROR_INVALID_CONTEXT)
            );
            push(a.clone());
            let id = |h| with_context(h, |c| c.id);
            assert_eq!(id(std::ptr::null_mut()), Ok(a.id));
            assert_eq!(id(a.handle()), Ok(a.id));
            assert_eq!(id(b.handle()), Ok(b.id));
            assert_eq!(
                id(0x10 as CUcontext),
                Err(CUresult::CUDA_ERROR_INVALID_CONTEXT)
            );
            pop();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn inactive_context_has_no_remote() {
        let c = created();
        assert_eq!(c.remote(), Err(CUresult::CUDA_ERROR_CONTEXT_IS_DESTROYED));
        c.set_remote(42);
        assert_eq!(c.remote(), Ok(42));
    }
}
