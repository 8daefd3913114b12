"""Queries device 0 through nvidia-ml-py (pynvml) and prints `key=value` lines.

A value that NVML refuses is printed as `key=ERROR:<message>`; the Rust test
(tests/nvml_clients.rs) decides which of those are failures. Exit status 0
unless nvmlInit or the device handle itself fails.
"""
import sys

import pynvml


def text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def show(key, fn):
    try:
        value = fn()
    except pynvml.NVMLError as e:
        value = "ERROR:" + str(e)
    print(f"{key}={value}", flush=True)


def main():
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        print(f"nvmlInit failed: {e}", file=sys.stderr)
        return 2
    show("driver_version", lambda: text(pynvml.nvmlSystemGetDriverVersion()))
    show("cuda_driver_version", pynvml.nvmlSystemGetCudaDriverVersion)
    show("count", pynvml.nvmlDeviceGetCount)
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    show("name", lambda: text(pynvml.nvmlDeviceGetName(h)))
    uuid = text(pynvml.nvmlDeviceGetUUID(h))
    print(f"uuid={uuid}")
    show("handle_by_uuid_name", lambda: text(pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByUUID(uuid))))
    mem = pynvml.nvmlDeviceGetMemoryInfo(h)
    print(f"memory_total={mem.total}")
    print(f"memory_used={mem.used}")
    print(f"memory_free={mem.free}")
    show("memory_v2_total", lambda: pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2).total)
    pci = pynvml.nvmlDeviceGetPciInfo(h)
    print(f"pci_bus_id={text(pci.busId)}")
    print(f"pci_bus_id_legacy={text(pci.busIdLegacy)}")
    show("temperature", lambda: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU))
    show("power_mw", lambda: pynvml.nvmlDeviceGetPowerUsage(h))
    show("utilization_gpu", lambda: pynvml.nvmlDeviceGetUtilizationRates(h).gpu)
    show("utilization_memory", lambda: pynvml.nvmlDeviceGetUtilizationRates(h).memory)
    show("compute_capability", lambda: "%d.%d" % pynvml.nvmlDeviceGetCudaComputeCapability(h))
    show("processes", lambda: len(pynvml.nvmlDeviceGetComputeRunningProcesses(h)))
    pynvml.nvmlShutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
