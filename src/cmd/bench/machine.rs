//! The machine the figures were taken on: every figure of `vgpu bench` is
//! relative to it, so the report starts with it.

use std::fs;

pub struct Machine {
    /// `model name` of /proc/cpuinfo (the first CPU's; "unknown" if absent).
    pub cpu_model: String,
    /// Logical CPUs the kernel lists.
    pub cpus: usize,
    /// CPUs this process may use (affinity and cgroup quota).
    pub available: usize,
    pub mem_gib: f64,
    /// 1-minute load average at the start: other work on a shared machine
    /// moves every figure.
    pub load: f64,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let (cpu_model, cpus) = parse_cpuinfo(&cpuinfo);
        let available = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(cpus.max(1));
        let mem_gib = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| mem_total_kib(&m))
            .map_or(0.0, |kib| kib as f64 / (1024.0 * 1024.0));
        let load = fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(f64::NAN);
        Machine {
            cpu_model,
            cpus: cpus.max(available),
            available,
            mem_gib,
            load,
        }
    }
}

/// The first `model name` and the number of `processor` entries.
fn parse_cpuinfo(text: &str) -> (String, usize) {
    let value = |line: &str| line.split_once(':').map(|(_, v)| v.trim().to_string());
    let model = text
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(value)
        .unwrap_or_else(|| "unknown".to_string());
    let cpus = text
        .lines()
        .filter(|l| l.split(':').next().map(str::trim) == Some("processor"))
        .count();
    (model, cpus)
}

fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_model_and_count() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n\n\
                    processor\t: 1\nmodel name\t: AMD EPYC\n";
        assert_eq!(parse_cpuinfo(text), ("AMD EPYC".to_string(), 2));
        assert_eq!(parse_cpuinfo(""), ("unknown".to_string(), 0));
    }

    #[test]
    fn meminfo_total() {
        let text = "MemTotal:       24683772 kB\nMemFree:  1 kB\n";
        assert_eq!(mem_total_kib(text), Some(24683772));
        assert_eq!(mem_total_kib("MemFree: 1 kB\n"), None);
    }
}
