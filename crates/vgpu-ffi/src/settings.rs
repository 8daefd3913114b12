//! The shims' settings from the environment, and the one rule over them:
//! in a secure-execution process (setuid or setgid, or file capabilities:
//! `getauxval(AT_SECURE)`), every `VGPU_*` variable is ignored and the
//! system defaults apply. The environment belongs to the user who started
//! the program, not to the program's owner: honouring `VGPU_LOG_FILE` would
//! let any user make a root program create and write files, and
//! `VGPU_TOKEN_FILE` + `VGPU_HOST` would send a root-only file's contents
//! to a socket of the user's choosing (docs/security.md, "setuid
//! programs").

use std::ffi::OsString;

extern "C" {
    /// glibc's and musl's auxiliary-vector lookup.
    fn getauxval(kind: std::ffi::c_ulong) -> std::ffi::c_ulong;
}

/// `AT_SECURE` of `<elf.h>`.
const AT_SECURE: std::ffi::c_ulong = 23;

/// Whether this process runs in secure-execution mode. No allocation (the
/// virtual-file hooks ask).
pub fn secure_execution() -> bool {
    // SAFETY: getauxval has no preconditions; 0 when the entry is absent.
    unsafe { getauxval(AT_SECURE) != 0 }
}

/// The decision, for a given AT_SECURE value (unit-tested).
fn honoured(name: &str, secure: bool) -> bool {
    !(secure && name.starts_with("VGPU_"))
}

/// A setting from the environment: `None` when unset, and for every
/// `VGPU_*` name in a secure-execution process.
pub fn var_os(name: &str) -> Option<OsString> {
    if !honoured(name, secure_execution()) {
        return None;
    }
    std::env::var_os(name)
}

/// [`var_os`] as UTF-8 (`None` when not valid UTF-8, as `std::env::var`).
pub fn var(name: &str) -> Option<String> {
    var_os(name).and_then(|v| v.into_string().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_processes_ignore_vgpu_settings() {
        assert!(honoured("VGPU_HOST", false));
        assert!(!honoured("VGPU_HOST", true));
        assert!(!honoured("VGPU_LOG_FILE", true));
        assert!(!honoured("VGPU_TOKEN_FILE", true));
        // Other names are not ours to judge.
        assert!(honoured("CUDA_VISIBLE_DEVICES", true));
        // This test process is not setuid.
        assert!(!secure_execution());
        std::env::set_var("VGPU_SETTINGS_TEST", "x");
        assert_eq!(var("VGPU_SETTINGS_TEST").as_deref(), Some("x"));
    }
}
