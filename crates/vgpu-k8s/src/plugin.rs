//! The DevicePlugin service for one resource: device lists from the
//! daemon's state, preferred allocations, and `Allocate`, which writes the
//! container's principal and answers the mounts and environment that make
//! the container a vgpu guest of it.

use crate::allocate::{self, Kind, Order, Shape};
use crate::api::{self, device_plugin_server::DevicePlugin};
use crate::daemon::Snapshot;
use crate::principals::Principals;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use vgpu_transport::Endpoint;

/// A share of a GPU on another machine, for nodes without a GPU: a
/// principal provisioned on that GPU host (the same `token` in its
/// `--guests-dir`), read from `--remote-slots DIR/<name>.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The file stem; also the device ID.
    pub name: String,
    pub endpoint: Endpoint,
    pub token: String,
}

/// Where the GPU is.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A `vgpu host` on this node: `daemon` is where the plugin probes it,
    /// `pod_endpoint` what containers are given (the same socket mounted
    /// into the container, or the node's TCP listener).
    Local {
        daemon: Endpoint,
        daemon_token: Option<String>,
        pod_endpoint: Endpoint,
    },
    /// Pre-provisioned slots on GPU hosts reached over TCP.
    Remote { slots: Vec<Slot> },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub kubelet_dir: PathBuf,
    /// e.g. `vgpu.dev`: resources are `<domain>/gpu`, `<domain>/gpu-memory`.
    pub domain: String,
    pub kinds: Vec<Kind>,
    pub shape: Shape,
    pub backend: Backend,
    pub guests_dir: PathBuf,
    pub state_dir: PathBuf,
    /// The host directory holding the shims (`vgpu install --libdir`),
    /// mounted read-only at `container_lib_dir`; `None` when images bring
    /// their own.
    pub shim_dir: Option<PathBuf>,
    pub container_lib_dir: String,
    /// Extra limits every allocation's principal gets (`--limit`).
    pub limits: Vec<(String, u64)>,
    pub health_interval: Duration,
    pub probe_timeout: Duration,
    /// The kubelet's PodResources socket, to remove the principals of
    /// finished containers (docs/kubernetes.md "Revocation"); `None`: only
    /// when their devices are allocated again.
    pub pod_resources: Option<PathBuf>,
    pub gc_interval: Duration,
    /// A principal younger than this is never collected: its container may
    /// still be starting.
    pub gc_grace: Duration,
}

impl Config {
    pub fn resource_name(&self, kind: Kind) -> String {
        format!("{}/{}", self.domain, kind.short())
    }
}

/// The largest `ListAndWatch` message a kubelet accepts with gRPC's default
/// receive limit.
const KUBELET_MAX_MESSAGE: usize = 4 << 20;

/// State every resource's service shares.
pub struct Shared {
    pub cfg: Config,
    pub state: watch::Receiver<Snapshot>,
    pub principals: Principals,
    /// Allocations and the collection of finished containers' principals
    /// revoke and write principal files: one at a time.
    pub grant_lock: Mutex<()>,
}

impl Shared {
    pub fn new(cfg: Config, state: watch::Receiver<Snapshot>) -> std::io::Result<Shared> {
        let principals = Principals::new(cfg.guests_dir.clone(), cfg.state_dir.clone())?;
        Ok(Shared {
            cfg,
            state,
            principals,
            grant_lock: Mutex::new(()),
        })
    }

    /// The device list of `kind` in this state.
    pub fn devices(&self, kind: Kind, snap: &Snapshot) -> Vec<api::Device> {
        match &self.cfg.backend {
            Backend::Local { daemon, .. } => {
                allocate::local_devices(kind, &self.cfg.shape, snap, &daemon.to_string())
            }
            Backend::Remote { slots } => slots
                .iter()
                .map(|s| api::Device {
                    id: s.name.clone(),
                    health: if snap.is_healthy(&s.endpoint.to_string()) {
                        crate::HEALTHY
                    } else {
                        crate::UNHEALTHY
                    }
                    .into(),
                    topology: None,
                })
                .collect(),
        }
    }

    fn lib_env_and_mounts(&self, r: &mut api::ContainerAllocateResponse) {
        if let Some(dir) = &self.cfg.shim_dir {
            r.mounts.push(api::Mount {
                container_path: self.cfg.container_lib_dir.clone(),
                host_path: dir.display().to_string(),
                read_only: true,
            });
            r.envs
                .insert("LD_LIBRARY_PATH".into(), self.cfg.container_lib_dir.clone());
        }
    }

