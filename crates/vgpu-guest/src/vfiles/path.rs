//! Lexical path handling on the stack: the hooks decide whether a path is
//! virtual before anything is allocated, so normalization and matching work on
//! a fixed buffer.

use super::Bdf;

/// Longest path the hooks normalize; longer ones are passed through untouched
/// (the kernel would refuse them with ENAMETOOLONG anyway).
pub const PATH_MAX: usize = 4096;

/// Room kept in front of the normalized path so that the private root can be
/// prepended in place, without a second 4 KiB buffer on the stack.
pub const ROOT_ROOM: usize = 512;

/// A normalized absolute path, later possibly prefixed with the private root,
/// always NUL-terminated so it can be handed to the real libc call.
pub struct StackPath {
    buf: [u8; ROOT_ROOM + PATH_MAX + 2],
    start: usize,
    end: usize,
    /// The path was written with a trailing slash, which the kernel treats as
    /// "must be a directory"; kept so redirected calls fail the same way.
    trailing_slash: bool,
}

impl Default for StackPath {
    fn default() -> Self {
        Self::new()
    }
}

impl StackPath {
    pub fn new() -> Self {
        StackPath {
            buf: [0; ROOT_ROOM + PATH_MAX + 2],
            start: ROOT_ROOM,
            end: ROOT_ROOM,
            trailing_slash: false,
        }
    }

    /// Normalizes `path` (absolute, or relative to `cwd`) lexically: empty and
    /// `.` components vanish, `..` drops the previous one. Returns false when
    /// the result would not fit, in which case the caller passes through.
    pub fn normalize(&mut self, cwd: Option<&[u8]>, path: &[u8]) -> bool {
        let mut len = 0usize;
        if path.first() != Some(&b'/') {
            let Some(cwd) = cwd else { return false };
            let out = &mut self.buf[ROOT_ROOM..ROOT_ROOM + PATH_MAX];
            // getcwd can report "(unreachable)/..." for a cwd outside the
            // process root; such a path can never name a virtual file.
            if cwd.first() != Some(&b'/') || !push_components(out, &mut len, cwd) {
                return false;
            }
        }
        self.finish(len, path)
    }

    /// Like `normalize` for a relative path, with the process's current
    /// directory written straight into the buffer (getcwd returns a canonical
    /// path, so it needs no normalization of its own).
    pub fn normalize_from_cwd(&mut self, path: &[u8]) -> bool {
        let out = &mut self.buf[ROOT_ROOM..ROOT_ROOM + PATH_MAX];
        // SAFETY: getcwd writes at most out.len() bytes, NUL included.
        let r = unsafe { libc::getcwd(out.as_mut_ptr().cast(), out.len()) };
        if r.is_null() || out[0] != b'/' {
            return false;
        }
        let mut len = out.iter().position(|&b| b == 0).unwrap_or(out.len());
        if len == 1 {
            len = 0;
        }
        self.finish(len, path)
    }

    fn finish(&mut self, mut len: usize, path: &[u8]) -> bool {
        let out = &mut self.buf[ROOT_ROOM..ROOT_ROOM + PATH_MAX];
        if !push_components(out, &mut len, path) {
            return false;
        }
        if len == 0 {
            out[0] = b'/';
            len = 1;
        }
        self.trailing_slash = len > 1 && path.last() == Some(&b'/');
        self.start = ROOT_ROOM;
        self.end = ROOT_ROOM + len;
        self.terminate();
        true
    }

    /// The normalized path, without trailing slash.
    pub fn norm(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Turns the normalized path into `root` + path, in place.
    pub fn prepend(&mut self, root: &[u8]) -> bool {
        if root.len() > self.start {
            return false;
        }
        self.start -= root.len();
        self.buf[self.start..self.start + root.len()].copy_from_slice(root);
        true
    }

    /// The root prepended by `prepend` (empty before).
    pub fn root(&self) -> &[u8] {
        &self.buf[self.start..self.start + (ROOT_ROOM - self.start)]
    }

    fn terminate(&mut self) {
        let mut end = self.end;
        if self.trailing_slash {
            self.buf[end] = b'/';
            end += 1;
        }
        self.buf[end] = 0;
    }

    /// NUL-terminated form, trailing slash restored.
    pub fn as_ptr(&self) -> *const libc::c_char {
        self.buf[self.start..].as_ptr().cast()
    }
}

fn push_components(out: &mut [u8], len: &mut usize, path: &[u8]) -> bool {
    for comp in path.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                while *len > 0 {
                    *len -= 1;
                    if out[*len] == b'/' {
                        break;
                    }
                }
            }
            c => {
                if *len + 1 + c.len() > out.len() {
                    return false;
                }
                out[*len] = b'/';
                out[*len + 1..*len + 1 + c.len()].copy_from_slice(c);
                *len += 1 + c.len();
            }
        }
    }
    true
}

