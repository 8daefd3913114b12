//! Guests as principals: who a connection belongs to, and the limits that
//! principal has (docs/security.md, "Guest principals and limits").
//!
//! A principal is the peer uid on a Unix socket, or the name of the token a
//! guest presents (TCP, vsock, and Unix too when a token is sent). Limits
//! come from the daemon's command-line defaults (`--guest-memory-mib`, ...)
//! overlaid by the principal's file in `--guests-dir`: `DIR/<name>.conf`,
//! `key = value` lines. The directory is re-read when a connection arrives
//! and its mtime changed since the last read, so files can be added and
//! removed while the daemon runs; a malformed file is logged and ignored.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Per-principal limits; `None` = unlimited (or the daemon's default when
/// overlaid). The keys of a guest file and of the worker's `--limits` are
/// [`Limits::KEYS`], one list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Device memory across all the principal's connections, in MiB.
    pub memory_mib: Option<u64>,
    /// Connections (= workers) at once.
    pub connections: Option<u64>,
    /// Contexts across all connections (created and primary).
    pub contexts: Option<u64>,
    pub streams: Option<u64>,
    pub events: Option<u64>,
    /// Modules and libraries.
    pub modules: Option<u64>,
    /// Longest a single launch or synchronization may run, in ms.
    pub kernel_time_ms: Option<u64>,
}

macro_rules! limit_keys {
    ($($k:ident),*) => {
        impl Limits {
            /// Every limit's key, as written in a guest file.
            pub const KEYS: &'static [&'static str] = &[$(stringify!($k)),*];

            fn slot(&mut self, key: &str) -> Option<&mut Option<u64>> {
                match key {
                    $(stringify!($k) => Some(&mut self.$k),)*
                    _ => None,
                }
            }

            /// `self` where set, else `defaults`.
            pub fn over(&self, defaults: &Limits) -> Limits {
                Limits { $($k: self.$k.or(defaults.$k)),* }
            }

            /// `key=value,...` of the limits that are set (the worker's
            /// `--limits`); [`Limits::parse_list`] reads it back.
            pub fn to_list(&self) -> String {
                let mut v = Vec::new();
                $(if let Some(x) = self.$k { v.push(format!("{}={x}", stringify!($k))); })*
                v.join(",")
            }
        }
    };
}
limit_keys!(
    memory_mib,
    connections,
    contexts,
    streams,
    events,
    modules,
    kernel_time_ms
);

impl Limits {
    /// Sets `key` to `value` (a decimal number).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let n: u64 = value
            .parse()
            .map_err(|_| format!("{key} = {value:?}: not a whole number"))?;
        let slot = self
            .slot(key)
            .ok_or_else(|| format!("unknown key {key:?}"))?;
        *slot = Some(n);
        Ok(())
    }

    pub fn parse_list(s: &str) -> Result<Limits, String> {
        let mut l = Limits::default();
        for kv in s.split(',').filter(|x| !x.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("{kv:?}: no `=`"))?;
            l.set(k, v)?;
        }
        Ok(l)
    }

    /// Device memory in bytes.
    pub fn memory_bytes(&self) -> Option<u64> {
        self.memory_mib.map(|m| m.saturating_mul(1 << 20))
    }
}

/// One principal's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestSpec {
    pub name: String,
    pub token: Option<String>,
    pub uid: Option<u32>,
    pub limits: Limits,
}

/// A principal name: a file name stem, so no separators or odd bytes (it
/// appears in logs).
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && !n.starts_with('.')
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Parses one guest file's text.
pub fn parse_conf(name: &str, text: &str) -> Result<GuestSpec, String> {
    if !valid_name(name) {
        return Err(format!(
            "{name:?}: a guest name is 1-64 of A-Z a-z 0-9 . _ -"
        ));
    }
    let mut g = GuestSpec {
        name: name.to_string(),
        token: None,
        uid: None,
        limits: Limits::default(),
    };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |e: String| format!("line {}: {e}", i + 1);
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| at("expected `key = value`".into()))?;
        let (k, v) = (k.trim(), v.trim());
        match k {
            "token" => {
                if v.is_empty() {
                    return Err(at("empty token".into()));
                }
                if g.token.replace(v.to_string()).is_some() {
                    return Err(at("token given twice".into()));
                }
            }
            "uid" => {
                let u = v
                    .parse()
                    .map_err(|_| at(format!("uid = {v:?}: not a uid")))?;
                if g.uid.replace(u).is_some() {
                    return Err(at("uid given twice".into()));
                }
            }
            _ => g.limits.set(k, v).map_err(|e| {
                at(if e.starts_with("unknown key") {
                    format!("{e}; known: token, uid, {}", Limits::KEYS.join(", "))
                } else {
                    e
                })
            })?,
        }
    }
    if g.token.is_none() && g.uid.is_none() {
        return Err("neither `token` nor `uid`: no guest could be this principal".into());
    }
    Ok(g)
}

