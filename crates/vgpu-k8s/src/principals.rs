//! Allocations as principals of the daemon: one file per allocation in its
//! `--guests-dir` (`<name>.conf`, `key = value` lines: a fresh random
//! `token` and the share's limits; docs/security.md), and a ledger in the
//! plugin's state directory of which devices each file stands for.
//!
//! The device plugin API has no "deallocate": the kubelet only ever hands a
//! device to a new container once its previous container is gone. So when
//! devices are allocated, every earlier principal holding any of them
//! belongs to a finished container and is removed — its token stops
//! working — before the new one is written.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Principal files this plugin writes start with this, so an operator's
/// own files in the same directory are never touched.
pub const PREFIX: &str = "k8s-";

/// Limit keys a principal file may carry besides `token` and `uid`; the
/// daemon refuses a file with any other key, so `--limit` is checked
/// against this list before a file is written.
pub const LIMIT_KEYS: &[&str] = &[
    "memory_mib",
    "connections",
    "contexts",
    "streams",
    "events",
    "modules",
    "kernel_time_ms",
];

/// A principal written for one allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The file stem, which the daemon uses as the principal's name.
    pub name: String,
    pub token: String,
}

pub struct Principals {
    guests_dir: PathBuf,
    state_dir: PathBuf,
}

/// 32 random bytes from the kernel, hex-encoded.
pub fn random_token() -> io::Result<String> {
    let mut b = [0u8; 32];
    fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A device ID made into (part of) a principal name: the daemon allows
/// A-Z a-z 0-9 . _ - and at most 64 bytes.
fn principal_name(first_device: &str) -> String {
    let mut n: String = format!("{PREFIX}{first_device}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    n.truncate(64);
    n
}

/// Writes `text` to `dir/name` through a temporary file and a rename, so
/// the daemon never reads half a file, readable by the owner only (it
/// holds a token).
fn write_atomic(dir: &Path, name: &str, text: &str) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))
}

impl Principals {
    pub fn new(guests_dir: PathBuf, state_dir: PathBuf) -> io::Result<Principals> {
        fs::create_dir_all(&guests_dir)?;
        fs::create_dir_all(&state_dir)?;
        Ok(Principals {
            guests_dir,
            state_dir,
        })
    }

    pub fn guests_dir(&self) -> &Path {
        &self.guests_dir
    }

    /// The ledger: every principal this plugin wrote and its devices.
    pub fn ledger(&self) -> io::Result<Vec<(String, BTreeSet<String>)>> {
        let mut v = Vec::new();
        for e in fs::read_dir(&self.state_dir)? {
            let e = e?;
            let fname = e.file_name().to_string_lossy().into_owned();
            let Some(name) = fname.strip_suffix(".devices") else {
                continue;
            };
            if !name.starts_with(PREFIX) {
                continue;
            }
            let text = fs::read_to_string(e.path())?;
            let devs = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            v.push((name.to_string(), devs));
        }
        v.sort();
        Ok(v)
    }

    /// How long ago the principal `name` was written.
    pub fn age(&self, name: &str) -> Option<std::time::Duration> {
        let m = fs::metadata(self.state_dir.join(format!("{name}.devices"))).ok()?;
        m.modified().ok()?.elapsed().ok()
    }

    /// Removes a principal's file and its ledger entry.
    pub fn revoke(&self, name: &str) -> io::Result<()> {
        for p in [
            self.guests_dir.join(format!("{name}.conf")),
            self.state_dir.join(format!("{name}.devices")),
        ] {
            match fs::remove_file(&p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// A new principal for `devices` (non-empty) with `limits`: earlier
    /// principals holding any of these devices are revoked first.
    pub fn grant(
        &self,
        devices: &[String],
        limits: &[(String, u64)],
        comment: &str,
    ) -> io::Result<Grant> {
        let mut sorted: Vec<&String> = devices.iter().collect();
        sorted.sort();
        sorted.dedup();
        let first = sorted
            .first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no devices"))?;
        // The daemon refuses a file with a key it does not know: check
        // before anything is revoked or written.
        if let Some((k, _)) = limits
            .iter()
            .find(|(k, _)| !LIMIT_KEYS.contains(&k.as_str()))
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown limit {k:?}; known: {}", LIMIT_KEYS.join(", ")),
            ));
        }
        for (name, held) in self.ledger()? {
            if sorted.iter().any(|d| held.contains(*d)) {
                tracing::info!(
                    "revoking principal {name}: its devices were allocated again, \
                     so its container is gone"
                );
                self.revoke(&name)?;
            }
        }
        let name = principal_name(first);
        let token = random_token()?;
        let mut conf = format!("# {comment}\n# devices: ");
        conf.push_str(
            &sorted
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(","),
        );
        conf.push_str(&format!("\ntoken = {token}\n"));
        for (k, v) in limits {
            conf.push_str(&format!("{k} = {v}\n"));
        }
        // The ledger first: a crash in between leaves an entry without a
        // file (harmless), never a token nobody would revoke.
        let ledger: String = sorted.iter().map(|d| format!("{d}\n")).collect();
        write_atomic(&self.state_dir, &format!("{name}.devices"), &ledger)?;
        write_atomic(&self.guests_dir, &format!("{name}.conf"), &conf)?;
        Ok(Grant { name, token })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(tag: &str) -> (PathBuf, Principals) {
        let d = std::env::temp_dir().join(format!("vgpu-k8s-pr-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        let p = Principals::new(d.join("guests"), d.join("state")).unwrap();
        (d, p)
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn grant_writes_a_private_file_and_revokes_overlaps() {
        let (d, p) = dirs("grant");
        let a = p
            .grant(
                &ids(&["gpu0-share1", "gpu0-share0"]),
                &[("memory_mib".into(), 512)],
                "t",
            )
            .unwrap();
        assert_eq!(a.name, "k8s-gpu0-share0");
        let f = d.join("guests/k8s-gpu0-share0.conf");
        let text = fs::read_to_string(&f).unwrap();
        assert!(text.contains(&format!("\ntoken = {}\n", a.token)), "{text}");
        assert!(text.contains("\nmemory_mib = 512\n"), "{text}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let b = p.grant(&ids(&["gpu0-share2"]), &[], "t").unwrap();
        assert_ne!(a.token, b.token);
        assert_eq!(p.ledger().unwrap().len(), 2);
        // share1 again: a's principal (share0+share1) is revoked, b's not.
        p.grant(&ids(&["gpu0-share1"]), &[], "t").unwrap();
        assert!(!f.exists());
        let names: Vec<String> = p.ledger().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["k8s-gpu0-share1", "k8s-gpu0-share2"]);
        // Nothing left behind but the files themselves.
        assert_eq!(fs::read_dir(d.join("guests")).unwrap().count(), 2);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn bad_input_writes_nothing() {
        let (d, p) = dirs("bad");
        assert!(p.grant(&[], &[], "t").is_err());
        assert!(p.grant(&ids(&["x"]), &[("colour".into(), 1)], "t").is_err());
        assert_eq!(fs::read_dir(d.join("guests")).unwrap().count(), 0);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn names_are_what_the_daemon_accepts() {
        assert_eq!(principal_name("a/b c"), "k8s-a_b_c");
        assert_eq!(principal_name(&"x".repeat(100)).len(), 64);
    }
}
