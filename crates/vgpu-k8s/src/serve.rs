//! The plugin's life: probe the GPU side, serve one DevicePlugin socket per
//! resource in the kubelet's directory, register each with the kubelet, and
//! start over when the kubelet restarts (it deletes every plugin socket
//! then, and expects plugins to register again).

use crate::api::{self, device_plugin_server::DevicePluginServer, registration_client};
use crate::daemon::{self, Snapshot};
use crate::plugin::{Backend, Config, Plugin, Shared};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint as GrpcEndpoint, Server, Uri};

/// A gRPC channel over the Unix socket at `path` (the URI is a placeholder
/// gRPC needs; the connector decides where bytes go).
pub async fn unix_channel(path: PathBuf) -> Result<Channel, tonic::transport::Error> {
    GrpcEndpoint::from_static("http://[::1]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}

/// Probes every endpoint the backend depends on, once.
fn probe_all(cfg: &Config, prev: &Snapshot) -> Snapshot {
    let mut next = prev.clone();
    next.healthy = BTreeMap::new();
    match &cfg.backend {
        Backend::Local {
            daemon,
            daemon_token,
            ..
        } => {
            let key = daemon.to_string();
            match daemon::probe(daemon, daemon_token.as_deref(), cfg.probe_timeout) {
                Ok(gpus) => {
                    next.gpus = gpus;
                    next.healthy.insert(key, true);
                }
                Err(e) => {
                    if prev.is_healthy(&key) || prev.healthy.is_empty() {
                        tracing::warn!("daemon unhealthy: {e}");
                    }
                    next.healthy.insert(key, false);
                }
            }
        }
        Backend::Remote { slots } => {
            // One probe per GPU host, with the token of its first slot.
            let mut seen = BTreeMap::new();
            for s in slots {
                let key = s.endpoint.to_string();
                if seen.contains_key(&key) {
                    continue;
                }
                let ok = match daemon::probe(&s.endpoint, Some(&s.token), cfg.probe_timeout) {
                    Ok(_) => true,
                    Err(e) => {
                        if prev.is_healthy(&key) || prev.healthy.is_empty() {
                            tracing::warn!("GPU host unhealthy: {e}");
                        }
                        false
                    }
                };
                seen.insert(key, ok);
            }
            next.healthy = seen;
        }
    }
    next
}

/// Probes forever, publishing each change.
async fn health_loop(cfg: Config, tx: watch::Sender<Snapshot>) {
    loop {
        let prev = tx.borrow().clone();
        let c = cfg.clone();
        let next = match tokio::task::spawn_blocking(move || probe_all(&c, &prev)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("probe task failed: {e}");
                tokio::time::sleep(cfg.health_interval).await;
                continue;
            }
        };
        tx.send_if_modified(|s| {
            if *s != next {
                if s.healthy != next.healthy {
                    tracing::info!("GPU side health: {:?}", next.healthy);
                }
                *s = next;
                true
            } else {
                false
            }
        });
        tokio::time::sleep(cfg.health_interval).await;
    }
}

/// Removes the principals of finished containers every `gc_interval`.
async fn gc_loop(shared: Arc<Shared>, socket: PathBuf) {
    let cfg = &shared.cfg;
    let resources: Vec<String> = cfg.kinds.iter().map(|&k| cfg.resource_name(k)).collect();
    let mut last_error: Option<String> = None;
    loop {
        tokio::time::sleep(cfg.gc_interval).await;
        let held = match crate::gc::held_devices(socket.clone(), &resources).await {
            Ok(h) => h,
            Err(e) => {
                if last_error.as_ref() != Some(&e) {
                    tracing::warn!(
                        "{e}; principals of finished containers are removed only when \
                         their devices are allocated again"
                    );
                    last_error = Some(e);
                }
                continue;
            }
        };
        if last_error.take().is_some() {
            tracing::info!("PodResources answers again");
        }
        let _g = shared.grant_lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = crate::gc::collect(&shared.principals, &held, cfg.gc_grace) {
            tracing::error!("removing finished containers' principals: {e}");
        }
    }
}

/// The identity of a file, to notice it was replaced.
fn inode(p: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// Registers `resource` (served on `socket_name`) with the kubelet.
async fn register(kubelet_dir: &Path, socket_name: &str, resource: &str) -> Result<(), String> {
    let ks = kubelet_dir.join(crate::KUBELET_SOCKET);
    let ch = unix_channel(ks.clone())
        .await
        .map_err(|e| format!("connecting to the kubelet at {}: {e}", ks.display()))?;
    let mut client = registration_client::RegistrationClient::new(ch);
    client
        .register(api::RegisterRequest {
            version: crate::API_VERSION.into(),
            endpoint: socket_name.into(),
            resource_name: resource.into(),
            options: Some(crate::plugin::options()),
        })
        .await
        .map_err(|e| format!("the kubelet refused {resource}: {}", e.message()))?;
    Ok(())
}

/// Runs the plugin until the process is stopped.
pub async fn run(cfg: Config) -> Result<(), String> {
    let (tx, rx) = watch::channel(Snapshot::default());
    let shared = Arc::new(Shared::new(cfg.clone(), rx).map_err(|e| {
        format!(
            "{} / {}: {e}",
            cfg.guests_dir.display(),
            cfg.state_dir.display()
        )
    })?);
    let mut first = tx.subscribe();
    tokio::spawn(health_loop(cfg.clone(), tx));
    if let (Backend::Local { .. }, Some(sock)) = (&cfg.backend, &cfg.pod_resources) {
        tokio::spawn(gc_loop(shared.clone(), sock.clone()));
    }
    // The kubelet's first device list should be the real one: wait for the
    // first probe (it always changes the state: it records the endpoint's
    // health), as long as a probe may take.
    let _ = tokio::time::timeout(cfg.probe_timeout + Duration::from_secs(1), first.changed()).await;
    let kubelet_sock = cfg.kubelet_dir.join(crate::KUBELET_SOCKET);
    loop {
        // One generation: from serving and registering to the kubelet's
        // restart.
        let mut servers = Vec::new();
        let mut sockets = Vec::new();
        for &kind in &cfg.kinds {
            let name = kind.socket_name();
            let path = cfg.kubelet_dir.join(&name);
            let _ = std::fs::remove_file(&path);
            let listener =
                UnixListener::bind(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let svc = DevicePluginServer::new(Plugin {
                kind,
                shared: shared.clone(),
            });
            servers.push(tokio::spawn(
                Server::builder()
                    .add_service(svc)
                    .serve_with_incoming(UnixListenerStream::new(listener)),
            ));
            sockets.push((path.clone(), inode(&path)));
            tracing::info!("serving {} on {}", cfg.resource_name(kind), path.display());
        }
        let kubelet_at;
        'register: loop {
            let mut all = true;
            for &kind in &cfg.kinds {
                if let Err(e) = register(
                    &cfg.kubelet_dir,
                    &kind.socket_name(),
                    &cfg.resource_name(kind),
                )
                .await
                {
                    tracing::warn!("{e}; trying again in 5 s");
                    all = false;
                    break;
                }
                tracing::info!("registered {} with the kubelet", cfg.resource_name(kind));
            }
            if all {
                kubelet_at = inode(&kubelet_sock);
                break 'register;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        // Watch for the kubelet's restart: our sockets deleted or its own
        // socket replaced.
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let gone = sockets.iter().any(|(p, id)| inode(p) != *id);
            let restarted = inode(&kubelet_sock) != kubelet_at;
            let died = servers.iter().any(|s| s.is_finished());
            if gone || restarted || died {
                tracing::info!(
                    "the kubelet restarted (or a plugin server stopped): serving and \
                     registering again"
                );
                break;
            }
        }
        for s in servers {
            s.abort();
        }
        for (p, id) in &sockets {
            if inode(p) == *id {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}