/// `p` is `prefix` or lies below it (component-wise, so `/sys/module/nvidia`
/// does not cover `/sys/module/nvidia_uvm`).
pub fn under(p: &[u8], prefix: &[u8]) -> bool {
    p.starts_with(prefix) && (p.len() == prefix.len() || p[prefix.len()] == b'/')
}

/// Reads one component of a C path into `out` (at most its first 8 bytes),
/// skipping leading slashes. Returns the full component length and the
/// position after it.
///
/// # Safety
/// `p` points into a NUL-terminated string.
unsafe fn component(mut p: *const u8, out: &mut [u8; 8]) -> (usize, *const u8) {
    let mut n = 0;
    // SAFETY: every read stops at the NUL terminator the caller guarantees.
    unsafe {
        while *p == b'/' {
            p = p.add(1);
        }
        while *p != 0 && *p != b'/' {
            if n < out.len() {
                out[n] = *p;
            }
            n += 1;
            p = p.add(1);
        }
    }
    (n, p)
}

/// First, state-free filter for a raw C path: an absolute path can only be
/// virtual under `/proc/driver`, `/sys/{bus,module,devices}` or
/// `/dev/nvidia*` (or when `.`/`..` components make it unclear, which
/// normalization then resolves). Reads at most the first two components, so
/// `/usr/...`, `/proc/self/...` or `/dev/null` are decided in a few compares.
///
/// # Safety
/// `path` must be a valid NUL-terminated string.
pub unsafe fn absolute_may_be_virtual(path: *const libc::c_char) -> bool {
    let (mut a, mut b) = ([0u8; 8], [0u8; 8]);
    // SAFETY: forwarded caller contract; `component` stops at the NUL.
    let (la, rest) = unsafe { component(path.cast(), &mut a) };
    // SAFETY: as above; `rest` points at '/' or the NUL.
    let (lb, _) = unsafe { component(rest, &mut b) };
    let first = &a[..la.min(8)];
    let second = &b[..lb.min(8)];
    let dots = |c: &[u8], len: usize| len <= 2 && (c == b"." || c == b"..");
    if dots(first, la) || dots(second, lb) {
        return true;
    }
    let candidate = match first {
        b"proc" if la == 4 => lb == 6 && second == b"driver",
        b"sys" if la == 3 => matches!((lb, second), (3, b"bus") | (6, b"module") | (7, b"devices")),
        b"dev" if la == 3 => lb >= 6 && second.starts_with(b"nvidia"),
        _ => false,
    };
    // A later `..` can climb out of any prefix (`/usr/../proc/driver`).
    // SAFETY: forwarded caller contract.
    candidate || has_dotdot(unsafe { std::ffi::CStr::from_ptr(path) }.to_bytes())
}

fn has_dotdot(p: &[u8]) -> bool {
    p.windows(3)
        .enumerate()
        .any(|(i, w)| w == b"/.." && matches!(p.get(i + 3), None | Some(b'/')))
}

/// Second filter, still independent of the device: the normalized path lies
/// in an area the virtual files may cover. Only then is the provider asked.
pub fn may_be_virtual(p: &[u8]) -> bool {
    under(p, b"/proc/driver/nvidia")
        || under(p, b"/sys/module/nvidia")
        || under(p, b"/sys/bus/pci/drivers/nvidia")
        || under(p, b"/sys/bus/pci/devices")
        || p.starts_with(b"/sys/devices/pci")
        || p.starts_with(b"/dev/nvidia")
}

/// A character device the hooks answer stat for themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevNode {
    pub major: u32,
    pub minor: u32,
    /// Distinct fake inode, so tools comparing (st_dev, st_ino) do not take
    /// the nodes for /dev/null or for each other.
    pub ino: u64,
}

pub const NVIDIA_MAJOR: u32 = 195;
pub const NVIDIACTL_MINOR: u32 = 255;
/// nvidia-uvm gets a dynamic major on real systems; any value other than 195
/// is faithful.
pub const NVIDIA_UVM_MAJOR: u32 = 510;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Served from the private tree: the call runs on root + path.
    Tree,
    /// Synthesized character device.
    Dev(DevNode),
}

