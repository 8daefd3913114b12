//! `vgpu host` (the daemon) and the hidden `vgpu worker` it starts per
//! guest connection. The work is in the vgpu-host crate; this is flags and
//! logging.

use super::logging::{Escaping, RateLimit};
use clap::Args;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use vgpu_host::driver::{DriverChoice, DriverKind, ResolvedDriver};
use vgpu_host::principal::Limits;
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
    /// Device memory each guest (principal: a uid, or a token's name) may
    /// hold over all its connections, in MiB; guests also see it as the
    /// device's total memory. Default: no cap. `--quota-mib` is the old
    /// name.
    #[arg(long, alias = "quota-mib", value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    guest_memory_mib: Option<u64>,
    /// Connections each guest may hold at once (each is a worker process).
    #[arg(long, value_name = "N", default_value_t = supervisor::DEFAULT_GUEST_CONNECTIONS,
          value_parser = clap::value_parser!(u64).range(1..=vgpu_host::account::MAX_SLOTS as u64))]
    guest_connections: u64,
    /// Contexts each guest may hold over all its connections. Default: no cap.
    #[arg(long, value_name = "N")]
    guest_contexts: Option<u64>,
    /// Streams each guest may hold over all its connections. Default: no cap.
    #[arg(long, value_name = "N")]
    guest_streams: Option<u64>,
    /// Events each guest may hold over all its connections. Default: no cap.
    #[arg(long, value_name = "N")]
    guest_events: Option<u64>,
    /// Modules and libraries each guest may hold over all its connections.
    /// Default: no cap.
    #[arg(long, value_name = "N")]
    guest_modules: Option<u64>,
    /// Longest one request of a guest (a kernel launch, a synchronization)
    /// may run, in ms, before its worker is ended; 0: no limit. Default:
    /// 300000 on the software GPU, none on a real driver.
    #[arg(long, value_name = "MS")]
    guest_kernel_time_ms: Option<u64>,
    /// Directory of guest principals: `<name>.conf` files with `token =`,
    /// `uid =` and limits (docs/security.md, "Guest principals and
    /// limits"); re-read when it changes.
    #[arg(long, value_name = "DIR")]
    guests_dir: Option<PathBuf>,
    /// The mode of the Unix socket file, octal. Any local user may then
    /// connect, and the uid policy decides who is admitted; with
    /// --allow-all-users the mode is the access control (e.g. 0660 and a
    /// group).
    #[arg(long, value_name = "OCTAL", default_value = "0666", value_parser = parse_mode)]
    socket_mode: u32,
    /// Connections served at once over all guests.
    #[arg(long, value_name = "N", default_value_t = supervisor::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
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
    /// The guest principal, for logs.
    #[arg(long, default_value = "")]
    principal: String,
    /// The principal's account page (inherited descriptor).
    #[arg(long)]
    account_fd: Option<i32>,
    /// This connection's row in it.
    #[arg(long)]
    account_slot: Option<usize>,
    /// The principal's limits, `key=value,...` (guest-file keys).
    #[arg(long, default_value = "")]
    limits: String,
}

/// Logs to stderr: descriptor 2 in the daemon; in a worker, which gives
/// descriptor 2 to the guest's device output, the original stderr it saved
/// (`vgpu_host::worker::output`).
/// Lines are rate-limited per statement and escaped
/// ([`super::logging`]): a guest can neither flood the log nor forge lines.
fn init_logging() {
    use tracing_subscriber::filter::FilterExt;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_env("VGPU_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(|| Escaping(vgpu_host::worker::output::log_writer()))
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter.and(rate_limit()));
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

fn rate_limit() -> &'static RateLimit {
    static R: std::sync::OnceLock<RateLimit> = std::sync::OnceLock::new();
    R.get_or_init(|| {
        RateLimit::new(|line| {
            let _ = vgpu_host::worker::output::log_writer().write_all(line.as_bytes());
        })
    })
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
        defaults: Limits {
            memory_mib: args.guest_memory_mib,
            connections: Some(args.guest_connections),
            contexts: args.guest_contexts,
            streams: args.guest_streams,
            events: args.guest_events,
            modules: args.guest_modules,
            kernel_time_ms: args.guest_kernel_time_ms,
        },
        guests_dir: args.guests_dir,
        max_connections: args.max_connections,
        socket_mode: args.socket_mode,
        profile: args.profile,
        devices: args.devices,
    };
    let r = supervisor::run(cfg);
    rate_limit().flush();
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("vgpu host: {e}");
            ExitCode::from(1)
        }
    }
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("`{s}`: expected an octal mode, e.g. 0660"))
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
    let limits = match Limits::parse_list(&args.limits) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vgpu worker: --limits: {e}");
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
        principal: args.principal,
        account: args.account_fd.zip(args.account_slot),
        limits,
    };
    let code = vgpu_host::worker::run(cfg);
    rate_limit().flush();
    ExitCode::from(code.clamp(0, 255) as u8)
}
