//! The devices each resource advertises, what an allocation of them is
//! worth, and which devices the plugin prefers — pure functions of the
//! daemon's [`Snapshot`], so the same IDs mean the same thing in
//! `ListAndWatch`, `GetPreferredAllocation` and `Allocate`.

use crate::api;
use crate::daemon::Snapshot;
use std::collections::BTreeMap;

/// The resources this plugin can advertise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `vgpu.dev/gpu`: each GPU in `shares_per_gpu` equal shares.
    Gpu,
    /// `vgpu.dev/gpu-memory`: each GPU's memory in blocks of `memory_unit_mib`.
    GpuMemory,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Gpu, Kind::GpuMemory];

    /// The suffix after the resource domain, and the `--resources` name.
    pub fn short(self) -> &'static str {
        match self {
            Kind::Gpu => "gpu",
            Kind::GpuMemory => "gpu-memory",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.short() == s)
    }

    /// This resource's socket, a file in the kubelet's device-plugins dir.
    pub fn socket_name(self) -> String {
        format!("vgpu-{}.sock", self.short())
    }

    /// The device-ID infix: `gpu<g>-<infix><n>`.
    fn infix(self) -> &'static str {
        match self {
            Kind::Gpu => "share",
            Kind::GpuMemory => "mem",
        }
    }
}

/// How a GPU is cut into devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub shares_per_gpu: u32,
    pub memory_unit_mib: u64,
}

impl Shape {
    /// How many devices of `kind` a GPU with `memory_mib` has.
    pub fn count(&self, kind: Kind, memory_mib: u64) -> u64 {
        match kind {
            Kind::Gpu => self.shares_per_gpu as u64,
            Kind::GpuMemory => memory_mib / self.memory_unit_mib.max(1),
        }
    }

    /// The memory one device of `kind` on a GPU of `memory_mib` stands for.
    pub fn memory_per_device(&self, kind: Kind, memory_mib: u64) -> u64 {
        match kind {
            Kind::Gpu => memory_mib / self.shares_per_gpu.max(1) as u64,
            Kind::GpuMemory => self.memory_unit_mib,
        }
    }
}

pub fn device_id(kind: Kind, gpu: usize, n: u64) -> String {
    format!("gpu{gpu}-{}{n}", kind.infix())
}

/// `(gpu, n)` of a device ID of `kind`; `None` for anything else.
pub fn parse_device_id(kind: Kind, id: &str) -> Option<(usize, u64)> {
    let rest = id.strip_prefix("gpu")?;
    let (g, n) = rest.split_once('-')?;
    let n = n.strip_prefix(kind.infix())?;
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.len() < 12;
    if !ok(g) || !ok(n) {
        return None;
    }
    Some((g.parse().ok()?, n.parse().ok()?))
}

/// The device list of `kind` on a node whose local daemon is `endpoint`.
pub fn local_devices(
    kind: Kind,
    shape: &Shape,
    snap: &Snapshot,
    endpoint: &str,
) -> Vec<api::Device> {
    let health = if snap.is_healthy(endpoint) {
        crate::HEALTHY
    } else {
        crate::UNHEALTHY
    };
    let mut v = Vec::new();
    for g in &snap.gpus {
        for n in 0..shape.count(kind, g.memory_mib) {
            v.push(api::Device {
                id: device_id(kind, g.index, n),
                health: health.to_string(),
                topology: None,
            });
        }
    }
    v
}

/// What an allocation of local devices is: the GPUs it spans (for
/// `CUDA_VISIBLE_DEVICES`) and the memory it is worth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalShare {
    pub gpus: Vec<usize>,
    pub memory_mib: u64,
}

