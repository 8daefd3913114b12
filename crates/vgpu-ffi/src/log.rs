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

/// Lines one `vlog!` statement may write per [`WINDOW`]; the rest are
/// counted and summarized ("N more like this") when the window ends, so a
/// failing call repeated in a loop cannot flood the log.
pub const BURST: u32 = 20;
pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

struct Site {
    at: &'static str,
    since: std::time::Instant,
    written: u32,
    suppressed: u64,
}

/// Per-statement counts; a handful of statements ever fire, so a list.
static SITES: parking_lot::Mutex<Vec<Site>> = parking_lot::Mutex::new(Vec::new());

/// Whether statement `at` may write now, and the summary of what it
/// dropped in its last window, if anything.
fn admit(at: &'static str) -> (bool, Option<String>) {
    let now = std::time::Instant::now();
    let mut sites = SITES.lock();
    let i = match sites
        .iter()
        .position(|s| std::ptr::eq(s.at, at) || s.at == at)
    {
        Some(i) => i,
        None => {
            sites.push(Site {
                at,
                since: now,
                written: 0,
                suppressed: 0,
            });
            sites.len() - 1
        }
    };
    let s = &mut sites[i];
    let mut summary = None;
    if now.duration_since(s.since) >= WINDOW {
        if s.suppressed > 0 {
            summary = Some(format!(
                "{} more like this ({at}) in {:.0}s",
                s.suppressed,
                now.duration_since(s.since).as_secs_f64()
            ));
        }
        s.since = now;
        s.written = 0;
        s.suppressed = 0;
    }
    if s.written < BURST {
        s.written += 1;
        (true, summary)
    } else {
        s.suppressed += 1;
        (false, summary)
    }
}

/// `s` with every control character escaped (`\n`, `\x1b`): a message can
/// hold strings from the host or the environment, and must stay one line.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push('\t'),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.into()
}

#[doc(hidden)]
pub fn write(at: &'static str, level: Level, args: std::fmt::Arguments<'_>) {
    let (ok, summary) = admit(at);
    if let Some(s) = summary {
        emit(Level::Warn, &s);
    }
    if ok {
        emit(level, &args.to_string());
    }
}

fn emit(level: Level, msg: &str) {
    let tag = match level {
        Level::Error => "ERROR",
        Level::Warn => "WARN",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
        Level::Trace => "TRACE",
    };
    let line = format!("vgpu[{}] {tag} {}\n", std::process::id(), escape(msg));
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

/// `vlog!(Level::Debug, "fmt", args..)`: formats only when enabled; each
/// statement is rate-limited ([`BURST`] per [`WINDOW`]).
#[macro_export]
macro_rules! vlog {
    ($lvl:expr, $($arg:tt)*) => {
        if $crate::log::enabled($lvl) {
            $crate::log::write(concat!(file!(), ":", line!()), $lvl, format_args!($($arg)*));
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

    #[test]
    fn lines_stay_lines() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a\nWARN forged\x1b[0m"), "a\\nWARN forged\\x1b[0m");
    }

    #[test]
    fn repeated_statements_are_limited() {
        let at = "test-site";
        let written = (0..1000).filter(|_| admit(at).0).count();
        assert_eq!(written, BURST as usize);
    }
}
