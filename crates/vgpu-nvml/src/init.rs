//! `nvmlInit*` / `nvmlShutdown`: a reference count, as in libnvidia-ml, so
//! libraries in one process (cudart, torch, a monitoring thread) can each
//! init and shut down without pulling NVML from under the others.

use cuda_types::nvml::nvmlReturn_t;
use parking_lot::Mutex;
use std::ffi::c_uint;
use std::sync::Arc;
use vgpu_ffi::log::Level;
use vgpu_ffi::vlog;
use vgpu_guest::client::{self, GuestError, GuestInventory};

struct State {
    refs: u32,
    inventory: Option<Arc<GuestInventory>>,
}

static STATE: Mutex<State> = Mutex::new(State {
    refs: 0,
    inventory: None,
});

/// `nvmlInit`, `nvmlInit_v2` and `nvmlInitWithFlags` (the first two with
/// flags 0): `NVML_INIT_FLAG_NO_GPUS` / `NO_ATTACH` only relax what a real
/// driver touches at init; a remote device needs the host either way.
pub fn init(_flags: c_uint) -> Result<(), nvmlReturn_t> {
    {
        let mut st = STATE.lock();
        if st.refs > 0 {
            st.refs += 1;
            return Ok(());
        }
    }
    // Connect without holding STATE: a fork() in another thread meanwhile
    // must not leave the child a lock nobody will release. The guest client
    // bounds connect and handshake, so an absent host fails here quickly.
    let inv = client::inventory().map_err(|e| {
        // Warn, not debug: this is the one line that tells a user why
        // nvidia-smi-like tools say "Driver Not Loaded".
        vlog!(Level::Warn, "nvmlInit: {e}");
        unreachable_host(&e)
    })?;
    let mut st = STATE.lock();
    // Another thread may have finished its own first init meanwhile; both
    // references count, and the inventories are the same session's.
    st.refs += 1;
    st.inventory.get_or_insert(inv);
    Ok(())
}

/// How a host that cannot be reached reads before NVML is initialized.
fn unreachable_host(e: &GuestError) -> nvmlReturn_t {
    match e {
        GuestError::Status(_) | GuestError::Lost(_) => nvmlReturn_t::NVML_ERROR_UNKNOWN,
        GuestError::Unavailable(_) => nvmlReturn_t::NVML_ERROR_DRIVER_NOT_LOADED,
    }
}

pub fn shutdown() -> Result<(), nvmlReturn_t> {
    let mut st = STATE.lock();
    if st.refs == 0 {
        return Err(nvmlReturn_t::NVML_ERROR_UNINITIALIZED);
    }
    st.refs -= 1;
    if st.refs == 0 {
        // The connection itself stays: Ollama inits and shuts down on every
        // memory query, and a new connection costs the host a worker process.
        st.inventory = None;
    }
    Ok(())
}

/// The inventory while NVML is initialized, else NVML_ERROR_UNINITIALIZED.
pub fn inventory() -> Result<Arc<GuestInventory>, nvmlReturn_t> {
    STATE
        .lock()
        .inventory
        .clone()
        .ok_or(nvmlReturn_t::NVML_ERROR_UNINITIALIZED)
}

/// The export list's `require`: every entry point not listed under
/// `without_init` answers NVML_ERROR_UNINITIALIZED before `nvmlInit`.
pub fn require() -> Result<(), nvmlReturn_t> {
    inventory().map(drop)
}

/// The host's facts for the entry points real NVML answers without
/// `nvmlInit` (the NVML and CUDA driver versions: their documented codes
/// have no UNINITIALIZED): the initialized inventory, else the guest
/// client's session, connecting as `nvmlInit` would.
pub fn host_facts() -> Result<Arc<GuestInventory>, nvmlReturn_t> {
    inventory().or_else(|_| client::inventory().map_err(|e| unreachable_host(&e)))
}
