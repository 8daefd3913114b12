//! The device plugin against a fake kubelet (its Registration service on a
//! Unix socket in a temp dir, and the kubelet's calls to the plugin's
//! sockets) and a real `vgpu host --driver emulated`: registration,
//! ListAndWatch following the daemon's health, preferred allocations,
//! Allocate's mounts, environment and principal file, re-registration after
//! a kubelet restart, and a "pod" run with exactly the allocated
//! environment (docs/kubernetes.md).
//!
//! Needs the workspace built first (`cargo build --workspace`): the `vgpu`
//! binary, the shims and the software GPU.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};
use vgpu_k8s::api::{self, device_plugin_client::DevicePluginClient, registration_server};
use vgpu_k8s::podresources::{self, pod_resources_lister_server};
use vgpu_k8s::serve::unix_channel;
use vgpu_test_support::{artifacts, run_with_timeout, shim_libdir, TempDir};

const WAIT: Duration = Duration::from_secs(60);

/// The kubelet's Registration service: every request goes to the test.
struct FakeKubelet {
    tx: mpsc::UnboundedSender<api::RegisterRequest>,
}

#[tonic::async_trait]
impl registration_server::Registration for FakeKubelet {
    async fn register(
        &self,
        req: Request<api::RegisterRequest>,
    ) -> Result<Response<api::Empty>, Status> {
        let r = req.into_inner();
        if r.version != vgpu_k8s::API_VERSION {
            return Err(Status::invalid_argument("unsupported version"));
        }
        let _ = self.tx.send(r);
        Ok(Response::new(api::Empty {}))
    }
}

/// Serves the fake kubelet on `dir/kubelet.sock`.
fn start_kubelet(dir: &Path) -> mpsc::UnboundedReceiver<api::RegisterRequest> {
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = tokio::net::UnixListener::bind(dir.join(vgpu_k8s::KUBELET_SOCKET)).unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(registration_server::RegistrationServer::new(FakeKubelet {
                tx,
            }))
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );
    rx
}

type Held = Arc<Mutex<Vec<(String, Vec<String>)>>>;

/// The kubelet's PodResources service: one pod whose one container holds
/// the `(resource, device IDs)` the test puts in `held`.
struct FakePodResources {
    held: Held,
}

#[tonic::async_trait]
impl pod_resources_lister_server::PodResourcesLister for FakePodResources {
    async fn list(
        &self,
        _: Request<podresources::ListPodResourcesRequest>,
    ) -> Result<Response<podresources::ListPodResourcesResponse>, Status> {
        let devices = self
            .held
            .lock()
            .unwrap()
            .iter()
            .map(|(r, ids)| podresources::ContainerDevices {
                resource_name: r.clone(),
                device_ids: ids.clone(),
            })
            .collect();
        Ok(Response::new(podresources::ListPodResourcesResponse {
            pod_resources: vec![podresources::PodResources {
                name: "pod".into(),
                namespace: "default".into(),
                containers: vec![podresources::ContainerResources {
                    name: "cuda".into(),
                    devices,
                }],
            }],
        }))
    }
}

/// Serves the fake PodResources service on `path`.
fn start_pod_resources(path: &Path, held: Held) {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pod_resources_lister_server::PodResourcesListerServer::new(
                FakePodResources { held },
            ))
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );
}

