//! The files GPU software probes (`/proc/driver/nvidia`, the PCI function in
//! sysfs, `/sys/module/nvidia`, `/dev/nvidia*`), generated from a
//! [`VirtualGpu`] and materialized once per process under a private directory.
//! The libc hooks in [`crate::hooks`] redirect path-taking calls there.
//!
//! Lifecycle:
//! - Nothing happens until a path in one of the covered areas is touched and
//!   either a provider is registered ([`set_provider`]) or `VGPU_VFILES_TEST=1`
//!   is set. A provider answer of `None` is not remembered: it is asked again
//!   on the next such path, so it should cache its own answer.
//! - When the guest already has a real NVIDIA PCI function
//!   ([`detect_real_nvidia_bdf`]), nothing is ever faked.
//! - The tree lives in `$XDG_RUNTIME_DIR` (or `/tmp`) as
//!   `vgpu-<uid>-<pidns>-<pid>-<random>/root/...`, mode 0700, and is removed at
//!   exit. Trees of dead processes of the same user and pid namespace are
//!   removed when a new one is made (a process killed by a signal cannot clean
//!   up after itself).
//! - A child made by `fork()` does not use its parent's tree (the parent may
//!   exit first and remove it): on its first virtual path it materializes its
//!   own from the description it inherited, without asking the provider
//!   again. After `exec` the new image starts from scratch.

pub mod content;
pub mod path;
pub mod state;

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

/// The GPU as the guest's files describe it. The connection code fills it from
/// the host's inventory; [`VirtualGpu::test_h100`] is a complete example.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualGpu {
    /// Guest-visible PCI address, `dddd:bb:dd.f` (an 8-digit domain as NVML
    /// prints it is accepted too).
    pub bdf: String,
    /// Device minor: 0 means `/dev/nvidia0`.
    pub minor: u32,
    pub name: String,
    /// NVML form, `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub uuid: String,
    /// Kernel driver version, e.g. `590.48.01`; must equal what NVML reports.
    pub driver_version: String,
    pub pci_device_id: u16,
    pub pci_subsystem_vendor: u16,
    pub pci_subsystem_device: u16,
    /// PCI revision ID (`revision` in sysfs).
    pub revision: u8,
    pub vbios_version: String,
    pub irq: u32,
    /// -1 when the machine has no NUMA information, as in most VMs.
    pub numa_node: i32,
    /// sysfs form, e.g. `32.0 GT/s PCIe`.
    pub link_speed: String,
    pub link_width: u32,
    /// BAR0 (registers, 32-bit), BAR1 (framebuffer aperture, 64-bit
    /// prefetchable) and BAR3 (64-bit prefetchable) sizes in bytes; they shape
    /// `resource` and `config`. 0 leaves a BAR out.
    pub bar0_size: u64,
    pub bar1_size: u64,
    pub bar3_size: u64,
}

impl VirtualGpu {
    /// The description `VGPU_VFILES_TEST=1` uses: an H100 PCIe at the default
    /// address.
    pub fn test_h100() -> Self {
        VirtualGpu {
            bdf: "0000:00:05.0".into(),
            minor: 0,
            name: "NVIDIA H100 PCIe".into(),
            uuid: "GPU-6b1e3c2a-91f4-4d8e-b7a0-5c2f8e41d937".into(),
            driver_version: "590.48.01".into(),
            pci_device_id: 0x2331,
            pci_subsystem_vendor: 0x10de,
            pci_subsystem_device: 0x16c1,
            revision: 0xa1,
            vbios_version: "96.00.99.00.01".into(),
            irq: 150,
            numa_node: -1,
            link_speed: "32.0 GT/s PCIe".into(),
            link_width: 16,
            bar0_size: 16 << 20,
            bar1_size: 128 << 30,
            bar3_size: 32 << 20,
        }
    }
}

