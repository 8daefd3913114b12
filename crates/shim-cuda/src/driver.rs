//! Process-wide driver state after a successful `cuInit`: the inventory,
//! the devices this process may see, their primary contexts — and the one
//! way to send a call to the host.

use crate::contexts::{self, Context, Kind};
use crate::visible;
use cuda_types::cuda::{CUdevice, CUresult};
use parking_lot::Mutex;
use std::sync::{Arc, OnceLock};
use vgpu_guest::client::{self, GuestDevice, GuestError, GuestInventory};
use vgpu_guest::log::Level;
use vgpu_guest::vlog;
use vgpu_transport::proto::{STATUS_BAD_REQUEST, STATUS_HOST_ERROR, STATUS_UNKNOWN_OP};
use vgpu_transport::Call;

pub struct Driver {
    pub inventory: Arc<GuestInventory>,
    /// Host device index for each guest ordinal (CUDA_VISIBLE_DEVICES order).
    visible: Vec<usize>,
    /// One per guest ordinal, alive for the whole process.
    primaries: Vec<Arc<Context>>,
}

static DRIVER: OnceLock<Driver> = OnceLock::new();
/// Serialises first initialisations so two racing `cuInit`s connect once.
static INIT: Mutex<()> = Mutex::new(());

/// The state, or CUDA_ERROR_NOT_INITIALIZED before a successful `cuInit`.
/// One atomic load: it guards calls on the per-runtime-call hot path.
#[inline]
pub fn get() -> Result<&'static Driver, CUresult> {
    DRIVER.get().ok_or(CUresult::CUDA_ERROR_NOT_INITIALIZED)
}

/// `cuInit`'s work. A failed attempt leaves nothing behind, so a later
/// cuInit (say, once the daemon is up) tries again.
pub fn init() -> Result<&'static Driver, CUresult> {
    if let Some(d) = DRIVER.get() {
        return Ok(d);
    }
    let _serial = INIT.lock();
    if let Some(d) = DRIVER.get() {
        return Ok(d);
    }
    let inventory = client::inventory().map_err(|e| {
        vlog!(Level::Warn, "cuInit: {e}; reporting no CUDA device");
        CUresult::CUDA_ERROR_NO_DEVICE
    })?;
    let uuids: Vec<String> = inventory.devices.iter().map(|d| d.uuid_string()).collect();
    let env = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let visible = visible::visible_devices(env.as_deref(), &uuids);
    if env.is_some() {
        vlog!(
            Level::Debug,
            "CUDA_VISIBLE_DEVICES={:?}: host devices {visible:?}",
            env.as_deref().unwrap_or_default()
        );
    }
    let primaries = visible
        .iter()
        .enumerate()
        .map(|(ordinal, &host)| {
            contexts::register(Context::new(
                Kind::Primary,
                ordinal as CUdevice,
                host as i32,
                0,
                contexts::API_VERSION,
            ))
        })
        .collect();
    Ok(DRIVER.get_or_init(|| Driver {
        inventory,
        visible,
        primaries,
    }))
}

impl Driver {
    pub fn device_count(&self) -> usize {
        self.visible.len()
    }

    fn check(&self, dev: CUdevice) -> Result<usize, CUresult> {
        usize::try_from(dev)
            .ok()
            .filter(|&d| d < self.visible.len())
            .ok_or(CUresult::CUDA_ERROR_INVALID_DEVICE)
    }

    /// The device behind an application's ordinal.
    pub fn device(&self, dev: CUdevice) -> Result<&GuestDevice, CUresult> {
        let i = self.check(dev)?;
        Ok(&self.inventory.devices[self.visible[i]])
    }

    /// The host's index for an application's ordinal.
    pub fn host_device(&self, dev: CUdevice) -> Result<i32, CUresult> {
        Ok(self.visible[self.check(dev)?] as i32)
    }

    pub fn primary(&self, dev: CUdevice) -> Result<&Arc<Context>, CUresult> {
        Ok(&self.primaries[self.check(dev)?])
    }

    /// Guest ordinals with their devices, in the application's order.
    pub fn devices(&self) -> impl Iterator<Item = (CUdevice, &GuestDevice)> {
        self.visible
            .iter()
            .enumerate()
            .map(|(o, &h)| (o as CUdevice, &self.inventory.devices[h]))
    }
}

/// The CUresult an application sees for a failed host call.
pub fn to_cuda(e: GuestError) -> CUresult {
    match e {
        GuestError::Status(STATUS_UNKNOWN_OP) => CUresult::CUDA_ERROR_NOT_SUPPORTED,
        GuestError::Status(STATUS_BAD_REQUEST | STATUS_HOST_ERROR) => CUresult::CUDA_ERROR_UNKNOWN,
        GuestError::Status(code) => CUresult(code),
        // The GPU went away under us (daemon restarted, network gone).
        GuestError::Unavailable(_) | GuestError::Lost(_) => CUresult::CUDA_ERROR_DEVICE_UNAVAILABLE,
    }
}

/// One call to the host, with the answer as a CUresult.
pub fn call<C: Call>(c: &C) -> Result<C::Reply, CUresult> {
    client::call(c).map_err(|e| {
        if !matches!(e, GuestError::Status(_)) {
            vlog!(Level::Error, "{}: {e}", C::NAME);
        }
        to_cuda(e)
    })
}
