//! The daemon's and workers' log (docs/security.md, "Logs"): what a guest
//! makes the host log can neither flood it nor forge lines in it.
//!
//! - [`RateLimit`]: each log statement (callsite) at INFO and above may
//!   write [`BURST`] lines per [`WINDOW`]; the rest are counted and
//!   summarized as one line, "N more like this", when the window ends.
//!   DEBUG and TRACE, asked for explicitly, are not limited.
//! - [`Escaping`]: every control character of a line but its final
//!   newline is written escaped (`\n`, `\x1b`, ...), so a newline in a
//!   string a guest sent (a kernel name, a build id) cannot start a line.

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::{Duration, Instant, SystemTime};
use tracing::callsite::Identifier;
use tracing::{Level, Metadata};
use tracing_subscriber::layer::{Context, Filter};

/// Lines one statement may write per window.
pub const BURST: u32 = 20;
pub const WINDOW: Duration = Duration::from_secs(10);

struct Seen {
    since: Instant,
    written: u32,
    suppressed: u64,
    what: String,
}

/// A per-callsite rate limit (see the module docs).
pub struct RateLimit {
    seen: std::sync::Mutex<HashMap<Identifier, Seen>>,
    write: fn(&str),
}

impl RateLimit {
    /// Summaries are written with `write` (a whole line, newline included).
    pub fn new(write: fn(&str)) -> RateLimit {
        RateLimit {
            seen: std::sync::Mutex::new(HashMap::new()),
            write,
        }
    }

    /// Whether the event may be written now.
    fn admit(&self, meta: &Metadata<'_>) -> bool {
        if *meta.level() > Level::INFO {
            return true;
        }
        let now = Instant::now();
        let mut summaries = Vec::new();
        let ok = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            // Windows that ended: say what they dropped.
            for s in seen.values_mut() {
                if now.duration_since(s.since) >= WINDOW {
                    if s.suppressed > 0 {
                        summaries.push(summary(s));
                    }
                    s.since = now;
                    s.written = 0;
                    s.suppressed = 0;
                }
            }
            let s = seen.entry(meta.callsite()).or_insert_with(|| Seen {
                since: now,
                written: 0,
                suppressed: 0,
                what: format!(
                    "{} ({}:{})",
                    meta.target(),
                    meta.file().unwrap_or("?"),
                    meta.line().unwrap_or(0)
                ),
            });
            if s.written < BURST {
                s.written += 1;
                true
            } else {
                s.suppressed += 1;
                false
            }
        };
        for l in summaries {
            (self.write)(&l);
        }
        ok
    }

    /// Summarizes every count not yet reported (at exit).
    pub fn flush(&self) {
        let lines: Vec<String> = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values_mut()
            .filter(|s| s.suppressed > 0)
            .map(|s| {
                let l = summary(s);
                s.suppressed = 0;
                l
            })
            .collect();
        for l in lines {
            (self.write)(&l);
        }
    }
}

fn summary(s: &Seen) -> String {
    format!(
        "{}  WARN {} more like this in {:.0}s (not written: more than {BURST} per {}s): {}\n",
        timestamp(SystemTime::now()),
        s.suppressed,
        s.since.elapsed().as_secs_f64(),
        WINDOW.as_secs(),
        s.what
    )
}

impl<S> Filter<S> for &'static RateLimit {
    fn enabled(&self, meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        // Spans are not lines.
        !meta.is_event() || self.admit(meta)
    }

    fn callsite_enabled(&self, _meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        // Asked at every event, never cached.
        tracing::subscriber::Interest::sometimes()
    }
}

/// `2026-12-07T00:05:39.788058Z`, as the log's own lines.
fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// A writer that escapes control characters (see the module docs). The
/// formatter writes one event per `write_all`; a final newline is kept.
pub struct Escaping<W>(pub W);

/// `line` with every control character but a final newline escaped.
pub fn escape(line: &[u8]) -> Vec<u8> {
    let (body, end): (&[u8], &[u8]) = match line.split_last() {
        Some((b'\n', body)) => (body, b"\n"),
        _ => (line, b""),
    };
    let mut out = Vec::with_capacity(line.len() + 8);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.push(b'\t'),
            b if b < 0x20 || b == 0x7f => {
                out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
            }
            b => out.push(b),
        }
    }
    out.extend_from_slice(end);
    out
}

impl<W: Write> Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(&escape(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_start_lines() {
        assert_eq!(
            escape(b"a\nb\x1b[31m\tc\n"),
            b"a\\nb\\x1b[31m\tc\n".to_vec()
        );
        assert_eq!(escape(b"plain"), b"plain".to_vec());
        assert_eq!(escape(b"\r\n"), b"\\r\n".to_vec());
    }

    #[test]
    fn timestamps() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_796_601_939_788_058);
        assert_eq!(timestamp(t), "2026-12-07T00:05:39.788058Z");
        assert_eq!(
            timestamp(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000Z"
        );
    }
}