/// A parsed PCI address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bdf {
    pub domain: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl Bdf {
    /// Accepts `dddd:bb:dd.f` and NVML's `dddddddd:bb:dd.f`, any hex case.
    pub fn parse(s: &str) -> Option<Bdf> {
        let (dom, rest) = s.split_once(':')?;
        let (bus, rest) = rest.split_once(':')?;
        let (dev, func) = rest.split_once('.')?;
        let hex = |t: &str, max_len: usize| -> Option<u32> {
            if t.is_empty() || t.len() > max_len || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            u32::from_str_radix(t, 16).ok()
        };
        let domain = hex(dom, 8)?;
        let device = hex(dev, 2)?;
        let function = hex(func, 1)?;
        if domain > 0xffff || device > 0x1f || function > 7 {
            return None;
        }
        Some(Bdf {
            domain: domain as u16,
            bus: hex(bus, 2)? as u8,
            device: device as u8,
            function: function as u8,
        })
    }

    /// The device's directory relative to `/`, as the kernel names it for a
    /// function on a root bus: `sys/devices/pci0000:00/0000:00:05.0`.
    pub fn sys_dev_rel(&self) -> String {
        format!("sys/devices/pci{:04x}:{:02x}/{self}", self.domain, self.bus)
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

static PROVIDER: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());

/// Registers the function that describes the GPU. It is called lazily, on the
/// first access to a path the virtual files may cover, from inside a libc hook
/// (with the hooks disabled on that thread, so it may open files and sockets),
/// and again later as long as it returns `None`. Registering is one atomic
/// store, so a shim may do it from a load-time constructor.
///
/// Each cdylib that links this crate has its own copy of this state: the shim
/// whose hooks win symbol interposition (the first one preloaded) must have a
/// provider registered.
pub fn set_provider(f: fn() -> Option<VirtualGpu>) {
    PROVIDER.store(f as *mut (), Ordering::Release);
}

fn provider() -> Option<fn() -> Option<VirtualGpu>> {
    let p = PROVIDER.load(Ordering::Acquire);
    if p.is_null() {
        return None;
    }
    // SAFETY: the only non-null value ever stored is a `fn() -> Option<VirtualGpu>`.
    Some(unsafe { std::mem::transmute::<*mut (), fn() -> Option<VirtualGpu>>(p) })
}

const TEST_UNKNOWN: u8 = 0;
const TEST_OFF: u8 = 1;
const TEST_ON: u8 = 2;
static TEST_ENV: AtomicU8 = AtomicU8::new(TEST_UNKNOWN);

/// `VGPU_VFILES_TEST=1`, read once without allocating.
pub fn test_mode() -> bool {
    match TEST_ENV.load(Ordering::Relaxed) {
        TEST_ON => true,
        TEST_OFF => false,
        _ => {
            // SAFETY: getenv with a NUL-terminated name; the result is only
            // read up to its NUL terminator.
            let on = !vgpu_ffi::settings::secure_execution()
                && unsafe {
                    let v = libc::getenv(c"VGPU_VFILES_TEST".as_ptr());
                    !v.is_null() && *v == b'1' as libc::c_char && *v.add(1) == 0
                };
            TEST_ENV.store(if on { TEST_ON } else { TEST_OFF }, Ordering::Relaxed);
            on
        }
    }
}

/// Whether the hooks need to look at paths at all: the fast path of every
/// hook is this check.
#[inline]
pub fn enabled() -> bool {
    !PROVIDER.load(Ordering::Relaxed).is_null() || test_mode()
}

/// The description to materialize: the test one under `VGPU_VFILES_TEST=1`,
/// else the provider's.
fn describe() -> Option<VirtualGpu> {
    if test_mode() {
        return Some(VirtualGpu::test_h100());
    }
    provider().and_then(|f| f())
}

/// The PCI address of a real NVIDIA display/3D controller (vendor 0x10de,
/// class 0x03xxxx) in this machine's sysfs, if there is one. The lowest
/// address wins when there are several. When this returns `Some`, the hooks
/// fake nothing; the config code should adopt the address.
///
/// Reads the real sysfs even while the virtual files are active.
pub fn detect_real_nvidia_bdf() -> Option<String> {
    // The hooks must not show this scan the virtual device it would find.
    let _g = crate::hooks::Guard::enter();
    detect_nvidia_in(Path::new("/sys/bus/pci/devices"))
}

/// [`detect_real_nvidia_bdf`] against any directory laid out like
/// `/sys/bus/pci/devices`.
pub fn detect_nvidia_in(devices: &Path) -> Option<String> {
    let mut found: Vec<String> = std::fs::read_dir(devices)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let dir = e.path();
            let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
            let vendor = read("vendor")?;
            let class = read("class")?;
            (vendor.trim().eq_ignore_ascii_case("0x10de") && class.trim().starts_with("0x03"))
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bdf_parsing() {
        let b = Bdf::parse("0000:00:05.0").unwrap();
        assert_eq!(b.to_string(), "0000:00:05.0");
        assert_eq!(b.sys_dev_rel(), "sys/devices/pci0000:00/0000:00:05.0");
        assert_eq!(
            Bdf::parse("00000000:3B:00.1").unwrap().to_string(),
            "0000:3b:00.1"
        );
        for bad in [
            "",
            "0000:00:05",
            "0000:00:20.0",
            "0000:00:05.8",
            "x:00:05.0",
            "0000:100:05.0",
        ] {
            assert!(Bdf::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn detects_only_nvidia_display_controllers() {
        let tmp = std::env::temp_dir().join(format!("vgpu-detect-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let dev = |name: &str, vendor: &str, class: &str| {
            let d = tmp.join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("vendor"), format!("{vendor}\n")).unwrap();
            std::fs::write(d.join("class"), format!("{class}\n")).unwrap();
        };
        dev("0000:00:01.0", "0x1af4", "0x020000");
        // An NVIDIA audio function next to a GPU must not count.
        dev("0000:00:02.1", "0x10de", "0x040300");
        assert_eq!(detect_nvidia_in(&tmp), None);
        dev("0000:3b:00.0", "0x10de", "0x030200");
        dev("0000:17:00.0", "0x10de", "0x030000");
        assert_eq!(detect_nvidia_in(&tmp).as_deref(), Some("0000:17:00.0"));
        std::fs::remove_dir_all(&tmp).unwrap();
        assert_eq!(detect_nvidia_in(&tmp), None);
    }
}
