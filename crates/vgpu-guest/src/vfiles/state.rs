//! The per-process private tree: created on first use, shared by all threads,
//! re-created by a forked child, removed at exit.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU8, Ordering};

use super::content::{self, HostFacts, Node};
use super::path::{Layout, ROOT_ROOM};
use super::{Bdf, VirtualGpu};

/// A materialized tree.
pub struct Active {
    /// Canonical path of the private root (no trailing slash). Canonical so
    /// that realpath results can be mapped back by stripping it.
    pub root: Vec<u8>,
    /// The `vgpu-...` directory to remove at exit.
    dir: PathBuf,
    pub layout: Layout,
    gpu: VirtualGpu,
    owner: libc::pid_t,
}

static ACTIVE: AtomicPtr<Active> = AtomicPtr::new(std::ptr::null_mut());
/// Description inherited across fork, so the child re-materializes without
/// asking the provider (whose connection the child must not use).
static INHERITED: AtomicPtr<Active> = AtomicPtr::new(std::ptr::null_mut());

const UNDECIDED: u8 = 0;
/// A real NVIDIA function exists: pass everything through, for good.
const REAL_GPU: u8 = 1;
/// The tree could not be made (no writable directory, bad address): pass
/// through rather than retry on every access.
const FAILED: u8 = 2;
/// Removed at exit; late accesses pass through.
const GONE: u8 = 3;
static MODE: AtomicU8 = AtomicU8::new(UNDECIDED);

/// Serializes materialization; holds the owner's pid (0 = free). A spin lock
/// rather than a mutex so that a fork while another thread holds it can
/// simply be undone in the child.
static INIT: AtomicI32 = AtomicI32::new(0);
static HANDLERS: AtomicBool = AtomicBool::new(false);

/// The active tree, materializing it first if need be. `None` means pass
/// through. Must be called with the hooks' re-entrancy guard held, since the
/// provider and the materialization call hooked functions themselves.
pub fn active() -> Option<&'static Active> {
    let p = ACTIVE.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: a published Active is leaked, never freed.
        return Some(unsafe { &*p });
    }
    if MODE.load(Ordering::Acquire) != UNDECIDED {
        return None;
    }
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    while INIT
        .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        // Materialization takes about a millisecond; the provider may take a
        // round trip to the host. Yielding keeps waiters cheap meanwhile.
        // SAFETY: sched_yield has no preconditions.
        unsafe { libc::sched_yield() };
    }
    let result = std::panic::catch_unwind(init_locked).unwrap_or(None);
    INIT.store(0, Ordering::Release);
    result
}

fn init_locked() -> Option<&'static Active> {
    let p = ACTIVE.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: as in `active`.
        return Some(unsafe { &*p });
    }
    if MODE.load(Ordering::Acquire) != UNDECIDED {
        return None;
    }
    if super::detect_nvidia_in(Path::new("/sys/bus/pci/devices")).is_some() {
        MODE.store(REAL_GPU, Ordering::Release);
        return None;
    }
    let inherited = INHERITED.load(Ordering::Acquire);
    let gpu = if inherited.is_null() {
        super::describe()?
    } else {
        // SAFETY: leaked by the parent, still mapped in the child.
        unsafe { (*inherited).gpu.clone() }
    };
    match materialize(gpu) {
        Ok(a) => {
            let a: &'static Active = Box::leak(Box::new(a));
            register_handlers();
            ACTIVE.store(a as *const Active as *mut Active, Ordering::Release);
            Some(a)
        }
        Err(_) => {
            MODE.store(FAILED, Ordering::Release);
            None
        }
    }
}

extern "C" {
    // Both come from libc_nonshared.a, which binds them to this object's
    // __dso_handle, so they are unregistered if the library is unloaded.
    fn atexit(f: extern "C" fn()) -> libc::c_int;
    fn pthread_atfork(
        prepare: Option<extern "C" fn()>,
        parent: Option<extern "C" fn()>,
        child: Option<extern "C" fn()>,
    ) -> libc::c_int;
}

fn register_handlers() {
    if HANDLERS.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: both register plain functions that stay valid while this object
    // is loaded; see the extern block.
    unsafe {
        atexit(remove_at_exit);
        pthread_atfork(None, None, Some(after_fork_in_child));
    }
}

extern "C" fn remove_at_exit() {
    let p = ACTIVE.load(Ordering::Acquire);
    if p.is_null() {
        return;
    }
    // SAFETY: published Actives are never freed.
    let a = unsafe { &*p };
    // SAFETY: getpid has no preconditions.
    if a.owner != unsafe { libc::getpid() } {
        return;
    }
    MODE.store(GONE, Ordering::Release);
    ACTIVE.store(std::ptr::null_mut(), Ordering::Release);
    let _g = crate::hooks::Guard::enter();
    let _ = std::fs::remove_dir_all(&a.dir);
}

