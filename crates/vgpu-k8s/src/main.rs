//! `vgpu-device-plugin`: the Kubernetes device plugin for vgpu
//! (docs/kubernetes.md). Flags only; the work is in the library.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use vgpu_k8s::allocate::{Kind, Shape};
use vgpu_k8s::plugin::{read_slots, Backend, Config};
use vgpu_transport::Endpoint;

#[derive(Parser)]
#[command(
    name = "vgpu-device-plugin",
    version,
    about = "Kubernetes device plugin: pods get enforced shares of a vgpu host's GPUs"
)]
struct Args {
    /// The kubelet's device plugin directory (its Registration socket is
    /// kubelet.sock there; the plugin's sockets go there too).
    #[arg(long, default_value = vgpu_k8s::DEFAULT_KUBELET_DIR, value_name = "DIR")]
    kubelet_dir: PathBuf,
    /// The resources to advertise, comma-separated: gpu (N shares per
    /// GPU), gpu-memory (memory in --memory-unit-mib blocks).
    #[arg(long, default_value = "gpu,gpu-memory", value_name = "LIST")]
    resources: String,
    /// The extended resources' domain: DOMAIN/gpu, DOMAIN/gpu-memory.
    #[arg(long, default_value = "vgpu.dev")]
    domain: String,
    /// Shares each GPU is cut into (vgpu.dev/gpu); one share is worth
    /// 1/N of the GPU's memory.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    shares_per_gpu: u32,
    /// MiB one vgpu.dev/gpu-memory unit stands for. The kubelet gets one
    /// device ID per unit, in messages of at most 4 MiB: 1 (counting in
    /// MiB) fits one 80 GiB GPU, not two (docs/kubernetes.md).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    memory_unit_mib: u64,
    /// Where the plugin reaches this node's `vgpu host` for health and the
    /// device inventory.
    #[arg(
        long,
        default_value = "unix:/run/vgpu/vgpu.sock",
        value_name = "ENDPOINT"
    )]
    daemon: Endpoint,
    /// File with the token for --daemon, when that is a TCP endpoint.
    #[arg(long, value_name = "FILE")]
    daemon_token_file: Option<PathBuf>,
    /// The endpoint containers are given as VGPU_HOST (default: --daemon;
    /// a unix: endpoint's directory is mounted into the container).
    #[arg(long, value_name = "ENDPOINT")]
    pod_endpoint: Option<Endpoint>,
    /// The daemon's --guests-dir: one principal file per allocation.
    #[arg(long, default_value = "/etc/vgpu/guests", value_name = "DIR")]
    guests_dir: PathBuf,
    /// Which devices each principal file stands for.
    #[arg(long, default_value = "/var/lib/vgpu/k8s", value_name = "DIR")]
    state_dir: PathBuf,
    /// Host directory with the shims (`vgpu install --libdir DIR`), mounted
    /// read-only into containers at --container-lib-dir, which becomes
    /// their LD_LIBRARY_PATH.
    #[arg(long, value_name = "DIR")]
    shim_dir: Option<PathBuf>,
    #[arg(long, default_value = "/usr/local/vgpu/lib", value_name = "PATH")]
    container_lib_dir: String,
    /// A limit every allocation's principal gets, KEY=N (repeatable):
    /// connections, contexts, streams, events, modules, kernel_time_ms.
    /// memory_mib comes from the allocation itself.
    #[arg(long = "limit", value_name = "KEY=N")]
    limits: Vec<String>,
    /// A node without a GPU: offer the slots in DIR (<name>.conf with
    /// `endpoint = tcp:HOST:PORT` and `token = ...`), principals
    /// provisioned on GPU hosts, as vgpu.dev/gpu.
    #[arg(long, value_name = "DIR")]
    remote_slots: Option<PathBuf>,
    /// Seconds between health probes of the daemon (or GPU hosts).
    #[arg(long, default_value_t = 10.0)]
    health_interval: f64,
    /// Seconds a probe may take (a cold real driver initializes slowly).
    #[arg(long, default_value_t = 60.0)]
    probe_timeout: f64,
    /// The kubelet's PodResources socket: principals whose devices no
    /// running container holds are removed. `none`: only when their
    /// devices are allocated again.
    #[arg(long, default_value = vgpu_k8s::DEFAULT_POD_RESOURCES_SOCKET, value_name = "PATH|none")]
    pod_resources_socket: String,
    /// Seconds between those checks.
    #[arg(long, default_value_t = 30.0)]
    gc_interval: f64,
    /// Seconds a new principal is kept before the check may remove it (the
    /// kubelet lists a container's devices only once it has been created).
    #[arg(long, default_value_t = 300.0)]
    gc_grace: f64,
}

