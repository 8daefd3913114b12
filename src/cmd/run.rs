//! `vgpu run [--isolate] -- CMD ARGS`: CMD with the shims first on its
//! library path and preloaded (so the virtual files are visible to libc
//! readers too), and `VGPU_HOST` set.

use super::libs::find_shims;
use clap::Args;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

#[derive(Args)]
pub struct RunArgs {
    /// Host endpoint for the guest (default: $VGPU_HOST, else unix:/run/vgpu.sock).
    #[arg(long)]
    pub host: Option<String>,
    /// Private mount namespace with the virtual files bind-mounted over the
    /// real paths, for programs that bypass libc (Go).
    #[arg(long)]
    pub isolate: bool,
    /// Do not LD_PRELOAD the shims (library path only).
    #[arg(long)]
    pub no_preload: bool,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, required = true, num_args = 1..)]
    pub command: Vec<OsString>,
}

/// A directory holding the shims under the names applications ask for;
/// removed when dropped.
pub struct LibDir {
    pub path: PathBuf,
}

impl LibDir {
    pub fn create() -> Result<LibDir, String> {
        let shims = find_shims()?;
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let path = base.join(format!("vgpu-run-{}-{}", unsafe_uid(), std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for shim in &shims {
            let target = shim
                .file
                .canonicalize()
                .map_err(|e| format!("{}: {e}", shim.file.display()))?;
            for name in [shim.soname, shim.devlink] {
                std::os::unix::fs::symlink(&target, path.join(name))
                    .map_err(|e| format!("{}: {e}", path.join(name).display()))?;
            }
        }
        Ok(LibDir { path })
    }
}

impl Drop for LibDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn unsafe_uid() -> u32 {
    // SAFETY: getuid cannot fail and has no preconditions.
    unsafe { libc::getuid() }
}

fn prepend_path(var: &str, dir: &Path) -> OsString {
    let mut v = OsString::from(dir.as_os_str());
    if let Some(old) = std::env::var_os(var).filter(|o| !o.is_empty()) {
        v.push(":");
        v.push(old);
    }
    v
}

/// The environment and library dir `vgpu run` gives its command.
pub fn guest_command(args: &RunArgs, libdir: &LibDir) -> Command {
    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..]);
    cmd.env(
        "LD_LIBRARY_PATH",
        prepend_path("LD_LIBRARY_PATH", &libdir.path),
    );
    if !args.no_preload {
        // The SONAME match makes later dlopen("libcuda.so.1") calls reuse
        // these preloaded objects, and the preload makes the file hooks live
        // even in programs that never load a CUDA library.
        let mut pre = OsString::new();
        for name in ["libcuda.so.1", "libnvidia-ml.so.1"] {
            if !pre.is_empty() {
                pre.push(":");
            }
            pre.push(libdir.path.join(name));
        }
        if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|o| !o.is_empty()) {
            pre.push(":");
            pre.push(old);
        }
        cmd.env("LD_PRELOAD", pre);
    }
    let host = args
        .host
        .clone()
        .or_else(|| std::env::var("VGPU_HOST").ok());
    cmd.env(
        "VGPU_HOST",
        host.unwrap_or_else(|| vgpu_transport::endpoint::DEFAULT_ENDPOINT.to_string()),
    );
    cmd
}

pub fn run(args: RunArgs) -> ExitCode {
    if args.isolate {
        return super::isolate::run_isolated(args);
    }
    let libdir = match LibDir::create() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("vgpu run: {e}");
            return ExitCode::from(127);
        }
    };
    let mut cmd = guest_command(&args, &libdir);
    match cmd.status() {
        Ok(st) => exit_code_of(st),
        Err(e) => {
            eprintln!("vgpu run: {}: {e}", args.command[0].to_string_lossy());
            // Like a shell: 127 for "not found", 126 for "not executable".
            ExitCode::from(if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            })
        }
    }
}

/// The child's status as ours: its exit code, or 128 + signal.
pub fn exit_code_of(st: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => ExitCode::from(c as u8),
        (None, Some(sig)) => ExitCode::from(128u8.wrapping_add(sig as u8)),
        _ => ExitCode::FAILURE,
    }
}
