use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct DoctorArgs {}

pub fn doctor(_args: DoctorArgs) -> ExitCode {
    eprintln!("vgpu doctor: not implemented yet");
    ExitCode::from(2)
}
