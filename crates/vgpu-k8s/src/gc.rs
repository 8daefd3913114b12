//! Removing the principals of containers that are gone: the kubelet's
//! PodResources API lists which devices running containers hold; a
//! principal none of whose devices is held any more belongs to a finished
//! container, and its file is removed (its token stops working).
//!
//! The kubelet records a container's devices only after `Allocate`
//! answered, so a principal younger than a grace period is never removed:
//! it may be one whose container is still being created.

use crate::podresources::{
    pod_resources_lister_client::PodResourcesListerClient, ListPodResourcesRequest,
};
use crate::principals::Principals;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

/// The device IDs of `resources` that running containers hold.
pub async fn held_devices(
    socket: PathBuf,
    resources: &[String],
) -> Result<BTreeSet<String>, String> {
    let ch = crate::serve::unix_channel(socket.clone())
        .await
        .map_err(|e| format!("PodResources at {}: {e}", socket.display()))?;
    let list = PodResourcesListerClient::new(ch)
        .list(ListPodResourcesRequest {})
        .await
        .map_err(|e| format!("PodResources List: {}", e.message()))?
        .into_inner();
    let mut held = BTreeSet::new();
    for pod in &list.pod_resources {
        for c in &pod.containers {
            for d in &c.devices {
                if resources.contains(&d.resource_name) {
                    held.extend(d.device_ids.iter().cloned());
                }
            }
        }
    }
    Ok(held)
}

/// Revokes every principal none of whose devices is in `held` and that is
/// older than `grace`; returns their names.
pub fn collect(
    principals: &Principals,
    held: &BTreeSet<String>,
    grace: Duration,
) -> std::io::Result<Vec<String>> {
    let mut gone = Vec::new();
    for (name, devices) in principals.ledger()? {
        if devices.iter().any(|d| held.contains(d)) {
            continue;
        }
        if principals.age(&name).is_none_or(|a| a < grace) {
            continue;
        }
        tracing::info!("revoking principal {name}: no running container holds its devices");
        principals.revoke(&name)?;
        gone.push(name);
    }
    Ok(gone)
}
