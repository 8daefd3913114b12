//! What the virtual files show: device 0 of the host's inventory, at the
//! guest-visible PCI address, so files, NVML and the driver API agree.

use crate::client;
use crate::vfiles::{self, VirtualGpu};

/// The virtual files' description, from the inventory (connecting if
/// needed). `None` while no host is reachable: the hooks then pass every
/// path through and ask again on the next probe.
pub fn from_inventory() -> Option<VirtualGpu> {
    let inv = client::inventory_nowait()?;
    let d = inv.devices.first()?;
    // NVML packs (device << 16 | vendor) for both ids.
    let sub = d.info.pci_subsystem_id;
    Some(VirtualGpu {
        bdf: d.pci.short(),
        minor: d.info.minor_number,
        name: d.info.name.clone(),
        uuid: d.uuid_string(),
        driver_version: inv.host.system_driver_version.clone(),
        pci_device_id: (d.info.pci_device_id >> 16) as u16,
        pci_subsystem_vendor: (sub & 0xffff) as u16,
        pci_subsystem_device: (sub >> 16) as u16,
        vbios_version: d.info.vbios_version.clone(),
        // Link, IRQ and BAR layout are not part of the inventory; the H100
        // PCIe values are what the software GPU and the real card show.
        ..VirtualGpu::test_h100()
    })
}

/// Makes the virtual files follow the host. Called by each shim when it is
/// loaded: a single atomic store, nothing else happens at load time.
pub fn install() {
    vfiles::set_provider(from_inventory);
}

/// What every shim cdylib carries besides its exports: the marker by which
/// the host refuses to load a shim as its "real" driver (and `vgpu install`
/// tells a shim from NVIDIA's library), the libc hooks (see
/// [`crate::hooks`]), and the load-time registration of the virtual files'
/// provider — one atomic store in `.init_array`, so the hooks know whom to
/// ask before the application's first `open`. Nothing connects or allocates
/// at load time.
#[macro_export]
macro_rules! shim_glue {
    // The CUDA shim: owns the process's connection.
    (owner) => {
        $crate::shim_glue!(@common {});
    };
    // The NVML shim: uses the CUDA shim's connection when that is loaded.
    (delegate) => {
        $crate::shim_glue!(@common { $crate::client::delegate_to_cuda_shim(); });
    };
    (@common { $($at_load:tt)* }) => {
        $crate::__vgpu_export_libc_hooks!();

        #[no_mangle]
        pub static vgpu_shim_marker: u32 = 1;

        /// This shim's copy of the guest client, told apart from the other
        /// shim's (see `vgpu_guest::client::identity`).
        #[no_mangle]
        pub extern "C" fn vgpu_guest_id_v1() -> usize {
            $crate::client::identity()
        }

        /// The connection, offered to the other shim of this process
        /// (`vgpu_guest::client::SharedCall`).
        ///
        /// # Safety
        /// `payload` is valid for `len` bytes.
        #[no_mangle]
        pub unsafe extern "C" fn vgpu_guest_call_v1(
            op: u16,
            flags: u16,
            payload: *const u8,
            len: usize,
            sink: extern "C" fn(*mut ::std::ffi::c_void, *const u8, usize),
            ctx: *mut ::std::ffi::c_void,
        ) -> u32 {
            // SAFETY: forwarded caller contract.
            unsafe { $crate::client::serve_shared(op, flags, payload, len, sink, ctx) }
        }

        #[used]
        #[link_section = ".init_array"]
        static VGPU_AT_LOAD: extern "C" fn() = {
            extern "C" fn at_load() {
                $crate::provider::install();
                $($at_load)*
            }
            at_load
        };
    };
}