/// The device-specific absolute paths a normalized path is matched against.
#[derive(Clone, Debug)]
pub struct Layout {
    /// `/sys/bus/pci/devices/<bdf>`
    pub bus_dev: String,
    /// `/sys/devices/pci<domain>:<bus>/<bdf>`
    pub sys_dev: String,
    /// `/dev/nvidia<minor>`
    pub dev_gpu: String,
    pub minor: u32,
}

impl Layout {
    pub fn new(bdf: &Bdf, minor: u32) -> Self {
        Layout {
            bus_dev: format!("/sys/bus/pci/devices/{bdf}"),
            sys_dev: format!("/{}", bdf.sys_dev_rel()),
            dev_gpu: format!("/dev/nvidia{minor}"),
            minor,
        }
    }

    /// Decides, for a normalized absolute path, whether it is virtual.
    pub fn classify(&self, p: &[u8]) -> Option<Class> {
        if under(p, b"/proc/driver/nvidia")
            || under(p, b"/sys/module/nvidia")
            || under(p, b"/sys/bus/pci/drivers/nvidia")
            // The listing itself is the merged directory; its other entries
            // stay real because only the exact path is redirected.
            || p == b"/sys/bus/pci/devices"
            || under(p, self.bus_dev.as_bytes())
            || under(p, self.sys_dev.as_bytes())
        {
            return Some(Class::Tree);
        }
        if !p.starts_with(b"/dev/nvidia") {
            return None;
        }
        let dev = |major, minor, ino| {
            Some(Class::Dev(DevNode {
                major,
                minor,
                ino: 0x7667_7000 + ino,
            }))
        };
        if p == self.dev_gpu.as_bytes() {
            dev(NVIDIA_MAJOR, self.minor, u64::from(self.minor))
        } else if p == b"/dev/nvidiactl" {
            dev(NVIDIA_MAJOR, NVIDIACTL_MINOR, 0x100)
        } else if p == b"/dev/nvidia-uvm" {
            dev(NVIDIA_UVM_MAJOR, 0, 0x101)
        } else if p == b"/dev/nvidia-uvm-tools" {
            dev(NVIDIA_UVM_MAJOR, 1, 0x102)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(cwd: Option<&str>, p: &str) -> Option<String> {
        let mut sp = StackPath::new();
        if !sp.normalize(cwd.map(str::as_bytes), p.as_bytes()) {
            return None;
        }
        // SAFETY: as_ptr is NUL-terminated within the buffer.
        let full = unsafe { std::ffi::CStr::from_ptr(sp.as_ptr()) };
        Some(full.to_str().unwrap().to_owned())
    }

    #[test]
    fn normalization() {
        assert_eq!(norm(None, "/a/b/c").unwrap(), "/a/b/c");
        assert_eq!(
            norm(None, "//proc/driver/nvidia/version").unwrap(),
            "/proc/driver/nvidia/version"
        );
        assert_eq!(
            norm(
                None,
                "/sys/bus/pci/devices/../devices/0000:00:05.0/./vendor"
            )
            .unwrap(),
            "/sys/bus/pci/devices/0000:00:05.0/vendor"
        );
        assert_eq!(norm(None, "/../../x").unwrap(), "/x");
        assert_eq!(norm(None, "/").unwrap(), "/");
        assert_eq!(norm(None, "/a/..").unwrap(), "/");
        assert_eq!(
            norm(None, "/sys/bus/pci/devices/").unwrap(),
            "/sys/bus/pci/devices/"
        );
        assert_eq!(
            norm(Some("/sys/bus"), "pci/devices/0000:00:05.0/vendor").unwrap(),
            "/sys/bus/pci/devices/0000:00:05.0/vendor"
        );
        assert_eq!(norm(Some("/"), "sys").unwrap(), "/sys");
        assert_eq!(
            norm(Some("/home/u"), "../../dev/nvidia0").unwrap(),
            "/dev/nvidia0"
        );
        assert!(norm(None, "relative").is_none());
        assert!(norm(Some("(unreachable)/x"), "y").is_none());
        let long = format!("/{}", "a/".repeat(PATH_MAX));
        assert!(norm(None, &long).is_none());
    }

    #[test]
    fn trailing_slash_is_excluded_from_matching() {
        let mut sp = StackPath::new();
        assert!(sp.normalize(None, b"/proc/driver/nvidia/"));
        assert_eq!(sp.norm(), b"/proc/driver/nvidia");
    }

    #[test]
    fn prepend_root() {
        let mut sp = StackPath::new();
        assert!(sp.normalize(None, b"/proc//driver/nvidia/version"));
        assert!(sp.prepend(b"/tmp/vgpu-1/root"));
        // SAFETY: NUL-terminated.
        let s = unsafe { std::ffi::CStr::from_ptr(sp.as_ptr()) };
        assert_eq!(s.to_bytes(), b"/tmp/vgpu-1/root/proc/driver/nvidia/version");
        assert!(!sp.prepend(&[b'x'; ROOT_ROOM + 1]));
    }

    #[test]
    fn quick_filter() {
        let yes = [
            c"/proc/driver/nvidia",
            c"//sys//bus/pci",
            c"/sys/module/nvidia",
            c"/sys/devices/pci0000:00",
            c"/dev/nvidia0",
            c"/dev/nvidia-uvm-tools",
            c"/./sys",
            c"/../proc",
            c"/proc/./driver",
            c"/proc/self/../driver",
            c"/usr/../proc/driver/nvidia/version",
            c"/a/b/c/../../../dev/nvidia0",
            c"/x/..",
        ];
        let no = [
            c"/usr/lib",
            c"/etc/hostname",
            c"/",
            c"/tmp",
            c"/system",
            c"/devx",
            c"/procs",
            c"/proc",
            c"/proc/self/status",
            c"/proc/drivers",
            c"/sys/",
            c"/sys/class/drm",
            c"/sys/bus2",
            c"/dev/null",
            c"/dev/nvidi",
            c"/dev/shm/x",
            c"/devices/nvidia0",
            c"/usr/..lib/x",
            c"/proc/self/..x",
        ];
        for p in yes {
            // SAFETY: C string literals are NUL-terminated.
            assert!(unsafe { absolute_may_be_virtual(p.as_ptr()) }, "{p:?}");
        }
        for p in no {
            // SAFETY: as above.
            assert!(!unsafe { absolute_may_be_virtual(p.as_ptr()) }, "{p:?}");
        }
    }

    #[test]
    fn classification() {
        let bdf = Bdf::parse("0000:00:05.0").unwrap();
        let l = Layout::new(&bdf, 0);
        let tree = Some(Class::Tree);
        for p in [
            "/proc/driver/nvidia",
            "/proc/driver/nvidia/version",
            "/proc/driver/nvidia/gpus/0000:00:05.0/information",
            "/sys/module/nvidia/version",
            "/sys/bus/pci/drivers/nvidia",
            "/sys/bus/pci/drivers/nvidia/0000:00:05.0",
            "/sys/bus/pci/devices",
            "/sys/bus/pci/devices/0000:00:05.0",
            "/sys/bus/pci/devices/0000:00:05.0/vendor",
            "/sys/devices/pci0000:00/0000:00:05.0/driver",
        ] {
            assert_eq!(l.classify(p.as_bytes()), tree, "{p}");
            assert!(may_be_virtual(p.as_bytes()), "{p}");
        }
        for p in [
            "/proc/driver",
            "/proc/driver/nvidia-uvm",
            "/sys/module/nvidia_uvm/version",
            "/sys/bus/pci/drivers",
            "/sys/bus/pci/drivers/nvidiafb",
            "/sys/bus/pci/devices/0000:00:01.0/vendor",
            "/sys/bus/pci/devices/0000:00:05.00",
            "/sys/devices/pci0000:00",
            "/sys/devices/pci0000:00/0000:00:01.0",
            "/dev/nvidia1",
            "/dev/nvidia-caps",
            "/dev/null",
            "/etc/hostname",
        ] {
            assert_eq!(l.classify(p.as_bytes()), None, "{p}");
        }
        let Some(Class::Dev(d)) = l.classify(b"/dev/nvidia0") else {
            panic!()
        };
        assert_eq!((d.major, d.minor), (195, 0));
        let Some(Class::Dev(c)) = l.classify(b"/dev/nvidiactl") else {
            panic!()
        };
        assert_eq!((c.major, c.minor), (195, 255));
        let Some(Class::Dev(u)) = l.classify(b"/dev/nvidia-uvm") else {
            panic!()
        };
        assert_ne!(u.major, 195);
        assert_ne!(d.ino, c.ino);
        let l3 = Layout::new(&bdf, 3);
        assert!(l3.classify(b"/dev/nvidia3").is_some());
        assert!(l3.classify(b"/dev/nvidia0").is_none());
    }
}
