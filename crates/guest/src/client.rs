//! The guest's one connection to its host, shared by both shims.
//!
//! Opened lazily by the first call that needs it (cuInit, nvmlInit, a
//! virtual file), never in a constructor. If the host cannot be reached the
//! caller gets [`GuestError::Unavailable`] at once (connect and handshake are
//! bounded), so no API call hangs. After `fork()` the child notices the pid
//! change and opens its own connection instead of sharing the parent's.

use crate::config::{Config, PciAddress};
use crate::log::Level;
use crate::vlog;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, Once};
use std::time::Duration;
use vgpu_transport::proto::{caps, DeviceInfo, GetInventory, Hello, Inventory};
use vgpu_transport::{Call, CallError, Client, HandshakeError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestError {
    /// There is no host to talk to: bad configuration, nothing listening,
    /// or the host refused the handshake.
    Unavailable(String),
    /// The host executed the call and answered with this status.
    Status(u32),
    /// The connection broke during the call; the session is gone.
    Lost(String),
}

impl std::fmt::Display for GuestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GuestError::Unavailable(s) => write!(f, "vgpu host unavailable: {s}"),
            GuestError::Status(s) => write!(f, "host status {s}"),
            GuestError::Lost(s) => write!(f, "connection to vgpu host lost: {s}"),
        }
    }
}

/// One device as this guest presents it: the host's facts with the
/// guest-visible PCI address substituted.
#[derive(Debug, Clone)]
pub struct GuestDevice {
    pub index: u32,
    pub info: DeviceInfo,
    pub pci: PciAddress,
    attributes: HashMap<i32, i32>,
}

/// `CU_DEVICE_ATTRIBUTE_PCI_BUS_ID`, `..._PCI_DEVICE_ID`, `..._PCI_DOMAIN_ID`.
const ATTR_PCI_BUS: i32 = 33;
const ATTR_PCI_DEVICE: i32 = 34;
const ATTR_PCI_DOMAIN: i32 = 50;

impl GuestDevice {
    fn new(index: u32, info: DeviceInfo, pci: PciAddress) -> GuestDevice {
        let mut attributes: HashMap<i32, i32> = info.attributes.iter().copied().collect();
        attributes.insert(ATTR_PCI_BUS, pci.bus as i32);
        attributes.insert(ATTR_PCI_DEVICE, pci.device as i32);
        attributes.insert(ATTR_PCI_DOMAIN, pci.domain as i32);
        GuestDevice {
            index,
            info,
            pci,
            attributes,
        }
    }

    /// A `CUdevice_attribute` value; `None` when the host driver did not
    /// answer it (the real driver then says CUDA_ERROR_INVALID_VALUE).
    pub fn attribute(&self, attr: i32) -> Option<i32> {
        self.attributes.get(&attr).copied()
    }

    /// NVML's form of the UUID: `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub fn uuid_string(&self) -> String {
        format_uuid(&self.info.uuid)
    }
}

pub fn format_uuid(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// What the host reported, as the guest shows it.
#[derive(Debug, Clone)]
pub struct GuestInventory {
    pub host: Inventory,
    pub devices: Vec<GuestDevice>,
    pub driver_kind: String,
    pub session: u64,
}

impl GuestInventory {
    fn new(host: Inventory, base: PciAddress, driver_kind: String, session: u64) -> GuestInventory {
        let devices = host
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| {
                // Further devices sit next to the first on the same bus.
                let pci = PciAddress {
                    device: base.device.wrapping_add(i as u8) & 0x1f,
                    ..base
                };
                GuestDevice::new(i as u32, d.clone(), pci)
            })
            .collect();
        GuestInventory {
            host,
            devices,
            driver_kind,
            session,
        }
    }
}

struct Session {
    client: Client,
    pid: u32,
    inventory: Arc<GuestInventory>,
}

static SESSION: Mutex<Option<Session>> = Mutex::new(None);
static ATFORK: Once = Once::new();

extern "C" fn before_fork() {
    // Hold the session lock across fork so the child never inherits it
    // locked by a thread that does not exist there.
    std::mem::forget(SESSION.lock());
}

extern "C" fn after_fork() {
    // SAFETY: `before_fork` locked SESSION on this thread and leaked the guard.
    unsafe { SESSION.force_unlock() };
}

fn register_atfork() {
    ATFORK.call_once(|| {
        // SAFETY: the handlers are plain functions of this library that only
        // touch SESSION's lock.
        unsafe {
            libc::pthread_atfork(Some(before_fork), Some(after_fork), Some(after_fork));
        }
    });
}