fn seconds(v: f64, name: &str) -> Result<Duration, String> {
    if v.is_finite() && v > 0.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!("--{name}: a positive number of seconds"))
    }
}

fn config(a: Args) -> Result<Config, String> {
    let mut kinds = Vec::new();
    for r in a
        .resources
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
    {
        let k = Kind::parse(r)
            .ok_or_else(|| format!("--resources: unknown {r:?}; known: gpu, gpu-memory"))?;
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    if kinds.is_empty() {
        return Err("--resources: none given".into());
    }
    let mut limits = Vec::new();
    for l in &a.limits {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| format!("--limit {l:?}: expected KEY=N"))?;
        let (k, v) = (k.trim(), v.trim());
        if !vgpu_k8s::principals::LIMIT_KEYS.contains(&k) || k == "memory_mib" {
            return Err(format!(
                "--limit {k}: one of connections, contexts, streams, events, modules, \
                 kernel_time_ms"
            ));
        }
        let n: u64 = v
            .parse()
            .map_err(|_| format!("--limit {k}={v}: not a whole number"))?;
        limits.push((k.to_string(), n));
    }
    let backend = match &a.remote_slots {
        Some(dir) => {
            if kinds != [Kind::Gpu] {
                if a.resources != "gpu,gpu-memory" {
                    return Err("--remote-slots offers vgpu.dev/gpu only: --resources gpu".into());
                }
                kinds = vec![Kind::Gpu];
            }
            Backend::Remote {
                slots: read_slots(dir)?,
            }
        }
        None => {
            let daemon_token = match &a.daemon_token_file {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .map_err(|e| format!("--daemon-token-file {}: {e}", p.display()))?
                        .trim()
                        .to_string(),
                ),
                None => None,
            };
            Backend::Local {
                pod_endpoint: a.pod_endpoint.clone().unwrap_or_else(|| a.daemon.clone()),
                daemon: a.daemon.clone(),
                daemon_token,
            }
        }
    };
    Ok(Config {
        kubelet_dir: a.kubelet_dir,
        domain: a.domain,
        kinds,
        shape: Shape {
            shares_per_gpu: a.shares_per_gpu,
            memory_unit_mib: a.memory_unit_mib,
        },
        backend,
        guests_dir: a.guests_dir,
        state_dir: a.state_dir,
        shim_dir: a.shim_dir,
        container_lib_dir: a.container_lib_dir,
        limits,
        health_interval: seconds(a.health_interval, "health-interval")?,
        probe_timeout: seconds(a.probe_timeout, "probe-timeout")?,
        pod_resources: (a.pod_resources_socket != "none").then(|| a.pod_resources_socket.into()),
        gc_interval: seconds(a.gc_interval, "gc-interval")?,
        gc_grace: if a.gc_grace.is_finite() && a.gc_grace >= 0.0 {
            Duration::from_secs_f64(a.gc_grace)
        } else {
            return Err("--gc-grace: seconds, 0 or more".into());
        },
    })
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VGPU_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cfg = match config(Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vgpu-device-plugin: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vgpu-device-plugin: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(vgpu_k8s::serve::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("vgpu-device-plugin: {e}");
            ExitCode::from(1)
        }
    }
}
