use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct InstallArgs {}

#[derive(Args)]
pub struct UninstallArgs {}

pub fn install(_args: InstallArgs) -> ExitCode {
    eprintln!("vgpu install: not implemented yet");
    ExitCode::from(2)
}

pub fn uninstall(_args: UninstallArgs) -> ExitCode {
    eprintln!("vgpu uninstall: not implemented yet");
    ExitCode::from(2)
}
