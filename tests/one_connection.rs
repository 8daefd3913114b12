//! DESIGN: one connection per guest process. With both shims loaded, NVML
//! goes through the CUDA shim's connection, so it sees that process's
//! memory and the process holds a single socket.
mod common;

use common::Daemon;
use std::process::Command;

#[test]
fn nvml_shares_the_cuda_shims_connection() {
    let daemon = Daemon::start_emulated();
    let out = common::run_guest(
        Command::new(common::compile_c("one_connection.c", &[])),
        &daemon,
        &[],
    );
    out.assert_success();
    assert_eq!(common::field(out.line("sockets "), "n"), "1", "{out}");
    out.line("done ok=1");
}
