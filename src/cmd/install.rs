//! `vgpu install` / `vgpu uninstall`: put the shims where every process's
//! loader finds them, and take them away again.
//!
//! Install copies each shim to `<libdir>/<soname>` as a real file (a build
//! tree may disappear) and points the development link (`libcuda.so`) at it.
//! A file already there that is not a vgpu shim — NVIDIA's own library — is
//! never overwritten unless `--force`, and then it is renamed to
//! `<name>.vgpu-backup`. A manifest in the libdir records what was done so
//! uninstall removes exactly that and restores the backups.

use super::libs::{find_shims, is_vgpu_shim};
use clap::Args;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const MANIFEST: &str = ".vgpu-install";
const BACKUP_SUFFIX: &str = ".vgpu-backup";

#[derive(Args)]
pub struct InstallArgs {
    /// Library directory (default: the system's, e.g. /usr/lib/x86_64-linux-gnu).
    #[arg(long)]
    pub libdir: Option<PathBuf>,
    /// Install into this tree instead of / (for images and tests); ldconfig
    /// is not run.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Replace NVIDIA libraries found there (they are backed up).
    #[arg(long)]
    pub force: bool,
}

#[derive(Args)]
pub struct UninstallArgs {
    /// Library directory given to `vgpu install`.
    #[arg(long)]
    pub libdir: Option<PathBuf>,
    /// Tree given to `vgpu install --root`.
    #[arg(long)]
    pub root: Option<PathBuf>,
}

/// The multiarch directory where Debian/Ubuntu keep driver libraries (and
/// where Ollama's globs look), else the first that exists.
fn default_libdir(root: &Path) -> PathBuf {
    for d in [
        "usr/lib/x86_64-linux-gnu",
        "usr/lib/aarch64-linux-gnu",
        "usr/lib64",
        "usr/lib",
    ] {
        if root.join(d).is_dir() {
            return PathBuf::from("/").join(d);
        }
    }
    PathBuf::from("/usr/lib")
}

fn resolve(root: &Option<PathBuf>, libdir: &Option<PathBuf>) -> (PathBuf, bool) {
    let root_dir = root.clone().unwrap_or_else(|| PathBuf::from("/"));
    let dir = libdir.clone().unwrap_or_else(|| default_libdir(&root_dir));
    let full = match root {
        Some(r) => r.join(dir.strip_prefix("/").unwrap_or(&dir)),
        None => dir.clone(),
    };
    let system = root.is_none()
        && ["/usr/lib", "/lib", "/usr/local/lib", "/usr/lib64"]
            .iter()
            .any(|s| dir.starts_with(s));
    (full, system)
}

/// What is at `path` now, as far as install is concerned.
enum Occupant {
    Nothing,
    /// A vgpu shim, or a link to one: ours to replace.
    Ours,
    /// Anything else (NVIDIA's library or a link to it).
    Foreign,
}

fn occupant(path: &Path) -> Occupant {
    match std::fs::symlink_metadata(path) {
        Err(_) => Occupant::Nothing,
        // A dangling link is nobody's library.
        Ok(_) if !path.exists() => Occupant::Nothing,
        Ok(_) if is_vgpu_shim(path) => Occupant::Ours,
        Ok(_) => Occupant::Foreign,
    }
}

pub struct Installed {
    pub dir: PathBuf,
    pub files: Vec<String>,
    pub backups: Vec<String>,
}

/// Installs the shims into `dir`; the core of `vgpu install`.
pub fn install_into(dir: &Path, force: bool) -> Result<Installed, String> {
    let shims = find_shims()?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let names: Vec<&str> = shims.iter().flat_map(|s| [s.soname, s.devlink]).collect();
    let foreign: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| matches!(occupant(&dir.join(n)), Occupant::Foreign))
        .collect();
    if !foreign.is_empty() && !force {
        return Err(format!(
            "{} already holds {} that {} not vgpu's; refusing to replace NVIDIA's libraries (use --force: they are backed up as *{BACKUP_SUFFIX} and `vgpu uninstall` restores them)",
            dir.display(),
            foreign.join(", "),
            if foreign.len() == 1 { "is" } else { "are" }
        ));
    }
    let mut backups = Vec::new();
    for n in &foreign {
        let from = dir.join(n);
        let to = dir.join(format!("{n}{BACKUP_SUFFIX}"));
        if to.symlink_metadata().is_ok() {
            return Err(format!(
                "{} exists; an earlier backup is in the way",
                to.display()
            ));
        }
        std::fs::rename(&from, &to).map_err(|e| format!("backup {}: {e}", from.display()))?;
        backups.push(n.to_string());
    }
    let mut files = Vec::new();
    for shim in &shims {
        let dest = dir.join(shim.soname);
        let tmp = dir.join(format!(".{}.vgpu-tmp", shim.soname));
        std::fs::copy(&shim.file, &tmp)
            .map_err(|e| format!("copy {}: {e}", shim.file.display()))?;
        replace(&tmp, &dest)?;
        files.push(shim.soname.to_string());
        let link = dir.join(shim.devlink);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(shim.soname, &link)
            .map_err(|e| format!("{}: {e}", link.display()))?;
        files.push(shim.devlink.to_string());
    }
    // Merge with an earlier manifest so repeated installs keep old backups.
    let mut manifest = read_manifest(dir);
    for b in &backups {
        if !manifest.1.contains(b) {
            manifest.1.push(b.clone());
        }
    }
    write_manifest(dir, &files, &manifest.1)?;
    Ok(Installed {
        dir: dir.to_path_buf(),
        files,
        backups,
    })
}

