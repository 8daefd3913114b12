//! What `vgpu bench` found, said two ways at once: lines for people as each
//! measurement finishes (the slow ones take minutes, so progress matters),
//! and named records for tools, printed at the end as JSON or TSV.
//!
//! In text mode the lines go to stdout and the records are not printed; in
//! JSON/TSV mode stdout carries only the records and the lines go to stderr,
//! so `vgpu bench --json > figures.json` still shows its progress.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Tsv,
}

/// One record's value.
pub enum Value {
    Num(f64),
    Text(String),
    /// Not measured: skipped or failed (the note says which and why).
    Missing,
}

pub struct Record {
    /// Stable, snake_case: what tools key on.
    pub name: String,
    pub value: Value,
    pub unit: &'static str,
    pub note: String,
}

pub struct Report {
    format: Format,
    records: Vec<Record>,
    /// A measurement that was attempted and failed: the exit status says so.
    failed: bool,
}

impl Report {
    pub fn new(format: Format) -> Report {
        Report {
            format,
            records: Vec::new(),
            failed: false,
        }
    }

    /// A line for people.
    pub fn say(&self, line: &str) {
        if self.format == Format::Text {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
    }

    pub fn num(&mut self, name: &str, value: f64, unit: &'static str) {
        self.push(name, Value::Num(value), unit, "");
    }

    pub fn text(&mut self, name: &str, value: impl Into<String>) {
        self.push(name, Value::Text(value.into()), "", "");
    }

    /// A measurement not made on purpose, or for want of what it needs.
    pub fn skipped(&mut self, name: &str, label: &str, why: &str) {
        self.say(&format!("{label:<29} skipped: {why}"));
        self.push(name, Value::Missing, "", &format!("skipped: {why}"));
    }

    /// A measurement that was attempted and failed.
    pub fn failed(&mut self, name: &str, label: &str, why: &str) {
        self.say(&format!("{label:<29} FAILED: {why}"));
        self.push(name, Value::Missing, "", &format!("failed: {why}"));
        self.failed = true;
    }

    fn push(&mut self, name: &str, value: Value, unit: &'static str, note: &str) {
        self.records.push(Record {
            name: name.to_string(),
            value,
            unit,
            note: note.to_string(),
        });
    }

    /// Prints the records (JSON/TSV) and gives the exit status.
    pub fn finish(self) -> ExitCode {
        match self.format {
            Format::Text => {}
            Format::Json => print!("{}", json(&self.records)),
            Format::Tsv => print!("{}", tsv(&self.records)),
        }
        if self.failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// `{"figures": [{"name", "value", "unit", "note"}, ...]}`; a missing value
/// is `null`.
fn json(records: &[Record]) -> String {
    let mut out = String::from("{\"figures\": [\n");
    for (i, r) in records.iter().enumerate() {
        let value = match &r.value {
            Value::Num(v) if v.is_finite() => format!("{v}"),
            Value::Num(_) | Value::Missing => "null".to_string(),
            Value::Text(t) => json_string(t),
        };
        let _ = writeln!(
            out,
            "  {{\"name\": {}, \"value\": {value}, \"unit\": {}, \"note\": {}}}{}",
            json_string(&r.name),
            json_string(r.unit),
            json_string(&r.note),
            if i + 1 < records.len() { "," } else { "" }
        );
    }
    out.push_str("]}\n");
    out
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A header line, then `name value unit note` per record; tabs and line
/// breaks inside a field become spaces.
fn tsv(records: &[Record]) -> String {
    let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
    let mut out = String::from("name\tvalue\tunit\tnote\n");
    for r in records {
        let value = match &r.value {
            Value::Num(v) => format!("{v}"),
            Value::Text(t) => clean(t),
            Value::Missing => String::new(),
        };
        let _ = writeln!(
            out,
            "{}\t{value}\t{}\t{}",
            clean(&r.name),
            r.unit,
            clean(&r.note)
        );
    }
    out
}

/// The `p`-quantile (0..=1) of `samples`, nearest rank; sorts them.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i.min(samples.len() - 1)]
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        vec![
            Record {
                name: "a".into(),
                value: Value::Num(1.5),
                unit: "us",
                note: String::new(),
            },
            Record {
                name: "cpu".into(),
                value: Value::Text("AMD \"EPYC\"\tx".into()),
                unit: "",
                note: String::new(),
            },
            Record {
                name: "b".into(),
                value: Value::Missing,
                unit: "",
                note: "skipped: no venv".into(),
            },
        ]
    }

    #[test]
    fn json_escapes_and_nulls() {
        let j = json(&sample());
        assert!(j.contains(r#"{"name": "a", "value": 1.5, "unit": "us", "note": ""},"#));
        assert!(j.contains(r#""value": "AMD \"EPYC\"\tx""#), "{j}");
        assert!(j.contains(r#""value": null, "unit": "", "note": "skipped: no venv"}"#));
        // The last record has no trailing comma.
        assert!(j.ends_with("\"skipped: no venv\"}\n]}\n"), "{j}");
    }

    #[test]
    fn tsv_has_four_columns() {
        let t = tsv(&sample());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "name\tvalue\tunit\tnote");
        assert_eq!(lines[1], "a\t1.5\tus\t");
        assert_eq!(lines[2], "cpu\tAMD \"EPYC\" x\t\t");
        assert_eq!(lines[3], "b\t\t\tskipped: no venv");
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let mut s: Vec<Duration> = [5, 1, 4, 2, 3].map(Duration::from_micros).to_vec();
        assert_eq!(percentile(&mut s, 0.5), Duration::from_micros(3));
        assert_eq!(percentile(&mut s, 0.0), Duration::from_micros(1));
        assert_eq!(percentile(&mut s, 1.0), Duration::from_micros(5));
    }
}
