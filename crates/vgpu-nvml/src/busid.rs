//! PCI bus id text as `nvmlDeviceGetHandleByPciBusId` accepts it.
//!
//! NVML documents three forms, all hexadecimal with any number of digits:
//! `domain:bus:device.function`, `domain:bus:device` and `bus:device.function`.
//! In practice callers pass NVML's own `00000000:00:05.0`, sysfs's
//! `0000:00:05.0`, or CUDA's upper-case `0000:00:05.0`.

use vgpu_guest::config::PciAddress;

fn hex(s: &str, max: u32) -> Option<u32> {
    if s.is_empty() || s.len() > 8 {
        return None;
    }
    let v = u32::from_str_radix(s, 16).ok()?;
    (v <= max).then_some(v)
}

/// Parses any of the accepted forms; a missing domain or function is 0.
pub fn parse(s: &str) -> Option<PciAddress> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    let (domain, bus, last, needs_function) = match parts.as_slice() {
        [d, b, last] => (hex(d, u32::MAX)?, *b, *last, false),
        [b, last] => (0, *b, *last, true),
        _ => return None,
    };
    let (device, function) = match last.split_once('.') {
        Some((d, f)) => (d, hex(f, 7)?),
        None if !needs_function => (last, 0),
        None => return None,
    };
    Some(PciAddress {
        domain,
        bus: hex(bus, 0xff)? as u8,
        device: hex(device, 0x1f)? as u8,
        function: function as u8,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(domain: u32, bus: u8, device: u8, function: u8) -> PciAddress {
        PciAddress {
            domain,
            bus,
            device,
            function,
        }
    }

    #[test]
    fn accepted_forms() {
        let want = addr(0, 0, 5, 0);
        for s in [
            "00000000:00:05.0",
            "0000:00:05.0",
            "0:0:5.0",
            "00:05.0",
            "0000:00:05",
            " 0000:00:05.0\n",
        ] {
            assert_eq!(parse(s), Some(want), "{s}");
        }
        assert_eq!(parse("0000:41:1F.7"), Some(addr(0, 0x41, 0x1f, 7)));
        assert_eq!(parse("0000:41:1f.7"), Some(addr(0, 0x41, 0x1f, 7)));
        assert_eq!(
            parse("0001ABCD:41:1f.7"),
            Some(addr(0x1abcd, 0x41, 0x1f, 7))
        );
    }

    #[test]
    fn rejected_forms() {
        for s in [
            "",
            "05.0",
            "00:05",
            "0000:00:20.0",
            "0000:00:05.8",
            "0000:100:05.0",
            "000000000:00:05.0",
            "0000:00:05.0:1",
            "g000:00:05.0",
            "0000::05.0",
            "0000:00:.0",
        ] {
            assert_eq!(parse(s), None, "{s}");
        }
    }

    #[test]
    fn both_nvml_spellings_name_the_same_device() {
        let a = addr(0, 0, 7, 0);
        assert_eq!(parse(&a.nvml_bus_id()), Some(a));
        assert_eq!(parse(&a.short()), Some(a));
        assert_eq!(parse(&a.cuda_bus_id()), Some(a));
    }
}
