//! A launch attribute from its wire form ([`LaunchAttr`]) back to cuda.h's
//! `CUlaunchAttribute`: for the host's driver (the worker) and for an
//! application reading a kernel node's attributes (the guest). The one
//! difference, what an event handle means on each side, is the caller's
//! `event` translation.

use crate::proto::LaunchAttr;
use cuda_types::cuda::{
    CUaccessPolicyWindow, CUaccessProperty, CUclusterSchedulingPolicy, CUevent, CUlaunchAttribute,
    CUlaunchAttributeID, CUlaunchAttributePortableClusterMode, CUlaunchMemSyncDomain,
    CUlaunchMemSyncDomainMap, CUsharedMemoryMode, CUsynchronizationPolicy,
};

impl LaunchAttr {
    /// cuda.h's form; `event` turns a wire event handle into this side's
    /// `CUevent` (its error is returned as it is).
    pub fn to_cuda<E>(
        &self,
        mut event: impl FnMut(u64) -> Result<CUevent, E>,
    ) -> Result<CUlaunchAttribute, E> {
        let mut out = CUlaunchAttribute {
            id: CUlaunchAttributeID(self.tag()),
            ..Default::default()
        };
        let v = &mut out.value;
        match *self {
            LaunchAttr::Ignore {} => {}
            LaunchAttr::AccessPolicyWindow {
                base_ptr,
                num_bytes,
                hit_ratio_bits,
                hit_prop,
                miss_prop,
            } => {
                // A cache hint: it names addresses but touches no memory.
                // A size beyond the address space saturates, which the
                // driver refuses as larger than its window.
                v.accessPolicyWindow = CUaccessPolicyWindow {
                    base_ptr: std::ptr::without_provenance_mut(base_ptr as usize),
                    num_bytes: usize::try_from(num_bytes).unwrap_or(usize::MAX),
                    hitRatio: f32::from_bits(hit_ratio_bits),
                    hitProp: CUaccessProperty(hit_prop),
                    missProp: CUaccessProperty(miss_prop),
                }
            }
            LaunchAttr::Cooperative { value } => v.cooperative = value,
            LaunchAttr::SynchronizationPolicy { policy } => {
                v.syncPolicy = CUsynchronizationPolicy(policy)
            }
            LaunchAttr::ClusterDimension { dim } => {
                v.clusterDim.x = dim[0];
                v.clusterDim.y = dim[1];
                v.clusterDim.z = dim[2];
            }
            LaunchAttr::ClusterSchedulingPolicyPreference { policy } => {
                v.clusterSchedulingPolicyPreference = CUclusterSchedulingPolicy(policy)
            }
            LaunchAttr::ProgrammaticStreamSerialization { allowed } => {
                v.programmaticStreamSerializationAllowed = allowed
            }
            LaunchAttr::ProgrammaticEvent {
                event: e,
                flags,
                trigger_at_block_start,
            } => {
                v.programmaticEvent.event = event(e)?;
                v.programmaticEvent.flags = flags;
                v.programmaticEvent.triggerAtBlockStart = trigger_at_block_start;
            }
            LaunchAttr::Priority { priority } => v.priority = priority,
            LaunchAttr::MemSyncDomainMap {
                default_domain,
                remote_domain,
            } => {
                v.memSyncDomainMap = CUlaunchMemSyncDomainMap {
                    default_: default_domain,
                    remote: remote_domain,
                }
            }
            LaunchAttr::MemSyncDomain { domain } => v.memSyncDomain = CUlaunchMemSyncDomain(domain),
            LaunchAttr::PreferredClusterDimension { dim } => {
                v.preferredClusterDim.x = dim[0];
                v.preferredClusterDim.y = dim[1];
                v.preferredClusterDim.z = dim[2];
            }
            LaunchAttr::LaunchCompletionEvent { event: e, flags } => {
                v.launchCompletionEvent.event = event(e)?;
                v.launchCompletionEvent.flags = flags;
            }
            LaunchAttr::DeviceUpdatableKernelNode { device_updatable } => {
                v.deviceUpdatableKernelNode.deviceUpdatable = device_updatable
            }
            LaunchAttr::PreferredSharedMemoryCarveout { carveout } => {
                v.sharedMemCarveout = carveout
            }
            LaunchAttr::NvlinkUtilCentricScheduling { value } => {
                v.nvlinkUtilCentricScheduling = value
            }
            LaunchAttr::PortableClusterSizeMode { mode } => {
                v.portableClusterSizeMode = CUlaunchAttributePortableClusterMode(mode)
            }
            LaunchAttr::SharedMemoryMode { mode } => v.sharedMemoryMode = CUsharedMemoryMode(mode),
        }
        Ok(out)
    }
}
