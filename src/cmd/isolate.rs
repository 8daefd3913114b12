//! `vgpu run --isolate`: a private mount namespace in which the virtual files
//! exist in the file system itself, so programs that bypass libc (Go's `os`
//! package issues raw `openat`/`getdents64`/`readlinkat`) see them too.
//!
//! How each path is made to appear:
//! - A path that already exists with the same kind (the directory of a PCI
//!   function the virtual one shadows) gets the virtual copy bind-mounted on
//!   top of it.
//! - A path that does not exist (`/proc/driver/nvidia`, `/sys/module/nvidia`,
//!   `/dev/nvidia0` ...) cannot be a mount point, and procfs, sysfs and
//!   devtmpfs refuse new entries. Its parent is replaced instead by a merged
//!   copy on a tmpfs: every real entry carried over (directories and files
//!   bind-mounted, symlinks re-created with the same target), plus the
//!   virtual entry. Real entries therefore stay the same inodes.
//! - The device nodes are real character devices (`mknod` on the tmpfs) with
//!   the numbers the libc hooks report, so a raw `stat` agrees with a hooked
//!   one; opening them gives ENXIO, as on a machine whose NVIDIA module is not
//!   loaded (a hooked `open` gets /dev/null). Where `mknod` is refused (a user
//!   namespace), /dev/null is bind-mounted on a plain file instead: the node
//!   exists and opens, but `stat` shows /dev/null's numbers.
//!
//! Everything is set up in this process after `unshare`, with all mounts made
//! private first, so nothing propagates to the rest of the machine; the
//! namespace ends with the last process in it.

use super::run::{exit_code_of, guest_command, LibDir, RunArgs};
use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use vgpu_guest::vfiles::content::{self, HostFacts, Node};
use vgpu_guest::vfiles::path::{NVIDIACTL_MINOR, NVIDIA_MAJOR, NVIDIA_UVM_MAJOR};
use vgpu_guest::vfiles::{Bdf, VirtualGpu};

/// Like `docker run`: the failure is vgpu's own, not the command's.
const SETUP_FAILED: u8 = 125;

pub fn run_isolated(args: RunArgs) -> ExitCode {
    let libdir = match LibDir::create() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("vgpu run --isolate: {e}");
            return ExitCode::from(127);
        }
    };
    let mut cmd = guest_command(&args, &libdir);
    let host = cmd
        .get_envs()
        .find(|(k, _)| *k == "VGPU_HOST")
        .and_then(|(_, v)| v.map(OsStr::to_os_string))
        .unwrap_or_default();
    if let Err(e) = prepare(&host) {
        eprintln!("vgpu run --isolate: {e}");
        return ExitCode::from(SETUP_FAILED);
    }
    match cmd.status() {
        Ok(st) => exit_code_of(st),
        Err(e) => {
            eprintln!("vgpu run: {}: {e}", args.command[0].to_string_lossy());
            ExitCode::from(if e.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            })
        }
    }
}

/// Describes the GPU, enters a private mount namespace and mounts the files.
/// Must run while this process has a single thread (a user namespace can only
/// be entered then).
fn prepare(host: &OsStr) -> Result<(), String> {
    if let Some(bdf) = vgpu_guest::vfiles::detect_real_nvidia_bdf() {
        eprintln!(
            "vgpu run --isolate: this machine has an NVIDIA GPU at {bdf}; its real files are \
             left visible and nothing is mounted"
        );
        return Ok(());
    }
    let gpu = describe(host)?;
    let how = enter_namespace()?;
    let stage = Stage::mount()?;
    let res = graft_all(&stage, &gpu, how);
    // The grafted bind mounts keep the tmpfs alive; only its staging mount
    // point goes, so no directory is left behind in /tmp.
    stage.detach();
    res
}

