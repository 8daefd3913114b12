//! Live telemetry for NVML: temperature, power, clocks and utilization that
//! follow what the process does with the device and drift slowly over time,
//! so monitoring tools see a plausible board rather than frozen numbers.
//! One set of sensors serves every device of a profile (their memory
//! together warms it): a simplification for multi-device profiles.

use crate::{memory, profile};
use once_cell::sync::Lazy;
use parking_lot::Mutex;
use std::time::{Duration, Instant};

static START: Lazy<Instant> = Lazy::new(Instant::now);

/// Utilization is the busy share of the last second, as NVML samples it.
const PERIOD_NS: u64 = 1_000_000_000;
/// How quickly the board warms under load and cools when idle.
const HEAT_CHARGE_S: f64 = 10.0;
const HEAT_DECAY_S: f64 = 20.0;

fn now_ns() -> u64 {
    START.elapsed().as_nanos() as u64
}

#[derive(Default)]
struct BusyWindow {
    bucket: u64,
    current_ns: u64,
    previous_ns: u64,
}

impl BusyWindow {
    fn roll(&mut self, now: u64) {
        let bucket = now / PERIOD_NS;
        if bucket == self.bucket {
            return;
        }
        self.previous_ns = if bucket == self.bucket + 1 {
            self.current_ns
        } else {
            0
        };
        self.current_ns = 0;
        self.bucket = bucket;
    }

    fn add(&mut self, now: u64, busy_ns: u64) {
        self.roll(now);
        self.current_ns += busy_ns;
    }

    /// Busy percent over the trailing second.
    fn percent(&mut self, now: u64) -> u32 {
        self.roll(now);
        let into = (now % PERIOD_NS) as f64 / PERIOD_NS as f64;
        let busy = self.previous_ns as f64 * (1.0 - into) + self.current_ns as f64;
        ((busy / PERIOD_NS as f64) * 100.0)
            .round()
            .clamp(0.0, 100.0) as u32
    }
}

#[derive(Default)]
struct State {
    kernels: BusyWindow,
    copies: BusyWindow,
    /// 0..1, decaying exponentially from `heat_at_ns`.
    heat: f64,
    heat_at_ns: u64,
}

impl State {
    fn heat_now(&self, now: u64) -> f64 {
        let dt = now.saturating_sub(self.heat_at_ns) as f64 / 1e9;
        self.heat * (-dt / HEAT_DECAY_S).exp()
    }

    fn charge(&mut self, now: u64, busy: Duration) {
        self.heat = (self.heat_now(now) + busy.as_secs_f64() / HEAT_CHARGE_S).min(1.0);
        self.heat_at_ns = now;
    }
}

static STATE: Lazy<Mutex<State>> = Lazy::new(Default::default);

/// Copies and memsets: the memory controller was busy for `busy`.
pub fn record_memory_busy(busy: Duration) {
    let now = now_ns();
    let mut s = STATE.lock();
    s.copies.add(now, busy.as_nanos() as u64);
    s.charge(now, busy);
}

/// Kernels (the interpreter reports here): the SMs were busy for `busy`.
#[allow(dead_code)] // no kernel runs yet; utilization.gpu reads this window
pub fn record_kernel_busy(busy: Duration) {
    let now = now_ns();
    let mut s = STATE.lock();
    s.kernels.add(now, busy.as_nanos() as u64);
    s.charge(now, busy);
}

pub struct Utilization {
    pub gpu: u32,
    pub memory: u32,
}

pub fn utilization() -> Utilization {
    let now = now_ns();
    let mut s = STATE.lock();
    Utilization {
        gpu: s.kernels.percent(now),
        memory: s.copies.percent(now),
    }
}

fn heat() -> f64 {
    STATE.lock().heat_now(now_ns())
}

/// A slow wander in -1..1 so idle readings are not frozen.
fn drift() -> f64 {
    let t = START.elapsed().as_secs_f64() + 17.0;
    let tau = std::f64::consts::TAU;
    0.7 * (tau * t / 600.0).sin() + 0.3 * (tau * t / 97.0).sin()
}

fn memory_fraction() -> f64 {
    let capacity = memory::capacity() as f64 * profile::current().devices() as f64;
    memory::all_device_bytes_in_use() as f64 / capacity
}

/// GPU core temperature in °C: low 30s idle, up to the high 60s under load.
pub fn temperature_c() -> u32 {
    let t = 32.0 + 1.5 * drift() + 5.0 * memory_fraction() + 34.0 * heat();
    t.round().clamp(20.0, 90.0) as u32
}

/// Board power draw in mW.
pub fn power_mw() -> u32 {
    let b = profile::board();
    let p = f64::from(b.idle_power)
        + 1500.0 * drift()
        + 22_000.0 * memory_fraction()
        + 270_000.0 * heat();
    p.round()
        .clamp(f64::from(b.idle_power) / 2.0, f64::from(b.power_limit)) as u32
}

/// Whether the board has left its idle clocks.
pub fn boosted() -> bool {
    heat() > 0.02
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_warms_the_board_and_shows_as_utilization() {
        let (p0, t0) = (power_mw(), temperature_c());
        record_memory_busy(Duration::from_secs(3));
        assert!(utilization().memory > 0);
        assert!(power_mw() > p0 + 50_000, "{} -> {}", p0, power_mw());
        assert!(temperature_c() > t0);
        assert!(boosted());
        assert!(power_mw() <= profile::board().power_limit);
    }

    #[test]
    fn busy_window_rolls_over() {
        let mut w = BusyWindow::default();
        w.add(0, PERIOD_NS / 2);
        assert_eq!(w.percent(PERIOD_NS / 2), 50);
        // Half a second into the next period, half of the previous counts.
        assert_eq!(w.percent(PERIOD_NS + PERIOD_NS / 2), 25);
        assert_eq!(w.percent(5 * PERIOD_NS), 0);
    }
}
