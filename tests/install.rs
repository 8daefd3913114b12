//! `vgpu install` / `vgpu uninstall` into a temporary root: the files and
//! names, the refusal to replace NVIDIA's libraries, the backup that
//! `--force` makes and uninstall restores.

use std::path::{Path, PathBuf};
use std::process::Command;

fn vgpu() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vgpu"))
}

fn temp_root(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vgpu-install-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("usr/lib/x86_64-linux-gnu")).unwrap();
    d
}

fn shims_built() -> bool {
    let dir = Path::new(env!("CARGO_BIN_EXE_vgpu"))
        .parent()
        .unwrap()
        .to_path_buf();
    let ok = dir.join("libvgpu_cuda.so").is_file() && dir.join("libvgpu_nvml.so").is_file();
    assert!(
        ok,
        "shims missing next to {}: run `cargo build --workspace` first (scripts/test.sh does)",
        dir.display()
    );
    ok
}

fn has_marker(p: &Path) -> bool {
    let b = std::fs::read(p).unwrap();
    b.windows(16).any(|w| w == b"vgpu_shim_marker")
}

fn soname(p: &Path) -> String {
    let out = Command::new("objdump")
        .arg("-p")
        .arg(p)
        .output()
        .expect("objdump (binutils) is needed");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("SONAME")
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default()
}

#[test]
fn install_places_four_names_and_uninstall_removes_them() {
    shims_built();
    let root = temp_root("plain");
    let out = vgpu()
        .args(["install", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lib = root.join("usr/lib/x86_64-linux-gnu");
    for (name, so) in [
        ("libcuda.so.1", "libcuda.so.1"),
        ("libcuda.so", "libcuda.so.1"),
        ("libnvidia-ml.so.1", "libnvidia-ml.so.1"),
        ("libnvidia-ml.so", "libnvidia-ml.so.1"),
    ] {
        let p = lib.join(name);
        assert!(p.is_file(), "{name} missing");
        assert!(has_marker(&p), "{name} is not a vgpu shim");
        assert_eq!(soname(&p), so, "{name}");
    }
    // The .so.1 names are real files, the dev names links to them.
    assert!(!lib
        .join("libcuda.so.1")
        .symlink_metadata()
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read_link(lib.join("libcuda.so")).unwrap(),
        PathBuf::from("libcuda.so.1")
    );

    // Installing again over our own files is fine.
    assert!(vgpu()
        .args(["install", "--root"])
        .arg(&root)
        .status()
        .unwrap()
        .success());

    let out = vgpu()
        .args(["uninstall", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "libcuda.so.1",
        "libcuda.so",
        "libnvidia-ml.so.1",
        "libnvidia-ml.so",
    ] {
        assert!(
            lib.join(name).symlink_metadata().is_err(),
            "{name} left behind"
        );
    }
    // Nothing left to uninstall is an error, not a silent success.
    assert!(!vgpu()
        .args(["uninstall", "--root"])
        .arg(&root)
        .status()
        .unwrap()
        .success());
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn refuses_nvidia_library_then_force_backs_it_up_and_uninstall_restores() {
    shims_built();
    let root = temp_root("force");
    let lib = root.join("usr/lib/x86_64-linux-gnu");
    // A stand-in for NVIDIA's driver: a real file behind the usual link.
    std::fs::write(lib.join("libcuda.so.535.309.01"), b"\x7fELF not vgpu").unwrap();
    std::os::unix::fs::symlink("libcuda.so.535.309.01", lib.join("libcuda.so.1")).unwrap();

    let out = vgpu()
        .args(["install", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "must refuse to replace NVIDIA's libcuda.so.1"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("libcuda.so.1") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_link(lib.join("libcuda.so.1")).unwrap(),
        PathBuf::from("libcuda.so.535.309.01")
    );
    assert!(
        lib.join("libnvidia-ml.so.1").symlink_metadata().is_err(),
        "a refused install must not half-install"
    );

    let out = vgpu()
        .args(["install", "--force", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(has_marker(&lib.join("libcuda.so.1")));
    assert_eq!(
        std::fs::read_link(lib.join("libcuda.so.1.vgpu-backup")).unwrap(),
        PathBuf::from("libcuda.so.535.309.01")
    );

    let out = vgpu()
        .args(["uninstall", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_link(lib.join("libcuda.so.1")).unwrap(),
        PathBuf::from("libcuda.so.535.309.01")
    );
    assert!(lib
        .join("libcuda.so.1.vgpu-backup")
        .symlink_metadata()
        .is_err());
    assert_eq!(
        std::fs::read(lib.join("libcuda.so.535.309.01")).unwrap(),
        b"\x7fELF not vgpu"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn install_with_libdir_outside_root() {
    shims_built();
    let dir = std::env::temp_dir().join(format!("vgpu-install-libdir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = vgpu()
        .args(["install", "--libdir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(has_marker(&dir.join("libnvidia-ml.so.1")));
    assert!(vgpu()
        .args(["uninstall", "--libdir"])
        .arg(&dir)
        .status()
        .unwrap()
        .success());
    let _ = std::fs::remove_dir_all(&dir);
}
