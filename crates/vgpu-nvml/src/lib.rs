//! `libnvidia-ml.so.1` for a machine without a GPU: every NVML entry point of
//! the pinned header is exported; the ones below answer from the vgpu host
//! (static facts from the inventory fetched at `nvmlInit`, live values by one
//! `NvmlQuery` per call), every other one is a NOT_SUPPORTED stub.

use cuda_types::nvml::*;

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

cuda_types::with_nvml_functions!(api_macros::export_functions {
    lookup = exported_symbol,
    implemented {
        // init.rs
        nvmlInit => init::init_v1,
        nvmlInit_v2 => init::init_v2,
        nvmlInitWithFlags => init::init_with_flags,
        nvmlShutdown => init::shutdown,
        nvmlErrorString => vgpu_ffi::entry::nvml_error_string,

        // system.rs
        nvmlSystemGetDriverVersion => system::driver_version,
        nvmlSystemGetNVMLVersion => system::nvml_version,
        nvmlSystemGetCudaDriverVersion => system::cuda_driver_version,
        nvmlSystemGetCudaDriverVersion_v2 => system::cuda_driver_version,

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
        nvmlDeviceGetName => device::name,
        nvmlDeviceGetUUID => device::uuid,
        nvmlDeviceGetSerial => device::serial,
        nvmlDeviceGetVbiosVersion => device::vbios_version,
        nvmlDeviceGetIndex => device::index,
        nvmlDeviceGetMinorNumber => device::minor_number,
        nvmlDeviceGetPciInfo => device::pci_info_v1,
        nvmlDeviceGetPciInfo_v2 => device::pci_info,
        nvmlDeviceGetPciInfo_v3 => device::pci_info,
        nvmlDeviceGetCudaComputeCapability => device::compute_capability,
        nvmlDeviceGetBrand => device::brand,
        nvmlDeviceGetArchitecture => device::architecture,
        nvmlDeviceIsMigDeviceHandle => device::is_mig_device_handle,
        nvmlDeviceGetDriverModel => device::driver_model,
        nvmlDeviceGetDriverModel_v2 => device::driver_model,

        // query.rs: live values, asked of the host on every call
        nvmlDeviceGetMemoryInfo => query::memory_info,
        nvmlDeviceGetMemoryInfo_v2 => query::memory_info_v2,
        nvmlDeviceGetTemperature => query::temperature,
        nvmlDeviceGetTemperatureV => query::temperature_v,
        nvmlDeviceGetTemperatureThreshold => query::temperature_threshold,
        nvmlDeviceGetPowerUsage => query::power_usage,
        nvmlDeviceGetPowerManagementLimit => query::power_limit,
        nvmlDeviceGetEnforcedPowerLimit => query::enforced_power_limit,
        nvmlDeviceGetPowerManagementDefaultLimit => query::default_power_limit,
        nvmlDeviceGetPowerManagementLimitConstraints => query::power_limit_constraints,
        nvmlDeviceGetTotalEnergyConsumption => query::total_energy,
        nvmlDeviceGetUtilizationRates => query::utilization,
        nvmlDeviceGetEncoderUtilization => query::encoder_utilization,
        nvmlDeviceGetDecoderUtilization => query::decoder_utilization,
        nvmlDeviceGetClockInfo => query::clock_info,
        nvmlDeviceGetMaxClockInfo => query::max_clock_info,
        nvmlDeviceGetClock => query::clock,
        nvmlDeviceGetPerformanceState => query::performance_state,
        nvmlDeviceGetPowerState => query::performance_state,
        nvmlDeviceGetCurrentClocksEventReasons => query::clocks_event_reasons,
        nvmlDeviceGetCurrentClocksThrottleReasons => query::clocks_event_reasons,
        nvmlDeviceGetFanSpeed => query::fan_speed,
        nvmlDeviceGetFanSpeed_v2 => query::fan_speed_v2,
        nvmlDeviceGetPersistenceMode => query::persistence_mode,
        nvmlDeviceGetComputeMode => query::compute_mode,
        nvmlDeviceGetMigMode => query::mig_mode,
        nvmlDeviceGetDisplayMode => query::display_mode,
        nvmlDeviceGetDisplayActive => query::display_active,
        nvmlDeviceGetEccMode => query::ecc_mode,
        nvmlDeviceGetTotalEccErrors => query::total_ecc_errors,
        nvmlDeviceGetPcieThroughput => query::pcie_throughput,
        nvmlDeviceGetCurrPcieLinkGeneration => query::curr_pcie_link_generation,
        nvmlDeviceGetMaxPcieLinkGeneration => query::max_pcie_link_generation,
        nvmlDeviceGetCurrPcieLinkWidth => query::curr_pcie_link_width,
        nvmlDeviceGetMaxPcieLinkWidth => query::max_pcie_link_width,

        // process.rs
        nvmlDeviceGetComputeRunningProcesses => process::compute_v1,
        nvmlDeviceGetComputeRunningProcesses_v2 => process::compute_v2,
        nvmlDeviceGetComputeRunningProcesses_v3 => process::compute_v3,
        nvmlDeviceGetGraphicsRunningProcesses => process::graphics_v1,
        nvmlDeviceGetGraphicsRunningProcesses_v2 => process::graphics_v2,
        nvmlDeviceGetGraphicsRunningProcesses_v3 => process::graphics_v3,
    }
});
