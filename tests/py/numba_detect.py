"""numba-cuda's device discovery: cuda.is_available(), cuda.detect(),
cuda.list_devices() (docs/clients.md "Python CUDA clients").

numba-cuda 0.30.4 finds the driver library with ctypes (libcuda.so,
libcuda.so.1 on the library path) and then makes every call through
cuda-bindings (cuGetProcAddress_v2). Output: cuda.detect()'s own text, then
`key=value` lines for the Rust test (tests/python_clients.rs).
"""
import sys

from numba import cuda


def main():
    available = cuda.is_available()
    print(f"is_available={available}", flush=True)
    if not available:
        # Why numba thinks so (the error of its driver initialisation).
        from numba.cuda.cudadrv.driver import driver

        print(f"driver_init_error={getattr(driver, 'initialization_error', None)}", flush=True)
        return 1
    supported = cuda.detect()
    sys.stdout.flush()
    print(f"detect_supported={supported}", flush=True)
    devices = cuda.list_devices()
    print(f"list_devices={len(devices)}", flush=True)
    for dev in devices:
        name = dev.name.decode() if isinstance(dev.name, bytes) else dev.name
        major, minor = dev.compute_capability
        print(f"device{dev.id}_name={name}", flush=True)
        print(f"device{dev.id}_cc={major}.{minor}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
