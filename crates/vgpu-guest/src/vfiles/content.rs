//! What each virtual file says. Pure functions of the [`VirtualGpu`] and a few
//! facts about this machine, so the layouts can be unit-tested; the formats
//! follow what the NVIDIA kernel module and the Linux PCI core print.

use super::{Bdf, VirtualGpu};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Dir,
    /// Contents and permission bits.
    File(Vec<u8>, u32),
    /// Symlink target, written exactly as the real sysfs link reads.
    Link(String),
}

/// One node of the private tree; `path` is relative to the private root and
/// mirrors the real absolute path (`proc/driver/nvidia/version`). Parents come
/// before their children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub node: Node,
}

/// Facts about the machine the files should agree with.
#[derive(Clone, Debug)]
pub struct HostFacts {
    /// `/sys/devices/system/cpu/online`, e.g. `0-15`.
    pub online_cpus: String,
}

/// Driver build date printed in the version banner. Fixed, so that the file
/// is identical in every process.
const BUILD_DATE: &str = "Tue Nov 25 00:00:00 UTC 2025";

pub fn proc_version(gpu: &VirtualGpu) -> String {
    format!(
        "NVRM version: NVIDIA UNIX {} Kernel Module  {}  {BUILD_DATE}\n\
         GCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04) \n",
        std::env::consts::ARCH,
        gpu.driver_version
    )
}

/// `/proc/driver/nvidia/params`. The order matters: nvidia-modprobe scans the
/// file with `fscanf("%31[^:]: %u\n")` and stops at the first line it cannot
/// parse, so the Device File keys come early, as in the real module.
pub fn proc_params() -> String {
    const PARAMS: &[(&str, &str)] = &[
        ("ResmanDebugLevel", "4294967295"),
        ("RmLogonRC", "1"),
        ("ModifyDeviceFiles", "1"),
        ("DeviceFileUID", "0"),
        ("DeviceFileGID", "0"),
        ("DeviceFileMode", "438"),
        ("InitializeSystemMemoryAllocations", "1"),
        ("UsePageAttributeTable", "4294967295"),
        ("EnableMSI", "1"),
        ("EnablePCIeGen3", "0"),
        ("MemoryPoolSize", "0"),
        ("KMallocHeapMaxSize", "0"),
        ("VMallocHeapMaxSize", "0"),
        ("IgnoreMMIOCheck", "0"),
        ("EnableStreamMemOPs", "0"),
        ("EnableUserNUMAManagement", "1"),
        ("NvLinkDisable", "0"),
        ("RmProfilingAdminOnly", "1"),
        ("PreserveVideoMemoryAllocations", "0"),
        ("EnableS0ixPowerManagement", "0"),
        ("S0ixPowerManagementVideoMemoryThreshold", "256"),
        ("DynamicPowerManagement", "3"),
        ("DynamicPowerManagementVideoMemoryThreshold", "200"),
        ("RegisterPCIDriver", "1"),
        ("EnablePCIERelaxedOrderingMode", "0"),
        ("EnableResizableBar", "0"),
        ("EnableGpuFirmware", "18"),
        ("EnableGpuFirmwareLogs", "2"),
        ("RmNvlinkBandwidthLinkCount", "0"),
        ("EnableDbgBreakpoint", "0"),
        ("OpenRmEnableUnsupportedGpus", "1"),
        ("DmaRemapPeerMmio", "1"),
        ("ImexChannelCount", "2048"),
        ("CreateImexChannel0", "0"),
        ("GrdmaPciTopoCheckOverride", "0"),
        ("RegistryDwords", "\"\""),
        ("RegistryDwordsPerDevice", "\"\""),
        ("RmMsg", "\"\""),
        ("GpuBlacklist", "\"\""),
        ("TemporaryFilePath", "\"\""),
        ("ExcludedGpus", "\"\""),
    ];
    PARAMS.iter().map(|(k, v)| format!("{k}: {v}\n")).collect()
}

/// DMA addressing the information file reports; Hopper addresses 52 bits.
const DMA_BITS: u32 = 52;