/// A process in its own group, killed with its group on drop.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, log: PathBuf) -> Proc {
        let out = File::create(&log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Proc { child, log }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has `n` lines starting with `part`.
    fn wait_log(&mut self, part: &str, n: usize) {
        let deadline = Instant::now() + WAIT;
        while self.logs().lines().filter(|l| l.starts_with(part)).count() < n {
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!("exited with {s} before logging {part:?}:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "no {part:?} in:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        // SAFETY: signalling the process group of our own child.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `vgpu host --driver emulated --listen unix:SOCKET EXTRA...`, ready.
fn start_daemon(socket: &Path, extra: &[&str], log: PathBuf) -> Proc {
    let mut cmd = Command::new(&artifacts().vgpu);
    cmd.arg("host")
        .arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .args(["--driver", "emulated"])
        .args(extra)
        .env_remove("CUDA_VISIBLE_DEVICES");
    if !extra.contains(&"--profile") {
        cmd.args(["--profile", "h100-pcie"]);
    }
    let mut p = Proc::spawn(cmd, log);
    // One `listening on` line per endpoint.
    p.wait_log(
        "listening on ",
        1 + extra.iter().filter(|a| **a == "--listen").count(),
    );
    p
}

struct Setup {
    dir: TempDir,
    kubelet: PathBuf,
    guests: PathBuf,
    state: PathBuf,
    socket: PathBuf,
}

impl Setup {
    fn new(tag: &str) -> Setup {
        let dir = TempDir::new(tag);
        let p = dir.path().to_path_buf();
        let s = Setup {
            kubelet: p.join("kubelet"),
            guests: p.join("guests"),
            state: p.join("state"),
            socket: p.join("run/vgpu.sock"),
            dir,
        };
        for d in [
            &s.kubelet,
            &s.guests,
            &s.state,
            &s.socket.parent().unwrap().to_path_buf(),
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        s
    }

    fn plugin(&self, extra: &[&str]) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vgpu-device-plugin"));
        cmd.arg("--kubelet-dir")
            .arg(&self.kubelet)
            .arg("--daemon")
            .arg(format!("unix:{}", self.socket.display()))
            .arg("--guests-dir")
            .arg(&self.guests)
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--shim-dir")
            .arg(shim_libdir())
            .args(["--health-interval", "0.2", "--probe-timeout", "10"])
            .args(extra)
            .env("VGPU_LOG", "info");
        if !extra.contains(&"--pod-resources-socket") {
            cmd.args(["--pod-resources-socket", "none"]);
        }
        Proc::spawn(cmd, self.dir.path().join("plugin.log"))
    }

    async fn client(&self, socket_name: &str) -> DevicePluginClient<tonic::transport::Channel> {
        DevicePluginClient::new(unix_channel(self.kubelet.join(socket_name)).await.unwrap())
    }
}

async fn registrations(
    rx: &mut mpsc::UnboundedReceiver<api::RegisterRequest>,
    n: usize,
) -> Vec<api::RegisterRequest> {
    let mut v = Vec::new();
    while v.len() < n {
        let r = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("the plugin did not register in time")
            .unwrap();
        v.push(r);
    }
    v.sort_by(|a, b| a.resource_name.cmp(&b.resource_name));
    v
}

/// The next device list from `stream` that satisfies `want`.
async fn next_list(
    stream: &mut tonic::Streaming<api::ListAndWatchResponse>,
    want: impl Fn(&[api::Device]) -> bool,
) -> Vec<api::Device> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let msg = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("no matching ListAndWatch update in time")
            .expect("ListAndWatch ended")
            .expect("ListAndWatch error");
        if want(&msg.devices) {
            return msg.devices;
        }
    }
}

fn all_health(d: &[api::Device], h: &str) -> bool {
    !d.is_empty() && d.iter().all(|d| d.health == h)
}

fn conf(guests: &Path, name: &str) -> HashMap<String, String> {
    std::fs::read_to_string(guests.join(format!("{name}.conf")))
        .unwrap_or_else(|e| panic!("{name}.conf: {e}"))
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_lists_allocates_and_follows_health() {
    let s = Setup::new("k8s-plugin");
    let mut regs = start_kubelet(&s.kubelet);
    let mut daemon = start_daemon(&s.socket, &[], s.dir.path().join("host.log"));
    let plugin = s.plugin(&[
        "--shares-per-gpu",
        "4",
        "--memory-unit-mib",
        "1024",
        "--limit",
        "connections=2",
    ]);

    // Registration: one per resource, the plugin's own socket named.
    let r = registrations(&mut regs, 2).await;
    assert_eq!(r[0].resource_name, "vgpu.dev/gpu");
    assert_eq!(r[0].endpoint, "vgpu-gpu.sock");
    assert_eq!(r[1].resource_name, "vgpu.dev/gpu-memory");
    assert_eq!(r[1].endpoint, "vgpu-gpu-memory.sock");
    for x in &r {
        assert_eq!(x.version, "v1beta1");
        let o = x.options.as_ref().unwrap();
        assert!(o.get_preferred_allocation_available && !o.pre_start_required);
    }

    let mut gpu = s.client("vgpu-gpu.sock").await;
    let mut mem = s.client("vgpu-gpu-memory.sock").await;
    let o = gpu
        .get_device_plugin_options(api::Empty {})
        .await
        .unwrap()
        .into_inner();
    assert!(o.get_preferred_allocation_available);

    // The software GPU's H100 PCIe: one device, 4 shares, 79 GiB blocks.
    let mut watch = gpu
        .list_and_watch(api::Empty {})
        .await
        .unwrap()
        .into_inner();
    let devs = next_list(&mut watch, |d| all_health(d, vgpu_k8s::HEALTHY)).await;
    let ids: Vec<&str> = devs.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        ids,
        ["gpu0-share0", "gpu0-share1", "gpu0-share2", "gpu0-share3"]
    );
    let mut mwatch = mem
        .list_and_watch(api::Empty {})
        .await
        .unwrap()
        .into_inner();
    let mdevs = next_list(&mut mwatch, |d| all_health(d, vgpu_k8s::HEALTHY)).await;
    assert!(
        mdevs.len() >= 70 && mdevs.len() <= 80,
        "{} memory blocks",
        mdevs.len()
    );

    let pref = gpu
        .get_preferred_allocation(api::PreferredAllocationRequest {
            container_requests: vec![api::ContainerPreferredAllocationRequest {
                available_device_i_ds: ids.iter().rev().map(|s| s.to_string()).collect(),
                must_include_device_i_ds: vec![],
                allocation_size: 2,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        pref.container_responses[0].device_i_ds,
        ["gpu0-share0", "gpu0-share1"]
    );

    // Allocate two shares: half the GPU's memory, the principal written.
    let alloc = |ids: &[&str]| api::AllocateRequest {
        container_requests: vec![api::ContainerAllocateRequest {
            devices_ids: ids.iter().map(|s| s.to_string()).collect(),
        }],
    };
    let resp = gpu
        .allocate(alloc(&["gpu0-share0", "gpu0-share1"]))
        .await
        .unwrap()
        .into_inner();
    let c = &resp.container_responses[0];
    let env = &c.envs;
    assert_eq!(env["VGPU_HOST"], format!("unix:{}", s.socket.display()));
    assert_eq!(env["CUDA_VISIBLE_DEVICES"], "0");
    assert_eq!(env["LD_LIBRARY_PATH"], "/usr/local/vgpu/lib");
    assert_eq!(env["VGPU_PRINCIPAL"], "k8s-gpu0-share0");
    let token = &env["VGPU_TOKEN"];
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    let mib: u64 = env["VGPU_MEMORY_MIB"].parse().unwrap();
    assert!(mib > 30_000 && mib < 41_000, "{mib} MiB for half an H100");
    let mounts: Vec<(&str, &str, bool)> = c
        .mounts
        .iter()
        .map(|m| (m.host_path.as_str(), m.container_path.as_str(), m.read_only))
        .collect();
    let sockdir = s.socket.parent().unwrap().display().to_string();
    let shims = shim_libdir().display().to_string();
    assert!(
        mounts.contains(&(sockdir.as_str(), sockdir.as_str(), true)),
        "{mounts:?}"
    );
    assert!(
        mounts.contains(&(shims.as_str(), "/usr/local/vgpu/lib", true)),
        "{mounts:?}"
    );
    let p = conf(&s.guests, "k8s-gpu0-share0");
    assert_eq!(&p["token"], token);
    assert_eq!(p["memory_mib"], mib.to_string());
    assert_eq!(p["connections"], "2");
    assert_eq!(p.len(), 3, "only keys the daemon knows: {p:?}");

    // Memory blocks: a principal of that size on the same daemon.
    let m = mem
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest {
                devices_ids: vec!["gpu0-mem0".into(), "gpu0-mem1".into()],
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.container_responses[0].envs["VGPU_MEMORY_MIB"], "2048");
    assert_eq!(conf(&s.guests, "k8s-gpu0-mem0")["memory_mib"], "2048");

    // The kubelet hands a device out again only once its container is gone:
    // the earlier principal holding it is revoked.
    let again = gpu
        .allocate(alloc(&["gpu0-share1"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        again.container_responses[0].envs["VGPU_PRINCIPAL"],
        "k8s-gpu0-share1"
    );
    assert!(!s.guests.join("k8s-gpu0-share0.conf").exists());
    assert_ne!(&conf(&s.guests, "k8s-gpu0-share1")["token"], token);

    // Devices the plugin never advertised are refused, nothing written.
    for bad in [&["gpu0-share9"][..], &["gpu3-share0"], &["gpu0-mem0"], &[]] {
        let e = gpu.allocate(alloc(bad)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}: {e}");
    }
    assert!(!s.guests.join("k8s-gpu0-share9.conf").exists());

    // The daemon goes away: the same devices turn Unhealthy; it comes
    // back: Healthy again.
    daemon.kill();
    let down = next_list(&mut watch, |d| all_health(d, vgpu_k8s::UNHEALTHY)).await;
    assert_eq!(down.len(), 4);
    let _daemon = start_daemon(&s.socket, &[], s.dir.path().join("host2.log"));
    next_list(&mut watch, |d| all_health(d, vgpu_k8s::HEALTHY)).await;

    // A kubelet restart deletes the plugins' sockets: the plugin serves and
    // registers again.
    std::fs::remove_file(s.kubelet.join("vgpu-gpu.sock")).unwrap();
    let r = registrations(&mut regs, 2).await;
    assert_eq!(r[0].resource_name, "vgpu.dev/gpu");
    let mut gpu2 = s.client("vgpu-gpu.sock").await;
    let mut w2 = gpu2
        .list_and_watch(api::Empty {})
        .await
        .unwrap()
        .into_inner();
    next_list(&mut w2, |d| all_health(d, vgpu_k8s::HEALTHY)).await;
    drop(plugin);
}

/// Waits until `path` exists (or not).
async fn wait_exists(path: &Path, exists: bool) {
    let deadline = Instant::now() + WAIT;
    while path.exists() != exists {
        assert!(
            Instant::now() < deadline,
            "{} exists: {}",
            path.display(),
            !exists
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_containers_principals_are_removed() {
    let s = Setup::new("k8s-gc");
    let mut regs = start_kubelet(&s.kubelet);
    let held: Held = Arc::new(Mutex::new(vec![(
        "vgpu.dev/gpu".to_string(),
        vec!["gpu0-share0".to_string(), "gpu0-share1".to_string()],
    )]));
    let pr = s.dir.path().join("pod-resources.sock");
    start_pod_resources(&pr, held.clone());
    let _daemon = start_daemon(&s.socket, &[], s.dir.path().join("host.log"));
    let _plugin = s.plugin(&[
        "--resources",
        "gpu",
        "--pod-resources-socket",
        pr.to_str().unwrap(),
        "--gc-interval",
        "0.2",
        "--gc-grace",
        "0",
    ]);
    registrations(&mut regs, 1).await;
    let mut gpu = s.client("vgpu-gpu.sock").await;
    let mut watch = gpu
        .list_and_watch(api::Empty {})
        .await
        .unwrap()
        .into_inner();
    next_list(&mut watch, |d| all_health(d, vgpu_k8s::HEALTHY)).await;
    for id in ["gpu0-share0", "gpu0-share1", "gpu0-share2"] {
        gpu.allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest {
                devices_ids: vec![id.into()],
            }],
        })
        .await
        .unwrap();
    }
    let file = |id: &str| s.guests.join(format!("k8s-{id}.conf"));
    // share2's container never showed up in PodResources: collected. The
    // two held ones stay.
    wait_exists(&file("gpu0-share2"), false).await;
    assert!(file("gpu0-share0").exists() && file("gpu0-share1").exists());
    // share0's container ends.
    held.lock().unwrap()[0].1.remove(0);
    wait_exists(&file("gpu0-share0"), false).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(file("gpu0-share1").exists(), "a held principal was removed");
    // Other resources' devices do not keep ours alive.
    *held.lock().unwrap() = vec![("example.com/gpu".into(), vec!["gpu0-share1".into()])];
    wait_exists(&file("gpu0-share1"), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gpus_shares_stay_on_one_gpu() {
    let s = Setup::new("k8s-2gpu");
    let mut regs = start_kubelet(&s.kubelet);
    let _daemon = start_daemon(
        &s.socket,
        &["--profile", "2x-h100"],
        s.dir.path().join("host.log"),
    );
    let _plugin = s.plugin(&["--resources", "gpu", "--shares-per-gpu", "2"]);
    registrations(&mut regs, 1).await;
    let mut gpu = s.client("vgpu-gpu.sock").await;
    let mut watch = gpu
        .list_and_watch(api::Empty {})
        .await
        .unwrap()
        .into_inner();
    let devs = next_list(&mut watch, |d| all_health(d, vgpu_k8s::HEALTHY)).await;
    let ids: Vec<&str> = devs.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        ids,
        ["gpu0-share0", "gpu0-share1", "gpu1-share0", "gpu1-share1"]
    );
    // GPU 0 is half taken: one share goes there (binpack), two to GPU 1.
    let prefer = |n: i32| api::PreferredAllocationRequest {
        container_requests: vec![api::ContainerPreferredAllocationRequest {
            available_device_i_ds: vec![
                "gpu0-share1".into(),
                "gpu1-share0".into(),
                "gpu1-share1".into(),
            ],
            must_include_device_i_ds: vec![],
            allocation_size: n,
        }],
    };
    let one = gpu
        .get_preferred_allocation(prefer(1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.container_responses[0].device_i_ds, ["gpu0-share1"]);
    let two = gpu
        .get_preferred_allocation(prefer(2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        two.container_responses[0].device_i_ds,
        ["gpu1-share0", "gpu1-share1"]
    );
    let resp = gpu
        .allocate(api::AllocateRequest {
            container_requests: vec![
                api::ContainerAllocateRequest {
                    devices_ids: vec!["gpu1-share0".into(), "gpu1-share1".into()],
                },
                api::ContainerAllocateRequest {
                    devices_ids: vec!["gpu0-share1".into()],
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    // One answer per container, in order, each its own principal.
    let [a, b] = &resp.container_responses[..] else {
        panic!("{resp:?}")
    };
    assert_eq!(a.envs["CUDA_VISIBLE_DEVICES"], "1");
    assert_eq!(b.envs["CUDA_VISIBLE_DEVICES"], "0");
    let (ma, mb): (u64, u64) = (
        a.envs["VGPU_MEMORY_MIB"].parse().unwrap(),
        b.envs["VGPU_MEMORY_MIB"].parse().unwrap(),
    );
    assert_eq!(ma, 2 * mb, "a whole GPU vs half of one");
    assert_ne!(a.envs["VGPU_TOKEN"], b.envs["VGPU_TOKEN"]);
    assert_eq!(
        conf(&s.guests, "k8s-gpu1-share0")["memory_mib"],
        ma.to_string()
    );
    assert_eq!(
        conf(&s.guests, "k8s-gpu0-share1")["memory_mib"],
        mb.to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_slots_for_nodes_without_a_gpu() {
    let s = Setup::new("k8s-remote");
    let slots = s.dir.path().join("slots");
    std::fs::create_dir_all(&slots).unwrap();
    // Two slots on a GPU host that answers, one on a host that does not.
    let gpu_host = s.dir.path().join("gpuhost.sock");
    let _daemon = start_daemon(&gpu_host, &[], s.dir.path().join("host.log"));
    for (name, ep) in [
        ("a-0", format!("unix:{}", gpu_host.display())),
        ("a-1", format!("unix:{}", gpu_host.display())),
        (
            "b-0",
            format!("unix:{}", s.dir.path().join("nobody.sock").display()),
        ),
    ] {
        std::fs::write(
            slots.join(format!("{name}.conf")),
            format!("endpoint = {ep}\ntoken = t-{name}\n"),
        )
        .unwrap();
    }
    let mut regs = start_kubelet(&s.kubelet);
    let _plugin = s.plugin(&["--remote-slots", slots.to_str().unwrap()]);
    let r = registrations(&mut regs, 1).await;
    assert_eq!(r[0].resource_name, "vgpu.dev/gpu");
    let mut gpu = s.client("vgpu-gpu.sock").await;
    let mut watch = gpu
        .list_and_watch(api::Empty {})
        .await
        .unwrap()
        .into_inner();
    let devs = next_list(&mut watch, |d| {
        d.len() == 3 && d.iter().filter(|x| x.health == vgpu_k8s::HEALTHY).count() == 2
    })
    .await;
    let b = devs.iter().find(|d| d.id == "b-0").unwrap();
    assert_eq!(b.health, vgpu_k8s::UNHEALTHY);

    // The host with room is preferred.
    let pref = gpu
        .get_preferred_allocation(api::PreferredAllocationRequest {
            container_requests: vec![api::ContainerPreferredAllocationRequest {
                available_device_i_ds: vec!["b-0".into(), "a-1".into(), "a-0".into()],
                must_include_device_i_ds: vec![],
                allocation_size: 1,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pref.container_responses[0].device_i_ds, ["a-0"]);

    let resp = gpu
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest {
                devices_ids: vec!["a-1".into()],
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let env = &resp.container_responses[0].envs;
    assert_eq!(env["VGPU_HOST"], format!("unix:{}", gpu_host.display()));
    assert_eq!(env["VGPU_TOKEN"], "t-a-1");
    assert!(!env.contains_key("CUDA_VISIBLE_DEVICES"));
    // One slot per container: a slot is one principal, one token.
    let e = gpu
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest {
                devices_ids: vec!["a-0".into(), "a-1".into()],
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    // Nothing is written on a node without a GPU.
    assert_eq!(std::fs::read_dir(&s.guests).unwrap().count(), 0);
}

/// Runs `tests/cuda/k8s_pod.cu` with exactly `env` (plus PATH) and the
/// plugin's library mount applied by hand: the shim directory is the
/// mount's host path, so LD_LIBRARY_PATH points there.
fn run_pod(env: &HashMap<String, String>, over_mib: u64) -> vgpu_test_support::GuestOutput {
    let exe = vgpu_test_support::nvcc_build("k8s_pod.cu", "ptx-static");
    let mut cmd = Command::new(exe);
    cmd.arg(over_mib.to_string()).env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    // No container runtime here: the mount of the shim directory at
    // /usr/local/vgpu/lib is done by pointing at its host path.
    cmd.env("LD_LIBRARY_PATH", shim_libdir());
    run_with_timeout(cmd, Duration::from_secs(120))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_runs_a_kernel_within_its_share_and_is_refused_beyond_it() {
    let s = Setup::new("k8s-pod");
    let mut regs = start_kubelet(&s.kubelet);
    let guests = s.guests.to_str().unwrap().to_string();
    // Pods reach the daemon over TCP, where a token is required: a pod's
    // token names its principal, and a pod without a valid token is
    // refused (on the Unix socket an unknown token falls back to the peer
    // uid's principal, which would let a pod drop its share).
    let token_file = s.dir.path().join("token");
    std::fs::write(&token_file, vgpu_k8s::principals::random_token().unwrap()).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let daemon = start_daemon(
        &s.socket,
        &[
            "--guests-dir",
            &guests,
            "--listen",
            "tcp:127.0.0.1:0",
            "--token-file",
            token_file.to_str().unwrap(),
        ],
        s.dir.path().join("host.log"),
    );
    let tcp = daemon
        .logs()
        .lines()
        .find_map(|l| {
            l.strip_prefix("listening on tcp:")
                .map(|a| format!("tcp:{a}"))
        })
        .unwrap_or_else(|| panic!("no TCP listener in:\n{}", daemon.logs()));
    let _plugin = s.plugin(&[
        "--resources",
        "gpu",
        "--shares-per-gpu",
        "8",
        "--pod-endpoint",
        &tcp,
    ]);
    registrations(&mut regs, 1).await;
    let mut gpu = s.client("vgpu-gpu.sock").await;
    let mut watch = gpu
        .list_and_watch(api::Empty {})
        .await
        .unwrap()
        .into_inner();
    next_list(&mut watch, |d| all_health(d, vgpu_k8s::HEALTHY)).await;
    let resp = gpu
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest {
                devices_ids: vec!["gpu0-share0".into()],
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let env: HashMap<String, String> = resp.container_responses[0]
        .envs
        .clone()
        .into_iter()
        .collect();
    let quota: u64 = env["VGPU_MEMORY_MIB"].parse().unwrap();

    let out = run_pod(&env, quota + 1024);
    out.assert_success();
    assert_eq!(
        out.line("total_mib="),
        format!("total_mib={quota}"),
        "{out}"
    );
    assert_eq!(out.line("vadd ok="), "vadd ok=1", "{out}");
    assert_eq!(
        out.line("over_quota="),
        "over_quota=cudaErrorMemoryAllocation",
        "{out}"
    );

    // A wrong token is no principal: refused at the handshake.
    let mut bad = env.clone();
    bad.insert("VGPU_TOKEN".into(), "0".repeat(64));
    let out = run_pod(&bad, 0);
    assert!(!out.status.success(), "a wrong token ran:\n{out}");
}

/// A node without a GPU: slots made by deploy/kubernetes/make-remote-slots.sh
/// for a GPU host's TCP listener, its principals copied into the host's
/// guests directory (as gpu-node.yaml's init container does), and a pod run
/// with the slot's environment gets the slot's memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_pod_runs_within_its_slot() {
    let s = Setup::new("k8s-rpod");
    let token_file = s.dir.path().join("token");
    std::fs::write(&token_file, vgpu_k8s::principals::random_token().unwrap()).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let guests = s.guests.to_str().unwrap().to_string();
    let daemon = start_daemon(
        &s.socket,
        &[
            "--guests-dir",
            &guests,
            "--listen",
            "tcp:127.0.0.1:0",
            "--token-file",
            token_file.to_str().unwrap(),
        ],
        s.dir.path().join("host.log"),
    );
    let tcp = daemon
        .logs()
        .lines()
        .find_map(|l| {
            l.strip_prefix("listening on tcp:")
                .map(|a| format!("tcp:{a}"))
        })
        .unwrap_or_else(|| panic!("no TCP listener in:\n{}", daemon.logs()));
    let out = s.dir.path().join("made");
    let st = Command::new("bash")
        .arg(vgpu_test_support::repo_root().join("deploy/kubernetes/make-remote-slots.sh"))
        .args(["gpu-a", &tcp, "2", "3072"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    for e in std::fs::read_dir(out.join("principals")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), s.guests.join(e.file_name())).unwrap();
    }
    let mut regs = start_kubelet(&s.kubelet);
    let _plugin = s.plugin(&["--remote-slots", out.join("slots").to_str().unwrap()]);
    registrations(&mut regs, 1).await;
    let mut gpu = s.client("vgpu-gpu.sock").await;
    let mut watch = gpu
        .list_and_watch(api::Empty {})
        .await
        .unwrap()
        .into_inner();
    let devs = next_list(&mut watch, |d| all_health(d, vgpu_k8s::HEALTHY)).await;
    let ids: Vec<&str> = devs.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["gpu-a-0", "gpu-a-1"]);
    let resp = gpu
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest {
                devices_ids: vec!["gpu-a-1".into()],
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let env: HashMap<String, String> = resp.container_responses[0]
        .envs
        .clone()
        .into_iter()
        .collect();
    assert_eq!(env["VGPU_HOST"], tcp);
    let out = run_pod(&env, 4096);
    out.assert_success();
    assert_eq!(out.line("total_mib="), "total_mib=3072", "{out}");
    assert_eq!(out.line("vadd ok="), "vadd ok=1", "{out}");
    assert_eq!(
        out.line("over_quota="),
        "over_quota=cudaErrorMemoryAllocation",
        "{out}"
    );
}