extern "C" fn after_fork_in_child() {
    // Only atomics here: the child of a multithreaded parent may not allocate.
    let p = ACTIVE.swap(std::ptr::null_mut(), Ordering::AcqRel);
    if !p.is_null() {
        INHERITED.store(p, Ordering::Release);
    }
    INIT.store(0, Ordering::Release);
}

/// Where the tree may live: `$XDG_RUNTIME_DIR` (private to the user by
/// definition), else `/tmp`.
fn bases() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR") {
        let p = PathBuf::from(x);
        if p.is_absolute() {
            v.push(p);
        }
    }
    v.push(PathBuf::from("/tmp"));
    v
}

/// Identifies the pid namespace, so that stale-directory cleanup never judges
/// a pid from another namespace sharing the same /tmp.
fn pid_ns() -> u64 {
    std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| std::os::unix::fs::MetadataExt::ino(&m))
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: writes at most 8 bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, libc::GRND_NONBLOCK) };
    if n == 8 {
        return u64::from_ne_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ (&b as *const _ as u64).rotate_left(17)
}

/// Removes trees of processes of this user and pid namespace that are gone.
fn remove_stale(base: &Path, prefix: &str) {
    let Ok(rd) = std::fs::read_dir(base) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        let Some(pid) = rest
            .split('-')
            .next()
            .and_then(|p| p.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks for existence.
        let dead = unsafe { libc::kill(pid, 0) } == -1
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if dead {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn make_private_dir(base: &Path, prefix: &str, pid: libc::pid_t) -> io::Result<PathBuf> {
    let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
    for _ in 0..8 {
        let d = base.join(format!("{prefix}{pid}-{:016x}", random_u64()));
        match std::fs::DirBuilder::new().mode(0o700).create(&d) {
            Ok(()) => return Ok(d),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn materialize(gpu: VirtualGpu) -> io::Result<Active> {
    let bdf = Bdf::parse(&gpu.bdf).ok_or(io::ErrorKind::InvalidInput)?;
    // SAFETY: getuid/getpid have no preconditions.
    let (uid, pid) = unsafe { (libc::getuid(), libc::getpid()) };
    let prefix = format!("vgpu-{uid}-{:x}-", pid_ns());
    let mut made = None;
    for base in bases() {
        remove_stale(&base, &prefix);
        if let Ok(d) = make_private_dir(&base, &prefix, pid) {
            match std::fs::canonicalize(&d) {
                Ok(c) if c.as_os_str().len() + 5 < ROOT_ROOM => {
                    made = Some(c);
                    break;
                }
                _ => {
                    let _ = std::fs::remove_dir(&d);
                }
            }
        }
    }
    let dir = made.ok_or(io::ErrorKind::NotFound)?;
    let root = dir.join("root");
    let res = populate(&root, &gpu, &bdf);
    if let Err(e) = res {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    Ok(Active {
        root: root.as_os_str().as_bytes().to_vec(),
        dir,
        layout: Layout::new(&bdf, gpu.minor),
        gpu,
        owner: pid,
    })
}

fn populate(root: &Path, gpu: &VirtualGpu, bdf: &Bdf) -> io::Result<()> {
    std::fs::create_dir(root)?;
    let online =
        std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_else(|_| "0".into());
    let host = HostFacts {
        online_cpus: online,
    };
    for e in content::entries(gpu, bdf, &host) {
        let p = root.join(&e.path);
        match e.node {
            Node::Dir => std::fs::create_dir(&p)?,
            Node::File(bytes, mode) => {
                std::fs::write(&p, bytes)?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
            }
            Node::Link(t) => symlink(t, &p)?,
        }
    }
    // The merged listing of /sys/bus/pci/devices: every real entry as an
    // absolute link back to itself (so a walk through this directory reaches
    // the real device), the virtual one already in place and shadowing a real
    // device at the same address.
    let merged = root.join("sys/bus/pci/devices");
    let own = bdf.to_string();
    if let Ok(rd) = std::fs::read_dir("/sys/bus/pci/devices") {
        for e in rd.flatten() {
            let name = e.file_name();
            if name.as_bytes() == own.as_bytes() {
                continue;
            }
            let target = Path::new("/sys/bus/pci/devices").join(&name);
            symlink(target, merged.join(OsStr::new(&name)))?;
        }
    }
    Ok(())
}

/// The private root of this process's tree, if it has been materialized
/// (for diagnostics such as `vgpu doctor`).
pub fn private_root() -> Option<PathBuf> {
    let p = ACTIVE.load(Ordering::Acquire);
    // SAFETY: published Actives are never freed.
    (!p.is_null()).then(|| PathBuf::from(OsStr::from_bytes(unsafe { &(*p).root })))
}