fn replace(tmp: &Path, dest: &Path) -> Result<(), String> {
    // rename(2) over the old file: a process that has the old shim mapped
    // keeps its copy, new processes get the new one.
    std::fs::rename(tmp, dest).map_err(|e| format!("{}: {e}", dest.display()))
}

fn read_manifest(dir: &Path) -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(dir.join(MANIFEST)).unwrap_or_default();
    let mut files = Vec::new();
    let mut backups = Vec::new();
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("file", n)) => files.push(n.to_string()),
            Some(("backup", n)) => backups.push(n.to_string()),
            _ => {}
        }
    }
    (files, backups)
}

fn write_manifest(dir: &Path, files: &[String], backups: &[String]) -> Result<(), String> {
    let mut text = String::from("# written by `vgpu install`; read by `vgpu uninstall`\n");
    for f in files {
        text.push_str(&format!("file {f}\n"));
    }
    for b in backups {
        text.push_str(&format!("backup {b}\n"));
    }
    std::fs::write(dir.join(MANIFEST), text)
        .map_err(|e| format!("{}: {e}", dir.join(MANIFEST).display()))
}

/// Removes what `install_into` put in `dir` and restores its backups.
pub fn uninstall_from(dir: &Path) -> Result<Vec<String>, String> {
    let (files, backups) = read_manifest(dir);
    if files.is_empty() && backups.is_empty() {
        return Err(format!("{}: no vgpu installation found", dir.display()));
    }
    let mut done = Vec::new();
    for f in &files {
        let p = dir.join(f);
        // Only remove what is still ours; something installed over us since
        // then is left alone.
        let ours = match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => !p.exists() || is_vgpu_shim(&p),
            Ok(_) => is_vgpu_shim(&p),
            Err(_) => false,
        };
        if ours {
            std::fs::remove_file(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            done.push(format!("removed {}", p.display()));
        }
    }
    for b in &backups {
        let from = dir.join(format!("{b}{BACKUP_SUFFIX}"));
        let to = dir.join(b);
        if from.symlink_metadata().is_ok() {
            std::fs::rename(&from, &to).map_err(|e| format!("restore {}: {e}", to.display()))?;
            done.push(format!("restored {}", to.display()));
        }
    }
    std::fs::remove_file(dir.join(MANIFEST))
        .map_err(|e| format!("{}: {e}", dir.join(MANIFEST).display()))?;
    Ok(done)
}

fn run_ldconfig() -> io::Result<()> {
    let st = std::process::Command::new("ldconfig").status()?;
    if st.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("ldconfig: {st}")))
    }
}

pub fn install(args: InstallArgs) -> ExitCode {
    let (dir, system) = resolve(&args.root, &args.libdir);
    match install_into(&dir, args.force) {
        Ok(done) => {
            for f in &done.files {
                println!("installed {}", done.dir.join(f).display());
            }
            for b in &done.backups {
                println!(
                    "backed up {} as {b}{BACKUP_SUFFIX}",
                    done.dir.join(b).display()
                );
            }
            if system {
                if let Err(e) = run_ldconfig() {
                    eprintln!("vgpu install: warning: {e}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vgpu install: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn uninstall(args: UninstallArgs) -> ExitCode {
    let (dir, system) = resolve(&args.root, &args.libdir);
    match uninstall_from(&dir) {
        Ok(done) => {
            for d in done {
                println!("{d}");
            }
            if system {
                if let Err(e) = run_ldconfig() {
                    eprintln!("vgpu uninstall: warning: {e}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vgpu uninstall: {e}");
            ExitCode::FAILURE
        }
    }
}