/// The GPU as the shims will describe it, from the host's inventory at
/// `host` (the `VGPU_HOST` the command gets).
fn describe(host: &OsStr) -> Result<VirtualGpu, String> {
    let shown = host.to_string_lossy();
    // The guest library reads its endpoint from the environment only.
    std::env::set_var("VGPU_HOST", host);
    let inv = vgpu_guest::client::inventory()
        .map_err(|e| format!("cannot describe the GPU: no inventory from {shown}: {e}"))?;
    vgpu_guest::client::disconnect();
    if inv.devices.is_empty() {
        return Err(format!("the host at {shown} reports no device"));
    }
    vgpu_guest::provider::from_inventory()
        .ok_or_else(|| format!("cannot describe the GPU: the host at {shown} stopped answering"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Privilege {
    /// CAP_SYS_ADMIN in the initial user namespace.
    Admin,
    /// An unprivileged user namespace mapping only our own ids.
    UserNs,
}

fn errno_of(rc: libc::c_int) -> Option<io::Error> {
    (rc != 0).then(io::Error::last_os_error)
}

fn enter_namespace() -> Result<Privilege, String> {
    // SAFETY: unshare has no memory-safety preconditions.
    let how = match errno_of(unsafe { libc::unshare(libc::CLONE_NEWNS) }) {
        None => Privilege::Admin,
        Some(admin_err) => {
            // SAFETY: getuid/getgid have no preconditions.
            let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
            // SAFETY: as above; this process is still single-threaded.
            let unshared = unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) };
            if let Some(e) = errno_of(unshared) {
                return Err(namespace_help(&admin_err, &e));
            }
            // A new user namespace may only map ids after setgroups is
            // denied; mapping ourselves keeps files owned by the same uid.
            let map = |file: &str, text: String| {
                std::fs::write(file, text).map_err(|e| format!("{file}: {e}"))
            };
            map("/proc/self/setgroups", "deny".into())?;
            map("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
            map("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
            Privilege::UserNs
        }
    };
    mount(None, Path::new("/"), None, libc::MS_REC | libc::MS_PRIVATE)
        .map_err(|e| format!("making mounts private: {e}"))?;
    Ok(how)
}

fn read_trim(p: &str) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn namespace_help(admin: &io::Error, user: &io::Error) -> String {
    let mut why = Vec::new();
    if read_trim("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        why.push("user namespaces are disabled (/proc/sys/user/max_user_namespaces is 0)");
    }
    if read_trim("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        why.push(
            "unprivileged user namespaces are disabled (/proc/sys/kernel/unprivileged_userns_clone is 0)",
        );
    }
    if read_trim("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        why.push(
            "AppArmor restricts unprivileged user namespaces \
             (/proc/sys/kernel/apparmor_restrict_unprivileged_userns is 1)",
        );
    }
    let why = if why.is_empty() {
        "a seccomp filter or container runtime may forbid unshare".to_string()
    } else {
        why.join("; ")
    };
    format!(
        "cannot create a private mount namespace: unshare(CLONE_NEWNS) needs CAP_SYS_ADMIN \
         ({admin}), and the fallback through a user namespace failed too ({user}): {why}. \
         Run as root (or with CAP_SYS_ADMIN), enable user namespaces, or use `vgpu run` \
         without --isolate (libc readers still see the virtual files)"
    )
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("paths from the file system hold no NUL")
}

fn mount(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
) -> io::Result<()> {
    let src = src.map(cpath);
    let target = cpath(target);
    let fstype = fstype.map(|t| CString::new(t).expect("literal"));
    let opt = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is null or a NUL-terminated string that outlives
    // the call; no filesystem data is passed.
    let rc = unsafe {
        libc::mount(
            opt(&src),
            target.as_ptr(),
            opt(&fstype),
            flags,
            std::ptr::null(),
        )
    };
    match errno_of(rc) {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

fn bind(src: &Path, target: &Path) -> io::Result<()> {
    mount(Some(src), target, None, libc::MS_BIND | libc::MS_REC)
}

/// A tmpfs on a fresh directory, where the virtual tree and the merged
/// directories are built before being bound into place.
struct Stage {
    dir: PathBuf,
    next: std::cell::Cell<usize>,
}

impl Stage {
    fn mount() -> Result<Stage, String> {
        // SAFETY: getuid/getpid have no preconditions.
        let (uid, pid) = unsafe { (libc::getuid(), libc::getpid()) };
        let dir = std::env::temp_dir().join(format!("vgpu-isolate-{uid}-{pid}"));
        let _ = std::fs::remove_dir(&dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        if let Err(e) = mount(None, &dir, Some("tmpfs"), 0) {
            let _ = std::fs::remove_dir(&dir);
            return Err(format!("mounting a tmpfs on {}: {e}", dir.display()));
        }
        // The tmpfs root is what merged directories' parents resolve
        // through; readable by the command whatever its umask.
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));
        Ok(Stage {
            dir,
            next: std::cell::Cell::new(0),
        })
    }

    /// A new empty directory on the tmpfs.
    fn fresh_dir(&self) -> io::Result<PathBuf> {
        let n = self.next.get();
        self.next.set(n + 1);
        let d = self.dir.join(format!("m{n}"));
        std::fs::DirBuilder::new().mode(0o755).create(&d)?;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))?;
        Ok(d)
    }

    fn detach(self) {
        let c = cpath(&self.dir);
        // SAFETY: a NUL-terminated path; MNT_DETACH only unhooks the mount.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Writes the virtual tree for `gpu` under `root`.
fn write_tree(root: &Path, gpu: &VirtualGpu, bdf: &Bdf) -> io::Result<()> {
    std::fs::DirBuilder::new().mode(0o755).create(root)?;
    let host = HostFacts {
        online_cpus: std::fs::read_to_string("/sys/devices/system/cpu/online")
            .unwrap_or_else(|_| "0".into()),
    };
    for e in content::entries(gpu, bdf, &host) {
        let p = root.join(&e.path);
        match e.node {
            Node::Dir => std::fs::DirBuilder::new().mode(0o755).create(&p)?,
            Node::File(bytes, mode) => {
                std::fs::write(&p, bytes)?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
            }
            Node::Link(t) => std::os::unix::fs::symlink(t, &p)?,
        }
    }
    Ok(())
}

fn graft_all(stage: &Stage, gpu: &VirtualGpu, how: Privilege) -> Result<(), String> {
    let bdf = Bdf::parse(&gpu.bdf).ok_or_else(|| format!("bad PCI address {:?}", gpu.bdf))?;
    let v = stage.dir.join("v");
    write_tree(&v, gpu, &bdf).map_err(|e| format!("writing the virtual files: {e}"))?;
    let dev = stage.dir.join("dev");
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&dev)
        .map_err(|e| format!("{}: {e}", dev.display()))?;
    let nodes = [
        (format!("nvidia{}", gpu.minor), NVIDIA_MAJOR, gpu.minor),
        ("nvidiactl".to_string(), NVIDIA_MAJOR, NVIDIACTL_MINOR),
        ("nvidia-uvm".to_string(), NVIDIA_UVM_MAJOR, 0),
    ];
    let mut g = Grafter {
        stage,
        merged: HashMap::new(),
        carry_failures: Vec::new(),
    };
    let dev_rel = bdf.sys_dev_rel();
    let trees = [
        "proc/driver/nvidia".to_string(),
        dev_rel.clone(),
        format!("sys/bus/pci/devices/{bdf}"),
        "sys/bus/pci/drivers/nvidia".to_string(),
        "sys/module/nvidia".to_string(),
    ];
    for rel in &trees {
        let target = Path::new("/").join(rel);
        g.graft(&target, &v.join(rel))
            .map_err(|e| format!("mounting {}: {e}", target.display()))?;
    }
    for (name, major, minor) in nodes {
        let src = dev.join(&name);
        let is_node =
            make_node(&src, major, minor, how).map_err(|e| format!("{}: {e}", src.display()))?;
        let target = Path::new("/dev").join(&name);
        g.graft(&target, &src)
            .map_err(|e| format!("mounting {}: {e}", target.display()))?;
        // Bound only once in place: a mount point cannot be moved by rename.
        if !is_node {
            bind(Path::new("/dev/null"), &target)
                .map_err(|e| format!("binding /dev/null on {}: {e}", target.display()))?;
        }
    }
    if !g.carry_failures.is_empty() {
        eprintln!(
            "vgpu run --isolate: could not carry over (absent inside the namespace): {}",
            g.carry_failures.join(", ")
        );
    }
    Ok(())
}

/// A character device at `p`, or (false) an empty file where mknod is
/// refused, for /dev/null to be bound on.
fn make_node(p: &Path, major: u32, minor: u32, how: Privilege) -> io::Result<bool> {
    if how == Privilege::Admin {
        let c = cpath(p);
        // SAFETY: a NUL-terminated path; mknod creates one inode.
        let rc = unsafe {
            libc::mknod(
                c.as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(major, minor),
            )
        };
        if rc == 0 {
            // mknod applied the umask; the real nodes are 0666.
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o666))?;
            return Ok(true);
        }
    }
    std::fs::File::create(p)?;
    Ok(false)
}

