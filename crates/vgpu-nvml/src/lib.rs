//! `libnvidia-ml.so.1` for a machine without a GPU: every NVML entry point of
//! the pinned header is exported; the ones below answer from the vgpu host
//! (static facts from the inventory fetched at `nvmlInit` — the versions real
//! NVML reports before init from the guest client's session —, live values by
//! one `NvmlQuery` per call), every other one is a NOT_SUPPORTED stub.

use cuda_types::nvml::*;
use device::{Fact, Text};
use query::Link;
use system::Version;
use vgpu_transport::proto::nvml_kind;

mod busid;
mod device;
// nvmlInternalGetExportTable (nvidia-smi; in no header, so exported by hand).
mod export_table;
mod ffi;
mod init;
mod process;
mod query;
mod system;

// The host-refusal marker and the virtual files' provider registration.
vgpu_guest::shim_glue!(delegate);

// One body per family: variants of an entry point (versioned names, the
// same question about another value) are told apart by the bracketed
// constants appended after the C arguments.
cuda_types::with_nvml_functions!(api_macros::export_functions {
    lookup = exported_symbol,
    require = init::require,
    implemented {
        // system.rs
        nvmlSystemGetDriverVersion => system::version[Version::Driver],

        // device.rs: enumeration, lookup, static facts
        nvmlDeviceGetCount => device::count,
        nvmlDeviceGetCount_v2 => device::count,
        nvmlDeviceGetHandleByIndex => device::by_index,
        nvmlDeviceGetHandleByIndex_v2 => device::by_index,
        nvmlDeviceGetHandleByUUID => device::by_uuid,
        nvmlDeviceGetHandleByUUIDV => device::by_uuid_v,
        nvmlDeviceGetHandleByPciBusId => device::by_pci_bus_id,
        nvmlDeviceGetHandleByPciBusId_v2 => device::by_pci_bus_id,
        nvmlDeviceGetHandleBySerial => device::by_serial,
        nvmlDeviceGetName => device::text[Text::Name],
        nvmlDeviceGetUUID => device::text[Text::Uuid],
        nvmlDeviceGetSerial => device::text[Text::Serial],
        nvmlDeviceGetVbiosVersion => device::text[Text::VbiosVersion],
        nvmlDeviceGetIndex => device::fact[Fact::Index],
        nvmlDeviceGetMinorNumber => device::fact[Fact::MinorNumber],
        nvmlDeviceGetBrand => device::fact[Fact::Brand],
        nvmlDeviceGetArchitecture => device::fact[Fact::Architecture],
        nvmlDeviceIsMigDeviceHandle => device::fact[Fact::IsMigDeviceHandle],
        nvmlDeviceGetPciInfo => device::pci_info_v1,
        nvmlDeviceGetPciInfo_v2 => device::pci_info,
        nvmlDeviceGetPciInfo_v3 => device::pci_info,
        nvmlDeviceGetCudaComputeCapability => device::compute_capability,
        nvmlDeviceGetDriverModel => device::driver_model,
        nvmlDeviceGetDriverModel_v2 => device::driver_model,

        // query.rs: live values, asked of the host on every call
        nvmlDeviceGetMemoryInfo => query::memory_info,
        nvmlDeviceGetMemoryInfo_v2 => query::memory_info_v2,
        nvmlDeviceGetTemperature => query::value_of[nvml_kind::TEMPERATURE],
        nvmlDeviceGetTemperatureV => query::temperature_v,
        nvmlDeviceGetTemperatureThreshold => query::value_of[nvml_kind::TEMPERATURE_THRESHOLD],
        nvmlDeviceGetPowerUsage => query::value[nvml_kind::POWER_USAGE],
        nvmlDeviceGetPowerManagementLimit => query::value[nvml_kind::POWER_LIMIT],
        nvmlDeviceGetEnforcedPowerLimit => query::value[nvml_kind::ENFORCED_POWER_LIMIT],
        nvmlDeviceGetPowerManagementDefaultLimit => query::value[nvml_kind::POWER_DEFAULT_LIMIT],
        nvmlDeviceGetPowerManagementLimitConstraints => query::pair[nvml_kind::POWER_LIMIT_CONSTRAINTS],
        nvmlDeviceGetTotalEnergyConsumption => query::value[nvml_kind::TOTAL_ENERGY],
        nvmlDeviceGetUtilizationRates => query::utilization,
        nvmlDeviceGetEncoderUtilization => query::pair[nvml_kind::ENCODER_UTILIZATION],
        nvmlDeviceGetDecoderUtilization => query::pair[nvml_kind::DECODER_UTILIZATION],
        nvmlDeviceGetClockInfo => query::value_of[nvml_kind::CLOCK_INFO],
        nvmlDeviceGetMaxClockInfo => query::value_of[nvml_kind::MAX_CLOCK_INFO],
        nvmlDeviceGetClock => query::value_of2[nvml_kind::CLOCK],
        // nvmlDeviceGetPowerState is the deprecated name of the same query.
        nvmlDeviceGetPerformanceState => query::value[nvml_kind::PERFORMANCE_STATE],
        nvmlDeviceGetPowerState => query::value[nvml_kind::PERFORMANCE_STATE],
        // ...ThrottleReasons is the deprecated name of the same bitmask.
        nvmlDeviceGetCurrentClocksEventReasons => query::value[nvml_kind::CLOCKS_EVENT_REASONS],
        nvmlDeviceGetCurrentClocksThrottleReasons => query::value[nvml_kind::CLOCKS_EVENT_REASONS],
        nvmlDeviceGetFanSpeed => query::value[nvml_kind::FAN_SPEED],
        nvmlDeviceGetFanSpeed_v2 => query::value_of[nvml_kind::FAN_SPEED],
        nvmlDeviceGetPersistenceMode => query::value[nvml_kind::PERSISTENCE_MODE],
        nvmlDeviceGetComputeMode => query::value[nvml_kind::COMPUTE_MODE],
        nvmlDeviceGetMigMode => query::pair[nvml_kind::MIG_MODE],
        nvmlDeviceGetDisplayMode => query::value[nvml_kind::DISPLAY_MODE],
        nvmlDeviceGetDisplayActive => query::value[nvml_kind::DISPLAY_ACTIVE],
        nvmlDeviceGetEccMode => query::pair[nvml_kind::ECC_MODE],
        nvmlDeviceGetTotalEccErrors => query::value_of2[nvml_kind::TOTAL_ECC_ERRORS],
        nvmlDeviceGetPcieThroughput => query::value_of[nvml_kind::PCIE_THROUGHPUT],
        nvmlDeviceGetCurrPcieLinkGeneration => query::pcie_link[Link::CurrGeneration],
        nvmlDeviceGetMaxPcieLinkGeneration => query::pcie_link[Link::MaxGeneration],
        nvmlDeviceGetCurrPcieLinkWidth => query::pcie_link[Link::CurrWidth],
        nvmlDeviceGetMaxPcieLinkWidth => query::pcie_link[Link::MaxWidth],

        // process.rs: the struct layout follows from each prototype
        nvmlDeviceGetComputeRunningProcesses => process::list[nvml_kind::COMPUTE_PROCESSES],
        nvmlDeviceGetComputeRunningProcesses_v2 => process::list[nvml_kind::COMPUTE_PROCESSES],
        nvmlDeviceGetComputeRunningProcesses_v3 => process::list[nvml_kind::COMPUTE_PROCESSES],
        nvmlDeviceGetGraphicsRunningProcesses => process::list[nvml_kind::GRAPHICS_PROCESSES],
        nvmlDeviceGetGraphicsRunningProcesses_v2 => process::list[nvml_kind::GRAPHICS_PROCESSES],
        nvmlDeviceGetGraphicsRunningProcesses_v3 => process::list[nvml_kind::GRAPHICS_PROCESSES],
    }
    // What real NVML answers before nvmlInit (the header lists no
    // UNINITIALIZED for these).
    without_init {
        // init.rs: nvmlShutdown reports UNINITIALIZED itself when nothing
        // is left to shut down.
        nvmlInit => init::init[0],
        nvmlInit_v2 => init::init[0],
        nvmlInitWithFlags => init::init,
        nvmlShutdown => init::shutdown,
        nvmlErrorString => vgpu_ffi::entry::nvml_error_string,

        // system.rs: static text and the CUDA driver's version.
        nvmlSystemGetNVMLVersion => system::version[Version::Nvml],
        nvmlSystemGetCudaDriverVersion => system::cuda_driver_version,
        nvmlSystemGetCudaDriverVersion_v2 => system::cuda_driver_version,
    }
});