/// `/proc/driver/nvidia/gpus/<bdf>/information`, with the tab layout of
/// nv-procfs.c (tools split on ':' and trim, some match the whole line).
pub fn proc_information(gpu: &VirtualGpu, bdf: &Bdf) -> String {
    format!(
        "Model: \t\t {}\n\
         IRQ:   \t\t {}\n\
         GPU UUID: \t {}\n\
         Video BIOS: \t {}\n\
         Bus Type: \t PCIe\n\
         DMA Size: \t {DMA_BITS} bits\n\
         DMA Mask: \t 0x{:x}\n\
         Bus Location: \t {bdf}\n\
         Device Minor: \t {}\n\
         GPU Firmware: \t {}\n\
         GPU Excluded:\t No\n",
        gpu.name,
        gpu.irq,
        gpu.uuid,
        gpu.vbios_version,
        (1u64 << DMA_BITS) - 1,
        gpu.minor,
        gpu.driver_version,
    )
}

/// Where the BARs sit: BAR0 below 4 GiB, the 64-bit ones high, each aligned to
/// its size as PCI requires.
fn bars(gpu: &VirtualGpu) -> [(u64, u64, u64); 3] {
    const MEM32: u64 = 0x0004_0200; // IORESOURCE_MEM | IORESOURCE_SIZEALIGN
    const MEM64_PREF: u64 = 0x0014_220c; // + PREFETCH | MEM_64, BAR type bits 0xc
    let align = |at: u64, size: u64| {
        if size.is_power_of_two() {
            at.div_ceil(size) * size
        } else {
            at
        }
    };
    let bar0 = 0xfa00_0000;
    let bar1 = align(0x200_0000_0000, gpu.bar1_size);
    let bar3 = align(bar1 + gpu.bar1_size, gpu.bar3_size);
    [
        (bar0, gpu.bar0_size, MEM32),
        (bar1, gpu.bar1_size, MEM64_PREF),
        (bar3, gpu.bar3_size, MEM64_PREF),
    ]
}

/// sysfs `resource`: one `start end flags` line per resource, 13 lines as on
/// a kernel with SR-IOV support (6 BARs, ROM, 6 IOV BARs).
pub fn sys_resource(gpu: &VirtualGpu) -> String {
    let [b0, b1, b3] = bars(gpu);
    let mut lines = [(0u64, 0u64, 0u64); 13];
    for (slot, (start, size, flags)) in [(0, b0), (1, b1), (3, b3)] {
        if size != 0 {
            lines[slot] = (start, start + size - 1, flags);
        }
    }
    lines
        .iter()
        .map(|(s, e, f)| format!("0x{s:016x} 0x{e:016x} 0x{f:016x}\n"))
        .collect()
}

/// The first 256 bytes of configuration space (`config`), enough for tools
/// that read IDs and BARs from it rather than from the text attributes.
pub fn sys_config(gpu: &VirtualGpu) -> Vec<u8> {
    let mut c = vec![0u8; 256];
    let put16 = |c: &mut [u8], at: usize, v: u16| c[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put32 = |c: &mut [u8], at: usize, v: u32| c[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put16(&mut c, 0x00, 0x10de);
    put16(&mut c, 0x02, gpu.pci_device_id);
    put16(&mut c, 0x04, 0x0006); // memory space + bus master
    c[0x08] = gpu.revision;
    c[0x09] = 0x00; // prog-if
    c[0x0a] = 0x02; // 3D controller
    c[0x0b] = 0x03; // display controller
    let [b0, b1, b3] = bars(gpu);
    put32(&mut c, 0x10, b0.0 as u32);
    put32(&mut c, 0x14, (b1.0 as u32) | 0xc);
    put32(&mut c, 0x18, (b1.0 >> 32) as u32);
    put32(&mut c, 0x1c, (b3.0 as u32) | 0xc);
    put32(&mut c, 0x20, (b3.0 >> 32) as u32);
    put16(&mut c, 0x2c, gpu.pci_subsystem_vendor);
    put16(&mut c, 0x2e, gpu.pci_subsystem_device);
    c[0x3c] = gpu.irq as u8;
    c[0x3d] = 1; // INTA
    c
}

pub fn sys_uevent(gpu: &VirtualGpu, bdf: &Bdf) -> String {
    format!(
        "DRIVER=nvidia\nPCI_CLASS=30200\nPCI_ID=10DE:{:04X}\nPCI_SUBSYS_ID={:04X}:{:04X}\n\
         PCI_SLOT_NAME={bdf}\nMODALIAS={}\n",
        gpu.pci_device_id,
        gpu.pci_subsystem_vendor,
        gpu.pci_subsystem_device,
        modalias(gpu)
    )
}

fn modalias(gpu: &VirtualGpu) -> String {
    format!(
        "pci:v000010DEd{:08X}sv{:08X}sd{:08X}bc03sc02i00",
        gpu.pci_device_id, gpu.pci_subsystem_vendor, gpu.pci_subsystem_device
    )
}

/// `local_cpus`: the cpulist as a mask in 32-bit comma-separated groups,
/// most significant first, as the kernel's `%*pb` prints it.
pub fn cpumask(cpulist: &str) -> String {
    let mut cpus = Vec::new();
    for part in cpulist.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
            cpus.extend(a..=b.min(a + 8191));
        }
    }
    let groups = cpus.iter().max().map_or(1, |m| m / 32 + 1);
    let mut words = vec![0u32; groups];
    for c in cpus {
        words[c / 32] |= 1 << (c % 32);
    }
    let s: Vec<String> = words.iter().rev().map(|w| format!("{w:08x}")).collect();
    s.join(",")
}

