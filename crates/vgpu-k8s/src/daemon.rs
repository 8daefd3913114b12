//! What the plugin knows of the GPU side: whether a `vgpu host` answers and
//! which devices it serves, found the way a guest finds them (connect,
//! handshake, inventory). A probe starts one short-lived worker on the
//! daemon; the plugin probes every `--health-interval`.

use std::collections::BTreeMap;
use std::time::Duration;
use vgpu_transport::proto::{caps, GetInventory, Hello};
use vgpu_transport::{Client, Endpoint};

/// One device of a daemon, as the plugin shares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    /// Its CUDA ordinal as the daemon's guests number it (the value for
    /// `CUDA_VISIBLE_DEVICES`).
    pub index: usize,
    pub name: String,
    pub memory_mib: u64,
}

/// The state the device lists derive from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The local daemon's devices from the last probe that answered (kept
    /// while it is down, so the same devices turn Unhealthy rather than
    /// disappear).
    pub gpus: Vec<Gpu>,
    /// Each probed endpoint (`Endpoint`'s text) and whether it answered the
    /// last probe.
    pub healthy: BTreeMap<String, bool>,
}

impl Snapshot {
    pub fn is_healthy(&self, endpoint: &str) -> bool {
        self.healthy.get(endpoint).copied().unwrap_or(false)
    }
}

/// Connects to `ep`, shakes hands (with `token` where the daemon wants one)
/// and asks for the device inventory; every step bounded by `timeout`.
pub fn probe(ep: &Endpoint, token: Option<&str>, timeout: Duration) -> Result<Vec<Gpu>, String> {
    let stream = ep
        .connect(timeout)
        .map_err(|e| format!("nothing answers at {ep}: {e}"))?;
    let hello = Hello::new(
        vgpu_transport::BUILD_ID,
        caps::BATCH,
        token.map(str::to_string),
    );
    let mut client = Client::handshake(stream, &hello, timeout)
        .map_err(|e| format!("{ep} refused the handshake: {e}"))?;
    client
        .set_timeout(Some(timeout))
        .map_err(|e| format!("{ep}: {e}"))?;
    let inv = client
        .call(&GetInventory {})
        .map_err(|e| format!("{ep}: inventory: {e}"))?;
    Ok(inv
        .devices
        .iter()
        .enumerate()
        .map(|(index, d)| Gpu {
            index,
            name: d.name.clone(),
            memory_mib: d.total_mem >> 20,
        })
        .collect())
}