    /// One container's allocation.
    pub fn allocate_container(
        &self,
        kind: Kind,
        ids: &[String],
    ) -> Result<api::ContainerAllocateResponse, Status> {
        let mut r = api::ContainerAllocateResponse::default();
        match &self.cfg.backend {
            Backend::Local { pod_endpoint, .. } => {
                let snap = self.state.borrow().clone();
                let share = allocate::local_share(kind, &self.cfg.shape, &snap, ids)
                    .map_err(Status::invalid_argument)?;
                let mut limits = vec![("memory_mib".to_string(), share.memory_mib)];
                limits.extend(
                    self.cfg
                        .limits
                        .iter()
                        .filter(|(k, _)| k != "memory_mib")
                        .cloned(),
                );
                let grant = {
                    let _g = self.grant_lock.lock().unwrap_or_else(|p| p.into_inner());
                    self.principals
                        .grant(
                            ids,
                            &limits,
                            &format!(
                                "vgpu-device-plugin: {} x{}",
                                self.cfg.resource_name(kind),
                                ids.len()
                            ),
                        )
                        .map_err(|e| {
                            tracing::error!(
                                "writing a principal in {}: {e}",
                                self.principals.guests_dir().display()
                            );
                            Status::internal(format!("writing the principal: {e}"))
                        })?
                };
                tracing::info!(
                    "allocated {} {} -> principal {} ({} MiB on GPU {:?})",
                    ids.len(),
                    self.cfg.resource_name(kind),
                    grant.name,
                    share.memory_mib,
                    share.gpus
                );
                if let Endpoint::Unix(path) = pod_endpoint {
                    // The socket's directory, not the socket: a daemon
                    // restart makes a new socket file there.
                    let dir = path.parent().unwrap_or(Path::new("/"));
                    r.mounts.push(api::Mount {
                        container_path: dir.display().to_string(),
                        host_path: dir.display().to_string(),
                        read_only: true,
                    });
                }
                r.envs.insert("VGPU_HOST".into(), pod_endpoint.to_string());
                r.envs.insert("VGPU_TOKEN".into(), grant.token);
                r.envs.insert(
                    "CUDA_VISIBLE_DEVICES".into(),
                    share
                        .gpus
                        .iter()
                        .map(|g| g.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                );
                r.envs.insert("VGPU_PRINCIPAL".into(), grant.name);
                r.envs
                    .insert("VGPU_MEMORY_MIB".into(), share.memory_mib.to_string());
            }
            Backend::Remote { slots } => {
                let [id] = ids else {
                    return Err(Status::invalid_argument(format!(
                        "a remote share is one slot: request {}: 1 (got {})",
                        self.cfg.resource_name(kind),
                        ids.len()
                    )));
                };
                let slot = slots
                    .iter()
                    .find(|s| &s.name == id)
                    .ok_or_else(|| Status::invalid_argument(format!("{id:?} is not a slot")))?;
                tracing::info!("allocated remote slot {} at {}", slot.name, slot.endpoint);
                r.envs.insert("VGPU_HOST".into(), slot.endpoint.to_string());
                r.envs.insert("VGPU_TOKEN".into(), slot.token.clone());
                r.envs.insert("VGPU_PRINCIPAL".into(), slot.name.clone());
            }
        }
        self.lib_env_and_mounts(&mut r);
        Ok(r)
    }

    fn group_of(&self, id: &str) -> String {
        match &self.cfg.backend {
            Backend::Local { .. } => allocate::gpu_of(id),
            Backend::Remote { slots } => slots
                .iter()
                .find(|s| s.name == id)
                .map(|s| s.endpoint.to_string())
                .unwrap_or_default(),
        }
    }
}

/// The DevicePlugin service of one resource.
pub struct Plugin {
    pub kind: Kind,
    pub shared: Arc<Shared>,
}

#[tonic::async_trait]
impl DevicePlugin for Plugin {
    async fn get_device_plugin_options(
        &self,
        _: Request<api::Empty>,
    ) -> Result<Response<api::DevicePluginOptions>, Status> {
        Ok(Response::new(options()))
    }

    type ListAndWatchStream = ReceiverStream<Result<api::ListAndWatchResponse, Status>>;