struct Grafter<'a> {
    stage: &'a Stage,
    /// Real directory -> its merged copy already mounted over it.
    merged: HashMap<PathBuf, PathBuf>,
    carry_failures: Vec<String>,
}

impl Grafter<'_> {
    /// Makes `src` (on the stage, consumed) appear at `target`.
    fn graft(&mut self, target: &Path, src: &Path) -> io::Result<()> {
        let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
            return Err(io::Error::other("cannot replace /"));
        };
        if let Some(m) = self.merged.get(parent) {
            let slot = m.join(name);
            if std::fs::symlink_metadata(&slot).is_ok() {
                let c = cpath(&slot);
                // SAFETY: NUL-terminated path; fails harmlessly when the
                // entry is not a mount point.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                remove_any(&slot)?;
            }
            return std::fs::rename(src, &slot);
        }
        let src_md = std::fs::symlink_metadata(src)?;
        if let Ok(md) = std::fs::symlink_metadata(target) {
            if src_md.file_type().is_symlink() {
                if md.file_type().is_symlink()
                    && std::fs::read_link(target)? == std::fs::read_link(src)?
                {
                    return Ok(());
                }
            } else if !md.file_type().is_symlink()
                && md.is_dir() == src_md.is_dir()
                && bind(src, target).is_ok()
            {
                return Ok(());
            }
        }
        let merged = self.stage.fresh_dir()?;
        if parent.is_dir() {
            self.carry_over(parent, &merged, name);
        }
        std::fs::rename(src, merged.join(name))?;
        // An absent parent (a PCI bus the machine lacks) is grafted the same
        // way, one level up.
        self.graft(parent, &merged)?;
        self.merged.insert(parent.to_path_buf(), merged);
        Ok(())
    }

    /// Re-creates every entry of `real` except `skip` inside `merged`.
    fn carry_over(&mut self, real: &Path, merged: &Path, skip: &OsStr) {
        let Ok(rd) = std::fs::read_dir(real) else {
            self.carry_failures.push(real.display().to_string());
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            if name == skip {
                continue;
            }
            let from = e.path();
            let to = merged.join(&name);
            if let Err(err) = carry_one(&from, &to) {
                let _ = remove_any(&to);
                self.carry_failures
                    .push(format!("{} ({err})", from.display()));
            }
        }
    }
}

fn carry_one(from: &Path, to: &Path) -> io::Result<()> {
    let ft = std::fs::symlink_metadata(from)?.file_type();
    if ft.is_symlink() {
        return std::os::unix::fs::symlink(std::fs::read_link(from)?, to);
    }
    if ft.is_dir() {
        std::fs::DirBuilder::new().mode(0o755).create(to)?;
    } else if ft.is_file()
        || ft.is_char_device()
        || ft.is_block_device()
        || ft.is_socket()
        || ft.is_fifo()
    {
        std::fs::File::create(to)?;
    } else {
        return Err(io::Error::other("unknown file type"));
    }
    bind(from, to)
}

fn remove_any(p: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
