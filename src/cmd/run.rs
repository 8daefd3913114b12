use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct RunArgs {}

pub fn run(_args: RunArgs) -> ExitCode {
    eprintln!("vgpu run: not implemented yet");
    ExitCode::from(2)
}
