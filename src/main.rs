//! The `vgpu` command: host daemon, guest launcher, installer, diagnostics.
//! The command-line contract is in docs/architecture.md ("Command-line contract"); tests rely on it.

mod cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "vgpu", version, about = "A GPU for machines that have none")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host daemon that executes guests' GPU work.
    Host(cmd::host::HostArgs),
    /// Internal: serve one guest connection (started by `vgpu host`).
    #[command(hide = true)]
    Worker(cmd::host::WorkerArgs),
    /// Run a command with the shims on its library path.
    Run(cmd::run::RunArgs),
    /// Install the shims as libcuda.so.1 / libnvidia-ml.so.1.
    Install(cmd::install::InstallArgs),
    /// Undo `vgpu install`.
    Uninstall(cmd::install::UninstallArgs),
    /// Explain, check by check, why a CUDA app would not see the GPU.
    Doctor(cmd::doctor::DoctorArgs),
    /// Print an nvidia-smi-like table through the shims.
    Smi(cmd::smi::SmiArgs),
    /// Measure call latency and launch throughput against a raw socket.
    Bench(cmd::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Host(a) => cmd::host::host(a),
        Command::Worker(a) => cmd::host::worker(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Install(a) => cmd::install::install(a),
        Command::Uninstall(a) => cmd::install::uninstall(a),
        Command::Doctor(a) => cmd::doctor::doctor(a),
        Command::Smi(a) => cmd::smi::smi(a),
        Command::Bench(a) => cmd::bench::bench(a),
    }
}