/// The whole private tree for one GPU.
pub fn entries(gpu: &VirtualGpu, bdf: &Bdf, host: &HostFacts) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut dir = |p: &str| out.push((p.to_owned(), Node::Dir));
    dir("proc");
    dir("proc/driver");
    dir("proc/driver/nvidia");
    dir("proc/driver/nvidia/gpus");
    dir(&format!("proc/driver/nvidia/gpus/{bdf}"));
    dir("sys");
    dir("sys/bus");
    dir("sys/bus/pci");
    dir("sys/bus/pci/devices");
    dir("sys/bus/pci/drivers");
    dir("sys/bus/pci/drivers/nvidia");
    dir("sys/module");
    dir("sys/module/nvidia");
    dir("sys/module/nvidia/drivers");
    dir("sys/devices");
    let dev_rel = bdf.sys_dev_rel();
    let bus_dir = dev_rel.rsplit_once('/').map_or("", |(d, _)| d).to_owned();
    dir(&bus_dir);
    dir(&dev_rel);

    let ro = 0o444;
    let mut file = |p: String, s: String| out.push((p, Node::File(s.into_bytes(), ro)));
    file("proc/driver/nvidia/version".into(), proc_version(gpu));
    file("proc/driver/nvidia/params".into(), proc_params());
    file(
        "proc/driver/nvidia/registry".into(),
        "Binary: \"\"\n".into(),
    );
    let gpudir = format!("proc/driver/nvidia/gpus/{bdf}");
    file(format!("{gpudir}/information"), proc_information(gpu, bdf));
    file(
        format!("{gpudir}/power"),
        "Runtime D3 status:          Not supported\nVideo Memory:               Active\n".into(),
    );
    file(
        "sys/module/nvidia/version".into(),
        format!("{}\n", gpu.driver_version),
    );
    file("sys/module/nvidia/initstate".into(), "live\n".into());

    let attrs: Vec<(&str, String)> = vec![
        ("vendor", "0x10de".into()),
        ("device", format!("0x{:04x}", gpu.pci_device_id)),
        (
            "subsystem_vendor",
            format!("0x{:04x}", gpu.pci_subsystem_vendor),
        ),
        (
            "subsystem_device",
            format!("0x{:04x}", gpu.pci_subsystem_device),
        ),
        ("class", "0x030200".into()),
        ("revision", format!("0x{:02x}", gpu.revision)),
        ("numa_node", gpu.numa_node.to_string()),
        ("local_cpulist", host.online_cpus.trim().to_owned()),
        ("local_cpus", cpumask(&host.online_cpus)),
        ("irq", gpu.irq.to_string()),
        ("enable", "1".into()),
        ("current_link_speed", gpu.link_speed.clone()),
        ("current_link_width", gpu.link_width.to_string()),
        ("max_link_speed", gpu.link_speed.clone()),
        ("max_link_width", gpu.link_width.to_string()),
        ("dma_mask_bits", DMA_BITS.to_string()),
        ("consistent_dma_mask_bits", DMA_BITS.to_string()),
        ("msi_bus", "1".into()),
        ("d3cold_allowed", "1".into()),
        ("power_state", "D0".into()),
        ("broken_parity_status", "0".into()),
        ("ari_enabled", "0".into()),
        ("driver_override", "(null)".into()),
        ("modalias", modalias(gpu)),
    ];
    for (name, value) in attrs {
        file(format!("{dev_rel}/{name}"), format!("{value}\n"));
    }
    // These two end with their own newlines.
    file(format!("{dev_rel}/resource"), sys_resource(gpu));
    file(format!("{dev_rel}/uevent"), sys_uevent(gpu, bdf));
    out.push((
        format!("{dev_rel}/config"),
        Node::File(sys_config(gpu), 0o644),
    ));

    // Relative links, spelled as the kernel spells them, so readlink answers
    // what real sysfs answers and they resolve inside the private tree.
    let mut link = |p: String, t: String| out.push((p, Node::Link(t)));
    let up_to_sys = |rel: &str| "../".repeat(rel.matches('/').count());
    let from_dev = up_to_sys(&dev_rel);
    link(
        format!("{dev_rel}/driver"),
        format!("{from_dev}bus/pci/drivers/nvidia"),
    );
    link(format!("{dev_rel}/subsystem"), format!("{from_dev}bus/pci"));
    link(
        format!("sys/bus/pci/devices/{bdf}"),
        format!("../../../{}", &dev_rel[4..]),
    );
    link(
        format!("sys/bus/pci/drivers/nvidia/{bdf}"),
        format!("../../../../{}", &dev_rel[4..]),
    );
    link(
        "sys/bus/pci/drivers/nvidia/module".into(),
        "../../../../module/nvidia".into(),
    );
    link(
        "sys/module/nvidia/drivers/pci:nvidia".into(),
        "../../../bus/pci/drivers/nvidia".into(),
    );

    out.into_iter()
        .map(|(path, node)| Entry { path, node })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (VirtualGpu, Vec<Entry>) {
        let gpu = VirtualGpu::test_h100();
        let bdf = Bdf::parse(&gpu.bdf).unwrap();
        let host = HostFacts {
            online_cpus: "0-1\n".into(),
        };
        let e = entries(&gpu, &bdf, &host);
        (gpu, e)
    }

    fn text<'a>(e: &'a [Entry], p: &str) -> &'a str {
        match &e
            .iter()
            .find(|x| x.path == p)
            .unwrap_or_else(|| panic!("{p}"))
            .node
        {
            Node::File(b, _) => std::str::from_utf8(b).unwrap(),
            n => panic!("{p}: {n:?}"),
        }
    }

    fn link<'a>(e: &'a [Entry], p: &str) -> &'a str {
        match &e.iter().find(|x| x.path == p).unwrap().node {
            Node::Link(t) => t,
            n => panic!("{p}: {n:?}"),
        }
    }

    #[test]
    fn version_banner() {
        let (_, e) = tree();
        let v = text(&e, "proc/driver/nvidia/version");
        let first = v.lines().next().unwrap();
        assert!(first.starts_with("NVRM version: NVIDIA UNIX "), "{first}");
        assert!(first.contains(" Kernel Module  590.48.01  "), "{first}");
        assert!(v
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("GCC version:  gcc version "));
        assert_eq!(text(&e, "sys/module/nvidia/version"), "590.48.01\n");
    }

    #[test]
    fn information_layout() {
        let (_, e) = tree();
        let info = text(&e, "proc/driver/nvidia/gpus/0000:00:05.0/information");
        let lines: Vec<&str> = info.lines().collect();
        assert_eq!(lines[0], "Model: \t\t NVIDIA H100 PCIe");
        assert_eq!(lines[1], "IRQ:   \t\t 150");
        assert_eq!(
            lines[2],
            "GPU UUID: \t GPU-6b1e3c2a-91f4-4d8e-b7a0-5c2f8e41d937"
        );
        assert_eq!(lines[3], "Video BIOS: \t 96.00.99.00.01");
        assert_eq!(lines[4], "Bus Type: \t PCIe");
        assert_eq!(lines[5], "DMA Size: \t 52 bits");
        assert_eq!(lines[6], "DMA Mask: \t 0xfffffffffffff");
        assert_eq!(lines[7], "Bus Location: \t 0000:00:05.0");
        assert_eq!(lines[8], "Device Minor: \t 0");
        assert_eq!(*lines.last().unwrap(), "GPU Excluded:\t No");
    }

    #[test]
    fn params_parse_like_nvidia_modprobe() {
        // Every line up to DeviceFileMode must be `name: unsigned`.
        let p = proc_params();
        let mut seen = Vec::new();
        for line in p.lines() {
            let (k, v) = line.split_once(": ").unwrap();
            if v.parse::<u32>().is_err() || k.len() > 31 {
                break;
            }
            seen.push(k);
        }
        for k in [
            "ModifyDeviceFiles",
            "DeviceFileUID",
            "DeviceFileGID",
            "DeviceFileMode",
        ] {
            assert!(seen.contains(&k), "{k} unreachable by fscanf");
        }
    }

    #[test]
    fn pci_attributes() {
        let (_, e) = tree();
        let d = "sys/devices/pci0000:00/0000:00:05.0";
        assert_eq!(text(&e, &format!("{d}/vendor")), "0x10de\n");
        assert_eq!(text(&e, &format!("{d}/device")), "0x2331\n");
        assert_eq!(text(&e, &format!("{d}/subsystem_vendor")), "0x10de\n");
        assert_eq!(text(&e, &format!("{d}/subsystem_device")), "0x16c1\n");
        assert_eq!(text(&e, &format!("{d}/class")), "0x030200\n");
        assert_eq!(text(&e, &format!("{d}/revision")), "0xa1\n");
        assert_eq!(text(&e, &format!("{d}/numa_node")), "-1\n");
        assert_eq!(text(&e, &format!("{d}/local_cpulist")), "0-1\n");
        assert_eq!(text(&e, &format!("{d}/local_cpus")), "00000003\n");
        assert_eq!(
            text(&e, &format!("{d}/current_link_speed")),
            "32.0 GT/s PCIe\n"
        );
        assert_eq!(text(&e, &format!("{d}/max_link_width")), "16\n");
        let ue = text(&e, &format!("{d}/uevent"));
        assert_eq!(
            ue,
            "DRIVER=nvidia\nPCI_CLASS=30200\nPCI_ID=10DE:2331\nPCI_SUBSYS_ID=10DE:16C1\n\
             PCI_SLOT_NAME=0000:00:05.0\n\
             MODALIAS=pci:v000010DEd00002331sv000010DEsd000016C1bc03sc02i00\n"
        );
        let res: Vec<&str> = text(&e, &format!("{d}/resource")).lines().collect();
        assert_eq!(res.len(), 13);
        assert_eq!(
            res[0],
            "0x00000000fa000000 0x00000000faffffff 0x0000000000040200"
        );
        assert_eq!(
            res[1],
            "0x0000020000000000 0x0000021fffffffff 0x000000000014220c"
        );
        assert_eq!(
            res[2],
            "0x0000000000000000 0x0000000000000000 0x0000000000000000"
        );
        assert_eq!(
            res[3],
            "0x0000022000000000 0x0000022001ffffff 0x000000000014220c"
        );
    }

    #[test]
    fn config_space() {
        let gpu = VirtualGpu::test_h100();
        let c = sys_config(&gpu);
        assert_eq!(c.len(), 256);
        assert_eq!(&c[0..4], &[0xde, 0x10, 0x31, 0x23]);
        assert_eq!(&c[0x09..0x0c], &[0, 2, 3]);
        assert_eq!(&c[0x2c..0x30], &[0xde, 0x10, 0xc1, 0x16]);
    }

    #[test]
    fn links_resolve_within_the_tree() {
        let (_, e) = tree();
        let d = "sys/devices/pci0000:00/0000:00:05.0";
        assert_eq!(
            link(&e, &format!("{d}/driver")),
            "../../../bus/pci/drivers/nvidia"
        );
        assert_eq!(
            link(&e, "sys/bus/pci/devices/0000:00:05.0"),
            "../../../devices/pci0000:00/0000:00:05.0"
        );
        assert_eq!(
            link(&e, "sys/bus/pci/drivers/nvidia/0000:00:05.0"),
            "../../../../devices/pci0000:00/0000:00:05.0"
        );
        // Resolve every link lexically against its own directory and check
        // the target is in the tree.
        for en in &e {
            if let Node::Link(t) = &en.node {
                let mut parts: Vec<&str> = en.path.split('/').collect();
                parts.pop();
                for c in t.split('/') {
                    if c == ".." {
                        parts.pop().expect("link leaves the root");
                    } else {
                        parts.push(c);
                    }
                }
                let target = parts.join("/");
                assert!(
                    e.iter().any(|x| x.path == target),
                    "{} -> {target}",
                    en.path
                );
            }
        }
    }

    #[test]
    fn parents_precede_children() {
        let (_, e) = tree();
        for (i, en) in e.iter().enumerate() {
            if let Some((parent, _)) = en.path.rsplit_once('/') {
                let p = e
                    .iter()
                    .position(|x| x.path == parent)
                    .unwrap_or_else(|| panic!("{parent}"));
                assert!(p < i, "{}", en.path);
                assert_eq!(e[p].node, Node::Dir);
            }
        }
    }

    #[test]
    fn cpumasks() {
        assert_eq!(cpumask("0"), "00000001");
        assert_eq!(cpumask("0-1"), "00000003");
        assert_eq!(cpumask("0-3,8"), "0000010f");
        assert_eq!(cpumask("0-39"), "000000ff,ffffffff");
        assert_eq!(cpumask(""), "00000000");
    }
}