fn open_session() -> Result<Session, GuestError> {
    let config = Config::from_env().map_err(GuestError::Unavailable)?;
    let stream = config
        .endpoint
        .connect(config.connect_timeout)
        .map_err(|e| GuestError::Unavailable(format!("connect {}: {e}", config.endpoint)))?;
    let hello = Hello::new(vgpu_transport::BUILD_ID, caps::BATCH, config.token.clone());
    let mut client =
        Client::handshake(stream, &hello, Duration::from_secs(2)).map_err(|e| match e {
            HandshakeError::Refused(_, why) => {
                GuestError::Unavailable(format!("{}: {why}", config.endpoint))
            }
            e => GuestError::Unavailable(format!("{}: {e}", config.endpoint)),
        })?;
    // Still part of "is there a host": bounded like the handshake.
    let bounded = |c: &Client, t| {
        c.set_timeout(t)
            .map_err(|e| GuestError::Unavailable(e.to_string()))
    };
    bounded(&client, Some(Duration::from_secs(2)))?;
    let host = client
        .call(&GetInventory {})
        .map_err(|e| GuestError::Unavailable(format!("inventory: {e}")))?;
    bounded(&client, None)?;
    let inventory = Arc::new(GuestInventory::new(
        host,
        config.pci_address,
        client.hello.driver_kind.clone(),
        client.hello.session,
    ));
    vlog!(
        Level::Info,
        "connected to {} (session {:x}, driver {}, {} device(s))",
        config.endpoint,
        inventory.session,
        inventory.driver_kind,
        inventory.devices.len()
    );
    register_atfork();
    Ok(Session {
        client,
        pid: std::process::id(),
        inventory,
    })
}

fn with_session<R>(f: impl FnOnce(&mut Session) -> Result<R, GuestError>) -> Result<R, GuestError> {
    let mut guard = SESSION.lock();
    let pid = std::process::id();
    if guard.as_ref().is_some_and(|s| s.pid != pid) {
        // A forked child: the socket is the parent's. Dropping our copy of
        // the descriptor leaves the parent's connection intact.
        vlog!(Level::Debug, "fork detected; opening a new connection");
        *guard = None;
    }
    if guard.is_none() {
        *guard = Some(open_session()?);
    }
    let session = guard.as_mut().expect("just set");
    let r = f(session);
    if matches!(r, Err(GuestError::Lost(_))) {
        *guard = None;
    }
    r
}

/// The inventory, connecting first if needed.
pub fn inventory() -> Result<Arc<GuestInventory>, GuestError> {
    with_session(|s| Ok(s.inventory.clone()))
}

/// The inventory if a session is already open; never connects.
pub fn inventory_if_connected() -> Option<Arc<GuestInventory>> {
    let guard = SESSION.lock();
    guard
        .as_ref()
        .filter(|s| s.pid == std::process::id())
        .map(|s| s.inventory.clone())
}

/// One call to the host, connecting first if needed.
pub fn call<C: Call>(c: &C) -> Result<C::Reply, GuestError> {
    with_session(|s| {
        s.client.call(c).map_err(|e| match e {
            CallError::Status(st) => GuestError::Status(st),
            e => {
                vlog!(Level::Error, "{}: {e}", C::NAME);
                GuestError::Lost(e.to_string())
            }
        })
    })
}

/// Queues a call whose failure the application only observes at the next
/// synchronizing call (launches, async copies, event records): no round
/// trip. The queue is written before the next [`call`] (or when it grows
/// large), and the host reports a deferred failure through that call.
pub fn queue<C: Call>(c: &C) -> Result<(), GuestError> {
    with_session(|s| {
        s.client.queue(c).map_err(|e| {
            vlog!(Level::Error, "{}: {e}", C::NAME);
            GuestError::Lost(e.to_string())
        })
    })
}

/// Writes out queued calls without waiting (e.g. before blocking on
/// something the host must first execute).
pub fn flush() -> Result<(), GuestError> {
    with_session(|s| {
        s.client
            .flush_queued()
            .map_err(|e| GuestError::Lost(e.to_string()))
    })
}

/// Drops the connection (tests; `nvmlShutdown` does not need it).
pub fn disconnect() {
    *SESSION.lock() = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_format() {
        let u: [u8; 16] = core::array::from_fn(|i| i as u8 + 1);
        assert_eq!(format_uuid(&u), "GPU-01020304-0506-0708-090a-0b0c0d0e0f10");
    }

    #[test]
    fn guest_pci_overrides_host_attributes() {
        let info = DeviceInfo {
            attributes: vec![(ATTR_PCI_BUS, 1), (75, 9)],
            ..Default::default()
        };
        let inv = Inventory {
            devices: vec![info.clone(), info],
            ..Default::default()
        };
        let g = GuestInventory::new(
            inv,
            PciAddress::parse("0000:00:05.0").unwrap(),
            "emulated".into(),
            1,
        );
        assert_eq!(g.devices[0].attribute(ATTR_PCI_BUS), Some(0));
        assert_eq!(g.devices[0].attribute(ATTR_PCI_DEVICE), Some(5));
        assert_eq!(g.devices[1].attribute(ATTR_PCI_DEVICE), Some(6));
        assert_eq!(g.devices[0].attribute(75), Some(9));
        assert_eq!(g.devices[0].attribute(1234), None);
    }

    #[test]
    fn no_host_fails_fast() {
        std::env::set_var("VGPU_HOST", "unix:/nonexistent/vgpu-test.sock");
        let t = std::time::Instant::now();
        assert!(matches!(inventory(), Err(GuestError::Unavailable(_))));
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