    async fn list_and_watch(
        &self,
        _: Request<api::Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        let shared = self.shared.clone();
        let kind = self.kind;
        let mut state = shared.state.clone();
        tokio::spawn(async move {
            let mut last: Option<Vec<api::Device>> = None;
            loop {
                let devices = {
                    let snap = state.borrow_and_update();
                    shared.devices(kind, &snap)
                };
                if last.as_ref() != Some(&devices) {
                    let msg = api::ListAndWatchResponse {
                        devices: devices.clone(),
                    };
                    let len = prost::Message::encoded_len(&msg);
                    if len > KUBELET_MAX_MESSAGE {
                        tracing::error!(
                            "{}: the device list is {len} bytes, more than a kubelet \
                             accepts; raise --memory-unit-mib",
                            shared.cfg.resource_name(kind)
                        );
                    }
                    let healthy = devices
                        .iter()
                        .filter(|d| d.health == crate::HEALTHY)
                        .count();
                    tracing::info!(
                        "{}: {} devices, {healthy} healthy",
                        shared.cfg.resource_name(kind),
                        devices.len()
                    );
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                    last = Some(devices);
                }
                if state.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_preferred_allocation(
        &self,
        req: Request<api::PreferredAllocationRequest>,
    ) -> Result<Response<api::PreferredAllocationResponse>, Status> {
        let order = match (&self.shared.cfg.backend, self.kind) {
            (Backend::Remote { .. }, _) => Order::Spread,
            _ => Order::Pack,
        };
        let container_responses = req
            .into_inner()
            .container_requests
            .iter()
            .map(|c| api::ContainerPreferredAllocationResponse {
                device_i_ds: allocate::prefer(
                    &c.available_device_i_ds,
                    &c.must_include_device_i_ds,
                    c.allocation_size.max(0) as usize,
                    |id| self.shared.group_of(id),
                    order,
                ),
            })
            .collect();
        Ok(Response::new(api::PreferredAllocationResponse {
            container_responses,
        }))
    }

    async fn allocate(
        &self,
        req: Request<api::AllocateRequest>,
    ) -> Result<Response<api::AllocateResponse>, Status> {
        let mut container_responses = Vec::new();
        for c in &req.get_ref().container_requests {
            match self.shared.allocate_container(self.kind, &c.devices_ids) {
                Ok(r) => container_responses.push(r),
                Err(e) => {
                    tracing::warn!(
                        "Allocate {:?} of {}: {}",
                        c.devices_ids,
                        self.shared.cfg.resource_name(self.kind),
                        e.message()
                    );
                    return Err(e);
                }
            }
        }
        Ok(Response::new(api::AllocateResponse {
            container_responses,
        }))
    }

    async fn pre_start_container(
        &self,
        _: Request<api::PreStartContainerRequest>,
    ) -> Result<Response<api::PreStartContainerResponse>, Status> {
        // Not requested in the options: the kubelet never calls it.
        Ok(Response::new(api::PreStartContainerResponse {}))
    }
}

/// What the plugin tells the kubelet at registration and on request.
pub fn options() -> api::DevicePluginOptions {
    api::DevicePluginOptions {
        pre_start_required: false,
        get_preferred_allocation_available: true,
    }
}

/// Reads `--remote-slots DIR`: `<name>.conf` files with `endpoint = ` and
/// `token = ` lines (other lines, e.g. the limits the GPU host's copy of the
/// file carries, are ignored here).
pub fn read_slots(dir: &Path) -> Result<Vec<Slot>, String> {
    let mut slots = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in rd {
        let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
        let fname = e.file_name().to_string_lossy().into_owned();
        let Some(name) = fname.strip_suffix(".conf") else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let at = |m: String| format!("{}: {m}", e.path().display());
        let text = std::fs::read_to_string(e.path()).map_err(|x| at(x.to_string()))?;
        let kv: HashMap<&str, &str> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let endpoint: Endpoint = kv
            .get("endpoint")
            .ok_or_else(|| at("no `endpoint = tcp:HOST:PORT` line".into()))?
            .parse()
            .map_err(|x| at(format!("endpoint: {x}")))?;
        let token = kv
            .get("token")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| at("no `token = ` line".into()))?
            .to_string();
        if name.len() > 63 {
            return Err(at(
                "a slot name is at most 63 characters (a device ID)".into()
            ));
        }
        slots.push(Slot {
            name: name.to_string(),
            endpoint,
            token,
        });
    }
    slots.sort_by(|a, b| a.name.cmp(&b.name));
    if slots.is_empty() {
        return Err(format!("{}: no slot files (<name>.conf)", dir.display()));
    }
    Ok(slots)
}
