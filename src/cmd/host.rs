use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct HostArgs {}

#[derive(Args)]
pub struct WorkerArgs {}

pub fn host(_args: HostArgs) -> ExitCode {
    eprintln!("vgpu host: not implemented yet");
    ExitCode::from(2)
}

pub fn worker(_args: WorkerArgs) -> ExitCode {
    ExitCode::from(2)
}
