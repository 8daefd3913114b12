use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct SmiArgs {}

pub fn smi(_args: SmiArgs) -> ExitCode {
    eprintln!("vgpu smi: not implemented yet");
    ExitCode::from(2)
}
