//! A Kubernetes device plugin for vgpu (docs/kubernetes.md): it offers pods
//! shares of the GPUs a `vgpu host` serves, as the extended resources
//! `vgpu.dev/gpu` (N shares per GPU) and `vgpu.dev/gpu-memory` (memory
//! blocks), and turns each allocation into a principal of the daemon — a
//! file in its `--guests-dir` with a fresh token and the share's limits —
//! so the daemon enforces the quota per pod.
//!
//! It speaks the kubelet's device plugin API v1beta1 over Unix sockets with
//! tonic; the message and service code is generated from
//! `proto/deviceplugin_v1beta1.proto` and committed (`src/generated/`,
//! `scripts/gen-k8s-proto.sh`).

pub mod allocate;
pub mod daemon;
pub mod gc;
pub mod plugin;
pub mod principals;
pub mod serve;

/// The kubelet's device plugin API, v1beta1 (generated, do not edit).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod api {
    include!("generated/v1beta1.rs");
}

/// The part of the kubelet's PodResources API v1 the plugin reads
/// (generated, do not edit).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod podresources {
    include!("generated/v1.rs");
}

/// The API version a plugin states when it registers.
pub const API_VERSION: &str = "v1beta1";
/// Where the kubelet looks for plugin sockets and serves its own.
pub const DEFAULT_KUBELET_DIR: &str = "/var/lib/kubelet/device-plugins";
/// The kubelet's Registration socket, a file in [`DEFAULT_KUBELET_DIR`].
pub const KUBELET_SOCKET: &str = "kubelet.sock";
/// The kubelet's PodResources socket.
pub const DEFAULT_POD_RESOURCES_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";
/// `Device.health` values.
pub const HEALTHY: &str = "Healthy";
pub const UNHEALTHY: &str = "Unhealthy";
