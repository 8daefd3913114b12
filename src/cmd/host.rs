//! `vgpu host` (the daemon) and the hidden `vgpu worker` it starts per
//! guest connection. The work is in the vgpu-host crate; this is flags and
//! logging.

use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use vgpu_host::driver::{DriverChoice, DriverKind, ResolvedDriver};
use vgpu_host::supervisor::{self, DeviceSelection, HostConfig};
use vgpu_host::WorkerConfig;
use vgpu_transport::Endpoint;

#[derive(Args)]
pub struct HostArgs {
    /// Where guests connect: unix:PATH, tcp:HOST:PORT or vsock:CID:PORT
    /// (repeatable). Default: unix:/run/vgpu.sock.
    #[arg(long = "listen", value_name = "ENDPOINT")]
    listen: Vec<Endpoint>,
    /// File holding the token TCP/vsock guests must present. Required for
    /// any listener reachable from other machines.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// auto (the NVIDIA driver if it loads, else the software GPU),
    /// emulated, or the path of a libcuda.so.1.
    #[arg(long, default_value = "auto", value_name = "auto|emulated|PATH")]
    driver: DriverChoice,
    /// Also admit Unix-socket guests running as this uid (repeatable; the
    /// daemon's own uid and root are always admitted).
    #[arg(long = "allow-uid", value_name = "UID")]
    allow_uid: Vec<u32>,
    /// Admit Unix-socket guests of any uid; the socket file's permissions
    /// are then the only access control.
    #[arg(long, conflicts_with = "allow_uid")]
    allow_all_users: bool,
    /// Device memory each guest may allocate, in MiB; guests also see it as
    /// the device's total memory. Default: no cap.
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    quota_mib: Option<u64>,
    /// With --driver emulated: the host configuration the software GPU
    /// imitates, e.g. h100-pcie (the default), h100-cuda12.2 (an old
    /// driver), 2x-h100 (two devices); an unknown name lists them all.
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
    /// The host devices guests see, in this order: CUDA ordinals or UUIDs
    /// (GPU-...), comma-separated, e.g. `0,2`. Default: all of them.
    #[arg(long, value_name = "LIST")]
    devices: Option<DeviceSelection>,
}

#[derive(Args)]
pub struct WorkerArgs {
    /// The inherited connection descriptor.
    #[arg(long)]
    fd: i32,
    #[arg(long)]
    session: u64,
    /// nvidia | emulated
    #[arg(long)]
    driver: DriverKind,
    #[arg(long)]
    cuda_lib: PathBuf,
    #[arg(long)]
    nvml_lib: Option<PathBuf>,
    /// The guest's handshake, hex-encoded (token removed).
    #[arg(long)]
    hello: String,
    /// The per-guest memory cap, in bytes.
    #[arg(long)]
    quota_bytes: Option<u64>,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VGPU_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

pub fn host(args: HostArgs) -> ExitCode {
    init_logging();
    let token = match &args.token_file {
        Some(p) => match supervisor::read_token_file(p) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("vgpu host: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let allowed_uids = if args.allow_all_users {
        None
    } else {
        let mut v = HostConfig::default_uids();
        v.extend(args.allow_uid.iter().copied());
        Some(v)
    };
    let listen = if args.listen.is_empty() {
        vec![Endpoint::Unix(
            vgpu_transport::endpoint::DEFAULT_ENDPOINT
                .trim_start_matches("unix:")
                .into(),
        )]
    } else {
        args.listen
    };
    let cfg = HostConfig {
        listen,
        token,
        driver: args.driver,
        allowed_uids,
        quota: args.quota_mib.map(|m| m.saturating_mul(1 << 20)),
        profile: args.profile,
        devices: args.devices,
    };
    match supervisor::run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("vgpu host: {e}");
            ExitCode::from(1)
        }
    }
}

pub fn worker(args: WorkerArgs) -> ExitCode {
    init_logging();
    let hello = match supervisor::unhex(&args.hello)
        .and_then(|b| vgpu_transport::codec::from_bytes(&b).ok())
    {
        Some(h) => h,
        None => {
            eprintln!("vgpu worker: bad --hello");
            return ExitCode::from(2);
        }
    };
    let cfg = WorkerConfig {
        fd: args.fd,
        driver: ResolvedDriver {
            kind: args.driver,
            cuda_lib: args.cuda_lib,
            nvml_lib: args.nvml_lib,
        },
        session: args.session,
        hello,
        quota: args.quota_bytes,
    };
    ExitCode::from(vgpu_host::worker::run(cfg).clamp(0, 255) as u8)
}