/// Checks every ID against the current device list and adds up the share.
pub fn local_share(
    kind: Kind,
    shape: &Shape,
    snap: &Snapshot,
    ids: &[String],
) -> Result<LocalShare, String> {
    if ids.is_empty() {
        return Err("no devices in the request".into());
    }
    let mut gpus = Vec::new();
    let mut memory_mib = 0u64;
    for id in ids {
        let (g, n) = parse_device_id(kind, id)
            .ok_or_else(|| format!("{id:?} is not a vgpu.dev/{} device", kind.short()))?;
        let gpu = snap
            .gpus
            .iter()
            .find(|x| x.index == g)
            .ok_or_else(|| format!("{id}: the daemon has no GPU {g}"))?;
        if n >= shape.count(kind, gpu.memory_mib) {
            return Err(format!("{id}: GPU {g} has no such device"));
        }
        memory_mib += shape.memory_per_device(kind, gpu.memory_mib);
        if !gpus.contains(&g) {
            gpus.push(g);
        }
    }
    gpus.sort_unstable();
    Ok(LocalShare { gpus, memory_mib })
}

/// The preferred `size` devices out of `available`, `must_include` first:
/// devices are grouped (by GPU, or by GPU host for remote slots) and the
/// request is filled from as few groups as possible, taking the groups
/// `order` ranks first. Returns at most `size` IDs.
pub fn prefer(
    available: &[String],
    must_include: &[String],
    size: usize,
    group_of: impl Fn(&str) -> String,
    order: Order,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for id in must_include {
        if out.len() < size && !out.contains(id) {
            out.push(id.clone());
        }
    }
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for id in available {
        if !out.contains(id) {
            groups.entry(group_of(id)).or_default().push(id.clone());
        }
    }
    // Groups the must-include devices are in come first: one GPU where
    // possible.
    let mine: Vec<String> = out.iter().map(|d| group_of(d)).collect();
    let need = size.saturating_sub(out.len());
    let mut ranked: Vec<(String, Vec<String>)> = groups.into_iter().collect();
    ranked.sort_by_key(|(g, ids)| {
        let fits = ids.len() >= need;
        let size_key = match order {
            // Binpack: the fullest group that still fits, so whole GPUs
            // stay free for large requests.
            Order::Pack => ids.len() as i64,
            // Spread: the group with the most room (remote hosts: the host
            // with capacity).
            Order::Spread => -(ids.len() as i64),
        };
        (!mine.contains(g), !fits, size_key)
    });
    for (_, mut ids) in ranked {
        ids.sort_by_key(|a| natural_key(a));
        for id in ids {
            if out.len() >= size {
                return out;
            }
            out.push(id);
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Pack,
    Spread,
}

/// Sorts `gpu0-share10` after `gpu0-share9`.
fn natural_key(s: &str) -> (String, u64) {
    let digits = s.len() - s.bytes().rev().take_while(u8::is_ascii_digit).count();
    (s[..digits].to_string(), s[digits..].parse().unwrap_or(0))
}

/// The group of a local device: its GPU.
pub fn gpu_of(id: &str) -> String {
    id.split_once('-').map(|(g, _)| g).unwrap_or(id).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::Gpu;

    fn snap(mems: &[u64], healthy: bool) -> Snapshot {
        let mut s = Snapshot {
            gpus: mems
                .iter()
                .enumerate()
                .map(|(index, &memory_mib)| Gpu {
                    index,
                    name: "H100".into(),
                    memory_mib,
                })
                .collect(),
            ..Default::default()
        };
        s.healthy.insert("unix:/d".into(), healthy);
        s
    }

    const SHAPE: Shape = Shape {
        shares_per_gpu: 4,
        memory_unit_mib: 1024,
    };

    #[test]
    fn ids_round_trip_and_reject_others() {
        assert_eq!(device_id(Kind::Gpu, 1, 3), "gpu1-share3");
        assert_eq!(parse_device_id(Kind::Gpu, "gpu1-share3"), Some((1, 3)));
        assert_eq!(
            parse_device_id(Kind::GpuMemory, "gpu0-mem79"),
            Some((0, 79))
        );
        for bad in [
            "gpu1-mem3",
            "gpu-share1",
            "gpux-share1",
            "gpu1-share",
            "gpu1-share1x",
            "",
        ] {
            assert_eq!(parse_device_id(Kind::Gpu, bad), None, "{bad}");
        }
    }

    #[test]
    fn devices_follow_the_daemon() {
        let s = snap(&[81559, 40960], true);
        let d = local_devices(Kind::Gpu, &SHAPE, &s, "unix:/d");
        assert_eq!(d.len(), 8);
        assert!(d.iter().all(|d| d.health == crate::HEALTHY));
        let m = local_devices(Kind::GpuMemory, &SHAPE, &s, "unix:/d");
        assert_eq!(m.len(), 79 + 40);
        let down = local_devices(Kind::Gpu, &SHAPE, &snap(&[81559], false), "unix:/d");
        assert_eq!(down.len(), 4);
        assert!(down.iter().all(|d| d.health == crate::UNHEALTHY));
    }

    #[test]
    fn a_gpu_in_mib_blocks_fits_a_kubelet_message() {
        // docs/kubernetes.md "The device plugin": an 80 GiB GPU in 1 MiB
        // blocks is about 2.1 MB, under gRPC's default 4 MiB; two are not.
        let one = MIB_SHAPE;
        let msg = |n: usize| api::ListAndWatchResponse {
            devices: local_devices(
                Kind::GpuMemory,
                &one,
                &snap(&vec![81920; n], true),
                "unix:/d",
            ),
        };
        let len1 = prost::Message::encoded_len(&msg(1));
        assert!((2_000_000..2_300_000).contains(&len1), "{len1}");
        assert!(prost::Message::encoded_len(&msg(2)) > 4 << 20);
    }

    const MIB_SHAPE: Shape = Shape {
        shares_per_gpu: 4,
        memory_unit_mib: 1,
    };

    #[test]
    fn shares_add_up() {
        let s = snap(&[81920, 40960], true);
        let ids: Vec<String> = ["gpu0-share0", "gpu0-share1", "gpu1-share3"]
            .map(String::from)
            .to_vec();
        let share = local_share(Kind::Gpu, &SHAPE, &s, &ids).unwrap();
        assert_eq!(share.gpus, vec![0, 1]);
        assert_eq!(share.memory_mib, 20480 * 2 + 10240);
        let m = local_share(Kind::GpuMemory, &SHAPE, &s, &["gpu1-mem39".into()]).unwrap();
        assert_eq!(m.memory_mib, 1024);
        assert!(local_share(Kind::GpuMemory, &SHAPE, &s, &["gpu1-mem40".into()]).is_err());
        assert!(local_share(Kind::Gpu, &SHAPE, &s, &["gpu2-share0".into()]).is_err());
        assert!(local_share(Kind::Gpu, &SHAPE, &s, &[]).is_err());
    }

    #[test]
    fn preference_packs_onto_one_gpu() {
        let avail: Vec<String> = [
            "gpu0-share0",
            "gpu0-share1",
            "gpu0-share2",
            "gpu0-share3",
            "gpu1-share2",
            "gpu1-share3",
        ]
        .map(String::from)
        .to_vec();
        // Two fit on GPU 1 (the fuller one): binpack takes them there.
        assert_eq!(
            prefer(&avail, &[], 2, gpu_of, Order::Pack),
            vec!["gpu1-share2", "gpu1-share3"]
        );
        // Three only fit on GPU 0.
        assert_eq!(
            prefer(&avail, &[], 3, gpu_of, Order::Pack),
            vec!["gpu0-share0", "gpu0-share1", "gpu0-share2"]
        );
        // Spread takes the emptiest group.
        assert_eq!(
            prefer(&avail, &[], 1, gpu_of, Order::Spread),
            vec!["gpu0-share0"]
        );
        // A must-include device pulls the rest onto its GPU.
        assert_eq!(
            prefer(&avail, &["gpu0-share3".into()], 2, gpu_of, Order::Pack),
            vec!["gpu0-share3", "gpu0-share0"]
        );
        assert_eq!(prefer(&avail, &[], 9, gpu_of, Order::Pack).len(), 6);
    }
}
