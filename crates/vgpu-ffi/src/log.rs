//! The shims' logger: `VGPU_LOG=error|warn|info|debug|trace` (default warn),
//! to stderr or to `VGPU_LOG_FILE` (both ignored in setuid programs, see
//! [`crate::settings`]). Deliberately tiny: no threads, no global
//! subscriber, nothing done at load time — the level is read on first use.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

const UNSET: u8 = 0;
static LEVEL: AtomicU8 = AtomicU8::new(UNSET);

fn parse_level(s: &str) -> u8 {
    // Accept a tracing-style filter ("vgpu=debug,info"): the most verbose
    // level named anywhere wins, which is what a user turning logs up wants.
    let mut best = Level::Warn as u8;
    for part in s.split(',') {
        let lvl = part
            .rsplit('=')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let v = match lvl.as_str() {
            "error" => Level::Error as u8,
            "warn" | "warning" => Level::Warn as u8,
            "info" => Level::Info as u8,
            "debug" => Level::Debug as u8,
            "trace" => Level::Trace as u8,
            "off" => 0xff,
            _ => continue,
        };
        best = if v == 0xff { v } else { best.max(v) };
    }
    best
}

/// Whether messages at `level` are written.
pub fn enabled(level: Level) -> bool {
    let mut cur = LEVEL.load(Ordering::Relaxed);
    if cur == UNSET {
        cur = crate::settings::var("VGPU_LOG")
            .map(|v| parse_level(&v))
            .unwrap_or(Level::Warn as u8);
        LEVEL.store(cur, Ordering::Relaxed);
    }
    cur != 0xff && level as u8 <= cur
}

#[doc(hidden)]
pub fn write(level: Level, args: std::fmt::Arguments<'_>) {
    let tag = match level {
        Level::Error => "ERROR",
        Level::Warn => "WARN",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
        Level::Trace => "TRACE",
    };
    let line = format!("vgpu[{}] {tag} {args}\n", std::process::id());
    // Never a file in a setuid program (`settings` ignores the variable).
    match crate::settings::var_os("VGPU_LOG_FILE") {
        Some(path) => {
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = f.write_all(line.as_bytes());
            }
        }
        None => {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

/// `vlog!(Level::Debug, "fmt", args..)`: formats only when enabled.
#[macro_export]
macro_rules! vlog {
    ($lvl:expr, $($arg:tt)*) => {
        if $crate::log::enabled($lvl) {
            $crate::log::write($lvl, format_args!($($arg)*));
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(parse_level("debug"), Level::Debug as u8);
        assert_eq!(parse_level("vgpu=trace,info"), Level::Trace as u8);
        assert_eq!(parse_level("nonsense"), Level::Warn as u8);
        assert_eq!(parse_level("off"), 0xff);
    }
}
