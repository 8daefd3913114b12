//! Guest settings, read from the environment when the first connection is
//! made (never at load time).

use std::fmt;
use std::time::Duration;
use vgpu_transport::endpoint::DEFAULT_ENDPOINT;
use vgpu_transport::Endpoint;

pub const DEFAULT_PCI_BUS_ID: &str = "0000:00:05.0";

/// How long the host may take to initialize its driver (`VGPU_INIT_TIMEOUT`,
/// seconds) before the guest reports no GPU: generous, because a cold host
/// (no persistence mode, eight GPUs) can spend many seconds in cuInit and
/// NVML's start-up. The handshake itself stays short: it only asks whether
/// a host is there.
pub const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(60);
pub const INIT_TIMEOUT_ENV: &str = "VGPU_INIT_TIMEOUT";

/// How long one call may wait for the host's answer (`VGPU_CALL_TIMEOUT`,
/// seconds; 0: no limit) before the session is lost: generous, since a
/// synchronization legitimately waits for the kernels before it.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(1800);
pub const CALL_TIMEOUT_ENV: &str = "VGPU_CALL_TIMEOUT";

/// A PCI address as the guest shows it everywhere (driver API, NVML, files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciAddress {
    pub domain: u32,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl PciAddress {
    /// Parses `dddd:bb:dd.f` or NVML's `dddddddd:bb:dd.f` (hex), case-insensitive.
    pub fn parse(s: &str) -> Option<PciAddress> {
        let s = s.trim();
        let (domain, rest) = s.split_once(':')?;
        let (bus, rest) = rest.split_once(':')?;
        let (device, function) = rest.split_once('.')?;
        if domain.is_empty()
            || domain.len() > 8
            || bus.len() != 2
            || device.len() != 2
            || function.len() != 1
        {
            return None;
        }
        let device = u8::from_str_radix(device, 16).ok()?;
        let function = u8::from_str_radix(function, 16).ok()?;
        if device > 0x1f || function > 7 {
            return None;
        }
        Some(PciAddress {
            domain: u32::from_str_radix(domain, 16).ok()?,
            bus: u8::from_str_radix(bus, 16).ok()?,
            device,
            function,
        })
    }

    /// `0000:00:05.0`: sysfs, `cuDeviceGetPCIBusId` (upper-case hex there, see
    /// [`PciAddress::cuda_bus_id`]), NVML's `busIdLegacy`.
    pub fn short(&self) -> String {
        format!(
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }

    /// What `cuDeviceGetPCIBusId` writes: `0000:00:05.0` with upper-case hex,
    /// as the real driver prints it.
    pub fn cuda_bus_id(&self) -> String {
        format!(
            "{:04X}:{:02X}:{:02X}.{:X}",
            self.domain, self.bus, self.device, self.function
        )
    }

    /// NVML's `busId`: an 8-digit domain, upper-case hex.
    pub fn nvml_bus_id(&self) -> String {
        format!(
            "{:08X}:{:02X}:{:02X}.{:X}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub endpoint: Endpoint,
    pub token: Option<String>,
    /// Address shown for device 0; further devices take the next device
    /// numbers on the same bus.
    pub pci_address: PciAddress,
    pub connect_timeout: Duration,
    /// The longest wait for the host's inventory (its driver initializing).
    pub init_timeout: Duration,
    /// The longest wait for one call's answer; `None`: no limit.
    pub call_timeout: Option<Duration>,
}

/// A timeout in seconds: a non-negative decimal number, e.g. `90` or `2.5`.
fn parse_seconds(s: &str) -> Option<Duration> {
    let v: f64 = s.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| Duration::from_secs_f64(v))
}

impl Config {
    /// Reads `VGPU_HOST`, `VGPU_TOKEN` / `VGPU_TOKEN_FILE`, `VGPU_PCI_BUS_ID`,
    /// `VGPU_INIT_TIMEOUT`, `VGPU_CALL_TIMEOUT` — none of them in a setuid
    /// program.
    pub fn from_env() -> Result<Config, String> {
        // Every setting through `settings`: none of them in a setuid
        // program.
        use vgpu_ffi::settings::{var, var_os};
        let host = var("VGPU_HOST").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let endpoint: Endpoint = host.parse().map_err(|e| format!("VGPU_HOST: {e}"))?;
        let token = match var("VGPU_TOKEN") {
            Some(t) => Some(t),
            None => match var_os("VGPU_TOKEN_FILE") {
                Some(p) => Some(
                    std::fs::read_to_string(&p)
                        .map_err(|e| format!("VGPU_TOKEN_FILE {}: {e}", p.to_string_lossy()))?
                        .trim()
                        .to_string(),
                ),
                None => None,
            },
        };
        let pci_address = match var("VGPU_PCI_BUS_ID") {
            Some(s) => PciAddress::parse(&s)
                .ok_or_else(|| format!("VGPU_PCI_BUS_ID `{s}`: expected dddd:bb:dd.f"))?,
            // A VM that already has an NVIDIA PCI function (the passed-through
            // or mediated device) shows that address everywhere.
            None => crate::vfiles::detect_real_nvidia_bdf()
                .and_then(|b| PciAddress::parse(&b))
                .unwrap_or_else(|| {
                    PciAddress::parse(DEFAULT_PCI_BUS_ID).expect("default is valid")
                }),
        };
        let init_timeout = match var(INIT_TIMEOUT_ENV) {
            Some(s) => parse_seconds(&s)
                .ok_or_else(|| format!("{INIT_TIMEOUT_ENV} `{s}`: expected seconds, e.g. 90"))?,
            None => DEFAULT_INIT_TIMEOUT,
        };
        let call_timeout = match var(CALL_TIMEOUT_ENV) {
            Some(s) => parse_seconds(&s)
                .ok_or_else(|| format!("{CALL_TIMEOUT_ENV} `{s}`: expected seconds, e.g. 600"))?,
            None => DEFAULT_CALL_TIMEOUT,
        };
        Ok(Config {
            endpoint,
            token,
            pci_address,
            connect_timeout: Duration::from_secs(2),
            init_timeout,
            call_timeout: (!call_timeout.is_zero()).then_some(call_timeout),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_seconds(" 2.5 "), Some(Duration::from_millis(2500)));
        assert_eq!(parse_seconds("0"), Some(Duration::ZERO));
        for bad in ["", "-1", "soon", "inf", "NaN"] {
            assert_eq!(parse_seconds(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn pci_forms() {
        let a = PciAddress::parse("0000:00:05.0").unwrap();
        assert_eq!(
            a,
            PciAddress {
                domain: 0,
                bus: 0,
                device: 5,
                function: 0
            }
        );
        assert_eq!(a.short(), "0000:00:05.0");
        assert_eq!(a.nvml_bus_id(), "00000000:00:05.0");
        let b = PciAddress::parse("00000003:41:1f.7").unwrap();
        assert_eq!(b.cuda_bus_id(), "0003:41:1F.7");
        for bad in [
            "",
            "0000:00:05",
            "0000:0:05.0",
            "0000:00:20.0",
            "0000:00:05.8",
            "x:00:05.0",
        ] {
            assert!(PciAddress::parse(bad).is_none(), "{bad}");
        }
    }
}
