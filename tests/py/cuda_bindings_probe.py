"""Driver API through NVIDIA's cuda-bindings (`from cuda.bindings import driver`).

cuda-bindings loads libcuda.so.1, takes cuGetProcAddress_v2 with dlsym and
resolves every other entry point through it (docs/clients.md "Python CUDA clients"), so this exercises
the shim's cuGetProcAddress table as much as the calls themselves.

Prints one `key=value` line per result; a failing call prints
`FAIL <call> <CUresult name>` and the script exits 1 (the Rust test,
tests/python_clients.rs, shows the whole output).
"""
import sys

from cuda.bindings import driver as cu


class CallFailed(Exception):
    pass


def call(name, *args):
    """Calls cu.<name>(*args); returns the values after the CUresult."""
    res = getattr(cu, name)(*args)
    err, vals = res[0], res[1:]
    if err != cu.CUresult.CUDA_SUCCESS:
        print(f"FAIL {name} {err.name} ({int(err)})", flush=True)
        raise CallFailed(name)
    if len(vals) == 0:
        return None
    return vals[0] if len(vals) == 1 else vals


def show(key, value):
    print(f"{key}={value}", flush=True)


def main():
    call("cuInit", 0)
    show("init", "ok")
    show("driver_version", call("cuDriverGetVersion"))
    count = call("cuDeviceGetCount")
    show("count", count)
    dev = call("cuDeviceGet", 0)
    name = call("cuDeviceGetName", 256, dev)
    show("name", name.split(b"\0", 1)[0].decode())
    show("total_mem", call("cuDeviceTotalMem", dev))
    attr = cu.CUdevice_attribute
    major = call("cuDeviceGetAttribute", attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev)
    minor = call("cuDeviceGetAttribute", attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev)
    show("compute_capability", f"{major}.{minor}")
    show("sm_count", call("cuDeviceGetAttribute", attr.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev))
    show("pci_bus_id", call("cuDeviceGetPCIBusId", 32, dev).split(b"\0", 1)[0].decode())

    # The primary context, as the runtime and numba use it.
    primary = call("cuDevicePrimaryCtxRetain", dev)
    call("cuCtxSetCurrent", primary)
    show("primary_ctx", "ok")
    free, total = call("cuMemGetInfo")
    show("mem_free", free)
    show("mem_total", total)

    # A round trip through device memory.
    size = 1 << 20
    src = bytes((i * 7 + 3) & 0xFF for i in range(size))
    dptr = call("cuMemAlloc", size)
    show("alloc", "ok" if int(dptr) != 0 else "null")
    call("cuMemcpyHtoD", dptr, src, size)
    back = bytearray(size)
    call("cuMemcpyDtoH", back, dptr, size)
    show("roundtrip_equal", bytes(back) == src)
    call("cuMemsetD8", dptr, 0x5A, size)
    call("cuMemcpyDtoH", back, dptr, size)
    show("memset_equal", bytes(back) == b"\x5a" * size)
    call("cuMemFree", dptr)
    show("free", "ok")
    call("cuDevicePrimaryCtxRelease", dev)

    # An explicit context (cuCtxCreate resolves to cuCtxCreate_v2 here).
    ctx = call("cuCtxCreate", 0, dev)
    current = call("cuCtxGetCurrent")
    show("created_ctx_current", int(current) == int(ctx))
    dptr = call("cuMemAlloc", 4096)
    call("cuMemcpyHtoD", dptr, b"vgpu" * 1024, 4096)
    back = bytearray(4096)
    call("cuMemcpyDtoH", back, dptr, 4096)
    show("created_ctx_roundtrip_equal", bytes(back) == b"vgpu" * 1024)
    call("cuMemFree", dptr)
    call("cuCtxDestroy", ctx)
    show("done", "ok")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CallFailed:
        sys.exit(1)
