//! Generation speed: llama.cpp (the prebuilt CUDA build the llama tests
//! use) decoding the tiny Q8_0 model through vgpu, against the same
//! llama.cpp's CPU backend on the same model in the same run — the
//! machine's own floor for this work.
//!
//! Both runs are `tests/py/llama_generate.py` (prompt + 16 greedy tokens,
//! a second prompt + 8) from the venv and models `scripts/test-deps.sh
//! llama` installs; the CUDA run goes through the shims exactly as under
//! `vgpu run`, CUDA graphs on (as Ollama builds ggml). The speed is that of
//! the single-token decode steps, from the per-step times the runner
//! prints: one over the median step (the first steps of a CUDA run also
//! capture and instantiate ggml's graphs, and on a shared machine a step
//! now and then waits for a CPU), and the mean for comparison. Prompt
//! steps are left out: the first one is mostly warm-up.
//!
//! Those files live in a source checkout: the checkout this binary was
//! built from, and `${VGPU_CACHE:-<checkout>/.cache}` for the installed
//! parts. Where they are missing the measurement is skipped, saying why.

use crate::cmd::run::{guest_command, LibDir, RunArgs};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const MODEL_FILE: &str = "tiny-q8_0.gguf";

/// What the two runs need; `Err` says why they cannot run here.
pub struct Setup {
    python: PathBuf,
    runner: PathBuf,
    pub model: PathBuf,
}

