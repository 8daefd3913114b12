"""Reads the virtual GPU files with Python's own file API (open, os.listdir,
os.path.exists, os.readlink: libc underneath, so the preloaded shim's hooks
answer) and asks NVML the same questions. Prints `key=value` lines; the Rust
test (tests/isolate.rs) compares them.
"""
import os

import pynvml


def text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def main():
    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    bdf = text(pynvml.nvmlDeviceGetPciInfo(h).busIdLegacy).lower()
    print(f"nvml_bdf={bdf}")
    print(f"nvml_uuid={text(pynvml.nvmlDeviceGetUUID(h))}")
    print(f"nvml_driver={text(pynvml.nvmlSystemGetDriverVersion())}")
    print(f"nvml_name={text(pynvml.nvmlDeviceGetName(h))}")

    print("gpus_listing=" + ",".join(sorted(os.listdir("/proc/driver/nvidia/gpus"))))
    with open("/proc/driver/nvidia/version") as f:
        print(f"version={f.readline().rstrip()}")
    with open(f"/proc/driver/nvidia/gpus/{bdf}/information") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == "GPU UUID":
                print(f"info_uuid={value.strip()}")
            if key == "Model":
                print(f"info_model={value.strip()}")
    print(f"pci_listed={int(bdf in os.listdir('/sys/bus/pci/devices'))}")
    for attr in ("vendor", "device", "class"):
        with open(f"/sys/bus/pci/devices/{bdf}/{attr}") as f:
            print(f"{attr}={f.read().strip()}")
    print(f"driver_link={os.readlink(f'/sys/bus/pci/devices/{bdf}/driver')}")
    print(f"dev_nvidia0={int(os.path.exists('/dev/nvidia0'))}")


if __name__ == "__main__":
    main()
