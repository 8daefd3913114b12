//! `vgpu run --isolate`: a private mount namespace with the virtual files
//! bind-mounted over the real paths.

use super::run::RunArgs;
use std::process::ExitCode;

pub fn run_isolated(_args: RunArgs) -> ExitCode {
    eprintln!("vgpu run --isolate: not implemented yet");
    ExitCode::from(2)
}