impl Setup {
    pub fn find() -> Result<Setup, String> {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let runner = repo.join("tests/py/llama_generate.py");
        if !runner.is_file() {
            return Err(format!(
                "{} is missing (not run from the source checkout it was built in)",
                runner.display()
            ));
        }
        let cache = std::env::var_os("VGPU_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo.join(".cache"));
        let venv = cache.join("venv-llama");
        let python = venv.join("bin/python");
        if !(venv.join(".stamp-llama").is_file() && python.is_file()) {
            return Err(format!(
                "no llama venv at {} (scripts/test-deps.sh llama installs it)",
                venv.display()
            ));
        }
        let model = cache.join("llama-models").join(MODEL_FILE);
        if !model.is_file() {
            return Err(format!(
                "no {} (scripts/test-deps.sh llama writes it)",
                model.display()
            ));
        }
        Ok(Setup {
            python,
            runner,
            model,
        })
    }

    fn command(&self, backend: &str) -> Vec<std::ffi::OsString> {
        let mut c: Vec<std::ffi::OsString> = vec![
            self.python.clone().into(),
            self.runner.clone().into(),
            "--model".into(),
            self.model.clone().into(),
        ];
        for a in ["--backend", backend, "--graphs", "on", "--log", "warn"] {
            c.push(a.into());
        }
        c
    }

    /// llama.cpp's CPU backend, no shim anywhere near it.
    pub fn run_cpu(&self, timeout: Duration) -> Result<Generation, String> {
        let argv = self.command("cpu");
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env_remove("LD_LIBRARY_PATH")
            .env_remove("LD_PRELOAD")
            .env_remove("VGPU_HOST");
        run(cmd, timeout)
    }

    /// llama.cpp's CUDA backend as a guest of `host`, as `vgpu run` starts it.
    pub fn run_vgpu(&self, host: &str, timeout: Duration) -> Result<Generation, String> {
        let args = RunArgs {
            host: Some(host.to_string()),
            isolate: false,
            no_preload: false,
            command: self.command("cuda"),
        };
        let libdir = LibDir::create()?;
        let mut cmd = guest_command(&args, &libdir);
        cmd.env("VGPU_LOG", "warn");
        run(cmd, timeout)
    }
}

fn run(mut cmd: Command, timeout: Duration) -> Result<Generation, String> {
    cmd.env("GGML_NO_BACKTRACE", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{}: {e}", cmd.get_program().to_string_lossy()))?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                // Only the child this function started.
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    match status {
        Some(st) if st.success() => Generation::parse(&out),
        Some(st) => Err(format!("{st}: {}", why(&err))),
        None => Err(format!(
            "no result within {} s: {}",
            timeout.as_secs(),
            why(&err)
        )),
    }
}

/// The runner's own error line, else the end of the log.
fn why(stderr: &str) -> String {
    if let Some(l) = stderr.lines().rev().find(|l| l.contains("error")) {
        return l.trim().to_string();
    }
    let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// What one run printed.
#[derive(Debug)]
pub struct Generation {
    /// `description` of the runner's GPU device, if it listed one.
    pub gpu: Option<String>,
    /// Seconds of each single-token decode step, in order.
    pub steps: Vec<f64>,
    pub tokens: String,
    /// The whole run, Python and model load included.
    pub total_s: f64,
}

impl Generation {
    /// One over the median decode step.
    pub fn tokens_per_s(&self) -> f64 {
        let mut s = self.steps.clone();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        1.0 / median.max(1e-9)
    }

    /// Decode steps over their total time.
    pub fn mean_tokens_per_s(&self) -> f64 {
        self.steps.len() as f64 / self.steps.iter().sum::<f64>().max(1e-9)
    }

    /// The runner's `key=value` lines (see tests/py/llama_generate.py).
    fn parse(out: &str) -> Result<Generation, String> {
        let mut g = Generation {
            gpu: None,
            steps: Vec::new(),
            tokens: String::new(),
            total_s: 0.0,
        };
        let mut done = false;
        let num = |line: &str, key: &str| -> Result<f64, String> {
            field(line, key)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("no number {key}= in {line:?}"))
        };
        for line in out.lines() {
            match line.split(' ').next() {
                Some("device") if field(line, "type") == Some("GPU") => {
                    g.gpu = field(line, "description").map(|d| d.trim_matches('"').to_string());
                }
                // One new token: a decode step (the runner prints an int).
                Some("step") if field(line, "decoded") == Some("1") => {
                    g.steps.push(num(line, "seconds")?);
                }
                Some("tokens") => g.tokens = field(line, "value").unwrap_or("").to_string(),
                Some("done") => {
                    g.total_s = num(line, "seconds")?;
                    done = true;
                }
                _ => {}
            }
        }
        if !done || g.steps.is_empty() {
            return Err("the runner printed no decode steps".into());
        }
        Ok(g)
    }
}

/// The value of ` key=` in a runner line: up to the next space, or a whole
/// `"..."` (the runner escapes quotes inside).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[at..];
    if let Some(q) = rest.strip_prefix('"') {
        let end = q.find('"')?;
        return Some(&rest[..end + 2]);
    }
    Some(rest.split(' ').next().unwrap_or(""))
}

/// Where the model is, for the report.
pub fn describe(model: &Path) -> String {
    model.file_name().map_or_else(
        || model.display().to_string(),
        |f| f.to_string_lossy().into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "model file=tiny-q8_0.gguf backend=cuda flash_attn=off graphs=on\n\
        device name=CPU type=CPU description=\"AMD EPYC\"\n\
        device name=CUDA0 type=GPU description=\"NVIDIA H100 PCIe\"\n\
        prompt_1 tokens=1,2\n\
        step index=0 phase=1 decoded=5 token=9 margin=1.0 seconds=0.5 top=9:1.0\n\
        step index=1 phase=1 decoded=1 token=9 margin=1.0 seconds=0.25 top=9:1.0\n\
        step index=2 phase=1 decoded=1 token=8 margin=1.0 seconds=0.25 top=8:1.0\n\
        step index=3 phase=2 decoded=3 token=7 margin=1.0 seconds=0.1 top=7:1.0\n\
        step index=4 phase=2 decoded=1 token=7 margin=1.0 seconds=1.0 top=7:1.0\n\
        tokens value=9,9,8,7\n\
        text value=\"a b\"\n\
        done steps=4 min_margin=1.0 seconds=3.5\n";

    #[test]
    fn decode_steps_median_and_mean() {
        let g = Generation::parse(OUT).unwrap();
        assert_eq!(g.gpu.as_deref(), Some("NVIDIA H100 PCIe"));
        // The prompt steps (5 and 3 tokens) are not decode steps.
        assert_eq!(g.steps, [0.25, 0.25, 1.0]);
        // Median 0.25 s; mean 1.5 s / 3.
        assert_eq!(g.tokens_per_s(), 4.0);
        assert_eq!(g.mean_tokens_per_s(), 2.0);
        assert_eq!(g.tokens, "9,9,8,7");
        assert_eq!(g.total_s, 3.5);
    }

    #[test]
    fn a_run_without_steps_is_an_error() {
        assert!(Generation::parse("done steps=0 min_margin=0 seconds=1\n").is_err());
        assert!(Generation::parse("").is_err());
    }

    #[test]
    fn fields_plain_and_quoted() {
        let l = "device name=CUDA0 type=GPU description=\"NVIDIA H100 PCIe\"";
        assert_eq!(field(l, "type"), Some("GPU"));
        assert_eq!(field(l, "description"), Some("\"NVIDIA H100 PCIe\""));
        assert_eq!(field(l, "missing"), None);
    }
}