/// The guests of `--guests-dir`, re-read when the directory changes.
pub struct GuestsDir {
    dir: PathBuf,
    mtime: Option<SystemTime>,
    pub guests: Vec<GuestSpec>,
}

impl GuestsDir {
    pub fn new(dir: PathBuf) -> GuestsDir {
        GuestsDir {
            dir,
            mtime: None,
            guests: Vec::new(),
        }
    }

    /// Re-reads the directory if its mtime changed since the last read
    /// (adding, removing or renaming a file changes it; edit a file by
    /// writing a new one and renaming it over the old).
    pub fn refresh(&mut self) {
        let m = match std::fs::metadata(&self.dir).and_then(|m| m.modified()) {
            Ok(m) => m,
            Err(e) => {
                if self.mtime.is_some() || self.guests.is_empty() {
                    tracing::warn!("--guests-dir {}: {e}; no guest files", self.dir.display());
                }
                self.mtime = None;
                self.guests.clear();
                return;
            }
        };
        if self.mtime == Some(m) {
            return;
        }
        self.mtime = Some(m);
        self.guests = read_dir(&self.dir);
        tracing::info!(
            "--guests-dir {}: {} guest(s): {}",
            self.dir.display(),
            self.guests.len(),
            self.guests
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// Every valid `*.conf` of `dir`, in name order; a malformed file, or one
/// claiming a token or uid an earlier file claims, is logged and ignored.
fn read_dir(dir: &Path) -> Vec<GuestSpec> {
    let mut names: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect(),
        Err(e) => {
            tracing::warn!("--guests-dir {}: {e}", dir.display());
            return Vec::new();
        }
    };
    names.sort();
    let mut out: Vec<GuestSpec> = Vec::new();
    for p in names {
        let name = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("{}: {e}; ignored", p.display());
                continue;
            }
        };
        let g = match parse_conf(&name, &text) {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!("{}: {e}; ignored", p.display());
                continue;
            }
        };
        if let Some(o) = out.iter().find(|o| {
            (g.token.is_some() && o.token == g.token) || (g.uid.is_some() && o.uid == g.uid)
        }) {
            tracing::warn!(
                "{}: its token or uid is already {}'s; ignored",
                p.display(),
                o.name
            );
            continue;
        }
        out.push(g);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_files() {
        let g = parse_conf(
            "alice",
            "# a tenant\n token = s3cret \nuid=1001\nmemory_mib = 512\nconnections=4\n\
             contexts = 2\nstreams=8\nevents=9\nmodules=3\nkernel_time_ms=1500\n",
        )
        .unwrap();
        assert_eq!(g.token.as_deref(), Some("s3cret"));
        assert_eq!(g.uid, Some(1001));
        assert_eq!(g.limits.memory_bytes(), Some(512 << 20));
        assert_eq!(g.limits.kernel_time_ms, Some(1500));
        assert_eq!(Limits::parse_list(&g.limits.to_list()).unwrap(), g.limits);
        for (name, bad) in [
            ("a", "token = x\nbogus = 1\n"),
            ("a", "token = x\nmemory_mib = -1\n"),
            ("a", "memory_mib = 1\n"),
            ("a", "token = \n"),
            ("a", "token = x\ntoken = y\n"),
            ("a", "just words\n"),
            ("../x", "token = x\n"),
            ("", "token = x\n"),
        ] {
            assert!(parse_conf(name, bad).is_err(), "{name}: {bad:?}");
        }
    }

    #[test]
    fn overlay() {
        let d = Limits {
            memory_mib: Some(100),
            connections: Some(8),
            ..Default::default()
        };
        let g = Limits {
            memory_mib: Some(5),
            ..Default::default()
        };
        let o = g.over(&d);
        assert_eq!(
            (o.memory_mib, o.connections, o.streams),
            (Some(5), Some(8), None)
        );
    }

    #[test]
    fn directory_reread_on_change() {
        let dir = std::env::temp_dir().join(format!("vgpu-guests-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.conf"), "token = ta\n").unwrap();
        std::fs::write(dir.join("b.conf"), "token = ta\n").unwrap(); // duplicate
        std::fs::write(dir.join("c.conf"), "nonsense\n").unwrap();
        std::fs::write(dir.join("d.txt"), "token = td\n").unwrap();
        let mut g = GuestsDir::new(dir.clone());
        g.refresh();
        let names: Vec<_> = g.guests.iter().map(|g| g.name.clone()).collect();
        assert_eq!(names, ["a"]);
        std::fs::write(dir.join("e.conf"), "uid = 7\n").unwrap();
        // Coarse-mtime filesystems: make sure the directory's mtime moves.
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        let f = std::fs::File::open(&dir).unwrap();
        f.set_modified(later).unwrap();
        g.refresh();
        assert_eq!(g.guests.len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
